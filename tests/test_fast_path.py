"The fast sdpa path (fused Q|K|V, packed real tokens, length groups) against the readable path and transformers."
from dataclasses import replace
import pytest
import torch
import transformers
from minbert_nb.config import BertConfig, config_to_dict
from minbert_nb.fastpath import Packing
from minbert_nb.bert import BertModel

CFG = BertConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                 max_position_embeddings=64)


def pair(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    ours = BertModel(cfg).eval()
    hf = transformers.BertModel(transformers.BertConfig(**{k: v for k, v in config_to_dict(cfg).items() if k != "architectures"},
                                                        attn_implementation="sdpa")).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours, hf


def with_skip_padding(model, mode):
    "The same weights in a model that runs with `skip_padding=mode`."
    other = BertModel(replace(model.config, skip_padding=mode)).train(model.training)
    other.load_state_dict(model.state_dict())
    return other


def loss_of(h, pooled, am):
    "Reads real tokens only, and the pooled vector of non-empty rows."
    return (h * am[..., None]).square().sum() / am.sum() + pooled[am.any(1)].mean()


def close(a, b, rel=1e-5):
    return (a - b).abs().max().item() <= rel * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_transformers(seed):
    ours, hf = pair(seed=seed)
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 20
    lens = torch.randint(1, T + 1, (B,), generator=g); lens[0] = T
    am = (torch.arange(T)[None] < lens[:, None]).long()
    ids = torch.randint(1, 300, (B, T), generator=g) * am
    tt = torch.randint(0, 2, (B, T), generator=g) * am
    o = ours(ids, am, tt); r = hf(input_ids=ids, attention_mask=am, token_type_ids=tt)
    loss_of(o.last_hidden_state, o.pooler_output, am).backward()
    loss_of(r.last_hidden_state, r.pooler_output, am).backward()
    hp = dict(hf.named_parameters())
    for k, p in ours.named_parameters():
        ref = hp[k].grad
        assert close(p.grad, ref), (k, (p.grad - ref).abs().max().item())


def test_masks_with_holes_and_empty_rows():
    "Any 0/1 mask: holes inside a sentence, an empty row. Real tokens match the dense path; nothing is NaN."
    ours, _ = pair()
    am = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    ids = torch.randint(1, 300, am.shape) * am
    ours.zero_grad(); o = ours(ids, am); loss_of(o.last_hidden_state, o.pooler_output, am).backward()
    g_packed = {k: p.grad.clone() for k, p in ours.named_parameters()}
    dense = with_skip_padding(ours, "never")
    d = dense(ids, am); loss_of(d.last_hidden_state, d.pooler_output, am).backward()
    real = am.bool()
    real[2] = False   # an empty row has no real token to compare (the dense path gives NaN-free garbage or NaN there)
    assert torch.allclose(o.last_hidden_state[real], d.last_hidden_state[real], atol=1e-5)
    assert torch.isfinite(o.last_hidden_state).all() and torch.isfinite(o.pooler_output).all()
    for k, g in g_packed.items():
        assert torch.isfinite(g).all(), k
        assert close(g, dict(dense.named_parameters())[k].grad), k


@pytest.mark.parametrize("groups", [1, 2, 4, 16])
def test_group_counts_agree(groups):
    torch.manual_seed(0)
    am = (torch.arange(16)[None] < torch.tensor([16, 3, 9, 9, 12, 1, 5, 16])[:, None]).long()
    pk = Packing.from_mask(am, groups=groups)
    assert sum(b for _, _, b, _ in pk.groups) == 8
    assert sorted(pk.inverse.tolist()) == pk.inverse.tolist() or groups > 1   # one grid keeps packed order
    from minbert_nb.attention import MultiHeadSelfAttention, padding_mask
    mha = MultiHeadSelfAttention(CFG).eval()
    x = torch.randn(8, 16, CFG.hidden_size)
    y, _ = mha(pk.unpad(x), packing=pk)
    ref, _ = mha(x, padding_mask(am))
    assert torch.allclose(pk.pad(y), ref * am[..., None], atol=1e-5)


def test_training_mode_runs_and_learns():
    "Dropout on (train mode): the packed path trains, and a saved checkpoint still loads in transformers."
    ours, _ = pair()
    ours.train()
    am = (torch.arange(12)[None] < torch.tensor([12, 4, 7])[:, None]).long()
    ids = torch.randint(1, 300, am.shape) * am
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        o = ours(ids, am); loss = loss_of(o.last_hidden_state, o.pooler_output, am) / am.sum()
        loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_compile_always_packs_with_one_graph_break():
    torch._dynamo.reset()
    eager, _ = pair()
    ours = with_skip_padding(eager, "always")
    compiled = torch.compile(ours)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        lens = torch.randint(2, 17, (4,), generator=g); lens[0] = 16
        am = (torch.arange(16)[None] < lens[:, None]).long()
        ids = torch.randint(1, 300, am.shape, generator=g) * am
        with torch.no_grad():
            a, b = compiled(ids, am).last_hidden_state, ours(ids, am).last_hidden_state
        assert torch.allclose(a[am.bool()], b[am.bool()], atol=1e-5)
