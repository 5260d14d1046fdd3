import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, settings

# "ci": fast and derandomised (the same examples on every run);
# "thorough": many more examples, for a deeper run before a release;
# "dev": like "ci" but random, for local exploration;
# "mutation": "ci" without shrinking, so that a mutant's first failure ends its run quickly.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("mutation", max_examples=30, derandomize=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate], **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if "mutmut" in sys.modules and not os.environ.get("REFPRUNE_MUTATION_OPTIONAL_LIBRARIES"):
    # Under mutmut, which runs each mutant in a forked copy of its own process: a library
    # that starts threads when imported (torch, JAX, dask) would leave locks held in the
    # copies, which then hang.  Mutation runs therefore behave as if these optional
    # libraries were absent (their tests skip, as in CI).  ModuleNotFoundError, not
    # ImportError: pytest.importorskip skips only on the former.  tools/mutant_check.py
    # --fresh-process runs each mutant in a new interpreter, where they are safe, and
    # --optional-libraries forks from a one-thread parent that imported them; both set
    # REFPRUNE_MUTATION_OPTIONAL_LIBRARIES.
    class _Absent:
        names = ("torch", "jax", "jaxlib", "dask", "distributed", "zarr")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"{name} is left out of mutation runs (tests/conftest.py)", name=name)
            return None

    if not any(type(f).__name__ == "_Absent" for f in sys.meta_path):
        sys.meta_path.insert(0, _Absent())


@pytest.fixture(scope="module")
def dask_client():
    """A local dask cluster of two one-thread worker processes, one per test module that
    asks for it (skips without ``distributed``)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def package_frames(monkeypatch):
    """Warnings attributed to the user's line (``refprune.user_warnings``) skip the package's
    frames; under mutmut every function also runs inside the tool's trampoline frames,
    which must count as the library's own too."""
    if "mutmut" in sys.modules:
        from refprune import user_warnings

        tool = os.path.dirname(sys.modules["mutmut"].__file__) + os.sep
        monkeypatch.setattr(user_warnings, "PACKAGE", user_warnings.PACKAGE + (tool,))
