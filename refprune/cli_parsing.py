"""What the command lines (:mod:`refprune.cli`, :mod:`refprune.demo`) share of ``argparse``:
a parser whose errors are one line, and their options built from, and checked through,
the options table (:data:`refprune.options.TABLE`, rows ``"refprune COMMAND"``).

Both import this module and neither imports the other at load time, so the demo does
not depend on the command line that runs it.
"""

import argparse


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _argument(o):
    """``(names, keyword arguments)`` of ``add_argument`` for row ``o``."""
    default = "" if o.default is None or o.kind == "flag" else f" (default {o.default})"
    kw = dict(help=f"{o.doc}{default}")
    if o.positional:
        return (o.name,), kw
    kw["default"] = None
    if o.kind == "flag":
        kw.update(action="store_const", const=True)
        return (o.name,), kw
    if o.kind == "choice":
        kw["metavar"] = "{" + ",".join(o.choices) + "}"
    elif o.metavar:
        kw["metavar"] = o.metavar
    else:
        kw["metavar"] = {"int": "N", "seed": "N", "real": "X"}.get(o.kind, "VALUE")
    if o.nargs:
        kw["nargs"] = o.nargs
    return (o.name,), kw


def add_options(parser, command, group=()):
    """Add every option of ``refprune COMMAND`` (:data:`refprune.options.TABLE`) to
    ``parser``; those named in ``group`` to a required mutually exclusive group."""
    from .options import TABLE

    exclusive = parser.add_mutually_exclusive_group(required=True) if group else None
    for o in TABLE[f"refprune {command}"]:
        names, kw = _argument(o)
        (exclusive if o.name in group else parser).add_argument(*names, **kw)


def parse_checked(parser, argv, command, mode=lambda values: frozenset(), sub=None):
    """Parse ``argv`` and check every typed option through the options table
    (:func:`refprune.options.check_command_line`); a refusal is one line on stderr
    and exit status 2 (by ``sub``'s ``error``, the subcommand's parser, default
    ``parser``).  Returns an ``argparse.Namespace`` of the checked values (the
    table's defaults where not typed)."""
    from .options import TABLE, check_command_line

    ns = parser.parse_args(argv)
    rows = TABLE[f"refprune {command}"]
    given = {o.name: getattr(ns, o.dest) for o in rows if getattr(ns, o.dest, None) is not None}
    prefix = f"refprune {command}: "
    try:
        values = check_command_line(command, given, mode)
    except ValueError as err:  # OptionTypeError too
        text = str(err)
        (sub or parser).error(text[len(prefix):] if text.startswith(prefix) else text)
    extra = {k: v for k, v in vars(ns).items() if k not in values}
    return argparse.Namespace(**extra, **values)
