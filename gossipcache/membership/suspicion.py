"""Lifeguard's dynamic suspicion timeout (Dadgar et al. 2018, section IV-B; memberlist's formula).

A suspicion starts with the longest timeout and shrinks toward the shortest as *independent*
members confirm it: one confused accuser alone waits ``max``; once ``k`` others agree, ``min``.

    min = suspicion_mult * max(1, log10(max(1, N))) * probe_interval_ms
    max = suspicion_max_timeout_mult * min
    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

with c confirmations so far and k = suspicion_mult - 2 expected confirmations (0 when the cluster
is too small to provide them: N - 2 < k, since the suspect and the accuser cannot confirm).
Without Lifeguard the timeout is fixed at ``min``.
"""

from __future__ import annotations

import math

from ..errors import InvariantViolation

#: Most distinct confirmers remembered per suspicion; more than k never changes the timeout.
CONFIRMATIONS_MAX = 64


def suspicion_timeout_min_ms(suspicion_mult: int, member_count: int, probe_interval_ms: int) -> int:
    """The shortest suspicion timeout for a cluster of ``member_count`` live members."""
    node_scale = max(1.0, math.log10(max(1, member_count)))
    return int(suspicion_mult * node_scale * probe_interval_ms)


def expected_confirmations(suspicion_mult: int, member_count: int) -> int:
    """k: confirmations that drive the timeout to its minimum."""
    k = suspicion_mult - 2
    return 0 if member_count - 2 < k else max(0, k)


def suspicion_timeout_ms(confirmations: int, k: int, min_ms: int, max_ms: int) -> int:
    """Total timeout (from the start of the suspicion) after ``confirmations`` confirmations."""
    if k <= 0:
        return min_ms
    fraction = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_ms, int(max_ms - fraction * (max_ms - min_ms)))


class Suspicion:
    """The timer of one suspected member: when it fires, the member is declared dead."""

    __slots__ = ("started_ms", "k", "min_ms", "max_ms", "confirmers", "deadline_ms")

    def __init__(self, accuser_id: str, started_ms: int, k: int, min_ms: int, max_ms: int) -> None:
        self.started_ms = started_ms
        self.k = k
        self.min_ms = min_ms
        self.max_ms = max_ms
        # The first accuser is not a confirmation: our own suspicion may be gossiped back to us.
        self.confirmers: set[str] = {accuser_id}
        self.deadline_ms = started_ms + suspicion_timeout_ms(0, k, min_ms, max_ms)

    @property
    def confirmations(self) -> int:
        return len(self.confirmers) - 1

    def confirm(self, confirmer_id: str) -> bool:
        """Count an independent confirmation; True if it was new (and so worth re-gossiping)."""
        if self.confirmations >= self.k or confirmer_id in self.confirmers:
            return False
        if len(self.confirmers) >= CONFIRMATIONS_MAX:
            return False
        self.confirmers.add(confirmer_id)
        timeout_ms = suspicion_timeout_ms(self.confirmations, self.k, self.min_ms, self.max_ms)
        self.deadline_ms = self.started_ms + timeout_ms
        return True

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` unless the confirmers stay within their bounds and the
        deadline is the one the formula gives for the confirmations counted so far."""
        if not 0 < self.min_ms <= self.max_ms:
            raise InvariantViolation(f"suspicion timeout bounds {self.min_ms}..{self.max_ms} ms")
        if not 1 <= len(self.confirmers) <= CONFIRMATIONS_MAX:
            raise InvariantViolation(f"suspicion holds {len(self.confirmers)} confirmers")
        if self.confirmations > max(0, self.k):
            raise InvariantViolation(
                f"suspicion counts {self.confirmations} confirmations, more than k = {self.k}"
            )
        timeout_ms = suspicion_timeout_ms(self.confirmations, self.k, self.min_ms, self.max_ms)
        if self.deadline_ms != self.started_ms + timeout_ms:
            raise InvariantViolation(
                f"suspicion deadline {self.deadline_ms} ms, expected {self.started_ms} + "
                f"{timeout_ms} ms for {self.confirmations} confirmations"
            )
