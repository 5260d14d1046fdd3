"""Structured pruning (``refprune.pruning.structured``) against a reference loop written
from the criteria (Wang et al. 2019, §3.2; module docstring): each round recomputes
K-FAC at the current weights, removes units one at a time by the lowest saliency over
all layers, and for Kron-OBS/C-OBS applies the group-OBS update with ``S^-1`` of the
units still alive (inverted afresh here, not downdated)."""

import numpy as np
import pytest

import refprune as rp
from refprune.pruning.structured import unit_saliencies
from refprune.testing import assert_close


def mlp():
    rng = np.random.default_rng(5)
    model = rp.Sequential(rp.Linear(4, 5), rp.Tanh(), rp.Linear(5, 4, bias=False), rp.Sigmoid(), rp.Linear(4, 3))
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    return model, model.init(2), X, y, rp.CrossEntropyLoss()


def rows(model, theta, j):
    """``[W | b]`` of layer ``j``."""
    g = model.group_params(rp.unflatten_params(model, theta))[j]
    return np.hstack([g[0], g[1][:, None]]) if model[j].bias else g[0].copy()


def set_rows(model, theta, j, M):
    off = model.param_offsets()[j]
    layer = model[j]
    theta = theta.copy()
    theta[off : off + layer.n_weight] = M[:, : layer.n_weight // layer.out_units].ravel()
    if layer.bias:
        theta[off + layer.n_weight : off + layer.n_params] = M[:, -1]
    return theta


def reference(args, method, counts, damping, curvature, mask, **mc):
    model, X, y, loss = args[0], args[2], args[3], args[4]
    layers = [0, 2]
    theta = rp.flatten_params(args[1]) * mask
    alive = {j: np.array([rows(model, mask.astype(float), j)[i].any() for i in range(model[j].out_units)])
             for j in layers}
    rounds = []
    for count in counts:
        params = rp.unflatten_params(model, theta)
        K = rp.kfac(model, params, X, y, loss, curvature=curvature, **mc)
        r = np.sqrt(damping)
        S = {j: K.blocks[b].S + r * np.eye(model[j].out_units) for b, j in enumerate(layers)}
        A = {j: K.blocks[b].A + r * np.eye(len(K.blocks[b].A)) for b, j in enumerate(layers)}
        diag = rp.curvature_diagonal(model, params, X, y, loss, curvature=curvature, **mc)
        M = {j: rows(model, theta, j) for j in layers}
        D = {j: rows(model, diag, j) for j in layers}
        g = rp.grad(model, params, X, y, loss)
        taken, sal = [], []
        for _ in range(count):
            best = None
            for j in layers:
                if alive[j].sum() <= 1:
                    continue
                a = np.flatnonzero(alive[j])
                Sinv = np.zeros_like(S[j])
                Sinv[np.ix_(a, a)] = np.linalg.inv(S[j][np.ix_(a, a)])
                Ainv = np.linalg.inv(A[j])
                for i in a:
                    w = M[j][i]
                    s = {"kron_obd": S[j][i, i] * w @ A[j] @ w / 2,
                         "kron_obs": w @ A[j] @ w / (2 * Sinv[i, i]),
                         "c_obs": np.sum(w**2 / (2 * Sinv[i, i] * np.diag(Ainv))),
                         "c_obd": np.sum(w**2 * D[j][i]) / 2}[method]
                    if best is None or s < best[0]:
                        best = (s, j, i, Sinv)
            s, j, i, Sinv = best
            if method in ("kron_obs", "c_obs"):
                M[j] = M[j] - np.outer(Sinv[:, i] / Sinv[i, i], M[j][i])
            M[j][i] = 0.0
            alive[j][i] = False
            taken.append((j, i))
            sal.append(s)
        new = theta.copy()
        for j in layers:
            new = set_rows(model, new, j, M[j])
            mask = set_rows(model, mask.astype(float), j, np.where(alive[j][:, None], rows(model, mask.astype(float), j),
                                                                   0.0)).astype(bool)
        new = new * mask
        rounds.append((taken, np.array(sal), float(np.sum(sal) + g @ (new - theta))))
        theta = new
    return rounds, theta, alive


@pytest.mark.parametrize("method, curvature, mc", [
    ("kron_obs", "fisher", {}),
    ("kron_obd", "empirical_fisher", {}),
    ("c_obs", "mc_fisher", dict(samples=2, seed=3)),
    ("c_obd", "ggn", {}),
])
def test_rounds_equal_the_reference(method, curvature, mc):
    args = mlp()
    model = args[0]
    mask = np.ones(model.n_params, dtype=bool)
    # a unit of layer 0 pruned before (its whole row of [W | b]) and one weight of layer 2
    off0, off2 = model.param_offsets()[0], model.param_offsets()[2]
    mask[off0 + 4 * 1 : off0 + 4 * 2] = False
    mask[off0 + 20 + 1] = False
    mask[off2 + 3] = False
    # 9 prunable units, one removed before; sparsity 0.75 in 2 steps: 3 then 6 in all
    lam = 0.0 if method == "c_obd" else 0.05  # C-OBD ranks by the undamped diagonal
    r = rp.prune(*args, method=method, sparsity=0.75, steps=2, damping=lam, curvature=curvature, mask=mask, **mc)
    rounds, theta, alive = reference(args, method, [2, 3], 0.05, curvature, mask, **mc)
    assert len(r.steps) == 2
    for step, (taken, sal, full) in zip(r.steps, rounds):
        assert step.removed_units == taken
        assert_close(step.unit_saliencies, sal, 1e-9, 1e-14, f"{method}: unit saliencies")
        assert step.predicted == pytest.approx(sal.sum(), rel=1e-9)
        assert step.predicted_full == pytest.approx(full, rel=1e-9, abs=1e-13)
    assert r.steps[0].sparsity == pytest.approx(3 / 9) and r.steps[1].sparsity == pytest.approx(6 / 9)
    assert_close(rp.flatten_params(r.masked_params), theta, 1e-9, 1e-13, f"{method}: weights")
    assert r.method == method
    # the smaller network and its mask: the weight pruned before stays pruned
    assert [r.model[j].out_features for j in (0, 2)] == [int(alive[0].sum()), int(alive[2].sum())]
    assert_close(r.model(r.params, args[2]), model(r.masked_params, args[2]), 1e-12, 1e-13, "smaller network")
    assert (~r.mask).sum() == int((~mask[off2 : off2 + 20]).reshape(4, 5)[alive[2]][:, alive[0]].sum())


def test_unit_saliencies_match_the_first_choice():
    args = mlp()
    for method in ("kron_obs", "kron_obd", "c_obs", "c_obd"):
        lam = 0.0 if method == "c_obd" else 0.1  # C-OBD ranks by the undamped diagonal
        s = unit_saliencies(*args, method=method, curvature="ggn", damping=lam)
        r = rp.prune(*args, method=method, count=1, curvature="ggn", damping=lam)
        (j, i), = r.steps[0].removed_units
        assert s[j][i] == min(v.min() for v in s.values())
        assert r.steps[0].unit_saliencies[0] == pytest.approx(s[j][i], rel=1e-12)


def test_retraining_progress_and_nothing_to_do(capsys):
    args = mlp()
    opts = dict(epochs=2, batch_size=4, lr=0.05)
    plain = rp.prune(*args, method="kron_obs", count=2, damping=0.1)
    r = rp.prune(*args, method="kron_obs", count=2, damping=0.1, retrain=opts, seed=7, progress=True)
    p, hist = rp.train(args[0], plain.masked_params, *args[2:], mask=rp.flatten_params(plain.masked_params) != 0,
                       seed=7, **opts)
    assert r.steps[0].retrain_history == hist
    assert capsys.readouterr().err.splitlines() == ["prune (kron_obs): step 1/1, 0.222 of units removed"]
    with pytest.warns(rp.PruningWarning, match=r"^prune \(c_obd\): sparsity=0.05 of 9 prunable floors to 0, and 0 "
                                               r"are already removed: nothing was removed$"):
        r = rp.prune(*args, method="c_obd", sparsity=0.05)
    assert r.steps == [] and r.mask.all() and r.mask.dtype == bool
    with pytest.raises(ValueError, match=r"^kron_obs: count 8 would remove every unit of some layer; at most 7 of 9"):
        rp.prune(*args, method="kron_obs", count=8, damping=0.1)


@pytest.mark.parametrize("method", ["kron_obs", "c_obd"])
def test_a_count_spread_over_rounds_counts_the_units_removed_before(method):
    args = mlp()
    model = args[0]
    mask = np.ones(model.n_params, dtype=bool)
    off0 = model.param_offsets()[0]
    mask[[off0 + 4, off0 + 5, off0 + 6, off0 + 7, off0 + 20 + 1]] = False  # unit 1 of layer 0, bias too
    # count=2 over 3 rounds: floor(2k/3) = 0, 1, 2 on top of the unit removed before
    lam = 0.0 if method == "c_obd" else 0.05  # C-OBD ranks by the undamped diagonal
    r = rp.prune(*args, method=method, count=2, steps=3, damping=lam, mask=mask)
    rounds, theta, alive = reference(args, method, [1, 1], 0.05, "ggn", mask)
    assert [s.step for s in r.steps] == [2, 3]
    assert [s.removed_units for s in r.steps] == [taken for taken, _, _ in rounds]
    assert_close(rp.flatten_params(r.masked_params), theta, 1e-9, 1e-13, f"{method}: weights")
    assert r.steps[-1].sparsity == pytest.approx(3 / 9)


def test_the_shortcut_uses_row_sums_of_a():
    args = mlp()
    model = args[0]
    K = rp.kfac(*args, curvature="ggn")
    theta = rp.flatten_params(args[1])
    for method in ("kron_obs", "kron_obd"):
        s = unit_saliencies(*args, method=method, curvature="ggn", damping=0.0, shortcut=True)
        for b, j in enumerate([0, 2]):
            S, A, M = K.blocks[b].S, K.blocks[b].A, rows(model, theta, j)
            scale = np.diag(S) if method == "kron_obd" else 1 / np.diag(np.linalg.inv(S))
            assert_close(s[j], scale * (M**2 @ A.sum(axis=1)) / 2, 1e-10, 1e-14, f"{method} shortcut, layer {j}")


def test_removing_a_unit_keeps_the_inverse_of_s_over_the_units_alive():
    from refprune.pruning.structured import _LayerState, _unit_rows

    args = mlp()
    block = rp.kfac(*args, curvature="ggn").blocks[0]
    state = _LayerState(block, np.ones(5, dtype=bool), 0.01)
    M = _unit_rows(block.layout, rp.flatten_params(args[1]))
    S = block.S + 0.1 * np.eye(5)
    for i in (3, 0):
        state.remove(M, i, update=True)
        a = state.alive
        expect = np.zeros((5, 5))
        expect[np.ix_(a, a)] = np.linalg.inv(S[np.ix_(a, a)])
        assert_close(state.Sinv, expect, 1e-10, 1e-13, f"S^-1 after removing unit {i}")
        assert np.all(state.Sinv[~a] == 0.0) and np.all(state.Sinv[:, ~a] == 0.0) and np.all(M[~a] == 0.0)
    assert list(state.alive) == [False, True, True, False, True]


def test_a_singular_factor_is_named():
    args = list(mlp())
    model = args[0]
    params = [p.copy() for p in args[1]]
    X = args[2].copy()
    X[:, 1] = 2 * X[:, 0]  # input features linearly dependent: A singular
    with pytest.raises(rp.SingularCurvatureError, match=r"K-FAC factor A of Linear\(4, 5, bias=True\)"):
        rp.prune(model, params, X, *args[3:], method="kron_obs", count=1)
    # a unit whose output never moves the loss: its row and column of S are zero
    relu = rp.Sequential(rp.Linear(4, 5), rp.ReLU(), rp.Linear(5, 4, bias=False), rp.Sigmoid(), rp.Linear(4, 3))
    params[0][0] = 0.0
    params[1][0] = -1.0
    with pytest.raises(rp.SingularCurvatureError, match=r"K-FAC factor S of Linear\(4, 5, bias=True\)"):
        rp.prune(relu, params, *args[2:], method="kron_obs", count=1)
