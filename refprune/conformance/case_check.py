"""One case at a time: :func:`check_case` compares another implementation with refprune
on a single :class:`~refprune.conformance.zoo.Case`, for a test item per case (the pytest
plugin's ``refprune_case``, a ``@given(cases())`` draw), where :func:`check` runs a whole
list of cases in one call.

A difference raises ``AssertionError`` whose message is the harness's explanation of the
case: the relative error, the diagnosis (the neighbouring quantity or convention that
reproduces the other result; ``docs/conventions.md`` §9a) and the conventions compared.
"""

import copy

from ..scalars import is_number
from .harness import QUANTITIES, Adapter, check
from .pruning_quantities import NotCompared
from .zoo import Case

_CASE_KINDS = ("a zoo case (refprune.conformance.zoo(), make_case, build_case), the pytest plugin's refprune_case "
               "or a draw of refprune.testing.strategies.cases()")


def check_case(implementation, case, quantity=None, rtol=None, options=None):
    """Compare ``implementation`` with refprune on ``case``; raise ``AssertionError``
    with the diagnosis if they differ.

    Parameters
    ----------
    implementation : Adapter or callable
        An :class:`~refprune.conformance.Adapter`, or one function taking a ``Case``
        and returning the quantity named by ``quantity``.
    case : Case
    quantity : str or list of str, optional
        With a function: the quantity it computes (required, a key of
        :data:`~refprune.conformance.QUANTITIES`).  With an ``Adapter``: the ones of its
        quantities to check (default all), e.g. one per parametrized test.
    rtol : float or dict, optional
        As in :func:`~refprune.conformance.check` (default ``1e-9``); a dict may name
        any quantity of the adapter, the ones not checked here are left aside.
    options : dict, optional
        With a function: the variant of its quantity (``{option: value}``, as
        ``Adapter(options={quantity: ...})``).  An ``Adapter`` holds its own options,
        so ``options`` is refused with one.

    Returns
    -------
    Report
        The harness's report for this one case, when every quantity agrees.

    Raises
    ------
    AssertionError
        A quantity differs (its message: the case, the relative error, the diagnosis,
        the conventions), the result is not a real array, or the implementation raised
        (that exception is the ``__cause__``, so its traceback is shown).
    NotCompared
        A quantity is not defined or not unique on this case (an EKFAC with a repeated
        eigenvalue, a singular damped curvature): nothing was checked.  The pytest
        plugin's ``refprune_check`` skips the test item then.
    """
    __tracebackhide__ = True  # pytest shows the test's line, not this function's
    if not isinstance(case, Case):
        raise TypeError(f"check_case: case must be a refprune.conformance.Case ({_CASE_KINDS}), got "
                        f"{type(case).__name__}")
    if isinstance(implementation, Adapter):
        if options is not None:
            raise ValueError("check_case: options apply to a function; an Adapter holds its own (give them as "
                             "Adapter(options={quantity: {...}}))")
        names = list(implementation.quantities) if quantity is None else _names(quantity, implementation)
        adapter = copy.copy(implementation)  # check reads only .quantities and .options; the caller's is untouched
        adapter.quantities = {q: implementation.quantities[q] for q in names}
        adapter.options = {q: implementation.options[q] for q in names}
        if isinstance(rtol, dict):
            unknown = sorted(set(rtol) - set(implementation.quantities), key=str)
            if unknown:
                raise ValueError(f"check_case: rtol names {unknown}, which the adapter does not compute; its "
                                 f"quantities: {sorted(implementation.quantities)}")
            rtol = {q: t for q, t in rtol.items() if q in names}
    elif callable(implementation):
        if quantity is None:
            raise TypeError(f"check_case: give quantity=, the name of what the function computes, one of "
                            f"{sorted(QUANTITIES)}")
        if not isinstance(quantity, str):
            raise TypeError(f"check_case: a function computes one quantity; quantity must be a name (str), got "
                            f"{type(quantity).__name__} {quantity!r} (several: give an Adapter)")
        if quantity not in QUANTITIES:
            raise ValueError(f"check_case: unknown quantity {quantity!r}; known: {sorted(QUANTITIES)}")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"check_case: options must be a dict {{option: value}} of {quantity}, got "
                            f"{type(options).__name__}")
        adapter = Adapter(options=None if options is None else {quantity: options}, **{quantity: implementation})
    else:
        raise TypeError(f"check_case: implementation must be a refprune.conformance.Adapter or a function taking a "
                        f"Case, got {type(implementation).__name__}")
    if rtol is not None and not isinstance(rtol, dict) and not is_number(rtol):
        raise TypeError(f"check_case: rtol must be a real number in [0, 1) or a dict of them per quantity, got "
                        f"{type(rtol).__name__} {rtol!r}")

    raised = {}

    def keeping_exception(name, fn):
        # the harness turns an exception into a failure; kept here so that it becomes the
        # AssertionError's cause and its traceback is shown
        def call(c):
            try:
                return fn(c)
            except Exception as err:
                raised[name] = err
                raise
        return call

    adapter.quantities = {q: keeping_exception(q, fn) for q, fn in adapter.quantities.items()}
    report = check(adapter, cases=[case], rtol=rtol)
    failed = [r for r in report.results if r.failures]
    if failed:
        parts = []
        for r in failed:
            f = r.failures[0]
            parts.append(f"{r.name} on case {case.name} (rtol {r.tolerance:.0e})\n{f.explain()}")
        cause = next((raised[r.name] for r in failed if r.name in raised), None)
        raise AssertionError("conformance with refprune failed: " + "\n\n".join(parts)) from cause
    skipped = [r for r in report.results if r.skipped]
    if skipped:
        raise NotCompared("; ".join(f"{r.name} is not compared on case {case.name}: {r.skipped[0][1]}"
                                    for r in skipped))
    return report


def _names(quantity, adapter):
    """``quantity`` (a name or a list of names) as a list of the adapter's quantities."""
    names = [quantity] if isinstance(quantity, str) else quantity
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(q, str) for q in names):
        raise TypeError(f"check_case: quantity must be a name or a non-empty list of names of the adapter's "
                        f"quantities {sorted(adapter.quantities)}, got {quantity!r}")
    missing = [q for q in names if q not in adapter.quantities]
    if missing:
        raise ValueError(f"check_case: quantity {missing} is not computed by the adapter; it has "
                         f"{sorted(adapter.quantities)}")
    return list(names)
