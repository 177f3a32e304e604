"""A gossipcache node's command layer: where a request meets the store it reads or changes.

Sans-IO like the cores: the Trio driver (``gossipcache.server``) hands it complete requests and
the time, and writes back the bytes it returns. Every handler runs to completion without awaiting,
so no other task can observe the store half-changed: that is what makes the node lock-free.

``now_ms`` is wall-clock milliseconds (expiry instants are wall-clock); ``clock_ns`` is a
monotonic nanosecond clock used only to time commands for the latency histograms.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import EntryTooLarge, InvalidRequest, KeyTooLarge, ProtocolError, ValueTooLarge
from ..membership import Keyring, MemberEvent, Membership, MembershipConfig
from ..metrics.counters import CommandMetrics, ServerMetrics, record_batch
from ..metrics.histogram import Histogram
from ..store import TTL_MISSING, Store
from ..wire import native as protocol
from ..wire.native import (
    ERROR_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_TOO_LARGE,
    ERROR_UNAVAILABLE,
    ERROR_UNKNOWN_OP,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    RequestDecoder,
    ResponseEncoder,
    peek_request_id,
)

log = logging.getLogger("gossipcache.node")

_TOO_LARGE = (KeyTooLarge, ValueTooLarge, EntryTooLarge)

#: Membership profiles selectable by name (``--membership-profile``).
MEMBERSHIP_PROFILES: dict[str, Callable[[], MembershipConfig]] = {
    "lan": MembershipConfig.lan,
    "local": MembershipConfig.local,
}
#: Membership events kept for the placement layer and for inspection; older ones are dropped.
MEMBERSHIP_EVENTS_KEPT = 4096


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
    #: Period of the bounded active-expiry cycle.
    expire_interval_ms: int = 50
    #: Run SWIM membership (UDP on ``port``'s number, peer streams on the native port).
    membership_enabled: bool = True
    #: ``"host:port"`` native addresses of members to join through (this node's own is skipped).
    seeds: tuple[str, ...] = ()
    #: File of hex cluster keys, one per line, first primary; None = the development key.
    cluster_key_file: str | None = None
    #: A name in ``MEMBERSHIP_PROFILES``: ``lan`` (data centre) or ``local`` (one host, faster).
    membership_profile: str = "lan"


class Node:
    """A store plus its counters, answering native requests and (through ``resp_commands``)
    Redis commands."""

    def __init__(self, config: NodeConfig, clock_ns: Callable[[], int]) -> None:
        self.config = config
        self.store = Store(config.size_bytes_max, config.eviction)
        self.metrics = ServerMetrics()
        self.clock_ns = clock_ns
        #: The serving process's id, for INFO (the driver sets it; 0 in the simulator).
        self.process_id = 0
        handlers: dict[str, Callable[[tuple, int], tuple]] = {
            protocol.OP_PING: self._op_ping,
            protocol.OP_GET: self._op_get,
            protocol.OP_PUT: self._op_put,
            protocol.OP_DEL: self._op_del,
            protocol.OP_EXPIRE: self._op_expire,
            protocol.OP_TTL: self._op_ttl,
            protocol.OP_STATS: self._op_stats,
            protocol.OP_MEMBERS: self._op_members,
        }
        # op -> (handler, its latency histogram's record, its metrics): one lookup per request.
        self._native_ops: dict[str, tuple[Callable, Histogram, CommandMetrics]] = {}
        for op, handler in handlers.items():
            command_metrics = self.metrics.command(op)
            self._native_ops[op] = (handler, command_metrics.latency_ns, command_metrics)
        self._request_decoder = RequestDecoder()
        self._response_encoder = ResponseEncoder()
        #: The membership core once ``start_membership`` ran (None when membership is off).
        self.membership: Membership | None = None
        self._membership_clock_ms: Callable[[], int] | None = None
        #: Recent membership events, oldest first (bounded; the placement layer reads these).
        self.membership_events: deque[MemberEvent] = deque(maxlen=MEMBERSHIP_EVENTS_KEPT)
        #: Counters of the membership driver (``gossipcache.net``), rendered in /metrics.
        self.membership_transport_stats: dict[str, int] = {}

    # -- membership --------------------------------------------------------------------------

    def start_membership(
        self,
        address: str,
        clock_ms: Callable[[], int],
        wall_ms: int,
        rng: random.Random,
        keyring: Keyring,
    ) -> Membership:
        """Create the membership core for this node at ``address`` (its native ``host:port``).

        ``clock_ms`` is the monotonic clock the driver feeds the core. The node id is the address
        plus a random start nonce, and the incarnation starts at the wall-clock ``wall_ms``: a
        restarted process at the same address is a new id with a higher incarnation, which the
        cluster accepts at once and which declares the previous process dead.
        """
        config = self.config
        profile = MEMBERSHIP_PROFILES.get(config.membership_profile)
        if profile is None:
            raise ValueError(f"unknown membership profile {config.membership_profile!r}")
        node_id = f"{address}#{rng.getrandbits(32):08x}"
        self._membership_clock_ms = clock_ms
        self.membership = Membership(
            address,
            node_id,
            profile(),
            rng,
            keyring,
            clock_ms(),
            seeds=config.seeds,
            incarnation=wall_ms,
        )
        log.info("membership: %s, incarnation %d, seeds %s", node_id, wall_ms, config.seeds)
        return self.membership

    def after_membership_step(self, now_ms: int) -> None:
        """Called by the driver after every call into the membership core: drain its events."""
        if self.membership is not None:
            events = self.membership.take_events()
            if events:
                self.on_membership_events(events)

    def on_membership_events(self, events: list[MemberEvent]) -> None:
        """The hook where view changes arrive, in order. Logged and kept (bounded) for now;
        the placement layer will rebalance here. Must not await or block."""
        for event in events:
            log.info(
                "member %s: %s at %s (incarnation %d)",
                event.kind,
                event.node_id,
                event.address,
                event.incarnation,
            )
        self.membership_events.extend(events)

    # -- native protocol -------------------------------------------------------------------

    def handle_native_frames(self, bodies: list[bytes], now_ms: int) -> bytes:
        """Answer every request body of one read batch; returns the bytes of all responses.

        A body that is not a valid request gets an error response to its id (0 when unreadable);
        framing is intact, so the connection stays open.
        """
        out = []
        append = out.append
        clock_ns = self.clock_ns
        decode = self._request_decoder.decode_message
        encode = self._response_encoder.encode
        ops = self._native_ops
        # Latency is timed per batch: see ``metrics.record_batch``.
        served = []  # the histogram of every command answered, for ``record_batch``
        started_ns = clock_ns()
        for body in bodies:
            try:
                message = decode(body)
            except ProtocolError as error:
                code = getattr(error, "code", ERROR_BAD_REQUEST)
                request_id = getattr(error, "request_id", None) or peek_request_id(body) or 0
                append(encode(request_id, STATUS_ERROR, (code, str(error))))
                continue
            request_id = message[0]
            entry = ops.get(message[1])
            if entry is None:
                reason = f"op {message[1]!r} is not served by this node"
                append(encode(request_id, STATUS_ERROR, (ERROR_UNKNOWN_OP, reason)))
                continue
            handler, histogram, metrics = entry
            try:
                status, payload = handler(message, now_ms)
            except _TOO_LARGE as error:
                metrics.errors += 1
                status, payload = STATUS_ERROR, (ERROR_TOO_LARGE, str(error))
            except (InvalidRequest, ValueError) as error:
                metrics.errors += 1
                status, payload = STATUS_ERROR, (ERROR_BAD_REQUEST, str(error))
            except Exception as error:  # a bug: answer, count, keep serving
                metrics.errors += 1
                self.metrics.internal_errors += 1
                status, payload = STATUS_ERROR, (ERROR_INTERNAL, repr(error))
            served.append(histogram)
            try:
                append(encode(request_id, status, payload))
            except ValueError as error:  # a payload msgpack cannot encode: a bug, not the peer's
                self.metrics.internal_errors += 1
                append(encode(request_id, STATUS_ERROR, (ERROR_INTERNAL, str(error))))
        record_batch(served, clock_ns() - started_ns)
        return b"".join(out)

    # Handlers take the request message ``(request_id, op, *args)``: arguments start at [2].

    def _op_ping(self, message: tuple, now_ms: int) -> tuple:
        return STATUS_OK, True

    def _op_get(self, message: tuple, now_ms: int) -> tuple:
        value = self.store.get(message[2], now_ms)
        return (STATUS_NOT_FOUND, None) if value is None else (STATUS_OK, value)

    def _op_put(self, message: tuple, now_ms: int) -> tuple:
        self.store.put(message[2], message[3], now_ms, message[4])
        return STATUS_OK, True

    def _op_del(self, message: tuple, now_ms: int) -> tuple:
        found = self.store.delete(message[2], now_ms)
        return (STATUS_OK, True) if found else (STATUS_NOT_FOUND, None)

    def _op_expire(self, message: tuple, now_ms: int) -> tuple:
        found = self.store.expire(message[2], message[3], now_ms)
        return (STATUS_OK, True) if found else (STATUS_NOT_FOUND, None)

    def _op_ttl(self, message: tuple, now_ms: int) -> tuple:
        ttl_ms = self.store.ttl_ms(message[2], now_ms)
        return (STATUS_NOT_FOUND, None) if ttl_ms == TTL_MISSING else (STATUS_OK, ttl_ms)

    def _op_stats(self, message: tuple, now_ms: int) -> tuple:
        return STATUS_OK, self.stats_dict()

    def _op_members(self, message: tuple, now_ms: int) -> tuple:
        """Every member record: id, address, state, incarnation, and ``since_ms`` as wall-clock
        ms (the core keeps monotonic time; converted through the age). O(members)."""
        core = self.membership
        if core is None or self._membership_clock_ms is None:
            return STATUS_ERROR, (ERROR_UNAVAILABLE, "membership is not running")
        monotonic_now_ms = self._membership_clock_ms()
        return STATUS_OK, [
            {
                "id": member.node_id,
                "address": member.address,
                "state": str(member.state),
                "incarnation": member.incarnation,
                "since_ms": now_ms - (monotonic_now_ms - member.since_ms),
            }
            for member in core.members()
        ]

    # -- shared ------------------------------------------------------------------------------

    def stats_dict(self) -> dict:
        """Store and server counters as one flat dict (what ``stats`` returns). O(1)."""
        stats = self.store.stats()
        result = asdict(stats)
        result["hit_ratio"] = stats.hit_ratio
        server = self.metrics
        result.update(
            connections_open=server.connections_open,
            connections_accepted=server.connections_accepted,
            protocol_errors=server.protocol_errors,
            internal_errors=server.internal_errors,
        )
        return result

    def expire_tick(self, now_ms: int) -> int:
        return self.store.expire_tick(now_ms)
