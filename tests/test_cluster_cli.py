"""``gossipcache cluster``: a local cluster of node processes that starts, reports where each node
is, and stops every node on Ctrl-C."""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time

from gossipcache.cli.cluster import ports_taken
from gossipcache.client.client import SyncClient

START_TIMEOUT_S = 60.0


def _free_runs(count: int) -> tuple[int, int, int]:
    """Three base ports, each followed by ``count`` free ports (TCP and UDP)."""
    rng = random.Random()
    while True:
        bases = [rng.randrange(20_000, 60_000, 100) for _ in range(3)]
        ports = [base + i for base in bases for i in range(count)]
        if len(set(ports)) == len(ports) and not ports_taken(ports):
            return bases[0], bases[1], bases[2]


def _cluster_command(count: int, bases: tuple[int, int, int], log_dir) -> list[str]:
    return [
        sys.executable, "-m", "gossipcache", "cluster", "--nodes", str(count),
        "--base-port", str(bases[0]), "--resp-base-port", str(bases[1]),
        "--metrics-base-port", str(bases[2]), "--max-memory", "16MiB", "--log-dir", str(log_dir),
    ]  # fmt: skip


def _read_until_ready(process: subprocess.Popen) -> str:
    output = ""
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ctrl-C stops the cluster" not in output:  # the last line of the ready report
        assert process.poll() is None, f"the cluster command exited: {output}"
        assert time.monotonic() < deadline, f"not ready in time: {output}"
        readable, _, _ = select.select([process.stdout], [], [], 0.5)
        if readable:
            output += os.read(process.stdout.fileno(), 65536).decode()
    return output


def test_a_local_cluster_starts_sees_itself_and_stops_on_ctrl_c(tmp_path) -> None:
    bases = _free_runs(3)
    process = subprocess.Popen(
        _cluster_command(3, bases, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output = _read_until_ready(process)
        for index in range(3):
            assert f"127.0.0.1:{bases[0] + index}" in output
            assert f"127.0.0.1:{bases[1] + index}" in output
        with SyncClient(f"127.0.0.1:{bases[0] + 2}") as client:
            members = client.members()
        assert sorted(m["address"] for m in members if m["state"] == "alive") == [
            f"127.0.0.1:{bases[0] + index}" for index in range(3)
        ]
        # A fresh cluster key, not the public development key.
        assert (tmp_path / "cluster.key").stat().st_mode & 0o777 == 0o600
        assert "development key" not in (tmp_path / "node-1.log").read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:  # a failed assertion: let the supervisor stop its nodes
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    # Every node is gone: its ports are free again.
    ports = [base + i for base in bases for i in range(3)]
    deadline = time.monotonic() + 10
    while ports_taken(ports):
        assert time.monotonic() < deadline, f"ports still held: {ports_taken(ports)}"
        time.sleep(0.1)


def test_bad_arguments_and_busy_ports_are_clear_errors(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gossipcache", "cluster", "--nodes", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "--nodes must be between" in result.stderr
    bases = _free_runs(2)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a node binds
        busy.bind(("127.0.0.1", bases[1] + 1))
        busy.listen(1)
        result = subprocess.run(
            _cluster_command(2, bases, tmp_path), capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 2 and f"ports already in use: [{bases[1] + 1}]" in result.stderr


def test_nodes_do_not_outlive_a_killed_supervisor(tmp_path) -> None:
    bases = _free_runs(2)
    process = subprocess.Popen(
        _cluster_command(2, bases, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        _read_until_ready(process)
    finally:
        process.kill()  # SIGKILL: the supervisor cannot stop anything itself
        process.wait()
    ports = [base + i for base in bases for i in range(2)]
    deadline = time.monotonic() + 15
    while ports_taken(ports):  # the kernel told each node to leave, and it did
        assert time.monotonic() < deadline, f"nodes outlived the supervisor: {ports_taken(ports)}"
        time.sleep(0.1)
