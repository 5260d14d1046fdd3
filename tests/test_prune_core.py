"""``refprune.prune``'s rounds for the unstructured methods against a reference loop
written here: the schedule of counts over ``steps`` with weights pruned before, each
round's criterion recomputed at the current weights, OBD's full-Taylor prediction, the
layer scope, retraining with the run's weight decay and seed, progress lines, and the
messages of what is refused."""

import re
import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.pruning.masks import affine_layers, prunable_mask
from refprune.testing import assert_close

from cases import small_mlp


def pre_mask(model):
    mask = np.ones(model.n_params, dtype=bool)
    mask[[2, 5, 18]] = False  # weights pruned before
    return mask


def reference(args, mask, sparsity, steps, score, wd=0.0):
    """Round ``k`` removes the lowest ``score(theta)`` among the free prunable weights
    until ``floor(sparsity k / steps * total)`` of them are gone."""
    model = args[0]
    prunable = prunable_mask(model, False)
    total = int(prunable.sum())
    theta = rp.flatten_params(args[1]) * mask
    mask = mask.copy()
    rounds = []
    for k in range(1, steps + 1):
        goal = int(np.floor(sparsity * k / steps * total + 1e-9))
        n = goal - int((prunable & ~mask).sum())
        if n <= 0:
            continue
        s = score(theta)
        cand = np.flatnonzero(prunable & mask)
        take = cand[np.argsort(s[cand], kind="stable")[:n]]
        rounds.append((take, s[take], theta.copy()))
        mask[take] = False
        theta = theta * mask
    return rounds, theta, mask


@pytest.mark.parametrize("method", ["magnitude", "obd"])
def test_rounds_follow_the_schedule_from_a_pruned_start(method):
    args = small_mlp()
    model = args[0]
    mask0 = pre_mask(model)
    wd = 0.05

    def score(theta):
        if method == "magnitude":
            return np.abs(theta)
        d = np.diag(rp.ggn(model, rp.unflatten_params(model, theta), *args[2:])) + wd
        return theta**2 * d / 2

    r = rp.prune(*args, method=method, sparsity=0.7, steps=3, mask=mask0, curvature=None if method == "magnitude"
                 else "ggn", weight_decay=wd)
    rounds, theta, mask = reference(args, mask0, 0.7, 3, score, wd)
    assert len(r.steps) == len(rounds) == 3
    for step, (take, sal, before) in zip(r.steps, rounds):
        assert step.removed.tolist() == take.tolist()
        assert_close(step.saliencies, sal, 1e-12, 1e-15, f"{method}: saliencies")
        if method == "obd":
            assert step.predicted == pytest.approx(sal.sum(), rel=1e-12)
            # the full-Taylor model of OBD: g^T d + sum_q h_qq d_q^2 / 2 with d = -w on the removed
            bp = rp.unflatten_params(model, before)
            g = rp.grad(model, bp, *args[2:]) + wd * before
            h = np.diag(rp.ggn(model, bp, *args[2:])) + wd
            d = np.zeros_like(before)
            d[take] = -before[take]
            assert step.predicted_full == pytest.approx(g @ d + 0.5 * np.sum(h * d * d), rel=1e-10)
        else:
            assert np.isnan(step.predicted) and np.isnan(step.predicted_full)
    assert np.array_equal(r.mask, mask)
    assert_close(rp.flatten_params(r.params), theta, 0, 0, "final weights")
    assert r.method == method


def test_a_round_with_nothing_to_remove_is_skipped_not_the_end():
    args = small_mlp()
    r = rp.prune(*args, method="magnitude", sparsity=0.1, steps=3)  # floors: 0, 1, 2 of 24
    assert [s.step for s in r.steps] == [2, 3]
    assert [len(s.removed) for s in r.steps] == [1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rp.prune(*args, method="layer_obs", sparsity=0.3, steps=2, damping=1e-3)
    assert len(r.steps) >= 1


@pytest.mark.parametrize("method", ["magnitude", "layer_obs"])
def test_empty_rounds_neither_end_the_run_nor_warn(method):
    """Sparsity 0.1 in 10 rounds of 12 weights per layer (24 in all): the first rounds
    and the last remove nothing, the others do."""
    args = small_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rp.prune(*args, method=method, sparsity=0.1, steps=10, damping=1e-3 if method == "layer_obs" else 0.0)
    assert r.steps and r.steps[-1].step < 10
    assert sum(len(s.removed) for s in r.steps) == 2


def test_layer_obs_schedule_and_selection():
    args = small_mlp(seed=10)
    model = args[0]
    results = {}
    for selection in ("exact", "greedy", "obc"):
        r = rp.prune(*args, method="layer_obs", sparsity=0.5, steps=2, selection=selection, damping=1e-3)
        results[selection] = r.mask
        for i, s in enumerate(r.steps, start=1):
            gone = np.zeros(model.n_params, dtype=bool)
            for t in r.steps[:i]:
                gone[t.removed] = True
            for _, layer, start, wstop, _ in affine_layers(model):
                assert gone[start:wstop].sum() == int(np.floor(0.5 * i / 2 * (wstop - start) + 1e-9))
    # the three rules choose differently here, so the option reaches the selection
    assert not np.array_equal(results["exact"], results["greedy"])
    assert not np.array_equal(results["exact"], results["obc"])


def test_layer_scope_gives_each_layer_its_share():
    args = small_mlp()
    model = args[0]
    mask0 = np.ones(model.n_params, dtype=bool)
    mask0[[0, 1, 2, 3, 4, 5]] = False  # the first layer's 12 weights are already at 50%
    for method in ("magnitude", "obd"):
        r = rp.prune(*args, method=method, sparsity=0.5, scope="layer")
        for _, layer, start, wstop, _ in affine_layers(model):
            assert (~r.mask[start:wstop]).sum() == (wstop - start) // 2, method
    for method in ("magnitude", "obd", "obs"):
        r = rp.prune(*args, method=method, sparsity=0.5, scope="layer", mask=mask0,
                     damping=1e-2 if method == "obs" else 0.0)
        for _, layer, start, wstop, _ in affine_layers(model):
            assert (~r.mask[start:wstop]).sum() == (wstop - start) // 2, method
        assert not any(0 <= q < 12 for q in r.steps[0].removed), method


def test_ties_go_in_index_order():
    """Magnitudes of three levels, many ties: the order is by magnitude, then index."""
    model = rp.Sequential(rp.Linear(10, 12), rp.Tanh(), rp.Linear(12, 3))
    rng = np.random.default_rng(0)
    params = [p if p.ndim == 1 else rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=p.shape)
              for p in model.init(0)]
    X, y = rng.standard_normal((4, 10)), np.array([0, 1, 2, 1])
    r = rp.prune(model, params, X, y, rp.CrossEntropyLoss(), method="magnitude", count=100)
    cand = np.flatnonzero(prunable_mask(model, False))
    theta = rp.flatten_params(params)
    expected = sorted(cand, key=lambda q: (abs(theta[q]), q))[:100]
    assert r.steps[0].removed.tolist() == expected


def test_retraining_after_a_round_uses_the_weight_decay_and_the_seed():
    args = small_mlp()
    opts = dict(epochs=2, batch_size=5, lr=0.05)
    plain = rp.prune(*args, method="obd", count=6, weight_decay=0.1)
    r = rp.prune(*args, method="obd", count=6, weight_decay=0.1, retrain=opts, seed=3)
    p, hist = rp.train(args[0], plain.params, *args[2:], mask=plain.mask, weight_decay=0.1, seed=3, **opts)
    assert r.steps[0].retrain_history == hist
    assert all(np.array_equal(a, b) for a, b in zip(r.params, p))
    # an explicit weight decay in retrain= wins
    r2 = rp.prune(*args, method="obd", count=6, weight_decay=0.1, retrain=dict(opts, weight_decay=0.0), seed=3)
    p2, _ = rp.train(args[0], plain.params, *args[2:], mask=plain.mask, weight_decay=0.0, seed=3, **opts)
    assert all(np.array_equal(a, b) for a, b in zip(r2.params, p2))


def test_progress_lines(capsys):
    args = small_mlp()
    r = rp.prune(*args, method="magnitude", sparsity=0.5, steps=2, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    for k, (line, s) in enumerate(zip(lines, r.steps), start=1):
        assert line == f"prune (magnitude): step {k}/2, sparsity {s.sparsity:.3f}, loss {s.loss:.5f}"
    rp.prune(*args, method="magnitude", sparsity=0.5, steps=2)
    assert capsys.readouterr().err == ""


def test_messages():
    args = small_mlp()
    model = args[0]
    prot = np.zeros(model.n_params, dtype=bool)
    prot[:20] = True
    with pytest.raises(ValueError, match=r"^prune \(magnitude\): 10 removals requested but only 8 prunable weights are "
                                         r"left \(fewer prunable weights than requested\)$"):
        rp.prune(*args, method="magnitude", count=10, protected=prot)
    with pytest.warns(rp.PruningWarning, match=re.escape("prune (magnitude): sparsity=0.1 of 24 prunable floors to 2, "
                                                         "and 3 are already removed: nothing was removed")):
        rp.prune(*args, method="magnitude", sparsity=0.1, mask=pre_mask(model))
    with pytest.raises(ValueError, match=r"^prune: only 2 of 3 weights can go while one stays in every layer$"):
        tiny = rp.Sequential(rp.Linear(1, 2), rp.Tanh(), rp.Linear(2, 1))
        rp.prune(tiny, tiny.init(0), np.ones((3, 1)), np.ones((3, 1)), rp.MSELoss(), method="magnitude", count=3,
                 skip_emptied=True)
    cases = [
        (dict(method="woodfisher", curvature="ggn", damping=1e-2), r"^prune \(woodfisher\): curvature must be one of"),
        (dict(method="obd", diagonal="obd", curvature="ggn"), r"^prune \(obd, diagonal='obd'\): curvature must be one"),
        (dict(method="obs", curvature="kfac"), r"^prune \(obs\): curvature must be one of"),
        (dict(method="kron_obs", curvature="hessian"), r"^prune \(kron_obs\): curvature must be one of"),
        (dict(method="obd", diagonal="obd", curvature=np.eye(31)), r"applies to obs and to obd with diagonal='exact', "
                                                                   r"not 'obd'$"),
        (dict(method="c_obd", curvature=np.eye(31)), r"applies to obs and to obd with diagonal='exact', not 'c_obd'$"),
    ]
    for opts, msg in cases:
        with pytest.raises(ValueError, match=msg):
            rp.prune(*args, count=2, **opts)
    assert len(rp.prune(*args, method="woodfisher", curvature="empirical_fisher", damping=0.1, count=2).mask) == 31
    assert len(rp.prune(*args, method="obd", diagonal="obd", curvature="hessian", count=2).steps) == 1
    r = rp.prune(*args, method="obd", curvature=np.eye(31), count=2)
    assert len(r.steps[0].removed) == 2


def test_sparsity_of_counts_only_prunable_coordinates():
    mask = np.array([True, False, False, True, False])
    assert rp.pruning.sparsity_of(mask, np.array([True, True, False, True, False])) == 1 / 3
    assert rp.pruning.sparsity_of(mask, np.zeros(5, dtype=bool)) == 0.0  # nothing prunable, nothing pruned


def test_a_structured_step_charges_units_not_weights():
    from cases import small_mlp

    r = rp.prune(*small_mlp(), method="kron_obs", count=1, damping=0.1)
    assert r.steps[0].saliencies is None and len(r.steps[0].unit_saliencies) == 1
    assert r.steps[0].sparsity == 1 / 4


def test_messages_for_targets_that_cannot_be_met():
    from cases import small_mlp

    args = small_mlp()
    with pytest.raises(ValueError, match=r"^prune: give sparsity= or count=, not both$"):
        rp.prune(*args, count=3, sparsity=0.5)
    # every prunable weight, as many as there are: the layer that would be emptied is named
    with pytest.raises(ValueError, match=r"^pruning would remove every weight of layer 0 "):
        rp.prune(*args, method="magnitude", count=24)
    with pytest.raises(ValueError, match=r"^prune \(magnitude\): 25 removals requested but only 24 prunable "):
        rp.prune(*args, method="magnitude", count=25)
