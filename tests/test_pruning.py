"""Pruning on networks: predicted vs actual loss changes where the quadratic model is
exact, structured surgery, masks through training, every method end to end, bad input."""

import numpy as np
import pytest

import refprune as rp
from refprune.pruning import METHODS
from refprune.testing import assert_close

from cases import make


def least_squares_problem(n=40, d=5, c=3, seed=0):
    """A single Linear layer with MSE at its exact minimum: the loss is quadratic in
    theta, so every quadratic-model prediction must come true."""
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, c))
    Xb = np.hstack([X, np.ones((n, 1))])
    sol = np.linalg.lstsq(Xb, Y, rcond=None)[0]  # (d + 1, c)
    model = rp.Sequential(rp.Linear(d, c))
    return model, [sol[:d].T.copy(), sol[d].copy()], X, Y, rp.MSELoss()


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
@pytest.mark.parametrize("group_size", [1, 3])
def test_obs_predictions_come_true_on_a_quadratic_loss(curvature, group_size):
    model, params, X, Y, loss = least_squares_problem()
    assert np.abs(rp.grad(model, params, X, Y, loss)).max() < 1e-12  # at the minimum
    r = rp.prune(model, params, X, Y, loss, method="obs", curvature=curvature, sparsity=0.6, group_size=group_size)
    (s,) = r.steps
    assert_close(s.actual, s.predicted, 1e-8, 1e-14, "OBS: actual vs predicted")
    assert s.actual <= s.actual_without_update + 1e-15  # the update never hurts here
    assert np.all(r.params[0].ravel()[~r.mask[: model[0].n_weight]] == 0)


def test_obd_prediction_comes_true_for_one_weight_without_update():
    """Removing one weight without update changes a quadratic loss by w^2 H_qq / 2."""
    model, params, X, Y, loss = least_squares_problem()
    r = rp.prune(model, params, X, Y, loss, method="obd", sparsity=1 / 15 + 1e-9)
    (s,) = r.steps
    assert len(s.removed) == 1
    assert_close(s.actual_without_update, s.predicted, 1e-9, 1e-15, "OBD vs actual")
    assert s.actual == s.actual_without_update


def test_woodfisher_equals_obs_on_the_damped_empirical_fisher():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=6)
    a = rp.prune(model, params, X, y, loss, method="woodfisher", sparsity=0.4, damping=1e-2)
    b = rp.prune(model, params, X, y, loss, method="obs", curvature="empirical_fisher", sparsity=0.4, damping=1e-2)
    assert np.array_equal(a.mask, b.mask)
    assert_close(rp.flatten_params(a.params), rp.flatten_params(b.params), 1e-9, 1e-12, "weights")
    assert_close(a.steps[0].predicted, b.steps[0].predicted, 1e-9, 1e-14, "predicted")


def test_layer_obs_prediction_comes_true_for_a_single_layer_at_its_minimum():
    """At the least-squares minimum, with the bias kept, the MSE (mean) loss grows by the
    layer-wise objective ||dW X||^2 / N divided by C."""
    model, params, X, Y, loss = least_squares_problem()
    r = rp.prune(model, params, X, Y, loss, method="layer_obs", sparsity=0.5)
    (s,) = r.steps
    assert_close(s.actual, s.predicted / Y.shape[1], 1e-9, 1e-15, "layer-wise OBS")
    assert s.actual <= s.actual_without_update


def test_layer_obs_rows_match_brute_force():
    from refprune.pruning import obc_rows

    rng = np.random.default_rng(4)
    Xl, W = rng.standard_normal((30, 6)), rng.standard_normal((4, 6))
    H = 2 * Xl.T @ Xl / 30
    act = np.ones_like(W, dtype=bool)
    act[1, 3] = False  # pruned before: fixed at zero
    W[1, 3] = 0.0
    order, inc, traj = obc_rows(W, np.linalg.inv(H), act, 3)
    for i in range(4):
        for k in range(1, 4):
            Q = list(order[i, :k]) + ([3] if i == 1 else [])
            R = [j for j in range(6) if j not in Q]
            w = W[i]
            opt = np.zeros(6)
            opt[R] = w[R] + np.linalg.solve(H[np.ix_(R, R)], H[np.ix_(R, Q)] @ w[Q])
            assert_close(traj[i, k], opt, 1e-9, 1e-12, f"row {i}, {k} removals")
            d = opt - w
            assert_close(inc[i, :k].sum(), d @ H @ d / 2, 1e-9, 1e-12, f"row {i} cumulative increase")


STRUCTURED = ["c_obd", "c_obs", "kron_obd", "kron_obs"]
SURGERY_ARCHS = ["mlp-sigmoid-softplus", "mlp-tanh", "conv-tanh-avgpool", "conv-conv-softplus",
                 "conv-relu-maxpool-stride"]


@pytest.mark.parametrize("arch", SURGERY_ARCHS)
@pytest.mark.parametrize("method", STRUCTURED)
def test_structured_surgery_gives_the_same_function(arch, method):
    """The smaller network equals the masked large one, including the constants phi(0)
    of removed Sigmoid/Softplus units folded into the next bias."""
    model, params, X, y, loss = make(arch, "ce-mean", n=8)
    r = rp.prune(model, params, X, y, loss, method=method, sparsity=0.5, damping=0.0 if method == "c_obd" else 1e-4)
    assert r.model.n_params < model.n_params
    big = r.masked_model(r.masked_params, X)
    small = r.model(r.params, X)
    assert_close(small, big, 1e-12, 1e-12, "small vs masked large network")
    assert_close(rp.loss(r.model, r.params, X, y, loss) - rp.loss(model, params, X, y, loss), r.steps[-1].actual,
                 1e-10, 1e-12, "recorded actual change")


def test_surgery_refuses_a_padded_conv_after_a_nonzero_constant():
    model = rp.Sequential(rp.Conv2d(1, 2, 3), rp.Sigmoid(), rp.Conv2d(2, 2, 3, padding=1), rp.Flatten(),
                          rp.Linear(2, 2))
    params = model.init(0)
    with pytest.raises(ValueError, match="pads with zeros; use an activation with phi\\(0\\) = 0"):
        rp.remove_units(model, params, {0: np.array([True, False])}, (1, 3, 3))


def test_kron_obs_update_beats_no_update_on_average():
    """Not a theorem away from a minimum, but the compensating update should help on a
    trained net; the record holds both numbers for exactly this comparison."""
    model, params, X, y, loss = make("mlp-sigmoid-softplus", "ce-mean", n=40)
    params, _ = rp.train(model, params, X, y, loss, epochs=60, batch_size=40, lr=0.5, seed=0)
    r = rp.prune(model, params, X, y, loss, method="kron_obs", sparsity=0.3, damping=1e-3)
    s = r.steps[0]
    assert s.actual <= s.actual_without_update


def test_masks_survive_training_and_retraining():
    model, params, X, y, loss = make("conv-tanh-avgpool", "ce-mean", n=16)
    r = rp.prune(model, params, X, y, loss, method="magnitude", sparsity=0.5)
    pruned = ~r.mask
    assert pruned.sum() > 0
    trained, hist = rp.train(r.model, r.params, X, y, loss, epochs=5, batch_size=4, lr=0.1, weight_decay=1e-2,
                             mask=r.mask, seed=3)
    theta = rp.flatten_params(trained)
    assert np.all(theta[pruned] == 0.0), "pruned weights must stay exactly zero"
    assert np.any(theta[~pruned] != rp.flatten_params(r.params)[~pruned])
    assert hist[-1] < hist[0]
    # prune-retrain schedule: three rounds, fine-tuning after each
    r3 = rp.prune(model, params, X, y, loss, method="obd", sparsity=0.6, steps=3,
                  retrain=dict(epochs=2, batch_size=8, lr=0.05))
    n_prunable = rp.prunable_mask(model).sum()
    assert [s.sparsity for s in r3.steps] == [np.floor(f * n_prunable) / n_prunable for f in (0.2, 0.4, 0.6)]
    assert np.all(rp.flatten_params(r3.params)[~r3.mask] == 0.0)
    assert all(len(s.retrain_history) == 3 for s in r3.steps)


def test_trainer_is_deterministic():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=12)
    a, ha = rp.train(model, params, X, y, loss, epochs=3, batch_size=5, seed=7)
    b, hb = rp.train(model, params, X, y, loss, epochs=3, batch_size=5, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, b)) and ha == hb


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_records(method):
    model, params, X, y, loss = make("mlp-sigmoid-softplus", "ce-mean", n=12)
    damping = 1e-2 if "damping" in rp.options.applicable("prune", method) else 0.0
    r = rp.prune(model, params, X, y, loss, method=method, sparsity=0.4, damping=damping)
    assert len(r.steps) == 1
    s = r.steps[0]
    assert np.isfinite(s.actual) and np.isfinite(s.actual_without_update)
    assert np.isnan(s.predicted) if method == "magnitude" else np.isfinite(s.predicted)
    assert_close(s.loss, rp.loss(r.model, r.params, X, y, loss), 1e-12, 1e-14, "recorded loss")
    assert r.mask.shape == (r.model.n_params,)
    assert "predicted" in r.summary()


def test_global_and_layer_scope_hit_the_target():
    model, params, X, y, loss = make("conv-conv-softplus", "mse-mean", n=8)
    prunable = rp.prunable_mask(model)
    for scope in ("global", "layer"):
        r = rp.prune(model, params, X, y, loss, method="obs", sparsity=0.5, scope=scope, damping=1e-3)
        per_layer = [layer.n_weight for layer in model if isinstance(layer, rp.nn.AffineLayer)]
        assert (prunable & ~r.mask).sum() == (int(np.floor(0.5 * prunable.sum())) if scope == "global" else sum(
            int(np.floor(0.5 * n)) for n in per_layer))
        if scope == "layer":
            for j, layer, start, wstop, _ in rp.pruning.masks.affine_layers(model):
                assert (~r.mask[start:wstop]).sum() == layer.n_weight // 2
        assert np.all(r.mask[~prunable])  # biases kept


def test_eigendamage_bottleneck():
    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(12, 16), rp.Tanh(), rp.Linear(16, 16), rp.Tanh(), rp.Linear(16, 3))
    params = model.init(0)
    X, y = rng.standard_normal((64, 12)), rng.integers(0, 3, 64)
    loss = rp.CrossEntropyLoss()
    r0 = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.0)
    assert_close(r0.model(r0.params, X), model(params, X), 1e-12, 1e-12, "no pruning: same function")
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.6, max_layer_fraction=0.9)
    kinds = [k for _, k, _, _ in r.steps[0].layers]
    assert "bottleneck" in kinds
    assert r.model.n_params < model.n_params
    for j, kind, n_new, n_old in r.steps[0].layers:
        assert (n_new < n_old) if kind == "bottleneck" else (n_new == n_old)
    with pytest.raises(ValueError, match="exceeds what the per-layer cap"):
        rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.9, max_layer_fraction=0.5)


def test_eigendamage_prediction_is_the_eigenbasis_obd():
    """With K-FAC eigenvalues on a network whose K-FAC is exact and at a minimum
    (one Linear layer, MSE, least squares), the predicted change equals the actual."""
    model, params, X, Y, loss = least_squares_problem(n=60, d=4, c=3)
    r = rp.prune(model, params, X, Y, loss, method="eigendamage", sparsity=0.3, eigenvalues="kfac")
    s = r.steps[0]
    assert_close(s.actual, s.predicted, 1e-9, 1e-14, "EigenDamage on a quadratic")


def test_bad_input():
    model, params, X, y, loss = make("mlp-tanh", "ce-mean", n=4)
    for bad in (-0.1, 1.0, 1.5, "0.5", True, np.nan):
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            rp.prune(model, params, X, y, loss, method="magnitude", sparsity=bad)
    with pytest.raises(ValueError, match="unknown pruning method 'random'"):
        rp.prune(model, params, X, y, loss, method="random")
    with pytest.raises(rp.SingularCurvatureError, match="use damping > 0"):
        rp.prune(model, params, X[:1], y[:1], loss, method="obs", curvature="ggn", sparsity=0.5)
    with pytest.raises(rp.SingularCurvatureError, match="WoodFisher needs damping > 0"):
        rp.prune(model, params, X, y, loss, method="woodfisher", sparsity=0.5)
    tiny = rp.Sequential(rp.Linear(3, 1), rp.Tanh(), rp.Linear(1, 30))
    tp = tiny.init(0)
    with pytest.raises(ValueError, match=r"would remove every weight of layer 0 \(Linear\(3, 1"):
        rp.prune(tiny, [tp[0] * 1e-6, tp[1], tp[2], tp[3]], X[:, :3], np.zeros((4, 30)), rp.MSELoss(),
                 method="magnitude", sparsity=0.95)
    m2, p2, X2, y2, l2 = make("mlp-sigmoid-softplus", "ce-mean", n=4)  # 3 + 3 prunable units
    with pytest.raises(ValueError, match="would remove every unit of some layer; at most 4 of 6"):
        rp.prune(m2, p2, X2, y2, l2, method="kron_obd", sparsity=0.9, damping=1e-3)
    with pytest.raises(ValueError, match="curvature must be one of"):
        rp.prune(model, params, X, y, loss, method="obs", curvature="kfac")
    with pytest.raises(ValueError, match="scope must be"):
        rp.prune(model, params, X, y, loss, scope="row")
    with pytest.raises(ValueError, match=r"eigendamage is one-shot \(steps=1\)"):
        rp.prune(model, params, X, y, loss, method="eigendamage", steps=2)
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.2, retrain=dict(epochs=2, batch_size=2))
    assert len(r.steps[0].retrain_history) == 3
    with pytest.raises(ValueError, match="steps must be a positive int"):
        rp.prune(model, params, X, y, loss, steps=0)
    with pytest.raises(ValueError, match="mask must be a bool array"):
        rp.prune(model, params, X, y, loss, mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="labels must lie in"):
        rp.prune(model, params, X, y + 5, loss)
    with pytest.raises(ValueError, match="train: lr must be a finite number >= 0"):
        rp.train(model, params, X, y, loss, lr=-1.0)


def _collapse_bottlenecks(model, params):
    """Replace every EigenDamage triple (affine, 1x1/Linear without bias, 1x1/Linear without
    bias) by the single layer it computes: ``W = Q_S W* Q_A^T``, ``b = Q_S W* b_A``."""
    layers, out, grouped, i = [], [], model.group_params(params), 0
    L = list(model)
    while i < len(L):
        layer = L[i]
        if (isinstance(layer, rp.nn.AffineLayer) and i + 2 < len(L) and isinstance(L[i + 1], type(layer))
                and isinstance(L[i + 2], type(layer)) and not L[i + 1].bias and not L[i + 2].bias
                and (isinstance(layer, rp.Linear) or L[i + 1].kernel_size == (1, 1))):
            Wa = grouped[i][0].reshape(grouped[i][0].shape[0], -1)
            Ws = grouped[i + 1][0].reshape(grouped[i + 1][0].shape[:2])
            Wq = grouped[i + 2][0].reshape(grouped[i + 2][0].shape[:2])
            W = (Wq @ Ws @ Wa).reshape((Wq.shape[0],) + grouped[i][0].shape[1:])
            if isinstance(layer, rp.Linear):
                new = rp.Linear(layer.in_features, Wq.shape[0], bias=layer.bias)
            else:
                new = rp.Conv2d(layer.in_channels, Wq.shape[0], layer.kernel_size, stride=layer.stride,
                                padding=layer.padding, bias=layer.bias)
            layers.append(new)
            out += [W] + ([Wq @ Ws @ grouped[i][1]] if layer.bias else [])
            i += 3
        else:
            layers.append(layer)
            out += grouped[i]
            i += 1
    return rp.Sequential(*layers), out


def test_eigendamage_conv_bottleneck_computes_the_low_rank_layer():
    rng = np.random.default_rng(1)
    model = rp.Sequential(rp.Conv2d(3, 16, 3, padding=1), rp.ReLU(), rp.Conv2d(16, 12, 3), rp.Tanh(),
                          rp.Flatten(), rp.Linear(12 * 16, 4))
    params = model.init(0)
    X, y = rng.standard_normal((32, 3, 6, 6)), rng.integers(0, 4, 32)
    loss = rp.CrossEntropyLoss()
    r = rp.prune(model, params, X, y, loss, method="eigendamage", sparsity=0.85, max_layer_fraction=0.95)
    assert any(kind == "bottleneck" for _, kind, _, _ in r.steps[0].layers)
    assert any(isinstance(layer, rp.Conv2d) and layer.kernel_size == (1, 1) for layer in r.model)
    collapsed, cp = _collapse_bottlenecks(r.model, r.params)
    assert len(collapsed) == len(model)
    assert_close(r.model(r.params, X), collapsed(cp, X), 1e-11, 1e-12, "bottleneck vs collapsed low-rank layers")


from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from refprune.testing.strategies import architectures, problems  # noqa: E402


@settings(max_examples=25)
@given(problems(architectures=architectures(), max_samples=6), st.sampled_from(STRUCTURED),
       st.sampled_from([0.3, 0.6]))
def test_structured_surgery_property(p, method, sparsity):
    """Over drawn architectures: the smaller network equals the masked large one."""
    try:
        r = rp.prune(p.model, p.params, p.X, p.y, p.loss, method=method, sparsity=sparsity,
                     damping=0.0 if method == "c_obd" else 1e-3)
    except ValueError as err:
        # nets with a single affine layer, too few units, or a padded conv after a
        # nonzero constant are refused with these messages
        assume(not any(m in str(err) for m in ("no affine layer whose units", "every unit", "pads with zeros")))
        raise
    assert_close(r.model(r.params, p.X), r.masked_model(r.masked_params, p.X), 1e-11, 1e-11,
                 "small vs masked large network")
