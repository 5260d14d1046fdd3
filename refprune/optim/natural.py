"""Exact natural gradient (Amari 1998) on small networks (``docs/optimizers.md`` §2).

Each step computes the batch's exact curvature matrix ``F`` (any name of
:data:`refprune.vocabulary.CURVATURES`; with ``"hessian"`` the step is a damped Newton
step), optionally averaged over steps, and solves

    (F_ff + lam I) d_f = g_f

on the free coordinates ``f`` by Cholesky.  ``structure="layer"`` keeps only the
per-layer diagonal blocks of ``F`` (the matrix K-FAC approximates block by block).
"""

import numpy as np

from .. import options
from ..curvature.exact import exact_matrix
from ..curvature.operators import block_diagonal
from ..options import STRUCTURES  # noqa: F401 (the choices of structure=)
from ..vocabulary import CURVATURES, check_curvature
from .base import MovingAverage, Optimizer, restricted_solve


class NaturalGradient(Optimizer):
    """Natural gradient with the exact (damped) curvature matrix of each batch.

    Parameters
    ----------
    curvature : str
        ``"fisher"`` (default), ``"ggn"``, ``"mc_fisher"`` (``samples`` targets per
        point, drawn from ``numpy.random.default_rng([seed, steps])`` at the ``steps``-th step),
        ``"empirical_fisher"`` or ``"hessian"``.
    damping : float
        ``lam`` in ``(F + lam I)^-1 g``.
    structure : {"full", "layer"}
        The whole matrix, or its per-layer diagonal blocks only.
    ema_decay : float
        Moving average of ``F`` over steps (:class:`~refprune.optim.base.MovingAverage`);
        ``0`` uses each batch's own matrix.
    max_bytes : int, optional
        Refuse a matrix larger than this (default: the memory available).
    lr, momentum, weight_decay, kl_clip
        As in :class:`~refprune.optim.base.Optimizer`.
    """

    name = "NaturalGradient"

    def __init__(self, lr=1.0, curvature="fisher", damping=1e-3, structure="full", ema_decay=0.0, samples=1,
                 seed=0, momentum=0.0, weight_decay=0.0, kl_clip=None, max_bytes=None):
        self.curvature = check_curvature(curvature, CURVATURES, self.name)
        # lr, momentum, weight_decay and kl_clip are checked by Optimizer.__init__
        v = options.convert(self.name, dict(damping=damping, structure=structure, ema_decay=ema_decay,
                                            samples=samples, seed=seed, max_bytes=max_bytes))
        options.refuse_inapplicable(self.name, v, method=structure, curvature=curvature)  # methods: structures
        self.damping = v["damping"]
        self.structure, self.samples, self.seed, self.max_bytes = structure, v["samples"], v["seed"], max_bytes
        self.average = MovingAverage(v["ema_decay"], self.name)
        super().__init__(lr, momentum, weight_decay, kl_clip)

    def reset(self):
        """Also forget the averaged matrix."""
        super().reset()
        self.average.reset()

    def matrix(self, inp):
        """The batch's curvature matrix (dense, ``(n, n)``)."""
        args = (inp.model, [p for group in inp.grouped for p in group], inp.X, inp.y, inp.loss)
        # Monte Carlo options only for the curvature that draws (the others refuse them)
        mc = dict(samples=self.samples, seed=[self.seed, self.steps]) if self.curvature == "mc_fisher" else {}
        if self.structure == "layer":
            return block_diagonal(*args, curvature=self.curvature, **mc).to_dense()
        return exact_matrix(*args, curvature=self.curvature, max_bytes=self.max_bytes, **mc)

    def precondition(self, inp, theta, g, free):
        """``(F_ff + lam I)^-1 g_f`` with ``F`` the (averaged) batch matrix."""
        F = self.average.update([self.matrix(inp)])[0]
        M = F + self.damping * np.eye(len(F))
        return restricted_solve(lambda v: M @ v, lambda: M, g, np.ones(len(g), bool) if free is None else free,
                                f"{self.name}: the damped {self.curvature} matrix")
