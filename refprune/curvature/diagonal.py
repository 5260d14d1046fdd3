"""Diagonals of curvature matrices, without forming the ``n x n`` matrix.

Exact diagonals (``docs/derivations.md`` §7).  The per-sample Hessian of ``l_n`` with
respect to a layer output is back-propagated in factored form ``sum_k sign_k gamma_k gamma_k^T``
(signs ``sign_k = +-1``), as in Hessian backpropagation (Dangel, Harmeling & Hennig 2020,
"Modular block-diagonal curvature approximations", eq. 7, and BackPACK's DiagHessian):

* at the output, the columns of ``Phi_n = Gamma_n Gamma_n^T`` (:mod:`refprune.curvature.output_factors`);
* through any layer, ``gamma <- J^T gamma`` (``vjp`` on the stack of columns);
* at an activation, the residual ``diag(phi''(z) * delta_a)`` adds one column
  ``sqrt(|d_u|) e_u`` per unit, with the sign of ``d_u`` (Hessian only).

At an affine layer the diagonal of its block is then
``R sum_n sum_k sign_k (per-sample gradient of column k)^2``, since
``H_ll = R sum_n J_{z_l,theta_l}^T Psi_n J_{z_l,theta_l}``.

OBD's saliency is derived in ``docs/pruning_explained.md`` §2.  OBD's approximation
(LeCun, Denker & Solla 1990, eqs. 7-9) back-propagates only the
diagonal of ``Psi_n``, dropping every cross term: ``h_z = phi'(z)^2 h_a + phi''(z) delta_a``
(eq. 9, the second term dropped in the Levenberg-Marquardt variant),
``h_x = sum_k W_kx^2 h_z`` and ``h_w = sum h_z x^2`` (eqs. 7-8; sums over locations for
shared convolution weights).
"""

import numpy as np

from .. import derivatives as _d
from ..checks import check_flag, validate
from ..memory import CurvatureTooLargeError, check_fits, nbytes
from ..nn import AffineLayer
from ..nn.activations import Elementwise
from ..vocabulary import CURVATURES, FISHERS, check_curvature, renamed_options
from . import parallel as _par
from .output_factors import OutputFactor, check_seed, hessian_sqrt, refuse_monte_carlo_options


def _activation_columns(d):
    """One-hot columns ``sqrt(|d_u|) e_u`` for a per-sample diagonal ``d (N, *shape)``,
    split by sign: returns ``(positive, negative)`` stacks ``(N, U, *shape)``."""
    n, shape = d.shape[0], d.shape[1:]
    u = int(np.prod(shape))
    flat = d.reshape(n, u)
    out = []
    for part in (np.maximum(flat, 0.0), np.maximum(-flat, 0.0)):
        cols = np.zeros((n, u, u))
        cols[:, np.arange(u), np.arange(u)] = np.sqrt(part)
        out.append(cols.reshape((n, u) + shape))
    return out


def _squared_grads(layer, cache, Q, n_cols_budget):
    """``sum_{n,k} (per-sample gradient of column k)^2`` over a layer's parameters,
    a few output units at a time.  With one location (``T = 1``) the per-sample
    gradient ``gamma_k x^T`` is rank one and the sum is ``sum_n (sum_k gamma_nk^2) x_n^2``."""
    n, k = Q.shape[:2]
    if cache[0].shape[2] == 1:
        qq = np.einsum("nk...,nk...->n...", Q, Q)[:, None]
        return layer.param_grad_squared_features(cache, qq)
    q_unit = layer.n_params // layer.out_units
    per = max(1, n_cols_budget // max(1, n * k * q_unit))
    out = np.empty(layer.n_params)
    for u0 in range(0, layer.out_units, per):
        u1 = min(layer.out_units, u0 + per)
        g = layer.per_sample_param_grad(cache, Q, units=(u0, u1))
        out[layer.unit_rows((u0, u1))] = np.einsum("nkq,nkq->q", g, g)
    return out


def _check_columns_fit(inp, factor, residual, nc):
    """Refuse the back-propagated columns of a chunk of ``nc`` samples if they would not
    fit: ``K`` columns of every layer's size, ``K`` growing by ``2 u`` at an activation of
    ``u`` units for the Hessian, whose one-hot columns are ``(nc, u, u)`` each."""
    model = inp.model
    shapes = [int(np.prod(inp.X.shape[1:]))]
    s = inp.X.shape[1:]
    for layer in model:
        s = layer.output_shape(s)
        shapes.append(int(np.prod(s)))
    k, peak, at = factor.per_sample, 0, None
    for j in range(len(model) - 1, _d.first_param_layer(model) - 1, -1):
        here = k * shapes[j + 1]
        if residual and isinstance(model[j], Elementwise):
            u = shapes[j]
            k += 2 * u
            here = max(here, k * u + 2 * u * u)
        if here > peak:
            peak, at = here, j
    if at is not None:
        check_fits(nbytes((nc, peak)), factor.where, lambda: f"the columns back-propagated at layer {at} "
                   f"({model[at]!r}) for {nc} sample(s)", error=CurvatureTooLargeError)


def _factored_diagonal(inp, factor, residual):
    model = inp.model
    offsets = model.param_offsets()
    out = np.zeros(model.n_params)
    stop = _d.first_param_layer(model)
    # columns at the bottom: Phi's columns plus one per activation unit (Hessian only)
    extra, s = 0, inp.X.shape[1:]
    for layer in model:
        if residual and isinstance(layer, Elementwise):
            extra += 2 * int(np.prod(s))
        s = layer.output_shape(s)
    nc = _d.chunk_length(factor.per_sample + extra, _d.work_width(inp))
    _check_columns_fit(inp, factor, residual, min(nc, inp.n_samples))
    for s0 in range(0, inp.n_samples, nc):
        s1 = min(inp.n_samples, s0 + nc)
        f, caches, douts = _d.gradient_pass(inp, inp.X[s0:s1], inp.y[s0:s1])
        pos, neg = factor.columns(f, slice(s0, s1)), None
        for j in range(len(model) - 1, stop - 1, -1):
            layer, p, cache = model[j], inp.grouped[j], caches[j]
            if isinstance(layer, AffineLayer):
                block = _squared_grads(layer, cache, pos, _d.CHUNK_FLOATS)
                if neg is not None:
                    block -= _squared_grads(layer, cache, neg, _d.CHUNK_FLOATS)
                out[offsets[j] : offsets[j + 1]] += block
            if j == stop:
                break
            pos = layer.vjp(p, cache, pos)
            neg = None if neg is None else layer.vjp(p, cache, neg)
            if residual and isinstance(layer, Elementwise) and cache[1] is not None:
                cp, cn = _activation_columns(cache[1] * douts[j][:, 0])
                pos = np.concatenate([pos, cp], axis=1)
                neg = cn if neg is None else np.concatenate([neg, cn], axis=1)
    out *= inp.scale
    return out


def hessian_diagonal(model, params, X, y, loss, executor=None, shards=1):
    """Exact ``diag(H)``, ``(n,)``, by second-order backpropagation (docs §7).

    ``executor`` and ``shards`` (as for :func:`refprune.hessian`, docs §11): the samples
    split into ``shards`` contiguous shards, each diagonal computed as a task (on the
    executor, or here) and the results summed in shard order, equal to the one-process
    diagonal to rounding."""
    return _diagonal(model, params, X, y, loss, "hessian", {}, executor, shards)


def ggn_diagonal(model, params, X, y, loss, executor=None, shards=1):
    """Exact ``diag(GGN)``, ``(n,)``: ``C`` back-propagated columns per sample.
    ``executor``, ``shards`` as for :func:`hessian_diagonal`."""
    return _diagonal(model, params, X, y, loss, "ggn", {}, executor, shards)


@renamed_options(FISHERS, kind="curvature")
def fisher_diagonal(model, params, X, y, loss, curvature="fisher", samples=1, seed=0, targets=None, executor=None,
                    shards=1):
    """Diagonal of a Fisher, ``(n,)``, for ``curvature`` one of ``"fisher"`` (the true
    Fisher, equal to the GGN's), ``"mc_fisher"`` (``samples`` targets drawn with
    ``seed``, the same draws as ``fisher(curvature="mc_fisher", samples=, seed=)``, or
    the caller's ``targets``) and ``"empirical_fisher"``.  ``executor``, ``shards`` as
    for :func:`hessian_diagonal` (Monte Carlo targets drawn once for the whole batch)."""
    if curvature in ("hessian", "ggn"):
        raise ValueError(f"fisher_diagonal: curvature must be one of {FISHERS}, got {curvature!r}, which is not a "
                         f"Fisher: for its diagonal call refprune.{curvature}_diagonal()")
    check_curvature(curvature, FISHERS, "fisher_diagonal")
    check_seed(seed, "fisher_diagonal")
    refuse_monte_carlo_options(curvature, samples, seed, targets, "fisher_diagonal")
    return _diagonal(model, params, X, y, loss, curvature, dict(samples=samples, seed=seed, targets=targets),
                     executor, shards)


@renamed_options(kind="curvature")
def curvature_diagonal(model, params, X, y, loss, curvature="hessian", samples=1, seed=0, targets=None,
                       executor=None, shards=1):
    """The exact diagonal of any curvature matrix by name (``"hessian"``, ``"ggn"``,
    ``"fisher"``, ``"mc_fisher"``, ``"empirical_fisher"``), ``(n,)``; ``executor``,
    ``shards`` as for :func:`hessian_diagonal`."""
    check_curvature(curvature, CURVATURES, "curvature_diagonal")
    check_seed(seed, "curvature_diagonal")
    refuse_monte_carlo_options(curvature, samples, seed, targets, "curvature_diagonal")
    if curvature == "hessian":
        return hessian_diagonal(model, params, X, y, loss, executor, shards)
    if curvature == "ggn":
        return ggn_diagonal(model, params, X, y, loss, executor, shards)
    return fisher_diagonal(model, params, X, y, loss, curvature, samples, seed, targets, executor, shards)


def _factor(inp, curvature, mc, where):
    # The Hessian starts from the GGN's output curvature Lambda_n; what the GGN drops,
    # the activations' second derivatives, enters as the residual columns (docs §7).
    return OutputFactor(inp, "ggn" if curvature == "hessian" else curvature, where=where, **mc)


def diagonal_task(model, params, X, y, loss, scale, curvature, targets):
    """One task of the sample decomposition, a plain function any worker can run: the
    diagonal over the samples ``(X, y)`` with the whole batch's loss scale ``scale``
    (and the shard's slice of the Monte Carlo targets)."""
    inp = validate(model, params, X, y, loss)._replace(scale=scale)
    # targets is None except for "mc_fisher" (the driver checked the options)
    return _factored_diagonal(inp, _factor(inp, curvature, {"targets": targets}, "diagonal"),
                              residual=curvature == "hessian")


def _diagonal(model, params, X, y, loss, curvature, mc, executor, shards):
    where = f"{curvature}_diagonal" if curvature in ("hessian", "ggn") else "fisher_diagonal"
    inp = validate(model, params, X, y, loss)
    factor = _factor(inp, curvature, mc, where)  # checks the options; draws the Monte Carlo targets once
    if not _par.wants_tasks(executor, shards, where):
        return _factored_diagonal(inp, factor, residual=curvature == "hessian")
    ex = _par.resolve_executor(executor, where)
    targets = getattr(factor, "targets", None)
    flat = [p for group in inp.grouped for p in group]
    parts = [(diagonal_task, (model, flat, inp.X[s0:s1], inp.y[s0:s1], inp.loss, inp.scale, curvature,
                              None if targets is None else targets[:, s0:s1]))
             for s0, s1 in _par.shard_ranges(inp.n_samples, shards, where)]
    result = {}
    _par.run(ex, [("all samples", parts)], result.__setitem__, False, where)
    return result["all samples"]


def obd_diagonal(model, params, X, y, loss, levenberg_marquardt=False):
    """OBD's approximate Hessian diagonal (LeCun, Denker & Solla 1990, eqs. 7-9), ``(n,)``.

    Cross terms between units (and between locations of a convolution) are dropped at
    every layer; the output starts from ``diag(Lambda_n)``.  With
    ``levenberg_marquardt=True`` the ``phi''`` term of eq. 9 is dropped as well.  It
    equals the exact diagonal for a single affine layer, not in general.
    """
    check_flag(levenberg_marquardt, "levenberg_marquardt")
    inp = validate(model, params, X, y, loss)
    offsets = model.param_offsets()
    out = np.zeros(model.n_params)
    stop = _d.first_param_layer(model)
    f, caches, douts = _d.gradient_pass(inp)
    h = np.sum(hessian_sqrt(loss, f, "obd_diagonal") ** 2, axis=1)[:, None]  # diag(Lambda_n), (N, 1, C)
    for j in range(len(model) - 1, stop - 1, -1):
        layer, p, cache = model[j], inp.grouped[j], caches[j]
        if isinstance(layer, AffineLayer):
            out[offsets[j] : offsets[j + 1]] = layer.param_grad_squared_features(cache, h)
        if j == stop:
            break
        h = layer.vjp_squared(p, cache, h)
        if not levenberg_marquardt and isinstance(layer, Elementwise) and cache[1] is not None:
            h = h + (cache[1] * douts[j][:, 0])[:, None]
    out *= inp.scale
    return out
