"""SMART: the divergences, the ascent (exact on a linear model), ε → 0, gradients for every head kind, errors, the CLI
spec. R3F: its noise, its term → 0 with the noise, gradients, config errors, a trainer run and its exact resume."""
import json, signal
from dataclasses import replace
import pytest
import torch
import torch.nn.functional as F
from minbert_nb.config import preset, seed_everything, ConfigError
from minbert_nb.bert import BertModel
from minbert_nb.cli import task_values
from minbert_nb.heads import HeadsConfig, MultitaskBert
from minbert_nb.run import RunConfig
from minbert_nb.smart import (SmartConfig, SmartError, SmartRegularizer, BregmanTeacher, dropout_off,
                              smart_divergence, smart_term, R3FConfig, R3FRegularizer, r3f_noise, r3f_term)
from helpers import random_batch, multitask_batch

TASKS = ("sst", "para", "sts")          # multiclass, binary (cross-encoder pair), regression (siamese pair, cosine)


def tiny(seed=0, dropout=0.1):
    "A 2-layer MultitaskBert in training mode; `dropout` in the encoder and before the heads."
    seed_everything(seed)
    bert = BertModel(preset("tiny", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    return MultitaskBert(bert, HeadsConfig(tasks=TASKS + ("nli",), dropout=dropout)).train()

def batch(task, seed=0): return random_batch(task, generator=torch.Generator().manual_seed(seed))


def test_divergences():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    kl = lambda a, b: F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(smart_divergence(p, q, "multiclass"), kl(p, q) + kl(q, p))
    z1, z2 = p[:, 0], q[:, 0]
    two = lambda z: torch.stack([torch.zeros_like(z), z], -1)
    torch.testing.assert_close(smart_divergence(z1, z2, "binary"), smart_divergence(two(z1), two(z2), "multiclass"))
    torch.testing.assert_close(smart_divergence(z1, z2, "regression"), F.mse_loss(z1, z2))
    assert smart_divergence(p.half(), q.half(), "multiclass").dtype == torch.float32     # the KL in fp32
    assert smart_divergence(p.bfloat16(), q.bfloat16(), "multiclass").dtype == torch.float32


def test_linear_model_exact_maximum():
    "For f(x) = w·x the ∞-ball maximum of (w·δ)² is (ε‖w‖₁)², and one step finds it."
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    f = lambda es: (es[0] * w).sum((1, 2))
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    cfg = SmartConfig()
    term = smart_term(f, [x], f([x]), "regression", cfg, torch.Generator().manual_seed(1))
    expect = ((cfg.eps * w.abs().sum((1, 2))) ** 2).mean()
    assert float(term) <= float(expect) * (1 + 1e-9)               # never beyond the maximum
    assert float(term) >= 0.99 * float(expect)                     # coordinates with |w_k| < 1% of max|w| may stop short of the face


def test_perturbation_stays_in_the_ball():
    seen = []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, generator=g)
    w = torch.randn(6, 2, generator=g)
    def f(es): seen.append(es[0].detach()); return torch.tanh(es[0] @ w).sum(1)      # (B, 2)
    for norm in ("example", "token"):
        seen.clear()
        cfg = SmartConfig(eps=1e-3, step_size=1e-2, k=3, norm=norm)
        smart_term(f, [x], f([x]), "multiclass", cfg, torch.Generator().manual_seed(0))
        delta = seen[-1] - x
        assert float(delta.abs().max()) <= 1e-3 + 4 * torch.finfo(x.dtype).eps * float(x.abs().max())   # (x + δ) − x rounds
        assert float(delta.abs().max()) > 0.5e-3                      # it does move


@pytest.mark.parametrize("task", TASKS)
def test_term_vanishes_with_eps_when_dropout_is_off(task):
    model, b = tiny(), batch(task)
    vals = [SmartRegularizer({task: SmartConfig(eps=e)}, torch.Generator().manual_seed(0))(model, task, b, None, 0).item()
            for e in (1e-3, 1e-4, 1e-5, 1e-7, 0.0)]
    assert vals[-1] == 0.0
    assert vals[0] > vals[1] > vals[2] > vals[3] > 0
    assert vals[3] < 1e-6 * vals[0]                                  # ∝ ε²


@pytest.mark.parametrize("task", TASKS)
def test_dropout_on_does_not_vanish(task):
    model, b = tiny(), batch(task)
    out = model.task_forward(task, b)
    r = SmartRegularizer({task: SmartConfig(eps=0.0, clean_eval=False)}, torch.Generator().manual_seed(0))(model, task, b, out, 0)
    assert r.item() > 0                                              # two dropout masks


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("clean_eval", [True, False])
def test_gradient_reaches_the_model_and_is_finite(task, clean_eval):
    model, b = tiny(), batch(task)
    reg = SmartRegularizer({task: SmartConfig(mu=10.0, clean_eval=clean_eval)}, torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    out = model.task_forward(task, b)
    r = reg(model, task, b, out, 3)
    assert r.dim() == 0 and r.dtype == torch.float32 and r.item() > 0
    torch.testing.assert_close(r, 10.0 * reg.last[task])
    r.backward()
    used = [p for n, p in model.named_parameters() if n.startswith(("bert.embeddings.word", "bert.encoder", f"heads.{task}."))]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in used)
    assert float(torch.cat([p.grad.flatten() for p in used]).norm()) > 0
    assert model.training and all(m.training for m in model.modules())          # modes restored


def test_modes_restored_per_module():
    model = tiny()
    model.heads["sst"].eval()                                       # a module deliberately in eval mode
    with dropout_off(model): assert not any(m.training for m in model.modules())
    assert model.training and not model.heads["sst"].training and model.bert.training


def test_clean_eval_false_backpropagates_through_the_training_output():
    model, b = tiny(), batch("sst")
    out = model.task_forward("sst", b)
    out.retain_grad()
    SmartRegularizer({"sst": SmartConfig(clean_eval=False)}, torch.Generator().manual_seed(0))(model, "sst", b, out, 0).backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    out2 = model.task_forward("sst", b); out2.retain_grad()
    SmartRegularizer({"sst": SmartConfig(clean_eval=True)}, torch.Generator().manual_seed(0))(model, "sst", b, out2, 0).backward()
    assert out2.grad is None                                       # the reference is its own constant forward


def test_seeded_and_zero_weight():
    model, b = tiny(), batch("sts")
    a = SmartRegularizer({"sts": 1.0}, torch.Generator().manual_seed(5))(model, "sts", b, None, 0)
    c = SmartRegularizer({"sts": 1.0}, torch.Generator().manual_seed(5))(model, "sts", b, None, 0)
    assert torch.equal(a, c)
    out = model.task_forward("sts", b)
    z = SmartRegularizer({"sts": 0.0})(model, "sts", b, out, 0)
    assert z.item() == 0.0 and not z.requires_grad


def test_nonfinite_raises_with_task_and_step():
    model, b = tiny(), batch("sts")
    emb = model.task_embeds("sts", b)
    bad = lambda es: model.task_forward("sts", b, inputs_embeds=[e * float("nan") for e in es])
    with pytest.raises(SmartError, match=r"task 'sts' at training step 42: non-finite perturbation"):
        smart_term(bad, emb, model.task_forward("sts", b), "regression", SmartConfig(), task="sts", step=42)
    big = lambda es: model.task_forward("sts", b, inputs_embeds=es) * float("inf")
    with pytest.raises(SmartError, match="task 'sts' at training step 3"):
        smart_term(big, emb, model.task_forward("sts", b), "regression", SmartConfig(k=0), task="sts", step=3)
    with pytest.raises(KeyError, match="not configured for task 'nli'"):
        SmartRegularizer({"sts": 1.0})(model, "nli", b, None, 0)


def technique_flag(name: str, spec: str) -> dict:
    "What `minbert train --NAME SPEC` gives the run: the flag parsed by the CLI, then checked by `RunConfig`."
    return getattr(RunConfig(**{name: task_values(spec, f"--{name}")}), name)


def smart_flag(spec: str) -> dict: return technique_flag("smart", spec)


def test_config_and_cli_spec():
    assert task_values("sts=10", "--smart") == {"sts": 10.0}
    assert task_values("sts=10,para=1", "--smart") == {"sts": 10.0, "para": 1.0}
    assert smart_flag("sts=10,para=1") == {"sts": SmartConfig(mu=10.0), "para": SmartConfig(mu=1.0)}
    for spec, msg in [("qqp=1", "smart.qqp: not a task of this run"), ("sts=x", "must be a number, got 'x'"),
                      ("sts", "is not TASK=NUMBER"), ("sts=1,sts=2", "given twice"), ("sts=nan", "smart.sts.mu must be a number, got nan"),
                      ("sts=-1", "smart.sts.mu must be >= 0, got -1"), (" ", "'' is not TASK=NUMBER")]:
        with pytest.raises(ConfigError, match=msg): smart_flag(spec)
    with pytest.raises(ConfigError, match="smart.sts.eps must be >= 0, got -1"): RunConfig(smart={"sts": {"eps": -1}})
    with pytest.raises(ConfigError, match="step_size must be > 0"): SmartConfig(step_size=0)
    with pytest.raises(ConfigError, match="eps must be >= 0, got -1"): SmartConfig(eps=-1)
    with pytest.raises(ConfigError, match="k must be a whole number, got 1.5"): SmartConfig(k=1.5)
    reg = SmartRegularizer(smart_flag("sts=10,para=1"))
    assert reg.tasks == ("sts", "para") and reg.cfgs["sts"].mu == 10.0 and reg.cfgs["para"].eps == 1e-5


def test_smart_with_pcgrad():
    "The SMART term rides on the task's loss into PCGrad's per-task backward."
    from minbert_nb.pcgrad import PCGrad
    model = tiny()
    bs = {t: batch(t, i) for i, t in enumerate(TASKS)}
    reg = SmartRegularizer({"sts": 10.0, "para": 1.0}, torch.Generator().manual_seed(0))
    pc = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    losses = {}
    for t, b in bs.items():
        out = model.task_forward(t, b)
        losses[t] = model.task_loss(t, out, b) + (reg(model, t, b, out, 0) if t in reg.tasks else 0)
    pc.backward(losses)
    st = pc.before_step()
    assert st["pcgrad/n_tasks"] == 3
    assert all(torch.isfinite(p.grad).all() for p in model.shared_parameters() if p.grad is not None)


def test_bregman_teacher():
    model, b = tiny(dropout=0.0), batch("sst")
    breg = BregmanTeacher(model, mu=2.0, total_steps=20, betas=(0.9, 0.99), switch_frac=0.1)   # β = 0.9 for steps 1–2
    assert [breg.beta(s) for s in (1, 2, 3, 20)] == [0.9, 0.9, 0.99, 0.99]
    assert breg(model, "sst", b, model.task_forward("sst", b), 0).item() == pytest.approx(0.0, abs=1e-12)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    w0 = model.heads["sst"].proj.weight.detach().clone()
    F.cross_entropy(model.task_forward("sst", b), b["labels"]).backward(); opt.step()
    w1 = model.heads["sst"].proj.weight.detach().clone()
    breg.after_step(model, 1)                                        # what the trainer calls after optimizer step 1
    r = breg(model, "sst", b, model.task_forward("sst", b), 1)
    assert r.item() > 0 and r.requires_grad
    i = [n for n, _ in model.named_parameters()].index("heads.sst.proj.weight")
    torch.testing.assert_close(breg.teacher[i], 0.1 * w1 + 0.9 * w0)
    assert torch.equal(model.heads["sst"].proj.weight, w1)
    state = breg.state_dict()                                        # the teacher's tensors, for a resume
    again = BregmanTeacher(model, mu=2.0, total_steps=20, betas=(0.9, 0.99)); again.load_state_dict(state)
    assert all(torch.equal(a, t) for a, t in zip(again.teacher, breg.teacher)) and not torch.equal(again.teacher[i], w1)
    with pytest.raises(ConfigError, match="betas must be in"): BregmanTeacher(model, betas=(0.9, 1.0))


def test_siamese_paraphrase_head():
    seed_everything(0)
    model = MultitaskBert(BertModel(preset("tiny")), HeadsConfig(tasks=("sst", "para", "sts"), para_mode="siamese")).train()
    g = torch.Generator().manual_seed(0)
    for t in ("sst", "para", "sts"):
        b = multitask_batch(model, t, g)
        model.zero_grad(set_to_none=True)
        out = model.task_forward(t, b)
        r = SmartRegularizer({t: 1.0}, torch.Generator().manual_seed(0))(model, t, b, out, 0)
        r.backward()
        assert r.item() > 0 and all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.bert.encoder.parameters())


def test_full_precision_turns_autocast_off():
    model, b = tiny(), batch("sst")
    dtypes = []
    h = model.heads["sst"].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.task_forward("sst", b)
            r_half = SmartRegularizer({"sst": SmartConfig(full_precision=False)}, torch.Generator().manual_seed(0))(model, "sst", b, out, 0)
            n = len(dtypes)
            r_full = SmartRegularizer({"sst": SmartConfig()}, torch.Generator().manual_seed(0))(model, "sst", b, out, 0)   # the default
    finally: h.remove()
    assert dtypes[0] == torch.bfloat16 and set(dtypes[1:n]) == {torch.bfloat16} and set(dtypes[n:]) == {torch.float32}
    assert r_half.dtype == r_full.dtype == torch.float32 and torch.isfinite(r_half) and r_full.item() > 0


# ---- R3F ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_r3f_term_vanishes_with_the_noise_when_dropout_is_off(task, noise):
    model, b = tiny(), batch(task)
    def at(s):
        reg = R3FRegularizer({task: R3FConfig(eps=s, noise=noise)}, torch.Generator().manual_seed(0))
        return reg(model, task, b, None, 0).item()
    with dropout_off(model): vals = [at(s) for s in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert vals[0] > vals[1] > vals[2] > vals[3] > 0
    assert 0.8e4 < vals[1] / vals[3] < 1.25e4         # ∝ σ²: the same draw ẑ, scaled (z = σẑ), at 1/100 the scale


@pytest.mark.parametrize("task", TASKS)
def test_r3f_with_dropout_on_keeps_the_two_mask_divergence(task):
    model, b = tiny(), batch(task)
    on = R3FRegularizer({task: R3FConfig(eps=1e-9)}, torch.Generator().manual_seed(0))(model, task, b, None, 0)
    assert on.item() > 1e-6                                                     # R-Drop's part does not vanish


@pytest.mark.parametrize("task", TASKS)
def test_r3f_gradient_flows_through_both_passes(task):
    model, b = tiny(), batch(task)
    reg = R3FRegularizer({task: R3FConfig(lam=2.0, eps=1e-3)}, torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    out = model.task_forward(task, b)
    out.retain_grad()
    r = reg(model, task, b, out, 4)
    assert r.dim() == 0 and r.dtype == torch.float32 and r.item() > 0
    torch.testing.assert_close(r, 2.0 * reg.last[task])
    r.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0                 # through f(x), the training output
    used = [p for n, p in model.named_parameters() if n.startswith(("bert.encoder", f"heads.{task}."))]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in used)
    assert model.training and all(m.training for m in model.modules())
    # with f(x) held constant, only the noisy pass is left: its input x + z is detached, so the embedding
    # table gets nothing from it
    model.zero_grad(set_to_none=True)
    reg(model, task, b, model.task_forward(task, b).detach(), 4).backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is None
    assert float(torch.cat([p.grad.flatten() for p in model.bert.encoder.parameters()]).norm()) > 0


def test_r3f_noise_distributions_and_known_answer():
    e = torch.zeros(64, 32, 16)
    u = r3f_noise(e, R3FConfig(eps=0.5), torch.Generator().manual_seed(0))
    n = r3f_noise(e, R3FConfig(eps=0.5, noise="normal"), torch.Generator().manual_seed(0))
    assert u.shape == n.shape == e.shape and u.abs().max() <= 0.5 and u.abs().max() > 0.499
    assert abs(u.std().item() - 0.5 / 3 ** 0.5) < 0.005 and abs(n.std().item() - 0.5) < 0.005
    again = r3f_noise(e, R3FConfig(eps=0.5), torch.Generator().manual_seed(0))
    assert torch.equal(u, again)
    w = torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f = lambda es: (es[0] * w).sum((1, 2))
    x = torch.randn(20_000, 4, 6, dtype=torch.float64)
    for noise, var in (("uniform", 1 / 3), ("normal", 1.0)):
        c = R3FConfig(eps=1e-4, noise=noise)
        t = r3f_term(f, [x], f([x]), "regression", c, torch.Generator().manual_seed(2))
        assert float(t) == pytest.approx(c.eps ** 2 * var * float(w.pow(2).sum()), rel=0.03)   # E(w·z)²


def test_r3f_nonfinite_raises_and_zero_weight():
    model, b = tiny(), batch("sst")
    emb = model.task_embeds("sst", b)
    big = lambda es: model.task_forward("sst", b, inputs_embeds=es) * float("inf")
    with pytest.raises(SmartError, match="R3F on task 'sst' at training step 5: non-finite R3F term"):
        r3f_term(big, emb, model.task_forward("sst", b), "multiclass", R3FConfig(), task="sst", step=5)
    z = R3FRegularizer({"sst": 0.0})(model, "sst", b, None, 0)
    assert z.item() == 0.0 and not z.requires_grad
    with pytest.raises(KeyError, match="R3F is not configured for task 'nli'"):
        R3FRegularizer({"sst": 1.0})(model, "nli", b, None, 0)


def r3f_flag(spec: str) -> dict: return technique_flag("r3f", spec)


def test_r3f_config_and_cli_spec():
    assert r3f_flag("sts=1,sst=0.5") == {"sts": R3FConfig(lam=1.0), "sst": R3FConfig(lam=0.5)}
    for spec, msg in [("qqp=1", "r3f.qqp: not a task of this run"), ("sts=-1", "r3f.sts.lam must be >= 0, got -1"),
                      ("sts=x", "must be a number, got 'x'")]:
        with pytest.raises(ConfigError, match=msg): r3f_flag(spec)
    assert RunConfig(r3f={"sts": {"eps": "1e-3", "noise": "normal"}}).r3f["sts"] == R3FConfig(eps=1e-3, noise="normal")
    for bad, msg in [({"eps": 0}, "r3f.sts.eps must be > 0, got 0"), ({"noise": "gauss"}, "r3f.sts.noise must be one of"),
                     ({"mu": 1}, "r3f.sts.mu: unknown key"), ({"lam": "big"}, "r3f.sts.lam must be a number")]:
        with pytest.raises(ConfigError, match=msg): RunConfig(r3f={"sts": bad})
    with pytest.raises(ConfigError, match="r3f must be a mapping of tasks"): RunConfig(r3f=2)


def test_r3f_and_smart_on_one_task_keep_both_states():
    from minbert_nb.smart import add_regularizer
    from minbert_nb.checkpoint import join_tensors, split_tensors
    class _Run: regularizers = {}
    run, model, b = _Run(), tiny(dropout=0.0), batch("sts")
    add_regularizer(run, "sts", SmartRegularizer({"sts": 1.0}, torch.Generator().manual_seed(0)))
    add_regularizer(run, "sts", R3FRegularizer({"sts": R3FConfig(eps=1e-3)}, torch.Generator().manual_seed(0)))
    both = run.regularizers["sts"]
    meta, tensors = split_tensors(both.state_dict())                     # what the checkpoint holds
    restore = lambda: both.load_state_dict(join_tensors(json.loads(json.dumps(meta)), tensors))
    first = both(model, "sts", b, None, 0)
    restore()
    assert torch.equal(both(model, "sts", b, None, 0), first)             # both generators came back
    restore()
    smart, r3f = both.a(model, "sts", b, None, 0), both.b(model, "sts", b, None, 0)
    assert smart > 0 and r3f > 0 and torch.equal(smart + r3f, first)      # the two terms, summed


# ---- R3F in the trainer ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_sets():
    import warnings
    from minbert_nb.bert import load_tokenizer
    from minbert_nb.data import load_split
    from minbert_nb.batches import TaskDataset
    tok, hc = load_tokenizer(), HeadsConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                  # the bundled sample says it is one
        return {t: TaskDataset(load_split(t, "train", "sample"), tok, t, hc.pair_mode(t), max_len=32) for t in hc.tasks}


def _trainer(sets, out, regs: dict, stop_at=None, dropout=0.1):
    "A tiny run with regularizers `regs` (task → regularizer); Ctrl-C during step `stop_at`."
    from minbert_nb.train import TINY_TRAIN, Trainer
    seed_everything(0)
    bert = BertModel(preset("tiny", hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    model, holder = MultitaskBert(bert, HeadsConfig(dropout=dropout)), {}
    if stop_at is not None:
        def stop(model, task, batch, out, step):
            if step == stop_at - 1: holder["t"]._on_signal(signal.SIGINT, None)
            return torch.zeros(())
        regs = {**regs, "sst": stop}
    holder["t"] = Trainer(model, replace(TINY_TRAIN, log_every=1), sets, out, regularizers=regs, progress=False)
    return holder["t"]


def r3f_as_a_run_applies_it(spec: dict) -> dict:
    "The regularizers `RunConfig(r3f=spec)` gives a run."
    from minbert_nb.run import Run, technique
    rc = RunConfig(r3f=spec)
    run = Run(rc, tiny(), None)
    technique("r3f").apply(run, rc.r3f)
    return run.regularizers


def test_r3f_in_a_trainer_run_resumes_exactly(sample_sets, tmp_path):
    "R3F from a run config draws from torch's global generator, which the checkpoint holds."
    from minbert_nb.evaluate import loss_trace
    full_t = _trainer(sample_sets, tmp_path / "full", r3f_as_a_run_applies_it({"sts": 1}))
    full = full_t.fit()
    reg = full_t.regularizers["sts"]
    assert isinstance(reg, R3FRegularizer) and reg.last["sts"].item() > 0 and full.step == 6
    plain = _trainer(sample_sets, tmp_path / "plain", r3f_as_a_run_applies_it({"sts": 0})).fit()
    assert loss_trace(plain.history) != loss_trace(full.history)                 # the term changes training
    part = _trainer(sample_sets, tmp_path / "part", r3f_as_a_run_applies_it({"sts": 1}), stop_at=3).fit()
    assert part.interrupted and part.step == 3
    seed_everything(123)                                                         # a new process
    resumed = _trainer(sample_sets, tmp_path / "part", r3f_as_a_run_applies_it({"sts": 1})).fit()
    assert loss_trace(resumed.history) == loss_trace(full.history)


def test_r3f_own_generator_resumes_from_the_checkpoint(sample_sets, tmp_path):
    "An R3F regularizer with its own generator: the trainer saves its state (a tensor) and restores it."
    from minbert_nb.evaluate import loss_trace
    regs = lambda seed: {"sts": R3FRegularizer({"sts": R3FConfig(eps=1e-2)}, torch.Generator().manual_seed(seed))}
    full = _trainer(sample_sets, tmp_path / "full", regs(0), dropout=0.0).fit()
    assert _trainer(sample_sets, tmp_path / "part", regs(0), stop_at=3, dropout=0.0).fit().interrupted
    other = _trainer(sample_sets, tmp_path / "other", regs(99), dropout=0.0).fit()
    assert loss_trace(other.history) != loss_trace(full.history)                 # the noise matters
    resumed = _trainer(sample_sets, tmp_path / "part", regs(99), dropout=0.0).fit()   # restored from last/
    assert loss_trace(resumed.history) == loss_trace(full.history)
