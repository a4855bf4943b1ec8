"""The notebook environment: badges and setup cells, what `colab_setup` picks, and the live widgets behind their static
fallbacks (the live path, which nbdev-test cannot reach: there is no kernel there)."""
import json, os, subprocess, sys, warnings
from pathlib import Path

import pytest

from minbert_nb import colab
from minbert_nb.colab import Live, check_badges, check_setup_cells, colab_setup, setup_cell

REPO = Path(__file__).resolve().parents[1]


def test_badges_on_every_numbered_notebook():
    assert check_badges(REPO / "nbs") == []


def test_setup_cell_in_every_numbered_notebook():
    """Each lesson runs `setup_cell()` before importing minbert_nb."""
    assert check_setup_cells(REPO / "nbs") == []
    text = setup_cell()
    for p in sorted((REPO / "nbs").glob("[0-9][0-9]*_*.ipynb")):
        assert any(c["cell_type"] == "code" and "".join(c["source"]) == text for c in json.loads(p.read_text())["cells"]), f"{p.name}: the setup cell is not current"


def test_setup_cell_is_harmless_locally():
    """Outside Colab the setup cell installs nothing and prints nothing: it only picks the device, model and data."""
    r = subprocess.run([sys.executable, "-c", setup_cell() + "\nprint(repr(env))"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("Env(on_colab=False, ") and r.stdout.count("\n") == 1, r.stdout


def test_colab_setup(monkeypatch, tmp_path):
    monkeypatch.delenv("MINBERT_DATA", raising=False); monkeypatch.delenv("MINBERT_MODEL", raising=False)
    from minbert_nb.config import pick_device
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = colab_setup(on_colab=True)
    assert (env.on_colab, env.model, env.data, env.device) == (True, "bert-base-uncased", "hub", pick_device("auto").type)
    assert any("No GPU" in str(w.message) for w in caught) == (env.device == "cpu")   # a Colab CPU runtime is told how to get a GPU
    monkeypatch.setenv("MINBERT_DATA", str(tmp_path)); monkeypatch.setenv("MINBERT_MODEL", "prajjwal1/bert-tiny")
    env = colab_setup(on_colab=False)
    assert (env.on_colab, env.model, env.data) == (False, "prajjwal1/bert-tiny", str(tmp_path))


@pytest.fixture
def live_widgets(monkeypatch):
    pytest.importorskip("ipywidgets")
    monkeypatch.setattr(colab, "widgets_available", lambda: True)
    monkeypatch.setattr(colab, "redraw", lambda out, plot_fn: plot_fn())  # draw without a kernel to show it


def test_try_sentence_panel_widget(live_widgets):
    from minbert_nb.run import try_sentence_panel
    calls = []
    def predict(a, b):
        calls.append((a, b)); return {"sst": [0.2] * 5, "para": 0.5, "sts": 2.5}
    panel = try_sentence_panel(predict, "a b", "b c")
    assert isinstance(panel, Live) and panel.widget is not None
    ta, tb, go, out = panel.widget.children
    assert calls == [("a b", "b c"), ("a b", "b c")]      # the static figure, then the widget's first draw
    ta.value = "x y"; go.click()
    assert calls[-1] == ("x y", "b c")
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_conflict_viewer_widget(live_widgets, monkeypatch):
    from minbert_nb import pcgrad
    drawn = []
    real = pcgrad.plot_task_cosines
    monkeypatch.setattr(pcgrad, "plot_task_cosines", lambda log, step=None: drawn.append(step) or real(log, step))
    log = [{"step": s, "pcgrad/conflicts": 0.5, "pcgrad/cos/sst|para": -0.1 * s, "pcgrad/cos/sst|sts": 0.1} for s in (1, 2, 3)]
    slider = pcgrad.conflict_viewer(log).widget.children[0]
    slider.value = 2
    assert drawn == [None, 3, 2]


def test_attention_explorer(live_widgets):
    """01_attention's explorer: the static heatmap without a live kernel (nbdev-test, the docs site), the sliders in one."""
    import torch
    from minbert_nb import attention
    attns = [torch.full((1, 2, 3, 3), 1 / 3)] * 2
    w = attention.attention_explorer(attns, list("abc"))
    assert w.fig.axes[0].get_title() == "layer 0, head 0"
    layer, head = w.widget.children[0].children
    assert (layer.max, head.max) == (1, 1) and "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()


def test_static_where_no_kernel():
    from minbert_nb.pcgrad import conflict_viewer
    assert not colab.widgets_available()                   # pytest: no kernel
    live = conflict_viewer([{"step": 1, "pcgrad/conflicts": 0.0, "pcgrad/cos/a|b": 0.3}])
    assert live.widget is None and set(live._repr_mimebundle_()) == {"image/png", "text/plain"}
