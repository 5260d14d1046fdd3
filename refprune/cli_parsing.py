"""What the command lines (:mod:`refprune.cli`, :mod:`refprune.demo`) share of ``argparse``:
a parser whose errors are one line, and the number types of their options.

Both import this module and neither imports the other at load time, so the demo does
not depend on the command line that runs it.
"""

import argparse

import numpy as np


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(cast, accept, words):
    """An ``argparse`` type: ``cast(text)`` if ``accept`` holds for it, else one-line error."""

    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not accept(v):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return v

    parse.__doc__ = f"``argparse`` type: {words}."
    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: np.isfinite(v) and v > 0, "a positive finite number")
