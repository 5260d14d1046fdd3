"""Diagonal approximations: every exact diagonal equals the diagonal of its dense
matrix; OBD's diagonal equals the exact one exactly where LeCun et al. (1990) say it
should (no cross terms: a single affine layer) and not otherwise."""

import numpy as np
import pytest
from hypothesis import given

import refprune as rp
from refprune.testing import assert_close
from refprune.testing.strategies import problems

from cases import CASES, IDS, make


def tol(M):
    return 1e-12 * max(1.0, np.abs(M).max())


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_exact_diagonals_equal_dense_diagonals(arch, lossname):
    model, params, X, y, loss = make(arch, lossname, n=4)
    H = rp.hessian(model, params, X, y, loss)
    G = rp.ggn(model, params, X, y, loss)
    assert_close(rp.hessian_diagonal(model, params, X, y, loss), np.diag(H), 1e-10, tol(H), "diag(H)")
    assert_close(rp.ggn_diagonal(model, params, X, y, loss), np.diag(G), 1e-10, tol(G), "diag(GGN)")
    assert_close(rp.fisher_diagonal(model, params, X, y, loss, curvature="fisher"), np.diag(G), 1e-10, tol(G),
                 "diag(true Fisher)")
    E = rp.fisher(model, params, X, y, loss, curvature="empirical_fisher")
    assert_close(rp.fisher_diagonal(model, params, X, y, loss, curvature="empirical_fisher"), np.diag(E), 1e-10, tol(E),
                 "diag(empirical Fisher)")
    M = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=7)
    assert_close(rp.fisher_diagonal(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=7), np.diag(M), 1e-10,
                 tol(M), "diag(MC Fisher), same draws")


@given(problems())
def test_hessian_diagonal_property(p):
    H = rp.hessian(p.model, p.params, p.X, p.y, p.loss)
    assert_close(rp.hessian_diagonal(p.model, p.params, p.X, p.y, p.loss), np.diag(H), 1e-10, tol(H), "diag(H)")


@pytest.mark.parametrize("lossname", ["ce-mean", "ce-sum", "mse-mean", "mse-sum", "bce-mean", "bce-sum"])
@pytest.mark.parametrize("layer", [lambda: rp.Linear(4, 3), lambda: rp.Linear(4, 3, bias=False)])
def test_obd_is_exact_for_a_single_linear_layer(layer, lossname):
    """One affine layer: ``H_(c,r),(c,r) = R sum_n Lambda_n[c, c] x_nr^2``, exactly eq. 8
    of LeCun et al. with the output's ``diag(Lambda)``; both variants coincide (no phi'')."""
    model = rp.Sequential(layer())
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4))
    loss = {"ce-mean": rp.CrossEntropyLoss(), "ce-sum": rp.CrossEntropyLoss("sum"), "mse-mean": rp.MSELoss(),
            "mse-sum": rp.MSELoss("sum"), "bce-mean": rp.BCEWithLogitsLoss(), "bce-sum": rp.BCEWithLogitsLoss("sum")}[lossname]
    if isinstance(loss, rp.CrossEntropyLoss):
        y = rng.integers(0, 3, 6)
    elif isinstance(loss, rp.BCEWithLogitsLoss):
        y = rng.random((6, 3))  # soft labels
    else:
        y = rng.standard_normal((6, 3))
    params = model.init(1)
    d = np.diag(rp.hessian(model, params, X, y, loss))
    assert_close(rp.obd_diagonal(model, params, X, y, loss), d, 1e-12, 1e-15, "OBD vs exact")
    assert_close(rp.obd_diagonal(model, params, X, y, loss, levenberg_marquardt=True), d, 1e-12, 1e-15, "LM vs exact")


def test_obd_is_exact_for_a_single_conv_layer_with_one_location():
    model = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Flatten())
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 2, 3, 3)), rng.standard_normal((5, 3))
    params = model.init(0)
    d = np.diag(rp.hessian(model, params, X, y, rp.MSELoss()))
    assert_close(rp.obd_diagonal(model, params, X, y, rp.MSELoss()), d, 1e-12, 1e-15, "OBD vs exact")


@pytest.mark.parametrize("arch,lossname", [("mlp-tanh", "ce-mean"), ("mlp-sigmoid-softplus", "mse-mean"),
                                           ("conv-tanh-avgpool", "mse-sum")])
def test_obd_differs_from_exact_where_cross_terms_exist(arch, lossname):
    """Cross terms reach the first layer's diagonal through a non-diagonal ``Lambda``
    (cross-entropy), through a second hidden layer, or between conv locations: there
    OBD is off by far more than rounding, with or without the phi'' term."""
    model, params, X, y, loss = make(arch, lossname, n=5)
    exact = rp.hessian_diagonal(model, params, X, y, loss)
    obd = rp.obd_diagonal(model, params, X, y, loss)
    lm = rp.obd_diagonal(model, params, X, y, loss, levenberg_marquardt=True)
    first = slice(0, model[0].n_params)
    for name, d in (("OBD", obd), ("OBD-LM", lm)):
        rel = np.abs(d[first] - exact[first]).max() / np.abs(exact[first]).max()
        assert rel > 1e-3, f"{name} unexpectedly matches the exact diagonal (relative error {rel:.1e})"
    assert np.abs(obd - lm).max() > 1e-6  # the phi'' term is present


@pytest.mark.parametrize("lossname", ["mse-mean", "bce-mean"])
def test_obd_is_exact_with_one_hidden_layer_and_mse(lossname):
    """Linear-Tanh-Linear with MSE: ``M_z1 = diag(phi') W2^T 2I W2 diag(phi') +
    diag(phi'' delta)`` and the first layer needs only ``diag(M_z1)``, which eq. 9 gets
    right because ``Lambda = 2I`` is diagonal; the LM variant is not exact.  So for
    binary cross-entropy, whose ``Lambda = diag(p (1 - p))`` is diagonal too."""
    model, params, X, y, loss = make("mlp-tanh", lossname, n=5)
    exact = rp.hessian_diagonal(model, params, X, y, loss)
    assert_close(rp.obd_diagonal(model, params, X, y, loss), exact, 1e-12, 1e-15, "OBD, one hidden layer, MSE")
    lm = rp.obd_diagonal(model, params, X, y, loss, levenberg_marquardt=True)
    assert np.abs(lm - exact).max() > 1e-6


def test_obd_recursion_against_explicit_formula():
    """OBD for Linear-Tanh-Linear with MSE written out by hand from eqs. 7-9:
    ``h_2 = 2``; ``h_z1 = phi'^2 sum_k W2_kj^2 h_2 + phi'' delta_a``; ``h_W1 = h_z1 x^2``."""
    model, params, X, y, loss = make("mlp-tanh", "mse-sum", n=4)
    W1, b1, W2, b2 = params
    z1 = X @ W1.T + b1
    a1 = np.tanh(z1)
    f = a1 @ W2.T + b2
    delta_a = 2 * (f - y) @ W2
    d1, d2 = 1 - a1**2, -2 * a1 * (1 - a1**2)
    h_z1 = d1**2 * (2 * (W2**2).sum(0)) + d2 * delta_a
    h_W1 = np.einsum("nc,nr->cr", h_z1, X**2)
    h_W2 = np.einsum("nc,nr->cr", 2 * np.ones_like(f), a1**2)
    ref = np.concatenate([h_W1.ravel(), h_z1.sum(0), h_W2.ravel(), 2 * np.full(f.shape[1], len(X))])
    assert_close(rp.obd_diagonal(model, params, X, y, loss), ref, 1e-12, 1e-13, "OBD by hand")


def test_curvature_diagonal_defaults_and_names():
    # the defaults are those of the dense functions: the Hessian, and one Monte Carlo
    # draw from seed 0 (fisher()'s defaults), so the two agree without arguments
    model, params, X, y, loss = make("conv-tanh-avgpool", "ce-mean", n=5)
    args = (model, params, X, y, loss)
    assert_close(rp.curvature_diagonal(*args), np.diag(rp.hessian(*args)), 1e-10, 1e-14, "default")
    F = rp.fisher(*args, curvature="mc_fisher")
    assert_close(rp.curvature_diagonal(*args, curvature="mc_fisher"), np.diag(F), 1e-10, tol(F), "mc default")
    assert_close(rp.fisher_diagonal(*args, curvature="mc_fisher"), np.diag(F), 1e-10, tol(F), "mc default")
    for fn, name in ((rp.curvature_diagonal, "curvature_diagonal"), (rp.fisher_diagonal, "fisher_diagonal")):
        with pytest.raises(ValueError, match=rf"^{name}: curvature must be one of"):
            fn(*args, curvature="bogus")
