#!/usr/bin/env bash
# Dev-score effects on a lent GPU, same budget for every row (run from the repo root; carry .devcarry and .whl):
# the quick config for STEPS steps, plain / PCGrad / SMART on STS, and started from an MLM+NLI further-pretrained
# checkpoint (pretrained here first with configs/pretrain-quick.yaml). fp32 (amp off), as on the CPU.
set -u
OUT=${OUT:-gpu_out}; S=/tmp/stage; mkdir -p "$OUT" $S; STEPS=${STEPS:-800}
source tools/gpu_setup.sh   # wheels, PYTHONPATH, the fp32 MiniLM in /tmp/minilm
T0=$(date +%s)
C="--device cuda --amp off --max-steps $STEPS --eval-every 400"
( timeout 100 python3 -m minbert_nb.cli pretrain --config configs/pretrain-quick.yaml --data-dir .devcarry/data --model /tmp/minilm \
    --out /tmp/pre --device cuda --amp off --quiet --json > $S/pretrain.json 2> $S/pretrain.err
  echo "pretrain done $(( $(date +%s) - T0 )) s" >> $S/times.txt
  timeout 110 python3 tools/grid.py --config configs/quick.yaml --data-dir .devcarry/data --model /tmp/pre --out /tmp/g2 \
    --common "$C" --variant pretrained= > $S/grid_pre.md 2>&1 ) &
timeout 200 python3 tools/grid.py --config configs/quick.yaml --data-dir .devcarry/data --model /tmp/minilm --out /tmp/g1 --common "$C" \
  --variant base= --variant pcgrad="--pcgrad" --variant smart="--smart sts=10" > $S/grid.md 2> $S/grid.err
echo "grid done $(( $(date +%s) - T0 )) s" >> $S/times.txt
wait
cat $S/times.txt $S/grid.md $S/grid_pre.md $S/pretrain.json; tail -2 $S/pretrain.err
for d in /tmp/g1/* /tmp/g2/*; do [ -d $d ] && { n=$(basename $d); mkdir -p $S/runs/$n; cp $d/metrics.json* $S/runs/$n/ 2>/dev/null; }; done
cp /tmp/g1/*.log /tmp/g2/*.log $S/runs/ 2>/dev/null
tar czf "$OUT/all.tgz" -C /tmp stage
