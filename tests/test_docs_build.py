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


# symbols whose first standalone use ($\\theta$ alone, not inside a longer formula) in each
# document must link to their row of the notation table
FIRST_USE = {"theta": [r"\theta"], "Lambda-cap": [r"\Lambda_n", r"\Lambda"], "Phi-cap": [r"\Phi_n"],
             "kappa": [r"\kappa_{ij}", r"\kappa"], "USA": [r"U_{SA}"], "nmc": [r"n_{\mathrm{mc}}"],
             "delta": [r"\delta_m", r"\delta_j"], "H-cap": ["H"], "R-cap": ["R"], "S-cap": ["S"], "A-cap": ["A"]}


def _prose(text):
    """The lines outside code blocks, display mathematics and headings, inline code removed."""
    keep, fence, display = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif line.strip() == "$$":
            display = not display
        elif not (fence or display or line.startswith(("#", "    "))):
            keep.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(keep)


@pytest.mark.parametrize("name", ["derivations.md", "pruning_explained.md", "optimizers.md"])
def test_first_use_of_a_symbol_links_to_the_notation_table(name):
    text = _prose((DOCS / name).read_text())
    checked = 0
    for anchor, forms in FIRST_USE.items():
        uses = [m for m in re.finditer(r"(\[?)\$([^$\n]+)\$", text) if m.group(2) in forms]
        if not uses:
            continue
        first = uses[0]
        assert first.group(1) == "[" and text[first.end():].startswith(f"](conventions.md#notation-{anchor})"), \
            f"{name}: the first ${first.group(2)}$ does not link to conventions.md#notation-{anchor}"
        checked += 1
    assert checked >= 2


def test_losses_take_the_reduction_first_as_the_conventions_say():
    # docs/conventions.md §2: the reduction is the first positional argument, and PyTorch's
    # positional size_average (a bool) is refused by name
    assert refprune.MSELoss("sum").reduction == "sum" == refprune.CrossEntropyLoss("sum").reduction
    for loss in (refprune.MSELoss, refprune.CrossEntropyLoss, refprune.BCEWithLogitsLoss):
        with pytest.raises(ValueError, match=rf"{loss.__name__}: reduction must be one of .*got False"):
            loss(False)
    assert "first positional argument" in (DOCS / "conventions.md").read_text()


def test_the_api_pages_list_every_public_name():
    api = (DOCS / "api.md").read_text()
    listed = set(re.findall(r"^   ([A-Za-z_][A-Za-z0-9_.]*)$", api, re.M))
    missing = [name for name in refprune.__all__ if name not in listed]
    assert not missing, f"docs/api.md does not list {missing}"
    for sub in ("conformance", "testing", "options", "optim", "pruning"):
        assert sub in listed, sub


@pytest.mark.filterwarnings("ignore::UserWarning")  # numpydoc's notes on section names
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDED),
                    reason="needs the docs extra (sphinx, myst-parser, numpydoc, sphinx-gallery, matplotlib)")
def test_site_builds_without_warnings(tmp_path):
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    # -W: a warning (a broken reference, an unknown anchor, a failing example) fails the build;
    # -E and a fresh doctree folder: no state from an earlier build
    # run_stale_examples: run every example even if an earlier build left its output
    status = build_main(["-W", "--keep-going", "-q", "-E", "-b", "html", "-d", str(tmp_path / "doctrees"),
                         "-D", "sphinx_gallery_conf.run_stale_examples=True", str(DOCS), str(out)])
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


@pytest.mark.parametrize("path", sorted(ROOT.glob("examples/plot_*.py")), ids=lambda p: p.name)
def test_examples_open_as_notebooks_with_markdown_text(path):
    """jupytext reads each example as a notebook whose first cell (the title) and every
    cell of comment lines are Markdown, and writes the same file back byte for byte."""
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(path)
    assert nb.cells[0].cell_type == "markdown"
    for cell in nb.cells:
        lines = [line for line in cell.source.splitlines() if line.strip()]
        if cell.cell_type == "code" and lines:
            assert not all(line.startswith("#") for line in lines), cell.source[:80]
    assert jupytext.writes(nb, fmt="py:percent") == path.read_text()
