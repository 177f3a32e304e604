"""``gossipcache cluster``: a local cluster of node processes on 127.0.0.1, for development.

Starts ``--nodes`` node processes, each on its own native, RESP and metrics ports (consecutive
from the base ports), all joining through the first, with a fresh cluster key (so no node runs
on the public development key), waits until every node answers and sees the whole cluster,
prints how to reach each one, and on Ctrl-C or SIGTERM stops them all: a graceful leave first,
then, past ``STOP_WAIT_S``, a kill. If a node exits on its own, the others are stopped too and
the command fails, showing the end of that node's log.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Most nodes one command starts (each is a Python process of ~30 MiB before data).
NODES_MAX = 32
#: How long every node may take to answer and to see all the others.
READY_TIMEOUT_S = 30.0
#: How long the nodes have to leave gracefully after SIGTERM before they are killed.
STOP_WAIT_S = 5.0
#: How often the supervisor checks on its nodes.
POLL_S = 0.1
#: Lines of a failed node's log shown.
LOG_TAIL_LINES = 20

EXIT_OK = 0
EXIT_ERROR = 2
#: prctl option: the signal a child gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster", help="run a local cluster of node processes on 127.0.0.1 (Ctrl-C stops it)"
    )
    parser.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    parser.add_argument("--base-port", type=int, default=7000,
                        help="native port of the first node; the others follow")  # fmt: skip
    parser.add_argument("--resp-base-port", type=int, default=6379,
                        help="RESP port of the first node; the others follow")  # fmt: skip
    parser.add_argument("--metrics-base-port", type=int, default=9100,
                        help="metrics port of the first node; the others follow")  # fmt: skip
    parser.add_argument("--max-memory", default="256MiB", help="each node's memory limit")
    parser.add_argument("--eviction", default="sieve", help="each node's eviction policy")
    parser.add_argument("--log-dir", default=None,
                        help="where the nodes' logs go (default: a new temporary directory)")  # fmt: skip
    parser.set_defaults(run=run_cluster)


def ports_taken(ports: list[int]) -> list[int]:
    """The ports of ``ports`` a node could not bind: something listens on them (TCP) or holds
    them (UDP). Closed connections in TIME_WAIT do not count, as for the node (SO_REUSEADDR)."""
    taken = []
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    taken.append(port)
                    break
    return taken


def _stop_with_parent() -> None:
    """In a node process before it starts: have the kernel send it SIGTERM (a graceful leave)
    if the supervisor dies, even by SIGKILL, so no node outlives its cluster command. Linux
    only (prctl PR_SET_PDEATHSIG); elsewhere a killed supervisor leaves its nodes running."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _node_command(args: argparse.Namespace, index: int, key_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "gossipcache", "node",
        "--port", str(args.base_port + index),
        "--resp-port", str(args.resp_base_port + index),
        "--metrics-port", str(args.metrics_base_port + index),
        "--max-memory", args.max_memory, "--eviction", args.eviction,
        "--membership-profile", "local", "--cluster-key-file", str(key_file),
        "--seed", f"127.0.0.1:{args.base_port}",
    ]  # fmt: skip


def _alive_members(port: int) -> int:
    """How many members the node on ``port`` holds alive and ranks in a complete placement
    table (0 if it does not answer yet): a node serves data once its table ranks the others."""
    from ..client.client import SyncClient
    from ..errors import GossipCacheError

    try:
        with SyncClient(f"127.0.0.1:{port}", timeout_s=1.0) as client:
            alive = sum(1 for m in client.members() if m["state"] == "alive")
            stats = client.stats()
    except GossipCacheError:
        return 0
    if stats.get("placement_rebuilding") or stats.get("placement_members", alive) != alive:
        return 0
    return alive


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return "(no log)"


def run_cluster(args: argparse.Namespace) -> int:
    count = args.nodes
    if not 1 <= count <= NODES_MAX:
        print(f"error: --nodes must be between 1 and {NODES_MAX}", file=sys.stderr)
        return EXIT_ERROR
    ports = [
        base + index
        for base in (args.base_port, args.resp_base_port, args.metrics_base_port)
        for index in range(count)
    ]
    if max(ports) > 65535 or min(ports) < 1:
        print("error: the ports do not fit below 65536", file=sys.stderr)
        return EXIT_ERROR
    taken = ports_taken(ports)
    if taken:
        print(f"error: ports already in use: {taken}; pick other base ports", file=sys.stderr)
        return EXIT_ERROR
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="gossipcache-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    key_file = log_dir / "cluster.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    key_file.chmod(0o600)

    def stop_on_signal(signum, frame) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop_on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: list[subprocess.Popen] = []
    try:
        for index in range(count):
            with open(log_dir / f"node-{index + 1}.log", "ab") as log:
                processes.append(
                    subprocess.Popen(
                        _node_command(args, index, key_file),
                        stdout=log,
                        stderr=log,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"),
                        start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
                        preexec_fn=_stop_with_parent,
                    )  # fmt: skip
                )
            if index == 0:
                time.sleep(0.2)  # let the seed bind first: the others join through it
        failed = _wait_ready(processes, args, log_dir)
        if failed is not None:
            return failed
        _print_ready(args, count, log_dir)
        while True:
            for index, process in enumerate(processes):
                if process.poll() is not None:
                    return _node_died(index, process, log_dir)
            time.sleep(POLL_S)
    except _Stop:
        print("\nstopping: each node leaves the cluster, then exits", flush=True)
        return EXIT_OK
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        _stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_ready(processes, args, log_dir: Path) -> int | None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    count = len(processes)
    ready = set()
    while len(ready) < count:
        for index, process in enumerate(processes):
            if process.poll() is not None:
                return _node_died(index, process, log_dir)
            if index not in ready and _alive_members(args.base_port + index) == count:
                ready.add(index)
        if time.monotonic() > deadline:
            late = sorted(set(range(count)) - ready)
            print(
                f"error: nodes {[i + 1 for i in late]} did not see the whole cluster within"
                f" {READY_TIMEOUT_S:.0f} s; logs in {log_dir}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        time.sleep(POLL_S)
    return None


def _print_ready(args, count: int, log_dir: Path) -> None:
    print(f"gossipcache cluster: {count} nodes on 127.0.0.1, ready", flush=True)
    print(f"{'node':<6}{'native':<18}{'redis (RESP)':<18}{'metrics':<32}log")
    for index in range(count):
        native = f"127.0.0.1:{args.base_port + index}"
        resp = f"127.0.0.1:{args.resp_base_port + index}"
        metrics = f"http://127.0.0.1:{args.metrics_base_port + index}/metrics"
        log = log_dir / f"node-{index + 1}.log"
        print(f"{index + 1:<6}{native:<18}{resp:<18}{metrics:<32}{log}")
    seeds = " ".join(f"127.0.0.1:{args.base_port + index}" for index in range(count))
    print(f"seeds for a client (native ports): {seeds}")
    print(f"  {_python()} examples/client.py {seeds}")
    print(f"  gossipcache status --node 127.0.0.1:{args.base_port}")
    print(f"  redis-cli -p {args.resp_base_port} ping   (any node, RESP)")
    print("Ctrl-C stops the cluster", flush=True)


def _python() -> str:
    """This interpreter (it can import gossipcache), relative to the current directory when
    inside it (``.venv/bin/python`` under ``make run``)."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative


def _node_died(index: int, process: subprocess.Popen, log_dir: Path) -> int:
    log = log_dir / f"node-{index + 1}.log"
    print(
        f"error: node {index + 1} exited with code {process.returncode}; the end of {log}:\n"
        f"{_tail(log)}",
        file=sys.stderr,
    )
    return EXIT_ERROR


def _stop_all(processes: list[subprocess.Popen]) -> None:
    """SIGTERM (each node leaves the cluster gracefully), then SIGKILL past ``STOP_WAIT_S``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
