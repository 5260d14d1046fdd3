"""Bridges to PyTorch (needs ``torch``, any recent version; refprune never installs it).

* :func:`from_torch`: a ``torch.nn.Sequential`` (or a state dict plus the refprune or
  torch model it belongs to, its entries matched by name) as ``(model, params)``, and
  with ``loss=`` the torch criterion as refprune's loss; ``Identity`` and
  evaluation-mode ``Dropout`` are left out and ``torch.compile``'s wrapper unwrapped;
  every option refprune does not model, and complex or tied parameters, are refused by
  name, the module named as torch names it (``"1.1"``).
* :func:`to_torch`: the ``torch.nn.Sequential`` equal to ``(model, params)``, float64.

Both keep PyTorch's parameter layout (``docs/conventions.md`` §1), so
``torch.nn.utils.parameters_to_vector`` of one equals ``refprune.flatten_params`` of the
other, and the round trips are exact (float64 values are copied, never recomputed).
"""

import numbers

import numpy as np

from .. import nn
from ..checks import check_params, real_array, validate
from ..memory import check_fits, describe, nbytes
from ..nn.losses import Loss


def _torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "this bridge needs PyTorch: pip install torch (refprune does not install it, so that it never "
            "replaces the torch you have)"
        ) from err
    return torch


def to_torch_layer(layer):
    """The ``torch.nn`` module for one refprune layer (float64, uninitialised values)."""
    torch = _torch()
    tnn = torch.nn
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=torch.float64)
    if isinstance(layer, nn.Conv2d):
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, bias=layer.bias, dtype=torch.float64)
    simple = {nn.ReLU: tnn.ReLU, nn.Tanh: tnn.Tanh, nn.Sigmoid: tnn.Sigmoid, nn.Flatten: tnn.Flatten}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, nn.Softplus):
        # refprune's softplus has no linear cut-off; a huge threshold removes PyTorch's
        return tnn.Softplus(threshold=1e6)
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(layer.kernel_size)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size)
    raise TypeError(f"no PyTorch equivalent known for {layer!r}")


def to_torch(model, params):
    """``(torch.nn.Sequential, list of torch parameters)`` equal to ``(model, params)``,
    in float64; ``parameters_to_vector`` of the list equals ``flatten_params(params)``."""
    torch = _torch()
    params = check_params(model, params)
    tmodel = torch.nn.Sequential(*[to_torch_layer(layer) for layer in model])
    tparams = list(tmodel.parameters())
    with torch.no_grad():
        for t, p in zip(tparams, params):
            t.copy_(torch.from_numpy(p))
    return tmodel, tparams


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _refuse(name, module, option, why):
    """Refuse ``option`` of the module torch names ``name`` (``"1.1"`` in a nested
    ``Sequential``: the name in ``named_modules()`` and in the state dict's keys)."""
    raise ValueError(f"from_torch: layer {name} ({module!r}): {option} is not modelled by refprune ({why})")


def _conv(name, m):
    if tuple(_pair(m.dilation)) != (1, 1):
        _refuse(name, m, f"dilation={m.dilation}", "only dilation 1")
    if m.groups != 1:
        _refuse(name, m, f"groups={m.groups}", "only groups=1")
    if m.padding_mode != "zeros":
        _refuse(name, m, f"padding_mode={m.padding_mode!r}", "only zero padding")
    padding = m.padding
    if isinstance(padding, str):
        if padding != "valid":
            _refuse(name, m, f"padding={padding!r}", "give the padding as numbers")
        padding = (0, 0)
    return nn.Conv2d(m.in_channels, m.out_channels, tuple(m.kernel_size), stride=tuple(_pair(m.stride)),
                     padding=tuple(_pair(padding)), bias=m.bias is not None)


def _sizes(name, m, option):
    """A pooling module's ``option`` as a pair of Python ints.  Torch's pooling modules
    store whatever they were given, and a float compares equal to a neighbouring int
    (``np.float16(2049) == 2048``): a window of 2048 x 2049 would pass as square."""
    value = getattr(m, option)
    pair = _pair(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        _refuse(name, m, f"{option}={value}", "sizes are whole numbers, one or one per axis")
    return int(pair[0]), int(pair[1])


def _pool(name, m, cls):
    k = _sizes(name, m, "kernel_size")
    if k[0] != k[1]:
        _refuse(name, m, f"kernel_size={m.kernel_size}", "only square pooling windows")
    stride = k if m.stride is None else _sizes(name, m, "stride")
    if stride != k:
        _refuse(name, m, f"stride={m.stride}", "pooling stride must equal the kernel size")
    if _sizes(name, m, "padding") != (0, 0):
        _refuse(name, m, f"padding={m.padding}", "no padding in pooling")
    if m.ceil_mode:
        _refuse(name, m, "ceil_mode=True", "windows are floored, as PyTorch's default")
    if cls is nn.MaxPool2d:
        if _sizes(name, m, "dilation") != (1, 1):
            _refuse(name, m, f"dilation={m.dilation}", "only dilation 1")
        if m.return_indices:
            _refuse(name, m, "return_indices=True", "a layer returns one array")
    elif m.divisor_override is not None:  # torch.nn.AvgPool2d has it since torch 1.2
        _refuse(name, m, f"divisor_override={m.divisor_override}", "the mean over the window")
    return cls(k[0])


def _layer_of(name, m, torch):
    """refprune's layer for the torch module named ``name`` (``None`` for a module that
    is the identity: ``Identity``, and ``Dropout`` in evaluation mode)."""
    tnn = torch.nn
    t = type(m)
    if t is tnn.Linear:
        return nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if t is tnn.Conv2d:
        return _conv(name, m)
    if t in (tnn.ReLU, tnn.Tanh, tnn.Sigmoid):
        return {tnn.ReLU: nn.ReLU, tnn.Tanh: nn.Tanh, tnn.Sigmoid: nn.Sigmoid}[t]()
    if t is tnn.Softplus:
        if m.beta != 1:
            _refuse(name, m, f"beta={m.beta}", "only beta=1")
        # PyTorch switches to the identity above `threshold` (a change below e^-threshold);
        # refprune computes log(1 + e^z) everywhere (docs/conventions.md §1)
        return nn.Softplus()
    if t is tnn.AvgPool2d:
        return _pool(name, m, nn.AvgPool2d)
    if t is tnn.MaxPool2d:
        return _pool(name, m, nn.MaxPool2d)
    if t is tnn.Flatten:
        if m.start_dim != 1 or m.end_dim != -1:
            _refuse(name, m, f"start_dim={m.start_dim}, end_dim={m.end_dim}", "Flatten keeps the batch axis only")
        return nn.Flatten()
    if t is tnn.Identity:
        return None
    if isinstance(m, tnn.modules.dropout._DropoutNd):
        # every dropout module (Dropout, Dropout1d/2d/3d, AlphaDropout) returns its input
        # unchanged in evaluation mode, and so does p = 0; in training mode it multiplies
        # by a random mask, a function refprune's deterministic quantities do not have
        if m.training and m.p > 0:
            _refuse(name, m, f"{type(m).__name__} in training mode",
                    "it zeroes random entries; in evaluation mode (call .eval() on the network) it is the identity "
                    "and from_torch leaves it out")
        return None
    if isinstance(m, tnn.modules.batchnorm._BatchNorm):
        _refuse(name, m, "BatchNorm", "fold it into the preceding Linear/Conv2d before converting")
    raise ValueError(
        f"from_torch: layer {name} ({type(m).__name__}) is not a module refprune models; supported: Linear, Conv2d, "
        "ReLU, Tanh, Sigmoid, Softplus, AvgPool2d, MaxPool2d, Flatten, and Identity and Dropout in evaluation mode "
        "(left out); custom modules are refused"
    )


def _is_compiled(module):
    """Whether ``module`` is the wrapper ``torch.compile`` returns (``OptimizedModule``):
    it computes what the module it holds as ``_orig_mod`` computes, with its parameters."""
    return type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


def _flat_modules(seq, torch, prefix, seen=None):
    """``[(name, module)]`` of a ``Sequential`` with nested ones flattened; ``name`` is
    the dotted prefix torch gives the module's parameters (``"0"``, ``"0.1"``, ``"fc"``).

    Every entry is visited as ``Sequential.forward`` runs them (``named_children`` would
    skip a module that appears twice); a module with parameters that appears twice (tied
    weights) is refused, since refprune gives every layer its own parameters."""
    seen = {} if seen is None else seen
    out = []
    for name, m in seq._modules.items():
        full = f"{prefix}{name}"
        if _is_compiled(m):  # torch names its parameters "<name>._orig_mod.weight"
            m, full = m._orig_mod, f"{full}._orig_mod"
        if isinstance(m, torch.nn.Sequential):
            out.extend(_flat_modules(m, torch, full + ".", seen))
            continue
        if any(True for _ in m.parameters()):
            if id(m) in seen:
                raise ValueError(f"from_torch: layer {full} ({m!r}) is the same module as layer {seen[id(m)]}: shared "
                                 "(tied) parameters are not modelled; give each layer its own module")
            seen[id(m)] = full
        out.append((full, m))
    return out


def _array(t, name, torch):
    """A float64 NumPy copy of a tensor or array-like state-dict value ``name``.

    Complex values are refused by name (a cast would drop the imaginary part), and so
    are booleans and non-numeric values; float32/float16 and integers widen exactly."""
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            raise TypeError(f"from_torch: parameter {name} is complex ({t.dtype}); refprune's parameters are real "
                            "float64: convert a real network")
        if t.dtype == torch.bool:
            raise TypeError(f"from_torch: parameter {name} must be a real numeric tensor, got {t.dtype}")
        shape = tuple(t.shape)
    else:
        try:
            shape = np.shape(t)
        except ValueError:  # a ragged list: real_array names it
            shape = ()
    # the copy is the one allocation; an expanded or broadcast view may be far larger than its memory
    check_fits(nbytes(shape), "from_torch", lambda: f"the float64 copy of parameter {name} ({describe(shape)})")
    if isinstance(t, torch.Tensor):
        # a fresh float64 tensor (NumPy has no bfloat16), never the caller's memory
        arr = t.detach().cpu().to(torch.float64, copy=True).numpy()
    else:
        # a float64 copy (astype copies): the caller's array is never shared
        arr = real_array(t, f"from_torch: state dict entry {name!r}", hint="; give a real state dict")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"from_torch: parameter {name} contains NaN or inf")
    return arr


def _model_of(module, torch):
    """``(refprune model, [(parameter name, layer index, part)], [(name, module)])`` of a
    torch Sequential (or a compiled one); the parameter names are the module's
    state-dict keys, and the ``name`` of refprune's layer ``i`` is
    ``mods[i][0]``.  ``Identity`` and evaluation-mode ``Dropout`` are left out."""
    if not isinstance(module, torch.nn.Sequential):
        raise ValueError(f"from_torch: expected a torch.nn.Sequential, got {type(module).__name__} "
                         "(custom modules are refused: write the network as a Sequential)")
    mods, layers = [], []
    for name, m in _flat_modules(module, torch, ""):
        layer = _layer_of(name, m, torch)
        if layer is not None:
            mods.append((name, m))
            layers.append(layer)
    if not layers:
        raise ValueError("from_torch: the network has no layer refprune models (only Identity or Dropout)")
    model = nn.Sequential(*layers)
    names = []
    for i, ((name, m), layer) in enumerate(zip(mods, model)):
        if isinstance(layer, nn.AffineLayer):
            names += [(f"{name}.weight", i, "weight")] + ([(f"{name}.bias", i, "bias")] if layer.bias else [])
    return model, names, mods


def _refprune_names(model):
    """State-dict names of a refprune model's parameters: ``to_torch``'s ``Sequential``
    has layer ``i``'s at ``"i.weight"`` and ``"i.bias"``."""
    names = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.AffineLayer):
            names += [(f"{i}.weight", i, "weight")] + ([(f"{i}.bias", i, "bias")] if layer.bias else [])
    return names


def _from_state_dict(state, model, names, torch, refprune_model=False, labels=None):
    """Parameters of ``model`` looked up in ``state`` by name (never by position: two
    layers of equal shape would be swapped silently); every missing, unexpected or
    misshapen key is named in one error, its layer by ``labels[i]`` (torch's dotted
    module name; refprune's index ``i`` for a refprune model)."""
    labels = labels or {}
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"from_torch: state dict keys must be strings such as '0.weight', got {bad_keys[0]!r}")
    expected = {n: (i, part) for n, i, part in names}
    shapes = {}
    for n, i, part in names:
        layer = model[i]
        shapes[n] = tuple(layer.weight_shape) if part == "weight" else (layer.out_units,)
    problems = []
    missing = [n for n in expected if n not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        problems.append("missing " + ", ".join(f"{n!r} (layer {labels.get(expected[n][0], expected[n][0])} "
                                                f"{model[expected[n][0]]!r} "
                                                f"{expected[n][1]})" for n in missing))
    if extra:
        note = ""
        if any(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for k in extra):
            note = " (buffers such as BatchNorm statistics are not modelled)"
        problems.append(f"unexpected {extra}{note}")
        prefixes = {k[: -len(n)] for n in missing for k in extra if k.endswith("." + n)}
        if missing and len(prefixes) == 1 and all(f"{next(iter(prefixes))}{n}" in extra for n in missing):
            problems.append(f"every missing key is there with the prefix {next(iter(prefixes))!r}: strip it")
        elif refprune_model:
            problems.append("a refprune model's layer i has 'i.weight' and 'i.bias'; for the names of a nested or "
                            "named torch Sequential pass that Sequential as model=")
    arrays = {}
    for n in expected:
        if n in state:
            a = _array(state[n], n, torch)
            if a.shape != shapes[n]:
                i, part = expected[n]
                fits = [m for m in expected if m != n and shapes[m] == a.shape]
                where = f"; that is the shape of {fits}: misplaced?" if fits else ""
                problems.append(f"{n!r} has shape {a.shape}, layer {labels.get(i, i)} {model[i]!r} expects {shapes[n]} for its "
                                f"{part}{where}")
            arrays[n] = a
    if problems:
        raise ValueError("from_torch: the state dict does not match the model (matched by name, as "
                         f"torch.nn.Module.load_state_dict does; expected keys {list(expected)}): "
                         + "; ".join(problems))
    return model, check_params(model, [arrays[n] for n, _, _ in names])


_REDUCTIONS = ("mean", "sum")


def _loss_of(tloss, torch):
    """refprune's loss for a torch loss module, with its reduction; every option refprune
    does not implement is refused by name (a weighted, smoothed or unreduced loss is
    another function, and converting it without the option would be a silent wrong
    answer)."""
    if isinstance(tloss, Loss):
        return tloss
    tnn = torch.nn
    name = type(tloss).__name__
    where = f"from_torch: loss {name}"

    def refuse(option, why):
        raise ValueError(f"{where}: {option} is not implemented by refprune ({why})")

    if type(tloss) not in (tnn.CrossEntropyLoss, tnn.MSELoss, tnn.BCEWithLogitsLoss):
        hint = ""
        if isinstance(tloss, tnn.NLLLoss):
            hint = "; for log_softmax followed by NLLLoss, end the network with the logits and use CrossEntropyLoss"
        elif isinstance(tloss, tnn.BCELoss):
            hint = "; for sigmoid followed by BCELoss, end the network with the logits and use BCEWithLogitsLoss"
        known = "CrossEntropyLoss, MSELoss, BCEWithLogitsLoss"
        if isinstance(tloss, type):
            kind, hint = f"the class {tloss.__module__}.{tloss.__qualname__}", f": pass an instance, {tloss.__name__}()"
        elif isinstance(tloss, tnn.Module):
            kind = f"{type(tloss).__module__}.{type(tloss).__qualname__}"
        else:
            kind = f"a {name}"
        raise TypeError(f"from_torch: loss must be a torch loss module refprune implements ({known}, "
                        f"torch.nn's classes exactly, or a refprune loss), got {kind}{hint}")
    if tloss.reduction not in _REDUCTIONS:
        refuse(f"reduction={tloss.reduction!r}", "the loss is one number: reduction 'mean' or 'sum'")
    if getattr(tloss, "weight", None) is not None:
        refuse("weight=", "every sample and class weighs 1")
    if type(tloss) is tnn.CrossEntropyLoss:
        # a negative ignore_index (torch's default is -100) never equals a label in [0, C),
        # which refprune requires, so it changes nothing
        if tloss.ignore_index >= 0:
            refuse(f"ignore_index={tloss.ignore_index}", "a label in [0, C) would be left out of the loss; "
                   "refprune counts every sample (a negative ignore_index never matches a label and is accepted)")
        if tloss.label_smoothing != 0:
            refuse(f"label_smoothing={tloss.label_smoothing}", "the targets are the labels themselves")
        return nn.CrossEntropyLoss(tloss.reduction)
    if type(tloss) is tnn.MSELoss:
        return nn.MSELoss(tloss.reduction)
    if tloss.pos_weight is not None:
        refuse("pos_weight=", "positive and negative targets weigh 1")
    return nn.BCEWithLogitsLoss(tloss.reduction)


def from_torch(module, model=None, loss=None):
    """A PyTorch network as refprune's ``(model, params)``, and with ``loss=`` its loss:
    ``(model, params, loss)``.

    Parameters
    ----------
    module : torch.nn.Sequential or state dict
        A ``Sequential`` (nested ones are flattened; ``torch.compile``'s wrapper is
        unwrapped) of Linear, Conv2d, ReLU, Tanh, Sigmoid, Softplus, AvgPool2d,
        MaxPool2d and Flatten; ``Identity``, and ``Dropout`` (``Dropout1d``/``2d``/
        ``3d``, ``AlphaDropout``) in evaluation mode or with ``p=0``, are the identity
        and left out.  Or a state dict (name to tensor or array), together with ``model``.
    model : refprune.Sequential or torch.nn.Sequential, optional
        With a state dict: the network whose parameters it holds.  Entries are matched
        by name, never by position: a refprune model's layer ``i`` has ``"i.weight"``
        and ``"i.bias"`` (the names :func:`to_torch` gives); a torch ``Sequential``'s
        parameters have the names torch gives them (``"0.0.weight"`` in a nested
        ``Sequential``, ``"fc.bias"`` for a named module), and its values are replaced
        by the state dict's.  A compiled model's state dict (keys starting with
        ``"_orig_mod."``) and its original's are both read.
    loss : torch loss module, optional
        ``torch.nn.CrossEntropyLoss``, ``MSELoss`` or ``BCEWithLogitsLoss`` with ``reduction="mean"`` or ``"sum"``, converted to refprune's
        loss of the same semantics (``docs/conventions.md`` §2).  Refused by name:
        ``weight=``, ``pos_weight=``, a non-negative ``ignore_index``,
        ``label_smoothing``, ``reduction="none"``, and every other loss class.  It is an
        argument of ``from_torch`` (not a function of its own) so that a training setup,
        network and criterion, converts in one call, and the return value says by its
        length what was converted.

    Returns
    -------
    (refprune.Sequential, list of float64 arrays[, refprune loss])
        Parameters in PyTorch's order and shapes; float32 values are widened exactly.

    Raises
    ------
    ValueError
        For an option refprune does not model (dilation, groups, padding modes,
        pooling stride other than the kernel, BatchNorm, Dropout in training mode,
        custom modules, the loss options above), naming the layer by torch's dotted
        module name (``"1.1"``, as in ``named_modules()``) and the option; for a state
        dict whose keys do not match the model's, naming every missing, unexpected and
        misshapen key.
    TypeError
        For complex, boolean or non-numeric parameters (never truncated to floats), and
        a loss that is not one of the torch loss modules above.
    """
    torch = _torch()
    tloss = None if loss is None else _loss_of(loss, torch)
    if _is_compiled(module):
        module = module._orig_mod
    if isinstance(module, torch.nn.Module):
        if model is not None:
            raise ValueError("from_torch: pass either a torch module or a state dict with model=, not both")
        model, names, mods = _model_of(module, torch)
        values, owner = {}, {}
        for name, i, part in names:
            t = getattr(mods[i][1], part)
            if id(t) in owner:  # one Parameter in two layers: tied weights
                raise ValueError(f"from_torch: parameter {name} is the same tensor as {owner[id(t)]}: shared (tied) "
                                 "parameters are not modelled; give each layer its own parameters")
            owner[id(t)], values[name] = name, t
        out = _from_state_dict(values, model, names, torch)
    elif isinstance(module, dict):
        if isinstance(model, torch.nn.Module):
            if _is_compiled(model):
                model = model._orig_mod
                if module and all(isinstance(k, str) and k.startswith("_orig_mod.") for k in module):
                    module = {k[len("_orig_mod."):]: v for k, v in module.items()}
            model, names, mods = _model_of(model, torch)
            out = _from_state_dict(module, model, names, torch, labels={i: n for i, (n, _) in enumerate(mods)})
        elif isinstance(model, nn.Sequential):
            out = _from_state_dict(module, model, _refprune_names(model), torch, refprune_model=True)
        else:
            raise TypeError("from_torch: a state dict needs model=, the refprune Sequential or the "
                            f"torch.nn.Sequential it belongs to, got {type(model).__name__}")
    else:
        raise TypeError(f"from_torch: expected a torch.nn.Sequential or a state dict, got {type(module).__name__}")
    return out if tloss is None else (*out, tloss)


def torch_loss(loss):
    """The PyTorch loss function with the same semantics as a refprune loss."""
    if not isinstance(loss, (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss)):  # named before torch is needed
        raise TypeError(f"torch_loss: loss must be a refprune loss (rp.CrossEntropyLoss, rp.MSELoss or "
                        f"rp.BCEWithLogitsLoss), got {type(loss).__module__}.{type(loss).__qualname__}")
    F = _torch().nn.functional
    if isinstance(loss, nn.CrossEntropyLoss):
        return lambda out, y: F.cross_entropy(out, y, reduction=loss.reduction)
    if isinstance(loss, nn.MSELoss):
        return lambda out, y: F.mse_loss(out, y, reduction=loss.reduction)
    return lambda out, y: F.binary_cross_entropy_with_logits(out, y, reduction=loss.reduction)


def torch_hessian(model, params, X, y, loss):
    """The Hessian by ``torch.func.hessian`` over the flat parameter vector, ``(n, n)``."""
    torch = _torch()
    inp = validate(model, params, X, y, loss)  # complex or non-finite input is refused, never cast
    params = check_params(model, params)
    tmodel, _ = to_torch(model, params)
    names = [k for k, _ in tmodel.named_parameters()]
    shapes = [tuple(p.shape) for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    Xt = torch.from_numpy(np.array(inp.X, dtype=np.float64))
    yt = torch.from_numpy(np.array(inp.y))
    lf = torch_loss(loss)

    def f(theta):
        ps = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return lf(torch.func.functional_call(tmodel, dict(zip(names, ps)), (Xt,)), yt)

    theta = torch.from_numpy(np.concatenate([np.ravel(p) for p in params]).astype(np.float64))
    return torch.func.hessian(f)(theta).numpy()
