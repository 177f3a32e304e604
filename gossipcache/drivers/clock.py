"""The node's clock under Trio (``gossipcache.clock`` describes the three readings)."""

from __future__ import annotations

import time

import trio


class TrioClock:
    """Monotonic time from Trio's clock (virtual under ``trio.testing.MockClock``), wall time
    from the system, latency from ``perf_counter_ns``."""

    __slots__ = ()

    def monotonic_ms(self) -> int:
        return int(trio.current_time() * 1000)

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    timer_ns = staticmethod(time.perf_counter_ns)
