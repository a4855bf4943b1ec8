#!/usr/bin/env bash
# The quick ablation profile on one lent GPU (fp32, like the CPU run), rows in parallel: phase 1 makes both shared
# pretraining checkpoints (through their first rows), phase 2 the rest, phase 3 collects the table. Needs .devcarry/ + .whl/.
#   bash tools/gpu_experiments.sh      (results in $OUT: results.json, table.md, chart.png, logs)
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source tools/gpu_setup.sh   # wheels, PYTHONPATH, the fp32 MiniLM in /tmp/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
X="python3 -m minbert_nb.cli experiments --profile quick --data-dir .devcarry/data --model /tmp/minilm --out /tmp/xq --amp off --quiet"
T0=$(date +%s)
for r in finetune lm nli-lm; do $X --rows $r > "$OUT/$r.log" 2>&1 & done; wait
echo "phase 1: $(( $(date +%s) - T0 ))s"
for r in adv-lora-pcgrad adv pcgrad ours; do $X --rows $r > "$OUT/$r.log" 2>&1 & done; wait
echo "phase 2: $(( $(date +%s) - T0 ))s"
$X > "$OUT/table.log" 2>&1; echo "phase 3: $? $(( $(date +%s) - T0 ))s"
cp /tmp/xq/results.json /tmp/xq/table.md /tmp/xq/chart.png "$OUT/" 2>/dev/null
cat "$OUT/table.md"
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log)   # the device tool returns at most 8 files
