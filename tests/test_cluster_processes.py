"""Five real ``gossipcache node`` processes on loopback: join, crash detection, restart, leave.

Each node runs the ``local`` membership profile and seeds from the first. The test polls
``gossipcache members --json`` on every node until a condition holds or a deadline passes
(polling is how an operator would watch it too); the crash-detection deadline is computed from
the membership configuration, not guessed. Every process is killed at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gossipcache.membership import MembershipConfig
from gossipcache.membership.suspicion import suspicion_timeout_min_ms

pytestmark = pytest.mark.slow

NODE_COUNT = 5
PROFILE = "local"
CONFIG = MembershipConfig.local()
#: Safety deadline for startup and join (normally a few seconds).
CONVERGE_S_MAX = 30.0
#: A restarted node's *alive* may be missed by gossip (few retransmissions at N = 5); the
#: periodic push-pull repairs that within one interval, twice for a margin.
REJOIN_S_MAX = 2 * CONFIG.push_pull_interval_ms / 1000 + 5
#: A node that got SIGTERM must have left and exited within this long (leave waits <= 1 s).
EXIT_S_MAX = 10.0
POLL_INTERVAL_S = 0.2


def detection_bound_s(config: MembershipConfig, member_count: int) -> float:
    """Worst case from a crash until every survivor holds the member dead, for a healthy cluster.

    - Some survivor probes the crashed member within two rounds of its shuffled round-robin
      over the other ``member_count - 1`` members, and the probe fails by the end of that period;
    - the suspicion then lasts at most the Lifeguard maximum (no confirmations at all);
    - the *dead* update then reaches everyone within a few gossip intervals: one more probe
      interval covers them (and the CLI polling lag).
    """
    period_ms = config.probe_interval_ms
    first_failed_probe_ms = 2 * (member_count - 1) * period_ms
    suspicion_min_ms = suspicion_timeout_min_ms(config.suspicion_mult, member_count, period_ms)
    suspicion_max_ms = config.suspicion_max_timeout_mult * suspicion_min_ms
    return (first_failed_probe_ms + suspicion_max_ms + 2 * period_ms) / 1000


def free_ports(count: int) -> list[int]:
    """Ports free for both TCP and UDP right now (the node binds both on one number)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            if port not in ports:
                ports.append(port)
    return ports


class Cluster:
    """The node processes, by port."""

    def __init__(self, ports: list[int], log_dir: Path) -> None:
        self.ports = ports
        self.seed = f"127.0.0.1:{ports[0]}"
        self.log_dir = log_dir
        self.processes: dict[int, subprocess.Popen] = {}

    def start(self, port: int) -> None:
        command = [
            sys.executable, "-m", "gossipcache", "node", "--port", str(port),
            "--seed", self.seed, "--membership-profile", PROFILE,
        ]  # fmt: skip
        log = open(self.log_dir / f"node-{port}.log", "ab")  # noqa: SIM115 (owned by the process)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.processes[port] = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        log.close()

    def address(self, port: int) -> str:
        """The native address of the node on ``port``."""
        return f"127.0.0.1:{port}"

    def where(self, port: int) -> list[str]:
        """The argv prefix that runs a command where the node on ``port`` can be reached
        (nothing here; a network namespace's ``ip netns exec`` in the fault tests)."""
        return []

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()  # SIGKILL: no leave, no goodbye
        process.wait()

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()

    def views(self) -> dict[int, dict[str, dict]]:
        """Each running node's member list, by address (members it could not report: absent).

        Records for one address: the live one wins over tombstones of earlier processes.
        """
        command = [sys.executable, "-m", "gossipcache", "members", "--json", "--timeout-s", "2"]
        polls = {
            port: subprocess.Popen(
                [*self.where(port), *command, "--node", self.address(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            for port in self.processes
        }
        views = {}
        for port, poll in polls.items():
            output, _ = poll.communicate()
            if poll.returncode != 0:
                continue
            by_address: dict[str, dict] = {}
            for member in json.loads(output):
                kept = by_address.get(member["address"])
                if kept is None or kept["state"] not in ("alive", "suspect"):
                    by_address[member["address"]] = member
            views[port] = by_address
        return views

    def wait_until(self, predicate, deadline_s: float, what: str) -> dict[int, dict[str, dict]]:
        """Poll the views until ``predicate(views)`` holds; fail after ``deadline_s``."""
        give_up = time.monotonic() + deadline_s
        while True:
            views = self.views()
            if len(views) == len(self.processes) and predicate(views):
                return views
            if time.monotonic() > give_up:
                pytest.fail(f"{what}: not within {deadline_s:.1f} s; last views: {views}")
            time.sleep(POLL_INTERVAL_S)  # polling interval, not a wait for an outcome


def state_of(views, address: str) -> set[str]:
    return {view[address]["state"] if address in view else "unknown" for view in views.values()}


@pytest.fixture
def cluster(tmp_path):
    nodes = Cluster(free_ports(NODE_COUNT), tmp_path)
    try:
        yield nodes
    finally:
        nodes.kill_all()


def test_crash_detection_restart_and_leave(cluster: Cluster) -> None:
    for port in cluster.ports:
        cluster.start(port)
    addresses = [f"127.0.0.1:{port}" for port in cluster.ports]

    def all_alive(views) -> bool:
        return all(state_of(views, a) == {"alive"} for a in addresses)

    views = cluster.wait_until(all_alive, CONVERGE_S_MAX, "all five alive everywhere")

    victim_port = cluster.ports[2]
    victim = addresses[2]
    old_id = views[cluster.ports[0]][victim]["id"]
    old_incarnation = views[cluster.ports[0]][victim]["incarnation"]
    cluster.kill(victim_port)
    bound_s = detection_bound_s(CONFIG, NODE_COUNT)
    cluster.wait_until(
        lambda views: state_of(views, victim) == {"dead"}, bound_s, "the crashed node seen dead"
    )

    cluster.start(victim_port)

    def rejoined(views) -> bool:
        return all_alive(views) and all(
            view[victim]["incarnation"] > old_incarnation and view[victim]["id"] != old_id
            for view in views.values()
        )

    cluster.wait_until(rejoined, REJOIN_S_MAX, "the restarted node alive again everywhere")

    # Graceful leave: SIGTERM makes the node announce it, and it exits cleanly.
    leaver_port = cluster.ports[4]
    leaver = cluster.processes.pop(leaver_port)
    leaver.send_signal(signal.SIGTERM)
    assert leaver.wait(timeout=EXIT_S_MAX) == 0
    # It told a few members directly, who gossip it on; one that misses the gossip (few
    # retransmissions at N = 5) may time the silent node out as dead instead: still gone.
    cluster.wait_until(
        lambda views: (
            "left" in state_of(views, addresses[4])
            and state_of(views, addresses[4]) <= {"left", "dead"}
        ),
        CONVERGE_S_MAX,
        "the node that left seen as gone",
    )
