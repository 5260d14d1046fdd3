"""``refprune.fixtures.checksum`` against its definition, SHA-256 of the array's little-endian
bytes in C order, written out here value by value with ``struct`` (independent of NumPy's
byte-order and layout conversions): for big-endian input and Fortran-ordered input too."""

import hashlib
import struct

import numpy as np
import pytest

from refprune.fixtures import checksum


def _by_hand(values, fmt):
    return hashlib.sha256(b"".join(struct.pack("<" + fmt, v) for v in values)).hexdigest()


@pytest.mark.parametrize("dtype, fmt", [("<f8", "d"), (">f8", "d"), ("<i8", "q"), (">i8", "q")])
@pytest.mark.parametrize("order", ["C", "F"])
def test_checksum_is_of_the_little_endian_c_order_bytes(dtype, fmt, order):
    M = np.arange(12).reshape(3, 4) * (0.5 if fmt == "d" else 3) - 7
    A = np.array(M, dtype=dtype, order=order)
    expected = _by_hand([v.item() for v in M.ravel(order="C")], fmt)
    assert checksum(A) == expected
    assert checksum(A.T) == _by_hand([v.item() for v in M.T.ravel(order="C")], fmt)  # a transposed view
