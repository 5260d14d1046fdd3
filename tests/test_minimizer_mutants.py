"""minimize and its certificate against hand-built values: the certificate's boundaries,
the objective with weight decay from its definition, the settings handed to SciPy, the
progress report, and a network with nothing free."""

import numpy as np
import pytest
import scipy.optimize

import refprune as rp
from refprune import minimizer
from refprune.params import flatten_params

from cases import small_mlp


def test_certify_boundaries():
    # grad_tol = 1e-8 max(1, |L|): a gradient exactly at the tolerance passes (<=)
    assert minimizer.certify(1e-8, np.array([1.0, 2.0]), 0.5) == (1e-8, 2e-10, minimizer.BOTH)
    assert minimizer.certify(2e-8, np.array([1.0, 2.0]), 0.5)[2] == "grad_norm"
    # eig_tol = 1e-10 max|lambda|: an eigenvalue exactly at the tolerance fails (>)
    assert minimizer.certify(0.0, np.array([1e-10, 1.0]), 1.0) == (1e-8, 1e-10, "min_eigenvalue")
    # nothing free: the tolerance on eigenvalues is 0 and the point is certified
    assert minimizer.certify(0.0, np.zeros(0), 5.0) == (5e-8, 0.0, minimizer.BOTH)


def test_objective_includes_the_weight_decay():
    model, params, X, y, loss = small_mlp(n=6)
    r = rp.minimize(model, params, X, y, loss, weight_decay=0.5, maxiter=3)
    t = flatten_params(r.params)
    want = rp.loss(model, r.params, X, y, loss) + 0.25 * float(t @ t)
    assert r.objective == pytest.approx(want, rel=1e-13)


def test_settings_handed_to_scipy(monkeypatch, capsys):
    model, params, X, y, loss = small_mlp(n=6)
    seen = {}
    real = scipy.optimize.minimize

    def spy(*args, **kw):
        seen.update(kw)
        seen["result"] = real(*args, **kw)
        return seen["result"]

    monkeypatch.setattr(minimizer.scipy.optimize, "minimize", spy)
    r = rp.minimize(model, params, X, y, loss, weight_decay=0.1)
    assert seen["options"] == {"gtol": 1e-10, "maxiter": 1000}
    assert seen["callback"] is None and seen["method"] == "trust-exact"
    assert capsys.readouterr().err == ""
    assert r.scipy_result is seen["result"]
    assert isinstance(r.iterations, int) and r.iterations == seen["result"].nit


def test_progress_counts_the_iterations(capsys):
    model, params, X, y, loss = small_mlp(n=6)
    r = rp.minimize(model, params, X, y, loss, weight_decay=0.1, maxiter=4, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    for k, line in enumerate(lines, 1):
        assert line.startswith(f"minimize: iteration {k}, objective ")
    assert float(lines[-1].rsplit(" ", 1)[1]) == pytest.approx(r.objective, rel=1e-9)


def test_nothing_free():
    model, params, X, y, loss = small_mlp(n=6)
    n = flatten_params(params).size
    r = rp.minimize(model, params, X, y, loss, weight_decay=0.1, mask=np.zeros(n, bool))
    t = flatten_params(params)
    assert np.array_equal(flatten_params(r.params), t)
    assert r.objective == pytest.approx(rp.loss(model, params, X, y, loss) + 0.05 * float(t @ t), rel=1e-13)
    assert (r.grad_norm, r.min_eigenvalue, r.max_eigenvalue, r.eig_tol) == (0.0, 0.0, 0.0, 0.0)
    assert r.at_minimum and r.certified_by == minimizer.BOTH and r.iterations == 0
