"""Two inputs of the finite-difference checkers that used to give NaN or a NumPy error:
both tolerances zero, and a function with an empty output."""

import numpy as np
import pytest

from refprune.testing import check_grad, check_hvp, check_jvp


def test_both_tolerances_zero_is_refused_by_name():
    x = np.array([0.3, -0.2])
    with pytest.raises(ValueError) as err:
        check_grad(lambda z: float(z @ z), lambda z: 2 * z, x, rtol=0, atol=0)
    assert str(err.value) == ("check_grad: rtol and atol are both 0; give at least one a positive value (the error "
                              "is measured in units of atol + rtol |finite difference|)")
    with pytest.raises(ValueError, match=r"check_jvp: rtol and atol are both 0"):
        check_jvp(lambda z: z**2, lambda z, v: 2 * z * v, x, rtol=0.0, atol=0.0)
    # one of them zero is a valid choice and the check runs (the derivative is exact here)
    assert check_grad(lambda z: float(z @ z), lambda z: 2 * z, x, rtol=1e-6, atol=0).error < 1


def test_an_empty_output_is_refused_by_name():
    x = np.array([0.3, -0.2])
    with pytest.raises(ValueError, match=r"check_jvp: fun\(x\) is empty \(shape \(0,\)\)"):
        check_jvp(lambda z: z[:0], lambda z, v: v[:0], x)
    with pytest.raises(ValueError, match=r"check_hvp: grad\(x\) is empty"):
        check_hvp(lambda z: z[:0], lambda z, v: v[:0], x)
