"""Resident bytes per entry of the store's per-bucket key index (``track_buckets``), measured
with tracemalloc after churn, for ``BUCKET_INDEX_OVERHEAD_BYTES`` (gossipcache/store/store.py).

The index is what the store keeps: per bucket a set of its keys, created on the bucket's first
key (the list of 16384 slots, 128 KiB per node, is allocated before measuring: it does not grow
with the data). The key objects themselves are the store's (already charged), so they are allocated before
measuring and only the sets' memory counts. A cache is full and churning: sets that keep taking
inserts and deletes hold deleted slots and resize by live keys, so the steady state is measured
after ``--churn`` x N random replacements, at several points, and the largest value reported.

    .venv/bin/python -m benchmarks.bucket_index_memory
"""

from __future__ import annotations

import argparse
import random
import tracemalloc
from array import array

from gossipcache.placement import BUCKET_COUNT, bucket_of


def measure(entries: int, churn: int, seed: int) -> tuple[float, float]:
    """(bytes per entry right after the fill, largest bytes per entry seen during churn)."""
    rng = random.Random(seed)
    total = entries * (churn + 1)
    keys = [b"key:%016d" % rng.randrange(10**16) for _ in range(total)]
    buckets = [bucket_of(key) for key in keys]
    # Which live key each replacement takes out, and the live keys' positions, as arrays built
    # before tracing: no int objects of the harness are allocated and kept while measuring.
    victims = array("q", (rng.randrange(entries) for _ in range(total - entries)))
    live = array("q", range(entries))
    index: list[set[bytes] | None] = [None] * BUCKET_COUNT
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for position in range(entries):
        bucket = buckets[position]
        bucket_keys = index[bucket]
        if bucket_keys is None:
            bucket_keys = index[bucket] = set()
        bucket_keys.add(keys[position])
    after_fill = (tracemalloc.get_traced_memory()[0] - base) / entries
    worst = after_fill
    samples = 20
    for step, position in enumerate(range(entries, total)):
        slot = victims[step]
        gone = live[slot]
        index[buckets[gone]].remove(keys[gone])
        live[slot] = position
        bucket = buckets[position]
        bucket_keys = index[bucket]
        if bucket_keys is None:
            bucket_keys = index[bucket] = set()
        bucket_keys.add(keys[position])
        if step % (entries * churn // samples) == 0:
            worst = max(worst, (tracemalloc.get_traced_memory()[0] - base) / entries)
    worst = max(worst, (tracemalloc.get_traced_memory()[0] - base) / entries)
    tracemalloc.stop()
    return after_fill, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    parser.add_argument("--churn", type=int, default=3, help="replacements, in multiples of N")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("entries  keys/bucket  bytes/entry after fill  largest bytes/entry under churn")
    for entries in args.entries:
        after_fill, worst = measure(entries, args.churn, args.seed)
        print(
            f"{entries:>9,}  {entries / BUCKET_COUNT:>10.1f}  {after_fill:>22.1f}  {worst:>31.1f}"
        )


if __name__ == "__main__":
    main()
