"""The pytest plugin (``refprune/testing/pytest_plugin.py``) against its module docstring,
piece by piece: the ``--help`` text of its options and ini keys, the ``--markers`` line,
``parse_count`` against a regular expression over every short text, ``settings`` against
the rule "command line, else ini file, else 0" over every combination, the run's header,
the cases it builds (the zoo, then ``drawn_zoo``), the marker's selection against the
zoo's own tables and its exact refusals, and the parametrize forms a test can use to
bring its own cases."""

import itertools
import re

import pytest

from refprune import conformance as cf
from refprune.testing import pytest_plugin as pp
from refprune.testing.pytest_plugin import parse_count

pytest_plugins = ["pytester"]

PLUGIN = "refprune.testing.pytest_plugin"


@pytest.fixture
def inproc(pytester, monkeypatch):
    """``inproc(*args, source=None, ini=None)``: pytest run in this process with only the
    plugin loaded (entry points off), on ``test_user.py`` if ``source`` is given."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run(*args, source=None, ini=None):
        if source is not None:
            pytester.makepyfile(test_user=source)
        if ini is not None:
            pytester.makeini(f"[pytest]\n{ini}\n")
        return pytester.runpytest_inprocess("-p", PLUGIN, *args)

    return run


# ---------------------------------------------------------------- --help and --markers

HEADING = "refprune conformance cases (refprune_case fixture):"


def _entries(lines, start):
    """``{first column: text}`` of an argparse-formatted block (entries indented by two
    spaces, their continuations by more), from ``lines[start]`` to the next blank line."""
    out, key = {}, None
    for line in lines[start:]:
        if not line.strip():
            break
        m = re.match(r"^  (\S.*?)(?:\s{2,}(.*))?$", line)
        if m and not line.startswith("   "):
            key = m.group(1).rstrip(":")
            out[key] = m.group(2) or ""
        else:
            out[key] = (out[key] + " " + line.strip()).strip()
    return out


def test_help_shows_the_options_group_and_ini_keys_of_the_module_docstring(inproc):
    lines = inproc("--help").stdout.lines
    # the group: its heading (the group's description) and the two options with the
    # metavars N and S of the docstring ("--refprune-drawn=N", "--refprune-seed=S")
    (at,) = [i for i, line in enumerate(lines) if line == HEADING]
    assert _entries(lines, at + 1) == {
        "--refprune-drawn=N": "add N drawn cases (refprune.conformance.drawn_zoo) to refprune_case; default 0 "
                              "(ini: refprune_drawn)",
        "--refprune-seed=S": "seed of the drawn cases; default 0; needs --refprune-drawn > 0 (ini: refprune_seed)"}
    # the ini keys: strings (the docstring's "a value that is not a non-negative integer is a usage error"
    # is the plugin's check, not pytest's), with their default
    (ini_at,) = [i for i, line in enumerate(lines) if line.startswith("[pytest] configuration options")]
    ini = _entries(lines, ini_at + 2)
    assert ini["refprune_drawn (string)"] == "number of drawn cases added to refprune_case (default 0)"
    assert ini["refprune_seed (string)"] == "seed of the drawn cases of refprune_case (default 0)"


def test_another_plugins_options_join_the_refprune_group(inproc, pytester):
    # a conftest that adds an option to the group named "refprune": it is listed under the
    # plugin's heading, not under a new group of that name
    pytester.makeconftest("def pytest_addoption(parser):\n"
                          "    parser.getgroup('refprune').addoption('--my-extra', help='an extra option')\n")
    lines = inproc("--help").stdout.lines
    (at,) = [i for i, line in enumerate(lines) if line == HEADING]
    assert list(_entries(lines, at + 1)) == ["--refprune-drawn=N", "--refprune-seed=S", "--my-extra=MY_EXTRA"]
    assert not any(line == "refprune:" for line in lines)


def test_the_marker_is_registered_with_its_signature(inproc):
    out = inproc("--markers").stdout.lines
    assert ("@pytest.mark.refprune(architectures=None, losses=None): the refprune_case cases of these zoo "
            "architectures ('drawn': the drawn cases) and losses") in out
    # registered: --strict-markers accepts it
    src = "import pytest\n\n@pytest.mark.refprune(losses=['ce-sum'])\ndef test_x(refprune_case):\n    pass\n"
    result = inproc("--strict-markers", "-k", "linear", source=src)
    result.assert_outcomes(passed=1)


# ---------------------------------------------------------------- parse_count

def _count_rule(text):
    """The docstring's rule by a regular expression: the stripped text is ASCII digits only."""
    m = re.fullmatch(r"[0-9]+", text.strip())
    return int(m.group(0)) if m else None


def test_parse_count_against_a_regular_expression_on_every_short_text():
    alphabet = ["0", "1", "7", "-", "+", ".", "e", " ", "\u0663", "\u00b2", "x", "\t"]
    for n in range(4):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            want = _count_rule(text)
            if want is None:
                with pytest.raises(pytest.UsageError) as err:
                    parse_count(text, "--opt")
                assert str(err.value) == f"--opt must be a non-negative integer, got {text!r}"
            else:
                got = parse_count(text, "--opt")
                assert got == want and type(got) is int, text


def test_parse_count_takes_ints_and_names_the_type_of_anything_else():
    for value in (0, 3, 12):
        got = parse_count(value, "ini option refprune_drawn")
        assert got == value and type(got) is int
    for value in (True, False, 2.0, None, b"3", [1]):
        with pytest.raises(pytest.UsageError) as err:
            parse_count(value, "--w")
        assert str(err.value) == f"--w must be a non-negative integer, got {type(value).__name__} {value!r}"


# ---------------------------------------------------------------- settings and the header

class _Config:
    """The parts of ``pytest.Config`` the plugin reads: options, ini values, a stash."""

    def __init__(self, cli=(None, None), ini=("", "")):
        self._cli = dict(zip(("refprune_drawn", "refprune_seed"), cli))
        self._ini = dict(zip(("refprune_drawn", "refprune_seed"), ini))
        self.stash = pytest.Stash()

    def getoption(self, name):
        return self._cli[name]

    def getini(self, name):
        return self._ini[name]


def test_settings_take_the_command_line_else_the_ini_file_else_zero():
    # every combination of "not given", the command line and the ini file for both options
    cli_values, ini_values = (None, "0", " 3 "), ("", "  ", "0", "2")
    for cd, cs, idr, isd in itertools.product(cli_values, cli_values, ini_values, ini_values):
        def pick(cli, ini, flag, key):
            if cli is not None:
                return int(cli), flag
            if ini.strip():
                return int(ini), f"ini option refprune_{key}"
            return 0, None
        drawn, _ = pick(cd, idr, "--refprune-drawn", "drawn")
        seed, seed_from = pick(cs, isd, "--refprune-seed", "seed")
        config = _Config((cd, cs), (idr, isd))
        if seed_from is not None and drawn == 0:
            with pytest.raises(pytest.UsageError) as err:
                pp.settings(config)
            assert str(err.value) == (f"{seed_from} sets the seed of the drawn cases, but none are drawn "
                                      "(--refprune-drawn / ini refprune_drawn is 0); give both or neither")
        else:
            assert pp.settings(config) == {"drawn": drawn, "seed": seed}, (cd, cs, idr, isd)


def test_a_bad_value_is_refused_naming_where_it_came_from():
    with pytest.raises(pytest.UsageError, match=r"^--refprune-drawn must be a non-negative integer, got '1e3'$"):
        pp.settings(_Config(("1e3", None)))
    with pytest.raises(pytest.UsageError, match=r"^ini option refprune_drawn must be a non-negative integer, "
                                                r"got 'two'$"):
        pp.settings(_Config(ini=("two", "")))
    with pytest.raises(pytest.UsageError, match=r"^--refprune-seed must be a non-negative integer, got 'x'$"):
        pp.settings(_Config(("2", "x")))
    with pytest.raises(pytest.UsageError, match=r"^ini option refprune_seed must be a non-negative integer, "
                                                r"got '-1'$"):
        pp.settings(_Config(("2", None), ("", "-1")))


def test_the_header_names_the_drawn_cases_only_when_there_are_some(inproc):
    config = _Config()
    assert pp.pytest_report_header(config) is None  # nothing in the stash yet
    config.stash[pp._SETTINGS] = {"drawn": 0, "seed": 0}
    assert pp.pytest_report_header(config) is None
    config.stash[pp._SETTINGS] = {"drawn": 3, "seed": 7}
    assert pp.pytest_report_header(config) == ("refprune: refprune_case adds 3 drawn cases "
                                               "(refprune.conformance.drawn_zoo, seed 7)")
    # and in a run: no refprune line in the header without drawn cases
    result = inproc("--co", source="def test_plain():\n    pass\n")
    assert not any(line.startswith("refprune") for line in result.stdout.lines)


# ---------------------------------------------------------------- the cases

def test_the_cases_are_the_zoo_then_the_drawn_ones_built_once(monkeypatch):
    monkeypatch.setattr(pp, "_BUILT", {})  # built here, not taken from an earlier run of this process
    zoo = [c.name for c in cf.zoo()]
    plain = _Config()
    plain.stash[pp._SETTINGS] = {"drawn": 0, "seed": 0}
    cases = pp._all_cases(plain)
    assert list(cases) == zoo and all(isinstance(c, cf.Case) and c.name == n for n, c in cases.items())
    assert pp._all_cases(plain) is cases
    drawn = _Config()
    drawn.stash[pp._SETTINGS] = {"drawn": 3, "seed": 4}
    cases = pp._all_cases(drawn)
    assert list(cases) == zoo + [c.name for c in cf.drawn_zoo(3, seed=4)]
    want = cf.drawn_zoo(3, seed=4)[2]
    got = cases[want.name]
    assert got.describe() == want.describe() and all((a == b).all() for a, b in zip(got.params, want.params))
    # a second run with the same settings in this process gets the same cases
    again = _Config()
    again.stash[pp._SETTINGS] = {"drawn": 3, "seed": 4}
    assert pp._all_cases(again) is cases


# ---------------------------------------------------------------- the marker

ARCHS = list(cf.ARCHITECTURES)
LOSSES = list(cf.LOSSES)


def _names():
    """The zoo's names and some drawn ones, built from the tables (not by the plugin)."""
    return [f"{a}/{lo}" for a in ARCHS for lo in LOSSES] + [f"drawn-{i}/{lo}" for i, lo in
                                                           enumerate(LOSSES + LOSSES[:2])]


def test_the_marker_selects_by_the_zoos_tables_for_every_small_choice():
    names = _names()
    archs = ARCHS + ["drawn"]
    for arch_pick in [None, archs[:1], archs[-1:], [archs[1], "drawn"], archs]:
        for loss_pick in [None, LOSSES[:1], LOSSES[-2:], LOSSES]:
            kwargs = {k: v for k, v in (("architectures", arch_pick), ("losses", loss_pick)) if v is not None}
            want = [n for a in archs for n in names
                    if (n.startswith(a + "/") or (a == "drawn" and n.startswith("drawn-")))
                    and (arch_pick is None or a in arch_pick)
                    and (loss_pick is None or any(n.endswith("/" + lo) for lo in loss_pick))]
            got = pp._selected(names, pytest.mark.refprune(**kwargs).mark)
            assert sorted(got) == sorted(want) and got == [n for n in names if n in want], kwargs
    assert pp._selected(names, None) is names


@pytest.mark.parametrize("args, kwargs, message", [
    (("linear",), {}, "@pytest.mark.refprune takes keywords architectures= and losses=, got positional ('linear',)"),
    ((), {"kinds": 1, "arch": 2}, "@pytest.mark.refprune: unknown keywords ['arch', 'kinds']; it takes "
                                  "architectures= and losses="),
    ((), {"losses": "ce-sum"}, f"@pytest.mark.refprune: losses must be a non-empty list of names from "
                               f"{tuple(LOSSES)}, got 'ce-sum'"),
    ((), {"losses": 3}, f"@pytest.mark.refprune: losses must be a non-empty list of names from {tuple(LOSSES)}, "
                        f"got 3"),
    ((), {"architectures": ()}, f"@pytest.mark.refprune: architectures must be a non-empty list of names from "
                                f"{tuple(ARCHS) + ('drawn',)}, got ()"),
    ((), {"architectures": ["linear", "mlp", "cnn"]}, f"@pytest.mark.refprune: architectures ['mlp', 'cnn'] not "
                                                      f"known; choose from {tuple(ARCHS) + ('drawn',)}"),
])
def test_the_markers_refusals_name_the_marker_and_what_it_takes(args, kwargs, message):
    with pytest.raises(ValueError) as err:
        pp._selected(_names(), pytest.mark.refprune(*args, **kwargs).mark)
    assert str(err.value) == message


# ---------------------------------------------------------------- the ways a test asks for the cases

OWN = """
import pytest
from refprune import conformance as cf

CASE = cf.make_case("linear", "ce-sum")

@pytest.mark.parametrize(argnames="refprune_case", argvalues=[CASE], ids=["kw"])
def test_keywords(refprune_case):
    assert refprune_case is CASE

@pytest.mark.parametrize("x,refprune_case", [(1, CASE)], ids=["pair"])
def test_two_names(x, refprune_case):
    assert refprune_case is CASE

@pytest.mark.parametrize("x, refprune_case", [(1, CASE)], ids=["spaced"])
def test_two_names_spaced(x, refprune_case):
    assert refprune_case is CASE

@pytest.mark.parametrize(("x", "refprune_case"), [(1, CASE)], ids=["tuple"])
def test_two_names_tuple(x, refprune_case):
    assert refprune_case is CASE

@pytest.fixture
def net(refprune_case):
    return refprune_case.model

def test_through_a_fixture(net):
    assert net.n_params > 0

@pytest.mark.usefixtures("refprune_case")
def test_by_usefixtures(request):
    assert request.getfixturevalue("refprune_case").name == request.node.callspec.id
"""


def test_a_test_brings_its_own_cases_in_every_parametrize_form_and_fixtures_reach_the_zoo(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user=OWN)
    rec = pytester.inline_run("-p", PLUGIN, "-k", "not (through or usefixtures) or linear/mse-sum")
    reports = [r for r in rec.getreports("pytest_runtest_logreport") if r.when == "call"]
    assert sorted(r.nodeid.split("::")[1] for r in reports) == sorted([
        "test_keywords[kw]", "test_two_names[pair]", "test_two_names_spaced[spaced]",
        "test_two_names_tuple[tuple]", "test_through_a_fixture[linear/mse-sum]",
        "test_by_usefixtures[linear/mse-sum]"])
    rec.assertoutcome(passed=6)


def test_a_marker_with_no_case_skips_with_its_reason_even_without_the_skipping_plugin(inproc):
    src = "import pytest\n\n@pytest.mark.refprune(architectures=['drawn'])\ndef test_x(refprune_case):\n" \
          "    assert refprune_case is not None\n"
    result = inproc("-rs", source=src)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_user.py*: @pytest.mark.refprune: none of the 0 drawn cases "
                                 "(--refprune-drawn, ini refprune_drawn) has the architecture and loss asked for"])
    # with pytest's skipping plugin off the placeholder still never reaches the test as a case:
    # refprune_case refuses it at setup (an error, not a pass or a failure of the test body)
    result = inproc("-p", "no:skipping", source=src)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*refprune_case is parametrized when a test or its fixtures name it*"])


def test_the_ids_are_the_case_names_whatever_a_conftest_makes_of_parameter_values(inproc, pytester):
    # the module docstring: each item has the case's name as id; a conftest's id hook for
    # parameter values does not rename the cases (nor the placeholder of no case)
    pytester.makeconftest("def pytest_make_parametrize_id(config, val, argname):\n    return f'renamed-{val}'\n")
    src = ("import pytest\n\ndef test_a(refprune_case):\n    pass\n\n"
           "@pytest.mark.refprune(architectures=['drawn'])\ndef test_b(refprune_case):\n    pass\n")
    result = inproc("--co", "-q", source=src)
    ids = [line.split("::", 1)[1] for line in result.stdout.lines if line.startswith("test_user.py::")]
    assert ids == [f"test_a[{c.name}]" for c in cf.zoo()] + ["test_b[no-drawn-case]"]
