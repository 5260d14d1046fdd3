"""EigenDamage against a reference written from Wang et al. (2019), §4, and
``docs/pruning_explained.md`` §5: every removed direction, its importance, the predicted
change, the pruned function, the record of each layer, the cap and the options' paths."""

import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.testing import assert_close


def _matrix(W, b):
    """``[W | b]`` with a convolution's kernel flattened (input channel, row, column)."""
    M = W.reshape(W.shape[0], -1)
    return np.hstack([M, b[:, None]]) if b is not None else M


def reference(model, params, X, y, loss, sparsity, cap, eigenvalues, curvature, **mc):
    """The directions EigenDamage removes, in order, and the dense pruned weights.

    Importance of ``W*_ij = (U_S^T [W | b] U_A)_ij`` is ``W*_ij^2 kappa_ij / 2`` with
    ``kappa = sigma alpha^T`` (K-FAC) or EKFAC's re-estimates; a direction's importance
    is its row's (S side) or column's (A side) sum; the cheapest go first, at most
    ``floor(cap * size)`` and never every one of a side."""
    K = rp.kfac(model, params, X, y, loss, curvature=curvature, **mc)
    E = rp.ekfac(model, params, X, y, loss, curvature=curvature, **mc)
    grouped = model.group_params(params)
    layers = [j for j, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)]
    info, dirs = [], []
    for li, j in enumerate(layers):
        s, US, a, UA = K.blocks[li].eigh()
        W, b = grouped[j][0], (grouped[j][1] if model[j].bias else None)
        Ws = US.T @ _matrix(W, b) @ UA
        kappa = E.blocks[li].scales if eigenvalues == "ekfac" else np.outer(s, a)
        imp = Ws**2 * kappa / 2
        info.append((US, UA, Ws, imp))
        dirs += [(v, li, 0, i) for i, v in enumerate(imp.sum(axis=1))]
        dirs += [(v, li, 1, i) for i, v in enumerate(imp.sum(axis=0))]
    goal = int(np.floor(sparsity * len(dirs)))
    taken = []
    for v, li, side, i in sorted(dirs):
        if len(taken) == goal:
            break
        size = info[li][3].shape[side]
        if sum(1 for t in taken if t[1:3] == (li, side)) < min(int(np.floor(cap * size)), size - 1):
            taken.append((v, li, side, i))
    predicted, dense = 0.0, []
    for li, (US, UA, Ws, imp) in enumerate(info):
        rows = sorted(i for _, l, side, i in taken if (l, side) == (li, 0))
        cols = sorted(i for _, l, side, i in taken if (l, side) == (li, 1))
        gone = np.zeros(imp.shape, dtype=bool)
        gone[rows, :] = True
        gone[:, cols] = True
        predicted += imp[gone].sum()
        dense.append(US @ np.where(gone, 0.0, Ws) @ UA.T)
    return taken, predicted, dense, len(dirs)


def _dense_params(model, params, dense):
    """The original architecture carrying the pruned ``[W' | b']`` of every layer."""
    out, li = [], 0
    for j, (layer, group) in enumerate(zip(model, model.group_params(params))):
        if isinstance(layer, rp.nn.AffineLayer):
            M = dense[li]
            W = M[:, : group[0][0].size].reshape(group[0].shape)
            out += [W] + ([M[:, -1]] if layer.bias else [])
            li += 1
        else:
            out += group
    return out


def conv_problem():
    rng = np.random.default_rng(3)
    model = rp.Sequential(rp.Conv2d(2, 6, 3, stride=2, padding=1), rp.Tanh(), rp.Flatten(),
                          rp.Linear(6 * 9, 5, bias=False), rp.Tanh(), rp.Linear(5, 3))
    params = model.init(1)
    X, y = rng.standard_normal((24, 2, 5, 5)), rng.integers(0, 3, 24)
    return model, params, X, y, rp.CrossEntropyLoss()


def mlp_problem():
    rng = np.random.default_rng(4)
    model = rp.Sequential(rp.Linear(7, 9), rp.Tanh(), rp.Linear(9, 8, bias=False), rp.Sigmoid(), rp.Linear(8, 3))
    params = model.init(2)
    X, y = rng.standard_normal((30, 7)), rng.integers(0, 3, 30)
    return model, params, X, y, rp.CrossEntropyLoss()


CASES = [
    (conv_problem, 0.5, 0.9, "ekfac", "fisher", {}),
    (conv_problem, 0.3, 0.4, "kfac", "empirical_fisher", {}),
    (mlp_problem, 0.45, 0.6, "ekfac", "mc_fisher", dict(samples=2, seed=7)),
    (mlp_problem, 0.7, 1.0, "kfac", "ggn", {}),
]


@pytest.mark.parametrize("problem, sparsity, cap, eigenvalues, curvature, mc", CASES)
def test_eigendamage_equals_the_reference(problem, sparsity, cap, eigenvalues, curvature, mc):
    model, params, X, y, loss = problem()
    taken, predicted, dense, n_dirs = reference(model, params, X, y, loss, sparsity, cap, eigenvalues, curvature, **mc)
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=sparsity, max_layer_fraction=cap,
                 eigenvalues=eigenvalues, curvature=curvature, **mc)
    (step,) = r.steps
    assert step.step == 1
    assert step.removed.dtype == np.int64 and step.removed.shape == (len(taken), 3)
    assert step.removed.tolist() == [[li, side, i] for _, li, side, i in taken]
    assert_close(step.saliencies, np.array([t[0] for t in taken]), 1e-12, 1e-15, "direction importances")
    assert_close(step.predicted, predicted, 1e-12, 1e-15, "predicted change: each removed entry once")
    assert step.sparsity == len(taken) / n_dirs
    # the pruned network computes the dense low-rank weights on the original architecture
    pruned = _dense_params(model, params, dense)
    assert_close(r.model(r.params, X), model(pruned, X), 1e-11, 1e-12, "pruned function")
    L0, L1 = rp.loss(model, params, X, y, loss), rp.loss(model, pruned, X, y, loss)
    assert_close(step.loss, L1, 1e-11, 1e-13, "loss after")
    assert_close(step.actual, L1 - L0, 1e-10, 1e-13, "actual change")
    assert step.actual_without_update == step.actual
    assert step.layers == expected_layers(model, step.removed)
    assert r.model.n_params == sum(p.size for p in r.params)
    assert r.mask.shape == (r.model.n_params,) and r.mask.all()
    assert r.method == "eigendamage"


def expected_layers(model, removed):
    """``(layer, kind, parameters after, before)``: the bottleneck ``U_A' -> W*' -> U_S'``
    has ``kA p + kA kS + kS c`` parameters and is kept only when that is fewer."""
    out, li = [], 0
    for j, layer in enumerate(model):
        if not isinstance(layer, rp.nn.AffineLayer):
            continue
        c, p = layer.out_units, layer.n_weight // layer.out_units + layer.bias
        kS = c - sum(1 for l, side, _ in removed if (l, side) == (li, 0))
        kA = p - sum(1 for l, side, _ in removed if (l, side) == (li, 1))
        size = kA * p + kA * kS + kS * c
        out.append((j, "bottleneck", size, layer.n_params) if size < layer.n_params
                   else (j, "dense", layer.n_params, layer.n_params))
        li += 1
    return out


def test_both_kinds_of_layer_occur():
    model, params, X, y, loss = mlp_problem()
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.5, max_layer_fraction=0.9)
    assert r.steps[0].layers == expected_layers(model, r.steps[0].removed)
    assert sorted({kind for _, kind, _, _ in r.steps[0].layers}) == ["bottleneck", "dense"]


def test_a_bottleneck_as_large_as_the_layer_stays_dense():
    """Linear(6, 6) without bias (36 weights): 7 of its 12 directions removed with at most 4
    per side keeps 2 and 3, and 6*2 + 2*3 + 3*6 = 36 is not fewer."""
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(6, 6, bias=False))
    params = model.init(0)
    X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 6))
    r = rp.prune(model, params, X, Y, rp.MSELoss(), method="eigendamage", sparsity=0.59, max_layer_fraction=0.67,
                 eigenvalues="kfac")
    sides = sorted(np.bincount(r.steps[0].removed[:, 1], minlength=2).tolist())
    assert sides == [3, 4]
    assert r.steps[0].layers == [(0, "dense", 36, 36)]
    assert [type(layer) for layer in r.model] == [rp.Linear]


def test_nothing_to_remove_warns_and_keeps_the_function():
    model, params, X, y, loss = mlp_problem()
    with pytest.warns(rp.PruningWarning, match=r"prune \(eigendamage\): sparsity=0.01 of 46 .* and 0 are already"):
        r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.01)
    assert r.steps[0].removed.shape == (0, 3) and r.steps[0].removed.dtype == np.int64
    assert r.steps[0].predicted == 0.0 and r.steps[0].sparsity == 0.0
    assert_close(r.model(r.params, X), model(params, X), 1e-12, 1e-12, "nothing removed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=1 / 46)


def test_the_cap_and_its_message():
    model, params, X, y, loss = mlp_problem()
    for bad in (0, 0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match=r"max_layer_fraction must be in \(0, 1\], got"):
            rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.3, max_layer_fraction=bad)
    # cap 1 still keeps one direction per side: 46 directions, 6 sides, 40 removable
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.87, max_layer_fraction=1.0)
    assert len(r.steps[0].removed) == 40
    with pytest.raises(ValueError, match=r"eigendamage: sparsity 0.9 exceeds what the per-layer cap "
                                         r"max_layer_fraction=1.0 allows \(40 of 46 directions\)"):
        rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.9, max_layer_fraction=1.0)


def test_retraining_uses_the_seed_given_to_prune():
    model, params, X, y, loss = mlp_problem()
    opts = dict(epochs=2, batch_size=7, lr=0.05)
    r0 = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.4)
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.4, retrain=opts, seed=5)
    p, hist = rp.train(r0.model, r0.params, X, y, loss, seed=5, **opts)
    assert r.steps[0].retrain_history == hist
    for a, b in zip(r.params, p):
        assert np.array_equal(a, b)


def test_a_strided_convolution_without_bias_as_a_bottleneck():
    rng = np.random.default_rng(6)
    model = rp.Sequential(rp.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), rp.Tanh(), rp.AvgPool2d(3),
                          rp.Flatten(), rp.Linear(16, 4))
    params = model.init(2)
    X, y = rng.standard_normal((20, 3, 6, 6)), rng.integers(0, 4, 20)
    loss = rp.CrossEntropyLoss()
    taken, predicted, dense, _ = reference(model, params, X, y, loss, 0.85, 0.95, "ekfac", "fisher")
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.85, max_layer_fraction=0.95)
    assert r.steps[0].layers[0][1] == "bottleneck"
    first = r.model[0]
    assert (first.kernel_size, first.stride, first.padding, first.bias) == ((3, 3), (2, 2), (1, 1), False)
    assert_close(r.model(r.params, X), model(_dense_params(model, params, dense), X), 1e-11, 1e-12, "bottleneck")
    assert r.steps[0].predicted == pytest.approx(predicted, rel=1e-12)


def test_the_smaller_network_s_parameters_have_its_layers_shapes():
    model, params, X, y, loss = conv_problem()
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.8, max_layer_fraction=0.95)
    assert r.steps[0].layers[0][:2] == (0, "bottleneck") and "bottleneck" in {kind for _, kind, _, _ in r.steps[0].layers}
    assert [p.shape for p in r.params] == [tuple(s) for layer in r.model for s in layer.param_shapes()]
