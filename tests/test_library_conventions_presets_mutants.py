"""The batch-averaged presets (KFAC-Pytorch, EigenDamage-Pytorch, ACKTR), the rescaling of
the identical libraries and BackPACK's one-output binary cross-entropy, without torch:
refprune's own ``rp.kfac`` factors converted by the relations of docs/conventions.md §8
(module docstring of refprune/library_conventions.py), with ``T``, ``N R`` and the weight
columns written out by hand.  tests/test_library_conventions.py checks the same relations
against re-implementations with torch hooks, which mutation runs cannot import."""

import numpy as np
import pytest

import refprune as rp
from refprune.library_conventions import loss_rescaling

from test_library_conventions_mutants import C, HAS_BIAS, LOSSES, N, T, close, problem

# columns of each layer's weights (in_channels * kernel area, or in_features): hand-counted
R_IN = [1 * 2 * 2, 2 * 2 * 2, 8]
# N R with R of docs/conventions.md §2: 1/N (ce mean), 1 (sum), 1/(N C) (mse mean)
NR = {"ce-mean": 1.0, "ce-sum": float(N), "mse-mean": 1.0 / C, "mse-sum": float(N)}


def draw(lossname, seed=11):
    rng = np.random.default_rng(seed)
    return rng.integers(0, C, (1, N)) if lossname.startswith("ce") else rng.standard_normal((1, N, C))


@pytest.mark.parametrize("library", ["kfac-pytorch", "eigendamage-pytorch"])
@pytest.mark.parametrize("lossname", sorted(LOSSES))
@pytest.mark.parametrize("curvature", ["mc_fisher", "empirical_fisher"])
def test_kfac_pytorch_relations(library, lossname, curvature):
    """A = A_expand / T (bias folded), G = N R T S_expand."""
    args = problem(lossname)
    kw = dict(targets=draw(lossname)) if curvature == "mc_fisher" else {}
    got = rp.express_kfac(*args, library, curvature=curvature, **kw)
    blocks = rp.kfac(*args, curvature=curvature, approx="expand", bias="fold", **kw).blocks
    assert len(got) == 3
    for j, (g, b) in enumerate(zip(got, blocks)):
        assert set(g) == {"A", "G"}
        close(g["A"], b.A / T[j])
        close(g["G"], NR[lossname] * T[j] * b.S)


def test_mc_draws_reach_the_batch_averaged_presets():
    """samples= and seed= are passed on: two draws with seed 4 are refprune's two draws with seed 4."""
    args = problem("ce-sum")
    got = rp.express_kfac(*args, "kfac-pytorch", curvature="mc_fisher", samples=2, seed=4)
    blocks = rp.kfac(*args, curvature="mc_fisher", samples=2, seed=4).blocks
    for j, (g, b) in enumerate(zip(got, blocks)):
        close(g["G"], N * T[j] * b.S)


@pytest.mark.parametrize("lossname", sorted(LOSSES))
@pytest.mark.parametrize("curvature", ["mc_fisher", "empirical_fisher"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_acktr_relations(lossname, curvature, approx):
    """Weights: A = A_expand / T, G = N R T S_expand (reduce: A_reduce, N R S_reduce);
    bias apart: A = [[1]], G = N R S_reduce, None for a layer without bias."""
    args = problem(lossname)
    kw = dict(targets=draw(lossname)) if curvature == "mc_fisher" else {}
    got = rp.express_kfac(*args, "acktr", curvature=curvature, approx=approx, **kw)
    w = rp.kfac(*args, curvature=curvature, approx=approx, bias="fold", **kw).blocks
    r = rp.kfac(*args, curvature=curvature, approx="reduce", bias="fold", **kw).blocks
    assert len(got) == 3
    for j in range(3):
        t = 1 if approx == "reduce" else T[j]
        k = R_IN[j]
        close(got[j]["weight"]["A"], w[j].A[:k, :k] / t)
        close(got[j]["weight"]["G"], NR[lossname] * t * w[j].S)
        if HAS_BIAS[j]:
            close(got[j]["bias"]["A"], np.ones((1, 1)))
            close(got[j]["bias"]["G"], NR[lossname] * r[j].S)
        else:
            assert got[j]["bias"] is None


@pytest.mark.parametrize("bias", ["fold", "separate"])
def test_acktr_bias_option_refused(bias):
    with pytest.raises(ValueError) as e:
        rp.express_kfac(*problem(), "acktr", bias=bias)
    assert str(e.value) == ("express_kfac: acktr keeps the bias apart (its AddBias module); bias= applies to "
                            "curvlinops only")


@pytest.mark.parametrize("library", ["curvlinops", "backpack"])
@pytest.mark.parametrize("lossname", sorted(LOSSES))
@pytest.mark.parametrize("curvature", ["ggn", "empirical_fisher"])
def test_identical_libraries_rescale_by_one(library, lossname, curvature):
    """curvlinops and BackPACK use refprune's loss scaling (docstring table): c = 1 even
    where nngeometry's (1/N)/R is not 1."""
    loss = LOSSES[lossname]()
    assert loss_rescaling(library, loss, N, C, curvature) == 1.0


def test_backpack_binary_cross_entropy_one_output():
    """BackPACK has BCEWithLogitsLoss for C = 1: accepted, weight = [S_reduce, T A_expand]."""
    model = rp.Sequential(rp.Conv2d(1, 2, 2), rp.Tanh(), rp.Flatten(), rp.Linear(18, 1))
    params = model.init(1)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 1, 4, 4))
    y = rng.integers(0, 2, (5, 1)).astype(float)
    args = (model, params, X, y, rp.BCEWithLogitsLoss("sum"))
    got = rp.express_kfac(*args, "backpack")
    e = rp.kfac(*args, approx="expand").blocks
    r = rp.kfac(*args, approx="reduce").blocks
    for j, (t, k) in enumerate([(9, 4), (1, 18)]):
        close(got[j]["weight"][0], r[j].S)
        close(got[j]["weight"][1], t * e[j].A[:k, :k])
        close(got[j]["bias"][0], r[j].S)
