"""Pictures of curvature and pruning (needs matplotlib: ``pip install 'refprune[validation]'``).

* :func:`heatmaps`: a Hessian and its approximations side by side, on one symmetric,
  logarithmic colour scale, so that what an approximation drops is visible;
* :func:`spectra`: eigenvalues of several matrices, sorted, on a symmetric log scale
  (negative eigenvalues of a Hessian next to a GGN's zeros);
* :func:`accuracy_vs_sparsity`: one curve per pruning method;
* :func:`predicted_vs_actual`: each criterion's predicted change against the observed one,
  with the diagonal of a perfect quadratic model.

Each returns the ``matplotlib`` figure; nothing is shown or saved unless asked (``path=``).

The look is fixed, so that pictures made at different times compare (tests/test_plot_mutants.py
holds the figures to it).  Files are written at 120 dpi without a ``Software`` entry (the
bytes do not depend on the matplotlib version).  :func:`heatmaps`: 3.6 in square per matrix
plus 0.8 in for the colour bar, colour map ``RdBu_r`` (red positive, blue negative), one
cell per entry (``nearest``), no ticks, the colour bar at 0.8 of the height, the file
cropped to the drawing.  :func:`spectra`: 7 x 4 in.  :func:`accuracy_vs_sparsity`: 6 x 4 in,
dots of size 3 joined by lines.  :func:`predicted_vs_actual`: 5 x 4.5 in, dots of size 4 at
opacity 0.7, the line predicted = actual black, dashed, of width 1.  Legends of the last two
at font size 8.
"""

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` with a file backend, or an ``ImportError`` that says how to
    install it."""
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps"):
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("refprune.plot needs matplotlib: pip install matplotlib "
                          "(or pip install 'refprune[validation]')") from err
    return plt


def _finish(fig, path):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, metadata={"Software": None})
    return fig


def heatmaps(matrices, path=None, linthresh=None):
    """Matrices ``{name: (n, n) array}`` side by side on one ``SymLogNorm`` scale
    (``linthresh``: the linear range around zero; default ``1e-4`` of the largest entry)."""
    plt = pyplot()
    from matplotlib.colors import SymLogNorm

    if not matrices:
        raise ValueError("heatmaps: give at least one matrix")
    mats = {k: np.asarray(v, dtype=float) for k, v in matrices.items()}
    for k, m in mats.items():
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"heatmaps: {k} must be a square matrix, got shape {m.shape}")
    vmax = max(float(np.abs(m).max()) for m in mats.values()) or 1.0
    norm = SymLogNorm(linthresh=linthresh or 1e-4 * vmax, vmin=-vmax, vmax=vmax)
    fig, axes = plt.subplots(1, len(mats), figsize=(3.6 * len(mats) + 0.8, 3.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, cmap="RdBu_r", norm=norm, interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    return fig


def spectra(matrices, path=None, linthresh=1e-6):
    """Sorted eigenvalues (descending) of ``{name: symmetric matrix or 1-d eigenvalues}``
    on a symmetric log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, m in matrices.items():
        m = np.asarray(m, dtype=float)
        ev = np.linalg.eigvalsh(m) if m.ndim == 2 else m
        ax.plot(np.arange(ev.size), np.sort(ev)[::-1], label=name)
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xlabel("index (descending)")
    ax.set_ylabel("eigenvalue")
    ax.set_title("Spectra (symmetric log scale)")
    ax.legend()
    return _finish(fig, path)


def accuracy_vs_sparsity(results, path=None, ylabel="accuracy"):
    """``{method: (sparsities, accuracies)}`` as curves."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, acc) in results.items():
        ax.plot(x, acc, "o-", ms=3, label=name)
    ax.set_xlabel("fraction removed")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def predicted_vs_actual(results, path=None, floor=None, title=None):
    """``{criterion: (predicted, actual)}`` on log-log axes (absolute values, clipped
    at ``floor``, default half the smallest positive value) with the line
    predicted = actual."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if floor is None:
        vals = np.abs(np.concatenate([np.ravel(np.asarray(v, float)) for pa in results.values() for v in pa]))
        floor = 0.5 * float(vals[vals > 0].min()) if np.any(vals > 0) else 1e-12
    top = floor
    for name, (p, a) in results.items():
        p, a = np.maximum(np.abs(np.asarray(p, float)), floor), np.maximum(np.abs(np.asarray(a, float)), floor)
        ax.loglog(p, a, ".", ms=4, alpha=0.7, label=name)
        top = max(top, p.max(), a.max())
    ax.plot([floor, 2 * top], [floor, 2 * top], "k--", lw=1, label="predicted = actual")
    ax.set_xlabel("predicted change")
    ax.set_ylabel("actual change")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)
