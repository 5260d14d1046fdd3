"""refprune.conformance.diagnosis at its edges: the messages and counts of bad input, the
convention factors named for each quantity, the bounds of the float32 test and of a
neighbour's match (each bound hit exactly), and the factor notes of K-FAC's pairs.

Every expectation is written out here from the documented contract: the sentences of
docs/conventions.md §9a as the module states them, the factors N, C, R and T counted by
hand for the zoo's cases (N = 3 samples; docs/conventions.md §2-§4), and arrays built so
that a relative error lands exactly on a bound (``max |a - b| / max |b|`` of small
binary fractions, which floating point computes exactly)."""

import numpy as np
import pytest

from refprune import conformance as cf
from refprune import nn
from refprune.conformance import diagnosis as dg
from refprune.curvature.kronecker import kfac

EPS32 = 2.0**-23  # float32's machine epsilon
TOL = 1e-9

# the sentences of the factor catalogue (docs/conventions.md §9a), written out independently
LAMBDA_I = "Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I"
LAMBDA_4I = "Lambda = 4 I or a loss with 2 (f - y)^2"
SUM_FOR_MEAN = "a sum over samples where the loss takes the mean (R = 1/N)"
MSE_SUM = "a sum where MSELoss 'mean' divides by N C"
MSE_SAMPLES = "a mean over samples only where MSELoss 'mean' divides by N C"
ASDL_MEAN_ONLY = "Lambda = I and a mean over samples only (ASDL, nngeometry)"
BCE_SUM = "a sum where BCEWithLogitsLoss 'mean' divides by N C"
BCE_SAMPLES = ("a mean over samples only (nngeometry's and ASDL's convention) where BCEWithLogitsLoss 'mean' divides "
               "by N C")
MEAN_FOR_SUM = "a mean over samples where the loss takes the sum (R = 1)"
ASDL_MEAN = "Lambda = I and a mean over samples (ASDL, nngeometry)"
SIGN = "a flipped sign"
QUARTER = ("gradients f - y of (f - y)^2 / 2, squared, where refprune's l_n = sum (f - y)^2 has the gradient "
           "2 (f - y)")


def one_over_c(c, loss):
    return (f"1/C = 1/{c}: per-sample gradients of a loss averaged over the C = {c} outputs ({loss}('mean') on one "
            "sample), squared; refprune's l_n sums over the outputs and R = 1/(N C) is applied once")


def r_twice(r):
    return (f"R = {r:.6g} applied twice (per-sample terms that already carry R, like refprune's per_sample_grads, "
            "summed and scaled by R again)")


def n_on_sum(n):
    return (f"N = {n}: gradients multiplied by N as if the loss took the mean (the style of EigenDamage-Pytorch, "
            "KFAC-Pytorch, ACKTR), where it takes the sum (R = 1)")


def one_output_case(loss):
    """A network with C = 1 output: no 1/C factor exists."""
    return cf.build_case("one-output", nn.Sequential(nn.Linear(3, 1)), (3,), loss)


# ---------------------------------------------------------------------------------------
# relative_error and diagnose: what bad input is told


def test_relative_error_names_the_argument_and_counts_the_bad_reference_entries():
    with pytest.raises(TypeError) as e:
        dg.relative_error(np.array([1j]), np.ones(1))
    assert str(e.value).startswith("relative_error: a is complex (complex128)")
    b = np.array([np.nan, 1.0, np.inf, -np.inf, 2.0, np.nan])  # 2 NaN and 2 inf of 6
    with pytest.raises(ValueError) as e:
        dg.relative_error(np.ones(6), b)
    assert str(e.value) == "relative_error: the reference b contains 4 NaN or inf value(s)"


def test_diagnose_names_its_argument_and_counts_nan_and_inf_apart():
    case = cf.make_case("linear", "ce-mean")
    with pytest.raises(TypeError) as e:
        dg.diagnose(np.array([1j, 1.0]), np.ones(2), case, TOL)
    assert str(e.value).startswith("diagnose: a is complex (complex128)")
    a = np.array([np.nan, 1.0, np.inf, -np.inf, np.nan, np.nan, 0.0, -np.inf])  # 3 NaN, 3 inf of 8
    assert dg.diagnose(a, np.ones(8), case, TOL) == ["3 NaN and 3 inf entries of 8"]
    assert dg.diagnose(a, np.ones(8), case, TOL, quantity="grad") == ["3 NaN and 3 inf entries of 8"]


# ---------------------------------------------------------------------------------------
# the convention factors named per quantity


def test_lambda_free_quantities_are_those_built_from_gradients_alone():
    for q in ("empirical_fisher", "empirical_fisher_diagonal", "mc_fisher", "mc_fisher_diagonal", "grad",
              "per_sample_grads", "loss"):
        assert dg._is_lambda_free(q, None)
    for q in ("hessian", "ggn", "fisher", "hvp", "kfac", "kfac_factors", "ekfac"):
        assert not dg._is_lambda_free(q, None)
        assert not dg._is_lambda_free(q, {})
        assert not dg._is_lambda_free(q, dict(curvature="ggn"))
        assert not dg._is_lambda_free(q, dict(curvature="fisher"))
    # K-FAC of a gradient-only curvature has no Lambda; the options do not change other quantities
    for q in ("kfac", "kfac_factors", "ekfac"):
        for curvature in ("empirical_fisher", "mc_fisher"):
            assert dg._is_lambda_free(q, dict(curvature=curvature, approx="expand", bias="fold"))
    for q in ("hessian", "ggn", "hvp", "obd_saliencies"):
        assert not dg._is_lambda_free(q, dict(curvature="empirical_fisher"))


# (case, quantity, options) -> the factor list, written out by hand.  linear: N = 3, C = 2;
# mlp-tanh: N = 3, C = 3.  R = 1/(N C) for squared error and binary cross-entropy "mean",
# 1/N for cross-entropy "mean", 1 for "sum".
def _expected_factors():
    ef = dict(curvature="empirical_fisher", approx="expand", bias="fold")
    mc = dict(curvature="mc_fisher", approx="expand", bias="fold")
    ggn = dict(curvature="ggn", approx="expand", bias="fold")
    mse_mean = [(0.5, LAMBDA_I), (2.0, LAMBDA_4I), (3.0, SUM_FOR_MEAN), (6.0, MSE_SUM), (2.0, MSE_SAMPLES),
                (1.0, ASDL_MEAN_ONLY), (-1.0, SIGN)]
    mse_mean_free = [(3.0, SUM_FOR_MEAN), (6.0, MSE_SUM), (2.0, MSE_SAMPLES), (-1.0, SIGN)]
    bce_mean = [(3.0, SUM_FOR_MEAN), (6.0, BCE_SUM), (2.0, BCE_SAMPLES), (-1.0, SIGN)]
    mse_sum = [(0.5, LAMBDA_I), (2.0, LAMBDA_4I), (1 / 3, MEAN_FOR_SUM), (1 / 6, ASDL_MEAN), (-1.0, SIGN)]
    ce_sum = [(1 / 3, MEAN_FOR_SUM), (-1.0, SIGN)]
    return [
        ("linear", "mse-mean", None, None, mse_mean),
        ("linear", "mse-mean", "loss", None, mse_mean_free),
        ("linear", "mse-mean", "grad", None, [(0.5, one_over_c(2, "MSELoss"))] + mse_mean_free),
        ("linear", "mse-mean", "per_sample_grads", None, [(0.5, one_over_c(2, "MSELoss"))] + mse_mean_free),
        ("linear", "mse-mean", "empirical_fisher", None,
         [(1 / 6, r_twice(1 / 6)), (0.25, QUARTER), (0.5, one_over_c(2, "MSELoss"))] + mse_mean_free),
        ("linear", "mse-mean", "hessian", None, [(1 / 6, r_twice(1 / 6))] + mse_mean),
        ("linear", "mse-mean", "kfac", ggn, [(1 / 6, r_twice(1 / 6))] + mse_mean),
        ("linear", "mse-mean", "kfac_factors", ef,
         [(1 / 6, r_twice(1 / 6)), (0.25, QUARTER), (0.5, one_over_c(2, "MSELoss"))] + mse_mean_free),
        ("linear", "mse-mean", "ekfac", mc,
         [(1 / 6, r_twice(1 / 6)), (0.25, QUARTER), (0.5, one_over_c(2, "MSELoss"))] + mse_mean_free),
        ("linear", "mse-sum", "empirical_fisher", None,
         [(3.0, n_on_sum(3)), (0.25, QUARTER), (1 / 3, MEAN_FOR_SUM), (-1.0, SIGN)]),
        ("linear", "mse-sum", "hessian", None, [(3.0, n_on_sum(3))] + mse_sum),
        ("linear", "mse-sum", "grad", None, [(1 / 3, MEAN_FOR_SUM), (-1.0, SIGN)]),
        ("linear", "ce-sum", "ggn", None, [(3.0, n_on_sum(3))] + ce_sum),
        ("linear", "ce-sum", "kfac_factors", ggn, [(3.0, n_on_sum(3))] + ce_sum),
        ("linear", "ce-mean", "hvp", None, [(1 / 3, r_twice(1 / 3)), (3.0, SUM_FOR_MEAN), (-1.0, SIGN)]),
        ("linear", "ce-mean", "grad", None, [(3.0, SUM_FOR_MEAN), (-1.0, SIGN)]),
        ("linear", "bce-mean", "loss", None, bce_mean),
        ("linear", "bce-mean", "grad", None, [(0.5, one_over_c(2, "BCEWithLogitsLoss"))] + bce_mean),
        ("linear", "bce-mean", "mc_fisher", None,
         [(1 / 6, r_twice(1 / 6)), (0.5, one_over_c(2, "BCEWithLogitsLoss"))] + bce_mean),
        ("linear", "bce-sum", "empirical_fisher", None, [(3.0, n_on_sum(3))] + ce_sum),
        ("mlp-tanh", "mse-mean", "grad", None,
         [(1 / 3, one_over_c(3, "MSELoss")), (3.0, SUM_FOR_MEAN), (9.0, MSE_SUM), (3.0, MSE_SAMPLES),
          (-1.0, SIGN)]),
        ("mlp-tanh", "bce-mean", "empirical_fisher_diagonal", None,
         [(1 / 9, r_twice(1 / 9)), (1 / 3, one_over_c(3, "BCEWithLogitsLoss")), (3.0, SUM_FOR_MEAN),
          (9.0, BCE_SUM), (3.0, BCE_SAMPLES), (-1.0, SIGN)]),
        # C = 1: no 1/C (it would be 1)
        ("one-output", "mse-mean", "empirical_fisher", None,
         [(1 / 3, r_twice(1 / 3)), (0.25, QUARTER), (3.0, SUM_FOR_MEAN), (3.0, MSE_SUM), (1.0, MSE_SAMPLES),
          (-1.0, SIGN)]),
        ("one-output", "bce-mean", "grad", None, [(3.0, SUM_FOR_MEAN), (3.0, BCE_SUM), (1.0, BCE_SAMPLES),
                                                  (-1.0, SIGN)]),
    ]


@pytest.mark.parametrize("arch, loss, quantity, options, expected", _expected_factors(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_factor_explanations_of_every_kind_of_quantity(arch, loss, quantity, options, expected):
    case = one_output_case(loss) if arch == "one-output" else cf.make_case(arch, loss)
    got = dg.factor_explanations(case, quantity, options)
    assert [w for _, w in got] == [w for _, w in expected]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], rel=1e-15)


def test_two_causes_of_one_factor_are_both_named():
    case = cf.make_case("linear", "mse-mean")  # 2 = Lambda 4I and C = 2
    assert dg._name_factor(2.0, case) == (
        f"off by a constant factor 2: {LAMBDA_4I}; or {MSE_SAMPLES} (these coincide on this case; a case where they "
        "differ tells them apart)")


# ---------------------------------------------------------------------------------------
# the float32 test: every entry a float32 number, an error in (tol, 1e4 float32 eps]


def _f32(x):
    return np.asarray(x, dtype=np.float32).astype(float)


FLOAT32_NOTE = ("computed in float32: every entry is a float32 number and the relative error {err:.1e} is float32 "
                "rounding (float32 eps 1.2e-07), where refprune computes in float64; compute in float64 or compare "
                "at a float32 tolerance (rtol ~1e-5)")


def test_float32_note_at_its_bounds():
    b = np.array([1.0, 0.1, -0.3])  # 0.1 and -0.3 are no float32 numbers
    # the upper bound 1e4 eps, reached exactly (1 + 1e4 eps is a float32 number; max |b| = 1)
    a = _f32(b)
    a[0] = 1.0 + 1e4 * EPS32
    assert dg.relative_error(a, b) == 1e4 * EPS32
    assert dg._float32_note(a, b, TOL) == FLOAT32_NOTE.format(err=1e4 * EPS32)
    a[0] = 1.0 + 10001 * EPS32  # one float32 step above it
    assert dg._float32_note(a, b, TOL) is None
    a[0] = 2.0  # float32 numbers, far off: not rounding
    assert dg._float32_note(a, b, TOL) is None
    # the lower bound: an error equal to the tolerance passes and is no failure to explain
    a = _f32(b)
    err = dg.relative_error(a, b)
    assert dg._float32_note(a, b, err) is None
    assert dg._float32_note(a, b, err / 2) == FLOAT32_NOTE.format(err=err)
    # one entry
    assert dg._float32_note(_f32([0.1]), np.array([0.1]), TOL) == FLOAT32_NOTE.format(
        err=dg.relative_error(_f32([0.1]), [0.1]))


def test_float32_note_needs_float32_numbers_in_a_and_not_in_b():
    b = np.array([1.0, 0.1, -0.3])
    a = _f32(b)
    a[1] += 1e-12  # no float32 number any more, with an error of float32 rounding size
    assert TOL < dg.relative_error(a, b) < 1e4 * EPS32
    assert dg._float32_note(a, b, TOL) is None
    # a reference of float32 numbers: refprune's own result cannot tell
    b32 = _f32(b)
    a = b32.copy()
    a[1] = np.nextafter(np.float32(a[1]), np.float32(1.0))
    assert dg._float32_note(a, b32, TOL) is None


def test_diagnose_names_a_float32_result_first():
    case = cf.make_case("mlp-tanh", "ce-mean")
    b = cf.QUANTITIES["grad"][0](case, {})
    a = _f32(b)
    err = dg.relative_error(a, b)
    assert TOL < err < 1e-6
    assert dg.diagnose(a, b, case, TOL, quantity="grad") == [FLOAT32_NOTE.format(err=err)]


# ---------------------------------------------------------------------------------------
# matching a neighbour: within MATCH = 10 times the tolerance, CLOSER = 10 times closer


def test_a_neighbour_is_matched_with_both_bounds_reached_exactly():
    # tol 0.01: limit 10 * 0.01 = 0.1; |a - x| = [0, 1] over max |x| = 10: e = 0.1;
    # |a - b| = [0, 5.5] over max |b| = 5.5: 1 = 10 e
    x, a, b = np.array([1.0, 10.0]), np.array([1.0, 11.0]), np.array([1.0, 5.5])
    assert dg.relative_error(a, x) == 0.1 and dg.relative_error(a, b) == 1.0
    assert dg.match_neighbours(a, b, [("x", x)], 0.01, []) == "matches x (relative error 1.0e-01, against 1.0e+00 " \
                                                             "from refprune's)"
    # just beyond either bound: no match
    assert dg.match_neighbours(a, b, [("x", x)], 0.0099, []) is None
    assert dg.match_neighbours(a, np.array([1.0, 5.6]), [("x", x)], 0.01, []) is None


def test_a_neighbour_within_the_limit_but_not_ten_times_closer_is_not_named():
    b = np.array([1.0, 2.0, 3.0])
    x = b + np.array([0.0, 0.0, 5e-9])  # 1.7e-9 from b: not refprune's result at tol 1e-9
    a = b + np.array([0.0, 0.0, 4e-9])  # 3.3e-10 from x (within 10 tol), 1.3e-9 from b: only 4 times closer
    assert dg.match_neighbours(a, b, [("x", x)], TOL, []) is None
    a = b + np.array([0.0, 0.0, 4.9e-9])  # 3.3e-11 from x, 40 times closer: named
    assert dg.match_neighbours(a, b, [("x", x)], TOL, []).startswith("matches x ")


def test_a_neighbour_far_beyond_the_limit_is_not_named_however_much_closer():
    b = np.array([1.0, 0.0])
    x = np.array([0.0, 1.0])
    a = x + np.array([1e-6, 0.0])  # 1e-6 from x: 1000 times the limit 1e-8, yet 1e6 times closer than b
    assert dg.match_neighbours(a, b, [("x", x)], TOL, [(2.0, "two")]) is None


def test_neighbours_that_cannot_be_compared_or_equal_refprune_are_passed_over():
    b = np.array([1.0, 2.0, 3.0])
    x = np.array([3.0, 1.0, 2.0])
    a = x.copy()
    passed_over = [("wrong shape", np.ones(4)), ("NaN", np.array([3.0, np.nan, 2.0])),
                   ("refprune's own", b.copy()), ("within tol of refprune's", b * (1 + 1e-10))]
    got = dg.match_neighbours(a, b, passed_over + [("x", x)], TOL, [])
    assert got == "matches x (relative error 0.0e+00, against 6.7e-01 from refprune's)"
    # one at exactly the tolerance from refprune's result is refprune's as far as the test can tell
    b2, x2 = np.array([1.0, 2.0]), np.array([1.0, 2.5])  # 0.5 / 2 = 0.25
    assert dg.match_neighbours(x2, b2, [("x", x2)], 0.25, []) is None


def test_a_neighbour_matched_up_to_a_named_factor_at_the_bounds():
    # x = e_0, a = 2 x + 0.2 e_1: the fit r = 2 leaves 0.2 / 2 = 0.1 = limit at tol 0.01;
    # |a - b| = [2, 1.8] over max |b| = 2: 1.0 = 10 times the fit's error
    x, a, b = np.array([1.0, 0.0]), np.array([2.0, 0.2]), np.array([0.0, 2.0])
    assert dg.constant_factor(a, b) is None and dg.relative_error(a, b) == 1.0
    words = [(3.0, "three"), (2.0, "two")]
    assert dg.match_neighbours(a, b, [("x", x)], 0.01, words) == \
        "matches x, off by a constant factor 2: two (relative error 1.0e-01)"
    assert dg.match_neighbours(a, b, [("x", x)], 0.0099, words) is None  # the fit just beyond the limit
    assert dg.match_neighbours(a, np.array([0.0, 2.01]), [("x", x)], 0.01, words) is None  # not 10 times closer
    assert dg.match_neighbours(a, b, [("x", x)], 0.01, [(3.0, "three")]) is None  # 2 has no name here


def test_factor_match_skips_a_zero_candidate_and_one_proportional_to_refprune():
    b = np.array([1.0, 2.0, 3.0])
    x = np.array([1.0, -1.0, 0.5])
    a = -x + np.array([0.0, 0.0, 1e-12])
    cands = [("zero", np.zeros(3)), ("twice refprune's", 2 * b), ("x", x)]
    assert dg.match_neighbours(a, b, cands, TOL, [(-1.0, "minus")]).startswith(
        "matches x, off by a constant factor -1: minus")
    # a result that is refprune's times a constant is named as such, never through a neighbour
    assert dg.match_neighbours(2 * b, b, [("x", x), ("y", 4 * b + x)], TOL, [(2.0, "two")]) is None


def test_factor_match_is_not_fooled_by_the_fit_alone():
    # a within the limit of 2 x but also close to refprune's b: the fit error 0.05 is within
    # the limit 0.1, yet only 2 times closer than b (0.1)
    x, b = np.array([1.0, 0.0]), np.array([2.0, 0.2])
    a = np.array([2.0, 0.1])
    assert dg.relative_error(a, b) == pytest.approx(0.05)
    assert dg.match_neighbours(a, b, [("x", x)], 0.01, [(2.0, "two")]) is None


def test_neighbour_candidates_are_read_as_real_arrays():
    b = np.array([1.0, 2.0, 3.0])
    ints = np.array([3, 1, 2])
    assert dg.match_neighbours(ints.astype(float), b, [("x", ints)], TOL, []).startswith("matches x ")
    with pytest.raises(TypeError) as e:
        dg.match_neighbours(ints.astype(float), b, [("x", ints + 0j)], TOL, [])
    assert str(e.value).startswith("match_neighbours: the candidate 'x' is complex (complex128)")


# ---------------------------------------------------------------------------------------
# K-FAC's factor pairs


def pairs_of(case, **options):
    """refprune's ``[(S, A)]`` with these K-FAC options (the result a planted bug starts from)."""
    kw = dict(options)
    if kw.get("curvature") == "mc_fisher":
        kw["targets"] = case.targets
    return [(b.S.copy(), b.A.copy()) for b in kfac(*case.args(), **kw).blocks]


def kfac_options(**options):
    return dict(dict(curvature="ggn", approx="expand", bias="fold"), **options)


def test_pair_labels_count_layers_as_the_network_does():
    """mlp-tanh is Linear(3, 4), Tanh, Linear(4, 3): the second Linear is layer 2, as in
    diagnose's parameter labels and PyTorch's module names, though Tanh has no parameters
    and starts at the same offset."""
    case = cf.make_case("mlp-tanh", "ce-mean")
    for curvature in ("ggn", "mc_fisher"):
        opts = kfac_options(curvature=curvature, bias="separate")
        ref = pairs_of(case, **opts)
        got = [(S, A) for S, A in ref]
        got[1] = (ref[1][0], 3 * ref[1][1])  # layer 0's bias pair: A times N = 3
        got[2] = (5 * ref[2][0], ref[2][1])  # layer 2's weight pair: S times 5, a factor without a name
        assert dg.diagnose_pairs(got, ref, case, TOL, opts) == [
            "layer pair 1 (layer 0 Linear(3, 4, bias=True) bias): S error 0.00e+00, A error 2.00e+00",
            "layer pair 1: A alone off by a constant factor 3: N = 3: A summed over the samples where refprune "
            "averages it (A = 1/(N T) sum a a^T)",
            "layer pair 2 (layer 2 Linear(4, 3, bias=True) weights): S error 4.00e+00, A error 0.00e+00",
            "layer pair 2: S alone off by a constant factor 5"]
    assert [lbl for lbl, *_ in dg._segments(case.model)][2] == "layer 2 Linear(4, 3, bias=True) weight"


def test_pair_labels_of_a_convolutional_network():
    case = cf.make_case("conv-tanh-avgpool", "ce-sum")  # Conv2d, Tanh, AvgPool2d, Flatten, Linear: layers 0 and 4
    ref = pairs_of(case)
    got = [ref[0], (ref[1][0], -ref[1][1])]
    assert dg.diagnose_pairs(got, ref, case, TOL) == [
        "layer pair 1 (layer 4 Linear(8, 3, bias=True)): S error 0.00e+00, A error 2.00e+00",
        "layer pair 1: A alone off by a constant factor -1: a flipped sign"]


def test_count_of_pairs_explained_for_every_bias_treatment():
    case = cf.make_case("mlp-tanh", "ce-mean")  # two Linear layers with a bias: 2 pairs folded, 4 separate
    for curvature in ("ggn", "mc_fisher"):
        fold, sep = kfac_options(curvature=curvature), kfac_options(curvature=curvature, bias="separate")
        rf, rs = pairs_of(case, **fold), pairs_of(case, **sep)
        assert dg.diagnose_pairs(rf, rs, case, TOL, sep) == [
            "2 factor pairs, one per layer with the bias folded into A (bias='fold'), where bias='separate' was asked "
            "for: refprune then gives every layer with a bias two pairs, (S, A_W) for its weights and (S, [[1]]) for "
            "its bias"]
        assert dg.diagnose_pairs(rs, rf, case, TOL, fold) == [
            "4 factor pairs, a weight pair and a bias pair for every layer with a bias (bias='separate'), where "
            "bias='fold' was asked for: refprune then gives one pair per layer with the bias folded into A as a "
            "constant input 1"]
        assert dg.diagnose_pairs([rs[0], rs[2]], rs, case, TOL, sep) == [
            "2 factor pairs, refprune has 4: the bias pairs are missing; with bias='separate' every layer with a bias "
            "has a second pair (S, [[1]]) after its weight pair (S, A_W)"]
        assert dg.diagnose_pairs(rs[:3], rs, case, TOL, sep) == [
            "3 factor pairs, refprune has 4 (bias='separate': one pair per Linear/Conv2d layer without a bias, two, "
            "weights then bias, per layer with one)"]
        assert dg.diagnose_pairs(rf[:1], rf, case, TOL, fold) == [
            "1 factor pairs, refprune has 2 (one per Linear/Conv2d layer, the bias folded into A)"]
        err, notes = dg.compare_pairs(rf[:1], rf, case, TOL, fold)
        assert err == float("inf") and notes == dg.diagnose_pairs(rf[:1], rf, case, TOL, fold)


def test_centred_factors_are_named():
    """Linear(3, 2), squared error "sum", the empirical Fisher's K-FAC with the bias apart:
    A's samples are the inputs x_n (and the constant 1 of the bias, whose variance is 0),
    S's are the per-sample gradients dl_n/df_n = 2 (f_n - y_n), S = R N cov (R = 1); np.cov
    divides by N - 1."""
    case = cf.make_case("linear", "mse-sum")
    W, bias = case.params
    f = case.X @ W.T + bias
    g = 2 * (f - case.y)
    S = len(g) * np.cov(g, rowvar=False)
    got = [(S, np.cov(case.X, rowvar=False)), (S, np.zeros((1, 1)))]
    opts = kfac_options(curvature="empirical_fisher", bias="separate")
    assert dg.diagnose_pairs(got, pairs_of(case, **opts), case, TOL, opts) == [
        "matches refprune's factors centred: np.cov of the features and output gradients (divided by m - 1) where "
        "refprune takes uncentred second moments (A = 1/(N T) sum a a^T)"]


def test_pairs_swapped_in_every_pair_are_named():
    case = cf.make_case("mlp-tanh", "ce-mean")
    ref = pairs_of(case)
    assert dg.diagnose_pairs([(A, S) for S, A in ref], ref, case, TOL) == [
        "(A, S) swapped in every pair: refprune's pairs are (S, A), the output-gradient factor S (G in the papers) "
        "first, then the input factor A"]


def test_pairs_at_exactly_the_tolerance_pass():
    case = cf.make_case("linear", "ce-mean")
    ref = pairs_of(case)
    (S, A), = ref
    for got in ([(1.5 * S, A)], [(S, 1.5 * A)]):
        tol = max(dg.relative_error(got[0][0], S), dg.relative_error(got[0][1], A))
        assert tol == pytest.approx(0.5)
        assert dg.diagnose_pairs(got, ref, case, tol) == []
        assert dg.compare_pairs(got, ref, case, tol) == (tol, [])
        assert dg.diagnose_pairs(got, ref, case, tol / 2) != []


def test_pair_factors_named_for_the_curvature_asked():
    """The empirical Fisher's K-FAC on squared error has no Lambda: S off by 1/4 is the
    gradient of (f - y)^2 / 2 squared."""
    case = cf.make_case("linear", "mse-mean")
    opts = kfac_options(curvature="empirical_fisher")
    ref = pairs_of(case, **opts)
    got = [(0.25 * ref[0][0], ref[0][1])]
    assert dg.diagnose_pairs(got, ref, case, TOL, opts) == [
        "layer pair 0 (layer 0 Linear(3, 2, bias=True)): S error 7.50e-01, A error 0.00e+00",
        f"layer pair 0: S alone off by a constant factor 0.25: {QUARTER}"]


def test_a_factor_of_one_to_rounding_names_no_location_count_on_a_dense_layer():
    # T = 1 for a Linear layer: "T = 1" or "1/T = 1" would be no explanation
    case = cf.make_case("linear", "ce-mean")
    ref = pairs_of(case)
    (S, A), = ref
    r = 1 + 5e-7
    assert dg.diagnose_pairs([(S, r * A)], ref, case, TOL)[1] == "layer pair 0: A alone off by a constant factor 1"
    assert dg.diagnose_pairs([(r * S, A)], ref, case, TOL)[1] == "layer pair 0: S alone off by a constant factor 1"


def test_diagnose_pairs_names_the_complex_argument():
    case = cf.make_case("linear", "ce-mean")
    ref = pairs_of(case)
    (S, A), = ref
    for got, want, where in (([(S + 0j, A)], ref, "diagnose_pairs: S"), ([(S, A + 0j)], ref, "diagnose_pairs: A"),
                             (ref, [(S + 0j, A)], "diagnose_pairs: refprune's S"),
                             (ref, [(S, A + 0j)], "diagnose_pairs: refprune's A")):
        with pytest.raises(TypeError) as e:
            dg.diagnose_pairs(got, want, case, TOL)
        assert str(e.value).startswith(f"{where} is complex (complex128)")


def _a_words(n, t):
    out = [(float(n), f"N = {n}: A summed over the samples where refprune averages it (A = 1/(N T) sum a a^T)")]
    if t > 1:
        out += [(float(t), f"T = {t}: A summed over the convolution locations where refprune averages it (expand: "
                           "A = 1/(N T) sum a a^T)"),
                (float(n * t), f"N T = {n * t}: A summed over samples and locations, not averaged"),
                (1 / t, f"1/T = 1/{t}: A divided by the T = {t} locations twice")]
    return out + [(-1.0, SIGN)]


def _t_words(t):
    return [(float(t), f"the number of convolution output locations T = {t} (a KFC scaling)"),
            (1.0 / t, f"1/T, T = {t} convolution output locations (a KFC scaling)")]


@pytest.mark.parametrize("t", [1, 2, 16])
def test_factors_of_a(t):
    case = cf.make_case("conv-tanh-avgpool", "ce-sum")
    got = dg._a_explanations(case, t)
    assert [w for _, w in got] == [w for _, w in _a_words(3, t)]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in _a_words(3, t)], rel=1e-15)


def _s_words(t):
    return [(float(t), f"T = {t}: S summed over the locations of this layer where refprune averages (or A averaged "
                       "where refprune sums)"),
            (1 / t, f"1/T = 1/{t}: S averaged over the locations of this layer where refprune sums them (expand: "
                    "S = R sum_{n,t} g g^T)")]


@pytest.mark.parametrize("t", [1, 2, 16])
def test_factors_of_s(t):
    # conv-tanh-avgpool with cross-entropy "sum": R = 1, N = 3, KFC's T = 16 of the case
    case = cf.make_case("conv-tanh-avgpool", "ce-sum")
    want = (_s_words(t) if t > 1 else []) + [(3.0, n_on_sum(3)), (1 / 3, MEAN_FOR_SUM)] + _t_words(16) + [
        (-1.0, SIGN)]
    got = dg._s_explanations(case, kfac_options(), t)
    assert [w for _, w in got] == [w for _, w in want]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in want], rel=1e-15)
    # the empirical Fisher's K-FAC on squared error "mean" (linear: N = 3, C = 2, R = 1/6) has no Lambda
    case = cf.make_case("linear", "mse-mean")
    want = (_s_words(t) if t > 1 else []) + [
        (1 / 6, r_twice(1 / 6)), (0.25, QUARTER), (0.5, one_over_c(2, "MSELoss")), (3.0, SUM_FOR_MEAN),
        (6.0, MSE_SUM), (2.0, MSE_SAMPLES), (-1.0, SIGN)]
    got = dg._s_explanations(case, kfac_options(curvature="empirical_fisher"), t)
    assert [w for _, w in got] == [w for _, w in want]


def test_pairs_close_includes_its_limit():
    S, A = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[4.0]])
    assert dg._pairs_close([(S, A)], [(S, A)], 0.0)
    assert dg._pairs_close([(1.5 * S, A)], [(S, A)], 0.5)  # relative error 0.5 exactly
    assert not dg._pairs_close([(1.5 * S, A)], [(S, A)], 0.49)
    assert dg._pairs_close([(S, 1.5 * A)], [(S, A)], 0.5)
    assert not dg._pairs_close([(S, 1.5 * A)], [(S, A)], 0.49)
    assert not dg._pairs_close([(S, A)], [(S, A), (S, A)], 1.0)
    assert not dg._pairs_close([(A, A)], [(S, A)], 1.0)


def test_one_pair_swapped_at_the_limit():
    case = cf.make_case("linear", "ce-mean")
    rS, rA = np.array([[2.0]]), np.array([[1.0]])
    alts = []
    # S against refprune's A: 0.5 exactly, at the limit
    assert dg._pair_notes(np.array([[1.5]]), rS, rS, rA, 0, case, kfac_options(), 1, 0.5, alts) == [
        "(A, S) swapped: refprune's pairs are (S, A), the output-gradient factor S (G in the papers) first"]
    # A against refprune's S: 0.5 exactly
    assert dg._pair_notes(rA.copy(), np.array([[3.0]]), rS, rA, 0, case, kfac_options(), 1, 0.5, alts) == [
        "(A, S) swapped: refprune's pairs are (S, A), the output-gradient factor S (G in the papers) first"]
    # both must be swapped: an A equal to refprune's S alone is no swap
    notes = dg._pair_notes(np.array([[7.0]]), rS, rS, rA, 0, case, kfac_options(), 1, 0.5, alts)
    assert not any("swapped" in x for x in notes)


SPLIT = "the same Kronecker product split differently"
EXPRESS = "(refprune.express_kfac converts between libraries)"


def test_the_same_product_split_differently_and_how():
    # conv-conv-softplus-sigmoid: Conv2d (T = 6), Softplus, Conv2d (T = 2), Sigmoid, Flatten, Linear (T = 1)
    case = cf.make_case("conv-conv-softplus-sigmoid", "ce-mean")
    ref = pairs_of(case)

    def split(i, s, a):
        got = list(ref)
        got[i] = (s * ref[i][0], a * ref[i][1])
        notes = dg.diagnose_pairs(got, ref, case, TOL)
        assert len(notes) == 2 and notes[0].startswith(f"layer pair {i} (layer ")
        return notes[1]

    assert split(1, 2.0, 0.5) == f"layer pair 1: S off by 2 and A by 0.5, {SPLIT}: (A/T, T S) with T = 2, the " \
                                 f"convolution factors some libraries store {EXPRESS}"
    assert split(1, 0.5, 2.0) == f"layer pair 1: S off by 0.5 and A by 2, {SPLIT}: (S/T, T A) with T = 2 {EXPRESS}"
    assert split(0, 6.0, 1 / 6) == f"layer pair 0: S off by 6 and A by 0.166667, {SPLIT}: (A/T, T S) with T = 6, " \
                                   f"the convolution factors some libraries store {EXPRESS}"
    assert split(0, 1 / 6, 6.0) == f"layer pair 0: S off by 0.166667 and A by 6, {SPLIT}: (S/T, T A) with T = 6 " \
                                   f"{EXPRESS}"
    # a split by another factor than T is no KFC scaling
    assert split(0, 3.0, 1 / 3) == f"layer pair 0: S off by 3 and A by 0.333333, {SPLIT} {EXPRESS}"
    assert split(0, 1 / 3, 3.0) == f"layer pair 0: S off by 0.333333 and A by 3, {SPLIT} {EXPRESS}"
    # on the Linear layer (T = 1) neither is named, even for a split by a factor of one to rounding
    r = 1 + 5e-7
    assert split(2, r, 1 / r) == f"layer pair 2: S off by 1 and A by 1, {SPLIT} {EXPRESS}"
    assert split(2, 2.0, 0.5) == f"layer pair 2: S off by 2 and A by 0.5, {SPLIT} {EXPRESS}"


def test_pair_notes_at_the_limit():
    case = cf.make_case("linear", "ce-mean")  # A's factor N = 3 has a name
    opts, alts = kfac_options(), []
    rS, rA = np.array([[2.0]]), np.array([[1.0]])
    # S within the limit exactly (0.5): S is fine, A alone is off
    assert dg._pair_notes(1.5 * rS, 3 * rA, rS, rA, 0, case, opts, 1, 0.5, alts) == [
        "A alone off by a constant factor 3: N = 3: A summed over the samples where refprune averages it "
        "(A = 1/(N T) sum a a^T)"]
    assert dg._pair_notes(3 * rS, 1.5 * rA, rS, rA, 0, case, opts, 1, 0.5, alts) == [
        "S alone off by a constant factor 3: a sum over samples where the loss takes the mean (R = 1/N)"]
    # a split whose factor fits to exactly the limit: x = e_0, 2 x + 0.2 e_1 leaves 0.2 / 2 = 0.1
    x, y = np.array([1.0, 0.0]), np.array([2.0, 0.2])
    assert dg._pair_notes(y, 0.5 * rA, x, rA, 0, case, opts, 1, 0.1, alts) == [
        f"S off by 2 and A by 0.5, {SPLIT} {EXPRESS}"]
    assert dg._pair_notes(0.5 * rA, y, rA, x, 0, case, opts, 1, 0.1, alts) == [
        f"S off by 0.5 and A by 2, {SPLIT} {EXPRESS}"]


def test_compare_pairs_of_no_pairs_is_no_error():
    case = cf.make_case("linear", "ce-mean")
    assert dg.compare_pairs([], [], case, TOL) == (0.0, [])
    assert dg.compare_pairs([], [], case, 0.0) == (0.0, [])


# ---------------------------------------------------------------------------------------
# diagnose: the factors of the quantity (and its options) in every branch


def test_diagnose_names_factors_for_the_quantity_and_its_options():
    # the empirical Fisher's K-FAC on squared error (linear: C = 2) has no Lambda: its 1/2 is 1/C
    case = cf.make_case("linear", "mse-mean")
    opts = kfac_options(curvature="empirical_fisher")
    K = cf.QUANTITIES["kfac"][0](case, opts)
    assert dg.diagnose(0.5 * K, K, case, TOL, quantity="kfac", options=opts) == [
        f"off by a constant factor 0.5: {one_over_c(2, 'MSELoss')}"]
    # the GGN's K-FAC has one: Lambda = I
    opts = kfac_options()
    K = cf.QUANTITIES["kfac"][0](case, opts)
    assert dg.diagnose(0.5 * K, K, case, TOL, quantity="kfac", options=opts) == [
        f"off by a constant factor 0.5: {LAMBDA_I}"]


def test_diagnose_a_scalar_names_only_the_factors_of_its_quantity():
    case = cf.make_case("linear", "mse-mean")
    L = float(cf.QUANTITIES["loss"][0](case, None))
    # a loss has no Lambda: a half of it is no named factor, its values are given
    assert dg.diagnose(np.array(0.5 * L), np.array(L), case, TOL, quantity="loss") == [
        f"value {0.5 * L!r}, refprune's {L!r}"]
    assert dg.diagnose(np.array(3 * L), np.array(L), case, TOL, quantity="loss") == [
        f"off by a constant factor 3: {SUM_FOR_MEAN}"]


def test_diagnose_names_a_factor_of_one_layer_for_the_quantity():
    case = cf.make_case("mlp-tanh", "mse-mean")  # C = 3: a gradient's 1/3 is 1/C
    b = cf.QUANTITIES["grad"][0](case, None)
    a = b.copy()
    a[16:28] /= 3  # layer 2's weights
    label = [lbl for lbl, *_ in dg._segments(case.model)][2]
    assert dg.diagnose(a, b, case, TOL, quantity="grad") == [
        f"differs in: {label}", f"{label}: off by a constant factor 0.333333: {one_over_c(3, 'MSELoss')}"]


def test_diagnose_at_exactly_the_tolerance_looks_for_no_neighbour():
    """A Hessian a twentieth of the way from refprune's GGN to refprune's Hessian: at a
    tolerance just below its error it is named as the GGN; at its own error it passes,
    and nothing is matched."""
    case = cf.make_case("mlp-tanh", "mse-mean")
    H = cf.QUANTITIES["hessian"][0](case, None)
    G = cf.QUANTITIES["ggn"][0](case, None)
    a = G + 0.05 * (H - G)
    err = dg.relative_error(a, H)
    assert dg.diagnose(a, H, case, np.nextafter(err, 0.0), quantity="hessian")[0].startswith(
        "matches refprune's GGN (the Hessian without its residual")
    assert not any(s.startswith("matches") for s in dg.diagnose(a, H, case, err, quantity="hessian"))


def test_pair_notes_name_the_alternative_a_factor_matches():
    case = cf.make_case("linear", "ce-mean")
    opts = kfac_options()
    rS, rA = np.array([1.0, 0.0]), np.array([[1.0]])
    S = np.array([0.0, 1.5])  # no multiple of refprune's S
    alts = [("the first", [(np.array([0.0, 1.0]), np.array([[5.0]]))])]  # S within 0.5 of it, exactly
    assert dg._pair_notes(S, rA, rS, rA, 0, case, opts, 1, 0.5, alts) == ["S matches the S of the first"]
    assert dg._pair_notes(S, rA, rS, rA, 0, case, opts, 1, 0.49, alts) == []
    # A against the alternative's A, never its S
    alts = [("the first", [(np.array([[0.0, 1.0]]), np.array([0.0, 1.0]))])]
    assert dg._pair_notes(rA, S, rA, rS, 0, case, opts, 1, 0.5, alts) == ["A matches the A of the first"]
    alts = [("the first", [(np.array([0.0, 1.0]), np.array([[9.0]]))])]
    assert dg._pair_notes(rA, S, rA, rS, 0, case, opts, 1, 0.5, alts) == []
    # an alternative with fewer pairs than the index is passed over
    alts = [("short", [(np.array([0.0, 1.0]), np.array([[1.0]]))]), ("long", [(rS, rA), (np.array([0.0, 1.0]), rA)])]
    assert dg._pair_notes(S, rA, rS, rA, 1, case, opts, 1, 0.5, alts) == ["S matches the S of long"]


def test_pair_notes_a_factor_fit_at_exactly_the_limit():
    case = cf.make_case("linear", "ce-mean")  # S's factors: 1/3, 3, -1; 2 has no name
    rS, rA = np.array([1.0, 0.0]), np.array([[1.0]])
    S = np.array([2.0, 0.2])  # the fit 2 leaves 0.2 / 2 = 0.1
    assert dg._pair_notes(S, rA, rS, rA, 0, case, kfac_options(), 1, 0.1, []) == [
        "S alone off by a constant factor 2"]
    assert dg._pair_notes(S, rA, rS, rA, 0, case, kfac_options(), 1, 0.099, []) == []
