"""``refprune.selfcheck`` against its documented contract (the module docstring): which checks
run on which networks (finite differences only without ``ReLU`` or ``MaxPool2d``), the tolerance
of each, the error it reports for an error planted in one quantity (the planted size over
``max(1, max |H|)``, with ``H`` computed here), and ``run``'s verdict and report."""

import types

import numpy as np
import pytest

import refprune as rp
from refprune import curvature as C
from refprune import derivatives as D
from refprune import selfcheck
from refprune.conformance.zoo import make_case

IDENTITIES = {"fisher == ggn": 1e-12, "hessian == ggn + residual": 1e-12, "hessian_diagonal == diag(H)": 1e-12,
              "hvp == H v": 1e-11}
FINITE_DIFFERENCES = {"gradient vs finite differences": 1.0, "Hessian vs finite differences": 1.0,
                      "HVP vs finite differences": 1.0}


def _with_layers(*layers):
    """A case of the zoo's kind for a network built here (``_checks`` reads ``args()``,
    ``model``, ``params`` and ``v``)."""
    model = rp.Sequential(*layers)
    params = model.init(0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5,) + ((1, 6, 6) if isinstance(layers[0], rp.Conv2d) else (4,)))
    y = rng.integers(0, 3, 5)
    loss = rp.CrossEntropyLoss()
    v = rng.standard_normal(model.n_params)
    return types.SimpleNamespace(model=model, params=params, v=v, args=lambda: (model, params, X, y, loss))


SMOOTH = _with_layers(rp.Linear(4, 3), rp.Tanh(), rp.Linear(3, 3))
WITH_RELU = _with_layers(rp.Linear(4, 3), rp.ReLU(), rp.Linear(3, 3))
WITH_MAXPOOL = _with_layers(rp.Conv2d(1, 2, 3), rp.MaxPool2d(2), rp.Flatten(), rp.Linear(8, 3))
WITH_AVGPOOL = _with_layers(rp.Conv2d(1, 2, 3), rp.AvgPool2d(2), rp.Flatten(), rp.Linear(8, 3))


@pytest.mark.parametrize("case, smooth", [(SMOOTH, True), (WITH_RELU, False), (WITH_MAXPOOL, False),
                                          (WITH_AVGPOOL, True)])
def test_finite_differences_only_without_kinks_and_each_tolerance_as_documented(case, smooth):
    checks = list(selfcheck._checks(case))
    expected = dict(IDENTITIES, **(FINITE_DIFFERENCES if smooth else {}))
    assert [name for name, _, _, _ in checks] == list(expected)
    assert {name: tol for name, _, tol, _ in checks} == expected
    assert all(err <= tol and note == "" for _, err, tol, note in checks)  # refprune is right on these


@pytest.mark.parametrize("arch, loss", [("mlp-tanh", "ce-mean"), ("mlp-tanh", "mse-sum")])  # max|H| 0.31, 8.4
@pytest.mark.parametrize("check, module, function", [("fisher == ggn", C, "fisher"),
                                                     ("hessian == ggn + residual", C, "residual"),
                                                     ("hessian_diagonal == diag(H)", C, "hessian_diagonal"),
                                                     ("hvp == H v", D, "hvp")])
def test_a_planted_error_is_reported_at_its_size_over_the_scale(monkeypatch, arch, loss, check, module, function):
    case = make_case(arch, loss)
    scale = max(1.0, float(np.abs(rp.hessian(*case.args())).max()))
    real, planted = getattr(module, function), 1e-3
    monkeypatch.setattr(module, function, lambda *a, **k: real(*a, **k) + planted)
    errors = {name: (err, tol) for name, err, tol, _ in selfcheck._checks(case)}
    err, tol = errors[check]
    assert err == pytest.approx(planted / scale, rel=1e-6)
    assert err > tol


def test_run_reports_a_planted_error_and_fails(monkeypatch, capsys):
    case = make_case("mlp-tanh", "ce-mean")
    assert selfcheck.run(verbose=False, cases=[case])
    quiet = capsys.readouterr()
    assert "FAIL" not in quiet.out and quiet.err.strip() == "self-check passed"
    real = C.residual
    monkeypatch.setattr(C, "residual", lambda *a, **k: real(*a, **k) + 1e-3)
    assert not selfcheck.run(verbose=False, cases=[case])
    out = capsys.readouterr()
    failed = [line for line in out.out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and case.name in failed[0] and "hessian == ggn + residual" in failed[0]
    assert out.err.strip() == "self-check FAILED"


def test_the_kfac_check_compares_with_the_exact_ggn_block(monkeypatch, capsys):
    # K-FAC equals the GGN's diagonal blocks for one sample (docs §6): an error planted in the
    # GGN appears in that line alone (no zoo case is run)
    assert selfcheck.run(verbose=False, cases=[])
    assert "ok   mlp-tanh, one sample" in capsys.readouterr().out
    real = C.ggn
    monkeypatch.setattr(C, "ggn", lambda *a, **k: real(*a, **k) + 1e-3)
    assert not selfcheck.run(verbose=False, cases=[])
    out = capsys.readouterr().out
    assert out.startswith("FAIL mlp-tanh, one sample") and "K-FAC == exact GGN block" in out
    assert "1.00e-03" in out


def test_a_failing_finite_difference_check_is_reported_not_raised(monkeypatch, capsys):
    # check_grad raises on a mismatch; the self-check reports it as a FAIL line with the
    # check's own message and returns False (the error infinite: the check gives no ratio)
    case = make_case("mlp-tanh", "ce-mean")
    real = D.grad
    monkeypatch.setattr(D, "grad", lambda *a, **k: real(*a, **k) * 1.01)
    checks = {name: (err, tol, note) for name, err, tol, note in selfcheck._checks(case)}
    err, tol, note = checks["gradient vs finite differences"]
    assert err == np.inf and tol == 1.0 and note.startswith("gradient along direction 0: |exact - finite difference|")
    assert not selfcheck.run(verbose=False, cases=[case])
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert any("gradient vs finite differences" in line and "inf (<= 1): gradient along direction 0" in line
               for line in failed), failed


def test_finite_difference_errors_are_over_the_documented_allowances():
    # the docstring's rtol: 1e-6 for the gradient, 1e-5 for the Hessian and the HVP (each
    # error is max |exact - fd| / (atol + rtol |fd|), so another rtol reports another number)
    from refprune.testing.finite_differences import check_grad, check_hessian, check_hvp

    model, params, X, y, loss = SMOOTH.args()
    theta = rp.flatten_params(params)

    def grad(t):
        return D.grad(model, rp.unflatten_params(model, t), X, y, loss)

    expected = {
        "gradient vs finite differences": check_grad(
            lambda t: D.loss(model, rp.unflatten_params(model, t), X, y, loss), grad, theta, rtol=1e-6).error,
        "Hessian vs finite differences": check_hessian(grad, rp.hessian(*SMOOTH.args()), theta, rtol=1e-5).error,
        "HVP vs finite differences": check_hvp(
            grad, lambda t, v: D.hvp(model, rp.unflatten_params(model, t), X, y, loss, v), theta, rtol=1e-5).error,
    }
    got = {name: err for name, err, _, _ in selfcheck._checks(SMOOTH) if name in expected}
    assert got == pytest.approx(expected, rel=1e-9)


def test_run_prints_every_check_by_default(capsys):
    case = make_case("linear", "ce-mean")
    assert selfcheck.run(cases=[case])
    ok = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ok   " + case.name)]
    assert len(ok) == len(IDENTITIES) + len(FINITE_DIFFERENCES)


def test_run_defaults_to_the_zoo_with_three_losses(monkeypatch, capsys):
    asked = []

    def spy_zoo(**kwargs):
        asked.append(kwargs)
        return [make_case("linear", "ce-mean")]

    monkeypatch.setattr(selfcheck, "zoo", spy_zoo)
    assert selfcheck.run(verbose=False)
    assert asked == [{"losses": ["ce-mean", "mse-sum", "bce-mean"]}]


def test_an_error_equal_to_its_tolerance_passes(monkeypatch, capsys):
    # "within" the tolerance: err <= tol, for the zoo's checks and for the K-FAC line
    monkeypatch.setattr(selfcheck, "_checks", lambda case: iter([("at the bound", 1e-12, 1e-12, "")]))
    model = make_case("mlp-tanh", "ce-mean", n=1).model
    off = model.param_offsets()
    blocks = [types.SimpleNamespace(dense=lambda j=j: np.full((off[j + 1] - off[j],) * 2, 1e-12)) for j in (0, 2)]
    monkeypatch.setattr(C, "kfac", lambda *a, **k: types.SimpleNamespace(blocks=blocks))
    monkeypatch.setattr(C, "ggn", lambda *a, **k: np.zeros((model.n_params,) * 2))
    assert selfcheck.run(cases=[make_case("linear", "ce-mean")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok   linear/ce-mean") and lines[0].endswith("at the bound                     1.00e-12 (<= 1e-12)")
    assert lines[1] == f"ok   {'mlp-tanh, one sample':40s} {'K-FAC == exact GGN block':32s} 1.00e-12"
