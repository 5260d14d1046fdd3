"""Layer-wise OBS (``refprune.pruning.layerwise``) against a reference: for the removed set
``Q`` of each row, the minimiser of the layer-wise objective with ``w_Q = 0`` is
``w - H^-1 E (E^T H^-1 E)^-1 w_Q`` and its increase ``w_Q^T (E^T H^-1 E)^-1 w_Q / 2``
(Hassibi & Stork 1993, the group form), with ``H = 2 X X^T / N + damping I`` built from
the inputs of the already pruned earlier layers (Frantar & Alistarh 2022)."""

import numpy as np
import pytest

import refprune as rp
from refprune.pruning.layerwise import layer_obs_round, select_counts
from refprune.pruning.masks import affine_layers, prunable_mask
from refprune.pruning.targets import how_many
from refprune.testing import assert_close


def problem():
    rng = np.random.default_rng(2)
    model = rp.Sequential(rp.Linear(5, 6), rp.Tanh(), rp.Linear(6, 4), rp.Tanh(), rp.Linear(4, 3))
    X = rng.standard_normal((20, 5))
    return model, rp.flatten_params(model.init(3)), X


def reference(model, theta0, gone, X, damping):
    """The optimal rows with the coordinates ``gone`` at zero, and the summed increase."""
    theta, total = theta0.copy(), 0.0
    for j, layer, start, wstop, _ in affine_layers(model):
        x = X
        params = model.group_params(rp.unflatten_params(model, theta))
        for lay, p in zip(model.layers[:j], params[:j]):
            x = lay.forward(p, x)[0]
        H = 2 * x.T @ x / len(X) + damping * np.eye(x.shape[1])
        Hinv = np.linalg.inv(H)
        W = theta[start:wstop].reshape(layer.out_units, -1)
        zeros = gone[start:wstop].reshape(W.shape)
        for i in range(W.shape[0]):
            Q = np.flatnonzero(zeros[i])
            if Q.size == 0:
                continue
            S = np.linalg.inv(Hinv[np.ix_(Q, Q)])
            total += W[i, Q] @ S @ W[i, Q] / 2
            W[i] = W[i] - Hinv[:, Q] @ S @ W[i, Q]
            W[i, Q] = 0.0
        theta[start:wstop] = W.ravel()
    return theta, total


@pytest.mark.parametrize("selection", ["exact", "greedy", "obc"])
@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_a_round_is_the_constrained_minimum_of_each_layer(selection, damping):
    model, theta0, X = problem()
    prunable = prunable_mask(model, False)
    # weights pruned before: two in the first layer, one in the last
    mask = np.ones_like(prunable)
    first = list(affine_layers(model))
    mask[[first[0][2] + 1, first[0][2] + 7, first[2][2] + 2]] = False
    theta_in = theta0 * mask
    fraction = 0.5
    theta, removed, predicted = layer_obs_round(model, theta_in, X, mask, prunable, fraction, damping, selection)
    assert mask[removed].all(), "a weight pruned before is not removed again"
    assert not theta[removed].any()
    gone = ~mask
    gone[removed] = True
    for j, layer, start, wstop, _ in affine_layers(model):
        total = int(prunable[start:wstop].sum())
        assert int(gone[start:wstop].sum()) == how_many(fraction, total), f"layer {j}"
    expected, increase = reference(model, theta_in, gone, X, damping)
    assert_close(theta, expected, 1e-9, 1e-12, f"{selection}: weights")
    assert predicted == pytest.approx(increase, rel=1e-9)


def test_a_layer_already_at_its_fraction_is_skipped_and_later_ones_are_pruned():
    model, theta0, X = problem()
    prunable = prunable_mask(model, False)
    layers = list(affine_layers(model))
    mask = np.ones_like(prunable)
    start, wstop = layers[0][2], layers[0][3]
    mask[start:start + how_many(0.4, wstop - start)] = False  # the first layer is done
    theta, removed, predicted = layer_obs_round(model, theta0 * mask, X, mask, prunable, 0.4, 0.1)
    assert not any(start <= q < wstop for q in removed)
    for _, _, s, e, _ in layers[1:]:
        assert sum(1 for q in removed if s <= q < e) == how_many(0.4, e - s)
    # exactly one to remove in a layer (the last: 12 weights, 1/12 of them)
    mask = np.ones_like(prunable)
    theta, removed, _ = layer_obs_round(model, theta0, X, mask, prunable, 1 / 12 + 1e-12, 0.1)
    s, e = layers[2][2], layers[2][3]
    assert sum(1 for q in removed if s <= q < e) == 1


def test_a_singular_layer_hessian_names_the_layer():
    model, theta0, X = problem()
    prunable = prunable_mask(model, False)
    with pytest.raises(rp.SingularCurvatureError, match=r"layer-wise Hessian 2XX\^T/N of layer 0 \(damping 0.0\)"):
        layer_obs_round(model, theta0, X[:3], np.ones_like(prunable), prunable, 0.5, 0.0)


def test_select_counts_rules_and_messages():
    with pytest.raises(ValueError, match=r"^layer-wise OBS: selection must be one of \('exact', 'greedy', 'obc'\), "
                                         r"got 'best'$"):
        select_counts(np.ones((2, 2)), 1, "best")
    inc = np.array([[1.0, np.inf], [2.0, 3.0]])
    with pytest.raises(ValueError, match=r"^layer-wise OBS: fewer prunable weights \(3\) than requested \(4\)$"):
        select_counts(inc, 4)
    for selection in ("exact", "greedy", "obc"):
        assert select_counts(np.zeros((3, 0)), 0, selection).tolist() == [0, 0, 0]
    # ties (three levels over 200 rows): the obc rule takes the earliest rows of a level
    ties = np.random.default_rng(0).integers(0, 3, (200, 1)).astype(float)
    first = sorted(range(200), key=lambda i: (ties[i, 0], i))[:90]
    assert select_counts(ties, 90, "obc").tolist() == [int(i in first) for i in range(200)]


def greedy_row(w, H, free, steps):
    """One row's greedy OBS with the weights outside ``free`` held at zero: the inverse
    of ``H`` restricted to the free weights, taken afresh at every step."""
    w, free, order, inc, traj = w.copy(), list(free), [], [], [w.copy()]
    for _ in range(steps):
        Hinv = np.linalg.inv(H[np.ix_(free, free)])
        s = w[free] ** 2 / (2 * np.diag(Hinv))
        i = int(np.argmin(s))
        w[free] -= w[free[i]] / Hinv[i, i] * Hinv[:, i]
        w[free[i]] = 0.0
        order.append(free.pop(i))
        inc.append(s[i])
        traj.append(w.copy())
    return order, inc, traj


def test_obc_rows_against_greedy_obs_on_each_row_with_weights_pruned_before():
    from refprune.pruning.layerwise import obc_rows

    rng = np.random.default_rng(4)
    B = rng.standard_normal((4, 9))
    H = B @ B.T / 9 + 0.1 * np.eye(4)
    W = rng.standard_normal((4, 4))
    active = np.ones((4, 4), dtype=bool)
    # two rows with one weight pruned before (zero), as many as the steps' columns
    active[2, 1] = active[3, 3] = False
    W[~active] = 0.0
    order, inc, traj = obc_rows(W, np.linalg.inv(H), active, 1)
    for i in range(4):
        o, s, t = greedy_row(W[i], H, np.flatnonzero(active[i]), 1)
        assert list(order[i]) == o
        assert_close(inc[i], np.array(s), 1e-12, 0, f"row {i} increase")
        assert_close(traj[i], np.array(t), 1e-12, 1e-14, f"row {i} trajectory")
    # a row with two weights pruned before runs out of free weights after two of three steps
    active[3, 0] = False
    W[3, 0] = 0.0
    order, inc, traj = obc_rows(W, np.linalg.inv(H), active, 3)
    for i in range(4):
        o, s, t = greedy_row(W[i], H, np.flatnonzero(active[i]), min(3, int(active[i].sum())))
        assert list(order[i, : len(o)]) == o
        assert_close(inc[i, : len(s)], np.array(s), 1e-10, 0, f"row {i} increases")
        assert np.all(np.isinf(inc[i, len(s) :])), "a step a row cannot take costs inf"
        assert_close(traj[i, : len(t)], np.array(t), 1e-10, 1e-12, f"row {i} trajectory")
        assert np.all(traj[i, len(t) - 1 :] == traj[i, len(t) - 1]), "a row without free weights stays as it is"


@pytest.mark.parametrize("selection", ["exact", "greedy", "obc"])
def test_ties_go_to_the_earlier_rows(selection):
    inc = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, np.inf]])
    assert list(select_counts(inc, 2, selection)) == [2, 0, 0]
    assert list(select_counts(inc, 3, selection)) == [2, 1, 0]


def test_removed_weights_raise_no_floating_point_warnings():
    import warnings

    from refprune.pruning.layerwise import obc_rows

    rng = np.random.default_rng(8)
    B = rng.standard_normal((5, 10))
    Hinv = np.linalg.inv(B @ B.T / 10)
    W = rng.standard_normal((3, 5))
    active = np.ones((3, 5), dtype=bool)
    active[0, 2] = False
    W[0, 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obc_rows(W, Hinv, active, 4)  # removed weights have zero value and zero diagonal
