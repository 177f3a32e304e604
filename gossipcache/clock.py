"""The one way time enters the node: a clock object handed to the node core.

Three readings, each for one purpose:

- ``monotonic_ms()``: protocol timers (membership periods, expiry ticks, request deadlines).
  Never goes backwards; its zero is arbitrary.
- ``wall_ms()``: milliseconds since the Unix epoch. Expiry instants are wall-clock because an
  expiry travels with an entry to other nodes; hybrid logical clocks will read it too. It may
  jump (NTP steps, an operator) and differ between nodes: the simulator models both.
- ``timer_ns()``: a fine monotonic timer for latency histograms only.

``gossipcache.drivers.clock.TrioClock`` reads Trio's clock and the system clocks; the simulator's
clock reads virtual time with a per-node offset, drift and jumps; ``ManualClock`` is set by hand
in tests. Nothing else in the package reads time.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def monotonic_ms(self) -> int:
        """Monotonic milliseconds, for timers."""

    def wall_ms(self) -> int:
        """Wall-clock milliseconds since the Unix epoch, for expiry instants."""

    def timer_ns(self) -> int:
        """A fine monotonic timer in nanoseconds, for latency measurements."""


class ManualClock:
    """A clock that moves only when told to: for tests of sans-IO code.

    ``advance(ms)`` moves all three readings together; ``jump_wall(ms)`` steps only the wall
    clock, as an NTP correction would.
    """

    __slots__ = ("_monotonic_ms", "_wall_ms", "_timer_ns")

    def __init__(self, monotonic_ms: int = 0, wall_ms: int = 1_700_000_000_000) -> None:
        self._monotonic_ms = monotonic_ms
        self._wall_ms = wall_ms
        self._timer_ns = monotonic_ms * 1_000_000

    def monotonic_ms(self) -> int:
        return self._monotonic_ms

    def wall_ms(self) -> int:
        return self._wall_ms

    def timer_ns(self) -> int:
        return self._timer_ns

    def advance(self, duration_ms: int) -> None:
        if duration_ms < 0:
            raise ValueError(f"a monotonic clock cannot go back ({duration_ms} ms)")
        self._monotonic_ms += duration_ms
        self._wall_ms += duration_ms
        self._timer_ns += duration_ms * 1_000_000

    def jump_wall(self, delta_ms: int) -> None:
        self._wall_ms += delta_ms
