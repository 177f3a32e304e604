"""``python -m sim bench replication-cost``: node-to-node messages and bytes per client operation.

A fault-free simulated cluster (default 3 nodes, R = 3, membership profile ``local``) forms;
keys are written once at ``all``; then, for each measured operation (``put``, ``get``,
``delete`` at ``one`` / ``quorum`` / ``all``), every node's client sends only that operation for
``--window-s`` virtual seconds. Every payload a node sends is counted (``TrafficCounter`` wraps
the simulation's send), per channel; an idle window of the same length measures what
membership alone sends, and is subtracted. The result per operation: payloads and bytes sent
between nodes, per operation completed. Payloads are whole sans-IO sends: a frame that carries
several operations counts once, so batching shows up as fewer messages per operation.

Deterministic (a seed); the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import replace
from typing import Any

from gossipcache.node import commands as c
from gossipcache.node.core import NodeCore
from gossipcache.sansio import Outgoing

from .lazy_placement import LazyPlacementObserver
from .node import node_factory
from .simulation import Simulation, node_addresses
from .workload import OK, ClientWorkload

#: The cluster forms (and the keys are written) before anything is measured.
FORM_MS = 3_000
#: Keys the measured operations use (each written once at ``all`` first).
COST_KEYS = tuple(b"cost:%03d" % index for index in range(64))
#: (command name, consistency level) pairs measured, in report order.
MEASURED = tuple(
    (kind, level) for kind in ("put", "get", "delete") for level in (c.ONE, c.QUORUM, c.ALL)
)


class TrafficCounter:
    """Counts every payload the simulation routes, by channel: messages and bytes."""

    def __init__(self, sim: Simulation) -> None:
        self.counts: Counter[str] = Counter()
        send = sim._send  # the one path every outbox payload takes

        def counting(source: str, outgoing: Outgoing) -> None:
            channel = outgoing[1].name.lower()
            self.counts[f"{channel}_messages"] += 1
            self.counts[f"{channel}_bytes"] += len(outgoing[2])
            send(source, outgoing)

        sim._send = counting  # type: ignore[method-assign]

    def snapshot(self) -> Counter[str]:
        return Counter(self.counts)


def _command(kind: str, level: str, key: bytes, serial: int) -> c.Command:
    if kind == "put":
        return c.Put(key, b"value-%08d" % serial, consistency=level)
    if kind == "get":
        return c.Get(key, consistency=level)
    return c.Delete((key,), consistency=level)


def measure(
    nodes: int, seed: int, window_ms: int, gap_ms: float, core_class: type[NodeCore] = NodeCore
) -> dict[str, Any]:
    """Run the cluster through an idle window and one window per measured operation
    (``core_class``: a test's node)."""
    from .scenarios_replication import NODE_CONFIG

    sim = Simulation(seed, check_invariants=False)
    addresses = node_addresses(nodes)
    workload = ClientWorkload(sim)
    factory = node_factory(
        sim,
        replace(NODE_CONFIG, replicas=min(3, nodes)),
        observers=(workload, LazyPlacementObserver()),
        core_class=core_class,
        seeds=lambda address: addresses[:3],
    )
    for address in addresses:
        sim.add_node(address, factory)
    counter = TrafficCounter(sim)
    sim.run_until(FORM_MS)
    for index, key in enumerate(COST_KEYS):
        workload.submit(addresses[index % nodes], c.Put(key, b"seed", consistency=c.ALL))
    sim.run_until(sim.now_ms + 1_000)

    before = counter.snapshot()
    sim.run_until(sim.now_ms + window_ms)
    idle = counter.snapshot() - before
    rows = []
    serial = 0
    for kind, level in MEASURED:
        first_op = len(workload.history)
        rng = sim.rng(f"cost/{kind}/{level}")
        start = sim.now_ms
        before = counter.snapshot()
        at_ms = float(start)
        while at_ms < start + window_ms:
            at_ms += rng.expovariate(1.0 / gap_ms)
            serial += 1
            address = addresses[serial % nodes]
            command = _command(kind, level, rng.choice(COST_KEYS), serial)
            workload.submit_at(int(at_ms), address, command)
        sim.run_until(start + window_ms + 2_000)  # the last ones complete
        used = counter.snapshot() - before
        elapsed = sim.now_ms - start
        entries = workload.history[first_op:]
        done = sum(entry.outcome == OK for entry in entries)
        row: dict[str, Any] = {"op": f"{kind}@{level}", "ops": len(entries), "ok": done}
        for channel in ("stream", "datagram"):
            for unit in ("messages", "bytes"):
                name = f"{channel}_{unit}"
                # Membership's own traffic in as long a window, subtracted.
                extra = used[name] - idle[name] * elapsed / window_ms
                row[f"{name}_per_op"] = round(extra / done, 2) + 0.0 if done else None
        rows.append(row)
    return {
        "bench": "replication-cost",
        "nodes": nodes,
        "seed": seed,
        "window_s": window_ms / 1000,
        "idle_per_s": {name: round(v * 1000 / window_ms, 1) for name, v in sorted(idle.items())},
        "rows": rows,
    }


def main(argv: list[str]) -> int:
    """Entry point of ``python -m sim bench replication-cost``."""
    parser = argparse.ArgumentParser(prog="python -m sim bench replication-cost")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window-s", type=float, default=10.0, help="virtual s per operation")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="mean gap between commands")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = measure(args.nodes, args.seed, int(args.window_s * 1000), args.gap_ms)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"replication cost: {report['nodes']} nodes, seed {report['seed']}, "
        f"{report['window_s']:g} virtual s per operation; membership idle per s: "
        f"{report['idle_per_s']}"
    )
    print(f"{'op':<16}{'ok/ops':>12}{'stream msg/op':>15}{'stream B/op':>13}{'dgram msg/op':>14}")
    for row in report["rows"]:
        print(
            f"{row['op']:<16}{row['ok']:>6}/{row['ops']:<5}"
            f"{_shown(row['stream_messages_per_op']):>15}{_shown(row['stream_bytes_per_op']):>13}"
            f"{_shown(row['datagram_messages_per_op']):>14}"
        )
    return 0


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
