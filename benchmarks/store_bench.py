"""Store benchmark: measured per-entry overhead and the longest pause with a million entries.

    python -m benchmarks.store_bench [--entries 1000000] [--json]

Overhead: tracemalloc's count of bytes allocated by inserting N entries, minus the key and value
bytes, over N. It includes the bytes objects' headers, the store's dict slots and the eviction
policy's per-key metadata; ``ENTRY_OVERHEAD_BYTES`` must cover the largest figure.

Pauses: the longest single call into the store (put with eviction, get, expire_tick) and the
longest cyclic-GC run (timed through ``gc.callbacks``) while a store of N entries is filled past
its limit and half the entries carry TTLs, plus the time of one forced full collection.

Times are this thread's CPU time (``time.thread_time_ns``), not wall time: on a shared machine a
call can be descheduled for tens of milliseconds, which is the machine's pause, not the store's.
Wall-clock maxima are reported beside them for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

from gossipcache.store import ENTRY_OVERHEAD_BYTES, Store
from gossipcache.store.eviction import POLICY_NAMES

KEY_SIZE_BYTES = 16
VALUE_SIZE_BYTES = 100


def key_of(i: int) -> bytes:
    return b"key:%012d" % i


def measure_overhead_bytes(policy: str, entries: int, with_ttl: bool) -> float:
    """Allocated bytes per entry beyond key and value, for ``entries`` entries."""
    keys = [key_of(i) for i in range(entries)]
    values = [b"v" * VALUE_SIZE_BYTES for _ in range(entries)]  # one shared object: not counted
    payload_bytes = sum(len(k) for k in keys) + len(values[0]) * entries
    store = Store(10**12, policy)
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for key in keys:
        # A fresh value object per entry, as a network read produces.
        store.put(key, bytes(values[0]), 0, 10**9 if with_ttl else None)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Keys were allocated before tracing started: add their real size (header + bytes) back.
    key_object_bytes = sum(k.__sizeof__() for k in keys)
    return (after - before + key_object_bytes - payload_bytes) / entries


def measure_pauses(policy: str, entries: int) -> dict[str, float]:
    """Longest store call and GC run (ms) while filling a store of ``entries`` past its limit."""
    limit = entries * (KEY_SIZE_BYTES + VALUE_SIZE_BYTES + ENTRY_OVERHEAD_BYTES)
    store = Store(limit, policy)
    # As the node does at start: move the store's few long-lived containers (and everything else
    # alive now) out of the collector's generations, so a full collection never walks them.
    gc.freeze()
    gc_started_ns = 0
    gc_pause_ns_max = 0

    def on_gc(phase: str, info: dict) -> None:
        nonlocal gc_started_ns, gc_pause_ns_max
        if phase == "start":
            gc_started_ns = time.thread_time_ns()
        else:
            gc_pause_ns_max = max(gc_pause_ns_max, time.thread_time_ns() - gc_started_ns)

    gc.callbacks.append(on_gc)
    call_ns_max = 0
    call_wall_ns_max = 0
    calls_over_10ms = 0
    tick_ns_max = 0
    value = b"v" * VALUE_SIZE_BYTES
    now_ms = 0
    try:
        for i in range(entries * 3 // 2):  # a third of the writes evict
            now_ms = i // 1000  # 1000 writes per virtual millisecond
            started = time.thread_time_ns()
            started_wall = time.perf_counter_ns()
            store.put(key_of(i), bytes(value), now_ms, 50 if i % 2 else None)
            store.get(key_of(i // 2), now_ms)
            call_ns = time.thread_time_ns() - started
            call_wall_ns_max = max(call_wall_ns_max, time.perf_counter_ns() - started_wall)
            call_ns_max = max(call_ns_max, call_ns)
            calls_over_10ms += call_ns > 10_000_000
            if i % 10_000 == 0:
                started = time.thread_time_ns()
                store.expire_tick(now_ms)
                tick_ns_max = max(tick_ns_max, time.thread_time_ns() - started)
        started = time.perf_counter_ns()
        gc.collect()
        full_collection_ns = time.perf_counter_ns() - started
        gc_pause_ns_max_frozen = gc_pause_ns_max
        # What freezing saves: the same collection with the store's containers in view.
        gc.unfreeze()
        started = time.perf_counter_ns()
        gc.collect()
        unfrozen_collection_ns = time.perf_counter_ns() - started
    finally:
        gc.callbacks.remove(on_gc)
    return {
        "store_call_ms_max": call_ns_max / 1e6,
        "expire_tick_ms_max": tick_ns_max / 1e6,
        "gc_pause_ms_max": gc_pause_ns_max_frozen / 1e6,
        "store_calls_over_10ms": calls_over_10ms,
        "store_call_wall_ms_max": call_wall_ns_max / 1e6,
        "full_collection_ms": full_collection_ns / 1e6,
        "full_collection_unfrozen_ms": unfrozen_collection_ns / 1e6,
        "entries": len(store),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_bench")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--overhead-entries", type=int, default=200_000)
    parser.add_argument("--policies", default=",".join(POLICY_NAMES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    for policy in args.policies.split(","):
        row = {
            "overhead_bytes": measure_overhead_bytes(policy, args.overhead_entries, False),
            "overhead_bytes_ttl": measure_overhead_bytes(policy, args.overhead_entries, True),
        }
        row.update(measure_pauses(policy, args.entries))
        results[policy] = row
        if not args.json:
            print(
                f"{policy:9} overhead {row['overhead_bytes']:6.1f} B/entry "
                f"({row['overhead_bytes_ttl']:6.1f} with TTL)  "
                f"longest store call {row['store_call_ms_max']:6.2f} ms "
                f"({row['store_calls_over_10ms']} over 10 ms)  "
                f"expire tick {row['expire_tick_ms_max']:5.2f} ms  "
                f"longest GC {row['gc_pause_ms_max']:5.2f} ms  "
                f"full gc.collect() {row['full_collection_ms']:5.2f} ms "
                f"(unfrozen {row['full_collection_unfrozen_ms']:5.2f} ms)",
                flush=True,
            )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
