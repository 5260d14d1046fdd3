"""Golden fixtures: every quantity refprune computes, on small nets, as files that any
language can read.

``python -m refprune fixtures DIR`` writes one ``.npz`` per case of the conformance zoo
(:mod:`refprune.conformance.zoo`), readable with ``numpy.load(..., allow_pickle=False)``
(each entry an ``.npy`` array in a plain zip), ``manifest.json`` and ``manifest.sha256``.
The manifest speaks refprune's own dialect: every layer as ``{"type": <class name>,
<constructor keyword arguments>}`` so that ``getattr(refprune, type)(**kwargs)`` rebuilds
it, the loss as ``{"type": "CrossEntropyLoss" | "MSELoss" | "BCEWithLogitsLoss",
"reduction": ...}``, the
per-sample ``input_shape`` with ``n_samples`` (as the command line's ``--input-shape``
and ``--samples``), and for every array its shape, dtype and the SHA-256 of its
little-endian C-order bytes.  ``manifest.sha256`` holds the SHA-256 of the manifest's
bytes in ``sha256sum`` format, so an edit of the manifest is detected too.

Writing is deterministic: zip entries carry a fixed date and are stored uncompressed,
so the same inputs and the same floating-point results give byte-identical files.  The
results are the same bits on one machine with the same NumPy, SciPy and BLAS and the
same BLAS thread count; elsewhere they agree to rounding (``fixtures/README.md`` gives
the measured bounds).
"""

import hashlib
import inspect
import io
import json
import os
import zipfile

import numpy as np

from . import __version__
from . import derivatives as _d
from .curvature import diagonal as _diag
from .curvature import exact as _c
from .curvature.ekfac import ekfac
from .curvature.kronecker import kfac
from .conformance.harness import EKFAC_NOT_UNIQUE, ekfac_is_well_defined
from .nn import AffineLayer
from .pruning.obs import OBS
from .pruning.structured import unit_saliencies
from .pruning.surgery import structurally_prunable

FORMAT_VERSION = 2
#: the manifest and its checksum file
MANIFEST, MANIFEST_SHA256 = "manifest.json", "manifest.sha256"
#: layer classes a manifest may name (refprune's own, by class name)
LAYER_TYPES = ("Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "Softplus", "AvgPool2d", "MaxPool2d", "Flatten")
LOSS_TYPES = ("CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss")
#: K-FAC variants written for every case
KFAC_CURVATURES = ("ggn", "mc_fisher", "empirical_fisher")
KFAC_APPROX = ("expand", "reduce")
KFAC_BIAS = ("fold", "separate")
STRUCTURED = ("kron_obd", "kron_obs", "c_obd", "c_obs")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

CONVENTIONS = {
    "document": "docs/conventions.md of the refprune repository",
    "parameters": "theta = concatenation over layers of weight.ravel() (C order, PyTorch shapes) then bias; "
                  "every matrix is indexed in that order",
    "loss": "L = R sum_n l_n; cross-entropy l_n = -log softmax(f_n)[y_n]; squared error l_n = sum_c (f_nc - y_nc)^2; "
            "binary cross-entropy on logits l_n = sum_c -[y_nc log sigmoid(f_nc) + (1 - y_nc) log(1 - sigmoid(f_nc))]; "
            "R = 1/N (cross-entropy mean), 1/(N C) (squared-error and binary cross-entropy mean), 1 (sum)",
    "per_sample_grads": "row n is R dl_n/dtheta (rows sum to grad)",
    "ggn": "R sum_n J_n^T Lambda_n J_n, Lambda = diag(yhat) - yhat yhat^T, yhat = softmax(f) (cross-entropy), 2 I (squared error), "
           "diag(p (1 - p)), p = sigmoid(f) (binary cross-entropy)",
    "fisher": "true Fisher with a categorical / Gaussian (variance 1/2) / independent Bernoulli likelihood; equals the GGN",
    "mc_fisher": "R sum_n mean_s g_n(y_s) g_n(y_s)^T over the sampled targets stored as 'mc_targets' (n_mc, N[, C])",
    "empirical_fisher": "R sum_n g_n(y_n) g_n(y_n)^T, g_n = dl_n/dtheta",
    "kfac": "per affine layer S kron A over rows of [W | b] (bias folded as a constant input 1, or 'separate': "
            "weight block S kron A_W and bias block S); expand: A = sum_{n,t} a a^T / (N T), S = R sum g g^T; "
            "reduce: A = sum_n abar abar^T / N with abar = mean_t a, S = R sum_n (sum_t g)(sum_t g)^T; "
            "for curvature ggn the g are columns of a square root of Lambda back-propagated",
    "ekfac": "dense EKFAC matrix: K-FAC's eigenbasis U_SA with eigenvalues diag(U_SA^T F_l U_SA) from per-sample "
             "gradients; left out (listed under 'omitted') where it depends on the eigenvectors chosen within a "
             "repeated eigenvalue of S or A",
    "loss_scale": "R of L = R sum_n l_n for the case's N = n_samples and C outputs",
    "network": "layers as {'type': refprune class name, constructor keyword arguments}: "
               "refprune.Sequential(*[getattr(refprune, t)(**kw) ...]) rebuilds it; input_shape is per sample",
    "obd": "obd_saliencies = theta^2 diag(H) / 2 (exact Hessian diagonal); obd_diagonal is LeCun et al.'s "
           "approximation, obd_lm_diagonal without the phi'' term",
    "obs": "H = GGN + obs_damping I; obs_saliencies = theta^2 / (2 diag(H^-1)); obs_update removes obs_index: "
           "-(theta_q / [H^-1]_qq) H^-1 e_q; obs_sequence removes the weights one at a time by smallest "
           "saliency from one inverse by elimination: order, predicted increase and theta after each removal",
    "structured": "unit_saliencies/<method>/layer<j>: per output unit of every affine layer but the last, "
                  "K-FAC (curvature ggn), factored damping obs_damping (S + sqrt(lam) I, A + sqrt(lam) I)",
}


def constructor_arguments(cls):
    """The keyword arguments ``cls(...)`` takes, in order (none for an activation)."""
    if cls.__init__ is object.__init__:
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def layer_spec(layer):
    """One layer as JSON in refprune's dialect: ``{"type": <class name>, **kwargs}``
    with exactly the keyword arguments of the class's constructor, so that
    ``getattr(refprune, spec.pop("type"))(**spec)`` rebuilds it."""
    name = type(layer).__name__
    if name not in LAYER_TYPES:
        raise TypeError(f"layer_spec: no manifest form for {layer!r}; layer types: {LAYER_TYPES}")
    spec = {"type": name}
    for arg in constructor_arguments(type(layer)):
        v = getattr(layer, arg)
        spec[arg] = list(v) if isinstance(v, tuple) else v
    return spec


def loss_spec(loss):
    """The loss as JSON in refprune's dialect: ``{"type": "MSELoss", "reduction": "mean"}``."""
    return {"type": type(loss).__name__, "reduction": loss.reduction}


def _obs_sequence(case, Hinv, count):
    """Sequential OBS from one inverse: removal order, predicted increases, theta after."""
    weights = np.zeros(case.n_params, dtype=bool)
    off = case.model.param_offsets()
    for j, layer in enumerate(case.model):
        if isinstance(layer, AffineLayer):
            weights[off[j] : off[j] + layer.n_weight] = True
    solver = OBS(Hinv, case.theta, prunable=weights)
    order, predicted, thetas = [], [], []
    for _ in range(count):
        q = int(np.argmin(solver.saliencies()))
        predicted.append(solver.remove([q]))
        order.append(q)
        thetas.append(solver.w.copy())
    return np.array(order, dtype=np.int64), np.array(predicted), np.array(thetas)


def case_arrays(case):
    """Every quantity for one case, ``{name: array}`` (names are the keys of the npz);
    see :func:`case_arrays_and_omitted`."""
    return case_arrays_and_omitted(case)[0]


def case_arrays_and_omitted(case):
    """``({name: array}, {name: reason})``: every quantity for one case, and the ones
    left out because they are not uniquely defined (an EKFAC that depends on the choice
    of eigenvectors, :func:`ekfac_is_well_defined`)."""
    omitted = {}
    args = case.args()
    a = {"X": case.X, "y": np.asarray(case.y), "theta": case.theta, "v": case.v, "mc_targets": case.targets}
    for i, p in enumerate(case.params):
        a[f"param{i}"] = p
    mc = dict(targets=case.targets)
    a["loss"] = np.array(_d.loss(*args))
    a["grad"] = _d.grad(*args)
    a["per_sample_grads"] = _d.per_sample_grads(*args)
    a["hvp"] = _d.hvp(*args, case.v)
    a["hessian"] = _c.hessian(*args)
    a["ggn"] = _c.ggn(*args)
    a["residual"] = _c.residual(*args)
    a["fisher"] = _c.fisher(*args, curvature="fisher")
    a["mc_fisher"] = _c.fisher(*args, curvature="mc_fisher", **mc)
    a["empirical_fisher"] = _c.fisher(*args, curvature="empirical_fisher")
    a["hessian_diagonal"] = _diag.hessian_diagonal(*args)
    a["ggn_diagonal"] = _diag.ggn_diagonal(*args)
    a["mc_fisher_diagonal"] = _diag.fisher_diagonal(*args, curvature="mc_fisher", **mc)
    a["empirical_fisher_diagonal"] = _diag.fisher_diagonal(*args, curvature="empirical_fisher")
    a["obd_diagonal"] = _diag.obd_diagonal(*args)
    a["obd_lm_diagonal"] = _diag.obd_diagonal(*args, levenberg_marquardt=True)
    for curv in KFAC_CURVATURES:
        kw = mc if curv == "mc_fisher" else {}
        for approx in KFAC_APPROX:
            for bias in KFAC_BIAS:
                for k, b in enumerate(kfac(*args, curvature=curv, approx=approx, bias=bias, **kw).blocks):
                    a[f"kfac/{curv}/{approx}/{bias}/block{k}/S"] = b.S
                    a[f"kfac/{curv}/{approx}/{bias}/block{k}/A"] = b.A
            op = ekfac(*args, curvature=curv, approx=approx, **kw)
            if ekfac_is_well_defined(op, a[curv]):
                a[f"ekfac/{curv}/{approx}"] = op.to_dense()
            else:
                omitted[f"ekfac/{curv}/{approx}"] = EKFAC_NOT_UNIQUE
    theta = case.theta
    a["obd_saliencies"] = theta**2 * a["hessian_diagonal"] / 2
    H = a["ggn"] + case.obs_damping * np.eye(case.n_params)
    Hinv = np.linalg.inv(H)
    Hinv = (Hinv + Hinv.T) / 2
    a["obs_saliencies"] = theta**2 / (2 * np.diag(Hinv))
    q = case.obs_index
    a["obs_update"] = -(theta[q] / Hinv[q, q]) * Hinv[:, q]
    count = max(1, sum(layer.n_weight for layer in case.model if isinstance(layer, AffineLayer)) // 2)
    a["obs_sequence/order"], a["obs_sequence/predicted"], a["obs_sequence/theta"] = _obs_sequence(case, Hinv, count)
    if structurally_prunable(case.model):
        for method in STRUCTURED:
            for j, s in unit_saliencies(*args, method=method, damping=case.obs_damping).items():
                a[f"unit_saliencies/{method}/layer{j}"] = s
    return a, omitted


def checksum(arr):
    """SHA-256 of the array's little-endian, C-order bytes (``tobytes`` reads any layout in
    C order; only the byte order is converted)."""
    return hashlib.sha256(np.asarray(arr, dtype=np.asarray(arr).dtype.newbyteorder("<")).tobytes()).hexdigest()


def _file_name(case):
    return case.name.replace("/", "__") + ".npz"


def write_npz(path, arrays):
    """An ``.npz`` with fixed entry dates and no compression (byte-for-byte reproducible)."""
    with zipfile.ZipFile(path, "w") as zf:  # ZIP_STORED, zipfile's default: no compression
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.require(arr, requirements="C"), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE), buf.getvalue())


def fixture_cases():
    """The committed set: every architecture of the zoo with each of the three losses,
    reductions in rotation ("mean" and "sum" on alternate architectures) so that each
    loss and reduction appears with dense and convolutional nets."""
    from .conformance.zoo import ARCHITECTURES, LOSSES, make_case

    losses = list(LOSSES)  # ce-mean, ce-sum, mse-mean, mse-sum, bce-mean, bce-sum
    cases = [make_case(arch, losses[(i + 2 * k) % 6]) for i, arch in enumerate(ARCHITECTURES) for k in (0, 1, 2)]
    return sorted(cases, key=lambda c: (c.n_params, c.name))


def manifest_checksum_line(data):
    """The line of ``manifest.sha256`` for the manifest's bytes (``sha256sum`` format:
    ``sha256sum -c manifest.sha256`` checks it)."""
    return f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n"


def case_entry(case, arrays, omitted):
    """The manifest entry of one case (refprune's dialect, see the module's docstring)."""
    n, c = len(case.X), case.model.output_shape(case.X.shape[1:])[0]
    return {
        "name": case.name,
        "file": _file_name(case),
        "network": [layer_spec(layer) for layer in case.model],
        "input_shape": list(case.X.shape[1:]),
        "n_samples": int(n),
        "loss": loss_spec(case.loss),
        "loss_scale": case.loss.scale(n, c),
        "obs_index": case.obs_index,
        "obs_damping": case.obs_damping,
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str, "sha256": checksum(v)}
                   for k, v in arrays.items()},
        "omitted": omitted,
    }


def write_fixtures(directory, cases=None, progress=False):
    """Write the fixtures of ``cases`` (default :func:`fixture_cases`) into
    ``directory``; returns the manifest (also written as ``manifest.json``, with its
    SHA-256 in ``manifest.sha256``)."""
    cases = fixture_cases() if cases is None else cases
    os.makedirs(directory, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "refprune_version": __version__, "conventions": CONVENTIONS,
                "cases": []}
    for case in cases:
        arrays, omitted = case_arrays_and_omitted(case)
        write_npz(os.path.join(directory, _file_name(case)), arrays)
        manifest["cases"].append(case_entry(case, arrays, omitted))
        if progress:
            print(f"fixtures: {_file_name(case)} ({len(arrays)} arrays)")
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    with open(os.path.join(directory, MANIFEST), "wb") as fh:
        fh.write(data)
    with open(os.path.join(directory, MANIFEST_SHA256), "w", newline="\n") as fh:
        fh.write(manifest_checksum_line(data))
    return manifest
