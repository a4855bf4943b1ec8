"""The docs site, as far as it builds without Quarto: nbdev's sidebar and processing, the processed notebooks rendered
to HTML with nbconvert, every page opened in headless Chromium (`apt-get install -y chromium`; skipped without it).

The index page's screenshot is saved to `_docs_check/index.png` (gitignored)."""
import json
from pathlib import Path

import pytest
import yaml

from minbert_nb.docs import check_site, find_chromium, local_mathjax_url, render_site, sidebar_order, stage_site

REPO = Path(__file__).resolve().parents[1]
SHOT = REPO / "_docs_check" / "index.png"
# the default build: the home page, two notebooks with math and plots, one with API docs only, the course kit (widgets)
SMOKE = ["index", "00_config", "01_attention", "03_optim", "03_colab"]
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="headless Chromium not installed (apt-get install -y chromium)")


def test_sidebar_in_notebook_order():
    order = sidebar_order(REPO / "nbs")
    assert order[0] == "index.ipynb"
    lessons = sorted(p.name for p in (REPO / "nbs").glob("[0-9][0-9]*_*.ipynb"))
    engineering = sorted(f"engineering/{p.name}" for p in (REPO / "nbs" / "engineering").glob("[0-9][0-9]*_*.ipynb"))
    assert order[1:] == lessons + engineering
    q = yaml.safe_load((REPO / "nbs" / "_quarto.yml").read_text())
    assert set(q["metadata-files"]) >= {"nbdev.yml", "sidebar.yml"}        # where nbdev-docs puts the sidebar
    assert q["format"]["html"]["html-math-method"] == "katex"


def page(body: str, title="A page") -> str:
    return f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"


@needs_chromium
def test_checker_catches_broken_pages(tmp_path):
    text = "<p>" + "Words that make a page worth reading. " * 10 + "</p>"
    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
    pages = {
        "index.html": page(text + f'<img src="{png}"><a href="good.html">ok</a> $$\\alpha_t = \\frac{{1}}{{2}}$$'),
        "good.html": page(text + '<img src="https://colab.research.google.com/assets/colab-badge.svg">'),  # remote: not checked offline
        "trace.html": page(text + "<pre>Traceback (most recent call last):\n  File ...\nValueError: boom</pre>"),
        "empty.html": "<html><body><main></main></body></html>",
        "noimg.html": page(text + '<img src="plot_missing.png">'),
        "deadlink.html": page(text + '<a href="nowhere.html">gone</a>'),
        "badmath.html": page(text + "$$\\frac{1}{2$$"),
    }
    for name, html in pages.items():
        (tmp_path / name).write_text(html)
    mj = local_mathjax_url()
    for name in pages:   # what render_site adds: a local MathJax
        if mj: (tmp_path / name).write_text((tmp_path / name).read_text().replace("<head>", f'<head><script src="{mj}"></script>'))
    reports = {r.page: r for r in check_site(tmp_path, pages=list(pages), screenshot=tmp_path / "shot.png")}
    assert reports["index.html"].problems == [] and reports["good.html"].problems == []
    assert reports["index.html"].images == 1
    assert reports["trace.html"].problems == ["traceback text on the page"]
    assert reports["empty.html"].problems[0].startswith("empty page (0 characters")
    assert reports["noimg.html"].problems == ["image does not load: plot_missing.png"]
    assert reports["deadlink.html"].problems == ["link to a missing page: nowhere.html"]
    if mj:
        assert reports["index.html"].math == 1
        assert reports["badmath.html"].problems == ["1 formula(s) MathJax could not typeset"]
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def build_and_check(tmp_path, notebooks):
    proc = stage_site(REPO, tmp_path / "site", notebooks)
    pages = render_site(proc, tmp_path / "html")
    reports = check_site(tmp_path / "html", screenshot=SHOT)
    broken = {r.page: r.problems for r in reports if r.problems}
    assert not broken, json.dumps(broken, indent=1)
    assert [p.name for p in pages][0] == "index.html"
    assert SHOT.stat().st_size > 10_000 and SHOT.read_bytes()[:4] == b"\x89PNG"
    return {r.page: r for r in reports}, json.loads((tmp_path / "html" / "_pages.json").read_text())


@needs_chromium
def test_docs_site_smoke(tmp_path):
    reports, meta = build_and_check(tmp_path, SMOKE)
    assert list(reports) == ["index.html", "config.html", "attention.html", "optim.html", "colab.html"]   # sidebar order
    for p in ("config.html", "attention.html", "optim.html", "colab.html"):
        assert reports[p].api_docs > 0, p                    # API docs from show_doc
    for p in ("attention.html", "optim.html", "colab.html"):
        assert reports[p].images >= reports[p].plots > 0, p  # the stored plots are on the page and load
    if local_mathjax_url():
        assert reports["attention.html"].math > 0 and reports["optim.html"].math > 0


@pytest.mark.slow
@needs_chromium
def test_docs_site_all(tmp_path):
    reports, meta = build_and_check(tmp_path, None)
    assert len(reports) == len(list((REPO / "nbs").rglob("*.ipynb")))
