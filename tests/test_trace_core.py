"""``obs_trace`` and ``saliencies`` with every option: a sweep equals the one-shot calls
with the same options, and each criterion's saliencies equal their formulas evaluated
on matrices built here (OBD: ``w^2 h / 2``; OBS: ``w^2 / (2 [H^-1]_qq)``, Hassibi & Stork
1993; the full-Taylor OBS: the constrained minimum of ``g^T d + d^T H d / 2``)."""

import re

import numpy as np
import pytest

import refprune as rp
from refprune.testing import assert_close

from cases import small_mlp


def some_mask(model, off=(1, 6, 19)):
    mask = np.ones(model.n_params, dtype=bool)
    mask[list(off)] = False
    return mask


def protected(model, on=(0, 4, 20)):
    p = np.zeros(model.n_params, dtype=bool)
    p[list(on)] = True
    return p


def objective(args, theta, weight_decay):
    model = args[0]
    return rp.loss(model, rp.unflatten_params(model, theta), *args[2:]) + weight_decay / 2 * theta @ theta


OPTIONS = {
    "hessian-full-decay-mask-bias": dict(curvature="hessian", damping=0.05, taylor="full", weight_decay=0.03,
                                         mask=True, include_bias=True, indefinite="abs"),
    "mc-fisher-protected-skip": dict(curvature="mc_fisher", samples=3, seed=4, damping=1e-3, protected=True,
                                     skip_emptied=True),
    "mc-fisher-targets": dict(curvature="mc_fisher", targets=True, damping=1e-3),
    "empirical-fisher": dict(curvature="empirical_fisher", damping=1e-2),
    "hessian-ggn-fallback": dict(curvature="hessian", indefinite="ggn", damping=1e-3),
    "hessian-damp": dict(curvature="hessian", indefinite="damp"),
}


def resolve(model, X, opts):
    o = dict(opts)
    if o.get("mask"):
        o["mask"] = some_mask(model)
    if o.get("protected"):
        o["protected"] = protected(model)
    if o.get("targets"):
        o["targets"] = np.random.default_rng(9).integers(0, 3, (2, len(X)))
    return o


@pytest.mark.parametrize("name", OPTIONS)
def test_a_sweep_equals_one_shot_calls_with_the_same_options(name):
    args = small_mlp()
    opts = resolve(args[0], args[2], OPTIONS[name])
    trace = rp.obs_trace(*args, count=10, **opts)
    assert trace.order.dtype == np.int64 and trace.order.shape == (10,)
    assert trace.theta.shape == (11, args[0].n_params)
    wd = opts.get("weight_decay", 0.0)
    for j in (1, 4, 10):
        r = rp.prune(*args, method="obs", count=j, **opts)
        assert np.array_equal(r.steps[0].removed, trace.order[:j]), f"{name}: order of {j}"
        assert_close(trace.increments[:j], r.steps[0].saliencies, 1e-10, 1e-14, f"{name}: increments")
        assert_close(rp.flatten_params(r.params), trace.theta[j], 1e-10, 1e-13, f"{name}: weights after {j}")
        assert_close(trace.loss[j], objective(args, trace.theta[j], wd), 1e-13, 1e-15, f"{name}: objective")
        assert not trace.theta[j][~r.mask].any()
    assert_close(trace.predicted, np.cumsum(trace.increments), 1e-15, 0, "predicted is the running sum")
    assert_close(trace.loss[0], objective(args, trace.theta[0], wd), 1e-13, 1e-15, "objective at the start")


def test_default_count_and_an_empty_sweep():
    args = small_mlp()
    n_w = sum(layer.n_weight for layer in args[0] if isinstance(layer, rp.nn.AffineLayer))  # 24
    assert len(rp.obs_trace(*args, damping=1e-2).order) == n_w
    assert len(rp.obs_trace(*args, damping=1e-2, skip_emptied=True).order) == n_w - 2
    assert len(rp.obs_trace(*args, damping=1e-2, mask=some_mask(args[0])).order) == n_w - 3
    empty = rp.obs_trace(*args, damping=1e-2, count=0)
    assert empty.theta.shape == (1, args[0].n_params) and empty.order.shape == (0,)
    with pytest.raises(ValueError, match=r"obs_trace: count must be an int in \[0, 24\] \(the prunable"):
        rp.obs_trace(*args, damping=1e-2, count=25)


def test_metrics_receive_the_model_and_each_step_s_parameters():
    args = small_mlp()
    seen = []
    trace = rp.obs_trace(*args, damping=1e-2, count=3, evaluate_loss=False,
                         metrics={"size": lambda m, p: seen.append(m) or m.n_params + rp.flatten_params(p)[0]})
    assert all(m is args[0] for m in seen) and len(seen) == 4
    assert_close(trace.metrics["size"], args[0].n_params + trace.theta[:, 0], 0, 0, "metric")
    assert trace.loss is None


@pytest.mark.parametrize("count, lines", [(12, 12), (20, 10), (25, 13), (30, 10)])
def test_progress_lines(capsys, count, lines):
    args = small_mlp(n=30)
    big = rp.Sequential(rp.Linear(3, 8), rp.Tanh(), rp.Linear(8, 3))
    params = big.init(1)
    rp.obs_trace(big, params, *args[2:], damping=1e-2, count=count, evaluate_loss=False)
    assert capsys.readouterr().err == ""
    rp.obs_trace(big, params, *args[2:], damping=1e-2, count=count, evaluate_loss=False, progress=True)
    err = capsys.readouterr().err.splitlines()
    every = max(1, count // 10)
    done = [i for i in range(1, count + 1) if i % every == 0 or i == count]
    assert len(err) == lines == len(done)
    for i, line in zip(done, err):
        m = re.fullmatch(rf"obs_trace: {i}/{count} removed, predicted change \S+ \[(\d+\.\d) s\]", line)
        assert m and 0 <= float(m.group(1)) < 600, line


def test_defaults_are_prune_s_and_skip_emptied_keeps_a_weight_per_layer():
    args = small_mlp()
    trace = rp.obs_trace(*args, curvature="mc_fisher", damping=1e-2, count=5)
    r = rp.prune(*args, method="obs", curvature="mc_fisher", damping=1e-2, count=5)
    assert np.array_equal(trace.order, r.steps[0].removed)
    trace = rp.obs_trace(*args, damping=1e-2, skip_emptied=True)  # every weight but one per layer
    last = trace.theta[-1]
    for _, layer, start, wstop, _ in rp.pruning.masks.affine_layers(args[0]):
        assert np.count_nonzero(last[start:wstop]) == 1
    r = rp.prune(*args, method="obs", damping=1e-2, count=len(trace.order), skip_emptied=True)
    assert np.array_equal(trace.order, r.steps[0].removed)


def test_obs_trace_refusals():
    args = small_mlp()
    with pytest.raises(ValueError, match=r"obs_trace: indefinite must be one of \('raise', 'damp', 'abs', 'ggn'\), "
                                         r"got 'clip'"):
        rp.obs_trace(*args, indefinite="clip")
    for name in ("damping", "weight_decay"):
        for bad in (-1.0, np.nan, True):
            with pytest.raises(ValueError, match=rf"obs_trace: {name} must be a finite number >= 0, got"):
                rp.obs_trace(*args, **{name: bad})
    with pytest.raises(TypeError, match=r"^obs_trace: metrics must be a dict of name -> callable\(model, params\)$"):
        rp.obs_trace(*args, metrics={"a": 1})
    with pytest.raises(ValueError, match="count must be an int"):
        rp.obs_trace(*args, count=2.0)


# ------------------------------------------------------------------ saliencies


def same_saliencies(s, expected, rtol, atol, what):
    """``inf`` (not removable) in the same places, the rest close."""
    assert np.array_equal(np.isinf(s), np.isinf(expected)), what
    fin = np.isfinite(expected)
    assert_close(s[fin], expected[fin], rtol, atol, what)


def free_inverse(M, idx):
    return np.linalg.inv(M[np.ix_(idx, idx)])


@pytest.mark.parametrize("curvature, extra", [("hessian", dict(indefinite="abs")), ("ggn", {}),
                                              ("mc_fisher", dict(samples=2, seed=3))])
def test_obs_saliencies_are_the_formula_on_the_free_coordinates(curvature, extra):
    args = small_mlp()
    model = args[0]
    mask = some_mask(model)
    theta = rp.flatten_params(args[1]) * mask
    pargs = (model, rp.unflatten_params(model, theta)) + args[2:]
    wd, lam = 0.02, 0.1
    H = rp.curvature.exact.exact_matrix(*pargs, curvature=curvature, **{k: v for k, v in extra.items() if k != "indefinite"})
    M = H + wd * np.eye(model.n_params)
    if extra.get("indefinite") == "abs":
        e, V = np.linalg.eigh(M[np.ix_(np.flatnonzero(mask), np.flatnonzero(mask))])
        assert e.min() < 0  # the option matters here
    s = rp.saliencies(*args, method="obs", curvature=curvature, damping=lam, weight_decay=wd, mask=mask,
                      include_bias=True, **extra)
    idx = np.flatnonzero(mask)
    if extra.get("indefinite") == "abs":
        Hinv = V @ np.diag(1 / (np.abs(e) + lam)) @ V.T
    else:
        Hinv = free_inverse(M + lam * np.eye(len(M)), idx)
    expected = np.full(model.n_params, np.inf)
    expected[idx] = theta[idx] ** 2 / (2 * np.diag(Hinv))
    same_saliencies(s, expected, 1e-9, 1e-14, f"OBS saliencies ({curvature})")


def test_full_taylor_saliency_is_the_constrained_minimum():
    args = small_mlp()
    model = args[0]
    theta = rp.flatten_params(args[1])
    wd, lam = 0.02, 0.5
    H = rp.hessian(*args) + (wd + lam) * np.eye(model.n_params)
    assert np.linalg.eigvalsh(H).min() > 0
    g = rp.grad(*args) + wd * theta
    s = rp.saliencies(*args, method="obs", curvature="hessian", taylor="full", damping=lam, weight_decay=wd)
    prunable = rp.pruning.masks.prunable_mask(model, False)
    for q in np.flatnonzero(prunable)[:6]:
        # minimise g^T d + d^T H d / 2 subject to d_q = -w_q (a KKT system)
        n = len(theta)
        K = np.zeros((n + 1, n + 1))
        K[:n, :n], K[n, q], K[q, n] = H, 1.0, 1.0
        d = np.linalg.solve(K, np.concatenate([-g, [-theta[q]]]))[:n]
        assert s[q] == pytest.approx(g @ d + d @ H @ d / 2, rel=1e-9, abs=1e-14)
    assert np.isinf(s[~prunable]).all()
    with pytest.raises(ValueError, match=r"^saliencies: taylor='full' needs a dense curvature \(method 'obs'\)$"):
        rp.saliencies(*args, method="woodfisher", taylor="full", damping=1e-2)


def test_woodfisher_saliencies_use_the_empirical_fisher():
    args = small_mlp()
    model = args[0]
    theta = rp.flatten_params(args[1])
    wd, lam = 0.01, 0.05
    F = rp.fisher(*args, curvature="empirical_fisher") + (wd + lam) * np.eye(model.n_params)
    s = rp.saliencies(*args, method="woodfisher", damping=lam, weight_decay=wd)
    prunable = rp.pruning.masks.prunable_mask(model, False)
    expected = np.where(prunable, theta**2 / (2 * np.diag(np.linalg.inv(F))), np.inf)
    same_saliencies(s, expected, 1e-9, 1e-14, "WoodFisher saliencies")


def test_magnitude_and_obd_saliencies():
    args = small_mlp()
    model = args[0]
    mask = some_mask(model)
    theta = rp.flatten_params(args[1]) * mask
    cand = rp.pruning.masks.prunable_mask(model, True) & mask
    s = rp.saliencies(*args, method="magnitude", mask=mask, include_bias=True)
    same_saliencies(s, np.where(cand, np.abs(theta), np.inf), 0, 0, "magnitude")
    assert np.isinf(rp.saliencies(*args, method="magnitude")[~rp.pruning.masks.prunable_mask(model, False)]).all()
    wd = 0.03
    pargs = (model, rp.unflatten_params(model, theta)) + args[2:]
    d = np.diag(rp.ggn(*pargs)) + wd
    s = rp.saliencies(*args, method="obd", curvature="ggn", weight_decay=wd, mask=mask, include_bias=True)
    same_saliencies(s, np.where(cand, theta**2 * d / 2, np.inf), 1e-12, 1e-15, "OBD with weight decay")


def test_structured_saliencies_pass_every_option_on():
    args = small_mlp()
    for method in ("c_obd", "c_obs", "kron_obd", "kron_obs"):
        opts = dict(curvature="mc_fisher", damping=0.0 if method == "c_obd" else 0.03, samples=2, seed=5)
        a = rp.saliencies(*args, method=method, **opts)
        b = rp.pruning.unit_saliencies(*args, method=method, **opts)
        c = rp.pruning.unit_saliencies(*args, method=method, curvature="mc_fisher", damping=0.03, samples=2, seed=6)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
        assert any(not np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match=r"^saliencies: taylor must be one of \('second_order', 'full'\), got 'ful'$"):
        rp.saliencies(*args, taylor="ful")
    with pytest.raises(ValueError, match=r"^saliencies: indefinite must be one of"):
        rp.saliencies(*args, indefinite="clip")
    # the defaults: OBS with the method's default curvature and one Monte Carlo draw of seed 0
    default = rp.saliencies(*args, damping=0.1)
    explicit = rp.saliencies(*args, method="obs", curvature="ggn", taylor="second_order", indefinite="raise",
                             damping=0.1, samples=1, seed=0)
    same_saliencies(default, explicit, 0, 0, "defaults")
    t = np.random.default_rng(3).integers(0, 3, (2, len(args[2])))
    F = rp.fisher(*args, curvature="mc_fisher", targets=t) + 0.1 * np.eye(args[0].n_params)
    s = rp.saliencies(*args, curvature="mc_fisher", targets=t, damping=0.1)
    theta = rp.flatten_params(args[1])
    prunable = rp.pruning.masks.prunable_mask(args[0], False)
    same_saliencies(s, np.where(prunable, theta**2 / (2 * np.diag(np.linalg.inv(F))), np.inf), 1e-9, 1e-14, "targets")
    for method in ("layer_obs", "eigendamage", "random"):
        with pytest.raises(ValueError, match=rf"saliencies: method must be one of magnitude, .* got '{method}'"):
            rp.saliencies(*args, method=method)


def test_skip_emptied_holds_back_the_last_weight_of_a_layer_the_sweep_would_empty():
    model, params, X, y, loss = small_mlp()
    params = [params[0], params[1], 1e-3 * params[2], params[3]]  # the last layer's weights go first
    free = rp.obs_trace(model, params, X, y, loss, damping=1e-2, count=12)
    off = model.param_offsets()[2]
    assert np.all(np.isin(np.arange(off, off + 12), free.order)), "unconstrained, the last layer is emptied"
    trace = rp.obs_trace(model, params, X, y, loss, damping=1e-2, count=12, skip_emptied=True)
    assert np.count_nonzero(trace.theta[-1][off : off + 12]) == 1
    assert np.array_equal(trace.order[:11], free.order[:11])


def test_monte_carlo_saliencies_default_to_one_draw_from_seed_zero():
    args = small_mlp()
    theta = rp.flatten_params(args[1])
    cand = rp.pruning.masks.prunable_mask(args[0], False)
    d = np.diag(rp.fisher(*args, curvature="mc_fisher", samples=1, seed=0))
    s = rp.saliencies(*args, method="obd", curvature="mc_fisher")
    same_saliencies(s, np.where(cand, theta**2 * d / 2, np.inf), 1e-12, 1e-15, "OBD, Monte Carlo Fisher")


def test_an_indefinite_curvature_is_named_in_the_refusal():
    with pytest.raises(rp.SingularCurvatureError, match=r"^the hessian restricted to the free weights .* is not "
                                                        r"positive definite"):
        rp.obs_trace(*small_mlp(), curvature="hessian", count=2)
