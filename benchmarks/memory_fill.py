"""Resident memory of a real node filled past its ``--max-memory``, against the sizing rule.

    python -m benchmarks.memory_fill [--limits 64MiB,256MiB] [--policies all] [--mixes all]
                                     [--fill-factor 3] [--json]

For every (policy, limit, value mix) it starts a real ``gossipcache node`` process (membership
off, RESP on a free 127.0.0.1 port), reads the RSS of the empty started node (the *baseline*:
interpreter, code and per-shard fixed structures), then writes distinct keys over RESP with
pipelining until the bytes written (key + value + the per-entry charge) reach ``fill_factor`` x the
limit, so the store has been evicting for most of the run. It then reads ``used_memory`` (the
store's ``used_bytes``) from INFO and VmRSS (steady RSS) and VmHWM (peak RSS over the whole run)
from ``/proc/<pid>/status``.

The rule checked is the one docs/design.md gives: steady RSS <= 1.25 x limit + baseline.
The peak is reported beside it: it also holds the request in flight (one value of up to 16 MiB
and its copies while it is parsed), which the rule leaves to the per-connection allowance.

Value mixes (keys are ``k:`` plus a 10-digit counter, 12 bytes):

- ``small``: uniform 16-100 bytes;
- ``mixed``: log-uniform 16 bytes .. 64 KiB;
- ``large``: uniform 1-16 MiB.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from gossipcache.store.eviction import POLICY_NAMES
from gossipcache.store.store import ENTRY_OVERHEAD_BYTES

MIB = 1024 * 1024
#: Bytes of pipelined commands sent before the replies are read back.
PIPELINE_BYTES_MAX = 256 * 1024
PIPELINE_COMMANDS_MAX = 256
#: How long a node may take to start serving, and to go away.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
#: Pause after the fill before the steady RSS is read (the node's loop settles, the expiry tick
#: runs a few times).
SETTLE_S = 0.5
#: Steady RSS may exceed the limit by this factor (plus the baseline): the documented rule.
RULE_FACTOR = 1.25

MIXES = ("small", "mixed", "large")


def parse_size(text: str) -> int:
    units = {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def value_size(mix: str, rng: random.Random) -> int:
    if mix == "small":
        return rng.randint(16, 100)
    if mix == "mixed":
        return int(math.exp(rng.uniform(math.log(16), math.log(64 * 1024))))
    return rng.randint(MIB, 16 * MIB)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


class RespConnection:
    """A minimal pipelining RESP client: commands out, one-line replies back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def encode(*args: bytes) -> list[bytes]:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            parts.append(b"$%d\r\n" % len(arg))
            parts.append(arg)
            parts.append(b"\r\n")
        return parts

    def send(self, parts: list) -> None:
        """Send the parts of a batch: joined when small, one by one when they hold large values
        (joining would copy them)."""
        if sum(len(part) for part in parts) <= PIPELINE_BYTES_MAX:
            self.sock.sendall(b"".join(parts))
        else:
            for part in parts:
                self.sock.sendall(part)

    def read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("node closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def read_bulk(self) -> bytes:
        header = self.read_line()
        if not header.startswith(b"$"):
            raise RuntimeError(f"expected a bulk reply, got {header!r}")
        size = int(header[1:])
        while len(self._buffer) < size + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("node closed the connection")
            self._buffer += chunk
        body, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
        return body

    def info(self, section: bytes) -> dict[str, str]:
        self.send(self.encode(b"INFO", section))
        fields = {}
        for line in self.read_bulk().decode().splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name] = value
        return fields


@dataclass
class Result:
    policy: str
    limit_bytes: int
    mix: str
    keys_written: int
    bytes_written: int
    used_bytes: int
    keys_held: int
    baseline_kib: int
    steady_rss_kib: int
    peak_rss_kib: int
    fill_s: float

    @property
    def rule_kib(self) -> int:
        return int(RULE_FACTOR * self.limit_bytes / 1024) + self.baseline_kib

    @property
    def passed(self) -> bool:
        return self.steady_rss_kib <= self.rule_kib


def start_node(policy: str, limit_bytes: int) -> tuple[subprocess.Popen, int]:
    resp_port = free_port()
    argv = [
        sys.executable, "-m", "gossipcache", "node",
        "--port", str(free_port()), "--resp-port", str(resp_port),
        "--max-memory", str(limit_bytes), "--eviction", policy, "--no-membership",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", resp_port), timeout=1).close()
            return process, resp_port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"node did not start: {' '.join(argv)}") from None
            time.sleep(0.05)


def stop_node(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fill(connection: RespConnection, mix: str, target_bytes: int, seed: int) -> tuple[int, int]:
    """Write distinct keys until their charged bytes reach ``target_bytes``; returns
    (keys written, bytes written)."""
    rng = random.Random(seed)
    # Values are slices of one random buffer: the node receives fresh bytes either way.
    source = memoryview(rng.randbytes(16 * MIB + 1))
    written_bytes = 0
    keys = 0
    while written_bytes < target_bytes:
        batch: list = []
        batch_bytes = 0
        commands = 0
        while (
            commands < PIPELINE_COMMANDS_MAX
            and batch_bytes < PIPELINE_BYTES_MAX
            and written_bytes < target_bytes
        ):
            key = b"k:%010d" % keys
            size = value_size(mix, rng)
            offset = rng.randrange(len(source) - size)
            value = source[offset : offset + size]
            batch += RespConnection.encode(b"SET", key, value)
            batch_bytes += size
            written_bytes += len(key) + size + ENTRY_OVERHEAD_BYTES
            keys += 1
            commands += 1
        connection.send(batch)
        for _ in range(commands):
            reply = connection.read_line()
            if reply != b"+OK":
                raise RuntimeError(f"SET failed: {reply!r}")
    return keys, written_bytes


def measure(policy: str, limit_bytes: int, mix: str, fill_factor: float) -> Result:
    process, resp_port = start_node(policy, limit_bytes)
    try:
        connection = RespConnection(resp_port)
        connection.info(b"memory")  # the node has served one request: its loop is up
        baseline_kib = proc_status_kib(process.pid, "VmRSS")
        started = time.perf_counter()
        keys, written = fill(connection, mix, int(fill_factor * limit_bytes), seed=len(mix))
        fill_s = time.perf_counter() - started
        time.sleep(SETTLE_S)
        memory = connection.info(b"memory")
        keyspace = connection.info(b"keyspace")
        steady_kib = proc_status_kib(process.pid, "VmRSS")
        peak_kib = proc_status_kib(process.pid, "VmHWM")
        connection.close()
    finally:
        stop_node(process)
    held = 0
    for value in keyspace.values():
        for field in value.split(","):
            if field.startswith("keys="):
                held += int(field[5:])
    return Result(
        policy=policy,
        limit_bytes=limit_bytes,
        mix=mix,
        keys_written=keys,
        bytes_written=written,
        used_bytes=int(memory["used_memory"]),
        keys_held=held,
        baseline_kib=baseline_kib,
        steady_rss_kib=steady_kib,
        peak_rss_kib=peak_kib,
        fill_s=fill_s,
    )


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def table(results: list[Result]) -> str:
    lines = [
        "| policy | limit | values | keys held | used_bytes MiB | baseline MiB | steady RSS MiB "
        "| peak RSS MiB | rule MiB | steady / rule |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.policy} | {r.limit_bytes // MIB} MiB | {r.mix} | {r.keys_held:,} "
            f"| {r.used_bytes / MIB:.1f} | {mib(r.baseline_kib)} | {mib(r.steady_rss_kib)} "
            f"| {mib(r.peak_rss_kib)} | {mib(r.rule_kib)} "
            f"| {r.steady_rss_kib / r.rule_kib:.2f} {'PASS' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="64MiB,256MiB", help="comma-separated limits")
    parser.add_argument("--policies", default="all", help="comma-separated, or all")
    parser.add_argument("--mixes", default="all", help="small,mixed,large or all")
    parser.add_argument(
        "--fill-factor", type=float, default=3.0, help="charged bytes written / limit"
    )
    parser.add_argument("--json", action="store_true", help="print raw results as JSON too")
    args = parser.parse_args(argv)
    # SIGTERM ends the run through ``finally``, so no node outlives it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    limits = [parse_size(text) for text in args.limits.split(",")]
    policies = POLICY_NAMES if args.policies == "all" else tuple(args.policies.split(","))
    mixes = MIXES if args.mixes == "all" else tuple(args.mixes.split(","))
    results = []
    for limit in limits:
        for mix in mixes:
            for policy in policies:
                result = measure(policy, limit, mix, args.fill_factor)
                results.append(result)
                print(
                    f"{policy:9} {limit // MIB:5} MiB {mix:6} steady {mib(result.steady_rss_kib)}"
                    f" MiB peak {mib(result.peak_rss_kib)} MiB rule {mib(result.rule_kib)} MiB "
                    f"({result.fill_s:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(results))
    if args.json:
        print(json.dumps([asdict(r) | {"passed": r.passed} for r in results], indent=1))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
