"""Scale-up 3 -> 4 and scale-down 4 -> 3 under load, in the simulator (issue 10).

A fault-free simulated cluster (3 nodes, R = 3, the replication scenarios' node config with
anti-entropy on) forms; ``--keys`` keys are written at ``quorum``; a paced load (``--rate``
ops per virtual second over the nodes in turn: 90 % reads at ``one`` of those keys, 10 % writes
of fresh keys at ``quorum``) runs throughout. After ``--steady-s`` virtual s a 4th node starts
(seeded); once it is ``serving`` and every node's table has 4 members the layout is complete;
``--steady-s`` later it is sent ``Leave`` (hand-off, then SWIM leave) and its process stops
once ``leave_finished``; ``--steady-s`` later the load stops, and every acknowledged write and
every preloaded key is read back at ``quorum``. Latency is virtual (the simulated network's
delays and the nodes' timers), so it is the protocol's, not the CPU's.

    .venv/bin/python -m benchmarks.antientropy_scale_sim --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from gossipcache.node import commands as c
from sim.lazy_placement import LazyPlacementObserver
from sim.node import node_factory
from sim.scenarios_replication import NODE_CONFIG
from sim.simulation import Simulation, node_addresses
from sim.workload import OK, ClientWorkload

FORM_MS = 5_000
POLL_MS = 100
VALUE = b"v" * 100
CHANGE_TIMEOUT_MS = 120_000
#: Memory per node: far above the data, so nothing is evicted (a miss is then a real miss).
SIZE_BYTES_MAX = 256 * 1024 * 1024


def _summary(entries: list) -> dict[str, Any]:
    reads = [e for e in entries if e.kind == "get" and e.outcome == OK]
    hits = sum(e.result is not None for e in reads)
    latencies = sorted(e.completed_at_ms - e.invoked_at_ms for e in entries if e.outcome == OK)
    failed = sum(e.outcome != OK for e in entries)
    return {
        "ops": len(entries),
        "failed": failed,
        "hit_ratio": round(hits / len(reads), 4) if reads else None,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
    }


def run(seed: int, keys: int, rate: float, steady_ms: int) -> dict[str, Any]:
    sim = Simulation(seed, check_invariants=False)
    addresses = node_addresses(4)
    workload = ClientWorkload(sim)
    factory = node_factory(
        sim,
        replace(NODE_CONFIG, replicas=3, size_bytes_max=SIZE_BYTES_MAX),
        observers=(workload, LazyPlacementObserver()),
        seeds=lambda address: addresses[:3],
    )
    for address in addresses[:3]:
        sim.add_node(address, factory)
    sim.run_until(FORM_MS)
    for index in range(keys):
        key = b"key:%06d" % index
        command = c.Put(key, VALUE, consistency=c.QUORUM)
        workload.submit_at(FORM_MS + index, addresses[index % 3], command)
    sim.run_until(FORM_MS + keys + 5_000)
    preloaded = [e.key for e in workload.history if e.outcome == OK]
    first_op = len(workload.history)
    rng = sim.rng("scale/load")
    load_start = sim.now_ms
    gap_ms = 1000 / rate
    state = {"serial": 0, "stopped": False}

    def next_op(at_ms: float) -> None:
        if state["stopped"]:
            return
        state["serial"] += 1
        serial = state["serial"]
        if rng.random() < 0.1:
            command: c.Command = c.Put(b"scale:%07d" % serial, VALUE, consistency=c.QUORUM)
        else:
            command = c.Get(rng.choice(preloaded), consistency=c.ONE)
        workload.submit(addresses[serial % 3], command)
        sim.schedule(int(at_ms + gap_ms), next_op, at_ms + gap_ms)

    sim.schedule(load_start, next_op, float(load_start))
    marks = {"start": load_start}
    sim.run_until(load_start + steady_ms)
    marks["join"] = sim.now_ms
    keys_at_join = len(preloaded) + sum(
        e.kind == "put" and e.outcome == OK for e in workload.history[first_op:]
    )
    newcomer = addresses[3]
    sim.add_node(newcomer, factory, start_at_ms=sim.now_ms)

    def complete(members: list[str]) -> bool:
        for address in members:
            if not sim.is_alive(address):
                return False
            core = sim.core(address).core
            stats = core.stats_dict()
            if core.data_state != "serving" or stats.get("placement_members") != len(members):
                return False
            if stats.get("placement_rebuilding"):
                return False
        return True

    while not complete(addresses) and sim.now_ms < marks["join"] + CHANGE_TIMEOUT_MS:
        sim.run_until(sim.now_ms + POLL_MS)
    marks["joined"] = sim.now_ms
    moved = {
        "newcomer_keys": sim.core(newcomer).core.stats_dict()["keys"],
        "newcomer_keys_repaired": sim.core(newcomer).core.stats_dict()["antientropy_keys_repaired"],
    }
    sim.run_until(sim.now_ms + steady_ms)
    marks["leave"] = sim.now_ms
    workload.submit(newcomer, c.Leave())
    while (
        not sim.core(newcomer).core.leave_finished
        and sim.now_ms < marks["leave"] + CHANGE_TIMEOUT_MS
    ):
        sim.run_until(sim.now_ms + POLL_MS)
    marks["handed_off"] = sim.now_ms
    sim.crash(newcomer)  # the process exits once the hand-off is done
    while not complete(addresses[:3]) and sim.now_ms < marks["leave"] + CHANGE_TIMEOUT_MS:
        sim.run_until(sim.now_ms + POLL_MS)
    marks["left"] = sim.now_ms
    sim.run_until(sim.now_ms + steady_ms)
    marks["end"] = sim.now_ms
    state["stopped"] = True
    sim.run_until(sim.now_ms + 3_000)  # the last ones complete
    entries = [
        e
        for e in workload.history[first_op:]
        if e.invoked_at_ms < marks["end"] and e.kind in ("get", "put")
    ]

    def window(start: int, end: int) -> dict[str, Any]:
        return _summary([e for e in entries if start <= e.invoked_at_ms < end])

    acknowledged = [e.key for e in entries if e.kind == "put" and e.outcome == OK]
    check_from = len(workload.history)
    for index, key in enumerate(preloaded + acknowledged):
        workload.submit_at(
            sim.now_ms + index // 50, addresses[index % 3], c.Get(key, consistency=c.QUORUM)
        )
    sim.run_until(sim.now_ms + len(preloaded + acknowledged) // 50 + 5_000)
    checks = workload.history[check_from:]
    lost = [e.key for e in checks if e.outcome != OK or e.result is None]
    return {
        "seed": seed,
        "marks_ms": {name: value - load_start for name, value in marks.items()},
        "join_complete_s": (marks["joined"] - marks["join"]) / 1000,
        "leave_handoff_s": (marks["handed_off"] - marks["leave"]) / 1000,
        "leave_complete_s": (marks["left"] - marks["leave"]) / 1000,
        "steady_3": window(load_start + 2_000, marks["join"]),
        "during_join": window(marks["join"], marks["joined"]),
        "steady_4": window(marks["joined"], marks["leave"]),
        "during_leave": window(marks["leave"], marks["left"]),
        "after_leave": window(marks["left"], marks["end"]),
        "moved_join": moved,
        "min_move_join_keys": round(keys_at_join * 3 / 4),
        "keys_checked": len(checks),
        "acknowledged_writes": len(acknowledged),
        "keys_lost": len(lost),
        "lost_sample": [key.decode() for key in lost[:5]],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.antientropy_scale_sim")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="ops per virtual second")
    parser.add_argument("--steady-s", type=float, default=15.0)
    args = parser.parse_args(argv)
    for seed in args.seeds:
        print(json.dumps(run(seed, args.keys, args.rate, int(args.steady_s * 1000))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
