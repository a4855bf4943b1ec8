#!/usr/bin/env bash
# Prepare what a lent GPU machine needs and cannot fetch (run here, from the repo root; both folders are
# git-ignored through .git/info/exclude): .devcarry/data (a copy of the task data) and .devcarry/minilm16
# (the offline MiniLM in fp16: 45 MB instead of 91, under the 64 MiB transfer limit), .whl/ (fastcore).
set -euo pipefail
DATA=${1:-../shared/data}
mkdir -p .git/info; grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || printf '/.devcarry/\n/.whl/\n' >> .git/info/exclude
mkdir -p .devcarry/data .whl
cp -r "$DATA"/{sst,quora,sts,nli} .devcarry/data/
python3 - <<'PY'
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
from minbert_nb.config import offline_model_dir
src, dst = offline_model_dir(), Path(".devcarry/minilm16"); dst.mkdir(parents=True, exist_ok=True)
save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src/"model.safetensors")).items()}, str(dst/"model16.safetensors"))
for f in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"): shutil.copy(src/f, dst/f)
PY
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl fastcore
du -sh .devcarry .whl
