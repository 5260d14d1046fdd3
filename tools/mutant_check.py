"""Run chosen mutants of a mutmut ``mutants/`` folder against chosen tests, one at a time.

    python tools/mutant_check.py mutants "refprune.conformance.optimizer_quantities.*" \\
        -t tests/test_optimizer_quantities.py tests/test_optimizer_quantities_mutants.py
    python tools/mutant_check.py mutants "refprune.bridges.*" -t tests/test_bridges.py --optional-libraries
    python tools/mutant_check.py mutants "refprune.nested.*" --mapped --tests-from . --json out.json
    python tools/mutant_check.py mutants --rerun out.json --status survived -t tests/test_new.py
    python tools/mutant_check.py mutants --write-map -t tests/test_cli.py tests/test_cli_mutants.py

Mutants are named as mutmut names them (``refprune.nested.x_as_array__mutmut_4``; a method
is ``xǁClassǁmethod``) or matched by ``fnmatch`` patterns; they are listed from the
trampoline tables of the mutated sources.  Tests are pytest paths or node ids relative to
the mutants folder.  Each verdict is printed as it comes (``killed``, ``survived``,
``timeout``, ``no tests``, ``error``), then a count per module; ``--json`` writes them all;
``--diff`` prints each survivor's changed lines.  The exit status is 1 when a mutant
survived, 2 when the unmutated run of the tests fails (every verdict would then be
meaningless, so none is given).

How a verdict relates to mutmut's (docs/testing.md, "Mutation testing"):

- **The same switch.**  The mutant is switched on as mutmut does it: mutmut's own
  ``set_mutant_under_test`` (the environment variable ``MUTANT_UNDER_TEST``, which every
  trampoline reads at every call) after the mutated modules were imported with no mutant
  on.  Code that runs at import (a table built by a module) therefore runs unmutated, as
  under mutmut: such mutants need tests that call the builder again.
- **The same tests, run the same way.**  ``pytest.main`` in the mutants folder with mutmut's
  arguments (``-x -q -p no:randomly -p no:random-order``, then ``pytest_add_cli_args`` of the
  folder's ``setup.cfg``, whose ``-k`` leaves out the tests that start worker processes).
  ``--mapped`` adds the tests mutmut maps to the mutant's function
  (``mutants/mutmut-stats.json``), fastest first as mutmut orders them.  ``--write-map``
  writes that file for the tests given, as mutmut's first pass maps them (its trampolines'
  "stats" mode), without a ``mutmut run``: a whole suite's first pass takes minutes, a few
  test files' seconds.  Without it the tests
  are the ones given, so a kill here by a test mutmut does not map to the function would
  not be mutmut's kill (mutmut maps a test once, when it first appears).
- **A CPU-time limit** as mutmut's: ``RLIMIT_CPU``, by default
  ``ceil((t + 1) x 4 x 2)`` seconds with ``t`` the CPU time of the unmutated run of all the
  selected tests (setup.cfg's ``timeout_multiplier = 4``); a mutant stopped by it, or hung
  past four times that in wall time, is a ``timeout`` and counts as killed, as under mutmut.
- **Not forked from a parent that ran the tests.**  By default each mutant runs in a child
  forked from this process, which has imported the package and collected the tests but run
  none of them; mutmut forks from a parent that ran the whole suite once (to map the tests),
  so anything a test leaves behind in the process (a cache, a module-level memo, a Hypothesis
  example database entry) can differ.  As under mutmut, the optional libraries that start
  threads (torch, JAX, dask, Zarr) are absent then (``tests/conftest.py``).
- ``--fresh-process`` starts a new interpreter for each mutant instead (imports, then the
  switch, then pytest) and sets ``REFPRUNE_MUTATION_OPTIONAL_LIBRARIES=1``, under which
  ``tests/conftest.py`` leaves torch and JAX importable: the tests that skip under mutmut
  (``tests/test_bridges.py``, the torch cross-checks) run.  These verdicts are ones mutmut
  cannot give; count them apart.
- ``--optional-libraries`` gives the same verdicts as ``--fresh-process`` for a fraction of
  its time (no interpreter start and no torch import per mutant): it sets the same variable
  and keeps forking, from a parent that imported torch and JAX while collecting the tests.
  A lock held by another thread at the fork stays held in the child: OpenBLAS guards its
  pool at a fork, but torch's OpenMP pool and JAX's are not guarded.  The parent therefore sets ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
  ``OPENBLAS_NUM_THREADS`` to 1 before any import (torch and OpenBLAS then start no
  thread pool; JAX starts its own only at its first computation, which the tests run in
  the children) and stops, naming the count, if it has more than one thread after the
  collection.  The tests therefore run single-threaded.
- ``--tests-from DIR`` first copies ``DIR/tests/*.py`` over the folder's ``tests/`` (the
  files that differ are named), so that new tests can be checked before a mutmut run.  It
  changes the mutants folder: use a copy of it, never the folder of a running mutmut.

The mutants folder's sources must be the ones of the code under test (a mutmut run
regenerates them when the code changes); the tool does not check that.
"""

import argparse
import ast
import difflib
import fnmatch
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# pytest's exit codes: 0 all passed, 1 a test failed, 2 interrupted (a collection error), 3 internal error, 5 none ran
_VERDICT = {0: "survived", 1: "killed", 3: "killed", 5: "no tests"}
_TABLE_ENTRY = re.compile(r"^\s*mutants_\S+\[['\"](x\S+__mutmut_\d+)['\"]\]\s*=", re.M)
_OPTIONAL_ENV = "REFPRUNE_MUTATION_OPTIONAL_LIBRARIES"
_ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def list_mutants(mutants):
    """Every mutant's full name, from the trampoline tables of the mutated sources
    (``mutants_x_f__mutmut['x_f__mutmut_3'] = ...``), in source order."""
    mutants = Path(mutants)
    names = []
    for path in sorted(mutants.rglob("*.py")):
        rel = path.relative_to(mutants)
        if rel.parts[0] in ("tests", "validation", "benchmarks", "docs", "fixtures"):
            continue
        text = path.read_text(encoding="utf-8")
        if "__mutmut_" not in text:
            continue
        module = ".".join(rel.with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]
        names += [f"{module}.{m}" for m in _TABLE_ENTRY.findall(text)]
    return names


def select(all_names, patterns):
    """The names matching any pattern (``fnmatch``, case-sensitive), in listing order;
    a pattern that matches nothing is an error (a mistyped name must not pass as 0 mutants)."""
    chosen, seen = [], set()
    for p in patterns:
        hits = [n for n in all_names if fnmatch.fnmatchcase(n, p)]
        if not hits:
            raise SystemExit(f"mutant_check: no mutant matches {p!r}")
        for n in hits:
            if n not in seen:
                seen.add(n)
                chosen.append(n)
    order = {n: i for i, n in enumerate(all_names)}
    return sorted(chosen, key=order.__getitem__)


def function_of(name):
    """mutmut's mangled function name of a mutant: ``module.x_f`` of ``module.x_f__mutmut_3``."""
    return name.rsplit("__mutmut_", 1)[0]


def pytest_args(mutants):
    """mutmut's own arguments, then ``pytest_add_cli_args`` of the folder's ``setup.cfg``."""
    import configparser

    args = ["--rootdir=.", "--tb=native", "-x", "-q", "-p", "no:randomly", "-p", "no:random-order"]
    cfg = configparser.ConfigParser()
    cfg.read(Path(mutants) / "setup.cfg", encoding="utf-8")
    if cfg.has_option("mutmut", "pytest_add_cli_args"):
        args += [line for line in cfg.get("mutmut", "pytest_add_cli_args").splitlines() if line.strip()]
    return args


def copy_tests(src, mutants):
    """Copy ``src/tests/*.py`` into ``mutants/tests``; returns the names of the files that changed."""
    changed = []
    for f in sorted((Path(src) / "tests").glob("*.py")):
        dest = Path(mutants) / "tests" / f.name
        if not dest.exists() or dest.read_bytes() != f.read_bytes():
            shutil.copyfile(f, dest)
            changed.append(f.name)
    return changed


def changed_lines(mutants, name):
    """``(original, mutated)`` lines of one mutant, read from its mutated source."""
    module, func = name.rsplit(".", 1)
    path = Path(mutants, *module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    src = path.read_text(encoding="utf-8")
    lines, funcs = src.splitlines(), {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    orig = func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    a = funcs.get(orig, "").replace(orig, "F").splitlines()
    b = funcs.get(func, "").replace(func, "F").splitlines()
    diff = [d for d in difflib.unified_diff(a, b, lineterm="", n=0) if d[:1] in "+-" and d[:3] not in ("---", "+++")]
    return (" | ".join(d[1:].strip() for d in diff if d[0] == "-"), " | ".join(d[1:].strip() for d in diff if d[0] == "+"))


class Runner:
    """Runs the tests under one mutant at a time, in a forked child (default) or a new
    interpreter (``fresh=True``); ``optional=True`` forks with torch and JAX importable.
    See the module docstring."""

    def __init__(self, mutants, fresh=False, optional=False, verbose=False):
        self.mutants = Path(mutants).resolve()
        self.fresh, self.optional, self.verbose = fresh, optional, verbose
        self.args = pytest_args(self.mutants)
        self.modules = set()

    def prepare(self, names, tests):
        """Import the mutated modules with no mutant on and, in the forked mode, collect the
        tests once (the children then find the test modules imported)."""
        os.environ.pop("MUTANT_UNDER_TEST", None)
        self.modules = sorted({n.rsplit(".", 1)[0] for n in names})
        if self.fresh:
            return
        if self.optional:
            os.environ[_OPTIONAL_ENV] = "1"
            for var in _ONE_THREAD:
                os.environ[var] = "1"
        os.chdir(self.mutants)
        sys.path.insert(0, str(self.mutants))
        import importlib

        import mutmut.mutation.trampoline  # noqa: F401  (as in mutmut's process: tests/conftest.py reads it)
        import pytest

        for m in self.modules:
            importlib.import_module(m)
        with open(os.devnull, "w") as null:
            out, err = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = null
            try:
                pytest.main(["--collect-only", "-qq"] + self.args + list(tests))
            finally:
                sys.stdout, sys.stderr = out, err
        threads = threads_of_this_process() if self.optional else 1
        if threads != 1:
            raise SystemExit(f"mutant_check: --optional-libraries: {threads} threads after importing and collecting "
                             "the tests; a forked child could hang on a lock another thread held (use --fresh-process)")

    def run(self, mutant, tests, cpu_limit=None):
        """``(verdict, exit code, CPU seconds, wall seconds)`` of the tests under ``mutant``
        (``None``: no mutant, the unmutated run)."""
        t0 = time.monotonic()
        if self.fresh:
            pid = self._spawn(mutant, tests, cpu_limit)
        else:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                self._child(mutant, tests, cpu_limit)
        wall_limit = None if cpu_limit is None else 4 * cpu_limit
        hung = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if wall_limit is not None and time.monotonic() - t0 > wall_limit:
                os.kill(pid, signal.SIGKILL)
                hung = True
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        if hung or code in (-signal.SIGXCPU, -signal.SIGKILL):
            verdict = "timeout"
        else:
            verdict = _VERDICT.get(code, "error")
        return verdict, code, cpu, time.monotonic() - t0

    def _child(self, mutant, tests, cpu_limit):
        code = 4
        try:
            if cpu_limit is not None:
                used = resource.getrusage(resource.RUSAGE_SELF)
                limit = int(math.ceil(cpu_limit + used.ru_utime + used.ru_stime))
                resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1))
            if not self.verbose:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
            from mutmut.mutation.trampoline import set_mutant_under_test
            import pytest

            if mutant is not None:
                set_mutant_under_test(mutant)
            code = int(pytest.main(self.args + list(tests)))
        finally:
            os._exit(code)

    def _spawn(self, mutant, tests, cpu_limit):
        driver = ("import importlib, json, os, sys\n"
                  "sys.path.insert(0, os.getcwd())\n"
                  "import mutmut.mutation.trampoline as t, pytest\n"
                  "spec = json.loads(sys.argv[1])\n"
                  "for m in spec['modules']: importlib.import_module(m)\n"
                  "if spec['mutant']: t.set_mutant_under_test(spec['mutant'])\n"
                  "sys.exit(int(pytest.main(spec['args'])))\n")
        spec = json.dumps(dict(modules=self.modules, mutant=mutant, args=self.args + list(tests)))
        env = dict(os.environ, **{_OPTIONAL_ENV: "1"})
        env.pop("MUTANT_UNDER_TEST", None)

        def limits():
            if cpu_limit is not None:
                limit = int(math.ceil(cpu_limit))
                resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1))

        out = None if self.verbose else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-c", driver, spec], cwd=self.mutants, env=env, stdout=out,
                                stderr=out, preexec_fn=limits)
        return proc.pid


_MAP_DRIVER = """\
import json, os, sys, time
sys.path.insert(0, os.getcwd())
os.environ["MUTANT_UNDER_TEST"] = "stats"
import mutmut.mutation.trampoline as t, pytest
hits, by_function, duration = set(), {}, {}
t.record_trampoline_hit = lambda name, caller=None: hits.add(name)

class Map:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        hits.clear()
        start = time.perf_counter()
        yield
        duration[item.nodeid] = time.perf_counter() - start
        for name in hits:
            by_function.setdefault(name, []).append(item.nodeid)

spec = json.loads(sys.argv[1])
code = int(pytest.main(spec["args"], plugins=[Map()]))
if code == 0:
    with open(spec["out"], "w", encoding="utf-8") as fh:
        json.dump(dict(tests_by_mangled_function_name=by_function, duration_by_test=duration), fh)
sys.exit(code)
"""


def write_map(mutants, tests):
    """Map ``tests`` to the mutated functions each one calls and write the map as
    ``mutants/mutmut-stats.json``, the file ``--mapped`` reads.  The map is made as mutmut's
    own first pass makes it (every trampoline records its function under
    ``MUTANT_UNDER_TEST=stats``), in a new interpreter, without ``-x``, so that every test
    is mapped; nothing is written when a test fails.  Returns pytest's exit code."""
    args = [a for a in pytest_args(mutants) if a != "-x"] + list(tests)
    spec = json.dumps(dict(args=args, out=str(Path(mutants) / "mutmut-stats.json")))
    env = dict(os.environ)
    env.pop(_OPTIONAL_ENV, None)
    return subprocess.run([sys.executable, "-c", _MAP_DRIVER, spec], cwd=mutants, env=env,
                          stdout=subprocess.DEVNULL).returncode


def threads_of_this_process():
    """The process's thread count as Linux counts it (``/proc/self/task``); None elsewhere."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def mapped_tests(mutants, names):
    """``{function: [node ids]}`` of mutmut's map (``mutmut-stats.json``), fastest first."""
    path = Path(mutants) / "mutmut-stats.json"
    if not path.exists():
        raise SystemExit(f"mutant_check: --mapped needs {path} (written by a mutmut run)")
    stats = json.loads(path.read_text(encoding="utf-8"))
    by_function, duration = stats["tests_by_mangled_function_name"], stats.get("duration_by_test", {})
    return {f: sorted(by_function.get(f, ()), key=lambda t: duration.get(t, 0.0))
            for f in {function_of(n) for n in names}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mutants", help="a mutmut mutants/ folder (a copy, never that of a running mutmut)")
    p.add_argument("names", nargs="*", help="mutant names or fnmatch patterns")
    p.add_argument("-t", "--tests", nargs="+", default=[], help="test files or node ids, relative to the folder")
    p.add_argument("--mapped", action="store_true", help="add the tests mutmut maps to each mutant's function")
    p.add_argument("--write-map", action="store_true",
                   help="map the tests given by -t to the functions they call (mutants/mutmut-stats.json) and stop")
    p.add_argument("--fresh-process", action="store_true", help="a new interpreter per mutant (torch and JAX importable)")
    p.add_argument("--optional-libraries", action="store_true",
                   help="forked children, torch and JAX importable, one thread (--fresh-process's verdicts, faster)")
    p.add_argument("--tests-from", metavar="DIR", help="copy DIR/tests/*.py into the folder first")
    p.add_argument("--cpu-limit", type=float, help="CPU seconds per mutant (default from the unmutated run)")
    p.add_argument("--rerun", metavar="JSON", help="take the mutants from an earlier --json output")
    p.add_argument("--status", nargs="+", help="with --rerun: only the mutants that had these verdicts")
    p.add_argument("--json", metavar="FILE", help="write {mutant: verdict} here")
    p.add_argument("--diff", action="store_true", help="print each survivor's changed lines")
    p.add_argument("--list", action="store_true", help="list the selected mutants and stop")
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    a = p.parse_args(argv)

    mutants = Path(a.mutants).resolve()
    out_json = Path(a.json).resolve() if a.json else None  # the forked mode changes into the folder
    if not (mutants / "setup.cfg").exists():
        p.error(f"{a.mutants} is not a mutmut mutants folder (no setup.cfg)")
    if a.write_map:
        if not a.tests or a.names or a.rerun:
            p.error("--write-map takes the tests to map (-t) and no mutants")
        code = write_map(mutants, a.tests)
        if code != 0:
            print(f"mutant_check: the tests do not pass unmutated (exit {code}); no map is written", file=sys.stderr)
            return 2
        stats = json.loads((mutants / "mutmut-stats.json").read_text(encoding="utf-8"))
        print(f"mapped {len(stats['duration_by_test'])} tests to {len(stats['tests_by_mangled_function_name'])} "
              f"functions: {mutants / 'mutmut-stats.json'}")
        return 0
    all_names = list_mutants(mutants)
    patterns = list(a.names)
    if a.rerun:
        earlier = json.loads(Path(a.rerun).read_text(encoding="utf-8"))
        patterns += [n for n, v in earlier.items() if not a.status or v in a.status]
    elif a.status:
        p.error("--status applies only with --rerun")
    if not patterns:
        p.error("name at least one mutant or pattern (or --rerun)")
    names = select(all_names, patterns)
    if a.list:
        print("\n".join(names))
        return 0
    if a.tests_from:
        changed = copy_tests(a.tests_from, mutants)
        print(f"copied into {mutants / 'tests'}: {', '.join(changed) or 'nothing changed'}")
    if a.fresh_process and a.optional_libraries:
        p.error("--fresh-process and --optional-libraries: choose one")
    wants_optional = a.fresh_process or a.optional_libraries
    if wants_optional and _OPTIONAL_ENV not in (mutants / "tests" / "conftest.py").read_text(encoding="utf-8"):
        flag = "--fresh-process" if a.fresh_process else "--optional-libraries"
        p.error(f"{flag}: {mutants}/tests/conftest.py does not read {_OPTIONAL_ENV}, so torch and JAX would "
                "stay absent; copy newer tests in with --tests-from")
    mapped = mapped_tests(mutants, names) if a.mapped else {}
    tests_of = {n: list(dict.fromkeys(a.tests + mapped.get(function_of(n), []))) for n in names}
    every = list(dict.fromkeys(t for ts in tests_of.values() for t in ts))
    if not every:
        p.error("no tests: give -t or --mapped")

    runner = Runner(mutants, fresh=a.fresh_process, optional=a.optional_libraries, verbose=a.verbose)
    runner.prepare(names, every)
    verdict, code, cpu, wall = runner.run(None, every)
    print(f"unmutated run of {len(every)} test paths: exit {code}, {cpu:.1f} s CPU, {wall:.1f} s")
    if verdict != "survived":
        print("mutant_check: the tests do not pass unmutated; no verdict is given", file=sys.stderr)
        return 2
    limit = a.cpu_limit if a.cpu_limit is not None else math.ceil((cpu + 1) * 4 * 2)
    print(f"{len(names)} mutants, CPU-time limit {limit} s each, "
          f"{'a new interpreter' if a.fresh_process else 'a forked child'} per mutant"
          + (", torch and JAX importable, one thread" if a.optional_libraries else ""))

    results, start = {}, time.monotonic()
    for i, n in enumerate(names, 1):
        if not tests_of[n]:
            results[n] = "no tests"
        else:
            results[n], code, cpu, wall = runner.run(n, tests_of[n], cpu_limit=limit)
        print(f"[{i}/{len(names)}] {results[n]:8} {n}" + (f"  (exit {code})" if results[n] == "error" else ""),
              flush=True)
        if a.diff and results[n] == "survived":
            before, after = changed_lines(mutants, n)
            print(f"      - {before}\n      + {after}")
    print(f"done in {time.monotonic() - start:.0f} s")
    by_module = {}
    for n, v in results.items():
        by_module.setdefault(n.rsplit(".", 1)[0], []).append(v)
    for module, vs in sorted(by_module.items()):
        counts = {k: vs.count(k) for k in ("killed", "timeout", "survived", "no tests", "error")}
        detected = counts["killed"] + counts["timeout"]
        print(f"{module}: {len(vs)} mutants, {detected} killed ({counts['timeout']} by timeout, "
              f"{100 * detected / len(vs):.1f}%), {counts['survived']} survived, {counts['no tests']} no tests, "
              f"{counts['error']} errors")
    if out_json:
        out_json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if "survived" in results.values() else 0


if __name__ == "__main__":
    sys.exit(main())
