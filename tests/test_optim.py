"""The optimizers against brute force: one K-FAC/EKFAC step against the dense
computation with the Kronecker matrix formed explicitly, EKFAC's eigenvalues against
``diag(Q^T F Q)``, K-FAC against exact natural gradient where K-FAC is exact, one exact
natural-gradient step to the minimum of a quadratic, masks, moving averages, KL
clipping, determinism."""

import numpy as np
import pytest
import scipy.linalg

import refprune as rp
from refprune import optim
from refprune.optim import base

from cases import make


def flat_to_vec(model):
    """For each affine layer, the row-major position in ``vec([W_r | b])`` of each flat
    parameter, built from the PyTorch layout alone (weight ``(c, ...)`` raveled, then bias)."""
    perms = []
    for layer in model:
        if isinstance(layer, (rp.Linear, rp.Conv2d)):
            c = layer.out_units
            r = layer.n_weight // c
            p = r + (1 if layer.bias else 0)
            idx = [i * p + j for i in range(c) for j in range(r)]
            idx += [i * p + r for i in range(c)] if layer.bias else []
            perms.append(np.array(idx))
    return perms


def dense_kfac(model, factors, damping, form):
    """The block-diagonal damped K-FAC matrix in flat order, from ``np.kron``."""
    blocks = []
    for (S, A), perm in zip(factors, flat_to_vec(model)):
        if form == "exact":
            K = np.kron(S, A) + damping * np.eye(len(S) * len(A))
        else:
            pi = np.sqrt((np.trace(A) / len(A)) / (np.trace(S) / len(S))) if form == "pi" else 1.0
            r = np.sqrt(damping)
            K = np.kron(S + r / pi * np.eye(len(S)), A + r * pi * np.eye(len(A)))
        blocks.append(K[np.ix_(perm, perm)])
    return scipy.linalg.block_diag(*blocks)


def one_step(opt, m, p, X, y, l, mask=None):
    return rp.flatten_params(opt.step(m, p, X, y, l, mask=mask))


def close(a, b, rtol=1e-10):
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


ARCHS = ["mlp-tanh", "conv-tanh-avgpool", "mlp-sigmoid-softplus"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("loss", ["ce-mean", "mse-sum"])
@pytest.mark.parametrize("form", ["exact", "factored", "pi"])
def test_kfac_step_equals_dense_kronecker_solve(arch, loss, form):
    m, p, X, y, l = make(arch, loss, n=5)
    lr, lam = 0.7, 0.05
    opt = optim.KFAC(lr=lr, damping=lam, damping_form=form, curvature="fisher", ema_decay=0.0)
    new = one_step(opt, m, p, X, y, l)
    factors = rp.kfac(m, p, X, y, l, curvature="fisher").factors()
    g = rp.grad(m, p, X, y, l)
    expected = rp.flatten_params(p) - lr * np.linalg.solve(dense_kfac(m, factors, lam, form), g)
    close(new, expected)


@pytest.mark.parametrize("cg", [False, True])
def test_masked_kfac_step_solves_on_the_free_coordinates(monkeypatch, cg):
    if cg:
        monkeypatch.setattr(base, "DENSE_LIMIT", 0)
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    theta = rp.flatten_params(p)
    mask = np.random.default_rng(1).random(theta.size) > 0.3
    # frozen weights keep their (non-zero) values: weight decay must not move them
    theta = np.where(mask, theta, 0.5 + np.arange(theta.size) / theta.size)
    p = rp.unflatten_params(m, theta)
    lam = 0.1
    opt = optim.KFAC(lr=1.0, damping=lam, damping_form="pi", curvature="ggn", ema_decay=0.0, momentum=0.5,
                     weight_decay=0.01)
    new = one_step(opt, m, p, X, y, l, mask=mask)
    K = dense_kfac(m, rp.kfac(m, p, X, y, l, curvature="ggn").factors(), lam, "pi")
    g = rp.grad(m, p, X, y, l)
    f = np.flatnonzero(mask)
    d = np.zeros_like(theta)
    d[f] = np.linalg.solve(K[np.ix_(f, f)], g[f]) + 0.01 * theta[f]
    close(new, theta - d, rtol=1e-9 if cg else 1e-10)
    assert np.array_equal(new[~mask], theta[~mask])  # bit for bit


def ekfac_dense_from_fisher(m, p, X, y, l, lam):
    """EKFAC from its definition: K-FAC's eigenbasis ``Q = U_S kron U_A`` (flat order)
    and eigenvalues ``diag(Q^T F_l Q)`` of the exact Fisher's layer blocks."""
    F = rp.block_diagonal(m, p, X, y, l, curvature="fisher").to_dense()
    out, o = np.zeros_like(F), 0
    for (S, A), perm in zip(rp.kfac(m, p, X, y, l, curvature="fisher").factors(), flat_to_vec(m)):
        Q = np.kron(np.linalg.eigh(S)[1], np.linalg.eigh(A)[1])[perm]
        k = len(perm)
        Fl = F[o:o + k, o:o + k]
        s = np.diag(Q.T @ Fl @ Q)
        out[o:o + k, o:o + k] = Q @ np.diag(s + lam) @ Q.T
        o += k
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("loss", ["ce-mean", "mse-mean"])
def test_ekfac_step_equals_the_reestimated_eigenvalues(arch, loss):
    m, p, X, y, l = make(arch, loss, n=5)
    lr, lam = 0.5, 0.02
    opt = optim.EKFAC(lr=lr, damping=lam, curvature="fisher", ema_decay=0.0, scale_decay=0.0)
    new = one_step(opt, m, p, X, y, l)
    g = rp.grad(m, p, X, y, l)
    expected = rp.flatten_params(p) - lr * np.linalg.solve(ekfac_dense_from_fisher(m, p, X, y, l, lam), g)
    close(new, expected, rtol=1e-9)
    # and the same as refprune's own EKFAC of the batch
    close(new, rp.flatten_params(p) - lr * (rp.ekfac(m, p, X, y, l, curvature="fisher").inverse(lam) @ g))


def moments_in_basis(m, p, X, y, l, basis):
    """``diag(Q^T F_l Q)`` per layer for the exact Fisher of the batch and given bases."""
    F = rp.block_diagonal(m, p, X, y, l, curvature="fisher").to_dense()
    out, o = [], 0
    for perm, (US, UA) in zip(flat_to_vec(m), basis):
        Q = np.kron(US, UA)[perm]
        k = len(perm)
        out.append(np.diag(Q.T @ F[o:o + k, o:o + k] @ Q))
        o += k
    return out


def test_ekfac_keeps_its_basis_between_refreshes_and_rescales_in_it():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=8)
    opt = optim.EKFAC(lr=0.3, damping=0.05, curvature="fisher", ema_decay=0.0, scale_decay=0.9,
                      refresh_interval=3, scale_interval=1)
    batches = [(X[:4], y[:4]), (X[4:], y[4:])] * 2
    params = [p]
    for Xb, yb in batches[:2]:
        params.append(opt.step(m, params[-1], Xb, yb, l))
        if len(params) == 2:
            basis1 = [(b.US.copy(), b.UA.copy()) for b in opt.blocks]
    for b, (US, UA) in zip(opt.blocks, basis1):
        assert np.array_equal(b.US, US) and np.array_equal(b.UA, UA)
    # step 2's eigenvalues: an equal mix (eps_2 = 1/2) of both batches' moments in the first basis
    s1, s2 = (moments_in_basis(m, q, Xb, yb, l, basis1) for q, (Xb, yb) in zip(params[:2], batches))
    for b, a1, a2 in zip(opt.blocks, s1, s2):
        close(b.scales.ravel(), 0.5 * a1 + 0.5 * a2)
    # the third step keeps the basis; the fourth refreshes it and restarts the average
    params.append(opt.step(m, params[-1], *batches[2], l))
    assert np.array_equal(opt.blocks[0].US, basis1[0][0])
    opt.step(m, params[-1], *batches[3], l)
    assert not np.array_equal(opt.blocks[0].US, basis1[0][0])
    basis4 = [(b.US, b.UA) for b in opt.blocks]
    for b, a4 in zip(opt.blocks, moments_in_basis(m, params[-1], *batches[3], l, basis4)):
        close(b.scales.ravel(), a4)


def test_kfac_equals_exact_natural_gradient_on_one_layer_with_squared_error():
    # one affine layer and squared error: the GGN is (2R I) kron sum_n a a^T exactly
    rng = np.random.default_rng(0)
    m = rp.Sequential(rp.Linear(4, 3))
    p = m.init(1)
    X, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    l = rp.MSELoss("mean")
    kw = dict(lr=0.8, damping=0.03, momentum=0.0)
    kf = one_step(optim.KFAC(damping_form="exact", curvature="fisher", ema_decay=0.0, **kw), m, p, X, y, l)
    ng = one_step(optim.NaturalGradient(curvature="fisher", **kw), m, p, X, y, l)
    close(kf, ng)


def test_kfac_equals_block_natural_gradient_on_a_deep_linear_net():
    # deep linear net, squared error: each layer's GGN block is exactly S kron A (the
    # Jacobian of the output with respect to a layer's output is the same for every
    # sample); the blocks between layers are not zero, so K-FAC is the exact
    # *block-diagonal* natural gradient, not the full one
    rng = np.random.default_rng(2)
    m = rp.Sequential(rp.Linear(3, 4), rp.Linear(4, 4), rp.Linear(4, 2))
    p = m.init(3)
    X, y = rng.standard_normal((9, 3)), rng.standard_normal((9, 2))
    l = rp.MSELoss("sum")
    kw = dict(lr=1.0, damping=0.01)
    kf = one_step(optim.KFAC(damping_form="exact", curvature="ggn", ema_decay=0.0, **kw), m, p, X, y, l)
    block = one_step(optim.NaturalGradient(curvature="ggn", structure="layer", **kw), m, p, X, y, l)
    full = one_step(optim.NaturalGradient(curvature="ggn", **kw), m, p, X, y, l)
    close(kf, block)
    assert np.abs(kf - full).max() > 1e-3 * np.abs(full).max()


@pytest.mark.parametrize("curvature", ["ggn", "hessian", "fisher"])
def test_exact_natural_gradient_reaches_a_quadratics_minimum_in_one_step(curvature):
    rng = np.random.default_rng(4)
    m = rp.Sequential(rp.Linear(5, 2))
    p = m.init(0)
    X, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 2))
    l = rp.MSELoss("mean")
    new = rp.unflatten_params(m, one_step(optim.NaturalGradient(lr=1.0, curvature=curvature, damping=0.0),
                                          m, p, X, y, l))
    # least squares on [X, 1]
    coef = np.linalg.lstsq(np.hstack([X, np.ones((20, 1))]), y, rcond=None)[0]
    close(new[0], coef[:5].T)
    close(new[1], coef[5])
    # K-FAC is exact here too, so undamped K-FAC is Newton's method
    kf = rp.unflatten_params(m, one_step(optim.KFAC(lr=1.0, damping=0.0, damping_form="exact", curvature="ggn",
                                                    ema_decay=0.0), m, p, X, y, l))
    close(kf[0], coef[:5].T, rtol=1e-9)


def test_moving_average_of_the_factors():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=8)
    opt = optim.KFAC(lr=0.1, damping=0.1, curvature="mc_fisher", ema_decay=0.9, seed=3)
    p1 = opt.step(m, p, X[:4], y[:4], l)
    opt.step(m, p1, X[4:], y[4:], l)
    f1 = rp.kfac(m, p, X[:4], y[:4], l, curvature="mc_fisher", seed=[3, 1]).factors()
    f2 = rp.kfac(m, p1, X[4:], y[4:], l, curvature="mc_fisher", seed=[3, 2]).factors()
    # eps_2 = min(0.9, 1 - 1/2): an equal mix
    for b, (S1, A1), (S2, A2) in zip(opt.blocks, f1, f2):
        close(b.S, 0.5 * S1 + 0.5 * S2)
        close(b.A, 0.5 * A1 + 0.5 * A2)


def test_kl_clipping_scales_the_step_to_the_bound():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=6)
    lr, lam = 1.0, 0.01
    free = one_step(optim.KFAC(lr=lr, damping=lam, curvature="fisher", ema_decay=0.0), m, p, X, y, l)
    d = (rp.flatten_params(p) - free) / lr
    g = rp.grad(m, p, X, y, l)
    vg = lr ** 2 * d @ g
    for c in (vg / 4, vg * 4):
        opt = optim.KFAC(lr=lr, damping=lam, curvature="fisher", ema_decay=0.0, kl_clip=c)
        clipped = one_step(opt, m, p, X, y, l)
        nu = min(1.0, np.sqrt(c / vg))
        close(rp.flatten_params(p) - clipped, nu * lr * d)
        assert opt.last_nu == pytest.approx(nu, rel=1e-12)


def test_sgd_is_pytorchs_update_written_out():
    m, p, X, y, l = make("conv-tanh-avgpool", "ce-mean", n=6)
    lr, mu, wd = 0.05, 0.9, 0.01
    opt = optim.SGD(lr=lr, momentum=mu, weight_decay=wd)
    theta, buf, q = rp.flatten_params(p), 0.0, p
    for i in range(3):
        q = opt.step(m, q, X, y, l)
        buf = mu * buf + rp.grad(m, rp.unflatten_params(m, theta), X, y, l) + wd * theta
        theta = theta - lr * buf
        close(rp.flatten_params(q), theta, rtol=1e-14)


@pytest.mark.parametrize("make_opt", [
    lambda: optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda: optim.NaturalGradient(lr=0.3, curvature="fisher", damping=0.1, momentum=0.5, weight_decay=1e-3),
    lambda: optim.KFAC(lr=0.2, damping=0.1, refresh_interval=2, momentum=0.5, weight_decay=1e-3),
    lambda: optim.EKFAC(lr=0.2, damping=0.1, refresh_interval=3, scale_interval=2, momentum=0.5, weight_decay=1e-3),
], ids=["sgd", "natural", "kfac", "ekfac"])
def test_training_keeps_pruned_weights_zero_and_is_deterministic(make_opt):
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=12)
    theta = rp.flatten_params(p)
    mask = np.ones(theta.size, bool)
    mask[[0, 3, 7, 12, 20]] = False
    # pruned weights (zero) and frozen ones (non-zero: weight decay would move them) keep their values
    start = theta * mask
    start[[7, 20]] = [0.75, -1.25]
    p0 = rp.unflatten_params(m, start)
    X0 = X.copy()
    runs = [rp.train(m, p0, X, y, l, epochs=3, batch_size=4, mask=mask, optimizer=make_opt(), seed=5)
            for _ in range(2)]
    a, b = (rp.flatten_params(r[0]) for r in runs)
    assert np.array_equal(a, b) and runs[0][1] == runs[1][1]
    assert np.array_equal(a[~mask], start[~mask]) and not np.array_equal(a[mask], start[mask])
    assert runs[0][1][-1] < runs[0][1][0]
    assert np.array_equal(X, X0)


def test_mc_targets_follow_the_optimizer_seed():
    m, p, X, y, l = make("mlp-tanh", "ce-mean", n=8)
    a, b, c = (one_step(optim.KFAC(lr=0.5, damping=0.01, seed=s, ema_decay=0.0), m, p, X, y, l) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_train_default_is_sgd_with_the_old_defaults():
    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=10)
    a = rp.train(m, p, X, y, l, epochs=2, batch_size=3, seed=1)
    b = rp.train(m, p, X, y, l, epochs=2, batch_size=3, seed=1, optimizer=optim.SGD(lr=0.1, momentum=0.9))
    assert np.array_equal(rp.flatten_params(a[0]), rp.flatten_params(b[0]))


def test_singular_preconditioner_is_named():
    rng = np.random.default_rng(0)
    m = rp.Sequential(rp.Linear(5, 2))
    X, y = rng.standard_normal((2, 5)), rng.standard_normal((2, 2))  # rank 2 < 6 inputs
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite.*larger damping"):
        optim.NaturalGradient(damping=0.0, curvature="ggn").step(m, m.init(0), X, y, rp.MSELoss())
    with pytest.raises(np.linalg.LinAlgError, match="larger damping"):
        optim.KFAC(damping=0.0, damping_form="exact", curvature="ggn").step(m, m.init(0), X, y, rp.MSELoss())


def test_conjugate_gradients_against_a_direct_solve():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((30, 30))
    M = B @ B.T + 0.1 * np.eye(30)
    b = rng.standard_normal(30)
    close(base.conjugate_gradients(lambda v: M @ v, b, "M"), np.linalg.solve(M, b), rtol=1e-9)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        base.conjugate_gradients(lambda v: -v, b, "minus I")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("curvature", ["mc_fisher", "fisher", "empirical_fisher"])
def test_gradient_from_the_statistics_pass_is_the_gradient(arch, curvature):
    from refprune.checks import validate
    from refprune.curvature.kronecker import FactorStatistics, layer_statistics
    from refprune.curvature.output_factors import OutputFactor

    m, p, X, y, l = make(arch, "ce-mean", n=7)
    inp = validate(m, p, X, y, l)
    stats = FactorStatistics("expand")
    g = layer_statistics(inp, OutputFactor(inp, curvature, 2, 0), stats.visit, gradient=True)
    close(g, rp.grad(m, p, X, y, l), rtol=1e-13)
    # and the statistics are those of a pass without the gradient column
    for b, (S, A) in zip(stats.blocks(inp, "fold"), rp.kfac(m, p, X, y, l, curvature=curvature,
                                                              **({"samples": 2} if curvature == "mc_fisher" else {})).factors()):
        close(b.S, S, rtol=1e-13)
        close(b.A, A, rtol=1e-13)


def test_natural_gradient_averages_its_matrix():
    m, p, X, y, l = make("mlp-tanh", "mse-mean", n=8)
    lr, lam = 0.5, 0.1
    opt = optim.NaturalGradient(lr=lr, curvature="ggn", damping=lam, ema_decay=0.9)
    p1 = opt.step(m, p, X[:4], y[:4], l)
    p2 = rp.flatten_params(opt.step(m, p1, X[4:], y[4:], l))
    # eps_2 = min(0.9, 1 - 1/2): an equal mix of the two batches' matrices
    F = 0.5 * rp.ggn(m, p, X[:4], y[:4], l) + 0.5 * rp.ggn(m, p1, X[4:], y[4:], l)
    g = rp.grad(m, p1, X[4:], y[4:], l)
    close(p2, rp.flatten_params(p1) - lr * np.linalg.solve(F + lam * np.eye(len(F)), g))
