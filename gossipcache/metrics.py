"""Node metrics: counters, gauges and a latency histogram per command, in Prometheus text format.

Everything here is O(1) to update and independent of the keyspace to read: gauges come from the
store's running counters (``Store.stats()``), histograms have a fixed number of buckets. Rendering
a scrape costs the same with ten keys or ten million, so scraping never pauses the data path for
longer than it takes to format a few kilobytes.
"""

from __future__ import annotations

from .histogram import Histogram, bucket_highest, bucket_index

#: Prometheus ``le`` bounds for command latency, in seconds: 1 us to 1 s, about 3 per decade.
LATENCY_BOUNDS_S = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# The same bounds snapped to bucket edges, so ``le`` counts are exact for the histogram.
_LATENCY_BOUNDS_NS = tuple(bucket_highest(bucket_index(round(b * 1e9))) for b in LATENCY_BOUNDS_S)


class CommandMetrics:
    """Calls, errors and service time (ns) of one command."""

    __slots__ = ("name", "latency_ns", "errors")

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency_ns = Histogram()
        self.errors = 0


class ServerMetrics:
    """Counters of the node's network surfaces. Mutated in place by the drivers."""

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.connections_open = 0
        self.connections_refused = 0
        self.protocol_errors = 0
        self.internal_errors = 0
        self.batches = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.metrics_scrapes = 0
        self.commands: dict[str, CommandMetrics] = {}

    def command(self, name: str) -> CommandMetrics:
        """The metrics object of ``name``, created on first use (one per command name)."""
        metrics = self.commands.get(name)
        if metrics is None:
            metrics = self.commands[name] = CommandMetrics(name)
        return metrics


def _line(out: list[str], name: str, value: float | int, labels: str = "") -> None:
    out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def render_prometheus(node) -> str:
    """The node's metrics in Prometheus text exposition format (version 0.0.4)."""
    stats = node.store.stats()
    server = node.metrics
    out: list[str] = []
    counters = (
        ("gossipcache_hits_total", "Lookups that found a live entry.", stats.hits),
        ("gossipcache_misses_total", "Lookups that found nothing live.", stats.misses),
        ("gossipcache_evictions_total", "Entries evicted to honour the limit.", stats.evictions),
        ("gossipcache_expirations_total", "Entries removed at expiry.", stats.expirations),
        ("gossipcache_connections_accepted_total", "Client connections accepted.",
         server.connections_accepted),
        ("gossipcache_connections_refused_total", "Connections closed at once: over the cap.",
         server.connections_refused),
        ("gossipcache_protocol_errors_total", "Connections closed for malformed input.",
         server.protocol_errors),
        ("gossipcache_internal_errors_total", "Requests that failed on a server bug.",
         server.internal_errors),
        ("gossipcache_batches_total", "Read batches processed (one write each).", server.batches),
        ("gossipcache_received_bytes_total", "Bytes read from clients.", server.bytes_received),
        ("gossipcache_sent_bytes_total", "Bytes written to clients.", server.bytes_sent),
    )  # fmt: skip
    for name, help_text, value in counters:
        _header(out, name, "counter", help_text)
        _line(out, name, value)
    gauges = (
        ("gossipcache_keys", "Entries held (expired ones not yet collected included).",
         stats.keys),
        ("gossipcache_used_bytes", "Accounted bytes: key + value + per-entry overhead.",
         stats.used_bytes),
        ("gossipcache_max_bytes", "The memory limit.", stats.size_bytes_max),
        ("gossipcache_hit_ratio", "Hits over lookups since start.", round(stats.hit_ratio, 6)),
        ("gossipcache_connections_open", "Client connections open now.", server.connections_open),
    )  # fmt: skip
    for name, help_text, value in gauges:
        _header(out, name, "gauge", help_text)
        _line(out, name, value)
    name = "gossipcache_command_errors_total"
    _header(out, name, "counter", "Commands answered with an error, by command.")
    for command in sorted(server.commands):
        _line(out, name, server.commands[command].errors, f'command="{command}"')
    name = "gossipcache_command_duration_seconds"
    _header(out, name, "histogram", "Time to serve one command inside the node, by command.")
    for command in sorted(server.commands):
        histogram = server.commands[command].latency_ns
        cumulative = histogram.cumulative_counts(_LATENCY_BOUNDS_NS)
        for bound_s, count in zip(LATENCY_BOUNDS_S, cumulative):
            _line(out, f"{name}_bucket", count, f'command="{command}",le="{bound_s}"')
        _line(out, f"{name}_bucket", histogram.count, f'command="{command}",le="+Inf"')
        _line(out, f"{name}_sum", histogram.total / 1e9, f'command="{command}"')
        _line(out, f"{name}_count", histogram.count, f'command="{command}"')
    out.append("")
    return "\n".join(out)
