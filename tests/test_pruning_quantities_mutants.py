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

