"""The mutation run's numbers and its surviving mutants, from mutmut's ``mutants/`` folder.

After ``python -m mutmut run`` (docs/testing.md, "Mutation testing"):

    python tools/mutation_report.py            # per-module table, then every survivor
    python tools/mutation_report.py --write    # also rewrite docs/mutation-survivors.md

Every survivor is listed with its change and the group of equivalent mutants it belongs
to (``GROUPS``; the reasons are in docs/testing.md).  A survivor that no rule or entry of
``KNOWN`` places is printed as a gap and the exit status is 1: either a test is missing or
the survivor needs reading and a place in a group.
"""

import argparse
import ast
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
OUT = ROOT / "docs" / "mutation-survivors.md"

# mutmut's exit codes of a detected mutant: a failing test (1, 3) or a timeout (an endless loop)
KILLED = {1, 3, 24, -24, 36, 152, 255}

GROUPS = {
    "work": "how work is split, not what is computed",
    "numpy": "a NumPy spelling of the same thing",
    "threshold": "a threshold at its boundary",
    "unread": "an input nobody reads",
    "cache": "a value recomputed where it was reused",
    "bookkeeping": "bookkeeping that cannot differ",
    "label": "text that is never shown",
    "tool": "observable outside the mutation tool only",
}

# (group, patterns in the mutated line): the first match decides.  Thresholds get no rule:
# those that tests pin must never be waved through as equivalent.
RULES = [
    ("numpy", [r"reshape\([^)]*-2\b", r"einsum\(\"[A-Z]", r"dtype=None", r"astype\(None\)",
               r"\"STABLE\"", r"\]\s*=\s*None$", r"float\(\"NAN\"\)", r"take_along_axis\([^()]*\], \)"]),
    ("work", [r"max\(2, ", r"range\(0, [^,]+, \)"]),
    ("unread", [r"\b(forward|vjp|vjp_squared|param_jvp|vjp_curvature|param_vjp_tangent)\(None, ",
                r"\b(hessian_matvec|loss_matvec|phi)\(f, None, "]),
    ("bookkeeping", [r"range\(.*, (stop|l) - 2, -1\)", r"\b(i|c0) = b - a\b"]),
    ("cache", [r"f_all is None or targets is None", r"targets is None or f_all is None"]),
]

# survivors the rules do not place, by "module:function#number", with a word on why
KNOWN = {
    # a threshold or a speed path at its boundary
    "nn/losses.py:CrossEntropyLoss.sample#14": "threshold",  # u == cdf exactly: probability zero
    "curvature/exact.py:_in_tasks#127": "bookkeeping",  # end == n: the mirrored copy is empty
    "curvature/exact.py:_assemble#36": "work",  # always the identity seed: the same block, another route
    "curvature/exact.py:_assemble#37": "work",  # the identity seed at a tie of the two sizes
    "pruning/layerwise.py:_eliminate#3": "work",  # a copy instead of a view of C
    "pruning/layerwise.py:layer_obs_round#28": "work",  # a round of zero removals changes nothing
    "pruning/layerwise.py:layer_obs_round#73": "work",  # more greedy steps than any row can take
    "pruning/layerwise.py:obc_rows#9": "work",  # elimination rounds with no row in them
    "pruning/layerwise.py:_exact_counts#22": "bookkeeping",  # a table wider than reachable counts (inf)
    "pruning/layerwise.py:_exact_counts#24": "bookkeeping",
    "pruning/obs.py:OBS.remove#64": "work",  # the rank-one BLAS update taken for pairs
    "pruning/obs.py:inverse_spd#10": "bookkeeping",  # a non-square matrix is refused either way
    "pruning/prune.py:_prune_unstructured#38": "bookkeeping",  # a round 0 that removes nothing
    "pruning/prune.py:_prune_unstructured#45": "unread",  # a fraction computed for a count target
    "pruning/prune.py:_rank_select#2": "work",  # a group with no removals ranked for nothing
    "pruning/structured.py:prune_units#33": "bookkeeping",  # a round 0 that removes nothing
    "pruning/surgery.py:remove_units#87": "bookkeeping",  # a removed unit's constant is uniform in space
    "pruning/surgery.py:_with_bias#6": "numpy",  # bias=True is Linear's default
    "pruning/surgery.py:_with_bias#19": "numpy",  # bias=True is Conv2d's default
    "pruning/surgery.py:_with_bias#18": "unread",  # padded convolutions refuse folded constants before
    "nn/pooling.py:MaxPool2d.vjp#22": "bookkeeping",  # the winner's slot written twice with the same value
    "curvature/kronecker.py:LayerLayout.__init__#20": "numpy",  # None and False are both false
    "curvature/parallel.py:fingerprint#13": "unread",  # every array is float64 or int64 after validation
    "curvature/parallel.py:sharer#1": "work",  # scatter on a client that has it: the same data, shared
    "curvature/parallel.py:BlockRecord._save#10": "label",  # the temporary file's name
    "curvature/parallel.py:BlockRecord._save#11": "label",
    "curvature/exact.py:_output_array#63": "label",  # below one byte either way: 0.00 GiB
    "curvature/exact.py:rows_task#26": "label",  # a task's own name, shown on no path
    "curvature/exact.py:layer_blocks#17": "label",
    "curvature/exact.py:layer_blocks#33": "label",
    "curvature/exact.py:layer_blocks#34": "label",
    "curvature/diagonal.py:diagonal_task#22": "label",  # options checked by the driver before
    "curvature/diagonal.py:diagonal_task#29": "label",
    "curvature/diagonal.py:diagonal_task#30": "label",
    "curvature/diagonal.py:_diagonal#75": "numpy",  # progress None and False are both false
    "curvature/diagonal.py:_diagonal#76": "label",  # the driver's name, shown only by progress
    "pruning/unstructured.py:robust_inverse#30": "label",  # the damped matrix cannot fail again
    "pruning/unstructured.py:robust_inverse#33": "label",
    "pruning/eigendamage.py:eigendamage#345": "bookkeeping",  # an all-ones mask, or none, for retraining
}


def _dtype_dropped(before, after):
    """The mutant only leaves out a ``dtype=`` keyword (NumPy then infers the same type)."""
    squeeze = lambda t: re.sub(r"[\s,]", "", t)  # noqa: E731
    return "dtype=" in before and squeeze(re.sub(r"dtype=[\w.]+", "", before)) == squeeze(after)


def _functions(src):
    """Source of every function and method by name (mutmut's copies have unique names)."""
    lines, out = src.splitlines(), {}

    def visit(node):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.FunctionDef):
                out[n.name] = "\n".join(lines[n.lineno - 1 : n.end_lineno])
            elif isinstance(n, ast.ClassDef):
                visit(n)

    visit(ast.parse(src))
    return out


def _change(funcs, name):
    """The original and the mutated lines of one mutant."""
    orig = name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    o, m = funcs.get(orig), funcs.get(name)
    if o is None or m is None:
        return "", ""
    o, m = o.replace(orig, "F"), m.replace(name, "F")
    diff = [line for line in difflib.unified_diff(o.splitlines(), m.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    return (" ".join(d[1:].strip() for d in diff if d[0] == "-"), " ".join(d[1:].strip() for d in diff if d[0] == "+"))


def _pretty(module, name):
    """``module:function#n`` from mutmut's ``x_function__mutmut_n`` (``xǁClassǁmethod`` for methods)."""
    func, number = name.rsplit("__mutmut_", 1)
    func = func[2:].replace("ǁ", ".") if func.startswith("xǁ") else func[2:]
    return f"{module}:{func}#{number}"


def collect():
    """``(table rows, survivors)`` from ``mutants/``."""
    if not MUTANTS.is_dir():
        sys.exit("mutation_report: no mutants/ folder; run `python -m mutmut run` first (docs/testing.md)")
    rows, survivors = [], []
    for meta in sorted(MUTANTS.glob("refprune/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:
            continue
        path = meta.relative_to(MUTANTS).as_posix()[: -len(".meta")]
        module = path[len("refprune/"):]
        dotted = path[:-3].replace("/", ".")
        funcs = _functions((MUTANTS / path).read_text())
        survived = sorted((k for k, v in codes.items() if v == 0),
                          key=lambda k: (k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1])))
        killed = sum(v in KILLED for v in codes.values())
        # not run yet, or run without a test reaching it (mutmut's "no tests", "skipped", ...)
        pending = len(codes) - killed - len(survived)
        rows.append((module, len(codes), killed, len(survived), pending))
        for key in survived:
            name = key[len(dotted) + 1:]
            before, after = _change(funcs, name)
            label = _pretty(module, name)
            group = KNOWN.get(label)
            if group is None and _dtype_dropped(before, after):
                group = "numpy"
            if group is None:
                group = next((g for g, pats in RULES if any(re.search(p, after) for p in pats)), None)
            survivors.append((label, group, before, after))
    return rows, survivors


def table(rows):
    lines = ["| module | mutants | killed | survived | killed % |", "| --- | ---: | ---: | ---: | ---: |"]
    total = [0, 0, 0]
    for module, n, killed, survived, pending in rows:
        total = [total[0] + n, total[1] + killed, total[2] + survived]
        note = f" ({pending} neither killed nor survived)" if pending else ""
        lines.append(f"| `{module}` | {n} | {killed} | {survived} | {100 * killed / n:.1f}{note} |")
    lines.append(f"| all | {total[0]} | {total[1]} | {total[2]} | {100 * total[1] / total[0]:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    rows, survivors = collect()
    text = ["# Surviving mutants", "",
            "Generated by `python tools/mutation_report.py --write` from the last mutation run;",
            "the groups' reasons are in `docs/testing.md` (\"Why the remaining survivors are",
            "equivalent\").", "", table(rows), "",
            "| mutant | group | original | mutated |", "| --- | --- | --- | --- |"]

    def cell(s):
        return "`" + s.replace("|", "\\|").replace("`", "'")[:140] + "`" if s else ""

    for label, group, before, after in survivors:
        text.append(f"| `{label}` | {group or '**gap**'} | {cell(before)} | {cell(after)} |")
    out = "\n".join(text) + "\n"
    print(out)
    gaps = [s for s in survivors if s[1] is None]
    if args.write:
        OUT.write_text(out)
    if gaps:
        print(f"mutation_report: {len(gaps)} survivor(s) belong to no group: a test is missing, or read them "
              "and place them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
