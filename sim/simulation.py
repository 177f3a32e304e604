"""The simulator's event loop, network model and node faults.

One ``Simulation`` owns virtual time, a heap of pending events and the nodes. An event is a tuple
whose first two fields are ``(time_ms, seq)``; ``seq`` increases by one for every scheduled event,
so the heap never compares past the second field and events at the same millisecond run in the
order they were scheduled. Nothing here reads a clock or the global ``random`` module: randomness
comes from streams derived from the root seed (``sim.rng``), so a seed replays a run exactly.

Nodes run sans-IO cores (``gossipcache.sansio``). A core is built by a factory from a
``NodeContext``; after every call into a core the loop takes its outbox, routes each payload
through the network model and re-arms the node's timer from ``next_deadline_ms``.

Every delivered payload, tick, drop and fault is folded into a SHA-256 trace digest, so two runs
are identical exactly when their digests are. Components outside the loop (a client workload) fold
their own events in with ``trace``.

Invariants: when ``check_invariants`` is on (the default), a core that has a
``check_invariants()`` method has it called after every call into it -- build, delivery, stream
failure, tick, resume, and a client's call reported through ``after_call``. A violation stops the
run with ``CoreInvariantError`` naming the node, the step and the time. Cores without the method
(the membership adapter, the toy cores) cost nothing; benches may turn the checks off.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gossipcache.sansio import Channel, Outgoing, SansIOCore

from .network import CLOG_DELAY_MS_DEFAULT, NetworkConfig
from .rng import derive_rng

#: Wall-clock milliseconds at virtual time 0 (2023-11-14), before any per-node offset.
WALL_EPOCH_MS = 1_700_000_000_000

#: Trace lines kept in memory when ``record_trace`` is on (tests and debugging); the digest
#: covers every event regardless.
TRACE_LINES_MAX = 200_000

# Event kinds: the third field of an event tuple.
_START = 0  # (t, seq, _START, node)
_DELIVER = 1  # (t, seq, _DELIVER, dst_node, src_address, channel, payload, tag)
_TIMER = 2  # (t, seq, _TIMER, node, incarnation)
_STREAM_FAILED = 3  # (t, seq, _STREAM_FAILED, node, peer_address, incarnation)
_RESUME = 4  # (t, seq, _RESUME, node, pause_token)
_CALL = 5  # (t, seq, _CALL, function, args)

_DATAGRAM = Channel.DATAGRAM
_STREAM = Channel.STREAM

#: A clog in "drop" mode is stored as this extra delay.
_CLOG_DROP = -1


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What a factory gets to build a node's core.

    ``incarnation`` starts at 1 and grows by one on every restart at the same address.
    ``rng`` is the node's own stream for this incarnation. ``wall_ms()`` reads the node's wall
    clock (offset, drift and jumps applied); ``now_ms`` is virtual monotonic time at build.
    ``addresses`` lists every node known to the simulation at build time, sorted.
    """

    address: str
    incarnation: int
    addresses: tuple[str, ...]
    rng: random.Random
    now_ms: int
    wall_ms: Callable[[], int]


#: Builds a core for a node; called at start and at every restart.
Factory = Callable[[NodeContext], SansIOCore]


class CoreInvariantError(RuntimeError):
    """A core's ``check_invariants()`` raised after a step; the original is the ``__cause__``.

    ``address``, ``incarnation``, ``step`` (what the simulator had just done: start, deliver,
    stream_failed, tick, resume, client call) and ``at_ms`` say where.
    """

    def __init__(self, address: str, incarnation: int, step: str, at_ms: int, error: Exception):
        super().__init__(
            f"{address} (incarnation {incarnation}) broke an invariant after {step} at {at_ms} ms: "
            f"{type(error).__name__}: {error}"
        )
        self.address = address
        self.incarnation = incarnation
        self.step = step
        self.at_ms = at_ms


@dataclass(frozen=True, slots=True)
class SimStats:
    """An immutable snapshot of a simulation's counters."""

    now_ms: int
    events_processed: int
    coverage: dict[str, int]


class _Node:
    """The simulator's record of one address. ``core`` is None while the node is down."""

    __slots__ = (
        "address",
        "factory",
        "core",
        "incarnation",
        "alive",
        "paused",
        "pause_token",
        "inbox",
        "timer_at",
        "clock_offset_ms",
        "clock_drift_ppm",
        "check",
    )

    def __init__(self, address: str, factory: Factory) -> None:
        self.address = address
        self.factory = factory
        self.core: Any = None
        self.incarnation = 0
        self.alive = False
        self.paused = False
        self.pause_token = 0
        # Only a paused node has an inbox: a running node handles each payload on arrival.
        self.inbox: deque[tuple[str, Channel | None, bytes]] | None = None
        # Time of this node's one valid pending timer event, or None.
        self.timer_at: int | None = None
        self.clock_offset_ms = 0
        self.clock_drift_ppm = 0
        # The core's bound check_invariants while checks are on and it has one, else None.
        self.check: Callable[[], Any] | None = None


def node_addresses(count: int, port: int = 7946) -> list[str]:
    """``count`` distinct ``host:port`` addresses that sort in creation order."""
    width = max(3, len(str(count - 1)))
    return [f"node{index:0{width}d}:{port}" for index in range(count)]


class Simulation:
    """A deterministic world of sans-IO nodes joined by a faulty network.

    Typical use::

        sim = Simulation(seed=7)
        for address in node_addresses(5):
            sim.add_node(address, factory)
        sim.run_until(60_000)
        print(sim.digest())
    """

    def __init__(
        self,
        seed: int,
        network: NetworkConfig | None = None,
        *,
        record_trace: bool = False,
        check_invariants: bool = True,
    ) -> None:
        self.seed = seed
        self._check_invariants = check_invariants
        self._invariant_checks = 0
        self._network = network if network is not None else NetworkConfig()
        self._network_rng = derive_rng(seed, "network")
        self._now_ms = 0
        self._seq = 0
        self._event_seq = 0
        self._heap: list[tuple] = []
        self._nodes: dict[str, _Node] = {}
        self._addresses: list[str] = []
        self._events_processed = 0
        self._stop_requested = False
        # Directed pairs (src, dst) blocked by partitions -> number of partitions blocking them.
        self._blocked: dict[tuple[str, str], int] = {}
        self._partitions: dict[int, list[tuple[str, str]]] = {}
        self._next_partition_id = 1
        # Directed pairs -> extra delay in ms, or _CLOG_DROP.
        self._clogs: dict[tuple[str, str], int] = {}
        # Streams: sorted address pair -> connection id; (src, dst) -> last scheduled delivery.
        self._connections: dict[tuple[str, str], int] = {}
        self._stream_last_ms: dict[tuple[str, str], int] = {}
        self._next_connection_id = 1
        # Datagrams: (src, dst) -> highest send tag delivered, to observe reordering.
        self._datagram_last_tag: dict[tuple[str, str], int] = {}
        self._coverage: Counter[str] = Counter()
        self._hasher = hashlib.sha256()
        self._trace_lines: list[str] | None = [] if record_trace else None

    # ------------------------------------------------------------------ inspection

    @property
    def now_ms(self) -> int:
        """Virtual monotonic time in milliseconds."""
        return self._now_ms

    @property
    def network(self) -> NetworkConfig:
        """The network parameters in force."""
        return self._network

    @property
    def addresses(self) -> list[str]:
        """Every node's address, sorted (a copy)."""
        return list(self._addresses)

    def live_addresses(self) -> list[str]:
        """Addresses of nodes that are up (paused ones included), sorted."""
        return [address for address in self._addresses if self._nodes[address].alive]

    def is_alive(self, address: str) -> bool:
        """Whether the node is up (it may be paused)."""
        return self._nodes[address].alive

    def is_paused(self, address: str) -> bool:
        """Whether the node is up but paused."""
        return self._nodes[address].paused

    def core(self, address: str) -> Any:
        """The node's current core, or None while it is down (for checkers and tests)."""
        return self._nodes[address].core

    def incarnation(self, address: str) -> int:
        """How many times the node was built (0 before its first start)."""
        return self._nodes[address].incarnation

    def inbox_size(self, address: str) -> int:
        """Payloads queued for a paused node."""
        inbox = self._nodes[address].inbox
        return len(inbox) if inbox is not None else 0

    def rng(self, stream_name: str) -> random.Random:
        """A fresh random stream derived from this simulation's seed and ``stream_name``."""
        return derive_rng(self.seed, stream_name)

    @property
    def coverage(self) -> dict[str, int]:
        """How many times each fault or network effect fired, by kind (sorted copy)."""
        return dict(sorted(self._coverage.items()))

    def note(self, kind: str, count: int = 1) -> None:
        """Count ``count`` more of ``kind`` in ``coverage`` (a fault scripted outside the
        simulator: a join, a leave; or what a run checked)."""
        self._coverage[kind] += count

    def stats(self) -> SimStats:
        """A snapshot of time, event count and coverage."""
        return SimStats(self._now_ms, self._events_processed, self.coverage)

    @property
    def check_invariants(self) -> bool:
        """Whether cores' ``check_invariants()`` run after every call into them (settable)."""
        return self._check_invariants

    @check_invariants.setter
    def check_invariants(self, enabled: bool) -> None:
        self._check_invariants = enabled
        for node in self._nodes.values():
            node.check = self._check_of(node.core)

    @property
    def invariant_checks(self) -> int:
        """How many times a core's ``check_invariants()`` ran (and passed) so far."""
        return self._invariant_checks

    @property
    def events_processed(self) -> int:
        """Events popped from the heap so far."""
        return self._events_processed

    def digest(self) -> str:
        """Hex SHA-256 of the canonical trace so far."""
        return self._hasher.hexdigest()

    @property
    def trace_lines(self) -> list[str]:
        """The recorded trace (only with ``record_trace=True``; capped at TRACE_LINES_MAX)."""
        return list(self._trace_lines or ())

    # ------------------------------------------------------------------ setup and running

    def add_node(self, address: str, factory: Factory, start_at_ms: int | None = None) -> None:
        """Register a node; its core is built at ``start_at_ms`` (default: now)."""
        if address in self._nodes:
            raise ValueError(f"duplicate node address {address!r}")
        node = _Node(address, factory)
        self._nodes[address] = node
        self._addresses.append(address)
        self._addresses.sort()
        at_ms = self._now_ms if start_at_ms is None else start_at_ms
        self._push((max(at_ms, self._now_ms), self._next_seq(), _START, node))

    def schedule(self, at_ms: int, function: Callable[..., Any], *args: Any) -> None:
        """Call ``function(*args)`` at virtual time ``at_ms`` (not before now)."""
        self._push((max(at_ms, self._now_ms), self._next_seq(), _CALL, function, args))

    def request_stop(self) -> None:
        """Make the running ``run_until`` return after the current event."""
        self._stop_requested = True

    def run_for(self, duration_ms: int) -> None:
        """Advance virtual time by ``duration_ms``."""
        self.run_until(self._now_ms + duration_ms)

    def run_until(self, end_ms: int) -> None:
        """Process every event due at or before ``end_ms``; then time is ``end_ms``.

        The loop body is inlined for the two hot kinds (delivery and timer) because this is
        where the simulator spends its time.
        """
        heap = self._heap
        pop = heapq.heappop
        self._stop_requested = False
        while heap and heap[0][0] <= end_ms:
            event = pop(heap)
            self._now_ms = event[0]
            self._event_seq = event[1]
            self._events_processed += 1
            kind = event[2]
            if kind == _DELIVER:
                self._deliver(event)
            elif kind == _TIMER:
                node = event[3]
                if node.timer_at != event[0] or node.incarnation != event[4] or not node.alive:
                    continue  # superseded by an earlier timer, or the node died since
                node.timer_at = None
                if node.paused:
                    continue  # the resume runs overdue timers
                self._tick_if_due(node)
            elif kind == _STREAM_FAILED:
                self._stream_failed_event(event)
            elif kind == _CALL:
                event[3](*event[4])
            elif kind == _RESUME:
                node = event[3]
                if node.pause_token == event[4]:
                    self._resume(node)
            elif kind == _START:
                node = event[3]
                if not node.alive and node.incarnation == 0:
                    self._build(node)
            if self._stop_requested:
                return
        if end_ms > self._now_ms:
            self._now_ms = end_ms

    # ------------------------------------------------------------------ node faults

    def crash(self, address: str, *, kind: str = "crash") -> bool:
        """Kill the node: its core (all its memory) is discarded, its streams break. ``kind``
        is the coverage kind counted (a node stopped after a graceful leave is not a crash).

        Returns False when the node was already down.
        """
        node = self._nodes[address]
        if not node.alive:
            return False
        node.alive = False
        node.core = None
        node.check = None
        node.paused = False
        node.pause_token += 1
        node.inbox = None
        node.timer_at = None
        self._coverage[kind] += 1
        self._log(kind, address, "")
        for key in [key for key in self._connections if address in key]:
            self._break_stream(key[0], key[1])
        return True

    def restart(self, address: str) -> bool:
        """Build a new core for a down node (next incarnation, same address).

        Returns False when the node is already up.
        """
        node = self._nodes[address]
        if node.alive:
            return False
        self._coverage["restart"] += 1
        self._build(node)
        return True

    def pause(self, address: str, duration_ms: int) -> bool:
        """Freeze the node for ``duration_ms``: no timers, no handling; arrivals queue in its
        bounded inbox. Pausing a paused node moves its resume to now + ``duration_ms``.

        Returns False when the node is down.
        """
        node = self._nodes[address]
        if not node.alive:
            return False
        node.pause_token += 1
        if not node.paused:
            node.paused = True
            node.inbox = deque()
            self._coverage["pause"] += 1
            self._log("pause", address, str(duration_ms))
        self._push((self._now_ms + duration_ms, self._next_seq(), _RESUME, node, node.pause_token))
        return True

    def resume(self, address: str) -> None:
        """End the node's pause now (no-op when it is not paused)."""
        node = self._nodes[address]
        node.pause_token += 1
        self._resume(node)

    # ------------------------------------------------------------------ clocks

    def wall_ms(self, address: str) -> int:
        """The node's wall clock: epoch + virtual time + offset + drift; jumps move the offset."""
        node = self._nodes[address]
        now = self._now_ms
        return WALL_EPOCH_MS + now + node.clock_offset_ms + now * node.clock_drift_ppm // 1_000_000

    def set_clock(
        self, address: str, *, offset_ms: int | None = None, drift_ppm: int | None = None
    ) -> None:
        """Set the node's wall-clock offset and/or drift (parts per million, > -1,000,000)."""
        node = self._nodes[address]
        if offset_ms is not None:
            node.clock_offset_ms = offset_ms
        if drift_ppm is not None:
            if drift_ppm <= -1_000_000:
                raise ValueError("drift_ppm must exceed -1,000,000 (a clock that runs backwards)")
            node.clock_drift_ppm = drift_ppm

    def jump_clock(self, address: str, delta_ms: int) -> None:
        """Step the node's wall clock by ``delta_ms`` (NTP correction, operator error)."""
        self._nodes[address].clock_offset_ms += delta_ms
        self._coverage["clock_jump"] += 1
        self._log("clock_jump", address, str(delta_ms))

    # ------------------------------------------------------------------ network faults

    def set_network(self, network: NetworkConfig) -> None:
        """Replace the network parameters for payloads sent from now on."""
        self._network = network

    def partition(
        self,
        side_a: Iterable[str],
        side_b: Iterable[str],
        *,
        symmetric: bool = True,
        kind: str | None = None,
    ) -> int:
        """Block payloads from ``side_a`` to ``side_b`` (and back when ``symmetric``).

        Streams between the sides break at once; datagrams in flight across the cut are dropped
        on arrival. ``kind`` is the coverage kind counted (default ``partition`` or
        ``partition_asymmetric``; a bridge or a flapping link names its own). Returns an id
        for ``heal``.
        """
        side_a = sorted(side_a)
        side_b = sorted(side_b)
        pairs = [(a, b) for a in side_a for b in side_b if a != b]
        if symmetric:
            pairs += [(b, a) for a, b in pairs]
        partition_id = self._next_partition_id
        self._next_partition_id += 1
        self._partitions[partition_id] = pairs
        blocked = self._blocked
        for pair in pairs:
            blocked[pair] = blocked.get(pair, 0) + 1
        if kind is None:
            kind = "partition" if symmetric else "partition_asymmetric"
        self._coverage[kind] += 1
        self._log("partition", ",".join(side_a), ",".join(side_b), b"s" if symmetric else b"a")
        for a, b in pairs:
            self._break_stream(a, b)
        return partition_id

    def heal(self, partition_id: int) -> None:
        """Remove one partition (unknown ids are ignored: it may be healed already)."""
        pairs = self._partitions.pop(partition_id, None)
        if pairs is None:
            return
        blocked = self._blocked
        for pair in pairs:
            count = blocked[pair] - 1
            if count:
                blocked[pair] = count
            else:
                del blocked[pair]
        self._log("heal", str(partition_id), "")

    def heal_all(self) -> None:
        """Remove every partition and clog."""
        for partition_id in list(self._partitions):
            self.heal(partition_id)
        for src, dst in list(self._clogs):
            self.unclog(src, dst)

    def is_blocked(self, src: str, dst: str) -> bool:
        """Whether a partition blocks payloads from ``src`` to ``dst``."""
        return (src, dst) in self._blocked

    def clog(
        self, src: str, dst: str, *, drop: bool = False, delay_ms: int = CLOG_DELAY_MS_DEFAULT
    ) -> None:
        """Clog the link ``src -> dst``: add ``delay_ms`` to everything, or with ``drop`` drop
        datagrams and break streams, until ``unclog``."""
        self._clogs[(src, dst)] = _CLOG_DROP if drop else delay_ms
        self._coverage["clog_drop" if drop else "clog_delay"] += 1
        self._log("clog", src, dst, b"drop" if drop else str(delay_ms).encode())
        if drop:
            self._break_stream(src, dst)

    def unclog(self, src: str, dst: str) -> None:
        """Restore the link ``src -> dst``."""
        if self._clogs.pop((src, dst), None) is not None:
            self._log("unclog", src, dst)

    def send_from(self, address: str, outgoing: Outgoing) -> None:
        """Route ``outgoing`` as if the node at ``address`` had put it in its outbox."""
        self._send(address, outgoing)

    # ------------------------------------------------------------------ callers outside the loop

    def after_call(self, address: str, step: str = "client call") -> None:
        """Finish a call into the node's core made from outside the loop (a client command):
        send its outbox, re-arm its timer and check its invariants, as after any event.

        Raises ``ValueError`` when the node is down (there is no core to have called)."""
        node = self._nodes[address]
        if not node.alive:
            raise ValueError(f"{address} is down")
        self._after_core(node, self._now_ms, step)

    def trace(self, kind: str, a: str, b: str = "", payload: bytes = b"") -> None:
        """Fold an event of a component outside the loop (a client's invocation or result) into
        the digest and the recorded trace, stamped with the current time. ``payload`` must be a
        canonical encoding: never one that depends on set or dict iteration order."""
        self._log(kind, a, b, payload)

    # ------------------------------------------------------------------ internals: events

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _push(self, event: tuple) -> None:
        heapq.heappush(self._heap, event)

    def _log(self, kind: str, a: str, b: str, payload: bytes = b"") -> None:
        line = f"{self._now_ms} {self._event_seq} {kind} {a} {b} {len(payload)}\n"
        hasher = self._hasher
        hasher.update(line.encode())
        if payload:
            hasher.update(payload)
        lines = self._trace_lines
        if lines is not None and len(lines) < TRACE_LINES_MAX:
            lines.append(line[:-1])

    def _build(self, node: _Node) -> None:
        node.incarnation += 1
        context = NodeContext(
            address=node.address,
            incarnation=node.incarnation,
            addresses=tuple(self._addresses),
            rng=derive_rng(self.seed, f"node/{node.address}/{node.incarnation}"),
            now_ms=self._now_ms,
            wall_ms=partial(self.wall_ms, node.address),
        )
        node.core = node.factory(context)
        node.check = self._check_of(node.core)
        node.alive = True
        node.paused = False
        node.timer_at = None
        self._log("start", node.address, str(node.incarnation))
        self._after_core(node, self._now_ms, "start")

    def _check_of(self, core: Any) -> Callable[[], Any] | None:
        if not self._check_invariants or core is None:
            return None
        return getattr(core, "check_invariants", None)

    def _after_core(self, node: _Node, earliest_timer_ms: int, step: str) -> None:
        """Check the core's invariants (when on), then send its outbox and arm its next timer
        (never before ``earliest_timer_ms``). ``step`` names the call, for reports."""
        core = node.core
        check = node.check
        if check is not None:
            try:
                check()
            except Exception as error:
                raise CoreInvariantError(
                    node.address, node.incarnation, step, self._now_ms, error
                ) from error
            self._invariant_checks += 1
        outbox = core.take_outbox()
        if outbox:
            send = self._send
            address = node.address
            for outgoing in outbox:
                send(address, outgoing)
        deadline = core.next_deadline_ms()
        if deadline is not None:
            if deadline < earliest_timer_ms:
                deadline = earliest_timer_ms
            armed = node.timer_at
            if armed is None or deadline < armed:
                node.timer_at = deadline
                self._seq += 1
                heapq.heappush(self._heap, (deadline, self._seq, _TIMER, node, node.incarnation))

    def _tick_if_due(self, node: _Node) -> None:
        core = node.core
        now = self._now_ms
        deadline = core.next_deadline_ms()
        if deadline is not None and deadline <= now:
            self._log("tick", node.address, "")
            core.tick(now)
        # A core whose deadline is still <= now after tick would spin at one instant forever.
        self._after_core(node, now + 1, "tick")

    def _resume(self, node: _Node) -> None:
        if not node.paused or not node.alive:
            return
        node.paused = False
        inbox = node.inbox or ()
        node.inbox = None
        self._log("resume", node.address, str(len(inbox)))
        core = node.core
        now = self._now_ms
        for source, channel, payload in inbox:
            if channel is None:
                core.stream_failed(source, now)
            else:
                core.handle(source, channel, payload, now)
            self._after_core(node, now, "resume")
        self._tick_if_due(node)

    # ------------------------------------------------------------------ internals: network

    def _delay_ms(self) -> int:
        network = self._network
        rng = self._network_rng
        delay = network.delay_min_ms
        if network.delay_exp_mean_ms:
            delay += int(rng.expovariate(1.0 / network.delay_exp_mean_ms))
        if network.spike_rate and rng.random() < network.spike_rate:
            delay += rng.randint(0, network.spike_delay_ms_max)
            self._coverage["delay_spike"] += 1
        return delay

    def _send(self, src: str, outgoing: Outgoing) -> None:
        dst, channel, payload = outgoing
        dst_node = self._nodes.get(dst)
        if dst_node is None:
            self._coverage["unknown_destination"] += 1
            self._log("drop_unknown", src, dst)
            if channel is _STREAM:
                self._refuse_stream(src, dst)
            return
        if channel is _DATAGRAM:
            self._send_datagram(src, dst_node, payload)
        else:
            self._send_stream(src, dst_node, payload)

    def _send_datagram(self, src: str, dst_node: _Node, payload: bytes) -> None:
        pair = (src, dst_node.address)
        if pair in self._blocked:
            self._coverage["partition_drop"] += 1
            self._log("drop_partition", src, dst_node.address)
            return
        extra_ms = self._clogs.get(pair, 0) if self._clogs else 0
        if extra_ms == _CLOG_DROP:
            self._coverage["clog_dropped"] += 1
            self._log("drop_clog", src, dst_node.address)
            return
        network = self._network
        rng = self._network_rng
        if network.datagram_loss_rate and rng.random() < network.datagram_loss_rate:
            self._coverage["datagram_lost"] += 1
            self._log("drop_loss", src, dst_node.address)
            return
        copies = 1
        if network.datagram_duplicate_rate and rng.random() < network.datagram_duplicate_rate:
            copies = 2
            self._coverage["datagram_duplicated"] += 1
        # The send tag orders sends on this pair; both copies of a duplicate share it.
        tag = self._seq + 1
        now = self._now_ms
        heap = self._heap
        for _ in range(copies):
            self._seq += 1
            heapq.heappush(
                heap,
                (
                    now + self._delay_ms() + extra_ms,
                    self._seq,
                    _DELIVER,
                    dst_node,
                    src,
                    _DATAGRAM,
                    payload,
                    tag,
                ),
            )

    def _send_stream(self, src: str, dst_node: _Node, payload: bytes) -> None:
        dst = dst_node.address
        key = (src, dst) if src < dst else (dst, src)
        connection_id = self._connections.get(key)
        forward = self._clogs.get((src, dst), 0) if self._clogs else 0
        reachable = (
            dst_node.alive
            and (src, dst) not in self._blocked
            and (dst, src) not in self._blocked
            and forward != _CLOG_DROP
            and (not self._clogs or self._clogs.get((dst, src), 0) != _CLOG_DROP)
        )
        if not reachable:
            if connection_id is not None:
                self._break_stream(src, dst)
            else:
                self._refuse_stream(src, dst)
            return
        if connection_id is None:
            connection_id = self._next_connection_id
            self._next_connection_id += 1
            self._connections[key] = connection_id
        at_ms = self._now_ms + self._delay_ms() + forward
        # In order per direction: never before the previous payload on this connection.
        last_ms = self._stream_last_ms.get((src, dst), 0)
        if at_ms < last_ms:
            at_ms = last_ms
        self._stream_last_ms[(src, dst)] = at_ms
        self._seq += 1
        heapq.heappush(
            self._heap,
            (at_ms, self._seq, _DELIVER, dst_node, src, _STREAM, payload, connection_id),
        )

    def _refuse_stream(self, src: str, dst: str) -> None:
        """A stream send to an unreachable peer: the sender learns after a connect timeout."""
        node = self._nodes[src]
        self._coverage["stream_refused"] += 1
        self._log("stream_refused", src, dst)
        at_ms = self._now_ms + self._network.stream_connect_fail_ms
        self._push((at_ms, self._next_seq(), _STREAM_FAILED, node, dst, node.incarnation))

    def _break_stream(self, a: str, b: str) -> None:
        """Break the connection between ``a`` and ``b`` if there is one; tell both live ends."""
        key = (a, b) if a < b else (b, a)
        if self._connections.pop(key, None) is None:
            return
        self._stream_last_ms.pop((a, b), None)
        self._stream_last_ms.pop((b, a), None)
        self._coverage["stream_break"] += 1
        self._log("stream_break", key[0], key[1])
        for end, peer in ((key[0], key[1]), (key[1], key[0])):
            node = self._nodes[end]
            if node.alive:
                self._push(
                    (self._now_ms, self._next_seq(), _STREAM_FAILED, node, peer, node.incarnation)
                )

    def _stream_failed_event(self, event: tuple) -> None:
        node = event[3]
        peer = event[4]
        if not node.alive or node.incarnation != event[5]:
            return
        if node.paused:
            # Failure notices bypass the inbox bound: at most one per peer per break.
            node.inbox.append((peer, None, b""))
            return
        self._log("stream_failed", node.address, peer)
        node.core.stream_failed(peer, self._now_ms)
        self._after_core(node, self._now_ms, "stream_failed")

    def _deliver(self, event: tuple) -> None:
        node = event[3]
        src = event[4]
        channel = event[5]
        payload = event[6]
        dst = node.address
        if channel is _DATAGRAM:
            if not node.alive:
                self._coverage["datagram_to_down_node"] += 1
                self._log("drop_down", src, dst)
                return
            pair = (src, dst)
            if pair in self._blocked:
                self._coverage["partition_drop"] += 1
                self._log("drop_partition", src, dst)
                return
            tag = event[7]
            if tag < self._datagram_last_tag.get(pair, 0):
                self._coverage["datagram_reordered"] += 1
            else:
                self._datagram_last_tag[pair] = tag
        else:
            key = (src, dst) if src < dst else (dst, src)
            if self._connections.get(key) != event[7]:
                self._coverage["stream_payload_lost"] += 1
                self._log("drop_stream", src, dst)
                return
        if node.paused:
            inbox = node.inbox
            if len(inbox) >= self._network.inbox_messages_max:
                self._coverage["inbox_overflow"] += 1
                self._log("drop_inbox", src, dst)
                if channel is _STREAM:
                    self._break_stream(src, dst)
                return
            inbox.append((src, channel, payload))
            return
        self._log("deliver", src, dst, payload)
        node.core.handle(src, channel, payload, self._now_ms)
        self._after_core(node, self._now_ms, "deliver")
