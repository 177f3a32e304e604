"""Trace replay: the hit ratio an eviction policy reaches on a recorded key sequence.

``gossipcache trace-sim --policy NAME --capacity-items N --trace FILE [--json]`` reads one key per
line (blank lines are skipped), treats every object as size 1, and replays the keys through the
policy as a cache of ``N`` items would: a hit reads the key, a miss inserts it and evicts while
over capacity, never evicting the key just inserted. Every request counts; no warm-up is excluded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..store.eviction import POLICY_NAMES, make_policy


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The outcome of one replay."""

    requests: int
    hits: int

    @property
    def hit_ratio(self) -> float:
        """Hits over requests; 0.0 for an empty trace."""
        return self.hits / self.requests if self.requests else 0.0


def replay(
    policy_name: str, capacity_items: int, keys: Iterable[bytes], seed: int = 0
) -> TraceResult:
    """Replay ``keys`` through a cache of ``capacity_items`` objects of size 1."""
    policy = make_policy(policy_name, capacity_items, seed)
    # Bound methods looked up once: this loop is the benchmark's hot path.
    insert = policy.insert
    access = policy.access
    evict = policy.evict
    tracked = policy.__contains__
    requests = 0
    hits = 0
    size_items = 0
    for key in keys:
        requests += 1
        if tracked(key):
            hits += 1
            access(key)
            continue
        insert(key, 1)
        size_items += 1
        while size_items > capacity_items:
            evict(key)
            size_items -= 1
    return TraceResult(requests=requests, hits=hits)


def read_trace(path: str) -> Iterator[bytes]:
    """The keys of a trace file, one per line, surrounding whitespace removed, blanks skipped."""
    with open(path, "rb") as trace:
        for line in trace:
            key = line.strip()
            if key:
                yield key


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``trace-sim`` subcommand to the ``gossipcache`` command line."""
    parser = subparsers.add_parser(
        "trace-sim",
        help="replay a key trace through an eviction policy and report the hit ratio",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--policy", required=True, choices=POLICY_NAMES)
    parser.add_argument("--capacity-items", required=True, type=_positive_int, metavar="N")
    parser.add_argument("--trace", required=True, metavar="FILE", help="one key per line")
    parser.add_argument("--seed", type=int, default=0, help="seed for randomized policies")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``trace-sim``; exit code 0, or 2 when the trace file cannot be read."""
    try:
        result = replay(args.policy, args.capacity_items, read_trace(args.trace), args.seed)
    except OSError as error:
        print(f"trace-sim: cannot read trace {args.trace!r}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "policy": args.policy,
                    "capacity_items": args.capacity_items,
                    "requests": result.requests,
                    "hits": result.hits,
                    "hit_ratio": result.hit_ratio,
                }
            )
        )
    else:
        print(
            f"{args.policy}: {result.hits}/{result.requests} hits, hit ratio "
            f"{result.hit_ratio:.4f} (capacity {args.capacity_items} items)"
        )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value
