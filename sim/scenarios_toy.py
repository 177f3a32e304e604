"""Scenarios and a bench built on the toy ``RumorCore``: the simulator's own end-to-end check.

- ``toy-gossip``: every fault kind on during the safety phase; rumors must stay genuine and
  streams ordered throughout, and every live node must learn every live incarnation's rumor
  within the liveness phase.
- ``toy-calm``: the same without faults (a baseline for digests and speed).
- bench ``toy``: events per CPU second of the loop with the toy core.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from .bench import cpu_seconds, register_bench
from .faults import FaultPlan
from .scenarios import Checker, CheckMode, Scenario, register, run_scenario
from .simulation import Simulation, node_addresses
from .toy import PingCore, RumorCore, rumor_name


def add_rumor_nodes(sim: Simulation, nodes: int) -> None:
    """Setup: ``nodes`` RumorCore nodes started at time 0."""
    for address in node_addresses(nodes):
        sim.add_node(address, RumorCore.from_context)


def add_ping_nodes(sim: Simulation, nodes: int) -> None:
    """Setup: ``nodes`` PingCore nodes started at time 0."""
    for address in node_addresses(nodes):
        sim.add_node(address, PingCore)


def _live_cores(sim: Simulation) -> list[tuple[str, RumorCore]]:
    return [(address, sim.core(address)) for address in sim.live_addresses()]


def check_rumors_genuine(sim: Simulation) -> tuple[bool, str]:
    """No node holds a rumor of an incarnation that never started (nothing invented)."""
    for address, core in _live_cores(sim):
        for rumor in core.rumors:
            origin, _, incarnation = rumor.rpartition("#")
            if origin not in sim.addresses or not 1 <= int(incarnation) <= sim.incarnation(origin):
                return False, f"{address} holds invented rumor {rumor!r}"
    return True, ""


def check_core_counters(sim: Simulation) -> tuple[bool, str]:
    """Streams stayed ordered and no payload was malformed (the simulator corrupts nothing)."""
    for address, core in _live_cores(sim):
        if core.stream_order_violations or core.malformed:
            return False, (
                f"{address}: {core.stream_order_violations} stream order violations, "
                f"{core.malformed} malformed payloads"
            )
    return True, ""


def check_converged(sim: Simulation) -> tuple[bool, str]:
    """Every live node knows the current rumor of every live node."""
    live = sim.live_addresses()
    expected = {rumor_name(address, sim.incarnation(address)) for address in live}
    for address, core in _live_cores(sim):
        missing = expected - core.rumors
        if missing:
            return False, f"{address} misses {len(missing)} rumors, e.g. {min(missing)}"
    return True, f"{len(live)} live nodes agree"


TOY_CHECKERS = (
    Checker("rumors-genuine", check_rumors_genuine, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("streams-ordered", check_core_counters, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("converged", check_converged, CheckMode.EVENTUALLY, interval_ms=500),
)

TOY_GOSSIP = register(
    Scenario(
        name="toy-gossip",
        description="naive rumor gossip under every fault kind; must converge after heal",
        setup=add_rumor_nodes,
        checkers=TOY_CHECKERS,
        fault_plan=FaultPlan.standard(),
        nodes_default=5,
        duration_s_default=30.0,
        liveness_s=30.0,
    )
)

TOY_CALM = register(
    replace(
        TOY_GOSSIP,
        name="toy-calm",
        description="naive rumor gossip without faults",
        fault_plan=FaultPlan.none(),
        duration_s_default=10.0,
        liveness_s=10.0,
    )
)


def toy_bench(argv: list[str]) -> int:
    """``python -m sim bench toy [--core rumor|ping] [--nodes N] [--duration-s T] [--seed S]
    [--calm] [--json]``: run the toy scenario without checkers and report events per CPU second.
    ``--core ping`` swaps in ``PingCore`` so the figure is close to the loop's own cost."""
    parser = argparse.ArgumentParser(prog="python -m sim bench toy")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calm", action="store_true", help="no faults")
    parser.add_argument("--core", choices=("rumor", "ping"), default="rumor")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    scenario_ = TOY_CALM if args.calm else TOY_GOSSIP
    # Checkers poll every node's state; leave them out so the figure is the loop's own cost.
    bare = replace(
        scenario_,
        setup=scenario_.setup if args.core == "rumor" else add_ping_nodes,
        checkers=(),
        liveness_s=0.0,
    )
    started_s = cpu_seconds()
    report = run_scenario(bare, seed=args.seed, nodes=args.nodes, duration_s=args.duration_s)
    elapsed_s = cpu_seconds() - started_s
    result = {
        "bench": "toy",
        "scenario": scenario_.name,
        "core": args.core,
        "nodes": args.nodes,
        "virtual_s": report.virtual_ms / 1000,
        "events": report.events,
        "cpu_s": round(elapsed_s, 3),
        "events_per_cpu_s": round(report.events / elapsed_s) if elapsed_s > 0 else None,
        "virtual_s_per_cpu_s": round(report.virtual_ms / 1000 / elapsed_s, 1)
        if elapsed_s > 0
        else None,
        "digest": report.digest,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


register_bench("toy", "events per CPU second of the loop with the toy rumor core", toy_bench)
