#!/usr/bin/env bash
# Third, short GPU check: the fp32 training step with skip_padding="auto" (packs in full precision) against "never"
# (dense), and PCGrad's step and memory after its per-step buffers. Needs .whl/ carried; results in $OUT.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source tools/gpu_setup.sh   # carried wheels, PYTHONPATH
F="python3 -m minbert_nb.bench --device cuda --json --models base --batch-sizes 64 --dtypes fp32 --compile off --modes train --padding random --repeats 10 --warmup 3"
for sp in auto never; do timeout 60 $F --skip-padding $sp --out "$OUT/fp32_$sp.json" >/dev/null 2>"$OUT/fp32_$sp.log"; echo "fp32 $sp: $?"; done
timeout 60 python3 benchmarks/smart_pcgrad_bench.py --device cuda --amp bf16 --batch 32 --reps 10 --warmup 2 --only pcgrad > "$OUT/pcgrad.log" 2>&1; echo "pcgrad: $?"
python3 - "$OUT" <<'PY'
import json, sys, os
for sp in ("auto", "never"):
    p = os.path.join(sys.argv[1], f"fp32_{sp}.json")
    if os.path.exists(p):
        for r in json.load(open(p)): print(sp, r["mode"], r["dtype"], r["padding"], "ratio", round(r["ratio"], 3), "ours", int(r["ours_tok_s"]), "hf", int(r["hf_tok_s"]), r.get("peak_mem_mb"))
PY
grep -h "ratio\|MiB" "$OUT/pcgrad.log" | tail -4
