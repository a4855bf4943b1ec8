import os
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MINBERT_DATA", REPO.parent / "shared" / "data"))

@pytest.fixture(scope="session")
def data_dir():
    if not (DATA / "sst").exists(): pytest.skip(f"task data not found at {DATA} (set MINBERT_DATA)")
    return DATA

import torch
torch.set_num_threads(1)   # a shared 2-core machine: two threads that meet at every operation are slower than one
