"""What refprune accepts as an integer or as a real number in an argument.

Python's ``bool`` is a subclass of ``int``, so a plain ``isinstance`` test would take
``True`` for the count 1; these predicates refuse booleans (Python's and NumPy's) and
accept NumPy's integer and floating scalars as well as Python's.  The module imports
nothing from refprune, so every part of the package, ``nn`` included, can use it.
"""

import numpy as np


def is_int(value):
    """Whether ``value`` is a Python or NumPy integer and not a boolean."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """Whether ``value`` is a Python or NumPy integer or float and not a boolean."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
