"""refprune.plot against what its docstrings say: the data drawn (eigenvalues from
``numpy.linalg.eigvalsh``, the clipping floor worked out by hand), the refusals in full,
and the fixed look of the module docstring (sizes, dpi, colour map, markers, a file
without a ``Software`` entry)."""

import struct
import sys

import numpy as np
import pytest

from refprune import plot

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _png(path):
    """The chunks of a PNG file: {type: [data, ...]}."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = {}, 8
    while i < len(data):
        (length,), kind = struct.unpack(">I", data[i:i + 4]), data[i + 4:i + 8].decode()
        chunks.setdefault(kind, []).append(data[i + 8:i + 8 + length])
        i += 12 + length
    return chunks


_PPM_120_DPI = round(120 / 0.0254)  # PNG stores whole pixels per metre


def _dpi_and_size(path):
    chunks = _png(path)
    width, height = struct.unpack(">II", chunks["IHDR"][0][:8])
    ppm_x, ppm_y, unit = struct.unpack(">IIB", chunks["pHYs"][0])
    assert unit == 1 and ppm_x == ppm_y  # pixels per metre
    return ppm_x, (width, height), chunks


def _texts(chunks):
    return [c.split(b"\0")[0] for kind in ("tEXt", "iTXt", "zTXt") for c in chunks.get(kind, [])]


def test_the_missing_library_message_in_full(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as e:
        plot.pyplot()
    assert str(e.value) == ("refprune.plot needs matplotlib: pip install matplotlib "
                            "(or pip install 'refprune[validation]')")
    assert isinstance(e.value.__cause__, ImportError)


@pytest.mark.parametrize("backend", ["pdf", "svg", "ps", "template"])
def test_a_file_backend_is_kept_and_any_other_replaced_by_agg(backend):
    before = matplotlib.get_backend()
    try:
        matplotlib.use(backend)
        plt = plot.pyplot()
        assert plt is sys.modules["matplotlib.pyplot"]
        assert matplotlib.get_backend().lower() == ("agg" if backend == "template" else backend)
    finally:
        matplotlib.use(before)


def test_heatmaps_share_one_symmetric_scale_and_the_documented_look(tmp_path):
    H = np.array([[2.0, -3.0], [-3.0, 0.5]])
    G = np.array([[1, 0], [0, 4]])  # integers are drawn as numbers
    fig = plot.heatmaps({"Hessian": H, "GGN": G}, path=tmp_path / "h.png")
    assert tuple(fig.get_size_inches()) == pytest.approx((3.6 * 2 + 0.8, 3.6))
    image_axes = [ax for ax in fig.axes if ax.images]
    colorbars = [ax for ax in fig.axes if not ax.images]
    assert [ax.get_title() for ax in image_axes] == ["Hessian", "GGN"] and len(colorbars) == 1
    for ax, m in zip(image_axes, (H, G)):
        im = ax.images[0]
        assert np.array_equal(np.asarray(im.get_array()), m)
        assert im.get_array().dtype == np.float64
        assert im.get_cmap().name == "RdBu_r" and im.get_interpolation() == "nearest"
        norm = im.norm
        # one scale: the largest magnitude over both matrices, linear range 1e-4 of it
        assert (norm.vmin, norm.vmax, norm.linthresh) == (-4.0, 4.0, pytest.approx(4e-4))
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    # one row: the images side by side, equally large (the colour bar takes room from both)
    (x0, y0, w0, h0), (x1, y1, w1, h1) = (ax.get_position(original=True).bounds for ax in image_axes)
    assert y0 == pytest.approx(y1) and w0 == pytest.approx(w1) and h0 == pytest.approx(h1) and x1 > x0 + w0
    assert colorbars[0]._colorbar.mappable.norm is image_axes[-1].images[0].norm
    assert colorbars[0].get_position().height == pytest.approx(0.8 * h0)
    dpi, (width, height), chunks = _dpi_and_size(tmp_path / "h.png")
    assert dpi == _PPM_120_DPI
    assert b"Software" not in _texts(chunks)
    # cropped to the drawing: smaller than the whole figure at 120 dpi
    assert width < round(8.0 * 120) and height < round(3.6 * 120)


def test_heatmaps_of_one_matrix_a_given_linear_range_and_zeros():
    fig = plot.heatmaps({"zero": np.zeros((3, 3))})
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax, norm.linthresh) == (-1.0, 1.0, pytest.approx(1e-4))  # all zero: unit scale
    assert len([ax for ax in fig.axes if ax.images]) == 1
    fig = plot.heatmaps({"A": np.array([[0.5, 0.0], [0.0, -0.25]])}, linthresh=0.01)
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax, norm.linthresh) == (-0.5, 0.5, 0.01)


@pytest.mark.parametrize("matrix, shape", [(np.ones(3), "(3,)"), (np.ones((2, 2, 2)), "(2, 2, 2)"),
                                           (np.ones((2, 3)), "(2, 3)")])
def test_heatmaps_refuse_what_is_not_a_square_matrix(matrix, shape):
    with pytest.raises(ValueError) as e:
        plot.heatmaps({"ok": np.eye(2), "bad": matrix})
    assert str(e.value) == f"heatmaps: bad must be a square matrix, got shape {shape}"
    with pytest.raises(ValueError) as e:
        plot.heatmaps({})
    assert str(e.value) == "heatmaps: give at least one matrix"


def test_spectra_draw_the_sorted_eigenvalues(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    S = A + A.T
    ev = np.array([3, -1, 2])  # eigenvalues given directly (a 1-d array)
    fig = plot.spectra({"S": S, "given": ev}, path=tmp_path / "s.png")
    ax = fig.axes[0]
    (l0, l1) = ax.lines
    assert np.array_equal(l0.get_xdata(), np.arange(4)) and np.array_equal(l1.get_xdata(), np.arange(3))
    assert np.allclose(l0.get_ydata(), np.sort(np.linalg.eigvalsh(S))[::-1], rtol=0, atol=1e-12)
    assert list(l1.get_ydata()) == [3.0, 2.0, -1.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["S", "given"]
    assert ax.get_yscale() == "symlog" and ax.yaxis.get_transform().linthresh == 1e-6
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "index (descending)", "eigenvalue", "Spectra (symmetric log scale)")
    assert tuple(fig.get_size_inches()) == (7, 4)
    dpi, size, chunks = _dpi_and_size(tmp_path / "s.png")
    assert dpi == _PPM_120_DPI and size == (7 * 120, 4 * 120)
    assert b"Software" not in _texts(chunks)
    fig = plot.spectra({"I": np.eye(2)}, linthresh=0.5)
    assert fig.axes[0].yaxis.get_transform().linthresh == 0.5
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 1.0]


def test_accuracy_vs_sparsity(tmp_path):
    fig = plot.accuracy_vs_sparsity({"obs": ([0.1, 0.5], [0.9, 0.8]), "magnitude": ([0.2], [0.7])},
                                    path=tmp_path / "a.png")
    ax = fig.axes[0]
    assert [(list(l.get_xdata()), list(l.get_ydata())) for l in ax.lines] == [([0.1, 0.5], [0.9, 0.8]),
                                                                              ([0.2], [0.7])]
    assert all((l.get_marker(), l.get_linestyle(), l.get_markersize()) == ("o", "-", 3) for l in ax.lines)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["obs", "magnitude"]
    assert legend.get_texts()[0].get_fontsize() == 8
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("fraction removed", "accuracy")
    assert tuple(fig.get_size_inches()) == (6, 4)
    assert _dpi_and_size(tmp_path / "a.png")[1] == (6 * 120, 4 * 120)
    fig = plot.accuracy_vs_sparsity({"obs": ([0.1], [2.0])}, ylabel="loss")
    assert fig.axes[0].get_ylabel() == "loss"


def test_predicted_vs_actual_clips_at_half_the_smallest_positive_value(tmp_path):
    results = {"a": ([1e-3, -4e-2], [2e-3, 0.0]), "b": ([5e-4], [1e-1])}
    fig = plot.predicted_vs_actual(results, path=tmp_path / "p.png", title="one shot")
    ax = fig.axes[0]
    floor = 0.5 * 5e-4  # the smallest positive absolute value, halved
    a, b, diagonal = ax.lines
    assert list(a.get_xdata()) == [1e-3, 4e-2] and list(a.get_ydata()) == [2e-3, floor]
    assert list(b.get_xdata()) == [5e-4] and list(b.get_ydata()) == [1e-1]
    assert list(diagonal.get_xdata()) == [floor, 2 * 1e-1] and list(diagonal.get_ydata()) == [floor, 2 * 1e-1]
    for line in (a, b):
        assert (line.get_marker(), line.get_linestyle(), line.get_markersize(), line.get_alpha()) == (
            ".", "None", 4, 0.7)
    assert (diagonal.get_color(), diagonal.get_linestyle(), diagonal.get_linewidth()) == ("k", "--", 1)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "predicted = actual"]
    assert legend.get_texts()[0].get_fontsize() == 8
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted change", "actual change", "one shot")
    assert tuple(fig.get_size_inches()) == (5, 4.5)
    assert _dpi_and_size(tmp_path / "p.png")[1] == (5 * 120, round(4.5 * 120))


def test_predicted_vs_actual_with_a_given_floor_and_with_only_zeros():
    fig = plot.predicted_vs_actual({"a": ([1e-5, 3.0], [2e-2, 1e-6])}, floor=1e-3)
    a, diagonal = fig.axes[0].lines
    assert list(a.get_xdata()) == [1e-3, 3.0] and list(a.get_ydata()) == [2e-2, 1e-3]
    assert list(diagonal.get_xdata()) == [1e-3, 6.0]
    assert fig.axes[0].get_title() == ""
    fig = plot.predicted_vs_actual({"a": ([0.0], [0.0])})  # nothing positive: a floor of 1e-12
    a, diagonal = fig.axes[0].lines
    assert list(a.get_xdata()) == [1e-12] and list(diagonal.get_ydata()) == [1e-12, 2e-12]


def test_integer_arrays_are_taken_as_numbers():
    # |-128| of an int8 is 128, not the int8 -128 it wraps to
    p, a = np.array([-128, 0], dtype=np.int8), np.array([0, -128], dtype=np.int8)
    fig = plot.predicted_vs_actual({"i": (p, a)})
    line, diagonal = fig.axes[0].lines
    assert list(line.get_xdata()) == [128.0, 64.0] and list(line.get_ydata()) == [64.0, 128.0]
    assert list(diagonal.get_xdata()) == [64.0, 256.0]
    fig = plot.spectra({"given": np.array([2, -1], dtype=np.int8)})
    y = fig.axes[0].lines[0].get_ydata()
    assert y.dtype == np.float64 and list(y) == [2.0, -1.0]


def test_the_diagonal_reaches_twice_the_largest_value_of_any_series():
    fig = plot.predicted_vs_actual({"big": ([10.0], [1.0]), "small": ([1e-3], [2e-3])})
    diagonal = fig.axes[0].lines[-1]
    assert list(diagonal.get_xdata()) == [0.5e-3, 20.0] and list(diagonal.get_ydata()) == [0.5e-3, 20.0]
