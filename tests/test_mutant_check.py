"""tools/mutant_check.py on a tiny hand-made mutants folder: one mutant a test kills, one
it cannot notice (``b + a`` for ``a + b``) and one that loops until its CPU-time limit."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mutmut")

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutant_check.py"

MODULE = '''
from mutmut.mutation.trampoline import wrap_in_trampoline as _mutmut_mutated, MutantDict
mutants_x_add__mutmut: MutantDict = {}  # type: ignore


@_mutmut_mutated(mutants_x_add__mutmut)
def add(a, b):
    return a + b


def x_add__mutmut_orig(a, b):
    return a + b


def x_add__mutmut_1(a, b):
    return a - b


def x_add__mutmut_2(a, b):
    return b + a


def x_add__mutmut_3(a, b):
    while True:
        pass


mutants_x_add__mutmut['_mutmut_orig'] = x_add__mutmut_orig # type: ignore # mutmut generated
mutants_x_add__mutmut['x_add__mutmut_1'] = x_add__mutmut_1 # type: ignore # mutmut generated
mutants_x_add__mutmut['x_add__mutmut_2'] = x_add__mutmut_2 # type: ignore # mutmut generated
mutants_x_add__mutmut['x_add__mutmut_3'] = x_add__mutmut_3 # type: ignore # mutmut generated
'''


def _folder(tmp_path, test_source):
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text("")
    (tmp_path / "fakepkg" / "mod.py").write_text(MODULE)
    (tmp_path / "tests").mkdir()
    # the tool refuses a conftest that does not read the variable (it would keep torch away)
    (tmp_path / "tests" / "conftest.py").write_text("# reads REFPRUNE_MUTATION_OPTIONAL_LIBRARIES\n")
    (tmp_path / "tests" / "test_mod.py").write_text(textwrap.dedent(test_source))
    (tmp_path / "setup.cfg").write_text("[mutmut]\npytest_add_cli_args =\n    -p\n    no:cacheprovider\n")


def test_killed_survived_and_timeout(tmp_path):
    _folder(tmp_path, """
        from fakepkg.mod import add

        def test_add():
            assert add(2, 3) == 5
    """)
    out = tmp_path / "verdicts.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "fakepkg.mod.*", "-t", "tests/test_mod.py",
                           "--cpu-limit", "2", "--json", str(out), "--diff"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: a mutant survived
    assert json.loads(out.read_text()) == {"fakepkg.mod.x_add__mutmut_1": "killed",
                                           "fakepkg.mod.x_add__mutmut_2": "survived",
                                           "fakepkg.mod.x_add__mutmut_3": "timeout"}
    assert "- return a + b\n      + return b + a" in proc.stdout
    assert "fakepkg.mod: 3 mutants, 2 killed (1 by timeout, 66.7%), 1 survived" in proc.stdout
    # a pattern that matches nothing is refused, not counted as zero mutants
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "fakepkg.mod.x_sub*", "-t", "tests/test_mod.py"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no mutant matches 'fakepkg.mod.x_sub*'" in proc.stderr


def test_optional_libraries_forks_one_thread_with_the_variable_set(tmp_path):
    # the children see the variable and one-thread settings, and give the verdicts of the default mode
    _folder(tmp_path, """
        import os
        from fakepkg.mod import add

        def test_add():
            assert os.environ["REFPRUNE_MUTATION_OPTIONAL_LIBRARIES"] == "1"
            assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "1"
            assert add(2, 3) == 5
    """)
    out = tmp_path / "verdicts.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "fakepkg.mod.x_add__mutmut_[12]", "-t",
                           "tests/test_mod.py", "--optional-libraries", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert json.loads(out.read_text()) == {"fakepkg.mod.x_add__mutmut_1": "killed",
                                           "fakepkg.mod.x_add__mutmut_2": "survived"}
    assert "a forked child per mutant, torch and JAX importable, one thread" in proc.stdout


def test_optional_libraries_refuses_a_parent_with_a_second_thread(tmp_path):
    # a test module that starts a thread when collected: forking would copy its locks
    _folder(tmp_path, """
        import threading, time
        from fakepkg.mod import add

        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()

        def test_add():
            assert add(2, 3) == 5
    """)
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "fakepkg.mod.x_add__mutmut_1", "-t",
                           "tests/test_mod.py", "--optional-libraries"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--optional-libraries: 2 threads after importing and collecting the tests" in proc.stderr


def test_write_map_records_the_functions_each_test_calls_and_mapped_uses_it(tmp_path):
    """--write-map: each test node under the functions it reached through a trampoline (a
    test that calls nothing mutated is under none, but has its duration); --mapped then
    runs a mutant against its function's tests alone.  A failing test writes no map."""
    _folder(tmp_path, """
        from fakepkg.mod import add

        def test_add():
            assert add(2, 3) == 5

        def test_other():
            assert 2 + 3 == 5
    """)
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "--write-map", "-t", "tests/test_mod.py"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stats = json.loads((tmp_path / "mutmut-stats.json").read_text())
    assert stats["tests_by_mangled_function_name"] == {"fakepkg.mod.x_add": ["tests/test_mod.py::test_add"]}
    assert sorted(stats["duration_by_test"]) == ["tests/test_mod.py::test_add", "tests/test_mod.py::test_other"]
    assert f"mapped 2 tests to 1 functions: {tmp_path / 'mutmut-stats.json'}" in proc.stdout
    out = tmp_path / "verdicts.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "fakepkg.mod.x_add__mutmut_1",
                           "fakepkg.mod.x_add__mutmut_2", "--mapped", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert json.loads(out.read_text()) == {"fakepkg.mod.x_add__mutmut_1": "killed",
                                           "fakepkg.mod.x_add__mutmut_2": "survived"}
    assert "unmutated run of 1 test paths" in proc.stdout
    (tmp_path / "mutmut-stats.json").unlink()
    (tmp_path / "tests" / "test_fail.py").write_text("def test_fails():\n    assert False\n")
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "--write-map", "-t", "tests"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no map is written" in proc.stderr
    assert not (tmp_path / "mutmut-stats.json").exists()
    proc = subprocess.run([sys.executable, str(TOOL), str(tmp_path), "--write-map"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--write-map takes the tests to map (-t) and no mutants" in proc.stderr
