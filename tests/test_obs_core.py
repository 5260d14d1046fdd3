"""The OBS core (``refprune/pruning/obs.py``) at its edges: every check and message,
conversions, the default one-at-a-time order against a group removal, recorded
increments, and the Cholesky inverse's thresholds.  Written from the survivors of a
mutation run (docs/testing.md)."""

import numpy as np
import pytest

from refprune.pruning.obs import OBS, SingularCurvatureError, inverse_spd


def test_inverse_spd_messages_and_checks():
    with pytest.raises(ValueError, match=r"^matrix must be square, got shape \(2, 3\)$"):
        inverse_spd(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^damping must be a finite number >= 0, got -0.5$"):
        inverse_spd(np.eye(2), damping=-0.5)
    with pytest.raises(ValueError, match=r"^the matrix contains NaN or inf$"):
        inverse_spd(np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(SingularCurvatureError) as err:
        inverse_spd(-np.eye(2))
    assert str(err.value) == ("the matrix (damping 0.0) is not positive definite: smallest eigenvalue -1.000e+00; "
                              "use damping > 0 (or a positive semi-definite curvature such as the GGN)")
    with pytest.raises(SingularCurvatureError) as err:
        inverse_spd(np.diag([1.0, 1e-17]), what="test matrix")
    assert str(err.value) == ("the test matrix (damping 0.0) is numerically singular: condition ~ 1.0e+17; "
                              "use damping > 0")
    assert inverse_spd(np.zeros((0, 0))).shape == (0, 0)


def test_inverse_spd_threshold_is_relative_to_the_scale():
    """A tiny but perfectly conditioned matrix is invertible: the singularity test
    compares the Cholesky diagonal with its own largest entry."""
    assert np.allclose(inverse_spd(1e-20 * np.eye(3)), 1e20 * np.eye(3), rtol=1e-12)
    assert np.allclose(inverse_spd(np.eye(3), damping=1.0), 0.5 * np.eye(3), rtol=1e-12, atol=0)


def test_obs_converts_integer_input_to_float():
    obs = OBS(np.array([[2, 1], [1, 2]]), np.array([1, 3]))
    obs.remove([0])
    assert obs.w.dtype == np.float64 and obs.w[1] == pytest.approx(2.5, rel=1e-12)
    assert obs.Hinv[1, 1] == pytest.approx(2 - 1 / 2, rel=1e-12)


def test_obs_checks_and_messages():
    with pytest.raises(ValueError, match=r"^OBS: Hinv must have shape \(2, 2\), got \(3, 3\)$"):
        OBS(np.eye(3), np.ones(2))
    grad_only = OBS(np.eye(2), np.ones(2), grad=np.ones(2))  # saliencies need only the gradient
    assert np.all(np.isfinite(grad_only.saliencies()))
    with pytest.raises(ValueError, match="^OBS: a removal under the full Taylor model needs the matrix H as well as "
                                         "the gradient$"):
        grad_only.remove([0])
    assert grad_only.active.all() and np.array_equal(grad_only.w, np.ones(2))
    with pytest.raises(ValueError, match=r"^OBS: grad must be \(2,\), got \(3,\)$"):
        OBS(np.eye(2), np.ones(2), grad=np.ones(3), H=np.eye(2))
    with pytest.raises(ValueError, match=r"^OBS: H must be \(2, 2\), got \(3, 3\)$"):
        OBS(np.eye(2), np.ones(2), grad=np.ones(2), H=np.eye(3))
    obs = OBS(np.eye(2), np.ones(2))
    obs.remove([0])
    with pytest.raises(ValueError, match="^OBS: coordinate already removed$"):
        obs.remove([0])
    with pytest.raises(ValueError, match="^OBS: fewer prunable weights left than requested$"):
        OBS(np.eye(2), np.ones(2)).prune(3)
    with pytest.raises(ValueError, match=r"^OBS: fewer prunable weights left than requested \(one weight is kept in "
                                         r"every layer\)$"):
        OBS(np.eye(2), np.ones(2)).prune(2, layer_of=np.array([0, 0]))


def test_prunable_given_as_integers_is_a_mask():
    s = OBS(np.eye(3), np.ones(3), prunable=[1, 0, 1]).saliencies()
    assert np.isinf(s[1]) and np.isfinite(s[[0, 2]]).all()


@pytest.mark.parametrize("mask, exc, msg", [
    (np.array([0.5, 0.0, 0.0]), TypeError, "OBS: prunable must be a mask of True/False (or 0/1 integers), got dtype float64"),
    (["no", "", ""], TypeError, "OBS: prunable must be a mask of True/False (or 0/1 integers), got dtype <U2"),
    ([2, 0, 1], ValueError, "OBS: prunable given as integers must hold only 0 and 1, got values [0, 1, 2]"),
])
def test_prunable_that_is_not_a_mask_is_refused(mask, exc, msg):
    with pytest.raises(exc) as e:
        OBS(np.eye(3), np.ones(3), prunable=mask)
    assert str(e.value) == msg


def test_default_removes_one_at_a_time_which_differs_from_a_group():
    """Removing weight 0 drives weight 1 up (strong coupling), so one-at-a-time OBS
    takes 2 next, while a group of two takes the two smallest at the start."""
    Hinv = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    w = np.array([1.0, -1.1, 1.2])
    seq = OBS(Hinv, w)
    seq.prune(2)
    grp = OBS(Hinv, w)
    grp.prune(2, group_size=2)
    assert seq.order == [0, 2] and sorted(grp.order) == [0, 1]


def constrained_minimum(H, w, Q):
    """``(d, 1/2 d^T H d)`` minimising ``1/2 d^T H d`` subject to ``(w + d)_Q = 0``, from the
    KKT system ``[[H, E_Q], [E_Q^T, 0]] [d; mu] = [0; -w_Q]`` solved afresh (no OBS formula)."""
    n, k = len(w), len(Q)
    E = np.eye(n)[:, Q]
    K = np.block([[H, E], [E.T, np.zeros((k, k))]])
    d = np.linalg.solve(K, np.concatenate([np.zeros(n), -w[Q]]))[:n]
    return d, 0.5 * d @ H @ d


def test_groups_of_one_two_and_three_against_the_constrained_matrix_inverted_afresh():
    """A removal of ``Q`` leaves the weights of the constrained minimum and, in place of
    ``H^-1``, the inverse of ``H`` restricted to the other coordinates (zero rows and
    columns at ``Q``), here inverted afresh with numpy; groups of 1, 2 and 3 (the rank-one
    update must be taken for one weight only), alone and one after another."""
    rng = np.random.default_rng(11)
    n = 8
    B = rng.standard_normal((n, n))
    H = B @ B.T / n + 0.5 * np.eye(n)
    Hinv = np.linalg.inv(H)
    w = rng.standard_normal(n)

    def expected_inverse(removed):
        keep = np.setdiff1d(np.arange(n), removed)
        out = np.zeros((n, n))
        out[np.ix_(keep, keep)] = np.linalg.inv(H[np.ix_(keep, keep)])
        return out

    groups = ([5], [1, 6], [0, 3, 7])
    for Q in groups:
        obs = OBS(Hinv, w)
        s = obs.remove(Q)
        d, cost = constrained_minimum(H, w, Q)
        assert s == pytest.approx(cost, rel=1e-12)
        assert np.allclose(obs.w, w + d, rtol=0, atol=1e-12 * np.abs(w).max())
        assert np.all(obs.w[Q] == 0.0)
        assert np.allclose(obs.Hinv, expected_inverse(Q), rtol=0, atol=1e-12 * np.abs(Hinv).max())
    obs, removed = OBS(Hinv, w), []
    for Q in groups:  # one after another: the joint constrained minimum of all removed so far
        obs.remove(Q)
        removed += Q
        d, cost = constrained_minimum(H, w, removed)
        assert sum(obs.increments) == pytest.approx(cost, rel=1e-12)
        assert np.allclose(obs.w, w + d, rtol=0, atol=1e-12 * np.abs(w).max())
        assert np.allclose(obs.Hinv, expected_inverse(removed), rtol=0, atol=1e-12 * np.abs(Hinv).max())


def test_inverse_spd_converts_longdouble_to_float64():
    """A longdouble matrix is converted to float64 before the damping is added: the result
    is float64 and equals the float64 computation bit for bit.  Here ``3 + u/2 - u/256``
    (``u`` the float64 spacing at 3) rounds to 3 in float64, and 3 plus the damping ``u/2``
    stays 3 (a tie, to even); added in longdouble first, it would round up to ``3 + u``."""
    u = np.spacing(3.0)
    H = np.array([[np.longdouble(3) + np.longdouble(u) / 2 - np.longdouble(u) / 256]])
    assert H.dtype == np.longdouble and H[0, 0] != 3
    out = inverse_spd(H, damping=u / 2)
    assert out.dtype == np.float64
    assert np.array_equal(out, inverse_spd(np.array([[3.0]])))
    assert out[0, 0] == pytest.approx(1 / 3, rel=1e-15)
    big = np.diag(np.array([H[0, 0], 2.0], dtype=np.longdouble))
    assert np.array_equal(inverse_spd(big, u / 2), inverse_spd(np.diag([3.0, 2.0]), u / 2))


def test_increments_add_up_for_groups_and_group_saliency():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    Hinv = np.linalg.inv(B @ B.T + np.eye(6))
    w = rng.standard_normal(6)
    obs = OBS(Hinv, w)
    Q = [1, 4]
    expected = obs.group_saliency(Q)
    assert obs.remove(Q) == pytest.approx(expected, rel=1e-12)
    assert sum(obs.increments) == pytest.approx(expected, rel=1e-12)
    total = OBS(Hinv, w).prune(4, group_size=2)
    again = OBS(Hinv, w)
    again.prune(4, group_size=2)
    assert sum(again.increments) == pytest.approx(total, rel=1e-12)
    # each group step against a fresh constrained minimisation: the first group costs the
    # minimum with its two weights zero, the second what removing all four adds to that
    H = np.linalg.inv(Hinv)
    first, both = again.order[:2], again.order
    assert sum(again.increments[:2]) == pytest.approx(constrained_minimum(H, w, first)[1], rel=1e-12)
    assert sum(again.increments[2:]) == pytest.approx(constrained_minimum(H, w, both)[1]
                                                      - constrained_minimum(H, w, first)[1], rel=1e-12)
    assert total == pytest.approx(constrained_minimum(H, w, both)[1], rel=1e-12)
    assert np.allclose(again.w, w + constrained_minimum(H, w, both)[0], rtol=0, atol=1e-12 * np.abs(w).max())
    # the group formula, by hand: w_Q^T ([H^-1]_QQ)^-1 w_Q / 2
    assert expected == pytest.approx(w[Q] @ np.linalg.solve(Hinv[np.ix_(Q, Q)], w[Q]) / 2, rel=1e-12)


def test_ties_are_broken_by_index():
    """Equal saliencies (64 identical weights, identity curvature): the lowest indices go
    first, whatever the array length."""
    obs = OBS(np.eye(64), np.ones(64))
    obs.prune(5)
    assert obs.order == [0, 1, 2, 3, 4]


def test_a_group_larger_than_what_is_left_is_refused():
    with pytest.raises(ValueError, match="^OBS: fewer prunable weights left than requested$"):
        OBS(np.eye(3), np.ones(3)).prune(4, group_size=2)


def test_last_of_layer_against_a_loop():
    from refprune.pruning.obs import _last_of_layer

    rng = np.random.default_rng(0)
    for _ in range(50):
        layer_of = rng.integers(-1, 3, 12)
        free = rng.random(12) < 0.6
        expect = np.array([free[i] and layer_of[i] >= 0 and
                           sum(free[j] and layer_of[j] == layer_of[i] for j in range(12)) == 1 for i in range(12)])
        assert np.array_equal(_last_of_layer(free, layer_of), expect)


def test_full_taylor_removals_one_by_one_reach_the_joint_constrained_minimum():
    # minimise m(d) = g.d + d^T H d / 2 subject to (w + d)_Q = 0: with u = H^-1 g,
    # d = -u - H^-1 E (E^T H^-1 E)^-1 (w_Q - u_Q) (Lagrange); removals one at a time
    # re-centre the model at each step and so reach the same point
    rng = np.random.default_rng(6)
    B = rng.standard_normal((5, 8))
    H = B @ B.T / 8 + 0.2 * np.eye(5)
    w, g = rng.standard_normal(5), rng.standard_normal(5)
    Hinv = np.linalg.inv(H)
    obs = OBS(Hinv, w, grad=g, H=H)
    total = obs.remove([3]) + obs.remove([1]) + obs.remove([4])
    Q = [3, 1, 4]
    u = Hinv @ g
    d = -u - Hinv[:, Q] @ np.linalg.solve(Hinv[np.ix_(Q, Q)], w[Q] - u[Q])
    np.testing.assert_allclose(obs.w, w + d, rtol=1e-10, atol=1e-12)
    assert np.all(obs.w[Q] == 0.0)
    assert total == pytest.approx(g @ d + d @ H @ d / 2, rel=1e-10)
    np.testing.assert_allclose(obs.g, g + H @ d, rtol=1e-10, atol=1e-12)


def test_obs_refuses_nan_in_the_gradient_or_matrix():
    with pytest.raises(ValueError, match=r"^OBS: grad contains 1 NaN or inf value\(s\)$"):
        OBS(np.eye(2), np.ones(2), grad=np.array([np.nan, 0.0]), H=np.eye(2))
    with pytest.raises(ValueError, match=r"^OBS: H contains 2 NaN or inf value\(s\)$"):
        OBS(np.eye(2), np.ones(2), grad=np.ones(2), H=np.array([[1.0, np.inf], [np.inf, 1.0]]))
    grad = np.array([1, 2])
    obs = OBS(np.eye(2), np.ones(2), grad=grad, H=np.eye(2, dtype=int))
    assert obs.g.dtype == obs.H.dtype == np.float64


def test_inverse_spd_refuses_a_cholesky_diagonal_at_the_threshold():
    # threshold sqrt(n eps) * max diag(L): with n = 4 it is 2^-25 exactly, a power of two
    # that the Cholesky factor of diag(1, 1, 1, 2^-50) reproduces without rounding
    with pytest.raises(SingularCurvatureError, match="numerically singular"):
        inverse_spd(np.diag([1.0, 1.0, 1.0, 2.0**-50]))
    just_above = (2.0**-25 * (1 + 2**-20)) ** 2
    assert inverse_spd(np.diag([1.0, 1.0, 1.0, just_above]))[3, 3] == pytest.approx(1 / just_above, rel=1e-12)
