"""File descriptors: raise the process's soft limit at start and share it out among the caps.

Every client connection, incoming and outgoing peer stream and metrics scrape holds one
descriptor. A soft limit of 1,024 is still common, below the default caps together (10,000
clients, 1,024 incoming peer streams, 256 outgoing peer links): left alone, accept fails with
EMFILE long before ``connections_max`` is reached. So at start the soft limit is raised to the
hard limit (no privilege needed), and if the caps still do not fit, each is lowered to its share
and the log says so. Accept failures that happen anyway (descriptors held elsewhere in the
process) pause accepting for a back-off in the reactor.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("gossipcache.descriptors")

#: Descriptors kept for everything that is not a connection: stdio, the listeners, the two epoll
#: sets, the UDP socket, log files, /proc reads, the Python runtime's own.
DESCRIPTORS_RESERVED = 64
#: Scrapes of /metrics served at once; more are closed on accept.
METRICS_CONNECTIONS_MAX = 16
#: A soft limit above this is not raised further (RLIM_INFINITY would be meaningless to share).
SOFT_LIMIT_TARGET_MAX = 1 << 20
#: Fewest client connections a node starts with; below it the limit is a configuration error.
CLIENT_CONNECTIONS_MIN = 16


@dataclass(frozen=True)
class DescriptorPlan:
    """How the descriptors of one process are shared out: each field a cap."""

    soft_limit: int
    connections_max: int
    peer_incoming_max: int
    peer_outgoing_max: int
    metrics_connections_max: int

    @property
    def needed(self) -> int:
        return (
            DESCRIPTORS_RESERVED
            + self.connections_max
            + self.peer_incoming_max
            + self.peer_outgoing_max
            + self.metrics_connections_max
        )


def plan_descriptors(
    soft_limit: int,
    connections_max: int,
    peer_incoming_max: int,
    peer_outgoing_max: int,
    metrics_connections_max: int = METRICS_CONNECTIONS_MAX,
) -> DescriptorPlan:
    """The caps, lowered where needed so that together they fit ``soft_limit``.

    Peers keep up to a quarter (incoming) and an eighth (outgoing) of what is available and
    metrics a few; clients get the rest. ValueError when fewer than
    ``CLIENT_CONNECTIONS_MIN`` client connections would fit."""
    available = soft_limit - DESCRIPTORS_RESERVED
    wanted = DescriptorPlan(
        soft_limit, connections_max, peer_incoming_max, peer_outgoing_max, metrics_connections_max
    )
    if wanted.needed <= soft_limit:
        return wanted
    metrics = min(metrics_connections_max, max(1, available // 64))
    incoming = min(peer_incoming_max, available // 4)
    outgoing = min(peer_outgoing_max, available // 8)
    clients = min(connections_max, available - metrics - incoming - outgoing)
    if clients < CLIENT_CONNECTIONS_MIN:
        raise ValueError(
            f"the open-files limit ({soft_limit}) leaves room for {max(clients, 0)} client"
            f" connections; raise it (ulimit -n) to at least"
            f" {DESCRIPTORS_RESERVED + 8 * CLIENT_CONNECTIONS_MIN}"
        )
    return DescriptorPlan(soft_limit, clients, incoming, outgoing, metrics)


def raise_soft_limit() -> int:
    """Raise this process's open-files soft limit to its hard limit (capped at
    ``SOFT_LIMIT_TARGET_MAX``); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = SOFT_LIMIT_TARGET_MAX if hard == resource.RLIM_INFINITY else hard
    target = min(target, SOFT_LIMIT_TARGET_MAX)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-files limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as error:  # e.g. a sandbox refusing it: keep what is
            log.warning("could not raise the open-files limit from %d: %s", soft, error)
    return SOFT_LIMIT_TARGET_MAX if soft == resource.RLIM_INFINITY else soft


def plan_for_process(
    connections_max: int, peer_incoming_max: int, peer_outgoing_max: int
) -> DescriptorPlan:
    """Raise the soft limit, share it out, and log every cap that had to be lowered."""
    plan = plan_descriptors(
        raise_soft_limit(), connections_max, peer_incoming_max, peer_outgoing_max
    )
    lowered = [
        (name, wanted, got)
        for name, wanted, got in (
            ("--connections-max", connections_max, plan.connections_max),
            ("incoming peer streams", peer_incoming_max, plan.peer_incoming_max),
            ("outgoing peer links", peer_outgoing_max, plan.peer_outgoing_max),
            ("metrics connections", METRICS_CONNECTIONS_MAX, plan.metrics_connections_max),
        )
        if got < wanted
    ]
    for name, wanted, got in lowered:
        log.warning(
            "open-files limit %d: %s lowered from %d to %d", plan.soft_limit, name, wanted, got
        )
    return plan
