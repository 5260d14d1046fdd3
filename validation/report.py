"""Writing a study's Markdown report and its figures into ``validation/results/``."""

import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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
