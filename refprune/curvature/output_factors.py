"""Factorisations ``Phi_n = Gamma_n Gamma_n^T`` of the output-space curvature, by curvature name.

Every curvature matrix that refprune approximates is ``R sum_n J_n^T Phi_n J_n``
(``docs/derivations.md`` §4).  Writing ``Phi_n`` as a sum of outer products of a few
output-space columns ``Gamma_n[:, k]`` lets those columns be back-propagated like gradients
(Martens & Grosse 2015, §5; Dangel et al. 2020, "BackPACK", §2.2):

======================  ===========================================  ===================
curvature               columns ``Gamma_n[:, k]``                    count per sample
======================  ===========================================  ===================
``ggn``, ``fisher``     a square root of ``Lambda_n = E_y[g g^T]``   ``C``
``mc_fisher``           ``g(y_s) / sqrt(n_mc)``, ``y_s ~ p(.|f_n)``  ``n_mc`` (``samples``)
``empirical_fisher``    ``g(y_n)`` at the observed target            ``1``
======================  ===========================================  ===================

Square roots: cross-entropy ``Lambda = diag(yhat) - yhat yhat^T = Gamma Gamma^T`` with
columns ``Gamma[:, k] = sqrt(yhat_k) (e_k - yhat)``, ``yhat = softmax(f)``, which are
also ``sqrt(yhat_k) g(k)`` up to sign, the columns of the true Fisher's expectation over
labels; squared error ``Lambda = E[g g^T] = 2 I``, ``Gamma = sqrt(2) I``; binary
cross-entropy on logits ``Lambda = diag(p (1 - p))``, ``p = sigmoid(f)``,
``Gamma = diag(sqrt(p (1 - p)))``, whose column ``k`` is ``sqrt(p_k (1 - p_k))`` times
``g`` at either value of ``y_k`` up to sign (``docs/derivations.md`` §3).

Monte Carlo targets are drawn by :func:`draw_targets` or supplied by the caller
(``targets=``), so that another library's own samples can be replayed.
"""

import numpy as np

from ..memory import check_fits, describe, nbytes
from ..nested import as_array
from ..nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from ..nn.losses import sigmoid
from ..scalars import is_int
from ..vocabulary import FISHER_LIKE, check_curvature


def hessian_sqrt(loss, f, where="hessian_sqrt"):
    """Columns of a square root of ``Lambda_n``: ``(N, C, C)`` with ``[n, k, :]`` the
    ``k``-th column, so that ``Lambda_n = sum_k Gamma[n, k] Gamma[n, k]^T``."""
    n, c = f.shape
    check_fits(2 * nbytes((n, c, c)), where, lambda: f"the square roots of the loss Hessians ({describe((n, c, c))} "
               f"float64, and a temporary as large) of {n} sample(s) with {c} outputs")
    if isinstance(loss, CrossEntropyLoss):
        z = f - f.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return np.sqrt(p)[:, :, None] * (np.eye(c)[None] - p[:, None, :])
    if isinstance(loss, BCEWithLogitsLoss):
        # 1 - p as sigmoid(-f): no cancellation where p rounds to 1
        return np.sqrt(sigmoid(f) * sigmoid(-f))[:, :, None] * np.eye(c)[None]
    if isinstance(loss, MSELoss):
        return np.broadcast_to(np.sqrt(2.0) * np.eye(c), (n, c, c)).copy()
    raise TypeError(f"{where}: no square root of the loss Hessian for {type(loss).__name__}; refprune's losses are "
                    "CrossEntropyLoss, MSELoss and BCEWithLogitsLoss")


def check_targets_stack(inp, targets):
    """Caller-supplied Monte Carlo targets as ``(n_mc, N)`` labels (cross-entropy) or
    ``(n_mc, N, C)`` values (squared error, binary cross-entropy); a single draw may omit
    the leading axis."""
    t = as_array(targets, "targets")
    single = t.ndim == (1 if isinstance(inp.loss, CrossEntropyLoss) else 2)
    if single:
        t = t[None]
    if t.ndim < 2 or t.shape[0] < 1:
        raise ValueError(f"targets must be a stack of sampled targets (n_mc, N, ...), got shape {np.shape(targets)}")
    return np.stack([inp.loss.check_targets(ts, inp.n_samples, inp.n_outputs) for ts in t])


def check_seed(seed, where):
    """``seed`` if ``numpy.random.default_rng`` makes a reproducible generator of it: an
    int ``>= 0`` or a non-empty list or tuple of them (the optimizers pass
    ``[seed, steps]``).  ``None`` (fresh entropy) and a ``numpy.random.Generator`` (whose
    state a call would advance) are refused: the same ``seed`` must give the same draws
    in every function and every call."""
    if isinstance(seed, (list, tuple)) and seed and all(is_int(s) for s in seed):
        if min(seed) < 0:
            raise ValueError(f"{where}: seed must be an int >= 0 or a list of them, got {seed!r}")
        return seed
    if is_int(seed):
        if seed < 0:
            raise ValueError(f"{where}: seed must be an int >= 0 or a list of them, got {seed!r}")
        return seed
    why = ""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        why = " (the Monte Carlo draws must be reproducible: the same seed gives the same draws in every function)"
    raise TypeError(f"{where}: seed must be an int >= 0 or a list of them, got {seed!r}{why}")


def check_samples(samples, where):
    """``samples`` as an int if it is a positive int."""
    if not is_int(samples) or samples < 1:
        raise ValueError(f"{where}: samples must be a positive int, got {samples!r}")
    return int(samples)


def draw_targets(inp, f_all, samples, seed, targets=None, where="draw_targets"):
    """``samples`` targets per data point from the model's likelihood, drawn from
    ``numpy.random.default_rng(seed)`` for the whole batch at once (so every function
    using the same ``samples`` and ``seed`` sees the same draws); or the caller's
    ``targets`` (``(n_mc, N)`` labels, ``(n_mc, N, C)`` values), checked, in place of draws.
    ``seed``: see :func:`check_seed`."""
    if targets is not None:
        if samples is not None and samples != 1:  # (None: internal calls that pass targets only)
            raise ValueError(f"{where}: samples={samples!r} does not apply with targets= (the number of draws is "
                             f"their first axis); leave samples at 1")
        return check_targets_stack(inp, targets)
    samples = check_draws(inp, samples, seed, where)
    return inp.loss.sample(f_all, np.random.default_rng(seed), samples)


def check_draws(inp, samples, seed, where):
    """``samples`` as an int after checking it, ``seed`` and the memory the draws of the
    whole batch need (refused up front, naming ``where``)."""
    samples = check_samples(samples, where)
    check_seed(seed, where)
    n, c = inp.n_samples, inp.n_outputs
    # labels: int64 draws, a uniform per draw and a (C-1)-wide comparison; values (squared error, binary
    # cross-entropy): two (S, N, C) arrays
    need = nbytes((samples, n), 16 + c) if isinstance(inp.loss, CrossEntropyLoss) else 2 * nbytes((samples, n, c))
    check_fits(need, where, f"{samples} Monte Carlo target(s) for each of {n} sample(s) with {c} outputs")
    return samples


def monte_carlo_kwargs(curvature, samples, seed, targets):
    """``samples``, ``seed`` and ``targets`` as keywords for a curvature function if
    ``curvature`` is ``"mc_fisher"``, else none: callers that hold them for every
    curvature (pruning keeps ``seed`` for retraining too) pass on only what applies."""
    if isinstance(curvature, str) and curvature == "mc_fisher":
        return dict(samples=samples, seed=seed, targets=targets)
    return {}


def refuse_monte_carlo_options(curvature, samples, seed, targets, where):
    """Refuse ``samples=``, ``seed=`` or ``targets=`` given for a curvature that draws
    nothing: only ``"mc_fisher"`` reads them, and ignoring them would hide a mistake.
    ``samples=1`` and ``seed=0`` are the defaults and pass."""
    if curvature == "mc_fisher":
        return
    given = [f"{k}={v!r}" for k, v, default in (("samples", samples, 1), ("seed", seed, 0))
             if not (is_int(v) and v == default)]
    if targets is not None:
        given.append("targets=")
    if given:
        verb = "is" if len(given) == 1 else "are"
        raise ValueError(f"{where}: {', '.join(given)} {verb} for curvature='mc_fisher', got curvature={curvature!r} "
                         "(only Monte Carlo draws read it; leave it out)")


class OutputFactor:
    """The columns ``Gamma_n`` of one curvature for a batch, evaluated chunk by chunk.

    ``columns(f, idx)`` returns ``(len(idx), K, C)`` for network outputs ``f`` of the
    samples ``idx`` (a slice of the batch); ``per_sample`` is ``K``, the count in the
    module's table, known before any column is computed so that chunks can be sized.
    """

    def __init__(self, inp, curvature, samples=1, seed=0, targets=None, f_all=None, where="curvature"):
        self.inp, self.where = inp, where
        self.curvature = check_curvature(curvature, FISHER_LIKE, where)
        if curvature != "mc_fisher" and targets is not None:
            raise ValueError(f"{where}: targets= is for curvature='mc_fisher', got curvature={curvature!r}")
        if curvature == "mc_fisher":
            if f_all is None and targets is None:
                f_all = inp.model.forward_with_caches(inp.grouped, inp.X)[0]
            self.targets = draw_targets(inp, f_all, samples, seed, targets, where)
            self.per_sample = len(self.targets)
        else:
            self.per_sample = 1 if curvature == "empirical_fisher" else inp.n_outputs

    def columns(self, f, idx):
        """Columns ``Gamma_n (len(idx), K, C)`` of ``Phi_n = Gamma_n Gamma_n^T`` for outputs ``f`` of
        the samples ``idx`` (a slice of the batch)."""
        loss = self.inp.loss
        if self.curvature in ("ggn", "fisher"):
            return hessian_sqrt(loss, f, self.where)
        if self.curvature == "empirical_fisher":
            return loss.grad(f, self.inp.y[idx])[:, None, :]
        S = len(self.targets)
        return np.stack([loss.grad(f, t[idx]) for t in self.targets], axis=1) / np.sqrt(S)
