"""Node metrics: counters, gauges and a latency histogram per command, in Prometheus text format.

Everything here is O(1) to update and independent of the keyspace to read: gauges come from the
store's running counters (``Store.stats()``), histograms have a fixed number of bins. Rendering
a scrape costs the same with ten keys or ten million, so scraping never pauses the data path for
longer than it takes to format a few kilobytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

from .histogram import Histogram, bin_highest, bin_index

#: Prometheus ``le`` bounds for command latency, in seconds: 1 us to 1 s, about 3 per decade.
LATENCY_BOUNDS_S = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# The same bounds snapped to bin edges, so ``le`` counts are exact for the histogram.
_LATENCY_BOUNDS_NS = tuple(bin_highest(bin_index(round(b * 1e9))) for b in LATENCY_BOUNDS_S)


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
        #: Commands refused because the node's bound on pending commands was reached.
        self.pending_refused = 0
        #: Accepts that failed for want of descriptors (each pauses accepting for a back-off).
        self.accept_failures = 0
        #: Clients closed because all clients together held more than their byte budget.
        self.clients_closed_over_budget = 0
        #: Clients closed for sending nothing for too long in the middle of a request.
        self.clients_closed_partial_timeout = 0
        #: Bytes held for clients now: partial requests and replies not yet written.
        self.client_buffers_bytes = 0
        #: Metrics-port connections closed at once: over the cap.
        self.metrics_connections_refused = 0
        #: Client authentications refused (a wrong password or user name).
        self.auth_failures = 0
        self.commands: dict[str, CommandMetrics] = {}

    def command(self, name: str) -> CommandMetrics:
        """The metrics object of ``name``, created on first use (one per command name)."""
        metrics = self.commands.get(name)
        if metrics is None:
            metrics = self.commands[name] = CommandMetrics(name)
        return metrics


def record_batch(histograms: list[Histogram], elapsed_ns: int) -> None:
    """Record one read batch's service time: every command in it gets the batch's mean, with one
    ``record_n`` per run of consecutive commands sharing a histogram.

    The clock is read once per batch rather than twice per command: two reads cost about a tenth
    of serving a GET. For the usual pipeline of alike commands the mean is exact on average; a
    batch mixing cheap and costly commands smears them.
    """
    if histograms:
        mean_ns = elapsed_ns // len(histograms)
        for histogram, run in groupby(histograms):
            histogram.record_n(mean_ns, len(list(run)))


def _line(out: list[str], name: str, value: float | int, labels: str = "") -> None:
    out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _unlabelled(out: list[str], kind: str, rows: tuple[tuple[str, str, float | int], ...]) -> None:
    for name, help_text, value in rows:
        _header(out, name, kind, help_text)
        _line(out, name, value)


def _labelled(
    out: list[str], name: str, kind: str, help_text: str, label: str, values: dict[str, int]
) -> None:
    _header(out, name, kind, help_text)
    for key in sorted(values):
        _line(out, name, values[key], f'{label}="{key}"')


def render_prometheus(node) -> str:
    """The node's metrics in Prometheus text exposition format (version 0.0.4)."""
    return "".join(iter_prometheus(node))


def iter_prometheus(node) -> Iterator[str]:
    """``render_prometheus`` in pieces of at most one metric family or one command's histogram
    (tens of microseconds each), so the HTTP handler can yield to the data path between pieces
    and a scrape never holds the loop for the whole render. Values are read piece by piece, so a
    scrape is not one atomic snapshot (Prometheus scrapes never are)."""
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
        ("gossipcache_pending_refused_total", "Commands refused: too many waiting on the node.",
         server.pending_refused),
        ("gossipcache_accept_failures_total", "Accepts failed for want of file descriptors.",
         server.accept_failures),
        ("gossipcache_clients_closed_over_budget_total",
         "Clients closed: all clients' buffers over their byte budget.",
         server.clients_closed_over_budget),
        ("gossipcache_clients_closed_partial_timeout_total",
         "Clients closed: silent in the middle of a request.",
         server.clients_closed_partial_timeout),
        ("gossipcache_auth_failures_total", "Client authentications refused.",
         server.auth_failures),
        ("gossipcache_metrics_connections_refused_total",
         "Metrics connections closed at once: over the cap.",
         server.metrics_connections_refused),
    )  # fmt: skip
    _unlabelled(out, "counter", counters)
    gauges = (
        ("gossipcache_keys", "Entries held (expired ones not yet collected included).",
         stats.keys),
        ("gossipcache_used_bytes", "Accounted bytes: key + value + per-entry overhead.",
         stats.used_bytes),
        ("gossipcache_max_bytes", "The memory limit.", stats.size_bytes_max),
        ("gossipcache_hit_ratio", "Hits over lookups since start.", round(stats.hit_ratio, 6)),
        ("gossipcache_connections_open", "Client connections open now.", server.connections_open),
        ("gossipcache_client_buffers_bytes",
         "Bytes held for clients: partial requests and unwritten replies.",
         server.client_buffers_bytes),
    )  # fmt: skip
    _unlabelled(out, "gauge", gauges)
    yield _flush(out)
    name = "gossipcache_command_errors_total"
    _header(out, name, "counter", "Commands answered with an error, by command.")
    for command in sorted(server.commands):
        _line(out, name, server.commands[command].errors, f'command="{command}"')
    yield _flush(out)
    name = "gossipcache_command_duration_seconds"
    _header(out, name, "histogram", "Time to serve one command inside the node, by command.")
    for command in sorted(server.commands):
        histogram = server.commands[command].latency_ns
        if not histogram.count:
            continue  # never called: nothing to say, and a scrape stays cheap (~20 lines each)
        cumulative = histogram.cumulative_counts(_LATENCY_BOUNDS_NS)
        for bound_s, count in zip(LATENCY_BOUNDS_S, cumulative):
            _line(out, f"{name}_bucket", count, f'command="{command}",le="{bound_s}"')
        _line(out, f"{name}_bucket", histogram.count, f'command="{command}",le="+Inf"')
        _line(out, f"{name}_sum", histogram.total / 1e9, f'command="{command}"')
        _line(out, f"{name}_count", histogram.count, f'command="{command}"')
        yield _flush(out)
    membership = getattr(node, "membership", None)
    if membership is not None:
        _render_membership(out, membership, node.membership_transport_stats)
    yield _flush(out)
    if getattr(node, "replication", None) is not None:
        _render_replication(out, node)
        yield _flush(out)


#: Replication counters exported as ``gossipcache_replication_<name>_total``, with their help.
_REPLICATION_COUNTERS = {
    "reads_coordinated": "Reads this node coordinated for clients.",
    "writes_coordinated": "Writes this node coordinated for clients.",
    "reads_served": "Reads served to a coordinator as a replica.",
    "writes_served": "Writes received from a coordinator as a replica (hints and repairs too).",
    "writes_stale": "Replica writes not applied: a version at least as new was held.",
    "writes_refused_clock": "Replica writes refused: stamped too far ahead of this clock.",
    "writes_refused_other": "Writes refused by the store (sizes, memory).",
    "replica_timeouts": "Owners that did not answer a coordinator in time.",
    "replica_failures": "Owners whose connection broke with a request outstanding.",
    "read_repairs": "Owners a read repaired.",
    "read_repair_failures": "Reads failed because their repair was not acknowledged in time.",
    "restamps": "Writes restamped above a newer version an owner held.",
    "level_failures": "Operations that could not reach their consistency level.",
    "evict_notices_sent": "Eviction notices sent as a key's primary.",
    "evict_notices_applied": "Eviction notices that removed a replica's copy.",
    "bad_messages": "Replication payloads dropped as malformed.",
    "unexpected_replies": "Replies matching no request in flight (late or duplicated).",
    "hints_sent": "Hints sent to their owners.",
}


def _render_replication(out: list[str], node) -> None:
    replication = node.replication
    stats = replication.stats
    for name, help_text in _REPLICATION_COUNTERS.items():
        metric = f"gossipcache_replication_{name}_total"
        _header(out, metric, "counter", help_text)
        _line(out, metric, getattr(stats, name))
    hints = replication.hints
    _unlabelled(
        out,
        "counter",
        (
            ("gossipcache_hints_added_total", "Hints taken for owners that missed a write.",
             hints.added),
            ("gossipcache_hints_delivered_total", "Hints their owner acknowledged.",
             hints.delivered),
            ("gossipcache_hints_dropped_total", "Hints dropped: over a bound (full).",
             hints.dropped_full),
            ("gossipcache_hints_expired_total", "Hints dropped: older than the hint window.",
             hints.dropped_expired),
            ("gossipcache_stale_versions_refused_total",
             "Versions refused as too far ahead of this node's clock.",
             replication.clock.refused_total),
            ("gossipcache_forwarded_total", "Requests for keys this node does not own.",
             node.coordinator.forwarded),
        ),
    )  # fmt: skip
    _unlabelled(
        out,
        "gauge",
        (
            ("gossipcache_hints_held", "Hints held now.", hints.held),
            ("gossipcache_hints_bytes", "Bytes of hints held now.", hints.bytes_held),
            ("gossipcache_replication_in_flight", "Replica requests in flight now.",
             replication.ops_in_flight),
        ),
    )  # fmt: skip
    by_level = node.coordinator.by_level
    for kind, help_text in (
        ("reads", "Reads coordinated, by consistency level."),
        ("writes", "Writes coordinated, by consistency level."),
        ("failures", "Operations that missed their consistency level, by level."),
    ):
        _labelled(
            out, f"gossipcache_{kind}_by_level_total", "counter", help_text, "level",
            {level: getattr(counters, kind) for level, counters in by_level.items()},
        )  # fmt: skip


def _flush(out: list[str]) -> str:
    """The lines gathered so far as text (newline-terminated), and an empty list again."""
    text = "\n".join(out) + "\n" if out else ""
    out.clear()
    return text


#: Member states, always rendered (zero included) so dashboards see every series.
_MEMBER_STATES = ("alive", "suspect", "dead", "left")


def _render_membership(out: list[str], membership, transport_stats: dict[str, int]) -> None:
    """Membership gauges and counters: O(members) to read, never the keyspace."""
    by_state = dict.fromkeys(_MEMBER_STATES, 0)
    for member in membership.members():
        by_state[str(member.state)] += 1
    _labelled(
        out,
        "gossipcache_members",
        "gauge",
        "Member records this node holds, by state (itself included).",
        "state",
        by_state,
    )
    stats = membership.stats()
    gauges = (  # O(1): running counters of the core
        ("gossipcache_membership_local_health", "Lifeguard local health score (0 = healthy).",
         stats["local_health"]),
        ("gossipcache_membership_incarnation", "This node's incarnation number.",
         membership.incarnation),
        ("gossipcache_membership_broadcast_queue", "Membership updates waiting to be gossiped.",
         stats["broadcast_queue"]),
    )  # fmt: skip
    _unlabelled(out, "gauge", gauges)
    drops = {k[5:]: v for k, v in stats.items() if k.startswith("drop_")}
    counters = {
        k: v for k, v in stats.items() if not k.startswith("drop_") and k not in _MEMBERSHIP_GAUGES
    }
    _labelled(
        out,
        "gossipcache_membership_dropped_total",
        "counter",
        "Membership input dropped by the core, by reason.",
        "reason",
        drops,
    )
    _labelled(
        out,
        "gossipcache_membership_messages_total",
        "counter",
        "Membership core counters (probes, suspicions, ...), by name.",
        "name",
        counters,
    )
    _labelled(
        out,
        "gossipcache_membership_transport_total",
        "counter",
        "Membership driver counters (sockets, peer streams), by name.",
        "name",
        transport_stats,
    )


#: ``Membership.stats()`` entries that are gauges, not counters.
_MEMBERSHIP_GAUGES = frozenset(("local_health", "members_live", "members_known", "broadcast_queue"))
