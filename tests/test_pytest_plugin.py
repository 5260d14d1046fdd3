"""The pytest plugin (``refprune/testing/pytest_plugin.py``), ``check_case`` and
``strategies.cases()``: a user's test file run by pytest inside this test (pytester), one
item per zoo case, ``-k``, ``--lf``, ``-x``, the drawn cases, bad option values, the
diagnosis in a failure's report, the README's example file."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

import refprune as rp
from refprune import conformance as cf
from refprune.testing import pytest_plugin
from refprune.testing.strategies import SMOOTH_ACTIVATIONS, cases, mlps

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "refprune.testing.pytest_plugin"
#: every zoo name, from the zoo's own tables (not through the plugin)
NAMES = {f"{a}/{lname}" for a in cf.ARCHITECTURES for lname in cf.LOSSES}


@pytest.fixture(scope="module")
def zoo_names():
    """The zoo's names in its order (smallest network first)."""
    return [c.name for c in cf.zoo()]


@pytest.fixture
def run(pytester, monkeypatch):
    """``run(source, *args)``: write ``test_user.py`` and run pytest on it in this process
    with the plugin loaded by ``-p`` (entry points off, so that an installed refprune's
    own ``pytest11`` entry point does not load it a second time); returns
    ``(HookRecorder, {case id: report of its call})``."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run(source, *args, name="test_user"):
        pytester.makepyfile(**{name: source})
        rec = pytester.inline_run("-p", PLUGIN, *args)
        reports = {r.nodeid.split("::", 1)[1]: r for r in rec.getreports("pytest_runtest_logreport")
                   if r.when == "call" or r.skipped}
        return rec, reports

    return run


def _ids(reports, test="test_loss"):
    return [k[len(test) + 1 : -1] for k in reports if k.startswith(test + "[")]


LOSS_TEST = """
import refprune as rp

def my_loss(case):
    {body}

def test_loss(refprune_case, refprune_check):
    refprune_check(my_loss, refprune_case, quantity="loss")
"""


def _user(body):
    return LOSS_TEST.format(body=body)


RIGHT = _user("return rp.loss(*case.args())")
#: a bug in the ReLU path only (the relu networks of the zoo fail, the others pass)
RELU_BUG = _user("return rp.loss(*case.args()) * (1.5 if any(type(l).__name__ == 'ReLU' for l in case.model) else 1)")


# ---------------------------------------------------------------- one item per case

def test_every_zoo_case_is_its_own_item_in_the_zoos_order(run, zoo_names):
    rec, reports = run(RIGHT)
    rec.assertoutcome(passed=len(NAMES))
    assert _ids(reports) == zoo_names and set(zoo_names) == NAMES


@pytest.mark.parametrize("expr, keep", [("conv", lambda n: "conv" in n),
                                        ("ce-mean and not relu", lambda n: "ce-mean" in n and "relu" not in n),
                                        ("linear/mse-sum", lambda n: n == "linear/mse-sum")])
def test_k_selects_single_cases(run, zoo_names, expr, keep):
    rec, reports = run(RIGHT, "-k", expr)
    assert _ids(reports) == [n for n in zoo_names if keep(n)] != []
    rec.assertoutcome(passed=len(reports))


def test_lf_reruns_only_the_failures_and_x_stops_at_the_smallest(run, pytester, zoo_names):
    relu = [n for n in zoo_names if "relu" in n]
    rec, reports = run(RELU_BUG)
    assert sorted(k for k, r in reports.items() if r.failed) == sorted(f"test_loss[{n}]" for n in relu)
    assert len(relu) == 2 * len(cf.LOSSES)
    rec, reports = run(RELU_BUG, "--lf")  # the failures only, failing again
    assert _ids(reports) == relu and all(r.failed for r in reports.values())
    rec, reports = run(RELU_BUG, "--lf", "-x")  # stops at the smallest of them
    assert list(reports) == [f"test_loss[{relu[0]}]"] and reports[f"test_loss[{relu[0]}]"].failed
    rec, reports = run(RIGHT, "--lf")  # fixed: the failures pass
    assert _ids(reports) == relu and all(r.passed for r in reports.values())
    rec, reports = run(RELU_BUG, "-x")  # from the start: the cases before the first ReLU net pass
    first = zoo_names.index(relu[0])
    assert _ids(reports) == zoo_names[: first + 1]
    rec.assertoutcome(passed=first, failed=1)


def test_a_failing_implementation_reports_the_diagnosis_of_its_case(run, zoo_names):
    # the loss with PyTorch's "sum" everywhere: every "mean" case is off by N (cross-entropy)
    # or N C (the per-element losses), docs/conventions.md §2; every "sum" case passes
    rec, reports = run(_user("return rp.loss(*case.args()[:4], type(case.loss)('sum'))"))
    failed = {k[len("test_loss[") : -1] for k, r in reports.items() if r.failed}
    assert failed == {n for n in zoo_names if n.endswith("-mean")}
    rec.assertoutcome(passed=len(NAMES) - len(failed), failed=len(failed))
    words = {"ce": "a sum over samples where the loss takes the mean (R = 1/N)",
             "mse": "a sum where MSELoss 'mean' divides by N C",
             "bce": "a sum where BCEWithLogitsLoss 'mean' divides by N C"}
    for name in failed:
        text = reports[f"test_loss[{name}]"].longreprtext
        case = cf.make_case(*name.split("/"))
        n, c = len(case.X), case.model.output_shape(case.X.shape[1:])[0]
        factor = n if name.endswith("/ce-mean") else n * c
        assert f"conformance with refprune failed: loss on case {name}" in text
        assert f"off by a constant factor {factor}: {words[name.split('/')[1].split('-')[0]]}" in text, text
        assert case.describe() in text and "compared under: L = R sum_n l_n" in text


def test_an_exception_of_the_implementation_is_the_cause_with_its_traceback(run):
    rec, reports = run(_user("return {}['no such key']"), "-k", "linear/ce-mean")
    text = reports["test_loss[linear/ce-mean]"].longreprtext
    assert "KeyError: 'no such key'" in text and "direct cause of the following exception" in text
    assert "the adapter raised KeyError" in text and "return {}['no such key']" in text


def test_each_item_gets_its_own_copy_of_its_case(run):
    rec, reports = run("""
import numpy as np
from refprune import conformance as cf

def test_a(refprune_case):
    for p in refprune_case.params:
        p[...] = 0.0
    refprune_case.X[...] = 0.0

def test_b(refprune_case):
    fresh = cf.make_case(*refprune_case.name.split("/"))
    assert all(np.array_equal(p, q) for p, q in zip(refprune_case.params, fresh.params))
    assert np.array_equal(refprune_case.X, fresh.X)
""", "-k", "linear/ce-mean or mlp-tanh/bce-sum")
    rec.assertoutcome(passed=4)


def test_own_parametrization_is_kept_and_other_tests_are_left_alone(run, pytester):
    source = """
import pytest
from refprune import conformance as cf
from refprune.testing import pytest_plugin

@pytest.mark.parametrize("refprune_case", [cf.make_case("linear", "ce-sum")], ids=["mine"])
def test_mine(refprune_case):
    assert refprune_case.name == "linear/ce-sum"

@pytest.mark.parametrize("x", [1, 2])
def test_other(x, request):
    assert pytest_plugin._CASES not in request.config.stash  # the zoo was never asked for

def test_plain():
    pass
"""
    rec, reports = run(source)
    assert list(reports) == ["test_mine[mine]", "test_other[1]", "test_other[2]", "test_plain"]
    rec.assertoutcome(passed=4)
    items, _ = pytester.inline_genitems()  # the same items without the plugin
    assert [i.nodeid.split("::")[1] for i in items] == list(reports)


def test_the_plugin_module_imports_only_pytest():
    code = ("import sys, pytest, refprune.testing; before = set(sys.modules); "
            "import refprune.testing.pytest_plugin; print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['refprune.testing.pytest_plugin']", out


@pytest.mark.skipif("mutmut" in sys.modules, reason="the pytest started here imports mutmut's copy of refprune "
                    "outside mutmut's folder, where its switches cannot find their configuration; the test is "
                    "of the install's metadata, not of mutated code")
def test_the_entry_point_metadata_names_the_plugin_module_and_pytest_loads_it(tmp_path):
    # the metadata an install writes from setup.cfg, built afresh (the installed copy may
    # come from another checkout)
    meta = tmp_path / "meta"
    meta.mkdir()
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base",
                    str(meta)], cwd=ROOT, capture_output=True, check=True)
    dist = importlib.metadata.PathDistribution(meta / "refprune.egg-info")
    eps = dist.entry_points.select(group="pytest11")
    assert [(e.name, e.value) for e in eps] == [("refprune", PLUGIN)]
    plugin = eps["refprune"].load()
    assert plugin is pytest_plugin and callable(plugin.pytest_generate_tests)
    # a plain pytest run with that metadata on the path: no -p, the entry point loads the plugin
    (tmp_path / "test_user.py").write_text(RIGHT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(meta), str(ROOT)]))
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("PYTEST_ADDOPTS", None)
    others = ["-p", "no:zarr", "-p", "no:hypothesispytest"]  # other packages' entry points: slow, not under test
    out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *others,
                          "test_user.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    ids = [line.split("[", 1)[1][:-1] for line in out.stdout.splitlines() if line.startswith("test_user.py::")]
    assert out.returncode == 0 and sorted(ids) == sorted(NAMES), out.stdout + out.stderr


# ---------------------------------------------------------------- the drawn cases and options

def test_drawn_cases_follow_the_zoo_with_stable_ids(run, pytester, zoo_names):
    drawn = [c.name for c in cf.drawn_zoo(3, seed=5)]
    assert all(re.fullmatch(r"drawn-[0-2]/(ce|mse|bce)-(mean|sum)", n) for n in drawn)
    rec, reports = run(RIGHT, "--refprune-drawn=3", "--refprune-seed", "5")
    assert _ids(reports) == zoo_names + drawn
    rec.assertoutcome(passed=len(NAMES) + 3)
    pytester.makeini("[pytest]\nrefprune_drawn = 3\nrefprune_seed = 5\n")
    assert _ids(run(RIGHT)[1]) == zoo_names + drawn  # from the ini file: the same cases
    other = [c.name for c in cf.drawn_zoo(2, seed=5)]
    assert _ids(run(RIGHT, "--refprune-drawn=2")[1]) == zoo_names + other  # the command line wins
    result = pytester.runpytest_inprocess("-p", PLUGIN, "--co")
    result.stdout.fnmatch_lines(["*refprune: refprune_case adds 3 drawn cases*seed 5*"])


def test_a_drawn_case_fails_again_under_lf(run):
    drawn = [c.name for c in cf.drawn_zoo(4, seed=1)]
    bug = _user(f"return rp.loss(*case.args()) * (2 if case.name == {drawn[-1]!r} else 1)")
    rec, reports = run(bug, "--refprune-drawn=4", "--refprune-seed=1")
    assert [k for k, r in reports.items() if r.failed] == [f"test_loss[{drawn[-1]}]"]
    rec, reports = run(bug, "--refprune-drawn=4", "--refprune-seed=1", "--lf")
    assert list(reports) == [f"test_loss[{drawn[-1]}]"]


@pytest.mark.parametrize("args, ini, words", [
    (["--refprune-drawn=-1"], "", "--refprune-drawn must be a non-negative integer, got '-1'"),
    (["--refprune-drawn=two"], "", "--refprune-drawn must be a non-negative integer, got 'two'"),
    (["--refprune-drawn=1.5"], "", "got '1.5'"),
    (["--refprune-drawn", ""], "", "got ''"),
    (["--refprune-drawn=2", "--refprune-seed=-3"], "", "--refprune-seed must be a non-negative integer, got '-3'"),
    (["--refprune-seed=3"], "", "--refprune-seed sets the seed of the drawn cases, but none are drawn"),
    (["--refprune-drawn=0", "--refprune-seed=3"], "", "but none are drawn"),
    ([], "refprune_drawn = -2", "ini option refprune_drawn must be a non-negative integer, got '-2'"),
    ([], "refprune_seed = 4", "ini option refprune_seed sets the seed of the drawn cases, but none are drawn"),
    (["--refprune-drawn=0"], "refprune_drawn = 2\nrefprune_seed = 4", "but none are drawn"),
])
def test_bad_option_values_are_usage_errors(pytester, monkeypatch, args, ini, words):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user=RIGHT)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_inprocess("-p", PLUGIN, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: *{words}*"])


def test_good_values_of_the_options_are_accepted(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user="def test_plain():\n    pass\n")
    for args in (["--refprune-drawn=0"], ["--refprune-drawn", " 2 ", "--refprune-seed=0"]):
        assert pytester.runpytest_inprocess("-p", PLUGIN, *args).ret == pytest.ExitCode.OK


# ---------------------------------------------------------------- the marker

def test_the_marker_keeps_the_architectures_and_losses_named(run, zoo_names):
    drawn = [c.name for c in cf.drawn_zoo(6, seed=2)]
    rec, reports = run("""
import pytest

@pytest.mark.refprune(architectures=["linear", "mlp-relu", "drawn"], losses=["ce-mean", "mse-sum"])
def test_loss(refprune_case):
    pass

@pytest.mark.refprune(losses=["bce-sum"])
def test_bce(refprune_case):
    pass
""", "--refprune-drawn=6", "--refprune-seed=2")
    keep = lambda n: n.split("/")[0] in ("linear", "mlp-relu") or n.startswith("drawn-")  # noqa: E731
    assert _ids(reports) == [n for n in zoo_names + drawn if keep(n) and n.split("/")[1] in ("ce-mean", "mse-sum")]
    assert _ids(reports, "test_bce") == [n for n in zoo_names + drawn if n.endswith("/bce-sum")]


def test_the_marker_asking_for_drawn_cases_only_skips_without_them(run):
    rec, reports = run("""
import pytest

@pytest.mark.refprune(architectures=["drawn"])
def test_loss(refprune_case):
    pass
""")
    assert list(reports) == ["test_loss[no-drawn-case]"]
    assert reports["test_loss[no-drawn-case]"].skipped and "none of the 0 drawn cases" in str(
        reports["test_loss[no-drawn-case]"].longrepr)


@pytest.mark.parametrize("args, words", [
    ('losses="ce-mean"', "losses must be a non-empty list of names"),
    ('losses=["ce-avg"]', "losses ['ce-avg'] not known"),
    ('architectures=["mlp"]', "architectures ['mlp'] not known"),
    ('architectures=[]', "architectures must be a non-empty list"),
    ('kinds=["mse"]', "unknown keywords ['kinds']"),
    ('["linear"]', "takes keywords architectures= and losses=, got positional"),
])
def test_a_bad_marker_is_a_collection_error_naming_it(run, args, words):
    rec, _ = run(f"import pytest\n\n@pytest.mark.refprune({args})\ndef test_loss(refprune_case):\n    pass\n")
    (report,) = [r for r in rec.getreports("pytest_collectreport") if r.failed]
    assert "@pytest.mark.refprune" in report.longreprtext and words in report.longreprtext


# ---------------------------------------------------------------- check_case

def _wrong_hessian(case):
    return rp.ggn(*case.args())


def test_check_case_passes_and_fails_per_quantity_of_an_adapter():
    case = cf.make_case("mlp-tanh", "ce-mean")
    adapter = cf.Adapter(grad=lambda c: rp.grad(*c.args()), hessian=_wrong_hessian)
    before = dict(adapter.quantities)
    assert cf.check_case(adapter, case, quantity="grad", rtol={"grad": 1e-12, "hessian": 0.5}).ok
    with pytest.raises(AssertionError) as err:
        cf.check_case(adapter, case)
    text = str(err.value)
    # the neighbour that reproduces the result: the GGN where the Hessian was meant
    assert "hessian on case mlp-tanh/ce-mean" in text and "grad on case" not in text and "ggn" in text.lower()
    assert adapter.quantities == before and set(adapter.options) == {"grad", "hessian"}  # the caller's adapter
    with pytest.raises(AssertionError, match="hessian on case"):
        cf.check_case(adapter, case, quantity=["hessian"])


def test_check_case_raises_not_compared_and_the_fixture_skips(run):
    m = rp.Sequential(rp.Linear(2, 2))
    X = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])  # K-FAC's A = diag(1/2, 1/2, 1): a repeated eigenvalue
    case = cf.Case("sym", m, m.init(0), X, np.array([0, 1, 1, 0]), rp.CrossEntropyLoss())
    with pytest.raises(cf.NotCompared, match="ekfac is not compared on case sym: not uniquely defined"):
        cf.check_case(lambda c: rp.ekfac(*c.args()).to_dense(), case, quantity="ekfac")
    rec, reports = run("""
import numpy as np
import pytest
import refprune as rp
from refprune import conformance as cf

m = rp.Sequential(rp.Linear(2, 2))
SYM = cf.Case("sym", m, m.init(0), np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]]), np.array([0, 1, 1, 0]),
              rp.CrossEntropyLoss())

@pytest.mark.parametrize("refprune_case", [SYM])
def test_ekfac(refprune_case, refprune_check):
    refprune_check(lambda c: 0 * rp.ekfac(*c.args()).to_dense(), refprune_case, quantity="ekfac")
""")
    (report,) = reports.values()
    assert report.skipped and "refprune: ekfac is not compared on case sym" in str(report.longrepr)


# ---------------------------------------------------------------- strategies.cases()

#: every quantity without options that refprune computes directly from a case
OWN = cf.Adapter(loss=lambda c: rp.loss(*c.args()), grad=lambda c: rp.grad(*c.args()),
                 hvp=lambda c: rp.hvp(*c.args(), c.v), hessian=lambda c: rp.hessian(*c.args()),
                 ggn=lambda c: rp.ggn(*c.args()), mc_fisher=lambda c: rp.fisher(*c.args(), curvature="mc_fisher",
                                                                                targets=c.targets),
                 kfac=lambda c: rp.blocks_to_flat(c.model, rp.kfac(*c.args()).factors()))


@given(case=cases())
def test_drawn_cases_pass_the_harness_with_refprunes_own_functions(case):
    assert isinstance(case, cf.Case) and case.name.split("/")[1] in cf.LOSSES
    assert cf.check_case(OWN, case).ok


def _independent_loss(case):
    """PyTorch's three losses written out from the network's outputs (docs/conventions.md §2)."""
    f = case.model(case.params, case.X)
    if isinstance(case.loss, rp.CrossEntropyLoss):
        per = np.log(np.exp(f).sum(axis=1)) - f[np.arange(len(f)), case.y]
    elif isinstance(case.loss, rp.MSELoss):
        per = (f - case.y) ** 2
    else:
        per = np.log1p(np.exp(f)) - case.y * f
    return per.mean() if case.loss.reduction == "mean" else per.sum()


@given(case=cases(activations=SMOOTH_ACTIVATIONS))
def test_drawn_cases_agree_with_an_independent_loss(case):
    cf.check_case(_independent_loss, case, quantity="loss", rtol=1e-12)


@given(case=cases(kinds=("mse",), reductions=("mean",)))
def test_a_deliberately_wrong_function_is_caught_on_every_drawn_case(case):
    # squared error averaged over the samples only: C times refprune's (C >= 2 outputs)
    def wrong(c):
        f = c.model(c.params, c.X)
        return ((f - c.y) ** 2).sum(axis=1).mean()

    n, c = len(case.X), case.model.output_shape(case.X.shape[1:])[0]
    with pytest.raises(AssertionError) as err:
        cf.check_case(wrong, case, quantity="loss")
    text = str(err.value)
    assert f"off by a constant factor {c}" in text and case.describe() in text
    if c not in (n, n * c):  # C = N or N = 1: the factor is also "a sum over samples" or "N C"
        assert "a mean over samples only where MSELoss 'mean' divides by N C" in text


@given(case=cases(kinds=("bce", "cross_entropy"), reductions=("sum",), max_samples=2, max_depth=2, max_width=3,
                  max_channels=1, max_size=4))
def test_cases_keep_to_their_limits(case):
    assert isinstance(case.loss, (rp.BCEWithLogitsLoss, rp.CrossEntropyLoss)) and case.loss.reduction == "sum"
    assert 1 <= len(case.X) <= 2 and case.targets is not None and case.v.shape == (case.n_params,)
    if case.name.startswith("hypothesis-mlp/"):
        linears = [layer for layer in case.model if isinstance(layer, rp.Linear)]
        assert len(linears) <= 2 and all(max(lin.in_features, lin.out_features) <= 3 for lin in linears)
    else:
        assert case.name.startswith("hypothesis-convnet/") and case.X.shape[1] <= 2
        assert max(case.X.shape[2:]) <= 4
        assert all(conv.out_channels == 1 for conv in case.model if isinstance(conv, rp.Conv2d))


def test_cases_shrink_to_the_smallest_network_and_rebuild_the_same_bits():
    from hypothesis import find, settings

    once = settings(database=None)
    # the smallest draw of every part: one Linear(1, 2) without bias, N = 1, the first loss
    first = find(cases(), lambda c: True, settings=once)
    assert first.describe() == ("hypothesis-mlp/ce-mean: Linear(1, 2, bias=False); X (1, 1), "
                                "CrossEntropyLoss(reduction='mean') (R = 1), n = 2 parameters")
    again = find(cases(), lambda c: True, settings=once)
    for a, b in zip(first.params + [first.X, first.y, first.v, first.targets],
                    again.params + [again.X, again.y, again.v, again.targets]):
        assert a.tobytes() == b.tobytes()
    # a property that needs a convolution shrinks to a 1x1 kernel on a 3x3 image
    conv = find(cases(), lambda c: any(isinstance(layer, rp.Conv2d) for layer in c.model), settings=once)
    assert [type(layer) for layer in conv.model] == [rp.Conv2d, rp.Flatten, rp.Linear]
    assert conv.X.shape == (1, 1, 3, 3) and conv.n_params == 1 + 9 * 2


@given(case=cases(architectures=mlps(max_depth=1, in_features=2, out_features=3), kinds=("mse",)))
def test_cases_take_an_architecture_strategy(case):
    assert [type(layer) for layer in case.model] == [rp.Linear] and case.X.shape[1:] == (2,)


# ---------------------------------------------------------------- the README's example file

@pytest.fixture(scope="module")
def torch_first():
    """torch if installed, else ``None``, imported before ``pytester`` is set up: pytester
    removes the modules a test imported when it ends, and torch cannot be imported a
    second time in one process."""
    try:
        import torch
    except ImportError:  # also ModuleNotFoundError under mutation runs (tests/conftest.py)
        return None
    return torch


def _readme_example():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- pytest-plugin-example: [^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "README: the pytest plugin's example file is missing"
    return m.group(1)


def test_the_readme_example_file_runs_and_passes(torch_first, run):
    code = _readme_example()
    rec, reports = run(code, name="test_my_losses")
    n_arch, n_loss = len(cf.ARCHITECTURES), len(cf.LOSSES)
    ran_grad = [r for k, r in reports.items() if k.startswith("test_grad[")]
    assert len(ran_grad) == 2 * n_arch  # the cross-entropy cases of the marker
    if torch_first is not None:
        rec.assertoutcome(passed=n_arch * n_loss + 2 * n_arch + 1)
    else:
        rec.assertoutcome(passed=n_arch * n_loss + 1, skipped=2 * n_arch)
    # the README's statements about it
    readme = (ROOT / "README.md").read_text()
    assert f"# {n_arch * n_loss} + {2 * n_arch} + 1 items" in readme


def test_the_readme_example_catches_the_mistake_it_describes(torch_first, run):
    code = _readme_example()
    wrong = code.replace("return per.mean() if", "return per.sum() / len(f) if")
    assert wrong != code
    rec, reports = run(wrong, "-k", "test_loss", name="test_my_losses")
    failed = sorted(k for k, r in reports.items() if r.failed)
    assert failed == sorted([f"test_loss[{a}/{lname}]" for a in cf.ARCHITECTURES for lname in ("mse-mean", "bce-mean")]
                            + ["test_loss_drawn"])
    text = reports["test_loss[linear/mse-mean]"].longreprtext
    readme = (ROOT / "README.md").read_text()
    shown = [line[4:] for line in readme.splitlines() if line.startswith("E   ")]
    assert shown and all(line in text for line in shown), (shown, text)


def test_a_case_prints_on_one_line_with_its_arrays_by_shape():
    import refprune.conformance as cf

    for case in cf.zoo():
        text = repr(case)
        assert "\n" not in text and "array(" not in text, text
        assert text.startswith(f"Case({case.name!r}: ") and f"n={case.model.n_params}" in text
        assert f"X {case.X.shape}" in text and f"y {case.y.shape}" in text and repr(case.loss) in text
