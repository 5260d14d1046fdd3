"""Binary cross-entropy on logits (``rp.BCEWithLogitsLoss``, docs/derivations.md §3):
its value, gradient and ``Lambda`` against finite differences and closed forms, against
PyTorch, its Fisher and Monte Carlo draws, extreme logits, and the libraries that have
the loss for one output only (BackPACK)."""

import math

import numpy as np
import pytest

import refprune as rp
from refprune.curvature.output_factors import hessian_sqrt
from refprune.testing import assert_close

from cases import make

LOSSES = [rp.BCEWithLogitsLoss("mean"), rp.BCEWithLogitsLoss("sum")]


def outputs(seed=0, n=4, c=3, scale=3.0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, c)), rng.random((n, c))


def reference_loss(f, y):
    """``-[y log sigma + (1 - y) log(1 - sigma)]`` per entry, written directly with
    ``math`` (no softplus): valid for the moderate ``|f|`` used with it."""
    out = np.empty_like(f)
    for idx in np.ndindex(f.shape):
        s = 1.0 / (1.0 + math.exp(-f[idx]))
        out[idx] = -(y[idx] * math.log(s) + (1.0 - y[idx]) * math.log(1.0 - s))
    return out


def test_value_gradient_and_lambda_against_closed_forms_and_differences():
    f, y = outputs()
    loss = rp.BCEWithLogitsLoss()
    assert_close(loss.per_sample(f, y), reference_loss(f, y).sum(1), 1e-13, 0, "l_n")
    # gradient by central differences of l_n, output by output
    h = 1e-6
    fd = np.empty_like(f)
    for c in range(f.shape[1]):
        e = np.zeros_like(f)
        e[:, c] = h
        fd[:, c] = (loss.per_sample(f + e, y) - loss.per_sample(f - e, y)) / (2 * h)
    assert_close(loss.grad(f, y), fd, 1e-8, 1e-10, "dl/df vs differences")
    # Lambda V by differences of the gradient, and the closed form sigma (1 - sigma)
    V = np.random.default_rng(1).standard_normal((4, 2, 3))
    fdH = np.stack([(loss.grad(f + h * V[:, k], y) - loss.grad(f - h * V[:, k], y)) / (2 * h) for k in range(2)], 1)
    assert_close(loss.hessian_matvec(f, y, V), fdH, 1e-8, 1e-10, "Lambda V vs differences")
    s = 1.0 / (1.0 + np.exp(-f))
    assert_close(loss.hessian_matvec(f, y, V), (s * (1 - s))[:, None] * V, 1e-14, 0, "Lambda closed form")
    # a square root: Gamma Gamma^T = Lambda
    G = hessian_sqrt(loss, f)
    assert_close(np.einsum("nkc,nkd->ncd", G, G), np.stack([np.diag(v) for v in s * (1 - s)]), 1e-14, 0,
                 "Gamma Gamma^T")


def test_lambda_does_not_depend_on_the_targets_and_the_fisher_equals_it():
    f, y = outputs(2)
    loss = rp.BCEWithLogitsLoss("sum")
    V = np.random.default_rng(3).standard_normal((4, 5, 3))
    assert_close(loss.hessian_matvec(f, y, V), loss.hessian_matvec(f, 1 - y, V), 0, 0, "Lambda independent of y")
    # E_y[g g^T] over the 2^C joint outcomes of the C outputs, enumerated
    p = 1.0 / (1.0 + np.exp(-f))
    E = np.zeros((4, 3, 3))
    for bits in np.ndindex(*(2,) * 3):
        yy = np.broadcast_to(np.array(bits, float), f.shape)
        prob = np.prod(np.where(yy == 1, p, 1 - p), axis=1)
        g = p - yy
        E += prob[:, None, None] * g[:, :, None] * g[:, None, :]
    assert_close(loss.fisher_matvec(f, V), np.einsum("ncd,nkd->nkc", E, V), 1e-13, 1e-15, "E[g g^T] V")


def test_scale_is_torchs():
    assert rp.BCEWithLogitsLoss("mean").scale(4, 3) == 1 / 12
    assert rp.BCEWithLogitsLoss("sum").scale(4, 3) == 1.0
    assert repr(rp.BCEWithLogitsLoss("sum")) == "BCEWithLogitsLoss(reduction='sum')"


def test_bernoulli_draws():
    """Draws of 0.0 and 1.0 with frequencies ``p``: over S = 20000 draws each frequency is
    within 5 binomial standard deviations ``sqrt(p q / S)`` (probability of a false alarm
    below 6e-7 per entry by the normal approximation; the seed is fixed)."""
    f = np.array([[-3.0, 0.0, 0.4], [2.0, -0.7, 5.0]])
    loss = rp.BCEWithLogitsLoss()
    S = 20000
    t = loss.sample(f, np.random.default_rng(0), S)
    assert t.shape == (S, 2, 3) and t.dtype == np.float64
    assert set(np.unique(t)) == {0.0, 1.0}
    p = 1.0 / (1.0 + np.exp(-f))
    assert np.all(np.abs(t.mean(0) - p) <= 5 * np.sqrt(p * (1 - p) / S))
    # a wrong probability (the softmax over the outputs) is outside that bound
    q = np.exp(f) / np.exp(f).sum(1, keepdims=True)
    assert np.any(np.abs(t.mean(0) - q) > 5 * np.sqrt(q * (1 - q) / S))


@pytest.mark.parametrize("loss", LOSSES, ids=["mean", "sum"])
def test_mc_fisher_mean_of_per_draw_fishers_within_its_standard_error(loss):
    """``F_MC`` over S draws is the mean of S i.i.d. matrices ``F_s = R sum_n g_n(y_s)
    g_n(y_s)^T`` (built here from per-sample gradients at each draw, another route than
    ``rp.fisher``) with mean ``F``; every entry of the mean is within 5 of its standard
    errors ``std_s / sqrt(S)`` of the true Fisher (a false alarm has probability about
    6e-7 per entry by the central limit theorem; the seed is fixed)."""
    model, params, X, y, _ = make("mlp-tanh", "bce-mean", n=4)
    F = rp.fisher(model, params, X, y, loss, curvature="fisher")
    f = model(params, X)
    R = loss.scale(*f.shape)
    S = 400
    draws = loss.sample(f, np.random.default_rng(5), S)
    Fs = np.empty((S,) + F.shape)
    for s in range(S):
        rows = rp.per_sample_grads(model, params, X, draws[s], loss)  # rows R g_n
        Fs[s] = rows.T @ rows / R
    Fmc = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=draws)
    assert_close(Fmc, Fs.mean(0), 1e-11, 1e-13 * np.abs(F).max(), "F_MC vs mean of per-draw Fishers")
    se = Fs.std(0, ddof=1) / np.sqrt(S)
    assert np.all(np.abs(Fmc - F) <= 5 * se + 1e-12 * np.abs(F).max())
    assert se.max() < 0.1 * np.abs(F).max()  # the bound is not vacuous
    # draws from Bernoulli(1/2) instead of sigmoid(f) do not pass it
    wrong = (np.random.default_rng(6).random((S,) + f.shape) < 0.5).astype(float)
    Fw = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", targets=wrong)
    assert np.any(np.abs(Fw - F) > 5 * se + 1e-12 * np.abs(F).max())


@pytest.mark.parametrize("arch", ["mlp-sigmoid-softplus", "conv-tanh-avgpool"])
@pytest.mark.parametrize("loss", LOSSES, ids=["mean", "sum"])
def test_ggn_equals_fisher_and_differs_from_the_hessian(arch, loss):
    model, params, X, y, _ = make(arch, "bce-mean", n=3)
    G = rp.ggn(model, params, X, y, loss)
    assert_close(rp.fisher(model, params, X, y, loss, curvature="fisher"), G, 1e-12, 1e-14 * np.abs(G).max(),
                 "true Fisher vs GGN")
    H = rp.hessian(model, params, X, y, loss)
    assert np.abs(H - G).max() > 1e-3 * np.abs(G).max()  # the residual is there
    assert_close(H - G, rp.residual(model, params, X, y, loss), 1e-10, 1e-13, "H - G = residual")


@pytest.mark.parametrize("y_kind", ["hard", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_against_torch(reduction, y_kind):
    torch = pytest.importorskip("torch")
    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    params = [2.0 * p for p in model.init(1)]
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, (5, 2)).astype(float) if y_kind == "hard" else rng.random((5, 2))
    loss = rp.BCEWithLogitsLoss(reduction)
    tm, tp = rp.to_torch(model, params)
    tl = torch.nn.BCEWithLogitsLoss(reduction=reduction)
    value = tl(tm(torch.from_numpy(X)), torch.from_numpy(y))
    assert_close(rp.loss(model, params, X, y, loss), value.item(), 1e-14, 0, "loss")
    g = torch.autograd.grad(value, tp)
    assert_close(rp.grad(model, params, X, y, loss), np.concatenate([t.numpy().ravel() for t in g]), 1e-12, 1e-15,
                 "gradient")
    names = [k for k, _ in tm.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.size for p in params]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def L(theta):  # torch's own module, not refprune's torch_loss
        ps = [t.reshape(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return tl(torch.func.functional_call(tm, dict(zip(names, ps)), (Xt,)), yt)

    H = torch.func.hessian(L)(torch.from_numpy(rp.flatten_params(params))).numpy()
    assert_close(rp.hessian(model, params, X, y, loss), H, 1e-11, 1e-13 * np.abs(H).max(), "Hessian")
    assert_close(rp.bridges.torch_hessian(model, params, X, y, loss), H, 1e-13, 1e-15 * np.abs(H).max(),
                 "torch_hessian bridge")


@pytest.mark.parametrize("big", [800.0, 40.0])
def test_extreme_logits_stay_finite_and_exact(big):
    """``|f| = 800`` overflows ``exp``; the stable forms give the correctly rounded values:
    ``l = |f|`` where the target is the wrong side, 0 (``log1p(e^-800)`` underflows) where
    it is right, ``grad = sigma(f) - y`` with ``sigma = 0`` or 1, and
    ``Lambda = e^-|f| / (1 + e^-|f|)^2`` (0 at 800; about ``4.2e-18`` at 40, where
    ``p (1 - p)`` computed as ``p - p^2`` would give 0)."""
    loss = rp.BCEWithLogitsLoss("sum")
    f = np.array([[big, -big, big, -big]])
    y = np.array([[1.0, 0.0, 0.0, 1.0]])
    e = math.exp(-big)
    right = math.log1p(e)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the rounding
        l = loss.per_sample(f, y)
        g = loss.grad(f, y)
        lam = loss.hessian_matvec(f, y, np.ones((1, 1, 4)))[0, 0]
        fis = loss.fisher_matvec(f, np.eye(4)[None])[0]
        sq = hessian_sqrt(loss, f)[0]
    assert l[0] == 2 * right + 2 * big
    sig, low = 1.0 / (1.0 + e), e / (1.0 + e)  # sigma(big), sigma(-big)
    np.testing.assert_array_equal(g[0], [sig - 1, low, sig, low - 1])
    lam_exact = e / (1.0 + e) ** 2
    assert_close(lam, np.full(4, lam_exact), 1e-15, 0, "Lambda at |f| = big")
    assert_close(np.diag(fis), np.full(4, lam_exact), 1e-15, 0, "Fisher at |f| = big")
    assert_close(np.diag(sq) ** 2, np.full(4, lam_exact), 1e-15, 0, "Gamma^2 at |f| = big")
    draws = loss.sample(f, np.random.default_rng(0), 50)
    if big == 800.0:
        np.testing.assert_array_equal(draws, np.broadcast_to([[1.0, 0.0, 1.0, 0.0]], (50, 1, 4)))
    # through a network: a Linear layer whose output is +-big
    model = rp.Sequential(rp.Linear(1, 2))
    params = [np.array([[big], [-big]]), np.zeros(2)]
    X, yy = np.ones((1, 1)), np.array([[0.0, 0.0]])
    assert rp.loss(model, params, X, yy, loss) == big + right
    H = rp.hessian(model, params, X, yy, loss)
    assert np.all(np.isfinite(H))
    assert_close(np.diag(H), np.full(4, lam_exact), 1e-15, 0, "Hessian diagonal at |f| = big")


def test_backpack_kflr_and_diagonals_with_one_output():
    """BackPACK 1.7 has BCEWithLogitsLoss for one output (C = 1): its KFLR factors and
    exact diagonals equal refprune's (converted by express_kfac for KFLR)."""
    torch = pytest.importorskip("torch")
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import KFLR, DiagGGNExact, DiagHessian

    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 1))
    params = [2.0 * p for p in model.init(0)]
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, (6, 1)).astype(float)
    for reduction in ("mean", "sum"):
        loss = rp.BCEWithLogitsLoss(reduction)
        tm, tp = rp.to_torch(model, params)
        tm, lf = backpack.extend(tm), backpack.extend(torch.nn.BCEWithLogitsLoss(reduction=reduction))
        out = lf(tm(torch.from_numpy(X)), torch.from_numpy(y))
        with backpack.backpack(KFLR(), DiagHessian(), DiagGGNExact()):
            out.backward()
        diag_h = np.concatenate([p.diag_h.detach().numpy().ravel() for p in tp])
        diag_g = np.concatenate([p.diag_ggn_exact.detach().numpy().ravel() for p in tp])
        assert_close(rp.hessian_diagonal(model, params, X, y, loss), diag_h, 1e-10, 1e-13, "DiagHessian")
        assert_close(rp.ggn_diagonal(model, params, X, y, loss), diag_g, 1e-10, 1e-13, "DiagGGNExact")
        mods = [m for m in tm.modules() if isinstance(m, torch.nn.Linear)]
        for m, f in zip(mods, rp.express_kfac(model, params, X, y, loss, "backpack")):
            for a, b in zip(f["weight"], m.weight.kflr):
                assert_close(a, b.detach().numpy(), 1e-10, 1e-13, "weight.kflr")
            assert_close(f["bias"][0], m.bias.kflr[0].detach().numpy(), 1e-10, 1e-13, "bias.kflr")


def test_library_refusals_by_name():
    args = make("mlp-tanh", "bce-mean", n=3)
    with pytest.raises(ValueError, match=r"BackPACK supports BCEWithLogitsLoss for one output only \(C = 1\), "
                                         r"the model has C = 3"):
        rp.express_kfac(*args, "backpack")
    with pytest.raises(ValueError, match="ASDL's fisher_exact and fisher_mc support loss_type"):
        rp.express_kfac(*args, "asdl", curvature="mc_fisher")
    assert len(rp.express_kfac(*args, "asdl", curvature="empirical_fisher")) == 2
    # nngeometry's binary variant: c = (1/N)/R = C for "mean", K = C columns
    N, C = 3, 3
    (S, A) = rp.kfac(*args).factors()[1]
    got = rp.express_kfac(*args, "nngeometry")[1]
    assert_close(got["A"], np.sqrt(C) * A, 1e-14, 0, "nngeometry A")
    assert_close(got["G"], C * S / np.sqrt(C), 1e-14, 0, "nngeometry G")


def test_torch_modules_with_weights_are_refused_by_name():
    torch = pytest.importorskip("torch")
    model = rp.Sequential(rp.Linear(2, 1))
    X, y = np.ones((2, 2)), np.ones((2, 1))
    with pytest.raises(TypeError, match=r"use refprune's rp.BCEWithLogitsLoss\(reduction='sum'\)$"):
        rp.loss(model, model.init(), X, y, torch.nn.BCEWithLogitsLoss(reduction="sum"))
    with pytest.raises(TypeError, match=r"refprune does not model weight= or pos_weight="):
        rp.loss(model, model.init(), X, y, torch.nn.BCEWithLogitsLoss(weight=torch.ones(1), pos_weight=torch.ones(1)))
    with pytest.raises(TypeError, match=r"drop the network's final Sigmoid and use rp.BCEWithLogitsLoss"):
        rp.loss(model, model.init(), X, y, torch.nn.BCELoss())
    # torch_loss gives torch's functional form of refprune's loss
    out, t = torch.tensor([[0.3], [-2.0]], dtype=torch.float64), torch.tensor([[1.0], [0.25]], dtype=torch.float64)
    ref = torch.nn.BCEWithLogitsLoss(reduction="sum")(out, t)
    assert rp.bridges.torch_loss(rp.BCEWithLogitsLoss("sum"))(out, t).item() == ref.item()


def test_targets_are_not_modified_and_integers_are_accepted():
    model = rp.Sequential(rp.Linear(2, 2))
    X = np.ones((2, 2))
    y = np.array([[0, 1], [1, 1]])
    before = y.copy()
    a = rp.loss(model, model.init(), X, y, rp.BCEWithLogitsLoss())
    assert np.array_equal(y, before)
    assert a == rp.loss(model, model.init(), X, y.astype(float), rp.BCEWithLogitsLoss())
    assert a == rp.loss(model, model.init(), X, y.astype(bool), rp.BCEWithLogitsLoss())


def test_xor_with_one_sigmoid_output_trains_and_prunes():
    """The papers' XOR (2-2-1, one sigmoid output read as BCEWithLogitsLoss on its
    logit): training lowers the loss; OBS saliencies equal ``w_q^2 / (2 [H^-1]_qq)``
    from the dense Hessian; K-FAC of one sample equals the exact GGN blocks."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    model = rp.Sequential(rp.Linear(2, 2), rp.Tanh(), rp.Linear(2, 1))
    loss = rp.BCEWithLogitsLoss("sum")
    params = [2.0 * p for p in model.init(3)]
    trained, history = rp.train(model, params, X, y, loss, epochs=300, batch_size=4, lr=0.5)
    assert history[-1] < 0.5 * history[0]
    theta = rp.flatten_params(trained)
    H = rp.hessian(model, trained, X, y, loss) + 1e-3 * np.eye(theta.size)
    s = rp.saliencies(model, trained, X, y, loss, method="obs", curvature="hessian", damping=1e-3, include_bias=True)
    ref = theta**2 / (2 * np.diag(np.linalg.inv(H)))
    assert_close(np.asarray(s), ref, 1e-9, 1e-12, "OBS saliencies")
    result = rp.prune(model, trained, X, y, loss, method="obs", count=2, damping=1e-3)
    assert int(np.sum(rp.flatten_params(result.params) == 0)) >= 2
    one = (X[:1], y[:1])
    K = rp.kfac(model, trained, *one, loss)
    G = rp.ggn(model, trained, *one, loss)
    off = model.param_offsets()
    for b, j in zip(K.blocks, (0, 2)):
        assert_close(b.dense(), G[off[j]:off[j + 1], off[j]:off[j + 1]], 1e-12, 1e-15, "K-FAC block, N = 1")
