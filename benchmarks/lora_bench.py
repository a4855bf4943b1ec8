"""LoRA against full fine-tuning, side by side: step time, peak memory, trainable share, merged inference.

    python benchmarks/lora_bench.py                          # bert-base shape, batch 8, seq 128, CPU
    python benchmarks/lora_bench.py --device cuda --batch 32 # on a GPU

Both models start from the same random bert-base-sized encoder (preset('base'), so no download) with
a 2-way classification head, in training mode (dropout on). The LoRA model has r=8, alpha=16 on query
and value (the encoder frozen, head trainable). A step is zero_grad → forward → cross-entropy →
backward → AdamW step (minbert_nb.optim.AdamW), on the same batches for both models.

- Step time: both models in one process, alternating (full, LoRA, then LoRA, full, ...) so that load
  from other processes falls on both; medians over `--steps` steps after `--warmup` steps.
- Peak memory: each mode runs in a fresh subprocess (peak RSS never goes down, so one process cannot
  measure two modes). On CPU we report the subprocess's peak resident set size (VmHWM; not ru_maxrss,
  which Linux carries over from the parent through fork and exec), that peak
  minus the RSS after `import torch` (the interpreter and libraries, the same for both), and an exact
  account of the tensor bytes held at the end of the forward pass: parameters + gradients + optimizer
  state + tensors autograd saved for backward (unique storages, parameters excluded). On CUDA:
  torch.cuda.max_memory_allocated over a step.
- Inference: the base model, the LoRA model merged, and the LoRA model unmerged, in eval mode under
  inference_mode, alternating; medians.
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

RSS_AFTER_IMPORT = None


def rss_bytes(field: str = "VmRSS") -> int:
    "This process's resident set size now (VmRSS) or its high-water mark (VmHWM), from /proc/self/status."
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"): return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


if sys.platform.startswith("linux"): RSS_AFTER_IMPORT = rss_bytes()

from minbert_nb.config import preset, seed_everything            # noqa: E402
from minbert_nb.bert import BertModel                           # noqa: E402
from minbert_nb.optim import AdamW                              # noqa: E402
from minbert_nb.lora import add_lora, merge_lora, trainable_parameter_count, set_lora_weights  # noqa: E402


class Classifier(nn.Module):
    "BERT + a linear head on the pooled [CLS] vector."
    def __init__(self, cfg, n_classes: int = 2):
        super().__init__()
        self.bert, self.head = BertModel(cfg), nn.Linear(cfg.hidden_size, n_classes)

    def forward(self, ids, am): return self.head(self.bert(ids, am).pooler_output)


def build(mode: str, args, device) -> tuple[nn.Module, torch.optim.Optimizer]:
    "The same seeded model, fully trainable ('full') or with LoRA ('lora'); and its AdamW over trainable parameters."
    seed_everything(args.seed)
    cfg = preset(args.preset)
    m = Classifier(cfg)
    if mode == "lora": add_lora(m, r=args.r, alpha=args.alpha, targets=args.targets)
    m = m.to(device).train()
    opt = AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    return m, opt


def make_batches(args, n: int, device):
    "n random full-length batches (ids (B, T), mask (B, T), labels (B,)), the same for every mode."
    g = torch.Generator().manual_seed(args.seed + 1)
    vocab = preset(args.preset).vocab_size
    return [(torch.randint(1000, vocab, (args.batch, args.seq), generator=g).to(device),
             torch.ones(args.batch, args.seq, dtype=torch.long, device=device),
             torch.randint(0, 2, (args.batch,), generator=g).to(device)) for _ in range(n)]


def train_step(m, opt, batch):
    ids, am, y = batch
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(m(ids, am), y)
    loss.backward()
    opt.step()
    return loss


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device); t = time.perf_counter(); fn(); sync(device)
    return time.perf_counter() - t


def bench_steps(args, device) -> dict:
    "Median step time of full fine-tuning and LoRA, alternating, same batches."
    models = {k: build(k, args, device) for k in ("full", "lora")}
    batches = make_batches(args, args.warmup + args.steps, device)
    times = {"full": [], "lora": []}
    for i, b in enumerate(batches):
        for k in (("full", "lora") if i % 2 == 0 else ("lora", "full")):
            t = timed(lambda: train_step(*models[k], b), device)
            if i >= args.warmup: times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    pair = statistics.median(l / f for l, f in zip(times["lora"], times["full"]))
    tr_full, tot_full = trainable_parameter_count(models["full"][0])
    tr_lora, tot_lora = trainable_parameter_count(models["lora"][0])
    tr_enc, tot_enc = trainable_parameter_count(models["lora"][0].bert)
    return dict(step_s=med, step_min_s={k: min(v) for k, v in times.items()}, step_times=times, step_ratio=med["lora"] / med["full"], step_ratio_paired=pair,
                trainable=dict(full=[tr_full, tot_full], lora=[tr_lora, tot_lora], lora_encoder_only=[tr_enc, tot_enc]))


@torch.inference_mode()
def bench_inference(args, device) -> dict:
    "Median forward time: base model, LoRA merged, LoRA unmerged (eval mode), alternating."
    base, _ = build("full", args, device)
    lora, _ = build("lora", args, device)
    set_lora_weights(lora)
    merged, _ = build("lora", args, device)
    merge_lora(set_lora_weights(merged))
    ms = {"base": base.eval(), "merged": merged.eval(), "unmerged": lora.eval()}
    (ids, am, _), = make_batches(args, 1, device)
    times = {k: [] for k in ms}
    order = list(ms)
    for i in range(args.warmup + args.inf_steps):
        for k in (order if i % 2 == 0 else order[::-1]):
            t = timed(lambda: ms[k](ids, am), device)
            if i >= args.warmup: times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}   # under load from other processes, noise only ever adds time
    return dict(forward_s=med, forward_min_s=best, merged_vs_base=med["merged"] / med["base"], unmerged_vs_base=med["unmerged"] / med["base"],
                merged_vs_base_paired=statistics.median(m / b for m, b in zip(times["merged"], times["base"])))


def saved_activation_bytes(m, batch) -> int:
    "Bytes of the tensors autograd keeps for backward after one forward (unique storages, parameters excluded)."
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen = {}
    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params: seen[st.data_ptr()] = st.nbytes()
        return t
    ids, am, y = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(m(ids, am), y)
    del loss
    return sum(seen.values())


def memory_child(mode: str, args) -> dict:
    "Run in a fresh process: peak memory of `mode` over warm-up + 2 steps, and the tensor-byte account."
    device = torch.device(args.device)
    m, opt = build(mode, args, device)
    rss_built = rss_bytes()
    batches = make_batches(args, 3, device)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
    for b in batches: train_step(m, opt, b)
    out = dict(mode=mode, rss_after_import=RSS_AFTER_IMPORT, rss_after_build=rss_built,
               peak_rss=rss_bytes("VmHWM"))
    if device.type == "cuda": out["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
    out["param_bytes"] = nbytes(m.parameters())
    out["grad_bytes"] = nbytes(p for p in m.parameters() if p.requires_grad)   # allocated at every backward
    out["optimizer_state_bytes"] = nbytes(v for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    out["saved_activation_bytes"] = saved_activation_bytes(m, batches[0])
    out["accounted_bytes"] = out["param_bytes"] + out["grad_bytes"] + out["optimizer_state_bytes"] + out["saved_activation_bytes"]
    return out


def bench_memory(args) -> dict:
    res = {}
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--child", mode, "--preset", args.preset, "--batch", str(args.batch), "--seq", str(args.seq),
               "--r", str(args.r), "--alpha", str(args.alpha), "--targets", args.targets, "--device", args.device, "--seed", str(args.seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
        res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    f, l = res["full"], res["lora"]
    ratio = dict(peak_rss=l["peak_rss"] / f["peak_rss"],
                 peak_rss_above_import=(l["peak_rss"] - l["rss_after_import"]) / (f["peak_rss"] - f["rss_after_import"]),
                 accounted=l["accounted_bytes"] / f["accounted_bytes"])
    if "cuda_peak_allocated" in f: ratio["cuda_peak_allocated"] = l["cuda_peak_allocated"] / f["cuda_peak_allocated"]
    return dict(per_mode=res, ratio=ratio)


def report(r: dict, args) -> str:
    "The results as markdown tables (parts not run are left out)."
    MB = 2 ** 20
    s, i, m = r["steps"], r["inference"], r["memory"]
    rows = ["| | full fine-tuning | LoRA | LoRA / full |", "|---|---|---|---|"]
    if s:
        tf, tl, te = s["trainable"]["full"], s["trainable"]["lora"], s["trainable"]["lora_encoder_only"]
        rows += [f"| trainable parameters (with head) | {tf[0]:,} | {tl[0]:,} ({100*tl[0]/tl[1]:.3f}%) | |",
                 f"| trainable share of the encoder alone | 100% | {100*te[0]/te[1]:.3f}% | |",
                 f"| train step, median (s) | {s['step_s']['full']:.3f} | {s['step_s']['lora']:.3f} | {s['step_ratio']:.2f} (median of paired ratios {s['step_ratio_paired']:.2f}) |",
                 f"| train step, fastest (s) | {s['step_min_s']['full']:.3f} | {s['step_min_s']['lora']:.3f} | {s['step_min_s']['lora'] / s['step_min_s']['full']:.2f} |"]
    if m:
        f, l = m["per_mode"]["full"], m["per_mode"]["lora"]
        rows += [
            f"| peak RSS of the process (MiB) | {f['peak_rss']/MB:,.0f} | {l['peak_rss']/MB:,.0f} | {m['ratio']['peak_rss']:.2f} |",
            f"| peak RSS above `import torch` (MiB) | {(f['peak_rss']-f['rss_after_import'])/MB:,.0f} | {(l['peak_rss']-l['rss_after_import'])/MB:,.0f} | {m['ratio']['peak_rss_above_import']:.2f} |",
            f"| tensors at end of forward (MiB): params + grads + optimizer + saved activations | "
            f"{f['param_bytes']/MB:,.0f} + {f['grad_bytes']/MB:,.0f} + {f['optimizer_state_bytes']/MB:,.0f} + {f['saved_activation_bytes']/MB:,.0f} = {f['accounted_bytes']/MB:,.0f} | "
            f"{l['param_bytes']/MB:,.0f} + {l['grad_bytes']/MB:,.1f} + {l['optimizer_state_bytes']/MB:,.1f} + {l['saved_activation_bytes']/MB:,.0f} = {l['accounted_bytes']/MB:,.0f} | {m['ratio']['accounted']:.2f} |"]
        if "cuda_peak_allocated" in f:
            rows.append(f"| CUDA peak allocated (MiB) | {f['cuda_peak_allocated']/MB:,.0f} | {l['cuda_peak_allocated']/MB:,.0f} | {m['ratio']['cuda_peak_allocated']:.2f} |")
    if i:
        rows += ["", "| inference (eval, forward only) | median (s) | / base | fastest (s) | / base |", "|---|---|---|---|---|"]
        rows += [f"| {k} | {v:.4f} | {v / i['forward_s']['base']:.3f} | {i['forward_min_s'][k]:.4f} | {i['forward_min_s'][k] / i['forward_min_s']['base']:.3f} |"
                 for k, v in i["forward_s"].items()]
        rows.append(f"| merged / base, median of paired ratios | | {i['merged_vs_base_paired']:.3f} | | |")
    head = (f"preset={args.preset}, batch={args.batch}, seq={args.seq}, device={args.device}, torch threads={torch.get_num_threads()}, "
            f"LoRA r={args.r} alpha={args.alpha} targets={args.targets}; {args.steps} timed steps after {args.warmup} warm-up, "
            f"{args.inf_steps} timed forwards; torch {torch.__version__}")
    return head + "\n\n" + "\n".join(rows)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base", help="model shape: tiny, minilm, base (random weights)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="timed training steps per mode")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--inf-steps", type=int, default=10, help="timed forwards per model")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="query+value")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="steps,inference,memory", help="which measurements to run")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.child:
        print(json.dumps(memory_child(args.child, args))); return
    device = torch.device(args.device)
    parts = args.parts.split(",")
    r = dict(args=vars(args), steps=bench_steps(args, device) if "steps" in parts else None,
             inference=bench_inference(args, device) if "inference" in parts else None, memory=bench_memory(args) if "memory" in parts else None)
    print(report(r, args))
    if args.json: Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
