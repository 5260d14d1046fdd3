"""The project's own promises: the demo runs, CI runs the README's test command."""

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_and_reports_the_spectra():
    from refprune import demo

    buf = io.StringIO()
    with redirect_stdout(buf):
        demo.main(["--steps", "20", "--hidden", "4"])
    out = buf.getvalue()
    for name in ("Hessian", "GGN", "residual"):
        assert re.search(rf"^\s+{name}\s+trace", out, re.M), out
    # the decomposition printed by the demo holds to rounding
    err = float(re.search(r"\|H - \(GGN \+ residual\)\|_max = (\S+);", out).group(1))
    assert err < 1e-12


def test_conv_demo_runs():
    from refprune import demo

    buf = io.StringIO()
    with redirect_stdout(buf):
        demo.main(["--net", "conv", "--steps", "10", "--hidden", "2"])
    out = buf.getvalue()
    assert "images of bars" in out and "Conv2d(1, 2" in out
    err = float(re.search(r"\|H - \(GGN \+ residual\)\|_max = (\S+);", out).group(1))
    assert err < 1e-12


def test_bars_are_what_they_say():
    from refprune.demo import bars

    X, y = bars(n_per_class=5, noise=0.0, seed=1)
    assert X.shape == (15, 1, 8, 8) and np.bincount(y).tolist() == [5, 5, 5]
    for img, label in zip(X[:, 0], y):
        assert img.sum() == 8.0
        if label == 0:
            assert (img.sum(axis=1) == 8).sum() == 1  # one full row
        elif label == 1:
            assert (img.sum(axis=0) == 8).sum() == 1  # one full column
        else:
            assert np.all(img.sum(axis=0) == 1) and np.all(img.sum(axis=1) == 1)


def test_spirals_are_reproducible_and_balanced():
    from refprune.demo import spirals

    X1, y1 = spirals(seed=3)
    X2, y2 = spirals(seed=3)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert np.bincount(y1).tolist() == [60, 60, 60]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    python3 -m venv") and "pytest" in line]
    assert len(commands) == 1, commands
    assert commands[0] in ci.splitlines()


def _readme_block(after):
    """The first ```python block after the line containing ``after``."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python", text.index(after)) + len("```python")
    return text[start : text.index("```", start)]


def test_readme_pytorch_example_runs_and_agrees_with_torch():
    import pytest

    torch = pytest.importorskip("torch")
    ns = {}
    exec(compile(_readme_block("A PyTorch model's Hessian"), "README", "exec"), ns)
    net, X, y = ns["net"], ns["X"], ns["y"]
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]

    def f(theta):
        ps = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        out = torch.func.functional_call(net, dict(zip(names, ps)), (X,))
        return torch.nn.functional.cross_entropy(out, y)

    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    Ht = torch.func.hessian(f)(theta).numpy()
    assert np.abs(ns["H"] - Ht).max() <= 1e-12 * max(1.0, np.abs(Ht).max())
    assert np.allclose(ns["d"], np.diag(Ht), rtol=0, atol=1e-12)


def test_readme_conformance_example_is_one_assertion():
    block = _readme_block("**The conformance harness**")
    assert "cf.assert_conforms(cf.Adapter(hessian=my_hessian))" in block


def test_demo_pruning_table_shows_small_values_and_explains_its_columns(monkeypatch):
    """Every printed prediction and change equals the pruning step's value to the 3
    significant digits printed (a prediction of 2e-05 must not read 0.0000), and the
    legend under the table explains each column."""
    from refprune import demo

    steps = []
    real_prune = demo.rp.prune

    def recording_prune(*args, **kwargs):
        result = real_prune(*args, **kwargs)
        steps.append(result.steps[-1] if result.steps else None)
        return result

    monkeypatch.setattr(demo.rp, "prune", recording_prune)
    buf = io.StringIO()
    with redirect_stdout(buf):
        demo.main(["--steps", "60", "--hidden", "6"])
    out = buf.getvalue()
    table = out[out.index("one-shot pruning"):]
    rows = [line for line in table.splitlines()[2:] if re.match(r"^  \S.*\s\d+\s+\S+\s+\S+\s+\S+\s+[\d.]+\s+\d+$", line)]
    recorded = [s for s in steps if s is not None]
    assert len(rows) == len(recorded) >= 6, table
    for line, step in zip(rows, recorded):
        predicted, actual, no_update = (float(v) for v in line.split()[-5:-2])
        for shown, value in ((predicted, step.predicted), (actual, step.actual),
                             (no_update, step.actual_without_update)):
            if np.isnan(value):
                assert np.isnan(shown), line
            else:
                assert abs(shown - value) <= 5e-3 * abs(value), (line, value)
    for column in ("removed:", "predicted:", "actual:", "no update:", "accuracy:", "params:"):
        assert re.search(rf"(^  |; ){column}", table, re.M), column
