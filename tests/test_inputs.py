"""Bad input raises a clear exception naming the problem; user arrays are never
modified and non-float64 input is converted."""

import numpy as np
import pytest

import refprune as rp

from cases import make


@pytest.fixture
def problem():
    return make("conv-tanh-avgpool", "ce-mean", n=4)


ALL = [
    ("loss", lambda m, p, X, y, l: rp.loss(m, p, X, y, l)),
    ("grad", lambda m, p, X, y, l: rp.grad(m, p, X, y, l)),
    ("per_sample_grads", lambda m, p, X, y, l: rp.per_sample_grads(m, p, X, y, l)),
    ("hvp", lambda m, p, X, y, l: rp.hvp(m, p, X, y, l, np.ones(getattr(m, "n_params", 1)))),
    ("hessian", lambda m, p, X, y, l: rp.hessian(m, p, X, y, l)),
    ("ggn", lambda m, p, X, y, l: rp.ggn(m, p, X, y, l)),
    ("fisher", lambda m, p, X, y, l: rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=2)),
]
FNS = pytest.mark.parametrize("name,fn", ALL, ids=[a[0] for a in ALL])


@FNS
def test_input_of_wrong_shape(problem, name, fn):
    m, p, X, y, l = problem
    with pytest.raises(ValueError, match=r"layer 0 of the model: Conv2d.*expects per-sample input \(C=1"):
        fn(m, p, X[:, :, :, :, None], y, l)
    with pytest.raises(ValueError, match="X must have shape"):
        fn(m, p, X[0, 0, 0], y, l)
    with pytest.raises(ValueError, match=r"smaller than the kernel|expects per-sample input"):
        fn(m, p, X[:, :, :1, :1], y, l)


@FNS
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_or_params(problem, name, fn, bad):
    m, p, X, y, l = problem
    Xb = X.copy()
    Xb[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"X contains 1 NaN or inf"):
        fn(m, p, Xb, y, l)
    pb = [a.copy() for a in p]
    pb[2][0, 0] = bad
    with pytest.raises(ValueError, match=r"params\[2\] contains 1 NaN or inf"):
        fn(m, pb, X, y, l)


@FNS
def test_labels_out_of_range_or_not_integer(problem, name, fn):
    m, p, X, y, l = problem
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fn(m, p, X, np.array([0, 1, 3, 0]), l)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fn(m, p, X, np.array([0, -1, 2, 0]), l)
    with pytest.raises(ValueError, match="labels must be integers"):
        fn(m, p, X, np.array([0.0, 1.5, 2.0, 0.0]), l)
    with pytest.raises(ValueError, match="labels must be integers"):
        fn(m, p, X, np.array(["a", "b", "c", "d"]), l)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        fn(m, p, X, y[:3], l)
    # integral floats are accepted as labels
    fn(m, p, X, y.astype(float), l)


@FNS
def test_mse_targets_checked(problem, name, fn):
    m, p, X, y, _ = problem
    with pytest.raises(ValueError, match=r"MSELoss: targets must have shape \(4, 3\)"):
        fn(m, p, X, np.zeros((4, 2)), rp.MSELoss())
    with pytest.raises(ValueError, match="MSELoss: targets contain NaN"):
        fn(m, p, X, np.full((4, 3), np.nan), rp.MSELoss())


@FNS
def test_wrong_params(problem, name, fn):
    m, p, X, y, l = problem
    with pytest.raises(ValueError, match="model has 4 parameter arrays, got 3"):
        fn(m, p[:3], X, y, l)
    with pytest.raises(ValueError, match=r"params\[1\] must have shape \(2,\), got \(3,\)"):
        fn(m, [p[0], np.zeros(3), p[2], p[3]], X, y, l)
    with pytest.raises(TypeError, match="params must be a list of arrays"):
        fn(m, rp.flatten_params(p), X, y, l)
    with pytest.raises(TypeError, match="model must be a refprune Sequential"):
        fn(lambda x: x, p, X, y, l)
    with pytest.raises(TypeError, match="loss must be a refprune loss"):
        fn(m, p, X, y, "cross_entropy")


def test_hvp_vector_shape(problem):
    m, p, X, y, l = problem
    with pytest.raises(ValueError, match=r"v must have shape \(\d+,\) or \(K, \d+\)"):
        rp.hvp(m, p, X, y, l, np.ones(m.n_params + 1))
    with pytest.raises(ValueError, match="v contains 1 NaN"):
        v = np.ones(m.n_params)
        v[0] = np.nan
        rp.hvp(m, p, X, y, l, v)


def test_hessian_too_large_for_memory(problem):
    m, p, X, y, l = problem
    with pytest.raises(rp.CurvatureTooLargeError, match=r"would need .* GiB .*out=numpy.memmap"):
        rp.hessian(m, p, X, y, l, max_bytes=1000)
    big = rp.Sequential(rp.Linear(1000, 1000), rp.Tanh(), rp.Linear(1000, 10))
    with pytest.raises(MemoryError, match=r"the 1011010 x 1011010 float64 matrix and 256 MiB of temporaries would need 7615.\d\d GiB"):
        rp.hessian(big, big.init(0), np.zeros((2, 1000)), np.zeros(2, int), rp.CrossEntropyLoss())


def test_out_array_checked(problem):
    m, p, X, y, l = problem
    n = m.n_params
    with pytest.raises(ValueError, match=r"out must be a float64 array of shape"):
        rp.hessian(m, p, X, y, l, out=np.zeros((n, n), dtype=np.float32))
    ro = np.zeros((n, n))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        rp.hessian(m, p, X, y, l, out=ro)


def test_bad_options(problem):
    m, p, X, y, l = problem
    with pytest.raises(ValueError, match="fisher: curvature must be one of"):
        rp.fisher(m, p, X, y, l, curvature="exact")
    with pytest.raises(ValueError, match="curvature='hessian'"):
        rp.fisher(m, p, X, y, l, curvature="hessian")
    with pytest.raises(TypeError, match="option kind= was renamed curvature=; write curvature='mc_fisher'"):
        rp.fisher(m, p, X, y, l, kind="mc")
    with pytest.raises(ValueError, match="curvature='empirical' is an earlier spelling; write curvature='empirical_fisher'"):
        rp.fisher_diagonal(m, p, X, y, l, curvature="empirical")
    with pytest.raises(ValueError, match="samples must be a positive int"):
        rp.fisher(m, p, X, y, l, curvature="mc_fisher", samples=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        rp.CrossEntropyLoss("none")
    with pytest.raises(ValueError, match="Linear: in_features must be a positive int"):
        rp.Linear(0, 3)
    with pytest.raises(ValueError, match="Conv2d: need kernel_size >= 1"):
        rp.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        rp.MaxPool2d(0)
    with pytest.raises(TypeError, match="item 1 is not a refprune layer"):
        rp.Sequential(rp.Linear(2, 2), "relu")
    with pytest.raises(ValueError, match="per-sample output must be a vector"):
        mm = rp.Sequential(rp.Conv2d(1, 1, 1))
        rp.loss(mm, mm.init(0), np.zeros((2, 1, 2, 2)), np.zeros(2, int), rp.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"theta must have shape \(\d+,\)"):
        rp.unflatten_params(m, np.zeros(3))


def test_user_arrays_not_modified_and_dtypes_converted(problem):
    m, p, X, y, l = problem
    X32 = X.astype(np.float32)
    p_copy, X_copy, y_copy = [a.copy() for a in p], X32.copy(), y.copy()
    for a in p:
        a.flags.writeable = False
    X32.flags.writeable = False
    y.flags.writeable = False
    for _, fn in ALL:
        fn(m, p, X32, y, l)
    rp.fisher(m, p, X32, y, l, curvature="empirical_fisher")
    rp.residual(m, p, X32, y, l)
    assert all(np.array_equal(a, b) for a, b in zip(p, p_copy))
    assert np.array_equal(X32, X_copy) and np.array_equal(y, y_copy)
    # float32 / integer data give the float64 results of the converted data
    H32 = rp.hessian(m, p, X32, y, l)
    assert H32.dtype == np.float64
    np.testing.assert_array_equal(H32, rp.hessian(m, p, X32.astype(np.float64), y, l))
    Xi = np.round(X * 3).astype(np.int32)
    np.testing.assert_array_equal(rp.grad(m, p, Xi, y, l), rp.grad(m, p, Xi.astype(np.float64), y, l))


def test_cross_entropy_is_stable_for_extreme_logits():
    """Logits of +-1000 neither overflow nor lose the gradient: compare with the
    closed form computed from shifted logits."""
    loss = rp.CrossEntropyLoss("sum")
    f = np.array([[1000.0, -1000.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    y = np.array([1, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        val = loss.per_sample(f, y)
        g = loss.grad(f, y)
    e = np.exp(-1.0)
    assert np.allclose(val, [2000.0 + np.log1p(e), np.log(3.0)], rtol=1e-15)
    p0 = np.array([1 / (1 + e), 0.0, e / (1 + e)])
    assert np.allclose(g[0], p0 - np.eye(3)[1], rtol=1e-15, atol=1e-300)
    assert np.allclose(g[1], np.full(3, 1 / 3) - np.eye(3)[2], rtol=1e-15)


def test_checkers_never_modify_their_inputs():
    from refprune.testing import check_grad, check_hessian, check_hvp, directional_derivative

    x = np.array([0.3, -1.2, 2.0])
    v = np.array([1.0, 0.5, -0.25])
    x.flags.writeable = False
    v.flags.writeable = False
    f = lambda t: float(np.sum(np.sin(t)) + t[0] * t[1])  # noqa: E731
    g = lambda t: np.cos(t) + np.array([t[1], t[0], 0.0])  # noqa: E731
    H = lambda t: np.diag(-np.sin(t)) + np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]])  # noqa: E731
    directional_derivative(f, x, v)
    check_grad(f, g, x)
    check_hvp(g, lambda t, u: H(t) @ u, x)
    check_hessian(g, H(x), x)
    assert np.array_equal(x, [0.3, -1.2, 2.0]) and np.array_equal(v, [1.0, 0.5, -0.25])
    with pytest.raises(AssertionError, match="gradient along direction 0"):
        check_grad(f, lambda t: g(t) + 1e-3, x)  # the checker bites


def test_pruning_and_training_never_modify_user_arrays():
    from refprune.pruning import METHODS

    m, p, X, y, l = make("mlp-sigmoid-softplus", "ce-mean", n=8)
    copies = [a.copy() for a in p] + [X.copy(), y.copy()]
    for a in p + [X, y]:
        a.flags.writeable = False
    for method in METHODS:
        damping = 1e-2 if "damping" in rp.options.applicable("prune", method) else 0.0
        rp.prune(m, p, X, y, l, method=method, sparsity=0.3, damping=damping)
    rp.train(m, p, X, y, l, epochs=1, batch_size=4)
    assert all(np.array_equal(a, b) for a, b in zip(p + [X, y], copies))
