"""The conformance zoo's own behaviour: name lists, defaults, reproducibility, the case
description, and the space of networks ``drawn_zoo`` draws from (torch-free)."""

import numpy as np
import pytest

import refprune.conformance as cf
from refprune import nn
from refprune.conformance.zoo import ARCHITECTURES, LOSSES, build_case

ARCHS = tuple(ARCHITECTURES)
LOSS_NAMES = tuple(LOSSES)


# ---------------------------------------------------------------- zoo() and its name lists


def test_zoo_accepts_tuples_and_lists():
    a = cf.zoo(("linear",), ("ce-mean", "mse-sum"))
    b = cf.zoo(["linear"], ["ce-mean", "mse-sum"])
    assert [c.name for c in a] == [c.name for c in b] == ["linear/ce-mean", "linear/mse-sum"]


@pytest.mark.parametrize("bad", [{"linear"}, 5, {"linear": 1}])
def test_zoo_refuses_non_lists(bad):
    with pytest.raises(TypeError) as e:
        cf.zoo(architectures=bad)
    assert str(e.value) == (f"zoo: architectures must be a list of names from {ARCHS}, got "
                            f"{type(bad).__name__} {bad!r}")


def test_zoo_refuses_a_string():
    with pytest.raises(TypeError) as e:
        cf.zoo(losses="ce-mean")
    assert str(e.value) == f"zoo: losses must be a list of names from {LOSS_NAMES}, got str 'ce-mean'"


def test_zoo_names_the_unknown_names():
    with pytest.raises(ValueError) as e:
        cf.zoo(losses=["ce-mean", "hinge", "mse-sum", "l1"])
    assert str(e.value) == f"zoo: losses ['hinge', 'l1'] not known; choose from {LOSS_NAMES}"
    with pytest.raises(ValueError) as e:
        cf.zoo(architectures=[])
    assert str(e.value) == f"zoo: architectures [] not known; choose from {ARCHS}"


def test_zoo_defaults_and_options_reach_the_cases():
    (c,) = cf.zoo(["mlp-tanh"], ["mse-mean"])
    ref = cf.make_case("mlp-tanh", "mse-mean", n=3, seed=0)
    assert c.X.shape == (3, 3)
    np.testing.assert_array_equal(c.X, ref.X)
    (d,) = cf.zoo(["mlp-tanh"], ["mse-mean"], n=5, seed=2)
    # build_case draws X first from default_rng(seed) (hand-built expectation)
    np.testing.assert_array_equal(d.X, np.random.default_rng(2).standard_normal((5, 3)))
    assert len(cf.zoo()) == len(ARCHS) * len(LOSS_NAMES)


# ---------------------------------------------------------------- build_case defaults, describe


def test_build_case_defaults():
    model = nn.Sequential(nn.Linear(2, 3))
    c = build_case("lin", model, (2,), "ce-sum")
    rng = np.random.default_rng(0)  # seed 0, n = 3
    np.testing.assert_array_equal(c.X, rng.standard_normal((3, 2)))
    for p, q in zip(c.params, model.init(0)):
        np.testing.assert_array_equal(p, 2.0 * q)
    assert c.targets.shape == (2, 3)  # mc_samples = 2 draws of N = 3 labels
    assert c.name == "lin/ce-sum"


def test_describe_in_words():
    c = cf.make_case("mlp-tanh", "mse-mean", n=4)
    # R = 1/(N C) for a mean squared error (docs/conventions.md §2): N = 4, C = 3
    assert c.describe() == ("mlp-tanh/mse-mean: Linear(3, 4, bias=True) -> Tanh() -> Linear(4, 3, bias=True); "
                            "X (4, 3), MSELoss(reduction='mean') (R = 0.0833333), n = 31 parameters")


# ---------------------------------------------------------------- drawn_zoo


def test_drawn_zoo_defaults_and_reproducibility():
    a = cf.drawn_zoo()
    assert len(a) == 8
    assert all(c.X.shape[0] == 3 for c in a)
    b = cf.drawn_zoo(8, seed=0, n=3)
    assert [c.name for c in a] == [c.name for c in b]
    for c, d in zip(a, b):
        np.testing.assert_array_equal(c.X, d.X)
        np.testing.assert_array_equal(c.theta, d.theta)
    other = cf.drawn_zoo(8, seed=1)
    assert [c.describe() for c in other] != [c.describe() for c in a]
    assert all(c.X.shape[0] == 2 for c in cf.drawn_zoo(3, n=2))
    assert all(c.name.startswith("drawn-") for c in a)
    assert sorted(int(c.name.split("/")[0][6:]) for c in a) == list(range(8))


def test_drawn_zoo_seed_checked():
    with pytest.raises(ValueError) as e:
        cf.drawn_zoo(2, seed=-1)
    assert str(e.value) == "drawn_zoo: seed must be a non-negative int, got -1"


def test_drawn_zoo_cases_have_their_own_data():
    """Every case draws its data from a seed of its own: two cases with the same input
    shape do not share X."""
    z = cf.drawn_zoo(60, seed=4)
    seen = {}
    for c in z:
        key = c.X.shape
        if key in seen:
            assert not np.array_equal(seen[key], c.X), c.name
        seen[key] = c.X


def _space(z):
    """The values each drawn quantity takes over the zoo."""
    s = {k: set() for k in ("kind", "depth", "width", "out", "mlp_out", "conv_out", "bias", "mlp_bias", "conv_bias", "act", "cin", "h", "k", "stride", "pad",
                            "cout", "pool", "pool_size", "loss", "ho_pool")}
    for c in z:
        layers = list(c.model)
        s["loss"].add(c.name.split("/")[1])
        s["out"].add(layers[-1].out_features)
        s["act"].update(type(l).__name__ for l in layers if type(l).__name__ in ("Tanh", "Sigmoid", "Softplus", "ReLU"))
        if isinstance(layers[0], nn.Linear):
            s["kind"].add("mlp")
            lin = [l for l in layers if isinstance(l, nn.Linear)]
            s["depth"].add(len(lin))  # hidden widths + 1 output layer
            s["width"].update([l.in_features for l in lin])
            s["bias"].update(l.bias for l in lin[:-1])
            s["mlp_bias"].update(l.bias for l in lin[:-1])
            s["mlp_out"].add(lin[-1].out_features)
            assert lin[-1].bias
            assert c.X.shape[1:] == (lin[0].in_features,)
        else:
            s["kind"].add("conv")
            conv = layers[0]
            s["bias"].add(conv.bias)
            s["conv_bias"].add(conv.bias)
            s["conv_out"].add(layers[-1].out_features)
            s["cin"].add(conv.in_channels)
            s["cout"].add(conv.out_channels)
            s["k"].add(conv.kernel_size[0])
            s["stride"].add(conv.stride[0])
            s["pad"].add(conv.padding[0])
            assert conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
            assert conv.padding[0] == conv.padding[1]
            assert c.X.shape[2] == c.X.shape[3]
            s["h"].add(c.X.shape[2])
            pools = [type(l).__name__ for l in layers if "Pool" in type(l).__name__]
            s["pool"].add(pools[0] if pools else None)
            s["pool_size"].update(l.kernel_size for l in layers if "Pool" in type(l).__name__)
            ho = conv.output_shape(c.X.shape[1:])[1]
            s["ho_pool"].add((min(ho, 3), bool(pools)))
            if pools:  # a pool only on a conv output of at least 2 x 2
                assert ho >= 2, c.describe()
            assert isinstance(layers[-2], nn.Flatten)
    return s


def test_drawn_zoo_space():
    """The networks drawn: MLPs with 2-3 widths from {2, 3, 4} (so 1-2 hidden layers),
    biases mostly on, any of the four activations; convnets of one square Conv2d
    (1-2 input channels, 4-6 pixels, kernel 1-3, stride 1-2, padding 0-1, 1-3 filters),
    an activation and, on outputs of at least 2 x 2, sometimes a 2 x 2 pool; 2-3 outputs;
    any of the six losses (three kinds, two reductions).  Over 150 draws every value appears and no other does."""
    s = _space(cf.drawn_zoo(150, seed=0))
    assert s["kind"] == {"mlp", "conv"}
    assert s["depth"] == {2, 3}
    assert s["width"] == {2, 3, 4}
    assert s["bias"] == {True, False}
    assert s["act"] == {"Tanh", "Sigmoid", "Softplus", "ReLU"}
    assert s["out"] == s["mlp_out"] == s["conv_out"] == {2, 3}
    assert s["mlp_bias"] == s["conv_bias"] == {True, False}
    assert s["cin"] == {1, 2}
    assert s["h"] == {4, 5, 6}
    assert s["k"] == {1, 2, 3}
    assert s["stride"] == {1, 2}
    assert s["pad"] == {0, 1}
    assert s["cout"] == {1, 2, 3}
    assert s["pool"] == {None, "AvgPool2d", "MaxPool2d"}
    assert s["pool_size"] == {2}
    # conv outputs of 1 x 1 (never pooled), 2 x 2 and larger (pooled about half the time)
    assert s["ho_pool"] == {(1, False), (2, False), (2, True), (3, False), (3, True)}
    assert s["loss"] == set(LOSS_NAMES)


def test_drawn_zoo_bias_mostly_on():
    """Biases are drawn on with probability 0.8: over 150 networks, most but not all."""
    z = cf.drawn_zoo(150, seed=0)
    flags = [l.bias for c in z for l in list(c.model)[:-1] if isinstance(l, (nn.Linear, nn.Conv2d))]
    frac = np.mean(flags)
    assert 0.65 < frac < 0.93, frac
    for kind in (nn.Linear, nn.Conv2d):
        flags = [l.bias for c in z for l in list(c.model)[:-1] if isinstance(l, kind)]
        assert 0.6 < np.mean(flags) < 0.95, (kind, np.mean(flags))
