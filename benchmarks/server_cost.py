"""User-space instructions per operation of a whole server process under redis-benchmark,
counted by callgrind: the node against itself at another git revision, and against Redis.

Run from the checkout: ``python -m benchmarks.server_cost [--baseline REV] [--pipeline 1 16]
[--requests 10000 40000]``. Needs valgrind, redis-server and redis-benchmark.

Wall-clock CPU per operation swings by tens of percent on a shared machine; callgrind's
instruction count of the server process does not. For each pipeline depth P and each server
(this checkout's node, ``--baseline``'s node from a temporary git worktree, ``redis-server``) it
starts the server under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=1``), waits until it
answers PING, runs ``redis-benchmark -c 50 -t set,get -d 100 -P P -n N1``, stops the server with
SIGINT (both shut down gracefully and callgrind writes its totals at exit), and does it all again
with ``-n N2``. ``-t set,get`` runs N SETs and then N GETs, so the difference of the two totals
over ``2 * (N2 - N1)`` operations is the cost of one operation: start-up, connection set-up and
shutdown cancel out. Counted: the server's user-space instructions (Trio loop or Redis' event
loop, parsing, store, replies); not the kernel's (syscalls, TCP).

Under valgrind a server runs some 50-200x slower, so each event-loop pass finds more ready
connections than at full speed: the numbers compare builds run in the same regime, they are not
the cost at full speed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from benchmarks.compare import (
    HOST,
    REDIS_BENCHMARK_CLIENTS,
    REDIS_BENCHMARK_VALUE_SIZE_BYTES,
    REPO_ROOT,
    Server,
    Settings,
    _answers_ping,
    baseline_label,
    baseline_worktree,
    check_import_origin,
    check_process_started_in,
    free_port,
    import_origin,
    parse_redis_benchmark_csv,
    redis_argv,
    redis_benchmark_argv,
)

PIPELINES = (1, 16)
#: redis-benchmark -n of the two runs per server; the measured operations are 2 x the difference.
REQUESTS = (10_000, 40_000)
#: redis-benchmark ``-t set,get`` runs -n of each test.
TESTS_PER_RUN = 2
#: Python under callgrind takes ~40 s to start on a loaded 2-core machine.
START_TIMEOUT_S = 600.0
START_POLL_INTERVAL_S = 0.5
#: One redis-benchmark run against a server under callgrind (-P 1, -n 40000: ~3 minutes).
BENCHMARK_TIMEOUT_S = 1800.0
#: From SIGINT to exit, callgrind's dump included.
STOP_TIMEOUT_S = 300.0
REDIS = "redis"


@dataclass(frozen=True)
class Target:
    """A server to measure: how to start it (given free native and RESP ports) and where."""

    name: str
    argv: Callable[[int, int], list[str]]
    cwd: str | None = None
    env: dict[str, str] | None = None
    #: A gossipcache checkout the process must import its code from (None for Redis).
    checkout: str | None = None


def node_target(name: str, checkout: str) -> Target:
    """The node of ``checkout``, run there with ``checkout`` first on ``sys.path``; fails now
    unless ``import gossipcache`` there is ``checkout``'s package."""
    env = {**os.environ, "PYTHONPATH": checkout, "PYTHONHASHSEED": "1"}
    origin = import_origin(checkout, env)
    check_import_origin(name, origin, checkout)
    _log(f"{name}: gossipcache from {origin}")

    def argv(native_port: int, resp_port: int) -> list[str]:
        return [
            sys.executable, "-m", "gossipcache", "node", "--no-membership", "--host", HOST,
            "--port", str(native_port), "--resp-port", str(resp_port), "--max-memory", "256MiB",
        ]  # fmt: skip

    return Target(name, argv, checkout, env, checkout)


def redis_target() -> Target:
    return Target(REDIS, lambda _native_port, resp_port: redis_argv(Settings(), resp_port))


def callgrind_total(out_path: str) -> int:
    """The ``totals:`` line of a callgrind output file (``Collected`` in valgrind's summary):
    written last, at the process's exit, so its presence also says the file is complete."""
    with open(out_path) as out:
        for line in out:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"{out_path} has no totals line: callgrind did not finish writing it")


@contextmanager
def under_callgrind(target: Target, out_path: str, log_path: str) -> Iterator[Server]:
    """``target`` started under callgrind, once it answers PING on its RESP port; killed on the
    way out if it is still running (a measurement stops it itself, with ``stop``)."""
    native_port, resp_port = free_port(), free_port()
    argv = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_path}",
        *target.argv(native_port, resp_port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=target.cwd, env=target.env
        )
    server = Server(target.name, process, resp_port, native_port)
    try:
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(resp_port):
            if process.poll() is not None or time.monotonic() > deadline_s:
                raise RuntimeError(
                    f"{target.name} did not start (log {log_path}):\n{_tail(log_path)}"
                )
            time.sleep(START_POLL_INTERVAL_S)
        if target.checkout is not None:
            check_process_started_in(server, target.checkout, target.checkout)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _tail(log_path: str) -> str:
    with open(log_path, "rb") as log:
        return log.read()[-2000:].decode(errors="replace")


def stop(server: Server, log_path: str) -> None:
    """SIGINT, as Ctrl-C would: the node and Redis both shut down and exit 0, and callgrind
    writes its output file on the way out."""
    server.process.send_signal(signal.SIGINT)
    try:
        returncode = server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{server.name} still runs {STOP_TIMEOUT_S:.0f} s after SIGINT"
        ) from None
    if returncode != 0:
        raise RuntimeError(f"{server.name} exited with {returncode} on SIGINT:\n{_tail(log_path)}")


def instructions(target: Target, pipeline: int, requests: int, workdir: str) -> int:
    """The server's instructions over start, one ``redis-benchmark -n requests`` run, stop."""
    label = f"{target.name.replace('/', '_')}-P{pipeline}-n{requests}"
    out_path, log_path = f"{workdir}/{label}.callgrind", f"{workdir}/{label}.log"
    started_s = time.monotonic()
    with under_callgrind(target, out_path, log_path) as server:
        argv = redis_benchmark_argv(Settings(requests=requests), server.resp_port, pipeline)
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=BENCHMARK_TIMEOUT_S, check=False,
        )  # fmt: skip
        rates = parse_redis_benchmark_csv(result.stdout)  # raises unless both tests ran
        stop(server, log_path)
    total = callgrind_total(out_path)
    _log(
        f"{target.name} -P {pipeline} -n {requests}: {total:,} instructions "
        f"(SET {rates['SET']:,.0f} / GET {rates['GET']:,.0f} req/s under callgrind; "
        f"{time.monotonic() - started_s:.0f} s)"
    )
    return total


def per_operation(target: Target, pipeline: int, requests: tuple[int, int], workdir: str) -> float:
    fewer, more = (instructions(target, pipeline, n, workdir) for n in requests)
    return (more - fewer) / (TESTS_PER_RUN * (requests[1] - requests[0]))


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _percent(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.1f} %"


def measure(
    baseline: str | None, pipelines: list[int], requests: tuple[int, int], keep: str | None
) -> None:
    """Measure and print the table, row by row."""
    with ExitStack() as stack:
        if keep:
            os.makedirs(keep, exist_ok=True)
            workdir = keep
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gossipcache-cost-"))
        after = node_target("gossipcache", str(REPO_ROOT))
        before = None
        if baseline:
            path, short_rev = stack.enter_context(baseline_worktree(baseline, _log))
            before = node_target(baseline_label(short_rev), path)
        redis = redis_target()
        operations = TESTS_PER_RUN * (requests[1] - requests[0])
        print(
            f"User-space instructions per operation (callgrind), `PYTHONHASHSEED=1`: server total "
            f"at -n {requests[1]:,} minus at -n {requests[0]:,}, over {operations:,} operations "
            f"(`-t set,get` runs -n SETs and -n GETs).\n"
        )
        print(
            "| redis-benchmark | after (checkout) |"
            + (f" before ({baseline}) | change |" if before else "")
            + " Redis | after / Redis |"
            + (" before / Redis |" if before else "")
        )
        print(
            "|---|---:|"
            + ("---:|---:|" if before else "")
            + "---:|---:|"
            + ("---:|" if before else "")
        )
        for pipeline in pipelines:
            new = per_operation(after, pipeline, requests, workdir)
            old = per_operation(before, pipeline, requests, workdir) if before else None
            reference = per_operation(redis, pipeline, requests, workdir)
            flags = (
                f"`-c {REDIS_BENCHMARK_CLIENTS} -t set,get -d {REDIS_BENCHMARK_VALUE_SIZE_BYTES}"
                f" -P {pipeline}`"
            )
            row = f"| {flags} | {new:,.0f} |"
            if old is not None:
                row += f" {old:,.0f} | {_percent(new, old)} |"
            row += f" {reference:,.0f} | {new / reference:.2f} |"
            if old is not None:
                row += f" {old / reference:.2f} |"
            print(row, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--baseline", metavar="REV", help="also measure the node of this revision")
    parser.add_argument("--pipeline", type=int, nargs="+", default=list(PIPELINES))
    parser.add_argument("--requests", type=int, nargs=2, default=list(REQUESTS),
                        metavar=("N1", "N2"), help="redis-benchmark -n of the two runs")  # fmt: skip
    parser.add_argument("--keep", metavar="DIR",
                        help="keep callgrind's output files and the servers' logs in DIR")  # fmt: skip
    args = parser.parse_args(argv)
    requests = tuple(args.requests)
    if not 0 < requests[0] < requests[1] or min(args.pipeline) < 1:
        parser.error("need 0 < N1 < N2 and pipeline depths >= 1")

    def stop_on_sigterm(signal_number: int, _frame: object) -> None:
        raise SystemExit(128 + signal_number)  # servers and the worktree are cleaned up

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started_s = time.monotonic()
    try:
        measure(args.baseline, args.pipeline, requests, args.keep)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"server_cost: {error}", file=sys.stderr)
        return 2
    print(f"\n({time.monotonic() - started_s:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
