"""CPU instructions per command on a node's request path, counted by callgrind: deterministic.

Run from the checkout: ``python -m benchmarks.dispatch_cost [--baseline REV] [--batches 2000]``.

Timing a few microseconds on a shared, noisy machine swings by tens of percent between runs;
counting instructions with ``valgrind --tool=callgrind`` gives the same number twice. For each
case (RESP ``GET``/``SET`` alone and pipelined by 16, native ``get`` pipelined by 16) it runs a
worker under callgrind twice -- with 0 and with ``--batches`` batches -- and reports the
difference divided by the commands served: the cost of bytes in to reply bytes out inside the
node (parsing, dispatch, store, encoding; no sockets). With ``--baseline REV`` the same is
measured for the node of a git revision (a temporary worktree), beside the checkout's own.
Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time

CASES = ("resp get x1", "resp set x1", "resp get x16", "resp set x16", "native get x16")
VALUE = b"x" * 100


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _frame(message: tuple) -> bytes:
    import msgpack

    body = msgpack.packb(message)
    return (len(body) + 1).to_bytes(4, "big") + b"\x01" + body


def _processors():
    """``(process, resp_connection, native_connection)`` for this checkout's node, whichever
    layout it has (the node core, or the node of before it)."""
    import socket

    sock = socket.socket()
    try:
        from gossipcache.drivers.reactor import NATIVE, RESP, ClientReactor, Connection
        from gossipcache.node.config import NodeConfig
        from gossipcache.node.core import NodeCore
        from gossipcache.node.native_session import NativeSession, native_table
        from gossipcache.node.resp_session import RespSession, resp_table

        class Clock:
            def monotonic_ms(self) -> int:
                return time.monotonic_ns() // 1_000_000

            def wall_ms(self) -> int:
                return time.time_ns() // 1_000_000

            timer_ns = staticmethod(time.perf_counter_ns)

        core = NodeCore(NodeConfig(membership_enabled=False), Clock())
        reactor = ClientReactor(core)
        resp = Connection(sock, RESP, RespSession(core, 1, resp_table(core)))
        native = Connection(sock, NATIVE, NativeSession(core, 2, native_table(core)))
    except ImportError:  # the layout before the node core (477ecf6 and earlier)
        from gossipcache.reactor import NATIVE, RESP, ClientReactor, Connection
        from gossipcache.resp_commands import RespDispatcher

        from gossipcache.node import Node, NodeConfig

        node = Node(NodeConfig(membership_enabled=False), time.perf_counter_ns)
        reactor = ClientReactor(node, RespDispatcher(node), lambda: time.time_ns() // 1_000_000)
        resp, native = Connection(sock, RESP, 1), Connection(sock, NATIVE, 2)
    return reactor.process, resp, native


def _case_input(case: str) -> bytes:
    count = 16 if case.endswith("x16") else 1
    if case.startswith("native"):
        return b"".join(_frame((i, "get", b"key:%06d" % i)) for i in range(count))
    if " get " in f" {case} ":
        return b"".join(_command(b"GET", b"key:%06d" % i) for i in range(count))
    return b"".join(_command(b"SET", b"key:%06d" % i, VALUE) for i in range(count))


def work(case: str, batches: int) -> None:
    """The measured body: serve ``batches`` batches of ``case`` (after the same warm-up)."""
    import gossipcache

    print(f"gossipcache from {os.path.realpath(gossipcache.__file__)}", file=sys.stderr)
    process, resp, native = _processors()
    for i in range(1000):
        process(resp, _command(b"SET", b"key:%06d" % i, VALUE))
    data = _case_input(case)
    connection = native if case.startswith("native") else resp
    for _ in range(batches):
        process(connection, data)


def _instructions(case: str, batches: int, checkout: str) -> int:
    """Instructions callgrind counts for one worker run, with ``checkout``'s gossipcache: the
    worker runs in ``checkout`` (first on ``sys.path``), this module comes from PYTHONPATH."""
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
        "-m", "benchmarks.dispatch_cost", "--work", case, "--batches", str(batches),
    ]  # fmt: skip
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": here, "PYTHONHASHSEED": "1"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=checkout)
    origin = next(
        (ln for ln in result.stderr.splitlines() if ln.startswith("gossipcache from ")), ""
    )
    if not origin.startswith(f"gossipcache from {os.path.realpath(checkout)}"):
        raise RuntimeError(f"the worker imported the wrong gossipcache: {origin!r}")
    for line in result.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split()[-1])
    raise RuntimeError(f"no instruction count in callgrind's output:\n{result.stderr[-2000:]}")


def per_command(case: str, batches: int, checkout: str) -> float:
    commands = batches * (16 if case.endswith("x16") else 1)
    full = _instructions(case, batches, checkout)
    empty = _instructions(case, 0, checkout)
    return (full - empty) / commands


@contextlib.contextmanager
def _worktree(revision: str):
    directory = tempfile.mkdtemp(prefix="gossipcache-dispatch-")
    path = os.path.join(directory, "checkout")
    subprocess.run(["git", "worktree", "add", "--detach", path, revision], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", path], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatch_cost")
    parser.add_argument("--baseline", help="also measure the node of this git revision")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.work:
        work(args.work, args.batches)
        return 0
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(_worktree(args.baseline)) if args.baseline else None
        print("| case | instructions per command |" + (" baseline | change |" if baseline else ""))
        print("|---|---:|" + ("---:|---:|" if baseline else ""))
        for case in CASES:
            current = per_command(case, args.batches, here)
            row = f"| {case} | {current:,.0f} |"
            if baseline:
                before = per_command(case, args.batches, baseline)
                row += f" {before:,.0f} | {100 * (current / before - 1):+.1f} % |"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
