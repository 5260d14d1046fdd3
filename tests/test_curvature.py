"""Identities between the exact curvature matrices, each checked against an
independent computation (``docs/conventions.md``)."""

import numpy as np
import pytest
from hypothesis import given

import refprune as rp
from refprune.nn.losses import Loss
from refprune.testing import Objective, assert_close, check_hessian, directional_derivative
from refprune.testing.strategies import problems

from cases import CASES, IDS, make


def tol(M):
    return 1e-12 * max(1.0, np.abs(M).max())


@given(problems())
def test_hessian_is_symmetric_and_matches_hvp(p):
    """``hvp`` (Pearlmutter's R-operator) and ``hessian`` (block assembly) are separate
    code paths; they must agree on every column, and the diagonal blocks, computed in
    full, must come out symmetric."""
    H = rp.hessian(p.model, p.params, p.X, p.y, p.loss)
    assert_close(H, H.T, 0, tol(H), "H - H^T")
    V = np.random.default_rng(0).standard_normal((3, H.shape[0]))
    assert_close(rp.hvp(p.model, p.params, p.X, p.y, p.loss, V), V @ H, 1e-10, tol(H), "hvp(V) vs V H")


class FrozenLinearLoss(Loss):
    """``l_n = g_n . f_n`` with ``g_n`` fixed: its Hessian is exactly the residual term
    ``sum_n sum_c g_nc d^2 f_nc / dtheta^2`` of the loss the ``g_n`` came from."""

    def __init__(self, g, scale):
        super().__init__("sum")
        self.g, self.R = g, scale

    def check_targets(self, y, n, c):
        return np.zeros(n)

    def scale(self, n, c):
        return self.R

    def per_sample(self, f, y):
        return np.sum(self.g * f, axis=1)

    def grad(self, f, y):
        return self.g.copy()

    def hessian_matvec(self, f, y, V):
        return np.zeros_like(V)


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_hessian_is_ggn_plus_residual(arch, lossname):
    """``H = G + residual``, with the residual checked by central differences of the
    gradient of the frozen linear loss (a computation without any second-order code)."""
    model, params, X, y, loss = make(arch, lossname)
    H = rp.hessian(model, params, X, y, loss)
    G = rp.ggn(model, params, X, y, loss)
    Res = rp.residual(model, params, X, y, loss)
    assert_close(G + Res, H, 1e-12, tol(H), "GGN + residual vs Hessian")
    f = model(params, X)
    c = f.shape[1]
    frozen = FrozenLinearLoss(loss.grad(f, loss.check_targets(y, len(X), c)), loss.scale(len(X), c))
    obj = Objective(model, X, y, frozen)
    check_hessian(obj.grad, Res, rp.flatten_params(params), rtol=1e-5, atol=1e-7, step=1e-6)


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_ggn_equals_jacobian_form(arch, lossname):
    """``G = R sum_n J_n^T Lambda_n J_n`` with ``J_n`` from finite differences of the
    network output and ``Lambda_n`` written out as a dense matrix."""
    model, params, X, y, loss = make(arch, lossname)
    theta = rp.flatten_params(params)
    n = theta.size
    f = model(params, X)
    N, C = f.shape
    J = np.empty((N, C, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        J[:, :, i] = directional_derivative(lambda t: model(rp.unflatten_params(model, t), X), theta, e, step=1e-6)
    if isinstance(loss, rp.CrossEntropyLoss):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        Lam = np.stack([np.diag(pi) - np.outer(pi, pi) for pi in p])
    elif isinstance(loss, rp.BCEWithLogitsLoss):
        p = 1.0 / (1.0 + np.exp(-f))  # the outputs here are far from overflowing exp
        Lam = np.stack([np.diag(pi * (1.0 - pi)) for pi in p])
    else:
        Lam = np.stack([2.0 * np.eye(C)] * N)
    ref = loss.scale(N, C) * np.einsum("nci,ncd,ndj->ij", J, Lam, J)
    G = rp.ggn(model, params, X, y, loss)
    assert_close(G, ref, 1e-6, 1e-8 * max(1, np.abs(ref).max()), "GGN vs J^T Lambda J")


@given(problems())
def test_true_fisher_equals_ggn(p):
    """With the likelihoods of ``docs/conventions.md`` §3 the true Fisher equals the GGN: the
    Fisher's ``E_y[g g^T]`` is summed over all labels (cross-entropy) or taken from the
    Gaussian's covariance (squared error), never from ``Lambda``."""
    F = rp.fisher(p.model, p.params, p.X, p.y, p.loss, curvature="fisher")
    G = rp.ggn(p.model, p.params, p.X, p.y, p.loss)
    assert_close(F, G, 1e-10, tol(G), "true Fisher vs GGN")


@given(problems())
def test_empirical_fisher_is_sum_of_per_sample_outer_products(p):
    """``E = R sum_n g_n g_n^T``; rows of ``per_sample_grads`` are ``R g_n``."""
    Gs = rp.per_sample_grads(p.model, p.params, p.X, p.y, p.loss)
    R = p.loss.scale(*p.model(p.params, p.X).shape)
    E = rp.fisher(p.model, p.params, p.X, p.y, p.loss, curvature="empirical_fisher")
    assert_close(E, Gs.T @ Gs / R, 1e-10, tol(E), "empirical Fisher vs per-sample outer products")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_model_with_mse_has_closed_form_hessian(reduction, bias):
    """``f = W x + b``, ``L = R sum ||f - y||^2``: ``H = G = 2 R (I_C kron Xb^T Xb)`` in
    the layout ``[W.ravel(), b]`` (``Xb = [X, 1]``)."""
    rng = np.random.default_rng(3)
    N, D, C = 7, 4, 3
    model = rp.Sequential(rp.Linear(D, C, bias=bias))
    params = model.init(1)
    X, y = rng.standard_normal((N, D)), rng.standard_normal((N, C))
    loss = rp.MSELoss(reduction)
    R = 1.0 / (N * C) if reduction == "mean" else 1.0
    Xb = np.hstack([X, np.ones((N, 1))]) if bias else X
    A = 2 * R * np.kron(np.eye(C), Xb.T @ Xb)  # order (c, d) with bias last in each row
    # permute [W|b] rows (c, d) to refprune's [W.ravel(), b]
    order = [c * (D + 1) + d for c in range(C) for d in range(D)] + ([c * (D + 1) + D for c in range(C)] if bias else [])
    ref = A[np.ix_(order, order)] if bias else A
    H = rp.hessian(model, params, X, y, loss)
    assert_close(H, ref, 1e-13, 1e-13, "H vs 2R X^T X")
    assert_close(rp.ggn(model, params, X, y, loss), ref, 1e-13, 1e-13, "GGN vs 2R X^T X")


@pytest.mark.parametrize("lossname", ["ce-mean", "mse-sum", "bce-mean"])
def test_mc_fisher_converges_to_true_fisher(lossname):
    """For a direction ``v``, ``v^T F_MC v = (1/S) sum_s Z_s`` with ``Z_s = R sum_n
    (g_n(y_ns) . v)^2`` i.i.d. over ``s`` with mean ``v^T F v``.  Its variance is
    ``Var(Z)/S`` with ``Var(Z) = R^2 sum_n Var_y[(g_n(y) . v)^2]``, computed exactly below
    (all labels for cross-entropy; Gaussian moments ``E[u^4] = 3 s^4`` for squared error;
    independent Bernoulli outputs for binary cross-entropy).
    Chebyshev: ``P(|err| > 6 sd) <= 1/36``; the seed is fixed, so this is a deterministic
    test whose tolerance is justified by that bound, checked at S = 10, 100, 1000."""
    model, params, X, y, loss = make("mlp-tanh", lossname, n=5)
    F = rp.fisher(model, params, X, y, loss, curvature="fisher")
    f = model(params, X)
    N, C = f.shape
    R = loss.scale(N, C)
    rng = np.random.default_rng(11)
    v = rng.standard_normal(F.shape[0])
    # Jv per sample, by directional differences of the outputs
    theta = rp.flatten_params(params)
    Jv = directional_derivative(lambda t: model(rp.unflatten_params(model, t), X), theta, v)
    if isinstance(loss, rp.CrossEntropyLoss):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        # (g(y) . v) = (p - e_y) . Jv for every label y
        proj = (p * Jv).sum(1, keepdims=True) - Jv  # (N, C): value for label y
        m2 = (p * proj**2).sum(1)
        m4 = (p * proj**4).sum(1)
        var_z = R**2 * np.sum(m4 - m2**2)
    elif isinstance(loss, rp.BCEWithLogitsLoss):
        # g . v = sum_c u_c, u_c = (p_c - y_c) (Jv)_c independent with mean 0; u_c = -q a or p a
        # (a = (Jv)_c) with probabilities p, q = 1 - p: E[u^2] = p q a^2, E[u^4] = p q (q^3 + p^3) a^4, and
        # E[(sum u)^4] = sum E[u^4] + 3 ((sum E[u^2])^2 - sum E[u^2]^2)
        p = 1.0 / (1.0 + np.exp(-f))
        q = 1.0 - p
        e2 = p * q * Jv**2
        e4 = p * q * (q**3 + p**3) * Jv**4
        m2 = e2.sum(1)
        m4 = e4.sum(1) + 3 * (m2**2 - (e2**2).sum(1))
        var_z = R**2 * np.sum(m4 - m2**2)
    else:
        # g . v = -2 (y - f) . Jv with y - f ~ N(0, 1/2 I): a normal with variance 2 |Jv|^2
        s2 = 4 * 0.5 * (Jv**2).sum(1)
        var_z = R**2 * np.sum(3 * s2**2 - s2**2)
    exact = v @ F @ v
    errors = []
    for S in (10, 100, 1000):
        Fmc = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=S, seed=S)
        err = abs(v @ Fmc @ v - exact)
        assert err <= 6 * np.sqrt(var_z / S), f"S={S}: |v^T (F_MC - F) v| = {err:.3e} > 6 sd"
        errors.append(err)
    assert np.sqrt(var_z / 1000) < 0.2 * abs(exact)  # the check above is not vacuous


def test_mc_fisher_is_deterministic_and_seed_dependent():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean")
    a = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=5)
    b = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=5)
    c = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunked_assembly_matches_unchunked(monkeypatch):
    """Work split over samples and output units (tiny chunk budget) gives the same matrix."""
    from refprune import derivatives

    for arch in ("conv-tanh-avgpool", "mlp-sigmoid-softplus", "conv-conv-softplus"):
        model, params, X, y, loss = make(arch, "ce-sum", n=5)
        H = rp.hessian(model, params, X, y, loss)
        monkeypatch.setattr(derivatives, "CHUNK_FLOATS", 7)
        Hc = rp.hessian(model, params, X, y, loss)
        monkeypatch.undo()
        assert_close(Hc, H, 1e-12, tol(H), f"{arch}: chunked vs whole")


def test_hessian_into_memmap(tmp_path):
    model, params, X, y, loss = make("conv-tanh-avgpool", "mse-mean")
    n = model.n_params
    mm = np.lib.format.open_memmap(tmp_path / "H.npy", mode="w+", dtype=np.float64, shape=(n, n))
    out = rp.hessian(model, params, X, y, loss, out=mm)
    assert out is mm
    mm.flush()
    assert_close(np.load(tmp_path / "H.npy"), rp.hessian(model, params, X, y, loss), 0, 0, "memmap Hessian")


def test_every_curvature_is_deterministic():
    model, params, X, y, loss = make("conv-relu-maxpool-stride", "ce-mean")
    for fn in (rp.hessian, rp.ggn, rp.residual):
        assert np.array_equal(fn(model, params, X, y, loss), fn(model, params, X, y, loss))
