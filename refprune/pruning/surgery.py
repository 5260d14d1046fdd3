"""Structured surgery: remove output units of affine layers and return a smaller
``Sequential`` computing the same function as the masked large one.

A removed unit ``i`` of layer ``l`` (its row of ``[W | b]`` zero) outputs ``z_i = 0``
everywhere, so after the parameter-free layers up to the next affine layer ``m`` it is
the constant ``c_i = chain(0)`` (``phi(0)``: 0 for ReLU and Tanh, 1/2 for Sigmoid,
``log 2`` for Softplus; pooling keeps a constant).  ``m``'s input columns for that unit
are deleted and ``W_m[:, i] c_i`` is added to ``m``'s bias.  For a convolution ``m`` this
is exact only without zero padding (padding would mix the constant with zeros at the
border); there a nonzero constant raises an error.
"""

import numpy as np

from ..nn import AffineLayer, Conv2d, Linear, Sequential


def next_affine(model, j):
    """Index of the first affine layer after ``j`` (``None`` if ``j`` is the last)."""
    return next((m for m in range(j + 1, len(model)) if isinstance(model[m], AffineLayer)), None)


def structurally_prunable(model):
    """Affine layers whose units can be removed: all but the last."""
    return [j for j, layer in enumerate(model) if isinstance(layer, AffineLayer) and next_affine(model, j) is not None]


def _resized(layer, out_units=None, in_units=None):
    if isinstance(layer, Linear):
        return Linear(in_units or layer.in_features, out_units or layer.out_features, bias=layer.bias)
    return Conv2d(in_units or layer.in_channels, out_units or layer.out_channels, layer.kernel_size,
                  stride=layer.stride, padding=layer.padding, bias=layer.bias)


def remove_units(model, params, keep, in_shape):
    """Smaller model and parameters without the units ``keep[j] == False``.

    ``keep`` maps affine-layer indices to bool arrays over their output units;
    ``in_shape`` is the per-sample input shape (needed to trace shapes to ``Flatten``).
    Returns ``(model, params)``.
    """
    layers = list(model.layers)
    grouped = [list(p) for p in model.group_params(params)]
    shapes = [tuple(in_shape)]
    for layer in layers:
        shapes.append(layer.output_shape(shapes[-1]))
    for j in sorted(keep):
        k = np.asarray(keep[j], dtype=bool)
        if k.all():
            continue
        if not k.any():
            raise ValueError(f"cannot remove every unit of layer {j} ({layers[j]!r})")
        m = next_affine(model, j)
        if m is None:
            raise ValueError(f"layer {j} is the last affine layer: its units are the outputs")
        # the constant that a removed unit contributes at m's input
        x = np.zeros(shapes[j + 1])[None]
        for i in range(j + 1, m):
            x, _ = layers[i].forward(grouped[i], x)
        const = x[0]
        units = len(k)
        layer_j, layer_m = layers[j], layers[m]
        # shrink layer j's outputs
        grouped[j][0] = grouped[j][0][k]
        if layer_j.bias:
            grouped[j][1] = grouped[j][1][k]
        layers[j] = _resized(layer_j, out_units=int(k.sum()))
        # shrink m's inputs and fold the removed units' constants into its bias
        Wm = grouped[m][0]
        bias = grouped[m][1] if layer_m.bias else None
        if isinstance(layer_m, Conv2d):
            c_removed = const.reshape(units, const.size // units)[~k]  # (removed, spatial): uniform constants
            if np.any(c_removed != 0):
                if any(layer_m.padding):
                    raise ValueError(
                        f"cannot remove units of layer {j} exactly: they carry the constant "
                        f"{float(c_removed.flat[0]):g} into {layer_m!r}, which pads with zeros; use an "
                        "activation with phi(0) = 0 (ReLU, Tanh) before a padded convolution")
                shift = Wm[:, ~k].sum(axis=(2, 3)) @ c_removed[:, 0]
                bias = shift if bias is None else bias + shift
            grouped[m][0] = Wm[:, k]
            layers[m] = _resized(layer_m, in_units=int(k.sum()))
        else:
            # one column per unit, or after Flatten a block of H*W columns per channel
            cols = np.broadcast_to(k[:, None], (units, const.size // units)).ravel()
            shift = Wm[:, ~cols] @ const.ravel()[~cols]
            if np.any(shift != 0):
                bias = shift if bias is None else bias + shift
            grouped[m][0] = Wm[:, cols]
            layers[m] = _resized(layer_m, in_units=int(cols.sum()))
        if bias is not None:
            if layer_m.bias:
                grouped[m][1] = bias
            else:
                grouped[m].append(bias)
                layers[m] = _with_bias(layers[m])
    new_model = Sequential(*layers)
    new_params = [p for group in grouped for p in group]
    new_model.output_shape(in_shape)  # shapes must still chain
    return new_model, new_params


def _with_bias(layer):
    if isinstance(layer, Linear):
        return Linear(layer.in_features, layer.out_features, bias=True)
    return Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                  padding=layer.padding, bias=True)
