"""K-FAC blocks at their edges (``refprune/curvature/kronecker.py``): default arguments,
damping forms passed through the operator, the pi-damping and singularity checks and
their thresholds, each against the Kronecker product formed with numpy.  Written from the
survivors of a mutation run (docs/testing.md)."""

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.kronecker import KroneckerBlock, LayerLayout

from cases import make


def block(S, A):
    layer = rp.Linear(A.shape[0], S.shape[0], bias=False)
    return KroneckerBlock(np.asarray(S, float), np.asarray(A, float), LayerLayout(layer, 0))


def spd(n, seed):
    B = np.random.default_rng(seed).standard_normal((n, n))
    return B @ B.T + n * np.eye(n)


def test_defaults_are_the_undamped_block():
    S, A = spd(3, 0), spd(2, 1)
    b = block(S, A)
    K = np.kron(S, A)
    V = np.random.default_rng(2).standard_normal((6, 2))
    # exact algebra on well-conditioned factors (condition < 10): agreement to rounding
    assert np.allclose(b.inverse_matmat(V), np.linalg.solve(K, V), rtol=1e-12, atol=0)
    assert np.allclose(b.matmat(V), K @ V, rtol=1e-12, atol=0)
    assert b.trace() == pytest.approx(np.trace(S) * np.trace(A), rel=1e-12)
    assert b.logdet() == pytest.approx(np.linalg.slogdet(K)[1], rel=1e-12)
    dS, dA = b.damped_factors()
    assert np.array_equal(dS, S) and np.array_equal(dA, A)
    with pytest.raises(ValueError, match="^damped_factors: damping form 'exact' \\(S kron A \\+ lam I\\) is not a "
                                         "Kronecker product; use 'factored' or 'pi'$"):
        b.damped_factors(0.1, "exact")


def test_the_operator_passes_its_damping_form_on():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=5)
    K = rp.kfac(model, params, X, y, loss)
    v = np.random.default_rng(3).standard_normal(model.n_params)
    lam = 0.3
    for form in ("factored", "pi"):
        ref = np.zeros(model.n_params)
        for b in K.blocks:
            dS, dA = b.damped_factors(lam, form)
            s = slice(b.layout.offset, b.layout.offset + b.layout.size)
            ref[s] = b.layout.to_flat_order(np.kron(dS, dA)) @ v[s]
        assert np.allclose(K.damped(lam, form).matvec(v), ref, rtol=1e-12)
        assert not np.allclose(ref, K.damped(lam, "exact").matvec(v))


def test_pi_refuses_a_zero_input_factor():
    b = block(np.eye(2), np.zeros((2, 2)))
    with pytest.raises(np.linalg.LinAlgError, match="needs positive factor traces"):
        b.pi()


def test_singular_blocks_are_refused_relative_to_their_scale():
    with pytest.raises(np.linalg.LinAlgError, match="log-determinant of a block with eigenvalue 0.000e\\+00"):
        block(np.diag([1.0, 0.0]), np.eye(1)).logdet()
    # a tiny eigenvalue next to a large one is numerically zero ...
    with pytest.raises(np.linalg.LinAlgError, match="singular or indefinite"):
        block(np.diag([1e6, 1e-9]), np.eye(1)).inverse_matmat(np.ones((2, 1)))
    # ... but a small, well-conditioned block is invertible
    small = block(3e-13 * np.eye(2), np.eye(1))
    assert np.allclose(small.inverse_matmat(np.ones((2, 1))), np.ones((2, 1)) / 3e-13)


def test_statistics_accumulate_over_one_sample_chunks(monkeypatch):
    """Under a one-float budget every sample is its own chunk: K-FAC's factors and the
    gradient the optimizers take from the same pass must not change."""
    from refprune import derivatives
    from refprune.checks import validate
    from refprune.curvature.kronecker import FactorStatistics, layer_statistics
    from refprune.curvature.output_factors import OutputFactor

    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Conv2d(2, 3, 2), rp.Tanh(), rp.Flatten(), rp.Linear(12, 3))
    params, X, y = model.init(0), rng.standard_normal((5, 2, 3, 3)), rng.integers(0, 3, 5)
    loss = rp.CrossEntropyLoss()

    def run():
        inp = validate(model, params, X, y, loss)
        stats = FactorStatistics("expand")
        g = layer_statistics(inp, OutputFactor(inp, "fisher"), stats.visit, gradient=True)
        return g, stats.blocks(inp, "fold")

    g0, b0 = run()
    monkeypatch.setattr(derivatives, "CHUNK_FLOATS", 1)
    g1, b1 = run()
    assert np.allclose(g1, g0, rtol=1e-12, atol=1e-15)
    assert np.allclose(g0, rp.grad(model, params, X, y, loss), rtol=1e-12, atol=1e-15)
    for a, c in zip(b0, b1):
        assert np.allclose(c.S, a.S, rtol=1e-12, atol=1e-15) and np.allclose(c.A, a.A, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"^kfac: curvature must be one of"):
        rp.kfac(model, params, X, y, loss, curvature="fisher_true")


def test_the_singularity_threshold_is_a_thousand_epsilons_of_the_largest_eigenvalue():
    eps = np.finfo(np.float64).eps
    V = np.ones((2, 1))
    with pytest.raises(np.linalg.LinAlgError, match="is singular or indefinite"):
        block(np.diag([1.0, 1e3 * eps]), np.eye(1)).inverse_matmat(V)  # at the threshold: refused
    out = block(np.diag([1.0, 1000.5 * eps]), np.eye(1)).inverse_matmat(V)  # just above it
    assert out[1, 0] == pytest.approx(1 / (1000.5 * eps), rel=1e-12)
    # below a largest eigenvalue of 1 the threshold stays at 1e3 eps
    with pytest.raises(np.linalg.LinAlgError):
        block(np.diag([0.5, 1e3 * eps]), np.eye(1)).inverse_matmat(V)
