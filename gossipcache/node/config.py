"""A node's configuration: what it serves, how much it may hold, how it joins a cluster."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from ..limits import PLACEMENT_REPLICAS_MAX
from ..membership import MembershipConfig
from .metadata import CAPACITY_BYTES_DEFAULT, NodeMetadata

#: Membership profiles selectable by name (``--membership-profile``).
MEMBERSHIP_PROFILES: dict[str, Callable[[], MembershipConfig]] = {
    "lan": MembershipConfig.lan,
    "local": MembershipConfig.local,
}


@dataclass(frozen=True)
class NodeConfig:
    """What one node process serves and how much it may hold. CLI flags map onto these."""

    host: str = "127.0.0.1"
    port: int = 7000
    resp_port: int | None = 6379
    metrics_port: int | None = 9100
    size_bytes_max: int = 256 * 1024 * 1024
    eviction: str = "sieve"
    #: Client connections open at once, over all protocols; more are closed on accept.
    connections_max: int = 10_000
    #: Bytes read per receive call: with pipelining, the requests answered in one write.
    receive_size_bytes: int = 64 * 1024
    #: Period of the bounded active-expiry cycle (run from the core's ``tick``).
    expire_interval_ms: int = 50
    #: Commands of one connection waiting for their completion (a quorum write waits for
    #: replicas); at the bound the connection's later commands wait unparsed-upon and it is not
    #: read until some complete.
    pending_per_connection_max: int = 1024
    #: Commands waiting for completion on the whole node; past it a command is refused with
    #: ``unavailable`` (retry later), so waiting requests cannot grow memory without bound.
    pending_per_node_max: int = 65_536
    #: Reply bytes one connection may have produced and not yet written. A batch stops
    #: executing once its replies reach it; the rest waits, parsed or unread, until the socket
    #: drains. Without it 50 pipelined GETs of a 16 MiB value need 800 MiB at once.
    connection_reply_bytes_max: int = 1024 * 1024
    #: Bytes held across every client connection at once: partial requests buffered and replies
    #: not yet written (Redis' ``maxmemory-clients``). Past it the connection holding the most
    #: is closed, so clients cannot take memory the cache is sized for.
    client_buffers_bytes_max: int = 64 * 1024 * 1024
    #: A client that sends nothing for this long in the middle of a request is disconnected
    #: (a partial request holds up to one request's bytes of memory).
    partial_request_timeout_s: float = 10.0
    #: Run SWIM membership (UDP on ``port``'s number, peer streams on the native port).
    membership_enabled: bool = True
    #: ``"host:port"`` native addresses of members to join through (this node's own is skipped).
    seeds: tuple[str, ...] = ()
    #: File of hex cluster keys, one per line, first primary; None = the development key.
    cluster_key_file: str | None = None
    #: A name in ``MEMBERSHIP_PROFILES``: ``lan`` (data centre) or ``local`` (one host, faster).
    membership_profile: str = "lan"
    #: Without a cluster key file, membership uses the public development key, with which
    #: anyone who reaches the port can forge any membership message: the node then refuses a
    #: non-loopback ``host`` unless this is set (``--allow-development-key-on-network``).
    allow_development_key_on_network: bool = False
    #: Copies of each key (R): a key's owners are the top R members of its bucket's ranking.
    replicas: int = 3
    #: With membership, the nodes form one cache (replication). Off: each node stays its own
    #: cache while it still gossips (the simulator's single-node model uses that).
    replication_enabled: bool = True
    #: Consistency levels used when a command names none (``one`` / ``quorum`` / ``all``).
    read_consistency: str = "one"
    write_consistency: str = "quorum"
    #: How long a coordinator waits for owners before it gives up on the ones that have not
    #: answered (hinting the write to them) and fails a level not reached.
    replica_timeout_ms: int = 1000
    #: A version stamped more than this ahead of this node's wall clock is refused (hybrid
    #: logical clocks' bound on clock skew; docs/design.md, "Versions and clock skew").
    max_clock_offset_ms: int = 500
    #: Tombstones of deletes are kept this long, then collected. At least the hint window, plus
    #: two anti-entropy rounds, plus the clock bound: a stale copy returning later could
    #: resurrect the value.
    tombstone_grace_ms: int = 3_600_000
    #: An expired replicated value is kept as a tombstone this long past its expiry, so an
    #: older write delivered late (a hint) cannot take its place.
    expired_tombstone_ms: int = 660_000
    #: Hints older than this are dropped; a node down longer is refilled by anti-entropy.
    hint_window_ms: int = 600_000
    #: Chance that a read at ``one`` also repairs the key's owners in the background.
    read_repair_chance: float = 0.0
    #: Anti-entropy (docs/design.md, "Anti-entropy"): a round with one co-owner this often;
    #: bytes of entries and entries listed per round at most; rounds per second at most when
    #: rounds leave work (how fast a wiped or new node is filled). 0 interval: off.
    antientropy_interval_ms: int = 1000
    antientropy_bytes_per_round_max: int = 8 * 1024 * 1024
    antientropy_keys_per_round_max: int = 32_768
    antientropy_rounds_per_s_max: int = 50
    #: The host this node runs on, advertised to the cluster: replicas of a key go to distinct
    #: hosts. None: the machine's name (the driver fills it in; the sans-IO core alone uses the
    #: address's host part).
    host_id: str | None = None
    #: The zone (rack, availability zone) this node is in, advertised with the host; optional.
    zone: str | None = None
    #: Clients must send this password (RESP ``AUTH`` / ``HELLO ... AUTH``, native ``auth``)
    #: before any other command; None: no client authentication. Not the cluster key, which
    #: authenticates nodes to each other. Kept out of ``repr`` so it never reaches a log.
    client_password: bytes | None = field(default=None, repr=False)
    #: A graceful leave (SIGTERM, the ``leave`` op) hands the node's buckets to their new
    #: owners before the process exits; past this the process exits anyway, with a warning
    #: (the data not handed off then has only its other replicas).
    leave_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= PLACEMENT_REPLICAS_MAX:
            raise ValueError(f"replicas must be in [1, {PLACEMENT_REPLICAS_MAX}]")
        if self.host_id is not None or self.zone is not None:
            # The same checks the metadata's encoding applies (lengths fit the meta field).
            NodeMetadata(self.host_id or "unset", self.zone, CAPACITY_BYTES_DEFAULT)
        if self.client_password is not None and not self.client_password:
            raise ValueError("client_password must not be empty (None disables it)")
        for name in ("read_consistency", "write_consistency"):
            if getattr(self, name) not in ("one", "quorum", "all"):
                raise ValueError(f"{name} must be one, quorum or all")
        if self.antientropy_interval_ms < 0:
            raise ValueError("antientropy_interval_ms must not be negative (0: off)")
        if not 0.0 <= self.read_repair_chance <= 1.0:
            raise ValueError("read_repair_chance must be in [0, 1]")
        if self.membership_profile not in MEMBERSHIP_PROFILES:
            raise ValueError(f"unknown membership profile {self.membership_profile!r}")
        refusal = development_key_refusal(
            self.host,
            self.membership_enabled,
            self.cluster_key_file,
            self.allow_development_key_on_network,
        )
        if refusal is not None:
            raise ValueError(refusal)
        for name in (
            "size_bytes_max",
            "connections_max",
            "receive_size_bytes",
            "expire_interval_ms",
            "pending_per_connection_max",
            "pending_per_node_max",
            "connection_reply_bytes_max",
            "client_buffers_bytes_max",
            "partial_request_timeout_s",
            "replica_timeout_ms",
            "max_clock_offset_ms",
            "tombstone_grace_ms",
            "expired_tombstone_ms",
            "hint_window_ms",
            "antientropy_bytes_per_round_max",
            "antientropy_keys_per_round_max",
            "antientropy_rounds_per_s_max",
            "leave_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def development_key_refusal(
    host: str, membership_enabled: bool, cluster_key_file: str | None, allowed: bool
) -> str | None:
    """Why this node must not start, or None: membership with the public development key (no
    cluster key file) on a non-loopback ``host``, unless ``allowed``."""
    if not membership_enabled or cluster_key_file is not None or allowed:
        return None
    if is_loopback_host(host):
        return None
    return (
        f"--host {host} is not a loopback address and no --cluster-key-file is given: "
        "membership would use the public development key, with which anyone who reaches this "
        "node can forge membership messages. Give a cluster key file (or pass "
        "--allow-development-key-on-network to accept that)"
    )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1). Other names are not
    resolved: a name that happens to resolve to loopback today is treated as a network host."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
