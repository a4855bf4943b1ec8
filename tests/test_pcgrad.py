"""PCGrad: the projection (against a float64 reference), its random order, and the training strategy on a tiny BERT.
FAMO: a two-task example computed by hand, the simplex, the authors' Adam step, its gradient, a trainer run and resume."""
import json, math, signal, warnings
from dataclasses import replace
import pytest
import torch
from minbert_nb.config import preset, seed_everything, ConfigError
from minbert_nb.bert import BertModel
from minbert_nb.heads import HeadsConfig, MultitaskBert
from minbert_nb.pcgrad import (PCGrad, PCGradError, project_conflicting, pc_coefficients, gram, FAMO, FAMOConfig,
                               plot_task_weights)
from minbert_nb.run import RunConfig
from helpers import random_batch, multitask_batch


def reference(grads, generator=None):
    "Yu et al., Algorithm 1, written out on float64 vectors."
    g = [x.double() for x in grads]; out = []
    for i in range(len(g)):
        gi, others = g[i].clone(), [j for j in range(len(g)) if j != i]
        for o in torch.randperm(len(others), generator=generator).tolist():
            j = others[o]; d = gi @ g[j]
            if d < 0: gi -= d / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_two_tasks_no_conflict_left(seed):
    g = torch.Generator().manual_seed(seed)
    g1 = torch.randn(1000, generator=g)
    g2 = -0.5 * g1 + torch.randn(1000, generator=g)          # mostly conflicting
    p1, p2 = project_conflicting([g1, g2])
    tol = 1e-5 * float(g1.norm() * g2.norm())
    assert float(p1 @ g2) >= -tol and float(p2 @ g1) >= -tol
    if float(g1 @ g2) < 0:                                     # projected exactly onto the normal planes
        assert abs(float(p1 @ g2)) <= tol and abs(float(p2 @ g1)) <= tol


@pytest.mark.parametrize("T", [2, 3, 5])
def test_equals_float64_reference(T):
    g = torch.Generator().manual_seed(T)
    base = torch.randn(20_000, generator=g)
    grads = [base * s + torch.randn(20_000, generator=g) for s in torch.linspace(-1.5, 1.0, T).tolist()]
    ours = project_conflicting(grads, torch.Generator().manual_seed(11))
    ref = reference(grads, torch.Generator().manual_seed(11))
    for a, b in zip(ours, ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-6 * float(b.abs().max()))


def test_float64_input_matches_reference_tightly():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(500, generator=g, dtype=torch.float64) * s for s in (1.0, -2.0, 0.5)]
    grads[1] += -grads[0]
    for a, b in zip(project_conflicting(grads, torch.Generator().manual_seed(3)), reference(grads, torch.Generator().manual_seed(3))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_conflicting_unchanged():
    g = torch.Generator().manual_seed(0)
    grads = [torch.rand(300, generator=g) for _ in range(4)]   # non-negative: every dot product > 0
    for a, b in zip(project_conflicting(grads), grads): assert torch.equal(a, b)
    orth = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])]
    for a, b in zip(project_conflicting(orth), orth): assert torch.equal(a, b)


def test_random_order_is_seeded():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, generator=g) for _ in range(4)]
    runs = {s: project_conflicting(grads, torch.Generator().manual_seed(s)) for s in range(30)}
    again = project_conflicting(grads, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(runs[7], again))              # same seed, same result
    distinct = {tuple(torch.cat(r).tolist()) for r in runs.values()}
    assert len(distinct) > 1                                                     # the order matters with ≥ 3 tasks
    torch.manual_seed(5); a = project_conflicting(grads)
    torch.manual_seed(5); b = project_conflicting(grads)
    assert all(torch.equal(x, y) for x, y in zip(a, b))                         # generator=None: the global RNG


def test_coefficients_reproduce_vectors():
    g = torch.Generator().manual_seed(1)
    G = torch.randn(3, 50, generator=g, dtype=torch.float64); G[1] -= 2 * G[0]
    A = pc_coefficients(gram(G), torch.Generator().manual_seed(0))
    for a, b in zip((A @ G).unbind(0), reference(list(G), torch.Generator().manual_seed(0))):
        torch.testing.assert_close(a, b)


def test_power_of_two_scale_commutes_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(10_000, generator=g) * s for s in (1.0, -0.7, 0.2)]
    grads[1] += -0.5 * grads[0]
    S = 2.0 ** 16
    plain = project_conflicting(grads, torch.Generator().manual_seed(0))
    scaled = project_conflicting([S * x for x in grads], torch.Generator().manual_seed(0))
    assert all(torch.equal(a / S, b) for a, b in zip(scaled, plain))


def test_bad_input():
    with pytest.raises(ValueError, match="one length"): project_conflicting([torch.ones(3), torch.ones(4)])
    with pytest.raises(ValueError, match="no gradients"): project_conflicting([])


# ---- the strategy ------------------------------------------------------------------------------------------

def tiny(seed=0, **heads):
    "A 2-layer MultitaskBert (sst, para, sts) without dropout."
    seed_everything(seed)
    bert = BertModel(preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return MultitaskBert(bert, HeadsConfig(tasks=("sst", "para", "sts"), dropout=0.0, **heads))

def losses_of(model, batches): return {t: model.task_loss(t, model.task_forward(t, b), b) for t, b in batches.items()}

def batches(seed, tasks=("sst", "para", "sts")):
    g = torch.Generator().manual_seed(seed)
    return {t: random_batch(t, generator=g) for t in tasks}

def flat_grads(params): return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in params])


def test_strategy_matches_manual_projection_and_keeps_head_grads():
    model, bs = tiny(), batches(0)
    shared = model.shared_parameters()
    L = losses_of(model, bs)
    per_task = [torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                           for g, p in zip(torch.autograd.grad(L[t], shared, allow_unused=True, retain_graph=True), shared)]) for t in L]
    expect = torch.stack(project_conflicting(per_task, torch.Generator().manual_seed(0))).sum(0)
    heads = {t: torch.autograd.grad(L[t], list(model.heads[t].parameters()), retain_graph=True) for t in L if t in model.heads}
    assert set(heads) == {"sst", "para"}                                         # the cosine STS head has no parameters
    model.zero_grad(set_to_none=True)
    pc = PCGrad(shared, generator=torch.Generator().manual_seed(0))
    pc.backward(losses_of(model, bs))
    st = pc.before_step()
    torch.testing.assert_close(flat_grads(shared), expect, rtol=0, atol=1e-6 * float(expect.abs().max()))
    for t in heads:
        for p, g in zip(model.heads[t].parameters(), heads[t]): torch.testing.assert_close(p.grad, g)
    # the stats come from the same gradients
    for i, a in enumerate(L):
        for j, b in enumerate(L):
            if i < j:
                cos = float(per_task[i] @ per_task[j] / (per_task[i].norm() * per_task[j].norm()))
                assert st[f"pcgrad/cos/{a}|{b}"] == pytest.approx(cos, abs=1e-5)
    assert st["pcgrad/n_tasks"] == 3 and 0 <= st["pcgrad/conflicts"] <= 1 and st["pcgrad/nonfinite"] == 0
    assert pc.history[-1]["step"] == 0 and len(pc.history) == 1


def test_mean_reduction_is_sum_over_T():
    model, bs = tiny(), batches(1)
    out = {}
    for red in ("sum", "mean"):
        model.zero_grad(set_to_none=True)
        pc = PCGrad(model.shared_parameters(), reduction=red, generator=torch.Generator().manual_seed(0))
        pc.backward(losses_of(model, bs)); pc.before_step()
        out[red] = flat_grads(model.shared_parameters())
    torch.testing.assert_close(out["mean"] * 3, out["sum"])


def test_gradient_accumulation_per_task():
    model = tiny()
    shared = model.shared_parameters()
    micro = [batches(10), batches(11)]
    whole = {t: {k: torch.cat([micro[0][t][k], micro[1][t][k]]) for k in micro[0][t]} for t in micro[0]}
    res = []
    for mbs in (micro, [whole]):
        model.zero_grad(set_to_none=True)
        pc = PCGrad(shared, generator=torch.Generator().manual_seed(0))
        for b in mbs: pc.backward({t: l / len(mbs) for t, l in losses_of(model, b).items()})
        pc.before_step()
        res.append(flat_grads(shared))
    torch.testing.assert_close(res[0], res[1], rtol=0, atol=1e-6 * float(res[1].abs().max()))


def test_micro_batches_with_different_tasks():
    "Round-robin sampling: each micro-batch holds one task; the step projects all of them."
    model = tiny()
    shared = model.shared_parameters()
    bs = batches(3)
    model.zero_grad(set_to_none=True)
    pc = PCGrad(shared, generator=torch.Generator().manual_seed(0))
    for t in bs: pc.backward({t: losses_of(model, {t: bs[t]})[t]})
    pc.before_step()
    a = flat_grads(shared)
    model.zero_grad(set_to_none=True)
    pc2 = PCGrad(shared, generator=torch.Generator().manual_seed(0))
    pc2.backward(losses_of(model, bs)); pc2.before_step()
    torch.testing.assert_close(a, flat_grads(shared))
    # a step that sees only one task leaves its gradient as it is
    model.zero_grad(set_to_none=True)
    pc.backward({"sst": losses_of(model, {"sst": bs["sst"]})["sst"]})
    st = pc.before_step()
    ref = torch.autograd.grad(losses_of(model, {"sst": bs["sst"]})["sst"], shared, allow_unused=True)
    torch.testing.assert_close(flat_grads(shared), torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(ref, shared)]))
    assert st["pcgrad/n_tasks"] == 1


def test_amp_scale_then_unscale_is_bit_exact():
    model, micro = tiny(), [batches(20), batches(21)]
    shared, S = model.shared_parameters(), 2.0 ** 16
    res = []
    for scale in (lambda l: l, lambda l: l * S):
        model.zero_grad(set_to_none=True)
        pc = PCGrad(shared, generator=torch.Generator().manual_seed(0))
        for b in micro: pc.backward({t: l / 2 for t, l in losses_of(model, b).items()}, scale)
        pc.before_step()
        res.append(flat_grads(shared))
    assert torch.equal(res[1] / S, res[0])


def test_nonfinite_gradients_skip_surgery_and_say_so():
    model, bs = tiny(), batches(4)
    model.zero_grad(set_to_none=True)
    pc = PCGrad(model.shared_parameters())
    L = losses_of(model, bs); L["sst"] = L["sst"] * float("inf")
    pc.backward(L)
    st = pc.before_step()
    assert st["pcgrad/nonfinite"] == 1.0
    assert not torch.isfinite(flat_grads(model.shared_parameters())).all()       # the scaler will see it and skip


def test_rows_live_only_within_a_step():
    "Issue #5: at most T rows of the shared parameters' size, allocated at the backward passes and freed by before_step."
    model, bs = tiny(), batches(5)
    shared = model.shared_parameters()
    pc = PCGrad(shared, tasks=("sst", "para", "sts"))
    nbytes = sum(p.numel() * p.element_size() for p in shared)
    assert pc.buffer_bytes == 0                                                  # nothing held before a step
    model.zero_grad(set_to_none=True)
    pc.backward(losses_of(model, bs))
    assert pc.buffer_bytes == 3 * nbytes                                         # one row per task...
    assert all(p.grad is None for p in shared)                                   # ...and no other copy
    pc.before_step()
    assert pc.buffer_bytes == 0                                                  # the other rows are freed
    ptr = shared[0].grad.untyped_storage().data_ptr()
    assert all(p.grad.untyped_storage().data_ptr() == ptr for p in shared)       # the update lives in one row
    model.zero_grad(set_to_none=False)                                           # zeroing in place is fine too
    pc.backward(losses_of(model, bs)); st = pc.before_step()
    assert st["pcgrad/n_tasks"] == 3


def test_errors():
    model, bs = tiny(), batches(6)
    pc = PCGrad(model.shared_parameters())
    with pytest.raises(PCGradError, match="no backward"): pc.before_step()
    model.zero_grad(set_to_none=True)
    losses_of(model, bs)["sst"].backward()
    with pytest.raises(PCGradError, match="zero_grad"): pc.backward(losses_of(model, bs))
    with pytest.raises(ConfigError, match="'sum' or 'mean'"): PCGrad(model.shared_parameters(), reduction="max")
    frozen = [torch.nn.Parameter(torch.ones(2), requires_grad=False)]
    with pytest.raises(ConfigError, match="no shared parameter requires a gradient"): PCGrad(frozen)


def test_training_steps_lower_the_loss():
    from minbert_nb.optim import AdamW
    model, bs = tiny(), batches(7)
    model.train()
    opt = AdamW(model.parameters(), lr=1e-3)
    pc = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0))
    first = None
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        L = losses_of(model, bs)
        first = first if first is not None else sum(l.item() for l in L.values())
        pc.backward(L); pc.before_step(); opt.step()
    assert sum(l.item() for l in losses_of(model, bs).values()) < first
    assert len(pc.history) == 8


def test_siamese_paraphrase_head():
    seed_everything(0)
    model = MultitaskBert(BertModel(preset("tiny")), HeadsConfig(tasks=("sst", "para", "sts"), para_mode="siamese"))
    bs = {}
    g = torch.Generator().manual_seed(0)
    for t in ("sst", "para", "sts"):
        b = multitask_batch(model, t, g)
        bs[t] = b
    pc = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    pc.backward({t: model.task_loss(t, model.task_forward(t, b), b) for t, b in bs.items()})
    st = pc.before_step()
    assert st["pcgrad/n_tasks"] == 3
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head_parameters())


def test_task_weights_scale_each_task_gradient():
    "The trainer hands PCGrad w_t·L_t (TrainConfig.loss_weights): that task's row is w_t times its gradient, then projected."
    model, bs = tiny(), batches(8)
    shared = model.shared_parameters()
    w = {"sst": 2.0, "para": 0.5}
    rows = []
    for weights in ({}, w):
        model.zero_grad(set_to_none=True)
        pc = PCGrad(shared, generator=torch.Generator().manual_seed(0), tasks=("sst", "para", "sts"))
        pc.backward({t: weights.get(t, 1.0) * l for t, l in losses_of(model, bs).items()})
        rows.append([g.clone() for g in pc.G])                         # the per-task rows of this step, before surgery
        pc.before_step()
    for t, a, b in zip(pc.tasks, *rows): assert torch.equal(b, w.get(t, 1.0) * a), t   # powers of two scale exactly
    expect = torch.stack(project_conflicting(rows[1], torch.Generator().manual_seed(0))).sum(0)
    torch.testing.assert_close(flat_grads(shared), expect, rtol=0, atol=1e-6 * float(expect.abs().max()))


def test_state_dict_round_trip_is_json():
    import json
    model, bs = tiny(), batches(9)
    pc = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0))
    def one(p):
        model.zero_grad(set_to_none=True); p.backward(losses_of(model, bs)); p.before_step()
        return flat_grads(model.shared_parameters())
    one(pc)
    state = json.loads(json.dumps(pc.state_dict()))
    a = one(pc)
    pc2 = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(1)); pc2.load_state_dict(state)
    assert torch.equal(one(pc2), a) and pc2.steps == 2
    with pytest.raises(PCGradError, match="no generator"): PCGrad(model.shared_parameters()).load_state_dict(state)


def test_task_without_shared_gradient():
    "A loss that does not reach the encoder gets a zero row; nothing divides by its zero norm."
    model, bs = tiny(sts_mode="cross"), batches(12, tasks=("sst", "para"))   # an STS head with weights
    model.zero_grad(set_to_none=True)
    pc = PCGrad(model.shared_parameters(), generator=torch.Generator().manual_seed(0))
    L = losses_of(model, bs)
    L["sts"] = model.heads["sts"](torch.randn(2, model.bert.config.hidden_size)).pow(2).mean()       # head only
    pc.backward(L)
    st = pc.before_step()
    assert math.isnan(st["pcgrad/cos/sst|sts"]) and st["pcgrad/nonfinite"] == 0
    assert torch.isfinite(flat_grads(model.shared_parameters())).all()
    assert model.heads["sts"].proj.weight.grad is not None


# ---- FAMO --------------------------------------------------------------------------------------------------------

def famo_steps(famo, losses_per_step, param=None):
    "Drive `famo` as the trainer does over made-up losses; returns the weights z each step used."
    p = param if param is not None else torch.nn.Parameter(torch.ones(()))
    out = []
    for ls in losses_per_step:
        famo.backward({t: l * p for t, l in ls.items()})
        out.append(torch.stack(list(famo.before_step().values())))
        p.grad = None
    return out


def test_famo_two_tasks_by_hand():
    "ℓ = (1, 4), then (1/2, 3); the paper's plain step, β = 1, γ = 0 (the numbers of the notebook's derivation)."
    theta = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    famo = FAMO(["a", "b"], FAMOConfig(lr=1.0, weight_decay=0.0, optimizer="sgd"))
    grads = []
    for th in ([1.0, 2.0], [0.5 ** 0.5, 3 ** 0.5]):
        with torch.no_grad(): theta.copy_(torch.tensor(th, dtype=torch.float64))
        theta.grad = None
        famo.backward({"a": theta[0] ** 2, "b": theta[1] ** 2})
        assert [float(v) for v in famo.before_step().values()] == [0.5, 0.5]
        grads.append(theta.grad.clone())
    torch.testing.assert_close(grads[0], torch.tensor([0.8 * 2, 0.2 * 4], dtype=torch.float64))       # α = (4/5, 1/5)
    torch.testing.assert_close(grads[1], torch.tensor([6 / 7 * 2 * 0.5 ** 0.5, 1 / 7 * 2 * 3 ** 0.5], dtype=torch.float64))
    q = math.log(1.5) / 4                                      # ∇_ξ zᵀδ = ½(δ − zᵀδ), δ = (log 2, log 4/3)
    torch.testing.assert_close(famo.xi, torch.tensor([-q, q]))
    z = torch.softmax(famo.xi, 0)
    torch.testing.assert_close(z, torch.tensor([2 ** 0.5, 3 ** 0.5]) / (2 ** 0.5 + 3 ** 0.5))
    assert famo.steps == 2 and famo.t == 0                     # the plain step keeps no Adam state


@pytest.mark.parametrize("cfg", [FAMOConfig(), FAMOConfig(lr=5.0, weight_decay=0.0, optimizer="sgd")])
def test_famo_weights_stay_on_the_simplex(cfg):
    g = torch.Generator().manual_seed(0)
    famo = FAMO(["a", "b", "c", "d"], cfg)
    steps = [{t: torch.exp(3 * torch.randn((), generator=g)) for t in "abcd"} for _ in range(150)]
    W = torch.stack(famo_steps(famo, steps))                       # (steps, T)
    torch.testing.assert_close(W.sum(1), torch.ones(150))
    assert (W > 0).all() and torch.isfinite(famo.state).all()
    assert (W[1:] != W[:-1]).any()                                 # they moved


def test_famo_adam_step_is_the_authors_code():
    "Our closed-form Adam on ξ against torch.optim.Adam(lr=β, weight_decay=γ) on the gradient of softmax(ξ)ᵀδ."
    g = torch.Generator().manual_seed(1)
    cfg = FAMOConfig(lr=0.05, weight_decay=0.01)
    famo = FAMO(["a", "b", "c"], cfg)
    xi = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=cfg.lr, weight_decay=cfg.weight_decay)
    prev = None
    for step in range(30):
        ls = torch.exp(-torch.tensor([0.03, 0.01, 0.02]) * step + 0.1 * torch.randn(3, generator=g))
        famo_steps(famo, [dict(zip("abc", ls))])
        cur = torch.log(ls + cfg.eps)
        if prev is not None:                                       # the authors' FAMO.update, with our ℓ(t+1)
            d = torch.autograd.grad(torch.softmax(xi, -1), xi, grad_outputs=prev - cur)[0]
            opt.zero_grad(); xi.grad = d; opt.step()
        prev = cur
        torch.testing.assert_close(famo.xi, xi.detach(), rtol=1e-5, atol=1e-6)
    assert famo.t == 29 and float(xi.detach().abs().max()) > 0.1


def test_famo_gradient_is_the_normalised_log_loss_gradient():
    "One backward of Σ α_i ℓ_i = the gradient of the authors' Σ z_i log(ℓ_i + ε) / c; loss weights drop out."
    model, bs = tiny(), batches(20)
    shared = model.shared_parameters()
    famo = FAMO(["sst", "para", "sts"])
    famo.xi.copy_(torch.tensor([0.3, -0.2, 0.1]))                  # weights away from equal
    model.zero_grad(set_to_none=True)
    famo.backward(losses_of(model, bs))
    got = flat_grads(shared)
    model.zero_grad(set_to_none=True)
    L = losses_of(model, bs)
    D = torch.stack([L[t] for t in famo.tasks]) + famo.cfg.eps
    z = torch.softmax(famo.xi, 0)
    c = (z / D).sum().detach()
    (z * D.log() / c).sum().backward()                             # the authors' get_weighted_loss
    torch.testing.assert_close(got, flat_grads(shared), rtol=1e-5, atol=1e-8)
    model.zero_grad(set_to_none=True)
    FAMO(famo.tasks).backward({t: (4.0 if t == "sst" else 1.0) * l for t, l in losses_of(model, bs).items()})
    scaled = flat_grads(shared)
    model.zero_grad(set_to_none=True)
    FAMO(famo.tasks).backward(losses_of(model, bs))
    plain = flat_grads(shared)
    cos = float(scaled @ plain / (scaled.norm() * plain.norm()))
    assert cos == pytest.approx(1.0, abs=1e-5) and not torch.allclose(scaled, plain)   # same direction, other length


def test_famo_accumulation_and_amp_scale():
    model, bs = tiny(), batches(21)
    shared = model.shared_parameters()
    def run(pieces, scale=lambda l: l):
        famo = FAMO(["sst", "para", "sts"], FAMOConfig(optimizer="sgd"))
        for step in range(2):
            model.zero_grad(set_to_none=True)
            for k in range(pieces):
                famo.backward({t: l / pieces for t, l in losses_of(model, bs).items()}, scale)
            famo.before_step()
        return flat_grads(shared), famo.xi.clone()
    whole, xi1 = run(1)
    halves, xi2 = run(2)
    torch.testing.assert_close(halves, whole, rtol=1e-5, atol=1e-8)   # pieces of equal losses: the same step
    torch.testing.assert_close(xi2, xi1)
    S = 2.0 ** 16
    scaled, xi3 = run(1, lambda l: l * S)
    assert torch.equal(scaled / S, whole) and torch.equal(xi3, xi1)   # the loss scale changes neither


def test_famo_errors_and_config():
    famo = FAMO(["sst", "sts"])
    with pytest.raises(PCGradError, match="no backward"): famo.before_step()
    with pytest.raises(PCGradError, match=r"task\(s\) \['nli'\] are not among"): famo.backward({"nli": torch.ones(())})
    famo.backward({"sst": torch.ones((), requires_grad=True)})
    with pytest.raises(PCGradError, match=r"no loss of task\(s\) \['sts'\] in this step"): famo.before_step()
    with pytest.raises(PCGradError, match="the state is for tasks"): FAMO(["a"]).load_state_dict(FAMO(["b"]).state_dict())
    with pytest.raises(ConfigError, match="FAMO: no tasks"): FAMO([])
    assert RunConfig(famo=True).famo == FAMOConfig()
    assert RunConfig(famo={"lr": "1e-2", "optimizer": "sgd"}).famo == FAMOConfig(lr=0.01, optimizer="sgd")
    for bad, msg in [({"lr": 0}, "famo.lr must be > 0, got 0"), ({"eps": -1}, "famo.eps must be > 0"),
                     ({"weight_decay": -0.1}, "famo.weight_decay must be >= 0"), ({"gamma": 1}, "famo.gamma: unknown key"),
                     ({"optimizer": "rmsprop"}, "famo.optimizer must be one of 'adam', 'sgd'"),
                     ("on", "famo must be true or a mapping of FAMO's options, got 'on'")]:
        with pytest.raises(ConfigError, match=msg): RunConfig(famo=bad)
    with pytest.raises(ConfigError, match="pcgrad and famo are two strategies"): RunConfig(famo=True, pcgrad=True)
    with pytest.raises(ConfigError, match="famo must run with train.sampler round_robin"):
        RunConfig(famo=True, train={"sampler": "annealed"})


def test_famo_cli_flag():
    from minbert_nb.cli import build_parser, _run_config
    rc = _run_config(build_parser().parse_args(["train", "--famo", "--r3f", "sts=1", "--max-steps", "2"]))
    assert rc.famo == FAMOConfig() and rc.r3f["sts"].lam == 1.0 and rc.pcgrad is None


def test_famo_state_round_trip():
    from minbert_nb.checkpoint import join_tensors, split_tensors
    g = torch.Generator().manual_seed(3)
    steps = [{t: torch.rand((), generator=g) + 0.1 for t in ("x", "y")} for _ in range(8)]
    a = FAMO(["x", "y"]); famo_steps(a, steps[:5])
    meta, tensors = split_tensors(a.state_dict())                     # what the checkpoint writes
    b = FAMO(["x", "y"]); b.load_state_dict(join_tensors(json.loads(json.dumps(meta)), tensors))
    wa, wb = famo_steps(a, steps[5:]), famo_steps(b, steps[5:])
    assert all(torch.equal(x, y) for x, y in zip(wa, wb)) and torch.equal(a.state, b.state)
    assert (a.t, a.steps) == (b.t, b.steps) == (7, 8)


def test_plot_task_weights_draws_the_log():
    famo = FAMO(["a", "b"], track=True)
    famo_steps(famo, [{"a": torch.tensor(1.0 / (s + 1)), "b": torch.tensor(1.0)} for s in range(10)])
    fig = plot_task_weights(famo.history)
    lines = {l.get_label(): l for l in fig.axes[0].lines}
    assert list(lines["a"].get_xdata()) == list(range(1, 11))
    assert list(lines["b"].get_ydata()) == [e["famo/w/b"] for e in famo.history]
    assert lines["b"].get_ydata()[-1] > 0.5 > lines["a"].get_ydata()[-1]        # a's loss falls fast: b gains weight
    with pytest.raises(ValueError, match="no 'famo/w/"): plot_task_weights([{"step": 1}])


@pytest.fixture(scope="module")
def sample_sets():
    from minbert_nb.bert import load_tokenizer
    from minbert_nb.data import load_split
    from minbert_nb.batches import TaskDataset
    tok, hc = load_tokenizer(), HeadsConfig(dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                              # the bundled sample says it is one
        return {t: TaskDataset(load_split(t, "train", "sample"), tok, t, hc.pair_mode(t), max_len=32) for t in hc.tasks}


def famo_trainer(sets, out, stop_at=None, seed=0, accum=1):
    "A tiny trainer (dropout on) with FAMO set up as `RunConfig(famo=True)` sets it up; Ctrl-C during `stop_at`."
    from minbert_nb.run import Run, technique
    from minbert_nb.train import TINY_TRAIN, Trainer
    rc = RunConfig(famo=True)
    seed_everything(seed)
    run = Run(rc, MultitaskBert(BertModel(preset("tiny")), HeadsConfig()), None)
    technique("famo").apply(run, rc.famo)
    holder = {}
    def stop(model, task, batch, out, step):
        if step == stop_at - 1: holder["t"]._on_signal(signal.SIGINT, None)
        return torch.zeros(())
    cfg = replace(TINY_TRAIN, log_every=1, accum_steps=accum)
    holder["t"] = Trainer(run.model, cfg, sets, out, strategy=run.strategy,
                          regularizers={"sst": stop} if stop_at else None, progress=False)
    return holder["t"]


def test_famo_in_a_trainer_run_resumes_exactly(sample_sets, tmp_path):
    from minbert_nb.evaluate import loss_trace
    from minbert_nb.checkpoint import read_json
    full = famo_trainer(sample_sets, tmp_path / "full").fit()
    w = [[r[f"famo/w/{t}"] for t in ("sst", "para", "sts")] for r in full.history if "famo/w/sst" in r]
    assert len(w) == 6 and all(abs(sum(x) - 1) < 1e-6 for x in w) and w[-1] != w[1]
    assert w[0] == w[1] == pytest.approx([1 / 3] * 3)          # steps 1 and 2: no δ before the end of step 2
    part = famo_trainer(sample_sets, tmp_path / "part", stop_at=3).fit()
    assert part.interrupted and part.step == 3
    saved = read_json(tmp_path / "part" / "last" / "trainer.json")["techniques"]["strategy"]
    assert saved["state"] == {"tensor": "tech.strategy.state"} and saved["steps"] == 3
    seed_everything(123)
    resumed = famo_trainer(sample_sets, tmp_path / "part", seed=99).fit()
    assert loss_trace(resumed.history) == loss_trace(full.history)
    assert [r.get("famo/w/sts") for r in resumed.history] == [r.get("famo/w/sts") for r in full.history]
    acc = famo_trainer(sample_sets, tmp_path / "acc", accum=2).fit()                 # micro-steps too
    assert acc.step == 6 and all(math.isfinite(r["famo/w/sts"]) for r in acc.history if "famo/w/sts" in r)
