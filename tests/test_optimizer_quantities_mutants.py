"""The optimizer quantities' tables and option handling (refprune/conformance/
optimizer_quantities.py), each against an independent statement of what it must be:

- the defaults: the table of docs/optimizers.md §6, written out here, and the rows of
  refprune's own optimizer classes (``refprune.options.TABLE``) for the options they share;
- the conventions: the text of each quantity written out here piece by piece (what is
  computed, the state, the preconditioner, the averages, the Monte Carlo targets);
- the neighbours of another convention: the documented meaning of each (the reference
  under that ``ema_start``, ``batches`` or ``damping_form``), with its description word
  for word;
- the refusals of ``optimizer_options``: their messages word for word.

The builders run when the module is imported, before mutmut switches a mutant on, so they
are called here directly."""

import numpy as np
import pytest

import refprune as rp
import refprune.options as options_table
from refprune import conformance as cf
from refprune.conformance import optimizer_quantities as oq

#: docs/optimizers.md §6, the table "quantity | result | options (defaults)"
_KRON = dict(curvature="ggn", approx="expand", bias="fold", damping=1e-3, ema_decay=0.95, ema_start="first")
_NG = dict(curvature="fisher", damping=1e-3, structure="full", ema_decay=0.0, ema_start="first")
_UPDATE = dict(momentum=0.0, weight_decay=0.0, kl_clip=None)
DOCUMENTED = {
    "kfac_direction": dict(_KRON, damping_form="pi", factors=None, updates=0),
    "kfac_step": dict(_KRON, damping_form="pi", factors=None, updates=0, lr=0.1, **_UPDATE, buf=None),
    "kfac_steps": dict(_KRON, damping_form="pi", lr=0.1, **_UPDATE, refresh_interval=1, k=3, batches="split"),
    "ekfac_direction": dict(_KRON, factors=None, updates=0),
    "ekfac_step": dict(_KRON, factors=None, updates=0, lr=0.1, **_UPDATE, buf=None),
    "ekfac_steps": dict(_KRON, lr=0.1, **_UPDATE, refresh_interval=1, scale_interval=1, scale_decay=0.95, k=3,
                        batches="split"),
    "natural_gradient_direction": dict(_NG, matrix=None, updates=0),
    "natural_gradient_step": dict(_NG, matrix=None, updates=0, lr=1.0, **_UPDATE, buf=None),
    "natural_gradient_steps": dict(_NG, lr=1.0, **_UPDATE, k=3, batches="split"),
}
CLASSES = {"kfac": "KFAC", "ekfac": "EKFAC", "natural_gradient": "NaturalGradient"}


def _split(name):
    fam, kind = name.rsplit("_", 1)
    return fam, kind


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_defaults_are_the_documented_ones(name):
    fam, kind = _split(name)
    want = DOCUMENTED[name]
    for got in (oq._defaults(fam, kind), oq.OPTIMIZER_QUANTITIES[name][2]):
        assert got == want
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
    # the options shared with the optimizer class have the class's defaults (its curvature
    # is the Monte Carlo Fisher, which a quantity needs replayable targets for: "ggn" here)
    rows = {r.name: r.default for r in options_table.TABLE[CLASSES[fam]]}
    for key, value in want.items():
        if key in rows and key != "curvature":
            assert rows[key] == value, (name, key)


def test_the_family_defaults_directly():
    assert oq._kron_defaults("kfac") == dict(curvature="ggn", approx="expand", bias="fold", damping=1e-3,
                                             damping_form="pi")
    assert oq._kron_defaults("ekfac") == dict(curvature="ggn", approx="expand", bias="fold", damping=1e-3)
    assert oq._ng_defaults() == dict(curvature="fisher", damping=1e-3, structure="full")
    assert type(oq._kron_defaults("kfac")["damping"]) is float


# ---------------------------------------------------------------- the conventions

_KFAC_STATE = ("the state: factors (the averaged factors after `updates` updates, one (S, A) per block in the order "
               "and shapes of rp.kfac(..., bias=bias).factors(), or None for the start) and buf (the momentum buffer, "
               "None = 0); this step is update number updates + 1 and refreshes the preconditioner")
_NG_STATE = ("the state: matrix (the averaged matrix (n, n) after `updates` updates, or None for the start) and buf "
             "(the momentum buffer, None = 0); this step is update number updates + 1 and refreshes the "
             "preconditioner")
_EKFAC_STATE = _KFAC_STATE.replace("refreshes the preconditioner", "refreshes the basis and re-estimates kappa")
_UPDATE_TEXT = ("d = P g, nu = min(1, sqrt(kl_clip / (lr^2 d.g))) when kl_clip is set (Ba et al. 2017, §5; d before "
                "weight decay), d = nu d + weight_decay theta, buf = momentum buf + d, theta - lr buf")
_STEPS_TEXT = ("k steps from the fresh state (no averages yet, buf = 0); batches='split': step u uses the u-th of k "
               "contiguous parts of the case's samples (numpy.array_split), 'repeat': all of them every step; the "
               "preconditioner is refreshed at steps 1, 1 + refresh_interval, ... and used unchanged in between; "
               "the result is theta after step k")
_P = {"kfac": "P = the damped (S kron A)^-1 of every block (Martens & Grosse 2015, §6.3)",
      "ekfac": "P = U_SA diag(1 / (kappa + lam)) U_SA^T (George et al. 2018, Algorithm 1)",
      "natural_gradient": "P = (F + lam I)^-1 with F the exact curvature matrix of the batch"}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_conventions_word_for_word(name):
    fam, kind = _split(name)
    state = {"kfac": _KFAC_STATE, "ekfac": _EKFAC_STATE, "natural_gradient": _NG_STATE}[fam]
    what = {"direction": "the direction d = P g (before the KL clip, weight decay, momentum and lr) on the case's "
                         f"whole batch (case.X, case.y) from {state}",
            "step": f"theta (n,) after one step on the case's whole batch from {state}: {_UPDATE_TEXT}",
            "steps": f"theta (n,) after {_STEPS_TEXT}: {_UPDATE_TEXT}"}[kind]
    ema = ("moving average x_u = eps_u x_(u-1) + (1 - eps_u) X_u with decay ema_decay, started as ema_start says: "
           "'first' eps_u = min(decay, 1 - 1/u) (the first estimate is the first batch's); 'zero' x_0 = 0, eps_u = "
           "decay; 'zero_debiased' the same divided by 1 - decay^u; 'identity' x_0 = I, eps_u = decay")
    mc = "curvature='mc_fisher': the Monte Carlo targets case.targets[:, idx] of the step's samples idx"
    for got in (oq._conventions(fam, kind), oq.OPTIMIZER_QUANTITIES[name][1]):
        assert got.startswith(what + "; " + _P[fam]), got
        assert got.endswith(f"; {ema}; {mc}"), got
        assert got.count("; P = ") == 1 and got.count("moving average") == 1


# ---------------------------------------------------------------- the neighbours of another convention

_WORDS = {"first": "the first estimate is the first batch's, eps_u = min(decay, 1 - 1/u)",
          "zero": "x_0 = 0 without bias correction", "zero_debiased": "x_0 = 0 with bias correction",
          "identity": "x_0 = I"}


def _state(case, name):
    fam, _ = _split(name)
    if fam == "natural_gradient":
        B = np.random.default_rng(1).standard_normal((case.n_params, case.n_params))
        return dict(matrix=B @ B.T / case.n_params + np.eye(case.n_params))
    return dict(factors=[(S + 0.1 * np.eye(len(S)), A + 0.2 * np.eye(len(A)))
                         for S, A in rp.kfac(*case.args()).factors()])


def _expect(case, name, given, want):
    """``_option_neighbours`` gives exactly ``want``: ``[(description, options under which
    the reference is the neighbour's value)]``."""
    o = oq.optimizer_options(name, given)
    got = oq._option_neighbours(case, name, o)
    assert [d for d, _ in got] == [d for d, _ in want]
    for (_, thunk), (_, opts) in zip(got, want):
        assert np.array_equal(thunk(), oq.run(case, name, opts))


def _start(start, was):
    return f"moving average started as ema_start={start!r} instead of {was!r} ({_WORDS[start]})"


CASE = cf.make_case("mlp-tanh", "ce-mean")  # 3 samples


def test_other_starts_from_the_start():
    o = {}
    _expect(CASE, "kfac_direction", o, [(_start(s, "first"), dict(ema_start=s))
                                         for s in ("zero", "zero_debiased", "identity")])
    # from another start with a decay of its own: 'first' from the start takes the default decay
    o = dict(ema_start="zero", ema_decay=0.7)
    _expect(CASE, "kfac_step", o, [(_start("first", "zero"), dict(ema_start="first")),
                                   (_start("zero_debiased", "zero"), dict(o, ema_start="zero_debiased")),
                                   (_start("identity", "zero"), dict(o, ema_start="identity"))])
    o = dict(ema_start="identity", ema_decay=0.5)
    _expect(CASE, "natural_gradient_direction", o,
            [(_start("first", "identity"), dict(ema_start="first")),
             (_start("zero", "identity"), dict(o, ema_start="zero")),
             (_start("zero_debiased", "identity"), dict(o, ema_start="zero_debiased"))])


def test_other_starts_from_a_given_state():
    for name in ("kfac_step", "ekfac_direction", "natural_gradient_step"):
        st = _state(CASE, name)
        # a state after no update: 'first' cannot start from it (an average exists only after an update)
        o = dict(st, ema_start="zero", ema_decay=0.7, updates=0)
        _expect(CASE, name, o, [(_start("zero_debiased", "zero"), dict(o, ema_start="zero_debiased")),
                                (_start("identity", "zero"), dict(o, ema_start="identity"))])
        # after two updates 'first' applies and keeps the decay given
        o = dict(st, ema_start="zero", ema_decay=0.7, updates=2)
        _expect(CASE, name, o, [(_start("first", "zero"), dict(o, ema_start="first")),
                                (_start("zero_debiased", "zero"), dict(o, ema_start="zero_debiased")),
                                (_start("identity", "zero"), dict(o, ema_start="identity"))])


def test_the_other_batching_of_k_steps():
    starts = [(_start(s, "first"), dict(ema_start=s)) for s in ("zero", "zero_debiased", "identity")]
    for name in ("kfac_steps", "natural_gradient_steps"):
        # the decay of k steps is kept under every start (the first step's estimate is the batch's own)
        o = dict(ema_decay=0.8)
        _expect(CASE, name, o, [(d, dict(v, ema_decay=0.8)) for d, v in starts]
                + [("batches='repeat' instead of 'split'", dict(o, batches="repeat"))])
        o = dict(k=3, batches="repeat")  # 3 samples: 'split' gives one each
        _expect(CASE, name, o, [(d, dict(o, **v)) for d, v in starts]
                + [("batches='split' instead of 'repeat'", dict(o, batches="split"))])
        o = dict(k=4, batches="repeat")  # more steps than samples: no split
        _expect(CASE, name, o, [(d, dict(o, **v)) for d, v in starts])
        o = dict(k=1)  # one step: both batchings are the whole batch
        _expect(CASE, name, o, [(d, dict(o, **v)) for d, v in starts])
        o = dict(k=2, batches="repeat")  # two steps: parts of 2 and 1 samples
        _expect(CASE, name, o, [(d, dict(o, **v)) for d, v in starts]
                + [("batches='split' instead of 'repeat'", dict(o, batches="split"))])
        # from another start, 'first' keeps the decay given: k steps start from no state, and the
        # first step's estimate is the batch's own whatever the decay
        o = dict(ema_start="zero", ema_decay=0.8)
        _expect(CASE, name, o, [(_start("first", "zero"), dict(o, ema_start="first")),
                                (_start("zero_debiased", "zero"), dict(o, ema_start="zero_debiased")),
                                (_start("identity", "zero"), dict(o, ema_start="identity")),
                                ("batches='repeat' instead of 'split'", dict(o, batches="repeat"))])


def test_other_damping_forms():
    def expect(name, given, want):
        o = oq.optimizer_options(name, given)
        got = oq._form_neighbours(CASE, name, o)
        assert [d for d, _ in got] == [d for d, _ in want]
        for (_, thunk), (_, opts) in zip(got, want):
            assert np.array_equal(thunk(), oq.run(CASE, name, opts))

    expect("kfac_direction", {}, [("damping form 'exact' (lam added to the product) instead of 'pi'",
                                   dict(damping_form="exact")),
                                  ("damping form 'factored' (lam added to the factors) instead of 'pi'",
                                   dict(damping_form="factored"))])
    o = dict(damping_form="exact", damping=0.1, lr=0.3)
    expect("kfac_step", o, [("damping form 'factored' (lam added to the factors) instead of 'exact'",
                             dict(o, damping_form="factored")),
                            ("damping form 'pi' (lam added to the factors) instead of 'exact'",
                             dict(o, damping_form="pi"))])
    expect("kfac_steps", dict(damping=0.0), [])  # no damping: every form is the same
    expect("ekfac_direction", {}, [])  # EKFAC damps kappa + lam, it has no forms


# ---------------------------------------------------------------- optimizer_options's refusals


def test_option_refusals_word_for_word():
    def refused(name, given, exc, message):
        with pytest.raises(exc) as e:
            oq.optimizer_options(name, given)
        assert str(e.value) == message

    where = "optimizer quantity kfac_step"
    refused("kfac_step", [("damping", 1.0)], TypeError, f"{where}: options must be a dict, got list")
    # unknown keys of any type are listed, sorted by their text
    refused("kfac_step", {"zz": 1, 3: 2, "aa": 0}, ValueError,
            f"{where}: unknown options [3, 'aa', 'zz']; it takes {sorted(DOCUMENTED['kfac_step'])}")
    refused("kfac_step", dict(ema_start="ones"), ValueError,
            f"{where}: ema_start must be one of ('first', 'zero', 'zero_debiased', 'identity'), got 'ones'")
    # damping_form is a row of KFAC's table, which refuses it (EKFAC does not take it at all)
    refused("kfac_step", dict(damping_form="x"), ValueError,
            f"{where}: damping_form must be one of ('exact', 'factored', 'pi'), got 'x'")
    refused("natural_gradient_direction", dict(curvature="ggm"), ValueError,
            "optimizer quantity natural_gradient_direction: curvature must be one of ('hessian', 'ggn', 'fisher', "
            "'mc_fisher', 'empirical_fisher'), got 'ggm'")
    refused("kfac_step", dict(curvature="hessian"), ValueError,
            f"{where}: curvature='hessian' has no Kronecker factorisation here (its residual term is not a sum of "
            "outer products); choose one of ('ggn', 'fisher', 'mc_fisher', 'empirical_fisher')")
    w = "optimizer quantity ekfac_steps"
    refused("ekfac_steps", dict(k=2.0), TypeError, f"{w}: k must be a positive int, got 2.0")
    refused("ekfac_steps", dict(k=0), ValueError, f"{w}: k must be a positive int, got 0")
    refused("ekfac_steps", dict(batches="all"), ValueError,
            f"{w}: batches must be one of ('split', 'repeat'), got 'all'")
    w = "optimizer quantity natural_gradient_direction"
    refused("natural_gradient_direction", dict(updates=True), TypeError,
            f"{w}: updates must be a non-negative int, got True")
    refused("natural_gradient_direction", dict(updates=1.0), TypeError,
            f"{w}: updates must be a non-negative int, got 1.0")
    refused("natural_gradient_direction", dict(updates=-1), ValueError,
            f"{w}: updates must be a non-negative int, got -1")
    refused("natural_gradient_direction", dict(updates=2), ValueError,
            f"{w}: updates=2 needs the averaged matrix they made (matrix=); without matrix= the state is the "
            "start and updates must be 0")
    refused("natural_gradient_direction", dict(matrix=np.eye(3)), ValueError,
            f"{w}: matrix= given with updates=0; with ema_start='first' an average exists only after an update "
            "(updates >= 1)")
    refused("natural_gradient_direction", dict(ema_decay=0.5), ValueError,
            f"{w}: ema_decay=0.5 does not apply to a first step from the start with ema_start='first' (its "
            "estimate is the batch's own); give matrix= and updates=, or leave ema_decay at 0.0")
    w = "optimizer quantity kfac_direction"
    refused("kfac_direction", dict(ema_decay=0.5), ValueError,
            f"{w}: ema_decay=0.5 does not apply to a first step from the start with ema_start='first' (its "
            "estimate is the batch's own); give factors= and updates=, or leave ema_decay at 0.95")
    refused("kfac_direction", dict(updates=1), ValueError,
            f"{w}: updates=1 needs the averaged factors they made (factors=); without factors= the state is the "
            "start and updates must be 0")


def test_option_conversions():
    # no options: the defaults
    for name in ("kfac_step", "natural_gradient_steps"):
        assert oq.optimizer_options(name) == DOCUMENTED[name]
        assert oq.optimizer_options(name, None) == DOCUMENTED[name]
    o = oq.optimizer_options("kfac_steps", dict(k=np.int64(2), damping=1))
    assert type(o["k"]) is int and o["k"] == 2
    assert type(o["damping"]) is float and o["damping"] == 1.0  # the class table's conversion
    o = oq.optimizer_options("kfac_step", dict(updates=np.int32(3), factors=[], ema_start="zero"))
    assert type(o["updates"]) is int and o["updates"] == 3
    # what is accepted: every documented start and batching; 'first' with a state after an update
    for s in oq.EMA_STARTS:
        assert oq.optimizer_options("ekfac_step", dict(ema_start=s, factors=[], updates=1))["ema_start"] == s
    for b in ("split", "repeat"):
        assert oq.optimizer_options("natural_gradient_steps", dict(batches=b, k=1))["batches"] == b
    # other starts take any decay from the start; the default decay is accepted with 'first'
    assert oq.optimizer_options("kfac_direction", dict(ema_start="zero", ema_decay=0.5))["ema_decay"] == 0.5
    assert oq.optimizer_options("kfac_direction", dict(ema_decay=0.95))["ema_decay"] == 0.95
    assert oq.optimizer_options("kfac_steps", dict(ema_decay=0.5))["ema_decay"] == 0.5  # k steps: no state


def test_state_refusals_word_for_word():
    """The state arrays are checked against the case: ``buf (n,)``, ``matrix (n, n)``,
    ``factors`` one ``(S, A)`` per block of ``rp.kfac(..., bias=bias)``, every array real
    and finite."""
    shapes = [(S.shape, A.shape) for S, A in rp.kfac(*CASE.args()).factors()]
    assert shapes == [((4, 4), (4, 4)), ((3, 3), (5, 5))] and CASE.n_params == 31  # Linear(3, 4), Linear(4, 3)
    good = [(np.eye(4), np.eye(4)), (np.eye(3), np.eye(5))]

    def refused(name, given, exc, message):
        with pytest.raises(exc) as e:
            oq.run(CASE, name, given)
        assert str(e.value) == message

    w = "optimizer quantity kfac_step"
    lst = "factors must be a list of 2 (S, A) pairs (one per K-FAC block, bias='fold'), got"
    refused("kfac_step", dict(factors="ab", updates=1), ValueError, f"{w}: {lst} str")
    refused("kfac_step", dict(factors=good[:1], updates=1), ValueError, f"{w}: {lst} list of length 1")
    refused("kfac_step", dict(factors=tuple(good) + (good[0],), updates=1), ValueError, f"{w}: {lst} tuple of length 3")
    refused("kfac_step", dict(factors=[good[0] + (np.eye(4),), good[1]], updates=1), ValueError,
            f"{w}: factors[0] must be a pair (S, A), got tuple")
    refused("kfac_step", dict(factors=[good[0], "ab"], updates=1), ValueError,
            f"{w}: factors[1] must be a pair (S, A), got str")
    refused("kfac_step", dict(factors=[good[0], (np.eye(3),)], updates=1), ValueError,
            f"{w}: factors[1] must be a pair (S, A), got tuple")
    refused("kfac_step", dict(factors=[(np.eye(2), np.eye(4)), good[1]], updates=1), ValueError,
            f"{w}: factors[0] S must have shape (4, 4), got (2, 2)")
    refused("kfac_step", dict(factors=[good[0], (np.eye(3), np.eye(4))], updates=1), ValueError,
            f"{w}: factors[1] A must have shape (5, 5), got (4, 4)")
    refused("kfac_step", dict(factors=[(np.eye(4), np.eye(4) * 1j), good[1]], updates=1), TypeError,
            f"{w}: factors[0] A must be a real array of shape (4, 4), got ndarray of dtype complex128")
    refused("kfac_step", dict(factors=[good[0], (np.full((3, 3), np.nan), np.eye(5))], updates=1), ValueError,
            f"{w}: factors[1] S contains NaN or inf")
    refused("kfac_step", dict(buf=np.zeros(3)), ValueError, f"{w}: buf must have shape (31,), got (3,)")
    refused("kfac_step", dict(buf=object()), TypeError,
            f"{w}: buf must be a real array of shape (31,), got object of dtype object")
    refused("kfac_step", dict(buf=np.full(31, np.inf)), ValueError, f"{w}: buf contains NaN or inf")
    refused("natural_gradient_step", dict(matrix=np.zeros((3, 3)), updates=1), ValueError,
            "optimizer quantity natural_gradient_step: matrix must have shape (31, 31), got (3, 3)")
    refused("ekfac_direction", dict(factors=good[:1], updates=1, bias="separate"), ValueError,
            "optimizer quantity ekfac_direction: factors must be a list of 4 (S, A) pairs (one per K-FAC block, "
            "bias='separate'), got list of length 1")
    # accepted: lists and integer arrays, read as float64 (the same step as from float arrays)
    ints = [(np.eye(4, dtype=int), np.eye(4, dtype=int).tolist()), (np.eye(3, dtype=int), np.eye(5, dtype=int))]
    assert np.array_equal(oq.run(CASE, "kfac_step", dict(factors=ints, updates=1, buf=[0] * 31)),
                          oq.run(CASE, "kfac_step", dict(factors=good, updates=1, buf=np.zeros(31))))


def test_state_read_as_float64():
    """An object NumPy cannot read is refused by its type; float32 state arrays are read as
    float64 (exactly), so the step is the one from the same values in float64."""
    with pytest.raises(TypeError) as e:
        oq.run(CASE, "kfac_step", dict(buf=[[1.0, 2.0], [3.0]]))
    assert str(e.value) == ("optimizer quantity kfac_step: buf must be a real array of shape (31,), got list of "
                            "dtype object")
    rng = np.random.default_rng(4)
    buf = rng.standard_normal(31).astype(np.float32)
    factors = [(S + np.eye(len(S)), A + np.eye(len(A))) for S, A in rp.kfac(*CASE.args()).factors()]
    f32 = [(S.astype(np.float32), A.astype(np.float32)) for S, A in factors]
    f64 = [(S.astype(np.float32).astype(np.float64), A.astype(np.float32).astype(np.float64)) for S, A in factors]
    o = dict(momentum=0.3, ema_start="zero", ema_decay=0.7, updates=2)
    assert np.array_equal(oq.run(CASE, "kfac_step", dict(o, buf=buf, factors=f32)),
                          oq.run(CASE, "kfac_step", dict(o, buf=buf.astype(np.float64), factors=f64)))
    M = rng.standard_normal((31, 31))
    M = (M @ M.T / 31).astype(np.float32)
    o = dict(momentum=0.3, ema_decay=0.7, updates=2)
    assert np.array_equal(oq.run(CASE, "natural_gradient_step", dict(o, buf=buf, matrix=M)),
                          oq.run(CASE, "natural_gradient_step", dict(o, buf=buf.astype(np.float64),
                                                                     matrix=M.astype(np.float64))))


def test_moving_average_bugs_on_scalars():
    """The planted average bugs of NEIGHBOUR_BUGS on X_(u-1) = 1, X_u = 3: "ema_constant"
    takes eps_u = decay from the second update on (0.9 * 1 + 0.1 * 3 = 1.2 where
    min(0.9, 1 - 1/2) = 0.5 gives 2); with decay 0, eps_u = 0 under 'first' whatever the
    update, the estimate is the batch's own, and neither bug applies (NEIGHBOUR_BUGS says
    so), so both leave it at 3."""
    one, three = [np.array([[1.0]])], [np.array([[3.0]])]
    for bugs, want in ((frozenset(), 2.0), (frozenset({"ema_constant"}), 1.2)):
        assert oq._fold(one, three, 2, 0.9, "first", bugs)[1][0][0, 0] == pytest.approx(want, rel=1e-15)
    for bug in ("ema_constant", "ema_swapped"):
        assert not oq.NEIGHBOUR_BUGS[bug][1]("kfac", "step", dict(ema_start="first", ema_decay=0.0))
        for u in (2, 3):
            assert oq._fold(one, three, u, 0.0, "first", frozenset({bug}))[1][0][0, 0] == 3.0


def test_swapped_average_against_the_dense_computation():
    """The "ema_swapped" neighbour from a state that does not commute with the batch's
    statistics (random factors; a matrix far from singular), under damping forms whose
    inverse exists for any factor, against test_optimizer_quantities' dense computation
    (np.kron blocks, averages in closed form).  The neighbour tests there start from
    states that are functions of the batch's own factors, where EKFAC's basis cannot tell
    the weights apart, and their K-FAC 'pi' and natural-gradient variants refuse."""
    from test_optimizer_quantities import close, dense_run

    rng = np.random.default_rng(11)

    def spd(n):
        B = rng.standard_normal((n, n))
        return B @ B.T / n + np.eye(n)

    factors = [(spd(len(S)), spd(len(A))) for S, A in rp.kfac(*CASE.args()).factors()]
    M = 10 * spd(CASE.n_params)
    for name, o in (("kfac_step", dict(factors=factors, updates=2, damping_form="exact", damping=0.1)),
                    ("kfac_direction", dict(factors=factors, updates=1, ema_start="zero", ema_decay=0.6,
                                            damping_form="factored", damping=0.1)),
                    ("ekfac_step", dict(factors=factors, updates=2, damping=0.1)),
                    ("natural_gradient_step", dict(matrix=M, updates=2, ema_decay=0.3, damping=0.1))):
        got = oq.run(CASE, name, o, bugs=["ema_swapped"])
        assert close(got, dense_run(CASE, name, o, bugs=["ema_swapped"])), name
        assert not close(got, oq.run(CASE, name, o), 1e-6), name  # the bug shows


@pytest.mark.parametrize("scale_decay", [0.3, 0.8])
def test_ekfac_rescaled_every_third_step(scale_decay):
    """EKFAC re-estimates kappa at steps 1, 1 + scale_interval, ... (docs/optimizers.md §6):
    with scale_interval=3 and no refresh of the basis after the first step, at steps 1 and 4
    of 5, against the dense computation (an interval of 2 cannot tell u - 1 from u + 1).  The
    second estimate is averaged with eps = min(scale_decay, 1 - 1/2): 0.3 and 0.5 tell the
    decay from the default 0.95, 0.8 the update count from another."""
    from test_optimizer_quantities import close, dense_run

    o = dict(k=5, batches="repeat", refresh_interval=5, scale_interval=3, scale_decay=scale_decay, ema_decay=0.8,
             damping=0.1, lr=0.3)
    case = cf.make_case("mlp-sigmoid-softplus-nobias", "mse-sum")  # an EKFAC that is unique (check_unique)
    got = oq.run(case, "ekfac_steps", o)
    assert close(got, dense_run(case, "ekfac_steps", o))
    assert not close(got, oq.run(case, "ekfac_steps", dict(o, scale_interval=2)), 1e-6)
    assert not close(got, oq.run(case, "ekfac_steps", dict(o, scale_decay=0.0)), 1e-6)  # the decay shows


# ---------------------------------------------------------------- the natural gradient's engine


def test_natural_gradient_refuses_a_damped_matrix_that_is_not_positive_definite():
    """The damped Hessian ``H + lam I`` of a case whose Hessian is indefinite has no
    Cholesky factor: refused with its smallest eigenvalue, from ``rp.hessian`` here."""
    H = rp.hessian(*CASE.args())
    for lam in (0.0, 0.1):
        smallest = np.linalg.eigvalsh(H + lam * np.eye(len(H)))[0]
        assert smallest < -0.1  # well below zero: the printed digits do not depend on rounding
        with pytest.raises(np.linalg.LinAlgError) as e:
            oq.run(CASE, "natural_gradient_direction", dict(curvature="hessian", damping=lam))
        assert str(e.value) == (f"natural gradient: the damped hessian matrix is not positive definite (smallest "
                                f"eigenvalue {smallest:.3e}); use a larger damping")


@pytest.mark.parametrize("name", ["natural_gradient_direction", "natural_gradient_step"])
def test_natural_gradient_state_ignored_bug(name):
    """The "state_ignored" neighbour of the natural gradient: the batch's matrix alone
    (``(F + lam I)^-1 g`` with ``F = rp.fisher``), where the reference averages it with the
    given matrix (a decay above 0: with the default 0 the two are the same)."""
    from test_optimizer_quantities import close, dense_run

    B = np.random.default_rng(3).standard_normal((CASE.n_params, CASE.n_params))
    o = dict(matrix=B @ B.T / CASE.n_params, updates=2, ema_decay=0.6, damping=0.1)
    got = oq.run(CASE, name, o, bugs=["state_ignored"])
    assert close(got, dense_run(CASE, name, o, bugs=["state_ignored"]))
    if name.endswith("direction"):  # written out: P g with P from the batch's Fisher alone
        F = rp.fisher(*CASE.args())
        assert close(got, np.linalg.solve(F + 0.1 * np.eye(len(F)), rp.grad(*CASE.args())))
    assert not close(got, oq.run(CASE, name, o), 1e-6)


# ---------------------------------------------------------------- run


@pytest.mark.parametrize("name", ["kfac_step", "ekfac_direction"])
def test_monte_carlo_fisher_from_a_given_state(name):
    """A state of factors under the Monte Carlo Fisher (its shapes checked against the
    case's K-FAC blocks of the same curvature and targets), against the dense computation."""
    from test_optimizer_quantities import close, dense_run

    case = cf.make_case("mlp-sigmoid-softplus-nobias", "mse-sum")  # an EKFAC that is unique
    factors = [(1.5 * S + 0.1 * np.eye(len(S)), A + 0.2 * np.eye(len(A)))
               for S, A in rp.kfac(*case.args(), curvature="mc_fisher", targets=case.targets).factors()]
    o = dict(curvature="mc_fisher", factors=factors, updates=2, damping=0.1)
    got = oq.run(case, name, o)
    assert close(got, dense_run(case, name, o))
    assert not close(got, oq.run(case, name, dict(o, curvature="fisher")), 1e-6)  # the targets show


def test_the_targets_callable_is_asked_only_for_monte_carlo_draws():
    """``targets(u, params, idx)`` gives the Monte Carlo targets of step ``u`` on the samples
    ``idx``: called once per step under ``curvature="mc_fisher"``, never otherwise."""
    case = cf.make_case("mlp-tanh", "mse-mean")
    calls = []

    def targets(u, params, idx):
        calls.append((u, list(idx)))
        return case.targets[:, idx]

    for name, o in (("kfac_steps", dict(k=3)), ("natural_gradient_step", {}), ("ekfac_direction", {})):
        calls.clear()
        oq.run(case, name, o, targets=targets)
        assert calls == []
    calls.clear()
    got = oq.run(case, "kfac_steps", dict(k=3, curvature="mc_fisher"), targets=targets)
    assert calls == [(1, [0]), (2, [1]), (3, [2])]  # 3 samples split in 3
    assert np.array_equal(got, oq.run(case, "kfac_steps", dict(k=3, curvature="mc_fisher")))


@pytest.mark.parametrize("name", ["kfac_step", "natural_gradient_step"])
def test_weight_decay_preconditioned_bug_keeps_the_monte_carlo_targets(name):
    """The "weight_decay_preconditioned" neighbour changes only what is preconditioned: the
    Monte Carlo Fisher is still the one of the case's targets (the dense computation)."""
    from test_optimizer_quantities import close, dense_run

    o = dict(curvature="mc_fisher", weight_decay=0.05, damping=0.1)
    got = oq.run(CASE, name, o, bugs=["weight_decay_preconditioned"])
    assert close(got, dense_run(CASE, name, o, bugs=["weight_decay_preconditioned"]))


def test_momentum_before_clip_bug_with_weight_decay():
    """"momentum_before_clip": ``buf = momentum buf + (d + weight_decay theta)``, then the
    clip of the buffer; with weight decay, against the dense computation."""
    from test_optimizer_quantities import close, dense_run

    st = _state(CASE, "kfac_step")
    o = dict(st, updates=2, buf=np.random.default_rng(5).standard_normal(CASE.n_params), kl_clip=1e-3, momentum=0.6,
             weight_decay=0.5, lr=0.3, damping=0.1)
    got = oq.run(CASE, "kfac_step", o, bugs=["momentum_before_clip"])
    assert close(got, dense_run(CASE, "kfac_step", o, bugs=["momentum_before_clip"]))
    assert not close(got, oq.run(CASE, "kfac_step", dict(o, weight_decay=0.0), bugs=["momentum_before_clip"]), 1e-6)


def test_clip_bugs_without_a_clip_change_nothing():
    """Without ``kl_clip`` (or with the clip removed by "no_kl_clip") the bugs of the clip have
    nothing to act on: the step is the unclipped one."""
    o = dict(weight_decay=0.5, momentum=0.6, lr=0.3)
    ref = oq.run(CASE, "kfac_step", o)
    for bug in ("kl_after_weight_decay", "kl_no_sqrt", "kl_lr_not_squared", "momentum_before_clip"):
        assert np.array_equal(oq.run(CASE, "kfac_step", o, bugs=[bug]), ref), bug
    o = dict(o, kl_clip=1e-3)
    unclipped = oq.run(CASE, "kfac_step", o, bugs=["no_kl_clip"])
    assert np.array_equal(unclipped, ref)
    for bug in ("kl_after_weight_decay", "kl_no_sqrt", "kl_lr_not_squared", "momentum_before_clip"):
        assert np.array_equal(oq.run(CASE, "kfac_step", o, bugs=["no_kl_clip", bug]), unclipped), bug


def test_a_diverging_step_raises_without_numpy_warnings():
    """A step whose parameters overflow raises DivergenceError naming the step and the case,
    and NumPy's overflow (and, where lr^2 overflows against exact zeros of the direction,
    invalid-value) warnings are not shown on the way: warnings are errors here."""
    import warnings

    case = cf.make_case("mlp-relu", "mse-mean")  # dead ReLU units: exact zeros in the direction
    d = oq.run(case, "kfac_direction", {})
    assert np.any(d == 0) and np.abs(d).max() > 2.0  # 1e308 |d| overflows, lr^2 = inf times 0 is NaN
    for name, lr, bugs in (("kfac_step", 1e308, ()), ("kfac_step", 1e200, ["lr_twice"]),
                           ("natural_gradient_step", 1e308, ()), ("kfac_steps", 1e200, ["lr_twice"])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(rp.DivergenceError) as e:
                oq.run(case, name, dict(lr=lr), bugs=bugs)
        assert str(e.value) == (f"optimizer quantity {name}: step 1 on case {case.name} diverged (parameters NaN or "
                                "inf); lower lr or raise damping")


@pytest.mark.parametrize("name", ["kfac_step", "natural_gradient_direction"])
def test_the_reference_built_for_the_table(name):
    """``_reference(name)`` (the table's entries are built at import, so it is called here
    again) is the quantity on the case with the options given: the dense computation."""
    from test_optimizer_quantities import close, dense_run

    ref = oq._reference(name)
    o = dict(damping=0.1, curvature="empirical_fisher")
    assert close(ref(CASE, o), dense_run(CASE, name, o))
    with pytest.raises(TypeError) as e:
        ref(CASE.args(), {})
    assert str(e.value) == f"optimizer quantity {name}: case must be a refprune.conformance.Case, got tuple"


@pytest.mark.parametrize("name", ["kfac_direction", "natural_gradient_direction"])
def test_neighbours_differ_relative_to_the_reference(name):
    """A neighbour is listed when it differs from refprune's value by more than ``rtol``
    times the reference's largest entry: relative, also for a reference far below 1 (a
    large damping makes the direction about g / lam)."""
    o = dict(damping=100.0)
    ref = oq.run(CASE, name, o)
    scale = np.abs(ref).max()
    assert scale < 0.01
    every = oq.neighbours(CASE, name, o, rtol=0)
    rtol = 0.005
    want = [d for d, a in every if np.abs(a - ref).max() > rtol * scale]
    assert 0 < len(want) < len(every)
    assert any(np.abs(a - ref).max() <= rtol for d, a in every if d in want)  # listed, though below rtol itself
    assert [d for d, _ in oq.neighbours(CASE, name, o, rtol=rtol)] == want


@pytest.mark.parametrize("name, bugs", [("kfac_direction", ["damping_not_sqrt", "pi_unnormalised", "empirical_fisher"]),
                                        ("natural_gradient_direction", ["empirical_fisher", "hessian",
                                                                        "other_structure"])])
def test_bug_neighbours_under_the_options_given(name, bugs):
    """The planted bugs that change K-FAC's direction (damping form 'pi', damping > 0) and
    the natural gradient's (Fisher, whole matrix) on an MLP, in the table's order, each
    computed under the options given (damping 100, not the default), against the dense
    computation with the same bug.  The averages' bugs do not change a first step from the
    start, and expand and reduce are the same for Linear layers."""
    from test_optimizer_quantities import close, dense_run

    o = dict(damping=100.0)
    descs = {oq.NEIGHBOUR_BUGS[b][0]: b for b in bugs}
    every_bug = {desc for desc, _ in oq.NEIGHBOUR_BUGS.values()}  # not the forms and starts
    got = [(d, a) for d, a in oq.neighbours(CASE, name, o, rtol=0) if d in every_bug]
    assert [descs.get(d) for d, _ in got] == bugs
    for d, a in got:
        assert close(a, dense_run(CASE, name, o, bugs=[descs[d]])), descs[d]


def test_a_neighbour_that_cannot_be_computed_is_left_out_alone():
    """The Hessian in place of the Fisher has no Cholesky factor on this case (smallest
    eigenvalue of H + lam I about -0.77): that neighbour is left out, the later ones are not."""
    assert np.linalg.eigvalsh(rp.hessian(*CASE.args()))[0] < -0.1
    with pytest.raises(np.linalg.LinAlgError):
        oq.run(CASE, "natural_gradient_direction", {}, bugs=["hessian"])
    got = [d for d, _ in oq.neighbours(CASE, "natural_gradient_direction")]
    assert oq.NEIGHBOUR_BUGS["hessian"][0] not in got
    assert oq.NEIGHBOUR_BUGS["other_structure"][0] in got
