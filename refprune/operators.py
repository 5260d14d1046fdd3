"""One interface for every curvature matrix over ``theta``, exact or approximate.

A :class:`CurvatureOperator` is a symmetric ``n x n`` matrix that can be applied to
vectors (``matvec``, ``matmat``), turned into a dense array (``to_dense``) and into a
``scipy.sparse.linalg.LinearOperator`` (``to_linear_operator``), so that ``eigsh``, ``cg``
and friends work on all of them.  Implementations:

* :class:`ExactCurvature`: Hessian, GGN or a Fisher, applied by R-operator passes
  (never formed unless ``to_dense`` is called);
* :class:`BlockDiagonal`: per-layer dense blocks (the block-diagonal restriction of an
  exact matrix, or any list of blocks);
* :class:`Diagonal`;
* K-FAC and EKFAC (:mod:`refprune.kronecker`, :mod:`refprune.ekfac`).
"""

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import curvature as _c
from . import derivatives as _d
from . import diagonal as _diag
from .checks import validate


class CurvatureOperator:
    """Base class: subclasses implement ``_matmat(V)`` for ``V (n, k)``."""

    n = 0

    @property
    def shape(self):
        return (self.n, self.n)

    def _check(self, v, name="v"):
        v = np.asarray(v, dtype=np.float64)
        if v.shape[0] != self.n or v.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: {name} must have shape ({self.n},) or ({self.n}, k), got {v.shape}")
        return v

    def matvec(self, v):
        v = self._check(v)
        if v.ndim == 2:
            return self._matmat(v)
        return self._matmat(v[:, None])[:, 0]

    def matmat(self, V):
        return self._matmat(self._check(V, "V").reshape(self.n, -1))

    def __matmul__(self, v):
        return self.matvec(v)

    def to_dense(self):
        """The matrix as an ``(n, n)`` array."""
        return self._matmat(np.eye(self.n))

    def diagonal(self):
        return np.diag(self.to_dense()).copy()

    def to_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (symmetric: ``rmatvec = matvec``)."""
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.matvec, matmat=self.matmat,
                              rmatmat=self.matmat, dtype=np.float64)


class Dense(CurvatureOperator):
    """A dense symmetric matrix as a curvature operator."""

    def __init__(self, M):
        M = np.asarray(M, dtype=np.float64)
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"Dense: need a square matrix, got shape {M.shape}")
        self.M, self.n = M, M.shape[0]

    def _matmat(self, V):
        return self.M @ V

    def to_dense(self):
        return self.M.copy()


class Diagonal(CurvatureOperator):
    """``diag(d)``."""

    def __init__(self, d):
        self.d = np.asarray(d, dtype=np.float64)
        if self.d.ndim != 1:
            raise ValueError(f"Diagonal: need a vector, got shape {self.d.shape}")
        self.n = self.d.size

    def _matmat(self, V):
        return self.d[:, None] * V

    def to_dense(self):
        return np.diag(self.d)

    def diagonal(self):
        return self.d.copy()


class BlockDiagonal(CurvatureOperator):
    """Block-diagonal matrix over consecutive ranges of ``theta``: ``blocks[i]`` covers
    ``offsets[i]:offsets[i+1]``; parameters in no block (``offsets`` need not cover
    ``theta``) get zero rows and columns."""

    def __init__(self, blocks, offsets, n):
        self.blocks = [np.asarray(b, dtype=np.float64) for b in blocks]
        self.offsets = list(offsets)
        self.n = int(n)
        for b, (a, e) in zip(self.blocks, self.ranges()):
            if b.shape != (e - a, e - a):
                raise ValueError(f"BlockDiagonal: block for [{a}, {e}) must be {(e - a, e - a)}, got {b.shape}")

    def ranges(self):
        return list(zip(self.offsets[:-1], self.offsets[1:]))

    def _matmat(self, V):
        out = np.zeros_like(V)
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e] = b @ V[a:e]
        return out

    def to_dense(self):
        out = np.zeros((self.n, self.n))
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e, a:e] = b
        return out

    def diagonal(self):
        out = np.zeros(self.n)
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e] = np.diag(b)
        return out


EXACT_KINDS = ("hessian", "ggn", "fisher", "empirical_fisher", "mc_fisher")


class ExactCurvature(CurvatureOperator):
    """The exact Hessian, GGN or a Fisher as an operator, applied without forming it.

    ``kind``: ``"hessian"`` (R-operator), ``"ggn"`` (= true Fisher, ``"fisher"``),
    ``"empirical_fisher"``, or ``"mc_fisher"`` (``samples``, ``seed``), each a product
    ``R sum_n J_n^T Phi_n J_n`` computed by a linearised R-operator pass (docs §5).
    """

    def __init__(self, model, params, X, y, loss, kind="hessian", samples=1, seed=0):
        if kind not in EXACT_KINDS:
            raise ValueError(f"ExactCurvature: kind must be one of {EXACT_KINDS}, got {kind!r}")
        self.args = (model, params, X, y, loss)
        self.kind, self.samples, self.seed = kind, samples, seed
        self.inp = validate(model, params, X, y, loss)
        self.n = model.n_params
        f, caches, douts = _d.gradient_pass(self.inp)
        self._state = (f, caches, douts)
        self._phi = _d.loss_curvature_matvec(self.inp, {"hessian": "hessian", "ggn": "hessian", "fisher": "true",
                                                          "empirical_fisher": "empirical",
                                                          "mc_fisher": "mc"}[kind], samples, seed, f)

    def _matmat(self, V):
        f, caches, douts = self._state
        out = _d.curvature_products(self.inp, caches, douts, f, V.T, self._phi, second_order=self.kind == "hessian")
        return self.inp.scale * out.T

    def _materialise(self, dense):
        """The dense matrix (``dense=True``) or its diagonal, each by its own routine."""
        if self.kind == "hessian":
            return (_c.hessian if dense else _diag.hessian_diagonal)(*self.args)
        if self.kind in ("ggn", "fisher"):
            return (_c.ggn if dense else _diag.ggn_diagonal)(*self.args)
        kind = "empirical" if self.kind == "empirical_fisher" else "mc"
        fn = _c.fisher if dense else _diag.fisher_diagonal
        return fn(*self.args, kind=kind, samples=self.samples, seed=self.seed)

    def to_dense(self):
        return self._materialise(dense=True)

    def diagonal(self):
        return self._materialise(dense=False)


def block_diagonal(model, params, X, y, loss, kind="hessian"):
    """The per-layer block-diagonal restriction of the exact Hessian or GGN, as a
    :class:`BlockDiagonal` (only the diagonal blocks are computed)."""
    if kind not in ("hessian", "ggn"):
        raise ValueError(f"block_diagonal: kind must be 'hessian' or 'ggn', got {kind!r}")
    inp = validate(model, params, X, y, loss)
    blocks = _c.layer_blocks(inp, second_order=kind == "hessian")
    offsets = model.param_offsets()
    # layers without parameters have empty ranges, so the layers' ranges are contiguous
    starts = [int(offsets[j]) for j, _ in blocks] + [model.n_params]
    return BlockDiagonal([b for _, b in blocks], starts, model.n_params)
