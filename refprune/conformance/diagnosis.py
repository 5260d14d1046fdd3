"""Naming a difference: what is off when another implementation disagrees with refprune.

Given the other result ``a`` and refprune's ``b`` for one case, :func:`diagnose` looks for
the usual suspects, in this order: a shape or a NaN; one constant factor (and which
convention explains it: ``Lambda = 2I`` against ``I``, ``R`` of "mean" against "sum",
``C`` outputs, ``T`` convolution locations); the parameter arrays where the difference
lives (a bias alone points at a missing or separately treated bias); a transposed
weight layout; a constant factor per layer.
"""

import numpy as np

from ..checks import real_array  # noqa: F401 (re-exported: the harness and fixtures read it here)
from ..nn import AffineLayer, CrossEntropyLoss


def relative_error(a, b):
    """``max |a - b| / max |b|`` (absolute when ``b`` is zero); ``inf`` on a shape
    mismatch or when ``a`` has a NaN or inf (a NaN would otherwise compare as a pass:
    every comparison with NaN is false).

    Raises ``TypeError`` for a complex or non-numeric ``a`` or ``b`` and ``ValueError``
    when the reference ``b`` is not finite.
    """
    a, b = real_array(a, "relative_error: a"), real_array(b, "relative_error: b")
    if not np.all(np.isfinite(b)):
        bad = int(b.size - np.count_nonzero(np.isfinite(b)))
        raise ValueError(f"relative_error: the reference b contains {bad} NaN or inf value(s)")
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return float("inf")
    scale = float(np.abs(b).max()) if b.size else 0.0
    diff = float(np.abs(a - b).max()) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def constant_factor(a, b):
    """``r`` with ``a = r b`` up to rounding, or ``None``."""
    bb = float(np.vdot(b, b))
    if bb == 0:
        return None
    r = float(np.vdot(a, b)) / bb
    if relative_error(a, r * b) < 1e-8 and r != 0:
        return r
    return None


def _explanations(case):
    """Known convention factors for this case: ``[(value, words)]``."""
    n = len(case.X)
    c = case.model.output_shape(case.X.shape[1:])[0]
    ce = isinstance(case.loss, CrossEntropyLoss)
    out = []
    if not ce:
        out.append((0.5, "Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I"))
        out.append((2.0, "Lambda = 4 I or a loss with 2 (f - y)^2"))
    if case.loss.reduction == "mean":
        out.append((float(n), "a sum over samples where the loss takes the mean (R = 1/N)"))
        if not ce:
            out.append((float(n * c), "a sum where MSELoss 'mean' divides by N C"))
            out.append((float(c), "a mean over samples only where MSELoss 'mean' divides by N C"))
            out.append((0.5 * c, "Lambda = I and a mean over samples only (ASDL, nngeometry)"))
    else:
        out.append((1.0 / n, "a mean over samples where the loss takes the sum (R = 1)"))
        if not ce:
            out.append((0.5 / n, "Lambda = I and a mean over samples (ASDL, nngeometry)"))
    locations, s = set(), case.X.shape[1:]
    for layer in case.model:
        nxt = layer.output_shape(s)
        if isinstance(layer, AffineLayer) and len(nxt) == 3:
            locations.add(int(np.prod(nxt[1:])))
        s = nxt
    for t in sorted(locations):
        if t > 1:
            out.append((float(t), f"the number of convolution output locations T = {t} (a KFC scaling)"))
            out.append((1.0 / t, f"1/T, T = {t} convolution output locations (a KFC scaling)"))
    out.append((-1.0, "a flipped sign"))
    return out


def _name_factor(r, case):
    for value, words in _explanations(case):
        if abs(r / value - 1) < 1e-6:
            return f"off by a constant factor {r:.6g}: {words}"
    return f"off by a constant factor {r:.6g}"


def _segments(model):
    """``[(label, start, stop, layer, part)]`` for every parameter array."""
    off = model.param_offsets()
    out = []
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            out.append((f"layer {j} {layer!r} weight", off[j], off[j] + layer.n_weight, layer, "weight"))
            if layer.bias:
                out.append((f"layer {j} {layer!r} bias", off[j] + layer.n_weight, off[j + 1], layer, "bias"))
    return out


def diagnose(a, b, case, tol):
    """Sentences naming what differs between ``a`` (the other result) and ``b``
    (refprune's) on ``case``; ``tol`` is the relative tolerance in force."""
    a, b = real_array(a, "diagnose: a"), real_array(b, "diagnose: b")
    if a.shape != b.shape:
        return [f"shape {a.shape}, refprune's is {b.shape} (parameters in PyTorch order: weight.ravel() then bias, "
                "layer by layer)"]
    if not np.all(np.isfinite(a)):
        nan = int(np.isnan(a).sum())
        return [f"{nan} NaN and {int(np.size(a) - np.isfinite(a).sum()) - nan} inf entries of {a.size}"]
    notes = []
    r = constant_factor(a, b)
    if r is not None and a.size == 1:
        named = _name_factor(r, case)
        return [named if ":" in named else f"value {float(a.ravel()[0])!r}, refprune's {float(b.ravel()[0])!r}"]
    if r is not None:
        return [_name_factor(r, case)]
    n = case.n_params
    if a.ndim >= 1 and a.shape[0] == n and (a.ndim == 1 or a.shape == (n, n)):
        bad = []
        for label, s0, s1, layer, part in _segments(case.model):
            rows_a, rows_b = a[s0:s1], b[s0:s1]
            scale = max(float(np.abs(b).max()), 1e-300)
            if float(np.abs(rows_a - rows_b).max(initial=0.0)) / scale > tol:
                bad.append((label, s0, s1, layer, part))
        if bad:
            notes.append("differs in: " + "; ".join(lbl for lbl, *_ in bad))
            if all(part == "bias" for *_, part in bad):
                notes.append("only bias entries differ: is the bias missing, or treated apart from the weights "
                             "(refprune folds it into A as a constant input 1)?")
            for label, s0, s1, layer, part in bad:
                if part == "weight" and a.ndim == 1:
                    c_out = layer.out_units
                    w_a, w_b = a[s0:s1], b[s0:s1]
                    r_in = (s1 - s0) // c_out
                    if np.allclose(w_a.reshape(r_in, c_out).T.ravel(), w_b, rtol=tol, atol=0):
                        notes.append(f"{label}: transposed layout (refprune and PyTorch store weight as "
                                     f"(out, in) row-major)")
                        continue
                f = constant_factor(a[s0:s1], b[s0:s1])
                if f is not None:
                    notes.append(f"{label}: " + _name_factor(f, case))
    if not notes:
        notes.append(f"relative error {relative_error(a, b):.3e}, not a constant factor and not confined to one "
                     "parameter array")
    return notes
