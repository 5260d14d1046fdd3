"""Write the README's reproduction table from the committed reports.

Each study's report carries its row as a machine-readable summary line
(``report.readme_row``); this script reads it from every report in :data:`STUDIES` and
replaces the table between the README's markers.  A report that carries no such line yet
contributes the fixed text in :data:`FIXED` instead (its study does not write one); once
it does, the report's line takes precedence.

    python validation/readme_table.py            # rewrites the table in README.md
    python validation/readme_table.py --check    # exit status 1 when README.md differs
"""

import argparse
import os
import sys

from report import RESULTS, ROW_FIELDS, read_readme_row, table

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
BEGIN = "<!-- reproduction table: written by python validation/readme_table.py from validation/results/ -->"
END = "<!-- end of reproduction table -->"
HEADER = ("study", "command", "what reproduced", "what did not, and why")

#: the reports, in the table's order
STUDIES = ("xor.md", "monks.md", "obd_digits.md", "ekfac_distance.md", "natural_gradient_digits.md",
           "eigendamage_digits.md")

#: rows of the reports whose study does not write a summary line yet (fixed text, taken
#: from the committed reports by hand)
FIXED = {}


def rows(results=RESULTS):
    """The table's rows: each study's summary line, or its fixed text."""
    out = []
    for name in STUDIES:
        path = os.path.join(results, name)
        cells = read_readme_row(path) if os.path.exists(path) else None
        if cells is not None:
            out.append(tuple(cells[f] for f in ROW_FIELDS))
        elif name in FIXED:
            out.append(FIXED[name])
        else:
            raise ValueError(f"readme_table: {path} carries no summary row and has no fixed text")
    return out


def render(rows_):
    """The Markdown table (a ``|`` inside a cell is escaped)."""
    return table(HEADER, [tuple(c.replace("|", "\\|") for c in r) for r in rows_])


def replace(text, lines):
    """``text`` (the README) with the table between the markers replaced by ``lines``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"readme_table: the README must hold each marker once, in order: {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + tail


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit status 1 when README.md differs")
    args = ap.parse_args(argv)
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    new = replace(text, render(rows()))
    if args.check:
        if new != text:
            print("README.md's reproduction table differs from the reports: python validation/readme_table.py")
            return 1
        return 0
    if new != text:
        with open(README, "w", encoding="utf-8") as fh:
            fh.write(new)
    print(README)
    return 0


if __name__ == "__main__":
    sys.exit(main())
