"""``refprune.nested.as_array`` against NumPy's own behaviour and the message its docstring
promises: the ragged row named along ``path``, NumPy's own error for sequences that are
not lists, and the branch kept for NumPy < 1.24 (which made an object array of a ragged
list instead of refusing it)."""

import collections
import types

import numpy as np
import pytest

from refprune import nested
from refprune.nested import as_array


def test_the_row_is_named_along_path_and_the_argument_by_name():
    with pytest.raises(ValueError) as err:
        as_array([[1.0, 2.0], [3.0]], "CrossEntropyLoss: labels", path="y")
    assert str(err.value) == ("CrossEntropyLoss: labels is a ragged nested list: y[1] has shape (1,) but y[0] "
                              "has shape (2,); every row must have the same shape")


def test_path_defaults_to_the_name():
    with pytest.raises(ValueError) as err:
        as_array(([1.0], [2.0, 3.0], [4.0]), "X")
    assert str(err.value) == "X is a ragged nested list: X[1] has shape (2,) but X[0] has shape (1,); every row " \
                             "must have the same shape"


def test_a_sequence_that_is_not_a_list_gets_numpys_own_error():
    # ragged_place reads lists and tuples only; NumPy's refusal of a ragged deque must come
    # through unchanged, never an array of something else
    d = collections.deque([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError) as expected:
        np.asarray(d)
    with pytest.raises(ValueError) as got:
        as_array(d, "X")
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("a", [[[1.0, 2.0], [3.0, 4.0]], (1, 2, 3), np.arange(6.0).reshape(2, 3), 2.5, [None, 1]])
def test_accepted_input_is_numpys_array(a):
    out = as_array(a, "X")
    ref = np.asarray(a)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert np.array_equal(out, ref) if ref.dtype != object else list(out) == list(ref)
    if isinstance(a, np.ndarray):
        assert out is a  # asarray: no copy


def test_an_object_array_made_of_a_ragged_list_is_refused_as_numpy_before_1_24_made_it(monkeypatch):
    # NumPy 1.22 and 1.23 (setup.cfg accepts both) returned a 1-d object array for a ragged
    # list, with a deprecation warning, where NumPy 2 raises: the refusal must not depend on it
    def old_asarray(a, *args, **kwargs):
        try:
            return np.asarray(a, *args, **kwargs)
        except ValueError:
            return np.array(a, dtype=object)

    monkeypatch.setattr(nested, "np", types.SimpleNamespace(asarray=old_asarray, shape=np.shape))
    with pytest.raises(ValueError, match=r"^X is a ragged nested list: X\[1\] has shape \(3,\) but X\[0\] has "
                                         r"shape \(2,\); every row must have the same shape$"):
        as_array([[1.0, 2.0], [3.0, 4.0, 5.0]], "X")
    with pytest.raises(ValueError, match=r"^MSELoss: targets is a ragged nested list: y\[1\] has shape \(3,\) but "
                                         r"y\[0\] has shape \(2,\); every row must have the same shape$"):
        as_array([[1.0, 2.0], [3.0, 4.0, 5.0]], "MSELoss: targets", path="y")
    # a rectangular list of objects stays an object array, as NumPy made it
    out = as_array([None, "a"], "X")
    assert out.dtype == object and list(out) == [None, "a"]


@pytest.mark.parametrize("a", [[[1.0, 2.0], [3.0, 4.0]], (1, 2, 3), np.arange(6.0).reshape(2, 3), 2.5,
                               np.array([None, "a"], dtype=object)])
def test_no_ragged_search_for_what_numpy_reads_as_numbers_or_what_is_not_a_list(a, monkeypatch):
    """The search for a ragged row walks the whole nested list: it runs only when NumPy
    refused the input or made an object array of it, and finds nothing outside lists."""
    searched = []
    real = nested.ragged_place
    monkeypatch.setattr(nested, "ragged_place", lambda a, path: searched.append(path) or real(a, path))
    out = as_array(a, "X")
    assert searched == ([] if out.dtype != object else ["X"])
    assert out is a if isinstance(a, np.ndarray) else np.array_equal(out, np.asarray(a))


def test_a_ragged_row_deeper_down_is_named_by_its_whole_path():
    with pytest.raises(ValueError) as err:
        as_array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0]]], "X")
    assert str(err.value) == ("X is a ragged nested list: X[1][1] has shape (1,) but X[1][0] has shape (2,); every "
                              "row must have the same shape")
