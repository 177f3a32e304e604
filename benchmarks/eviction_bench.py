"""Eviction benchmark: hit ratio and cost per request of every policy on synthetic traces.

``python -m benchmarks.eviction_bench [--out FILE] [--quick]`` (``make bench-eviction``).

Traces (seeded, so every run replays the same keys):

- ``zipf-0.8`` and ``zipf-1.0``: independent requests, key rank ``r`` drawn with weight
  ``1 / r**alpha`` over ``UNIQUE_KEYS`` keys -- the usual model of web and key-value traffic.
- ``zipf-1.0+scans``: the Zipf 1.0 stream, with a scan of ``SCAN_KEYS`` keys that are never seen
  again inserted after every ``SCAN_EVERY_REQUESTS`` requests (a backup job or a crawler).
- ``loop-1.1x``: the keys ``0 .. L-1`` requested round-robin, with ``L`` = 1.1 x the cache size
  (a loop slightly larger than the cache, so the trace differs per capacity).

Capacities are 0.1 %, 1 % and 10 % of ``UNIQUE_KEYS`` items; every object has size 1. Replay is
:func:`gossipcache.tracesim.replay`; every request counts, no warm-up is excluded. The hit ratio is
deterministic; the time per request is the median of ``RUNS`` runs, and because the machine is
shared and noisy, each policy's time is also given as a ratio to LRU's measured in the same
rounds (the policies take turns within each round).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from gossipcache.cli.tracesim import replay
from gossipcache.store.eviction import POLICY_NAMES

UNIQUE_KEYS = 100_000
REQUESTS = 400_000
CAPACITY_PERCENTS = (0.1, 1.0, 10.0)
SCAN_KEYS = 2_000
SCAN_EVERY_REQUESTS = 10_000
LOOP_OVER_CACHE = 1.1
RUNS = 3
SEED = 2024

#: --quick: a smoke run (CI, development), not for conclusions.
QUICK_UNIQUE_KEYS = 10_000
QUICK_REQUESTS = 40_000
QUICK_RUNS = 1

TraceMaker = Callable[[int], list[bytes]]  # capacity_items -> keys


@dataclass(frozen=True, slots=True)
class Row:
    """One policy on one trace at one capacity."""

    trace: str
    capacity_items: int
    policy: str
    hit_ratio: float
    ns_per_request: float
    ns_vs_lru: float


def zipf_trace(alpha: float, unique_keys: int, requests: int, seed: int) -> list[bytes]:
    """``requests`` keys drawn from a Zipf(``alpha``) popularity over ``unique_keys`` keys."""
    rng = random.Random(seed)
    keys = [b"z%d" % rank for rank in range(unique_keys)]
    cumulative = list(
        itertools.accumulate(1.0 / (rank + 1) ** alpha for rank in range(unique_keys))
    )
    return rng.choices(keys, cum_weights=cumulative, k=requests)


def scan_polluted_trace(unique_keys: int, requests: int, seed: int) -> list[bytes]:
    """A Zipf 1.0 stream with one-time scans spliced in; ``requests`` Zipf requests in all."""
    base = zipf_trace(1.0, unique_keys, requests, seed)
    trace: list[bytes] = []
    scan_next = 0
    for start in range(0, len(base), SCAN_EVERY_REQUESTS):
        trace.extend(base[start : start + SCAN_EVERY_REQUESTS])
        trace.extend(b"s%d" % index for index in range(scan_next, scan_next + SCAN_KEYS))
        scan_next += SCAN_KEYS
    return trace


def loop_trace(loop_keys: int, requests: int) -> list[bytes]:
    """The keys ``0 .. loop_keys - 1`` requested in order, over and over."""
    keys = [b"l%d" % index for index in range(loop_keys)]
    return [keys[index % loop_keys] for index in range(requests)]


def trace_makers(unique_keys: int, requests: int) -> dict[str, TraceMaker]:
    """The benchmark's traces by name; Zipf traces are built once and shared by capacities."""
    cache: dict[str, list[bytes]] = {}

    def shared(name: str, build: Callable[[], list[bytes]]) -> TraceMaker:
        def make(capacity_items: int) -> list[bytes]:
            del capacity_items
            if name not in cache:
                cache.clear()  # keep one trace in memory at a time
                cache[name] = build()
            return cache[name]

        return make

    return {
        "zipf-0.8": shared("zipf-0.8", lambda: zipf_trace(0.8, unique_keys, requests, SEED)),
        "zipf-1.0": shared("zipf-1.0", lambda: zipf_trace(1.0, unique_keys, requests, SEED)),
        "zipf-1.0+scans": shared(
            "zipf-1.0+scans", lambda: scan_polluted_trace(unique_keys, requests, SEED)
        ),
        "loop-1.1x": lambda capacity: loop_trace(round(capacity * LOOP_OVER_CACHE), requests),
    }


def measure(trace: list[bytes], capacity_items: int, runs: int) -> dict[str, tuple[float, float]]:
    """Per policy: (hit ratio, median ns per request over ``runs`` rounds)."""
    timings: dict[str, list[int]] = {name: [] for name in POLICY_NAMES}
    hit_ratios: dict[str, float] = {}
    for _ in range(runs):
        for name in POLICY_NAMES:
            started_ns = time.perf_counter_ns()
            result = replay(name, capacity_items, trace, seed=SEED)
            timings[name].append(time.perf_counter_ns() - started_ns)
            hit_ratios[name] = result.hit_ratio
    return {
        name: (hit_ratios[name], statistics.median(timings[name]) / len(trace))
        for name in POLICY_NAMES
    }


def run_benchmark(unique_keys: int, requests: int, runs: int, progress=None) -> list[Row]:
    """Every trace x capacity x policy."""
    rows: list[Row] = []
    capacities = [max(1, round(unique_keys * percent / 100)) for percent in CAPACITY_PERCENTS]
    for trace_name, make in trace_makers(unique_keys, requests).items():
        for capacity_items in capacities:
            trace = make(capacity_items)
            results = measure(trace, capacity_items, runs)
            lru_ns = results["lru"][1]
            for policy, (hit_ratio, ns) in results.items():
                rows.append(Row(trace_name, capacity_items, policy, hit_ratio, ns, ns / lru_ns))
            if progress is not None:
                progress(f"{trace_name} capacity {capacity_items}: done")
    return rows


def render_markdown(rows: list[Row], unique_keys: int, requests: int, runs: int) -> str:
    """A markdown report: one table of hit ratios, one of costs."""
    traces = list(dict.fromkeys(row.trace for row in rows))
    capacities = list(dict.fromkeys(row.capacity_items for row in rows))
    by_key = {(row.trace, row.capacity_items, row.policy): row for row in rows}
    header = "| trace | capacity (items) | " + " | ".join(POLICY_NAMES) + " |"
    rule = "|---|---:|" + "---:|" * len(POLICY_NAMES)
    lines = [
        "# Eviction benchmark results",
        "",
        f"Generated by `python -m benchmarks.eviction_bench` (`make bench-eviction`): "
        f"{unique_keys:,} unique keys, {requests:,} Zipf requests per trace, "
        f"median of {runs} run(s), Python {platform.python_version()}.",
        "",
        "## Hit ratio (best per row in bold)",
        "",
        header,
        rule,
    ]
    for trace in traces:
        for capacity in capacities:
            ratios = [by_key[(trace, capacity, name)].hit_ratio for name in POLICY_NAMES]
            best = max(ratios)
            cells = [f"**{r:.4f}**" if r == best else f"{r:.4f}" for r in ratios]
            lines.append(f"| {trace} | {capacity:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cost: ns per request (median), and in parentheses the ratio to LRU in the same rounds",
        "",
        header,
        rule,
    ]
    for trace in traces:
        for capacity in capacities:
            cells = []
            for name in POLICY_NAMES:
                row = by_key[(trace, capacity, name)]
                cells.append(f"{row.ns_per_request:,.0f} ({row.ns_vs_lru:.2f}x)")
            lines.append(f"| {trace} | {capacity:,} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", metavar="FILE", help="write the markdown report here")
    parser.add_argument("--quick", action="store_true", help="small traces, one run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        unique_keys, requests, runs = QUICK_UNIQUE_KEYS, QUICK_REQUESTS, QUICK_RUNS
    else:
        unique_keys, requests, runs = UNIQUE_KEYS, REQUESTS, RUNS

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = run_benchmark(unique_keys, requests, runs, progress)
    report = render_markdown(rows, unique_keys, requests, runs)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(report)
    else:
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
