"""The regime profiles of 13_experiments: packaged and well-formed, and the property their equal-CPU reading
rests on — under a constant learning rate without warm-up, the first k steps of a longer run are the run of
k steps, whatever the technique."""
import warnings

import pytest

from minbert_nb.config import build
from minbert_nb.evaluate import read_history
from minbert_nb.experiments import load_profile, row_run_config
from minbert_nb.run import RunConfig, run_train

BASE = {"data": "sample", "heads": {"tasks": ["sst", "sts"]},
        "train": {"batch_size": 4, "max_len": 32, "log_every": 1, "device": "cpu", "schedule": "constant",
                  "warmup_frac": 0.0, "keep": "last", "eval_every": 2, "amp": "off"}}


def _curve(tmp_path, name, steps, **tech):
    rc = build(RunConfig, {**BASE, **tech, "out": str(tmp_path / f"{name}-{steps}"),
                           "train": {**BASE["train"], "max_steps": steps}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_train(rc, progress=False, resume=False)
    return {e["step"]: e["eval"] for e in read_history(tmp_path / f"{name}-{steps}") if "eval" in e}


@pytest.mark.parametrize("name,tech", [("plain", {}), ("r3f", {"r3f": {"sts": 1.0}}),
                                       ("smart", {"smart": {"sts": 1.0}}), ("pcgrad", {"pcgrad": True}),
                                       ("famo", {"famo": True})])
def test_a_runs_first_steps_are_the_shorter_run(tmp_path, name, tech):
    short, long = _curve(tmp_path, name, 2, **tech), _curve(tmp_path, name, 4, **tech)
    assert short[2] == long[2], (short[2], long[2])                  # bit for bit on one CPU thread


@pytest.mark.parametrize("profile,rows", [("low-data", ["plain", "r3f", "smart"]),
                                          ("conflict", ["sum", "famo", "pcgrad"])])
def test_regime_profiles(profile, rows):
    prof = load_profile(profile)
    assert [r.name for r in prof.rows] == rows and len(prof.seeds) >= 2 and not prof.predictions
    rcs = [row_run_config(prof, r, "/tmp/x", s) for r in prof.rows for s in prof.seeds]
    assert {rc.train.max_steps for rc in rcs} == {prof.steps}
    assert {rc.train.seed for rc in rcs} == set(prof.seeds)
    assert len({rc.out for rc in rcs}) == len(rcs)


def test_a_seeded_profile_needs_a_constant_schedule(tmp_path):
    (tmp_path / "run.yaml").write_text("train: {schedule: linear}\n")
    (tmp_path / "p.yaml").write_text("name: p\nrun: run.yaml\nseeds: [0, 1]\nrows:\n  - {name: a, label: A}\n")
    prof = load_profile(tmp_path / "p.yaml")
    with pytest.raises(Exception, match="schedule constant"):
        row_run_config(prof, prof.rows[0], tmp_path / "out", 0)
