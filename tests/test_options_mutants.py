"""The option table's helpers against hand-built rows and hand-written messages.

The table itself is built when refprune is imported, so the helpers that build its rows
(``_mc``, ``_nonneg``) are called here directly and compared with rows written out by
hand from the module's documentation (kind, default, range, what each row applies to)."""

from unittest import mock

import numpy as np
import pytest

from refprune import options
from refprune.options import Option


def _msg(excinfo):
    return str(excinfo.value)


# ---------------------------------------------------------------- the row builders

def test_mc_rows_are_the_monte_carlo_options():
    got = options._mc(" (here)", methods=("obs",), seed_or_when="retrain")
    want = (
        Option("samples", "int", 1, "Monte Carlo targets per data point (here)", low=1, methods=("obs",),
               curvatures=("mc_fisher",)),
        Option("seed", "seed", 0, "seed of numpy.random.default_rng for the Monte Carlo targets (here)",
               sequence=True, methods=None, curvatures=("mc_fisher",), or_when="retrain"),
        Option("targets", "targets", None,
               "the caller's Monte Carlo targets, (n_mc, N) labels or (n_mc, N, C) values",
               methods=("obs",), curvatures=("mc_fisher",)),
    )
    assert got == want


def test_mc_seed_without_or_when_applies_to_the_methods():
    got = options._mc("", methods=("obd",), sequence=False)
    assert got[1] == Option("seed", "seed", 0, "seed of numpy.random.default_rng for the Monte Carlo targets",
                            sequence=False, methods=("obd",), curvatures=("mc_fisher",))
    # default: a sequence of seeds is accepted, every method
    assert options._mc("")[1].sequence is True
    assert options._mc("")[0].methods is None and options._mc("")[2].methods is None


def test_nonneg_row():
    got = options._nonneg("weight_decay", "some doc", methods=("obs",), note="n")
    assert got == Option("weight_decay", "real", 0.0, "some doc", low=0.0, methods=("obs",), note="n")
    assert got.accepted == "a finite number >= 0"


# ---------------------------------------------------------------- range text and messages

def test_range_text():
    assert options._range_text(Option("x", "real", 0.0, "d", low=0.0, high=1.0)) == " >= 0 and <= 1"
    assert options._range_text(Option("x", "real", 0.0, "d", low=0.0, high=1.0, low_open=True,
                                      high_open=True)) == " > 0 and < 1"
    assert options._range_text(Option("x", "real", 0.0, "d")) == ""
    assert Option("x", "real", 0.0, "d").accepted == "a finite number"


def test_real_out_of_range_messages():
    with pytest.raises(ValueError) as e:
        options.convert("SGD", {"lr": -1.0})
    assert _msg(e) == "SGD: lr must be a finite number >= 0, got -1.0 (lr must be >= 0)"
    with pytest.raises(ValueError) as e:
        options.convert("minimize", {"gtol": 0.0})
    assert _msg(e) == "minimize: gtol must be a finite number > 0, got 0.0 (gtol must be > 0)"
    with pytest.raises(ValueError) as e:
        options.convert("prune", {"max_layer_fraction": 1.5})
    assert _msg(e) == "prune: max_layer_fraction must be in (0, 1], got 1.5 (max_layer_fraction must be <= 1)"
    with pytest.raises(ValueError) as e:
        options.convert("SGD", {"momentum": 1.0})
    assert _msg(e) == "SGD: momentum must be a finite number >= 0 and < 1, got 1.0 (momentum must be < 1)"


@pytest.mark.parametrize("value, note", [
    (True, "an int, not a bool"),
    (np.True_, "an int, not a bool"),
    ("3", "an int, not text"),
    (2.5, "an int, not float"),
    (None, "an int, not NoneType"),
])
def test_int_type_messages(value, note):
    with pytest.raises(options.OptionTypeError) as e:
        options.convert("train", {"epochs": value})
    assert _msg(e) == f"train: epochs must be a non-negative int, got {value!r} (epochs must be {note})"


def test_callable_message_names_the_type_given():
    with pytest.raises(TypeError) as e:
        options.convert("train", {"callback": 3})
    assert _msg(e) == "train: callback must be callable or None, got int"


def test_row_lookup():
    assert options._row("minimize", "gtol").default == 1e-10
    with pytest.raises(KeyError, match="minimize has no option 'nope'"):
        options._row("minimize", "nope")


# ---------------------------------------------------------------- defaults

def test_a_bool_is_not_a_numeric_default():
    samples = options._row("obs_trace", "samples")  # default 1
    assert options.is_default(samples, 1)
    assert not options.is_default(samples, True)
    seed = options._row("obs_trace", "seed")  # default 0
    assert not options.is_default(seed, False)
    assert not options.is_default(seed, np.False_)


def test_an_array_or_other_object_is_never_a_default():
    seed = options._row("obs_trace", "seed")
    assert not options.is_default(seed, np.array(0))
    assert not options.is_default(seed, np.zeros(1))
    # an object that claims equality with everything is neither a number nor a name
    assert not options.is_default(seed, mock.ANY)
    assert not options.is_default(options._row("prune", "steps"), mock.ANY)


# ---------------------------------------------------------------- refusals, applicable, describe

def test_curvature_refusal_names_what_was_given():
    with pytest.raises(ValueError) as e:
        options.refuse_inapplicable("obs_trace", {"samples": 5}, curvature=np.eye(2))
    assert _msg(e) == ("obs_trace: samples= is for curvature='mc_fisher', got a precomputed curvature; "
                       "leave samples at its default 1")
    with pytest.raises(ValueError) as e:
        options.refuse_inapplicable("obs_trace", {"samples": 5}, curvature="ggn")
    assert _msg(e) == ("obs_trace: samples= is for curvature='mc_fisher', got curvature='ggn'; "
                       "leave samples at its default 1")
    with pytest.raises(ValueError) as e:
        options.refuse_inapplicable("obs_trace", {"samples": 5}, curvature=None)
    assert _msg(e) == ("obs_trace: samples= is for curvature='mc_fisher', got curvature=None; "
                       "leave samples at its default 1")


_PRUNE_OBS = ("method", "sparsity", "count", "steps", "scope", "curvature", "damping", "group_size")
_PRUNE_OBS_TAIL = ("mask", "include_bias", "retrain", "progress", "protected", "skip_emptied", "taylor",
                   "weight_decay", "indefinite")


def test_applicable_with_a_curvature():
    # ggn: no Monte Carlo options, except seed, which applies with retrain= as well
    assert options.applicable("prune", method="obs", curvature="ggn") == _PRUNE_OBS + ("seed",) + _PRUNE_OBS_TAIL
    assert options.applicable("prune", method="obs", curvature="mc_fisher") == (
        _PRUNE_OBS + ("samples", "seed", "targets") + _PRUNE_OBS_TAIL)
    assert options.applicable("unit_saliencies", method="c_obd", curvature="ggn") == (
        "method", "curvature", "damping")
    assert options.applicable("unit_saliencies", method="c_obd") == (
        "method", "curvature", "damping", "samples", "seed", "targets")


def test_describe_without_scope():
    text = options.describe("minimize")
    assert text.splitlines()[0] == "minimize: options"
    assert text.splitlines()[5] == "  maxiter = 1000: SciPy's iteration limit; accepts a positive int"
    assert text.splitlines()[6] == "  progress = False: report every iteration on stderr; accepts True or False"


def test_describe_with_scope():
    lines = options.describe("saliencies").splitlines()
    methods = "obd, obs, woodfisher, c_obd, c_obs, kron_obd, kron_obs"
    assert lines[-3] == ("  samples = 1: Monte Carlo targets per data point (curvature='mc_fisher'); accepts a "
                         f"positive int; applies to methods {methods}; curvature mc_fisher")
    seed = [line for line in options.describe("prune").splitlines() if line.startswith("  seed")]
    assert seed == ["  seed = 0: seed of numpy.random.default_rng for the Monte Carlo targets "
                    "(curvature='mc_fisher'); accepts a non-negative int or a sequence of non-negative ints; "
                    "applies to curvature mc_fisher (or with retrain=)"]
    assert options.describe("minimize", method="x").splitlines()[0] == "minimize (method='x'): options"


def test_describe_lists_several_curvatures(monkeypatch):
    row = Option("z", "flag", False, "a test row", curvatures=("ggn", "fisher"))
    monkeypatch.setitem(options.TABLE, "fake", (row,))
    assert options.describe("fake") == ("fake: options\n  z = False: a test row; accepts True or False; "
                                        "applies to curvature ggn, fisher")
