"""The harness's pruning references (refprune.conformance.pruning_quantities): their
refusals word for word, the options they pass on, the defaults wrapper (built at import,
so called here directly) and the grouped reference's array and description."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import pruning_quantities as pq


def test_with_defaults_fills_only_what_is_not_given():
    f = pq._with_defaults(lambda case, options: (case, options), {"a": 1, "b": 2})
    assert f("c") == ("c", {"a": 1, "b": 2})
    assert f("c", None) == ("c", {"a": 1, "b": 2})
    assert f("c", {"b": 3, "d": 4}) == ("c", {"a": 1, "b": 3, "d": 4})


def test_kfac_of_passes_approx_and_bias():
    case = cf.make_case("conv-tanh-avgpool", "ce-mean")
    opts = dict(curvature="empirical_fisher", approx="reduce", bias="separate", damping=1.0)
    want = rp.kfac(*case.args(), curvature="empirical_fisher", approx="reduce", bias="separate").to_dense()
    assert np.array_equal(pq.kfac_of(case, opts).to_dense(), want)
    assert not np.allclose(want, rp.kfac(*case.args(), curvature="empirical_fisher").to_dense())


def test_refusals_word_for_word():
    with pytest.raises(pq.NotCompared) as e:
        pq.PRUNING_QUANTITIES["kron_obs_saliencies"][0](cf.make_case("linear", "ce-mean"))
    assert str(e.value) == ("no unit can be removed: the network has one Linear/Conv2d layer (the last one keeps its "
                            "outputs)")
    case = cf.make_case("conv-tanh-avgpool", "ce-mean")  # "reduce": A singular, F_l not zero on its null space
    with pytest.raises(pq.NotCompared) as e:
        pq.checked_ekfac(case, dict(curvature="ggn", approx="reduce", bias="fold"))
    assert str(e.value) == ("not uniquely defined: K-FAC's factors have a repeated eigenvalue and the curvature "
                            "compressed to that eigenspace is not a multiple of the identity, so EKFAC depends on the "
                            "eigenvectors chosen (and on the BLAS)")


def test_eigendamage_importances_sum_to_eq_9_with_each_kind_of_eigenvalue():
    # summed over every direction of a side, Wang et al. 2019, eq. 9 gives sum_ij W*_ij^2 kappa_ij / 2
    case = cf.make_case("mlp-tanh", "ce-mean")
    op = rp.kfac(*case.args())
    E = rp.ekfac(*case.args())
    for eig, kappas in (("ekfac", [b.scales for b in E.blocks]),
                        ("kfac", [np.outer(b.eigh()[0], b.eigh()[2]) for b in op.blocks])):
        imp = np.asarray(pq.PRUNING_QUANTITIES["eigendamage_importances"][0](case, {"eigenvalues": eig}))
        start = 0
        for b, kappa in zip(op.blocks, kappas):
            _, US, _, UA = b.eigh()
            lay = b.layout
            M = lay.to_matrix(case.theta[lay.offset : lay.offset + lay.size][:, None])[0]
            total = ((US.T @ M @ UA) ** 2 * kappa).sum() / 2
            c, p = lay.c, lay.p
            assert np.isclose(imp[start : start + c].sum(), total, rtol=1e-12), eig
            assert np.isclose(imp[start + c : start + c + p].sum(), total, rtol=1e-12), eig
            start += c + p


def test_grouped_reads_as_a_copy_of_its_values_and_says_what_it_merged():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    g = pq.Grouped(values, [np.array([0]), np.array([1, 2]), np.array([3])])
    a = np.asarray(g)
    a[0] = 99.0
    assert values[0] == 1.0  # the reference is never changed through its array
    assert np.asarray(g, dtype=np.float32).dtype == np.float32
    assert g.describe() == ("compared as sums over each repeated eigenvalue's directions (2 of 4 entries merged): "
                            "their split depends on the eigenvectors chosen")
    three = pq.Grouped(np.zeros(5), [np.array([0, 1, 2]), np.array([3]), np.array([4])])
    assert three.describe().startswith("compared as sums over each repeated eigenvalue's directions (3 of 5 ")


def test_a_singular_layer_hessian_is_named_by_its_layer():
    # layer 2, Linear(4, 3), sees 3 samples of 4 features: 2 X X^T / N has rank 3 < 4
    with pytest.raises(rp.SingularCurvatureError, match=r"^the layer Hessian of layer 2 \(damping 0\.0\) is not "
                                                        r"positive definite: smallest eigenvalue "):
        pq.PRUNING_QUANTITIES["layer_obs_losses"][0](cf.make_case("mlp-tanh", "ce-mean"), {"damping": 0.0})


def _degenerate_case():
    """Linear(2, 3), Tanh, Linear(3, 2) on the four inputs +-e1, +-e2: the first layer's
    A = mean [x, 1][x, 1]^T = diag(1/2, 1/2, 1) has the eigenvalue 1/2 twice."""
    import dataclasses

    model = rp.Sequential(rp.Linear(2, 3), rp.Tanh(), rp.Linear(3, 2))
    base = cf.build_case("degenerate", model, (2,), "ce-mean", n=4)
    return dataclasses.replace(base, X=np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))


def test_eigendamage_on_a_repeated_eigenvalue():
    case = _degenerate_case()
    got = pq.PRUNING_QUANTITIES["eigendamage_importances"][0](case, {"eigenvalues": "kfac"})
    assert isinstance(got, pq.Grouped)
    # entries: layer 1's 3 S-side then 3 A-side directions (A's eigenvalues 1/2, 1/2, 1), layer 2's 2 then 4
    assert [g.tolist() for g in got.groups] == [[0], [1], [2], [3, 4], [5], [6], [7], [8], [9], [10], [11]]
    assert got.describe() == ("compared as sums over each repeated eigenvalue's directions (2 of 12 entries merged): "
                              "their split depends on the eigenvectors chosen")
    # the pair's sum does not depend on the basis: 1/2 sum_i s_i |(U_S^T M)_i restricted to span(e1, e2)|^2 / 2
    b = rp.kfac(*case.args()).blocks[0]
    s, US, _, _ = b.eigh()
    M = b.layout.to_matrix(case.theta[b.layout.offset : b.layout.offset + b.layout.size][:, None])[0]
    pair = 0.5 * (s * ((US.T @ M)[:, :2] ** 2).sum(axis=1)).sum() / 2
    assert np.isclose(np.asarray(got)[3:5].sum(), pair, rtol=1e-10)
    with pytest.raises(pq.NotCompared) as e:
        pq.PRUNING_QUANTITIES["eigendamage_importances"][0](case, {"eigenvalues": "ekfac"})
    assert str(e.value) == ("not uniquely defined: a K-FAC factor has a repeated eigenvalue, and the importances of "
                            "the directions in that eigenspace depend on the eigenvectors chosen")



def _spectrum_block(s, a, rng):
    """A K-FAC block of layer 1 of the degenerate case with factors of eigenvalues ``s``, ``a``."""
    lay = rp.kfac(*_degenerate_case().args()).blocks[0].layout
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    P, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return rp.curvature.kronecker.KroneckerBlock(Q @ np.diag(s) @ Q.T, P @ np.diag(a) @ P.T, lay)


@pytest.mark.parametrize("scale", [1e4, 1e-4])
def test_repeated_eigenvalues_are_found_relative_to_the_largest(scale):
    """Two eigenvalues closer than 1e-6 of the factor's largest are one eigenvalue, at any
    scale: (1, 1 + 1e-7, 3) x scale is a pair and a single one; (1, 1 + 1e-4, 3) x scale
    three single ones (1e-4 / 3 > 1e-6)."""
    rng = np.random.default_rng(5)
    a = np.array([1.0, 2.0, 3.0]) * scale
    pair = _spectrum_block(np.array([1.0, 1.0 + 1e-7, 3.0]) * scale, a, rng)
    apart = _spectrum_block(np.array([1.0, 1.0 + 1e-4, 3.0]) * scale, a, rng)
    assert [g.tolist() for g in pq._direction_groups([pair])] == [[0, 1], [2], [3], [4], [5]]
    assert [g.tolist() for g in pq._direction_groups([apart])] == [[0], [1], [2], [3], [4], [5]]
    # the rotated copy turns the pair's eigenvectors within their plane and leaves every other one
    s, US, a_, UA = pair.eigh()
    s2, US2, a2, UA2 = pq._rotated([pair], np.random.default_rng(0))[0].eigh()
    assert np.array_equal(s2, s) and np.array_equal(a2, a_) and np.array_equal(UA2, UA)
    assert np.array_equal(US2[:, 2], US[:, 2])
    assert np.abs(US2[:, :2] - US[:, :2]).max() > 1e-3  # turned
    assert np.allclose(US2[:, :2] @ US2[:, :2].T, US[:, :2] @ US[:, :2].T, atol=1e-12)  # in the same plane
    _, US, _, UA = apart.eigh()
    _, US2, _, UA2 = pq._rotated([apart], np.random.default_rng(0))[0].eigh()
    assert np.array_equal(US2, US) and np.array_equal(UA2, UA)


@pytest.mark.parametrize("c", [1e-12, 1e12])
def test_eigendamage_verdict_does_not_depend_on_the_importances_scale(monkeypatch, c):
    """The tolerances that decide between an array, a Grouped reference and a refusal are
    relative to the largest importance: every importance multiplied by ``c`` (the same
    eigenvectors, the same comparison) gives the same verdict and ``c`` times the values."""
    case = _degenerate_case()
    f = pq.PRUNING_QUANTITIES["eigendamage_importances"][0]
    want = f(case, {"eigenvalues": "kfac"})
    assert isinstance(want, pq.Grouped)
    plain = pq._importances
    monkeypatch.setattr(pq, "_importances", lambda *a: c * plain(*a))
    got = f(case, {"eigenvalues": "kfac"})
    assert isinstance(got, pq.Grouped)
    assert [g.tolist() for g in got.groups] == [g.tolist() for g in want.groups]
    assert np.array_equal(np.asarray(got), c * np.asarray(want))
    with pytest.raises(pq.NotCompared):
        f(case, {"eigenvalues": "ekfac"})


def test_ekfac_importances_refused_when_the_eigenvalue_estimate_depends_on_the_basis():
    """Inputs (+-1, +-1): layer 1's A = mean [x, 1][x, 1]^T is the identity, one eigenvalue
    three times.  In eigh's basis (e1, e2, e3) the curvature's diagonal entries of a row
    are equal (x_1^2 = x_2^2 = 1 for every sample), so EKFAC's eigenvalues there are
    equal too, but the off-diagonal entries (sum of x_1 x_2 ...) are not zero: in another
    basis of the same eigenspace the re-estimated eigenvalues, and the importances' sums,
    differ (computed here from the dense GGN), so the reference must refuse."""
    import dataclasses

    model = rp.Sequential(rp.Linear(2, 3), rp.Tanh(), rp.Linear(3, 2))
    base = cf.build_case("isotropic", model, (2,), "ce-mean", n=4)
    case = dataclasses.replace(base, X=np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]))
    b = rp.kfac(*case.args()).blocks[0]
    assert np.allclose(b.A, np.eye(3), rtol=0, atol=1e-15)
    lay = b.layout
    F = rp.ggn(*case.args())[lay.offset : lay.offset + lay.size, lay.offset : lay.offset + lay.size]
    M = lay.to_matrix(case.theta[lay.offset : lay.offset + lay.size][:, None])[0]
    _, US, _, _ = b.eigh()

    def row_sums(V):
        """Wang et al. 2019, eq. 9 summed per S-side direction, kappa re-estimated in (US, V)."""
        out = []
        for i in range(3):
            tot = 0.0
            for j in range(3):
                v = lay.from_matrix(np.outer(US[:, i], V[:, j])[None])[:, 0]
                tot += (US[:, i] @ M @ V[:, j]) ** 2 * (v @ F @ v) / 2
            out.append(tot)
        return np.array(out)

    R, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))
    assert np.abs(row_sums(R) - row_sums(np.eye(3))).max() > 1e-6 * np.abs(row_sums(np.eye(3))).max()
    with pytest.raises(pq.NotCompared) as e:
        pq.PRUNING_QUANTITIES["eigendamage_importances"][0](case, {"eigenvalues": "ekfac"})
    assert str(e.value) == pq.EIGENDAMAGE_NOT_UNIQUE
