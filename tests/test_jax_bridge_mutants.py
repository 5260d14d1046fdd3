"""refprune.bridges.jax_bridge layer by layer, against refprune's own forward pass, loss,
gradient and Hessian (a second route: refprune's NumPy code, not JAX's): the tree's names
and values (PyTorch's state-dict names), each layer type on inputs of both signs and on
image sizes the pools do not divide, the three losses with both reductions, float64
throughout, and the refusals word for word.  Skips when JAX is absent (as under mutmut:
``tools/mutant_check.py --fresh-process`` runs it)."""

import sys

import numpy as np
import pytest

import refprune as rp
from refprune import nn
from refprune.bridges import jax_bridge as jb

jax = pytest.importorskip("jax")

pytestmark = pytest.mark.crosscheck


def _close(a, b, tol=1e-13):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == np.float64, (a.shape, b.shape, a.dtype)
    assert np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b))), np.max(np.abs(a - b))


def _x(shape, seed=0):
    return 1.5 * np.random.default_rng(seed).standard_normal(shape)  # entries of both signs, some beyond +-1


MODELS = {
    "linear-tanh": (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False)), (3,)),
    "relu": (nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3)), (3,)),
    "sigmoid": (nn.Sequential(nn.Linear(3, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 2)), (3,)),
    "softplus": (nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 2)), (3,)),
    "conv": (nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(27, 2)),
             (2, 5, 5)),
    "conv-nobias-avg": (nn.Sequential(nn.Conv2d(1, 2, (2, 3), stride=(1, 2), padding=(0, 1), bias=False),
                                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 1, 3)), (1, 6, 4)),
    "maxpool": (nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 3, 2)),
                (2, 5, 7)),
    "avgpool3": (nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(4, 2)),
                 (1, 7, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_to_jax_is_refprunes_network_with_state_dict_names(name):
    model, shape = MODELS[name]
    params = model.init(3)
    X = _x((4,) + shape, seed=1)
    apply, tree = rp.to_jax(model, params)
    # PyTorch's state-dict names, written out from the layers (weight, then bias if any)
    want = []
    for i, layer in enumerate(model):
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            want += [f"{i}.weight"] + ([f"{i}.bias"] if layer.bias else [])
    assert jb.param_names(model) == want == list(tree)
    for k, p in zip(want, params):
        assert tree[k].dtype == np.float64 and np.array_equal(np.asarray(tree[k]), p)
    _close(apply(tree, X), model(params, X))
    back = rp.from_jax(tree, model)
    assert all(a.dtype == np.float64 and np.array_equal(a, b) for a, b in zip(back, params))


def test_the_activations_on_both_signs():
    x = np.linspace(-3, 3, 13).reshape(1, 13)
    for layer, f in [(nn.ReLU(), lambda t: np.where(t > 0, t, 0.0)), (nn.Tanh(), np.tanh),
                     (nn.Sigmoid(), lambda t: 1 / (1 + np.exp(-t))), (nn.Softplus(), lambda t: np.log1p(np.exp(t)))]:
        _close(jb._apply_layer(jax, layer, [], jax.numpy.asarray(x)), f(x), 1e-15)


class _Cube(nn.activations.Elementwise):
    """An activation refprune's bridges do not know."""

    def __repr__(self):
        return "Cube()"


def test_a_layer_without_a_jax_equivalent_is_named():
    with pytest.raises(TypeError) as err:
        jb._apply_layer(jax, _Cube(), [], jax.numpy.ones((1, 2)))
    assert str(err.value) == "no JAX equivalent known for Cube()"


LOSSES = [(nn.CrossEntropyLoss, "ce"), (nn.MSELoss, "mse"), (nn.BCEWithLogitsLoss, "bce")]


def _targets(kind, n, c, rng):
    if kind == "ce":
        return rng.integers(c, size=n)
    if kind == "bce":
        return rng.integers(2, size=(n, c)).astype(float)
    return rng.standard_normal((n, c))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("cls, kind", LOSSES, ids=[k for _, k in LOSSES])
def test_the_loss_function_and_its_gradient_are_refprunes(cls, kind, reduction):
    model, shape = MODELS["linear-tanh"]
    rng = np.random.default_rng(5)
    params = model.init(2)
    X, y, loss = _x((5,) + shape, seed=2), _targets(kind, 5, 2, rng), cls(reduction)
    L = jb.jax_loss_function(model, X, y, loss)
    theta = rp.flatten_params(params)
    _close(L(theta), rp.loss(model, params, X, y, loss))
    _close(jax.grad(L)(theta), rp.grad(model, params, X, y, loss))


def test_the_loss_function_of_a_convnet_with_three_outputs():
    model, shape = MODELS["avgpool3"]
    model = nn.Sequential(*list(model)[:-1], nn.Linear(4, 3))
    params = model.init(4)
    X = _x((3,) + shape, seed=3)
    for loss, y in [(nn.CrossEntropyLoss("sum"), np.array([2, 0, 1])),
                    (nn.MSELoss("mean"), _x((3, 3), seed=4))]:
        _close(jb.jax_loss_function(model, X, y, loss)(rp.flatten_params(params)), rp.loss(model, params, X, y, loss))


def test_the_hessian_is_refprunes():
    model = nn.Sequential(nn.Linear(2, 3), nn.Softplus(), nn.Linear(3, 2))
    params = model.init(1)
    X, y = _x((4, 2), seed=6), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    loss = nn.BCEWithLogitsLoss("mean")
    H = jb.jax_hessian(model, params, X, y, loss)
    assert isinstance(H, np.ndarray) and H.dtype == np.float64
    _close(H, rp.hessian(model, params, X, y, loss), 1e-12)


def test_from_jax_refusals_word_for_word():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2, bias=False))
    good = {"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(2), "2.weight": np.zeros((2, 2))}
    with pytest.raises(TypeError) as err:
        rp.from_jax(list(good.values()), model)
    assert str(err.value) == ("from_jax: expected a dict of arrays keyed like ['0.weight', '0.bias', '2.weight'], "
                              "got list")
    with pytest.raises(ValueError) as err:
        rp.from_jax({"0.weight": good["0.weight"], "2.weight": good["2.weight"], "1.bias": np.zeros(2)}, model)
    assert str(err.value) == "from_jax: keys do not match the model: missing ['0.bias'], unexpected ['1.bias']"
    with pytest.raises(ValueError) as err:
        rp.from_jax(dict(good, extra=np.zeros(1)), model)
    assert str(err.value) == "from_jax: keys do not match the model: missing [], unexpected ['extra']"
    with pytest.raises(TypeError) as err:
        rp.from_jax(dict(good, **{"0.bias": np.zeros(2, complex)}), model)
    assert str(err.value) == ("from_jax: entry '0.bias' is complex (complex128): refprune's quantities are real "
                              "float64, and the imaginary part would be dropped silently; give a real pytree")
    # a value of another type: copied as float64 (the caller's arrays untouched)
    ints = dict(good, **{"0.weight": np.arange(6).reshape(2, 3)})
    back = rp.from_jax(ints, model)
    assert back[0].dtype == np.float64 and np.array_equal(back[0], np.arange(6).reshape(2, 3))
    back[0][:] = -1
    assert np.array_equal(ints["0.weight"], np.arange(6).reshape(2, 3))


def test_complex_data_and_parameters_are_refused_never_cast():
    model = nn.Sequential(nn.Linear(2, 2))
    params = model.init(0)
    X, y = _x((3, 2)), np.array([0, 1, 1])
    with pytest.raises(TypeError, match="complex"):
        jb.jax_loss_function(model, X + 0j, y, nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="complex"):
        jb.jax_hessian(model, [p + 0j for p in params], X, y, nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="complex"):
        rp.to_jax(model, [p + 0j for p in params])


def test_without_jax_the_bridge_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ImportError) as err:
        jb._jax()
    assert str(err.value) == "this bridge needs JAX: pip install jax jaxlib (or pip install 'refprune[jax]')"
    assert isinstance(err.value.__cause__, ImportError)


def test_the_bridge_turns_on_float64():
    assert jb._jax() is jax and jax.config.jax_enable_x64
    assert jax.numpy.asarray(np.ones(2)).dtype == np.float64
