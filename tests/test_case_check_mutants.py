"""refprune.conformance.check_case against its docstring: one case only (the function is
called once, on that case), the variant named by ``options`` compared with refprune's
variant, ``rtol`` per quantity, the refusals word for word, the message of a failure
(every failing quantity, separated by a blank line, the implementation's exception as
the cause) and of a quantity compared nowhere, and pytest's traceback without the
function's own frame."""

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.conformance.harness import QUANTITIES
from refprune.conformance.pruning_quantities import EKFAC_NOT_UNIQUE

pytest_plugins = ["pytester"]

KNOWN = sorted(QUANTITIES)


def _case():
    return cf.make_case("mlp-tanh", "mse-mean")


def _loss(c):
    return rp.loss(*c.args())


def _sym():
    """One Linear layer on four symmetric points: K-FAC's A = diag(1/2, 1/2, 1) has a repeated
    eigenvalue (EKFAC not unique) and no unit can be removed (one affine layer)."""
    m = rp.Sequential(rp.Linear(2, 2))
    X = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    return cf.Case("sym", m, m.init(0), X, np.array([0, 1, 1, 0]), rp.CrossEntropyLoss())


# ---------------------------------------------------------------- what is run

def test_the_function_runs_once_on_the_case_given():
    case, seen = _case(), []

    def loss(c):
        seen.append(c)
        return _loss(c)

    report = cf.check_case(loss, case, quantity="loss")
    assert len(seen) == 1 and seen[0].name == case.name and report.ok
    assert [(r.name, r.cases) for r in report.results] == [("loss", 1)]


def test_an_adapter_checks_the_quantities_named_and_keeps_its_own():
    case = _case()
    called = []
    adapter = cf.Adapter(loss=lambda c: called.append("loss") or _loss(c),
                         grad=lambda c: called.append("grad") or rp.grad(*c.args()),
                         hessian=lambda c: called.append("hessian") or 0 * rp.hessian(*c.args()))
    before_q, before_o = dict(adapter.quantities), {k: dict(v) for k, v in adapter.options.items()}
    for quantity, want in [("grad", ["grad"]), (["loss", "grad"], ["loss", "grad"]), (("loss",), ["loss"])]:
        called.clear()
        report = cf.check_case(adapter, case, quantity=quantity)
        assert [r.name for r in report.results] == want == called and report.ok
    assert adapter.quantities == before_q and adapter.options == before_o


def test_options_select_the_variant_compared():
    # K-FAC with the bias kept apart: the function computes it, options say so (docs/conventions.md §4)
    case = _case()

    def separate(c):
        return rp.blocks_to_flat(c.model, rp.kfac(*c.args(), bias="separate").factors(),
                                bias="separate")

    def folded(c):
        return rp.blocks_to_flat(c.model, rp.kfac(*c.args()).factors())

    assert not np.allclose(separate(case), folded(case))  # the two variants differ on this case
    assert cf.check_case(separate, case, quantity="kfac", options={"bias": "separate"}).ok
    assert cf.check_case(folded, case, quantity="kfac").ok
    assert cf.check_case(folded, case, quantity="kfac", options={}).ok
    with pytest.raises(AssertionError, match="kfac on case"):
        cf.check_case(separate, case, quantity="kfac")
    with pytest.raises(AssertionError, match="kfac on case"):
        cf.check_case(folded, case, quantity="kfac", options={"bias": "separate"})


def test_rtol_is_the_tolerance_of_each_quantity_checked():
    case = _case()
    off = lambda c: _loss(c) * (1 + 1e-6)  # noqa: E731  a relative error of 1e-6
    with pytest.raises(AssertionError, match=r"loss on case mlp-tanh/mse-mean \(rtol 1e-09\)"):
        cf.check_case(off, case, quantity="loss")
    assert cf.check_case(off, case, quantity="loss", rtol=1e-5).ok
    assert cf.check_case(off, case, quantity="loss", rtol=np.float64(1e-5)).ok
    adapter = cf.Adapter(loss=off, grad=lambda c: rp.grad(*c.args()))
    assert cf.check_case(adapter, case, quantity="loss", rtol={"loss": 1e-5, "grad": 0.0}).ok
    report = cf.check_case(adapter, case, rtol={"loss": 1e-5})
    assert [(r.name, r.tolerance) for r in report.results] == [("loss", 1e-5), ("grad", 1e-9)]
    with pytest.raises(AssertionError, match=r"loss on case mlp-tanh/mse-mean \(rtol 1e-07\)"):
        cf.check_case(adapter, case, rtol={"loss": 1e-7})


# ---------------------------------------------------------------- refusals, word for word

KINDS = ("a zoo case (refprune.conformance.zoo(), make_case, build_case), the pytest plugin's refprune_case or a "
         "draw of refprune.testing.strategies.cases()")


def _refusal(call, exc, message):
    with pytest.raises(exc) as err:
        call()
    assert str(err.value) == message


def test_refusals_name_what_was_given_and_what_is_accepted():
    case = _case()
    ad = cf.Adapter(loss=_loss, grad=lambda c: rp.grad(*c.args()))
    _refusal(lambda: cf.check_case(_loss, tuple(case.args()), quantity="loss"), TypeError,
             f"check_case: case must be a refprune.conformance.Case ({KINDS}), got tuple")
    _refusal(lambda: cf.check_case(ad, case, options={}), ValueError,
             "check_case: options apply to a function; an Adapter holds its own (give them as "
             "Adapter(options={quantity: {...}}))")
    _refusal(lambda: cf.check_case(ad, case, rtol={1: 0.1, "zz": 0.1, "loss": 0.1}), ValueError,
             "check_case: rtol names [1, 'zz'], which the adapter does not compute; its quantities: ['grad', 'loss']")
    _refusal(lambda: cf.check_case(_loss, case), TypeError,
             f"check_case: give quantity=, the name of what the function computes, one of {KNOWN}")
    _refusal(lambda: cf.check_case(_loss, case, quantity=("loss",)), TypeError,
             "check_case: a function computes one quantity; quantity must be a name (str), got tuple ('loss',) "
             "(several: give an Adapter)")
    _refusal(lambda: cf.check_case(_loss, case, quantity="Loss"), ValueError,
             f"check_case: unknown quantity 'Loss'; known: {KNOWN}")
    _refusal(lambda: cf.check_case(_loss, case, quantity="kfac", options=[("bias", "fold")]), TypeError,
             "check_case: options must be a dict {option: value} of kfac, got list")
    _refusal(lambda: cf.check_case("loss", case, quantity="loss"), TypeError,
             "check_case: implementation must be a refprune.conformance.Adapter or a function taking a Case, got str")
    for rtol in ("1e-6", [1e-6], 1e-6j):
        _refusal(lambda: cf.check_case(_loss, case, quantity="loss", rtol=rtol), TypeError,
                 f"check_case: rtol must be a real number in [0, 1) or a dict of them per quantity, got "
                 f"{type(rtol).__name__} {rtol!r}")
    for quantity in ([], {"loss"}, ["loss", 3], 3):
        _refusal(lambda: cf.check_case(ad, case, quantity=quantity), TypeError,
                 f"check_case: quantity must be a name or a non-empty list of names of the adapter's quantities "
                 f"['grad', 'loss'], got {quantity!r}")
    _refusal(lambda: cf.check_case(ad, case, quantity=["grad", "hessian", "kfac"]), ValueError,
             "check_case: quantity ['hessian', 'kfac'] is not computed by the adapter; it has ['grad', 'loss']")


# ---------------------------------------------------------------- failures and quantities compared nowhere

def test_every_failing_quantity_is_in_the_message_and_an_exception_is_the_cause():
    case = _case()
    boom = KeyError("no such key")

    def raising(c):
        raise boom

    ad = cf.Adapter(loss=lambda c: 2 * _loss(c), grad=lambda c: rp.grad(*c.args()), hvp=raising)
    with pytest.raises(AssertionError) as err:
        cf.check_case(ad, case)
    text = str(err.value)
    parts = text.split("\n\n")
    assert text.startswith("conformance with refprune failed: loss on case mlp-tanh/mse-mean (rtol 1e-09)\n")
    heads = [p.split("\n")[0] for p in parts if " on case mlp-tanh/mse-mean (rtol " in p.split("\n")[0]]
    assert heads == ["conformance with refprune failed: loss on case mlp-tanh/mse-mean (rtol 1e-09)",
                     "hvp on case mlp-tanh/mse-mean (rtol 1e-09)"]
    assert "relative error 1.000e+00" in text and "the adapter raised KeyError" in text
    assert err.value.__cause__ is boom
    # no exception of the implementation: no cause
    with pytest.raises(AssertionError) as err:
        cf.check_case(lambda c: 2 * _loss(c), case, quantity="loss")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_quantities_compared_nowhere_raise_not_compared_naming_each():
    case = _sym()
    ad = cf.Adapter(ekfac=lambda c: rp.ekfac(*c.args()).to_dense(), kron_obd_saliencies=lambda c: 0.0,
                    loss=_loss)
    ekfac_why = EKFAC_NOT_UNIQUE
    with pytest.raises(cf.NotCompared) as err:
        cf.check_case(ad, case)
    assert str(err.value) == (f"ekfac is not compared on case sym: {ekfac_why}; kron_obd_saliencies is not compared "
                              "on case sym: no unit can be removed: the network has one Linear/Conv2d layer (the "
                              "last one keeps its outputs)")


def test_pytest_shows_the_callers_line_not_check_cases_frame(pytester):
    pytester.makepyfile(test_user="""
import refprune as rp
from refprune import conformance as cf

def test_wrong():
    cf.check_case(lambda c: 2 * rp.loss(*c.args()), cf.make_case("linear", "mse-sum"), quantity="loss")
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--tb=long")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "cf.check_case(lambda c: 2 * rp.loss" in text and "conformance with refprune failed: loss" in text
    assert '"\\n\\n".join(parts)' not in text and "failed = [r for r in report.results" not in text
