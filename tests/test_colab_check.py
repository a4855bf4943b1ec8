"""Each numbered lesson run as Colab would run it (issue #14, item 3).

How a lesson runs here (`tests/colab/runner.py`):
- alone: the notebook is copied into an empty folder (`content/`, like Colab's /content), with no repository file
  beside it, and run in a fresh IPython kernel (ipykernel driven by nbclient; Colab is an IPython kernel too), cell by
  cell, going on after a failing cell, skipping what nbdev-test skips (`#| notest`, `#| slow`, `#| cuda`,
  `#| eval: false`; the `slow` tier below runs the `#| slow` cells too);
- the package from a built wheel: the working tree (tracked and untracked-but-not-ignored files) is built with
  `pip wheel --no-deps` once per module (the build `pip install git+URL` runs on Colab) and installed with
  `pip install --no-deps --target SITE`; SITE comes first on the kernel's PYTHONPATH;
- not the checkout, no dev extras: the kernel uses this interpreter's third-party packages (torch, transformers,
  datasets, ipykernel, ... stand in for those Colab preinstalls), but `tests/colab/site/sitecustomize.py` removes the
  editable install's finder, drops repository paths from `sys.path`, makes `import nbdev`/`execnb`/`pytest`/
  `nbconvert`/... raise ModuleNotFoundError, and records every file of the checkout or of `../shared` the kernel opens.
  Each run asserts that `minbert_nb.__file__` and its metadata are the wheel's. (The alternative, a separate venv per
  session, would reinstall torch and every dependency from PyPI in CI: minutes and gigabytes for the same check.)
- as on Colab: `google.colab` is imported before the first cell (a stand-in whose
  `output.enable_custom_widget_manager()` records the call), so the setup cell takes its Colab path: `env.model` is
  `bert-base-uncased`, `env.data` is `hub`; IN_TEST, MINBERT_DATA, MINBERT_MODEL and HF_HUB_OFFLINE are unset, so
  widgets are live (an ipykernel is there) as on Colab; OMP_NUM_THREADS=1.
- the Hub (`tests/colab/site/colab_standins.py`): `huggingface_hub.snapshot_download`/`hf_hub_download` serve the
  offline checkpoint (all-MiniLM-L6-v2, bert-base-uncased's vocabulary, 6×384) under the id `bert-base-uncased` and
  raise RepositoryNotFoundError for any other id; `datasets.load_dataset` serves the `minbert_nb.data.HUB_SOURCES`
  datasets with their real split names, columns and Features (ClassLabel, float32, -1 labels), built from the bundled
  sample's sentences (96 train / 48 other rows per split). Every request is logged with the cell that made it.

Simulated, not real: the Hub and its data (tiny stand-ins, not the real bert-base-uncased weights or the GLUE/SNLI
rows), google.colab, Colab's GPU (cells run on the CPU, with `env.size`'s CPU sizes), Colab's preinstalled package
versions (this venv's), the `pip install git+URL` of the setup cell (the wheel is preinstalled, so it is not run).
Real: the wheel and its package data, the notebooks' code top to bottom in a real kernel with live widgets, the
package's Hub code paths (`resolve_model`, `hub_split`) up to the download call.

What fails a lesson: a cell that raises; `minbert_nb` not from the wheel, the setup cell not on its Colab path, or a
dev-only package imported; a model asked of the Hub other than bert-base-uncased; a dataset outside HUB_SOURCES or a
refused load; a cell that passes `env.model` (`env.data`) to a loader but did not ask the Hub for bert-base-uncased
(Hub data), or loaded the offline checkpoint (read the bundled sample) instead; a file of the checkout or of
`../shared/data` opened. The offline checkpoint (`offline_model_dir()`, `from_pretrained()` with no name, a run
config's default `minilm`) and the bundled sample stay allowed in cells that do not pass `env.model` / `env.data`
(golden tests against transformers/PEFT, tiny demos); each run lists where they were used (`pytest -rP`).

Budget (measured on the shared 2-core machine, kernels at OMP_NUM_THREADS=1): the default tier runs all 15 lessons
plus the self-check in about 2 minutes (3–21 s a lesson, 2 s for the wheel). `pytest -m slow` runs the lessons again
with their `#| slow` cells, as a Colab user does (CPU sizes of `env.size`): about 11 minutes, 08_run alone 5 (its
quick recipe trains 150 steps). By hand: `python tests/colab/runner.py [--slow] [nbs/NN_x.ipynb ...]` prints what
each lesson ran and asked for, and every problem.
"""
import importlib.util, sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_check_runner", REPO / "tests" / "colab" / "runner.py")
runner = importlib.util.module_from_spec(_spec); sys.modules[_spec.name] = runner; _spec.loader.exec_module(runner)

LESSONS = runner.lessons()                 # nbs/NN_*.ipynb and inserted ones (04b_batches)


@pytest.fixture(scope="module")
def colab_site(tmp_path_factory):
    "minbert-nb built as a wheel and installed alone (no dependencies) in a folder of its own, once per module."
    for mod in ("nbclient", "ipykernel"): pytest.importorskip(mod, reason="the Colab check runs lessons in a Jupyter kernel (dev extras)")
    return runner.build_site(REPO, tmp_path_factory.mktemp("colab-wheel"))


def check(res, site) -> list[str]:
    "Everything wrong with a run, failing cells (with tracebacks) last."
    probs = runner.origin_problems(res, site) + runner.request_problems(res)
    if res.failures: probs.append(runner.failure_report(res))
    return probs


def _run(nb, site, tmp_path, flags, cell_timeout=600):
    res = runner.run_notebook(nb, site, tmp_path, flags=flags, cell_timeout=cell_timeout)
    print(res.summary())
    if off := runner.offline_uses(res):
        print("  offline checkpoint used (allowed: these cells do not pass env.model) in: " + "; ".join(f"cell {c}: {l}" for c, l in off.items()))
    probs = check(res, site)
    assert not probs, f"{nb.name} does not run as on Colab ({len(res.failures)} failing cells):\n\n" + "\n\n".join(probs)
    return res


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_as_on_colab(nb, colab_site, tmp_path):
    _run(nb, colab_site, tmp_path, runner.SKIP)


@pytest.mark.slow
@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_as_on_colab_with_slow_cells(nb, colab_site, tmp_path):
    "All a Colab user runs: the `#| slow` cells too (CPU sizes); only `notest` and `cuda` cells are skipped."
    _run(nb, colab_site, tmp_path, tuple(f for f in runner.SKIP if f != "slow"), cell_timeout=1800)


# --------------------------------------------------------------------------------------------------- the check itself
def test_the_check_sees_what_it_should(colab_site, tmp_path):
    """A made-up notebook through the same runner: the stand-ins have the Hub's schemas and refuse what the Hub would,
    dev-only packages are hidden, and every kind of problem is reported with its cell."""
    import nbformat
    from minbert_nb.colab import setup_cell
    readme = REPO / "README.md"
    cells = [
        setup_cell(),                                                                                   # 0
        """from datasets import ClassLabel, load_dataset
from minbert_nb.data import HUB_SOURCES, TASKS, hub_split
qqp, stsb = load_dataset("nyu-mll/glue", "qqp"), load_dataset("nyu-mll/glue", "stsb")
assert set(qqp) == set(stsb) == {"train", "validation", "test"}
assert qqp["train"].column_names == ["question1", "question2", "label", "idx"]
assert qqp["train"].features["label"] == ClassLabel(names=["not_duplicate", "duplicate"]) and qqp["train"].features["idx"].dtype == "int32"
assert set(qqp["test"]["label"]) == {-1} and set(qqp["train"]["label"]) == {0, 1}
assert stsb["train"].features["label"].dtype == "float32" and set(stsb["test"]["label"]) == {-1.0}
sst = load_dataset("SetFit/sst5")
assert set(sst) == {"train", "validation", "test"} and sst["train"].column_names == ["text", "label", "label_text"]
assert sst["train"].features["label"].dtype == "int64" and len(sst["train"]) >= 40 and len(sst["validation"]) >= 15
snli = load_dataset("stanfordnlp/snli", split="validation")
assert snli.features["label"] == ClassLabel(names=["entailment", "neutral", "contradiction"]) and -1 in snli["label"]
mnli = load_dataset("nyu-mll/multi_nli")
assert set(mnli) == {"train", "validation_matched", "validation_mismatched"}
assert {"promptID", "pairID", "premise", "hypothesis", "genre", "label"} <= set(mnli["train"].column_names)
assert len(load_dataset("SetFit/sst5", split="train[:10]")) == 10
assert all(hub_split(t, s) for t in TASKS for s in ("train", "dev")) and hub_split("nli", "dev", nli="multi_nli")""",   # 1
        """from minbert_nb.bert import BertModel, load_tokenizer
model, tok = BertModel.from_pretrained(env.model), load_tokenizer(env.model)
assert tok.vocab_size == 30522""",                                                                # 2
        """for name in ("nbdev", "execnb", "pytest"):
    try: __import__(name)
    except ModuleNotFoundError: pass
    else: raise AssertionError(f"{name} is importable")""",                                      # 3
        """from fastcore.test import test_fail
from minbert_nb.config import resolve_model
test_fail(lambda: resolve_model("prajjwal1/bert-tiny"), contains="RepositoryNotFoundError")""",  # 4: a refused id
        """from datasets.exceptions import DatasetNotFoundError
test_fail(lambda: load_dataset("glue", "qqp"), contains="doesn't exist on the Hub")
test_fail(lambda: load_dataset("nyu-mll/glue"), contains="Config name is missing")
test_fail(lambda: load_dataset("nyu-mll/glue", "stsb", split="dev"), contains='Unknown split "dev"')""",  # 5
        f"_ = open({str(readme)!r}).read()",                                                          # 6: the checkout
        """from minbert_nb.data import load_split
rows = load_split("sst", "dev", env.data if False else "sample")""",                             # 7: env.data, not the Hub
        """m = BertModel.from_pretrained(env.model if False else None)""",                               # 8: env.model, offline
        """raise RuntimeError("boom")""",                                                                 # 9: a failure
        """after = 1""",                                                                                  # 10: still runs
        """#| slow
raise RuntimeError("a slow cell ran")""",                                                          # 11: skipped
    ]
    nb = tmp_path / "src" / "99_check.ipynb"; nb.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), nb)
    res = runner.run_notebook(nb, colab_site, tmp_path / "runs")
    print(res.summary())
    assert runner.origin_problems(res, colab_site) == []
    assert res.probe["minbert_file"].startswith(str(colab_site)) and not res.probe["minbert_file"].startswith(str(REPO))
    assert [(f.index, f.ename, f.evalue) for f in res.failures] == [(9, "RuntimeError", "boom")], runner.failure_report(res)
    assert "RuntimeError: boom" in res.failures[0].traceback and res.ran[-1] == 10 and res.skipped == [11]
    got = runner.request_problems(res)
    want = [("cell 4 ", "asked the Hub for model 'prajjwal1/bert-tiny'"), ("cell 5 ", "dataset glue/qqp, not one of HUB_SOURCES"),
            ("cell 5 ", "Config name is missing"), ("cell 5 ", 'Unknown split "dev"'), ("cell 6 ", f"opened {readme}"),
            ("cell 7:", "did not ask the Hub for data"), ("cell 7:", "read the bundled sample"),
            ("cell 8:", f"did not ask the Hub for {runner.MODEL_ID}"), ("cell 8:", "loaded the offline checkpoint")]
    for where, what in want:
        assert any(where in p and what in p for p in got), f"not reported: {where} {what}\n" + "\n".join(got)
    assert len(got) == len(want), "\n".join(got)
    models = {(e["cell"], e["repo_id"]) for e in res.requests("model")}
    assert models == {(2, "bert-base-uncased"), (4, "prajjwal1/bert-tiny")}, models
    from minbert_nb.data import HUB_SOURCES
    assert {e["path"] for e in res.requests("data") if e["cell"] == 1} == {s.path for s in HUB_SOURCES.values()}
