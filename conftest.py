"""Shared test configuration: Hypothesis profiles and the kernel-test guard."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "ci": derandomised, so every CI run replays the same examples; "dev": random.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
