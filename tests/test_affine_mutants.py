"""``refprune.nn.affine``: the memory check of each pass counted by hand from the shapes
(``docs/conventions.md`` §10: outputs, features and input-shaped results), at the
threshold, for the pass that squares the weights as for the others."""

import numpy as np
import pytest

import refprune as rp
from refprune import memory


def _boundary(monkeypatch, call, need, words):
    """``call`` succeeds with exactly ``need`` bytes available and is refused, naming
    ``words``, with one byte less (no small-allocation shortcut)."""
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    out = call()
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(memory.ArrayTooLargeError, match=words):
        call()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**62)
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_vjp_squared_counts_a_batch_of_samples_times_tangents(monkeypatch, k):
    """Conv2d(2, 4, 3, stride=2, padding=1) on (2, 6, 4) -> (4, 3, 2): per sample the
    outputs 4*6, im2col features 18*6, the input 48 and the padded input 2*8*6 floats;
    ``h`` of shape (3, k, 4, 3, 2) is a batch of 3k such samples.  The result is
    ``(W_r**2)^T`` applied to ``h`` and mapped back by col2im, checked against the
    adjoint of the squared-weight convolution written out entry by entry."""
    rng = np.random.default_rng(1)
    conv = rp.Conv2d(2, 4, 3, stride=2, padding=1)
    w, b = conv.init(rng)
    h = rng.random((3, k, 4, 3, 2))
    per_sample = 4 * 6 + 18 * 6 + 48 + 2 * 8 * 6
    got = _boundary(monkeypatch, lambda: conv.vjp_squared([w, b], (None, (2, 6, 4)), h), 8 * 3 * k * per_sample,
                    rf"^Conv2d\(2, 4, .*\)\.vjp_squared: a batch of {3 * k}: the outputs \({3 * k} x 4 x 6\), "
                    rf"im2col features \({3 * k} x 18 x 6\) and input-shaped results would need")
    # the adjoint, brute force: output (o, i, j) reads input (c, 2i + a - 1, 2j + d - 1)
    want = np.zeros((3, k, 2, 6, 4))
    for o in range(4):
        for c in range(2):
            for a in range(3):
                for d in range(3):
                    for i in range(3):
                        for j in range(2):
                            y, x = 2 * i + a - 1, 2 * j + d - 1
                            if 0 <= y < 6 and 0 <= x < 4:
                                want[:, :, c, y, x] += w[o, c, a, d] ** 2 * h[:, :, o, i, j]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_linear_vjp_squared_counts_its_batch(monkeypatch):
    """Linear(5, 3): per sample 3 outputs, 5 features and 5 inputs; (4, 2, 3) is a batch
    of 8; the result is ``h (W**2)``."""
    rng = np.random.default_rng(2)
    lin = rp.Linear(5, 3)
    w, b = lin.init(rng)
    h = rng.random((4, 2, 3))
    got = _boundary(monkeypatch, lambda: lin.vjp_squared([w, b], (None, (5,)), h), 8 * 8 * (3 + 5 + 5),
                    r"^Linear\(5, 3.*\)\.vjp_squared: a batch of 8: the outputs \(8 x 3 x 1\), features \(8 x 5 x 1\)")
    np.testing.assert_allclose(got, np.einsum("nko,oi->nki", h, w**2), rtol=1e-14)
