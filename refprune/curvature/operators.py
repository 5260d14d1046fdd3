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
* K-FAC and EKFAC (:mod:`refprune.curvature.kronecker`, :mod:`refprune.curvature.ekfac`).
"""

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import derivatives as _d
from ..checks import check_array, check_count, validate
from ..memory import CurvatureTooLargeError, check_fits, nbytes
from ..scalars import is_int
from ..vocabulary import CURVATURES, check_curvature, renamed_options
from . import diagonal as _diag
from . import exact as _c
from .output_factors import check_draws, check_seed, refuse_monte_carlo_options


def check_dense_fits(op, extra=0, method="to_dense", hint="; apply it with matvec/matmat, or take its diagonal()"):
    """Refuse ``op``'s dense ``(n, n)`` matrix (plus ``extra`` bytes of temporaries) if it
    would not fit in memory."""
    n = op.n
    what = f"the {n} x {n} float64 matrix"
    if extra:
        what += f" ({nbytes((n, n)) / 2**30:.2f} GiB) with its temporaries"
    check_fits(nbytes((n, n)) + extra, f"{type(op).__name__}.{method}", what, hint=hint,
               error=CurvatureTooLargeError)


class CurvatureOperator:
    """Base class: subclasses implement ``_matmat(V)`` for ``V (n, k)``."""

    n = 0

    @property
    def shape(self):
        """``(n, n)``."""
        return (self.n, self.n)

    def _check(self, v, name="v"):
        v = check_array(v, f"{type(self).__name__}: {name}")
        if v.ndim not in (1, 2) or v.shape[0] != self.n:
            raise ValueError(f"{type(self).__name__}: {name} must have shape ({self.n},) or ({self.n}, k), got {v.shape}")
        return v

    def matvec(self, v):
        """The product with ``v (n,)`` (or ``(n, k)``); ``v`` is checked (shape, finite)."""
        v = self._check(v)
        if v.ndim == 2:
            return self._matmat(v)
        return self._matmat(v[:, None])[:, 0]

    def matmat(self, V):
        """The product with ``V (n, k)``; ``k = 0`` gives an empty ``(n, 0)`` result."""
        V = self._check(V, "V")
        if V.ndim == 1:
            V = V[:, None]
        if V.shape[1] == 0:
            return np.zeros((self.n, 0))
        return self._matmat(V)

    def __matmul__(self, v):
        return self.matvec(v)

    def to_dense(self):
        """The matrix as an ``(n, n)`` array."""
        check_dense_fits(self, nbytes((self.n, self.n)))  # the identity it is applied to
        return self._matmat(np.eye(self.n))

    def diagonal(self):
        """The diagonal ``(n,)`` (from the dense matrix unless a subclass knows better)."""
        check_dense_fits(self, nbytes((self.n, self.n)), "diagonal",
                         hint=f" (this class takes the diagonal from its dense matrix); give {type(self).__name__} "
                              "a diagonal() of its own, or apply matvec to unit vectors")
        return np.diag(self.to_dense()).copy()

    def to_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (symmetric: ``rmatvec = matvec``)."""
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.matvec, matmat=self.matmat,
                              rmatmat=self.matmat, dtype=np.float64)


class Dense(CurvatureOperator):
    """A dense symmetric matrix as a curvature operator."""

    def __init__(self, M):
        M = check_array(M, "Dense: M")
        if M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"Dense: need a square matrix, got shape {M.shape}")
        # a curvature operator is symmetric (its rmatvec is its matvec); rows a block at a
        # time, so that no n x n temporary is made
        n, scale = len(M), float(np.abs(M).max(initial=0.0))
        asym = max((float(np.abs(M[r : r + 256] - M[:, r : r + 256].T).max()) for r in range(0, n, 256)),
                   default=0.0)
        if asym > 1e-8 * scale:
            raise ValueError(f"Dense: M must be symmetric, got max |M - M^T| = {asym:.3e} with max |M| = "
                             f"{scale:.3e}; pass (M + M.T) / 2 if the asymmetry is rounding")
        self.M, self.n = M, n

    def _matmat(self, V):
        return self.M @ V

    def to_dense(self):
        check_dense_fits(self)
        return self.M.copy()


class Diagonal(CurvatureOperator):
    """``diag(d)``."""

    def __init__(self, d):
        self.d = check_array(d, "Diagonal: d")
        if self.d.ndim != 1:
            raise ValueError(f"Diagonal: need a vector, got shape {self.d.shape}")
        self.n = self.d.size

    def _matmat(self, V):
        return self.d[:, None] * V

    def to_dense(self):
        check_dense_fits(self)
        return np.diag(self.d)

    def diagonal(self):
        return self.d.copy()


class BlockDiagonal(CurvatureOperator):
    """Block-diagonal matrix over consecutive ranges of ``theta``: ``blocks[i]`` covers
    ``offsets[i]:offsets[i+1]``; parameters in no block (``offsets`` need not cover
    ``theta``) get zero rows and columns."""

    def __init__(self, blocks, offsets, n):
        self.blocks = [check_array(b, f"BlockDiagonal: block {i}") for i, b in enumerate(blocks)]
        self.n = check_count(n, "BlockDiagonal: n", minimum=0)
        offsets = list(offsets)
        if len(offsets) != len(self.blocks) + 1:
            raise ValueError(f"BlockDiagonal: offsets must have len(blocks) + 1 = {len(self.blocks) + 1} entries "
                             f"(the start of each block and the end of the last), got {len(offsets)}")
        if not all(is_int(o) for o in offsets) or any(not 0 <= a <= b <= self.n
                                                       for a, b in zip(offsets[:-1], offsets[1:])):
            raise ValueError(f"BlockDiagonal: offsets must be non-decreasing ints in [0, {self.n}], got {offsets}")
        self.offsets = [int(o) for o in offsets]
        for b, (a, e) in zip(self.blocks, self.ranges()):
            if b.shape != (e - a, e - a):
                raise ValueError(f"BlockDiagonal: block for [{a}, {e}) must be {(e - a, e - a)}, got {b.shape}")

    def ranges(self):
        """``[(start, stop)]`` of ``theta`` covered by each block."""
        return list(zip(self.offsets[:-1], self.offsets[1:]))

    def _matmat(self, V):
        out = np.zeros_like(V)
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e] = b @ V[a:e]
        return out

    def to_dense(self):
        check_dense_fits(self)
        out = np.zeros((self.n, self.n))
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e, a:e] = b
        return out

    def diagonal(self):
        out = np.zeros(self.n)
        for b, (a, e) in zip(self.blocks, self.ranges()):
            out[a:e] = np.diag(b)
        return out


class ExactCurvature(CurvatureOperator):
    """An exact curvature matrix as an operator, applied without forming it.

    ``curvature``: any name of :data:`refprune.vocabulary.CURVATURES`, each a product
    ``R sum_n J_n^T Phi_n J_n`` computed by a linearised R-operator pass (docs §5), the
    Hessian's with the second-order terms kept.  ``samples``, ``seed`` and ``targets``
    choose the Monte Carlo targets of ``"mc_fisher"``.
    """

    @renamed_options(kind="curvature")
    def __init__(self, model, params, X, y, loss, curvature="hessian", samples=1, seed=0, targets=None):
        check_curvature(curvature, CURVATURES, "ExactCurvature")
        check_seed(seed, "ExactCurvature")
        refuse_monte_carlo_options(curvature, samples, seed, targets, "ExactCurvature")
        self.args = (model, params, X, y, loss)
        self.curvature = curvature
        self.mc = dict(samples=samples, seed=seed, targets=targets)
        self.inp = validate(model, params, X, y, loss)
        self.n = model.n_params
        if curvature == "mc_fisher" and targets is None:
            check_draws(self.inp, samples, seed, "ExactCurvature")
        f, caches, douts = _d.gradient_pass(self.inp)
        self._state = (f, caches, douts)
        self._phi = _d.loss_curvature_matvec(self.inp, curvature, samples, seed, f, targets, "ExactCurvature")

    def _matmat(self, V):
        f, caches, douts = self._state
        out = _d.curvature_products(self.inp, caches, douts, f, V.T, self._phi,
                                    second_order=self.curvature == "hessian")
        return self.inp.scale * out.T

    def to_dense(self):
        c = self.curvature
        if c in ("hessian", "ggn"):
            return getattr(_c, c)(*self.args)
        return _c.fisher(*self.args, curvature=c, **self.mc)

    def diagonal(self):
        return _diag.curvature_diagonal(*self.args, curvature=self.curvature, **self.mc)


@renamed_options(kind="curvature")
def block_diagonal(model, params, X, y, loss, curvature="hessian", samples=1, seed=0, targets=None):
    """The per-layer block-diagonal restriction of an exact curvature matrix (any name of
    :data:`refprune.vocabulary.CURVATURES`), as a :class:`BlockDiagonal`; only the
    diagonal blocks are computed."""
    check_curvature(curvature, CURVATURES, "block_diagonal")
    check_seed(seed, "block_diagonal")
    inp = validate(model, params, X, y, loss)
    blocks = _c.layer_blocks(inp, curvature, samples, seed, targets)
    offsets = model.param_offsets()
    # layers without parameters have empty ranges, so the layers' ranges are contiguous
    starts = [int(offsets[j]) for j, _ in blocks] + [model.n_params]
    return BlockDiagonal([b for _, b in blocks], starts, model.n_params)
