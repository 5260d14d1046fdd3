"""Time of the conformance harness and of the golden fixtures.

    python benchmarks/bench_conformance.py

The harness time is refprune's own reference computations plus the adapter's; here the
adapter returns refprune's values again, so the figure is the harness's overhead and
reference cost per quantity over the 28-case zoo.
"""

import tempfile
import time

from refprune import conformance as cf
from refprune.fixtures import write_fixtures


def main():
    cases = cf.zoo()
    print(f"conformance zoo: {len(cases)} cases, n = {min(c.n_params for c in cases)}..{max(c.n_params for c in cases)}")
    for name, (ref, _) in cf.QUANTITIES.items():
        if name in ("kfac", "kfac_factors", "ekfac"):
            opts = dict(curvature="ggn", approx="expand", bias="fold")
            fn = (lambda r, o: lambda c: r(c, o))(ref, opts)
        else:
            fn = (lambda r: lambda c: r(c))(ref)
        t0 = time.perf_counter()
        report = cf.check(cf.Adapter(**{name: fn}), cases)
        dt = time.perf_counter() - t0
        assert report.ok
        print(f"  {name:28s} {1e3 * dt / len(cases):8.2f} ms per case")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        manifest = write_fixtures(d)
        print(f"fixtures: {len(manifest['cases'])} cases written in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
