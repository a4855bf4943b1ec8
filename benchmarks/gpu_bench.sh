#!/usr/bin/env bash
# minBERT against transformers.BertModel on one CUDA GPU: the rows of BENCHMARKS.md's GPU table.
#
#   bash benchmarks/gpu_bench.sh              # from the repository root; results in $OUT (default ./bench_out)
#
# About 8 minutes at most (BENCH_LIMIT_S, default 450 s, after which no new part starts). Each part is
# one `python -m minbert_nb.bench` run, most important first; each combination inside a part is guarded
# (a failure becomes a row with its error), and rows are written as they finish, so a part that is cut
# off keeps what it measured.
#
# Needs torch with CUDA, transformers, safetensors, numpy and fastcore. The package itself is used from
# this checkout (PYTHONPATH), not installed. Pure-Python wheels of anything missing (fastcore, say) may
# be put in .whl/; they are installed into /tmp/site without network.
#
# Files left in $OUT: machine.txt, bench.log, gpu_rows.json (every row), table.md (the Markdown table).
set -u
OUT=${OUT:-bench_out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
LIMIT=${BENCH_LIMIT_S:-450}
START=$(date +%s)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
LOG="$OUT/bench.log"

if ! $PY -c "import fastcore, transformers, safetensors" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, transformers; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| transformers', transformers.__version__, '|', torch.cuda.get_device_name())"
  lscpu 2>/dev/null | grep -m1 'Model name'; } >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
if ! $PY -c "import minbert_nb.bench" >>"$LOG" 2>&1; then echo "cannot import minbert_nb.bench (see $LOG)"; tail -5 "$LOG"; exit 1; fi

part() {  # part NAME SECONDS ARGS...: one bench run, rows to $OUT/part_NAME.json, progress to bench.log
  local name=$1 t=$2; shift 2
  local left=$(( LIMIT - ($(date +%s) - START) ))
  if [ "$left" -lt 30 ]; then echo "skip $name: time limit" | tee -a "$LOG"; return; fi
  [ "$t" -gt "$left" ] && t=$left
  echo "== $name (≤${t}s): $*" | tee -a "$LOG"
  # BENCH_DEVICE=cpu BENCH_EXTRA="--models tiny ..." smoke-test this script without a GPU (later flags win)
  timeout "$t" $PY -m minbert_nb.bench --device "${BENCH_DEVICE:-cuda}" --json --out "$OUT/part_$name.json" \
    --time-budget $(( t * 2 / 3 )) "$@" ${BENCH_EXTRA:-} >/dev/null 2>>"$LOG"
  echo "   $name: exit $?, $(( $(date +%s) - START ))s so far" | tee -a "$LOG"
}

# the targets first: bert-base, batch 64, sequence 128, bf16 training step, eager and compiled
part key_eager     90 --models base --batch-sizes 64 --dtypes bf16 --compile off --modes train,forward --padding both --repeats 30
part key_compiled 200 --models base --batch-sizes 64 --dtypes bf16 --compile on  --modes train --repeats 30
part key_compiled_packed 200 --models base --batch-sizes 64 --dtypes bf16 --compile on --modes train --repeats 30 --skip-padding always
part base_fp32     90 --models base --batch-sizes 64 --dtypes fp32 --compile off --modes train,forward
part minilm       120 --models minilm --batch-sizes 32,64 --dtypes bf16,fp32 --compile off --modes train,forward
part base_b32      90 --models base --batch-sizes 32 --dtypes bf16,fp32 --compile off --modes train,forward
part compiled_more 200 --models base --batch-sizes 64 --dtypes bf16,fp32 --compile on --modes forward

$PY - "$OUT" <<'EOF' 2>>"$LOG"
import glob, json, os, sys
from minbert_nb.bench import markdown_table
out = sys.argv[1]
order = ["key_eager", "key_compiled", "key_compiled_packed", "base_fp32", "minilm", "base_b32", "compiled_more"]
rows = []
for name in order:
    p = os.path.join(out, f"part_{name}.json")
    if os.path.exists(p):
        for r in json.load(open(p)): r["part"] = name; rows.append(r)
json.dump(rows, open(os.path.join(out, "gpu_rows.json"), "w"), indent=1)
open(os.path.join(out, "table.md"), "w").write(markdown_table(rows) + "\n")
for p in glob.glob(os.path.join(out, "part_*.json")): os.remove(p)
print(markdown_table(rows))
EOF
echo "done in $(( $(date +%s) - START ))s"
