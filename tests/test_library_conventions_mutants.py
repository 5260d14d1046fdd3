"""``express_kfac`` without the libraries: every library's factors equal refprune's own
``rp.kfac`` factors converted by the relations of docs/conventions.md §8, with ``T``, ``K``
and the loss rescaling ``c`` written out by hand for a fixed network.  (The comparison
against the libraries themselves is tests/test_library_conventions.py, which needs torch.)"""

import numpy as np
import pytest

import refprune as rp


def network():
    """conv (no bias) -> conv (bias) -> Linear (bias), 3 outputs, on 1x4x4 inputs: the
    output locations are T = 3*3 = 9, 2*2 = 4 and 1 (hand-counted: kernel 2, stride 1)."""
    return rp.Sequential(rp.Conv2d(1, 2, 2, bias=False), rp.Tanh(), rp.Conv2d(2, 2, 2), rp.Tanh(), rp.Flatten(),
                         rp.Linear(8, 3))


T = [9, 4, 1]
HAS_BIAS = [False, True, True]
N, C = 4, 3

LOSSES = {"ce-mean": lambda: rp.CrossEntropyLoss("mean"), "ce-sum": lambda: rp.CrossEntropyLoss("sum"),
          "mse-mean": lambda: rp.MSELoss("mean"), "mse-sum": lambda: rp.MSELoss("sum")}
# c = ((1/N) / R) * (1/2 for squared error), R of docs §2: 1/N, 1, 1/(N C), 1
C_HALVED = {"ce-mean": 1.0, "ce-sum": 1.0 / N, "mse-mean": C / 2.0, "mse-sum": 1.0 / (2 * N)}
# ASDL's empirical Fisher: no halving for squared error
C_EMPIRICAL = {"ce-mean": 1.0, "ce-sum": 1.0 / N, "mse-mean": float(C), "mse-sum": 1.0 / N}
# nngeometry's number of back-propagated output columns: C - 1 (cross-entropy) or C
K_NNG = {"ce-mean": C - 1, "ce-sum": C - 1, "mse-mean": C, "mse-sum": C}


def problem(lossname="ce-mean"):
    model = network()
    params = [2.0 * p for p in model.init(0)]
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N, 1, 4, 4))
    loss = LOSSES[lossname]()
    y = rng.integers(0, C, N) if lossname.startswith("ce") else rng.standard_normal((N, C))
    return model, params, X, y, loss


def factors(args, **kw):
    """refprune's own ``(S, A)`` per block."""
    return rp.kfac(*args, **kw).factors()


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14 * max(1.0, np.abs(b).max()))


def differs(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- curvlinops: identical


@pytest.mark.parametrize("approx", ["expand", "reduce"])
@pytest.mark.parametrize("curvature", ["ggn", "empirical_fisher"])
def test_curvlinops_separate_default(approx, curvature):
    args = problem("mse-mean")
    got = rp.express_kfac(*args, "curvlinops", curvature=curvature, approx=approx)
    # separate (curvlinops' default): A covers the weights only, i.e. the folded A without
    # its constant row and column (docs §4); S is the same
    ref = factors(args, curvature=curvature, approx=approx, bias="fold")
    assert len(got) == 3
    for f, (S, A), has_bias in zip(got, ref, HAS_BIAS):
        assert set(f) == {"input_covariance", "gradient_covariance"}
        r = A.shape[0] - (1 if has_bias else 0)
        close(f["input_covariance"], A[:r, :r])
        close(f["gradient_covariance"], S)


@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_curvlinops_fold(approx):
    args = problem("ce-sum")
    got = rp.express_kfac(*args, "curvlinops", approx=approx, bias="fold")
    ref = factors(args, approx=approx, bias="fold")
    for f, (S, A) in zip(got, ref):
        close(f["input_covariance"], A)
        close(f["gradient_covariance"], S)
    # explicit separate is the default
    sep = rp.express_kfac(*args, "curvlinops", approx=approx, bias="separate")
    for f, g in zip(sep, rp.express_kfac(*args, "curvlinops", approx=approx)):
        close(f["input_covariance"], g["input_covariance"])


def test_variants_differ_on_this_network():
    """The tests above can tell expand from reduce, ggn from empirical Fisher, and the
    Monte Carlo options apart on this network (otherwise they would prove nothing)."""
    args = problem("mse-mean")
    e, r = factors(args, approx="expand"), factors(args, approx="reduce")
    assert differs(e[0][0], r[0][0]) and differs(e[0][1], r[0][1])
    assert differs(e[2][0], factors(args, curvature="empirical_fisher")[2][0])
    mc = [factors(args, curvature="mc_fisher", samples=s, seed=d)[2][0] for s, d in ((1, 0), (2, 0), (1, 1))]
    assert differs(mc[0], mc[1]) and differs(mc[0], mc[2])


# ---------------------------------------------------------------- Monte Carlo options and defaults


@pytest.mark.parametrize("library", ["curvlinops", "backpack", "asdl"])
def test_mc_defaults_are_one_draw_seed_zero(library):
    """samples=1, seed=0 as in rp.kfac (docs: "As for refprune.kfac")."""
    args = problem("ce-mean")
    got = rp.express_kfac(*args, library, curvature="mc_fisher")
    ex = factors(args, curvature="mc_fisher", samples=1, seed=0)
    red = factors(args, curvature="mc_fisher", samples=1, seed=0, approx="reduce")
    for f, (S, _), (Sr, _) in zip(got, ex, red):
        if library == "backpack":
            close(f["weight"][0], Sr)
        else:
            close(f["gradient_covariance" if library == "curvlinops" else "B"], S)  # c = 1 for ce-mean


def test_mc_options_reach_kfac():
    args = problem("mse-sum")
    targets = np.random.default_rng(7).standard_normal((2, N, C))
    for kw in (dict(samples=3, seed=5), dict(samples=1, seed=2), dict(targets=targets)):
        ref = factors(args, curvature="mc_fisher", bias="fold", **kw)
        got = rp.express_kfac(*args, "curvlinops", curvature="mc_fisher", bias="fold", **kw)
        for f, (S, A) in zip(got, ref):
            close(f["gradient_covariance"], S)
        red = factors(args, curvature="mc_fisher", approx="reduce", **kw)
        for f, (S, _) in zip(rp.express_kfac(*args, "backpack", curvature="mc_fisher", **kw), red):
            close(f["weight"][0], S)
        for f, (S, _) in zip(rp.express_kfac(*args, "asdl", curvature="mc_fisher", **kw), ref):
            close(f["B"], S / (2 * N))


def test_default_curvature_is_ggn():
    args = problem("mse-mean")
    ref = factors(args, curvature="ggn", bias="fold")
    for f, (S, A) in zip(rp.express_kfac(*args, "curvlinops", bias="fold"), ref):
        close(f["gradient_covariance"], S)
        close(f["input_covariance"], A)


# ---------------------------------------------------------------- BackPACK


@pytest.mark.parametrize("lossname", list(LOSSES))
@pytest.mark.parametrize("curvature", ["ggn", "empirical_fisher"])
def test_backpack(lossname, curvature):
    args = problem(lossname)
    got = rp.express_kfac(*args, "backpack", curvature=curvature)
    ex, red = factors(args, curvature=curvature), factors(args, curvature=curvature, approx="reduce")
    assert len(got) == 3
    for f, (_, A), (S, _), t, has_bias in zip(got, ex, red, T, HAS_BIAS):
        assert set(f) == {"weight", "bias"}
        r = A.shape[0] - (1 if has_bias else 0)
        assert len(f["weight"]) == 2
        close(f["weight"][0], S)  # S_reduce
        close(f["weight"][1], t * A[:r, :r])  # T A_expand, weights only
        if has_bias:
            assert len(f["bias"]) == 1
            close(f["bias"][0], S)
        else:
            assert f["bias"] is None


# ---------------------------------------------------------------- nngeometry


@pytest.mark.parametrize("lossname", list(LOSSES))
@pytest.mark.parametrize("curvature", ["ggn", "fisher"])
def test_nngeometry(lossname, curvature):
    args = problem(lossname)
    got = rp.express_kfac(*args, "nngeometry", curvature=curvature)
    ref = factors(args, curvature=curvature)
    c, k = C_HALVED[lossname], K_NNG[lossname]
    assert len(got) == 3
    for f, (S, A), t in zip(got, ref, T):
        assert set(f) == {"A", "G"}
        close(f["A"], t * np.sqrt(k) * A)  # bias folded
        close(f["G"], c * S / (t * np.sqrt(k)))


# ---------------------------------------------------------------- ASDL


@pytest.mark.parametrize("lossname", list(LOSSES))
@pytest.mark.parametrize("curvature", ["ggn", "empirical_fisher"])
def test_asdl(lossname, curvature):
    args = problem(lossname)
    got = rp.express_kfac(*args, "asdl", curvature=curvature)
    ref = factors(args, curvature=curvature)
    c = (C_EMPIRICAL if curvature == "empirical_fisher" else C_HALVED)[lossname]
    assert len(got) == 3
    for f, (S, A), has_bias in zip(got, ref, HAS_BIAS):
        assert set(f) == {"A", "B"}
        r = A.shape[0] - (1 if has_bias else 0)
        close(f["A"], A[:r, :r])
        close(f["B"], c * S)


# ---------------------------------------------------------------- options that do not apply


@pytest.mark.parametrize("library", ["backpack", "nngeometry", "asdl"])
@pytest.mark.parametrize("kw", [dict(approx="reduce"), dict(bias="fold"), dict(bias="separate"),
                                dict(approx="reduce", bias="fold")])
def test_curvlinops_only_options_refused(library, kw):
    with pytest.raises(ValueError) as e:
        rp.express_kfac(*problem(), library, **kw)
    assert str(e.value) == (f"express_kfac: {library} has one convention; approx= applies to curvlinops and "
                            "acktr, bias= to curvlinops only")


@pytest.mark.parametrize("library", ["backpack", "nngeometry", "asdl"])
def test_explicit_expand_accepted(library):
    args = problem()
    got = rp.express_kfac(*args, library, approx="expand")
    assert len(got) == 3


@pytest.mark.parametrize("curvature", ["mc_fisher", "empirical_fisher", "hessian"])
def test_nngeometry_true_fisher_only(curvature):
    with pytest.raises(ValueError) as e:
        rp.express_kfac(*problem(), "nngeometry", curvature=curvature)
    assert str(e.value) == ("express_kfac: nngeometry's FIM is the true Fisher; curvature must be 'ggn' or "
                            f"'fisher', got {curvature!r}")


def test_unknown_library_refused():
    with pytest.raises(ValueError) as e:
        rp.express_kfac(*problem(), "laplace")
    assert str(e.value) == ("express_kfac: library must be one of ('curvlinops', 'backpack', 'nngeometry', "
                            "'asdl', 'kfac-pytorch', 'eigendamage-pytorch', 'acktr'), got 'laplace'")


def test_inputs_validated():
    model, params, X, y, loss = problem()
    with pytest.raises(ValueError):
        rp.express_kfac(model, params, X[:, :, :3], y, loss, "asdl")
    with pytest.raises((TypeError, ValueError)):
        rp.express_kfac(model, params, X, y, "mse", "nngeometry")
