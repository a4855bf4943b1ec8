#!/usr/bin/env bash
# One GPU session of checks and numbers (run on a lent H100/H200 from the repo root).
#   1. the bench (benchmarks/gpu_bench.sh, key rows first)   2. a grid of quick-config training variants in parallel
# Needs .devcarry/ (a copy of the task data + the MiniLM checkpoint in fp16, for the 64 MiB transfer limit)
# and .whl/ (fastcore) carried along. Everything lands in $OUT/all.tgz; the tables are printed.
#   bash tools/gpu_session.sh base= lr3e-5="--lr-encoder 3e-5" ...     (variants: name=extra train flags)
set -u
OUT=${OUT:-gpu_out}; S=/tmp/stage; mkdir -p "$OUT" $S
source tools/gpu_setup.sh   # wheels, PYTHONPATH, the fp32 MiniLM in /tmp/minilm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $S/gpu.txt
T0=$(date +%s)
BENCH_LIMIT_S=${BENCH_LIMIT_S:-250} OUT=$S/bench bash benchmarks/gpu_bench.sh > $S/bench_stdout.txt 2>&1
echo "bench: $(( $(date +%s) - T0 )) s"; cat $S/bench/table.md 2>/dev/null || tail -20 $S/bench_stdout.txt
V=(); for v in "$@"; do V+=(--variant "$v"); done
T1=$(date +%s)
timeout ${GRID_LIMIT_S:-280} python3 tools/grid.py --config configs/quick.yaml --data-dir .devcarry/data --model /tmp/minilm \
  --out /tmp/grid --common "--device cuda --amp off" "${V[@]}" > $S/grid.md 2> $S/grid.err
echo "grid: $(( $(date +%s) - T1 )) s"; cat $S/grid.md; tail -3 $S/grid.err
python3 - <<'PY' | tee $S/grid_evals.txt
import json, glob, os
for f in sorted(glob.glob("/tmp/grid/*/metrics.jsonl")):
    ev = [json.loads(l) for l in open(f) if '"eval"' in l]
    print(os.path.basename(os.path.dirname(f)), [(r["step"], {k: round(v, 4) for k, v in r["eval"].items()}) for r in ev])
PY
for d in /tmp/grid/*/; do n=$(basename $d); mkdir -p $S/grid/$n; cp $d/metrics.json $d/metrics.jsonl $d/run_config.json $S/grid/$n/ 2>/dev/null; done
cp /tmp/grid/*.log $S/grid/ 2>/dev/null
tar czf "$OUT/all.tgz" -C /tmp stage && ls -la "$OUT"
