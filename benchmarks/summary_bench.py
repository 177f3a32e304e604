"""Anti-entropy summaries benchmark: cost per update, memory, and bytes to find differing buckets.

    python -m benchmarks.summary_bench [--updates 200000] [--entries 200000]

- time per operation (CPU time of this thread, ``time.thread_time``, best of 3): ``entry_digest``
  of a 16-byte key, ``add`` / ``remove`` / ``replace`` with precomputed digests, and a full
  ``rebuild`` per entry, plus the longest step of a sliced rebuild with the default budget;
- memory: the structure's arrays and their object headers (``sys.getsizeof``);
- bytes: for k buckets made to differ between two replicas (k random buckets, seed 1), the sums
  the two-level descent exchanges (root, group sums, the bucket sums of each differing group,
  and the requested group numbers), as raw 8-byte words and msgpack-encoded.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import msgpack

from gossipcache.placement import BUCKET_COUNT, bucket_of
from gossipcache.store.summaries import (
    REBUILD_STEP_ENTRIES_DEFAULT,
    BucketSummaries,
    begin_rebuild,
    entry_digest,
    rebuild,
)


def make_entries(count: int, seed: int = 1) -> list[tuple[bytes, int, int | None, bool]]:
    rng = random.Random(seed)
    return [
        (
            b"key:%012d" % rng.getrandbits(40),
            rng.getrandbits(128),
            rng.choice((None, 1_700_000_000_000 + rng.getrandbits(20))),
            rng.random() < 0.05,
        )
        for _ in range(count)
    ]


def best_ns_per_op(run, count: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        run()
        best = min(best, time.thread_time() - start)
    return best / count * 1e9


def bench_updates(entries: list) -> dict[str, float]:
    buckets = [bucket_of(e[0]) for e in entries]
    digests = [entry_digest(*e) for e in entries]
    pairs = list(zip(buckets, digests, strict=True))
    count = len(entries)

    def digest_all() -> None:
        for entry in entries:
            entry_digest(*entry)

    summaries = BucketSummaries()

    def add_all() -> None:
        add = summaries.add
        for bucket, digest in pairs:
            add(bucket, digest)

    def replace_all() -> None:
        replace = summaries.replace
        for bucket, digest in pairs:
            replace(bucket, digest, digest ^ 1)

    def remove_all() -> None:
        remove = summaries.remove
        for bucket, digest in pairs:
            remove(bucket, digest)

    result = {"entry_digest": best_ns_per_op(digest_all, count)}
    # add, then replace, then remove: each run leaves the structure as the next one needs it.
    times: dict[str, list[float]] = {"add": [], "replace": [], "remove": []}
    for _ in range(3):
        times["add"].append(best_ns_per_op(add_all, count, repeats=1))
        times["replace"].append(best_ns_per_op(replace_all, count, repeats=1))
        pairs = [(bucket, digest ^ 1) for bucket, digest in pairs]
        times["remove"].append(best_ns_per_op(remove_all, count, repeats=1))
        pairs = [(bucket, digest ^ 1) for bucket, digest in pairs]
    assert summaries == BucketSummaries()
    result.update({name: min(values) for name, values in times.items()})
    result["rebuild per entry"] = best_ns_per_op(lambda: rebuild(entries), count)
    return result


def longest_rebuild_step_ms(entries: list) -> float:
    build = begin_rebuild(entries)
    longest = 0.0
    while not build.done:
        start = time.thread_time()
        build.step(REBUILD_STEP_ENTRIES_DEFAULT)
        longest = max(longest, time.thread_time() - start)
    return longest * 1e3


def memory_bytes(summaries: BucketSummaries) -> int:
    return sys.getsizeof(summaries) + sum(
        sys.getsizeof(getattr(summaries, name))
        for name in ("_bucket_sums", "_bucket_counts", "_group_sums")
    )


def exchange_bytes(mine: BucketSummaries, theirs: BucketSummaries) -> tuple[int, int, int, int]:
    """(differing buckets found, differing groups, raw bytes, msgpack bytes) of one descent:
    both roots; their group sums; the numbers of the differing groups; those groups' sums."""
    messages: list[object] = [mine.root(), theirs.root()]
    found: list[int] = []
    groups: list[int] = []
    if mine.root() != theirs.root():
        messages.append(theirs.group_sums())
        groups = mine.differing_groups(theirs.group_sums())
        messages.append(groups)
        for group in groups:
            bucket_sums = theirs.bucket_sums(group)
            messages.append(bucket_sums)
            found += mine.differing_buckets(group, bucket_sums)
    raw = sum(8 * len(m) if isinstance(m, list) else 8 for m in messages)
    packed = sum(len(msgpack.packb(m)) for m in messages)
    return len(found), len(groups), raw, packed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args(argv)

    entries = make_entries(args.updates)
    print(f"ns per operation ({args.updates} entries, best of 3):")
    for name, ns in bench_updates(entries).items():
        print(f"  {name:>18}: {ns:8.0f}")
    rebuild_entries = make_entries(args.entries, seed=2)
    print(
        f"longest sliced-rebuild step ({REBUILD_STEP_ENTRIES_DEFAULT} entries): "
        f"{longest_rebuild_step_ms(rebuild_entries):.2f} ms"
    )

    base = rebuild(rebuild_entries)
    print(f"memory: {memory_bytes(base)} bytes (arrays' payload {base.size_bytes()})")
    print("k differing buckets | found | groups | raw bytes | msgpack bytes")
    rng = random.Random(1)
    for k in (0, 1, 10, 100, 1000, BUCKET_COUNT):
        other = rebuild(rebuild_entries)
        for bucket in rng.sample(range(BUCKET_COUNT), k):
            other.add(bucket, rng.getrandbits(64) | 1)
        found, groups, raw, packed = exchange_bytes(base, other)
        assert found == k
        print(f"{k:>19} | {found:>5} | {groups:>6} | {raw:>9} | {packed:>13}")


if __name__ == "__main__":
    main()
