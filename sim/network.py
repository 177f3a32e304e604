"""Parameters of the simulated network.

One-way delay of a payload is ``delay_min_ms + Exp(mean=delay_exp_mean_ms)``, rounded down to
whole milliseconds; with probability ``spike_rate`` a uniform ``0..spike_delay_ms_max`` is added
(a GC pause on a router, a retransmission). Datagrams draw their delays independently, which is
what reorders them. Streams draw a delay too but a payload never overtakes the previous one on
the same connection (TCP's in-order delivery).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: A clogged link in "delay" mode adds this much to every payload by default.
CLOG_DELAY_MS_DEFAULT = 5_000


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How the simulated network treats payloads; immutable, swap it with ``Simulation.set_network``.

    - ``delay_min_ms``: the floor of every one-way delay (propagation).
    - ``delay_exp_mean_ms``: mean of the exponential part of the delay (queueing).
    - ``spike_rate`` / ``spike_delay_ms_max``: probability of a delay spike and its largest size.
    - ``datagram_loss_rate``: probability a datagram is dropped.
    - ``datagram_duplicate_rate``: probability a datagram is delivered twice (independent delays).
    - ``inbox_messages_max``: payloads a paused node can queue; datagrams beyond are dropped and
      counted, a stream payload beyond breaks its connection (TCP would stall, then time out).
    - ``stream_connect_fail_ms``: how long a stream send to an unreachable or dead peer takes to
      report ``stream_failed`` to the sender (connect timeout / reset).
    """

    delay_min_ms: int = 1
    delay_exp_mean_ms: float = 2.0
    spike_rate: float = 0.0
    spike_delay_ms_max: int = 500
    datagram_loss_rate: float = 0.0
    datagram_duplicate_rate: float = 0.0
    inbox_messages_max: int = 1024
    stream_connect_fail_ms: int = 100

    def __post_init__(self) -> None:
        if self.delay_min_ms < 0 or self.delay_exp_mean_ms < 0 or self.spike_delay_ms_max < 0:
            raise ValueError("delays must be non-negative")
        for name in ("spike_rate", "datagram_loss_rate", "datagram_duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.inbox_messages_max < 1:
            raise ValueError("inbox_messages_max must be at least 1")
        if self.stream_connect_fail_ms < 0:
            raise ValueError("stream_connect_fail_ms must be non-negative")

    def calm(self) -> NetworkConfig:
        """The same delays without loss, duplication or spikes: the liveness phase's network."""
        return replace(self, spike_rate=0.0, datagram_loss_rate=0.0, datagram_duplicate_rate=0.0)
