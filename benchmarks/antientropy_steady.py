"""Anti-entropy bytes per node per virtual second at steady state, replicas agreeing (issue 10).

A fault-free simulated cluster of N nodes (R = min(3, N), membership profile ``local``, the
replication scenarios' node config, anti-entropy on with its defaults: one round per second)
forms; ``--keys`` keys are written at ``quorum`` (100-byte values); the cluster settles for
``--settle-s`` virtual seconds; then every payload sent in a ``--window-s`` window is counted
by kind: anti-entropy (stream payloads whose first byte is ``b"A"``), replication (``b"R"``)
and membership (everything else: SWIM datagrams and push-pull streams). The node stats
``antientropy_bytes_sent`` / ``antientropy_rounds_started`` / ``antientropy_rounds_agreed``
over the same window are reported too (they count the same payloads from inside the core).

Deterministic for a seed: the bytes do not depend on the machine; the CPU seconds do.

    .venv/bin/python -m benchmarks.antientropy_steady --nodes 3 5 10 25 50 100
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

from gossipcache.node import commands as c
from gossipcache.sansio import Outgoing
from sim.lazy_placement import LazyPlacementObserver
from sim.node import node_factory
from sim.scenarios_replication import NODE_CONFIG
from sim.simulation import Simulation, node_addresses
from sim.workload import OK, ClientWorkload

#: Virtual time for the cluster to form before the keys are written.
FORM_MS = 5_000
#: Value size of the keys written (bytes).
VALUE_SIZE_BYTES = 100


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _kind(payload: bytes, channel: str) -> str:
    if channel == "stream" and payload[:1] == b"A":
        return "antientropy"
    if channel == "stream" and payload[:1] == b"R":
        return "replication"
    return "membership"


def measure(nodes: int, keys: int, settle_ms: int, window_ms: int, seed: int) -> dict[str, Any]:
    """One cluster of ``nodes``: form, write, settle, count one window."""
    cpu_start = _cpu_s()
    sim = Simulation(seed, check_invariants=False)
    addresses = node_addresses(nodes)
    workload = ClientWorkload(sim)
    factory = node_factory(
        sim,
        replace(NODE_CONFIG, replicas=min(3, nodes)),
        observers=(workload, LazyPlacementObserver()),
        seeds=lambda address: addresses[:3],
    )
    for address in addresses:
        sim.add_node(address, factory)
    counts: Counter[str] = Counter()
    send = sim._send  # the one path every outbox payload takes

    def counting(source: str, outgoing: Outgoing) -> None:
        channel = outgoing[1].name.lower()
        kind = _kind(outgoing[2], channel)
        counts[f"{kind}_bytes"] += len(outgoing[2])
        counts[f"{kind}_messages"] += 1
        send(source, outgoing)

    sim._send = counting  # type: ignore[method-assign]
    sim.run_until(FORM_MS)
    value = b"v" * VALUE_SIZE_BYTES
    for index in range(keys):
        key = b"steady:%07d" % index
        workload.submit_at(
            FORM_MS + index, addresses[index % nodes], c.Put(key, value, consistency=c.QUORUM)
        )
    sim.run_until(FORM_MS + keys + settle_ms)
    acknowledged = sum(entry.outcome == OK for entry in workload.history)
    states = Counter(sim.core(a).core.data_state for a in addresses)
    not_serving = {
        a: {
            "data_state": core.data_state,
            **{
                name: core.stats_dict().get(name)
                for name in (
                    "antientropy_unsynced_buckets",
                    "antientropy_rounds_started",
                    "antientropy_rounds_timed_out",
                    "antientropy_buckets_synced",
                    "placement_members",
                )
            },
        }
        for a in addresses
        if (core := sim.core(a).core).data_state != "serving"
    }

    def stat_sum(name: str) -> int:
        return sum(sim.core(a).core.stats_dict().get(name, 0) for a in addresses)

    stat_names = (
        "antientropy_bytes_sent",
        "antientropy_rounds_started",
        "antientropy_rounds_agreed",
        "antientropy_keys_repaired",
        "keys",
    )
    stats_before = {name: stat_sum(name) for name in stat_names}
    before = Counter(counts)
    cpu_window_start = _cpu_s()
    sim.run_until(sim.now_ms + window_ms)
    cpu_window = _cpu_s() - cpu_window_start
    used = counts - before
    stats_delta = {name: stat_sum(name) - stats_before[name] for name in stat_names}
    per_node_s = nodes * window_ms / 1000

    def rate(value: float) -> float:
        return round(value / per_node_s, 1)

    return {
        "nodes": nodes,
        "replicas": min(3, nodes),
        "keys_written": keys,
        "keys_acknowledged": acknowledged,
        "keys_held_total": stat_sum("keys"),
        "data_states": dict(states),
        "not_serving_at_window_start": not_serving,
        "window_s": window_ms / 1000,
        "antientropy_bytes_per_node_s": rate(used["antientropy_bytes"]),
        "antientropy_messages_per_node_s": rate(used["antientropy_messages"]),
        "antientropy_stat_bytes_sent_per_node_s": rate(stats_delta["antientropy_bytes_sent"]),
        "antientropy_rounds_per_node_s": rate(stats_delta["antientropy_rounds_started"]),
        "antientropy_rounds_agreed_per_node_s": rate(stats_delta["antientropy_rounds_agreed"]),
        "antientropy_keys_repaired": stats_delta["antientropy_keys_repaired"],
        "membership_bytes_per_node_s": rate(used["membership_bytes"]),
        "replication_bytes_per_node_s": rate(used["replication_bytes"]),
        "cpu_s_total": round(_cpu_s() - cpu_start, 1),
        "cpu_s_window": round(cpu_window, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.antientropy_steady")
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"{'N':>4}{'acked':>7}{'AE B/node/s':>13}{'AE msg/node/s':>15}{'AE stat B/s':>13}"
        f"{'rounds/s':>10}{'agreed/s':>10}{'repaired':>10}{'memb B/node/s':>15}{'cpu s':>8}"
        f"  states",
        flush=True,
    )
    for nodes in args.nodes:
        row = measure(
            nodes, args.keys, int(args.settle_s * 1000), int(args.window_s * 1000), args.seed
        )
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(
            f"{nodes:>4}{row['keys_acknowledged']:>7}{row['antientropy_bytes_per_node_s']:>13}"
            f"{row['antientropy_messages_per_node_s']:>15}"
            f"{row['antientropy_stat_bytes_sent_per_node_s']:>13}"
            f"{row['antientropy_rounds_per_node_s']:>10}"
            f"{row['antientropy_rounds_agreed_per_node_s']:>10}"
            f"{row['antientropy_keys_repaired']:>10}{row['membership_bytes_per_node_s']:>15}"
            f"{row['cpu_s_total']:>8}  {row['data_states']}",
            flush=True,
        )
        if row["not_serving_at_window_start"]:
            print(f"      not serving: {row['not_serving_at_window_start']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
