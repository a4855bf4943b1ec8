"""Exercise notebooks end to end (stubs fail the checks, solutions pass), nbdev's handling of `#| exercise`,
the live widgets behind their static fallbacks, and the Colab environment."""
import json, os, re, shutil, subprocess, sys, warnings
from pathlib import Path

import pytest

from minbert_nb import course
from minbert_nb.course import (CellFailure, Live, check_badges, check_notebook, check_setup_cells, colab_setup, conflict_viewer,
                               exercise_notebooks, make_exercises, attention_panel, try_sentence_panel, ExerciseError)

REPO = Path(__file__).resolve().parents[1]


def write_nb(path, *cells):
    "A minimal nbformat 4.5 notebook from (cell_type, source) pairs."
    nb = {"cells": [{"cell_type": t, "id": f"c{i}", "metadata": {}, "source": s,
                     **({"outputs": [], "execution_count": None} if t == "code" else {})} for i, (t, s) in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))
    return path


def test_synthetic_exercise_fails_with_stub_and_passes_with_solution(tmp_path):
    nb = write_nb(tmp_path / "nbs" / "05_heads.ipynb",
        ("code", "#| default_exp heads"),
        ("markdown", "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
                     "(https://colab.research.google.com/github/minbert-nb/minbert-nb/blob/main/nbs/05_heads.ipynb)"),
        ("code", "#| export\n#| exercise Head.forward\nclass Head:\n    def __init__(self, w): self.w = w\n"
                 "    def forward(self, x):\n        \"Scale x by w.\"\n        return [self.w * v for v in x]"),
        ("code", "assert Head(2).forward([1, 2]) == [2, 4]"),
        ("code", "assert Head(3).w == 3  # __init__ is not an exercise"))
    student, = make_exercises([nb], tmp_path / "exercises")
    key, = make_exercises([nb], tmp_path / "key", badge_dir="exercises", solutions=True)
    fails = check_notebook(student)
    assert [(f.ename, f.evalue) for f in fails] == [("NotImplementedError", "Exercise: implement Head.forward")]
    assert fails[0].source == "assert Head(2).forward([1, 2]) == [2, 4]"
    assert check_notebook(key) == []
    # student and key differ only in the stubbed body
    s, k = (json.loads(p.read_text())["cells"] for p in (student, key))
    assert [c["source"] for c in s if "Head" not in c["source"] or "assert" in c["source"]] == \
           [c["source"] for c in k if "Head" not in c["source"] or "assert" in c["source"]]
    assert "blob/main/exercises/05_heads.ipynb" in s[0]["source"]
    assert not any(l.startswith("#| export") or l.startswith("#| default_exp") for c in s for l in c["source"].splitlines())


# What each marked notebook hands out, and the stubs a student's notebook must raise from its checks when left undone.
EXERCISES = {
    "01_attention": {"attention"},
    "02_bert": {"BertEmbeddings.forward", "AddNorm.forward", "BertAttention.forward", "BertIntermediate.forward", "BertLayer.forward"},
    "03_optim": {"AdamW.step"},
    "05_heads": {"MultitaskBert.task_forward", "MultitaskBert.task_loss"},
    "08_smart": {"smart_term"},
    "09_pcgrad": {"pc_coefficients", "project_conflicting"},
    "10_lora": {"LoRALinear.delta_weight", "LoRALinear.forward", "merge", "unmerge"},
}
RAISED = {"01_attention": {"attention"}, "02_bert": {"BertEmbeddings.forward", "BertAttention.forward", "BertLayer.forward"},
          "03_optim": {"AdamW.step"}, "05_heads": {"MultitaskBert.task_forward"}, "08_smart": {"smart_term"},
          "09_pcgrad": {"pc_coefficients", "project_conflicting"}, "10_lora": {"LoRALinear.delta_weight", "LoRALinear.forward", "merge"}}
NEAR = 5  # a check fails at most this many cells after each exercise cell


def stubbed(path) -> list[tuple[int, str]]:
    "(cell index, name) of every stub in a student notebook."
    cells = json.loads(Path(path).read_text())["cells"]
    return [(i, m) for i, c in enumerate(cells) for m in re.findall(r'NotImplementedError\("Exercise: implement ([\w.]+)"\)', c["source"])]


def test_marked_notebooks():
    assert [p.stem for p in exercise_notebooks(REPO / "nbs")] == list(EXERCISES)


def check_real_exercise(name, tmp_path):
    "The student copy of a real notebook fails its checks right after each exercise, with the stubs' errors; the key passes."
    nb = REPO / "nbs" / f"{name}.ipynb"
    student, = make_exercises([nb], tmp_path / "exercises")
    key, = make_exercises([nb], tmp_path / "key", solutions=True)
    stubs = stubbed(student)
    assert {n for _, n in stubs} == EXERCISES[name] and stubbed(key) == []
    fails = check_notebook(student)
    raised = {f.evalue.removeprefix("Exercise: implement ") for f in fails if f.ename == "NotImplementedError"}
    assert raised == RAISED[name], fails
    assert fails[0].ename == "NotImplementedError", fails[0]
    for i, n in stubs:   # every exercise is followed closely by a check that fails while it is a stub
        assert any(i < f.index <= i + NEAR for f in fails), (n, i, [f.index for f in fails])
    assert check_notebook(key) == []
    return student, fails


def test_real_optim_notebook_exercise(tmp_path):
    """03_optim, marked `#| exercise AdamW.step`: the student copy fails exactly the cells that step the optimiser."""
    student, fails = check_real_exercise("03_optim", tmp_path)
    src = next(c["source"] for c in json.loads(student.read_text())["cells"] if "class AdamW" in c["source"])
    assert "def __init__(self, params: Iterable" in src and "if lr < 0" in src          # the constructor is given
    assert '    @torch.no_grad()\n    def step(self, closure: Callable | None = None):\n        "One update of each parameter' in src
    assert "m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; θ ← θ − αλθ − α_t·m/(√v + ε)" in src   # the instructions stay
    assert src.rstrip().endswith('raise NotImplementedError("Exercise: implement AdamW.step")')
    assert "m.lerp_" not in src
    assert all(f.ename == "NotImplementedError" and f.evalue == "Exercise: implement AdamW.step" for f in fails), fails
    assert {f.source.split("=")[0].strip() for f in fails} == {"diff, ours, ref", "w"}   # compare_adamw and the bias-correction check


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXERCISES if n != "03_optim"])
def test_real_notebook_exercises(name, tmp_path):
    """Each marked notebook (~5–45 s each on 2 cores, student copy and key): stubs fail their checks, solutions pass."""
    check_real_exercise(name, tmp_path)


def test_committed_exercises_up_to_date(tmp_path):
    """`exercises/` is what `minbert exercises --out exercises` writes from nbs/ now: regenerate it with that command after editing a marked notebook."""
    fresh = make_exercises(exercise_notebooks(REPO / "nbs"), tmp_path / "exercises", badge_dir="exercises")
    committed = sorted((REPO / "exercises").glob("*.ipynb"))
    assert [p.name for p in committed] == [p.name for p in fresh], "run `minbert exercises --out exercises`"
    for new, old in zip(fresh, committed):
        a, b = (json.loads(p.read_text())["cells"] for p in (new, old))
        assert [(c["cell_type"], c["source"]) for c in a] == [(c["cell_type"], c["source"]) for c in b], \
            f"exercises/{old.name} is out of date: run `minbert exercises --out exercises`"
        assert all(not c.get("outputs") for c in b), f"exercises/{old.name} has outputs"


def test_nbdev_ignores_the_exercise_directive(tmp_path):
    """export, test and clean treat `#| exercise` as an unknown directive: the committed module, tests pass, marker kept."""
    proj = tmp_path / "proj"
    (proj / "nbs").mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", proj)
    shutil.copytree(REPO / "minbert_nb", proj / "minbert_nb", ignore=shutil.ignore_patterns("__pycache__"))
    nb = Path(shutil.copy2(REPO / "nbs" / "03_optim.ipynb", proj / "nbs" / "03_optim.ipynb"))   # marked `#| exercise AdamW.step`
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(proj)}
    run = lambda *a: subprocess.run([str(bindir / a[0]), *a[1:]], cwd=proj, env=env, capture_output=True, text=True, timeout=600)
    before = (proj / "minbert_nb" / "optim.py").read_text()
    r = run("nbdev-export"); assert r.returncode == 0, r.stderr
    assert (proj / "minbert_nb" / "optim.py").read_text() == before
    r = run("nbdev-test", "nbs/03_optim.ipynb"); assert r.returncode == 0, r.stderr[-2000:]
    r = run("nbdev-clean", "--fname", "nbs/03_optim.ipynb"); assert r.returncode == 0, r.stderr
    assert "#| exercise AdamW.step" in nb.read_text()


def test_exercise_errors(tmp_path):
    nb = write_nb(tmp_path / "nbs" / "01_x.ipynb", ("code", "#| exercise nope\ndef f(): return 1"))
    with pytest.raises(ExerciseError, match=r"01_x.ipynb cell 0: `#\| exercise nope` names no function"):
        make_exercises([nb], tmp_path / "ex")


def test_badges_on_every_numbered_notebook():
    assert check_badges(REPO / "nbs") == []


def test_setup_cell_in_every_numbered_notebook():
    """Each numbered notebook runs `setup_cell()` before importing minbert_nb (`python tools/add_setup_cells.py` adds it)."""
    assert check_setup_cells(REPO / "nbs") == []
    text = course.setup_cell()
    for p in sorted((REPO / "nbs").glob("[0-9][0-9]_*.ipynb")):
        assert any(c["cell_type"] == "code" and "".join(c["source"]) == text for c in json.loads(p.read_text())["cells"]), f"{p.name}: the setup cell is not current"


def test_setup_cell_is_harmless_locally():
    """Outside Colab the setup cell installs nothing and prints nothing: it only picks the device, model and data."""
    r = subprocess.run([sys.executable, "-c", course.setup_cell() + "\nprint(repr(env))"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("Env(on_colab=False, ") and r.stdout.count("\n") == 1, r.stdout


def test_colab_setup(monkeypatch, tmp_path):
    monkeypatch.delenv("MINBERT_DATA", raising=False); monkeypatch.delenv("MINBERT_MODEL", raising=False)
    from minbert_nb.config import pick_device
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = colab_setup(on_colab=True)
    assert (env.on_colab, env.model, env.data, env.device) == (True, "bert-base-uncased", "hub", pick_device("auto").type)
    assert any("No GPU" in str(w.message) for w in caught) == (env.device == "cpu")   # a Colab CPU runtime is told how to get a GPU
    monkeypatch.setenv("MINBERT_DATA", str(tmp_path)); monkeypatch.setenv("MINBERT_MODEL", "prajjwal1/bert-tiny")
    env = colab_setup(on_colab=False)
    assert (env.on_colab, env.model, env.data) == (False, "prajjwal1/bert-tiny", str(tmp_path))


# --- widgets: the live path, which nbdev-test cannot reach (no kernel there) ---------------------------------

@pytest.fixture
def live_widgets(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(course, "widgets_available", lambda: True)
    monkeypatch.setattr(course, "_redraw", lambda out, plot_fn: plot_fn())  # draw without a kernel to show it


def test_try_sentence_panel_widget(live_widgets):
    calls = []
    def predict(a, b):
        calls.append((a, b)); return {"sst": [0.2] * 5, "para": 0.5, "sts": 2.5}
    panel = try_sentence_panel(predict, "a b", "b c")
    assert isinstance(panel, Live) and panel.widget is not None
    ta, tb, go, out = panel.widget.children
    assert calls == [("a b", "b c"), ("a b", "b c")]      # the static figure, then the widget's first draw
    ta.value = "x y"; go.click()
    assert calls[-1] == ("x y", "b c")
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_conflict_viewer_and_attention_panel_widgets(live_widgets, monkeypatch):
    import torch
    drawn = []
    real = course.plot_conflicts
    monkeypatch.setattr(course, "plot_conflicts", lambda log, step=None: drawn.append(step) or real(log, step))
    log = [{"step": s, "cos": {"sst/para": -0.1 * s, "sst/sts": 0.1}} for s in (1, 2, 3)]
    slider = conflict_viewer(log).widget.children[0]
    slider.value = 2
    assert drawn == [None, 3, 2]
    seen = []
    def attend(s):
        seen.append(s); T = len(s.split())
        return [torch.full((1, 2, T, T), 1.0 / T)] * 3, s.split()
    w = attention_panel(attend, ["a b", "c d e"]).widget
    sent, (layer, head) = w.children[0], w.children[1].children
    assert (layer.max, head.max) == (2, 1)
    sent.value = "c d e"; layer.value = 1; sent.value = "a b"
    assert seen == ["a b", "c d e"]                        # computed once per sentence


def test_attention_explorer(monkeypatch):
    """02_bert's explorer: the static heatmap without a live kernel (nbdev-test, the docs site), the sliders in one."""
    pytest.importorskip("ipywidgets")
    import torch
    from minbert_nb import attention
    attns = [torch.full((1, 2, 3, 3), 1 / 3)] * 2
    fig = attention.attention_explorer(attns, list("abc"))
    assert type(fig).__name__ == "Figure" and fig.axes[0].get_title() == "layer 0, head 0"
    monkeypatch.setattr(attention, "widgets_available", lambda: True)
    w = attention.attention_explorer(attns, list("abc"))
    layer, head = w.children[0].children
    assert (layer.max, head.max) == (1, 1) and "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()


def test_static_where_no_kernel():
    assert not course.widgets_available()                   # pytest: no kernel
    live = conflict_viewer([{"step": 1, "cos": {"a/b": 0.3}}])
    assert live.widget is None and set(live._repr_mimebundle_()) == {"image/png", "text/plain"}
