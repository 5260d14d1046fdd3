"""The public contract of the foundation issue, verbatim, plus the facts it states."""

import numpy as np


def test_public_contract_runs_verbatim():
    import numpy as np
    import refprune as rp

    model = rp.Sequential(rp.Conv2d(1, 3, 3, padding=1), rp.Tanh(), rp.AvgPool2d(2),
                          rp.Flatten(), rp.Linear(3 * 4 * 4, 5))
    params = model.init(seed=0)            # list of float64 arrays, PyTorch shapes and order
    theta = rp.flatten_params(params)      # (n,), == torch parameters_to_vector
    assert all(np.array_equal(a, b) for a, b in zip(rp.unflatten_params(model, theta), params))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 1, 8, 8)), rng.integers(0, 5, size=16)
    loss = rp.CrossEntropyLoss(reduction="mean")

    value = rp.loss(model, params, X, y, loss)         # float
    g = rp.grad(model, params, X, y, loss)             # (n,)
    G_n = rp.per_sample_grads(model, params, X, y, loss)   # (N, n), rows sum to g
    v = rng.normal(size=theta.size)
    Hv = rp.hvp(model, params, X, y, loss, v)          # (n,)
    H = rp.hessian(model, params, X, y, loss)          # (n, n)
    G = rp.ggn(model, params, X, y, loss)              # (n, n)
    F = rp.fisher(model, params, X, y, loss, curvature="fisher")   # also "mc_fisher" (samples=, seed=), "empirical_fisher"

    n = theta.size
    assert n == 3 * 9 + 3 + 48 * 5 + 5
    assert isinstance(value, float)
    assert g.shape == (n,) and G_n.shape == (16, n) and Hv.shape == (n,)
    assert H.shape == G.shape == F.shape == (n, n)
    assert all(p.dtype == np.float64 for p in params)
    assert [p.shape for p in params] == [(3, 1, 3, 3), (3,), (5, 48), (5,)]
    np.testing.assert_allclose(G_n.sum(0), g, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(H @ v, Hv, rtol=1e-10, atol=1e-13)
    Fmc = rp.fisher(model, params, X, y, loss, curvature="mc_fisher", samples=2, seed=1)
    Fe = rp.fisher(model, params, X, y, loss, curvature="empirical_fisher")
    assert Fmc.shape == Fe.shape == (n, n)


def test_same_seed_gives_bit_identical_results():
    import refprune as rp

    model = rp.Sequential(rp.Linear(3, 4), rp.Tanh(), rp.Linear(4, 2))
    a, b = model.init(seed=4), model.init(seed=4)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[0], model.init(seed=5)[0])
