"""``refprune.nn.conv``: the arguments and input shapes Conv2d refuses, each alone (one
bad value among good ones) and with the message in full, and the smallest outputs it
accepts, from PyTorch's output size ``(n + 2 padding - kernel) // stride + 1``."""

import re

import numpy as np
import pytest

import refprune as rp


@pytest.mark.parametrize("kw, shown", [
    (dict(kernel_size=0), "(0, 0), (1, 1), (0, 0)"),
    (dict(kernel_size=(3, 0)), "(3, 0), (1, 1), (0, 0)"),
    (dict(kernel_size=3, stride=(1, 0)), "(3, 3), (1, 0), (0, 0)"),
    (dict(kernel_size=3, padding=(0, -1)), "(3, 3), (1, 1), (0, -1)"),
    (dict(kernel_size=3, stride=2, padding=-1), "(3, 3), (2, 2), (-1, -1)"),
])
def test_each_bad_geometry_alone_is_refused(kw, shown):
    with pytest.raises(ValueError, match="^" + re.escape(
            f"Conv2d: need kernel_size >= 1, stride >= 1, padding >= 0; got {shown}") + "$"):
        rp.Conv2d(1, 2, **kw)


@pytest.mark.parametrize("bias", ["no", 1, None])
def test_bias_must_be_a_bool(bias):
    with pytest.raises(TypeError, match="^" + re.escape(f"Conv2d: bias must be True or False, got {bias!r}") + "$"):
        rp.Conv2d(1, 2, 3, bias=bias)


@pytest.mark.parametrize("in_shape", [(3, 5, 5), (2, 5), (2, 5, 5, 1), (1, 5, 5)])
def test_the_per_sample_input_must_be_c_h_w_with_its_channels(in_shape):
    conv = rp.Conv2d(2, 4, 3)
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{conv!r} expects per-sample input (C=2, H, W), got {in_shape}") + "$"):
        conv.output_shape(in_shape)


@pytest.mark.parametrize("in_shape", [(2, 2, 5), (2, 5, 2), (2, 2, 2)])
def test_an_input_smaller_than_the_kernel_on_either_axis_is_refused(in_shape):
    conv = rp.Conv2d(2, 4, 3)
    with pytest.raises(ValueError, match="^" + re.escape(f"{conv!r}: input {in_shape} is smaller than the kernel")
                       + "$"):
        conv.output_shape(in_shape)


@pytest.mark.parametrize("in_shape, kernel, stride, padding", [
    ((1, 3, 3), 3, 1, 0), ((1, 3, 7), 3, 1, 0), ((1, 7, 3), 3, 2, 0), ((1, 1, 1), 3, 1, 1), ((1, 4, 4), 3, 3, 0)])
def test_outputs_one_wide_are_accepted(in_shape, kernel, stride, padding):
    """One output row or column is a valid convolution (PyTorch gives it); the forward
    pass there is the kernel's dot product with the (padded) window, by hand."""
    conv = rp.Conv2d(1, 1, kernel, stride=stride, padding=padding)
    ho = (in_shape[1] + 2 * padding - kernel) // stride + 1
    wo = (in_shape[2] + 2 * padding - kernel) // stride + 1
    assert conv.output_shape(in_shape) == (1, ho, wo)
    rng = np.random.default_rng(0)
    w, b = conv.init(rng)
    x = rng.standard_normal((1,) + in_shape)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    want = np.array([[np.sum(w[0, 0] * xp[0, 0, i * stride:i * stride + kernel, j * stride:j * stride + kernel])
                      for j in range(wo)] for i in range(ho)]) + b[0]
    got, _ = conv.forward([w, b], x)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-13, atol=1e-15)
