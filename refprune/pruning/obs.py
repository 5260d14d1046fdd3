"""Optimal Brain Surgeon on a given positive definite matrix (Hassibi & Stork 1993).

For the quadratic model ``dL = 1/2 dtheta^T H dtheta`` at a minimum, removing weight
``q`` (``theta_q + dtheta_q = 0``) at least cost gives (Hassibi & Stork 1993, eqs. 4-5)

    s_q = w_q^2 / (2 [H^-1]_qq),    dtheta = -(w_q / [H^-1]_qq) H^-1 e_q,

and for a set ``Q`` of weights removed jointly (group OBS; Kurtic et al. 2022, eq. 3)

    s_Q = w_Q^T ([H^-1]_QQ)^-1 w_Q / 2,    dtheta = -H^-1 E_Q ([H^-1]_QQ)^-1 w_Q.

After removing ``Q`` the remaining problem is the same with ``H`` restricted to the other
coordinates; its inverse is the Schur-complement update (elimination, no re-inversion)

    (H_RR)^-1 = [H^-1]_RR - [H^-1]_RQ ([H^-1]_QQ)^-1 [H^-1]_QR,

an ``O(n^2 |Q|)`` step (Frantar & Alistarh 2022, "Optimal Brain Compression", eq. 5).
Derived step by step, with a worked example, in ``docs/pruning_explained.md`` §3-§4.

**Full Taylor model.** Away from a minimum the model is ``dL = g^T d + 1/2 d^T H d``.
Minimising it subject to ``d_q = -w_q`` (Lagrangian ``g + H d + mu e_q = 0``; the
first-order extension of OBS, Singh & Alistarh 2020, "WoodFisher", "WoodTaylor"; derived
in ``docs/derivations.md`` §10) gives, with ``u = H^-1 g``,

    mu = (w_q - u_q) / [H^-1]_qq,   d = -u - mu H^-1 e_q,
    s_q = (w_q - u_q)^2 / (2 [H^-1]_qq) - g^T u / 2.

The step contains the Newton step ``-u`` on the free coordinates; after it the model's
gradient there is zero, so later removals are classic OBS.  With ``g = 0`` this is OBS.
"""

import numpy as np
import scipy.linalg

from ..checks import check_array
from ..memory import check_fits, nbytes


class SingularCurvatureError(np.linalg.LinAlgError):
    """The matrix to invert is singular or not positive definite."""


def inverse_spd(H, damping=0.0, what="matrix"):
    """``(H + damping I)^-1`` by Cholesky; raises :class:`SingularCurvatureError` naming
    the problem when the damped matrix is not (numerically) positive definite."""
    H = np.asarray(H, dtype=np.float64)
    n = H.shape[0]
    if H.shape != (n, n):
        raise ValueError(f"{what} must be square, got shape {H.shape}")
    if not np.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    if n == 0:
        return np.zeros((0, 0))
    # at most three n x n arrays at a time besides H: the damped copy and the Cholesky
    # factor, then the inverse (written over the factor) and its symmetric completion
    check_fits(3 * nbytes((n, n)), "inverse_spd", f"the damped copy, Cholesky factor and inverse of the {n} x {n} "
               f"float64 {what}")
    M = H.copy()
    M[np.diag_indices(n)] += damping  # H + damping I without an n x n identity
    if not np.all(np.isfinite(M)):
        raise ValueError(f"the {what} contains NaN or inf")
    # Cholesky (potrf) and the inverse from it (potri): about n^3 flops in all
    L, info = scipy.linalg.lapack.dpotrf(M, lower=1)
    if info != 0:
        ev = np.linalg.eigvalsh(M)[0]
        raise SingularCurvatureError(
            f"the {what} (damping {damping}) is not positive definite: smallest eigenvalue {ev:.3e}; "
            "use damping > 0 (or a positive semi-definite curvature such as the GGN)"
        )
    del M
    d = np.diag(L)
    if d.min() <= np.sqrt(n * np.finfo(float).eps) * d.max():
        raise SingularCurvatureError(
            f"the {what} (damping {damping}) is numerically singular: condition ~ {(d.max() / d.min()) ** 2:.1e}; "
            "use damping > 0"
        )
    # potri fails only on a zero diagonal of L, which the threshold above has excluded;
    # it writes the inverse's lower triangle over L (Fortran-ordered, as potrf returns it)
    inv = scipy.linalg.lapack.dpotri(L, lower=1, overwrite_c=1)[0]
    del L
    out = np.tril(inv)
    out += np.tril(inv, -1).T
    return out


def _mask(prunable):
    """``prunable`` as a boolean mask: bools, or the integers 0 and 1; anything else
    (0.5, strings) would silently become True under ``astype(bool)`` and is refused."""
    p = np.asarray(prunable)
    if p.dtype != bool and not np.issubdtype(p.dtype, np.integer):
        raise TypeError(f"OBS: prunable must be a mask of True/False (or 0/1 integers), got dtype {p.dtype}")
    if p.dtype != bool and not np.isin(p, (0, 1)).all():
        raise ValueError(f"OBS: prunable given as integers must hold only 0 and 1, got values "
                         f"{np.unique(p)[:5].tolist()}")
    return p.astype(bool)


class OBS:
    """Sequential OBS on ``w`` (``(n,)``) with inverse curvature ``Hinv`` (``(n, n)``).

    ``prunable`` marks the coordinates that may be removed (others are only updated).
    Removed coordinates are eliminated from ``Hinv`` and stay exactly zero.  With a
    gradient ``grad`` the full Taylor model is minimised instead (module docstring); its
    saliencies need only ``grad``, a removal also the matrix ``H`` itself, to follow the
    gradient as the weights move.  ``order`` and
    ``increments`` record every removal and its predicted change, in order.  The arrays
    passed in are copied.
    """

    def __init__(self, Hinv, w, prunable=None, grad=None, H=None):
        self.w = np.array(w, dtype=np.float64)
        n = self.w.size
        # the private copy of Hinv, and a temporary as large for the updates of groups
        check_fits(2 * nbytes((n, n)), "OBS", f"the copy of the {n} x {n} float64 Hinv")
        self.Hinv = np.array(Hinv, dtype=np.float64)
        if self.Hinv.shape != (n, n):
            raise ValueError(f"OBS: Hinv must have shape ({n}, {n}), got {self.Hinv.shape}")
        self.active = np.ones(n, dtype=bool)
        self.prunable = np.ones(n, dtype=bool) if prunable is None else _mask(prunable)
        if self.prunable.shape != (n,):
            raise ValueError(f"OBS: prunable must have shape ({n},) like w, got {self.prunable.shape}")
        self.g = self.H = None
        if grad is not None:
            self.g = check_array(grad, "OBS: grad")
            if self.g.shape != (n,):
                raise ValueError(f"OBS: grad must be ({n},), got {self.g.shape}")
        if H is not None:
            self.H = check_array(H, "OBS: H")
            if self.H.shape != (n, n):
                raise ValueError(f"OBS: H must be ({n}, {n}), got {self.H.shape}")
        self.order, self.increments = [], []

    def _u(self):
        """``H_FF^-1 g_F`` on the free coordinates (zero elsewhere); ``None`` without a gradient.
        Removed coordinates have zero rows and columns in ``Hinv``, so their gradient drops out."""
        if self.g is None:
            return None
        return self.Hinv @ self.g

    def saliencies(self):
        """Predicted change of removing each prunable active ``q`` alone (``inf``
        elsewhere): ``w_q^2 / (2 [H^-1]_qq)``, or the full-Taylor value."""
        s = np.full(self.w.size, np.inf)
        c = self.active & self.prunable
        u = self._u()
        if u is None:
            s[c] = self.w[c] ** 2 / (2.0 * np.diag(self.Hinv)[c])
        else:
            s[c] = (self.w[c] - u[c]) ** 2 / (2.0 * np.diag(self.Hinv)[c]) - float(self.g[self.active] @
                                                                                u[self.active]) / 2.0
        return s

    def group_saliency(self, Q):
        """``s_Q = w_Q^T ([H^-1]_QQ)^-1 w_Q / 2`` for a set ``Q`` at the current state."""
        Q = self._check_set(Q, "group_saliency")
        w = self.w[Q]
        return float(w @ np.linalg.solve(self.Hinv[np.ix_(Q, Q)], w) / 2.0)

    def _check_set(self, Q, where):
        """``Q`` as a 1-d int array of distinct coordinates in ``[0, n)`` (a repeated one
        would make ``[H^-1]_QQ`` singular, a negative one index from the end)."""
        Q = np.atleast_1d(np.asarray(Q))
        n = self.w.size
        if Q.ndim != 1 or Q.size == 0 or Q.dtype.kind not in "iu":
            raise ValueError(f"OBS.{where}: Q must be a non-empty list of ints, got {Q.tolist()!r}")
        if Q.min() < 0 or Q.max() >= n or len(np.unique(Q)) != len(Q):
            raise ValueError(f"OBS.{where}: Q must hold distinct coordinates in [0, {n}), got {Q.tolist()!r}")
        return Q

    def remove(self, Q):
        """Remove the set ``Q`` jointly: apply the group update, eliminate ``Q`` from
        ``Hinv``; returns the predicted increase ``s_Q``."""
        Q = self._check_set(Q, "remove")
        if not np.all(self.active[Q]):
            raise ValueError("OBS: coordinate already removed")
        if self.g is not None and self.H is None:
            raise ValueError("OBS: a removal under the full Taylor model needs the matrix H as well as the gradient")
        HQQ = self.Hinv[np.ix_(Q, Q)]
        wQ = self.w[Q]
        cols = self.Hinv[:, Q].copy()
        u = self._u()
        if u is None:
            coef = np.linalg.solve(HQQ, wQ)
            s = float(wQ @ coef / 2.0)
            step = -(cols @ coef)
        else:
            # full Taylor model: d = -u - H^-1 E_Q mu, mu = [H^-1]_QQ^-1 (w_Q - u_Q)
            coef = np.linalg.solve(HQQ, wQ - u[Q])
            gu = float(self.g[self.active] @ u[self.active])
            s = float((wQ - u[Q]) @ coef / 2.0 - gu / 2.0)
            step = -u - cols @ coef
            self.g = self.g + self.H @ step
        self.w += step
        self.w[Q] = 0.0  # exact zeros (the update makes them zero up to rounding)
        # elimination: Hinv <- Hinv - Hinv[:, Q] HQQ^-1 Hinv[Q, :]
        if len(Q) == 1 and self.Hinv.flags.c_contiguous:
            # in-place rank-one BLAS update (one pass over memory); Hinv^T is Fortran-ordered
            # and symmetric, so updating it updates Hinv
            c = cols[:, 0]
            scipy.linalg.blas.dger(-1.0 / HQQ[0, 0], c, c, a=self.Hinv.T, overwrite_a=True)
        else:
            self.Hinv -= cols @ np.linalg.solve(HQQ, cols.T)
        self.Hinv[Q, :] = 0.0
        self.Hinv[:, Q] = 0.0
        self.active[Q] = False
        self.order.extend(int(q) for q in Q)
        self.increments.extend([s / len(Q)] * len(Q))
        return s

    def prune(self, count, group_size=1, layer_of=None):
        """Remove ``count`` weights, ``group_size`` at a time, each time the ones with the
        smallest single-weight saliency; returns the summed predicted increase.

        ``layer_of`` (int per coordinate, ``-1`` for none): never take the last prunable
        active weight of a layer; the next candidate is taken instead.
        """
        total, left = 0.0, int(count)
        while left > 0:
            k = min(group_size, left)
            s = self.saliencies()
            if layer_of is not None:
                s = np.where(_last_of_layer(self.active & self.prunable, layer_of), np.inf, s)
            if not np.isfinite(s).any() or np.isfinite(s).sum() < k:
                raise ValueError("OBS: fewer prunable weights left than requested"
                                 + (" (one weight is kept in every layer)" if layer_of is not None else ""))
            Q = np.argsort(s, kind="stable")[:k]
            total += self.remove(Q)
            left -= k
        return total


def _last_of_layer(free, layer_of):
    """``True`` where a coordinate is the only free one of its layer."""
    live = free & (layer_of >= 0)
    counts = np.bincount(layer_of[live])
    out = np.zeros(free.shape, dtype=bool)
    out[live] = counts[layer_of[live]] == 1
    return out
