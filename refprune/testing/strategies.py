"""Hypothesis strategies that draw refprune architectures, parameters and data.

Public so that other projects can property-test their own implementations against
refprune, e.g.::

    from hypothesis import given
    from refprune.testing.strategies import problems

    @given(problems())
    def test_my_hessian(p):
        H_ref = rp.hessian(p.model, p.params, p.X, p.y, p.loss)
        ...

Arrays are generated from a drawn seed with ``numpy.random.default_rng`` (cheap,
reproducible and shrinkable through the seed); sizes are kept small so that dense
reference computations stay fast.
"""

from collections import namedtuple

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover
    raise ImportError(
        "refprune.testing.strategies needs hypothesis: pip install 'refprune[test]'"
    ) from err

from ..conformance.zoo import build_case
from ..nn import (
    AvgPool2d, BCEWithLogitsLoss, Conv2d, CrossEntropyLoss, Flatten, Linear, MaxPool2d, MSELoss, ReLU, Sequential,
    Sigmoid, Softplus, Tanh,
)

#: every activation type, for strategies that draw one
ACTIVATIONS = (ReLU, Tanh, Sigmoid, Softplus)
#: activations that are smooth everywhere
SMOOTH_ACTIVATIONS = (Tanh, Sigmoid, Softplus)

Problem = namedtuple("Problem", "model params X y loss")
Architecture = namedtuple("Architecture", "model input_shape")


@st.composite
def mlps(draw, max_depth=3, max_width=5, in_features=None, out_features=None, activations=ACTIVATIONS):
    """A ``Sequential`` of ``Linear`` layers (with or without bias) and activations.

    Draws an :class:`Architecture` ``(model, input_shape)``.
    """
    d = in_features if in_features is not None else draw(st.integers(1, max_width))
    in_shape = (d,)
    layers = []
    for _ in range(draw(st.integers(0, max_depth - 1))):
        w = draw(st.integers(1, max_width))
        layers += [Linear(d, w, bias=draw(st.booleans())), draw(st.sampled_from(activations))()]
        d = w
    c = out_features if out_features is not None else draw(st.integers(2, max_width))
    layers.append(Linear(d, c, bias=draw(st.booleans())))
    return Architecture(Sequential(*layers), in_shape)


@st.composite
def convnets(draw, max_channels=3, max_size=7, out_features=None, activations=ACTIVATIONS,
             pools=(AvgPool2d, MaxPool2d)):
    """``Conv2d`` (random kernel, stride, padding, bias) followed by an optional
    activation and pooling, optionally a second ``Conv2d``, then ``Flatten`` and a
    ``Linear`` head.  Draws an :class:`Architecture`."""
    c = draw(st.integers(1, 2))
    h = draw(st.integers(3, max_size))
    w = draw(st.integers(3, max_size))
    in_shape = shape = (c, h, w)
    layers = []
    for i in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(3, shape[1], shape[2])))
        conv = Conv2d(shape[0], draw(st.integers(1, max_channels)), (k, draw(st.integers(1, 3))) if i else k,
                      stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)), bias=draw(st.booleans()))
        try:
            new = conv.output_shape(shape)
        except ValueError:
            break
        layers.append(conv)
        shape = new
        if draw(st.booleans()):
            layers.append(draw(st.sampled_from(activations))())
        if pools and min(shape[1:]) >= 2 and draw(st.booleans()):
            layers.append(draw(st.sampled_from(pools))(2))
            shape = layers[-1].output_shape(shape)
    if not any(isinstance(layer, Conv2d) for layer in layers):
        layers = [Conv2d(c, 1, 1)]
        shape = (1, h, w)
    out = out_features if out_features is not None else draw(st.integers(2, 4))
    layers += [Flatten(), Linear(int(np.prod(shape)), out, bias=draw(st.booleans()))]
    return Architecture(Sequential(*layers), in_shape)


def architectures(activations=ACTIVATIONS):
    """An MLP or a convolutional net."""
    return st.one_of(mlps(activations=activations), convnets(activations=activations))


def losses(kinds=("cross_entropy", "mse", "bce"), reductions=("mean", "sum")):
    """A loss object of any kind and reduction (``"bce"``: binary cross-entropy on logits)."""
    classes = {"cross_entropy": CrossEntropyLoss, "mse": MSELoss, "bce": BCEWithLogitsLoss}
    return st.builds(lambda k, r: classes[k](reduction=r), st.sampled_from(kinds), st.sampled_from(reductions))


@st.composite
def problems(draw, architectures=None, losses=None, max_samples=4, param_scale=(0.5, 1.0, 2.0)):
    """A :class:`Problem` ``(model, params, X, y, loss)``.

    Parameters are PyTorch's default initialisation times a drawn scale (large scales
    saturate activations); inputs are standard normal; targets are uniform labels for
    cross-entropy, standard normal for squared error and uniform soft labels in
    ``[0, 1]`` for binary cross-entropy.
    """
    arch = draw(architectures if architectures is not None else globals()["architectures"]())
    loss = draw(losses if losses is not None else globals()["losses"]())
    model = arch.model
    n = draw(st.integers(1, max_samples))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from(param_scale))
    rng = np.random.default_rng(seed)
    params = [scale * p for p in model.init(seed)]
    X = rng.standard_normal((n,) + tuple(arch.input_shape))
    c = model.output_shape(arch.input_shape)[0]
    if isinstance(loss, CrossEntropyLoss):
        y = rng.integers(0, c, size=n)
    elif isinstance(loss, BCEWithLogitsLoss):
        y = rng.random((n, c))
    else:
        y = rng.standard_normal((n, c))
    return Problem(model, params, X, y, loss)


#: the prefix of the zoo's loss names (``refprune.conformance.LOSSES``: "ce-mean", ...) per kind of :func:`losses`
_LOSS_PREFIX = {"cross_entropy": "ce", "mse": "mse", "bce": "bce"}


def cases(kinds=("cross_entropy", "mse", "bce"), reductions=("mean", "sum"), max_samples=4, max_depth=None,
          max_width=None, max_channels=None, max_size=None, activations=None, architectures=None):
    """A whole conformance case: a :class:`refprune.conformance.Case` (network,
    parameters, data, loss, targets, the HVP direction, the Monte Carlo targets and the
    OBS index), the type the zoo and the pytest plugin's ``refprune_case`` give, so one
    test body takes either::

        @given(case=cases(kinds=("cross_entropy",)))
        def test_my_grad(case):
            refprune.conformance.check_case(my_grad, case, quantity="grad")

    The case is built by :func:`refprune.conformance.build_case` from a drawn seed (the
    zoo's recipe: parameters at twice PyTorch's initial scale, standard normal inputs,
    hard labels), so the same draw gives the same bits and hypothesis shrinks the
    network, the number of samples and the seed towards the smallest.

    Parameters
    ----------
    kinds, reductions : sequences of names
        The losses drawn, as in :func:`losses`: ``"cross_entropy"``, ``"mse"``,
        ``"bce"`` and ``"mean"``, ``"sum"``.
    max_samples : int
        Data points ``N`` are drawn from ``1 .. max_samples``.
    max_depth, max_width : int, optional
        The MLPs' limits (default 3 layers, 4 units; :func:`mlps`).
    max_channels, max_size : int, optional
        The convnets' limits (default 2 channels, images up to 5 x 5; :func:`convnets`).
    activations : tuple of classes, optional
        Default :data:`ACTIVATIONS`; :data:`SMOOTH_ACTIVATIONS` keeps away from kinks
        (max pooling is then left out as well).
    architectures : strategy of :class:`Architecture`, optional
        In place of the MLPs and convnets above; the size limits and ``activations``
        do not apply to it and are refused with it.
    """
    kinds = _choice_names(kinds, "kinds", tuple(_LOSS_PREFIX))
    reductions = _choice_names(reductions, "reductions", ("mean", "sum"))
    max_samples = _limit(max_samples, "max_samples", 1)
    limits = dict(max_depth=max_depth, max_width=max_width, max_channels=max_channels, max_size=max_size,
                  activations=activations)
    if architectures is not None:
        given = sorted(k for k, v in limits.items() if v is not None)
        if given:
            raise ValueError(f"cases: {given} do not apply with architectures= (they shape the default MLPs and "
                             "convnets); give one or the other")
        if not isinstance(architectures, st.SearchStrategy):
            raise TypeError(f"cases: architectures must be a hypothesis strategy of Architecture (e.g. mlps()), got "
                            f"{type(architectures).__name__}")
        arch = architectures
    else:
        acts = ACTIVATIONS if activations is None else activations
        if isinstance(acts, type) or not isinstance(acts, (tuple, list)) or not acts or not all(
                isinstance(a, type) and a in ACTIVATIONS for a in acts):
            raise ValueError(f"cases: activations must be a non-empty tuple of {[a.__name__ for a in ACTIVATIONS]}, "
                             f"got {activations!r}")
        pools = (AvgPool2d, MaxPool2d) if ReLU in acts else (AvgPool2d,)  # max pooling has kinks too
        arch = st.one_of(
            mlps(max_depth=_limit(3 if max_depth is None else max_depth, "max_depth", 1),
                 max_width=_limit(4 if max_width is None else max_width, "max_width", 2), activations=tuple(acts)),
            convnets(max_channels=_limit(2 if max_channels is None else max_channels, "max_channels", 1),
                     max_size=_limit(5 if max_size is None else max_size, "max_size", 3), activations=tuple(acts),
                     pools=pools))
    lossnames = [f"{_LOSS_PREFIX[k]}-{r}" for k in kinds for r in reductions]
    return _cases(arch, lossnames, max_samples)


@st.composite
def _cases(draw, arch, lossnames, max_samples):
    a = draw(arch)
    lossname = draw(st.sampled_from(lossnames))
    n = draw(st.integers(1, max_samples))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = "convnet" if any(isinstance(layer, Conv2d) for layer in a.model) else "mlp"
    return build_case(f"hypothesis-{kind}", a.model, a.input_shape, lossname, n=n, seed=seed)


def _choice_names(given, what, known):
    """A non-empty list of names from ``known`` (one string is refused: it is not a list)."""
    if isinstance(given, str) or not isinstance(given, (tuple, list)) or not given:
        raise TypeError(f"cases: {what} must be a non-empty tuple of names from {known}, got {given!r}")
    unknown = [x for x in given if x not in known]
    if unknown:
        raise ValueError(f"cases: {what} {unknown} not known; choose from {known}")
    return list(dict.fromkeys(given))


def _limit(value, name, minimum):
    """An integer ``>= minimum`` (a bool is not a size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"cases: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)
