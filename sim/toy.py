"""Small sans-IO cores that exercise the simulator without the real protocols.

- ``RumorCore``: naive gossip. Every incarnation of a node creates one rumor
  (``"address#incarnation"``); nodes push random samples of the rumors they know by datagram and
  their whole set by stream. Used by the ``toy-*`` scenarios and the toy bench.
- ``ScriptedCore``: sends payloads at scripted times, optionally ticks periodically and echoes
  pings, and records everything it sees. Used by the simulator's tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from gossipcache.sansio import Channel, Outgoing

from .simulation import NodeContext

#: Gossip rounds: a datagram with a random sample every GOSSIP_INTERVAL_MS, a full push by stream
#: every SYNC_INTERVAL_MS.
GOSSIP_INTERVAL_MS = 200
SYNC_INTERVAL_MS = 2_000
#: Rumors per gossip datagram.
GOSSIP_SAMPLE_MAX = 8
#: Rumors one node keeps; more are dropped and counted (the toy never needs that many).
RUMORS_MAX = 10_000
#: Largest payload the toy accepts; bigger ones are malformed.
PAYLOAD_BYTES_MAX = 1 << 20

_GOSSIP = b"G"
_SYNC = b"S"


def rumor_name(address: str, incarnation: int) -> str:
    """The rumor a node's incarnation starts with."""
    return f"{address}#{incarnation}"


class RumorCore:
    """Naive push gossip of a grow-only set of rumors, with a stream-order self-check.

    Stream pushes carry ``(incarnation, sequence)``; on a connection that has not broken
    (no ``stream_failed`` from that peer since its last push), each push must carry the next
    sequence number, else ``stream_order_violations`` grows. That checks the simulator's
    stream guarantee from the outside.
    """

    def __init__(
        self,
        address: str,
        incarnation: int,
        peers: Iterable[str],
        rng: random.Random,
        now_ms: int,
        *,
        gossip_interval_ms: int = GOSSIP_INTERVAL_MS,
        sync_interval_ms: int = SYNC_INTERVAL_MS,
    ) -> None:
        self.address = address
        self.incarnation = incarnation
        self._peers = sorted(peer for peer in peers if peer != address)
        self._rng = rng
        self._gossip_interval_ms = gossip_interval_ms
        self._sync_interval_ms = sync_interval_ms
        self._rumor_list: list[str] = []
        self._rumor_set: set[str] = set()
        self._outbox: list[Outgoing] = []
        # Spread the first rounds so that nodes started together do not tick in lockstep.
        self._next_gossip_ms = now_ms + rng.randrange(gossip_interval_ms)
        self._next_sync_ms = now_ms + rng.randrange(sync_interval_ms)
        self._stream_sequence_out: dict[str, int] = {}
        # peer -> (incarnation, sequence) of its last push, or None after stream_failed.
        self._stream_last_in: dict[str, tuple[int, int] | None] = {}
        self.malformed = 0
        self.rumors_dropped = 0
        self.stream_order_violations = 0
        self.stream_failures = 0
        self._learn(rumor_name(address, incarnation))

    @classmethod
    def from_context(cls, context: NodeContext) -> RumorCore:
        """A factory for ``Simulation.add_node``."""
        return cls(
            context.address, context.incarnation, context.addresses, context.rng, context.now_ms
        )

    @property
    def rumors(self) -> frozenset[str]:
        """The rumors this node knows."""
        return frozenset(self._rumor_set)

    # -------------------------------------------------------------- SansIOCore

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """Merge the rumors in a gossip or sync payload; count what does not parse."""
        if len(payload) > PAYLOAD_BYTES_MAX or not payload:
            self.malformed += 1
            return
        kind = payload[:1]
        try:
            text = payload[1:].decode()
        except UnicodeDecodeError:
            self.malformed += 1
            return
        if kind == _GOSSIP and channel is Channel.DATAGRAM:
            rumors = text.split("\n") if text else []
        elif kind == _SYNC and channel is Channel.STREAM:
            header, _, body = text.partition("\n")
            try:
                incarnation_text, sequence_text = header.split(" ")
                stamp = (int(incarnation_text), int(sequence_text))
            except ValueError:
                self.malformed += 1
                return
            self._check_stream_order(source, stamp)
            rumors = body.split("\n") if body else []
        else:
            self.malformed += 1
            return
        for rumor in rumors:
            if "#" not in rumor:
                self.malformed += 1
                return
            self._learn(rumor)

    def stream_failed(self, peer: str, now_ms: int) -> None:
        """Forget the peer's stream position: the next push may skip sequence numbers."""
        self.stream_failures += 1
        self._stream_last_in[peer] = None

    def tick(self, now_ms: int) -> None:
        """Run the gossip and sync rounds that are due."""
        if not self._peers:
            return
        if now_ms >= self._next_gossip_ms:
            self._next_gossip_ms = now_ms + self._gossip_interval_ms
            sample = self._rng.sample(
                self._rumor_list, min(GOSSIP_SAMPLE_MAX, len(self._rumor_list))
            )
            peer = self._rng.choice(self._peers)
            payload = _GOSSIP + "\n".join(sample).encode()
            self._outbox.append(Outgoing(peer, Channel.DATAGRAM, payload))
        if now_ms >= self._next_sync_ms:
            self._next_sync_ms = now_ms + self._sync_interval_ms
            peer = self._rng.choice(self._peers)
            sequence = self._stream_sequence_out.get(peer, 0) + 1
            self._stream_sequence_out[peer] = sequence
            header = f"{self.incarnation} {sequence}\n"
            payload = _SYNC + (header + "\n".join(self._rumor_list)).encode()
            self._outbox.append(Outgoing(peer, Channel.STREAM, payload))

    def next_deadline_ms(self) -> int | None:
        """The earlier of the next gossip and sync rounds."""
        if not self._peers:
            return None
        return min(self._next_gossip_ms, self._next_sync_ms)

    def take_outbox(self) -> list[Outgoing]:
        """Return and clear the pending payloads."""
        outbox = self._outbox
        self._outbox = []
        return outbox

    # -------------------------------------------------------------- internals

    def _learn(self, rumor: str) -> None:
        if rumor in self._rumor_set:
            return
        if len(self._rumor_list) >= RUMORS_MAX:
            self.rumors_dropped += 1
            return
        self._rumor_set.add(rumor)
        self._rumor_list.append(rumor)

    def _check_stream_order(self, source: str, stamp: tuple[int, int]) -> None:
        previous = self._stream_last_in.get(source)
        self._stream_last_in[source] = stamp
        if previous is None or previous[0] != stamp[0]:
            return  # first push, after a break, or from a new incarnation
        if stamp[1] != previous[1] + 1:
            self.stream_order_violations += 1


class ScriptedCore:
    """A test core: sends scripted payloads, ticks on a period, echoes, records everything.

    - ``script``: ``(at_ms, destination, channel, payload)`` sends, in any order.
    - ``tick_every_ms``: also tick on this period (records ``tick_times_ms`` and wall clock).
    - ``echo``: answer a datagram starting with ``b"ping"`` with ``b"echo"`` + the rest.
    """

    def __init__(
        self,
        context: NodeContext,
        script: Iterable[tuple[int, str, Channel, bytes]] = (),
        *,
        tick_every_ms: int | None = None,
        echo: bool = False,
    ) -> None:
        self.context = context
        self._script = sorted(script, key=lambda step: step[0])
        self._tick_every_ms = tick_every_ms
        self._next_periodic_ms = context.now_ms + tick_every_ms if tick_every_ms else None
        self._echo = echo
        self._outbox: list[Outgoing] = []
        self.received: list[tuple[int, str, Channel, bytes]] = []
        self.failures: list[tuple[int, str]] = []
        self.tick_times_ms: list[int] = []
        self.wall_times_ms: list[int] = []

    def send_at(self, at_ms: int, destination: str, channel: Channel, payload: bytes) -> None:
        """Add a send to the script (takes effect when the simulator next asks the deadline)."""
        self._script.append((at_ms, destination, channel, payload))
        self._script.sort(key=lambda step: step[0])

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """Record the payload; echo pings."""
        self.received.append((now_ms, source, channel, payload))
        if self._echo and channel is Channel.DATAGRAM and payload.startswith(b"ping"):
            self._outbox.append(Outgoing(source, Channel.DATAGRAM, b"echo" + payload[4:]))

    def stream_failed(self, peer: str, now_ms: int) -> None:
        """Record the failure."""
        self.failures.append((now_ms, peer))

    def tick(self, now_ms: int) -> None:
        """Send what is due; record periodic ticks."""
        while self._script and self._script[0][0] <= now_ms:
            _, destination, channel, payload = self._script.pop(0)
            self._outbox.append(Outgoing(destination, channel, payload))
        if self._next_periodic_ms is not None and now_ms >= self._next_periodic_ms:
            self.tick_times_ms.append(now_ms)
            self.wall_times_ms.append(self.context.wall_ms())
            self._next_periodic_ms = now_ms + self._tick_every_ms

    def next_deadline_ms(self) -> int | None:
        """The next scripted send or periodic tick."""
        deadlines = [self._script[0][0]] if self._script else []
        if self._next_periodic_ms is not None:
            deadlines.append(self._next_periodic_ms)
        return min(deadlines) if deadlines else None

    def take_outbox(self) -> list[Outgoing]:
        """Return and clear the pending payloads."""
        outbox = self._outbox
        self._outbox = []
        return outbox


#: Probe period of ``PingCore`` (SWIM's default protocol period is one second).
PING_INTERVAL_MS = 1_000


class PingCore:
    """The cheapest useful core: pings a random peer every PING_INTERVAL_MS by datagram and
    answers pings, like SWIM's probe without the state. Measures the loop's own cost."""

    def __init__(self, context: NodeContext, interval_ms: int = PING_INTERVAL_MS) -> None:
        self._peers = [peer for peer in context.addresses if peer != context.address]
        self._rng = context.rng
        self._interval_ms = interval_ms
        self._next_ping_ms = context.now_ms + context.rng.randrange(interval_ms)
        self._outbox: list[Outgoing] = []
        self.pings_answered = 0
        self.acks_received = 0

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """Answer a ping with an ack; count acks."""
        if payload == b"ping":
            self.pings_answered += 1
            self._outbox.append(Outgoing(source, Channel.DATAGRAM, b"ack"))
        elif payload == b"ack":
            self.acks_received += 1

    def stream_failed(self, peer: str, now_ms: int) -> None:
        """Streams are unused."""

    def tick(self, now_ms: int) -> None:
        """Ping one random peer when the period is over."""
        if now_ms >= self._next_ping_ms and self._peers:
            self._next_ping_ms = now_ms + self._interval_ms
            peer = self._peers[self._rng.randrange(len(self._peers))]
            self._outbox.append(Outgoing(peer, Channel.DATAGRAM, b"ping"))

    def next_deadline_ms(self) -> int | None:
        """The next probe."""
        return self._next_ping_ms if self._peers else None

    def take_outbox(self) -> list[Outgoing]:
        """Return and clear the pending payloads."""
        outbox = self._outbox
        self._outbox = []
        return outbox
