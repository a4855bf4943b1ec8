"""Run several `minbert train` variants side by side (e.g. on one GPU) and print their dev scores.

    python tools/grid.py --data-dir DATA --out runs/grid --config configs/quick.yaml \
        --variant base= --variant lr3e-5="--lr-encoder 3e-5" --variant cls="--sst-pooling cls"

Each variant is `name=extra flags`; all run in parallel processes. Prints a markdown table.
"""
import argparse, json, shlex, subprocess, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--config", required=True); p.add_argument("--data-dir", required=True); p.add_argument("--out", required=True)
p.add_argument("--model", default=None); p.add_argument("--common", default="", help="flags for every variant")
p.add_argument("--variant", action="append", required=True, help="name=flags")
a = p.parse_args()
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
procs = {}
for v in a.variant:
    name, _, flags = v.partition("=")
    cmd = [sys.executable, "-m", "minbert_nb.cli", "train", "--config", a.config, "--data-dir", a.data_dir,
           "--out", str(out / name), "--quiet", "--no-resume", *shlex.split(a.common), *shlex.split(flags)]
    if a.model: cmd += ["--model", a.model]
    procs[name] = (subprocess.Popen(cmd, stdout=open(out / f"{name}.log", "w"), stderr=subprocess.STDOUT), flags, time.time())
rows = []
for name, (pr, flags, t0) in procs.items():
    rc = pr.wait()
    m = json.loads((out / name / "metrics.json").read_text()) if rc == 0 and (out / name / "metrics.json").exists() else {}
    d = m.get("dev", {})
    rows.append((name, flags, rc, d.get("sst_acc"), d.get("para_acc"), d.get("sts_pearson"), d.get("overall"), m.get("best_step"), m.get("train_seconds")))
print("| variant | flags | rc | SST | Quora | STS | overall | best step | train s |\n|---|---|---|---|---|---|---|---|---|")
f = lambda x: f"{x:.4f}" if isinstance(x, float) else str(x)
for r in rows: print("| " + " | ".join(f(x) for x in r) + " |")
