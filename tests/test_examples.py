"""The gallery in ``examples/``: every ``plot_*.py`` runs as a plain script in a fresh
process (``MPLBACKEND=Agg``) at the size it is meant to be read at, and what its text says
about the output is checked against the output it printed.

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
#: planted bugs it demonstrates really happened, and the numbers its text quotes
EXPECTED_OUTPUT = {
    "plot_01_check_pytorch_kfac.py": [r"\| kfac_factors \| 16 \| \S+ \(\S+\) \| 1e-09 \| pass \|",
                                      r"A alone off by a constant factor 3: N = 3",
                                      r"the bias row of A \(refprune folds it in\) is missing",
                                      r"failed on 16 of 16 cases",
                                      r"conformance with refprune failed",
                                      r"correct: relative error \S+e-1[6-7]; agrees",
                                      r"matches refprune's K-FAC of the GGN",
                                      r"np.kron layout: .*matches each layer's S kron A left in the row-major order",
                                      r"gradients multiplied by N as if the loss took the mean"],
    "plot_02_xor_obd_obs.py": [r"certified minimum: True", r"equal to the library's: True.*\n.*equal to the "
                               r"library's: True", r"Hassibi & Stork's L_q / refprune's s_q: \[(0\.5 *){9}\]",
                               r"OBS removes weight 5 \(b\(h2\)\); same update as by hand: True",
                               r"OBD +Spearman rank correlation with the actual increase: 0\.69",
                               r"OBS +Spearman rank correlation with the actual increase: 0\.22",
                               r"magnitude Spearman rank correlation with the actual increase: 0\.90",
                               r"magnitude removes 5 \(b\(h2\)\): objective \+0\.3270.*solves XOR: False",
                               r"OBD +removes 5 \(b\(h2\)\): objective \+0\.3270.*solves XOR: False",
                               r"OBS +removes 5 \(b\(h2\)\): objective \+0\.0984.*solves XOR: True",
                               # the net is symmetric in x1 and x2, so weights 0 and 1 tie, and
                               # so do 2 and 3: either of a pair may go first, as rounding decides
                               r"removal order: \[5 (2 3|3 2) (0 1|1 0) 8 7\]"],
    "plot_03_hessian_spectrum.py": [r"371 parameters, 180 points"],
    "plot_04_eigendamage_vs_units.py": [r"epoch 300, dense", r"epoch 1500, dense"],
    "plot_05_property_test.py": [r"200 drawn networks, largest relative error \S+e-1[5-7]",
                                 r"the user's OBD diagonal is the exact Hessian diagonal",
                                 r"caught AssertionError", r"Falsifying example|Failing test case"],
}


def _xor_text(out):
    """plot_02's claims about the quadratic model's predictions."""
    # 'every point lies far above [y = x]: the actual increase is 6 to 110 times the prediction'
    rows = re.findall(r"^\d  \S+ +OBD (\S+) -> (\S+)   OBS (\S+) -> (\S+)", out, re.M)
    assert len(rows) == 9, out
    ratios = [float(b) / float(a) for r in rows for a, b in (r[:2], r[2:])]
    assert 5.5 < min(ratios) and max(ratios) < 115, ratios
    # 'the sum of the predictions stays 8 to 90 times below the actual increase all along the sweep'
    sweep = re.search(r"actual / predicted along the sweep: \[([^\]]*)\]", out).group(1)
    assert len(sweep.split()) == 7 and 7.5 < min(map(float, sweep.split())) and max(map(float, sweep.split())) < 95


def _spectrum_text(out):
    """plot_03: the GGN is positive semi-definite; the residual supplies all the negative
    curvature; the most negative eigenvalue of H shrinks from about -0.54 to -0.008 and
    the sum of the negative ones from about -16 to -0.06; 118 to 162 negative eigenvalues;
    |H - G| / |G| from about 3 to 0.1."""
    rows = [list(map(float, r)) for r in re.findall(
        r"^ *(\d+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\d+), +(\S+) +(\S+) +(\S+)$", out, re.M)]
    assert [int(r[0]) for r in rows] == [0, 3, 10, 30, 100, 300, 1000], out
    for epoch, _, _, hmin, gmin, resmin, count, negsum, share, ratio in rows:
        assert gmin > -1e-12 and share > 1 - 1e-3 and hmin >= resmin - 1e-12, (epoch, out)
        assert 118 <= count <= 162
    first, last = rows[0], rows[-1]
    assert round(first[3], 2) == -0.54 and round(last[3], 3) == -0.008, out
    assert round(first[7]) == -16 and round(last[7], 2) == -0.06, out
    assert round(first[9]) == 3 and round(last[9], 1) == 0.1, out


def _budget_tables(out):
    """{epoch: {budget: {method: loss}}} from plot_04's tables."""
    tables = {}
    for epoch, body in re.findall(r"epoch (\d+), dense.*\n.*budget.*\n((?:.*%.*\n?)+)", out):
        table = tables.setdefault(int(epoch), {})
        for line in body.splitlines():
            budget = line.split()[0]
            table[budget] = dict(zip(["C-OBD", "Kron-OBD", "Kron-OBS", "EigenDamage"],
                                     map(float, re.findall(r"loss (\S+)", line))))
    return tables


def _eigendamage_text(out):
    """plot_04: at epoch 300 all four within 0.02 at 10% and 20%, EigenDamage lowest at 35%
    and 50%; at epoch 1500 the unit methods below EigenDamage at every budget."""
    tables = _budget_tables(out)
    assert set(tables) == {300, 1500} and all(len(t) == 4 for t in tables.values()), out
    for budget in ("10%", "20%"):
        losses = tables[300][budget].values()
        assert max(losses) - min(losses) <= 0.02, (budget, losses)
    for budget in ("35%", "50%"):
        row = tables[300][budget]
        assert row["EigenDamage"] == min(row.values()), (budget, row)
    for budget, row in tables[1500].items():
        assert max(v for k, v in row.items() if k != "EigenDamage") < row["EigenDamage"], (budget, row)


#: checks of the numbers an example's text quotes, run on its output
TEXT_CHECKS = {"plot_02_xor_obd_obs.py": _xor_text, "plot_03_hessian_spectrum.py": _spectrum_text,
               "plot_04_eigendamage_vs_units.py": _eigendamage_text}


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


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path):
    for module in sorted({"matplotlib", "torch", "hypothesis"} & (_imports(path) | {"matplotlib"})):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{path.name} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    for pattern in EXPECTED_OUTPUT.get(path.name, []):
        assert re.search(pattern, proc.stdout), f"{path.name}: {pattern!r} not in its output:\n{proc.stdout[-3000:]}"
    if path.name in TEXT_CHECKS:
        TEXT_CHECKS[path.name](proc.stdout)
