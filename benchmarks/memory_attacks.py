"""The memory attacks of issue 8 (items 1, 2 and 4) against a real node, with its resident memory.

    python -m benchmarks.memory_attacks            # every attack, ~75 s
    python -m benchmarks.memory_attacks --only reply-resp

Each attack starts its own ``gossipcache node`` process (``--max-memory 64MiB``, free ports on
127.0.0.1), measures the empty node's resident memory (baseline), runs the attack while a thread
reads the node's VmRSS every 20 ms (the kernel's high-water mark, VmHWM, reset through
``/proc/PID/clear_refs`` just before the attack, catches what falls between two samples), lets
the attacker leave and measures again. It prints one row per attack against the budget the
design allows (the formula is printed with every row) and what the node's ``/metrics`` said.

Attacks:

- ``reply-resp`` (1a): ``SET big`` of a 16 MiB value, then one write of 50 pipelined ``GET big``;
  the client reads nothing for 5 s, then reads everything (all 50 replies must arrive whole).
- ``reply-native`` (1b): the same with 200 native ``get`` frames.
- ``reply-many`` (1c): 20 clients doing 1a at once.
- ``idle-after-big`` (1d): 10 RESP and 10 native connections each write and read one 16 MiB
  value, then sit idle: what they keep (nothing beyond the stored value, now).
- ``partial-large`` (2a): two RESP connections declaring a 240 MiB bulk string (refused at once
  with a protocol error now), and two holding 15.9 MiB of a declared 16 MiB value.
- ``partial-budget`` (2b): 10 connections each sending 15 MiB of a 16 MiB value, interleaved:
  150 MiB against the 64 MiB client buffer budget, so the largest holders are closed.
- ``partial-idle`` (2c): a RESP and a native connection leave a request half sent; both must be
  closed after ``partial_request_timeout_s``.
- ``peer-preamble`` (2d): 1,030 connections to the native port from 129 source addresses send
  the peer preamble and a garbage handshake (half a whole frame, half a frame that never ends);
  the node runs membership with a generated cluster key.
- ``fds-soft`` / ``fds-hard`` (4): 1,100 idle RESP connections to a node started with an
  open-files soft limit of 1,024 (hard limit left as it is, so the node raises the soft limit;
  or hard limit 1,024 too, so the node lowers its caps to fit). Reports the node's CPU per wall
  second while they are held, its "accept failed" log lines, and whether a new client's PING and
  a /metrics scrape are answered within 1 s.
- ``idle-native`` (4): 1,000 native connections that each sent one PING, then idle: resident
  memory per connection.

Results are in docs/benchmarks.md ("Memory attacks (hardening)"); the sizing rule they check is
docs/design.md ("Memory a client can make a node hold").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack

from gossipcache.cli.bench import read_process_cpu_s
from gossipcache.limits import FRAME_SIZE_BYTES_MAX, VALUE_SIZE_BYTES_MAX
from gossipcache.node.config import NodeConfig
from gossipcache.wire.framing import FRAME_HEADER_SIZE_BYTES, FrameDecoder, frame
from gossipcache.wire.native import (
    OP_GET,
    OP_PING,
    OP_PUT,
    STATUS_OK,
    Request,
    Response,
    decode_response,
    encode_request,
)
from gossipcache.wire.peer import PREAMBLE

HOST = "127.0.0.1"
MIB = 1024 * 1024
#: The node's ``--max-memory``.
MAX_MEMORY_BYTES = 64 * MIB
#: The value every reply attack reads: the largest a node accepts.
BIG_VALUE_SIZE_BYTES = VALUE_SIZE_BYTES_MAX
#: Resident memory the design allows per byte of stored data (the store accounts keys, values
#: and per-entry overhead; the allocator's slack and fragmentation come on top).
STORED_DATA_FACTOR = 1.25
#: Resident memory allowed per connection the node holds open at once: the socket object, the
#: session and its parser, the reactor's bookkeeping (an idle connection measures ~3-6 KiB).
CONNECTION_ALLOWANCE_BYTES = 16 * 1024
#: Transient copies while the loop serves one largest request or reply (one connection at a
#: time), three at most: a 16 MiB SET's receive buffer and the value copied out of it; a 16 MiB
#: GET's reply, the batch it is joined into and the unsent rest. (The value a SET replaces is
#: in the stored-data term.)
IN_FLIGHT_BYTES = 3 * FRAME_SIZE_BYTES_MAX
#: What the node allocates meanwhile whatever the attack (the /metrics scrapes this module makes,
#: timers) and the allocator's granularity: RSS moves by this much on an idle node.
NOISE_BYTES = 2 * MIB
RSS_SAMPLE_INTERVAL_S = 0.02
NODE_START_TIMEOUT_S = 15.0
#: How long a client holds its replies unread in the reply attacks.
REPLY_HOLD_S = 5.0
#: A new client's PING and a /metrics scrape must be answered within this long under attack.
ANSWER_TIMEOUT_S = 1.0

_DEFAULTS = NodeConfig()


# -- the node ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody on 127.0.0.1 listens on right now (membership binds UDP on the native
    port's number too, so that must be free as well)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
        return port


def _status_field_bytes(pid: int, name: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(name.encode() + b":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in /proc/{pid}/status")


def open_files_limits(pid: int) -> tuple[int, int]:
    """The soft and hard open-files limits of ``pid``, as /proc/PID/limits reports them."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise RuntimeError(f"no open-files limit in /proc/{pid}/limits")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name" or "name{labels}": value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def http_get(port: int, path: str, timeout_s: float) -> bytes:
    """The body of ``GET path`` on 127.0.0.1:port; OSError (socket.timeout included) if the
    answer is not complete within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((HOST, port), timeout=timeout_s) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        chunks = []
        while True:
            conn.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"GET {path}: {head[:60]!r}")
    return body


@dataclass
class Node:
    """A node process this module started."""

    process: subprocess.Popen
    native_port: int
    resp_port: int
    metrics_port: int
    log_path: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        return _status_field_bytes(self.pid, "VmRSS")

    def reset_peak(self) -> bool:
        """Reset the kernel's resident high-water mark (VmHWM) to the current RSS."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    def peak_bytes(self) -> int:
        return _status_field_bytes(self.pid, "VmHWM")

    def metrics(self, timeout_s: float = 5.0) -> dict[str, float]:
        return parse_metrics(http_get(self.metrics_port, "/metrics", timeout_s).decode())

    def log_lines_matching(self, pattern: str) -> int:
        with open(self.log_path, errors="replace") as log:
            return sum(1 for line in log if pattern in line)

    def wait_idle(self, timeout_s: float = 5.0) -> dict[str, float]:
        """Poll /metrics until no client connection is open and no client buffer is held (the
        node has seen every attacker close); the last metrics read."""
        deadline = time.monotonic() + timeout_s
        while True:
            metrics = self.metrics()
            idle = (
                metrics.get("gossipcache_connections_open", 0) == 0
                and metrics.get("gossipcache_client_buffers_bytes", 0) == 0
            )
            if idle or time.monotonic() > deadline:
                return metrics
            time.sleep(0.05)

    def settled_rss_bytes(self, quiet_s: float = 0.5) -> int:
        """RSS after ``quiet_s`` of nothing happening (the lowest sample in that time)."""
        lowest = self.rss_bytes()
        deadline = time.monotonic() + quiet_s
        while time.monotonic() < deadline:
            time.sleep(RSS_SAMPLE_INTERVAL_S)
            lowest = min(lowest, self.rss_bytes())
        return lowest


def _answers_resp_ping(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_node(
    workdir: str,
    name: str,
    *,
    membership: bool = False,
    open_files: tuple[int, int] | None = None,
) -> Iterator[Node]:
    """A ``gossipcache node`` process serving free ports, stopped on exit whatever happens.
    ``membership`` runs it with a generated cluster key; ``open_files`` = (soft, hard)
    open-files limit set in the child before it starts."""
    native_port, resp_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        sys.executable, "-m", "gossipcache", "node", "--host", HOST,
        "--port", str(native_port), "--resp-port", str(resp_port),
        "--metrics-port", str(metrics_port), "--max-memory", str(MAX_MEMORY_BYTES),
    ]  # fmt: skip
    if membership:
        key_path = os.path.join(workdir, "cluster.key")
        key = subprocess.run(
            [sys.executable, "-m", "gossipcache", "keygen"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        with open(key_path, "w") as key_file:
            key_file.write(key)
        argv += ["--cluster-key-file", key_path, "--membership-profile", "local"]
    else:
        argv.append("--no-membership")

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    log_path = os.path.join(workdir, f"{name}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=limit_open_files,
        )
    node = Node(process, native_port, resp_port, metrics_port, log_path)
    try:
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not _answers_resp_ping(resp_port, 1.0):
            if process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-2000:]
                raise RuntimeError(f"node {name} did not start; its log ends:\n{tail}")
            time.sleep(0.05)
        yield node
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RssSampler:
    """Reads a process's VmRSS every ``RSS_SAMPLE_INTERVAL_S`` in a thread; ``peak_bytes`` is
    the largest sample."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):  # the process may be exiting
                self.peak_bytes = max(self.peak_bytes, self.node.rss_bytes())
            self._stop.wait(RSS_SAMPLE_INTERVAL_S)


# -- what an attack reports --------------------------------------------------------------------


@dataclass
class Budget:
    """What the design lets the node hold during an attack, term by term (bytes)."""

    baseline: int
    stored: int = 0  # accounted store bytes (gossipcache_used_bytes)
    client_buffers: int = 0  # bound on partial requests + unwritten replies, all clients
    in_flight: int = 0  # transient copies of one largest request/reply
    connections: int = 0  # connections held open at once

    @property
    def total(self) -> int:
        return (
            self.baseline
            + NOISE_BYTES
            + int(STORED_DATA_FACTOR * self.stored)
            + self.client_buffers
            + self.in_flight
            + self.connections * CONNECTION_ALLOWANCE_BYTES
        )

    def formula(self) -> str:
        terms = [f"{_mib(self.baseline)} baseline + {_mib(NOISE_BYTES)} noise"]
        if self.stored:
            terms.append(f"{STORED_DATA_FACTOR} x {_mib(self.stored)} stored")
        if self.client_buffers:
            terms.append(f"{_mib(self.client_buffers)} client buffers")
        if self.in_flight:
            terms.append(f"{_mib(self.in_flight)} in flight")
        if self.connections:
            terms.append(f"{self.connections} conns x {CONNECTION_ALLOWANCE_BYTES // 1024} KiB")
        return " + ".join(terms)


@dataclass
class AttackResult:
    name: str
    sent: str
    baseline_bytes: int
    peak_bytes: int
    after_bytes: int
    budget: Budget
    checks: dict[str, bool] = field(default_factory=dict)  # behaviour the attack requires
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        within = self.peak_bytes <= self.budget.total and self.after_bytes <= self.budget.total
        return within and all(self.checks.values())


def _mib(size_bytes: float) -> str:
    return f"{size_bytes / MIB:.1f} MiB"


class Measurement:
    """Baseline, peak and after-attack RSS of one node around one attack."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.baseline_bytes = node.settled_rss_bytes()
        self.peak_bytes = 0
        self.after_bytes = 0
        self.metrics: dict[str, float] = {}

    @contextlib.contextmanager
    def attack(self) -> Iterator[None]:
        """Measure the peak over the block (samples and the kernel's high-water mark)."""
        exact = self.node.reset_peak()
        with RssSampler(self.node) as sampler:
            yield
        self.peak_bytes = max(sampler.peak_bytes, self.node.peak_bytes() if exact else 0)

    def after(self) -> None:
        """The attacker has closed everything: wait until the node has seen it, then read."""
        self.metrics = self.node.wait_idle()
        self.after_bytes = self.node.settled_rss_bytes()

    def result(self, name: str, sent: str, budget: Budget, **kwargs) -> AttackResult:
        return AttackResult(
            name, sent, self.baseline_bytes, self.peak_bytes, self.after_bytes, budget, **kwargs
        )

    def counter(self, name: str) -> int:
        return int(self.metrics.get(name, 0))


# -- client helpers ----------------------------------------------------------------------------


def resp_command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def big_value() -> bytes:
    """16 MiB of a pattern that differs from one MiB to the next (a shifted or mixed-up reply
    would not compare equal)."""
    return b"".join(bytes([index % 251]) * MIB for index in range(BIG_VALUE_SIZE_BYTES // MIB))


def store_big(node: Node, value: bytes) -> None:
    with socket.create_connection((HOST, node.resp_port), timeout=10) as conn:
        conn.sendall(resp_command(b"SET", b"big", value))
        reply = conn.recv(64)
    if reply != b"+OK\r\n":
        raise RuntimeError(f"SET big: {reply!r}")


def native_call(conn: socket.socket, request: Request) -> Response:
    """Send one native request on a blocking connection and return its (small) response."""
    conn.sendall(encode_request(request))
    decoder = FrameDecoder()
    while True:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection")
        bodies = decoder.parse(data)
        if bodies:
            return decode_response(bodies[0])


def connect(port: int, source_ip: str | None = None, timeout_s: float = 5.0) -> socket.socket:
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.settimeout(timeout_s)
    if source_ip is not None:
        conn.bind((source_ip, 0))
    conn.connect((HOST, port))
    return conn


def closed_by_peer(conn: socket.socket) -> bool:
    """True once the other end closed ``conn`` (EOF or reset); does not block or consume."""
    timeout_s = conn.gettimeout()
    conn.setblocking(False)  # a socket with a timeout would wait for data before peeking
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(timeout_s)


class ReplyCheck:
    """Follows one connection's reply stream and counts the replies that arrived whole and right.

    RESP: the stream must be ``resp_reply`` repeated. Native: every frame must be an OK
    response carrying ``value``, each request id once. Compared as it arrives (memcmp), so
    checking gigabytes of replies costs little more than reading them."""

    def __init__(self, expected: int, resp_reply: bytes | None, value: bytes) -> None:
        self.expected = expected
        self.good = 0
        self.bad = 0
        self.eof = False
        self._resp_reply = resp_reply
        self._offset = 0  # RESP: bytes of the stream matched so far
        self._value = value
        self._ids_seen: set[int] = set()
        # Native: the frame being received (length prefix, then its body in a reused buffer).
        self._head = bytearray()
        self._body = bytearray(FRAME_SIZE_BYTES_MAX)
        self._body_size: int | None = None
        self._filled = 0

    @property
    def done(self) -> bool:
        return self.eof or self.bad > 0 or self.good >= self.expected

    def feed(self, data: memoryview) -> None:
        if self._resp_reply is not None:
            self._feed_resp(data)
        else:
            self._feed_native(data)

    def _feed_resp(self, data: memoryview) -> None:
        reply = self._resp_reply
        size = len(reply)
        while data:
            start = self._offset % size
            take = min(len(data), size - start)
            if not reply.startswith(data[:take], start):  # memcmp; memoryview == is slow
                self.bad += 1
                return
            self._offset += take
            data = data[take:]
            if self._offset % size == 0:
                self.good += 1

    def _feed_native(self, data: memoryview) -> None:
        while data and not self.bad:
            if self._body_size is None:
                take = FRAME_HEADER_SIZE_BYTES - len(self._head)
                self._head += data[:take]
                data = data[take:]
                if len(self._head) < FRAME_HEADER_SIZE_BYTES:
                    return
                self._body_size = int.from_bytes(self._head, "big")
                self._head.clear()
                self._filled = 0
                if not 1 <= self._body_size <= len(self._body):
                    self.bad += 1
                    return
            take = min(len(data), self._body_size - self._filled)
            self._body[self._filled : self._filled + take] = data[:take]
            self._filled += take
            data = data[take:]
            if self._filled == self._body_size:
                self._check_frame(memoryview(self._body)[1 : self._body_size])  # after version
                self._body_size = None

    def _check_frame(self, body: memoryview) -> None:
        """One response body: ``[request_id, STATUS_OK, value]``, checked in place (decoding it
        would allocate and fault in 16 MiB per reply, which costs more than the node's work)."""
        value = self._value
        bin_header = b"\xc6" + len(value).to_bytes(4, "big")  # msgpack bin 32
        head_size = len(body) - len(value) - len(bin_header)
        if head_size < 1 or body[head_size : head_size + len(bin_header)] != bin_header:
            self.bad += 1
            return
        unpacker = msgpack.Unpacker()
        unpacker.feed(bytes(body[:head_size]))
        try:
            fields = unpacker.read_array_header()
            request_id = unpacker.unpack()
            status = unpacker.unpack()
        except (ValueError, msgpack.OutOfData):
            self.bad += 1
            return
        fresh = request_id not in self._ids_seen
        self._ids_seen.add(request_id)
        if fields == 3 and fresh and status == STATUS_OK and value.startswith(body[-len(value) :]):
            self.good += 1
        else:
            self.bad += 1


def read_replies(conns: list[socket.socket], checks: list[ReplyCheck], timeout_s: float) -> float:
    """Read every connection until its check is done, it hit EOF, or ``timeout_s``; the seconds
    it took."""
    started = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for conn, check in zip(conns, checks):
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ, check)
        buffer = bytearray(4 * MIB)
        view = memoryview(buffer)
        while selector.get_map() and time.monotonic() - started < timeout_s:
            for key, _ in selector.select(timeout=0.5):
                check = key.data
                try:
                    size = key.fileobj.recv_into(buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    size = 0
                if size == 0:
                    check.eof = True
                else:
                    check.feed(view[:size])  # consumed before the next read
                if check.done:
                    selector.unregister(key.fileobj)
    return time.monotonic() - started


def close_all(conns: list[socket.socket]) -> None:
    for conn in conns:
        conn.close()


# -- 1. reply amplification ----------------------------------------------------------------------


def _reply_attack(
    node: Node, name: str, clients: int, protocol: str, requests: int
) -> AttackResult:
    value = big_value()
    measure = Measurement(node)
    store_big(node, value)
    if protocol == "resp":
        one_request = resp_command(b"GET", b"big")
        payload = one_request * requests
        resp_reply = b"$%d\r\n%s\r\n" % (len(value), value)
    else:
        payload = b"".join(
            encode_request(Request(request_id, OP_GET, (b"big",)))
            for request_id in range(1, requests + 1)
        )
        resp_reply = None
    port = node.resp_port if protocol == "resp" else node.native_port
    checks = [ReplyCheck(requests, resp_reply, value) for _ in range(clients)]
    with measure.attack():
        conns = [connect(port) for _ in range(clients)]
        for conn in conns:
            conn.sendall(payload)
        time.sleep(REPLY_HOLD_S)
        held = node.metrics()
        cpu_before_s = read_process_cpu_s(node.pid)
        read_s = read_replies(conns, checks, timeout_s=60.0)
        read_cpu_s = read_process_cpu_s(node.pid) - cpu_before_s
        close_all(conns)
    measure.after()
    whole = sum(1 for check in checks if check.good == requests)
    closed = measure.counter("gossipcache_clients_closed_over_budget_total")
    notes = [
        f"client buffers after {REPLY_HOLD_S:.0f} s unread:"
        f" {_mib(held.get('gossipcache_client_buffers_bytes', 0))}",
        f"{whole}/{clients} clients got all {requests} replies whole (read in {read_s:.1f} s,"
        f" node CPU {read_cpu_s:.1f} s);"
        f" {closed} closed over the client buffer budget;"
        f" {sum(check.bad for check in checks)} wrong replies",
    ]
    holding = min(clients, 1 + _DEFAULTS.client_buffers_bytes_max // FRAME_SIZE_BYTES_MAX)
    budget = Budget(
        measure.baseline_bytes,
        stored=int(measure.metrics.get("gossipcache_used_bytes", 0)),
        client_buffers=min(
            _DEFAULTS.client_buffers_bytes_max,
            holding * (_DEFAULTS.connection_reply_bytes_max + FRAME_SIZE_BYTES_MAX),
        ),
        in_flight=IN_FLIGHT_BYTES,
        connections=clients,
    )
    wanted = {
        "no wrong reply": all(check.bad == 0 for check in checks),
        # Every client the budget did not close must get everything.
        "every client not closed got all replies": whole + closed >= clients,
    }
    if clients * BIG_VALUE_SIZE_BYTES <= _DEFAULTS.client_buffers_bytes_max:
        wanted["all replies arrived"] = whole == clients
    sent = f"{clients} x {len(payload):,} B: {requests} pipelined {protocol} GET of 16 MiB"
    return measure.result(name, sent, budget, checks=wanted, notes=notes)


def attack_reply_resp(node: Node) -> AttackResult:
    return _reply_attack(node, "reply-resp", clients=1, protocol="resp", requests=50)


def attack_reply_native(node: Node) -> AttackResult:
    return _reply_attack(node, "reply-native", clients=1, protocol="native", requests=200)


def attack_reply_many(node: Node) -> AttackResult:
    return _reply_attack(node, "reply-many", clients=20, protocol="resp", requests=50)


def attack_idle_after_big(node: Node) -> AttackResult:
    """Connections that each wrote and read one 16 MiB value, then sit idle: what they keep."""
    per_protocol = 10
    value = big_value()
    measure = Measurement(node)
    store_big(node, value)
    resp_reply = b"$%d\r\n%s\r\n" % (len(value), value)
    with measure.attack():
        conns, checks = [], []
        for index in range(2 * per_protocol):
            if index % 2:
                conn = connect(node.native_port)
                put = native_call(conn, Request(1, OP_PUT, (b"big", value, None)))
                if put.status != STATUS_OK:
                    raise RuntimeError(f"native put: {put}")
                conn.sendall(encode_request(Request(2, OP_GET, (b"big",))))
                check = ReplyCheck(1, None, value)
            else:
                conn = connect(node.resp_port)
                conn.sendall(resp_command(b"SET", b"big", value) + resp_command(b"GET", b"big"))
                check = ReplyCheck(1, b"+OK\r\n" + resp_reply, value)
            read_replies([conn], [check], timeout_s=10.0)
            conns.append(conn)
            checks.append(check)
        idle_bytes = node.settled_rss_bytes()
        held = node.metrics()
        close_all(conns)
    measure.after()
    stored = int(measure.metrics.get("gossipcache_used_bytes", 0))
    notes = [
        f"RSS while the {len(conns)} connections sat idle: {_mib(idle_bytes)}"
        f" (baseline + stored = {_mib(measure.baseline_bytes + stored)}); client buffers"
        f" {held.get('gossipcache_client_buffers_bytes', 0):.0f} B"
    ]
    budget = Budget(
        measure.baseline_bytes, stored=stored, in_flight=IN_FLIGHT_BYTES, connections=len(conns)
    )
    checks_wanted = {"every reply whole": all(check.good == 1 for check in checks)}
    sent = f"{per_protocol} RESP + {per_protocol} native: SET + GET of 16 MiB each, then idle"
    return measure.result("idle-after-big", sent, budget, checks=checks_wanted, notes=notes)


# -- 2. partial requests -----------------------------------------------------------------------


def set_header(declared_size_bytes: int, key: bytes = b"k") -> bytes:
    """A RESP ``SET key <value>`` up to the value's first byte, declaring its length."""
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, declared_size_bytes)


def _send_partial(conn: socket.socket, size_bytes: int, chunk_bytes: int = MIB) -> int:
    """Send ``size_bytes`` of filler; the bytes sent before the node closed the connection."""
    chunk = b"x" * chunk_bytes
    sent = 0
    try:
        while sent < size_bytes:
            piece = chunk[: size_bytes - sent]
            conn.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    return sent


def attack_partial_large(node: Node) -> AttackResult:
    declared_huge = 240 * MIB
    partial_bytes = int(15.9 * MIB)
    measure = Measurement(node)
    notes = []
    with measure.attack():
        huge = [connect(node.resp_port) for _ in range(2)]
        replies = []
        for conn in huge:
            started = time.monotonic()
            conn.sendall(set_header(declared_huge))
            reply = conn.recv(256)
            replies.append((reply, time.monotonic() - started))
            _send_partial(conn, 4 * MIB)  # keep sending as an attacker would
        refused = [
            reply.startswith(b"-ERR Protocol error") and closed_by_peer(conn)
            for (reply, _), conn in zip(replies, huge)
        ]
        notes.append(
            f"240 MiB declared: {replies[0][0].strip().decode(errors='replace')!r}"
            f" after {max(seconds for _, seconds in replies) * 1000:.1f} ms, then closed"
        )
        holders = [connect(node.resp_port) for _ in range(2)]
        for conn in holders:
            conn.sendall(set_header(BIG_VALUE_SIZE_BYTES))
            _send_partial(conn, partial_bytes)
        time.sleep(1.0)
        held = node.metrics()
        still_open = sum(not closed_by_peer(conn) for conn in holders)
        close_all(huge + holders)
    measure.after()
    notes.append(
        f"two 15.9 MiB partial values: client buffers"
        f" {_mib(held.get('gossipcache_client_buffers_bytes', 0))}, {still_open}/2 still open"
    )
    budget = Budget(
        measure.baseline_bytes,
        client_buffers=2 * (partial_bytes + 64 * 1024),
        in_flight=IN_FLIGHT_BYTES,
        connections=4,
    )
    checks = {"240 MiB refused at once": all(refused), "15.9 MiB partials held": still_open == 2}
    sent = "2 x SET $240MiB; 2 x SET $16MiB with 15.9 MiB sent"
    return measure.result("partial-large", sent, budget, checks=checks, notes=notes)


def attack_partial_budget(node: Node) -> AttackResult:
    connections = 10
    partial_bytes = 15 * MIB
    chunk_bytes = MIB // 2
    measure = Measurement(node)
    with measure.attack():
        conns = [connect(node.resp_port) for _ in range(connections)]
        for conn in conns:
            conn.sendall(set_header(BIG_VALUE_SIZE_BYTES))
        sent = [0] * connections
        dead = [False] * connections
        filler = b"x" * chunk_bytes
        # Round robin: every connection grows at the same pace, as many attackers would.
        while any(not dead[i] and sent[i] < partial_bytes for i in range(connections)):
            for index, conn in enumerate(conns):
                if dead[index] or sent[index] >= partial_bytes:
                    continue
                try:
                    conn.sendall(filler)
                    sent[index] += chunk_bytes
                except OSError:
                    dead[index] = True
        time.sleep(1.0)
        held = node.metrics()
        open_after = sum(not closed_by_peer(conn) for conn in conns)
        close_all(conns)
    measure.after()
    closed = measure.counter("gossipcache_clients_closed_over_budget_total")
    held_bytes = held.get("gossipcache_client_buffers_bytes", 0)
    notes = [
        f"{closed} of {connections} closed over budget, {open_after} still open holding"
        f" {_mib(held_bytes)} (budget {_mib(_DEFAULTS.client_buffers_bytes_max)})"
    ]
    budget = Budget(
        measure.baseline_bytes,
        client_buffers=_DEFAULTS.client_buffers_bytes_max,
        in_flight=IN_FLIGHT_BYTES,
        connections=connections,
    )
    checks = {
        "largest closed": closed > 0 and closed + open_after == connections,
        "held within budget": held_bytes <= _DEFAULTS.client_buffers_bytes_max,
    }
    what = f"{connections} x SET $16MiB with 15 MiB sent, interleaved"
    return measure.result("partial-budget", what, budget, checks=checks, notes=notes)


def attack_partial_idle(node: Node) -> AttackResult:
    timeout_s = _DEFAULTS.partial_request_timeout_s
    measure = Measurement(node)
    with measure.attack():
        resp = connect(node.resp_port, timeout_s=timeout_s + 10)
        native = connect(node.native_port, timeout_s=timeout_s + 10)
        started = time.monotonic()
        resp.sendall(set_header(1000) + b"x" * 100)
        native.sendall(frame(b"\x93" + b"y" * 999)[:200])  # a 1,000-byte frame, 196 B of it
        closed_after = {}
        while len(closed_after) < 2 and time.monotonic() - started < timeout_s + 10:
            for label, conn in (("RESP", resp), ("native", native)):
                if label not in closed_after and closed_by_peer(conn):
                    closed_after[label] = time.monotonic() - started
            time.sleep(0.05)
        close_all([resp, native])
    measure.after()
    timed_out = measure.counter("gossipcache_clients_closed_partial_timeout_total")
    notes = [
        "closed after "
        + ", ".join(f"{label} {seconds:.2f} s" for label, seconds in closed_after.items())
        + f" (partial_request_timeout_s = {timeout_s:g}, checked every 1 s);"
        f" {timed_out} counted as partial timeouts"
    ]
    budget = Budget(measure.baseline_bytes, connections=2)
    checks = {
        "both closed in timeout + sweep": len(closed_after) == 2
        and all(timeout_s <= seconds <= timeout_s + 1.5 for seconds in closed_after.values()),
        "counted": timed_out == 2,
    }
    sent = "RESP: 100 B of a 1,000 B value; native: 196 B of a 1,000 B frame; then silence"
    return measure.result("partial-idle", sent, budget, checks=checks, notes=notes)


def attack_peer_preamble(node: Node) -> AttackResult:
    connections = 1030
    per_source = 8
    measure = Measurement(node)
    whole = PREAMBLE + frame(b"\x00" * 120)  # a well-framed handshake that is garbage
    unfinished = PREAMBLE + (500).to_bytes(4, "big") + b"\x01" + b"\xee" * 60
    with measure.attack():
        conns = []
        started = time.monotonic()
        for index in range(connections):
            source_ip = f"127.0.0.{2 + index // per_source}"
            conn = connect(node.native_port, source_ip)
            conn.sendall(whole if index % 2 == 0 else unfinished)
            conns.append(conn)
        sent_s = time.monotonic() - started
        during = node.metrics()
        open_counts = []
        while time.monotonic() - started < sent_s + 4.0:
            still_open = sum(not closed_by_peer(conn) for conn in conns)
            open_counts.append((time.monotonic() - started, still_open))
            if not still_open:
                break
            time.sleep(0.25)
        close_all(conns)
    measure.after()
    drops = {
        key.split('"')[1]: int(value)
        for key, value in measure.metrics.items()
        if key.startswith('gossipcache_membership_transport_total{name="peer_dropped_')
    }
    last_s, last_open = open_counts[-1]
    notes = [
        f"sent in {sent_s:.1f} s; {last_open} of {connections} still open {last_s:.1f} s after"
        f" the first; dropped: "
        + ", ".join(f"{reason[13:]} {count}" for reason, count in sorted(drops.items())),
        f"client buffers during: {during.get('gossipcache_client_buffers_bytes', 0):.0f} B",
    ]
    budget = Budget(measure.baseline_bytes, connections=connections)
    checks = {"all dropped": last_open == 0 and sum(drops.values()) == connections}
    sent = f"{connections} x preamble + garbage handshake from 129 source IPs"
    return measure.result("peer-preamble", sent, budget, checks=checks, notes=notes)


# -- 4. file descriptors -----------------------------------------------------------------------


def _ping_answered_within(port: int, timeout_s: float) -> str:
    started = time.monotonic()
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = conn.recv(64)
    except (ConnectionResetError, BrokenPipeError):
        # Closed at accept (over the connection cap): refused at once, not left hanging.
        return f"refused at once ({(time.monotonic() - started) * 1000:.0f} ms, reset)"
    except OSError as error:
        return f"no ({type(error).__name__})"
    elapsed_ms = (time.monotonic() - started) * 1000
    if reply.startswith(b"+PONG"):
        return f"yes, {elapsed_ms:.0f} ms"
    return f"refused at once ({elapsed_ms:.0f} ms)" if reply == b"" else f"no ({reply!r})"


def _metrics_answered_within(port: int, timeout_s: float) -> str:
    started = time.monotonic()
    try:
        http_get(port, "/metrics", timeout_s)
    except OSError as error:
        return f"no ({type(error).__name__})"
    return f"yes, {(time.monotonic() - started) * 1000:.0f} ms"


def _fd_attack(node: Node, name: str, hard_limit: int) -> AttackResult:
    connections = 1100
    hold_s = 3.0
    measure = Measurement(node)
    soft, hard = open_files_limits(node.pid)
    with measure.attack():
        conns = []
        for _ in range(connections):
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setblocking(False)
            conn.connect_ex((HOST, node.resp_port))
            conns.append(conn)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = node.metrics()
            handled = seen.get("gossipcache_connections_open", 0) + seen.get(
                "gossipcache_connections_refused_total", 0
            )
            if handled >= connections:
                break
            time.sleep(0.1)
        cpu_before, wall_before = read_process_cpu_s(node.pid), time.monotonic()
        time.sleep(hold_s)
        cpu_per_s = (read_process_cpu_s(node.pid) - cpu_before) / (time.monotonic() - wall_before)
        ping = _ping_answered_within(node.resp_port, ANSWER_TIMEOUT_S)
        scrape = _metrics_answered_within(node.metrics_port, ANSWER_TIMEOUT_S)
        held = node.metrics()
        close_all(conns)
    measure.after()
    accepted = int(held.get("gossipcache_connections_open", 0))
    refused = int(held.get("gossipcache_connections_refused_total", 0))
    failures = int(held.get("gossipcache_accept_failures_total", 0))
    log_lines = node.log_lines_matching("accept failed")
    lowered = node.log_lines_matching("lowered from")
    notes = [
        f"node's open-files limit {soft}/{hard} (started at 1024/{hard_limit});"
        f" {accepted} held open, {refused} refused at accept; {lowered} caps lowered in the log",
        f"node CPU {cpu_per_s:.2f} s/s while held; {failures} accept failures,"
        f" {log_lines} 'accept failed' log lines; new client's PING: {ping}; /metrics: {scrape}",
    ]
    budget = Budget(measure.baseline_bytes, connections=accepted)
    checks = {
        "no spin": cpu_per_s < 0.1,
        "/metrics answered": scrape.startswith("yes"),
        # A new client is answered, or (at the lowered cap) refused at once: never left hanging.
        "new client not left hanging": not ping.startswith("no"),
        "every connection accepted or refused": accepted + refused >= connections,
    }
    sent = f"{connections} idle RESP connections, open files 1024/{hard_limit}"
    return measure.result(name, sent, budget, checks=checks, notes=notes)


def attack_idle_native(node: Node) -> AttackResult:
    """Idle native connections that each answered one PING: what one costs (a RESP one: 1 KiB)."""
    connections = 1000
    measure = Measurement(node)
    with measure.attack():
        conns = [connect(node.native_port) for _ in range(connections)]
        answered = sum(
            native_call(conn, Request(1, OP_PING, ())).status == STATUS_OK for conn in conns
        )
        held_bytes = node.settled_rss_bytes()
        close_all(conns)
    measure.after()
    per_connection = (held_bytes - measure.baseline_bytes) / connections
    notes = [f"{per_connection / 1024:.1f} KiB resident per idle native connection"]
    budget = Budget(measure.baseline_bytes, connections=connections)
    checks = {"every PING answered": answered == connections}
    sent = f"{connections} native connections, one PING each, then idle"
    return measure.result("idle-native", sent, budget, checks=checks, notes=notes)


def attack_fds_soft(node: Node) -> AttackResult:
    return _fd_attack(node, "fds-soft", resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def attack_fds_hard(node: Node) -> AttackResult:
    return _fd_attack(node, "fds-hard", 1024)


# -- driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    label: str  # the item
    run: Callable[[Node], AttackResult]
    membership: bool = False
    open_files: Callable[[], tuple[int, int]] | None = None


def _soft_1024() -> tuple[int, int]:
    return 1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _hard_1024() -> tuple[int, int]:
    return 1024, 1024


ATTACKS: dict[str, Attack] = {
    "reply-resp": Attack("1a", attack_reply_resp),
    "reply-native": Attack("1b", attack_reply_native),
    "reply-many": Attack("1c", attack_reply_many),
    "idle-after-big": Attack("1d", attack_idle_after_big),
    "partial-large": Attack("2a", attack_partial_large),
    "partial-budget": Attack("2b", attack_partial_budget),
    "partial-idle": Attack("2c", attack_partial_idle),
    "peer-preamble": Attack("2d", attack_peer_preamble, membership=True),
    "fds-soft": Attack("4", attack_fds_soft, open_files=_soft_1024),
    "fds-hard": Attack("4", attack_fds_hard, open_files=_hard_1024),
    "idle-native": Attack("4", attack_idle_native),
}


def run_attack(name: str, workdir: str) -> AttackResult:
    attack = ATTACKS[name]
    open_files = attack.open_files() if attack.open_files is not None else None
    with running_node(workdir, name, membership=attack.membership, open_files=open_files) as node:
        return attack.run(node)


def format_table(results: list[AttackResult]) -> str:
    lines = [
        "| attack | sent | baseline | peak | after | budget | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for result in results:
        failed = [name for name, ok in result.checks.items() if not ok]
        verdict = (
            "PASS" if result.passed else "FAIL" + (f" ({'; '.join(failed)})" if failed else "")
        )
        lines.append(
            f"| {ATTACKS[result.name].label} {result.name} | {result.sent}"
            f" | {_mib(result.baseline_bytes)} | {_mib(result.peak_bytes)}"
            f" | {_mib(result.after_bytes)} | {_mib(result.budget.total)} | {verdict} |"
        )
    lines.append("")
    for result in results:
        lines.append(f"- {result.name}: budget = {result.budget.formula()}")
        lines.extend(f"  - {note}" for note in result.notes)
    return "\n".join(lines)


def raise_own_open_files() -> None:
    """The attacker itself holds over a thousand sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_attacks",
        description="Run issue 8's memory attacks against real node processes and print each "
        "one's peak resident memory against the budget the design allows.",
    )
    parser.add_argument(
        "--only", choices=sorted(ATTACKS), action="append", help="run this attack (repeatable)"
    )
    args = parser.parse_args(argv)
    raise_own_open_files()
    names = args.only or list(ATTACKS)
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memory-attacks-") as workdir:
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_attack(name, workdir))
    print(
        f"max-memory {_mib(MAX_MEMORY_BYTES)}, client_buffers_bytes_max"
        f" {_mib(_DEFAULTS.client_buffers_bytes_max)}, connection_reply_bytes_max"
        f" {_mib(_DEFAULTS.connection_reply_bytes_max)}, partial_request_timeout_s"
        f" {_DEFAULTS.partial_request_timeout_s:g}; largest request {FRAME_SIZE_BYTES_MAX:,} B;"
        f" {time.monotonic() - started:.0f} s in all\n"
    )
    print(format_table(results))
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
