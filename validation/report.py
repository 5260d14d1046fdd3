"""Shared by the studies: the BLAS thread count, writing a report and its figures into
``validation/results/``, the README's summary row, and verdicts computed from numbers.

**Threads.**  A report must regenerate byte for byte whatever thread count the shell
sets: a multithreaded BLAS splits its sums differently with the thread count, and a
borderline outcome (a start that does or does not solve XOR, a median's last digit) can
flip.  Importing this module pins OpenBLAS, OpenMP and MKL to one thread.  The variables
are read when the BLAS loads, so a study imports ``report`` before NumPy; if NumPy is
already loaded, the running BLAS is limited with ``threadpoolctl`` (a dependency of
scikit-learn, in the ``validation`` extra).  Under pytest nothing is pinned: the tests run
at the suite's own thread count and compare no report bytes.
"""

import json
import os
import sys
from dataclasses import dataclass

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_blas_threads():
    """One BLAS thread for this process (module docstring); returns how: ``"environment"``
    when NumPy was not loaded yet, ``"threadpoolctl"`` when it was."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    if "numpy" not in sys.modules:
        return "environment"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise RuntimeError("report: NumPy was imported before report, so the BLAS thread count can no longer be "
                           "set through the environment, and threadpoolctl is missing; import report before numpy "
                           "or pip install threadpoolctl") from None
    threadpool_limits(1)
    return "threadpoolctl"


PINNED = None if "pytest" in sys.modules else pin_blas_threads()


def output_dir(out, quick):
    """Where a study writes: ``out`` when given, else ``validation/out/quick`` for a
    ``--quick`` run (so that a smoke run never overwrites a committed report), else
    ``validation/results``."""
    if out is not None:
        return out
    return os.path.join(os.path.dirname(RESULTS), "out", "quick") if quick else RESULTS


def pyplot():
    """matplotlib's pyplot with a file backend, or a clear exit when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("this study draws figures with matplotlib: pip install 'refprune[validation]'")
    return plt


def save(fig, name, out=RESULTS):
    """Save ``fig`` as ``out/name`` (PNG, fixed metadata so reruns give the same file)."""
    os.makedirs(out, exist_ok=True)
    fig.savefig(os.path.join(out, name), dpi=110, bbox_inches="tight", metadata={"Software": None})
    return name


def write(name, lines, out=RESULTS):
    """Write the report ``out/name`` from a list of Markdown lines; returns its path."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    with open(path, "w") as fh:
        fh.write("\n".join(lines).rstrip() + "\n")
    return path


def table(header, rows):
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


# ---------------------------------------------------------------- the README's row

#: the fields of a study's row in the README's reproduction table, in column order
ROW_FIELDS = ("study", "command", "reproduced", "not reproduced")
_ROW_TAG = "<!-- readme-row "


def readme_row(study, command, reproduced, not_reproduced):
    """The report's machine-readable summary: one HTML comment (invisible when rendered)
    holding the study's row of the README table as JSON; ``validation/readme_table.py``
    reads it.  Empty text is written as an em dash."""
    cells = dict(zip(ROW_FIELDS, (study, command, reproduced or "—", not_reproduced or "—")))
    for key, value in cells.items():
        if not isinstance(value, str) or "\n" in value or "-->" in value:
            raise ValueError(f"readme_row: {key} must be one line of text without '-->', got {value!r}")
    return _ROW_TAG + json.dumps(cells, ensure_ascii=False, sort_keys=True) + " -->"


def read_readme_row(path):
    """The row written by :func:`readme_row` into the report at ``path`` (a dict keyed by
    :data:`ROW_FIELDS`), or ``None`` when the report carries none."""
    with open(path, encoding="utf-8") as fh:
        rows = [line.strip() for line in fh if line.startswith(_ROW_TAG)]
    if not rows:
        return None
    if len(rows) > 1:
        raise ValueError(f"read_readme_row: {path} carries {len(rows)} summary rows, expected one")
    cells = json.loads(rows[0][len(_ROW_TAG):-len(" -->")])
    if sorted(cells) != sorted(ROW_FIELDS):
        raise ValueError(f"read_readme_row: {path}'s row has fields {sorted(cells)}, expected {sorted(ROW_FIELDS)}")
    return cells


# ---------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Criterion:
    """When a measured number counts as reproducing the paper's: ``text`` states the rule
    in the report, ``test(measured, paper)`` applies it."""

    text: str
    test: object


def equal_to_paper():
    return Criterion("equal to the paper's", lambda measured, paper: measured == paper)


def within(tolerance, unit=""):
    """``|measured - paper| <= tolerance`` (the tolerance is the study's choice and the
    report says so)."""
    return Criterion(f"within ±{tolerance:g}{unit} of the paper's (a tolerance chosen here)",
                     lambda measured, paper: abs(measured - paper) <= tolerance)


def below_paper():
    return Criterion("below the paper's", lambda measured, paper: measured < paper)


@dataclass(frozen=True)
class Verdict:
    """``holds``: whether the measured number meets the criterion; ``sentence``: the
    comparison written out."""

    holds: bool
    sentence: str


def verdict(claim, measured, paper, criterion, show=str):
    """Compare ``measured`` with the paper's number ``paper`` under ``criterion`` (a
    :class:`Criterion`); ``show`` formats a number.  The sentence names the claim, both
    numbers, the rule and the outcome, so no verdict in a report is fixed text."""
    holds = bool(criterion.test(measured, paper))
    outcome = "reproduces" if holds else "does not reproduce"
    return Verdict(holds, f"{claim}: {show(measured)} here against {show(paper)} in the paper "
                          f"(criterion: {criterion.text}); {outcome}.")
