#!/usr/bin/env python
"""PCGrad against the weighted sum, and SMART against the plain step, on full BERT: the same batches, the
strategies alternating step by step, medians over several steps. Not a test: it prints (and optionally writes
as JSON) the figures the notebooks 08_smart / 09_pcgrad quote.

    python benchmarks/smart_pcgrad_bench.py                                 # BERT-base, 8 × 128 tokens per task, CPU
    python benchmarks/smart_pcgrad_bench.py --device cuda --batch 32 --amp bf16 --json out.json

The model is BERT (random weights, `preset`) with three heads through the `MultitaskBert` contract
(`tests/standin.py`): 'sst' single sentence (5 classes), 'para' cross-encoder pair (one logit), 'sts' siamese pair
(a score; two encoder passes). A step is: zero_grad, forward every task, the strategy's backward and before_step,
AdamW.step — what the trainer does.
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))            # the MultitaskBert stand-in lives with the tests
from standin import StandIn, random_batch           # noqa: E402
from minbert_nb.bert import BertModel               # noqa: E402
from minbert_nb.config import preset, seed_everything   # noqa: E402
from minbert_nb.optim import AdamW                  # noqa: E402
from minbert_nb.pcgrad import PCGrad                # noqa: E402
from minbert_nb.smart import SmartConfig, SmartRegularizer   # noqa: E402

TASKS = ("sst", "para", "sts")


class WeightedSum:
    "The trainer's default strategy: one backward pass through Σ_t L_t."
    def backward(self, losses, scale=lambda l: l): scale(sum(losses.values())).backward()
    def before_step(self): return {}


def sync(dev: torch.device):
    if dev.type == "cuda": torch.cuda.synchronize()


def nbytes(params) -> int: return sum(p.numel() * p.element_size() for p in params)


def make_batches(tasks, B, T, vocab, dev, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in tasks:
        b = random_batch(t, B=B, T=T, vocab=vocab, generator=g)
        for k in b:
            if k.startswith("attention_mask"): b[k] = torch.ones_like(b[k])      # full-length sequences
            if k.startswith("input_ids"): b[k] = torch.randint(1, vocab, b[k].shape, generator=g)
        out[t] = {k: v.to(dev) for k, v in b.items()}
    return out


def step(model, opt, strategy, batches, amp, dev, regs=None, step_no=0):
    "One optimizer step; returns wall and process-CPU seconds of the step and of its before_step."
    sync(dev); t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    losses = {}
    with amp():
        for t, b in batches.items():
            out = model.task_forward(t, b)
            loss = model.task_loss(t, out.float(), b)
            if regs and t in regs.tasks: loss = loss + regs(model, t, b, out, step_no)
            losses[t] = loss
    strategy.backward(losses)
    sync(dev); t1, c1 = time.perf_counter(), time.process_time()
    strategy.before_step()
    sync(dev); t2, c2 = time.perf_counter(), time.process_time()
    opt.step()
    sync(dev)
    return {"wall": time.perf_counter() - t0, "wall_before_step": t2 - t1, "cpu": time.process_time() - c0, "cpu_before_step": c2 - c1}


def alternate(runs: dict, reps: int, warmup: int):
    """Run each entry of `runs` (name → zero-arg function returning a dict of timings) alternately, the order reversed
    every other round; medians of each timing, and medians of the per-round ratios to the first entry (paired, so
    that a change of machine load between rounds cancels)."""
    rec = {k: [] for k in runs}
    names = list(runs)
    for r in range(warmup + reps):
        for k in (names if r % 2 == 0 else names[::-1]):
            res = runs[k]()
            if r >= warmup: rec[k].append(res)
            print(f"  round {r}{' (warm-up)' if r < warmup else ''} {k}: wall {res['wall']:.3f} s, cpu {res['cpu']:.3f} s", flush=True)
    out = {k: {f"median_{m}_s": statistics.median(x[m] for x in v) for m in v[0]} | {"all": v} for k, v in rec.items()}
    base = names[0]
    for k in names[1:]:
        for m in ("wall", "cpu"):
            out[k][f"ratio_{m}"] = out[k][f"median_{m}_s"] / out[base][f"median_{m}_s"]
            out[k][f"paired_ratio_{m}"] = statistics.median(a[m] / b[m] for a, b in zip(rec[k], rec[base]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="base", help="BERT size: base (default), minilm, tiny")
    ap.add_argument("--batch", type=int, default=8, help="examples per task per step")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--reps", type=int, default=5, help="measured steps per variant")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype (bf16 needs no loss scaler)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    ap.add_argument("--smart-task", default="sts", choices=TASKS)
    ap.add_argument("--only", choices=("all", "pcgrad", "smart"), default="all")
    ap.add_argument("--memory", action="store_true", help="CPU: also measure the peak RSS of 2 steps of each strategy, each in a fresh process")
    ap.add_argument("--child", choices=("weighted_sum", "pcgrad"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    rss = {}
    if a.memory and dev.type == "cpu" and not a.child and a.only in ("all", "pcgrad"):
        # first, while this process is still small: Linux keeps the peak RSS across fork + exec. glibc is told to mmap
        # every block ≥ 128 KiB, so that freed tensors leave the resident set at once and the peak RSS tracks live bytes.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        for name in ("weighted_sum", "pcgrad"):
            cmd = [sys.executable, __file__, "--child", name, "--preset", a.preset, "--batch", str(a.batch), "--seq", str(a.seq),
                   "--threads", str(a.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
            rss[f"peak_{name}_bytes"] = json.loads(out)["maxrss_bytes"]
        print(json.dumps(rss), flush=True)
    amp = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if a.amp == "bf16" else nullcontext
    seed_everything(0)
    model = StandIn(BertModel(preset(a.preset)), tasks=TASKS).to(dev).train()
    opt = AdamW(model.parameters(), lr=1e-5)
    batches = make_batches(TASKS, a.batch, a.seq, model.bert.config.vocab_size, dev)
    shared, allp = model.shared_parameters(), list(model.parameters())
    if a.child:                                       # one strategy, two steps, then the process's peak resident memory
        s = WeightedSum() if a.child == "weighted_sum" else PCGrad(shared, generator=torch.Generator().manual_seed(0), track=False, tasks=TASKS)
        for _ in range(2): step(model, opt, s, batches, amp, dev)
        print(json.dumps({"maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
        return
    info = {"preset": a.preset, "batch_per_task": a.batch, "seq": a.seq, "reps": a.reps, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "amp": a.amp, "torch": torch.__version__,
            "params": sum(p.numel() for p in allp), "shared_params": sum(p.numel() for p in shared)}
    print(json.dumps(info), flush=True)
    res = {"info": info}

    if a.only in ("all", "pcgrad"):
        ws, pc = WeightedSum(), PCGrad(shared, generator=torch.Generator().manual_seed(0), track=False, tasks=TASKS)
        mem = {}
        if dev.type == "cuda":                         # peak memory of one step each, weighted sum first (no buffer yet)
            for name, s in (("weighted_sum", ws), ("pcgrad", pc)):
                step(model, opt, s, batches, amp, dev)
                torch.cuda.reset_peak_memory_stats(dev)
                step(model, opt, s, batches, amp, dev)
                mem[f"peak_{name}_bytes"] = torch.cuda.max_memory_allocated(dev)
        print("PCGrad vs weighted sum (3 tasks):", flush=True)
        t = alternate({"weighted_sum": lambda: step(model, opt, ws, batches, amp, dev),
                       "pcgrad": lambda: step(model, opt, pc, batches, amp, dev)}, a.reps, a.warmup)
        buf = len(pc.tasks) * pc.numel * shared[0].element_size()   # the rows at their most (within a step; freed by before_step)
        res["pcgrad"] = {**t, "buffer_bytes": buf, "shared_param_bytes": nbytes(shared), "param_bytes": nbytes(allp),
                         "buffer_over_param_bytes": buf / nbytes(allp), **mem}
        if rss:
            mem.update(rss); res["pcgrad"].update(rss)
        if mem: res["pcgrad"]["extra_peak_bytes"] = mem["peak_pcgrad_bytes"] - mem["peak_weighted_sum_bytes"]
        del pc

    if a.only in ("all", "smart"):
        task = a.smart_task
        one = {task: batches[task]}
        ws = WeightedSum()
        regs = {"clean_eval": SmartRegularizer({task: SmartConfig(mu=10.0, clean_eval=True)}, torch.Generator().manual_seed(0)),
                "dropout_on": SmartRegularizer({task: SmartConfig(mu=10.0, clean_eval=False)}, torch.Generator().manual_seed(0))}
        print(f"SMART vs plain ({task}):", flush=True)
        t = alternate({"plain": lambda: step(model, opt, ws, one, amp, dev),
                       "smart_clean_eval": lambda: step(model, opt, ws, one, amp, dev, regs["clean_eval"]),
                       "smart_dropout_on": lambda: step(model, opt, ws, one, amp, dev, regs["dropout_on"])}, a.reps, a.warmup)
        res["smart"] = {**t, "task": task}

    print("\n== results ==  (medians; 'paired' = median over rounds of the per-round ratio)")
    if "pcgrad" in res:
        p, w, q = res["pcgrad"], res["pcgrad"]["weighted_sum"], res["pcgrad"]["pcgrad"]
        for m in ("wall", "cpu"):
            print(f"[{m}] weighted-sum step {w[f'median_{m}_s']:.3f} s | PCGrad step {q[f'median_{m}_s']:.3f} s | ratio {q[f'ratio_{m}']:.3f}, "
                  f"paired {q[f'paired_ratio_{m}']:.3f} (target ≤ 1.15) | surgery (before_step) {q[f'median_{m}_before_step_s']:.3f} s")
        print(f"per-task buffers {p['buffer_bytes'] / 2**20:.0f} MiB = {p['buffer_over_param_bytes']:.2f} × parameter bytes "
              f"({p['param_bytes'] / 2**20:.0f} MiB; target ≤ 3 ×)"
              + (f" | measured peak: weighted sum {p['peak_weighted_sum_bytes'] / 2**20:.0f} MiB, PCGrad {p['peak_pcgrad_bytes'] / 2**20:.0f} MiB, "
                 f"extra {p['extra_peak_bytes'] / 2**20:.0f} MiB = {p['extra_peak_bytes'] / p['param_bytes']:.2f} × parameter bytes" if "extra_peak_bytes" in p else ""))
    if "smart" in res:
        s = res["smart"]
        for m in ("wall", "cpu"):
            print(f"[{m}] plain {s['task']} step {s['plain'][f'median_{m}_s']:.3f} s | SMART clean_eval {s['smart_clean_eval'][f'median_{m}_s']:.3f} s "
                  f"(× {s['smart_clean_eval'][f'ratio_{m}']:.2f}, paired × {s['smart_clean_eval'][f'paired_ratio_{m}']:.2f}) | SMART dropout on "
                  f"{s['smart_dropout_on'][f'median_{m}_s']:.3f} s (× {s['smart_dropout_on'][f'ratio_{m}']:.2f}, paired × {s['smart_dropout_on'][f'paired_ratio_{m}']:.2f}) (target ≤ 2.2)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
