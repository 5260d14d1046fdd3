"""The options that pruning studies need, each against brute force: exact counts and their
rounding, removal order, traces equal to repeated one-shot calls, precomputed curvature,
protected weights, skipping emptied layers, the full Taylor model against a KKT solve,
weight decay, indefinite curvature, the minimiser, and layer-wise selection against
enumeration."""

import itertools
import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.pruning.layerwise import select_counts
from refprune.testing import assert_close

from cases import make, small_mlp


def least_squares(n=30, d=4, c=2, seed=0, at_minimum=False):
    """One Linear layer with summed squared error: the loss is exactly quadratic in theta,
    so every quadratic-model prediction with the Hessian must come true."""
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, c))
    model = rp.Sequential(rp.Linear(d, c))
    if at_minimum:
        Xb = np.hstack([X, np.ones((n, 1))])
        sol = np.linalg.lstsq(Xb, Y, rcond=None)[0]
        params = [sol[:d].T.copy(), sol[d].copy()]
    else:
        params = model.init(seed=seed)
    return model, params, X, Y, rp.MSELoss("sum")


# ------------------------------------------------------------------ how many


@pytest.mark.parametrize("method", ["magnitude", "obd", "obs", "woodfisher"])
def test_count_removes_exactly_that_many(method):
    args = small_mlp()
    kw = dict(damping=1e-3) if method in ("obs", "woodfisher") else {}
    for k in (1, 7, 11):
        r = rp.prune(*args, method=method, count=k, **kw)
        assert len(r.steps[0].removed) == k and len(set(r.steps[0].removed.tolist())) == k
        assert int((~r.mask).sum()) == k
    r = rp.prune(*args, method=method, count=10, steps=3, **kw)
    assert [len(s.removed) for s in r.steps] == [3, 3, 4]


def test_count_for_units_and_directions():
    args = make("mlp-sigmoid-softplus", "ce-mean", n=6)
    r = rp.prune(*args, method="kron_obs", count=2, damping=1e-3)
    assert len(r.steps[0].removed_units) == 2
    r = rp.prune(*args, method="eigendamage", count=3)
    assert len(r.steps[0].removed) == 3


def test_sparsity_rounding_is_stated_and_exact_fractions_are_not_lost():
    model = rp.Sequential(rp.Linear(8, 6), rp.Tanh(), rp.Linear(6, 2))
    weights = 8 * 6 + 6 * 2
    assert weights == 60
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 8)), rng.integers(0, 2, 5)
    params = model.init(seed=0)
    # 31/58 * 58 is 30.999999999999996 in floating point; it must count as 31
    from refprune.pruning.targets import how_many

    assert 31 / 58 * 58 < 31 and how_many(31 / 58, 58) == 31
    r = rp.prune(model, params, X, y, rp.CrossEntropyLoss(), method="magnitude", sparsity=7 / 60)
    assert len(r.steps[0].removed) == 7


def test_a_request_that_removes_nothing_warns():
    args = small_mlp()
    with pytest.warns(rp.PruningWarning, match="floors to 0, .* nothing was removed"):
        r = rp.prune(*args, method="magnitude", sparsity=0.01)
    assert r.steps == []
    with pytest.warns(rp.PruningWarning, match="count=0"):
        rp.prune(*args, method="obd", count=0)
    first = rp.prune(*args, method="magnitude", sparsity=0.3)
    with pytest.warns(rp.PruningWarning, match="already removed"):
        rp.prune(*args, method="magnitude", sparsity=0.3, mask=first.mask)


def test_count_option_errors():
    args = small_mlp()
    with pytest.raises(ValueError, match="sparsity= or count=, not both"):
        rp.prune(*args, sparsity=0.5, count=3)
    with pytest.raises(ValueError, match="count must be a non-negative int"):
        rp.prune(*args, count=2.5)
    with pytest.raises(ValueError, match="count= is one global number"):
        rp.prune(*args, method="magnitude", count=3, scope="layer")


# ------------------------------------------------------------------ order, saliencies, traces


def test_removal_order_and_saliencies_follow_the_criterion():
    args = small_mlp()
    theta = rp.flatten_params(args[1])
    r = rp.prune(*args, method="magnitude", count=9)
    removed = r.steps[0].removed
    assert np.all(np.diff(np.abs(theta[removed])) >= 0)  # smallest first, not sorted by index
    assert not np.all(np.diff(removed) > 0)
    s = rp.saliencies(*args, method="obd")
    r = rp.prune(*args, method="obd", count=9)
    assert_close(r.steps[0].saliencies, np.sort(s)[:9], 0, 0, "OBD saliencies in order")
    s = rp.saliencies(*args, method="obs", damping=1e-3)
    r = rp.prune(*args, method="obs", count=5, damping=1e-3)
    assert r.steps[0].removed[0] == int(np.argmin(s))
    assert r.steps[0].saliencies[0] == pytest.approx(s.min(), rel=1e-12)
    assert r.steps[0].predicted == pytest.approx(r.steps[0].saliencies.sum(), rel=1e-12)
    units = rp.saliencies(*args, method="kron_obs", damping=1e-3)
    assert set(units) == {0} and units[0].shape == (4,)


def test_trace_equals_repeated_one_shot_calls():
    """Every prefix of one sweep is what prune(count=j) gives from scratch (both from one
    inverse of the same matrix)."""
    args = small_mlp()
    G = rp.ggn(*args)
    trace = rp.obs_trace(*args, curvature=G, damping=1e-3, count=12)
    assert trace.theta.shape == (13, args[0].n_params)
    for j in (1, 5, 12):
        r = rp.prune(*args, method="obs", curvature=G, damping=1e-3, count=j)
        assert_close(rp.flatten_params(r.params), trace.theta[j], 1e-12, 1e-14, f"prefix {j}")
        assert np.array_equal(r.steps[0].removed, trace.order[:j])
        assert trace.predicted[j - 1] == pytest.approx(r.steps[0].predicted, rel=1e-10)
    assert trace.loss[0] == pytest.approx(rp.loss(*args), rel=1e-15)
    assert trace.loss[5] == pytest.approx(rp.loss(args[0], trace.params(5), *args[2:]), rel=1e-15)


def test_trace_records_metrics_and_the_actual_loss_on_a_quadratic():
    model, params, X, Y, loss = least_squares(at_minimum=True)
    acc = {"norm": lambda m, p: float(np.abs(rp.flatten_params(p)).sum())}
    trace = rp.obs_trace(model, params, X, Y, loss, curvature="hessian", metrics=acc)
    # at the minimum of a quadratic the model is exact: predicted = actual at every step
    assert_close(trace.loss[1:] - trace.loss[0], trace.predicted, 1e-9, 1e-10, "trace on a quadratic")
    assert_close(trace.metrics["norm"], np.abs(trace.theta).sum(axis=1), 1e-15, 0, "metric")
    assert len(trace.order) == 8  # every weight


def test_precomputed_curvature_as_matrix_or_operator():
    args = small_mlp()
    a = rp.prune(*args, method="obs", curvature="ggn", count=6, damping=1e-2)
    b = rp.prune(*args, method="obs", curvature=rp.ggn(*args), count=6, damping=1e-2)
    c = rp.prune(*args, method="obs", curvature=rp.ExactCurvature(*args, curvature="ggn"), count=6, damping=1e-2)
    for r in (b, c):
        assert np.array_equal(r.steps[0].removed, a.steps[0].removed)
        assert_close(rp.flatten_params(r.params), rp.flatten_params(a.params), 1e-10, 1e-12, "precomputed")
    d = rp.prune(*args, method="obd", curvature=rp.Diagonal(rp.hessian_diagonal(*args)), count=6)
    e = rp.prune(*args, method="obd", curvature="hessian", count=6)
    assert np.array_equal(d.steps[0].removed, e.steps[0].removed)
    with pytest.raises(ValueError, match="must be \\(31, 31\\)"):
        rp.prune(*args, method="obs", curvature=np.eye(3))
    with pytest.raises(ValueError, match="applies to obs and to obd"):
        rp.prune(*args, method="kron_obs", curvature=np.eye(31))


def test_protected_weights_are_never_removed_but_are_updated():
    args = small_mlp()
    prot = np.zeros(args[0].n_params, dtype=bool)
    prot[[0, 3, 5, 20]] = True
    r = rp.prune(*args, method="obs", sparsity=0.5, protected=prot, damping=1e-3)
    assert r.mask[prot].all()
    theta0 = rp.flatten_params(args[1])
    assert not np.allclose(rp.flatten_params(r.params)[prot], theta0[prot])  # OBS moved them


def test_skip_emptied_takes_the_next_candidate():
    args = small_mlp()
    with pytest.raises(ValueError, match="would remove every weight of layer"):
        rp.prune(*args, method="magnitude", count=23)
    for method in ("magnitude", "obs"):
        r = rp.prune(*args, method=method, count=22, skip_emptied=True, damping=1e-3 if method == "obs" else 0.0)
        for _, layer, start, wstop, _ in rp.pruning.masks.affine_layers(args[0]):
            assert r.mask[start:wstop].sum() >= 1
    with pytest.raises(ValueError, match="one (stays|weight is kept) in every layer"):
        rp.prune(*args, method="obs", count=23, skip_emptied=True, damping=1e-3)


# ------------------------------------------------------------------ the full Taylor model


def kkt_step(g, H, w, Q):
    """argmin g^T d + 1/2 d^T H d subject to d_Q = -w_Q, by the KKT linear system."""
    n, q = len(w), len(Q)
    K = np.zeros((n + q, n + q))
    K[:n, :n] = H
    K[n:, :n] = np.eye(n)[Q]
    K[:n, n:] = np.eye(n)[Q].T
    rhs = np.concatenate([-g, -w[Q]])
    return np.linalg.solve(K, rhs)[:n]


def test_full_taylor_obs_against_a_kkt_solve():
    args = small_mlp(seed=1)  # not at a minimum: the gradient is far from zero
    theta = rp.flatten_params(args[1])
    g = rp.grad(*args)
    H = rp.ggn(*args) + 1e-2 * np.eye(len(theta))

    def model(d):
        return float(g @ d + 0.5 * d @ H @ d)

    # one removal: the chosen weight minimises the model over all candidates, with the KKT step
    s = rp.saliencies(*args, method="obs", damping=1e-2, taylor="full")
    weights = np.flatnonzero(rp.prunable_mask(args[0]))
    brute = {int(q): model(kkt_step(g, H, theta, [q])) for q in weights}
    assert_close(s[weights], np.array([brute[int(q)] for q in weights]), 1e-9, 1e-12, "full saliencies")
    r = rp.prune(*args, method="obs", damping=1e-2, taylor="full", count=1)
    q = int(r.steps[0].removed[0])
    assert q == min(brute, key=brute.get)
    d = rp.flatten_params(r.params) - theta
    assert_close(d, kkt_step(g, H, theta, [q]), 1e-9, 1e-12, "full-Taylor OBS step")
    # several removals: the final step is the constrained minimiser for the removed set
    r = rp.prune(*args, method="obs", damping=1e-2, taylor="full", count=6)
    Q = r.steps[0].removed
    d = rp.flatten_params(r.params) - theta
    assert_close(d, kkt_step(g, H, theta, list(Q)), 1e-9, 1e-12, "six removals")
    assert r.steps[0].predicted_full == pytest.approx(model(d), rel=1e-9)
    assert r.steps[0].predicted == pytest.approx(0.5 * d @ H @ d, rel=1e-9)


def test_both_predictions_come_true_on_a_quadratic_away_from_its_minimum():
    """Least squares is exactly quadratic: with the Hessian, predicted_full is the actual
    change for any step, and the second-order-only prediction misses the gradient term."""
    model, params, X, Y, loss = least_squares(at_minimum=False)
    for taylor in ("second_order", "full"):
        r = rp.prune(model, params, X, Y, loss, method="obs", curvature="hessian", count=4, taylor=taylor)
        st = r.steps[0]
        assert st.predicted_full == pytest.approx(st.actual, rel=1e-9)
        assert abs(st.predicted - st.actual) > 1e-3 * abs(st.actual)
    full = rp.prune(model, params, X, Y, loss, method="obs", curvature="hessian", count=4, taylor="full")
    second = rp.prune(model, params, X, Y, loss, method="obs", curvature="hessian", count=4)
    # minimising the true model (exact here) can only do better for the same removed set
    assert full.steps[0].actual <= second.steps[0].actual + 1e-12 or \
        set(full.steps[0].removed) != set(second.steps[0].removed)
    r = rp.prune(model, params, X, Y, loss, method="obd", curvature="hessian", count=4)
    assert np.isfinite(r.steps[0].predicted_full)


def test_weight_decay_is_part_of_every_recorded_quantity():
    model, params, X, Y, loss = least_squares(at_minimum=False)
    wd = 0.7
    r = rp.prune(model, params, X, Y, loss, method="obs", curvature="hessian", count=3, weight_decay=wd)
    st = r.steps[0]
    theta0, theta1 = rp.flatten_params(params), rp.flatten_params(r.params)

    def objective(t):
        return rp.loss(model, rp.unflatten_params(model, t), X, Y, loss) + wd / 2 * t @ t

    assert st.actual == pytest.approx(objective(theta1) - objective(theta0), rel=1e-12)
    assert st.predicted_full == pytest.approx(st.actual, rel=1e-9)  # still an exact quadratic


# ------------------------------------------------------------------ indefinite curvature, minima


def test_indefinite_hessian_options():
    args = small_mlp(seed=2)
    H = rp.hessian(*args)
    assert np.linalg.eigvalsh(H)[0] < 0
    with pytest.raises(rp.SingularCurvatureError, match="damping (\\S+) would make it positive definite") as err:
        rp.prune(*args, method="obs", curvature="hessian", count=3)
    lam = float(str(err.value).split("damping ")[-1].split(" would")[0])
    ok = rp.prune(*args, method="obs", curvature="hessian", count=3, damping=lam)
    with pytest.warns(rp.PruningWarning, match="damping raised by"):
        damp = rp.prune(*args, method="obs", curvature="hessian", count=3, indefinite="damp")
    assert_close(rp.flatten_params(damp.params), rp.flatten_params(ok.params), 1e-6, 1e-9, "suggested damping")
    with pytest.warns(rp.PruningWarning, match="absolute eigenvalues"):
        # softmax's shift invariance leaves |H| singular: damping is still needed
        with pytest.raises(rp.SingularCurvatureError, match="use damping > 0"):
            rp.prune(*args, method="obs", curvature="hessian", count=3, indefinite="abs")
    with pytest.warns(rp.PruningWarning, match="absolute eigenvalues"):
        ab = rp.prune(*args, method="obs", curvature="hessian", count=3, indefinite="abs", damping=1e-3)
    ev, V = np.linalg.eigh(H)
    ref = rp.prune(*args, method="obs", curvature=(V * np.abs(ev)) @ V.T, count=3, damping=1e-3)
    assert np.array_equal(ab.steps[0].removed, ref.steps[0].removed)
    with pytest.warns(rp.PruningWarning, match="using the GGN instead"):
        gg = rp.prune(*args, method="obs", curvature="hessian", count=3, indefinite="ggn", damping=1e-3)
    ref = rp.prune(*args, method="obs", curvature="ggn", count=3, damping=1e-3)
    assert np.array_equal(gg.steps[0].removed, ref.steps[0].removed)


def test_untrustworthy_predictions_warn():
    """A curvature a billion times too small: OBS's step is scale invariant, its
    predicted change is not, and the observed change exposes it."""
    model, params, X, Y, loss = least_squares(at_minimum=True)
    H = rp.hessian(model, params, X, Y, loss)
    with pytest.warns(rp.PruningWarning, match="the quadratic model does not describe a step this large"):
        rp.prune(model, params, X, Y, loss, method="obs", curvature=1e-9 * H, count=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rp.PruningWarning)
        rp.prune(model, params, X, Y, loss, method="obs", curvature=H, count=3)


def test_minimize_reaches_the_ridge_solution():
    """Linear least squares with weight decay: the minimiser must land on the closed form
    (X_b^T X_b + wd/2 I)^-1 X_b^T Y (summed squared error has gradient 2 X_b^T(...))."""
    model, params, X, Y, loss = least_squares()
    wd = 0.3
    res = rp.minimize(model, params, X, Y, loss, weight_decay=wd)
    Xb = np.hstack([X, np.ones((len(X), 1))])
    sol = np.linalg.solve(2 * Xb.T @ Xb + wd * np.eye(Xb.shape[1]), 2 * Xb.T @ Y)
    assert res.success and res.at_minimum and res.grad_norm < 1e-8
    assert_close(res.params[0], sol[:-1].T, 1e-9, 1e-10, "weights")
    assert_close(res.params[1], sol[-1], 1e-9, 1e-10, "bias")


def test_minimize_respects_a_mask_and_refuses_bad_options():
    args = small_mlp()
    mask = rp.prunable_mask(args[0]) & (np.arange(args[0].n_params) % 3 == 0)
    res = rp.minimize(*args, weight_decay=1e-2, mask=~mask)
    assert np.array_equal(rp.flatten_params(res.params)[mask], rp.flatten_params(args[1])[mask])
    with pytest.raises(ValueError, match="trust-region methods"):
        rp.minimize(*args, method="BFGS")
    with pytest.raises(ValueError, match="weight_decay must be"):
        rp.minimize(*args, weight_decay=-1)


# ------------------------------------------------------------------ layer-wise OBS selection


def test_exact_selection_against_enumeration_and_never_worse_than_the_greedy_rules():
    rng = np.random.default_rng(0)
    strictly_better = 0
    for _ in range(300):
        c, s = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        inc = rng.exponential(size=(c, s)) * rng.choice([1.0, 0.1], size=(c, s))
        for i in range(c):
            inc[i, rng.integers(0, s + 1):] = np.inf
        avail = int(np.isfinite(inc).sum())
        total = int(rng.integers(0, avail + 1))

        def cost(k):
            return sum(inc[i, : k[i]].sum() for i in range(c))

        ranges = [range(int(np.isfinite(inc[i]).sum()) + 1) for i in range(c)]
        best = min(cost(k) for k in itertools.product(*ranges) if sum(k) == total)
        exact = cost(select_counts(inc, total, "exact"))
        assert exact == pytest.approx(best, abs=1e-12)
        for rule in ("greedy", "obc"):
            k = select_counts(inc, total, rule)
            assert k.sum() == total
            other = cost(k)
            assert exact <= other + 1e-12
            strictly_better += other > exact + 1e-12
    assert strictly_better > 0  # the greedy rules are not optimal in general


def test_obc_rule_against_the_published_algorithm_written_independently():
    """OBC's code pools the step losses of all rows, keeps the K smallest, and counts per
    row how many it kept (a threshold on the sorted losses)."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        inc = rng.exponential(size=(6, 5))
        total = int(rng.integers(0, 31))
        losses = inc.copy()
        if total:
            thresh = np.sort(losses.ravel())[total - 1]
            counts = (losses <= thresh).sum(axis=1)
        else:
            counts = np.zeros(6, dtype=int)
        assert np.array_equal(select_counts(inc, total, "obc"), counts)


def test_layer_obs_selection_option_orders_the_objective():
    rng = np.random.default_rng(3)
    model = rp.Sequential(rp.Linear(6, 5), rp.Tanh(), rp.Linear(5, 3))
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    params = [2 * p for p in model.init(seed=3)]
    preds = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rp.PruningWarning)
        for sel in ("exact", "greedy", "obc"):
            r = rp.prune(model, params, X, y, rp.CrossEntropyLoss(), method="layer_obs", sparsity=0.6, selection=sel,
                         damping=1e-4)
            preds[sel] = r.steps[0].predicted
    assert preds["exact"] <= preds["greedy"] + 1e-12 and preds["exact"] <= preds["obc"] + 1e-12
    with pytest.raises(ValueError, match="selection must be one of"):
        rp.prune(model, params, X, y, rp.CrossEntropyLoss(), method="layer_obs", selection="best")


def test_exact_selection_on_drawn_layers_against_enumeration():
    """Real layer-wise OBS traces (obc_rows on drawn weights and inputs): the exact counts
    reach the enumerated optimum of the layer objective and are never worse than the greedy
    rules; the objective of the chosen counts is the true ||dW X||^2 / N of the result."""
    from refprune.pruning import obc_rows

    rng = np.random.default_rng(7)
    better = 0
    for _ in range(40):
        c, r, N = int(rng.integers(2, 4)), int(rng.integers(2, 5)), 12
        W, Xf = rng.standard_normal((c, r)), rng.standard_normal((r, N))
        H = 2 * Xf @ Xf.T / N + 1e-3 * np.eye(r)
        order, inc, traj = obc_rows(W, np.linalg.inv(H), np.ones((c, r), dtype=bool), r)
        total = int(rng.integers(1, c * r))

        def cost(k):
            return sum(inc[i, : k[i]].sum() for i in range(c))

        best = min(cost(k) for k in itertools.product(range(r + 1), repeat=c) if sum(k) == total)
        k = select_counts(inc, total, "exact")
        assert cost(k) == pytest.approx(best, rel=1e-12, abs=1e-15)
        dW = traj[np.arange(c), k] - W
        assert cost(k) == pytest.approx(np.einsum("ij,jk,ik->", dW, H, dW) / 2, rel=1e-8)
        for rule in ("greedy", "obc"):
            other = cost(select_counts(inc, total, rule))
            assert cost(k) <= other + 1e-12
            better += other > cost(k) + 1e-12
    assert better > 0


def test_long_sweeps_and_minimisations_report_progress(capsys):
    args = small_mlp()
    rp.obs_trace(*args, damping=1e-2, count=20, progress=True)
    err = capsys.readouterr().err
    assert err.count("obs_trace:") == 10 and "20/20 removed" in err
    model, params, X, Y, loss = least_squares()
    rp.minimize(model, params, X, Y, loss, weight_decay=0.1, progress=True)
    assert "minimize: iteration 1, objective" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True or False"):
        rp.obs_trace(*args, damping=1e-2, count=2, progress="yes")
