"""K-FAC and EKFAC natural gradient (``docs/optimizers.md`` §3-§4).

K-FAC (Martens & Grosse 2015): every step the batch's factors ``S`` and ``A`` of every
layer (:mod:`refprune.curvature.kronecker`) are folded into moving averages (their §5);
every ``refresh_interval`` steps the averaged factors are eigendecomposed (their §8
amortises the inverses the same way), and the step uses

    d = (S kron A  damped)^-1 g

per block, with the damping forms ``"exact"``, ``"factored"`` or ``"pi"`` (their §6.3).

EKFAC (George et al. 2018, Algorithm 1): the eigenbasis ``U_SA = U_S kron U_A`` of the averaged
K-FAC factors is recomputed every ``refresh_interval`` steps; every ``scale_interval``
steps the eigenvalues ``kappa`` are re-estimated from the batch's per-sample gradients
projected onto that basis (their eq. 10) and averaged; the step is
``U_SA diag(kappa + lam)^-1 U_SA^T g``.  A refresh restarts the average of ``kappa`` (the old values
belong to another basis) and re-estimates them in the new basis.

Monte Carlo targets (``curvature="mc_fisher"``) of the ``steps``-th step are drawn from
``numpy.random.default_rng([seed, steps])``.  With a mask, each block's system is solved on
its free coordinates (:func:`~refprune.optim.base.restricted_solve`).
"""

import numpy as np

from .. import options
from ..curvature.ekfac import EigenbasisMoments, EKFACBlock
from ..curvature.kronecker import (
    DAMPING_FORMS, FactorStatistics, KroneckerBlock, check_kfac_options, layer_statistics,
)
from ..curvature.output_factors import OutputFactor
from .base import MovingAverage, Optimizer, restricted_solve


class KFAC(Optimizer):
    """K-FAC natural gradient.

    Parameters
    ----------
    damping : float
        ``lam``; applied in the form ``damping_form``.
    damping_form : {"pi", "factored", "exact"}
        ``(S + sqrt(lam)/pi I) kron (A + pi sqrt(lam) I)`` (default, Martens & Grosse
        §6.3), the same with ``pi = 1``, or ``S kron A + lam I``.
    curvature : {"mc_fisher", "fisher", "ggn", "empirical_fisher"}
        The Fisher approximated (default the Monte Carlo Fisher with ``samples``
        targets per point, as in Martens & Grosse §5).
    approx, bias
        As in :func:`refprune.kfac`.
    ema_decay : float
        Decay of the factors' moving averages (default 0.95, their §5); 0 uses each
        batch's factors alone.
    refresh_interval : int
        Steps between eigendecompositions of the averaged factors.
    lr, momentum, weight_decay, kl_clip
        As in :class:`~refprune.optim.base.Optimizer`.
    """

    name = "KFAC"
    forms = DAMPING_FORMS

    def __init__(self, lr=0.1, damping=1e-3, damping_form="pi", curvature="mc_fisher", approx="expand",
                 bias="fold", ema_decay=0.95, refresh_interval=1, samples=1, seed=0, momentum=0.0,
                 weight_decay=0.0, kl_clip=None):
        check_kfac_options(curvature, approx, bias, self.name)
        # curvature, approx and bias are checked above, damping_form below, and lr, momentum,
        # weight_decay and kl_clip by Optimizer.__init__: the table checks the rest once
        given = dict(damping=damping, ema_decay=ema_decay, refresh_interval=refresh_interval, samples=samples,
                     seed=seed)
        if damping_form not in self.forms:
            raise ValueError(f"{self.name}: damping_form must be one of {self.forms}, got {damping_form!r}")
        v = options.convert(self.name, given)
        options.refuse_inapplicable(self.name, v, curvature=curvature)
        self.damping = v["damping"]
        self.damping_form, self.curvature, self.approx, self.bias = damping_form, curvature, approx, bias
        self.samples, self.seed = v["samples"], v["seed"]
        self.refresh_interval = v["refresh_interval"]
        self.factors = MovingAverage(v["ema_decay"], self.name)
        super().__init__(lr, momentum, weight_decay, kl_clip)

    def reset(self):
        """Also forget the averaged factors and the current preconditioner."""
        super().reset()
        self.factors.reset()
        self.blocks = None

    def _due(self, interval):
        return (self.steps - 1) % interval == 0

    def _output_factor(self, inp):
        return OutputFactor(inp, self.curvature, self.samples, [self.seed, self.steps], where=self.name)

    def _fold_factors(self, batch_blocks):
        """Average the batch's factors into the running ones; returns the layouts."""
        avg = self.factors.update([m for b in batch_blocks for m in (b.S, b.A)])
        return [(avg[2 * i], avg[2 * i + 1], b.layout) for i, b in enumerate(batch_blocks)]

    def gradient(self, inp):
        """The batch gradient, computed in the passes that update the curvature."""
        return self.update_curvature(inp)

    def update_curvature(self, inp):
        """Fold in the batch's statistics; refresh the preconditioner when due.
        Returns the batch gradient, back-propagated with the statistics."""
        stats = FactorStatistics(self.approx)
        g = layer_statistics(inp, self._output_factor(inp), stats.visit, gradient=True)
        averaged = self._fold_factors(stats.blocks(inp, self.bias))
        if self.blocks is None or self._due(self.refresh_interval):
            self.blocks = [KroneckerBlock(S.copy(), A.copy(), layout) for S, A, layout in averaged]
        return g

    def precondition(self, inp, theta, g, free):
        """The damped Kronecker blocks' inverse applied to ``g`` block by block
        (``gradient`` has already brought the blocks up to date)."""
        lam, form = self.damping, self.damping_form
        d = np.zeros_like(g)
        for b in self.blocks:
            o, e = b.layout.offset, b.layout.offset + b.layout.size
            if free is None or free[o:e].all():
                d[o:e] = b.inverse_matmat(g[o:e, None], lam, form)[:, 0]
            else:
                d[o:e] = restricted_solve(lambda v, b=b: b.matmat(v[:, None], lam, form)[:, 0],
                                          lambda b=b: b.dense(lam, form), g[o:e], free[o:e],
                                          f"{self.name}: the damped block of layer {b.layout.layer!r}")
        return d


class EKFAC(KFAC):
    """EKFAC natural gradient: K-FAC's eigenbasis, refreshed every ``refresh_interval``
    steps, with eigenvalues re-estimated every ``scale_interval`` steps and averaged
    with ``scale_decay`` (0: each re-estimate alone).  Damping ``kappa + lam`` (the only
    form).  Other parameters as in :class:`KFAC`."""

    name = "EKFAC"
    forms = ("exact",)

    def __init__(self, lr=0.1, damping=1e-3, curvature="mc_fisher", approx="expand", bias="fold", ema_decay=0.95,
                 refresh_interval=1, scale_interval=1, scale_decay=0.95, samples=1, seed=0, momentum=0.0,
                 weight_decay=0.0, kl_clip=None):
        v = options.convert(self.name, dict(scale_interval=scale_interval, scale_decay=scale_decay))
        self.scale_interval = v["scale_interval"]
        self.scales = MovingAverage(v["scale_decay"], self.name, "scale_decay")
        super().__init__(lr, damping, "exact", curvature, approx, bias, ema_decay, refresh_interval, samples, seed,
                         momentum, weight_decay, kl_clip)

    def reset(self):
        """Also forget the averaged eigenvalues and the eigenbasis."""
        super().reset()
        self.scales.reset()
        self.basis = None

    def update_curvature(self, inp):
        """Fold in the batch's factors; refresh the eigenbasis when due; re-estimate
        the eigenvalues when due (always right after a refresh)."""
        factor = self._output_factor(inp)
        refresh = self.basis is None or self._due(self.refresh_interval)
        rescale = refresh or self._due(self.scale_interval)
        stats = FactorStatistics(self.approx)
        moments = None if refresh or not rescale else EigenbasisMoments(self.basis, inp.model)
        visit = stats.visit if moments is None else (lambda *a: (stats.visit(*a), moments.visit(*a)))
        g = layer_statistics(inp, factor, visit, gradient=True)
        averaged = self._fold_factors(stats.blocks(inp, self.bias))
        if refresh:
            # the new basis comes from this batch's averaged factors: a second pass projects onto it
            self.basis = [KroneckerBlock(S.copy(), A.copy(), layout) for S, A, layout in averaged]
            self.scales.reset()
            moments = EigenbasisMoments(self.basis, inp.model)
            layer_statistics(inp, factor, moments.visit)
        if rescale:
            scales = self.scales.update(moments.scales(inp))
            self.blocks = [EKFACBlock(b, s) for b, s in zip(self.basis, scales)]
        return g
