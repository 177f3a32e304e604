"""Lifeguard's local health multiplier (LHM, Dadgar et al. 2018, section IV-A).

A node that is itself slow (CPU starved, paused, losing packets) sees *others* miss deadlines and
would accuse healthy members. The score counts evidence that the problem is local:

- +1 for a failed probe when no nacks were expected, or +1 per expected nack that never came
  (helpers that answered nothing: the loss is likely ours);
- +1 when this node has to refute a suspicion about itself;
- -1 for a probe acked in time.

The score stays in ``[0, max_multiplier - 1]`` and stretches the probe period and probe timeout by
``score + 1``: an unhealthy node probes less often and waits longer before suspecting anyone.
"""

from __future__ import annotations

from ..errors import InvariantViolation


class Awareness:
    """The local health score, clamped to ``[0, max_multiplier - 1]``."""

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be >= 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(self.max_multiplier - 1, max(0, self.score + delta))

    def scale_ms(self, duration_ms: int) -> int:
        """``duration_ms`` stretched by the current health: ``duration_ms * (score + 1)``."""
        return duration_ms * (self.score + 1)

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` unless ``0 <= score < max_multiplier``."""
        if not 0 <= self.score < self.max_multiplier:
            raise InvariantViolation(
                f"local health score {self.score} outside [0, {self.max_multiplier - 1}]"
            )
