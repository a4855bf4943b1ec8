"""Nothing lost, nothing silently wrong (issue #13): each test fails on the engine before the fix and passes after.

Silently wrong results: SMART under mixed precision, accumulation, SMART's μ and the loss weight, the Bregman teacher,
the precision picked on pre-Ampere GPUs. Work lost or mixed: checkpoints written whole, one writer per run folder, no
NaN checkpoint, resume with other settings. Bad input: config values, files, `minbert predict`."""
import json, os, signal, subprocess, sys, time, warnings
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from minbert_nb.bert import BertModel, load_tokenizer
from minbert_nb.checkpoint import CheckpointError, RunLock, check_folder, read_json, save_json
from minbert_nb.cli import main
from minbert_nb.config import ConfigError, pick_amp, preset, seed_everything
from minbert_nb.data import load_split
from minbert_nb.batches import TaskDataset
from minbert_nb.heads import HeadsConfig, MultitaskBert, load_multitask
from minbert_nb.run import RunConfig, load_run_config
from minbert_nb.smart import BregmanTeacher, SmartConfig, SmartRegularizer
from minbert_nb.train import TINY_TRAIN, NonFiniteLossError, TrainConfig, Trainer
from minbert_nb.evaluate import loss_trace, read_history

HC = HeadsConfig(dropout=0.0)
SAMPLE = Path(__file__).resolve().parents[1] / "minbert_nb" / "sample"


@pytest.fixture(scope="module")
def sets():
    tok = load_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {t: TaskDataset(load_split(t, "train", "sample"), tok, t, HC.pair_mode(t), max_len=32) for t in HC.tasks}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    "A 2-layer checkpoint folder with the real tokenizer: CLI runs in seconds."
    d = tmp_path_factory.mktemp("tiny_ckpt")
    seed_everything(0)
    BertModel(preset("tiny")).save_pretrained(d)
    load_tokenizer().save_pretrained(str(d))
    return d


def tiny(seed=0, dropout=0.0):
    seed_everything(seed)
    return MultitaskBert(BertModel(preset("tiny", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)), HC)


def cli(*argv, capsys=None):
    "main(argv) → (exit code, stderr)."
    import contextlib, io
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out): rc = main(list(argv))
    return rc, err.getvalue(), out.getvalue()


# -- 1. SMART under mixed precision ----------------------------------------------------------------------------

def _smart_term_and_grad(amp_dtype, full_precision):
    "SMART's term and its θ-gradient on a tiny STS model, the trainer's forward under `amp_dtype` autocast (None: fp32)."
    m = tiny(3).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (8, 12), generator=g); am = torch.ones_like(ids)
    batch = {"input_ids_a": ids, "attention_mask_a": am, "input_ids_b": ids.roll(1, 1), "attention_mask_b": am,
             "labels": torch.rand(8, generator=g) * 5}
    reg = SmartRegularizer({"sts": SmartConfig(mu=1.0, full_precision=full_precision)}, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = m.task_forward("sts", batch)
        term = reg(m, "sts", batch, out, 0)
    grads = torch.autograd.grad(term, [p for p in m.bert.parameters()], allow_unused=True)
    return term.detach().float(), torch.cat([(x if x is not None else torch.zeros_like(p)).flatten().float()
                                             for x, p in zip(grads, m.bert.parameters())])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_smart_term_and_gradient_under_autocast_match_fp32(dtype):
    t32, g32 = _smart_term_and_grad(None, True)
    t, g = _smart_term_and_grad(dtype, True)
    cos = F.cosine_similarity(g, g32, dim=0).item()
    print(f"{dtype}: term {t.item():.3e} vs fp32 {t32.item():.3e}, gradient cosine {cos:.4f}")
    assert cos >= 0.99 and abs(t.item() - t32.item()) <= 0.05 * t32.item()


def test_smart_in_low_precision_would_chase_rounding_noise():
    "What the default prevents: the same term computed in bf16 points its gradient elsewhere (so the test above can fail)."
    t32, g32 = _smart_term_and_grad(None, True)
    t, g = _smart_term_and_grad(torch.bfloat16, False)
    assert F.cosine_similarity(g, g32, dim=0).item() < 0.9


def test_runs_build_smart_in_full_precision():
    assert RunConfig(smart={"sts": 10}).smart["sts"].full_precision


# -- 2. accumulation --------------------------------------------------------------------------------------------

def test_accumulation_keeps_batch_data_and_schedule(sets, tmp_path):
    "batch 8 × accum 4 = batch 32: the same steps, warm-up, evaluations, data passes and (without dropout) the same weights."
    base = replace(TINY_TRAIN, max_steps=None, epochs=3, batch_size=32, warmup_frac=0.25, eval_every=2, checkpoint_every=100)
    a = Trainer(tiny(), base, sets, tmp_path / "a", dev_sets=sets, progress=False)
    b = Trainer(tiny(), replace(base, batch_size=8, accum_steps=4), sets, tmp_path / "b", dev_sets=sets, progress=False)
    assert (a.steps_per_epoch, a.total_steps) == (b.steps_per_epoch, b.total_steps) == (2, 6)
    ra, rb = a.fit(), b.fit()
    assert [r["step"] for r in ra.history if "eval" in r] == [r["step"] for r in rb.history if "eval" in r] == [2, 4, 6]
    assert [round(x, 12) for x in a.sched.get_last_lr()] == [round(x, 12) for x in b.sched.get_last_lr()]
    assert a.streams["sst"].state() == b.streams["sst"].state()                       # the same passes over the data
    diff = max((x - y).abs().max().item() for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert diff < 1e-5, diff


# -- 3. μ means μ -------------------------------------------------------------------------------------------------

def test_loss_weight_does_not_scale_the_regularizer(sets, tmp_path):
    "ℓ_t = w_t L_t + μ R_t: with w = 2 and a regularizer worth 5, the objective is 2L + 5, not 2(L + 5)."
    cfg = replace(TINY_TRAIN, loss_weights=(("sts", 2.0),))
    tr = Trainer(tiny(), cfg, sets, tmp_path, regularizers={"sts": lambda *a: torch.tensor(5.0)}, progress=False)
    tr._start(resume=False, allow_changes=False)
    idx, key = next(tr.streams["sts"])
    objectives, raw = tr._micro_losses([("sts", (idx, key))], 0)
    assert objectives["sts"].item() == pytest.approx(2 * raw["sts"].item() + 5.0, rel=1e-6)


# -- 4. the Bregman teacher -------------------------------------------------------------------------------------

class _Teacher(BregmanTeacher):
    "A Bregman teacher that counts its updates and can stop its trainer (Ctrl-C) during a step."
    def after_step(self, model, step):
        self.calls.append(step); super().after_step(model, step)
        if step == self.stop_at: self.trainer._on_signal(signal.SIGINT, None)


def test_bregman_beta_schedule_every_step_and_exact_resume(sets, tmp_path):
    cfg = replace(TINY_TRAIN, sampler="proportional", log_every=1)        # some steps do not draw sts
    def run(out, stop_at=None):
        m = tiny(dropout=0.1)
        reg = _Teacher(m, mu=1.0, total_steps=6); reg.calls, reg.stop_at = [], stop_at
        reg.trainer = Trainer(m, cfg, sets, out, regularizers={"sts": reg}, progress=False)
        return reg.trainer.fit(), reg
    full, reg = run(tmp_path / "full")
    assert reg.calls == [1, 2, 3, 4, 5, 6]                                  # after every step, sts drawn or not
    assert [BregmanTeacher(tiny(), total_steps=100).beta(s) for s in (10, 11)] == [0.99, 0.999]   # 10 %: the paper's switch
    part, _ = run(tmp_path / "part", stop_at=3)
    assert part.interrupted and part.step == 3
    resumed, reg = run(tmp_path / "part")
    assert loss_trace(resumed.history) == loss_trace(full.history)        # the teacher came back from the checkpoint
    last = read_json(tmp_path / "part" / "last" / "trainer.json")["techniques"]["regularizers"]["sts"]
    assert len(last["teacher"]) == len(reg.teacher)


# -- 5. precision on pre-Ampere GPUs ------------------------------------------------------------------------------

@pytest.mark.parametrize("cap,want", [((7, 5), (torch.float16, True)), ((7, 0), (torch.float16, True)), ((8, 0), (torch.bfloat16, False)),
                                      ((9, 0), (torch.bfloat16, False))])
def test_auto_precision_follows_the_compute_capability(cap, want):
    with mock.patch("torch.cuda.get_device_capability", lambda d=None: cap), mock.patch("torch.cuda.is_bf16_supported", lambda *a: True):
        assert pick_amp("auto", "cuda") == want                             # a T4 says bf16 is "supported": emulated


def test_pretrain_and_experiments_accept_fp16():
    assert load_run_config("pretrain-quick", train={"amp": "fp16"}).train.amp == "fp16"
    from minbert_nb.experiments import load_profile
    assert load_profile("quick", amp="fp16").amp == "fp16"


# -- 6. checkpoints appear whole or not at all -------------------------------------------------------------------

def test_a_save_that_dies_halfway_leaves_the_previous_checkpoint_and_resume_is_exact(sets, tmp_path, monkeypatch):
    cfg = replace(TINY_TRAIN, log_every=1, checkpoint_every=2)
    full = Trainer(tiny(), cfg, sets, tmp_path / "full", progress=False).fit()
    import minbert_nb.train as tr
    real, n = tr.save_tensors, {"calls": 0}
    def dies(tensors, path, metadata=None):     # the 2nd checkpoint (step 4) dies after its model file: kill -9, a full disk
        n["calls"] += 1
        if n["calls"] == 6: raise OSError(28, "No space left on device")
        return real(tensors, path, metadata)
    monkeypatch.setattr(tr, "save_tensors", dies)
    with pytest.raises(OSError, match="No space left"): Trainer(tiny(), cfg, sets, tmp_path / "run", progress=False).fit()
    monkeypatch.setattr(tr, "save_tensors", real)
    assert check_folder(tmp_path / "run" / "last")["step"] == 2                      # whole, and still step 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".last")]   # no half-written folder left
    resumed = Trainer(tiny(5), cfg, sets, tmp_path / "run", progress=False).fit()
    steps = [r["step"] for r in read_history(tmp_path / "run")]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]                          # each step logged once
    assert loss_trace(resumed.history) == loss_trace(full.history)


def test_kill_9_during_training_never_leaves_a_mixed_checkpoint(tmp_path, tiny_ckpt):
    args = [sys.executable, "-m", "minbert_nb.cli", "train", "--model", str(tiny_ckpt), "--out", str(tmp_path / "run"), "--max-steps", "30",
            "--batch-size", "4", "--max-len", "32", "--checkpoint-every", "1", "--log-every", "1", "--eval-every", "1000", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.time()
    while not (tmp_path / "run" / "last").exists() and time.time() - t0 < 300: time.sleep(0.05)
    time.sleep(1.3)
    p.kill(); p.wait()
    man = check_folder(tmp_path / "run" / "last")                  # whole: every file matches the manifest
    meta = read_json(tmp_path / "run" / "last" / "trainer.json")
    assert meta["step"] == man["step"]
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [r["step"] for r in read_history(tmp_path / "run") if "eval" not in r]
    assert steps == list(range(1, 31)), steps[:10]


# -- 7. one writer per run folder --------------------------------------------------------------------------------

def test_second_run_on_the_same_out_is_refused(tmp_path, tiny_ckpt):
    holder = subprocess.Popen([sys.executable, "-c", f"from minbert_nb.checkpoint import RunLock\nimport time\nwith RunLock({str(tmp_path)!r}): time.sleep(60)"])
    try:
        t0 = time.time()
        while not (tmp_path / ".lock").exists() or not (tmp_path / ".lock").read_text() and time.time() - t0 < 30: time.sleep(0.1)
        time.sleep(0.5)
        rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--out", str(tmp_path), "--max-steps", "1", "--quiet")
        assert rc == 2 and f"another run is writing here (pid {holder.pid}" in err, err
        assert not (tmp_path / "run_config.json").exists()                          # nothing written
    finally: holder.kill()


# -- 8. never a NaN checkpoint -----------------------------------------------------------------------------------

class _Poison:
    "A regularizer that adds nothing and, after step `at`, turns one weight matrix into NaN (outside autograd)."
    def __init__(self, at): self.at = at
    def __call__(self, model, task, batch, out, step): return torch.zeros(())
    def after_step(self, model, step):
        if step == self.at:
            with torch.no_grad(): model.bert.pooler.dense.weight.fill_(float("nan"))


@pytest.mark.parametrize("at,why", [(5, "step 6: the loss of task"), (6, "step 6: the weights are no longer finite")])
def test_no_nan_weights_are_saved_and_the_message_names_a_real_checkpoint(sets, tmp_path, at, why):
    "log_every 4 does not divide checkpoint_every 3. NaN weights after step 5 show in step 6's loss; after step 6, only in the weights."
    cfg = replace(TINY_TRAIN, max_steps=8, log_every=4, checkpoint_every=3)
    with pytest.raises(NonFiniteLossError) as e: Trainer(tiny(), cfg, sets, tmp_path, regularizers={"sst": _Poison(at)}, progress=False).fit()
    assert why in str(e.value) and f"the last good checkpoint is {tmp_path / 'last'} (step 3)" in str(e.value), str(e.value)
    assert check_folder(tmp_path / "last")["step"] == 3
    from minbert_nb.checkpoint import read_tensors
    assert all(torch.isfinite(t).all() for t in read_tensors(tmp_path / "last" / "model.safetensors").values())


# -- 9. resume with other settings --------------------------------------------------------------------------------

def test_resume_with_other_settings_is_refused_and_the_record_kept(tmp_path, tiny_ckpt):
    base = ["train", "--model", str(tiny_ckpt), "--out", str(tmp_path), "--max-len", "32", "--quiet", "--device", "cpu"]
    assert cli(*base, "--max-steps", "2", "--batch-size", "4")[0] == 0
    record = (tmp_path / "run_config.json").read_text()
    rc, err, _ = cli(*base, "--max-steps", "2", "--batch-size", "8", "--seed", "3")
    assert rc == 2 and "train.batch_size: 4 → 8" in err and "train.seed: 0 → 3" in err, err
    assert (tmp_path / "run_config.json").read_text() == record                    # the record is not rewritten
    assert cli(*base, "--max-steps", "2", "--batch-size", "4", "--log-every", "1")[0] == 0   # where and how often to log may change
    assert cli(*base, "--max-steps", "3", "--batch-size", "8", "--resume-changed")[0] == 0
    assert json.loads((tmp_path / "run_config.json").read_text())["train"]["batch_size"] == 8


# -- 10. config values -----------------------------------------------------------------------------------------------

def test_yaml_reads_1e_4_as_the_number(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  lr_encoder: 1e-4\n  lr_heads: 3e-3\n")
    rc = load_run_config(tmp_path / "c.yaml")
    assert (rc.train.lr_encoder, rc.train.lr_heads) == (1e-4, 3e-3)


@pytest.mark.parametrize("yaml_text,needle", [
    ("train: 5\n", "train must be a mapping of keys, got 5"),
    ("train: {batch_size: eight}\n", "train.batch_size must be a whole number, got 'eight'"),
    ("train: {lr_encoder: -1.0e-4}\n", "train.lr_encoder must be >= 0"),
    ("train: {clip_norm: 0}\n", "train.clip_norm must be > 0"),
    ("train: {weight_decay: -0.1}\n", "train.weight_decay must be >= 0"),
    ("train: {loss_weights: {sts: -1}}\n", "train.loss_weights must be a mapping of tasks to weights >= 0"),
    ("train: {loss_weights: {qqp: 2}}\n", "train.loss_weights: unknown task(s) ['qqp']"),
    ("train: {max_steps: 2.5}\n", "train.max_steps must be a whole number, got 2.5"),
    ("train: {epochs: true}\n", "train.epochs must be a whole number, got True"),
    ("train: {device: gpu}\n", "train.device must be auto, cpu, cuda, cuda:N or mps"),
    ("heads: {tasks: []}\n", "heads.tasks must be a non-empty list"),
    ("heads: {sts_mode: dot}\n", "heads.sts_mode must be one of 'cosine', 'cross'"),
    ("smart: {sts: ten}\n", "smart.sts.mu must be a number, got 'ten'"),
    ("lora: {r: 0}\n", "lora.r must be >= 1"),
])
def test_bad_yaml_values_name_the_key(tmp_path, yaml_text, needle):
    (tmp_path / "c.yaml").write_text(yaml_text)
    rc, err, _ = cli("train", "--config", str(tmp_path / "c.yaml"), "--quiet")
    assert rc == 2 and needle in err and str(tmp_path / "c.yaml") in err and "Traceback" not in err, err


@pytest.mark.parametrize("flags,needle", [
    (["--train-limit", "0"], "--train-limit (train_limit must be >= 1"),
    (["--train-limit", "-5"], "--train-limit (train_limit must be >= 1"),
    (["--eval-every", "0"], "--eval-every (train.eval_every must be >= 1"),
    (["--steps-per-epoch", "-1"], "--steps-per-epoch (train.steps_per_epoch must be >= 1"),
    (["--tasks", ""], "--tasks (heads.tasks must be a non-empty list"),
    (["--tasks", "sst,qqp"], "--tasks (heads.tasks: unknown task 'qqp'"),
    (["--device", "tpu"], "--device (train.device must be auto, cpu, cuda, cuda:N or mps"),
    (["--lr-encoder", "-1"], "--lr-encoder (train.lr_encoder must be >= 0"),
    (["--max-len", "10000"], "train.max_len=10000 is longer than the model's 128 positions"),
])
def test_bad_flags_name_the_flag(flags, needle, tiny_ckpt, tmp_path):
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--out", str(tmp_path), "--max-steps", "1", "--quiet", *flags)
    assert rc == 2 and needle in err and "Traceback" not in err, err


# -- 11. files ----------------------------------------------------------------------------------------------------

def test_header_only_and_all_invalid_task_files(tmp_path, tiny_ckpt):
    data = tmp_path / "data"
    for t, f in (("sst", "ids-sst"), ("quora", "quora"), ("sts", "sts")):
        (data / t).mkdir(parents=True)
        for split in ("train", "dev"):
            src = SAMPLE / (f"{f}-{split}.csv" if t != "sst" else f"ids-sst-{split}.csv")
            (data / t / src.name).write_text(src.read_text())
    header = (data / "sts" / "sts-train.csv").read_text().splitlines()[0]
    (data / "sts" / "sts-train.csv").write_text(header + "\n")
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--data-dir", str(data), "--out", str(tmp_path / "o"), "--max-steps", "1", "--quiet")
    assert rc == 2 and "sts-train.csv: no usable examples: a header but no rows" in err, err
    (data / "sts" / "sts-train.csv").write_text(header + "\n0\tx\tA.\tB.\t9.0\n")
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--data-dir", str(data), "--out", str(tmp_path / "o"), "--max-steps", "1", "--quiet")
    assert rc == 2 and "sts-train.csv: no usable examples: all 1 rows are malformed" in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_ckpt):
    d = tmp_path_factory.mktemp("trained") / "run"
    assert cli("train", "--model", str(tiny_ckpt), "--out", str(d), "--max-steps", "2", "--batch-size", "4", "--max-len", "32",
               "--quiet", "--device", "cpu")[0] == 0
    return d


def _copy_best(trained, tmp_path):
    import shutil
    dst = tmp_path / "ck"; shutil.copytree(trained / "best", dst); (dst / "manifest.json").unlink()
    return dst


@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors: not a readable safetensors file"),
    (lambda d: (d / "heads.safetensors").write_bytes((d / "heads.safetensors").read_bytes()[:40]), "heads.safetensors: not a readable"),
    (lambda d: (d / "heads.json").write_text('{"heads": {"tasks": ['), "heads.json: not valid JSON"),
    (lambda d: save_json({"heads": {"tasks": ["sst", "para", "sts"]}}, d / "heads.json"), "heads.json: heads: missing key(s)"),
])
def test_damaged_checkpoint_files_are_named(trained, tmp_path, damage, needle):
    d = _copy_best(trained, tmp_path); damage(d)
    rc, err, _ = cli("evaluate", "--checkpoint", str(d), "--sst", str(SAMPLE / "ids-sst-dev.csv"))
    assert rc == 2 and needle in err and "Traceback" not in err, err


def test_head_tensor_of_the_wrong_shape(trained, tmp_path):
    from minbert_nb.checkpoint import read_tensors, save_tensors
    d = _copy_best(trained, tmp_path)
    sd = read_tensors(d / "heads.safetensors"); sd["sst.proj.weight"] = torch.zeros(3, sd["sst.proj.weight"].shape[1])
    save_tensors(sd, d / "heads.safetensors")
    rc, err, _ = cli("evaluate", "--checkpoint", str(d), "--sst", str(SAMPLE / "ids-sst-dev.csv"))
    assert rc == 2 and "sst.proj.weight: file (3, 32) vs model (5, 32)" in err, err


def test_a_damaged_run_folder_is_refused_by_its_manifest(trained, tmp_path):
    import shutil
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "run" / "best" / "heads.safetensors").write_bytes(b"\0" * 10)
    rc, err, _ = cli("evaluate", "--checkpoint", str(tmp_path / "run"), "--sst", str(SAMPLE / "ids-sst-dev.csv"))
    assert rc == 2 and "heads.safetensors: 10 bytes, the manifest says" in err, err


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("x"), "a file, not a folder"),
    (lambda p: (p.mkdir(), p.chmod(0o500)), "Permission denied"),
])
def test_unusable_out(tmp_path, tiny_ckpt, make, needle):
    if needle == "Permission denied" and os.geteuid() == 0: pytest.skip("root writes into read-only folders")
    out = tmp_path / "out"; make(out)
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--out", str(out), "--max-steps", "1", "--quiet")
    assert rc == 2 and needle in err and "Traceback" not in err, err


def test_read_only_out_as_root_is_still_one_line(tmp_path, tiny_ckpt, monkeypatch):
    "What a read-only or full disk says when the run folder is created: the OS error, one line, exit 2."
    import minbert_nb.run as run
    def refuse(*a, **k): raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))
    monkeypatch.setattr(run, "save_json", refuse)
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--out", str(tmp_path / "ro"), "--max-steps", "1", "--quiet")
    assert rc == 2 and "Permission denied" in err and str(tmp_path / "ro") in err and "Traceback" not in err, err


def test_ctrl_c_while_the_model_loads(tmp_path, tiny_ckpt, monkeypatch):
    import minbert_nb.run as run
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(run.BertModel, "from_pretrained", interrupted)
    rc, err, _ = cli("train", "--model", str(tiny_ckpt), "--out", str(tmp_path / "o"), "--max-steps", "1", "--quiet")
    assert rc == 130 and "interrupted before training started" in err and "Traceback" not in err, err


def test_refused_pickle_says_what_and_never_suggests_unsafe_loading(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, ("echo pwned",))
    BertModel(preset("tiny")).save_pretrained(tmp_path); (tmp_path / "model.safetensors").unlink()
    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    rc, err, _ = cli("demo", "--model", str(tmp_path))
    assert rc == 2 and "pytorch_model.bin: refused" in err and "weights_only=False" not in err, err


# -- 12. minbert predict -------------------------------------------------------------------------------------------

def test_predict_refuses_malformed_rows_overwrites_and_escapes(trained, tmp_path):
    src = (SAMPLE / "sts-dev.csv").read_text().splitlines()
    bad = tmp_path / "sts-test.csv"; bad.write_text("\n".join([src[0], src[1], "9\tonly\tone", *src[2:]]) + "\n")
    out = tmp_path / "pred"
    rc, err, _ = cli("predict", "--checkpoint", str(trained), "--sts", str(bad), "--out", str(out))
    assert rc == 2 and "line 3" in err and "--skip-bad" in err and not out.exists(), err
    assert cli("predict", "--checkpoint", str(trained), "--sts", str(bad), "--out", str(out), "--skip-bad")[0] == 0
    first = (out / "sts-test-output.csv").read_text()
    rc, err, _ = cli("predict", "--checkpoint", str(trained), "--sts", str(bad), "--out", str(out), "--skip-bad")
    assert rc == 2 and "exists; pass overwrite=True (`minbert predict --overwrite`)" in err
    assert (out / "sts-test-output.csv").read_text() == first
    assert cli("predict", "--checkpoint", str(trained), "--sts", str(bad), "--out", str(out), "--skip-bad", "--overwrite")[0] == 0
    rc, err, _ = cli("predict", "--checkpoint", str(trained), "--sts", str(bad), "--out", str(out), "--skip-bad", "--split", "../../escape")
    assert rc == 2 and "split must be a plain name" in err and not (tmp_path.parent / "sts-escape-output.csv").exists()
