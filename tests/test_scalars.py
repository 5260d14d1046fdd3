"""What counts as an integer or a number in an argument (``refprune.scalars``): booleans
never, NumPy scalars always, arrays and strings never."""

import numpy as np
import pytest

from refprune.scalars import is_int, is_number

VALUES = [
    # value, is_int, is_number
    (3, True, True), (np.int64(3), True, True), (np.uint8(3), True, True), (-2, True, True),
    (3.0, False, True), (np.float32(3.0), False, True), (float("nan"), False, True),
    (True, False, False), (np.bool_(True), False, False),
    ("3", False, False), (None, False, False), (np.array(3), False, False), ([3], False, False),
    (3 + 0j, False, False),
]


@pytest.mark.parametrize("value, integer, number", VALUES, ids=[repr(v[0]) for v in VALUES])
def test_integers_and_numbers(value, integer, number):
    assert is_int(value) is integer
    assert is_number(value) is number
