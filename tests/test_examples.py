"""The gallery in ``examples/`` runs: every ``plot_*.py`` as a plain script in a fresh
process (``MPLBACKEND=Agg``), at the reduced size ``REFPRUNE_GALLERY_QUICK=1`` so that the
suite stays fast; the examples' default is the size they are meant to be read at.

An example that needs an optional library (matplotlib for all; torch or hypothesis
where it imports them) is skipped when that library is absent, as CI installs only
``.[test]``.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))
#: what the output of an example must contain beyond a clean exit: the checks and
#: planted bugs it demonstrates really happened
EXPECTED_OUTPUT = {
    "plot_01_check_pytorch_kfac.py": [r"\| kfac_factors \| 16 \| \S+ \(\S+\) \| 1e-09 \| pass \|",
                                      r"A alone off by a constant factor 3: N = 3",
                                      r"the bias row of A \(refprune folds it in\) is missing",
                                      r"conformance with refprune failed",
                                      r"gradients multiplied by N as if the loss took the mean"],
    "plot_02_xor_obd_obs.py": [r"certified minimum: True", r"equal to the library's: True.*\n.*equal to the "
                               r"library's: True", r"Hassibi & Stork's L_q / refprune's s_q: \[(0\.5 *){9}\]",
                               r"OBS removes weight 5 \(b\(h2\)\); same update as by hand: True"],
    "plot_03_hessian_spectrum.py": [r"epoch +loss"],
    "plot_04_eigendamage_vs_units.py": [r"EigenDamage: \d+ amounts", r"dense: loss"],
    "plot_05_property_test.py": [r"25 drawn networks, largest relative error \S+e-1[5-7]",
                                 r"the user's OBD diagonal is the exact Hessian diagonal",
                                 r"caught AssertionError", r"Falsifying example|Failing test case"],
}


def _imports(path):
    """Top-level names of the modules the script imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_examples():
    assert len(EXAMPLES) >= 5, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_in_gallery_format(path):
    """A module docstring opening with an RST title, then ``# %%`` cells (sphinx-gallery
    and jupytext's py:percent read the same file)."""
    text = path.read_text()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree, clean=False)
    assert doc is not None, f"{path.name}: no module docstring"
    lines = doc.strip("\n").splitlines()
    assert len(lines) >= 2 and re.fullmatch(r"=+", lines[1]) and len(lines[1]) >= len(lines[0]), \
        f"{path.name}: the docstring must open with a title underlined by '='"
    assert re.search(r"^# %%$", text, re.M), f"{path.name}: no '# %%' cell"
    # a text cell is '# %%' followed by comment lines only, up to the next blank line
    for m in re.finditer(r"^# %%\n((?:.*\n)*?)\n", text, re.M):
        cell = m.group(1).splitlines()
        if cell and cell[0].startswith("#"):
            assert all(ln.startswith("#") for ln in cell), f"{path.name}: mixed text cell {cell}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path):
    for module in sorted({"matplotlib", "torch", "hypothesis"} & (_imports(path) | {"matplotlib"})):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}")
    env = dict(os.environ, MPLBACKEND="Agg", REFPRUNE_GALLERY_QUICK="1", PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{path.name} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    for pattern in EXPECTED_OUTPUT.get(path.name, []):
        assert re.search(pattern, proc.stdout), f"{path.name}: {pattern!r} not in its output:\n{proc.stdout[-3000:]}"
