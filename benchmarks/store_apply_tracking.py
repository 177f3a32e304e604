"""Nanoseconds per ``Store.apply`` with and without bucket tracking (``track_buckets``, issue 10).

The replicated write path's store call: each run overwrites every key of a prefilled store with
a newer version (value 100 bytes; half the keys with an expiry, as replicated writes carry one
when the client set a TTL), so each apply replaces a live value: two digests, one ``bucket_of``
and one summary ``replace`` when tracking. Medians of 5 runs, each over all keys, in CPU time of this thread (the machine is shared)::

    .venv/bin/python -m benchmarks.store_apply_tracking
"""

from __future__ import annotations

import argparse
import statistics
import time

from gossipcache.store import Store

NOW_MS = 1_700_000_000_000


def per_apply_ns(track_buckets: bool, keys: int, runs: int) -> list[float]:
    store = Store(
        1 << 30, expired_tombstone_ms=60_000, record_evictions=True, track_buckets=track_buckets
    )
    names = [b"key:%d" % index for index in range(keys)]
    expiries = [NOW_MS + 3_600_000 if index % 2 else None for index in range(keys)]
    value = b"v" * 100
    apply = store.apply
    stamp = 1
    for name, expires_at_ms in zip(names, expiries, strict=True):
        apply(name, value, stamp << 64, expires_at_ms, NOW_MS)
    results = []
    for _ in range(runs):
        stamp += 1
        version = stamp << 64
        started = time.thread_time_ns()
        for name, expires_at_ms in zip(names, expiries, strict=True):
            apply(name, value, version, expires_at_ms, NOW_MS)
        results.append((time.thread_time_ns() - started) / keys)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for track_buckets in (False, True):
        runs = per_apply_ns(track_buckets, args.keys, args.runs)
        print(
            f"track_buckets={track_buckets!s:5}  median {statistics.median(runs):6.0f} ns/apply  "
            f"(runs: {', '.join(f'{ns:.0f}' for ns in runs)})"
        )


if __name__ == "__main__":
    main()
