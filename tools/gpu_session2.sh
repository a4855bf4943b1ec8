#!/usr/bin/env bash
# Second GPU session (#7/#5): the bert-base bf16 training step with the new default (`skip_padding="auto"`: dense
# masked SDPA on a GPU) beside the packed path, compiled, fp32; then SMART / PCGrad overheads on the GPU.
#   bash tools/gpu_session2.sh      (repo root of a lent GPU machine; .whl/ carried; results in $OUT)
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source tools/gpu_setup.sh   # carried wheels, PYTHONPATH
B="python3 -m minbert_nb.bench --device cuda --json --models base --batch-sizes 64 --dtypes bf16"
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/machine.txt"
timeout 110 $B --compile off --modes train,forward --padding both --repeats 30 --time-budget 80 --out "$OUT/eager_auto.json" >/dev/null 2>"$OUT/eager_auto.log"; echo "eager auto: $? $(( $(date +%s) - T0 ))s"
timeout 70 $B --compile off --modes train --padding random --repeats 30 --skip-padding eager --time-budget 50 --out "$OUT/eager_packed.json" >/dev/null 2>"$OUT/eager_packed.log"; echo "eager packed: $? $(( $(date +%s) - T0 ))s"
timeout 70 python3 -m minbert_nb.bench --device cuda --json --models base --batch-sizes 64 --dtypes fp32 --compile off --modes train --padding both --time-budget 50 --out "$OUT/fp32.json" >/dev/null 2>"$OUT/fp32.log"; echo "fp32: $? $(( $(date +%s) - T0 ))s"
timeout 170 $B --compile on --modes train --padding both --repeats 30 --time-budget 130 --out "$OUT/compiled.json" >/dev/null 2>"$OUT/compiled.log"; echo "compiled: $? $(( $(date +%s) - T0 ))s"
timeout 90 python3 benchmarks/smart_pcgrad_bench.py --device cuda --amp bf16 --batch 32 --reps 10 --warmup 2 --json "$OUT/smart_pcgrad.json" > "$OUT/smart_pcgrad.log" 2>&1; echo "smart/pcgrad: $? $(( $(date +%s) - T0 ))s"
python3 - "$OUT" <<'PY'
import json, glob, os, sys
from minbert_nb.bench import markdown_table
rows = []
for f in ("eager_auto", "eager_packed", "fp32", "compiled"):
    p = os.path.join(sys.argv[1], f + ".json")
    if os.path.exists(p):
        for r in json.load(open(p)): r["part"] = f; rows.append(r)
json.dump(rows, open(os.path.join(sys.argv[1], "gpu_rows.json"), "w"), indent=1)
t = markdown_table(rows); open(os.path.join(sys.argv[1], "table.md"), "w").write(t + "\n"); print(t)
PY
grep -h "ratio\|median\|peak" "$OUT/smart_pcgrad.log" | tail -12
