"""Issue 9's cluster benchmark: what replication costs in server CPU, against one node and Redis.

Run: ``python -m benchmarks.cluster_bench [--rounds 3] [--duration-s 5] [--out
docs/cluster-results.md]`` (``make bench-cluster``; about 6 minutes; needs ``redis-server``).

In one run on 127.0.0.1 it starts, on free ports:

- ``redis-server --save "" --appendonly no``;
- a standalone node (``gossipcache node --no-membership``);
- a 3-node cluster with R = 3 and one with R = 1 (``gossipcache node --seed ...
  --membership-profile local --replicas R``, each node with its own ``--host-id`` so R = 3
  means three nodes, and a fresh cluster key),

loads every key once into each, then in each of ``--rounds`` interleaved rounds (the order
reverses every other round) runs ``gossipcache bench`` (50 connections x pipeline 16, 100,000
keys, Zipf 0.99, 100-byte values) through every case of ``CASES``: GET-only and SET-only
against Redis and the standalone node; against the clusters through the smart-client mode
(``--seeds``: each request straight to its key's primary, one hop) at ``one`` and ``quorum``,
and through one node (forwarded: at R = 1 two keys in three are owned elsewhere).

**Server CPU per operation** is utime + stime (``/proc/PID/stat``) of every server process of
the case -- all three nodes of a cluster, summed -- over bench's measured window (its warm-up
excluded), divided by the operations in that window. Medians over the rounds, and the ratios
the issue sets targets on, go to stdout and to a Markdown report; every run goes to
``--json-out``. Each cluster's idle CPU (membership's timers) is measured once, so a reader
can tell it from the per-request cost. Every process is stopped at the end, whatever happens.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from benchmarks.compare import (
    HOST,
    Server,
    Settings,
    _run,
    free_port,
    machine_notes,
    redis_argv,
    running,
)
from gossipcache.cli.bench import read_process_cpu_s
from gossipcache.client.client import SyncClient
from gossipcache.errors import GossipCacheError

#: The issue's targets: cluster CPU per op over the standalone node's, for the same workload.
ONE_HOP_READ_TARGET = 1.2
QUORUM_WRITE_TARGET = 3.5
CLUSTER_SIZE = 3
#: How long a cluster may take until every node's table holds every member, all agreeing.
CLUSTER_READY_TIMEOUT_S = 30.0
CLUSTER_POLL_S = 0.1
#: How long a cluster's idle CPU is measured (membership's timers and nothing else).
IDLE_MEASURE_S = 5.0
KEYS = 100_000
#: A /metrics page read is cut at this size (a node's is tens of KiB).
METRICS_SIZE_BYTES_MAX = 4 * 1024 * 1024
VALUE_SIZE_BYTES = 100
CONNECTIONS = 50
PIPELINE = 16

#: Server groups: which processes a case measures.
REDIS = "redis"
SINGLE = "single node"
#: One node with membership and replication on, alone: every key is its own (R capped at 1),
#: so no message leaves it; the coordinator's own cost, without the network's.
SOLO = "1-node cluster"
R3 = "3 nodes, R=3"
R1 = "3 nodes, R=1"
#: How a case reaches a cluster.
ONE_HOP = "one hop"  # bench --seeds: each key to its primary
THROUGH_ONE = "through one node"  # every request to the first node, which coordinates


@dataclass(frozen=True)
class Case:
    """One ``gossipcache bench`` configuration against one server group."""

    name: str
    group: str
    read_ratio: float
    routing: str = THROUGH_ONE
    consistency: str | None = None
    pipeline: int = PIPELINE


#: The issue's target cases send no consistency argument: the node's defaults are the levels
#: they name (reads ``one``, writes ``quorum``), and a request without one takes the node's
#: fast path (a smart client sends none unless asked). The other levels are named.
CASES = (
    Case("GET", REDIS, 1.0),
    Case("SET", REDIS, 0.0),
    Case("GET", SINGLE, 1.0),
    Case("SET", SINGLE, 0.0),
    # A smart client's pipeline of 16 over 3 nodes gives each ~5 per batch: one node so fed.
    Case("GET, pipeline 5", SINGLE, 1.0, pipeline=5),
    Case("GET", SOLO, 1.0),
    Case("SET", SOLO, 0.0),
    Case("GET one (default), one hop", R3, 1.0, ONE_HOP),
    Case("GET one (named), one hop", R3, 1.0, ONE_HOP, "one"),
    Case("GET quorum, one hop", R3, 1.0, ONE_HOP, "quorum"),
    Case("SET quorum (default), one hop", R3, 0.0, ONE_HOP),
    Case("SET one, one hop", R3, 0.0, ONE_HOP, "one"),
    # Pipeline 48 spread over 3 nodes keeps ~16 requests per node per batch, as the single
    # node gets at pipeline 16: the per-request cost without the smaller batches.
    Case("GET one (default), one hop, pipeline 48", R3, 1.0, ONE_HOP, pipeline=48),
    Case("GET one (default), one hop", R1, 1.0, ONE_HOP),
    Case("GET one (default), through one node", R1, 1.0, THROUGH_ONE),
)


@dataclass
class Group:
    """The server processes of one group; ``native`` is where requests go through one node."""

    name: str
    servers: list[Server]
    protocol: str = "native"
    idle_cpu_us_per_s: float | None = None

    @property
    def pids(self) -> list[int]:
        return [server.pid for server in self.servers]

    def port(self, index: int = 0) -> int:
        server = self.servers[index]
        port = server.resp_port if self.protocol == "resp" else server.native_port
        assert port is not None
        return port


@dataclass
class Run:
    """One measured case in one round."""

    round: int
    group: str
    case: str
    ops_per_s: float
    server_cpu_us_per_op: float
    server_cpu_s_by_pid: list[float]
    latency_us_p50: float
    latency_us_p99: float
    generator_cpu_percent: float
    hit_ratio: float | None
    errors: int
    #: Replication counters over the whole bench run (warm-up included), summed over nodes.
    counters: dict[str, int] = field(default_factory=dict)


# -- servers ---------------------------------------------------------------------------------


def node_argv(native_port: int, resp_port: int, metrics_port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gossipcache", "node", "--host", HOST, "--port", str(native_port),
        "--resp-port", str(resp_port), "--metrics-port", str(metrics_port),
        "--max-memory", "256MiB", "--eviction", "sieve", *extra,
    ]  # fmt: skip


def start_single(stack: ExitStack, log_dir: str, name: str, *flags: str) -> Group:
    native, resp, metrics = free_port(), free_port(), free_port()
    log_path = f"{log_dir}/{name.replace(' ', '-')}.log"
    argv = node_argv(native, resp, metrics, *flags)
    ports = {"native_port": native, "resp_port": resp, "metrics_port": metrics}
    server = stack.enter_context(running(name, argv, log_path, **ports))
    return Group(name, [server])


def start_cluster(stack: ExitStack, log_dir: str, name: str, replicas: int) -> Group:
    """``CLUSTER_SIZE`` nodes joining through the first, each on its own host id; returns once
    every node's placement table holds them all and they agree on its epoch."""
    key_file = os.path.join(log_dir, f"cluster-r{replicas}.key")
    with open(key_file, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    os.chmod(key_file, 0o600)
    servers: list[Server] = []
    for index in range(CLUSTER_SIZE):
        native, resp, metrics = free_port(), free_port(), free_port()
        seed = ("--seed", f"{HOST}:{servers[0].native_port}") if servers else ()
        argv = node_argv(
            native, resp, metrics, "--membership-profile", "local", "--replicas", str(replicas),
            "--host-id", f"bench-host-{index}", "--cluster-key-file", key_file, *seed,
        )  # fmt: skip
        log_path = f"{log_dir}/r{replicas}-node{index}.log"
        servers.append(
            stack.enter_context(
                running(
                    f"{name} #{index}",
                    argv,
                    log_path,
                    native_port=native,
                    resp_port=resp,
                    metrics_port=metrics,
                )  # fmt: skip
            )
        )
    addresses = [f"{HOST}:{server.native_port}" for server in servers]
    deadline_s = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    while not _cluster_agrees(addresses):
        if time.monotonic() > deadline_s:
            raise RuntimeError(f"{name} did not agree on a table within {CLUSTER_READY_TIMEOUT_S}s")
        time.sleep(CLUSTER_POLL_S)
    return Group(name, servers)


def _cluster_agrees(addresses: list[str]) -> bool:
    epochs = set()
    for address in addresses:
        try:
            with SyncClient(address, timeout_s=2.0) as client:
                stats = client.stats(node=address)
        except GossipCacheError:
            return False
        if stats.get("placement_members") != len(addresses) or stats.get("placement_rebuilding"):
            return False
        epochs.add(stats.get("placement_epoch"))
    return len(epochs) == 1 and None not in epochs


def idle_cpu_us_per_s(group: Group) -> float:
    """CPU the group's processes use per second of doing nothing (membership's timers)."""
    start = sum(read_process_cpu_s(pid) for pid in group.pids)
    time.sleep(IDLE_MEASURE_S)
    return (sum(read_process_cpu_s(pid) for pid in group.pids) - start) * 1e6 / IDLE_MEASURE_S


def replication_counters(group: Group) -> dict[str, int]:
    """The ``replication_*`` counters of every node of a cluster, summed (empty otherwise)."""
    if group.name in (REDIS, SINGLE):
        return {}
    totals: dict[str, int] = {}
    for server in group.servers:
        address = f"{HOST}:{server.native_port}"
        with SyncClient(address, timeout_s=5.0) as client:
            stats = client.stats(node=address)
        for name, value in stats.items():
            if name.startswith("replication_") and type(value) is int:
                totals[name] = totals.get(name, 0) + value
        totals["peer_frames_received"] = totals.get("peer_frames_received", 0) + (
            peer_frames_received(server)
        )
    return totals


_FRAMES_RECEIVED = re.compile(
    rb'^gossipcache_membership_transport_total\{name="stream_frames_received"\} (\d+)', re.M
)


def peer_frames_received(server: Server) -> int:
    """Peer stream frames (payloads) the node received so far, from its /metrics: with the
    replication counters, how well messages are batched."""
    url = f"http://{HOST}:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5.0) as response:
        match = _FRAMES_RECEIVED.search(response.read(METRICS_SIZE_BYTES_MAX))
    return int(match.group(1)) if match else 0


# -- measured runs ---------------------------------------------------------------------------


def bench_argv(case: Case, group: Group, duration_s: float, *, preload: bool = False) -> list[str]:
    if case.routing == ONE_HOP:
        target = ["--seeds", ",".join(f"{HOST}:{s.native_port}" for s in group.servers)]
    else:
        target = ["--node", f"{HOST}:{group.port()}"]
    level = ["--consistency", case.consistency] if case.consistency else []
    pids = [arg for pid in group.pids for arg in ("--server-pid", str(pid))]
    return [
        sys.executable, "-m", "gossipcache", "bench", *target, "--protocol", group.protocol,
        *level, "--duration-s", str(duration_s), "--warmup-s", "1" if not preload else "0",
        "--connections", str(CONNECTIONS), "--pipeline", str(case.pipeline),
        "--keys", str(KEYS), "--key-distribution", "zipf:0.99",
        "--read-ratio", str(case.read_ratio), "--value-size", str(VALUE_SIZE_BYTES),
        "--preload" if preload else "--no-preload", *pids, "--json",
    ]  # fmt: skip


def preload(group: Group) -> None:
    """Write every key once (smart routing for a cluster: each key through its primary, at the
    node's default level, quorum), so every measured GET hits."""
    case = Case("preload", group.name, 0.0, ONE_HOP if group.name in (R3, R1) else THROUGH_ONE)
    summary = json.loads(_run(bench_argv(case, group, 0.2, preload=True)))
    if summary["preload_errors"]:
        raise RuntimeError(f"preloading {group.name} failed: {summary['error_messages']}")


def measure(case: Case, group: Group, round_index: int, duration_s: float) -> Run:
    before = replication_counters(group)
    summary = json.loads(_run(bench_argv(case, group, duration_s)))
    after = replication_counters(group)
    counters = {name: after[name] - before.get(name, 0) for name in after}
    return Run(
        round_index, group.name, case.name, summary["ops_per_s"],
        summary["server_cpu_us_per_op"], summary["server_cpu_s_by_pid"],
        summary["latency_us_p50"], summary["latency_us_p99"],
        summary["generator_cpu_percent_max_process"], summary["hit_ratio"], summary["errors"],
        counters,
    )  # fmt: skip


def run_all(rounds: int, duration_s: float, log: Callable[[str], None]) -> tuple[list, dict]:
    runs: list[Run] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="cluster-bench-") as log_dir:
        redis_port = free_port()
        redis = stack.enter_context(
            running(
                REDIS,
                redis_argv(Settings(), redis_port),
                f"{log_dir}/redis.log",
                resp_port=redis_port,
            )  # fmt: skip
        )
        groups = {
            REDIS: Group(REDIS, [redis], protocol="resp"),
            SINGLE: start_single(stack, log_dir, SINGLE, "--no-membership"),
            SOLO: start_single(
                stack, log_dir, SOLO, "--membership-profile", "local", "--host-id", "solo"
            ),
            R3: start_cluster(stack, log_dir, R3, 3),
            R1: start_cluster(stack, log_dir, R1, 1),
        }
        for group in groups.values():
            log(f"preloading {KEYS} keys into {group.name}")
            preload(group)
        for name in (SINGLE, SOLO, R3, R1):
            groups[name].idle_cpu_us_per_s = idle_cpu_us_per_s(groups[name])
            log(f"{name}: idle CPU {groups[name].idle_cpu_us_per_s:.0f} us/s")
        for round_index in range(rounds):
            order = CASES if round_index % 2 == 0 else tuple(reversed(CASES))
            for case in order:
                run = measure(case, groups[case.group], round_index, duration_s)
                runs.append(run)
                log(f"round {round_index + 1} {case.group:14} {case.name:40} "
                    f"{run.ops_per_s:>10,.0f} ops/s {run.server_cpu_us_per_op:>7.2f} us/op "
                    f"errors {run.errors}")  # fmt: skip
        idle = {name: group.idle_cpu_us_per_s for name, group in groups.items()}
    return runs, idle


# -- report ----------------------------------------------------------------------------------


def median_of(runs: list[Run], group: str, case: str, attribute: str) -> float | None:
    values = [getattr(r, attribute) for r in runs if r.group == group and r.case == case]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def per_round(runs: list[Run], group: str, case: str) -> list[float]:
    return [r.server_cpu_us_per_op for r in runs if r.group == group and r.case == case]


def ratio_rows(runs: list[Run]) -> list[dict]:
    """The issue's two targets, and the ratios beside them, on the medians of CPU per op (and
    per round, paired: the cases of one round ran minutes apart, not hours)."""
    rows = []
    specs = [
        ("one-hop GET at one, R=3 / single-node GET", (R3, "GET one (default), one hop"),
         (SINGLE, "GET"), ONE_HOP_READ_TARGET),
        ("one-hop GET at one, R=1 / single-node GET", (R1, "GET one (default), one hop"),
         (SINGLE, "GET"), ONE_HOP_READ_TARGET),
        ("one-hop GET at one, R=3, pipeline 48 / single-node GET", (R3,
         "GET one (default), one hop, pipeline 48"), (SINGLE, "GET"), ONE_HOP_READ_TARGET),
        ("one-hop GET at one named, R=3 / single-node GET", (R3, "GET one (named), one hop"),
         (SINGLE, "GET"), None),
        ("one-hop SET at quorum, R=3 / single-node SET", (R3,
         "SET quorum (default), one hop"), (SINGLE, "SET"), QUORUM_WRITE_TARGET),
        ("one-hop SET at one, R=3 / single-node SET", (R3, "SET one, one hop"),
         (SINGLE, "SET"), None),
        ("one-hop GET at quorum, R=3 / single-node GET", (R3, "GET quorum, one hop"),
         (SINGLE, "GET"), None),
        ("GET through one node (2/3 forwarded), R=1 / one-hop GET, R=1", (R1,
         "GET one (default), through one node"), (R1, "GET one (default), one hop"), None),
        ("1-node cluster GET / single-node GET", (SOLO, "GET"), (SINGLE, "GET"), None),
        ("1-node cluster SET / single-node SET", (SOLO, "SET"), (SINGLE, "SET"), None),
        ("single-node GET, pipeline 5 / single-node GET", (SINGLE, "GET, pipeline 5"),
         (SINGLE, "GET"), None),
        ("single-node GET / Redis GET", (SINGLE, "GET"), (REDIS, "GET"), None),
        ("single-node SET / Redis SET", (SINGLE, "SET"), (REDIS, "SET"), None),
    ]  # fmt: skip
    for label, numerator, denominator, target in specs:
        top = median_of(runs, *numerator, "server_cpu_us_per_op")
        bottom = median_of(runs, *denominator, "server_cpu_us_per_op")
        pairs = zip(per_round(runs, *numerator), per_round(runs, *denominator))
        ratio = top / bottom if top is not None and bottom else None
        rows.append({
            "label": label, "ratio": ratio, "target": target,
            "met": None if target is None or ratio is None else ratio <= target,
            "per_round": [a / b for a, b in pairs if b],
        })  # fmt: skip
    return rows


def render_markdown(runs: list[Run], idle: dict, notes: list[str], command: str) -> str:
    lines = [
        "# Cluster benchmark (issue 9): raw report",
        "",
        f"Command: `{command}`. Generated by `benchmarks/cluster_bench.py`; see "
        'docs/benchmarks.md, section "Cluster (issue 9)", for the reading.',
        "",
        *(f"- {note}" for note in notes),
        "",
        f"`gossipcache bench`: {CONNECTIONS} connections x pipeline {PIPELINE} (unless named), "
        f"{KEYS:,} keys (all preloaded), Zipf 0.99, {VALUE_SIZE_BYTES}-byte values; medians of "
        "the rounds. Server CPU: every process of the case, summed, over the measured window.",
        "",
        "| servers | case | ops/s | server CPU µs/op | per round | p50 µs | p99 µs "
        "| generator % | forwarded | replica msgs / op | peer frames / op |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in CASES:
        group, name = case.group, case.name
        rows = [r for r in runs if r.group == group and r.case == name]
        if not rows:
            continue
        counters = rows[-1].counters
        ops = sum(
            counters.get(f"replication_{level}_{kind}", 0)
            for level in ("one", "quorum", "all") for kind in ("reads", "writes")
        )  # fmt: skip
        forwarded = f"{counters.get('replication_forwarded', 0) / ops:.2f}" if ops else "-"
        served = counters.get("replication_writes_served", 0) + counters.get(
            "replication_reads_served", 0
        )
        messages = f"{served / ops:.2f}" if ops else "-"
        frames = f"{counters.get('peer_frames_received', 0) / ops:.3f}" if ops else "-"

        def med(attribute: str, rows_group=group, rows_case=name) -> float | None:
            return median_of(runs, rows_group, rows_case, attribute)

        lines.append(
            f"| {group} | {name} | {med('ops_per_s'):,.0f} | "
            f"{med('server_cpu_us_per_op'):.2f} | "
            + ", ".join(f"{r.server_cpu_us_per_op:.2f}" for r in rows)
            + f" | {med('latency_us_p50'):,.0f} | {med('latency_us_p99'):,.0f} | "
            f"{med('generator_cpu_percent'):.0f} | {forwarded} | {messages} | {frames} |"
        )
    lines += [
        "",
        "*forwarded*: requests the receiving node does not own, over requests coordinated (last "
        "round, warm-up included); *replica msgs / op*: replica reads and writes served by "
        "the nodes per coordinated operation; *peer frames / op*: peer stream payloads the nodes "
        "received per coordinated operation (membership's included), so replica msgs / frames "
        "is how many messages one frame carried.",
        "",
        "| ratio of server CPU per op (medians) | ratio | per round | target |",
        "|---|---:|---|---|",
    ]
    for row in ratio_rows(runs):
        if row["ratio"] is None:
            continue
        target = "-"
        if row["target"] is not None:
            target = f"<= {row['target']}x " + ("met" if row["met"] else "**missed**")
        per = ", ".join(f"{value:.2f}" for value in row["per_round"])
        lines.append(f"| {row['label']} | {row['ratio']:.2f} | {per} | {target} |")
    lines += ["", "Idle CPU (no requests; membership's timers), per second, summed over nodes:"]
    lines += [f"- {name}: {value:.0f} µs/s" for name, value in idle.items() if value is not None]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=5.0, help="measured s per case")
    parser.add_argument("--out", default="docs/cluster-results.md", help="Markdown report")
    parser.add_argument("--json-out", default=None, help="also write every run as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration_s <= 0:
        parser.error("--rounds and --duration-s must be positive")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def stop(signal_number: int, _frame: object) -> None:
        raise SystemExit(128 + signal_number)  # servers are stopped on the way out

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    notes = machine_notes(Settings())
    started_s = time.monotonic()
    try:
        runs, idle = run_all(args.rounds, args.duration_s, log)
    except (
        RuntimeError,
        OSError,
        subprocess.TimeoutExpired,
        ValueError,
        GossipCacheError,
    ) as error:
        print(f"cluster_bench: {error}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    notes.append(f"the whole run took {time.monotonic() - started_s:.0f} s; load at end {load}")
    command = "python -m benchmarks.cluster_bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    markdown = render_markdown(runs, idle, notes, command.strip())
    with open(args.out, "w") as out:
        out.write(markdown)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump([asdict(run) for run in runs], out, indent=1)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
