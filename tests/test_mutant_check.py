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


def test_killed_survived_and_timeout(tmp_path):
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text("")
    (tmp_path / "fakepkg" / "mod.py").write_text(MODULE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mod.py").write_text(textwrap.dedent("""
        from fakepkg.mod import add

        def test_add():
            assert add(2, 3) == 5
    """))
    (tmp_path / "setup.cfg").write_text("[mutmut]\npytest_add_cli_args =\n    -p\n    no:cacheprovider\n")
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
