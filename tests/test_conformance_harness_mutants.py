"""refprune.conformance.harness, piece by piece: eigenvalue clusters and the EKFAC
uniqueness test on hand-built factors, the comparison of factor pairs, which case is the
worst, the report's table, summary and messages, each against a hand-built expectation."""

import re
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance.harness import QUANTITIES, _clusters, _compare, _ekfac_curvature, _result, \
    ekfac_is_well_defined

LIN = cf.make_case("linear", "ce-mean")  # Linear(3, 2): n = 8, S 2x2, A 4x4 (bias folded)
LIN_SUM = cf.make_case("linear", "ce-sum")
MLP = cf.make_case("mlp-tanh", "ce-mean")  # n = 31, more parameters than LIN
COMPLEX = ("is complex (complex128): refprune's quantities are real float64, and the imaginary part would be "
           "dropped silently; return a real array")
DEFAULT_KFAC = "{'curvature': 'ggn', 'approx': 'expand', 'bias': 'fold'}"


def _grad(c):
    return rp.grad(*c.args())


# -- eigenvalue clusters and EKFAC uniqueness ------------------------------------------------

def test_clusters_group_neighbours_within_the_tolerance():
    assert _clusters(np.array([0.0, 0.0, 5.0]), 0.1) == [[0, 1], [2]]
    assert _clusters(np.array([1.0, 1.0]), 0.1) == [[0, 1]]  # the gap 0, not the sum 2
    assert _clusters(np.array([0.0, 0.5]), 0.5) == [[0, 1]]  # a gap equal to the tolerance joins
    assert _clusters(np.array([0.0, 0.6]), 0.5) == [[0], [1]]


def _op(s, a):
    """One layer with factors diag(s) and diag(a): U_S = U_A = I, so the basis vector of
    eigenpair (i, j) is the flat coordinate i p + j (identity layout)."""
    c, p = len(s), len(a)
    layout = NS(offset=0, size=c * p, c=c, p=p, from_matrix=lambda M: M.reshape(len(M), c * p).T)
    eig = (np.asarray(s, float), np.eye(c), np.asarray(a, float), np.eye(p))
    return NS(blocks=[NS(layout=layout, kron=NS(eigh=lambda: eig))])


def test_ekfac_uniqueness_on_hand_built_factors():
    F = np.diag([1.0, 2.0, 3.0, 4.0])
    assert ekfac_is_well_defined(_op([1, 2], [1, 2]), F)  # no repeated eigenvalue
    assert ekfac_is_well_defined(_op([1, 1], [1, 1]), 3.0 * np.eye(4))  # F a multiple of I on the eigenspace
    assert not ekfac_is_well_defined(_op([1, 1], [1, 1]), F)  # a 2 x 2 eigenspace, F = diag(1..4) on it
    # S repeated, A not: eigenspaces {0, 2} and {1, 3}, where F is diag(1, 3) and diag(2, 4)
    assert not ekfac_is_well_defined(_op([1, 1], [1, 2]), F)
    # the eigenspace {1, 2} of A comes after a single eigenpair (0, 0)
    assert not ekfac_is_well_defined(_op([1, 2], [1, 2, 2]), np.diag([1.0, 2, 3, 4, 5, 6]))
    # F = 0 is a multiple of I, also with rtol = 0
    assert ekfac_is_well_defined(_op([1, 1], [1, 1]), np.zeros((4, 4)), rtol=0.0)


def test_ekfac_uniqueness_tolerances_are_relative():
    # on {0, 2}: diag(100.01, 100), off a multiple of I by 0.005 = 5e-5 of max |F|
    F = 100.0 * np.eye(4)
    F[0, 0] += 0.01
    assert ekfac_is_well_defined(_op([1, 1], [1, 2]), F, rtol=1e-3)
    # diag(0.0101, 0.01): off by 5e-5, 5e-3 of max |F| (below 1: no floor at 1)
    F = 0.01 * np.eye(4)
    F[0, 0] += 1e-4
    assert not ekfac_is_well_defined(_op([1, 1], [1, 2]), F, rtol=1e-3)
    D = np.diag([1.0, 2.0, 3.0, 4.0])
    # eigenvalues 1e-3 and 1e-3 + 1e-8: 1e-5 apart relative to the largest, more than gap 1e-6
    assert ekfac_is_well_defined(_op([1e-3, 1e-3 + 1e-8], [1, 2]), D)
    assert ekfac_is_well_defined(_op([1, 2], [1e-3, 1e-3 + 1e-8]), D)
    # 100 and 100 + 1e-5: 1e-7 apart relative to the largest: one eigenspace
    assert not ekfac_is_well_defined(_op([1, 2], [100.0, 100.0 + 1e-5]), D)


def test_ekfac_curvature_is_the_one_the_options_name():
    c = LIN_SUM  # R = 1: the empirical Fisher is sum_n g_n g_n^T = P^T P (rows of P: dl_n/dtheta)
    P = rp.per_sample_grads(*c.args())
    assert np.allclose(_ekfac_curvature(c, {"curvature": "empirical_fisher"}), P.T @ P, rtol=1e-12, atol=0)
    G = rp.ggn(*c.args())  # the true Fisher equals the GGN (docs/conventions.md §3)
    assert np.allclose(_ekfac_curvature(c, {"curvature": "fisher"}), G, rtol=1e-10, atol=1e-14)
    assert np.array_equal(_ekfac_curvature(c, {"curvature": "ggn"}), G)
    mc = rp.fisher(*c.args(), curvature="mc_fisher", targets=c.targets)  # the case's own sampled targets
    assert np.allclose(_ekfac_curvature(c, {"curvature": "mc_fisher"}), mc, rtol=1e-12, atol=0)


# -- comparing one result ----------------------------------------------------------------------

def _pairs(c):
    return [(b.S, b.A) for b in rp.kfac(*c.args()).blocks]


def test_compare_factor_pairs():
    """The harness compares factor pairs through diagnosis.compare_pairs; the sentences
    pinned here are that function's for these planted differences."""
    ref = _pairs(MLP)
    (S0, A0), (S1, A1) = ref
    assert _compare("kfac_factors", [], ref, MLP, 1e-9) == (float("inf"), [
        "0 factor pairs, refprune has 2 (one per Linear/Conv2d layer, the bias folded into A)"])
    assert _compare("kfac_factors", ref, ref, MLP, 0.0) == (0.0, [])  # exact: no note, even at tol = 0
    # the error is the largest over every pair, not the last: max |2 S - S| / max |S| = 1
    head = "layer pair 0 (layer 0 Linear(3, 4, bias=True))"
    err, notes = _compare("kfac_factors", [(2.0 * S0, A0), (S1, A1)], ref, MLP, 1e-9)
    assert err == 1.0 and notes == [f"{head}: S error 1.00e+00, A error 0.00e+00",
                                    "layer pair 0: S alone off by a constant factor 2"]
    # 2 x 0.6 = 1.2: not the same Kronecker product, each factor named on its own
    err, notes = _compare("kfac_factors", [(2.0 * S0, 0.6 * A0), (S1, A1)], ref, MLP, 1e-9)
    assert notes == [f"{head}: S error 1.00e+00, A error 4.00e-01", "layer pair 0: S off by a constant factor 2",
                     "layer pair 0: A off by a constant factor 0.6"]
    # S with a wrong shape: no factor is fitted and the bias row of A is not blamed
    err, notes = _compare("kfac_factors", [(S0[:-1, :-1], A0), (S1, A1)], ref, MLP, 1e-9)
    assert err == float("inf") and notes == [f"{head}: S error inf, A error 0.00e+00",
                                             "layer pair 0: shapes S (3, 3), A (4, 4); refprune's S (4, 4), A (4, 4)"]
    err, notes = _compare("kfac_factors", [(S0, A0[:-1, :-1]), (S1, A1)], ref, MLP, 1e-9)
    assert notes == [f"{head}: S error 0.00e+00, A error inf",
                     "layer pair 0: A has shape (3, 3), refprune's (4, 4): the bias row of A (refprune folds it in) "
                     "is missing or extra"]


def test_compare_array_within_tolerance_has_no_diagnosis():
    g = _grad(LIN)
    assert _compare("grad", g, g, LIN, 1e-9) == (0.0, [])
    assert _compare("grad", g, g, LIN, 0.0) == (0.0, [])


def test_result_names_the_A_of_a_pair():
    with pytest.raises(TypeError) as e:
        _result("kfac_factors", [(np.eye(2), 1j * np.eye(2))], LIN)
    assert str(e.value) == f"the adapter's kfac_factors for case {LIN.name}: A of pair 0 {COMPLEX}"


# -- check and assert_conforms -------------------------------------------------------------------

def _only(cases, fn):
    names = {c.name for c in cases}

    def call(c):
        if c.name not in names:
            raise RuntimeError(f"unexpected case {c.name}")
        return fn(c)
    return call


def test_assert_conforms_passes_cases_and_rtol_on():
    adapter = cf.Adapter(grad=_only([LIN], lambda c: _grad(c) * (1 + 1e-6)))
    report = cf.assert_conforms(adapter, [LIN], rtol=1e-3)
    assert report.ok and report["grad"].cases == 1 and report["grad"].tolerance == 1e-3
    bad = cf.Adapter(grad=lambda c: 0.5 * _grad(c))
    with pytest.raises(AssertionError) as e:
        cf.assert_conforms(bad, [LIN])
    assert str(e.value) == "conformance with refprune failed:\n" + cf.check(bad, [LIN]).summary()


def test_check_messages():
    ok = cf.Adapter(grad=_grad)
    with pytest.raises(TypeError) as e:
        cf.check(5)
    assert str(e.value) == "check: expected a refprune.conformance.Adapter, got int"
    with pytest.raises(TypeError) as e:
        cf.check(ok, 5)
    assert str(e.value) == "check: cases must be a list of refprune.conformance.Case, got int"
    with pytest.raises(TypeError) as e:
        cf.check(ok, [LIN, 3])
    assert str(e.value) == ("check: cases must be a list of refprune.conformance.Case, got int among them (build one "
                            "with make_case or build_case)")
    with pytest.raises(ValueError) as e:
        cf.check(ok, [])
    assert str(e.value) == "check: no cases to check"
    with pytest.raises(ValueError) as e:
        cf.check(ok, [LIN], rtol={1: 1e-3, "zz": 1e-3})  # keys of two types are still listed
    assert str(e.value) == "check: rtol names [1, 'zz'], which the adapter does not compute; its quantities: ['grad']"


def test_check_rtol_dict_leaves_the_default_for_the_others():
    adapter = cf.Adapter(grad=_grad, loss=lambda c: rp.loss(*c.args()) * (1 + 1e-6))
    report = cf.check(adapter, [LIN], rtol={"loss": 1e-3})
    assert report.ok and report["grad"].tolerance == cf.DEFAULT_RTOL == 1e-9 and report["loss"].tolerance == 1e-3


def test_check_conventions_of_a_failure():
    kf = cf.check(cf.Adapter(kfac=lambda c: np.zeros((c.n_params,) * 2)), [LIN])["kfac"].smallest_failure
    assert kf.conventions == ("the K-FAC matrix (n, n), block diagonal, S kron A per layer over [W | b] "
                              f"(docs/conventions.md §4), options {DEFAULT_KFAC}")
    g = cf.check(cf.Adapter(grad=lambda c: 0.5 * _grad(c)), [LIN])["grad"].smallest_failure
    assert g.conventions == QUANTITIES["grad"][1]


def test_check_ekfac_with_mc_fisher_replays_the_case_targets():
    adapter = cf.Adapter(ekfac=lambda c: rp.ekfac(*c.args(), curvature="mc_fisher", targets=c.targets).to_dense(),
                         kfac_options={"curvature": "mc_fisher"})
    report = cf.check(adapter, [LIN])
    assert report.ok and report["ekfac"].cases == 1


def test_check_adapter_raising_or_complex_fails_every_case():
    def boom(c):
        raise RuntimeError("boom")

    res = cf.check(cf.Adapter(grad=boom), [MLP, LIN])["grad"]
    assert res.cases == 2 and len(res.failures) == 2 and res.max_error == float("inf")
    f = res.failures[0]
    assert f.case is LIN and f.error == float("inf") and f.diagnosis == [] and f.exception == "RuntimeError: boom"
    assert f.conventions == QUANTITIES["grad"][1]
    res = cf.check(cf.Adapter(grad=lambda c: _grad(c) + 1e-3j), [MLP, LIN])["grad"]
    assert res.cases == 2 and len(res.failures) == 2 and res.max_error == float("inf")
    f = res.failures[0]
    assert f.error == float("inf") and f.conventions == QUANTITIES["grad"][1] and f.exception is None
    assert f.diagnosis == [f"the adapter's grad for case {LIN.name} {COMPLEX}"]


def _scaled(eps):
    return lambda c: _grad(c) * (1 + eps[c.name])


def test_check_worst_case_is_the_first_with_the_largest_error():
    # cases run smallest first: LIN (8 parameters), then MLP (31)
    res = cf.check(cf.Adapter(grad=_grad), [MLP, LIN])["grad"]
    assert res.max_error == 0.0 and res.worst_case == LIN.name  # a tie keeps the first
    res = cf.check(cf.Adapter(grad=_scaled({LIN.name: 1e-3, MLP.name: 1e-5})), [MLP, LIN], rtol=0.1)["grad"]
    assert res.worst_case == LIN.name and res.max_error == pytest.approx(1e-3, rel=1e-9)
    res = cf.check(cf.Adapter(grad=_scaled({LIN.name: 1e-5, MLP.name: 1e-3})), [MLP, LIN], rtol=0.1)["grad"]
    assert res.worst_case == MLP.name and res.max_error == pytest.approx(1e-3, rel=1e-9)


def test_check_times_each_quantity_and_prints_only_when_asked(capsys):
    t0 = time.perf_counter()
    res = cf.check(cf.Adapter(grad=_grad), [LIN])["grad"]
    elapsed = time.perf_counter() - t0
    assert 0.0 <= res.seconds <= elapsed
    assert capsys.readouterr().out == ""
    cf.check(cf.Adapter(grad=_grad), [MLP, LIN], progress=True)
    assert re.fullmatch(r"conformance: grad: pass, largest relative error 0\.00e\+00 over 2 cases \(\d+\.\d s\)\n",
                        capsys.readouterr().out)
    cf.check(cf.Adapter(grad=lambda c: 0.5 * _grad(c)), [LIN], progress=True)
    assert re.fullmatch(r"conformance: grad: FAIL, largest relative error 5\.00e-01 over 1 cases \(\d+\.\d s\)\n",
                        capsys.readouterr().out)


# -- Adapter, Failure, Report ----------------------------------------------------------------------

def test_adapter_messages():
    with pytest.raises(TypeError) as e:
        cf.Adapter(grad=3)
    assert str(e.value) == "Adapter: grad must be a callable taking a Case, got int"
    with pytest.raises(TypeError) as e:
        cf.Adapter(kfac=len, kfac_options=["reduce"])
    assert str(e.value) == "Adapter: kfac_options must be a dict with keys among ['approx', 'bias', 'curvature'], got list"
    with pytest.raises(ValueError) as e:
        cf.Adapter(kfac=len, kfac_options={1: "x", "zz": 2})  # keys of two types are still listed
    assert str(e.value) == "Adapter: kfac_options has unknown keys [1, 'zz']; known: ['approx', 'bias', 'curvature']"


def test_failure_explain():
    f = cf.Failure(LIN, 0.5, "the rules", ["first note", "second note"])
    assert f.explain() == (f"case {LIN.describe()}\nrelative error 5.000e-01\n- first note\n- second note\n"
                           "compared under: the rules")
    f = cf.Failure(LIN, float("inf"), "the rules", [], "RuntimeError: boom")
    assert f.explain() == f"case {LIN.describe()}\nthe adapter raised RuntimeError: boom\ncompared under: the rules"


HEADER = ("| quantity | cases | largest relative error | tolerance | result | smallest failing case |\n"
          "| --- | --- | --- | --- | --- | --- |")


def _report():
    return cf.Report([
        cf.QuantityResult("grad", 1e-9, cases=2, max_error=0.0, worst_case="a"),
        cf.QuantityResult("loss", 1e-6, cases=2, max_error=0.5, worst_case="b",
                          failures=[cf.Failure(LIN, 0.5, "rules", ["note"])]),
        cf.QuantityResult("ekfac", 1e-9, cases=0, skipped=[("x", "why")]),
        cf.QuantityResult("hvp", 1e-9, cases=1, max_error=1e-12, worst_case="c",
                          skipped=[("y", "first reason"), ("z", "second reason")]),
    ])


def test_report_table_and_summary():
    r = _report()
    table = (HEADER + "\n"
             "| grad | 2 | 0.00e+00 (a) | 1e-09 | pass |  |\n"
             f"| loss | 2 | 5.00e-01 (b) | 1e-06 | FAIL | {LIN.name} |\n"
             "| ekfac | 0 | 0.00e+00 () | 1e-09 | FAIL: no case compared (1 skipped) |  |\n"
             "| hvp | 1 | 1.00e-12 (c) | 1e-09 | pass (2 skipped) |  |")
    assert r.table() == table
    explain = f"case {LIN.describe()}\nrelative error 5.000e-01\n- note\ncompared under: rules"
    assert r.summary() == "\n".join([
        table,
        "\nloss: failed on 1 of 2 cases; the smallest:\n" + explain,
        "\nekfac: compared on no case (every case was skipped)",
        "\nekfac: not compared on x: why",
        "\nhvp: not compared on y, z: first reason",
    ])
    assert str(r) == r.summary() and r.failed() == ["loss", "ekfac"] and not r.ok


def test_report_unknown_quantity():
    with pytest.raises(KeyError) as e:
        _report()["hessian"]
    assert e.value.args == ("the report has no quantity 'hessian'; it has ['grad', 'loss', 'ekfac', 'hvp']",)
