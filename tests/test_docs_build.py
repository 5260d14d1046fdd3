"""The documentation site builds with warnings as errors (docs/building.md), documents
every public name, and every notation link of the Markdown pages points at an anchor
that exists.  The build skips without the ``docs`` extra; the link check does not."""

import importlib.util
import re
from pathlib import Path

import pytest

import refprune

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
NEEDED = ("sphinx", "myst_parser", "numpydoc", "sphinx_gallery", "matplotlib")


def _anchors(page):
    return set(re.findall(r'<a id="([A-Za-z0-9_-]+)"></a>', page.read_text()))


def test_notation_links_point_at_existing_anchors():
    # [text](conventions.md#notation-x) or, inside conventions.md, [text](#notation-x)
    notation = _anchors(DOCS / "conventions.md")
    assert len(notation) >= 20 and all(a.startswith("notation-") for a in notation), notation
    links = 0
    for page in PAGES:
        text = page.read_text()
        for target, anchor in re.findall(r"\]\(((?:conventions\.md)?)#(notation-[A-Za-z0-9_-]+)\)", text):
            assert target or page.name == "conventions.md", (page.name, anchor)
            assert anchor in notation, f"{page.name} links to #{anchor}, which conventions.md does not define"
            links += 1
    assert links >= 30


def test_the_api_pages_list_every_public_name():
    api = (DOCS / "api.md").read_text()
    listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_.]*)$", api, re.M))
    missing = [name for name in refprune.__all__ if name not in listed]
    assert not missing, f"docs/api.md does not list {missing}"
    for sub in ("conformance", "testing", "options", "optim", "pruning"):
        assert sub in listed, sub


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDED),
                    reason="needs the docs extra (sphinx, myst-parser, numpydoc, sphinx-gallery, matplotlib)")
def test_site_builds_without_warnings(tmp_path):
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    # -W: a warning (a broken reference, an unknown anchor, a failing example) fails the build;
    # -E and a fresh doctree folder: no state from an earlier build
    status = build_main(["-W", "--keep-going", "-q", "-E", "-b", "html", "-d", str(tmp_path / "doctrees"),
                         str(DOCS), str(out)])
    assert status == 0
    # every name of refprune.__all__ has its page, and the page documents that object
    generated = DOCS / "generated"
    for name in refprune.__all__:
        page = out / "generated" / f"refprune.{name}.html"
        assert page.exists(), name
        assert (generated / f"refprune.{name}.rst").exists(), name
        assert f"refprune.{name}" in page.read_text(), name
    for sub in ("conformance", "testing", "pruning", "curvature", "bridges", "nn", "options", "optim"):
        assert (out / "generated" / f"refprune.{sub}.html").exists(), sub
    # the mathematics is rendered by MathJax, not shown as code
    pruning = (out / "pruning_explained.html").read_text()
    assert "mathjax" in pruning.lower() and r"\theta" in pruning
    assert (out / "auto_examples" / "plot_00_quickstart.html").exists()
