"""The zoo: small named networks and data on which another implementation is compared
with refprune.  Every layer type appears in a hidden position (where its second
derivative matters), with every loss (cross-entropy, squared error, binary
cross-entropy on logits) and both reductions; cases are ordered from the
fewest parameters to the most, so the first failing case is the smallest that shows a
difference.
"""

from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..nn import AffineLayer, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from ..curvature.output_factors import draw_targets
from ..checks import check_count, validate
from ..params import flatten_params

#: ``name: (builder, per-sample input shape)``
ARCHITECTURES = {
    "linear": (lambda: nn.Sequential(nn.Linear(3, 2)), (3,)),
    "mlp-tanh": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), (3,)),
    "mlp-relu": (lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)), (4,)),
    "mlp-sigmoid-softplus-nobias": (
        lambda: nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 3, bias=False), nn.Softplus(),
                              nn.Linear(3, 2)), (3,)),
    "conv-tanh-avgpool": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(8, 3)), (1, 4, 4)),
    "conv-stride2-relu-maxpool": (
        lambda: nn.Sequential(nn.Conv2d(2, 2, 2, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(2, 3)), (2, 3, 3)),
    "conv-conv-softplus-sigmoid": (
        lambda: nn.Sequential(nn.Conv2d(1, 2, (2, 3), stride=(1, 2), bias=False), nn.Softplus(), nn.Conv2d(2, 1, 2),
                              nn.Sigmoid(), nn.Flatten(), nn.Linear(2, 2)), (1, 4, 6)),
}
LOSSES = {
    "ce-mean": lambda: CrossEntropyLoss("mean"),
    "ce-sum": lambda: CrossEntropyLoss("sum"),
    "mse-mean": lambda: MSELoss("mean"),
    "mse-sum": lambda: MSELoss("sum"),
    "bce-mean": lambda: BCEWithLogitsLoss("mean"),
    "bce-sum": lambda: BCEWithLogitsLoss("sum"),
}
#: the torch loss module of each refprune loss class (by name, so that torch is imported only when used)
_TORCH_LOSSES = {CrossEntropyLoss: "CrossEntropyLoss", MSELoss: "MSELoss", BCEWithLogitsLoss: "BCEWithLogitsLoss"}


@dataclass
class Case:
    """One network, its parameters and data, and the inputs of every quantity.

    Attributes
    ----------
    name : str
        ``"<architecture>/<loss>-<reduction>"``.
    model, params, X, y, loss :
        The refprune network (PyTorch layout), parameters, data and loss.
    v : ndarray (n,)
        The direction of the Hessian-vector product.
    targets : ndarray (n_mc, N) or (n_mc, N, C)
        Sampled targets for the Monte Carlo Fisher (replay them in your code).
    obs_index : int
        The weight that the OBS step removes; ``obs_damping`` is added to the GGN
        before it is inverted (``docs/conventions.md`` §7).
    """

    name: str
    model: nn.Sequential
    params: list
    X: np.ndarray
    y: np.ndarray
    loss: object
    v: np.ndarray = field(repr=False, default=None)
    targets: np.ndarray = field(repr=False, default=None)
    obs_index: int = 0
    obs_damping: float = 1e-3

    def __repr__(self):
        # short on purpose: pytest prints a failing item's arguments, and the arrays'
        # values would bury the diagnosis; the arrays are named by shape only
        layers = " ".join(repr(layer) for layer in self.model)
        return (f"Case({self.name!r}: {layers}, n={self.model.n_params}, X {self.X.shape}, "
                f"y {self.y.shape}, {self.loss!r})")

    @property
    def theta(self):
        """The flat parameter vector (docs/conventions.md §1)."""
        return flatten_params(self.params)

    @property
    def n_params(self):
        """Number of parameters ``n``."""
        return self.model.n_params

    def args(self):
        """``(model, params, X, y, loss)``, the first arguments of refprune's functions."""
        return self.model, self.params, self.X, self.y, self.loss

    def describe(self):
        """The case in words: network, data, loss and its scaling ``R``."""
        n, c = len(self.X), self.model.output_shape(self.X.shape[1:])[0]
        net = " -> ".join(repr(layer) for layer in self.model)
        return (f"{self.name}: {net}; X {self.X.shape}, {self.loss!r} (R = {self.loss.scale(n, c):.6g}), "
                f"n = {self.n_params} parameters")

    def torch(self):
        """``(torch model, torch loss module, X tensor, y tensor)``, float64 (needs torch)."""
        import torch

        from ..bridges import to_torch

        tm, _ = to_torch(self.model, self.params)
        cls = getattr(torch.nn, _TORCH_LOSSES[type(self.loss)])
        return tm, cls(reduction=self.loss.reduction), torch.from_numpy(self.X.copy()), torch.from_numpy(np.array(self.y))

    def jax(self):
        """``(apply, tree, X, y)`` with ``apply(tree, X)`` the network's output (needs jax)."""
        from ..bridges import to_jax

        apply, tree = to_jax(self.model, self.params)
        return apply, tree, self.X.copy(), np.array(self.y)


def make_case(arch, lossname, n=3, seed=0, mc_samples=2):
    """The named case ``arch``/``lossname`` with ``n`` data points; parameters at twice
    PyTorch's initial scale so activations sit in their nonlinear range."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"make_case: unknown architecture {arch!r}; choose one of {tuple(ARCHITECTURES)}")
    build, in_shape = ARCHITECTURES[arch]
    return build_case(arch, build(), in_shape, lossname, n, seed, mc_samples)


def build_case(arch, model, in_shape, lossname, n=3, seed=0, mc_samples=2):
    """A :class:`Case` for any refprune ``model`` with per-sample input shape ``in_shape``."""
    if not isinstance(lossname, str) or lossname not in LOSSES:
        raise ValueError(f"build_case: unknown loss {lossname!r}; choose one of {tuple(LOSSES)}")
    n = check_count(n, "build_case: n")
    seed = check_count(seed, "build_case: seed", minimum=0)
    mc_samples = check_count(mc_samples, "build_case: mc_samples")
    rng = np.random.default_rng(seed)
    params = [2.0 * p for p in model.init(seed)]
    X = rng.standard_normal((n,) + tuple(in_shape))
    c = model.output_shape(in_shape)[0]
    loss = LOSSES[lossname]()
    y = _targets(loss, rng, n, c)
    inp = validate(model, params, X, y, loss)
    targets = draw_targets(inp, model(params, X), mc_samples, seed + 1)
    v = rng.standard_normal(model.n_params)
    weights = np.flatnonzero(_weight_mask(model))
    return Case(f"{arch}/{lossname}", model, params, X, y, loss, v=v, targets=targets,
                obs_index=int(weights[rng.integers(weights.size)]))


def _targets(loss, rng, n, c):
    """Labels ``(n,)`` for cross-entropy, standard normal values ``(n, c)`` for squared
    error, and 0/1 values ``(n, c)`` for binary cross-entropy: hard labels, which every
    library that has the loss accepts (curvlinops' and BackPACK's Monte Carlo Fishers
    refuse soft ones); the soft labels refprune accepts are tested in tests/test_bce.py."""
    if isinstance(loss, CrossEntropyLoss):
        return rng.integers(0, c, n)
    if isinstance(loss, BCEWithLogitsLoss):
        return rng.integers(0, 2, (n, c)).astype(np.float64)
    return rng.standard_normal((n, c))


def _weight_mask(model):
    mask = np.zeros(model.n_params, dtype=bool)
    off = model.param_offsets()
    for j, layer in enumerate(model):
        if isinstance(layer, AffineLayer):
            mask[off[j] : off[j] + layer.n_weight] = True
    return mask


def _names(names, what, known):
    """A list of names from ``known`` (a single string is refused: it is not a list)."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"zoo: {what} must be a list of names from {tuple(known)}, got {type(names).__name__} "
                        f"{names!r}")
    unknown = [x for x in names if x not in known]
    if unknown or not names:
        raise ValueError(f"zoo: {what} {unknown or '[]'} not known; choose from {tuple(known)}")
    return list(names)


def zoo(architectures=None, losses=None, n=3, seed=0):
    """Every architecture with every loss (or the ones named), smallest first."""
    archs = list(ARCHITECTURES) if architectures is None else _names(architectures, "architectures", ARCHITECTURES)
    ls = list(LOSSES) if losses is None else _names(losses, "losses", LOSSES)
    cases = [make_case(a, lname, n=n, seed=seed) for a in archs for lname in ls]
    return sorted(cases, key=lambda c: (c.n_params, c.name))


def drawn_zoo(count=8, seed=0, n=3):
    """``count`` random small networks (MLPs and convnets with random activations,
    strides, paddings and losses), drawn from ``numpy.random.default_rng(seed)``."""
    count = check_count(count, "drawn_zoo: count")
    seed = check_count(seed, "drawn_zoo: seed", minimum=0)
    rng = np.random.default_rng(seed)
    acts = [nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU]
    cases = []
    for i in range(count):
        lossname = list(LOSSES)[rng.integers(len(LOSSES))]
        if rng.random() < 0.5:
            widths = [int(w) for w in rng.integers(2, 5, size=rng.integers(2, 4))]
            layers = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b, bias=bool(rng.random() < 0.8)), acts[rng.integers(4)]()]
            layers.append(nn.Linear(widths[-1], int(rng.integers(2, 4))))
            in_shape = (widths[0],)
        else:
            cin, h = int(rng.integers(1, 3)), int(rng.integers(4, 7))
            k, s, p = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
            cout = int(rng.integers(1, 4))
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bool(rng.random() < 0.8))
            layers = [conv, acts[rng.integers(4)]()]
            ho = conv.output_shape((cin, h, h))[1]
            if ho >= 2 and rng.random() < 0.5:
                layers.append([nn.AvgPool2d, nn.MaxPool2d][rng.integers(2)](2))
            layers.append(nn.Flatten())
            flat = nn.Sequential(*layers).output_shape((cin, h, h))[0]
            layers.append(nn.Linear(flat, int(rng.integers(2, 4))))
            in_shape = (cin, h, h)
        cases.append(build_case(f"drawn-{i}", nn.Sequential(*layers), in_shape, lossname, n,
                                int(rng.integers(2**31))))
    return sorted(cases, key=lambda c: (c.n_params, c.name))
