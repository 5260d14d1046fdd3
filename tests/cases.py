"""Named network cases, as data (the curvlinops ``cases.py`` pattern): every layer type
appears in a hidden position, where its second derivative matters."""

import numpy as np

import refprune as rp

ARCHS = {
    "mlp-tanh": (lambda: rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3)), (3,)),
    "mlp-sigmoid-softplus": (
        lambda: rp.Sequential(rp.Linear(3, 3), rp.Sigmoid(), rp.Linear(3, 3, bias=False), rp.Softplus(),
                              rp.Linear(3, 2)), (3,)),
    "mlp-relu": (lambda: rp.Sequential(rp.Linear(4, 5), rp.ReLU(), rp.Linear(5, 3)), (4,)),
    "conv-tanh-avgpool": (
        lambda: rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.Tanh(), rp.AvgPool2d(2), rp.Flatten(),
                              rp.Linear(8, 3)), (1, 4, 4)),
    "conv-relu-maxpool-stride": (
        lambda: rp.Sequential(rp.Conv2d(2, 2, 2, stride=2, padding=1), rp.ReLU(), rp.MaxPool2d(2),
                              rp.Flatten(), rp.Linear(2, 3)), (2, 3, 3)),
    "conv-conv-softplus": (
        lambda: rp.Sequential(rp.Conv2d(1, 2, (2, 3), stride=(1, 2), bias=False), rp.Softplus(),
                              rp.Conv2d(2, 1, 2), rp.Sigmoid(), rp.Flatten(), rp.Linear(2, 2)), (1, 4, 6)),
}

LOSSES = {
    "ce-mean": lambda: rp.CrossEntropyLoss("mean"),
    "ce-sum": lambda: rp.CrossEntropyLoss("sum"),
    "mse-mean": lambda: rp.MSELoss("mean"),
    "mse-sum": lambda: rp.MSELoss("sum"),
    "bce-mean": lambda: rp.BCEWithLogitsLoss("mean"),
    "bce-sum": lambda: rp.BCEWithLogitsLoss("sum"),
}


def make(arch, loss, n=3, seed=0):
    """``(model, params, X, y, loss)`` for a named case; parameters at twice PyTorch's
    initial scale so that activations are well inside their nonlinear range."""
    build, in_shape = ARCHS[arch]
    model = build()
    rng = np.random.default_rng(seed)
    params = [2.0 * p for p in model.init(seed)]
    X = rng.standard_normal((n,) + in_shape)
    c = model.output_shape(in_shape)[0]
    lf = LOSSES[loss]()
    if isinstance(lf, rp.CrossEntropyLoss):
        y = rng.integers(0, c, n)
    elif isinstance(lf, rp.BCEWithLogitsLoss):
        y = rng.integers(0, 2, (n, c)).astype(float)  # hard labels: the other libraries refuse soft ones
    else:
        y = rng.standard_normal((n, c))
    return model, params, X, y, lf


def small_mlp(n=12, seed=0):
    """A 3-4-3 tanh classifier with cross-entropy (31 parameters, 24 prunable weights),
    small enough for the dense references of the pruning tests."""
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 3))
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, 3)), rng.integers(0, 3, n)
    return model, [2 * p for p in model.init(seed=seed)], X, y, rp.CrossEntropyLoss()


CASES = [(a, l) for a in ARCHS for l in LOSSES]
IDS = [f"{a}/{l}" for a, l in CASES]
