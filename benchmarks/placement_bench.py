"""Placement benchmark: balance, movement on join and leave, build times and table memory.

    python -m benchmarks.placement_bench [--keys 1000000] [--sizes 3,5,10,20,50,100] [--replicas 1,2,3]

For each N and R, N members ``node-000..`` each on its own host (no zones), weight 1:

- balance: owned buckets per node (as any replica and as primary) over the mean, max and min;
  keys per node over the mean for ``--keys`` random keys (uniform 64-bit numbers as decimal
  strings, seed 1), counted through the keys per bucket;
- movement: the fraction of keys whose owner set changes when one node joins (a new host) and
  when one leaves (node-000), against the ideal -- the newcomer's fair share R/(N+1) for a join,
  the leaver's share R/N for a leave -- and the ratio measured / ideal;
- weighted: node-000 with weight 2, its buckets over the mean of the others;
- time: CPU time (``time.thread_time``) of a full build, of the longest single step of a sliced
  build with the default budget, and of one incremental join and leave;
- memory: the table's own objects (owner list, distinct owner tuples, per-bucket floors), not the
  member strings they share.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from array import array

from gossipcache.placement import (
    BUCKET_COUNT,
    STEP_SCORES_DEFAULT,
    Placement,
    PlacementMember,
    bucket_of,
)


def keys_per_bucket(key_count: int, seed: int = 1) -> array:
    rng = random.Random(seed)
    counts = array("q", bytes(8 * BUCKET_COUNT))
    for _ in range(key_count):
        counts[bucket_of(b"%d" % rng.getrandbits(64))] += 1
    return counts


def members_of(count: int) -> list[PlacementMember]:
    return [PlacementMember(f"node-{i:03d}", f"host-{i:03d}") for i in range(count)]


def cpu_seconds(action, *args):
    start = time.thread_time()
    result = action(*args)
    return result, time.thread_time() - start


def longest_step_s(members: list[PlacementMember], replicas: int) -> float:
    build = Placement.begin_build(members, replicas)
    longest = 0.0
    done = False
    while not done:
        start = time.thread_time()
        done = build.step(STEP_SCORES_DEFAULT)
        longest = max(longest, time.thread_time() - start)
    return longest


def table_bytes(placement: Placement) -> int:
    owners = [placement.owners_of_bucket(b) for b in range(BUCKET_COUNT)]
    distinct = {id(t): t for t in owners}
    return (
        sys.getsizeof(placement._owners)
        + sum(sys.getsizeof(t) for t in distinct.values())
        + sys.getsizeof(placement._floor_scores)
        + sys.getsizeof(placement._floor_ids)
    )


def moved_fraction(before: Placement, after: Placement, keys: array, total: int) -> float:
    moved = sum(
        keys[b]
        for b in range(BUCKET_COUNT)
        if before.owners_of_bucket(b) != after.owners_of_bucket(b)
    )
    return moved / total


def ratios(counts: dict[str, int]) -> tuple[float, float]:
    mean = sum(counts.values()) / len(counts)
    return max(counts.values()) / mean, min(counts.values()) / mean


def key_counts(placement: Placement, keys: array) -> dict[str, int]:
    counts = {m.node_id: 0 for m in placement.members}
    for bucket in range(BUCKET_COUNT):
        for node_id in placement.owners_of_bucket(bucket):
            counts[node_id] += keys[bucket]
    return counts


def run(sizes: list[int], replica_counts: list[int], key_count: int) -> None:
    keys = keys_per_bucket(key_count)
    print(
        "| N | R | buckets max/mean | buckets min/mean | primary max/mean | keys max/mean "
        "| join moved (ideal, ratio) | leave moved (ideal, ratio) | 2x weight / mean "
        "| build s | longest step ms | join ms | leave ms | table KiB |"
    )
    print("|" + " ---: |" * 14)
    for replicas in replica_counts:
        for size in sizes:
            members = members_of(size)
            placement, build_s = cpu_seconds(Placement.build, members, replicas)
            step_s = longest_step_s(members, replicas)
            any_max, any_min = ratios(placement.bucket_counts())
            primary_max, _ = ratios(placement.bucket_counts(primary_only=True))
            keys_max, _ = ratios(key_counts(placement, keys))
            newcomer = PlacementMember("node-new", "host-new")
            joined, join_s = cpu_seconds(placement.with_member_added, newcomer)
            left, leave_s = cpu_seconds(placement.with_member_removed, "node-000")
            join_moved = moved_fraction(placement, joined, keys, key_count)
            leave_moved = moved_fraction(placement, left, keys, key_count)
            join_ideal = min(1.0, replicas / (size + 1))
            leave_ideal = min(1.0, replicas / size)
            heavy = [PlacementMember("node-000", "host-000", None, 2), *members[1:]]
            heavy_counts = Placement.build(heavy, replicas).bucket_counts()
            others = (sum(heavy_counts.values()) - heavy_counts["node-000"]) / (size - 1)
            print(
                f"| {size} | {replicas} | {any_max:.3f} | {any_min:.3f} | {primary_max:.3f} | {keys_max:.3f} "
                f"| {join_moved:.4f} ({join_ideal:.4f}, {join_moved / join_ideal:.2f}) "
                f"| {leave_moved:.4f} ({leave_ideal:.4f}, {leave_moved / leave_ideal:.2f}) "
                f"| {heavy_counts['node-000'] / others:.2f} "
                f"| {build_s:.3f} | {step_s * 1000:.1f} | {join_s * 1000:.1f} | {leave_s * 1000:.1f} "
                f"| {table_bytes(placement) / 1024:.0f} |",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="3,5,10,20,50,100")
    parser.add_argument("--replicas", default="1,2,3")
    args = parser.parse_args(argv)
    run(
        [int(s) for s in args.sizes.split(",")],
        [int(r) for r in args.replicas.split(",")],
        args.keys,
    )


if __name__ == "__main__":
    main()
