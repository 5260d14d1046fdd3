"""refprune.conformance.harness at its edges: the references built by the harness's own
helpers (the OBS quantities, the K-FAC matrix, the options they pass), checked against a
second route; the options an Adapter accepts and refuses, with their messages; and the
comparison of per-layer results and option variants inside check.

The helpers are called directly: QUANTITIES is built when the module is imported, so a
change inside a helper shows only in a call made after the import."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance import harness as hs
from refprune.curvature.kronecker import kfac

LIN = cf.make_case("linear", "ce-mean")  # Linear(3, 2): n = 8
MLP = cf.make_case("mlp-tanh", "mse-mean")  # Linear(3, 4), Tanh, Linear(4, 3): n = 31
KFAC = dict(curvature="ggn", approx="expand", bias="fold")


def _damped_ggn(c):
    return rp.ggn(*c.args()) + c.obs_damping * np.eye(c.n_params)


def test_obs_inverse_is_the_inverse_of_the_damped_ggn():
    for c in (LIN, MLP):
        assert np.allclose(hs._obs(c) @ _damped_ggn(c), np.eye(c.n_params), rtol=0, atol=1e-8)


def test_obs_update_solves_the_constrained_least_change_problem():
    """The OBS step minimises d^T H d / 2 subject to d_q = -theta_q: the KKT system
    [[H, e_q], [e_q^T, 0]] [d; mu] = [0; -theta_q] (Hassibi and Stork 1993)."""
    for c in (LIN, MLP):
        H, q, n = _damped_ggn(c), c.obs_index, c.n_params
        K = np.zeros((n + 1, n + 1))
        K[:n, :n], K[n, q], K[q, n] = H, 1.0, 1.0
        rhs = np.zeros(n + 1)
        rhs[n] = -c.theta[q]
        want = np.linalg.solve(K, rhs)[:n]
        got = hs._obs_update(c, {})
        assert got.shape == (n,) and np.allclose(got, want, rtol=1e-8, atol=1e-12)
        assert got[q] == pytest.approx(-c.theta[q], rel=1e-10)


def test_kfac_keywords_replay_the_case_targets_only_for_the_mc_fisher():
    for curvature in ("ggn", "fisher", "empirical_fisher"):
        opts = dict(KFAC, curvature=curvature)
        assert hs._kfac_kw(LIN, opts) == opts
    opts = dict(KFAC, curvature="mc_fisher")
    kw = hs._kfac_kw(LIN, opts)
    assert set(kw) == {"curvature", "approx", "bias", "targets"} and kw["targets"] is LIN.targets
    assert {k: kw[k] for k in opts} == opts


@pytest.mark.parametrize("options", [KFAC, dict(KFAC, bias="separate"), dict(KFAC, curvature="mc_fisher"),
                                     dict(KFAC, curvature="mc_fisher", bias="separate")])
def test_kfac_dense_is_the_operators_own_dense_matrix(options):
    """The harness assembles K-FAC from its pairs with the layout helper; the operator's
    to_dense is the second route.  mc_fisher replays case.targets."""
    kw = dict(options)
    if kw["curvature"] == "mc_fisher":
        kw["targets"] = MLP.targets
    want = kfac(*MLP.args(), **kw).to_dense()
    got = hs._kfac_dense(MLP, dict(options))
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_no_options_passes_the_case_alone():
    seen = []

    def fn(case):
        seen.append(case)
        return 7.0

    ref = hs._no_options(fn)
    assert ref(LIN) == 7.0 and ref(MLP, {"x": 1}) == 7.0 and seen == [LIN, MLP]


# ---------------------------------------------------------------------------------------
# Adapter: what it accepts, what it refuses, and the options it settles on


def _raises(exc, fn):
    with pytest.raises(exc) as e:
        fn()
    return str(e.value)


def test_adapter_refuses_unknown_or_no_quantities_naming_the_known_ones():
    known = sorted(cf.QUANTITIES)
    assert "grad" in known and "kfac_factors" in known
    assert _raises(ValueError, lambda: cf.Adapter(hessain=len, grad=len)) == \
        f"Adapter: unknown quantities ['hessain']; known: {known}"
    assert _raises(ValueError, lambda: cf.Adapter(zz=len, aa=len)) == \
        f"Adapter: unknown quantities ['aa', 'zz']; known: {known}"
    assert _raises(ValueError, lambda: cf.Adapter()) == \
        f"Adapter: give at least one quantity callable; known: {known}"
    assert _raises(ValueError, lambda: cf.Adapter(kfac_options={})) == \
        f"Adapter: give at least one quantity callable; known: {known}"


def test_adapter_kfac_options_need_a_kfac_quantity_and_valid_values():
    assert _raises(ValueError, lambda: cf.Adapter(grad=len, hessian=len, kfac_options={"bias": "separate"})) == (
        "Adapter: kfac_options apply to ['kfac', 'kfac_factors', 'ekfac'], which the adapter does not compute (it has "
        "['grad', 'hessian'])")
    assert _raises(ValueError, lambda: cf.Adapter(grad=len, kfac_options={})) == (
        "Adapter: kfac_options apply to ['kfac', 'kfac_factors', 'ekfac'], which the adapter does not compute (it has "
        "['grad'])")
    assert _raises(ValueError, lambda: cf.Adapter(kfac=len, kfac_options={"approx": "bogus"})) == \
        "Adapter: kfac_options: approx must be one of ('expand', 'reduce'), got 'bogus'"
    for q in ("kfac", "kfac_factors", "ekfac"):
        a = cf.Adapter(grad=len, **{q: len}, kfac_options={"bias": "separate"})
        assert a.kfac_options == dict(KFAC, bias="separate")
        assert a.options == {"grad": {}, q: dict(KFAC, bias="separate")}


def test_adapter_options_per_quantity():
    assert _raises(TypeError, lambda: cf.Adapter(kfac=len, options=[("kfac", {})])) == \
        "Adapter: options must be a dict {quantity name: {option: value}}, got list"
    assert _raises(ValueError, lambda: cf.Adapter(kfac=len, loss=len, options={"grad": {}})) == \
        "Adapter: options names 'grad', which the adapter does not compute (it has ['kfac', 'loss'])"
    assert _raises(TypeError, lambda: cf.Adapter(kfac=len, options={"kfac": "reduce"})) == \
        "Adapter: options['kfac'] must be a dict {option: value}, got str"
    assert _raises(ValueError, lambda: cf.Adapter(kfac=len, kfac_options={"bias": "fold"},
                                                  options={"kfac": {}})) == \
        "Adapter: kfac has options both in kfac_options and in options; give them in one place"
    assert _raises(ValueError, lambda: cf.Adapter(grad=len, options={"grad": {"x": 1}})) == \
        "Adapter: options['grad'] has unknown keys ['x']; it takes no options"
    assert _raises(ValueError, lambda: cf.Adapter(c_obs_saliencies=len, options={
        "c_obs_saliencies": {"x": 1, 2: 3}})) == \
        "Adapter: options['c_obs_saliencies'] has unknown keys [2, 'x']; its options: ['curvature', 'damping']"
    # the K-FAC options are checked together, naming the quantity
    assert _raises(ValueError, lambda: cf.Adapter(kfac=len, options={"kfac": {"approx": "bogus"}})) == \
        "Adapter: options['kfac']: approx must be one of ('expand', 'reduce'), got 'bogus'"
    # defaults, then the given options converted by the options table (an int damping is a float)
    a = cf.Adapter(c_obs_saliencies=len, kfac=len, grad=len, options={"c_obs_saliencies": {"damping": 1},
                                                                      "kfac": {"approx": "reduce"}})
    assert a.options == {"c_obs_saliencies": {"curvature": "ggn", "damping": 1.0}, "kfac": dict(KFAC, approx="reduce"),
                         "grad": {}}
    assert type(a.options["c_obs_saliencies"]["damping"]) is float
    assert a.kfac_options == KFAC
    # an optimizer quantity's options go through its own rows
    a = cf.Adapter(kfac_step=len, options={"kfac_step": {"lr": 1, "bias": "separate"}})
    assert a.options["kfac_step"]["lr"] == 1.0 and a.options["kfac_step"]["bias"] == "separate"
    assert a.options["kfac_step"]["approx"] == "expand"
    assert _raises(ValueError, lambda: cf.Adapter(kfac_step=len, options={"kfac_step": {"approx": "bogus"}})) == \
        "optimizer quantity kfac_step: approx must be one of ('expand', 'reduce'), got 'bogus'"


def test_quantity_options_without_a_row_follow_the_kind_of_their_default():
    defaults = {"flag": False, "number": 1.0, "name": "a", "anything": None}
    where = "Adapter: options['mine']"
    assert hs.quantity_options("mine", {"flag": np.bool_(True), "number": 3, "name": "b", "anything": [1]},
                               defaults) == {"flag": np.bool_(True), "number": 3, "name": "b", "anything": [1]}
    assert hs.quantity_options("mine", {}, defaults) == {}
    for key, bad, kind in (("flag", 1, "True or False"), ("flag", "yes", "True or False"),
                           ("number", True, "a finite number"), ("number", float("nan"), "a finite number"),
                           ("number", float("inf"), "a finite number"), ("number", "1", "a finite number"),
                           ("name", 1, "a name (str)")):
        assert _raises(TypeError, lambda: hs.quantity_options("mine", {key: bad}, defaults)) == \
            f"{where}: {key} must be {kind} like its default {defaults[key]!r}, got {bad!r}"
    # the table's rows are converted (and checked) by the table
    assert hs.quantity_options("mine", {"damping": 2, "flag": True}, dict(defaults, damping=1e-3)) == \
        {"damping": 2.0, "flag": True}


def test_kfac_options_and_options_of_other_quantities_go_together():
    a = cf.Adapter(kfac=len, c_obd_saliencies=len, kfac_options={"approx": "reduce"},
                   options={"c_obd_saliencies": {"curvature": "empirical_fisher"}})
    assert a.options == {"kfac": dict(KFAC, approx="reduce"), "c_obd_saliencies": {"curvature": "empirical_fisher"}}


# ---------------------------------------------------------------------------------------
# check_rtol, _result and _compare


def test_check_rtol_accepts_zero_to_below_one():
    assert hs.check_rtol(0, "r") == 0.0 and type(hs.check_rtol(0, "r")) is float
    assert hs.check_rtol(np.float32(0.5), "r") == 0.5 and type(hs.check_rtol(np.float32(0.5), "r")) is float
    assert hs.check_rtol(np.nextafter(1.0, 0.0), "r") < 1.0
    for bad in (1.0, 1, -1e-300, float("nan"), float("inf")):
        assert _raises(ValueError, lambda: hs.check_rtol(bad, "check: rtol for grad")) == \
            f"check: rtol for grad must be a number in [0, 1), got {bad!r}"
    for bad in (True, "0.1", None, [0.1]):
        assert _raises(TypeError, lambda: hs.check_rtol(bad, "check: rtol for grad")) == \
            f"check: rtol for grad must be a real number in [0, 1), got {type(bad).__name__} {bad!r}"


def test_result_reads_arrays_lists_and_pairs():
    what = f"the adapter's q for case {LIN.name}"
    got = hs._result("q", [1, 2], LIN)
    assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]
    assert _raises(TypeError, lambda: hs._result("q", ["a"], LIN)).startswith(f"{what} must be a real numeric array")
    # a per-layer quantity: a list of arrays, one per layer
    ref = [np.zeros(2), np.zeros(3)]
    got = hs._result("q", ([1, 2], np.arange(3)), LIN, ref)
    assert [g.dtype for g in got] == [np.float64] * 2 and [g.tolist() for g in got] == [[1.0, 2.0], [0.0, 1.0, 2.0]]
    for raw, kind in (("ab", "str"), (b"ab", "bytes"), ({"a": 1}, "dict"), (3.0, "float"),
                      (np.zeros((2, 3)), "ndarray")):
        assert _raises(TypeError, lambda: hs._result("q", raw, LIN, ref)) == \
            f"{what} must be a list of arrays, one per layer, got {kind}"
    assert _raises(TypeError, lambda: hs._result("q", [np.zeros(2), np.ones(3) * 1j], LIN, ref)).startswith(
        f"{what}: entry 1 is complex (complex128)")
    # factor pairs
    kwhat = f"the adapter's kfac_factors for case {LIN.name}"
    pairs = hs._result("kfac_factors", iter([[np.eye(2), [[1, 0], [0, 1]]]]), LIN, [(0, 0)])
    assert len(pairs) == 1 and all(x.dtype == np.float64 for x in pairs[0]) and pairs[0][1].tolist() == [[1.0, 0.0],
                                                                                                        [0.0, 1.0]]
    assert _raises(TypeError, lambda: hs._result("kfac_factors", 3, LIN)) == \
        f"{kwhat} must be a list of (S, A) pairs, got int"
    for bad, kind in ((np.zeros((2, 2)), "ndarray"), ((np.eye(2),), "tuple"), ((1, 2, 3), "tuple"), ("SA", "str")):
        assert _raises(TypeError, lambda: hs._result("kfac_factors", [(np.eye(2), np.eye(2)), bad], LIN)) == \
            f"{kwhat}: entry 1 must be a pair (S, A), got {kind}"
    assert _raises(TypeError, lambda: hs._result("kfac_factors", [(1j * np.eye(2), np.eye(2))], LIN)).startswith(
        f"{kwhat}: S of pair 0 is complex")


def test_compare_per_layer_entries_each_against_its_own_scale():
    ref = [np.array([1.0, 2.0]), np.array([100.0, 0.0, 0.0])]
    assert hs._compare("q", [r.copy() for r in ref], ref, LIN, 0.0) == (0.0, [])
    assert hs._compare("q", [], [], LIN, 0.0) == (0.0, [])
    assert hs._compare("q", [ref[0]], ref, LIN, 0.1) == (
        float("inf"), ["1 entries, refprune has 2 (one per layer; see the conventions)"])
    # entry 0 off by a factor 3 (error 2), entry 1 off by 1 in one place (error 0.01 of its own scale)
    got = [3 * ref[0], ref[1] + np.array([0.0, 1.0, 0.0])]
    assert hs._compare("q", got, ref, LIN, 0.1) == (2.0, ["entry 0: relative error 2.00e+00, off by a constant factor 3"])
    assert hs._compare("q", got, ref, LIN, 1e-3) == (2.0, [
        "entry 0: relative error 2.00e+00, off by a constant factor 3", "entry 1: relative error 1.00e-02"])
    # an error equal to the tolerance is no failure
    assert hs._compare("q", got, ref, LIN, 2.0) == (2.0, [])
    got = [ref[0], np.zeros(2)]
    assert hs._compare("q", got, ref, LIN, 0.1) == (float("inf"), ["entry 1: shape (2,), refprune's is (3,)"])


def test_compare_an_array_explains_with_or_without_the_quantity():
    c = cf.make_case("linear", "mse-mean")  # C = 2 outputs
    g = rp.grad(*c.args())
    half = 0.5 * g
    # with the quantity, its factors: a gradient has no Lambda, its 1/2 is 1/C
    err, notes = hs._compare("grad", half, g, c, 1e-9)
    assert err == 0.5 and len(notes) == 1 and notes[0].startswith("off by a constant factor 0.5: 1/C = 1/2")
    err, notes = hs._compare("grad", half, g, c, 1e-9, explain=False)
    assert err == 0.5 and len(notes) == 1 and notes[0].startswith("off by a constant factor 0.5: Lambda = I")
    assert hs._compare("grad", half, g, c, 0.5) == (0.5, [])


# ---------------------------------------------------------------------------------------
# check: cases skipped, per-layer and grouped references, option variants (a quantity of
# its own, added to the table as a module of further quantities adds one)


def _add(monkeypatch, name, reference, conventions="the rules", defaults=None):
    monkeypatch.setitem(cf.QUANTITIES, name, (reference, conventions, {} if defaults is None else defaults))


def _g(c):
    return rp.grad(*c.args())


def test_check_skips_the_cases_without_a_reference_and_never_calls_the_adapter_there(monkeypatch):
    mlp2 = cf.make_case("mlp-tanh", "ce-sum")
    cnn = cf.make_case("conv-tanh-avgpool", "ce-mean")

    def reference(c, options):
        if c is LIN:
            raise cf.NotCompared("not unique here")
        if c is mlp2:
            raise np.linalg.LinAlgError("Singular matrix")
        if c is cnn:
            raise FloatingPointError("overflow")
        return _g(c)

    _add(monkeypatch, "mine", reference)
    called = []
    res = cf.check(cf.Adapter(mine=lambda c: called.append(c.name) or _g(c)), [cnn, mlp2, LIN, MLP])["mine"]
    assert called == [MLP.name] and res.cases == 1 and res.passed
    assert res.skipped == [(LIN.name, "not unique here"),
                           (mlp2.name, "refprune's reference is not defined here (LinAlgError: Singular matrix)"),
                           (cnn.name, "refprune's reference is not defined here (FloatingPointError: overflow)")]


def test_check_runs_cases_smallest_first_from_any_iterable():
    order = []
    cases = (c for c in [MLP, cf.make_case("linear", "mse-sum"), LIN])  # 31, 8, 8 parameters
    cf.check(cf.Adapter(grad=lambda c: order.append(c.name) or _g(c)), cases)
    assert order == ["linear/ce-mean", "linear/mse-sum", "mlp-tanh/mse-mean"]


def test_check_conventions_name_the_options(monkeypatch):
    _add(monkeypatch, "plain", lambda c, o: _g(c), "plain rules")
    _add(monkeypatch, "templated", lambda c, o: _g(c), "rules with {options} inside", {"shortcut": False})
    _add(monkeypatch, "appended", lambda c, o: _g(c), "rules", {"shortcut": False})
    half = lambda c: 0.5 * _g(c)  # noqa: E731
    rep = cf.check(cf.Adapter(plain=half, templated=half, appended=half), [LIN])
    assert rep["plain"].smallest_failure.conventions == "plain rules"
    assert rep["templated"].smallest_failure.conventions == "rules with {'shortcut': False} inside"
    assert rep["appended"].smallest_failure.conventions == "rules, options {'shortcut': False}"


def test_check_rtol_messages(monkeypatch):
    a = cf.Adapter(grad=_g)
    assert _raises(TypeError, lambda: cf.check(a, [LIN], rtol="1e-3")) == \
        "check: rtol must be a real number in [0, 1) or a dict of them per quantity, got str '1e-3'"
    assert _raises(TypeError, lambda: cf.check(a, [LIN], rtol=True)) == \
        "check: rtol must be a real number in [0, 1) or a dict of them per quantity, got bool True"
    assert _raises(ValueError, lambda: cf.check(a, [LIN], rtol=1.5)) == \
        "check: rtol for grad must be a number in [0, 1), got 1.5"
    assert _raises(ValueError, lambda: cf.check(a, [LIN], rtol={"grad": -1.0})) == \
        "check: rtol for grad must be a number in [0, 1), got -1.0"
    assert _raises(TypeError, lambda: cf.check(a, [LIN], progress="yes")) == \
        "check: progress must be True or False, got 'yes'"
    assert _raises(TypeError, lambda: cf.check(a, "linear/ce-mean")) == \
        "check: cases must be a list of refprune.conformance.Case, got str"
    assert _raises(TypeError, lambda: cf.check(a, {LIN.name: LIN})) == \
        "check: cases must be a list of refprune.conformance.Case, got dict"
    assert _raises(TypeError, lambda: cf.check(a, b"x")) == \
        "check: cases must be a list of refprune.conformance.Case, got bytes"
    # rtol exactly at the error: a pass
    _add(monkeypatch, "two", lambda c, o: np.array([1.0, 2.0]))
    rep = cf.check(cf.Adapter(two=lambda c: np.array([1.0, 3.0])), [LIN], rtol=0.5)
    assert rep.ok and rep["two"].max_error == 0.5 and rep["two"].tolerance == 0.5
    rep = cf.check(cf.Adapter(two=lambda c: np.array([1.0, 3.0])), [LIN], rtol=np.nextafter(0.5, 0.0))
    assert not rep.ok and rep["two"].max_error == 0.5


def test_check_per_layer_quantity(monkeypatch):
    _add(monkeypatch, "layers", lambda c, o: [_g(c)[:6], _g(c)[6:]])
    ok = cf.check(cf.Adapter(layers=lambda c: [_g(c)[:6], _g(c)[6:]]), [LIN])["layers"]
    assert ok.passed and ok.max_error == 0.0
    bad = cf.check(cf.Adapter(layers=lambda c: [_g(c)[:6], 2 * _g(c)[6:]]), [LIN])["layers"]
    assert bad.max_error == 1.0 and bad.smallest_failure.diagnosis == [
        "entry 1: relative error 1.00e+00, off by a constant factor 2"]
    bad = cf.check(cf.Adapter(layers=lambda c: _g(c)), [LIN])["layers"]
    assert bad.smallest_failure.diagnosis == [
        f"the adapter's layers for case {LIN.name} must be a list of arrays, one per layer, got ndarray"]


def test_check_grouped_reference_compares_group_sums(monkeypatch):
    values = np.array([1.0, 2.0, 3.0, 4.0])
    groups = [np.array([0, 1]), np.array([2]), np.array([3])]
    _add(monkeypatch, "grouped", lambda c, o: hs.Grouped(values, groups))
    # the split inside group {0, 1} is free: 3 = 1 + 2 = 0 + 3
    ok = cf.check(cf.Adapter(grouped=lambda c: np.array([0.0, 3.0, 3.0, 4.0])), [LIN])["grouped"]
    assert ok.passed and ok.max_error == 0.0
    # a wrong sum: the sums [3, 3, 4] against [3, 3, 5] (error 1/5), and what was compared, said
    bad = cf.check(cf.Adapter(grouped=lambda c: np.array([0.0, 3.0, 3.0, 5.0])), [LIN])["grouped"]
    assert bad.max_error == pytest.approx(0.25)
    assert bad.smallest_failure.diagnosis[-1] == ("compared as sums over each repeated eigenvalue's directions "
                                                  "(2 of 4 entries merged): their split depends on the eigenvectors "
                                                  "chosen")
    # a result of another shape is compared as it is (and fails on its shape)
    bad = cf.check(cf.Adapter(grouped=lambda c: np.ones(3)), [LIN])["grouped"]
    assert bad.max_error == float("inf") and bad.smallest_failure.diagnosis[0].startswith("shape (3,), refprune's")


def test_check_names_the_option_variant_on_the_first_failure_only(monkeypatch):
    """A quantity whose reference doubles with shortcut=True and takes the curvature from
    the options table: an adapter computing the shortcut fails, and its first failure
    names the variant it matches; a curvature whose reference raises names nothing."""
    def reference(c, o):
        if o["curvature"] == "mc_fisher":
            raise ValueError("not here")
        return _g(c) * (2.0 if o["shortcut"] else 1.0) * (3.0 if o["curvature"] == "empirical_fisher" else 1.0)

    _add(monkeypatch, "variant", reference, "rules", {"curvature": "ggn", "shortcut": False, "mode": "a"})
    rep = cf.check(cf.Adapter(variant=lambda c: 2.0 * _g(c)), [LIN, MLP])["variant"]
    assert len(rep.failures) == 2
    first, second = rep.failures
    assert first.case is LIN and first.diagnosis[-1] == (
        "matches refprune's variant with shortcut=True: the published EigenDamage code's shortcut (row sums sum_k "
        "W_ik^2 (A 1)_k in place of w_i^T A w_i; for unit_updates the summed single-weight OBS updates); it was "
        "compared with shortcut=False (set the adapter's options to the variant it computes)")
    assert not any("matches refprune's" in d for d in second.diagnosis)
    rep = cf.check(cf.Adapter(variant=lambda c: 3.0 * _g(c)), [LIN])["variant"]
    assert rep.smallest_failure.diagnosis[-1] == (
        "matches refprune's variant with curvature='empirical_fisher': curvature='empirical_fisher'; it was compared "
        "with curvature='ggn' (set the adapter's options to the variant it computes)")
    # the exact variant without the shortcut, named when the shortcut was asked
    rep = cf.check(cf.Adapter(variant=lambda c: _g(c), options={"variant": {"shortcut": True}}), [LIN])["variant"]
    assert rep.smallest_failure.diagnosis[-1] == (
        "matches refprune's variant with shortcut=False: the exact w_i^T A w_i (and group update), without the "
        "published code's shortcut; it was compared with shortcut=True (set the adapter's options to the variant it "
        "computes)")


def test_option_variants_of_a_grouped_reference_are_compared_as_sums(monkeypatch):
    groups = [np.array([0, 1]), np.array([2])]

    def reference(c, o):
        return hs.Grouped(np.array([1.0, 2.0, 3.0]) * (2.0 if o["shortcut"] else 1.0), groups)

    _add(monkeypatch, "gv", reference, "rules", {"shortcut": False})
    notes = hs._option_neighbours("gv", reference, np.array([6.0, 0.0, 6.0]), LIN, {"shortcut": False}, 1e-9)
    assert len(notes) == 1 and notes[0].startswith("matches refprune's gv with shortcut=True")
    assert hs._option_neighbours("gv", reference, np.array([6.0, 6.0]), LIN, {"shortcut": False}, 1e-9) == []
    assert hs._option_neighbours("gv", reference, np.array([6.0, 0.0, 6.1]), LIN, {"shortcut": False}, 1e-9) == []


def test_adapter_options_of_an_added_quantity(monkeypatch):
    """A quantity added by another module: an option without a row of the options table
    keeps its default's kind; K-FAC's three options are checked together, also when they
    come from the added quantity's own defaults."""
    _add(monkeypatch, "custom", lambda c, o: _g(c), "rules", {"mode": "a", "shortcut": False})
    a = cf.Adapter(custom=len, options={"custom": {"mode": "b"}})
    assert a.options == {"custom": {"mode": "b", "shortcut": False}}
    assert _raises(TypeError, lambda: cf.Adapter(custom=len, options={"custom": {"mode": 3}})) == \
        "Adapter: options['custom']: mode must be a name (str) like its default 'a', got 3"
    _add(monkeypatch, "kfac_like", lambda c, o: _g(c), "rules", {"curvature": "hessian", "approx": "expand",
                                                                 "bias": "fold"})
    assert _raises(ValueError, lambda: cf.Adapter(kfac_like=len)).startswith(
        "Adapter: options['kfac_like']: curvature='hessian' has no Kronecker factorisation here")
    _add(monkeypatch, "kfac_bias", lambda c, o: _g(c), "rules", {"curvature": "ggn", "approx": "expand",
                                                                 "bias": "apart"})
    assert _raises(ValueError, lambda: cf.Adapter(kfac_bias=len)) == \
        "Adapter: options['kfac_bias']: bias must be one of ('fold', 'separate'), got 'apart'"


def test_result_reads_factor_pairs_as_pairs_when_the_reference_is_a_list():
    ref = [(b.S, b.A) for b in kfac(*MLP.args()).blocks]
    got = hs._result("kfac_factors", [(S.tolist(), A) for S, A in ref], MLP, ref)
    assert len(got) == 2 and all(isinstance(p, tuple) and len(p) == 2 for p in got)
    assert all(np.array_equal(S, rS) and np.array_equal(A, rA) for (S, A), (rS, rA) in zip(got, ref))


def test_compare_factor_pairs_with_the_options_asked():
    fold = [(b.S, b.A) for b in kfac(*MLP.args()).blocks]
    sep = [(b.S, b.A) for b in kfac(*MLP.args(), bias="separate").blocks]
    assert hs._compare("kfac_factors", fold, sep, MLP, 1e-9, dict(KFAC, bias="separate")) == (float("inf"), [
        "2 factor pairs, one per layer with the bias folded into A (bias='fold'), where bias='separate' was asked "
        "for: refprune then gives every layer with a bias two pairs, (S, A_W) for its weights and (S, [[1]]) for "
        "its bias"])


def test_check_names_the_kfac_factors_variant_the_adapter_computes():
    sep = cf.Adapter(kfac_factors=lambda c: [(b.S, b.A) for b in kfac(*c.args(), bias="separate").blocks])
    f = cf.check(sep, [MLP])["kfac_factors"].smallest_failure
    assert f.diagnosis[-1] == ("matches refprune's kfac_factors with bias='separate': bias='separate'; it was compared "
                               "with bias='fold' (set the adapter's options to the variant it computes)")


def test_option_variants_only_for_choices_and_flags_of_the_table(monkeypatch):
    # 'scale' has no row of the options table: no variant of it is tried, whatever the result
    _add(monkeypatch, "scaled", lambda c, o: _g(c) * o["scale"], "rules", {"scale": 1.0})
    f = cf.check(cf.Adapter(scaled=lambda c: 0 * _g(c)), [LIN])["scaled"].smallest_failure
    assert not any("matches refprune's" in d for d in f.diagnosis)
    assert hs._option_neighbours("scaled", cf.QUANTITIES["scaled"][0], 0 * _g(LIN), LIN, {"scale": 1.0}, 1e-9) == []
    # 'damping' is a real number of the table: no variant either
    _add(monkeypatch, "damped", lambda c, o: _g(c) * o["damping"], "rules", {"damping": 1.0})
    assert hs._option_neighbours("damped", cf.QUANTITIES["damped"][0], 0 * _g(LIN), LIN, {"damping": 1.0}, 1e-9) == []


def test_option_variants_go_on_after_one_of_another_shape():
    """Curvature choices in the table's order (ggn, fisher, mc_fisher, empirical_fisher):
    the fisher variant has another shape and is passed over, the empirical Fisher's
    matches."""
    def reference(c, o):
        if o["curvature"] == "fisher":
            return hs.Grouped(np.ones(3), [np.array([0]), np.array([1]), np.array([2])])
        return hs.Grouped(np.array([1.0, 2.0]) * (5.0 if o["curvature"] == "empirical_fisher" else 1.0),
                          [np.array([0]), np.array([1])])

    notes = hs._option_neighbours("gv", reference, np.array([5.0, 10.0]), LIN, {"curvature": "ggn"}, 1e-9)
    assert notes == ["matches refprune's gv with curvature='empirical_fisher': curvature='empirical_fisher'; it was "
                     "compared with curvature='ggn' (set the adapter's options to the variant it computes)"]


def test_check_without_cases_runs_the_zoo_smallest_first():
    seen = []
    rep = cf.check(cf.Adapter(loss=lambda c: seen.append((c.n_params, c.name)) or rp.loss(*c.args())))
    zoo = cf.zoo()
    assert rep.ok and rep["loss"].cases == len(zoo) == len(seen)
    assert sorted(seen) == sorted((c.n_params, c.name) for c in zoo) and seen == sorted(seen)


def test_option_variant_at_exactly_the_tolerance_is_named():
    def reference(c, o):
        return np.array([1.0, 4.0 if o["shortcut"] else 2.0])

    # [1, 3] against the shortcut's [1, 4]: 1/4, the tolerance
    notes = hs._option_neighbours("v", reference, np.array([1.0, 3.0]), LIN, {"shortcut": False}, 0.25)
    assert len(notes) == 1 and notes[0].startswith("matches refprune's v with shortcut=True")
    assert hs._option_neighbours("v", reference, np.array([1.0, 3.0]), LIN, {"shortcut": False}, 0.2499) == []


def test_check_explains_the_first_failure_with_the_quantity_and_the_others_without():
    """A gradient halved on two squared-error cases: on the first (C = 2) the 1/2 is named
    for a gradient (1/C); the second (C = 3) is explained without the quantity, where 1/2
    reads as Lambda = I."""
    cases = [cf.make_case("linear", "mse-mean"), MLP]
    rep = cf.check(cf.Adapter(grad=lambda c: 0.5 * _g(c)), cases)["grad"]
    first, second = rep.failures
    assert first.case is cases[0] and first.diagnosis[0].startswith("off by a constant factor 0.5: 1/C = 1/2")
    assert second.case is MLP and second.diagnosis == [
        "off by a constant factor 0.5: Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I"]


def test_check_a_result_refused_by_type_is_a_failure_of_its_case():
    rep = cf.check(cf.Adapter(grad=lambda c: _g(c) + 1e-3j), [LIN])["grad"]
    f = rep.smallest_failure
    assert f.case is LIN and f.error == float("inf") and rep.max_error == float("inf") and rep.worst_case == LIN.name
