"""flatten_params and unflatten_params against hand-built arrays and their messages."""

import numpy as np
import pytest

import refprune as rp
from refprune.params import flatten_params, unflatten_params


def test_flatten_empty_and_int_lists():
    out = flatten_params([])
    assert out.shape == (0,) and out.dtype == np.float64
    out = flatten_params([np.array([[1, 2], [3, 4]]), (5,)])
    assert out.dtype == np.float64 and np.array_equal(out, [1.0, 2.0, 3.0, 4.0, 5.0])


def test_unflatten_makes_float64_copies():
    model = rp.Sequential(rp.Linear(2, 1))
    theta = np.array([1, 2, 3])
    w, b = unflatten_params(model, theta)
    assert w.dtype == b.dtype == np.float64
    assert np.array_equal(w, [[1.0, 2.0]]) and np.array_equal(b, [3.0])


def test_messages():
    with pytest.raises(TypeError) as e:
        flatten_params(np.zeros(3))
    assert str(e.value) == "flatten_params: params must be a list of arrays, got ndarray"
    with pytest.raises(TypeError) as e:
        unflatten_params([rp.Linear(2, 1)], np.zeros(3))
    assert str(e.value) == "unflatten_params: model must be a refprune Sequential, got list"
    with pytest.raises(ValueError) as e:
        unflatten_params(rp.Sequential(rp.Linear(2, 1)), np.zeros(4))
    assert str(e.value) == "unflatten_params: theta must have shape (3,) for this model, got (4,)"
