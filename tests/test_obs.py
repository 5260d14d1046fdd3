"""OBS on explicit matrices: optimality against brute force, group = sequential,
elimination = inverse of the reduced matrix, the special cases of Hassibi & Stork, and
the Kronecker identities behind Kron-OBS and EigenDamage."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refprune as rp
from refprune.curvature.kronecker import KroneckerBlock, LayerLayout
from refprune.pruning import OBS, SingularCurvatureError, inverse_spd, woodbury_inverse
from refprune.pruning.structured import _LayerState
from refprune.testing import assert_close

from cases import make


def spd(rng, n, cond=10.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.geomspace(1.0, cond, n)) @ Q.T


def constrained_minimum(H, w, Q):
    """Brute force: minimise 1/2 d^T H d over d with (w + d)_Q = 0, by solving the KKT
    system of the equality-constrained quadratic program."""
    n, k = len(w), len(Q)
    E = np.zeros((n, k))
    E[Q, np.arange(k)] = 1.0
    KKT = np.block([[H, E], [E.T, np.zeros((k, k))]])
    sol = np.linalg.solve(KKT, np.concatenate([np.zeros(n), -w[Q]]))
    d = sol[:n]
    return d, 0.5 * d @ H @ d


problems = st.builds(lambda n, seed: (n, seed), st.integers(2, 9), st.integers(0, 2**31))


@given(problems)
def test_obs_single_removal_is_the_constrained_optimum(case):
    n, seed = case
    rng = np.random.default_rng(seed)
    H, w = spd(rng, n), rng.standard_normal(n)
    obs = OBS(np.linalg.inv(H), w)
    q = int(np.argmin(obs.saliencies()))
    s = obs.remove([q])
    d, best = constrained_minimum(H, w, [q])
    assert_close(s, best, 1e-9, 1e-12, "predicted increase vs brute force")
    assert_close(obs.w - w, d, 1e-9, 1e-12, "OBS update vs brute force")
    actual = 0.5 * (obs.w - w) @ H @ (obs.w - w)  # the quadratic loss at theta* = w
    assert_close(actual, s, 1e-9, 1e-12, "actual increase after the update")
    # no other single removal is cheaper (Hassibi & Stork choose the global minimum)
    for other in range(n):
        assert constrained_minimum(H, w, [other])[1] >= best - 1e-12


@given(problems, st.integers(1, 4))
def test_group_obs_equals_sequential_single_removals(case, k):
    n, seed = case
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    H, w = spd(rng, n), rng.standard_normal(n)
    Q = rng.choice(n, size=k, replace=False)
    g = OBS(np.linalg.inv(H), w)
    s_group = g.remove(Q)
    seq = OBS(np.linalg.inv(H), w)
    s_seq = sum(seq.remove([q]) for q in Q)
    assert_close(s_group, s_seq, 1e-9, 1e-12, "group vs sequential saliency")
    assert_close(g.w, seq.w, 1e-9, 1e-12, "group vs sequential weights")
    d, best = constrained_minimum(H, w, Q)
    assert_close(s_group, best, 1e-9, 1e-12, "group saliency vs brute force")


@given(problems, st.integers(1, 4))
def test_eliminated_inverse_is_the_inverse_of_the_reduced_matrix(case, k):
    n, seed = case
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    H = spd(rng, n)
    obs = OBS(np.linalg.inv(H), rng.standard_normal(n))
    for q in rng.choice(n, size=k, replace=False):
        obs.remove([q])
    R = np.flatnonzero(obs.active)
    assert_close(obs.Hinv[np.ix_(R, R)], np.linalg.inv(H[np.ix_(R, R)]), 1e-9, 1e-12, "eliminated inverse")
    assert np.all(obs.Hinv[~obs.active] == 0) and np.all(obs.w[~obs.active] == 0)


def test_obs_reduces_to_obd_for_diagonal_and_to_magnitude_for_isotropic_hessians():
    rng = np.random.default_rng(0)
    w, h = rng.standard_normal(12), rng.uniform(0.1, 5, 12)
    obs = OBS(np.diag(1 / h), w)
    assert_close(obs.saliencies(), w**2 * h / 2, 1e-14, 0, "diagonal H: OBS saliency = OBD's")
    before = obs.w.copy()
    q = int(np.argmin(obs.saliencies()))
    obs.remove([q])
    others = np.arange(12) != q
    assert np.array_equal(obs.w[others], before[others]), "diagonal H: no update of the others"
    iso = OBS(np.eye(12) / 3.0, w)
    order = []
    for _ in range(12):
        q = int(np.argmin(iso.saliencies()))
        order.append(q)
        iso.remove([q])
    assert order == list(np.argsort(np.abs(w))), "isotropic H: OBS order = magnitude order"


def test_kron_obs_equals_group_obs_with_dense_kronecker():
    rng = np.random.default_rng(1)
    c, p = 4, 5
    S, A, M = spd(rng, c), spd(rng, p), rng.standard_normal((c, p))
    layout = LayerLayout(rp.Linear(p - 1, c), 0)
    block = KroneckerBlock(S, A, layout)
    F = np.kron(S, A)  # over row-major vec(M)
    for i in range(c):
        st_ = _LayerState(block, np.ones(c, dtype=bool), 0.0)
        Mi = M.copy()
        s_kron = st_.saliencies(Mi, "kron_obs")[i]
        st_.remove(Mi, i, update=True)
        g = OBS(np.linalg.inv(F), M.ravel())
        s_group = g.remove(np.arange(i * p, (i + 1) * p))
        assert_close(s_kron, s_group, 1e-10, 1e-12, f"Kron-OBS vs group OBS saliency, unit {i}")
        assert_close(Mi.ravel(), g.w, 1e-10, 1e-12, f"Kron-OBS vs group OBS update, unit {i}")
        # Kron-OBD is the same row's OBD-style saliency under F (no update)
        st2 = _LayerState(block, np.ones(c, dtype=bool), 0.0)
        wi = np.zeros(c * p)
        wi[i * p : (i + 1) * p] = M[i]
        assert_close(st2.saliencies(M, "kron_obd")[i], S[i, i] * M[i] @ A @ M[i] / 2, 1e-12, 0, "Kron-OBD")
        assert_close(st2.saliencies(M, "kron_obd")[i], wi @ F @ wi / 2, 1e-10, 1e-12, "Kron-OBD = 1/2 w_Q^T F w_Q")
        # C-OBS sums the single-weight OBS saliencies under F = S kron A
        Finv = np.linalg.inv(F)
        ref = np.sum(M[i] ** 2 / (2 * np.diag(Finv)[i * p : (i + 1) * p]))
        assert_close(st2.saliencies(M, "c_obs")[i], ref, 1e-10, 1e-12, "C-OBS")


def test_in_the_kronecker_eigenbasis_obs_equals_obd():
    """EigenDamage's argument (Wang et al. 2019, §4): for F = S kron A exactly, the
    reparametrisation W* = Q_S^T W Q_A makes F diagonal (s_i a_j), so OBS there removes
    single entries with OBD's saliency and moves nothing else."""
    rng = np.random.default_rng(2)
    c, p = 3, 4
    S, A, W = spd(rng, c), spd(rng, p), rng.standard_normal((c, p))
    s, QS = np.linalg.eigh(S)
    a, QA = np.linalg.eigh(A)
    Q = np.kron(QS, QA)
    Fstar = Q.T @ np.kron(S, A) @ Q
    assert_close(Fstar, np.diag(np.outer(s, a).ravel()), 1e-10, 1e-12, "F in the eigenbasis is diagonal")
    wstar = (QS.T @ W @ QA).ravel()
    obs = OBS(np.linalg.inv(Fstar), wstar)
    obd = wstar**2 * np.outer(s, a).ravel() / 2
    assert_close(obs.saliencies(), obd, 1e-9, 1e-12, "OBS = OBD saliencies")
    q = int(np.argmin(obd))
    obs.remove([q])
    others = np.arange(c * p) != q
    assert_close(obs.w[others], wstar[others], 1e-9, 1e-12, "no compensating update")


def test_woodbury_inverse_and_singular_errors():
    rng = np.random.default_rng(3)
    U = rng.standard_normal((4, 9))
    assert_close(woodbury_inverse(U, 0.3), np.linalg.inv(0.3 * np.eye(9) + U.T @ U), 1e-10, 1e-12, "Woodbury")
    with pytest.raises(SingularCurvatureError, match=r"rank <= 4 < 9 parameters; WoodFisher needs damping > 0"):
        woodbury_inverse(U, 0.0)
    with pytest.raises(SingularCurvatureError, match="numerically singular|not positive definite"):
        inverse_spd(U.T @ U)
    with pytest.raises(SingularCurvatureError, match=r"not positive definite: smallest eigenvalue -"):
        inverse_spd(np.diag([1.0, -1.0]))
    assert_close(inverse_spd(U.T @ U, 0.5), np.linalg.inv(U.T @ U + 0.5 * np.eye(9)), 1e-10, 1e-12, "damped inverse")


def test_published_shortcuts_are_exact_only_for_diagonal_input_factors():
    """EigenDamage-Pytorch's row-sum ``sum_k W_ik^2 (A 1)_k`` for ``w_i^T A w_i`` and its
    C-OBS update (a sum of single-weight updates) agree with the exact formulas when
    ``A`` is diagonal, and not otherwise; the exact update zeroes the removed row."""
    from refprune.pruning.structured import unit_update

    rng = np.random.default_rng(5)
    c, p = 3, 4
    S, M = spd(rng, c), rng.standard_normal((c, p))
    for A, diagonal in ((np.diag(rng.uniform(0.5, 2, p)), True), (spd(rng, p), False)):
        exact, short = unit_update(S, A, M, 1), unit_update(S, A, M, 1, shortcut=True)
        assert np.allclose((M + exact)[1], 0.0, atol=1e-12)
        assert np.allclose(exact, short, atol=1e-12) == diagonal
        q_exact = np.einsum("ip,pq,iq->i", M, A, M)
        q_short = (M**2) @ A.sum(axis=1)
        assert np.allclose(q_exact, q_short) == diagonal


def test_unit_saliencies_exact_and_shortcut():
    model, params, X, y, loss = make("mlp-sigmoid-softplus", "ce-mean", n=10)
    exact = rp.pruning.unit_saliencies(model, params, X, y, loss, method="kron_obs", damping=1e-3)
    short = rp.pruning.unit_saliencies(model, params, X, y, loss, method="kron_obs", damping=1e-3, shortcut=True)
    assert exact.keys() == short.keys() == {0, 2}
    assert any(not np.allclose(exact[j], short[j]) for j in exact)
    # the exact saliencies are the ones prune() uses: its first removal is the minimum
    r = rp.prune(model, params, X, y, loss, method="kron_obs", sparsity=1 / 6 + 1e-9, damping=1e-3)
    j, i = r.steps[0].removed_units[0]
    assert exact[j][i] == min(s.min() for s in exact.values())
