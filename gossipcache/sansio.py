"""The contract between sans-IO protocol cores and whatever drives them.

A core (membership, replication, anti-entropy) is a state machine. It never reads a clock, never
draws global randomness and never touches a socket: the driver -- the Trio node in
``gossipcache.net`` or the simulator in ``sim`` -- hands it bytes and the current time, calls
``tick`` when the core's deadline passes, and sends whatever the core put in its outbox.

Time is ``now_ms``: integer milliseconds of a *monotonic* clock (virtual in the simulator). A core
that needs randomness takes a ``random.Random`` in its constructor.

Addresses are ``"host:port"`` strings: hashable, printable and the same in the simulator and on
the wire.

Channels:

- ``DATAGRAM``: one payload per UDP datagram. May be lost, duplicated, delayed or reordered.
- ``STREAM``: payloads between a pair of addresses arrive in order and without loss while the
  connection lasts. A connection can break (partition, crash); then the driver calls
  ``stream_failed(peer, now_ms)`` on the core at each end that had something in flight, and
  payloads not yet delivered are lost.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol


class Channel(enum.Enum):
    DATAGRAM = "datagram"
    STREAM = "stream"


class Outgoing(NamedTuple):
    """One payload the core wants sent."""

    destination: str
    channel: Channel
    payload: bytes


class SansIOCore(Protocol):
    """What a driver needs from a core."""

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """A payload arrived from ``source`` on ``channel``. Never raises for bad bytes: a core
        drops and counts what it cannot decode."""

    def stream_failed(self, peer: str, now_ms: int) -> None:
        """The stream connection to ``peer`` broke; undelivered payloads are lost."""

    def tick(self, now_ms: int) -> None:
        """Run timers that are due at ``now_ms``."""

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` should next run (monotonic ms), or None when no timer is armed."""

    def take_outbox(self) -> list[Outgoing]:
        """Return and clear the payloads to send, in the order they were produced."""
