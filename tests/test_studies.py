"""Fast checks of the validation studies on tiny instances (no scikit-learn, no
matplotlib): their data generators against independent loops, and their pruning steps
against the quantities they claim to measure."""

import itertools
import os
import sys

import numpy as np
import pytest

import refprune as rp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "validation"))

import eigendamage_digits  # noqa: E402
import ekfac_distance  # noqa: E402
import monks  # noqa: E402
import obd_digits  # noqa: E402
import xor  # noqa: E402


def _xor_minimum():
    return next((m, r) for m, r in map(xor.trained, range(20)) if r.at_minimum and xor.solves(m, r.params))


def test_xor_removals_against_independent_quantities():
    model, res = _xor_minimum()
    assert res.grad_norm <= res.grad_tol and res.min_eigenvalue > res.eig_tol
    theta = rp.flatten_params(res.params)
    out = xor.removals(model, theta)
    # the objective's Hessian against central differences of its gradient
    g = lambda t: rp.grad(model, rp.unflatten_params(model, t), xor.X, xor.Y, xor.LOSS) + xor.WEIGHT_DECAY * t
    h = 1e-5
    H_fd = np.column_stack([(g(theta + h * e) - g(theta - h * e)) / (2 * h) for e in np.eye(9)])
    assert np.allclose(out["H"], H_fd, rtol=1e-6, atol=1e-8)
    Hinv = np.linalg.inv(H_fd)
    assert np.array_equal(out["scores"]["magnitude"], np.abs(theta))  # biases count as weights
    assert np.allclose(out["scores"]["OBS"], theta ** 2 / (2 * np.diag(Hinv)), rtol=1e-6)
    assert np.allclose(out["scores"]["OBD"], theta ** 2 * np.diag(H_fd) / 2, rtol=1e-6)
    base = xor.objective(model, theta)
    for q in range(9):
        obs = rp.OBS(np.linalg.inv(out["H"]), theta)  # the library's sequential OBS: another code path
        s = obs.remove([q])
        assert np.allclose(out["OBS update"]["points"][q], obs.w, rtol=1e-10, atol=1e-12)
        assert out["OBS update"]["predicted"][q] == pytest.approx(s, rel=1e-10)
        for u in xor.UPDATES:
            p = out[u]["points"][q]
            assert p[q] == 0.0
            if u == "zeroed":
                assert np.array_equal(np.delete(p, q), np.delete(theta, q))
            d = p - theta  # the quadratic model's increase, 0.5 d^T H d (the gradient vanishes)
            assert out[u]["predicted"][q] == pytest.approx(0.5 * d @ out["H"] @ d, rel=1e-8)
            assert out[u]["actual"][q] == pytest.approx(
                float(np.sum((model(rp.unflatten_params(model, p), xor.X) - xor.Y) ** 2))
                + 0.5 * xor.WEIGHT_DECAY * p @ p - base, rel=1e-10)
    assert out["OBS update"]["solves"][int(np.argmin(out["scores"]["OBS"]))]


def test_xor_symmetries_leave_the_objective_and_sign_flips_the_function():
    model = xor.network()
    rng = np.random.default_rng(5)
    theta = 3 * rng.standard_normal(9)
    f = lambda t, X=xor.X: model(rp.unflatten_params(model, t), X)
    for name, perm in xor.SYMMETRIES.items():
        assert xor.objective(model, theta[perm]) == pytest.approx(xor.objective(model, theta), rel=1e-13), name
    assert np.allclose(f(theta[xor.HIDDEN_SWAP]), f(theta))  # the same network function
    assert np.allclose(f(theta[xor.INPUT_SWAP]), f(theta, xor.X[:, ::-1]))  # the inputs exchanged
    for j in (0, 1):
        flipped = xor.sign_flip(theta, j)
        assert np.allclose(f(flipped), f(theta), rtol=1e-13, atol=1e-15)
        assert not np.isclose(flipped @ flipped, theta @ theta)  # weight decay is not invariant
    # a minimum and its symmetric images form one class; a different point another
    starts = [dict(res=type("R", (), dict(at_minimum=True, objective=1.0))(), theta=t, solves=True)
              for t in (theta, theta[xor.HIDDEN_SWAP], theta[xor.SYMMETRIES["hidden and input swap"]], theta + 1.0)]
    found = xor.classes(starts)
    assert sorted(len(c["members"]) for c in found) == [1, 3]


def test_xor_ties_go_to_the_lowest_index():
    q, tied = xor.choose([3.0, 1.0, 1.0 + 1e-9, 2.0])
    assert q == 1 and tied.tolist() == [1, 2]
    q, tied = xor.choose([3.0, 1.0, 1.0 + 1e-3, 0.5 + 1e-8, 0.5])
    assert q == 3 and tied.tolist() == [3, 4]
    assert xor.choose([2.0, 1.0])[1].tolist() == [1]


def _run(args, env_threads="2", cwd=None):
    import subprocess

    root = os.path.join(os.path.dirname(__file__), os.pardir)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root), OPENBLAS_NUM_THREADS=env_threads,
               OMP_NUM_THREADS=env_threads, MKL_NUM_THREADS=env_threads)
    return subprocess.run([sys.executable] + args, cwd=cwd or root, env=env, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("numpy_first", [False, True])
def test_report_pins_one_blas_thread(numpy_first):
    pytest.importorskip("threadpoolctl")
    code = ("import sys; sys.path.insert(0, 'validation'); " + ("import numpy; " if numpy_first else "")
            + "import report, numpy; from threadpoolctl import threadpool_info; "
            "print(report.PINNED, sorted({i['num_threads'] for i in threadpool_info()}))")
    assert _run(["-c", code]).split() == ["threadpoolctl" if numpy_first else "environment", "[1]"]


def test_xor_quick_mode_writes_its_report(tmp_path):
    pytest.importorskip("matplotlib")
    _run(["validation/xor.py", "--quick", "--out", str(tmp_path)])
    import report

    text = (tmp_path / "xor.md").read_text()
    assert (tmp_path / "xor.png").exists() and "smoke run" in text.splitlines()[0]
    row = report.read_readme_row(tmp_path / "xor.md")
    assert row["study"] == xor.PAPER and f"of {xor.QUICK_SEEDS} starts are certified minima" in row["reproduced"]


def test_readme_table_is_generated_from_the_reports():
    import readme_table

    with open(readme_table.README, encoding="utf-8") as fh:
        text = fh.read()
    assert readme_table.replace(text, readme_table.render(readme_table.rows())) == text, \
        "README.md's reproduction table is stale: python validation/readme_table.py"
    with pytest.raises(ValueError, match="marker"):
        readme_table.replace("no table here", [])


def test_readme_row_round_trip_and_verdicts(tmp_path):
    import readme_table
    import report

    line = report.readme_row("a | study", "`cmd`", "x", "")
    (tmp_path / "r.md").write_text("# title\n\n" + line + "\n")
    row = report.read_readme_row(tmp_path / "r.md")
    assert row == {"study": "a | study", "command": "`cmd`", "reproduced": "x", "not reproduced": "—"}
    assert readme_table.render([tuple(row[f] for f in report.ROW_FIELDS)])[2].startswith("| a \\| study |")
    with pytest.raises(ValueError, match="one line"):
        report.readme_row("s", "c", "two\nlines", "")
    v = report.verdict("weights left", 12.7, 14, report.within(2))
    assert v.holds and "12.7 here against 14 in the paper" in v.sentence and v.sentence.endswith("; reproduces.")
    assert not report.verdict("weights left", 18.3, 4, report.within(2)).holds
    assert report.verdict("n", 3, 4, report.below_paper()).holds
    assert not report.verdict("who", ("a", "b"), ("b",), report.equal_to_paper()).holds


def test_monks_instances_and_rules_against_loops():
    A, X = monks.instances()
    assert A.shape == (432, 6) and X.shape == (432, 17) and np.all(X.sum(axis=1) == 6)
    for i, a in enumerate(itertools.product(range(1, 4), range(1, 4), range(1, 3), range(1, 4), range(1, 5),
                                            range(1, 3))):
        assert tuple(A[i]) == a
        a1, a2, a3, a4, a5, a6 = a
        assert monks.label(1, A[i : i + 1])[0] == (a1 == a2 or a5 == 1)
        assert monks.label(2, A[i : i + 1])[0] == (sum(v == 1 for v in a) == 2)
        assert monks.label(3, A[i : i + 1])[0] == ((a5 == 3 and a4 == 1) or (a5 != 4 and a2 != 3))
        assert monks.four_weight_rule(A[i : i + 1])[0] == (a5 != 4 and a2 != 3)
        # one-hot: input 0..2 is a1, 3..5 a2, 6..7 a3, 8..10 a4, 11..14 a5, 15..16 a6
        assert [j for j in range(17) if X[i, j]] == [a1 - 1, 2 + a2, 5 + a3, 7 + a4, 10 + a5, 14 + a6]


def test_monks_training_files_against_the_rules_and_the_paper():
    """Each training line checked against its rule by a plain loop over the file's text;
    the four-weight rule's accuracies against the paper's 93.4% and 97.2%."""
    rules = {1: lambda a: a[0] == a[1] or a[4] == 1, 2: lambda a: sum(v == 1 for v in a) == 2,
             3: lambda a: (a[4] == 3 and a[3] == 1) or (a[4] != 4 and a[1] != 3)}
    wrong, rule_right = {}, 0
    for p in (1, 2, 3):
        with open(os.path.join(monks.DATA, f"monks-{p}.train.csv")) as fh:
            lines = [[int(v) for v in line.split(",")] for line in fh if line.strip()]
        assert len(lines) == {1: 124, 2: 169, 3: 122}[p] and len({tuple(r) for r in lines}) == len(lines)
        wrong[p] = sum(int(rules[p](r[1:])) != r[0] for r in lines)
        if p == 3:
            rule_right = sum(int(r[5] != 4 and r[2] != 3) == r[0] for r in lines)
    assert wrong[1] == 0 and wrong[2] == 0 and 0 < wrong[3] <= round(0.06 * 122)  # "about 5%" noise in MONK-3 only
    assert {p: k for p, (_, k) in monks.label_noise().items()} == wrong
    (tr, ntr, _), (te, nte, _) = monks.rule_accuracy()
    assert ntr == rule_right and round(tr, 1) == 93.4
    grid = list(itertools.product(range(1, 4), range(1, 4), range(1, 3), range(1, 4), range(1, 5), range(1, 3)))
    assert nte == sum((a[4] != 4 and a[1] != 3) == rules[3](a) for a in grid) and round(te, 1) == 97.2


def _monks_small_net():
    """A 17-2-1 net at a minimum on the first 40 MONK-3 training instances."""
    Xtr, ytr = monks.data(3)[:2]
    X, y = Xtr[:40], ytr[:40]
    model = monks.network(2)
    res = rp.minimize(model, [2 * p for p in model.init(seed=1)], X, y, monks.LOSS, weight_decay=0.1, maxiter=300)
    return model, res.params, X, y


def _gauss_newton_fd(model, theta, X, h=1e-6):
    """``2 J^T J`` (summed squared error) with the Jacobian by central differences."""
    f = lambda t: model(rp.unflatten_params(model, t), X)[:, 0]
    J = np.column_stack([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    return 2.0 * J.T @ J


def test_monks_prune_loop_first_choices_and_stop():
    model, params, X, y = _monks_small_net()
    theta = rp.flatten_params(params)
    C = _gauss_newton_fd(model, theta, X) + 0.1 * np.eye(theta.size)
    expected = {"OBS": np.argmin(theta ** 2 / (2 * np.diag(np.linalg.inv(C)))),
                "OBD": np.argmin(theta ** 2 * np.diag(C) / 2), "magnitude": np.argmin(np.abs(theta))}
    start = monks.errors(model, params, X, y)
    for c in monks.CRITERIA:
        mask, out, removed = monks.prune_loop(c, "ggn", False, model, params, X, y, 0.1)
        assert removed and removed[0] == expected[c], c
        assert int(mask.sum()) == theta.size - len(removed) and not mask[removed].any()
        t = rp.flatten_params(out)
        assert np.all(t[~mask] == 0.0) and monks.errors(model, out, X, y) <= start
        if c != "OBS":  # no update: replay the removals by zeroing, in order
            z = theta.copy()
            for q in removed:
                z[q] = 0.0
                assert monks.errors(model, rp.unflatten_params(model, z), X, y) <= start
            assert np.array_equal(z, t)
    # magnitude's order is the initial |theta| order (no update, no retraining) and it
    # stops at the first removal that adds a training error
    _, _, removed = monks.prune_loop("magnitude", "ggn", False, model, params, X, y, 0.1)
    order = np.argsort(np.abs(theta), kind="stable")
    assert removed == order[: len(removed)].tolist()
    z = theta.copy()
    z[order[: len(removed) + 1]] = 0.0
    assert len(removed) == theta.size - 2 or monks.errors(model, rp.unflatten_params(model, z), X, y) > start


def test_monks_retrained_loop_reaches_minima_of_the_masked_objective():
    model, params, X, y = _monks_small_net()
    mask, out, removed = monks.prune_loop("magnitude", "ggn", True, model, params, X, y, 0.1)
    t = rp.flatten_params(out)
    g = rp.grad(model, out, X, y, monks.LOSS) + 0.1 * t
    assert np.all(t[~mask] == 0.0) and np.abs(g[mask]).max() < 1e-6  # stationary on the free weights
    assert monks.errors(model, out, X, y) <= monks.errors(model, params, X, y)


def test_monks_quick_mode_writes_its_report(tmp_path):
    pytest.importorskip("matplotlib")
    _run(["validation/monks.py", "--quick", "--out", str(tmp_path)])
    import report

    text = (tmp_path / "monks.md").read_text()
    assert (tmp_path / "monks.png").exists() and "smoke run" in text.splitlines()[0]
    row = report.read_readme_row(tmp_path / "monks.md")
    assert row["study"].startswith(monks.PAPER) and "93.4% / 97.2%" in row["reproduced"]


def test_obd_study_per_weight_quantities():
    """At the minimum of an exactly quadratic objective (ridge regression) OBD with the
    exact diagonal and OBS predict every single removal exactly; LeCun's diagonal equals
    the exact one for a single affine layer (docs/derivations.md §7)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    model, loss = rp.Sequential(rp.Linear(5, 3)), rp.MSELoss("sum")
    res = rp.minimize(model, model.init(0), X, y, loss, weight_decay=obd_digits.WEIGHT_DECAY)
    pw = obd_digits.per_weight(model, res.params, X, y, loss)
    for name in ("OBD, exact diagonal", "OBD, LeCun's diagonal", "OBS"):
        pred, actual = pw[name]
        assert pred.shape == actual.shape == (15,)
        assert np.allclose(pred, actual, rtol=1e-8, atol=1e-12), name
    assert np.all(pw["OBS"][1] <= pw["OBD, exact diagonal"][1] + 1e-12)  # the update never costs more
    assert obd_digits.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


def test_ekfac_study_ratios_never_exceed_one():
    rng = np.random.default_rng(1)
    model = rp.Sequential(rp.Conv2d(1, 2, 3, padding=1), rp.Tanh(), rp.Flatten(), rp.Linear(32, 3))
    X, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
    rows = ekfac_distance.distances(model, model.init(0), X, y, rp.CrossEntropyLoss(), samples=2)
    assert len(rows) == 6
    assert all(de <= dk * (1 + 1e-12) + 1e-15 for _, _, dk, de, _ in rows)


def test_eigendamage_study_counts_flops_by_hand():
    model = eigendamage_digits.network([4, 6])
    # conv 1->4 3x3 on 8x8 -> 6x6; conv 4->6 3x3 -> 4x4; pool -> 2x2; linear 24 -> 10
    assert eigendamage_digits.flops(model) == 4 * 9 * 36 + 6 * 36 * 16 + 24 * 10
    assert eigendamage_digits.prunable(model) == [0, 2]  # the classifier is never pruned


def _patches(x, k):
    """``(N, H', W', c, kk)``: every k x k window by slicing (not refprune's im2col)."""
    n, c, h, w = x.shape
    out = np.empty((n, h - k + 1, w - k + 1, c, k * k))
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            out[:, i, j] = x[:, :, i : i + k, j : j + k].reshape(n, c, k * k)
    return out


def _eigendamage_instance():
    rng = np.random.default_rng(3)
    model = eigendamage_digits.network([3, 5])
    params = model.init(1)
    X, y = rng.random((30, 1, 8, 8)), rng.integers(0, 10, 30)
    return model, params, X, y


def test_eigendamage_channel_factor_against_patches():
    """The authors' channel factor: the mean over positions and kernel offsets of
    [a_o; 1/kk][a_o; 1/kk]^T, from windows cut by hand."""
    model, params, X, y = _eigendamage_instance()
    K = rp.kfac(model, params, X, y, rp.CrossEntropyLoss())
    layer = model[2]
    h = rp.Sequential(*model.layers[:2])(params[:2], X)
    P = _patches(h, 3)  # (N, 4, 4, 3, 9)
    a = np.concatenate([P, np.full(P.shape[:3] + (1, 9), 1 / 9)], axis=3)  # the bias channel, 1/kk per offset
    a = a.transpose(0, 1, 2, 4, 3).reshape(-1, 4)
    expected = a.T @ a / len(a)
    got = eigendamage_digits.channel_factor(layer, K.blocks[1].A)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_eigendamage_importances_and_bottleneck():
    model, params, X, y = _eigendamage_instance()
    state = eigendamage_digits.eigendamage_state(model, params, X, y)
    K = rp.kfac(model, params, X, y, rp.CrossEntropyLoss())
    grouped = model.group_params(params)
    for d, block in zip(state["layers"], K.blocks):
        layer = model[d["j"]]
        # the importances sum to the K-FAC quadratic form in the channel form, computed
        # without eigenvectors: sum_o tr(M_o^T S M_o A_c) / 2
        M = eigendamage_digits.per_offset(layer, *grouped[d["j"]])
        Ac = eigendamage_digits.channel_factor(layer, block.A)
        quad = sum(np.trace(Mo.T @ block.S @ Mo @ Ac) for Mo in M) / 2
        assert d["imp"].sum() == pytest.approx(quad, rel=1e-10)
        # [W_o | b] per offset holds the weights in PyTorch's layout and the bias in every offset
        W, b = grouped[d["j"]]
        assert np.array_equal(M[4, :, :-1], W[:, :, 1, 1]) and np.array_equal(M[7, :, -1], b)
    # every direction kept: the bottleneck computes the network exactly
    layers, flat = [], []
    by_j = {d["j"]: d for d in state["layers"]}
    for j, layer in enumerate(model):
        if j in by_j:
            d = by_j[j]
            b_layers, b_params = eigendamage_digits.bottleneck(layer, d["US"], d["UA"], d["Wstar"])
            layers += b_layers
            flat += [p for g in b_params for p in g]
        else:
            layers.append(layer)
            flat += list(grouped[j])
    assert np.allclose(rp.Sequential(*layers)(flat, X), model(params, X), rtol=1e-10, atol=1e-12)
    # removal order: lowest importance first, and never the last direction of a side
    order = state["order"]
    imp = [state["layers"][li]["imp"].sum(axis=1 - side)[i] for li, side, i in order]
    assert np.all(np.diff(imp) >= 0)
    small, small_params, made = eigendamage_digits.eigendamage_prune(state, len(order))
    assert made and all(o >= 1 for o in (layer.out_units for layer in small if isinstance(layer, rp.nn.AffineLayer)))
    assert eigendamage_digits.flops(small) < eigendamage_digits.flops(model)
    same, same_params, none = eigendamage_digits.eigendamage_prune(state, 0)
    assert none == [] and np.array_equal(same(same_params, X), model(params, X))


def test_eigendamage_bisection_and_intervals():
    steps = [0.0, 0.1, 0.25, 0.26, 0.5, 0.9]
    assert eigendamage_digits.bisect(lambda k: steps[k], 5, 0.24) == (2, 0.25)
    assert eigendamage_digits.bisect(lambda k: steps[k], 5, 0.2) == (2, 0.25)
    assert eigendamage_digits.bisect(lambda k: steps[k], 5, 0.15) == (1, 0.1)  # ties to the smaller amount
    assert eigendamage_digits.bisect(lambda k: steps[k], 5, 0.95) == (5, 0.9)
    d = np.array([1.0, 2.5, -0.5, 3.0, 1.2])
    mean, lo, hi = eigendamage_digits.t_interval(d)
    ci = __import__("scipy.stats").stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (mean, lo, hi) == pytest.approx((d.mean(), ci.low, ci.high), rel=1e-12)
    assert eigendamage_digits.direction(1.0, 0.2, 1.8) == "EigenDamage more accurate"
    assert eigendamage_digits.direction(-1.0, -1.8, -0.2) == "unit pruning more accurate"
    assert eigendamage_digits.direction(0.1, -0.2, 0.4) == "no difference resolved"


def test_eigendamage_seed_files_record_their_configuration(tmp_path):
    path = str(tmp_path / "seed_0.json")
    calls = []

    def compute():
        calls.append(1)
        return {"acc": 0.5}

    assert eigendamage_digits.cached(path, {"a": 1}, compute) == {"acc": 0.5}
    assert eigendamage_digits.cached(path, {"a": 1}, compute) == {"acc": 0.5} and len(calls) == 1
    assert eigendamage_digits.cached(path, {"a": 2}, compute) == {"acc": 0.5} and len(calls) == 2  # recomputed
    import json

    assert json.load(open(path))["config"] == {"a": 2}
    assert eigendamage_digits.cached(path, {"a": 2}, compute, complete=lambda r: "rows" in r) == {"acc": 0.5}
    assert len(calls) == 3  # incomplete: recomputed
    with open(path, "w") as fh:
        fh.write('{"config": {"a"')  # a truncated file
    assert eigendamage_digits.cached(path, {"a": 2}, compute) == {"acc": 0.5} and len(calls) == 4


def test_eigendamage_quick_mode_writes_its_report_and_resumes(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    import report

    args = ["validation/eigendamage_digits.py", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c")]
    _run(args)
    text = (tmp_path / "eigendamage_digits.md").read_text()
    assert "a tiny instance" in text.splitlines()[0] and (tmp_path / "eigendamage_digits.png").exists()
    assert sorted(os.listdir(tmp_path / "c")) == ["seed_0.json", "seed_1.json", "selection.json"]
    assert report.read_readme_row(tmp_path / "eigendamage_digits.md")["study"] == eigendamage_digits.PAPER
    _run(args)  # from the seed files: the same report
    assert (tmp_path / "eigendamage_digits.md").read_text() == text


def test_ekfac_quick_mode_writes_its_report(tmp_path):
    pytest.importorskip("sklearn")
    import report

    _run(["validation/ekfac_distance.py", "--quick", "--out", str(tmp_path)])
    text = (tmp_path / "ekfac_distance.md").read_text()
    assert "construction check" in text.splitlines()[0] and "a tiny instance" in text.splitlines()[0]
    row = report.read_readme_row(tmp_path / "ekfac_distance.md")
    assert row["reproduced"].startswith("construction check") and row["not reproduced"] == "—"


def test_obd_quick_mode_writes_its_report(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    _run(["validation/obd_digits.py", "--quick", "--out", str(tmp_path)])
    assert "a tiny instance" in (tmp_path / "obd_digits.md").read_text().splitlines()[0]
    assert (tmp_path / "obd_digits_sweep.png").exists() and (tmp_path / "obd_digits_scatter.png").exists()


def test_natural_gradient_quick_mode_keeps_wall_times_out_of_its_report(tmp_path):
    """The report holds what the seeds determine; the machine's wall times go to a timing
    file of their own (the committed report regenerates byte for byte)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    _run(["validation/natural_gradient_digits.py", "--quick", "--out", str(tmp_path)])
    text = (tmp_path / "natural_gradient_digits.md").read_text()
    assert "a smoke run, not the study" in text.splitlines()[0]
    assert " ms." not in text and "step / gradient" not in text and "seconds to reach" not in text
    assert "<!-- readme-row " in text and ("does not reproduce" in text or "; reproduces" in text)
    timing = (tmp_path / "natural_gradient_digits_timing.md").read_text()
    assert "seconds to reach target" in timing and "One mini-batch gradient" in timing


def test_natural_gradient_study_loop_is_trains_loop():
    import natural_gradient_digits as ngd

    rng = np.random.default_rng(0)
    model = rp.Sequential(rp.Linear(5, 4), rp.Tanh(), rp.Linear(4, 3))
    X, y = rng.standard_normal((10, 5)), rng.integers(0, 3, 10)
    loss = rp.CrossEntropyLoss()
    opt = rp.optim.EKFAC(lr=0.1, damping=0.1, momentum=0.9, refresh_interval=2, seed=4)
    losses, clock, steps = ngd.run(model, loss, X, y, opt, epochs=3, batch_size=4, seed=4)
    _, history = rp.train(model, model.init(4), X, y, loss, epochs=3, batch_size=4, seed=4, optimizer=opt)
    assert np.array_equal(losses, history)
    assert len(steps) == 9 and np.all(np.diff(clock) > 0)
    assert ngd.epochs_to_reach(np.array([3.0, 2.0, 1.0, 0.5]), 1.0) == 2
    assert ngd.epochs_to_reach(np.array([3.0, 2.0]), 1.0) is None
    assert all(len(s) == 6 for s in ngd.optimizers().values())  # the same search budget for each


def test_a_quick_run_never_writes_over_a_committed_report():
    """Without ``--out`` a smoke run writes into validation/out/quick; the committed
    report keeps its bytes (a quick run used to overwrite the natural-gradient report)."""
    import report

    assert report.output_dir(None, True) == os.path.join(os.path.dirname(report.RESULTS), "out", "quick")
    assert report.output_dir(None, False) == report.RESULTS and report.output_dir("x", True) == "x"
    pytest.importorskip("sklearn")  # the study's own needs (extra "validation"), as for the other quick runs
    pytest.importorskip("matplotlib")
    root = os.path.join(os.path.dirname(__file__), os.pardir)
    committed = os.path.join(root, "validation", "results", "ekfac_distance.md")
    before = open(committed, "rb").read()
    _run(["validation/ekfac_distance.py", "--quick"])
    assert open(committed, "rb").read() == before
    quick = os.path.join(root, "validation", "out", "quick", "ekfac_distance.md")
    assert open(quick).read().splitlines()[0].endswith("a tiny instance, not the study")
