"""Put the Colab setup cell (`minbert_nb.course.setup_cell()`) into numbered notebooks, right after the badge cell.

Idempotent: a notebook that already has the cell, with the current text, is left byte for byte as it is; a setup cell
with an older text is brought up to date in place. Usage (from the repository root):

    python tools/add_setup_cells.py                    # every nbs/NN_*.ipynb
    python tools/add_setup_cells.py nbs/06_train.ipynb nbs/12_experiments.ipynb
    python tools/add_setup_cells.py --check            # list the notebooks that would change; exit 1 if any

Then `nbdev-clean` (a no-op on the cells written here) and `python -c "from minbert_nb.course import check_setup_cells;
print(check_setup_cells('nbs'))"` → `[]`.
"""
import argparse, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minbert_nb.course import setup_cell  # noqa: E402

MARK = "# Setup: on Colab"   # the first line of every version of the setup cell
CELL_ID = "colab-setup"      # a fixed id: the same cell in every notebook, stable across runs


def _src(cell) -> str: return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _lines(text: str) -> list[str]: return text.splitlines(keepends=True)


def add_setup_cell(path: Path, text: str) -> str:
    "Insert or refresh the setup cell of one notebook; returns 'added', 'updated' or 'ok'."
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    have = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and _src(c).lstrip().startswith(MARK)]
    if have:
        c = cells[have[0]]
        if _src(c) == text: return "ok"
        c["source"] = _lines(text)
        status = "updated"
    else:
        badge = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "colab-badge.svg" in _src(c)), None)
        if badge is None: raise SystemExit(f"{path}: no Open-in-Colab badge cell to put the setup cell after")
        ids = {c.get("id") for c in cells}
        cid = CELL_ID if CELL_ID not in ids else next(f"{CELL_ID}-{k}" for k in range(2, 100) if f"{CELL_ID}-{k}" not in ids)
        cells.insert(badge + 1, {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {}, "outputs": [],
                                 "source": _lines(text)})
        status = "added"
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")  # nbdev-clean's format
    return status


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to update (default: every nbs/NN_*.ipynb)")
    ap.add_argument("--check", action="store_true", help="change nothing; list the notebooks that lack the current cell, exit 1 if any")
    a = ap.parse_args(argv)
    paths = a.notebooks or sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb"))
    text, stale = setup_cell(), []
    for p in paths:
        if a.check:
            cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
            if not any(c["cell_type"] == "code" and _src(c) == text for c in cells): stale.append(p)
            continue
        print(f"{p}: {add_setup_cell(p, text)}")
    if a.check:
        for p in stale: print(f"{p}: no current setup cell")
        return 1 if stale else 0
    return 0


if __name__ == "__main__": sys.exit(main())
