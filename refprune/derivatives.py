"""Loss, gradient, per-sample gradients and Hessian-vector products, by hand.

Notation (``docs/derivations.md``): ``x_j`` is the input of layer ``j``, ``d_j`` the
cotangent ``dl_n/dx_{j+1}`` at its output, ``R{.}`` Pearlmutter's operator
``d/de (.)(theta + e v)`` (Pearlmutter 1994, "Fast exact multiplication by the
Hessian", §3-4).  Every pass handles ``K`` directions at once: tangents are
``(N, K, *shape)``.
"""

import numpy as np

from .checks import check_vector, validate
from .nn import AffineLayer

#: number of float64 values a temporary array may hold before work is split in chunks
CHUNK_FLOATS = 2**23


def forward(inp, X=None):
    """Network output and caches for ``inp.X`` (or a slice ``X`` of it); raises
    ``FloatingPointError`` if the output overflowed (every later quantity would be NaN)."""
    f, caches = inp.model.forward_with_caches(inp.grouped, inp.X if X is None else X)
    if not np.all(np.isfinite(f)):
        bad = int(f.size - np.count_nonzero(np.isfinite(f)))
        raise FloatingPointError(
            f"the network's output is not finite ({bad} of {f.size} entries overflowed to inf or NaN): inputs or "
            f"parameters too large for float64 (largest |X| {np.abs(inp.X).max():.3g})"
        )
    return f, caches


def first_param_layer(model):
    """Index of the first Linear/Conv2d layer (``len(model)`` if none): backward
    passes stop there, since the input needs no derivative."""
    return next((j for j, layer in enumerate(model) if isinstance(layer, AffineLayer)), len(model))


def backward(inp, caches, d_out):
    """Cotangents at every layer's output, ``d_out`` ``(N, K, C)`` at the network's.

    Stops once the first parameterised layer is reached (the input needs none).
    """
    model = inp.model
    stop = first_param_layer(model)
    douts = [None] * len(model)
    d = d_out
    for j in range(len(model) - 1, stop, -1):
        douts[j] = d
        d = model[j].vjp(inp.grouped[j], caches[j], d)
    if stop < len(model):  # else no parameters: no cotangent is needed
        douts[stop] = d
    return douts


def gradient_pass(inp, X=None, y=None):
    """Forward, loss derivative and backward pass on the batch (or a slice of it)."""
    y = inp.y if y is None else y
    f, caches = forward(inp, X)
    douts = backward(inp, caches, inp.loss.grad(f, y)[:, None])
    return f, caches, douts


def loss(model, params, X, y, loss):
    """``L(theta) = R sum_n l_n`` as a Python float (``docs/conventions.md`` §2)."""
    inp = validate(model, params, X, y, loss)
    f, _ = forward(inp)
    value = float(inp.scale * np.sum(inp.loss.per_sample(f, inp.y)))
    if not np.isfinite(value):
        raise FloatingPointError(f"the loss is not finite ({value}): outputs or targets too large for float64")
    return value


def grad(model, params, X, y, loss):
    """Gradient ``dL/dtheta`` of shape ``(n,)``, in flat parameter order."""
    return validated_grad(validate(model, params, X, y, loss))


def validated_grad(inp):
    """:func:`grad` of an already validated batch ``inp``."""
    _, caches, douts = gradient_pass(inp)
    model = inp.model
    parts = [
        layer.param_grad(caches[j], douts[j])[0]
        for j, layer in enumerate(model)
        if isinstance(layer, AffineLayer)
    ]
    return inp.scale * np.concatenate(parts) if parts else np.zeros(0)


def per_sample_grads(model, params, X, y, loss):
    """Per-sample gradients ``R dl_n/dtheta`` of shape ``(N, n)``; rows sum to :func:`grad`.

    For the unscaled ``dl_n/dtheta`` divide by ``R`` (``1/N`` for cross-entropy "mean",
    ``1/(N C)`` for squared-error "mean", ``1`` for "sum").
    """
    inp = validate(model, params, X, y, loss)
    _, caches, douts = gradient_pass(inp)
    out = np.empty((inp.n_samples, model.n_params))
    offsets = model.param_offsets()
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            out[:, offsets[j] : offsets[j + 1]] = layer.per_sample_param_grad(caches[j], douts[j])[:, 0]
    out *= inp.scale
    return out


def loss_curvature_matvec(inp, kind, samples=None, seed=None, f_all=None, targets=None, where="loss_curvature_matvec"):
    """``(f, y, V, idx) -> Phi_n V`` for the output-space curvature of a matrix
    (docs §4 table): ``"hessian"`` and ``"ggn"`` (``Lambda_n``), ``"fisher"``
    (``E_y[g g^T]``), ``"mc_fisher"`` (``samples`` targets drawn with ``seed``, or the
    caller's ``targets``; the only kind that reads these), ``"empirical_fisher"``,
    ``"zero"`` (for the residual).  ``where`` names the caller in a refusal."""
    if targets is not None and kind != "mc_fisher":
        raise ValueError(f"{where}: targets= is for curvature='mc_fisher', got curvature={kind!r}")
    if kind in ("hessian", "ggn"):
        return lambda f, y, V, idx: inp.loss.hessian_matvec(f, y, V)
    if kind == "fisher":
        return lambda f, y, V, idx: inp.loss.fisher_matvec(f, V)
    if kind == "zero":
        return lambda f, y, V, idx: np.zeros_like(V)
    if kind == "mc_fisher":
        # imported here: the curvature package builds on this module
        from .curvature.output_factors import draw_targets

        if targets is None and f_all is None:
            f_all = forward(inp)[0]
        targets = draw_targets(inp, f_all, samples, seed, targets, where)
    elif kind == "empirical_fisher":
        targets = inp.y[None]
    else:
        raise ValueError(f"unknown output curvature {kind!r}")

    def matvec(f, y, V, idx):
        # Phi V = mean_s g_s (g_s . V) with g_s = dl/df at the s-th target
        G = np.stack([inp.loss.grad(f, t[idx]) for t in targets], axis=1)  # (N, S, C)
        return np.matmul(np.matmul(V, G.transpose(0, 2, 1)), G) / G.shape[1]

    return matvec


def curvature_products(inp, caches, douts, f, V, phi, second_order=True):
    """Pearlmutter's R-operator for ``K`` parameter tangents ``V`` ``(K, n)``, with
    output curvature ``phi`` (see :func:`loss_curvature_matvec`); without the
    second-order network terms it gives ``R sum_n J_n^T Phi_n J_n V`` (GGN/Fisher).
    Returns the unscaled products (multiply by ``R``).

    Forward: ``R{x_{j+1}} = J_j R{x_j} + (dW_j) U_j + db_j``.
    Loss: ``R{d_L} = Lambda R{f}``.
    Backward: ``R{d_{j-1}} = J_j^T R{d_j} + [R{J_j^T}] d_j`` where the bracket is the
    activation's ``phi'' R{z}`` term and, for affine layers, ``dW^T d_j``;
    ``R{grad W_j} = sum_n R{d_j} U_j^T + d_j R{U_j}^T`` (docs §5).
    """
    model = inp.model
    offsets = model.param_offsets()
    k = V.shape[0]
    dparams = [layer.split_flat(V[:, offsets[j] : offsets[j + 1]]) for j, layer in enumerate(model)]

    xdots = [None] * len(model)  # tangent of each layer's input (None: zero)
    t = None
    for j, layer in enumerate(model):
        xdots[j] = t
        out = layer.jvp(inp.grouped[j], caches[j], t) if t is not None else None
        if isinstance(layer, AffineLayer):
            pj = layer.param_jvp(inp.grouped[j], caches[j], dparams[j])
            out = pj if out is None else out + pj
        t = out
    D = phi(f, inp.y, t, slice(None))

    result = np.empty((k, model.n_params))
    stop = first_param_layer(model)
    for j in range(len(model) - 1, stop - 1, -1):
        layer, p, cache, d0, xd = model[j], inp.grouped[j], caches[j], douts[j], xdots[j]
        if isinstance(layer, AffineLayer):
            block = layer.param_grad(cache, D)
            if second_order and xd is not None:
                block += layer.param_grad_input_tangent(layer.input_tangent_features(xd), d0)
            result[:, offsets[j] : offsets[j + 1]] = block
        if j == stop:
            break
        Dn = layer.vjp(p, cache, D)
        if second_order and xd is not None:
            curv = layer.vjp_curvature(p, cache, d0, xd)
            if curv is not None:
                Dn += curv
        if second_order and isinstance(layer, AffineLayer):
            Dn += layer.param_vjp_tangent(p, cache, dparams[j], d0)
        D = Dn
    return result


def hvp(model, params, X, y, loss, v):
    """Hessian-vector product ``H v`` by the R-operator, without forming ``H``.

    ``v`` is ``(n,)`` or a stack ``(K, n)`` of directions, all propagated at once
    (split into chunks that keep temporaries under ``CHUNK_FLOATS`` values).
    Returns the same shape as ``v``.
    """
    inp = validate(model, params, X, y, loss)
    v = check_vector(v, model.n_params)
    V = np.atleast_2d(v)
    if V.shape[0] == 0 or model.n_params == 0:
        # no directions, or a network without parameters: H is empty
        return np.zeros(V.shape) if v.ndim == 2 else np.zeros(model.n_params)
    f, caches, douts = gradient_pass(inp)
    step = chunk_length(inp.n_samples, work_width(inp))
    phi = loss_curvature_matvec(inp, "hessian")
    out = np.concatenate([curvature_products(inp, caches, douts, f, V[i : i + step], phi)
                          for i in range(0, len(V), step)])
    out *= inp.scale
    return out if v.ndim == 2 else out[0]


def work_width(inp):
    """Floats one tangent column needs per sample in the widest place of the network: a
    layer's input, its output, or (affine layers) its features ``(r, T)`` (im2col for a
    convolution).  Chunks of tangent work are sized by it, see :func:`chunk_length`."""
    sizes, s = [], inp.X.shape[1:]
    for layer in inp.model:
        out = layer.output_shape(s)
        sizes += [int(np.prod(s)), int(np.prod(out))]
        if isinstance(layer, AffineLayer):
            sizes.append(layer.n_weight // layer.out_units * (int(np.prod(out)) // layer.out_units))
        s = out
    return max(sizes)


def chunk_length(columns, width):
    """How many items of ``columns`` tangent columns of ``width`` floats each fit in
    ``CHUNK_FLOATS`` (at least one, so that work always advances)."""
    return max(1, CHUNK_FLOATS // max(1, columns * width))
