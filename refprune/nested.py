"""Nested lists as arrays: ``numpy.asarray``, with a ragged list refused by name.

NumPy refuses a nested list whose rows differ in length with "setting an array element
with a sequence ... inhomogeneous shape", which names neither the argument nor the row.
The module imports nothing from refprune, so every part of the package can use it.
"""

import numpy as np


def ragged_place(a, path):
    """Where a nested list or tuple first has items of different shapes (a sentence), or
    ``None`` if it is rectangular."""
    if not isinstance(a, (list, tuple)):
        return None
    shapes = []
    for i, item in enumerate(a):
        inner = ragged_place(item, f"{path}[{i}]")
        if inner:
            return inner
        shapes.append(np.shape(item))
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            return f"{path}[{i}] has shape {s} but {path}[0] has shape {shapes[0]}"
    return None


def as_array(a, name, path=None):
    """``numpy.asarray(a)``; a ragged nested list raises ``ValueError`` naming ``name``
    and the first row that differs (as ``path[i]``, ``path`` defaulting to ``name``)."""
    try:
        arr = np.asarray(a)
    except ValueError:  # NumPy >= 1.24 on a ragged list, or any other list it refuses
        _refuse_ragged(a, name, path)
        raise  # not ragged: NumPy's own error
    if arr.dtype == object:  # NumPy < 1.24 made an object array of a ragged list
        _refuse_ragged(a, name, path)
    return arr


def _refuse_ragged(a, name, path):
    where = ragged_place(a, name if path is None else path)
    if where is not None:
        raise ValueError(f"{name} is a ragged nested list: {where}; every row must have the same shape") from None
