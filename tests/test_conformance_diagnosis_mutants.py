"""refprune.conformance.diagnosis, piece by piece: the convention factors named for each
loss and network, the parameter segments, the arithmetic of relative_error and
constant_factor, and every sentence diagnose can say, each against a hand-built
expectation (the factors from docs/conventions.md §2-§4, the offsets counted by hand)."""

import numpy as np
import pytest

from refprune import conformance as cf
from refprune import nn
from refprune.conformance.diagnosis import _explanations, _name_factor, _segments, constant_factor, diagnose, \
    real_array, relative_error

# the sentences of _explanations, written out independently of the module
LAMBDA_I = "Lambda = I for squared error where refprune (like PyTorch's MSELoss) has 2 I"
LAMBDA_4I = "Lambda = 4 I or a loss with 2 (f - y)^2"
SUM_FOR_MEAN = "a sum over samples where the loss takes the mean (R = 1/N)"
SUM_FOR_MSE_MEAN = "a sum where MSELoss 'mean' divides by N C"
SAMPLE_MEAN_FOR_MSE_MEAN = "a mean over samples only where MSELoss 'mean' divides by N C"
ASDL_MEAN_ONLY = "Lambda = I and a mean over samples only (ASDL, nngeometry)"
MEAN_FOR_SUM = "a mean over samples where the loss takes the sum (R = 1)"
ASDL_MEAN = "Lambda = I and a mean over samples (ASDL, nngeometry)"
SIGN = "a flipped sign"
BIAS_ONLY = ("only bias entries differ: is the bias missing, or treated apart from the weights (refprune folds it "
             "into A as a constant input 1)?")
TRANSPOSED = "transposed layout (refprune and PyTorch store weight as (out, in) row-major)"
NO_PATTERN = "not a constant factor and not confined to one parameter array"


def T(t):
    return [(float(t), f"the number of convolution output locations T = {t} (a KFC scaling)"),
            (1.0 / t, f"1/T, T = {t} convolution output locations (a KFC scaling)")]


def _one_location_case(loss):
    """A convolution with a single output location (T = 1: no KFC factor to name)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    return cf.build_case("one-location", model, (1, 3, 3), loss)


# N = 3 data points everywhere; C outputs: linear 2, conv-tanh-avgpool 3, conv-conv 2.
# T: conv-tanh-avgpool's Conv2d(1, 2, 3, padding=1) on 4x4 keeps 4x4 (T = 16; the pooling
# after it is not an affine layer); conv-conv: (4, 6) -> kernel (2, 3) stride (1, 2) ->
# (3, 2), T = 6, then kernel 2 -> (2, 1), T = 2.
EXPECTED = {
    ("linear", "mse-mean"): [(0.5, LAMBDA_I), (2.0, LAMBDA_4I), (3.0, SUM_FOR_MEAN), (6.0, SUM_FOR_MSE_MEAN),
                             (2.0, SAMPLE_MEAN_FOR_MSE_MEAN), (1.0, ASDL_MEAN_ONLY), (-1.0, SIGN)],
    ("linear", "mse-sum"): [(0.5, LAMBDA_I), (2.0, LAMBDA_4I), (1 / 3, MEAN_FOR_SUM), (1 / 6, ASDL_MEAN),
                            (-1.0, SIGN)],
    ("linear", "ce-mean"): [(3.0, SUM_FOR_MEAN), (-1.0, SIGN)],
    ("linear", "ce-sum"): [(1 / 3, MEAN_FOR_SUM), (-1.0, SIGN)],
    ("conv-tanh-avgpool", "ce-sum"): [(1 / 3, MEAN_FOR_SUM)] + T(16) + [(-1.0, SIGN)],
    ("conv-tanh-avgpool", "mse-mean"): [(0.5, LAMBDA_I), (2.0, LAMBDA_4I), (3.0, SUM_FOR_MEAN),
                                        (9.0, SUM_FOR_MSE_MEAN), (3.0, SAMPLE_MEAN_FOR_MSE_MEAN),
                                        (1.5, ASDL_MEAN_ONLY)] + T(16) + [(-1.0, SIGN)],
    ("conv-conv-softplus-sigmoid", "ce-mean"): [(3.0, SUM_FOR_MEAN)] + T(2) + T(6) + [(-1.0, SIGN)],
    ("one-location", "ce-sum"): [(1 / 3, MEAN_FOR_SUM), (-1.0, SIGN)],
}


@pytest.mark.parametrize("arch, loss", sorted(EXPECTED))
def test_explanations_name_exactly_the_convention_factors_of_the_case(arch, loss):
    case = _one_location_case(loss) if arch == "one-location" else cf.make_case(arch, loss)
    got = _explanations(case)
    assert [w for _, w in got] == [w for _, w in EXPECTED[arch, loss]]
    assert [v for v, _ in got] == pytest.approx([v for v, _ in EXPECTED[arch, loss]], rel=1e-15)


def test_name_factor_names_only_a_matching_factor():
    case = cf.make_case("linear", "ce-mean")  # known factors: 3 (N) and -1
    assert _name_factor(3.0, case) == f"off by a constant factor 3: {SUM_FOR_MEAN}"
    assert _name_factor(-1.0, case) == f"off by a constant factor -1: {SIGN}"
    assert _name_factor(4.0, case) == "off by a constant factor 4"  # 4/3 - 1 = 1/3 is no match
    assert _name_factor(3.0 * (1 + 1e-5), case) == "off by a constant factor 3.00003"


def test_segments_cover_weight_then_bias_of_every_affine_layer():
    model = cf.make_case("mlp-tanh", "ce-mean").model  # Linear(3, 4), Tanh, Linear(4, 3)
    lin0, _, lin2 = list(model)
    assert _segments(model) == [(f"layer 0 {lin0!r} weight", 0, 12, lin0, "weight"),
                                (f"layer 0 {lin0!r} bias", 12, 16, lin0, "bias"),
                                (f"layer 2 {lin2!r} weight", 16, 28, lin2, "weight"),
                                (f"layer 2 {lin2!r} bias", 28, 31, lin2, "bias")]


def test_constant_factor_arithmetic():
    assert constant_factor(np.array([2.0, 0.0]), np.array([1.0, 0.0])) == 2.0  # |b|^2 = 1 is not zero
    assert constant_factor(np.array([1.0, 2.0]), np.array([0.0, 0.0])) is None
    b = np.array([1.0, -2.0, 0.5])
    assert constant_factor(b, b) == 1.0
    assert constant_factor(np.zeros(3), b) is None  # a = 0 b is no factor to name
    # the fit's relative error is exactly 1e-8: not below the 1e-8 threshold
    assert relative_error(np.array([1.0, 1e-8]), np.array([1.0, 0.0])) == 1e-8
    assert constant_factor(np.array([1.0, 1e-8]), np.array([1.0, 0.0])) is None


def test_relative_error_arithmetic():
    assert relative_error([3.0, 1.0], [2.0, 1.0]) == 0.5  # max |a - b| = 1 over max |b| = 2
    assert relative_error([0.6], [0.5]) == pytest.approx(0.2, rel=1e-12)  # a scale below 1 still divides
    assert relative_error([2.0, 1.0], [0.0, 0.0]) == 2.0  # b = 0: absolute
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0
    assert relative_error([1.0, 2.0], [1.0, 2.0, 3.0]) == float("inf")
    msg = ("relative_error: b is complex (complex128): refprune's quantities are real float64, and the imaginary "
           "part would be dropped silently; return a real array")
    with pytest.raises(TypeError) as e:
        relative_error([1.0], np.array([1j]))
    assert str(e.value) == msg


class _FakeTensor:
    """detach/cpu/numpy like a torch tensor, and nothing NumPy could read by itself."""

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return np.array([1.0, 2.0], dtype=np.float32)


class _DetachOnly:
    """Has ``detach`` but no ``cpu``: not a tensor, read through ``__array__``."""

    def detach(self):
        return object()

    def __array__(self, dtype=None, copy=None):
        return np.array([3.0])


def test_real_array_reads_tensors_and_refuses_complex_by_name():
    got = real_array(_FakeTensor(), "f: x")
    assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]
    assert real_array(_DetachOnly(), "f: x").tolist() == [3.0]
    with pytest.raises(TypeError) as e:
        real_array(np.array([1j]), "f: x")
    assert str(e.value) == ("f: x is complex (complex128): refprune's quantities are real float64, and the imaginary "
                            "part would be dropped silently; return a real array")


def test_diagnose_names_the_reference_argument_and_a_shape_mismatch():
    case = cf.make_case("linear", "ce-mean")
    with pytest.raises(TypeError) as e:
        diagnose(np.ones(2), np.array([1j, 1j]), case, 1e-9)
    assert str(e.value).startswith("diagnose: b is complex (complex128)")
    assert diagnose(np.ones(3), np.ones(2), case, 1e-9) == [
        "shape (3,), refprune's is (2,) (parameters in PyTorch order: weight.ravel() then bias, layer by layer)"]


def test_diagnose_scalars():
    case = cf.make_case("linear", "ce-mean")  # known factors 3 and -1
    assert diagnose(np.array(3.0), np.array(1.0), case, 1e-9) == [f"off by a constant factor 3: {SUM_FOR_MEAN}"]
    assert diagnose(np.array(1.7), np.array(1.0), case, 1e-9) == ["value 1.7, refprune's 1.0"]
    # a zero reference has no factor: absolute error 1
    assert diagnose(np.array(1.0), np.array(0.0), case, 1e-9) == [f"relative error 1.000e+00, {NO_PATTERN}"]


def test_diagnose_vector_with_an_unnamed_factor_and_one_of_the_wrong_length():
    case = cf.make_case("linear", "ce-mean")  # n = 8 parameters
    b = np.arange(1.0, 9.0)
    assert diagnose(1.7 * b, b, case, 1e-9) == ["off by a constant factor 1.7"]
    # three entries are neither a parameter vector nor a matrix over parameters
    assert diagnose(np.array([1.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0]), case, 1e-9) == [
        f"relative error 6.667e-01, {NO_PATTERN}"]


def _labels(case):
    return [lbl for lbl, *_ in _segments(case.model)]


def test_diagnose_matrix_differing_in_bias_rows_only():
    case = cf.make_case("linear", "ce-mean")  # weight rows 0..6, bias rows 6..8
    w, bias = _labels(case)
    b = np.random.default_rng(0).standard_normal((8, 8))
    a = b.copy()
    a[6:8] += np.array([[1.0], [2.0]]) * np.arange(1.0, 9.0)  # no constant factor anywhere
    expected = [f"differs in: {bias}", BIAS_ONLY]
    assert diagnose(a, b, case, 1e-9) == expected
    assert diagnose(a, b, case, 0.0) == expected  # the equal weight rows differ by exactly 0, not more than 0


def test_diagnose_matrix_differing_in_weight_and_bias_rows():
    case = cf.make_case("linear", "ce-mean")
    w, bias = _labels(case)
    b = np.random.default_rng(1).standard_normal((8, 8))
    a = b.copy()
    a[:6] *= 2.0
    a[6:8] += np.array([[1.0], [2.0]]) * np.arange(1.0, 9.0)
    assert diagnose(a, b, case, 1e-9) == [f"differs in: {w}; {bias}", f"{w}: off by a constant factor 2"]


def test_diagnose_per_layer_factor_is_named():
    case = cf.make_case("mlp-tanh", "mse-sum")  # known factors 0.5, 2, 1/3, 1/6, -1
    labels = _labels(case)
    b = np.random.default_rng(2).standard_normal(31)
    a = b.copy()
    a[16:28] *= 2.0
    assert diagnose(a, b, case, 1e-9) == [f"differs in: {labels[2]}", f"{labels[2]}: off by a constant factor 2: "
                                          f"{LAMBDA_4I}"]


def test_diagnose_bias_difference_is_relative_to_the_largest_reference_entry():
    case = cf.make_case("linear", "ce-mean")
    w, bias = _labels(case)
    b = np.random.default_rng(3).standard_normal(8)
    b *= 1e-3 / np.abs(b).max()  # max |b| = 1e-3
    a = b.copy()
    a[7] += 1e-5  # 1e-2 relative to max |b|: above tol = 1e-3
    assert diagnose(a, b, case, 1e-3) == [f"differs in: {bias}", BIAS_ONLY]


def _transposed(b, model, which):
    a = b.copy()
    off = model.param_offsets()
    for j, layer in enumerate(model):
        if j in which:
            s = slice(off[j], off[j] + layer.n_weight)
            a[s] = b[s].reshape(layer.out_units, -1).T.ravel()
    return a


def test_diagnose_names_every_transposed_weight():
    case = cf.make_case("mlp-tanh", "ce-mean")
    labels = _labels(case)
    b = np.random.default_rng(4).standard_normal(31)
    a = _transposed(b, case.model, (0, 2))
    assert diagnose(a, b, case, 1e-9) == [f"differs in: {labels[0]}; {labels[2]}", f"{labels[0]}: {TRANSPOSED}",
                                          f"{labels[2]}: {TRANSPOSED}"]


def test_diagnose_transposed_check_uses_the_tolerance_in_force_and_no_absolute_one():
    case = cf.make_case("mlp-tanh", "ce-mean")
    labels = _labels(case)
    rng = np.random.default_rng(5)
    b = rng.choice([-1.0, 1.0], 31) * rng.uniform(0.5, 2.0, 31)
    a = _transposed(b, case.model, (0, 2))
    a[:12] += 1e-9  # layer 0 transposed, then off by 1e-9 >> tol = 1e-12 relative
    assert diagnose(a, b, case, 1e-12) == [f"differs in: {labels[0]}; {labels[2]}", f"{labels[2]}: {TRANSPOSED}"]
