"""The notebooks as a reader finds them on GitHub and on the docs site: executed, with every figure stored, no error,
no widget blob, no progress-bar noise, each within its size budget. `minbert notebooks run` regenerates them."""
import json
from pathlib import Path

import pytest

from minbert_nb.cli import main
from minbert_nb.notebooks import check_outputs

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "nbs").glob("**/*.ipynb"))
MAX_BYTES = 1_000_000


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: str(p.relative_to(REPO / "nbs")))
def test_stored_outputs(nb):
    assert check_outputs([nb], MAX_BYTES) == []


@pytest.mark.parametrize("nb", [p for p in NOTEBOOKS if p.name != "index.ipynb"],
                         ids=lambda p: str(p.relative_to(REPO / "nbs")))
def test_executed(nb):
    "Every code cell that prints or draws has run: a notebook with code cells stores some output."
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in cells), f"{nb.name}: no stored output; run `minbert notebooks run`"


def test_check_sees_a_hollow_notebook(tmp_path, capsys):
    from minbert_nb.colab import write_notebook
    nb = write_notebook(tmp_path / "00_x.ipynb", ("code", "fig = plot_history(h)"))
    assert check_outputs([nb]) == ["00_x.ipynb: draws figures but stores none (run `minbert notebooks run 00_x`)"]
    assert main(["notebooks", "check", "--nbs", str(tmp_path)]) == 1
    assert "draws figures but stores none" in capsys.readouterr().out
