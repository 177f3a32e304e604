"""File descriptors (issue: hardening, item 4): the caps are shared out to fit the open-files
limit, running out of descriptors pauses accepting for a back-off instead of spinning, and a
node under a low limit stays responsive with more idle clients than it can hold."""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from test_cluster_processes import free_ports

from gossipcache.clock import ManualClock
from gossipcache.drivers import reactor as reactor_module
from gossipcache.drivers.descriptors import (
    CLIENT_CONNECTIONS_MIN,
    DESCRIPTORS_RESERVED,
    METRICS_CONNECTIONS_MAX,
    plan_descriptors,
)
from gossipcache.drivers.reactor import RESP, ClientReactor
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore


def test_caps_that_fit_the_limit_are_kept() -> None:
    plan = plan_descriptors(1 << 20, 10_000, 1024, 256)
    assert (plan.connections_max, plan.peer_incoming_max, plan.peer_outgoing_max) == (
        10_000,
        1024,
        256,
    )
    assert plan.metrics_connections_max == METRICS_CONNECTIONS_MAX


@pytest.mark.parametrize("soft_limit", [256, 1024, 4096, 11_000])
def test_caps_are_lowered_to_fit_a_low_limit(soft_limit: int) -> None:
    plan = plan_descriptors(soft_limit, 10_000, 1024, 256)
    assert plan.needed <= soft_limit
    assert plan.connections_max >= CLIENT_CONNECTIONS_MIN
    assert plan.peer_incoming_max >= 1 and plan.peer_outgoing_max >= 1
    assert plan.metrics_connections_max >= 1


def test_a_limit_too_low_for_any_client_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ulimit -n"):
        plan_descriptors(DESCRIPTORS_RESERVED + 8, 10_000, 1024, 256)


class _OutOfDescriptors(socket.socket):
    """A listener whose accept always fails as a process out of descriptors does."""

    attempts = 0

    def accept(self):
        type(self).attempts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_running_out_of_descriptors_pauses_accepting_and_logs_once(caplog) -> None:
    clock = ManualClock()
    core = NodeCore(NodeConfig(membership_enabled=False), clock)
    reactor = ClientReactor(core)
    listener = _OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    reactor.add_listener(listener, RESP)
    caplog.set_level(logging.WARNING, logger="gossipcache.reactor")
    try:
        reactor._accept(listener, RESP)
        assert core.metrics.accept_failures == 1
        resume_ms = reactor._accept_resume_ms
        assert resume_ms == clock.monotonic_ms() + reactor_module.ACCEPT_BACKOFF_S * 1000
        # Paused: passes before the back-off ends do not touch the listener.
        while clock.monotonic_ms() < resume_ms - 1:
            clock.advance(1)
            reactor._finish_pass()
        assert reactor._accept_resume_ms == resume_ms
        # After it, accepting resumes; each new failure doubles the pause, up to the max.
        pauses_ms = []
        for _ in range(8):
            clock.advance(reactor._accept_resume_ms - clock.monotonic_ms())
            reactor._finish_pass()
            assert reactor._accept_resume_ms == 0
            reactor._accept(listener, RESP)
            pauses_ms.append(reactor._accept_resume_ms - clock.monotonic_ms())
        assert pauses_ms == sorted(pauses_ms)
        assert pauses_ms[-1] == reactor_module.ACCEPT_BACKOFF_S_MAX * 1000
        assert _OutOfDescriptors.attempts == 9  # one attempt per pause, no spinning
        # Nine failures within the log interval: one line.
        lines = [r for r in caplog.records if "accept failed" in r.getMessage()]
        assert len(lines) == 1
    finally:
        listener.close()


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _limit_open_files(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def test_a_node_under_a_low_open_files_limit_stays_responsive(tmp_path) -> None:
    """1,100 idle clients against a node whose limit is 256: it lowers its caps at start (and
    says so), refuses the excess at accept, keeps serving the clients it holds and /metrics,
    and does not spin."""
    port, resp_port, metrics_port = free_ports(3)
    log_path = tmp_path / "node.log"
    command = [
        sys.executable, "-m", "gossipcache", "node", "--port", str(port),
        "--resp-port", str(resp_port), "--metrics-port", str(metrics_port), "--no-membership",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        node = subprocess.Popen(command, stdout=log, stderr=log, preexec_fn=_limit_open_files(256))
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                first = socket.create_connection(("127.0.0.1", resp_port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and node.poll() is None, log_path.read_text()
                time.sleep(0.05)
        for _ in range(1100):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", resp_port))
            clients.append(client)
        cpu_before = _cpu_s(node.pid)
        time.sleep(1.0)  # a measurement window on a real process, not a wait for a state
        busy_s = _cpu_s(node.pid) - cpu_before
        first.sendall(b"PING\r\n")
        assert first.recv(100) == b"+PONG\r\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        refused = next(
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("gossipcache_connections_refused_total ")
        )
        assert refused > 0
        assert busy_s < 0.5, f"the node spun at {busy_s:.2f} s of CPU per second"
    finally:
        for client in clients:
            client.close()
        node.kill()
        node.wait()
    text = log_path.read_text()
    assert "--connections-max lowered from 10000" in text
    assert text.count("accept failed") <= 1


def test_a_throttled_warning_is_logged_once_per_interval_with_its_count(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="gossipcache.reactor")
    throttled = reactor_module.ThrottledLog(10.0)
    for now_ms in range(0, 10_000, 100):  # 100 warnings in the first 10 s
        throttled.warning(now_ms, "closed %s", "x")
    throttled.warning(10_000, "closed %s", "y")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "closed x [1 time(s) in the last 10 s]",
        "closed y [100 time(s) in the last 10 s]",
    ]


def test_a_successful_accept_resets_the_back_off() -> None:
    core = NodeCore(NodeConfig(membership_enabled=False), ManualClock())
    reactor = ClientReactor(core)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    reactor.add_listener(listener, RESP)
    client = socket.create_connection(listener.getsockname())
    try:
        reactor._accept_backoff_s = reactor_module.ACCEPT_BACKOFF_S_MAX
        reactor._accept(listener, RESP)
        assert core.metrics.connections_accepted == 1
        assert reactor._accept_backoff_s == reactor_module.ACCEPT_BACKOFF_S
    finally:
        client.close()
        for connection in list(reactor._connections.values()):
            reactor._close(connection)
        listener.close()
