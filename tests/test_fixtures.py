"""Golden fixtures: the committed files are what refprune computes today (rebuilt and
compared), writing is byte-for-byte deterministic, the loader verifies checksums and
rebuilds each network from its JSON description."""

import json
import os

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.fixtures import case_arrays, case_arrays_and_omitted, fixture_cases, manifest_checksum_line, write_fixtures
from refprune.testing import compare_with_fixture, load_fixtures, model_from_spec

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "golden")


@pytest.fixture(scope="module")
def golden():
    return load_fixtures(GOLDEN)


def test_committed_fixtures_equal_a_fresh_build(golden):
    """Every array of every committed case, rebuilt now: equal to the agreement that
    fixtures/README.md states across machines, max |a - b| <= 1e-11 max |b| per array.
    Measured: at most 1.9e-12 over OpenBLAS's kernels (OPENBLAS_CORETYPE=Haswell,
    SkylakeX, Sandybridge, Prescott, Zen, Nehalem; the OBS quantities, from the inverse
    of GGN + 1e-3 I, differ most), BLAS thread counts 1 and 2 (2.2e-16) and another
    machine's libm (2.7e-13, the softplus and sigmoid cases).  On the machine that
    wrote them, with the same thread count, they are bit-identical."""
    fresh = {c.name: c for c in fixture_cases()}
    assert [fx.name for fx in golden] == sorted(fresh, key=lambda n: (fresh[n].n_params, n))
    identical = 0
    for fx in golden:
        arrays = case_arrays(fresh[fx.name])
        stored = fx.arrays
        assert sorted(arrays) == sorted(stored), fx.name
        for key, ref in stored.items():
            new = arrays[key]
            assert new.shape == ref.shape and new.dtype == ref.dtype, (fx.name, key)
            scale = float(np.abs(ref).max(initial=0.0))
            assert np.abs(new - ref).max(initial=0.0) <= 1e-11 * scale, (fx.name, key)
            identical += bool(np.array_equal(new, ref))
    assert identical > 0


def test_writing_is_byte_for_byte_deterministic(tmp_path):
    cases = fixture_cases()[:2]
    write_fixtures(tmp_path / "a", cases)
    write_fixtures(tmp_path / "b", cases)
    for name in sorted(os.listdir(tmp_path / "a")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_manifest_describes_every_array_and_network(golden):
    with open(os.path.join(GOLDEN, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["format_version"] == 2 and "parameters" in manifest["conventions"]
    for fx in golden:
        with np.load(fx.path, allow_pickle=False) as data:  # plain arrays, no pickles
            assert sorted(data.files) == sorted(fx.entry["arrays"])
            for key, meta in fx.entry["arrays"].items():
                assert meta["shape"] == list(data[key].shape) and meta["dtype"] == data[key].dtype.str
        model = fx.model
        assert [s["type"] for s in fx.entry["network"]] == [type(layer).__name__ for layer in model]
        # the network rebuilt from JSON computes the stored loss and gradient
        assert rp.loss(*fx.args()) == pytest.approx(float(fx["loss"]), rel=1e-14)
        compare_with_fixture(fx, "grad", rp.grad(*fx.args()))


def test_every_committed_network_rebuilds_from_the_manifest_text():
    """The manifest speaks refprune's dialect: straight from the JSON text, with no
    refprune code but the classes themselves, every network, loss and input shape
    rebuilds and reproduces the stored arrays; loss_scale is R's closed form."""
    with open(os.path.join(GOLDEN, "manifest.json")) as fh:
        manifest = json.loads(fh.read())
    assert len(manifest["cases"]) == 21
    for case in manifest["cases"]:
        model = rp.Sequential(*[getattr(rp, s["type"])(**{k: v for k, v in s.items() if k != "type"})
                                for s in case["network"]])
        loss = getattr(rp, case["loss"]["type"])(**{k: v for k, v in case["loss"].items() if k != "type"})
        assert set(case["loss"]) == {"type", "reduction"}
        with np.load(os.path.join(GOLDEN, case["file"]), allow_pickle=False) as data:
            a = {k: data[k] for k in data.files}
        X, y = a["X"], a["y"]
        assert X.shape == (case["n_samples"], *case["input_shape"])
        params = [a[f"param{i}"] for i in range(len(model.param_shapes()))]
        n, c = case["n_samples"], model.output_shape(tuple(case["input_shape"]))[0]
        per_element = case["loss"]["type"] in ("MSELoss", "BCEWithLogitsLoss")  # torch's mean over N C
        R = 1.0 if case["loss"]["reduction"] == "sum" else 1.0 / (n * c) if per_element else 1.0 / n
        assert case["loss_scale"] == pytest.approx(R, rel=1e-15)
        # the documented agreement across machines (fixtures/README.md): 1e-11 relative
        for key, value in (("loss", rp.loss(model, params, X, y, loss)), ("grad", rp.grad(model, params, X, y, loss)),
                           ("hessian", rp.hessian(model, params, X, y, loss)),
                           ("ggn", rp.ggn(model, params, X, y, loss))):
            ref = a[key]
            assert np.abs(value - ref).max() <= 1e-11 * np.abs(ref).max(), (case["name"], key)


def test_model_from_spec_names_the_layer_and_what_is_accepted():
    ok = model_from_spec([{"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [2, 3],
                           "stride": [1, 2], "padding": [0, 1], "bias": False}, {"type": "Softplus"},
                          {"type": "AvgPool2d", "kernel_size": 2}, {"type": "Flatten"},
                          {"type": "Linear", "in_features": 4, "out_features": 2}])
    assert repr(ok[0]) == "Conv2d(1, 2, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), bias=False)"
    assert repr(ok[2]) == "AvgPool2d(2)"
    bad = [
        ([{"type": "Tanh"}, {"in_features": 3}], ValueError, "layer 1 {'in_features': 3} has no 'type'; accepted types: "
                                                             "Linear, Conv2d"),
        ([{"type": "GELU"}], ValueError, "layer 0 has unknown type 'GELU'; accepted types: Linear"),
        ([{"type": "Linear", "in_features": 3, "out_features": 2, "bais": True}], ValueError,
         "layer 0 (Linear) has unknown argument(s) ['bais']; Linear accepts ['in_features', 'out_features', 'bias']"),
        ([{"type": "Tanh", "inplace": False}], ValueError, "layer 0 (Tanh) has unknown argument(s) ['inplace']; Tanh "
                                                           "accepts no arguments"),
        ([{"type": "AvgPool2d", "kernel_size": 2, "stride": 2}], ValueError,
         "unknown argument(s) ['stride'] (refprune pools with stride = kernel_size); AvgPool2d accepts ['kernel_size']"),
        ([{"type": "Linear", "in_features": 3}], ValueError, "layer 0 (Linear) lacks the argument(s) ['out_features']; "
                                                             "Linear accepts ['in_features', 'out_features', 'bias'] "
                                                             "(['in_features', 'out_features'] required)"),
        ([{"type": "Linear", "in_features": 3, "out_features": 2, "bias": "yes"}], TypeError,
         "layer 0 (Linear): Linear: bias must be True or False, got 'yes'"),
        ([{"type": "Linear", "in_features": 0, "out_features": 2}], ValueError,
         "layer 0 (Linear): Linear: in_features must be a positive int, got 0"),
        ([{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": "3"}], ValueError, "layer 0 (Conv2d)"),
        ([], ValueError, "the list of layers is empty"),
        ({"network": []}, TypeError, "expected a list of layer specifications"),
        (["Linear(3, 2)"], TypeError, "layer 0 must be a dict"),
    ]
    for spec, exc, words in bad:
        with pytest.raises(exc) as err:
            model_from_spec(spec)
        assert words in str(err.value), (str(err.value), words)


def test_the_command_line_reads_a_manifest_network(tmp_path, capsys):
    """--model-json takes a manifest case's network and --input-shape its per-sample
    input_shape: the Hessian equals the stored one."""
    from refprune.cli import main

    with open(os.path.join(GOLDEN, "manifest.json")) as fh:
        case = next(c for c in json.load(fh)["cases"] if c["name"] == "conv-tanh-avgpool/ce-mean")
    (tmp_path / "net.json").write_text(json.dumps(case))
    with np.load(os.path.join(GOLDEN, case["file"])) as d:
        np.savez(tmp_path / "data.npz", X=d["X"], y=d["y"])
        np.savez(tmp_path / "params.npz", **{k: d[k] for k in d.files if k.startswith("param")})
        ref = d["hessian"]
    out = tmp_path / "H.npy"
    code = main(["hessian", "--model-json", str(tmp_path / "net.json"), "--data", str(tmp_path / "data.npz"),
                 "--params", str(tmp_path / "params.npz"), "--loss", "ce", "--reduction", case["loss"]["reduction"],
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert np.abs(np.load(out) - ref).max() <= 1e-11 * np.abs(ref).max()
    code = main(["hessian", "--model-json", str(tmp_path / "net.json"), "--input-shape", *map(str, case["input_shape"]),
                 "--samples", str(case["n_samples"]), "--dry-run"])
    assert code == 0


def _write_one(tmp_path):
    write_fixtures(tmp_path, [cf.make_case("linear", "mse-mean")])
    return tmp_path


def _edit_manifest(d, edit, rehash=True):
    """Edit the manifest as JSON; ``rehash``: update manifest.sha256 as well (so that
    the loader's other checks are reached)."""
    path = d / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest = edit(manifest)
    data = (json.dumps(manifest) + "\n").encode()
    path.write_bytes(data)
    if rehash:
        (d / "manifest.sha256").write_text(manifest_checksum_line(data))


def _resave(d, key, new):
    path = d / "linear__mse-mean.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = new(arrays[key]) if callable(new) else new
    if arrays[key] is None:
        del arrays[key]
    np.savez(path, **arrays)


def _set(path, value):
    def edit(m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
        return m
    return edit


DAMAGE = {
    "same bytes, another shape": (lambda d: _resave(d, "grad", lambda a: a.reshape(1, -1)), ValueError,
                                  "array 'grad' is <f8 of shape [1, 8], the manifest says <f8 of shape [8]"),
    "same bytes, another dtype": (lambda d: _resave(d, "grad", lambda a: a.view(np.int64)), ValueError,
                                  "array 'grad' is <i8 of shape [8], the manifest says <f8 of shape [8]"),
    "changed value": (lambda d: _resave(d, "hessian", lambda a: a + 1e-15), ValueError,
                      "array 'hessian' does not match its SHA-256"),
    "array removed": (lambda d: _resave(d, "ggn", None), ValueError, "missing ['ggn'], not listed []"),
    "array added": (lambda d: _resave(d, "extra", np.zeros(2)), ValueError, "missing [], not listed ['extra']"),
    "truncated npz": (lambda d: (d / "linear__mse-mean.npz").write_bytes((d / "linear__mse-mean.npz").read_bytes()[:500]),
                      ValueError, "linear__mse-mean.npz' cannot be read as an .npz"),
    "npz missing": (lambda d: (d / "linear__mse-mean.npz").unlink(), FileNotFoundError,
                    "linear__mse-mean.npz' is missing"),
    "reduction edited": (lambda d: _edit_manifest(d, _set(["cases", 0, "loss", "reduction"], "sum"), rehash=False),
                         ValueError, "manifest.json' does not match its SHA-256 in"),
    "manifest.sha256 missing": (lambda d: (d / "manifest.sha256").unlink(), FileNotFoundError,
                                "no manifest.sha256 beside"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text('{"cases": ['), ValueError,
                          "manifest.json' is not valid JSON"),
    "manifest {}": (lambda d: _edit_manifest(d, lambda m: {}), ValueError,
                    "manifest.json' lacks ['format_version', 'cases']"),
    "manifest a list": (lambda d: _edit_manifest(d, lambda m: []), ValueError, "must hold a JSON object, got list"),
    "format 1": (lambda d: _edit_manifest(d, _set(["format_version"], 1)), ValueError, "has format_version 1"),
    "case without network": (lambda d: _edit_manifest(d, lambda m: (m["cases"][0].pop("network"), m)[1]), ValueError,
                             "case 0 ('linear/mse-mean') lacks 'network'"),
    "shape in the manifest edited": (lambda d: _edit_manifest(d, _set(["cases", 0, "arrays", "grad", "shape"], [2, 4])),
                                     ValueError, "the manifest says <f8 of shape [2, 4]"),
    "unknown layer type": (lambda d: _edit_manifest(d, _set(["cases", 0, "network", 0, "type"], "Dense")), ValueError,
                           "layer 0 has unknown type 'Dense'"),
    "unknown loss type": (lambda d: _edit_manifest(d, _set(["cases", 0, "loss", "type"], "squared_error")), ValueError,
                          "expected {'type': one of ('CrossEntropyLoss', 'MSELoss', 'BCEWithLogitsLoss')"),
    "input_shape with N": (lambda d: _edit_manifest(d, _set(["cases", 0, "input_shape"], [3, 3])), ValueError,
                           "X has shape [3, 3], the manifest's n_samples and input_shape say [3, 3, 3]"),
    "complex array": (lambda d: (_resave(d, "grad", lambda a: a + 1e-3j), _edit_manifest(
        d, _set(["cases", 0, "arrays", "grad"], {"shape": [8], "dtype": "<c16", "sha256": "0" * 64}))), ValueError,
        "array 'grad' has dtype '<c16', complex: fixtures hold real numbers"),
    "file outside": (lambda d: _edit_manifest(d, _set(["cases", 0, "file"], "../x.npz")), ValueError,
                     "'file' must be a file name in the directory"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_load_fixtures_refuses_each_damage_kind(tmp_path, kind):
    damage, exc, words = DAMAGE[kind]
    d = _write_one(tmp_path)
    load_fixtures(d)  # intact
    damage(d)
    with pytest.raises(exc) as err:
        load_fixtures(d)
    assert words in str(err.value), (str(err.value), words)
    assert "Traceback" not in str(err.value)


def test_load_fixtures_refuses_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_fixtures(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="directory must be a path, got int"):
        load_fixtures(3)
    with pytest.raises(TypeError, match="verify must be True or False, got 'yes'"):
        load_fixtures(GOLDEN, verify="yes")


def test_compare_with_fixture_names_the_difference(golden):
    fx = next(f for f in golden if f.entry["loss"]["type"] == "MSELoss")
    with pytest.raises(AssertionError, match="ggn: relative error 5.000e-01 .*Lambda = I for squared error"):
        compare_with_fixture(fx, "ggn", fx["ggn"] / 2)
    assert compare_with_fixture(fx, "ggn", fx["ggn"]) == 0.0
    assert compare_with_fixture(fx, "ggn", fx["ggn"], rtol=np.float32(1e-6)) == 0.0
    with pytest.raises(KeyError, match="has no array 'hessain'"):
        fx["hessain"]
    with pytest.raises(TypeError, match="value for 'ggn' is complex"):
        compare_with_fixture(fx, "ggn", fx["ggn"] + 1e-3j)
    with pytest.raises(AssertionError, match="NaN"):
        compare_with_fixture(fx, "ggn", np.full_like(fx["ggn"], np.nan))
    with pytest.raises(ValueError, match="rtol must be a number in \\[0, 1\\), got nan"):
        compare_with_fixture(fx, "ggn", fx["ggn"], rtol=float("nan"))
    with pytest.raises(TypeError, match="rtol must be a real number in \\[0, 1\\), got bool True"):
        compare_with_fixture(fx, "ggn", fx["ggn"], rtol=True)
    conv = next(f for f in golden if f.name == "conv-tanh-avgpool/ce-mean")
    with pytest.raises(KeyError, match="no array 'ekfac/ggn/reduce': not uniquely defined"):
        conv["ekfac/ggn/reduce"]


def test_ekfac_is_left_out_exactly_where_the_eigenbasis_matters():
    """Re-derived by hand: EKFAC in K-FAC's eigenbasis with the eigenvectors of every
    repeated eigenvalue rotated at random.  Where the fixtures keep an EKFAC the
    rotation changes nothing (so the stored matrix is the EKFAC); where they leave it
    out, the rotation changes the matrix by far more than rounding."""
    from refprune.curvature.kronecker import kfac

    rng = np.random.default_rng(0)
    kept = dropped = 0
    for case in fixture_cases():
        arrays, omitted = case_arrays_and_omitted(case)
        for curv in ("ggn", "empirical_fisher"):
            F = arrays[curv]
            key = f"ekfac/{curv}/reduce"
            op = kfac(*case.args(), curvature=curv, approx="reduce", bias="fold")
            M = np.zeros_like(F)
            for b in op.blocks:
                lay = b.layout
                blk = []
                for W in (b.S, b.A):
                    w, U = np.linalg.eigh(W)
                    tol = 1e-6 * np.abs(w).max()
                    start = 0
                    for i in range(1, len(w) + 1):  # rotate every group of close eigenvalues
                        if i == len(w) or w[i] - w[i - 1] > tol:
                            k = i - start
                            if k > 1:
                                Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
                                U[:, start:i] = U[:, start:i] @ Q
                            start = i
                    blk.append(U)
                US, UA = blk
                B = lay.from_matrix(np.einsum("ci,pj->ijcp", US, UA).reshape(-1, lay.c, lay.p))  # (n_l, c p)
                o = slice(lay.offset, lay.offset + lay.size)
                kappa = np.einsum("ik,ij,jk->k", B, F[o, o], B)  # diag(U^T F_l U)
                M[o, o] = (B * kappa) @ B.T
            if key in arrays:
                kept += 1
                assert np.abs(M - arrays[key]).max() <= 1e-10 * np.abs(F).max(), (case.name, key)
            else:
                dropped += 1
                assert key in omitted
                assert np.abs(M - rp.ekfac(*case.args(), curvature=curv, approx="reduce").to_dense()).max() > \
                    1e-6 * np.abs(F).max(), (case.name, key)
    assert kept and dropped


def test_fixtures_feed_the_conformance_harness(golden):
    """A caller without refprune's functions could compare with the stored arrays; here
    the fixture's case drives the harness and every stored quantity is what it checks."""
    cases = [fx.case() for fx in golden]
    stored = {fx.name: fx for fx in golden}
    adapter = cf.Adapter(hessian=lambda c: stored[c.name]["hessian"], obs_update=lambda c: stored[c.name]["obs_update"],
                         mc_fisher=lambda c: stored[c.name]["mc_fisher"])
    report = cf.check(adapter, cases)
    assert report.ok, report


def test_obs_sequence_in_the_fixtures_is_sequential_obs(golden):
    """The stored removal order and weights follow the OBS rule step by step, re-derived
    here with a fresh inverse of the remaining block at every step (no elimination)."""
    fx = golden[0]
    H = fx["ggn"] + fx.entry["obs_damping"] * np.eye(len(fx["theta"]))
    theta, free = fx["theta"].copy(), np.ones(len(H), dtype=bool)
    weights = np.zeros(len(H), dtype=bool)
    off = fx.model.param_offsets()
    for j, layer in enumerate(fx.model):
        if isinstance(layer, rp.nn.AffineLayer):
            weights[off[j] : off[j] + layer.n_weight] = True
    for step, q in enumerate(fx["obs_sequence/order"]):
        idx = np.flatnonzero(free)
        Hinv = np.linalg.inv(H[np.ix_(idx, idx)])
        s = np.full(len(H), np.inf)
        s[idx] = theta[idx] ** 2 / (2 * np.diag(Hinv))
        s[~weights] = np.inf
        assert int(np.argmin(s)) == q
        k = int(np.flatnonzero(idx == q)[0])
        theta[idx] -= theta[q] / Hinv[k, k] * Hinv[:, k]
        theta[q], free[q] = 0.0, False
        assert fx["obs_sequence/predicted"][step] == pytest.approx(s[q], rel=1e-9)
        assert np.allclose(fx["obs_sequence/theta"][step], theta, rtol=1e-9, atol=1e-12)
