"""Sphinx configuration of refprune's documentation.

Build (warnings are errors, so a broken reference or a failing gallery example fails):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Needs the ``docs`` extra: ``pip install -e '.[docs]'``.
"""

import os
import re
import sys
import warnings

from docutils import nodes
from sphinx.transforms import SphinxTransform

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's refprune, not an installed one

import refprune  # noqa: E402

project = "refprune"
author = "refprune contributors"
copyright = "refprune contributors"
version = release = refprune.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math (the same source renders on GitHub), amsmath environments,
# and heading anchors so that [text](derivations.md#4-exact-curvature-by-block-assembly) resolves.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# API reference: one generated page per public object (docs/api.md lists them).
autosummary_generate = True
autosummary_imported_members = True
autosummary_ignore_module_all = False
# a subpackage's page documents its own names and links to those of refprune.__all__
# (documenting one object under two public names would describe it twice)
autosummary_context = {"toplevel": list(refprune.__all__)}
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
}

html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": refprune.__doc__.splitlines()[0], "fixed_sidebar": True}

# The notation table of conventions.md anchors each symbol with <a id="notation-..."></a>,
# which GitHub renders as an anchor.  For Sphinx the same raw HTML becomes a labelled
# target, so [$\theta$](conventions.md#notation-theta) is a checked cross-reference
# (an unknown anchor is a warning, hence an error under -W).
_ANCHOR = re.compile(r'^<a id="([A-Za-z0-9_-]+)">(</a>)?$')


class HtmlAnchors(SphinxTransform):
    default_priority = 200

    def apply(self):
        for raw in list(self.document.findall(nodes.raw)):
            if "html" not in raw.get("format", "") or raw.parent is None:
                continue
            m = _ANCHOR.match(raw.astext().strip())
            if m is None:
                continue
            # MyST reads <a id="x"></a> as two raw pieces: drop the closing tag
            siblings = raw.parent.children
            k = siblings.index(raw)
            if m.group(2) is None:
                after = siblings[k + 1] if k + 1 < len(siblings) else None
                if not (isinstance(after, nodes.raw) and after.astext().strip() == "</a>"):
                    continue
                after.parent.remove(after)
            name = m.group(1)
            target = nodes.target("", "", ids=[name], names=[name.lower()])
            raw.replace_self(target)
            self.document.note_explicit_target(target, target)


def numpydoc_sections(app, what, name, obj, options, lines):
    """Name two sections the way numpydoc knows them, before numpydoc reads the docstring
    (it drops a section it does not know): "Example" is its "Examples", and the generated
    "Options by method" of ``refprune.prune`` (the options table, refprune/pruning/prune.py)
    is shown as its "Notes"."""
    for i in range(len(lines) - 1):
        underline = lines[i + 1].strip()
        if not underline or set(underline) != {"-"}:
            continue
        title = lines[i].strip()
        if title == "Example":
            lines[i], lines[i + 1] = "Examples", "--------"
        elif title == "Options by method":
            # the generated lines (the last section) as a literal block: they hold "|x|"
            rest = ["    " + line if line.strip() else "" for line in lines[i + 2:]]
            lines[i:] = ["Notes", "-----", "Options by method::", ""] + rest
            break


# numpydoc also reads the docstrings while autosummary writes the stubs, before
# numpydoc_sections renames these two sections, and says so each time
warnings.filterwarnings("ignore", message=r"Unknown section (Example|Options By Method) in the docstring",
                        category=UserWarning)


def setup(app):
    app.add_transform(HtmlAnchors)
    app.connect("autodoc-process-docstring", numpydoc_sections, priority=400)
