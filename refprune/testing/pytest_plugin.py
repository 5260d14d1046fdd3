"""pytest plugin: every conformance case is its own test item.

Installed with refprune (the ``pytest11`` entry point ``refprune`` in ``setup.cfg``),
so pytest loads it in every run; it does nothing until a test asks for one of its
fixtures.  Without installing: ``pytest -p refprune.testing.pytest_plugin``, or
``pytest_plugins = ["refprune.testing.pytest_plugin"]`` in a top-level ``conftest.py``.

Fixtures
--------
``refprune_case``
    A test that takes it (directly or through its fixtures) runs once per case of
    :func:`refprune.conformance.zoo` (42 cases, smallest network first), each its own item
    with the case's name as id: ``test_grad[linear/ce-mean]``.  So ``-k conv``,
    ``-k "ce-mean and not relu"``, ``--lf``, ``-x`` and ``--sw`` reach single cases.
    Each item gets its own copy of the case: a test that changes it changes no other.
    A test that parametrizes ``refprune_case`` itself keeps its own values.
``refprune_check``
    :func:`refprune.conformance.check_case` as a fixture:
    ``refprune_check(my_grad, refprune_case, quantity="grad")`` (or an ``Adapter``,
    ``rtol=``, ``options=``).  A difference fails the item with the harness's diagnosis
    (the convention or neighbouring quantity that reproduces the other result); a
    quantity not defined on the case (an EKFAC with a repeated eigenvalue) skips it.

Marker
------
``@pytest.mark.refprune(architectures=[...], losses=[...])`` keeps the cases of the
named zoo architectures (``refprune.conformance.ARCHITECTURES``; ``"drawn"`` for the
drawn cases) and losses (``refprune.conformance.LOSSES``: ``"ce-mean"``, ...), e.g. for
an implementation that has only cross-entropy.  A name it does not know is refused.

Options (command line, or the ini keys in ``pytest.ini``, ``pyproject.toml``'s
``[tool.pytest.ini_options]`` or ``setup.cfg``'s ``[tool:pytest]``)
-------------------------------------------------------------------------------------
``--refprune-drawn=N``, ini ``refprune_drawn``
    Add ``N`` random networks (:func:`refprune.conformance.drawn_zoo`: MLPs and convnets
    with random activations, strides, paddings, poolings and losses) after the zoo, with
    the ids ``drawn-<i>/<loss>``; default 0.  The same ``N`` and seed give the same
    cases and ids in every run, so ``--lf`` finds them again.
``--refprune-seed=S``, ini ``refprune_seed``
    The seed of the drawn cases; default 0.  Refused when no case is drawn (``N`` = 0).

The command line wins over the ini file.  A value that is not a non-negative integer
is a usage error (pytest exits with status 4 and names the option).  With ``N > 0`` the
run's header says which cases were drawn.

This module imports only pytest; the zoo is built on the first test that asks for it.
"""

import copy

import pytest

_SETTINGS = pytest.StashKey[dict]()
_CASES = pytest.StashKey[dict]()
_MARKER = "refprune"
#: the pseudo-architecture that selects the drawn cases in the marker
_DRAWN = "drawn"


def pytest_addoption(parser):
    """The options ``--refprune-drawn``, ``--refprune-seed`` and their ini keys."""
    # pytest names each option's dest after it (refprune_drawn, refprune_seed), reads None
    # for an option not given and "" for an ini key not set: settings() tells these apart
    group = parser.getgroup("refprune", "refprune conformance cases (refprune_case fixture)")
    group.addoption("--refprune-drawn", metavar="N",
                    help="add N drawn cases (refprune.conformance.drawn_zoo) to refprune_case; default 0 "
                         "(ini: refprune_drawn)")
    group.addoption("--refprune-seed", metavar="S",
                    help="seed of the drawn cases; default 0; needs --refprune-drawn > 0 (ini: refprune_seed)")
    parser.addini("refprune_drawn", "number of drawn cases added to refprune_case (default 0)")
    parser.addini("refprune_seed", "seed of the drawn cases of refprune_case (default 0)")


def parse_count(value, where):
    """``value`` (an option's text or an int) as an integer ``>= 0``; anything else is a
    ``pytest.UsageError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise pytest.UsageError(f"{where} must be a non-negative integer, got {type(value).__name__} {value!r}")
    text = value.strip() if isinstance(value, str) else str(value)
    if not (text.isascii() and text.isdigit()):  # refuses "-1", "1.5", "1e3", "" and "+2"
        raise pytest.UsageError(f"{where} must be a non-negative integer, got {value!r}")
    return int(text)


def settings(config):
    """``{"drawn": N, "seed": S}`` from the command line, else the ini file, checked."""
    out = {}
    for key, flag in (("drawn", "--refprune-drawn"), ("seed", "--refprune-seed")):
        cli, ini = config.getoption(f"refprune_{key}"), config.getini(f"refprune_{key}")
        if cli is not None:
            out[key], out[key + "_from"] = parse_count(cli, flag), flag
        elif str(ini).strip():
            out[key], out[key + "_from"] = parse_count(ini, f"ini option refprune_{key}"), f"ini option refprune_{key}"
        else:
            out[key], out[key + "_from"] = 0, None
    if out["seed_from"] is not None and out["drawn"] == 0:  # a seed of nothing: refused, not ignored
        raise pytest.UsageError(f"{out['seed_from']} sets the seed of the drawn cases, but none are drawn "
                                "(--refprune-drawn / ini refprune_drawn is 0); give both or neither")
    return {"drawn": out["drawn"], "seed": out["seed"]}


def pytest_configure(config):
    """Register the ``refprune`` marker; read and check the options (a usage error here,
    before any test runs)."""
    config.addinivalue_line("markers", f"{_MARKER}(architectures=None, losses=None): the refprune_case cases of "
                                       "these zoo architectures ('drawn': the drawn cases) and losses")
    config.stash[_SETTINGS] = settings(config)


def pytest_report_header(config):
    """With drawn cases: how many and their seed (to rerun the same ones)."""
    s = config.stash.get(_SETTINGS, None)
    if s and s["drawn"]:
        return (f"refprune: refprune_case adds {s['drawn']} drawn cases (refprune.conformance.drawn_zoo, "
                f"seed {s['seed']})")
    return None


#: ``{(drawn, seed): {name: Case}}``, for the process: the cases never leave it (each
#: test item gets a copy), so runs in one process (pytester's) build them once
_BUILT = {}


def _all_cases(config):
    """``{name: Case}``: the zoo, then the drawn cases, in their order (smallest first)."""
    cases = config.stash.get(_CASES, None)
    if cases is None:
        s = config.stash[_SETTINGS]
        key = (s["drawn"], s["seed"])
        if key not in _BUILT:
            from ..conformance import drawn_zoo, zoo

            found = zoo() + (drawn_zoo(s["drawn"], seed=s["seed"]) if s["drawn"] else [])
            _BUILT[key] = {c.name: c for c in found}
        cases = config.stash[_CASES] = _BUILT[key]
    return cases


def _selected(names, marker):
    """The names the ``refprune`` marker keeps (all without a marker)."""
    if marker is None:
        return names
    from ..conformance import ARCHITECTURES, LOSSES

    where = f"@pytest.mark.{_MARKER}"
    if marker.args:
        raise ValueError(f"{where} takes keywords architectures= and losses=, got positional {marker.args!r}")
    unknown = sorted(set(marker.kwargs) - {"architectures", "losses"})
    if unknown:
        raise ValueError(f"{where}: unknown keywords {unknown}; it takes architectures= and losses=")
    keep = {}
    for key, known in (("architectures", tuple(ARCHITECTURES) + (_DRAWN,)), ("losses", tuple(LOSSES))):
        given = marker.kwargs.get(key)
        if given is None:
            continue
        if isinstance(given, str) or not isinstance(given, (list, tuple)) or not given:
            raise ValueError(f"{where}: {key} must be a non-empty list of names from {known}, got {given!r}")
        bad = [g for g in given if g not in known]
        if bad:
            raise ValueError(f"{where}: {key} {bad} not known; choose from {known}")
        keep[key] = set(given)

    def arch(name):
        a = name.split("/")[0]
        return _DRAWN if a.startswith(_DRAWN + "-") else a

    return [n for n in names if arch(n) in keep.get("architectures", {arch(n)})
            and n.split("/")[1] in keep.get("losses", {n.split("/")[1]})]


def pytest_generate_tests(metafunc):
    """Parametrize a test that needs ``refprune_case`` over the cases' names (only
    such tests: any other test is left as it is)."""
    if "refprune_case" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [x.strip() for x in names.split(",")]
        if "refprune_case" in names:  # the test brings its own cases
            return
    names = _selected(list(_all_cases(metafunc.config)), metafunc.definition.get_closest_marker(_MARKER))
    if not names:  # only drawn cases were asked for, and none (of those losses) are drawn: a visible skip
        drawn = metafunc.config.stash[_SETTINGS]["drawn"]
        reason = (f"@pytest.mark.{_MARKER}: none of the {drawn} drawn cases (--refprune-drawn, ini refprune_drawn) "
                  "has the architecture and loss asked for")
        metafunc.parametrize("refprune_case", [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
                             indirect=True, ids=["no-drawn-case"])
        return
    metafunc.parametrize("refprune_case", names, indirect=True, ids=names)


@pytest.fixture
def refprune_case(request):
    """One conformance case (``refprune.conformance.Case``) per test item; see the module."""
    name = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError("refprune_case is parametrized when a test or its fixtures name it as an argument; "
                                "request.getfixturevalue('refprune_case') cannot be")
    return copy.deepcopy(_all_cases(request.config)[name])


@pytest.fixture
def refprune_check():
    """``check(implementation, case, quantity=None, rtol=None, options=None)``:
    :func:`refprune.conformance.check_case`, with a case on which the quantity is not
    compared skipped."""
    from ..conformance import NotCompared, check_case

    def check(implementation, case, quantity=None, rtol=None, options=None):
        __tracebackhide__ = True
        try:
            return check_case(implementation, case, quantity=quantity, rtol=rtol, options=options)
        except NotCompared as why:
            pytest.skip(f"refprune: {why}")

    return check
