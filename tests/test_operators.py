"""Every curvature matrix, exact or approximate, as a CurvatureOperator: products equal
the dense matrix, and scipy's eigsh and cg work on the LinearOperator."""

import numpy as np
import pytest
from scipy.sparse.linalg import cg, eigsh

import refprune as rp
from refprune.testing import assert_close

from cases import make


def tol(M):
    return 1e-11 * max(1.0, np.abs(M).max())


def operators(model, params, X, y, loss):
    """(name, operator, dense reference computed independently of the operator's matvec)."""
    args = (model, params, X, y, loss)
    H, G = rp.hessian(*args), rp.ggn(*args)
    E = rp.fisher(*args, curvature="empirical_fisher")
    M = rp.fisher(*args, curvature="mc_fisher", samples=2, seed=4)
    off = model.param_offsets()
    on_blocks = np.zeros(H.shape, dtype=bool)
    for j, layer in enumerate(model):
        if isinstance(layer, rp.nn.AffineLayer):
            on_blocks[off[j] : off[j + 1], off[j] : off[j + 1]] = True

    def blocks_of(M):
        out = np.zeros_like(M)
        out[on_blocks] = M[on_blocks]
        return out

    K = rp.kfac(*args)
    Kd = np.zeros_like(H)
    for b in K.blocks:
        s = slice(b.layout.offset, b.layout.offset + b.layout.size)
        Kd[s, s] = b.layout.to_flat_order(np.kron(b.S, b.A))
    d = rp.hessian_diagonal(*args)
    return [
        ("hessian", rp.ExactCurvature(*args, curvature="hessian"), H),
        ("ggn", rp.ExactCurvature(*args, curvature="ggn"), G),
        ("fisher", rp.ExactCurvature(*args, curvature="fisher"), G),
        ("empirical_fisher", rp.ExactCurvature(*args, curvature="empirical_fisher"), E),
        ("mc_fisher", rp.ExactCurvature(*args, curvature="mc_fisher", samples=2, seed=4), M),
        ("block hessian", rp.block_diagonal(*args, curvature="hessian"), blocks_of(H)),
        ("block ggn", rp.block_diagonal(*args, curvature="ggn"), blocks_of(G)),
        ("block fisher", rp.block_diagonal(*args, curvature="fisher"), blocks_of(G)),
        ("block empirical_fisher", rp.block_diagonal(*args, curvature="empirical_fisher"), blocks_of(E)),
        ("block mc_fisher", rp.block_diagonal(*args, curvature="mc_fisher", samples=2, seed=4), blocks_of(M)),
        ("diagonal", rp.Diagonal(d), np.diag(np.diag(H))),
        ("kfac", K, Kd),
        ("ekfac", rp.EKFAC.from_kfac(K), Kd),
        ("dense", rp.Dense(H), H),
    ]


@pytest.mark.parametrize("arch", ["conv-tanh-avgpool", "mlp-sigmoid-softplus"])
def test_products_dense_and_diagonal(arch):
    model, params, X, y, loss = make(arch, "ce-mean", n=4)
    V = np.random.default_rng(0).standard_normal((model.n_params, 3))
    for name, op, ref in operators(model, params, X, y, loss):
        assert op.shape == ref.shape
        assert_close(op.matmat(V), ref @ V, 1e-10, tol(ref), f"{name}: matmat")
        assert_close(op.matvec(V[:, 0]), ref @ V[:, 0], 1e-10, tol(ref), f"{name}: matvec")
        assert_close(op @ V[:, 1], ref @ V[:, 1], 1e-10, tol(ref), f"{name}: @")
        assert_close(op.to_dense(), ref, 1e-10, tol(ref), f"{name}: to_dense")
        assert_close(op.diagonal(), np.diag(ref), 1e-10, tol(ref), f"{name}: diagonal")
        lo = op.to_linear_operator()
        assert_close(lo @ V[:, 2], ref @ V[:, 2], 1e-10, tol(ref), f"{name}: LinearOperator")
        assert_close(lo.rmatvec(V[:, 2]), ref @ V[:, 2], 1e-10, tol(ref), f"{name}: rmatvec (symmetric)")


def test_scipy_eigsh_and_cg_work_on_every_operator():
    model, params, X, y, loss = make("mlp-tanh", "mse-mean", n=5)
    for name, op, ref in operators(model, params, X, y, loss):
        lo = op.to_linear_operator()
        # the largest eigenvalue only: a Krylov method sees a repeated eigenvalue once,
        # so k > 1 on a matrix with a multiple top eigenvalue finds the next distinct one
        top = eigsh(lo, k=1, which="LA", return_eigenvectors=False, tol=1e-12)
        assert_close(top, np.linalg.eigvalsh(ref)[-1:], 1e-8, 1e-10, f"{name}: eigsh")
        b = np.arange(op.n, dtype=float)
        damped = ref + 0.5 * np.eye(op.n)
        from scipy.sparse.linalg import LinearOperator

        if np.linalg.eigvalsh(damped).min() > 0:
            A = LinearOperator(op.shape, matvec=lambda v, lo=lo: lo @ v + 0.5 * v, dtype=float)
            x, info = cg(A, b, rtol=1e-12, atol=0, maxiter=10 * op.n)
            assert info == 0
            assert_close(x, np.linalg.solve(damped, b), 1e-6, 1e-8, f"{name}: cg")


def test_block_diagonal_computes_only_diagonal_blocks_and_matches_full():
    model, params, X, y, loss = make("conv-conv-softplus", "mse-sum", n=3)
    B = rp.block_diagonal(model, params, X, y, loss)
    H = rp.hessian(model, params, X, y, loss)
    off = model.param_offsets()
    layers = [j for j, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)]
    assert len(B.blocks) == len(layers)
    for blk, j in zip(B.blocks, layers):
        s = slice(off[j], off[j + 1])
        assert_close(blk, H[s, s], 1e-12, tol(H), f"block of layer {j}")


def test_operator_input_checks():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean")
    op = rp.ExactCurvature(model, params, X, y, loss)
    with pytest.raises(ValueError, match=r"v must have shape \(\d+,\) or \(\d+, k\)"):
        op.matvec(np.ones(op.n + 1))
    with pytest.raises(ValueError, match="ExactCurvature: curvature must be one of"):
        rp.ExactCurvature(model, params, X, y, loss, curvature="kfac")
    with pytest.raises(TypeError, match="ExactCurvature: the option kind= was renamed curvature="):
        rp.ExactCurvature(model, params, X, y, loss, kind="hessian")
    with pytest.raises(ValueError, match="curvature='true' is an earlier spelling; write curvature='fisher'"):
        rp.block_diagonal(model, params, X, y, loss, curvature="true")
    with pytest.raises(ValueError, match="need a square matrix"):
        rp.Dense(np.ones((2, 3)))
