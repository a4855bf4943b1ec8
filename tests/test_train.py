"Trainer and CLI: resume, interrupts, non-finite losses, bad input."
import json, os, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from minbert_nb.config import preset, seed_everything
from minbert_nb.bert import BertModel, load_tokenizer
from minbert_nb.checkpoint import CheckpointError
from minbert_nb.data import load_split
from minbert_nb.batches import TaskDataset
from minbert_nb.heads import HeadsConfig, MultitaskBert, load_multitask
from minbert_nb.train import Trainer, TINY_TRAIN, NonFiniteLossError
from minbert_nb.evaluate import loss_trace, read_history
from minbert_nb.cli import main

HC = HeadsConfig()


@pytest.fixture(scope="module")
def sets():
    import warnings
    tok = load_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the bundled sample says it is one
        return {t: TaskDataset(load_split(t, "train", "sample"), tok, t, HC.pair_mode(t), max_len=32) for t in HC.tasks}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    "A 2-layer checkpoint folder with the real tokenizer: CLI runs in seconds."
    d = tmp_path_factory.mktemp("tiny_ckpt")
    seed_everything(0)
    BertModel(preset("tiny")).save_pretrained(d)
    load_tokenizer().save_pretrained(str(d))
    return d


def tiny(seed=0):
    seed_everything(seed)
    return MultitaskBert(BertModel(preset("tiny")), HC)


def test_nonfinite_loss_names_step_and_task(sets, tmp_path):
    def poison(model, task, batch, out, step):
        return torch.tensor(float("nan")) if step == 2 else torch.zeros(())
    with pytest.raises(NonFiniteLossError, match=r"step 3: the objective \(loss and regularizer\) of task 'sts' is nan"):
        Trainer(tiny(), TINY_TRAIN, sets, tmp_path, regularizers={"sts": poison}, progress=False).fit()


def test_a_regularizer_shared_by_tasks_is_started_and_stepped_once(sets, tmp_path):
    class Counting:
        def __init__(self): self.calls = []
        def __call__(self, model, task, batch, out, step): return torch.zeros(())
        def start(self, total_steps): self.calls.append(("start", total_steps))
        def after_step(self, model, step): self.calls.append(("after_step", step))
    reg = Counting()
    cfg = replace(TINY_TRAIN, max_steps=3)
    Trainer(tiny(), cfg, sets, tmp_path, regularizers={t: reg for t in HC.tasks}, progress=False).fit()
    assert reg.calls == [("start", 3), ("after_step", 1), ("after_step", 2), ("after_step", 3)]


def test_resume_with_accumulation_and_minbert_adamw(sets, tmp_path):
    cfg = replace(TINY_TRAIN, accum_steps=2, optimizer="minbert", log_every=1, sampler="proportional")
    full = Trainer(tiny(), cfg, sets, tmp_path / "a", progress=False).fit()
    holder = {}
    def stop(model, task, batch, out, step):
        if step == 2: holder["t"]._on_signal(signal.SIGTERM, None)
        return torch.zeros(())
    holder["t"] = Trainer(tiny(), cfg, sets, tmp_path / "b", progress=False, regularizers={"sst": stop})
    assert holder["t"].fit().interrupted
    resumed = Trainer(tiny(7), cfg, sets, tmp_path / "b", progress=False).fit()
    assert loss_trace(resumed.history) == loss_trace(full.history)
    for k, v in load_multitask(tmp_path / "a").state_dict().items():
        assert torch.equal(v, load_multitask(tmp_path / "b").state_dict()[k]), k


def test_resume_from_incomplete_checkpoint_is_refused(sets, tmp_path):
    Trainer(tiny(), replace(TINY_TRAIN, max_steps=3), sets, tmp_path, progress=False).fit()
    (tmp_path / "last" / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors: missing from the checkpoint"):
        Trainer(tiny(), TINY_TRAIN, sets, tmp_path, progress=False).fit()


def test_sigint_in_a_real_process_checkpoints_and_resumes(tmp_path, tiny_ckpt):
    "Ctrl-C on `minbert train`: exit 130 with a checkpoint; running again finishes with the same losses."
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "minbert_nb.cli", "train", "--max-steps", "40", "--batch-size", "4", "--max-len", "32",
            "--quiet", "--eval-every", "1000", "--seed", "3", "--model", str(tiny_ckpt)]
    ref = subprocess.run(args + ["--out", str(tmp_path / "ref")], env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    p = subprocess.Popen(args + ["--out", str(tmp_path / "int")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "int" / "metrics.jsonl"
    t0 = time.time()
    while not (log.exists() and log.read_text().count("\n") >= 1) and time.time() - t0 < 300: time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    if p.returncode == 0: pytest.skip("the run finished before the signal arrived")
    assert p.returncode == 130, err
    assert "interrupted at step" in err and (tmp_path / "int" / "last" / "trainer.json").exists()
    again = subprocess.run(args + ["--out", str(tmp_path / "int")], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    # the log groups losses differently around the interruption; the trained weights must be identical
    a, b = load_multitask(tmp_path / "int").state_dict(), load_multitask(tmp_path / "ref").state_dict()
    for k in a: assert torch.equal(a[k], b[k]), k
    assert read_history(tmp_path / "int")[-1]["step"] == 40


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data-dir", "/no/such/dir", "--max-steps", "1"], "/no/such/dir"),
    (["train", "--tasks", "sst,qqp", "--max-steps", "1"], "unknown task 'qqp'"),
    (["train", "--config", "/no/config.yaml"], "/no/config.yaml: no such config file"),
    (["evaluate", "--checkpoint", "/no/ckpt", "--sst", "x.csv"], "/no/ckpt"),
])
def test_cli_bad_input_is_one_clear_line(argv, needle, capsys):
    assert main(argv + (["--quiet"] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_cli_bad_yaml_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  epochz: 2\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--quiet"]) == 2
    assert "train.epochz: unknown key" in capsys.readouterr().err


def test_cli_evaluate_checkpoint_missing_files(tmp_path, capsys):
    (tmp_path / "ck").mkdir(); (tmp_path / "ck" / "config.json").write_text("{}")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ck"), "--sst", "x.csv"]) == 2
    assert "missing model.safetensors" in capsys.readouterr().err


def test_cli_predict_writes_cs224n_files(tmp_path, capsys, tiny_ckpt):
    import minbert_nb
    sample = Path(minbert_nb.__file__).parent / "sample"
    assert main(["train", "--out", str(tmp_path / "m"), "--max-steps", "2", "--batch-size", "4", "--max-len", "32", "--quiet", "--model", str(tiny_ckpt)]) == 0
    assert main(["predict", "--checkpoint", str(tmp_path / "m"), "--sst", str(sample / "ids-sst-dev.csv"),
                 "--sts", str(sample / "sts-dev.csv"), "--out", str(tmp_path / "p"), "--split", "dev"]) == 0
    lines = (tmp_path / "p" / "sst-dev-output.csv").read_text().splitlines()
    assert lines[0].split() == ["id", "Predicted_Sentiment"] and len(lines) > 5
    assert (tmp_path / "p" / "sts-dev-output.csv").exists()
