"""Golden fixtures: the committed files are what refprune computes today (rebuilt and
compared), writing is byte-for-byte deterministic, the loader verifies checksums and
rebuilds each network from its JSON description."""

import json
import os

import numpy as np
import pytest

import refprune as rp
from refprune import conformance as cf
from refprune.fixtures import case_arrays, fixture_cases, write_fixtures
from refprune.testing import compare_with_fixture, load_fixtures

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "golden")


@pytest.fixture(scope="module")
def golden():
    return load_fixtures(GOLDEN)


def test_committed_fixtures_equal_a_fresh_build(golden):
    """Every array of every committed case, rebuilt now.  Equal to rounding (relative
    1e-12): a BLAS on another processor may sum in another order; on the machine that
    wrote them they are bit-identical (the checksums below)."""
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
            scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
            assert np.abs(new - ref).max(initial=0.0) <= 1e-12 * scale, (fx.name, key)
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
    assert manifest["format_version"] == 1 and "parameters" in manifest["conventions"]
    for fx in golden:
        with np.load(fx.path, allow_pickle=False) as data:  # plain arrays, no pickles
            assert sorted(data.files) == sorted(fx.entry["arrays"])
        model = fx.model
        assert [s["type"] for s in fx.entry["network"]] == [type(layer).__name__ for layer in model]
        # the network rebuilt from JSON computes the stored loss and gradient
        assert rp.loss(*fx.args()) == pytest.approx(float(fx["loss"]), rel=1e-14)
        compare_with_fixture(fx, "grad", rp.grad(*fx.args()))


def test_a_changed_array_fails_its_checksum(tmp_path):
    cases = fixture_cases()[:1]
    write_fixtures(tmp_path, cases)
    with open(tmp_path / "manifest.json") as fh:
        manifest = json.load(fh)
    manifest["cases"][0]["arrays"]["grad"]["sha256"] = "0" * 64
    with open(tmp_path / "manifest.json", "w") as fh:
        json.dump(manifest, fh)
    with pytest.raises(ValueError, match="array 'grad' does not match its SHA-256"):
        load_fixtures(tmp_path)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_fixtures(tmp_path / "nowhere")


def test_compare_with_fixture_names_the_difference(golden):
    fx = next(f for f in golden if f.entry["loss"]["type"] == "squared_error")
    with pytest.raises(AssertionError, match="ggn: relative error 5.000e-01 .*Lambda = I for squared error"):
        compare_with_fixture(fx, "ggn", fx["ggn"] / 2)
    assert compare_with_fixture(fx, "ggn", fx["ggn"]) == 0.0
    with pytest.raises(KeyError, match="has no array 'hessain'"):
        fx["hessain"]


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
