"""Exact diagonals (``refprune.curvature.diagonal``) under a tiny work budget, so that the
samples and the output units are split into many chunks: every chunk's contribution
must be accumulated, each over its own samples; and the option checks name the
function that was called."""

import concurrent.futures as cf

import numpy as np
import pytest

import refprune as rp
from refprune import derivatives
from refprune.nn import AffineLayer
from refprune.testing import assert_close

from cases import make, small_mlp

KINDS = [("hessian", {}), ("ggn", {}), ("fisher", {}), ("mc_fisher", dict(samples=2, seed=1)),
         ("empirical_fisher", {})]


@pytest.mark.parametrize("arch, loss", [("conv-tanh-avgpool", "ce-sum"), ("mlp-sigmoid-softplus", "mse-mean")])
def test_chunked_diagonals_equal_the_matrices_diagonals(arch, loss, monkeypatch):
    m, p, X, y, l = make(arch, loss, n=5)
    full = {k: np.diag(rp.curvature.exact.exact_matrix(m, p, X, y, l, curvature=k, **mc)) for k, mc in KINDS}
    chunks, unit_chunks = [], []
    real_pass, real_grad = derivatives.gradient_pass, AffineLayer.per_sample_param_grad

    def gradient_pass(inp, X=None, y=None):
        chunks.append(len(inp.X if X is None else X))
        return real_pass(inp, X, y)

    def per_sample_param_grad(self, cache, d, units=None):
        units_seen = (0, self.out_units) if units is None else units
        unit_chunks.append(units_seen[1] - units_seen[0])
        return real_grad(self, cache, d, units=units)

    monkeypatch.setattr(derivatives, "CHUNK_FLOATS", 1)
    monkeypatch.setattr(derivatives, "gradient_pass", gradient_pass)
    monkeypatch.setattr(AffineLayer, "per_sample_param_grad", per_sample_param_grad)
    for k, mc in KINDS:
        chunks.clear()
        unit_chunks.clear()
        d = rp.curvature_diagonal(m, p, X, y, l, curvature=k, **mc)
        assert_close(d, full[k], 1e-11, 1e-13, f"{arch}/{k}: chunked diagonal")
        assert chunks and set(chunks) == {1}, "one sample per chunk under a budget of one float"
        if "conv" in arch:  # a Linear layer's squared gradients take the rank-one path, not unit chunks
            assert unit_chunks and set(unit_chunks) == {1}, "one output unit per chunk"


def test_the_function_called_is_named():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    for fn, name in ((rp.hessian_diagonal, "hessian_diagonal"), (rp.ggn_diagonal, "ggn_diagonal"),
                     (rp.fisher_diagonal, "fisher_diagonal")):
        with pytest.raises(ValueError, match=rf"^{name}: shards must be"):
            fn(m, p, X, y, l, shards=0)
        with pytest.raises(ValueError, match=rf"^{name}: shards=7 is more than the 6 samples$"):
            fn(m, p, X, y, l, shards=7)
        with pytest.raises(TypeError, match=rf"^{name}: executor must be None"):
            fn(m, p, X, y, l, executor=object())
    with pytest.raises(ValueError, match=r"^fisher_diagonal: curvature must be one of"):
        rp.fisher_diagonal(m, p, X, y, l, curvature="ggn")
    with pytest.raises(ValueError, match=r"^fisher_diagonal: targets="):
        rp.fisher_diagonal(m, p, X, y, l, curvature="fisher", targets=np.zeros((1, 6), dtype=int))


def test_diagonal_tasks_are_silent_and_equal(capsys):
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    with cf.ThreadPoolExecutor(2) as ex:
        for k, mc in KINDS:
            d = rp.curvature_diagonal(m, p, X, y, l, curvature=k, executor=ex, shards=3, **mc)
            assert_close(d, rp.curvature_diagonal(m, p, X, y, l, curvature=k, **mc), 1e-12, 1e-14, k)
    assert capsys.readouterr().err == ""


def test_the_fisher_diagonal_names_itself_in_its_messages():
    m, p, X, y, l = small_mlp()
    with pytest.raises(ValueError, match=r"^fisher_diagonal: targets= is for curvature='mc_fisher', "
                                         r"got curvature='empirical_fisher' \(only Monte Carlo draws read it; leave it out\)$"):
        rp.fisher_diagonal(m, p, X, y, l, curvature="empirical_fisher", targets=np.zeros((1, len(y)), dtype=int))
    with pytest.raises(ValueError, match=r"^ggn_diagonal: "):
        rp.ggn_diagonal(m, p, X, y, l, shards=0)
