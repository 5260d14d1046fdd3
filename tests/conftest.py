import os

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
