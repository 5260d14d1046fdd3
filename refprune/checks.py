"""Validation of user input: every public entry point goes through :func:`validate`.

Bad input raises ``ValueError``/``TypeError`` naming the problem before any arithmetic;
user arrays are converted to float64 copies where needed and never written to.
"""

from collections import namedtuple

import numpy as np

from .memory import check_fits, describe
from .nested import as_array
from .nn import Sequential
from .nn.losses import Loss
from .scalars import is_int, is_number

Inputs = namedtuple("Inputs", "model grouped X y loss n_samples n_outputs scale")


def check_array(a, name, dtype_kinds="fiub"):
    """``a`` as a finite float64 array; raises if it is not numeric or not finite.
    Tensors (anything with ``detach``, e.g. torch) are converted deliberately through
    ``detach().cpu().numpy()``.  A ragged nested list is refused by name, and so is an
    array whose float64 copy would not fit in memory (e.g. a broadcast view of huge shape)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    arr = as_array(a, name, name.rsplit(": ", 1)[-1])
    if arr.dtype.kind not in dtype_kinds:
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    convert = arr.dtype != np.float64
    # the float64 copy (if converted) and the boolean temporary of the finiteness test
    check_fits(arr.size * (9 if convert else 1), name,
               lambda: f"{'converting' if convert else 'checking'} the {arr.dtype} array of shape "
                       f"({describe(arr.shape)}) {'to float64 and checking it' if convert else 'for NaN and inf'}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or inf value(s)")
    return arr


def real_array(x, name, hint="; return a real array"):
    """``x`` (an array, a CPU tensor, a JAX array, a nested list) as a float64 array.

    Complex values are refused by name, never truncated to their real part (NumPy's
    ``astype(float)`` would drop the imaginary part with only a warning), and so are
    booleans, strings and objects: refprune's quantities are real float64 numbers.
    ``hint`` ends the complex refusal with what the caller should do.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} cannot be read as an array ({err})") from None
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}): refprune's quantities are real float64, and the "
                        f"imaginary part would be dropped silently{hint}")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_flag(value, name):
    """``value`` if it is ``True`` or ``False`` (a string like ``"no"`` is not)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_count(value, name, minimum=1, note=""):
    """``value`` as an int if it is an integer ``>= minimum`` (1 or 0; ``True`` is not a
    count)."""
    if not is_int(value) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int{note}, got {value!r}")
    return int(value)


def check_number(value, name, minimum=0.0, allow_none=False):
    """A finite real number ``>= minimum`` as a float."""
    if value is None and allow_none:
        return None
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def check_params(model, params):
    """Validate a list of parameter arrays against ``model``; returns float64 arrays."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a refprune Sequential, got {type(model).__name__}")
    if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
        raise TypeError(
            "params must be a list of arrays (model.init() or unflatten_params(model, theta)), "
            f"got {type(params).__name__}"
        )
    shapes = model.param_shapes()
    if len(params) != len(shapes):
        raise ValueError(f"model has {len(shapes)} parameter arrays, got {len(params)}")
    out = []
    for i, (p, shape) in enumerate(zip(params, shapes)):
        p = check_array(p, f"params[{i}]")
        if p.shape != tuple(shape):
            raise ValueError(f"params[{i}] must have shape {tuple(shape)}, got {p.shape}")
        out.append(p)
    return out


def check_vector(v, n, name="v"):
    """A tangent ``(n,)`` or a stack ``(K, n)`` of them, finite float64."""
    v = check_array(v, name)
    if v.ndim not in (1, 2) or v.shape[-1] != n:
        raise ValueError(f"{name} must have shape ({n},) or (K, {n}), got {v.shape}")
    return v


def validate(model, params, X, y, loss):
    """Check and convert all inputs of a loss-based computation."""
    params = check_params(model, params)
    if not isinstance(loss, Loss):
        cls = type(loss)
        if cls.__module__.split(".")[0] == "torch":
            # a torch loss module has the same name as refprune's: say whose it is and what to write
            name = cls.__name__ if cls.__name__ in ("CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss") else None
            red = getattr(loss, "reduction", "mean")
            red = repr(red) if red in ("mean", "sum") else "'mean' or 'sum'"
            fix = (f"use refprune's rp.{name}(reduction={red})" if name else
                   f"refprune's binary loss takes logits: drop the network's final Sigmoid and use "
                   f"rp.BCEWithLogitsLoss(reduction={red})" if cls.__name__ == "BCELoss" else
                   "refprune has rp.CrossEntropyLoss(reduction=...), rp.MSELoss(reduction=...) and "
                   "rp.BCEWithLogitsLoss(reduction=...)")
            # per-element and per-output weights change Lambda and the likelihood: no refprune loss has them
            weighted = [k for k in ("weight", "pos_weight") if getattr(loss, k, None) is not None]
            if name and weighted:
                fix += (f"; refprune does not model {' or '.join(k + '=' for k in weighted)} (set on this module), "
                        "so the weighted loss has no refprune equivalent")
            raise TypeError(f"loss must be a refprune loss (rp.CrossEntropyLoss, rp.MSELoss or rp.BCEWithLogitsLoss), "
                            f"got torch's {cls.__module__}.{cls.__qualname__}: {fix}")
        raise TypeError(f"loss must be a refprune loss (rp.CrossEntropyLoss, rp.MSELoss or rp.BCEWithLogitsLoss), got "
                        f"{cls.__name__}")
    X = check_array(X, "X")
    if X.ndim < 2 or X.shape[0] < 1:
        raise ValueError(f"X must have shape (N, ...) with N >= 1, got {X.shape}")
    out_shape = model.output_shape(X.shape[1:])
    if len(out_shape) != 1:
        raise ValueError(f"the model's per-sample output must be a vector (C,), got shape {out_shape}")
    n, c = X.shape[0], out_shape[0]
    y = loss.check_targets(y, n, c)
    return Inputs(model, model.group_params(params), X, y, loss, n, c, loss.scale(n, c))
