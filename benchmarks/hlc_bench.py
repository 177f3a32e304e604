"""Micro-benchmark of the hybrid logical clock: ns per ``now`` / ``observe`` / version compare.

Run: ``.venv/bin/python -m benchmarks.hlc_bench``. Each case runs ``--number`` calls per round
with ``timeit`` and reports the median over ``--rounds`` rounds. The wall reading is a constant
passed in (the clock is sans-IO: reading the system clock is the driver's cost, not this one's),
so ``now`` takes its same-millisecond branch (counter + 1), the common one under load.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from gossipcache.hlc import HybridClock, Version, decode_version, encode_version, make_stamp, newer

WALL_MS = 1_700_000_000_000


def _cases() -> dict[str, tuple[str, dict]]:
    """name -> (statement, namespace). Stamps stay within one ms of ``WALL_MS`` for any round
    (1,000,000 calls carry the counter ~15 ms ahead at most), far inside the 500 ms bound."""
    clock = HybridClock(1)
    remote = make_stamp(WALL_MS, 7)
    a, b = Version(make_stamp(WALL_MS, 3), 1), Version(make_stamp(WALL_MS, 3), 2)
    encoded = encode_version(a)
    namespace = {
        "clock": clock,
        "wall": WALL_MS,
        "remote": remote,
        "a": a,
        "b": b,
        "newer": newer,
        "encoded": encoded,
        "decode_version": decode_version,
    }
    return {
        "now(wall_ms)": ("clock.now(wall)", namespace),
        "observe(stamp, wall_ms)": ("clock.observe(remote, wall)", namespace),
        "newer(a, b)": ("newer(a, b)", namespace),
        "decode_version([stamp, tag])": ("decode_version(encoded)", namespace),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"| call | ns per call (median of {args.rounds} x {args.number:,}) | min | max |")
    print("|---|---:|---:|---:|")
    for name, (statement, namespace) in _cases().items():
        timer = timeit.Timer(statement, globals=namespace)
        per_call_ns = [t / args.number * 1e9 for t in timer.repeat(args.rounds, args.number)]
        print(
            f"| `{name}` | {statistics.median(per_call_ns):.0f} | {min(per_call_ns):.0f} "
            f"| {max(per_call_ns):.0f} |"
        )


if __name__ == "__main__":
    main()
