"""Load the golden fixtures (:mod:`refprune.fixtures`) and compare results with them.

>>> from refprune.testing import load_fixtures, compare_with_fixture
>>> for fx in load_fixtures("fixtures/golden"):                        # doctest: +SKIP
...     compare_with_fixture(fx, "hessian", my_hessian(fx.model, fx.params, fx.X, fx.y))
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..fixtures import checksum

_LAYERS = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid,
           "Softplus": nn.Softplus, "AvgPool2d": nn.AvgPool2d, "MaxPool2d": nn.MaxPool2d, "Flatten": nn.Flatten}


def model_from_spec(specs):
    """A refprune ``Sequential`` from the manifest's list of layer specifications."""
    layers = []
    for s in specs:
        s = dict(s)
        kind = s.pop("type")
        if kind not in _LAYERS:
            raise ValueError(f"model_from_spec: unknown layer type {kind!r}")
        if kind in ("AvgPool2d", "MaxPool2d"):
            s.pop("stride", None)
        if kind == "Conv2d":
            for key in ("kernel_size", "stride", "padding"):
                s[key] = tuple(s[key])
        layers.append(_LAYERS[kind](**s))
    return nn.Sequential(*layers)


@dataclass
class Fixture:
    """One case of the fixtures: its manifest entry, network and arrays."""

    name: str
    entry: dict
    path: str

    @property
    def arrays(self):
        """``{name: array}``, read with ``allow_pickle=False``."""
        with np.load(self.path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def __getitem__(self, key):
        with np.load(self.path, allow_pickle=False) as data:
            if key not in data.files:
                raise KeyError(f"fixture {self.name} has no array {key!r}")
            return data[key]

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
        """The stored inputs."""
        return self["X"]

    @property
    def y(self):
        """The stored targets."""
        return self["y"]

    @property
    def loss(self):
        """The loss with the stored reduction."""
        spec = self.entry["loss"]
        cls = nn.CrossEntropyLoss if spec["type"] == "cross_entropy" else nn.MSELoss
        return cls(spec["reduction"])

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


def load_fixtures(directory, verify=True):
    """The fixtures in ``directory`` (written by ``python -m refprune fixtures``), in the
    manifest's order; ``verify`` checks every array's SHA-256 against the manifest."""
    path = os.path.join(directory, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_fixtures: no manifest.json in {directory!r}; write the fixtures with "
                                "python -m refprune fixtures DIR")
    with open(path) as fh:
        manifest = json.load(fh)
    out = []
    for entry in manifest["cases"]:
        fx = Fixture(entry["name"], entry, os.path.join(directory, entry["file"]))
        if verify:
            arrays = fx.arrays
            missing = sorted(set(entry["arrays"]) - set(arrays))
            if missing:
                raise ValueError(f"fixture {fx.name}: arrays {missing} listed in the manifest are missing")
            for key, meta in entry["arrays"].items():
                if checksum(arrays[key]) != meta["sha256"]:
                    raise ValueError(f"fixture {fx.name}: array {key!r} does not match its SHA-256 in the manifest")
        out.append(fx)
    return out


def compare_with_fixture(fixture, key, value, rtol=1e-10):
    """Raise ``AssertionError`` unless ``value`` equals the fixture's array ``key`` to a
    relative error ``max |a - b| / max |b| <= rtol``; the message names the case, the
    quantity, the error and what the difference looks like."""
    from ..conformance.diagnosis import diagnose, relative_error

    ref = fixture[key]
    got = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, dtype=np.float64)
    err = relative_error(got, ref)
    if err > rtol:
        notes = diagnose(got, ref, fixture.case(), rtol)
        raise AssertionError(f"{fixture.name}: {key}: relative error {err:.3e} > {rtol:.0e}; "
                             + "; ".join(notes))
    return err
