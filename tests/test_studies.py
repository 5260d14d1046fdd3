"""Fast checks of the validation studies on tiny instances (no scikit-learn, no
matplotlib): their data generators against independent loops, and their pruning steps
against the quantities they claim to measure."""

import itertools
import os
import sys
import warnings

import numpy as np
import pytest

import refprune as rp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "validation"))

import eigendamage_digits  # noqa: E402
import ekfac_distance  # noqa: E402
import monks  # noqa: E402
import obd_digits  # noqa: E402
import xor  # noqa: E402


def test_xor_minimum_and_first_removals():
    model, res = next((m, r) for m, r in map(xor.trained, range(20)) if r.at_minimum and xor.solves(m, r.params))
    assert res.grad_norm < 1e-8 and res.min_eigenvalue > 0
    out = xor.first_removals(model, res.params)
    theta = rp.flatten_params(res.params)
    assert out["magnitude"]["q"] == int(np.argmin(np.abs(theta)))  # biases count as weights
    s = rp.saliencies(model, res.params, xor.X, xor.Y, xor.LOSS, method="obs", curvature="hessian",
                      weight_decay=xor.WEIGHT_DECAY, include_bias=True)
    assert out["OBS"]["q"] == int(np.argmin(s))
    assert out["OBS"]["predicted"] == pytest.approx(s.min(), rel=1e-10)
    assert out["OBS"]["solves"]


def test_monks_instances_and_rules_against_loops():
    A, X = monks.instances()
    assert A.shape == (432, 6) and X.shape == (432, 17) and np.all(X.sum(axis=1) == 6)
    for i, a in enumerate(itertools.product(range(1, 4), range(1, 4), range(1, 3), range(1, 4), range(1, 5),
                                            range(1, 3))):
        assert tuple(A[i]) == a
        a1, a2, a3, a4, a5, a6 = a
        assert monks.label(1, A[i : i + 1])[0] == (a1 == a2 or a5 == 1)
        assert monks.label(2, A[i : i + 1])[0] == (sum(v == 1 for v in a) == 2)
        assert monks.label(3, A[i : i + 1])[0] == ((a5 == 3 and a4 == 1) or (a5 != 4 and a2 != 3))
    Xtr, ytr, Xte, yte = monks.data(3, seed=0)
    assert len(Xtr) == 122 and len(Xte) == 432
    rows = [np.flatnonzero((Xte == x).all(axis=1))[0] for x in Xtr]
    assert int(np.sum(ytr[:, 0] != yte[rows, 0])) == 6  # 5% of 122 labels flipped


def test_monks_sweep_stops_where_training_accuracy_drops():
    model = monks.network(2)
    Xtr, ytr, _, _ = monks.data(1, seed=0)
    res = rp.minimize(model, [2 * p for p in model.init(seed=1)], Xtr[:40], ytr[:40], monks.LOSS,
                      weight_decay=monks.WEIGHT_DECAY, maxiter=300)
    start = monks.accuracy(model, res.params, Xtr[:40], ytr[:40])
    left, theta = monks.prune_without_retraining("OBS", model, res.params, Xtr[:40], ytr[:40])
    assert 2 <= left <= model.n_params
    assert monks.accuracy(model, rp.unflatten_params(model, theta), Xtr[:40], ytr[:40]) >= start
    assert int(np.count_nonzero(theta)) <= left


def test_obd_study_per_weight_quantities():
    """At the minimum of an exactly quadratic objective (ridge regression) OBD with the
    exact diagonal and OBS predict every single removal exactly; LeCun's diagonal equals
    the exact one for a single affine layer (docs/derivations.md §7)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    model, loss = rp.Sequential(rp.Linear(5, 3)), rp.MSELoss("sum")
    res = rp.minimize(model, model.init(0), X, y, loss, weight_decay=obd_digits.WEIGHT_DECAY)
    pw = obd_digits.per_weight(model, res.params, X, y, loss)
    for name in ("OBD, exact diagonal", "OBD, LeCun's diagonal", "OBS"):
        pred, actual = pw[name]
        assert pred.shape == actual.shape == (15,)
        assert np.allclose(pred, actual, rtol=1e-8, atol=1e-12), name
    assert np.all(pw["OBS"][1] <= pw["OBD, exact diagonal"][1] + 1e-12)  # the update never costs more
    assert obd_digits.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


def test_ekfac_study_ratios_never_exceed_one():
    rng = np.random.default_rng(1)
    model = rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.Tanh(), rp.Flatten(), rp.Linear(32, 3))
    X, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    rows = ekfac_distance.distances(model, model.init(0), X, y, rp.CrossEntropyLoss(), samples=2)
    assert len(rows) == 6
    assert all(de <= dk * (1 + 1e-12) + 1e-15 for _, _, dk, de, _ in rows)


def test_eigendamage_study_counts_flops_by_hand():
    model = eigendamage_digits.network()
    # conv 1->8 3x3 on 8x8 -> 6x6; conv 8->16 3x3 -> 4x4; pool -> 2x2; linear 64 -> 10
    assert eigendamage_digits.flops(model, (1, 8, 8)) == 8 * 9 * 36 + 16 * 72 * 16 + 64 * 10
    rng = np.random.default_rng(2)
    X, y = rng.random((40, 1, 8, 8)), rng.integers(0, 10, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base, rows = eigendamage_digits.run(X, y, X[:10], y[:10], {m: [0.3] for m in eigendamage_digits.METHODS},
                                            epochs=1, fine_tune=dict(epochs=1, batch_size=20, lr=0.01))
    assert len(rows) == len(eigendamage_digits.METHODS)
    for r in rows:
        assert r["params"] <= base["params"] and r["flops"] <= base["flops"]
        assert 0.0 <= r["pruned"] <= 1.0 and 0.0 <= r["tuned"] <= 1.0


def test_natural_gradient_study_loop_is_trains_loop():
    import natural_gradient_digits as ngd

    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(5, 4), rp.Tanh(), rp.Linear(4, 3))
    X, y = rng.standard_normal((10, 5)), rng.integers(0, 3, 10)
    loss = rp.CrossEntropyLoss()
    opt = rp.optim.EKFAC(lr=0.1, damping=0.1, momentum=0.9, refresh_interval=2, seed=4)
    losses, clock, steps = ngd.run(model, loss, X, y, opt, epochs=3, batch_size=4, seed=4)
    _, history = rp.train(model, model.init(4), X, y, loss, epochs=3, batch_size=4, seed=4, optimizer=opt)
    assert np.array_equal(losses, history)
    assert len(steps) == 9 and np.all(np.diff(clock) > 0)
    assert ngd.epochs_to_reach(np.array([3.0, 2.0, 1.0, 0.5]), 1.0) == 2
    assert ngd.epochs_to_reach(np.array([3.0, 2.0]), 1.0) is None
    assert all(len(s) == 6 for s in ngd.optimizers().values())  # the same search budget for each
