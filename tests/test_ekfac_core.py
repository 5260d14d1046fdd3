"""EKFAC blocks at their edges (``refprune/curvature/ekfac.py``): defaults, the one
damping form it has, trace and log-determinant, and the singularity checks relative to
the block's scale, against the matrix formed with numpy.  Written from the survivors of
a mutation run (docs/testing.md)."""

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.ekfac import EKFACBlock
from refprune.curvature.kronecker import KroneckerBlock, LayerLayout


def eblock(scales, seed=0):
    """An EKFAC block with random orthogonal eigenbases and the given eigenvalues."""
    c, p = np.shape(scales)
    rng = np.random.default_rng(seed)
    S = (lambda B: B @ B.T + np.eye(c))(rng.standard_normal((c, c)))
    A = (lambda B: B @ B.T + np.eye(p))(rng.standard_normal((p, p)))
    layout = LayerLayout(rp.Linear(p, c, bias=False), 0)
    return EKFACBlock(KroneckerBlock(S, A, layout), np.asarray(scales, dtype=float))


def dense_of(b, lam=0.0):
    Q = np.kron(b.US, b.UA)
    return Q @ np.diag(b.scales.ravel() + lam) @ Q.T


def test_defaults_trace_logdet_and_inverse():
    b = eblock(np.array([[1.0, 2.0], [3.0, 4.0]]))
    M = dense_of(b)
    V = np.random.default_rng(1).standard_normal((4, 2))
    assert np.allclose(b.matmat(V), M @ V, rtol=1e-12, atol=0)
    assert np.allclose(b.inverse_matmat(V), np.linalg.solve(M, V), rtol=1e-12, atol=0)
    assert b.trace() == pytest.approx(10.0, rel=1e-12) and b.trace(0.5) == pytest.approx(12.0, rel=1e-12)
    assert b.logdet() == pytest.approx(np.log(24.0), rel=1e-12)
    assert b.logdet(1.0) == pytest.approx(np.log(120.0), rel=1e-12)
    # entries that vanish in exact arithmetic (this block has some) are rounding residues of
    # sums of terms of size ~max|M|: the bound is relative to that scale, not per entry
    ref = dense_of(b, 0.5)
    assert np.allclose(b.dense(0.5), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.array_equal(b.eigenvalues(), b.scales) and np.array_equal(b.eigenvalues(0.5), b.scales + 0.5)
    with pytest.raises(ValueError, match="^damping must be a finite number"):
        b.eigenvalues(np.nan)


def test_eigenbasis_moments_accumulate_over_chunks(monkeypatch):
    """Under a budget of one float the statistics pass visits one sample at a time."""
    from refprune import derivatives

    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Conv2d(2, 3, 2), rp.Tanh(), rp.Flatten(), rp.Linear(12, 3))
    params, X, y = model.init(0), rng.standard_normal((5, 2, 3, 3)), rng.integers(0, 3, 5)
    whole = rp.ekfac(model, params, X, y, rp.CrossEntropyLoss(), curvature="fisher")
    monkeypatch.setattr(derivatives, "CHUNK_FLOATS", 1)
    chunked = rp.ekfac(model, params, X, y, rp.CrossEntropyLoss(), curvature="fisher")
    for a, c in zip(whole.blocks, chunked.blocks):
        assert np.allclose(c.scales, a.scales, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("call", [lambda b: b.matmat(np.ones((4, 1)), 0.1, "factored"),
                                  lambda b: b.inverse_matmat(np.ones((4, 1)), 0.1, "factored"),
                                  lambda b: b.logdet(0.1, "factored"), lambda b: b.trace(0.1, "pi"),
                                  lambda b: b.dense(0.1, "factored")])
def test_only_the_exact_damping_form_exists(call):
    with pytest.raises(ValueError, match="EKFAC supports only damping form 'exact'"):
        call(eblock(np.ones((2, 2))))


def test_singular_blocks_are_refused_relative_to_their_scale():
    with pytest.raises(np.linalg.LinAlgError, match=r"^log-determinant of a block with eigenvalue 0.000e\+00 <= 0$"):
        eblock(np.array([[1.0], [0.0]])).logdet()
    with pytest.raises(np.linalg.LinAlgError, match=r"is singular with damping 0.0: smallest eigenvalue 1.000e-09; "
                                                    r"use a larger damping$"):
        eblock(np.array([[1e6], [1e-9]])).inverse_matmat(np.ones((2, 1)))
    small = eblock(np.array([[3e-13], [3e-13]]))
    assert np.allclose(small.inverse_matmat(np.ones((2, 1))), np.ones((2, 1)) / 3e-13)


def test_the_singularity_threshold_is_a_thousand_epsilons_of_the_largest_eigenvalue():
    eps = np.finfo(np.float64).eps
    V = np.ones((2, 1))
    with pytest.raises(np.linalg.LinAlgError, match="is singular with damping"):
        eblock([[1.0], [1e3 * eps]]).inverse_matmat(V)  # at the threshold: refused
    b = eblock([[1.0], [1000.5 * eps]])  # just above it
    Q = np.kron(b.US, b.UA)
    assert np.allclose(b.inverse_matmat(V), Q @ np.diag([1.0, 1 / (1000.5 * eps)]) @ Q.T @ V, rtol=1e-10)
    with pytest.raises(np.linalg.LinAlgError):
        eblock([[0.5], [1e3 * eps]]).inverse_matmat(V)
