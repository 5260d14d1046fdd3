"""refprune.testing.fixtures: the loader's checks with their whole messages, the arrays
it hands back, and model_from_spec / loss_from_spec's refusals (one small fixture
written to a temporary directory; torch-free)."""

import hashlib
import json
import os

import numpy as np
import pytest

import refprune.conformance as cf
from refprune.fixtures import manifest_checksum_line, write_fixtures
from refprune.testing import compare_with_fixture, load_fixtures, model_from_spec
from refprune.testing.fixtures import Fixture, loss_from_spec

FILE = "linear__mse-mean.npz"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("fx")
    write_fixtures(d, [cf.make_case("linear", "mse-mean")])
    return d


@pytest.fixture
def d(written, tmp_path):
    """A fresh copy of the written fixture, free to damage."""
    for name in os.listdir(written):
        (tmp_path / name).write_bytes((written / name).read_bytes())
    return tmp_path


def manifest(d):
    return json.loads((d / "manifest.json").read_text())


def rewrite(d, m, rehash=True):
    data = (json.dumps(m) + "\n").encode()
    (d / "manifest.json").write_bytes(data)
    if rehash:
        (d / "manifest.sha256").write_text(manifest_checksum_line(data))
    return data


def refused(d, exc=ValueError, verify=True):
    with pytest.raises(exc) as e:
        load_fixtures(d, verify=verify)
    return str(e.value)


def P(d):
    return repr(os.path.join(d, "manifest.json"))


# ---------------------------------------------------------------- the manifest file and its SHA-256


def test_no_manifest(tmp_path):
    assert refused(str(tmp_path), FileNotFoundError) == (f"load_fixtures: no manifest.json in {str(tmp_path)!r}; write the "
                                                     "fixtures with python -m refprune fixtures DIR")


def test_no_checksum_file(d):
    (d / "manifest.sha256").unlink()
    assert refused(d, FileNotFoundError) == (f"load_fixtures: no manifest.sha256 beside {P(d)} (the manifest's own "
                                             "SHA-256); regenerate the fixtures with python -m refprune fixtures DIR")


def test_checksum_mismatch_message(d):
    data = (d / "manifest.json").read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    wrong = "ab" * 32
    (d / "manifest.sha256").write_text(f"{wrong}  manifest.json\n")
    assert refused(d) == (f"load_fixtures: {P(d)} does not match its SHA-256 in {str(d / 'manifest.sha256')!r} "
                          f"(recorded {wrong[:16]}..., actual {actual[:16]}...): the manifest was edited or damaged; "
                          "regenerate the fixtures with python -m refprune fixtures DIR")


def test_empty_or_undecodable_checksum_file(d):
    actual = hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()
    for content in (b"", b"\xff\xfe\x00 not utf-8\n"):
        (d / "manifest.sha256").write_bytes(content)
        msg = refused(d)
        assert f"does not match its SHA-256" in msg
        assert f"actual {actual[:16]}..." in msg
    (d / "manifest.sha256").write_bytes(b"")
    assert f"(recorded nothing..., actual {actual[:16]}...)" in refused(d)


def test_not_json_with_and_without_matching_checksum(d):
    data = b'{"cases": ['
    (d / "manifest.json").write_bytes(data)
    (d / "manifest.sha256").write_text(manifest_checksum_line(data))
    msg = refused(d)
    assert msg.startswith(f"load_fixtures: {P(d)} is not valid JSON (")
    assert msg.endswith(")"), msg  # nothing about the SHA-256: it matches
    (d / "manifest.sha256").write_text("0" * 64 + "  manifest.json\n")
    assert refused(d).endswith("; its SHA-256 differs from manifest.sha256's")


# ---------------------------------------------------------------- the manifest's structure


def test_not_a_manifest(d):
    rewrite(d, {"x": 1})
    assert refused(d) == (f"load_fixtures: {P(d)} lacks ['format_version', 'cases'] (it has ['x']): not a fixtures "
                          "manifest, or a damaged one")


def test_cases_not_a_list(d):
    rewrite(d, {"format_version": 2, "cases": {"a": 1}})
    assert refused(d) == f"load_fixtures: {P(d)}: 'cases' must be a list, got dict"


def test_case_not_an_object(d):
    rewrite(d, {"format_version": 2, "cases": [[1]]})
    assert refused(d) == f"load_fixtures: {P(d)}: case 0 must be an object, got list"


def test_case_without_a_name_is_labelled(d):
    m = manifest(d)
    del m["cases"][0]["name"]
    rewrite(d, m)
    assert refused(d) == f"load_fixtures: {P(d)}: case 0 ('?') lacks 'name'"


@pytest.mark.parametrize("key, value, kind", [("loss_scale", True, "float"), ("loss_scale", "0.5", "float"),
                                              ("n_samples", True, "int"), ("n_samples", 3.0, "int"),
                                              ("name", 5, "str"), ("network", {}, "list")])
def test_field_types_refused(d, key, value, kind):
    m = manifest(d)
    m["cases"][0][key] = value
    rewrite(d, m)
    label = repr(value) if key == "name" else "'linear/mse-mean'"
    assert refused(d) == f"load_fixtures: {P(d)}: case 0 ({label}): {key!r} must be a {kind}, got {value!r}"


def test_integer_valued_float_fields_accepted(d):
    """JSON writes 1.0 as 1.0, but another writer may write 1: a float field takes an int."""
    m = manifest(d)
    m["cases"][0]["obs_damping"] = 1
    rewrite(d, m)
    (fx,) = load_fixtures(d)
    assert fx.case().obs_damping == 1


@pytest.mark.parametrize("meta", [[8], {"shape": 8, "dtype": "<f8", "sha256": "0"},
                                  {"shape": [8], "dtype": 8, "sha256": "0"}, {"shape": [8], "dtype": "<f8"},
                                  {"shape": [8], "dtype": "<f8", "sha256": 0}])
def test_array_entries_checked(d, meta):
    m = manifest(d)
    m["cases"][0]["arrays"]["grad"] = meta
    rewrite(d, m)
    assert refused(d, verify=False) == (f"load_fixtures: {P(d)}: case 0 ('linear/mse-mean'): array 'grad' must have "
                                        f"'shape' (a list), 'dtype' and 'sha256', got {meta!r}")


@pytest.mark.parametrize("dtype, what", [("<f4", "not one fixtures use"), ("<c16", "complex: fixtures hold real numbers")])
def test_array_dtype_refused(d, dtype, what):
    m = manifest(d)
    m["cases"][0]["arrays"]["grad"]["dtype"] = dtype
    rewrite(d, m)
    assert refused(d, verify=False) == (f"load_fixtures: {P(d)}: case 0 ('linear/mse-mean'): array 'grad' has dtype "
                                        f"{dtype!r}, {what}; accepted: ('<f8', '<i8') (float64, int64)")


# ---------------------------------------------------------------- the arrays (verify)


def _resave(d, edit):
    with np.load(d / FILE) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(d / FILE, **arrays)


def test_two_problems_joined(d):
    def edit(a):
        a["grad"] = a["grad"] + 1.0
        a["loss"] = a["loss"] + 1.0
    _resave(d, edit)
    path = repr(str(d / FILE))
    assert refused(d) == (f"fixture linear/mse-mean ({path}): array 'grad' does not match its SHA-256 in the "
                          "manifest; array 'loss' does not match its SHA-256 in the manifest")


def test_input_array_absent_from_both(d):
    m = manifest(d)
    del m["cases"][0]["arrays"]["v"]
    rewrite(d, m)
    _resave(d, lambda a: a.pop("v"))
    assert refused(d) == f"fixture linear/mse-mean: {str(d / FILE)!r} lacks the input arrays ['v']"


def test_parameter_shapes_against_the_network(d):
    m = manifest(d)
    m["cases"][0]["network"][0]["bias"] = False  # weight (2, 3) still fits, the stored bias does not exist
    rewrite(d, m)
    assert load_fixtures(d, verify=False)  # the structure is fine
    m["cases"][0]["network"][0]["out_features"] = 4
    m["cases"][0]["network"][0]["bias"] = True
    rewrite(d, m)
    assert refused(d) == ("fixture linear/mse-mean: the stored parameters have shapes [(2, 3), (2,)], the manifest's "
                          "network [(4, 3), (4,)]")


def test_pickled_array_refused(d):
    """An object array (a pickle) is not loaded."""
    m = manifest(d)
    with np.load(d / FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["grad"] = np.array([{"a": 1}], dtype=object)
    np.savez(d / FILE, **arrays)
    rewrite(d, m)
    (fx,) = load_fixtures(d, verify=False)
    with pytest.raises(ValueError) as e:
        fx["grad"]
    assert str(e.value).startswith(f"fixture linear/mse-mean: {str(d / FILE)!r} cannot be read as an .npz (ValueError: ")


def test_truncated_file_message(d):
    (fx,) = load_fixtures(d)
    (d / FILE).write_bytes((d / FILE).read_bytes()[:500])
    with pytest.raises(ValueError) as e:
        fx["X"]
    assert str(e.value) == (f"fixture linear/mse-mean: {str(d / FILE)!r} cannot be read as an .npz (BadZipFile: "
                            "File is not a zip file): it is damaged or truncated; regenerate it with python -m "
                            "refprune fixtures DIR")


# ---------------------------------------------------------------- Fixture


def test_missing_array_message(d):
    (fx,) = load_fixtures(d)
    with pytest.raises(KeyError) as e:
        fx["nothing"]
    assert e.value.args[0] == "fixture linear/mse-mean has no array 'nothing'"
    fx.entry["omitted"] = {"nothing": "not defined here"}
    with pytest.raises(KeyError) as e:
        fx["nothing"]
    assert e.value.args[0] == "fixture linear/mse-mean has no array 'nothing': not defined here"
    bare = Fixture("bare", {}, str(d / FILE))  # an entry without 'omitted'
    with pytest.raises(KeyError) as e:
        bare["nothing"]
    assert e.value.args[0] == "fixture bare has no array 'nothing'"


def test_case_carries_the_stored_inputs(d):
    (fx,) = load_fixtures(d)
    with np.load(d / FILE) as z:
        v, targets = z["v"], z["mc_targets"]
    fx.entry["obs_damping"], fx.entry["obs_index"] = 0.25, 1
    c = fx.case()
    np.testing.assert_array_equal(c.v, v)
    np.testing.assert_array_equal(c.targets, targets)
    assert (c.obs_damping, c.obs_index) == (0.25, 1)


# ---------------------------------------------------------------- compare_with_fixture


def test_compare_with_fixture(d):
    (fx,) = load_fixtures(d)
    with pytest.raises(TypeError) as e:
        compare_with_fixture("fx", "grad", np.zeros(8))
    assert str(e.value) == "compare_with_fixture: fixture must be a Fixture from load_fixtures, got str"
    ref = fx["grad"]
    got = ref.copy()
    got[0] += 1e-9 * np.abs(ref).max()
    err = np.abs(got - ref).max() / np.abs(ref).max()  # the documented relative error
    assert compare_with_fixture(fx, "grad", got, rtol=err) == err  # <= rtol passes
    with pytest.raises(AssertionError) as e:
        compare_with_fixture(fx, "grad", got, rtol=err / 2)
    assert str(e.value).startswith(f"linear/mse-mean: grad: relative error {err:.3e} > {err / 2:.0e}; ")


# ---------------------------------------------------------------- model_from_spec, loss_from_spec

TYPES = "Linear, Conv2d, ReLU, Tanh, Sigmoid, Softplus, AvgPool2d, MaxPool2d, Flatten"


@pytest.mark.parametrize("specs", [5, {"type": "Linear"}, "Linear"])
def test_model_from_spec_not_a_list(specs):
    with pytest.raises(TypeError) as e:
        model_from_spec(specs)
    assert str(e.value) == ("model_from_spec: expected a list of layer specifications (a manifest case's 'network'), "
                            f"got {type(specs).__name__}")


def test_model_from_spec_messages():
    with pytest.raises(ValueError) as e:
        model_from_spec([])
    assert str(e.value) == "model_from_spec: the list of layers is empty"
    with pytest.raises(TypeError) as e:
        model_from_spec([{"type": "Tanh"}, "Tanh"])
    assert str(e.value) == ("model_from_spec: layer 1 must be a dict such as {'type': 'Linear', 'in_features': 3, "
                            "'out_features': 2}, got str 'Tanh'")
    with pytest.raises(ValueError) as e:
        model_from_spec([{"type": "Dense"}])
    assert str(e.value) == f"model_from_spec: layer 0 has unknown type 'Dense'; accepted types: {TYPES}"


def test_pool_stride_note_only_for_pools():
    with pytest.raises(ValueError) as e:
        model_from_spec([{"type": "Linear", "in_features": 1, "out_features": 1, "stride": 2}])
    assert "pools with stride" not in str(e.value)
    with pytest.raises(ValueError) as e:
        model_from_spec([{"type": "MaxPool2d", "kernel_size": 2, "padding": 1}])
    assert "pools with stride" not in str(e.value)
    with pytest.raises(ValueError) as e:
        model_from_spec([{"type": "MaxPool2d", "kernel_size": 2, "stride": 1}])
    assert "(refprune pools with stride = kernel_size)" in str(e.value)


def test_loss_from_spec_not_a_dict():
    with pytest.raises(TypeError) as e:
        loss_from_spec(["MSELoss", "mean"])
    assert str(e.value) == ("loss_from_spec: expected a dict such as {'type': 'MSELoss', 'reduction': 'mean'}, "
                            "got list")


def test_compare_with_fixture_joins_the_diagnosis(d):
    """Only the bias entries of the gradient differ, not by a constant factor: the
    message gives the diagnosis' two sentences joined by '; ' (docs: the message names
    what the difference looks like)."""
    (fx,) = load_fixtures(d)
    ref = fx["grad"]
    got = ref.copy()
    got[6] += 0.5 * np.abs(ref).max()  # Linear(3, 2): weights 0-5, bias 6-7
    got[7] -= 0.25 * np.abs(ref).max()
    with pytest.raises(AssertionError) as e:
        compare_with_fixture(fx, "grad", got)
    msg = str(e.value)
    head, _, rest = msg.partition("; differs in: ")
    assert head.startswith("linear/mse-mean: grad: relative error ") and head.endswith(" > 1e-10")
    assert rest.endswith("; only bias entries differ: is the bias missing, or treated apart from the weights "
                         "(refprune folds it into A as a constant input 1)?"), msg
    assert "XX" not in msg


def test_model_from_spec_without_a_type():
    with pytest.raises(ValueError) as e:
        model_from_spec([{"in_features": 1}])
    assert str(e.value) == f"model_from_spec: layer 0 {{'in_features': 1}} has no 'type'; accepted types: {TYPES}"
