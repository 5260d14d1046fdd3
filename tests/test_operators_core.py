"""The operator interface itself: input checks name the operator, ``matvec``/``matmat``
dispatch on the shape, and SciPy's ``LinearOperator`` calls the operator's own block
products (one product for ``k`` columns, none at construction)."""

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.operators import BlockDiagonal, CurvatureOperator, Dense, Diagonal


class Counting(Diagonal):
    """``diag(d)`` that counts its block products."""

    calls = 0

    def _matmat(self, V):
        self.calls += 1
        return super()._matmat(V)


def test_scipy_uses_the_operator_s_block_products():
    op = Counting(np.arange(1.0, 5.0))
    lo = op.to_linear_operator()
    assert op.calls == 0 and lo.dtype == np.float64
    V = np.ones((4, 3))
    assert np.array_equal(lo.matmat(V), np.arange(1.0, 5.0)[:, None] * V)
    assert op.calls == 1
    assert np.array_equal(lo.rmatmat(V), np.arange(1.0, 5.0)[:, None] * V)
    assert op.calls == 2
    assert np.array_equal(lo.rmatvec(np.ones(4)), np.arange(1.0, 5.0))


def test_matvec_and_matmat_shapes():
    op = Counting(np.array([2.0, 3.0]))
    assert op.matvec(np.ones(2)).shape == (2,)
    assert np.array_equal(op.matvec(np.ones((2, 3))), np.array([[2.0] * 3, [3.0] * 3]))
    assert np.array_equal(op.matmat(np.array([1.0, 1.0])), np.array([[2.0], [3.0]]))
    assert op.matmat(np.zeros((2, 0))).shape == (2, 0)


def test_checks_name_the_operator():
    for op, name in ((Diagonal(np.ones(3)), "Diagonal"), (Dense(np.eye(3)), "Dense"),
                     (BlockDiagonal([np.eye(3)], [0, 3], 3), "BlockDiagonal")):
        with pytest.raises(ValueError, match=rf"^{name}: v must have shape \(3,\) or \(3, k\), got \(4,\)$"):
            op.matvec(np.ones(4))
        with pytest.raises(ValueError, match=rf"^{name}: V contains 1 NaN or inf value\(s\)$"):
            op.matmat(np.array([[1.0], [np.nan], [0.0]]))
    with pytest.raises(ValueError, match=r"^Dense: M contains 1 NaN"):
        Dense(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"^Diagonal: d contains 1 NaN"):
        Diagonal(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match=r"^BlockDiagonal: block 1 contains 1 NaN"):
        BlockDiagonal([np.eye(2), np.array([[np.nan]])], [0, 2, 3], 3)
    with pytest.raises(ValueError, match=r"^BlockDiagonal: block for \[2, 5\) must be \(3, 3\), got \(2, 2\)$"):
        BlockDiagonal([np.eye(2), np.eye(2)], [0, 2, 5], 5)
    assert Dense(np.eye(3, dtype=int)).M.dtype == np.float64
    assert BlockDiagonal([np.eye(2, dtype=int)], [0, 2], 2).blocks[0].dtype == np.float64
    assert Dense(np.eye(3)).shape == (3, 3)


def test_the_exact_operator_names_itself():
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(2, 2))
    op = rp.ExactCurvature(model, model.init(0), rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), rp.MSELoss())
    with pytest.raises(ValueError, match=r"^ExactCurvature: v must have shape \(6,\) or \(6, k\), got \(5,\)$"):
        op.matvec(np.ones(5))


def test_a_subclass_with_only_a_product_gets_its_dense_matrix_and_diagonal():
    M = np.array([[2.0, -1.0, 0.0], [-1.0, 3.0, 0.5], [0.0, 0.5, 4.0]])

    class Product(CurvatureOperator):
        n = 3

        def _matmat(self, V):
            return M @ V

    assert np.array_equal(Product().to_dense(), M)
    assert np.array_equal(Product().diagonal(), np.diag(M))


def test_dense_accepts_rounding_asymmetry_and_refuses_more():
    """A curvature operator is symmetric (``rmatvec`` is ``matvec``): ``Dense`` takes an
    asymmetry up to ``1e-8 max |M|`` (rounding in a product like ``A B A^T``) and refuses
    a larger one, found block by block over a matrix wider than one block of rows."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((300, 300))
    M = B + B.T
    scale = np.abs(M).max()
    E = np.zeros_like(M)
    E[2, 290] = 1e-8 * scale
    assert Dense(M + E).n == 300  # at the threshold
    E[2, 290] = 1.01e-8 * scale
    with pytest.raises(ValueError, match=r"^Dense: M must be symmetric, got max \|M - M\^T\| = "):
        Dense(M + E)
    E = np.zeros_like(M)
    E[299, 1] = 1e-3  # in the last block of rows
    with pytest.raises(ValueError, match="M must be symmetric"):
        Dense(M + E)
    assert Dense(np.zeros((3, 3))).n == 3
