"""Exercise notebooks end to end (stubs fail the checks, solutions pass, briefs land in the stubs), and nbdev's handling
of `#| exercise`."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest

from minbert_nb.colab import write_notebook as write_nb
from minbert_nb.exercises import ExerciseError, check_notebook, exercise_notebooks, make_exercises

REPO = Path(__file__).resolve().parents[1]


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
    "05_heads": {"Sentiment.forward", "Paraphrase.forward", "Similarity.forward"},
    "06_evaluate": {"mean_output"},
    "10_smart": {"smart_term"},
    "11_pcgrad": {"pc_coefficients", "project_conflicting"},
    "12_lora": {"LoRALinear.delta_weight", "LoRALinear.forward", "merge", "unmerge"},
    "14_distill": {"distill_loss"},
}
RAISED = {"01_attention": {"attention"}, "02_bert": {"BertEmbeddings.forward", "BertAttention.forward", "BertLayer.forward"},
          "03_optim": {"AdamW.step"}, "05_heads": {"Sentiment.forward", "Paraphrase.forward"}, "06_evaluate": {"mean_output"},
          "10_smart": {"smart_term"},
          "11_pcgrad": {"pc_coefficients", "project_conflicting"}, "12_lora": {"LoRALinear.delta_weight", "LoRALinear.forward", "merge"},
          "14_distill": {"distill_loss"}}
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
    assert '    @torch.no_grad()\n    def step(self, closure: Callable | None = None):\n        """One update of each parameter' in src
    assert "m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; θ ← θ − αλθ − α_t·m/(√v + ε)" in src   # the docstring stays
    assert '        # Exercise: For each group in `self.param_groups`' in src                           # the brief, from the markdown
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




def test_briefs_come_from_the_markdown_not_the_library():
    """Every marked function has a brief in the lesson's markdown, and the library code carries no exercise instructions."""
    from minbert_nb.exercises import exercise_briefs, _directives
    for name, names in EXERCISES.items():
        cells = json.loads((REPO / "nbs" / f"{name}.ipynb").read_text())["cells"]
        briefs = {}
        for c in cells:
            if c["cell_type"] == "markdown": briefs.update(exercise_briefs("".join(c["source"])))
        missing = {n for n in names if n not in briefs and not n.endswith(("AddNorm.forward", "BertAttention.forward"))}
        assert not missing, (name, missing)
    for p in (REPO / "minbert_nb").glob("*.py"):
        if p.name == "exercises.py": continue                          # the generator that reads them
        assert not re.search(r"#\s*instructions:", p.read_text()), p
