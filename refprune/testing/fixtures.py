"""Load the golden fixtures (:mod:`refprune.fixtures`) and compare results with them.

>>> from refprune.testing import load_fixtures, compare_with_fixture
>>> for fx in load_fixtures("fixtures/golden"):                        # doctest: +SKIP
...     compare_with_fixture(fx, "hessian", my_hessian(fx.model, fx.params, fx.X, fx.y))

:func:`load_fixtures` checks everything the manifest says before anything is used: the
manifest's own SHA-256 (``manifest.sha256``), its structure, and for every array its
presence, shape, dtype and SHA-256.  A damaged file (a truncated ``.npz``, a manifest
that is not JSON or lacks a field) is named in a ``ValueError``, never left to surface
as a zip, JSON or key error.
"""

import hashlib
import inspect
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..fixtures import (
    FORMAT_VERSION, LAYER_TYPES, LOSS_TYPES, MANIFEST, MANIFEST_SHA256, checksum, constructor_arguments,
)

_ACCEPTED = {t: constructor_arguments(getattr(nn, t)) for t in LAYER_TYPES}
_REQUIRED = {t: [a for a in args if inspect.signature(getattr(nn, t).__init__).parameters[a].default
                 is inspect.Parameter.empty] for t, args in _ACCEPTED.items()}


def model_from_spec(specs):
    """A refprune ``Sequential`` from a list of layer specifications in refprune's
    dialect, as in the fixtures' manifest: ``{"type": "Conv2d", "in_channels": 1,
    "out_channels": 2, "kernel_size": [3, 3], ...}``, i.e. a class name and exactly the
    keyword arguments of its constructor (``{"type": "Tanh"}`` for an activation).

    Raises ``TypeError``/``ValueError`` naming the layer's index and what is accepted:
    for a missing or unknown ``"type"``, an unknown or missing argument, or a value the
    layer refuses.  Nothing is dropped silently (a pooling ``stride`` is refused: refprune
    pools with stride = kernel_size).
    """
    if isinstance(specs, dict) or not isinstance(specs, (list, tuple)):
        raise TypeError(f"model_from_spec: expected a list of layer specifications (a manifest case's 'network'), "
                        f"got {type(specs).__name__}")
    if not specs:
        raise ValueError("model_from_spec: the list of layers is empty")
    layers = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise TypeError(f"model_from_spec: layer {i} must be a dict such as {{'type': 'Linear', 'in_features': 3, "
                            f"'out_features': 2}}, got {type(spec).__name__} {spec!r}")
        kw = dict(spec)
        if "type" not in kw:
            raise ValueError(f"model_from_spec: layer {i} {spec!r} has no 'type'; accepted types: "
                             f"{', '.join(LAYER_TYPES)}")
        kind = kw.pop("type")
        if not isinstance(kind, str) or kind not in _ACCEPTED:
            raise ValueError(f"model_from_spec: layer {i} has unknown type {kind!r}; accepted types: "
                             f"{', '.join(LAYER_TYPES)}")
        accepted = _ACCEPTED[kind]
        unknown = [k for k in kw if k not in accepted]
        if unknown:
            note = " (refprune pools with stride = kernel_size)" if kind.endswith("Pool2d") and "stride" in unknown \
                else ""
            raise ValueError(f"model_from_spec: layer {i} ({kind}) has unknown argument(s) {unknown}{note}; {kind} "
                             f"accepts {accepted if accepted else 'no arguments'}")
        absent = [k for k in _REQUIRED[kind] if k not in kw]
        if absent:
            raise ValueError(f"model_from_spec: layer {i} ({kind}) lacks the argument(s) {absent}; {kind} accepts "
                             f"{accepted} ({_REQUIRED[kind]} required)")
        try:
            layers.append(getattr(nn, kind)(**kw))
        except TypeError as err:
            raise TypeError(f"model_from_spec: layer {i} ({kind}): {err}") from None
        except ValueError as err:
            raise ValueError(f"model_from_spec: layer {i} ({kind}): {err}") from None
    return nn.Sequential(*layers)


def loss_from_spec(spec):
    """``rp.CrossEntropyLoss``, ``rp.MSELoss`` or ``rp.BCEWithLogitsLoss`` from
    ``{"type": ..., "reduction": ...}``."""
    if not isinstance(spec, dict):
        raise TypeError(f"loss_from_spec: expected a dict such as {{'type': 'MSELoss', 'reduction': 'mean'}}, "
                        f"got {type(spec).__name__}")
    if spec.get("type") not in LOSS_TYPES or set(spec) != {"type", "reduction"}:
        raise ValueError(f"loss_from_spec: expected {{'type': one of {LOSS_TYPES}, 'reduction': 'mean' or 'sum'}}, "
                         f"got {spec!r}")
    return getattr(nn, spec["type"])(spec["reduction"])


def _read_npz(path, name, key=None):
    """Every array of ``path`` (no pickles), or only ``key`` (``None`` if absent); a
    damaged file is named in a ValueError."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if key is not None:
                return data[key] if key in data.files else None
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"fixture {name}: file {path!r} is missing") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as err:
        raise ValueError(f"fixture {name}: {path!r} cannot be read as an .npz ({type(err).__name__}: {err}): it is "
                         "damaged or truncated; regenerate it with python -m refprune fixtures DIR") from None


@dataclass
class Fixture:
    """One case of the fixtures: its manifest entry, network and arrays."""

    name: str
    entry: dict
    path: str

    @property
    def arrays(self):
        """``{name: array}``, read with ``allow_pickle=False``."""
        return _read_npz(self.path, self.name)

    def __getitem__(self, key):
        a = _read_npz(self.path, self.name, key)
        if a is None:
            why = self.entry.get("omitted", {}).get(key)
            raise KeyError(f"fixture {self.name} has no array {key!r}" + (f": {why}" if why else ""))
        return a

    @property
    def model(self):
        """The network rebuilt from the manifest's layer specifications."""
        return model_from_spec(self.entry["network"])

    @property
    def params(self):
        """The stored parameter arrays, in order."""
        a = self.arrays
        return [a[f"param{i}"] for i in range(len(self.model.param_shapes()))]

    @property
    def X(self):
        """The stored inputs ``(n_samples, *input_shape)``."""
        return self["X"]

    @property
    def y(self):
        """The stored targets."""
        return self["y"]

    @property
    def loss(self):
        """The loss with the stored reduction."""
        return loss_from_spec(self.entry["loss"])

    def args(self):
        """``(model, params, X, y, loss)``."""
        return self.model, self.params, self.X, self.y, self.loss

    def case(self):
        """The fixture as a :class:`refprune.conformance.Case` (same data, targets and
        OBS index), so the conformance harness can run on it."""
        from ..conformance.zoo import Case

        a = self.arrays
        return Case(self.name, self.model, self.params, a["X"], a["y"], self.loss, v=a["v"],
                    targets=a["mc_targets"], obs_index=self.entry["obs_index"],
                    obs_damping=self.entry["obs_damping"])


_DTYPES = ("<f8", "<i8")
_CASE_FIELDS = {"name": str, "file": str, "network": list, "input_shape": list, "n_samples": int, "loss": dict,
                "loss_scale": float, "obs_index": int, "obs_damping": float, "arrays": dict, "omitted": dict}


def _read_manifest(directory):
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_fixtures: no {MANIFEST} in {directory!r}; write the fixtures with "
                                "python -m refprune fixtures DIR")
    with open(path, "rb") as fh:
        data = fh.read()
    sums = os.path.join(directory, MANIFEST_SHA256)
    if not os.path.exists(sums):
        raise FileNotFoundError(f"load_fixtures: no {MANIFEST_SHA256} beside {path!r} (the manifest's own SHA-256); "
                                "regenerate the fixtures with python -m refprune fixtures DIR")
    with open(sums, "rb") as fh:
        line = fh.read().decode("utf-8", "replace").split()
    recorded = line[0] if line else ""
    actual = hashlib.sha256(data).hexdigest()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"load_fixtures: {path!r} is not valid JSON ({err})"
                         + ("" if actual == recorded else f"; its SHA-256 differs from {MANIFEST_SHA256}'s")) from None
    if actual != recorded:
        raise ValueError(f"load_fixtures: {path!r} does not match its SHA-256 in {sums!r} (recorded "
                         f"{recorded[:16] or 'nothing'}..., actual {actual[:16]}...): the manifest was edited or "
                         "damaged; regenerate the fixtures with python -m refprune fixtures DIR")
    return path, manifest


def _check_manifest(path, manifest):
    """Every field the loader uses, present and of the right type, named if not."""
    if not isinstance(manifest, dict):
        raise ValueError(f"load_fixtures: {path!r} must hold a JSON object, got {type(manifest).__name__}")
    missing = [k for k in ("format_version", "cases") if k not in manifest]
    if missing:
        raise ValueError(f"load_fixtures: {path!r} lacks {missing} (it has {sorted(manifest)}): not a fixtures "
                         "manifest, or a damaged one")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ValueError(f"load_fixtures: {path!r} has format_version {manifest['format_version']!r}; this refprune "
                         f"reads format {FORMAT_VERSION}: regenerate the fixtures with python -m refprune fixtures DIR")
    if not isinstance(manifest["cases"], list):
        raise ValueError(f"load_fixtures: {path!r}: 'cases' must be a list, got {type(manifest['cases']).__name__}")
    for i, entry in enumerate(manifest["cases"]):
        if not isinstance(entry, dict):
            raise ValueError(f"load_fixtures: {path!r}: case {i} must be an object, got {type(entry).__name__}")
        label = f"case {i} ({entry.get('name', '?')!r})"
        for key, kind in _CASE_FIELDS.items():
            if key not in entry:
                raise ValueError(f"load_fixtures: {path!r}: {label} lacks {key!r}")
            v = entry[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else \
                isinstance(v, kind) and not (kind is int and isinstance(v, bool))
            if not ok:
                raise ValueError(f"load_fixtures: {path!r}: {label}: {key!r} must be a {kind.__name__}, got {v!r}")
        if os.path.basename(entry["file"]) != entry["file"]:
            raise ValueError(f"load_fixtures: {path!r}: {label}: 'file' must be a file name in the directory, got "
                             f"{entry['file']!r}")
        for key, meta in entry["arrays"].items():
            if not (isinstance(meta, dict) and isinstance(meta.get("shape"), list) and isinstance(meta.get("dtype"), str)
                    and isinstance(meta.get("sha256"), str)):
                raise ValueError(f"load_fixtures: {path!r}: {label}: array {key!r} must have 'shape' (a list), 'dtype' "
                                 f"and 'sha256', got {meta!r}")
            if meta["dtype"] not in _DTYPES:
                what = "complex: fixtures hold real numbers" if "c" in meta["dtype"] else "not one fixtures use"
                raise ValueError(f"load_fixtures: {path!r}: {label}: array {key!r} has dtype {meta['dtype']!r}, "
                                 f"{what}; accepted: {_DTYPES} (float64, int64)")


def _verify(fx, arrays):
    """Every array of the manifest present with its shape, dtype and SHA-256; no other
    array; the inputs consistent with ``input_shape``, ``n_samples`` and the network."""
    entry, name = fx.entry, fx.name
    listed, stored = set(entry["arrays"]), set(arrays)
    if listed != stored:
        raise ValueError(f"fixture {name}: {fx.path!r} holds other arrays than the manifest lists: missing "
                         f"{sorted(listed - stored)}, not listed {sorted(stored - listed)}")
    problems = []
    for key, meta in entry["arrays"].items():
        a = arrays[key]
        if list(a.shape) != meta["shape"] or a.dtype.str != meta["dtype"]:
            problems.append(f"array {key!r} is {a.dtype.str} of shape {list(a.shape)}, the manifest says "
                            f"{meta['dtype']} of shape {meta['shape']}")
        elif checksum(a) != meta["sha256"]:
            problems.append(f"array {key!r} does not match its SHA-256 in the manifest")
    if problems:
        raise ValueError(f"fixture {name} ({fx.path!r}): " + "; ".join(problems))
    n_params = len(fx.model.param_shapes())
    required = ["X", "y", "v", "mc_targets"] + [f"param{i}" for i in range(n_params)]
    absent = [k for k in required if k not in arrays]
    if absent:
        raise ValueError(f"fixture {name}: {fx.path!r} lacks the input arrays {absent}")
    expected_X = [entry["n_samples"]] + entry["input_shape"]
    if list(arrays["X"].shape) != expected_X:
        raise ValueError(f"fixture {name}: X has shape {list(arrays['X'].shape)}, the manifest's n_samples and "
                         f"input_shape say {expected_X}")
    shapes = [tuple(s) for s in fx.model.param_shapes()]
    got = [arrays[f"param{i}"].shape for i in range(len(shapes))]
    if got != shapes:
        raise ValueError(f"fixture {name}: the stored parameters have shapes {got}, the manifest's network "
                         f"{shapes}")


def load_fixtures(directory, verify=True):
    """The fixtures in ``directory`` (written by ``python -m refprune fixtures``), in the
    manifest's order.

    The manifest's SHA-256 (``manifest.sha256``) and its structure are always checked;
    with ``verify`` (default) also every array: present, nothing extra, and its shape,
    dtype and SHA-256 as the manifest says.  Raises ``FileNotFoundError`` for a missing
    manifest or file and ``ValueError`` naming the file and what differs otherwise.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"load_fixtures: directory must be a path, got {type(directory).__name__}")
    if not isinstance(verify, (bool, np.bool_)):
        raise TypeError(f"load_fixtures: verify must be True or False, got {verify!r}")
    path, manifest = _read_manifest(directory)
    _check_manifest(path, manifest)
    out = []
    for i, entry in enumerate(manifest["cases"]):
        fx = Fixture(entry["name"], entry, os.path.join(directory, entry["file"]))
        try:
            _ = (fx.model, fx.loss)  # the network and loss rebuild (named errors if not)
        except (TypeError, ValueError) as err:
            raise ValueError(f"load_fixtures: {path!r}: case {i} ({fx.name!r}): {err}") from None
        if verify:
            _verify(fx, fx.arrays)
        out.append(fx)
    return out


def compare_with_fixture(fixture, key, value, rtol=1e-10):
    """Raise ``AssertionError`` unless ``value`` equals the fixture's array ``key`` to a
    relative error ``max |a - b| / max |b| <= rtol``; the message names the case, the
    quantity, the error and what the difference looks like.

    The comparison tolerates rounding: the fixtures are the same bits only on one
    machine with the same NumPy, SciPy and BLAS and the same BLAS thread count; across
    machines, BLAS kernels, thread counts and libm they were measured to differ by at
    most about 2e-12 relative (``fixtures/README.md``), well inside the default
    ``rtol=1e-10``.  ``value`` must be real: a complex array is refused by name.
    """
    from ..conformance.diagnosis import diagnose, real_array, relative_error
    from ..conformance.harness import check_rtol

    if not isinstance(fixture, Fixture):
        raise TypeError(f"compare_with_fixture: fixture must be a Fixture from load_fixtures, got "
                        f"{type(fixture).__name__}")
    rtol = check_rtol(rtol, "compare_with_fixture: rtol")
    ref = fixture[key]
    got = real_array(value, f"compare_with_fixture: value for {key!r}")
    err = relative_error(got, ref)
    if err > rtol:
        notes = diagnose(got, ref, fixture.case(), rtol)
        raise AssertionError(f"{fixture.name}: {key}: relative error {err:.3e} > {rtol:.0e}; "
                             + "; ".join(notes))
    return err
