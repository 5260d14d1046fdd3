"""The matrices and inverses behind OBD, OBS and WoodFisher (``refprune.pruning.unstructured``):
each option's matrix against one built here, what ``indefinite`` does to a
non-positive-definite curvature (and the warning, which names the caller's line), and
the messages of what is refused."""

import warnings

import numpy as np
import pytest

import refprune as rp
from refprune.pruning import unstructured as U
from refprune.testing import assert_close

from cases import small_mlp


def test_curvature_matrix_adds_weight_decay_and_passes_the_monte_carlo_options():
    args = small_mlp()
    n = args[0].n_params
    mc = dict(samples=3, seed=2, targets=None)
    F = rp.fisher(*args, curvature="mc_fisher", samples=3, seed=2)
    assert_close(U.curvature_matrix("mc_fisher", args, mc, 0.0), F, 0, 0, "no decay")
    assert_close(U.curvature_matrix("mc_fisher", args, mc, 0.25), F + 0.25 * np.eye(n), 0, 0, "decay")
    M = np.arange(n * n, dtype=float).reshape(n, n)
    assert np.array_equal(U.curvature_matrix(M, args, mc, 0.0), M)
    assert np.array_equal(U.curvature_matrix(M, args, mc, 0.5), M + 0.5 * np.eye(n))
    with pytest.raises(ValueError, match=r"^prune: the precomputed curvature contains NaN or inf$"):
        U.precomputed_matrix(np.full((n, n), np.nan), n)
    assert U.precomputed_matrix(np.eye(n, dtype=np.float32), n).dtype == np.float64


def test_diagonal_of_each_kind():
    args = small_mlp()
    n = args[0].n_params
    mc = dict(samples=1, seed=0, targets=None)
    H = rp.hessian(*args)
    assert_close(U.diagonal_of(H, "exact", args, mc, 0.0), np.diag(H), 0, 0, "precomputed matrix")
    op = rp.ExactCurvature(*args, curvature="hessian")
    d = U.diagonal_of(op, "exact", args, mc, 0.5)
    assert d.dtype == np.float64
    assert_close(d, np.diag(H) + 0.5, 1e-12, 1e-14, "operator + decay")
    for kind, lm in (("obd", False), ("obd_lm", True)):
        expected = rp.obd_diagonal(*args, levenberg_marquardt=lm)
        assert_close(U.diagonal_of("hessian", kind, args, mc, 0.0), expected, 0, 0, kind)
    assert not np.allclose(rp.obd_diagonal(*args), rp.obd_diagonal(*args, levenberg_marquardt=True))

    class Short(rp.curvature.operators.CurvatureOperator):
        shape = property(lambda self: (n - 1, n - 1))

        def diagonal(self):
            return np.ones(n - 1, dtype=np.float32)

    with pytest.raises(ValueError, match=rf"^prune: the precomputed curvature has {n - 1} rows, the model {n} "
                                         r"parameters$"):
        U.diagonal_of(Short(), "exact", args, mc, 0.0)

    class Broken(rp.curvature.operators.CurvatureOperator):
        shape = property(lambda self: (n, n))

        def diagonal(self):
            return np.full(n, np.nan)

    with pytest.raises(ValueError, match=rf"^the precomputed curvature's diagonal contains {n} NaN or inf value"):
        U.diagonal_of(Broken(), "exact", args, mc, 0.0)


def indefinite_matrix():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    ev = np.array([-0.5, 0.1, 1.0, 2.0, 3.0])
    return (Q * ev) @ Q.T, Q, ev


def test_robust_inverse_on_an_indefinite_matrix():
    M, Q, ev = indefinite_matrix()
    lam = 0.05
    # suggested: -(lambda_min + lam) + 1e-4 max |lambda + lam| on M + lam I
    shifted = ev + lam
    extra = -shifted[0] + 1e-4 * np.abs(shifted).max()
    with pytest.raises(rp.SingularCurvatureError, match=rf"^the thing \(damping 0.05\) is not positive definite.*"
                                                        rf"damping {lam + extra:.6e} would make it positive definite "
                                                        r"\(or pass indefinite='damp', 'abs' or 'ggn'\)$"):
        U.robust_inverse(M, lam, "raise", "thing")
    assert U.suggested_damping(M + lam * np.eye(5)) == pytest.approx(extra, rel=1e-12)
    with pytest.warns(rp.PruningWarning, match=rf"the thing is not positive definite; damping raised by "
                                               rf"{extra:.3e} \(indefinite='damp'\)"):
        inv = U.robust_inverse(M, lam, "damp", "thing")
    assert_close(inv, np.linalg.inv(M + (lam + extra) * np.eye(5)), 1e-10, 1e-12, "damp")
    with pytest.warns(rp.PruningWarning, match=r"using its absolute eigenvalues \(indefinite='abs'; smallest "
                                               r"eigenvalue -5.000e-01\)"):
        inv = U.robust_inverse(M, lam, "abs", "thing")
    assert_close(inv, (Q / (np.abs(ev) + lam)) @ Q.T, 1e-10, 1e-12, "abs")
    G = np.diag([1.0, 2, 3, 4, 5])
    with pytest.warns(rp.PruningWarning, match=r"^the thing is not positive definite; using the GGN instead "
                                               r"\(indefinite='ggn'\)$"):
        inv = U.robust_inverse(M, lam, "ggn", "thing", lambda: G)
    assert_close(inv, np.diag(1 / (np.diag(G) + lam)), 1e-12, 1e-14, "ggn")
    with pytest.raises(rp.SingularCurvatureError, match=r"^the \|thing\| \(damping 0.0\)"):
        U.robust_inverse(M - 0.1 * Q[:, 1:2] @ Q[:, 1:2].T, 0.0, "abs", "thing")
    with pytest.raises(rp.SingularCurvatureError, match=r"^the GGN in place of the thing \(damping 0.0\)"):
        U.robust_inverse(M, 0.0, "ggn", "thing", lambda: np.zeros((5, 5)))
    with pytest.raises(rp.SingularCurvatureError, match=r"^the thing \(damping 0.0\) .*damping \S+ would make it"):
        U.robust_inverse(M, 0.0, "raise", "thing")


def test_suggested_damping_is_tiny_but_positive_for_zero():
    assert U.suggested_damping(np.zeros((3, 3))) == pytest.approx(1e-4 * np.finfo(float).tiny)
    assert U.suggested_damping(np.diag([1.0, 4.0])) == pytest.approx(4e-4, rel=1e-12)


def test_pruning_warnings_point_at_the_caller_s_own_line(package_frames):
    args = small_mlp()
    for call in (lambda: rp.prune(*args, method="obs", curvature="hessian", indefinite="damp", count=2, damping=1e-3),
                 lambda: rp.prune(*args, method="obs", curvature="hessian", indefinite="abs", count=2, damping=1e-3),
                 lambda: rp.prune(*args, method="obs", curvature="hessian", indefinite="ggn", count=2,
                                  damping=1e-3),
                 lambda: rp.obs_trace(*args, curvature="hessian", indefinite="ggn", count=2, damping=1e-3),
                 lambda: rp.saliencies(*args, method="obs", curvature="hessian", indefinite="damp"),
                 lambda: rp.prune(*args, method="magnitude", sparsity=0.01)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        pruning = [w for w in caught if issubclass(w.category, rp.PruningWarning)]
        where = (__file__, call.__code__.co_firstlineno)  # the line that called refprune
        got = [(w.filename, w.lineno) for w in pruning]
        assert got and all(g == where for g in got), got


def test_the_ggn_fallback_uses_the_ggn_plus_weight_decay_on_the_free_coordinates():
    args = small_mlp()
    model = args[0]
    wd = 0.02
    idx = np.arange(5, 20)
    H = U.curvature_matrix("hessian", args, dict(samples=1, seed=0, targets=None), wd)
    assert_close(H, rp.hessian(*args) + wd * np.eye(model.n_params), 1e-13, 1e-14, "Hessian plus weight decay")
    inv = U.obs_inverse_factory("hessian", args, 1e-3, wd, "ggn", H)
    with pytest.warns(rp.PruningWarning, match="hessian restricted to the free weights is not positive definite"):
        got = inv(idx)
    G = rp.ggn(*args) + (wd + 1e-3) * np.eye(model.n_params)
    assert_close(got, np.linalg.inv(G[np.ix_(idx, idx)]), 1e-9, 1e-12, "GGN fallback")
    named = U.obs_inverse_factory(rp.hessian(*args), args, 0.0, 0.0, "raise", rp.hessian(*args))
    with pytest.raises(rp.SingularCurvatureError, match=r"^the precomputed curvature restricted to the free weights"):
        named(idx)
    wf = U.obs_inverse_factory("woodfisher", args, 0.03, 0.02, "raise", None)
    F = rp.fisher(*args, curvature="empirical_fisher") + 0.05 * np.eye(model.n_params)
    assert_close(wf(idx), np.linalg.inv(F[np.ix_(idx, idx)]), 1e-9, 1e-12, "WoodFisher damping + decay")


def test_woodfisher_refusal_counts_samples_and_parameters():
    U_few = np.ones((3, 8))
    with pytest.raises(rp.SingularCurvatureError, match=r"^the empirical Fisher of 3 samples has rank <= 3 < 8 "
                                                        r"parameters; WoodFisher needs damping > 0$"):
        U.woodbury_inverse(U_few, 0.0)
    with pytest.raises(rp.SingularCurvatureError, match=r"^the empirical Fisher of 8 samples has rank <= 8 "
                                                        r"parameters; WoodFisher"):
        U.woodbury_inverse(np.ones((8, 8)), 0.0)


def test_select_obs_over_groups_with_the_full_model():
    """Two groups, the second asked for nothing; with the full Taylor model each group is
    the constrained minimum of ``g^T d + d^T H d / 2`` (Hassibi & Stork 1993, with g)."""
    rng = np.random.default_rng(1)
    n = 8
    A = rng.standard_normal((n, n))
    H = A @ A.T + n * np.eye(n)
    g, theta = rng.standard_normal(n), rng.standard_normal(n)
    mask = np.ones(n, dtype=bool)
    groups = [np.arange(0, 5), np.arange(5, 8)]
    out, removed, sal, predicted = U.select_obs(theta, mask, [2, 0], lambda idx: np.linalg.inv(H[np.ix_(idx, idx)]),
                                                1, groups, grad=g, H=H)
    assert removed.dtype == np.int64 and len(removed) == 2 and set(removed) <= set(range(5))
    assert_close(out[5:], theta[5:], 0, 0, "untouched group")
    idx = groups[0]
    Q = list(removed)
    free = [i for i in idx if i not in Q]
    # brute force: the minimiser over the free coordinates of group 0 with the removed ones at 0
    d = np.zeros(n)
    d[Q] = -theta[Q]
    Hf = H[np.ix_(free, free)]
    d[free] = np.linalg.solve(Hf, -(g[free] + H[np.ix_(free, Q)] @ d[Q]))
    assert_close(out - theta, d, 1e-10, 1e-12, "full-model step")
    assert predicted == pytest.approx(g @ d + d @ H @ d / 2, rel=1e-9)
    assert predicted == pytest.approx(sal.sum(), rel=1e-12)
    none = U.select_obs(theta, mask, [0, 0], None, 1, groups)
    assert none[1].shape == (0,) and none[1].dtype.kind == "i" and none[2].shape == (0,) and none[3] == 0.0
    both = U.select_obs(theta, mask, [1, 1], lambda idx: np.linalg.inv(H[np.ix_(idx, idx)]), 1, groups)
    assert both[3] == pytest.approx(both[2].sum(), rel=1e-12) and len(both[1]) == 2
