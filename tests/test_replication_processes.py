"""Replication across five real node processes on loopback (R = 3): a key put through one node
is read through every other, and quorum writes survive a node killed with SIGKILL and
restarted with empty memory.

Clients speak RESP over plain sockets to each node in turn (any node coordinates any key, as
for any Redis client). The nodes read at ``quorum`` by default here (``--read-consistency``):
a node restarted empty holds nothing written before its crash until repair reaches it, and a
read at ``one`` served by it would miss; a quorum read asks a second owner and repairs it.
Deadlines are generous and polled; every process is killed at the end, whatever happens.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.test_cluster_processes import CONVERGE_S_MAX, POLL_INTERVAL_S, Cluster, free_ports

pytestmark = pytest.mark.slow

NODE_COUNT = 5
KEY_COUNT = 120


class Resp:
    """A minimal RESP client for one node (enough for SET, GET, INFO-free checks)."""

    def __init__(
        self, port: int, timeout_s: float = 5.0, *, sock: socket.socket | None = None
    ) -> None:
        # ``sock``: a connection made elsewhere (in a network namespace, by the fault tests).
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def call(self, *args: bytes) -> object:
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[tuple[bytes, ...]]) -> list[object]:
        """Send every command at once, then read every reply (in order)."""
        self.sock.sendall(
            b"".join(
                b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
                for args in commands
            )
        )
        return [self._reply() for _ in commands]

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buffer += chunk
            data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            return data
        raise AssertionError(f"unexpected reply {line!r}")


class ReplicatedCluster(Cluster):
    """The membership test's cluster, with RESP ports and quorum reads."""

    def __init__(self, ports: list[int], resp_ports: list[int], log_dir) -> None:
        super().__init__(ports, log_dir)
        self.resp_port_of = dict(zip(ports, resp_ports, strict=True))

    def start(self, port: int, *extra_args: str) -> None:
        """Start the node on ``port``; ``extra_args`` are added to (and override) its flags."""
        host = self.address(port).rpartition(":")[0]
        command = [
            *self.where(port), sys.executable, "-m", "gossipcache", "node",
            "--host", host, "--port", str(port),
            "--resp-port", str(self.resp_port_of[port]), "--seed", self.seed,
            "--membership-profile", "local", "--replicas", "3",
            "--read-consistency", "quorum", "--max-memory", "64MiB", *extra_args,
        ]  # fmt: skip
        log = open(self.log_dir / f"node-{port}.log", "ab")  # noqa: SIM115 (owned by the process)
        self.processes[port] = subprocess.Popen(command, stdout=log, stderr=log)
        log.close()

    def stat(self, port: int, name: bytes) -> int | None:
        """One counter from the node's stats (through the native CLI), or None."""
        result = subprocess.run(
            [sys.executable, "-m", "gossipcache", "stats", "--node", f"127.0.0.1:{port}",
             "--timeout-s", "2"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        for line in result.stdout.splitlines():
            if line.startswith(name + b":"):
                return int(line.split(b":", 1)[1])
        return None


@pytest.fixture
def cluster(tmp_path):
    ports = free_ports(2 * NODE_COUNT)
    nodes = ReplicatedCluster(ports[:NODE_COUNT], ports[NODE_COUNT:], tmp_path)
    try:
        yield nodes
    finally:
        nodes.kill_all()


def all_alive(cluster: Cluster):
    addresses = [f"127.0.0.1:{port}" for port in cluster.ports]

    def check(views) -> bool:  # alive, and serving (not starting or filling) in every view
        return all(
            view.get(address, {}).get("state") == "alive"
            and view.get(address, {}).get("data_state", "serving") == "serving"
            for view in views.values()
            for address in addresses
        )

    return check


def connect(cluster: ReplicatedCluster, port: int) -> Resp:
    give_up = time.monotonic() + CONVERGE_S_MAX
    while True:
        try:
            return Resp(cluster.resp_port_of[port])
        except OSError:
            if time.monotonic() > give_up:
                raise
            time.sleep(POLL_INTERVAL_S)


def test_put_on_one_node_get_from_every_other(cluster: ReplicatedCluster) -> None:
    for port in cluster.ports:
        cluster.start(port)
    cluster.wait_until(all_alive(cluster), CONVERGE_S_MAX, "all five alive everywhere")
    clients = [connect(cluster, port) for port in cluster.ports]
    try:
        for index in range(20):
            key = b"k%d" % index
            assert clients[index % NODE_COUNT].call(b"SET", key, b"v%d" % index) == b"OK"
            for client in clients:
                assert client.call(b"GET", key) == b"v%d" % index
    finally:
        for client in clients:
            client.close()


def test_quorum_writes_survive_a_kill_and_an_empty_restart(cluster: ReplicatedCluster) -> None:
    for port in cluster.ports:
        cluster.start(port)
    cluster.wait_until(all_alive(cluster), CONVERGE_S_MAX, "all five alive everywhere")
    victim = cluster.ports[2]
    live = [port for port in cluster.ports if port != victim]
    clients = {port: connect(cluster, port) for port in cluster.ports}
    acknowledged: dict[bytes, bytes] = {}  # the last acknowledged value of each key
    unsure: dict[bytes, set[bytes]] = {}  # values written after it without an answer
    failures = 0

    def write(round_: int, ports: list[int], key_count: int = KEY_COUNT) -> None:
        nonlocal failures
        for index in range(key_count):
            key = b"key:%d" % index
            value = b"r%d:%d" % (round_, index)
            port = ports[(round_ + index) % len(ports)]
            try:
                reply = clients[port].call(b"SET", key, value)
            except OSError:
                reply = RuntimeError("connection lost")
            if reply == b"OK":
                acknowledged[key] = value
                unsure.pop(key, None)
            else:
                failures += 1
                unsure.setdefault(key, set()).add(value)

    write(0, cluster.ports)
    write(1, cluster.ports)
    clients.pop(victim).close()
    cluster.kill(victim)  # SIGKILL: its memory is gone
    # The last third of the keys was last written before the kill (the victim's copies are
    # lost), the middle third while it was down (hints), the first third after its restart.
    for round_ in range(2, 6):
        write(round_, live, 2 * KEY_COUNT // 3)
    cluster.start(victim)
    cluster.wait_until(all_alive(cluster), CONVERGE_S_MAX, "the restarted node alive everywhere")
    clients[victim] = connect(cluster, victim)
    for round_ in range(6, 8):
        write(round_, cluster.ports, KEY_COUNT // 3)
    # Hints for the writes it missed while down are delivered (throttled, within seconds).
    give_up = time.monotonic() + CONVERGE_S_MAX
    while any(cluster.stat(port, b"replication_hints_held") for port in live):
        assert time.monotonic() < give_up, "hints were not delivered"
        time.sleep(POLL_INTERVAL_S)
    assert len(acknowledged) == KEY_COUNT and failures <= KEY_COUNT // 10, failures
    try:
        for port, client in clients.items():
            for key, value in acknowledged.items():
                got = client.call(b"GET", key)
                assert got == value or got in unsure.get(key, ()), (port, key, got, value)
    finally:
        for client in clients.values():
            client.close()
