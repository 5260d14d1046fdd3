"""Structured surgery against the masked large network: removing units whose rows of
``[W | b]`` are zero leaves the function unchanged, including the constants ``phi(0)``
that removed units feed forward (folded into the next layer's bias, which is created
when that layer had none), through Linear, Conv2d and Flatten."""

import numpy as np
import pytest

import refprune as rp
from refprune.testing import assert_close


def zero_units(model, params, drop):
    """The large network's parameters with the output units ``drop[j]`` of layer ``j`` zeroed."""
    grouped = [list(p) for p in model.group_params(params)]
    for j, units in drop.items():
        for i, p in enumerate(grouped[j]):
            grouped[j][i] = p.copy()
            grouped[j][i][list(units)] = 0.0
    return [p for g in grouped for p in g]


def check(model, X, drop, keep_as=bool):
    params = model.init(4)
    masked = zero_units(model, params, drop)
    keep = {}
    for j, units in drop.items():
        k = np.ones(model[j].out_units, dtype=keep_as)
        k[list(units)] = 0
        keep[j] = k
    small, sp = rp.remove_units(model, masked, keep, X.shape[1:])
    assert_close(small(sp, X), model(masked, X), 1e-12, 1e-13, "smaller network, same function")
    return small, sp


def test_linear_after_sigmoid_gains_a_bias():
    X = np.random.default_rng(0).standard_normal((5, 3))
    model = rp.Sequential(rp.Linear(3, 4), rp.Sigmoid(), rp.Linear(4, 2, bias=False))
    small, _ = check(model, X, {0: [1, 2]})
    assert small[2].bias and small[2].in_features == 2


def test_linear_after_tanh_stays_without_bias():
    X = np.random.default_rng(0).standard_normal((5, 3))
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2, bias=False))
    small, sp = check(model, X, {0: [1]})
    assert not small[2].bias and len(sp) == 3


def test_conv_after_sigmoid_gains_a_bias_and_keeps_its_geometry():
    X = np.random.default_rng(1).standard_normal((3, 2, 7, 7))
    model = rp.Sequential(rp.Conv2d(2, 4, 3), rp.Sigmoid(), rp.Conv2d(4, 3, 2, stride=2, bias=False), rp.Flatten(),
                          rp.Linear(12, 2))
    small, _ = check(model, X, {0: [0, 3]})
    c = small[2]
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.bias) == (2, 3, (2, 2), (2, 2),
                                                                                          (0, 0), True)


def test_removing_one_of_three_conv_units_before_a_conv():
    X = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    model = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Softplus(), rp.Conv2d(3, 2, 3), rp.Flatten(), rp.Linear(8, 2))
    check(model, X, {0: [1]})


def test_conv_then_flatten_then_linear_without_bias():
    X = np.random.default_rng(2).standard_normal((3, 2, 5, 5))
    model = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Sigmoid(), rp.Flatten(), rp.Linear(27, 2, bias=False))
    small, _ = check(model, X, {0: [2]})
    assert small[3].in_features == 18 and small[3].bias


def test_padded_convolution_after_tanh_works_after_sigmoid_is_refused():
    X = np.random.default_rng(3).standard_normal((2, 2, 5, 5))
    ok = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Tanh(), rp.Conv2d(3, 2, 3, padding=1), rp.Flatten(), rp.Linear(18, 2))
    small, _ = check(ok, X, {0: [1]})
    assert small[2].padding == (1, 1)
    bad = rp.Sequential(rp.Conv2d(2, 3, 3), rp.Sigmoid(), rp.Conv2d(3, 2, 3, padding=1), rp.Flatten(),
                        rp.Linear(18, 2))
    params = zero_units(bad, bad.init(0), {0: [1]})
    with pytest.raises(ValueError, match=r"^cannot remove units of layer 0 exactly: they carry the constant 0.5 into "
                                         r"Conv2d\(3, 2, .*\), which pads with zeros; use an activation with "
                                         r"phi\(0\) = 0 \(ReLU, Tanh\) before a padded convolution$"):
        rp.remove_units(bad, params, {0: np.array([True, False, True])}, X.shape[1:])


def test_keep_given_as_integers_and_several_layers():
    X = np.random.default_rng(4).standard_normal((4, 3))
    model = rp.Sequential(rp.Linear(3, 5), rp.Sigmoid(), rp.Linear(5, 4), rp.Tanh(), rp.Linear(4, 2))
    small, _ = check(model, X, {0: [], 2: [0, 3]}, keep_as=int)
    assert small[0].out_features == 5 and small[2].out_features == 2 and small[4].in_features == 2


def test_refusals():
    model = rp.Sequential(rp.Linear(3, 2), rp.Tanh(), rp.Linear(2, 2))
    params = model.init(0)
    with pytest.raises(ValueError, match=r"^cannot remove every unit of layer 0 \(Linear\(3, 2, bias=True\)\)$"):
        rp.remove_units(model, params, {0: [False, False]}, (3,))
    with pytest.raises(ValueError, match=r"^layer 2 is the last affine layer: its units are the outputs$"):
        rp.remove_units(model, params, {2: [True, False]}, (3,))


def test_two_affine_layers_in_a_row():
    """Units of a layer followed directly by another affine layer (no activation between):
    the removed units carry 0 into it."""
    X = np.random.default_rng(5).standard_normal((4, 3))
    model = rp.Sequential(rp.Linear(3, 4), rp.Linear(4, 3), rp.Tanh(), rp.Linear(3, 2))
    small, _ = check(model, X, {0: [2], 1: [0]})
    assert [small[0].out_features, small[1].in_features, small[1].out_features, small[3].in_features] == [3, 3, 2, 2]


def test_emptying_a_layer_names_it_and_the_way_out():
    X = np.random.default_rng(5).standard_normal((4, 3))
    model = rp.Sequential(rp.Linear(3, 1), rp.Tanh(), rp.Linear(1, 30))
    params = model.init(0)
    params = [params[0] * 1e-6] + params[1:]
    with pytest.raises(ValueError, match=r"^pruning would remove every weight of layer 0 \(Linear\(3, 1, bias=True\)\); "
                                         r"lower the sparsity or prune layer by layer \(scope='layer'\)$"):
        rp.prune(model, params, X, np.zeros((4, 30)), rp.MSELoss(), method="magnitude", sparsity=0.95)
