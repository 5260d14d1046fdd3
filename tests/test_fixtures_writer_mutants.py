"""refprune.fixtures, the writer: the manifest's form, the npz files' form, layer_spec
and the OBS sequence's length (torch-free, one small case)."""

import io
import json
import zipfile

import numpy as np
import pytest

import refprune as rp
import refprune.conformance as cf
from refprune.conformance.zoo import build_case
from refprune.fixtures import CONVENTIONS, FORMAT_VERSION, case_arrays, layer_spec, write_fixtures, write_npz


def test_manifest_form(tmp_path, capsys):
    m = write_fixtures(tmp_path, [cf.make_case("linear", "ce-sum")])
    assert capsys.readouterr().out == ""  # progress is off by default
    assert set(m) == {"format_version", "refprune_version", "conventions", "cases"}
    assert m["format_version"] == FORMAT_VERSION and m["refprune_version"] == rp.__version__
    assert m["conventions"] == CONVENTIONS
    text = (tmp_path / "manifest.json").read_bytes()
    # one-space indentation and sorted keys: the same bytes whatever the insertion order
    assert text == (json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n").encode()
    assert json.loads(text) == json.loads(json.dumps(m))


def test_progress_lines(tmp_path, capsys):
    write_fixtures(tmp_path, [cf.make_case("linear", "ce-sum")], progress=True)
    with np.load(tmp_path / "linear__ce-sum.npz") as z:
        count = len(z.files)
    assert capsys.readouterr().out == f"fixtures: linear__ce-sum.npz ({count} arrays)\n"


def test_write_npz_refuses_pickles(tmp_path):
    with pytest.raises(ValueError):
        write_npz(tmp_path / "a.npz", {"a": np.array([{"x": 1}], dtype=object)})


def test_write_npz_stores_c_order(tmp_path):
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    write_npz(tmp_path / "a.npz", {"f": f})
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        info = zf.getinfo("f.npy")
        assert info.compress_type == zipfile.ZIP_STORED and info.date_time == (1980, 1, 1, 0, 0, 0)
        raw = zf.read("f.npy")
    buf = io.BytesIO(raw)
    major, _ = np.lib.format.read_magic(buf)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(buf)
    assert (shape, fortran, dtype) == ((2, 3), False, np.dtype("<f8"))
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["f"], f)


def test_layer_spec():
    assert layer_spec(rp.Conv2d(1, 2, 3, stride=2, padding=1, bias=False)) == {
        "type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3], "stride": [2, 2],
        "padding": [1, 1], "bias": False}
    with pytest.raises(TypeError) as e:
        layer_spec(rp.Sequential(rp.Tanh()))
    assert str(e.value) == (f"layer_spec: no manifest form for {rp.Sequential(rp.Tanh())!r}; layer types: "
                            "('Linear', 'Conv2d', 'ReLU', 'Tanh', 'Sigmoid', 'Softplus', 'AvgPool2d', 'MaxPool2d', "
                            "'Flatten')")


@pytest.mark.parametrize("out, count", [(1, 1), (2, 1), (3, 1), (4, 2)])
def test_obs_sequence_length_is_half_the_weights(out, count):
    """max(1, weights // 2) removals: a 1 -> out Linear has out weights."""
    case = build_case("tiny", rp.Sequential(rp.Linear(1, out)), (1,), "mse-sum")
    a = case_arrays(case)
    assert a["obs_sequence/order"].shape == (count,)
    assert a["obs_sequence/order"].dtype == np.int64
    assert a["obs_sequence/theta"].shape == (count, 2 * out)
