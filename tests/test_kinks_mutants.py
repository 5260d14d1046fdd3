"""``kink_margin`` on inputs small enough to read the answer off by hand: the smallest
``|input|`` of every ReLU, the gap between the two largest entries of every max-pool
window (windows tied at the zeros of a ReLU right before the pooling excepted, and only
those), the first layer that reaches the smallest value named, and the sentence of
``explain=True`` written out in full."""

import numpy as np
import pytest

import refprune as rp
from refprune.testing import kink_margin

HARMLESS = ("{k} max-pool window(s) tied at the zeros of the preceding ReLU are harmless (zero derivative) and not "
            "counted")


def _image(rows):
    return np.array(rows, dtype=float)[None, None]  # (1, 1, H, W)


def test_relu_margin_and_the_first_layer_reaching_it_is_named():
    model = rp.Sequential(rp.ReLU(), rp.ReLU())
    X = np.array([[0.5, 0.25, 2.0]])
    # both ReLUs see 0.25 as their smallest |input|: the first one is named
    assert kink_margin(model, [], X, explain=True) == (0.25, "layer 0 (ReLU): smallest |input| 2.500e-01")
    assert kink_margin(model, [], X) == 0.25
    # a negative input becomes an exact zero for the second ReLU
    assert kink_margin(model, [], np.array([[0.5, -0.25, 2.0]]), explain=True) == (
        0.0, "layer 1 (ReLU): smallest |input| 0.000e+00")


def test_pooling_without_relu_counts_every_tie():
    # windows {1, 3, 2, 0.5} (gap 3 - 2 = 1) and {0, 0, 0, 0} (gap 0: a real kink here)
    X = _image([[1.0, 3.0, 0.0, 0.0], [2.0, 0.5, 0.0, 0.0]])
    model = rp.Sequential(rp.MaxPool2d(2), rp.Flatten())
    assert kink_margin(model, [], X, explain=True) == (
        0.0, "layer 0 (MaxPool2d): smallest gap between a window's two largest entries 0.000e+00")
    X2 = _image([[1.0, 3.0, 0.0, 4.0], [2.0, 0.5, 3.75, 0.0]])  # gaps 1 and 0.25
    assert kink_margin(model, [], X2) == 0.25


def test_pooling_right_after_relu_skips_the_zero_ties_and_says_how_many():
    # ReLU input: smallest |x| 0.5; after it the windows are {0, 3, 2, 0} (gap 1) and all zeros
    X = _image([[-1.0, 3.0, -2.0, -1.0], [2.0, -0.5, -3.0, -4.0]])
    model = rp.Sequential(rp.ReLU(), rp.MaxPool2d(2), rp.Flatten())
    assert kink_margin(model, [], X, explain=True) == (
        0.5, "layer 0 (ReLU): smallest |input| 5.000e-01; " + HARMLESS.format(k=1))
    # a gap equal to the ReLU margin leaves the ReLU named (the first layer reaching it)
    X_eq = _image([[-1.0, 3.0, -2.0, -1.0], [2.0, -1.5, -3.0, -4.0]])
    assert kink_margin(model, [], X_eq, explain=True) == (
        1.0, "layer 0 (ReLU): smallest |input| 1.000e+00; " + HARMLESS.format(k=1))
    # a smaller gap is named, with the harmless windows after it
    X_small = _image([[-1.0, 3.0, -2.0, -1.0], [2.875, -1.5, -3.0, -4.0]])
    assert kink_margin(model, [], X_small, explain=True) == (
        0.125, "layer 1 (MaxPool2d): smallest gap between a window's two largest entries 1.250e-01; "
        + HARMLESS.format(k=1))


def test_a_layer_between_relu_and_pooling_makes_the_ties_count():
    X = _image([[-1.0, 3.0, -2.0, -1.0], [2.0, -0.5, -3.0, -4.0]])
    model = rp.Sequential(rp.ReLU(), rp.Tanh(), rp.MaxPool2d(2), rp.Flatten())
    assert kink_margin(model, [], X, explain=True) == (
        0.0, "layer 2 (MaxPool2d): smallest gap between a window's two largest entries 0.000e+00")


def test_one_by_one_pooling_has_no_kink():
    X = _image([[1.0, 2.0], [3.0, 4.0]])
    assert kink_margin(rp.Sequential(rp.MaxPool2d(1), rp.Flatten()), [], X, explain=True) == (
        np.inf, "no ReLU or max pooling: no kinks")


def test_an_empty_batch_has_no_kink():
    assert kink_margin(rp.Sequential(rp.ReLU()), [], np.zeros((0, 3))) == np.inf


def test_parameters_reach_the_forward_pass():
    # Linear(2, 2) then ReLU: the ReLU sees X W^T + b, computed here by hand
    model = rp.Sequential(rp.Linear(2, 2), rp.ReLU())
    W, b = np.array([[1.0, -2.0], [0.5, 4.0]]), np.array([0.25, -1.0])
    X = np.array([[1.0, 1.0], [2.0, -0.5]])
    z = X @ W.T + b  # [[-0.75, 3.5], [3.25, -2.0]]
    assert kink_margin(model, [W, b], X, explain=True) == (
        float(np.abs(z).min()), "layer 1 (ReLU): smallest |input| 7.500e-01")


def test_a_batch_axis_is_required():
    with pytest.raises(ValueError, match=r"^kink_margin: X must have shape \(N, \.\.\.\), got \(3,\)$"):
        kink_margin(rp.Sequential(rp.ReLU()), [], np.ones(3))


def test_a_window_with_one_positive_entry_is_a_real_kink_after_relu():
    # windows after the ReLU: {0, 3, 0, 0} (largest 3: its gap 3 counts) and all zeros (harmless)
    X = _image([[-1.0, 3.0, -2.0, -1.0], [-2.0, -0.5, -3.0, -4.0]])
    model = rp.Sequential(rp.ReLU(), rp.MaxPool2d(2), rp.Flatten())
    assert kink_margin(model, [], X, explain=True) == (
        0.5, "layer 0 (ReLU): smallest |input| 5.000e-01; " + HARMLESS.format(k=1))
    # shifted by 3.5: windows {2.5, 6.5, 1.5, 3} (gap 3.5) and {1.5, 2.5, 0.5, 0} (gap 1, largest not 0)
    X_pos = X + 3.5
    assert kink_margin(model, [], X_pos, explain=True) == (
        0.5, "layer 0 (ReLU): smallest |input| 5.000e-01")


def test_three_by_three_windows_compare_the_two_largest_of_nine():
    X = _image([[1.0, 5.0, 2.0], [9.0, 3.0, 8.5], [4.0, 6.0, 7.0]])
    assert kink_margin(rp.Sequential(rp.MaxPool2d(3), rp.Flatten()), [], X, explain=True) == (
        0.5, "layer 0 (MaxPool2d): smallest gap between a window's two largest entries 5.000e-01")
