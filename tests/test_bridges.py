"""Bridges: from_torch/to_torch and to_jax/from_jax round trips are exact, the converted
networks compute the same function, and what refprune does not model is refused by
name.  Skips when torch or jax is absent."""

import numpy as np
import pytest

import refprune as rp
from refprune.testing import assert_close

from cases import ARCHS, CASES, IDS, make

pytestmark = pytest.mark.crosscheck


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_torch_round_trips_are_exact(torch, arch):
    model, params, X, y, loss = make(arch, "ce-mean")
    tmodel, tparams = rp.to_torch(model, params)
    model2, params2 = rp.from_torch(tmodel)
    assert repr(model2) == repr(model)
    assert all(np.array_equal(a, b) for a, b in zip(params, params2))
    # the converted network is the same function
    assert_close(model2(params2, X), tmodel(torch.from_numpy(X)).detach().numpy(), 1e-13, 1e-13, "output")
    # the state dict path
    _, params3 = rp.from_torch(tmodel.state_dict(), model=model)
    assert all(np.array_equal(a, b) for a, b in zip(params, params3))
    # and back again: torch -> refprune -> torch keeps every tensor
    tmodel2, _ = rp.to_torch(model2, params2)
    for (k, a), (k2, b) in zip(tmodel.state_dict().items(), tmodel2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_from_torch_of_a_model_built_in_torch(torch):
    """A network written in torch (nested Sequential, float32, string padding 'valid',
    pooling stride given explicitly) converts and computes the same outputs."""
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding="valid"), torch.nn.ReLU()),
        torch.nn.MaxPool2d(2, stride=2), torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 1, 4), torch.nn.Softplus(),
        torch.nn.Linear(4, 2, bias=False), torch.nn.Sigmoid())
    X = np.random.default_rng(0).standard_normal((5, 2, 6, 5)).astype(np.float32)
    model, params = rp.from_torch(tnet)
    assert [type(layer).__name__ for layer in model] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear",
                                                         "Softplus", "Linear", "Sigmoid"]
    assert all(p.dtype == np.float64 for p in params)
    tvec = torch.nn.utils.parameters_to_vector(tnet.parameters()).detach().double().numpy()
    assert np.array_equal(rp.flatten_params(params), tvec)
    out = tnet.double()(torch.from_numpy(X.astype(np.float64))).detach().numpy()
    assert_close(model(params, X.astype(np.float64)), out, 1e-13, 1e-13, "outputs")


@pytest.mark.parametrize("make_module, words", [
    (lambda t: t.nn.Conv2d(1, 2, 3, dilation=2), r"dilation=\(2, 2\) is not modelled"),
    (lambda t: t.nn.Conv2d(2, 2, 3, groups=2), "groups=2 is not modelled"),
    (lambda t: t.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (lambda t: t.nn.Conv2d(1, 2, 3, padding="same"), "padding='same'"),
    (lambda t: t.nn.AvgPool2d(2, stride=1), "pooling stride must equal the kernel size"),
    (lambda t: t.nn.MaxPool2d(2, padding=1), "padding=1"),
    (lambda t: t.nn.MaxPool2d(2, ceil_mode=True), "ceil_mode=True"),
    (lambda t: t.nn.AvgPool2d((2, 3)), "only square pooling windows"),
    (lambda t: t.nn.BatchNorm2d(2), "BatchNorm is not modelled"),
    (lambda t: t.nn.Dropout(0.1), "Dropout in training mode is not modelled"),
    (lambda t: t.nn.Softplus(beta=2.0), "beta=2.0"),
    (lambda t: t.nn.Flatten(0), "start_dim=0"),
    (lambda t: t.nn.GELU(), "GELU\\) is not a module refprune models"),
    (lambda t: t.nn.LSTM(2, 2), "LSTM\\) is not a module refprune models"),
])
def test_from_torch_refuses_what_refprune_does_not_model(torch, make_module, words):
    with pytest.raises(ValueError, match=words):
        rp.from_torch(torch.nn.Sequential(make_module(torch)))


def test_from_torch_refuses_bad_containers_and_state_dicts(torch):
    class Custom(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="expected a torch.nn.Sequential, got Custom"):
        rp.from_torch(Custom())
    model = rp.Sequential(rp.Linear(3, 2))
    with pytest.raises(TypeError, match="a state dict needs model="):
        rp.from_torch({"0.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="missing '0.bias' \\(layer 0 Linear"):
        rp.from_torch({"0.weight": torch.zeros(2, 3)}, model=model)
    with pytest.raises(ValueError, match="'0.weight' has shape \\(3, 2\\), layer 0 .* expects \\(2, 3\\)"):
        rp.from_torch({"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(2)}, model=model)
    with pytest.raises(ValueError, match="NaN or inf"):
        rp.from_torch({"0.weight": torch.full((2, 3), float("nan")), "0.bias": torch.zeros(2)}, model=model)
    with pytest.raises(TypeError, match="expected a torch.nn.Sequential or a state dict"):
        rp.from_torch([1, 2])


def test_from_torch_copies_never_shares(torch):
    tnet = torch.nn.Sequential(torch.nn.Linear(2, 2).double())
    _, params = rp.from_torch(tnet)
    params[0][:] = 7.0
    assert not torch.any(tnet[0].weight == 7.0)


@pytest.mark.parametrize("arch,lossname", CASES, ids=IDS)
def test_jax_round_trip_and_function(arch, lossname):
    jax = pytest.importorskip("jax")
    model, params, X, y, loss = make(arch, lossname)
    apply, tree = rp.to_jax(model, params)
    back = rp.from_jax(tree, model)
    assert all(np.array_equal(a, b) for a, b in zip(params, back))
    assert_close(np.asarray(jax.jit(apply)(tree, X)), model(params, X), 1e-13, 1e-13, "jax apply")
    # the tree is keyed like PyTorch's state dict
    names = [f"{i}.{k}" for i, layer in enumerate(model) if isinstance(layer, rp.nn.AffineLayer)
             for k in (("weight", "bias") if layer.bias else ("weight",))]
    assert list(tree) == names


def test_from_jax_refuses_mismatched_trees():
    model = rp.Sequential(rp.Linear(3, 2))
    with pytest.raises(ValueError, match=r"missing \['0.bias'\], unexpected \['1.bias'\]"):
        rp.from_jax({"0.weight": np.zeros((2, 3)), "1.bias": np.zeros(2)}, model)
    with pytest.raises(TypeError, match="expected a dict of arrays"):
        rp.from_jax([np.zeros((2, 3))], model)
    with pytest.raises(ValueError, match=r"params\[0\] must have shape \(2, 3\)"):
        rp.from_jax({"0.weight": np.zeros((3, 2)), "0.bias": np.zeros(2)}, model)


def test_bridges_say_how_to_install_a_missing_library(monkeypatch):
    import sys

    model = rp.Sequential(rp.Linear(2, 2))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ImportError, match="pip install torch .*never replaces the torch you have"):
        rp.to_torch(model, model.init())
    with pytest.raises(ImportError, match="pip install torch"):
        rp.from_torch(object())
    with pytest.raises(ImportError, match="pip install jax jaxlib"):
        rp.to_jax(model, model.init())


def test_from_torch_state_dict_is_matched_by_name_not_position(torch):
    """Two Linear(3, 3) layers of equal shape: a state dict in another order (as any
    dict may be) must still give each layer its own weights."""
    torch.manual_seed(1)
    tnet = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3))
    sd = tnet.state_dict()
    shuffled = {k: sd[k] for k in ("2.weight", "2.bias", "0.weight", "0.bias")}
    model = rp.Sequential(rp.Linear(3, 3), rp.Tanh(), rp.Linear(3, 3))
    _, params = rp.from_torch(shuffled, model=model)
    expected = [sd[k].double().numpy() for k in ("0.weight", "0.bias", "2.weight", "2.bias")]
    assert all(np.array_equal(a, b) for a, b in zip(params, expected))
    X = np.random.default_rng(0).standard_normal((4, 3))
    assert_close(model(params, X), tnet.double()(torch.from_numpy(X)).detach().numpy(), 1e-13, 1e-13, "output")


def test_from_torch_state_dict_of_nested_and_named_modules(torch):
    """model= may be the torch Sequential itself: the state dict is read with torch's
    own names (``0.0.weight`` in a nested Sequential, ``fc.bias`` for a named module)."""
    from collections import OrderedDict

    torch.manual_seed(2)
    nested = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()), torch.nn.Linear(4, 4),
                                 torch.nn.Sigmoid(), torch.nn.Linear(4, 4))
    other = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()), torch.nn.Linear(4, 4),
                                torch.nn.Sigmoid(), torch.nn.Linear(4, 4))  # other values, same architecture
    sd = dict(reversed(list(nested.state_dict().items())))
    assert list(sd)[0] == "3.bias"
    model, params = rp.from_torch(sd, model=other)
    names = ["0.0.weight", "0.0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    assert all(np.array_equal(p, sd[k].double().numpy()) for p, k in zip(params, names))
    X = np.random.default_rng(1).standard_normal((5, 3))
    assert_close(model(params, X), nested.double()(torch.from_numpy(X)).detach().numpy(), 1e-13, 1e-13, "output")
    named = torch.nn.Sequential(OrderedDict(conv=torch.nn.Conv2d(1, 2, 3), act=torch.nn.ReLU(),
                                            flat=torch.nn.Flatten(), fc=torch.nn.Linear(8, 2)))
    nsd = named.state_dict()
    model, params = rp.from_torch({k: nsd[k] for k in ("fc.bias", "conv.weight", "fc.weight", "conv.bias")},
                                  model=named)
    assert [p.shape for p in params] == [(2, 1, 3, 3), (2,), (2, 8), (2,)]
    assert np.array_equal(params[2], nsd["fc.weight"].double().numpy())
    with pytest.raises(ValueError, match=r"missing 'fc.bias' .*unexpected \['fc.b'\]"):
        rp.from_torch({"conv.weight": nsd["conv.weight"], "conv.bias": nsd["conv.bias"], "fc.weight": nsd["fc.weight"],
                       "fc.b": nsd["fc.bias"]}, model=named)


def test_from_torch_names_every_missing_extra_and_misplaced_key(torch):
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    sd = {"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(4), "2.bias": torch.zeros(2, 4),
          "1.running_mean": torch.zeros(4)}
    with pytest.raises(ValueError) as err:
        rp.from_torch(sd, model=model)
    msg = str(err.value)
    assert "missing '0.bias' (layer 0 Linear(3, 4, bias=True) bias)" in msg
    assert "unexpected ['1.running_mean'] (buffers such as BatchNorm statistics are not modelled)" in msg
    assert "'2.weight' has shape (4,), layer 2 Linear(4, 2, bias=True) expects (2, 4) for its weight; that is " \
           "the shape of ['0.bias']: misplaced?" in msg
    assert "'2.bias' has shape (2, 4), layer 2 Linear(4, 2, bias=True) expects (2,)" in msg
    wrapped = {"module." + k: v for k, v in rp.to_torch(model, model.init())[0].state_dict().items()}
    with pytest.raises(ValueError, match="every missing key is there with the prefix 'module.': strip it"):
        rp.from_torch(wrapped, model=model)
    nested = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="pass that Sequential as model="):
        rp.from_torch(nested.state_dict(), model=model)
    with pytest.raises(TypeError, match="state dict keys must be strings"):
        rp.from_torch({0: torch.zeros(4, 3)}, model=model)


def test_from_torch_refuses_complex_networks_and_state_dicts(torch):
    cnet = torch.nn.Sequential(torch.nn.Linear(2, 2, dtype=torch.complex128))
    with pytest.raises(TypeError, match=r"parameter 0.weight is complex \(torch.complex128\)"):
        rp.from_torch(cnet)
    model = rp.Sequential(rp.Linear(2, 2))
    with pytest.raises(TypeError, match=r"parameter 0.bias is complex"):
        rp.from_torch({"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2, dtype=torch.complex64)}, model=model)
    with pytest.raises(TypeError, match=r"'0.weight' is complex \(complex128\)"):
        rp.from_torch({"0.weight": np.zeros((2, 2)) + 1e-3j, "0.bias": np.zeros(2)}, model=model)
    with pytest.raises(TypeError, match="must be a real numeric tensor, got torch.bool"):
        rp.from_torch({"0.weight": torch.zeros(2, 2, dtype=torch.bool), "0.bias": torch.zeros(2)}, model=model)
    X = np.ones((2, 2))
    with pytest.raises(TypeError, match="X must be a numeric array, got dtype complex128"):
        rp.bridges.torch_hessian(model, model.init(), X + 1j, np.array([0, 1]), rp.CrossEntropyLoss())


def test_harness_refuses_complex_torch_results(torch):
    from refprune import conformance as cf

    case = cf.make_case("linear", "ce-mean")
    adapter = cf.Adapter(grad=lambda c: torch.from_numpy(rp.grad(*c.args())).to(torch.complex128) + 1e-3j)
    report = cf.check(adapter, [case])
    assert not report.ok and "is complex (complex128)" in str(report)


def test_torch_losses_are_named_as_torchs(torch):
    """A torch loss module where refprune's is expected: the message says whose it is
    and what to write instead, not the same class name twice."""
    model = rp.Sequential(rp.Linear(2, 2))
    X, y = np.ones((2, 2)), np.array([0, 1])
    with pytest.raises(TypeError) as err:
        rp.loss(model, model.init(), X, y, torch.nn.CrossEntropyLoss(reduction="sum"))
    assert "got torch's torch.nn.modules.loss.CrossEntropyLoss: use refprune's " \
           "rp.CrossEntropyLoss(reduction='sum')" in str(err.value)
    with pytest.raises(TypeError, match=r"torch.nn.modules.loss.MSELoss: use refprune's rp.MSELoss\(reduction='mean'\)"):
        rp.grad(model, model.init(), X, np.ones((2, 2)), torch.nn.MSELoss())
    with pytest.raises(TypeError, match="torch.nn.modules.loss.NLLLoss: refprune has rp.CrossEntropyLoss"):
        rp.hessian(model, model.init(), X, y, torch.nn.NLLLoss())
    with pytest.raises(TypeError, match="torch_loss: loss must be a refprune loss"):
        rp.bridges.torch_loss(torch.nn.MSELoss())


def test_from_torch_refuses_a_module_used_twice(torch):
    """Sequential.forward runs a module listed twice twice; named_children() lists it
    once, which used to drop the second use silently."""
    shared = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="layer 2 .* is the same module as layer 0: shared \\(tied\\) parameters"):
        rp.from_torch(torch.nn.Sequential(shared, torch.nn.Tanh(), shared))
    act = torch.nn.Tanh()  # a shared activation has no parameters: every use is converted
    model, _ = rp.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 3), act, torch.nn.Linear(3, 3), act))
    assert [type(layer).__name__ for layer in model] == ["Linear", "Tanh", "Linear", "Tanh"]
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight  # tied weights in two modules
    with pytest.raises(ValueError, match="parameter 2.weight is the same tensor as 0.weight"):
        rp.from_torch(torch.nn.Sequential(a, torch.nn.Tanh(), b))
