"""The optimizers' shared machinery against closed forms and hand-built expectations:
conjugate gradients against the Krylov-subspace solution it must equal, the restricted
solve's branches, moving averages, KL clipping, divergence messages, defaults, and the
options each optimizer passes on (seed, samples, curvature, max_bytes, masks)."""

import warnings

import numpy as np
import pytest

import refprune as rp
from refprune import optim
from refprune.curvature.exact import exact_matrix
from refprune.optim import base
from refprune.checks import validate
from refprune.params import flatten_params

from cases import small_mlp


# ---------------------------------------------------------------- conjugate gradients

def krylov_iterate(A, b, k):
    """CG's k-th iterate: the minimiser of the A-norm error over span{b, Ab, ..., A^(k-1) b}
    (Hestenes & Stiefel 1952), from an orthonormal basis of the Krylov space."""
    K = np.column_stack([np.linalg.matrix_power(A, j) @ b for j in range(k)])
    Q = np.linalg.qr(K)[0]
    return Q @ np.linalg.solve(Q.T @ A @ Q, Q.T @ b)


@pytest.mark.parametrize("scale, rtol", [(1e3, 0.3), (1e-2, 0.05), (7.0, 1e-3)])
def test_cg_stops_at_the_first_iterate_within_rtol(scale, rtol):
    A = np.diag([1.0, 2.0, 4.0, 8.0, 16.0])
    b = scale * np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    residuals = [np.linalg.norm(b - A @ krylov_iterate(A, b, k)) for k in range(1, 6)]
    k_star = 1 + next(k for k, r in enumerate(residuals) if r <= rtol * np.linalg.norm(b))
    calls = []
    x = base.conjugate_gradients(lambda v: calls.append(1) or A @ v, b, "w", rtol=rtol)
    assert len(calls) == k_star
    np.testing.assert_allclose(x, krylov_iterate(A, b, k_star), rtol=1e-10)


def test_cg_of_a_zero_right_hand_side_and_of_no_unknowns():
    x = base.conjugate_gradients(lambda v: 2 * v, np.zeros(3), "w")
    assert np.array_equal(x, np.zeros(3))
    assert base.conjugate_gradients(lambda v: 2 * v, np.zeros(0), "w").shape == (0,)


def test_cg_refuses_a_zero_curvature_direction():
    with pytest.raises(np.linalg.LinAlgError) as e:
        base.conjugate_gradients(lambda v: 0 * v, np.ones(2), "the thing")
    assert str(e.value) == ("the thing restricted to the free coordinates is not positive definite "
                            "(p^T M p = 0.000e+00); use a larger damping")


def _rotating(v):
    # symmetric part I (p^T A p = |p|^2 > 0), skew part keeps CG from converging
    return np.array([v[0] - 3 * v[1], 3 * v[0] + v[1], v[2]])


def test_cg_gives_up_after_ten_n_iterations():
    calls = []

    def matvec(v):
        calls.append(1)
        return _rotating(v)

    b = np.array([1.0, 2.0, 0.0])
    with pytest.raises(np.linalg.LinAlgError) as e:
        base.conjugate_gradients(matvec, b, "the thing", rtol=1e-300)
    assert len(calls) == 30
    msg = str(e.value)
    assert msg.startswith("the thing: conjugate gradients did not converge in 30 iterations (relative residual ")
    assert msg.endswith("); use a larger damping")
    # the relative residual does not depend on the scale of b (the operator is linear)
    with pytest.raises(np.linalg.LinAlgError) as e2:
        base.conjugate_gradients(_rotating, 1e3 * b, "the thing", rtol=1e-300)
    assert str(e2.value) == msg


# ---------------------------------------------------------------- restricted_solve

def test_restricted_solve_one_and_no_free_coordinates():
    M = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    g = np.array([1.0, 2.0, 3.0])
    d = base.restricted_solve(lambda v: M @ v, lambda: M, g, np.array([False, True, False]), "w")
    np.testing.assert_allclose(d, [0.0, 2.0 / 3.0, 0.0], rtol=1e-15, atol=0)
    d = base.restricted_solve(lambda v: M @ v, lambda: M, g, np.zeros(3, bool), "w")
    np.testing.assert_array_equal(d, np.zeros(3))


def test_restricted_solve_is_dense_up_to_the_limit(monkeypatch):
    M = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    g = np.array([1.0, 2.0, 3.0])
    free = np.array([True, False, True])
    want = np.zeros(3)
    want[[0, 2]] = np.linalg.solve(M[np.ix_([0, 2], [0, 2])], g[[0, 2]])

    def no_matvec(v):
        raise AssertionError("conjugate gradients used at the dense limit")

    monkeypatch.setattr(base, "DENSE_LIMIT", 2)
    np.testing.assert_allclose(base.restricted_solve(no_matvec, lambda: M, g, free, "w"), want, rtol=1e-14)
    # above the limit: conjugate gradients on the same restricted system
    monkeypatch.setattr(base, "DENSE_LIMIT", 1)
    np.testing.assert_allclose(base.restricted_solve(lambda v: M @ v, lambda: M, g, free, "w"), want, rtol=1e-10)


def test_restricted_solve_names_the_smallest_eigenvalue():
    M = np.diag([3.0, -1.0, 2.0])
    with pytest.raises(np.linalg.LinAlgError) as e:
        base.restricted_solve(lambda v: M @ v, lambda: M, np.ones(3), np.ones(3, bool), "the matrix")
    assert str(e.value) == ("the matrix restricted to the free coordinates is not positive definite (smallest "
                            "eigenvalue -1.000e+00); use a larger damping")


def test_restricted_solve_by_cg_names_the_operator(monkeypatch):
    monkeypatch.setattr(base, "DENSE_LIMIT", 0)
    M = np.diag([3.0, -1.0])
    with pytest.raises(np.linalg.LinAlgError, match=r"^the matrix restricted to the free coordinates"):
        base.restricted_solve(lambda v: M @ v, lambda: M, np.ones(2), np.ones(2, bool), "the matrix")


def test_check_mask_all_free_is_none():
    assert base.check_mask(np.ones(3, bool), 3, "w") is None
    m = np.array([True, False, True])
    out = base.check_mask(m, 3, "w")
    assert np.array_equal(out, m) and out is not m


def test_check_mask_refusals_word_for_word():
    with pytest.raises(ValueError) as e:
        base.check_mask(np.ones(2, bool), 3, "w")
    assert str(e.value) == "w: mask must have shape (3,), got (2,)"
    with pytest.raises(ValueError) as e:
        base.check_mask(np.ones((3, 1), bool), 3, "w")
    assert str(e.value) == "w: mask must have shape (3,), got (3, 1)"
    with pytest.raises(TypeError) as e:
        base.check_mask(np.ones(3, int), 3, "w")
    assert str(e.value) == "w: mask must be a bool array (True = free), got dtype int64"


# ---------------------------------------------------------------- moving averages

def test_moving_average_zero_decay_keeps_only_the_latest_batch():
    avg = base.MovingAverage(0.0, "w")
    avg.update([np.array([np.inf, 1.0])])
    assert np.array_equal(avg.update([np.array([2.0, 3.0])])[0], [2.0, 3.0])


def test_moving_average_first_value_is_a_float_copy():
    avg = base.MovingAverage(0.5, "w")
    b = np.array([1, 2])
    v = avg.update([b])[0]
    assert v.dtype == np.float64 and np.array_equal(v, [1.0, 2.0])
    np.testing.assert_allclose(avg.update([np.array([3.0, 4.0])])[0], [2.0, 3.0], rtol=1e-15)


def test_moving_average_message_names_the_caller():
    with pytest.raises(ValueError) as e:
        base.MovingAverage(1.0, "mine")
    assert str(e.value) == ("mine: ema_decay must be a finite number >= 0 and < 1, got 1.0 "
                            "(ema_decay must be < 1)")
    with pytest.raises(ValueError, match=r"^mine: scale_decay must be"):
        base.MovingAverage(-1.0, "mine", "scale_decay")


# ---------------------------------------------------------------- the shared update

class Custom(base.Optimizer):
    """An optimizer defined outside refprune: not in the option table."""

    name = "custom"

    def __init__(self, bad=None, **kw):
        self.bad = bad
        super().__init__(**kw)

    def precondition(self, inp, theta, g, free):
        d = g * theta  # uses theta: the hook receives the current parameters
        if self.bad is not None:
            d[self.bad] = np.inf
        return d


def _problem():
    model, params, X, y, loss = small_mlp(n=6)
    return model, params, X, y, loss


def test_an_optimizer_defined_elsewhere_uses_the_generic_rows():
    o = Custom()
    assert (o.lr, o.momentum, o.weight_decay, o.kl_clip, o.last_nu) == (0.1, 0.0, 0.0, None, 1.0)
    with pytest.raises(ValueError) as e:
        Custom(lr=-1.0)
    assert str(e.value) == "custom: lr must be a finite number >= 0, got -1.0 (lr must be >= 0)"


def test_precondition_receives_theta():
    model, params, X, y, loss = _problem()
    theta = flatten_params(params)
    g = rp.grad(model, params, X, y, loss)
    new = flatten_params(Custom(lr=0.5).step(model, params, X, y, loss))
    np.testing.assert_allclose(new, theta - 0.5 * g * theta, rtol=1e-13, atol=1e-15)


def test_sgd_step_is_float64():
    model, params, X, y, loss = _problem()
    out = optim.SGD(lr=0.1).step(model, params, X, y, loss)
    assert all(p.dtype == np.float64 for p in out)
    g = rp.grad(model, params, X, y, loss)
    np.testing.assert_allclose(flatten_params(out), flatten_params(params) - 0.1 * g, rtol=1e-14)


def test_divergence_message_without_damping():
    model, params, X, y, loss = _problem()
    o = Custom(bad=2, lr=0.25)
    with pytest.raises(base.DivergenceError) as e:
        o.step(model, params, X, y, loss)
    theta = flatten_params(params)
    n = theta.size
    assert str(e.value) == (f"custom: step 1 diverged: lr=0.25 times the step |buf| = inf gives the largest update, "
                            f"inf (coordinate 2, at {theta[2]:.3e}); 1 of {n} parameters would be NaN or inf; "
                            f"lower lr")


def test_a_nan_step_is_reported_as_the_largest():
    model, params, X, y, loss = _problem()
    theta = flatten_params(params)
    mask = np.ones(theta.size, bool)
    mask[3] = False
    o = Custom(bad=3, lr=0.5)  # inf at a frozen coordinate: times the mask's zero, NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the NaN is reported by the error, not by a NumPy warning
        with pytest.raises(base.DivergenceError) as e:
            o.step(model, params, X, y, loss, mask=mask)
    assert "|buf| = inf gives the largest update, inf (coordinate 3," in str(e.value)
    assert o.steps == 0 and o.buf is None


def test_step_mask_message_names_the_optimizer():
    model, params, X, y, loss = _problem()
    with pytest.raises(TypeError, match=r"^SGD: mask must be a bool array"):
        optim.SGD().step(model, params, X, y, loss, mask=np.ones(flatten_params(params).size))


@pytest.mark.parametrize("lr", [0.5, 2.0])
def test_kl_clipping_closed_form(lr):
    model, params, X, y, loss = _problem()
    theta = flatten_params(params)
    g = rp.grad(model, params, X, y, loss)
    c = 1e-3 * lr ** 2 * float(g @ g)  # well below lr^2 g.g: the step is clipped
    o = optim.SGD(lr=lr, momentum=0.0, kl_clip=c)
    new = flatten_params(o.step(model, params, X, y, loss))
    nu = np.sqrt(c / (lr ** 2 * float(g @ g)))
    assert o.last_nu == pytest.approx(nu, rel=1e-12)
    np.testing.assert_allclose(new, theta - lr * nu * g, rtol=1e-12)
    o.reset()
    assert o.last_nu == 1.0


def test_defaults():
    s = optim.SGD()
    assert (s.lr, s.momentum, s.weight_decay, s.kl_clip) == (0.1, 0.9, 0.0, None)
    k = optim.KFAC()
    assert (k.lr, k.damping, k.damping_form, k.refresh_interval, k.factors.decay) == (0.1, 1e-3, "pi", 1, 0.95)
    e = optim.EKFAC()
    assert (e.lr, e.damping, e.refresh_interval, e.scale_interval, e.scales.decay) == (0.1, 1e-3, 1, 1, 0.95)
    n = optim.NaturalGradient()
    assert (n.lr, n.curvature, n.damping, n.structure, n.average.decay) == (1.0, "fisher", 1e-3, "full", 0.0)


def test_curvature_messages_name_the_optimizer():
    with pytest.raises(ValueError, match=r"^NaturalGradient: curvature must be one of"):
        optim.NaturalGradient(curvature="nope")
    with pytest.raises(ValueError, match=r"^KFAC: curvature must be one of"):
        optim.KFAC(curvature="nope")


# ---------------------------------------------------------------- natural gradient

def _ng_expected(model, params, X, y, loss, F, damping, free):
    g = rp.grad(model, params, X, y, loss) * free
    M = F + damping * np.eye(len(F))
    f = np.flatnonzero(free)
    d = np.zeros_like(g)
    d[f] = np.linalg.solve(M[np.ix_(f, f)], g[f])
    return flatten_params(params) - d


def test_natural_gradient_masked_step():
    model, params, X, y, loss = _problem()
    n = flatten_params(params).size
    free = np.ones(n, bool)
    free[::3] = False
    F = exact_matrix(model, params, X, y, loss, curvature="fisher")
    new = optim.NaturalGradient(lr=1.0, damping=0.1).step(model, params, X, y, loss, mask=free)
    np.testing.assert_allclose(flatten_params(new), _ng_expected(model, params, X, y, loss, F, 0.1, free),
                               rtol=1e-9, atol=1e-12)


def test_natural_gradient_by_cg(monkeypatch):
    monkeypatch.setattr(base, "DENSE_LIMIT", 0)
    model, params, X, y, loss = _problem()
    n = flatten_params(params).size
    free = np.ones(n, bool)
    free[1] = False
    F = exact_matrix(model, params, X, y, loss, curvature="fisher")
    new = optim.NaturalGradient(damping=0.1).step(model, params, X, y, loss, mask=free)
    np.testing.assert_allclose(flatten_params(new), _ng_expected(model, params, X, y, loss, F, 0.1, free),
                               rtol=1e-8, atol=1e-10)


def test_natural_gradient_monte_carlo_draws_from_seed_and_step():
    model, params, X, y, loss = _problem()
    n = flatten_params(params).size
    # documented: samples targets per point from default_rng([seed, steps]), steps = 1 on the first step
    F = exact_matrix(model, params, X, y, loss, curvature="mc_fisher", samples=3, seed=[5, 1])
    new = optim.NaturalGradient(curvature="mc_fisher", samples=3, seed=5, damping=0.1).step(model, params, X, y,
                                                                                           loss)
    np.testing.assert_allclose(flatten_params(new), _ng_expected(model, params, X, y, loss, F, 0.1, np.ones(n, bool)),
                               rtol=1e-9, atol=1e-12)


def test_natural_gradient_layer_structure_uses_its_curvature():
    model, params, X, y, loss = _problem()
    n = flatten_params(params).size
    # two Linear layers: 3*4 + 4 = 16 parameters, then 4*3 + 3 = 15
    F = exact_matrix(model, params, X, y, loss, curvature="fisher")
    B = np.zeros_like(F)
    B[:16, :16], B[16:, 16:] = F[:16, :16], F[16:, 16:]
    new = optim.NaturalGradient(structure="layer", damping=0.1).step(model, params, X, y, loss)
    np.testing.assert_allclose(flatten_params(new), _ng_expected(model, params, X, y, loss, B, 0.1, np.ones(n, bool)),
                               rtol=1e-9, atol=1e-12)
    Fm = exact_matrix(model, params, X, y, loss, curvature="mc_fisher", samples=2, seed=[3, 1])
    B[:16, :16], B[16:, 16:] = Fm[:16, :16], Fm[16:, 16:]
    new = optim.NaturalGradient(structure="layer", curvature="mc_fisher", samples=2, seed=3,
                                damping=0.1).step(model, params, X, y, loss)
    np.testing.assert_allclose(flatten_params(new), _ng_expected(model, params, X, y, loss, B, 0.1, np.ones(n, bool)),
                               rtol=1e-9, atol=1e-12)


def test_natural_gradient_max_bytes():
    model, params, X, y, loss = _problem()
    optim.NaturalGradient(max_bytes=1e9)  # applies to structure='full'
    with pytest.raises(MemoryError, match="may be used"):
        optim.NaturalGradient(max_bytes=8).step(model, params, X, y, loss)


def test_natural_gradient_singular_message():
    model, params, X, y, loss = small_mlp(n=1)
    n = flatten_params(params).size
    free = np.ones(n, bool)
    free[0] = False
    with pytest.raises(np.linalg.LinAlgError, match=r"^NaturalGradient: the damped fisher matrix restricted to "
                                                     r"the free coordinates is not positive definite"):
        optim.NaturalGradient(damping=0.0).step(model, params, X, y, loss, mask=free)


# ---------------------------------------------------------------- K-FAC

def test_kfac_refresh_interval_keeps_the_blocks_between_refreshes():
    model, params, X, y, loss = small_mlp(n=8)
    X2 = X[::-1] * 2.0
    k2 = optim.KFAC(curvature="ggn", refresh_interval=2, ema_decay=0.0)
    k1 = optim.KFAC(curvature="ggn", refresh_interval=1, ema_decay=0.0)
    p = k2.step(model, params, X, y, loss)
    k1.step(model, params, X, y, loss)
    k2.step(model, p, X2, y, loss)  # step 2: not due, the blocks stay those of step 1
    for a, b in zip(k2.blocks, k1.blocks):
        np.testing.assert_array_equal(a.S, b.S)
        np.testing.assert_array_equal(a.A, b.A)


def test_kfac_separate_bias_blocks():
    model, params, X, y, loss = small_mlp(n=4)
    for cls in (optim.KFAC, optim.EKFAC):
        k = cls(curvature="ggn", bias="separate")
        k.step(model, params, X, y, loss)
        blocks = k.blocks if cls is optim.KFAC else k.basis
        assert [b.layout.size for b in blocks] == [12, 4, 12, 3]


def test_kfac_singular_block_message():
    model, params, X, y, loss = small_mlp(n=1)
    n = flatten_params(params).size
    free = np.ones(n, bool)
    free[0] = False
    with pytest.raises(np.linalg.LinAlgError, match=r"^KFAC: the damped block of layer .* restricted to the free "
                                                     r"coordinates is not positive definite"):
        optim.KFAC(curvature="ggn", damping=0.0).step(model, params, X, y, loss, mask=free)


def test_natural_gradient_kl_clipping():
    model, params, X, y, loss = _problem()
    theta = flatten_params(params)
    g = rp.grad(model, params, X, y, loss)
    F = exact_matrix(model, params, X, y, loss, curvature="fisher")
    d = np.linalg.solve(F + 0.1 * np.eye(len(F)), g)
    c = 1e-3 * 0.25 * float(d @ g)  # below lr^2 d.g: the step is clipped
    o = optim.NaturalGradient(lr=0.5, damping=0.1, kl_clip=c)
    new = flatten_params(o.step(model, params, X, y, loss))
    nu = np.sqrt(c / (0.25 * float(d @ g)))
    assert o.last_nu == pytest.approx(nu, rel=1e-9)
    np.testing.assert_allclose(new, theta - 0.5 * nu * d, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [optim.KFAC, optim.EKFAC])
def test_first_curvature_update_after_reset_builds_the_preconditioner(cls):
    # a preconditioner never formed (after reset) is formed at the first update, whatever the interval
    model, params, X, y, loss = small_mlp(n=4)
    k = cls(curvature="ggn", refresh_interval=2)
    k.reset()
    k.update_curvature(validate(model, params, X, y, loss))
    built = k.blocks if cls is optim.KFAC else k.basis
    assert isinstance(built, list) and [b.layout.size for b in built] == [16, 15]


@pytest.mark.parametrize("cls", [optim.KFAC, optim.EKFAC])
def test_kfac_memory_refusal_names_the_optimizer(cls, monkeypatch):
    from refprune import memory
    # 1.28 MB of loss-Hessian square roots (50 x 40 x 40, twice) against 0.5 MB; every other array is smaller
    monkeypatch.setattr(memory, "ALWAYS_FITS", 0)
    monkeypatch.setattr(memory, "available_memory", lambda: 500_000)
    model = rp.Sequential(rp.Linear(1, 40))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 1)), rng.integers(0, 40, 50)
    with pytest.raises(memory.ArrayTooLargeError, match=rf"^{cls.name}: the square roots of the loss Hessians "):
        cls(curvature="ggn").step(model, model.init(0), X, y, rp.CrossEntropyLoss())


def test_the_shared_rows_differ_between_optimizers_only_in_their_defaults():
    """``Optimizer.__init__`` converts lr, momentum, weight_decay and kl_clip against its own
    table's rows (SGD's for an optimizer defined elsewhere), always passing all four values:
    the rows agree in everything but the default, which ``convert`` does not read."""
    import refprune.options as options_table

    def row(table, name):
        r = next(r for r in options_table.TABLE[table] if r.name == name)
        return {k: v for k, v in vars(r).items() if k != "default"}

    for name in ("lr", "momentum", "weight_decay", "kl_clip"):
        for table in ("KFAC", "EKFAC", "NaturalGradient"):
            assert row(table, name) == row("SGD", name), (table, name)
