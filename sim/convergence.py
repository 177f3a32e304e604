"""The convergence checker of the fault suite: after heal, do the owners of every bucket agree?

Anti-entropy (issue 10) keeps per-bucket summaries on every replicated node
(``core.store.summaries``: a wrapping 64-bit sum of the digests of (key, version, expiry,
tombstone) per bucket). Once the cluster has settled after heal, a ``ConvergenceWatch`` polls
every live node: a bucket *differs* when two of its live owners (owners taken from the final
placement table, the one every live node agrees on once settled) hold different
``bucket_sum(b)``. The watch passes at the first poll where no bucket differs, and fails when
some still differ ``bound_ms`` after it started. Only buckets that hold something on some live
node are compared (a bucket empty everywhere agrees); a node that holds a bucket it no longer
owns is not an owner of it and is ignored.

It reports how long it took and how many anti-entropy rounds ran meanwhile (the most any one
node ran, from ``core.antientropy.stats.rounds_started``).

Until a node has anti-entropy (no ``antientropy`` attribute, or it is None, or its store keeps
no summaries) the watch does not wait and the verdict is "skipped: no anti-entropy" (passed):
without it, nothing but read repair brings replicas together, and ``replicas-agree`` already
checks what the sweep's read repair leaves.
"""

from __future__ import annotations

from collections.abc import Callable

from gossipcache.placement import BUCKET_COUNT

from .replication_checks import EXAMPLES_KEPT, ClusterView
from .simulation import Simulation

#: How often the watch compares the summaries (virtual time).
CONVERGENCE_POLL_MS = 250
SKIPPED = "skipped: no anti-entropy"


def _summaries(core: object) -> object | None:
    """The node's bucket summaries (None when its store keeps none)."""
    return getattr(getattr(core, "store", None), "summaries", None)


def antientropy_missing(sim: Simulation) -> bool:
    """Whether some live node runs no anti-entropy or keeps no summaries (then there is
    nothing to wait for)."""
    live = sim.live_addresses()
    return not live or any(
        getattr(sim.core(a).core, "antientropy", None) is None
        or _summaries(sim.core(a).core) is None
        for a in live
    )


def rounds_by_node(sim: Simulation) -> dict[str, int]:
    """Anti-entropy rounds each live node has run (0 when its stats do not count them)."""
    rounds = {}
    for address in sim.live_addresses():
        stats = getattr(getattr(sim.core(address).core, "antientropy", None), "stats", None)
        if callable(stats):  # the contract's ``stats() -> dict``
            stats = stats()
        if isinstance(stats, dict):
            count = stats.get("rounds_started", stats.get("rounds", 0))
        else:  # the core's ``AntiEntropyStats`` counters
            count = getattr(stats, "rounds_started", 0)
        rounds[address] = int(count)
    return rounds


def live_owner_addresses(sim: Simulation, owners: tuple[str, ...]) -> list[str]:
    """The owners (placement ids: an address, or ``address#nonce``) that are the process now
    running at their address."""
    live = []
    for owner in owners:
        address = owner.partition("#")[0]
        if address not in sim.addresses or not sim.is_alive(address):
            continue
        membership = sim.core(address).core.membership
        if membership is None or owner in (address, membership.node_id):
            live.append(address)
    return live


def differing_buckets(sim: Simulation) -> tuple[int, list[str], list[str]]:
    """(buckets compared, descriptions of the first differing buckets, cluster problems).
    The description count is capped at ``EXAMPLES_KEPT``; the compared count is exact."""
    cluster = ClusterView(sim)
    if cluster.table is None:
        return 0, [], cluster.problems
    sums = {a: _summaries(sim.core(a).core) for a in sim.live_addresses()}
    held = set()
    for summaries in sums.values():
        if summaries is None:
            continue
        bucket_count = summaries.bucket_count
        held.update(b for b in range(BUCKET_COUNT) if bucket_count(b))
    compared = 0
    differing: list[str] = []
    for bucket in sorted(held):
        owners = live_owner_addresses(sim, cluster.table.owners_of_bucket(bucket))
        per_owner = {
            a: sums[a].bucket_sum(bucket) if sums.get(a) is not None else None for a in owners
        }
        compared += 1
        if len(set(per_owner.values())) > 1:
            differing.append(f"bucket {bucket}: {per_owner}")
    return compared, differing, cluster.problems


class ConvergenceWatch:
    """Polls ``differing_buckets`` from ``start`` until none differ or ``bound_ms`` passed,
    then calls ``then`` (the sweep). ``verdict`` is the checker's answer."""

    def __init__(self, sim: Simulation, bound_ms: int) -> None:
        self.sim = sim
        self.bound_ms = bound_ms
        self.skipped = False
        self.started_ms: int | None = None
        self.converged_ms: int | None = None
        self.finished = False
        self.buckets_compared = 0
        self.last_differing: list[str] = []
        self.last_problems: list[str] = []
        self._rounds_at_start: dict[str, int] = {}
        self.rounds = 0

    def start(self, then: Callable[[], None]) -> None:
        sim = self.sim
        self.started_ms = sim.now_ms
        if antientropy_missing(sim):
            self.skipped = self.finished = True
            then()
            return
        self._rounds_at_start = rounds_by_node(sim)
        self._poll(sim.now_ms + self.bound_ms, then)

    def _poll(self, deadline_ms: int, then: Callable[[], None]) -> None:
        sim = self.sim
        compared, differing, problems = differing_buckets(sim)
        self.buckets_compared = compared
        self.last_differing = differing[:EXAMPLES_KEPT] + (
            [f"... {len(differing) - EXAMPLES_KEPT} more"] if len(differing) > EXAMPLES_KEPT else []
        )
        self.last_problems = problems
        now = rounds_by_node(sim)
        self.rounds = max(
            (count - self._rounds_at_start.get(a, 0) for a, count in now.items()), default=0
        )
        if not differing and not problems:
            self.converged_ms = sim.now_ms
        elif sim.now_ms < deadline_ms:
            sim.schedule(sim.now_ms + CONVERGENCE_POLL_MS, self._poll, deadline_ms, then)
            return
        self.finished = True
        then()

    def verdict(self) -> tuple[bool, str]:
        if self.started_ms is None:
            return False, "the run never reached the convergence wait (settle, then converge)"
        if self.skipped:
            return True, SKIPPED
        if not self.finished:
            return False, f"still waiting when the run ended (started at {self.started_ms} ms)"
        bound = f"bound {self.bound_ms / 1000:g} s"
        if self.converged_ms is not None:
            took_s = (self.converged_ms - self.started_ms) / 1000
            return True, (
                f"every bucket's live owners agree {took_s:g} s after the cluster settled "
                f"({bound}), {self.rounds} anti-entropy rounds; "
                f"{self.buckets_compared} buckets compared"
            )
        return False, "; ".join(
            [
                f"owners still differ {self.bound_ms / 1000:g} s after the cluster settled "
                f"({self.rounds} anti-entropy rounds)",
                *self.last_problems,
                *self.last_differing,
                f"{self.buckets_compared} buckets compared",
            ]
        )
