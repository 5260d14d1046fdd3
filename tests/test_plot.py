"""refprune.plot: each picture is drawn from the data it is given; without matplotlib a
clear message says how to install it."""

import sys

import numpy as np
import pytest

import refprune as rp
from refprune import plot

from cases import make


def test_missing_matplotlib_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="refprune.plot needs matplotlib: pip install matplotlib"):
        plot.spectra({"H": np.eye(2)})


def test_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    args = make("mlp-tanh", "ce-mean", n=5)
    H, G = rp.hessian(*args), rp.ggn(*args)
    fig = plot.heatmaps({"Hessian": H, "GGN": G, "K-FAC": rp.kfac(*args).to_dense()}, path=tmp_path / "h.png")
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 3 and np.array_equal(np.asarray(images[0]), H)
    assert (tmp_path / "h.png").stat().st_size > 1000
    fig = plot.spectra({"Hessian": H, "GGN": G})
    line = fig.axes[0].lines[0].get_ydata()
    assert np.allclose(line, np.sort(np.linalg.eigvalsh(H))[::-1])
    fig = plot.accuracy_vs_sparsity({"obs": ([0.1, 0.5], [0.9, 0.8])})
    assert list(fig.axes[0].lines[0].get_ydata()) == [0.9, 0.8]
    fig = plot.predicted_vs_actual({"obs": ([1e-3, 1e-2], [2e-3, 1e-2])})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="must be a square matrix"):
        plot.heatmaps({"bad": np.ones((2, 3))})
