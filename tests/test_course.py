"""Exercise notebooks end to end (stubs fail the checks, solutions pass), nbdev's handling of `#| exercise`,
the live widgets behind their static fallbacks, and the Colab environment."""
import json, os, shutil, subprocess, sys, warnings
from pathlib import Path

import pytest

from minbert_nb import course
from minbert_nb.course import (CellFailure, Live, check_badges, check_notebook, colab_setup, conflict_viewer,
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


def mark_adamw_step(src_nb: Path, dest_nb: Path) -> Path:
    "A copy of 03_optim with AdamW.step marked as an exercise, the way the lead marks the real notebook."
    nb = json.loads(src_nb.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "class AdamW(Optimizer)" in "".join(c["source"]))
    src = "".join(cell["source"])
    assert src.startswith("#| export\n")
    cell["source"] = src.replace("#| export\n", "#| export\n#| exercise AdamW.step\n", 1)
    dest_nb.parent.mkdir(parents=True, exist_ok=True)
    dest_nb.write_text(json.dumps(nb, indent=1))
    return dest_nb


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


def test_real_optim_notebook_exercise(tmp_path):
    """03_optim with `#| exercise AdamW.step`: the student copy fails exactly the cells that step the optimiser."""
    nb = mark_adamw_step(REPO / "nbs" / "03_optim.ipynb", tmp_path / "nbs" / "03_optim.ipynb")
    assert exercise_notebooks(tmp_path / "nbs") == [nb]
    student, = make_exercises([nb], tmp_path / "exercises")
    key, = make_exercises([nb], tmp_path / "key", solutions=True)
    src = next(c["source"] for c in json.loads(student.read_text())["cells"] if "class AdamW" in c["source"])
    assert "def __init__(self, params: Iterable" in src and "if lr < 0" in src          # the constructor is given
    assert '    @torch.no_grad()\n    def step(self, closure: Callable | None = None):\n        raise NotImplementedError("Exercise: implement AdamW.step")' in src
    assert "m.lerp_" not in src
    fails = check_notebook(student)
    assert fails and all(f.ename == "NotImplementedError" and f.evalue == "Exercise: implement AdamW.step" for f in fails), fails
    assert {f.source.split("=")[0].strip() for f in fails} == {"diff, ours, ref", "w"}   # compare_adamw and the bias-correction check
    assert check_notebook(key) == []


def test_nbdev_ignores_the_exercise_directive(tmp_path):
    """export, test and clean treat `#| exercise` as an unknown directive: same module, tests pass, marker kept."""
    proj = tmp_path / "proj"
    (proj / "nbs").mkdir(parents=True)
    shutil.copy2(REPO / "pyproject.toml", proj)
    shutil.copytree(REPO / "minbert_nb", proj / "minbert_nb", ignore=shutil.ignore_patterns("__pycache__"))
    nb = mark_adamw_step(REPO / "nbs" / "03_optim.ipynb", proj / "nbs" / "03_optim.ipynb")
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


def test_static_where_no_kernel():
    assert not course.widgets_available()                   # pytest: no kernel
    live = conflict_viewer([{"step": 1, "cos": {"a/b": 0.3}}])
    assert live.widget is None and set(live._repr_mimebundle_()) == {"image/png", "text/plain"}
