"""Hypothesis profiles: reproducible by default.

- ``ci`` (the default): derandomized (examples come from a fixed seed per test, so every run of a
  commit tries the same inputs), no example database (nothing carried between runs), no deadline
  (shared CI machines stall), and the reproduction blob printed on failure.
  ``max_examples`` stays at Hypothesis' default of 100.
- ``dev``: random examples and the local example database, so repeated runs explore further and
  replay earlier failures first.

Choose with ``HYPOTHESIS_PROFILE=dev`` (or pytest's ``--hypothesis-profile dev``, which wins).
Tests that set their own ``@settings`` keep those values and take the rest from the profile.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    max_examples=settings.default.max_examples,
)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
