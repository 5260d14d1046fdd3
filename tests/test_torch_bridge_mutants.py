"""``refprune.bridges.torch_bridge``'s refusals word for word, and what it builds compared
with torch itself: each option refprune does not model is refused naming the layer as
torch names it, the option and the reason; a state dict's every missing, unexpected and
misshapen key is named; converted layers and losses compute what torch's do.  Skips
without torch (so under mutmut too; ``tools/mutant_check.py --optional-libraries`` runs it)."""

import re
from collections import OrderedDict

import numpy as np
import pytest

import refprune as rp
from refprune.bridges import torch_bridge as tb

from test_store_mutants import _raises_exactly

torch = pytest.importorskip("torch")
tnn = torch.nn


def _not_modelled(name, m, option, why):
    return f"from_torch: layer {name} ({m!r}): {option} is not modelled by refprune ({why})"


# every module refprune refuses, alone in a Sequential (so torch names it "0"), with the
# option and the reason the message must give
_REFUSED = {
    "dilation": (lambda: tnn.Conv2d(1, 2, 3, dilation=2), "dilation=(2, 2)", "only dilation 1"),
    "dilation on one axis": (lambda: tnn.Conv2d(1, 2, 3, dilation=(1, 2)), "dilation=(1, 2)", "only dilation 1"),
    "groups": (lambda: tnn.Conv2d(2, 2, 3, groups=2), "groups=2", "only groups=1"),
    "padding mode": (lambda: tnn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), "padding_mode='circular'",
                     "only zero padding"),
    "padding same": (lambda: tnn.Conv2d(1, 2, 3, padding="same"), "padding='same'", "give the padding as numbers"),
    "pool window not square": (lambda: tnn.MaxPool2d((2, 3)), "kernel_size=(2, 3)", "only square pooling windows"),
    "pool stride": (lambda: tnn.AvgPool2d(2, stride=1), "stride=1", "pooling stride must equal the kernel size"),
    "pool stride on one axis": (lambda: tnn.MaxPool2d(2, stride=(2, 1)), "stride=(2, 1)",
                                "pooling stride must equal the kernel size"),
    "pool padding": (lambda: tnn.AvgPool2d(2, padding=1), "padding=1", "no padding in pooling"),
    "pool padding on one axis": (lambda: tnn.MaxPool2d(2, padding=(0, 1)), "padding=(0, 1)", "no padding in pooling"),
    "ceil mode": (lambda: tnn.AvgPool2d(2, ceil_mode=True), "ceil_mode=True",
                  "windows are floored, as PyTorch's default"),
    "max pool dilation": (lambda: tnn.MaxPool2d(2, dilation=2), "dilation=2", "only dilation 1"),
    "return indices": (lambda: tnn.MaxPool2d(2, return_indices=True), "return_indices=True",
                       "a layer returns one array"),
    "divisor override": (lambda: tnn.AvgPool2d(2, divisor_override=3), "divisor_override=3",
                         "the mean over the window"),
    "softplus beta": (lambda: tnn.Softplus(beta=2.0), "beta=2.0", "only beta=1"),
    "flatten start": (lambda: tnn.Flatten(0), "start_dim=0, end_dim=-1", "Flatten keeps the batch axis only"),
    "flatten end": (lambda: tnn.Flatten(1, 2), "start_dim=1, end_dim=2", "Flatten keeps the batch axis only"),
    "dropout training": (lambda: tnn.Dropout(0.1), "Dropout in training mode",
                         "it zeroes random entries; in evaluation mode (call .eval() on the network) it is the "
                         "identity and from_torch leaves it out"),
    "dropout2d training": (lambda: tnn.Dropout2d(0.5), "Dropout2d in training mode",
                           "it zeroes random entries; in evaluation mode (call .eval() on the network) it is the "
                           "identity and from_torch leaves it out"),
    "batch norm": (lambda: tnn.BatchNorm1d(2), "BatchNorm", "fold it into the preceding Linear/Conv2d before "
                                                            "converting"),
}


@pytest.mark.parametrize("case", list(_REFUSED))
def test_each_option_refprune_does_not_model_is_refused_in_full(case):
    make, option, why = _REFUSED[case]
    m = make()
    _raises_exactly(ValueError, _not_modelled("0", m, option, why), lambda: rp.from_torch(tnn.Sequential(m)))


@pytest.mark.parametrize("make", [lambda: tnn.GELU(), lambda: tnn.Conv1d(1, 1, 2), lambda: tnn.ConvTranspose2d(1, 1, 2)])
def test_a_module_refprune_does_not_model_is_named_with_the_supported_list(make):
    m = make()
    _raises_exactly(ValueError, f"from_torch: layer 1 ({type(m).__name__}) is not a module refprune models; "
                    "supported: Linear, Conv2d, ReLU, Tanh, Sigmoid, Softplus, AvgPool2d, MaxPool2d, Flatten, and "
                    "Identity and Dropout in evaluation mode (left out); custom modules are refused",
                    lambda: rp.from_torch(tnn.Sequential(tnn.Identity(), m)))


def _forward(model, params, X):
    return model(params, X)


@pytest.mark.parametrize("make, shape", [
    (lambda: tnn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0)), (2, 2, 5, 6)),
    (lambda: tnn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), (2, 2, 5, 6)),
    (lambda: tnn.Conv2d(2, 3, 2, padding="valid", dilation=(1, 1)), (2, 2, 4, 5)),
    (lambda: tnn.AvgPool2d(2), (2, 2, 5, 4)),
    (lambda: tnn.AvgPool2d((3, 3), stride=(3, 3), divisor_override=None), (2, 1, 6, 7)),
    (lambda: tnn.MaxPool2d(2, stride=2, padding=(0, 0), dilation=(1, 1)), (2, 2, 5, 4)),
    (lambda: tnn.Softplus(beta=1, threshold=40), (3, 4)),
    (lambda: tnn.Flatten(1, -1), (2, 2, 3, 3)),
    (lambda: tnn.Sigmoid(), (3, 4)),
    (lambda: tnn.ReLU(), (3, 4)),
    (lambda: tnn.Tanh(), (3, 4)),
    (lambda: tnn.Linear(4, 2, bias=False), (3, 4)),
])
def test_each_modelled_module_computes_what_torch_computes(make, shape):
    torch.manual_seed(0)
    m = make().double()
    X = torch.randn(*shape, dtype=torch.float64)
    model, params = rp.from_torch(tnn.Sequential(m))
    assert len(model) == 1
    want = m(X).detach().numpy()
    np.testing.assert_allclose(_forward(model, params, X.numpy()), want, rtol=1e-13, atol=1e-14)


def test_identity_modules_are_left_out_and_an_empty_network_refused():
    _raises_exactly(ValueError, "from_torch: the network has no layer refprune models (only Identity or Dropout)",
                    lambda: rp.from_torch(tnn.Sequential(tnn.Identity(), tnn.Dropout(0.3).eval(), tnn.Dropout(0.0))))
    model, params = rp.from_torch(tnn.Sequential(tnn.Dropout(0.0), tnn.Linear(2, 3), tnn.AlphaDropout(0.2).eval()))
    assert [type(layer) for layer in model] == [rp.Linear]


def test_a_custom_module_and_other_containers_are_refused_in_full():
    class Net(tnn.Module):
        pass

    _raises_exactly(ValueError, "from_torch: expected a torch.nn.Sequential, got Net (custom modules are refused: "
                    "write the network as a Sequential)", lambda: rp.from_torch(Net()))
    _raises_exactly(ValueError, "from_torch: expected a torch.nn.Sequential, got ModuleList (custom modules are "
                    "refused: write the network as a Sequential)",
                    lambda: rp.from_torch({}, model=tnn.ModuleList([tnn.Linear(2, 2)])))
    _raises_exactly(TypeError, "from_torch: expected a torch.nn.Sequential or a state dict, got list",
                    lambda: rp.from_torch([tnn.Linear(2, 2)]))
    _raises_exactly(TypeError, "from_torch: a state dict needs model=, the refprune Sequential or the "
                    "torch.nn.Sequential it belongs to, got NoneType", lambda: rp.from_torch({}))
    _raises_exactly(TypeError, "from_torch: a state dict needs model=, the refprune Sequential or the "
                    "torch.nn.Sequential it belongs to, got int", lambda: rp.from_torch({}, model=3))
    net = tnn.Sequential(tnn.Linear(2, 2))
    _raises_exactly(ValueError, "from_torch: pass either a torch module or a state dict with model=, not both",
                    lambda: rp.from_torch(net, model=net))


def test_tied_modules_and_tensors_are_refused_in_full():
    shared = tnn.Linear(2, 2)
    _raises_exactly(ValueError, f"from_torch: layer 0.2 ({shared!r}) is the same module as layer 0.0: shared (tied) "
                    "parameters are not modelled; give each layer its own module",
                    lambda: rp.from_torch(tnn.Sequential(tnn.Sequential(shared, tnn.Tanh(), shared))))
    a, b = tnn.Linear(2, 2), tnn.Linear(2, 2)
    b.bias = a.bias
    _raises_exactly(ValueError, "from_torch: parameter 2.bias is the same tensor as 0.bias: shared (tied) parameters "
                    "are not modelled; give each layer its own parameters",
                    lambda: rp.from_torch(tnn.Sequential(a, tnn.Tanh(), b)))
    # a module without parameters may appear twice
    model, _ = rp.from_torch(tnn.Sequential(tnn.Linear(2, 2), shared_act := tnn.Tanh(), tnn.Linear(2, 2), shared_act))
    assert [type(layer).__name__ for layer in model] == ["Linear", "Tanh", "Linear", "Tanh"]


def test_parameter_values_are_refused_by_kind_in_full():
    net = tnn.Sequential(tnn.Linear(2, 3))
    sd = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(3, dtype=torch.complex64)}
    _raises_exactly(TypeError, "from_torch: parameter 0.bias is complex (torch.complex64); refprune's parameters are "
                    "real float64: convert a real network", lambda: rp.from_torch(sd, model=net))
    sd["0.bias"] = torch.zeros(3, dtype=torch.bool)
    _raises_exactly(TypeError, "from_torch: parameter 0.bias must be a real numeric tensor, got torch.bool",
                    lambda: rp.from_torch(sd, model=net))
    sd["0.bias"] = torch.tensor([0.0, float("inf"), 1.0])
    _raises_exactly(ValueError, "from_torch: parameter 0.bias contains NaN or inf", lambda: rp.from_torch(sd, model=net))
    sd["0.bias"] = np.array([0.0, np.nan, 1.0])
    _raises_exactly(ValueError, "from_torch: parameter 0.bias contains NaN or inf", lambda: rp.from_torch(sd, model=net))
    # integers, float16 and NumPy values widen exactly; the result is a copy
    src = torch.arange(6, dtype=torch.int32).reshape(3, 2)
    half = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16)
    model, (W, c) = rp.from_torch({"0.weight": src, "0.bias": half}, model=net)
    assert W.dtype == c.dtype == np.float64
    assert np.array_equal(W, np.arange(6.0).reshape(3, 2)) and np.array_equal(c, [0.5, -1.25, 3.0])
    W[0, 0] = 9.0
    assert src[0, 0].item() == 0


def _linear_net():
    return tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh(), tnn.Linear(4, 2))


def test_state_dict_problems_are_named_together_in_full():
    net = _linear_net()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    expected = "['0.weight', '0.bias', '2.weight', '2.bias']"
    head = f"from_torch: the state dict does not match the model (matched by name, as torch.nn.Module.load_state_dict does; expected keys {expected}): "
    bad = dict(sd)
    del bad["2.bias"]
    bad["2.b"] = sd["2.bias"]
    bad["0.weight"] = sd["0.weight"].T
    _raises_exactly(ValueError, head + "missing '2.bias' (layer 2 Linear(4, 2, bias=True) bias); unexpected ['2.b']; "
                    "'0.weight' has shape (3, 4), layer 0 Linear(3, 4, bias=True) expects (4, 3) for its weight",
                    lambda: rp.from_torch(bad, model=net))
    # a weight of another layer's shape is named as possibly misplaced
    twin = tnn.Sequential(tnn.Linear(3, 3), tnn.Tanh(), tnn.Linear(3, 3, bias=False), tnn.Tanh(), tnn.Linear(3, 2))
    tsd = dict(twin.state_dict())
    tsd["4.weight"] = torch.zeros(3, 3)
    _raises_exactly(ValueError, "from_torch: the state dict does not match the model (matched by name, as "
                    "torch.nn.Module.load_state_dict does; expected keys ['0.weight', '0.bias', '2.weight', "
                    "'4.weight', '4.bias']): '4.weight' has shape (3, 3), layer 4 Linear(3, 2, bias=True) expects "
                    "(2, 3) for its weight; that is the shape of ['0.weight', '2.weight']: misplaced?",
                    lambda: rp.from_torch(tsd, model=twin))
    # buffers, a prefix to strip, and a refprune model's own names
    bn = dict(sd, **{"1.running_mean": torch.zeros(4)})
    _raises_exactly(ValueError, head + "unexpected ['1.running_mean'] (buffers such as BatchNorm statistics are not "
                    "modelled)", lambda: rp.from_torch(bn, model=net))
    wrapped = {"module." + k: v for k, v in sd.items()}
    _raises_exactly(ValueError, head + "missing " + ", ".join(
        f"'{k}' (layer {k[0]} {'Linear(3, 4, bias=True)' if k[0] == '0' else 'Linear(4, 2, bias=True)'} "
        f"{k.split('.')[1]})" for k in sd) + f"; unexpected {list(wrapped)}; every missing key is there with the "
        "prefix 'module.': strip it", lambda: rp.from_torch(wrapped, model=net))
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    nested = {"fc.w": sd["0.weight"], "0.bias": sd["0.bias"], "2.weight": sd["2.weight"], "2.bias": sd["2.bias"]}
    _raises_exactly(ValueError, head + "missing '0.weight' (layer 0 Linear(3, 4, bias=True) weight); unexpected "
                    "['fc.w']; a refprune model's layer i has 'i.weight' and 'i.bias'; for the names of a nested "
                    "or named torch Sequential pass that Sequential as model=",
                    lambda: rp.from_torch(nested, model=model))
    _raises_exactly(TypeError, "from_torch: state dict keys must be strings such as '0.weight', got 0",
                    lambda: rp.from_torch({0: sd["0.weight"], **sd}, model=net))


def test_a_state_dict_fills_the_model_by_name():
    net = _linear_net().double()
    sd = OrderedDict(reversed(list(net.state_dict().items())))
    model, params = rp.from_torch(sd, model=net)
    for p, (k, v) in zip(params, net.state_dict().items()):
        assert np.array_equal(p, v.numpy())
    X = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(model(params, X.numpy()), net(X).detach().numpy(), rtol=1e-14)


_LOSS_REFUSED = {
    "reduction none": (lambda: tnn.MSELoss(reduction="none"), "reduction='none'",
                       "the loss is one number: reduction 'mean' or 'sum'"),
    "weight": (lambda: tnn.CrossEntropyLoss(weight=torch.ones(3)), "weight=", "every sample and class weighs 1"),
    "ignore index": (lambda: tnn.CrossEntropyLoss(ignore_index=0), "ignore_index=0",
                     "a label in [0, C) would be left out of the loss; refprune counts every sample (a negative "
                     "ignore_index never matches a label and is accepted)"),
    "label smoothing": (lambda: tnn.CrossEntropyLoss(label_smoothing=0.1), "label_smoothing=0.1",
                        "the targets are the labels themselves"),
    "pos weight": (lambda: tnn.BCEWithLogitsLoss(pos_weight=torch.ones(1)), "pos_weight=",
                   "positive and negative targets weigh 1"),
}


@pytest.mark.parametrize("case", list(_LOSS_REFUSED))
def test_each_loss_option_refprune_does_not_implement_is_refused_in_full(case):
    make, option, why = _LOSS_REFUSED[case]
    loss = make()
    _raises_exactly(ValueError, f"from_torch: loss {type(loss).__name__}: {option} is not implemented by refprune "
                    f"({why})", lambda: rp.from_torch(_linear_net(), loss=loss))


def test_other_losses_are_refused_naming_what_was_given():
    known = "CrossEntropyLoss, MSELoss, BCEWithLogitsLoss, torch.nn's classes exactly, or a refprune loss"
    cases = [
        (tnn.NLLLoss(), "torch.nn.modules.loss.NLLLoss; for log_softmax followed by NLLLoss, end the network with the "
                        "logits and use CrossEntropyLoss"),
        (tnn.BCELoss(), "torch.nn.modules.loss.BCELoss; for sigmoid followed by BCELoss, end the network with the "
                        "logits and use BCEWithLogitsLoss"),
        (tnn.L1Loss(), "torch.nn.modules.loss.L1Loss"),
        (tnn.MSELoss, "the class torch.nn.modules.loss.MSELoss: pass an instance, MSELoss()"),
        ("mse", "a str"),
    ]
    for loss, got in cases:
        _raises_exactly(TypeError, f"from_torch: loss must be a torch loss module refprune implements ({known}), "
                        f"got {got}", lambda: rp.from_torch(_linear_net(), loss=loss))

    class MyMSE(tnn.MSELoss):
        pass

    _raises_exactly(TypeError, f"from_torch: loss must be a torch loss module refprune implements ({known}), got "
                    f"{MyMSE.__module__}.{MyMSE.__qualname__}", lambda: rp.from_torch(_linear_net(), loss=MyMSE()))


@pytest.mark.parametrize("tloss, loss", [
    (tnn.CrossEntropyLoss(ignore_index=-1), rp.CrossEntropyLoss("mean")),
    (tnn.CrossEntropyLoss(reduction="sum"), rp.CrossEntropyLoss("sum")),
    (tnn.MSELoss(reduction="sum"), rp.MSELoss("sum")),
    (tnn.MSELoss(), rp.MSELoss("mean")),
    (tnn.BCEWithLogitsLoss(reduction="sum"), rp.BCEWithLogitsLoss("sum")),
    (tnn.BCEWithLogitsLoss(), rp.BCEWithLogitsLoss("mean")),
])
def test_each_loss_converts_to_refprune_s_of_the_same_value(tloss, loss):
    net = tnn.Sequential(tnn.Linear(3, 2)).double()
    model, params, got = rp.from_torch(net, loss=tloss)
    assert type(got) is type(loss) and got.reduction == loss.reduction
    X = torch.randn(6, 3, dtype=torch.float64)
    if isinstance(loss, rp.CrossEntropyLoss):
        y = torch.tensor([0, 1, 1, 0, 1, 0])
    else:
        y = torch.rand(6, 2, dtype=torch.float64)
    want = tloss(net(X), y).item()
    assert rp.loss(model, params, X.numpy(), y.numpy(), got) == pytest.approx(want, rel=1e-14)
    # and torch_loss maps refprune's loss back onto the same value
    assert tb.torch_loss(got)(net(X), y).item() == pytest.approx(want, rel=1e-14)
    assert rp.from_torch(net, loss=loss)[2] is loss  # a refprune loss passes through


def test_torch_loss_refuses_what_is_not_a_refprune_loss_in_full():
    _raises_exactly(TypeError, "torch_loss: loss must be a refprune loss (rp.CrossEntropyLoss, rp.MSELoss or "
                    "rp.BCEWithLogitsLoss), got torch.nn.modules.loss.MSELoss", lambda: tb.torch_loss(tnn.MSELoss()))


def test_to_torch_layer_names_a_layer_without_a_torch_equivalent():
    class Square(rp.Tanh):
        pass

    layer = Square()
    _raises_exactly(TypeError, f"no PyTorch equivalent known for {layer!r}", lambda: tb.to_torch_layer(layer))


def test_to_torch_builds_each_layer_as_torch_would():
    model = rp.Sequential(rp.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0), bias=False), rp.Softplus(),
                          rp.AvgPool2d(2), rp.Flatten(), rp.Linear(3, 2), rp.Sigmoid())
    params = model.init(0)
    tmodel, tparams = tb.to_torch(model, params)
    conv, soft, pool = tmodel[0], tmodel[1], tmodel[2]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((2, 3), (2, 1), (1, 0), None)
    assert conv.weight.dtype == torch.float64 and soft.threshold == 1e6 and pool.kernel_size == 2
    assert [type(m).__name__ for m in tmodel] == ["Conv2d", "Softplus", "AvgPool2d", "Flatten", "Linear", "Sigmoid"]
    X = np.random.default_rng(2).normal(size=(2, 2, 5, 5)) * 30  # softplus far above torch's default threshold
    np.testing.assert_allclose(tmodel(torch.from_numpy(X)).detach().numpy(), model(params, X),
                               rtol=1e-14, atol=1e-15)


def test_the_install_hint_in_full(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_torch(name, *args, **kw):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    _raises_exactly(ImportError, "this bridge needs PyTorch: pip install torch (refprune does not install it, so that "
                    "it never replaces the torch you have)", lambda: tb.to_torch_layer(rp.Tanh()))


def test_torch_hessian_is_refprune_s_hessian():
    model = rp.Sequential(rp.Linear(3, 4), rp.Softplus(), rp.Linear(4, 2))
    params = model.init(3)
    X = np.random.default_rng(0).normal(size=(5, 3))
    for loss, y in ((rp.CrossEntropyLoss("sum"), np.array([0, 1, 1, 0, 1])),
                    (rp.MSELoss("mean"), np.random.default_rng(1).normal(size=(5, 2)))):
        H = tb.torch_hessian(model, params, X, y, loss)
        np.testing.assert_allclose(H, rp.hessian(model, params, X, y, loss), rtol=1e-11, atol=1e-13)
    with pytest.raises(ValueError, match=re.escape("X contains 15 NaN or inf")):
        tb.torch_hessian(model, params, np.full((5, 3), np.nan), y, rp.MSELoss())


@pytest.mark.parametrize("cls", [tnn.AvgPool2d, tnn.MaxPool2d])
def test_a_pool_whose_stride_was_set_to_none_strides_by_its_window(cls):
    # torch's constructors turn stride=None into the kernel size, but the attribute can be
    # set afterwards, and the functional pooling then strides by the window too
    m = cls(2)
    m.stride = None
    X = torch.randn(2, 1, 4, 6, dtype=torch.float64)
    model, params = rp.from_torch(tnn.Sequential(m))
    np.testing.assert_allclose(model(params, X.numpy()), m(X).numpy(), rtol=1e-15)


def test_only_torch_compile_s_wrapper_is_unwrapped():
    # a module of the name torch.compile stores its original under is not a compiled network
    inner = tnn.Linear(2, 3)
    net = tnn.Sequential(OrderedDict(_orig_mod=inner, act=tnn.Tanh()))
    model, params = rp.from_torch(net)
    assert [type(layer).__name__ for layer in model] == ["Linear", "Tanh"]
    assert np.array_equal(params[0], inner.weight.detach().numpy())


def test_bfloat16_and_complex_state_dict_entries():
    net = tnn.Sequential(tnn.Linear(2, 2))
    w = torch.tensor([[0.5, -2.0], [3.0, 0.0078125]], dtype=torch.bfloat16)  # NumPy has no bfloat16
    _, (W, c) = rp.from_torch({"0.weight": w, "0.bias": torch.zeros(2)}, model=net)
    assert np.array_equal(W, [[0.5, -2.0], [3.0, 0.0078125]])
    bad = {"0.weight": np.zeros((2, 2), dtype=complex), "0.bias": np.zeros(2)}
    _raises_exactly(TypeError, "from_torch: state dict entry '0.weight' is complex (complex128): refprune's quantities "
                    "are real float64, and the imaginary part would be dropped silently; give a real state dict",
                    lambda: rp.from_torch(bad, model=net))


@pytest.mark.parametrize("extra, note", [
    (["0.1.running_var"], True), (["block.bn.num_batches_tracked"], True), (["1.running_mean"], True),
    (["bias"], False), (["0.running"], False)])
def test_unexpected_buffers_are_named_as_buffers(extra, note):
    net = tnn.Sequential(tnn.Linear(2, 2))
    sd = dict(net.state_dict(), **{k: torch.zeros(2) for k in extra})
    want = (f"from_torch: the state dict does not match the model (matched by name, as "
            f"torch.nn.Module.load_state_dict does; expected keys ['0.weight', '0.bias']): unexpected {extra}"
            + (" (buffers such as BatchNorm statistics are not modelled)" if note else ""))
    _raises_exactly(ValueError, want, lambda: rp.from_torch(sd, model=net))


@pytest.mark.parametrize("make, option", [
    (lambda: tnn.AvgPool2d(kernel_size=(np.float16(2048), 2049)), "kernel_size"),  # np.float16(2049) == 2048
    (lambda: tnn.MaxPool2d((np.float64(2.0**53), 2**53 + 1)), "kernel_size"),
    (lambda: tnn.MaxPool2d(2.0), "kernel_size"),
    (lambda: tnn.MaxPool2d(True), "kernel_size"),
    (lambda: tnn.AvgPool2d(2, stride=(2, 2, 2)), "stride"),
    (lambda: tnn.AvgPool2d(2, padding=0.0), "padding"),
    (lambda: tnn.MaxPool2d(2, dilation=1.0), "dilation"),
])
def test_pooling_sizes_must_be_whole_numbers(make, option):
    # torch's pooling modules keep what they were given: a float that equals a neighbouring
    # int must not pass a window of 2048 x 2049 as square
    m = make()
    _raises_exactly(ValueError, _not_modelled("0", m, f"{option}={getattr(m, option)}",
                                              "sizes are whole numbers, one or one per axis"),
                    lambda: rp.from_torch(tnn.Sequential(m)))
    model, _ = rp.from_torch(tnn.Sequential(tnn.MaxPool2d(np.int64(3), stride=np.int32(3))))
    assert model[0].kernel_size == 3 and type(model[0].kernel_size) is int


def test_a_parameter_too_large_to_copy_is_refused_before_the_copy(monkeypatch):
    from refprune import memory

    # an expanded view: 1 byte of memory standing for 2**40 entries, 8 TiB as float64
    N = 2**20
    big = torch.zeros(1, 1, dtype=torch.int8).expand(N, N)
    monkeypatch.setattr(memory, "available_memory", lambda: 2**33)
    _raises_exactly(rp.ArrayTooLargeError, "from_torch: the float64 copy of parameter 0.weight (1048576 x 1048576) "
                    "would need 8192.00 GiB but only 8.00 GiB are available",
                    lambda: rp.from_torch({"0.weight": big}, model=rp.Sequential(rp.Linear(N, N, bias=False))))
    # 2048 x 2048 int8 entries are converted once, straight to float64: 8 bytes an entry
    # (the copy) and 1 (the finiteness test of the float64 result) fit in 8.5
    n = 2048
    small = torch.ones(1, 1, dtype=torch.int8).expand(n, n)
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * n * n + n * n // 2)
    _, (W,) = rp.from_torch({"0.weight": small}, model=rp.Sequential(rp.Linear(n, n, bias=False)))
    assert W.dtype == np.float64 and W.shape == (n, n) and W.sum() == n * n


def test_a_state_dict_of_numpy_arrays_and_lists_is_copied_to_float64(monkeypatch):
    from refprune import memory

    net = tnn.Sequential(tnn.Linear(2, 3))
    W = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    b = [1, -2, 3]
    _, (W2, b2) = rp.from_torch({"0.weight": W, "0.bias": b}, model=net)
    assert W2.dtype == b2.dtype == np.float64 and np.array_equal(W2, W) and np.array_equal(b2, b)
    W64 = W.astype(np.float64)
    _, (W3, _) = rp.from_torch({"0.weight": W64, "0.bias": b}, model=net)
    W3[0, 0] = 7.0
    assert W64[0, 0] == 0.0  # a copy, never the caller's array
    # a broadcast NumPy view is refused by its copy's size before the copy
    N = 2**20
    monkeypatch.setattr(memory, "available_memory", lambda: 2**33)
    _raises_exactly(rp.ArrayTooLargeError, "from_torch: the float64 copy of parameter 0.weight (1048576 x 1048576) "
                    "would need 8192.00 GiB but only 8.00 GiB are available",
                    lambda: rp.from_torch({"0.weight": np.broadcast_to(np.float32(1), (N, N))},
                                          model=rp.Sequential(rp.Linear(N, N, bias=False))))
    with pytest.raises(TypeError) as e:
        rp.from_torch({"0.weight": W, "0.bias": [1, [2, 3]]}, model=net)
    assert str(e.value).startswith("from_torch: state dict entry '0.bias' cannot be read as an array (")
