"""Issue 10's real-process measurements: refilling a wiped node, and scaling 3 -> 4 -> 3 under load.

Development only (not run in CI); every node process it starts is stopped at the end, whatever
happens. Nodes run on 127.0.0.1 with ``--membership-profile local``, R = 3, a fresh cluster
key, each on its own ``--host-id``.

``refill``::

    .venv/bin/python -m benchmarks.antientropy_real refill --keys 1000000

3 nodes (``--max-memory 2GiB``); ``gossipcache bench --preload`` writes ``--keys`` keys
(``key:%012d``, 100-byte values) at quorum through the smart client; once every node holds all
of them, node 3 is ``kill -9``ed and restarted empty on the same ports; the script polls its
stats until its ``data_state`` is ``serving`` and its ``keys`` equal the keyspace, and reports
the wall time, the ``antientropy_*`` counters of every node over the refill, and the CPU
seconds of every node process meanwhile.

``scale``::

    .venv/bin/python -m benchmarks.antientropy_real scale --keys 50000

3 nodes, ``--keys`` preloaded; a paced load generator (``--rate`` ops/s from ``--workers``
tasks on the smart client: 90 % reads at ``one`` of the preloaded keys, 10 % writes of fresh
keys at ``quorum``) runs throughout; after ``--steady-s`` s a 4th node starts (seeded) and the
script waits until it is ``serving`` and every node's table has 4 members; after another
``--steady-s`` s ``gossipcache leave --node`` takes it out; ``--steady-s`` s later the load
stops. Per-second hit ratio and p99 latency; steady state (the first window, its first 3 s
skipped) against the seconds of each change; then every acknowledged write and every preloaded
key is read back at ``quorum``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from benchmarks.compare import HOST, free_port
from gossipcache.cli.bench import key_name, read_process_cpu_s
from gossipcache.client.client import Client
from gossipcache.errors import GossipCacheError

VALUE_SIZE_BYTES = 100
#: How long a node may take to answer stats after it starts, and a cluster to agree.
READY_TIMEOUT_S = 60.0
POLL_S = 0.2
#: Seconds skipped at the start of the steady window (connections, caches warming).
WARMUP_S = 3
#: How often the scale experiment pings each node to see its event loop's stalls.
PROBE_INTERVAL_S = 0.02


@dataclass
class Node:
    index: int
    native_port: int
    resp_port: int
    metrics_port: int
    process: subprocess.Popen | None = None
    #: CPU seconds of earlier processes on these ports (a node killed and restarted).
    cpu_s_before: float = 0.0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.native_port}"

    def cpu_s(self) -> float:
        if self.process is None or self.process.poll() is not None:
            return 0.0
        return read_process_cpu_s(self.process.pid)


@dataclass
class Cluster:
    """Node processes this script started (stopped by ``stop_all``)."""

    workdir: str
    max_memory: str
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key_file = os.path.join(self.workdir, "cluster.key")
        with open(self.key_file, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        os.chmod(self.key_file, 0o600)

    def add(self) -> Node:
        node = Node(len(self.nodes), free_port(), free_port(), free_port())
        self.nodes.append(node)
        return node

    def start(self, node: Node, seed: Node | None) -> None:
        argv = [
            sys.executable, "-m", "gossipcache", "node", "--host", HOST,
            "--port", str(node.native_port), "--resp-port", str(node.resp_port),
            "--metrics-port", str(node.metrics_port), "--max-memory", self.max_memory,
            "--eviction", "sieve", "--membership-profile", "local", "--replicas", "3",
            "--host-id", f"measure-host-{node.index}", "--cluster-key-file", self.key_file,
        ]  # fmt: skip
        if seed is not None:
            argv += ["--seed", seed.address]
        log = open(os.path.join(self.workdir, f"node{node.index}.log"), "ab")  # noqa: SIM115
        with log:
            node.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop_all(self) -> None:
        for node in self.nodes:
            process = node.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


async def stats_of(client: Client, node: Node) -> dict[str, Any] | None:
    try:
        with trio.fail_after(5):
            return await client.stats(node=node.address)
    except (GossipCacheError, OSError, trio.TooSlowError):
        return None


async def wait_until(predicate, timeout_s: float = READY_TIMEOUT_S, what: str = "") -> float:
    """Poll the async ``predicate`` until true; the seconds it took."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}")
        await trio.sleep(POLL_S)
    return time.monotonic() - start


async def cluster_agrees(client: Client, nodes: list[Node]) -> bool:
    epochs = set()
    for node in nodes:
        stats = await stats_of(client, node)
        if stats is None or stats.get("placement_members") != len(nodes):
            return False
        if stats.get("placement_rebuilding") or stats.get("data_state") != "serving":
            return False
        epochs.add(stats.get("placement_epoch"))
    return len(epochs) == 1


async def listening(nodes: list[Node]) -> bool:
    for node in nodes:
        try:
            stream = await trio.open_tcp_stream(HOST, node.native_port)
        except OSError:
            return False
        await stream.aclose()
    return True


async def start_cluster(cluster: Cluster, count: int) -> None:
    for _ in range(count):
        node = cluster.add()
        cluster.start(node, cluster.nodes[0] if node.index else None)
        await trio.sleep(0.3)
    await wait_until(lambda: listening(cluster.nodes), what="the nodes to listen")
    async with Client(cluster.nodes[0].address) as client:
        took = await wait_until(
            lambda: cluster_agrees(client, cluster.nodes), what="the cluster to form"
        )
    print(f"cluster of {count} formed in {took:.1f} s", flush=True)


async def open_control(cluster: Cluster) -> Client:
    """A client for stats polls: retries seeds until one answers."""
    return Client([node.address for node in cluster.nodes[:3]])


def preload(cluster: Cluster, keys: int) -> dict[str, Any]:
    seeds = ",".join(node.address for node in cluster.nodes)
    argv = [
        sys.executable, "-m", "gossipcache", "bench", "--seeds", seeds, "--keys", str(keys),
        "--value-size", str(VALUE_SIZE_BYTES), "--preload", "--duration-s", "0.2",
        "--warmup-s", "0", "--read-ratio", "1", "--connections", "16", "--json",
    ]  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, check=False, timeout=3600)
    summary = json.loads(result.stdout.decode())
    print(
        f"preloaded {keys} keys in {time.monotonic() - start:.1f} s "
        f"(bench preload_s {summary['preload_s']}, errors {summary['preload_errors']})",
        flush=True,
    )
    return summary


def data_bytes(keys: int) -> int:
    """Bytes of keys plus values of the preloaded keyspace."""
    return keys * (len(key_name(0)) + VALUE_SIZE_BYTES)


AE_COUNTERS = (
    "antientropy_bytes_sent",
    "antientropy_bytes_received",
    "antientropy_keys_sent",
    "antientropy_keys_repaired",
    "antientropy_keys_listed",
    "antientropy_rounds_started",
    "antientropy_rounds_repaired",
)


async def counters(client: Client, nodes: list[Node]) -> dict[int, dict[str, int]]:
    result = {}
    for node in nodes:
        stats = await stats_of(client, node) or {}
        result[node.index] = {name: int(stats.get(name, 0)) for name in AE_COUNTERS}
        result[node.index]["keys"] = int(stats.get("keys", 0))
    return result


# -- refill ----------------------------------------------------------------------------------


async def refill(cluster: Cluster, keys: int) -> dict[str, Any]:
    await start_cluster(cluster, 3)
    preload_summary = await trio.to_thread.run_sync(preload, cluster, keys)
    survivors, victim = cluster.nodes[:2], cluster.nodes[2]
    async with await open_control(cluster) as client:

        async def all_hold() -> bool:
            held = await counters(client, cluster.nodes)
            return all(row["keys"] >= keys for row in held.values())

        took = await wait_until(all_hold, timeout_s=600, what="every node to hold every key")
        print(f"every node holds {keys} keys ({took:.1f} s after the preload)", flush=True)
        before = await counters(client, survivors)
        cpu_before = {node.index: node.cpu_s() for node in survivors}
        assert victim.process is not None
        victim.process.kill()  # kill -9
        victim.process.wait()
        killed_at = time.monotonic()
        cluster.start(victim, survivors[0])
        samples: list[tuple[float, str, int]] = []

        async def refilled() -> bool:
            stats = await stats_of(client, victim)
            if stats is None:
                return False
            state, held = stats.get("data_state", "?"), int(stats.get("keys", 0))
            if not samples or samples[-1][1:] != (state, held):
                samples.append((round(time.monotonic() - killed_at, 2), state, held))
            return state == "serving" and held >= keys

        refill_s = await wait_until(refilled, timeout_s=3600, what="the wiped node to refill")
        serving_at = next((t for t, state, _ in samples if state == "serving"), None)
        complete_at = next((t for t, _, held in samples if held >= keys), None)
        victim_cpu = victim.cpu_s()
        after = await counters(client, cluster.nodes)
    survivors_cpu = {
        node.index: round(node.cpu_s() - cpu_before[node.index], 1) for node in survivors
    }
    delta = {
        index: {
            name: after[index][name] - before.get(index, {}).get(name, 0) for name in AE_COUNTERS
        }
        for index in after
    }
    sent = sum(row["antientropy_bytes_sent"] for row in delta.values())
    size = data_bytes(keys)
    return {
        "keys": keys,
        "data_bytes": size,
        "preload_s": preload_summary["preload_s"],
        "refill_s_from_kill": round(refill_s, 2),
        "serving_s_from_kill": serving_at,
        "keys_complete_s_from_kill": complete_at,
        "victim_keys_after": after[victim.index]["keys"],
        "states_seen": samples[:3] + samples[-3:],
        "antientropy_delta_by_node": delta,
        "antientropy_bytes_sent_total": sent,
        "bytes_sent_over_data_bytes": round(sent / size, 3),
        "cpu_s": {"victim": round(victim_cpu, 1), **{str(k): v for k, v in survivors_cpu.items()}},
    }


# -- scale -----------------------------------------------------------------------------------


@dataclass
class Second:
    reads: int = 0
    hits: int = 0
    writes: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Load:
    """Paced reads at ``one`` of the preloaded keys and writes of fresh keys at ``quorum``."""

    def __init__(self, keys: int, rate: float, workers: int, write_ratio: float) -> None:
        self.keys = keys
        self.interval_s = workers / rate
        self.workers = workers
        self.write_ratio = write_ratio
        self.start = time.monotonic()
        self.seconds: dict[int, Second] = {}
        self.acknowledged: list[bytes] = []
        self.errors: dict[str, int] = {}
        #: node index -> second -> slowest ping answer (ms) in that second.
        self.slowest_ping_ms: dict[int, dict[int, float]] = {}
        #: second -> this process's worst event-loop lag (ms) in that second.
        self.client_lag_ms: dict[int, float] = {}

    def second(self) -> Second:
        now = int(time.monotonic() - self.start)
        return self.seconds.setdefault(now, Second())

    async def worker(self, client: Client, number: int) -> None:
        rng = random.Random(number)
        serial = 0
        next_s = time.monotonic() + rng.random() * self.interval_s
        while True:
            await trio.sleep_until(trio.current_time() + max(0.0, next_s - time.monotonic()))
            next_s += self.interval_s
            write = rng.random() < self.write_ratio
            began = time.monotonic()
            try:
                if write:
                    serial += 1
                    key = b"scale:%d:%d" % (number, serial)
                    await client.put(key, b"w" * VALUE_SIZE_BYTES, consistency="quorum")
                    self.acknowledged.append(key)
                    hit = None
                else:
                    value = await client.get(key_name(rng.randrange(self.keys)), consistency="one")
                    hit = value is not None
            except GossipCacheError as error:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.second().errors += 1
                continue
            second = self.second()
            second.latencies_ms.append((time.monotonic() - began) * 1000)
            if write:
                second.writes += 1
            else:
                second.reads += 1
                second.hits += bool(hit)

    def mark(self) -> float:
        return time.monotonic() - self.start

    async def lag_meter(self) -> None:
        """This process's own event-loop lag: how late a 10 ms sleep wakes, the worst per
        second. A stall here delays every request this client measures, whatever the nodes do."""
        while True:
            began = time.monotonic()
            await trio.sleep(0.01)
            late_ms = round((time.monotonic() - began - 0.01) * 1000, 1)
            second = int(began - self.start)
            self.client_lag_ms[second] = max(self.client_lag_ms.get(second, 0.0), late_ms)

    async def prober(self, client: Client, node: Node) -> None:
        """Ping ``node`` every ``PROBE_INTERVAL_S``; the slowest answer per second tells how
        long its event loop was busy (a stall shows whatever request happens to wait)."""
        slowest = self.slowest_ping_ms.setdefault(node.index, {})
        while True:
            began = time.monotonic()
            try:
                with trio.fail_after(5):
                    await client.ping(node=node.address)
            except (GossipCacheError, OSError, trio.TooSlowError):
                await trio.sleep(PROBE_INTERVAL_S)
                continue
            second = int(began - self.start)
            took_ms = round((time.monotonic() - began) * 1000, 1)
            slowest[second] = max(slowest.get(second, 0.0), took_ms)
            await trio.sleep(PROBE_INTERVAL_S)


def summarize(seconds: list[Second]) -> dict[str, Any]:
    reads = sum(s.reads for s in seconds)
    hits = sum(s.hits for s in seconds)
    latencies = sorted(x for s in seconds for x in s.latencies_ms)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return {
        "seconds": len(seconds),
        "ops": len(latencies),
        "errors": sum(s.errors for s in seconds),
        "hit_ratio": round(hits / reads, 4) if reads else None,
        "p99_ms": None if p99 is None else round(p99, 2),
        "p50_ms": round(latencies[len(latencies) // 2], 2) if latencies else None,
    }


async def scale(
    cluster: Cluster, keys: int, rate: float, workers: int, steady_s: float
) -> dict[str, Any]:
    await start_cluster(cluster, 3)
    await trio.to_thread.run_sync(preload, cluster, keys)
    load = Load(keys, rate, workers, write_ratio=0.1)
    marks: dict[str, float] = {}
    result: dict[str, Any] = {}
    async with (
        await open_control(cluster) as control,
        Client([node.address for node in cluster.nodes]) as client,
        trio.open_nursery() as nursery,
    ):
        for number in range(workers):
            nursery.start_soon(load.worker, client, number)
        for node in cluster.nodes:
            nursery.start_soon(load.prober, control, node)
        nursery.start_soon(load.lag_meter)
        await trio.sleep(steady_s)
        before_join = await counters(control, cluster.nodes)
        marks["join"] = load.mark()
        keys_at_join = keys + len(load.acknowledged)
        newcomer = cluster.add()
        cluster.start(newcomer, cluster.nodes[0])
        nursery.start_soon(load.prober, control, newcomer)
        took = await wait_until(
            lambda: cluster_agrees(control, cluster.nodes),
            timeout_s=600,
            what="the 4th node to be serving in every table",
        )
        marks["joined"] = load.mark()
        after_join = await counters(control, cluster.nodes)
        result["join_s"] = round(took, 2)
        print(f"4th node serving, every table with 4 members: {took:.1f} s", flush=True)
        await trio.sleep(steady_s)
        marks["leave"] = load.mark()
        before_leave = await counters(control, cluster.nodes)
        leave = await trio.run_process(
            [sys.executable, "-m", "gossipcache", "leave", "--node", newcomer.address],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        stayed = cluster.nodes[:3]
        took = await wait_until(
            lambda: cluster_agrees(control, stayed), timeout_s=600, what="3 members again"
        )
        marks["left"] = load.mark()
        after_leave = await counters(control, stayed)
        result["leave_cli"] = {
            "returncode": leave.returncode,
            "stdout": leave.stdout.decode()[-500:],
            "stderr": leave.stderr.decode()[-500:],
        }
        result["leave_s"] = round(marks["left"] - marks["leave"], 2)
        assert newcomer.process is not None
        result["newcomer_exit_code"] = newcomer.process.poll()
        print(f"4th node left: {result['leave_s']} s", flush=True)
        await trio.sleep(steady_s)
        marks["end"] = load.mark()
        nursery.cancel_scope.cancel()

    def window(start: float, end: float) -> list[Second]:
        return [load.seconds[s] for s in range(int(start), int(end) + 1) if s in load.seconds]

    result["marks_s"] = {name: round(value, 2) for name, value in marks.items()}
    result["steady_3"] = summarize(window(WARMUP_S, marks["join"] - 1))
    result["during_join"] = summarize(window(marks["join"], marks["joined"]))
    result["steady_4"] = summarize(window(marks["joined"] + 1, marks["leave"] - 1))
    result["during_leave"] = summarize(window(marks["leave"], marks["left"]))
    result["after_leave"] = summarize(window(marks["left"] + 1, marks["end"] - 1))
    result["per_second"] = [
        {"s": s, **{k: v for k, v in summarize([load.seconds[s]]).items() if k != "seconds"}}
        for s in sorted(load.seconds)
    ]
    result["load_errors"] = load.errors
    result["client_lag_ms"] = [load.client_lag_ms.get(s) for s in range(int(marks["end"]) + 1)]
    result["slowest_ping_ms_by_node"] = {
        index: [slowest.get(second) for second in range(int(marks["end"]) + 1)]
        for index, slowest in load.slowest_ping_ms.items()
    }

    def moved(before: dict, after: dict) -> dict[str, int]:
        return {
            name: sum(after[i][name] - before.get(i, {}).get(name, 0) for i in after)
            for name in (
                "antientropy_keys_sent",
                "antientropy_keys_repaired",
                "antientropy_bytes_sent",
            )
        }

    result["moved_join"] = moved(before_join, after_join)
    result["newcomer_keys_after_join"] = after_join[3]["keys"]
    result["moved_leave"] = moved(before_leave, after_leave)
    # The newcomer owns R/N = 3/4 of the buckets: the least a join can move.
    result["min_move_join_keys"] = round(keys_at_join * 3 / 4)
    # Read everything back at quorum.
    lost: list[bytes] = []
    async with Client([node.address for node in cluster.nodes[:3]]) as client:
        everything = [key_name(i) for i in range(keys)] + load.acknowledged

        async def check(chunk: list[bytes]) -> None:
            for key in chunk:
                for attempt in range(3):
                    try:
                        if await client.get(key, consistency="quorum") is None:
                            lost.append(key)
                        break
                    except GossipCacheError:
                        if attempt == 2:
                            lost.append(key)

        async with trio.open_nursery() as nursery:
            for start in range(0, len(everything), 2000):
                nursery.start_soon(check, everything[start : start + 2000])
    result["acknowledged_writes"] = len(load.acknowledged)
    result["keys_checked"] = len(everything)
    result["keys_lost"] = len(lost)
    result["lost_sample"] = [key.decode() for key in lost[:10]]
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.antientropy_real")
    parser.add_argument("experiment", choices=("refill", "scale"))
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--max-memory", default="2GiB")
    parser.add_argument("--rate", type=float, default=400.0, help="ops/s of the scale load")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--steady-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gossipcache-measure-") as workdir:
        cluster = Cluster(workdir, args.max_memory)
        try:
            if args.experiment == "refill":
                report = trio.run(refill, cluster, args.keys or 1_000_000)
            else:
                report = trio.run(
                    scale, cluster, args.keys or 50_000, args.rate, args.workers, args.steady_s
                )
        except BaseException:
            for node in cluster.nodes:
                path = os.path.join(workdir, f"node{node.index}.log")
                with open(path, "rb") as log:
                    print(f"--- node{node.index} log tail:\n{log.read()[-1500:].decode()}")
            raise
        finally:
            cluster.stop_all()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
