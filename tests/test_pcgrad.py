"PCGrad: the projection (against a float64 reference), its random order, and the training strategy on a tiny BERT."
import math
import pytest
import torch
from minbert_nb.config import preset, seed_everything, ConfigError
from minbert_nb.bert import BertModel
from minbert_nb.heads import HeadsConfig, MultitaskBert
from minbert_nb.pcgrad import PCGrad, PCGradError, project_conflicting, pc_coefficients, gram
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
