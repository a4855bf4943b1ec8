# Sourced by the tools/gpu_*.sh scripts on a lent GPU machine: carried wheels, PYTHONPATH, and the
# carried fp16 MiniLM (.devcarry/minilm16, made small for the 64 MiB transfer limit), when carried, restored as fp32 in /tmp/minilm.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
if [ -d .devcarry/minilm16 ]; then python3 - <<'PY'
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
s, d = Path(".devcarry/minilm16"), Path("/tmp/minilm"); d.mkdir(exist_ok=True)
save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(s/"model16.safetensors")).items()}, str(d/"model.safetensors"))
for f in s.iterdir():
    if f.name != "model16.safetensors": shutil.copy(f, d/f.name)
PY
fi
