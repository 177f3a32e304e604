"""``python -m sim bench membership``: SWIM + Lifeguard measured on the simulator (LAN, T = 1 s).

Parts (``--only`` picks some; all by default):

- ``detection``: N = 5, 20, 100; per seed the cluster forms, a new node joins (dissemination: time
  until every member has it), then a random member crashes at a random time. Time to the first
  suspicion anywhere, and until every survivor holds it dead, against the bound
  ``max suspicion timeout(N) + 3 T``.
- ``loss``: N = 20 under 10 % datagram loss for 10,000 periods; every node is healthy, so every
  ``dead`` declaration is false.
- ``starved``: N = 10; the last node is starved for 300 periods, Lifeguard on vs off: every
  payload to it arrives ``STARVED_INBOUND_DELAY_MS`` late (10 probe timeouts; a delay-mode clog on
  each inbound link models a receive path that is not being served) and it is frozen
  ``STARVE_PAUSE_MS`` of every ``STARVE_PERIOD_MS`` (the simulator's pause: timers late too).
  Healthy = every other node. False ``dead`` declarations (by any observer, the starved one
  included) are counted about healthy nodes and about the starved node separately.
- ``bytes``: steady-state bytes sent per node per second (datagrams, push-pull streams) for
  N = 5 .. 100.
- ``speed``: 100 nodes for 10 virtual minutes: CPU and wall seconds.

The simulator never reads a clock; wall time here is ``os.times().elapsed`` and only reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

from gossipcache.membership import EventKind, MembershipConfig
from gossipcache.membership.suspicion import suspicion_timeout_min_ms

from .bench import cpu_seconds
from .network import NetworkConfig
from .scenarios_membership import (
    CONFIG,
    STARVE_PAUSE_MS,
    STARVE_PERIOD_MS,
    MembershipObserver,
    add_membership_nodes,
    check_live_set_agreed,
    membership_factory,
    node_id_of,
    seed_addresses,
)
from .simulation import Simulation, node_addresses

PARTS = ("detection", "loss", "starved", "bytes", "speed")
DETECTION_SIZES = (5, 20, 100)
BYTES_SIZES = (5, 10, 20, 50, 100)
#: Forming a cluster (every view complete) must take less than this, or the run is reported.
FORM_MS_MAX = 120_000
#: How often the bench looks at the cluster while waiting for something.
POLL_MS = 250
#: Crash: at a uniformly random time within this many periods after the join settled.
CRASH_OFFSET_PERIODS = 5
#: Extra time allowed past the dead-everywhere bound before a run counts as a miss.
DETECTION_SLACK_MS = 30_000
#: Dissemination bound: 3 * ceil(log2(N + 1)) periods.
DISSEMINATION_PERIODS_FACTOR = 3
LOSS_NODES = 20
LOSS_RATE = 0.10
LOSS_PERIODS = 10_000
#: 10,000 periods of 20 nodes cost ~40 CPU s per seed, so this part runs fewer seeds.
LOSS_SEEDS = 5
STARVED_NODES = 10
STARVED_PERIODS = 300
#: Longer than the minimum suspicion timeout (4 T at N = 10): without Lifeguard the starved
#: node's suspicions of healthy members expire before their refutations reach it.
STARVED_INBOUND_DELAY_MS = 5_000
BYTES_SETTLE_MS = 60_000
BYTES_WINDOW_MS = 180_000
SPEED_NODES = 100
SPEED_VIRTUAL_MS = 600_000


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, Any]:
    """n, mean, p50, p99, max of ``values`` (rounded)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 3),
        "p50": round(percentile(values, 0.5), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


def suspicion_timeout_max_ms(nodes: int, config: MembershipConfig = CONFIG) -> int:
    """The longest Lifeguard suspicion timeout in a cluster of ``nodes``."""
    minimum = suspicion_timeout_min_ms(config.suspicion_mult, nodes, config.probe_interval_ms)
    return config.suspicion_max_timeout_mult * minimum


def dead_everywhere_bound_ms(nodes: int, config: MembershipConfig = CONFIG) -> int:
    """Target for crash -> dead at every survivor: max suspicion timeout + 3 T."""
    return suspicion_timeout_max_ms(nodes, config) + 3 * config.probe_interval_ms


def dissemination_bound_ms(nodes: int, config: MembershipConfig = CONFIG) -> int:
    """Target for an update to reach every node: 3 * ceil(log2(N + 1)) periods."""
    periods = DISSEMINATION_PERIODS_FACTOR * math.ceil(math.log2(nodes + 1))
    return periods * config.probe_interval_ms


# ---------------------------------------------------------------------------- helpers


def form_cluster(
    seed: int,
    nodes: int,
    config: MembershipConfig = CONFIG,
    network: NetworkConfig | None = None,
) -> tuple[Simulation, MembershipObserver]:
    """A simulation whose ``nodes`` members all agree on the live set (or FORM_MS_MAX passed)."""
    sim = Simulation(seed, network or NetworkConfig(), check_invariants=False)
    observer = add_membership_nodes(sim, nodes, config)
    run_until(sim, FORM_MS_MAX, lambda: check_live_set_agreed(sim)[0])
    return sim, observer


def run_until(sim: Simulation, limit_ms: int, done: Callable[[], bool]) -> bool:
    """Advance in POLL_MS steps until ``done()`` or ``limit_ms`` (absolute); True if done."""
    while sim.now_ms < limit_ms:
        sim.run_for(min(POLL_MS, limit_ms - sim.now_ms))
        if done():
            return True
    return done()


def first_event_ms(
    observer: MembershipObserver, start: int, node_id: str, kind: EventKind
) -> dict[str, int]:
    """Observer address -> time of its first ``kind`` event about ``node_id`` (events[start:])."""
    seen: dict[str, int] = {}
    for observed in observer.events[start:]:
        event = observed.event
        if event.kind is kind and event.node_id == node_id and observed.observer not in seen:
            seen[observed.observer] = event.now_ms
    return seen


# ---------------------------------------------------------------------------- parts


def measure_detection(nodes: int, seed: int) -> dict[str, Any]:
    """One seed: join dissemination, then crash detection (times in ms)."""
    sim, observer = form_cluster(seed, nodes)
    addresses = node_addresses(nodes + 1)
    members, joiner = addresses[:-1], addresses[-1]
    rng = sim.rng("bench/detection")
    result: dict[str, Any] = {"nodes": nodes, "seed": seed, "formed_ms": sim.now_ms}

    start = len(observer.events)
    join_ms = sim.now_ms
    sim.add_node(joiner, membership_factory(observer, seed_addresses(members)))
    joiner_id = node_id_of(joiner, 1)
    run_until(
        sim,
        join_ms + FORM_MS_MAX,
        lambda: len(first_event_ms(observer, start, joiner_id, EventKind.JOINED)) >= nodes,
    )
    joined = first_event_ms(observer, start, joiner_id, EventKind.JOINED)
    result["join_spread_ms"] = max(joined.values()) - join_ms if len(joined) >= nodes else None

    crash_ms = sim.now_ms + rng.randrange(CRASH_OFFSET_PERIODS * CONFIG.probe_interval_ms)
    sim.run_until(crash_ms)
    victim = rng.choice(members)
    victim_id = node_id_of(victim, 1)
    start = len(observer.events)
    sim.crash(victim)
    survivors = nodes  # the other members plus the joiner
    limit_ms = crash_ms + dead_everywhere_bound_ms(nodes + 1) + DETECTION_SLACK_MS
    run_until(
        sim,
        limit_ms,
        lambda: len(first_event_ms(observer, start, victim_id, EventKind.DEAD)) >= survivors,
    )
    suspected = first_event_ms(observer, start, victim_id, EventKind.SUSPECT)
    dead = first_event_ms(observer, start, victim_id, EventKind.DEAD)
    result["first_suspicion_ms"] = min(suspected.values()) - crash_ms if suspected else None
    complete = len(dead) >= survivors
    result["dead_everywhere_ms"] = max(dead.values()) - crash_ms if complete else None
    result["dead_spread_ms"] = max(dead.values()) - min(dead.values()) if complete else None
    return result


def detection_part(seeds: int) -> dict[str, Any]:
    """Detection and dissemination for each size in DETECTION_SIZES."""
    rows = []
    for nodes in DETECTION_SIZES:
        runs = [measure_detection(nodes, seed) for seed in range(1, seeds + 1)]
        period_s = CONFIG.probe_interval_ms / 1000

        def values(key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [r[key] / 1000 for r in runs if r[key] is not None]

        members_after_join = nodes + 1
        dead_bound_s = dead_everywhere_bound_ms(members_after_join) / 1000
        spread_bound_s = dissemination_bound_ms(nodes) / 1000
        join_spread = values("join_spread_ms")
        dead_all = values("dead_everywhere_ms")
        rows.append(
            {
                "nodes": nodes,
                "seeds": seeds,
                "first_suspicion_s": summary(values("first_suspicion_ms")),
                "first_suspicion_target_s": round(1.8 * period_s, 3),
                "dead_everywhere_s": summary(dead_all),
                "dead_everywhere_bound_s": dead_bound_s,
                "dead_everywhere_missed": sum(1 for r in runs if r["dead_everywhere_ms"] is None),
                "dead_spread_s": summary(values("dead_spread_ms")),
                "join_spread_s": summary(join_spread),
                "join_spread_bound_s": spread_bound_s,
                "join_within_bound_fraction": round(
                    sum(1 for v in join_spread if v <= spread_bound_s) / len(runs), 4
                ),
                "formed_s": summary(values("formed_ms")),
            }
        )
    return {"rows": rows}


def measure_loss(seed: int, periods: int) -> dict[str, Any]:
    """N = LOSS_NODES under LOSS_RATE datagram loss for ``periods``: every dead is false."""
    network = NetworkConfig(datagram_loss_rate=LOSS_RATE)
    sim, observer = form_cluster(seed, LOSS_NODES, network=network)
    start_ms = sim.now_ms
    dead_before = len(observer.dead_events)
    suspect_before = observer.event_counts["suspect"]
    sim.run_for(periods * CONFIG.probe_interval_ms)
    return {
        "seed": seed,
        "virtual_s": (sim.now_ms - start_ms) / 1000,
        "false_dead": len(observer.dead_events) - dead_before,
        "suspicions": observer.event_counts["suspect"] - suspect_before,
        "datagrams_lost": sim.coverage.get("datagram_lost", 0),
    }


def loss_part(seeds: int, periods: int) -> dict[str, Any]:
    """``measure_loss`` over ``seeds`` seeds."""
    started_s = cpu_seconds()
    runs = [measure_loss(seed, periods) for seed in range(1, seeds + 1)]
    return {
        "nodes": LOSS_NODES,
        "loss_rate": LOSS_RATE,
        "periods": periods,
        "seeds": seeds,
        "false_dead_total": sum(r["false_dead"] for r in runs),
        "suspicions_total": sum(r["suspicions"] for r in runs),
        "cpu_s": round(cpu_seconds() - started_s, 1),
        "runs": runs,
    }


def measure_starved(seed: int, lifeguard: bool, periods: int) -> dict[str, Any]:
    """One starved node among STARVED_NODES; false dead declarations by subject."""
    config = CONFIG.replace(lifeguard=lifeguard)
    sim, observer = form_cluster(seed, STARVED_NODES, config=config)
    addresses = node_addresses(STARVED_NODES)
    starved = addresses[-1]
    for address in addresses[:-1]:
        sim.clog(address, starved, delay_ms=STARVED_INBOUND_DELAY_MS)
    start = len(observer.dead_events)
    end_ms = sim.now_ms + periods * CONFIG.probe_interval_ms
    while sim.now_ms < end_ms:
        sim.pause(starved, STARVE_PAUSE_MS)
        sim.run_for(STARVE_PERIOD_MS)
    dead = observer.dead_events[start:]
    about_starved = [d for d in dead if d.event.address == starved]
    about_healthy = [d for d in dead if d.event.address != starved]
    return {
        "seed": seed,
        "dead_about_healthy": len(about_healthy),
        "dead_about_healthy_by_starved": sum(1 for d in about_healthy if d.observer == starved),
        "dead_about_starved": len(about_starved),
        "starved_local_health": sim.core(starved).membership.local_health,
    }


def starved_part(seeds: int, periods: int) -> dict[str, Any]:
    """Lifeguard on vs off with one starved node."""
    result: dict[str, Any] = {
        "nodes": STARVED_NODES,
        "inbound_delay_ms": STARVED_INBOUND_DELAY_MS,
        "pause_ms": STARVE_PAUSE_MS,
        "period_ms": STARVE_PERIOD_MS,
        "periods": periods,
        "seeds": seeds,
    }
    for lifeguard in (True, False):
        runs = [measure_starved(seed, lifeguard, periods) for seed in range(1, seeds + 1)]
        result["lifeguard_on" if lifeguard else "lifeguard_off"] = {
            key: sum(r[key] for r in runs)
            for key in ("dead_about_healthy", "dead_about_healthy_by_starved", "dead_about_starved")
        }
    return result


def measure_bytes(nodes: int, seed: int, window_ms: int) -> dict[str, Any]:
    """Steady-state bytes sent per node per second over ``window_ms``."""
    sim, _ = form_cluster(seed, nodes)
    sim.run_for(BYTES_SETTLE_MS)

    def totals() -> tuple[int, int, int]:
        datagram = stream = datagrams = 0
        for address in sim.live_addresses():
            stats = sim.core(address).membership.stats()
            datagram += stats.get("datagram_bytes_out", 0)
            stream += stats.get("stream_bytes_out", 0)
            datagrams += stats.get("datagrams_out", 0)
        return datagram, stream, datagrams

    before = totals()
    sim.run_for(window_ms)
    after = totals()
    per = nodes * window_ms / 1000
    datagram_bytes = (after[0] - before[0]) / per
    stream_bytes = (after[1] - before[1]) / per
    return {
        "nodes": nodes,
        "datagram_bytes_per_node_s": round(datagram_bytes, 1),
        "stream_bytes_per_node_s": round(stream_bytes, 1),
        "total_bytes_per_node_s": round(datagram_bytes + stream_bytes, 1),
        "datagrams_per_node_s": round((after[2] - before[2]) / per, 2),
    }


def bytes_part(window_ms: int) -> dict[str, Any]:
    """``measure_bytes`` for each size; spread = max/min - 1 of each column."""
    rows = [measure_bytes(nodes, 1, window_ms) for nodes in BYTES_SIZES]

    def spread(key: str) -> float:
        values = [row[key] for row in rows]
        mean = sum(values) / len(values)
        return round(max(abs(v - mean) for v in values) / mean, 3)

    return {
        "window_s": window_ms / 1000,
        "rows": rows,
        "datagram_deviation_from_mean": spread("datagram_bytes_per_node_s"),
        "total_deviation_from_mean": spread("total_bytes_per_node_s"),
    }


def speed_part(virtual_ms: int) -> dict[str, Any]:
    """SPEED_NODES nodes for ``virtual_ms``: events, CPU and wall seconds."""
    cpu_started = cpu_seconds()
    wall_started = os.times().elapsed
    sim = Simulation(1, check_invariants=False)
    add_membership_nodes(sim, SPEED_NODES)
    sim.run_until(virtual_ms)
    cpu_s = cpu_seconds() - cpu_started
    return {
        "nodes": SPEED_NODES,
        "virtual_s": virtual_ms / 1000,
        "events": sim.events_processed,
        "cpu_s": round(cpu_s, 2),
        "wall_s": round(os.times().elapsed - wall_started, 2),
        "events_per_cpu_s": round(sim.events_processed / cpu_s) if cpu_s > 0 else None,
        "agreed": check_live_set_agreed(sim)[0],
    }


# ---------------------------------------------------------------------------- report


def _fmt(stats: dict[str, Any], key: str) -> str:
    value = stats.get(key)
    return "-" if value is None else f"{value:.2f}"


def print_report(report: dict[str, Any]) -> None:
    """The report as plain-text tables."""
    period_s = CONFIG.probe_interval_ms / 1000
    print(f"membership bench (LAN profile, T = {period_s:g} s)")
    detection = report.get("detection")
    if detection:
        print("\ncrash detection and join dissemination (seconds)")
        print(
            "   N  seeds | 1st suspicion mean p50  p99 | dead everywhere p99  bound  miss"
            " | join spread p99  bound  within"
        )
        for row in detection["rows"]:
            first = row["first_suspicion_s"]
            dead = row["dead_everywhere_s"]
            join = row["join_spread_s"]
            print(
                f"{row['nodes']:>4} {row['seeds']:>6} | {_fmt(first, 'mean'):>17} "
                f"{_fmt(first, 'p50'):>4} {_fmt(first, 'p99'):>5} | {_fmt(dead, 'p99'):>19} "
                f"{row['dead_everywhere_bound_s']:>6.1f} {row['dead_everywhere_missed']:>5} | "
                f"{_fmt(join, 'p99'):>15} {row['join_spread_bound_s']:>6.1f} "
                f"{row['join_within_bound_fraction']:>7.0%}"
            )
    loss = report.get("loss")
    if loss:
        print(
            f"\n{loss['loss_rate']:.0%} loss, N = {loss['nodes']}, {loss['periods']} periods x "
            f"{loss['seeds']} seeds: false dead = {loss['false_dead_total']}, suspicions = "
            f"{loss['suspicions_total']} (cpu {loss['cpu_s']} s)"
        )
    starved = report.get("starved")
    if starved:
        print(
            f"\nstarved node (N = {starved['nodes']}, inbound delay {starved['inbound_delay_ms']} "
            f"ms, frozen {starved['pause_ms']} ms of every {starved['period_ms']} ms, "
            f"{starved['periods']} periods x {starved['seeds']} seeds)"
        )
        print("lifeguard | dead about healthy (by starved) | dead about starved")
        for key in ("lifeguard_on", "lifeguard_off"):
            row = starved[key]
            print(
                f"{key[10:]:>9} | {row['dead_about_healthy']:>18} "
                f"({row['dead_about_healthy_by_starved']:>9}) | {row['dead_about_starved']:>18}"
            )
    sizes = report.get("bytes")
    if sizes:
        print(f"\nsteady-state bytes sent per node per second ({sizes['window_s']:g} s window)")
        print("   N | datagram | stream | total | datagrams/s")
        for row in sizes["rows"]:
            print(
                f"{row['nodes']:>4} | {row['datagram_bytes_per_node_s']:>8} | "
                f"{row['stream_bytes_per_node_s']:>6} | {row['total_bytes_per_node_s']:>5} | "
                f"{row['datagrams_per_node_s']:>5}"
            )
        print(
            f"largest deviation from the mean: datagram {sizes['datagram_deviation_from_mean']:.0%}"
            f", total {sizes['total_deviation_from_mean']:.0%}"
        )
    speed = report.get("speed")
    if speed:
        print(
            f"\nspeed: {speed['nodes']} nodes x {speed['virtual_s']:g} virtual s: "
            f"{speed['events']} events, cpu {speed['cpu_s']} s, wall {speed['wall_s']} s, "
            f"{speed['events_per_cpu_s']} events/cpu s, agreed={speed['agreed']}"
        )


def main(argv: list[str]) -> int:
    """Entry point of ``python -m sim bench membership``."""
    parser = argparse.ArgumentParser(prog="python -m sim bench membership")
    parser.add_argument("--seeds", type=int, default=None, help="detection seeds per size")
    parser.add_argument("--quick", action="store_true", help="few seeds, short runs")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    parts = args.only or list(PARTS)
    quick = args.quick
    seeds = args.seeds if args.seeds is not None else (10 if quick else 100)
    report: dict[str, Any] = {"bench": "membership", "quick": quick}
    if "detection" in parts:
        report["detection"] = detection_part(seeds)
    if "loss" in parts:
        report["loss"] = loss_part(1 if quick else LOSS_SEEDS, 1_000 if quick else LOSS_PERIODS)
    if "starved" in parts:
        report["starved"] = starved_part(3 if quick else 10, 100 if quick else STARVED_PERIODS)
    if "bytes" in parts:
        report["bytes"] = bytes_part(60_000 if quick else BYTES_WINDOW_MS)
    if "speed" in parts:
        report["speed"] = speed_part(120_000 if quick else SPEED_VIRTUAL_MS)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
