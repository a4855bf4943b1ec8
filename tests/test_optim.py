import torch
from minbert_nb.optim import AdamW, compare_adamw


def test_adamw_matches_torch_1000_steps():
    diff, ours, ref = compare_adamw(steps=1000)
    print(f"max |Δθ| vs torch.optim.AdamW after 1000 steps: {diff:.2e}")
    assert diff <= 1e-5
    assert abs(ours[-1] - ref[-1]) <= 1e-6
    assert ours[-1] < ours[0] / 10


def test_adamw_matches_torch_on_a_network():
    # eps sits in a different place (√v + ε here, √v̂ + ε there): with ε→0 the two are the same update,
    # so any difference left is float rounding
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ref.load_state_dict(net.state_dict())
    o1 = AdamW(net.parameters(), lr=3e-3, eps=1e-12, weight_decay=0.1)
    o2 = torch.optim.AdamW(ref.parameters(), lr=3e-3, eps=1e-12, weight_decay=0.1)
    X, y = torch.randn(128, 8), torch.randn(128, 1)
    for _ in range(300):
        for m, o in ((net, o1), (ref, o2)):
            o.zero_grad(); ((m(X) - y) ** 2).mean().backward(); o.step()
    d = max((a - b).abs().max().item() for a, b in zip(net.parameters(), ref.parameters()))
    assert d <= 2e-6, d


def test_wrong_bias_correction_is_detected():
    # without bias correction the first steps are 10x smaller: the comparison must fail
    w1 = torch.ones(3, requires_grad=True); w2 = torch.ones(3, requires_grad=True)
    o1 = AdamW([w1], lr=0.1, correct_bias=False); o2 = torch.optim.AdamW([w2], lr=0.1, weight_decay=0)
    for w, o in ((w1, o1), (w2, o2)):
        w.sum().backward(); o.step()
    assert (w1 - w2).abs().max() > 0.05
