"""Every knob of the membership protocol, with its meaning, default, formula and trade-off.

One frozen :class:`MembershipConfig`; the profiles :meth:`MembershipConfig.lan` (the default,
tuned for a data-centre network) and :meth:`MembershipConfig.local` (loopback / one host, faster
detection) are both derived from the same defaults with ``dataclasses.replace``.

Formulas the knobs feed (N = live members this node knows, itself included):

- retransmissions of one update: ``retransmit_mult * ceil(log10(N + 1))``
- suspicion timeout, minimum: ``suspicion_mult * max(1, log10(max(1, N))) * probe_interval_ms``
- suspicion timeout, maximum: ``suspicion_max_timeout_mult * minimum``
- probe period, probe timeout and indirect probe timeout under local health score S:
  ``value * (S + 1)``, with ``0 <= S < awareness_max_multiplier``
- a probe of a silent member ends, and the member is suspected, at
  ``(probe_timeout_ms + indirect_probe_timeout_ms) * (S + 1)`` after the ping
- push-pull period, on average: ``push_pull_interval_ms * max(1, N / push_pull_scale_threshold)``
  (each base period a node syncs with probability ``min(1, threshold / N)``: its O(N) table goes
  out 1/N as often, so push-pull bytes per node per second stay flat)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Tunables of the SWIM + Lifeguard membership core. All durations are milliseconds."""

    #: Period of the failure detector: each period this node probes one member. Shorter means
    #: faster detection and more traffic (one ping + ack per node per period).
    probe_interval_ms: int = 1000
    #: How long to wait for a direct ack before asking ``indirect_checks`` helpers. Should exceed
    #: the network's 99th-percentile round trip; too short sends needless indirect probes.
    probe_timeout_ms: int = 500
    #: After the direct timeout, how long the helpers have to return the target's ack (ping-req,
    #: forwarded ping, ack, forwarded ack: two round trips). When it passes without an ack the
    #: probe fails and the target is suspected at once, not at the end of the period, which
    #: brings the crash -> first suspicion mean to ~1.6 T (see docs/design.md). Helpers nack
    #: after ``NACK_TIMEOUT_FRACTION`` of it. Must exceed two round trips at the 99th percentile
    #: with room for the nack; longer adds directly to detection time.
    indirect_probe_timeout_ms: int = 100
    #: k, helpers asked to ping a target that missed its direct ack (SWIM ping-req). More helpers
    #: make a false suspicion from one bad path less likely at the cost of 2k extra packets.
    indirect_checks: int = 3
    #: lambda, how many times each update is piggybacked: ``lambda * ceil(log10(N + 1))``. Higher
    #: spreads more reliably under loss; lower sends fewer bytes.
    retransmit_mult: int = 4
    #: Scales the minimum suspicion timeout ``suspicion_mult * log10(N) * probe_interval_ms``.
    #: Higher gives a slow-but-alive member more time to refute; lower declares death sooner.
    suspicion_mult: int = 4
    #: Lifeguard: a suspicion starts at ``this * minimum`` and shrinks toward the minimum as
    #: independent members confirm it. Higher tolerates a lone confused accuser longer.
    suspicion_max_timeout_mult: int = 6
    #: Lifeguard local health multiplier cap: the score stays in ``[0, this - 1]`` and scales the
    #: probe period and timeout by ``score + 1``. A node that misses its own deadlines slows down
    #: instead of accusing healthy members.
    awareness_max_multiplier: int = 8
    #: How often queued updates are gossiped to ``gossip_nodes`` random members (in addition to
    #: riding on pings and acks). Shorter spreads faster, costs more packets.
    gossip_interval_ms: int = 200
    #: Fan-out of each gossip round.
    gossip_nodes: int = 3
    #: Dead (not left) members still receive gossip for this long, so a member wrongly declared
    #: dead hears it and refutes.
    gossip_to_the_dead_ms: int = 30_000
    #: Period of the full-state push-pull with one random live member over a stream. Repairs
    #: whatever gossip missed; the cost is the whole member table per round. Scaled up above
    #: ``push_pull_scale_threshold`` members.
    push_pull_interval_ms: int = 30_000
    #: N0: above this many live members the push-pull period grows in proportion to the member
    #: count, ``push_pull_interval_ms * N / N0`` on average (each base period a node syncs with
    #: probability N0 / N). A sync carries N rows, so each node's push-pull bytes per second
    #: stay those of an N0-member cluster, and the cluster as a whole still runs N0 syncs per
    #: base period (partition heal, which needs any one cross-side sync, does not slow down).
    #: The cost: one node's stale view waits ~N/N0 times longer for a sync of its own, so the
    #: thinning applies only once this node's view has been quiet (no member added or changed
    #: state) for a whole ``push_pull_interval_ms``; while views move (a partition healing),
    #: every node syncs each period. Tries of one dead member (partition heal) are never thinned.
    #: Smaller = flatter bytes per node across sizes, slower per-node repair in big clusters.
    push_pull_scale_threshold: int = 10
    #: A push-pull (or join) exchange that has not answered in this long is abandoned.
    push_pull_timeout_ms: int = 10_000
    #: How long a dead or left member's record (a tombstone) is kept. While kept, stale gossip
    #: with its old incarnation cannot bring it back; must exceed the time updates circulate
    #: (retransmissions x gossip interval) and a push-pull period.
    dead_node_reclaim_ms: int = 60_000
    #: Join: first retry delay after every seed failed; doubles on each failure up to the max.
    join_retry_initial_ms: int = 1000
    join_retry_max_ms: int = 30_000
    #: Largest datagram this node sends (header + tag + body). 1400 stays below a 1500-byte
    #: Ethernet MTU after IP and UDP headers, so datagrams are never fragmented.
    packet_size_bytes_max: int = 1400
    #: Bound of the broadcast queue; beyond it the most-transmitted updates are dropped first.
    broadcast_queue_max: int = 4096
    #: New members one datagram or push-pull may add (the reply of a seed we join through
    #: excepted: it is the initial view). A forged 9,999-row push-pull adds this many, not a
    #: full table. Honest payloads rarely carry more: a datagram holds ~30 updates, and the
    #: members a sync teaches an established node are the few its gossip missed.
    new_members_per_packet_max: int = 64
    #: Token bucket of members learned second-hand (from someone else's gossip or table): this
    #: many at once, refilled at ``new_members_per_s``. A member announcing itself from its own
    #: address is not limited (so real joins get through a flood). Bounds how fast forged rows
    #: can fill the table and how many unconfirmed addresses this node probes; a cold start of
    #: up to ``new_members_burst`` nodes is learned at once, bigger ones at this rate (plus what
    #: the seeds' replies carry).
    new_members_burst: int = 256
    new_members_per_s: int = 16
    #: Lifeguard on/off, all parts together: local health multiplier, nacks from helpers,
    #: dynamic (confirmation-shrunk) suspicion timeout, and the buddy system (a suspected member
    #: is told so in the ping). Off = plain SWIM with a fixed suspicion timeout (the minimum).
    lifeguard: bool = True

    def __post_init__(self) -> None:
        positive = (
            "probe_interval_ms",
            "probe_timeout_ms",
            "indirect_probe_timeout_ms",
            "retransmit_mult",
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "awareness_max_multiplier",
            "gossip_interval_ms",
            "gossip_nodes",
            "push_pull_interval_ms",
            "push_pull_scale_threshold",
            "push_pull_timeout_ms",
            "join_retry_initial_ms",
            "join_retry_max_ms",
            "broadcast_queue_max",
            "new_members_per_packet_max",
            "new_members_burst",
            "new_members_per_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.indirect_checks < 0:
            raise ValueError("indirect_checks must be >= 0")
        if self.probe_timeout_ms + self.indirect_probe_timeout_ms > self.probe_interval_ms:
            # A probe must end before the next one starts: one probe in flight at a time.
            raise ValueError(
                "probe_timeout_ms + indirect_probe_timeout_ms must not exceed probe_interval_ms"
            )
        if self.packet_size_bytes_max < 576:
            # 576 is the smallest datagram every IPv4 host must accept; below that the largest
            # single update (bounded ids, addresses and meta) might not fit.
            raise ValueError("packet_size_bytes_max must be at least 576")
        if self.join_retry_max_ms < self.join_retry_initial_ms:
            raise ValueError("join_retry_max_ms must be >= join_retry_initial_ms")

    @classmethod
    def lan(cls) -> MembershipConfig:
        """Data-centre defaults (the dataclass defaults)."""
        return cls()

    @classmethod
    def local(cls) -> MembershipConfig:
        """One host or loopback: round trips are tiny, so time out and gossip sooner."""
        return dataclasses.replace(
            cls(),
            probe_timeout_ms=200,
            indirect_probe_timeout_ms=300,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            gossip_interval_ms=100,
            push_pull_interval_ms=15_000,
            push_pull_timeout_ms=1000,
        )

    def replace(self, **changes: object) -> MembershipConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
