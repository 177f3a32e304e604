"""The measured comparison of a gossipcache node with Redis, on this machine, end to end.

Run: ``python -m benchmarks.compare [--rounds 3] [--baseline REV] [--out docs/server-results.md]``.

It starts its own ``redis-server`` (no persistence) and its own gossipcache node, on free
127.0.0.1 ports, and in each of ``--rounds`` interleaved rounds runs against both servers:

* ``redis-benchmark -c 50 -n N -t set,get -d 100 -P 1`` and ``-P 16`` on each RESP port;
* ``gossipcache bench --protocol resp`` against both and ``--protocol native`` against the node;
* the node alone under ``gossipcache bench`` with and without a scraper fetching ``/metrics``
  every 100 ms, for the p99 latency cost of being scraped.

With ``--baseline REV`` it also checks out the git revision REV in a temporary worktree (removed
at the end, whatever happens), starts a second node from that checkout with the same flags, named
``gossipcache@<short rev>``, and runs it in every round through the same redis-benchmark runs
(-P 1 and -P 16; not ``gossipcache bench`` nor the scrape test): before and after a change,
measured side by side against the same Redis.

Beside throughput it reports each server's **CPU microseconds per operation** (utime + stime from
/proc/PID/stat over the run), which unlike throughput does not depend on who else is using the
cores. Medians over rounds, and the gossipcache / Redis ratio per configuration, go to stdout and
to a Markdown file. Both servers are stopped at the end, whatever happens. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from gossipcache.cli.bench import read_process_cpu_s

HOST = "127.0.0.1"  # the only address this module ever uses
#: redis-benchmark's flags, as the issue's targets state them.
REDIS_BENCHMARK_CLIENTS = 50
REDIS_BENCHMARK_VALUE_SIZE_BYTES = 100
REDIS_BENCHMARK_PIPELINES = (1, 16)
#: Targets: gossipcache's server CPU per op over Redis', per redis-benchmark pipeline depth.
CPU_RATIO_TARGETS = {1: 2.0, 16: 1.5}
SCRAPE_INTERVAL_S = 0.1
SCRAPE_P99_CHANGE_TARGET = 0.05
SERVER_START_TIMEOUT_S = 30.0
#: Bound on any one measured subprocess (redis-benchmark, gossipcache bench).
RUN_TIMEOUT_S = 300.0
SCRAPE_TIMEOUT_S = 5.0
SCRAPE_RESPONSE_SIZE_BYTES_MAX = 16 * 1024 * 1024
#: The checkout this module belongs to: the current code, and the repository ``--baseline``
#: revisions come from.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: ``--baseline``: the baseline node's name is this prefix and the revision's short hash.
BASELINE_PREFIX = "gossipcache@"
#: Target: the current node's CPU per op (against Redis) at most 5 % above the baseline's.
BASELINE_CHANGE_TARGET = 0.05
GIT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Settings:
    """What to run; the command-line flags."""

    rounds: int = 3
    requests: int = 200_000
    bench_duration_s: float = 5.0
    bench_warmup_s: float = 1.0
    bench_connections: int = 50
    bench_pipeline: int = 16
    bench_keys: int = 100_000
    bench_processes: int = 1
    #: The scrape test is latency-sensitive rather than saturating: with 800 requests in flight
    #: p99 is queueing (Little's law) and a stall hides in the noise; 10 connections x 1 show it.
    scrape_connections: int = 10
    scrape_pipeline: int = 1
    redis_server: str = "redis-server"
    redis_benchmark: str = "redis-benchmark"
    #: A git revision whose node also runs the redis-benchmark runs (``--baseline``).
    baseline: str | None = None


@dataclass(frozen=True)
class Measurement:
    """One run against one server."""

    round: int
    config: str  # e.g. "redis-benchmark -P 16"
    server: str  # "redis" or "gossipcache"
    ops_per_s: float
    server_cpu_us_per_op: float
    latency_us_p99: float | None = None
    generator_cpu_percent: float | None = None
    hit_ratio: float | None = None
    errors: int = 0
    scrapes: int | None = None


# -- servers ---------------------------------------------------------------------------------

#: The reference bare Trio server's name in measurements.
BARE_TRIO = "bare-trio"


@dataclass
class Server:
    """A server process this module started, and the ports it serves."""

    name: str
    process: subprocess.Popen
    resp_port: int
    native_port: int | None = None
    metrics_port: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return read_process_cpu_s(self.pid)


def free_port() -> int:
    """A TCP port nobody on 127.0.0.1 listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_until_serving(server: Server) -> None:
    deadline_s = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _answers_ping(server.resp_port):
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode} at start")
        if time.monotonic() > deadline_s:
            raise RuntimeError(
                f"{server.name} did not answer PING within {SERVER_START_TIMEOUT_S}s"
            )
        time.sleep(0.05)


@contextmanager
def running(
    name: str,
    argv: list[str],
    log_path: str,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    **ports: int,
) -> Iterator[Server]:
    """Start ``argv``, wait until its RESP port answers PING; stop it on exit, whatever happens."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd, env=env
        )
    server = Server(name, process, **ports)
    try:
        try:
            _wait_until_serving(server)
        except RuntimeError as error:
            with open(log_path, "rb") as log:
                tail = log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{error}; its log ends:\n{tail}") from None
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_argv(settings: Settings, port: int) -> list[str]:
    return [
        settings.redis_server, "--port", str(port), "--bind", HOST, "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
    ]  # fmt: skip


def node_argv(native_port: int, resp_port: int, metrics_port: int) -> list[str]:
    return [
        sys.executable, "-m", "gossipcache", "node", "--host", HOST, "--port", str(native_port),
        "--resp-port", str(resp_port), "--metrics-port", str(metrics_port),
        "--max-memory", "256MiB", "--eviction", "sieve",
    ]  # fmt: skip


# -- baseline: the node of another git revision ---------------------------------------------


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=GIT_TIMEOUT_S, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def baseline_label(short_rev: str) -> str:
    return f"{BASELINE_PREFIX}{short_rev}"


@contextmanager
def baseline_worktree(revision: str, log: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """``git worktree add --detach`` of ``revision`` in a temporary directory; yields
    ``(path, short hash)``. The worktree is removed on exit, whatever happens."""
    commit = _git("rev-parse", "--verify", "--end-of-options", f"{revision}^{{commit}}")
    short_rev = _git("rev-parse", "--short", commit)
    parent = tempfile.mkdtemp(prefix="gossipcache-baseline-")
    path = os.path.join(parent, f"gossipcache-{short_rev}")
    try:
        _git("worktree", "add", "--detach", path, commit)
        log(f"baseline {revision} = {commit}: worktree {path}")
        yield path, short_rev
    finally:
        try:
            _git("worktree", "remove", "--force", path)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log(f"baseline worktree: {error}; removing the directory and pruning instead")
            shutil.rmtree(path, ignore_errors=True)
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                _git("worktree", "prune")
        shutil.rmtree(parent, ignore_errors=True)


#: Run with the node's interpreter, working directory and environment: where its
#: ``python -m gossipcache`` finds the package (``-c`` and ``-m`` both put the working directory
#: first on sys.path, then PYTHONPATH, then the venv's editable install).
IMPORT_ORIGIN_SNIPPET = "import gossipcache; print(gossipcache.__file__)"


def import_origin(cwd: str | None = None, env: dict[str, str] | None = None) -> str:
    """The real path of the ``gossipcache`` package a node started with ``cwd`` and ``env``
    imports."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ORIGIN_SNIPPET], stdin=subprocess.DEVNULL,
        capture_output=True, text=True, cwd=cwd, env=env, timeout=GIT_TIMEOUT_S, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"import gossipcache failed (cwd {cwd}): {result.stderr[-2000:]}")
    return os.path.dirname(os.path.realpath(result.stdout.strip()))


def check_import_origin(name: str, origin: str, checkout: str | Path) -> None:
    """Raise unless ``origin`` (from ``import_origin``) is the ``gossipcache`` package of
    ``checkout``."""
    expected = os.path.join(os.path.realpath(checkout), "gossipcache")
    if origin != expected:
        raise RuntimeError(f"{name} would import gossipcache from {origin}, not {expected}")


def check_process_started_in(server: Server, cwd: str, pythonpath: str) -> None:
    """Raise unless the running process has ``cwd`` as working directory and ``PYTHONPATH``
    ``pythonpath``: what ``import_origin`` was checked with."""
    actual_cwd = os.readlink(f"/proc/{server.pid}/cwd")
    with open(f"/proc/{server.pid}/environ", "rb") as environ_file:
        environ = dict(
            item.split(b"=", 1) for item in environ_file.read().split(b"\0") if b"=" in item
        )
    actual_pythonpath = environ.get(b"PYTHONPATH", b"").decode()
    if os.path.realpath(actual_cwd) != os.path.realpath(cwd) or actual_pythonpath != pythonpath:
        raise RuntimeError(
            f"{server.name} runs in {actual_cwd} with PYTHONPATH={actual_pythonpath!r}, "
            f"not {cwd} with {pythonpath!r}"
        )


# -- measured runs ---------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT_S, check=False
    )
    if result.returncode not in (0, 1):  # bench exits 1 when some request failed: reported
        raise RuntimeError(
            f"{' '.join(argv)} exited with {result.returncode}:\n{result.stderr.decode()[-2000:]}"
        )
    return result.stdout.decode()


def redis_benchmark_argv(settings: Settings, port: int, pipeline: int) -> list[str]:
    return [
        settings.redis_benchmark, "-h", HOST, "-p", str(port),
        "-c", str(REDIS_BENCHMARK_CLIENTS), "-n", str(settings.requests), "-t", "set,get",
        "-d", str(REDIS_BENCHMARK_VALUE_SIZE_BYTES), "-P", str(pipeline), "--csv",
    ]  # fmt: skip


def parse_redis_benchmark_csv(text: str) -> dict[str, float]:
    """``{"SET": rps, "GET": rps}`` from ``redis-benchmark --csv`` output."""
    rates = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] != "test":
            try:
                rates[row[0]] = float(row[1])
            except ValueError:
                continue
    if not {"SET", "GET"} <= rates.keys():
        raise RuntimeError(f"unexpected redis-benchmark output: {text[:500]!r}")
    return rates


def measure_redis_benchmark(
    settings: Settings, server: Server, pipeline: int, round_index: int
) -> Measurement:
    """One ``redis-benchmark -t set,get`` run: N SETs then N GETs. Throughput is over both
    (2N over the sum of the two phases); CPU per op is the server's CPU over the whole run / 2N."""
    cpu_start_s = server.cpu_s()
    output = _run(redis_benchmark_argv(settings, server.resp_port, pipeline))
    cpu_s = server.cpu_s() - cpu_start_s
    rates = parse_redis_benchmark_csv(output)
    ops = 2 * settings.requests
    ops_per_s = ops / (settings.requests / rates["SET"] + settings.requests / rates["GET"])
    return Measurement(
        round_index, f"redis-benchmark -P {pipeline}", server.name, round(ops_per_s, 1),
        round(cpu_s * 1e6 / ops, 2),
    )  # fmt: skip


def bench_argv(
    settings: Settings,
    port: int,
    protocol: str,
    server_pid: int,
    connections: int | None = None,
    pipeline: int | None = None,
) -> list[str]:
    """``gossipcache bench`` with the settings' workload (connections, pipeline overridable)."""
    return [
        sys.executable, "-m", "gossipcache", "bench", "--node", f"{HOST}:{port}",
        "--protocol", protocol, "--duration-s", str(settings.bench_duration_s),
        "--warmup-s", str(settings.bench_warmup_s),
        "--connections", str(connections or settings.bench_connections),
        "--pipeline", str(pipeline or settings.bench_pipeline), "--keys", str(settings.bench_keys),
        "--key-distribution", "zipf:0.99", "--read-ratio", "0.9", "--value-size", "100",
        "--processes", str(settings.bench_processes), "--server-pid", str(server_pid), "--json",
    ]  # fmt: skip


def measure_bench(
    settings: Settings,
    server: Server,
    protocol: str,
    round_index: int,
    config: str = "",
    **workload: int,
) -> Measurement:
    """One ``gossipcache bench`` run; server CPU is read by bench over its measured window.
    ``workload``: ``connections`` / ``pipeline`` overrides."""
    port = server.resp_port if protocol == "resp" else server.native_port
    assert port is not None
    summary = json.loads(_run(bench_argv(settings, port, protocol, server.pid, **workload)))
    return Measurement(
        round_index, config or f"gossipcache bench {protocol} -P {settings.bench_pipeline}",
        server.name, summary["ops_per_s"], summary["server_cpu_us_per_op"],
        latency_us_p99=summary["latency_us_p99"],
        generator_cpu_percent=summary["generator_cpu_percent_max_process"],
        hit_ratio=summary["hit_ratio"], errors=summary["errors"],
    )  # fmt: skip


class Scraper:
    """Fetches ``/metrics`` every ``SCRAPE_INTERVAL_S`` in a thread, as Prometheus would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.scrapes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=SCRAPE_TIMEOUT_S * 2)

    def _loop(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            if self.fetch():
                self.scrapes += 1
            else:
                self.failures += 1

    def fetch(self) -> bool:
        request = f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        try:
            with socket.create_connection((HOST, self.port), timeout=SCRAPE_TIMEOUT_S) as conn:
                conn.sendall(request.encode())
                response = b""
                while len(response) < SCRAPE_RESPONSE_SIZE_BYTES_MAX:
                    data = conn.recv(65536)
                    if not data:
                        break
                    response += data
        except OSError:
            return False
        return response.startswith(b"HTTP/1.1 200")


SCRAPE_OFF = "scrape: off"
SCRAPE_ON = "scrape: every 100 ms"


@contextmanager
def pinned_apart(server_pid: int) -> Iterator[bool]:
    """While inside: the server on one CPU, this process (the scraper thread) and the
    generators it starts (children inherit affinity) on the others. Yields whether it could.

    On a 2-core box a scraper and a generator sharing the server's core move p99 by tens of
    percent either way (CPU contention, not the scrape); apart, what is left is the scrape's own
    cost to the server's loop.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
        server_cpus = os.sched_getaffinity(server_pid)
    except (AttributeError, OSError):
        yield False
        return
    if len(cpus) < 2:
        yield False
        return
    os.sched_setaffinity(server_pid, cpus[:1])
    os.sched_setaffinity(0, cpus[1:])
    try:
        yield True
    finally:
        os.sched_setaffinity(0, cpus)
        with suppress(OSError):
            os.sched_setaffinity(server_pid, server_cpus)


def measure_scrape_pair(settings: Settings, node: Server, round_index: int) -> list[Measurement]:
    """The node under ``gossipcache bench --protocol native`` without and with the scraper,
    back to back, the node pinned apart from the load (``pinned_apart``); which goes first
    alternates between rounds."""
    with pinned_apart(node.pid):
        return _measure_scrape_pair(settings, node, round_index)


def _measure_scrape_pair(settings: Settings, node: Server, round_index: int) -> list[Measurement]:
    assert node.metrics_port is not None
    workload = {"connections": settings.scrape_connections, "pipeline": settings.scrape_pipeline}
    pair = []
    for scraped in (False, True) if round_index % 2 == 0 else (True, False):
        if not scraped:
            pair.append(
                measure_bench(settings, node, "native", round_index, SCRAPE_OFF, **workload)
            )
            continue
        with Scraper(node.metrics_port) as scraper:
            measurement = measure_bench(
                settings, node, "native", round_index, SCRAPE_ON, **workload
            )
        if scraper.failures:
            raise RuntimeError(f"{scraper.failures} /metrics scrapes failed")
        pair.append(Measurement(**{**asdict(measurement), "scrapes": scraper.scrapes}))
    return sorted(pair, key=lambda m: m.config != SCRAPE_OFF)


def run_round(
    settings: Settings,
    redis: Server,
    node: Server,
    round_index: int,
    log: Callable[[str], None],
    bare: Server | None = None,
    baseline: Server | None = None,
) -> list[Measurement]:
    """One round of every configuration. Which server goes first alternates between rounds,
    so a drift in the machine's load does not always favour the same one. ``bare`` (the
    reference bare Trio server) and ``baseline`` (the node of ``--baseline``) join the
    redis-benchmark runs; the baseline runs right after the node in even rounds, right before it
    in odd ones."""
    pair = (redis, node) if round_index % 2 == 0 else (node, redis)
    rotation = (redis, node) if baseline is None else (redis, node, baseline)
    if round_index % 2:
        rotation = rotation[::-1]
    trio_reference = [] if bare is None else [bare]
    measurements: list[Measurement] = []

    def record(measurement: Measurement) -> None:
        measurements.append(measurement)
        log(
            f"round {round_index + 1} {measurement.config:32} {measurement.server:20}"
            f"{measurement.ops_per_s:12,.0f} ops/s {measurement.server_cpu_us_per_op:8.2f} us/op"
            + (f"  p99 {measurement.latency_us_p99} us" if measurement.latency_us_p99 else "")
        )

    for pipeline in REDIS_BENCHMARK_PIPELINES:
        for server in (*rotation, *trio_reference):
            record(measure_redis_benchmark(settings, server, pipeline, round_index))
    for server in pair:
        record(measure_bench(settings, server, "resp", round_index))
    record(measure_bench(settings, node, "native", round_index))
    for measurement in measure_scrape_pair(settings, node, round_index):
        record(measurement)
    return measurements


# -- report ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def medians(measurements: list[Measurement], config: str, server: str) -> dict[str, float | None]:
    rows = [m for m in measurements if m.config == config and m.server == server]
    return {
        "ops_per_s": _median([m.ops_per_s for m in rows]),
        "server_cpu_us_per_op": _median([m.server_cpu_us_per_op for m in rows]),
        "latency_us_p99": _median([m.latency_us_p99 for m in rows if m.latency_us_p99]),
        "generator_cpu_percent": _median(
            [m.generator_cpu_percent for m in rows if m.generator_cpu_percent is not None]
        ),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _cpu_of(measurements: list[Measurement], round_index: int, config: str, server: str):
    for m in measurements:
        if m.round == round_index and m.config == config and m.server == server:
            return m.server_cpu_us_per_op
    return None


def comparison_rows(settings: Settings, measurements: list[Measurement]) -> list[dict]:
    """One row per configuration: medians per server and the gossipcache / Redis ratios."""
    resp_bench = f"gossipcache bench resp -P {settings.bench_pipeline}"
    native_bench = f"gossipcache bench native -P {settings.bench_pipeline}"
    rows = []
    configs = [f"redis-benchmark -P {pipeline}" for pipeline in REDIS_BENCHMARK_PIPELINES]
    for config in [*configs, resp_bench, native_bench]:
        # The native protocol has no Redis counterpart: compare it with Redis over RESP.
        redis_config = resp_bench if config == native_bench else config
        redis = medians(measurements, redis_config, "redis")
        node = medians(measurements, config, "gossipcache")
        pipeline = int(config.rsplit(" ", 1)[1]) if config.startswith("redis-") else None
        per_round = []
        for round_index in range(settings.rounds):
            redis_cpu = _cpu_of(measurements, round_index, redis_config, "redis")
            node_cpu = _cpu_of(measurements, round_index, config, "gossipcache")
            if redis_cpu and node_cpu is not None:
                per_round.append(node_cpu / redis_cpu)
        rows.append({
            "config": config,
            "redis": redis,
            "gossipcache": node,
            "throughput_ratio": _ratio(node["ops_per_s"], redis["ops_per_s"]),
            "cpu_ratio": _ratio(node["server_cpu_us_per_op"], redis["server_cpu_us_per_op"]),
            "cpu_ratio_target": CPU_RATIO_TARGETS.get(pipeline),
            "cpu_ratios_per_round": per_round,
        })  # fmt: skip
    return rows


def _change(new: float | None, old: float | None) -> float | None:
    """``new / old - 1``: +0.05 is 5 % more."""
    ratio = _ratio(new, old)
    return None if ratio is None else ratio - 1


def baseline_server(measurements: list[Measurement]) -> str | None:
    """The baseline node's name (``gossipcache@<short rev>``) in ``measurements``, if any."""
    names = sorted({m.server for m in measurements if m.server.startswith(BASELINE_PREFIX)})
    if len(names) > 1:
        raise ValueError(f"more than one baseline in the measurements: {names}")
    return names[0] if names else None


def baseline_rows(measurements: list[Measurement], baseline: str) -> list[dict]:
    """Per redis-benchmark pipeline depth: CPU us/op medians of the current node, the baseline
    node and Redis, the ratios to Redis, the current / baseline change (of the medians, which is
    also the change of the ratios to Redis) and every round's values (all three servers measured
    back to back in that round), with the median of the per-round changes."""
    rounds = sorted({m.round for m in measurements})
    rows = []
    for pipeline in REDIS_BENCHMARK_PIPELINES:
        config = f"redis-benchmark -P {pipeline}"
        current, old, redis = (
            medians(measurements, config, server)["server_cpu_us_per_op"]
            for server in ("gossipcache", baseline, "redis")
        )
        per_round = []
        for round_index in rounds:
            round_current, round_old, round_redis = (
                _cpu_of(measurements, round_index, config, server)
                for server in ("gossipcache", baseline, "redis")
            )
            per_round.append({
                "round": round_index,
                "current": round_current,
                "baseline": round_old,
                "redis": round_redis,
                "current_per_redis": _ratio(round_current, round_redis),
                "baseline_per_redis": _ratio(round_old, round_redis),
                "change": _change(round_current, round_old),
            })  # fmt: skip
        change = _change(current, old)
        rows.append({
            "config": config,
            "current": current,
            "baseline": old,
            "redis": redis,
            "current_per_redis": _ratio(current, redis),
            "baseline_per_redis": _ratio(old, redis),
            "change": change,
            "change_paired_median": _median(
                [r["change"] for r in per_round if r["change"] is not None]
            ),
            "met": None if change is None else change <= BASELINE_CHANGE_TARGET,
            "per_round": per_round,
        })  # fmt: skip
    return rows


def _clock_ticks_per_s() -> int:
    """What /proc/PID/stat counts CPU time in (``SC_CLK_TCK``, almost always 100)."""
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def _percent(change: float | None) -> str:
    return "-" if change is None else f"{100 * change:+.1f} %"


def render_baseline(measurements: list[Measurement]) -> list[str]:
    """The report's before/after section (Markdown lines); none without a baseline node."""
    baseline = baseline_server(measurements)
    if baseline is None:
        return []
    rows = baseline_rows(measurements, baseline)
    lines = [
        "",
        f"## Before and after: the current node against {baseline}",
        "",
        f"`{baseline}`: the node of that revision, run from a git worktree of it with the same "
        "flags, in every round through the same redis-benchmark runs as the current node and "
        "Redis. Server CPU us/op, medians over rounds; change = current / baseline - 1 of the "
        "medians (the same as the change of the ratios to Redis); target: at most "
        f"+{100 * BASELINE_CHANGE_TARGET:.0f} %. Server CPU is counted in clock ticks of "
        f"{1000 / _clock_ticks_per_s():.0f} ms: a run of N ops resolves 1 tick / N.",
        "",
        f"| configuration | current CPU us/op | {baseline} CPU us/op | Redis CPU us/op "
        f"| current / Redis | {baseline} / Redis | change | per-round changes (median) "
        "| target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_round = ", ".join(_percent(r["change"]) for r in row["per_round"])
        verdict = ""
        if row["met"] is not None:
            verdict = f"<= +{100 * BASELINE_CHANGE_TARGET:.0f} % " + (
                "met" if row["met"] else "**missed**"
            )
        lines.append(
            f"| {row['config']} | {_fmt(row['current'])} | {_fmt(row['baseline'])} "
            f"| {_fmt(row['redis'])} | {_fmt(row['current_per_redis'])} "
            f"| {_fmt(row['baseline_per_redis'])} | {_percent(row['change'])} "
            f"| {per_round} ({_percent(row['change_paired_median'])}) | {verdict} |"
        )
    lines += [
        "",
        f"| round | configuration | current CPU us/op | {baseline} CPU us/op | Redis CPU us/op "
        f"| current / Redis | {baseline} / Redis | change |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        for r in row["per_round"]:
            lines.append(
                f"| {r['round'] + 1} | {row['config']} | {_fmt(r['current'])} "
                f"| {_fmt(r['baseline'])} | {_fmt(r['redis'])} "
                f"| {_fmt(r['current_per_redis'])} | {_fmt(r['baseline_per_redis'])} "
                f"| {_percent(r['change'])} |"
            )
    return lines


def scrape_result(measurements: list[Measurement]) -> dict:
    """Median p99 without and with the scraper, and the relative change of the medians (also
    the median of the per-round changes, pairs measured back to back)."""
    quiet = [m for m in measurements if m.config == SCRAPE_OFF]
    scraped = [m for m in measurements if m.config == SCRAPE_ON]
    p99_off = _median([m.latency_us_p99 for m in quiet])
    p99_on = _median([m.latency_us_p99 for m in scraped])
    paired = [
        b.latency_us_p99 / a.latency_us_p99 - 1
        for a, b in zip(quiet, scraped)
        if a.latency_us_p99 and b.latency_us_p99
    ]
    return {
        "latency_us_p99_without": p99_off,
        "latency_us_p99_with": p99_on,
        "p99_change": _ratio(p99_on, p99_off) - 1 if p99_off and p99_on else None,
        "p99_change_paired_median": _median(paired),
        "ops_per_s_without": _median([m.ops_per_s for m in quiet]),
        "ops_per_s_with": _median([m.ops_per_s for m in scraped]),
        "scrapes_per_run": _median([m.scrapes for m in scraped if m.scrapes is not None]),
        "target": SCRAPE_P99_CHANGE_TARGET,
    }


def machine_notes(settings: Settings) -> list[str]:
    """What a reader needs to judge the numbers: cores, CPU, load, versions."""
    cpu_model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    redis_version = subprocess.run(
        [settings.redis_server, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"{os.cpu_count()} cores ({cpu_model}), load average at start {load}",
        f"Python {platform.python_version()}, {redis_version}",
        "client and servers share the machine's cores: every generator competes with the server "
        "it measures, so throughput is a lower bound; CPU per op is the fairer comparison",
    ]


def render_markdown(
    settings: Settings, measurements: list[Measurement], notes: list[str], command: str
) -> str:
    """The results file: medians table, ratios, scrape cost, per-round raw numbers."""
    lines = [
        "# gossipcache node vs Redis: measured results",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}`; "
        f"medians of {settings.rounds} interleaved rounds.",
        "",
        *[f"- {note}" for note in notes],
        "",
        "| configuration | Redis ops/s | gossipcache ops/s | throughput ratio "
        "| Redis CPU us/op | gossipcache CPU us/op | CPU ratio | per round | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in comparison_rows(settings, measurements):
        redis, node = row["redis"], row["gossipcache"]
        target = row["cpu_ratio_target"]
        verdict = ""
        if target is not None and row["cpu_ratio"] is not None:
            verdict = f"<= {target}x " + ("met" if row["cpu_ratio"] <= target else "**missed**")
        lines.append(
            f"| {row['config']} | {_fmt(redis['ops_per_s'], 0)} | {_fmt(node['ops_per_s'], 0)} "
            f"| {_fmt(row['throughput_ratio'])} | {_fmt(redis['server_cpu_us_per_op'])} "
            f"| {_fmt(node['server_cpu_us_per_op'])} | {_fmt(row['cpu_ratio'])} "
            f"| {', '.join(f'{ratio:.2f}' for ratio in row['cpu_ratios_per_round'])} "
            f"| {verdict} |"
        )
    lines += render_baseline(measurements)
    lines += [
        "",
        "## Reference: the bare Trio server, same runs",
        "",
        "`python -m benchmarks.bare_server`: GET/SET on a dict, a task per connection over raw "
        "`trio.socket`, nothing else -- the floor of a Trio RESP server in Python.",
        "",
        "| configuration | bare Trio CPU us/op | bare / Redis | gossipcache / bare |",
        "|---|---:|---:|---:|",
    ]
    for pipeline in REDIS_BENCHMARK_PIPELINES:
        config = f"redis-benchmark -P {pipeline}"
        bare_cpu = medians(measurements, config, BARE_TRIO)["server_cpu_us_per_op"]
        redis_cpu = medians(measurements, config, "redis")["server_cpu_us_per_op"]
        node_cpu = medians(measurements, config, "gossipcache")["server_cpu_us_per_op"]
        lines.append(
            f"| {config} | {_fmt(bare_cpu)} | {_fmt(_ratio(bare_cpu, redis_cpu))} "
            f"| {_fmt(_ratio(node_cpu, bare_cpu))} |"
        )
    lines += [
        "",
        "Ratios are gossipcache / Redis: CPU ratio of the medians, then each round's own ratio "
        "(both servers measured back to back). The native row's Redis columns are Redis over "
        "RESP under the same generator settings.",
        "",
        "## gossipcache bench: latency and generator load (medians)",
        "",
        "| configuration | server | p99 us | busiest generator process, % of a core |",
        "|---|---|---:|---:|",
    ]
    for config in sorted({m.config for m in measurements if m.latency_us_p99 is not None}):
        for server in ("redis", "gossipcache"):
            median = medians(measurements, config, server)
            if median["latency_us_p99"] is not None:
                lines.append(
                    f"| {config} | {server} | {_fmt(median['latency_us_p99'], 0)} "
                    f"| {_fmt(median['generator_cpu_percent'], 0)} |"
                )
    scrape = scrape_result(measurements)
    change = scrape["p99_change"]
    lines += [
        "",
        f"## Metrics scraping (node, native protocol, {settings.scrape_connections} connections"
        f" x pipeline {settings.scrape_pipeline}, `/metrics` every 100 ms; the node pinned to one"
        f" CPU, generator and scraper to the others)",
        "",
        f"p99 without scraper {_fmt(scrape['latency_us_p99_without'], 0)} us, with "
        f"{_fmt(scrape['latency_us_p99_with'], 0)} us: change "
        f"{_fmt(None if change is None else 100 * change, 1)} % of the medians "
        f"(median of per-round paired changes "
        f"{_fmt(None if scrape['p99_change_paired_median'] is None else 100 * scrape['p99_change_paired_median'], 1)} %), "  # noqa: E501
        f"target < {100 * SCRAPE_P99_CHANGE_TARGET:.0f} %. Throughput "
        f"{_fmt(scrape['ops_per_s_without'], 0)} -> {_fmt(scrape['ops_per_s_with'], 0)} ops/s; "
        f"{_fmt(scrape['scrapes_per_run'], 0)} scrapes per run.",
        "",
        "## Every run",
        "",
        "| round | configuration | server | ops/s | server CPU us/op | p99 us | hit ratio | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        lines.append(
            f"| {m.round + 1} | {m.config} | {m.server} | {_fmt(m.ops_per_s, 0)} "
            f"| {_fmt(m.server_cpu_us_per_op)} | {_fmt(m.latency_us_p99, 0)} "
            f"| {_fmt(m.hit_ratio, 4)} | {m.errors} |"
        )
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------


def compare(
    settings: Settings, log: Callable[[str], None], notes: list[str] | None = None
) -> list[Measurement]:
    """Start the servers, run every round, stop the servers; return every measurement. What the
    baseline check found goes to ``log`` and ``notes``."""
    for tool in (settings.redis_server, settings.redis_benchmark):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"{tool} is not installed (apt-get install redis-server redis-tools)"
            )
    measurements: list[Measurement] = []
    with ExitStack() as stack:
        logs = stack.enter_context(tempfile.TemporaryDirectory(prefix="gossipcache-compare-"))
        redis_port = free_port()
        redis = stack.enter_context(
            running("redis", redis_argv(settings, redis_port), f"{logs}/redis.log",
                    resp_port=redis_port)
        )  # fmt: skip
        ports = {"native_port": free_port(), "resp_port": free_port(), "metrics_port": free_port()}
        node = stack.enter_context(
            running("gossipcache", node_argv(ports["native_port"], ports["resp_port"],
                                             ports["metrics_port"]), f"{logs}/node.log", **ports)
        )  # fmt: skip
        bare_port = free_port()
        bare = stack.enter_context(
            running(BARE_TRIO, [sys.executable, "-m", "benchmarks.bare_server", "--host", HOST,
                                "--port", str(bare_port)], f"{logs}/bare.log", resp_port=bare_port)
        )  # fmt: skip
        log(f"redis pid {redis.pid} port {redis.resp_port}; gossipcache pid {node.pid} {ports}")
        baseline = None
        if settings.baseline is not None:
            baseline = stack.enter_context(start_baseline(settings.baseline, logs, log, notes))
        for round_index in range(settings.rounds):
            measurements += run_round(settings, redis, node, round_index, log, bare, baseline)
    return measurements


@contextmanager
def start_baseline(
    revision: str, logs: str, log: Callable[[str], None], notes: list[str] | None
) -> Iterator[Server]:
    """The node of git revision ``revision``, from a temporary worktree of it, with the current
    node's flags; checked to import the worktree's ``gossipcache`` (and the current node this
    checkout's). Worktree and node are gone on exit, whatever happens."""
    current_origin = import_origin()
    check_import_origin("the current node", current_origin, REPO_ROOT)
    with ExitStack() as stack:
        worktree, short_rev = stack.enter_context(baseline_worktree(revision, log))
        name = baseline_label(short_rev)
        env = {**os.environ, "PYTHONPATH": worktree}
        origin = import_origin(worktree, env)
        check_import_origin(name, origin, worktree)
        ports = {"native_port": free_port(), "resp_port": free_port(), "metrics_port": free_port()}
        server = stack.enter_context(
            running(name, node_argv(ports["native_port"], ports["resp_port"],
                                    ports["metrics_port"]), f"{logs}/baseline.log",
                    cwd=worktree, env=env, **ports)
        )  # fmt: skip
        check_process_started_in(server, worktree, worktree)
        verified = (
            f"baseline {name} ({revision}): node pid {server.pid} runs `python -m gossipcache "
            f"node` in {worktree} with PYTHONPATH={worktree}; there `import gossipcache` is "
            f"{origin} (the current node's: {current_origin})"
        )
        log(f"{verified}; {ports}")
        if notes is not None:
            notes.append(verified)
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0]
    )
    defaults = Settings()
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--requests", type=int, default=defaults.requests,
                        help="redis-benchmark -n (per test: N SETs and N GETs)")  # fmt: skip
    parser.add_argument("--bench-duration-s", type=float, default=defaults.bench_duration_s)
    parser.add_argument("--bench-processes", type=int, default=defaults.bench_processes)
    parser.add_argument("--out", default="docs/server-results.md", help="Markdown report")
    parser.add_argument("--json-out", default=None, help="also write every measurement as JSON")
    parser.add_argument(
        "--baseline", default=None, metavar="REV",
        help="also run the node of this git revision (from a temporary worktree) through the "
        "redis-benchmark runs, and report the change in CPU per op against it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.bench_duration_s <= 0:
        parser.error("--rounds, --requests and --bench-duration-s must be positive")
    settings = Settings(
        rounds=args.rounds, requests=args.requests, bench_duration_s=args.bench_duration_s,
        bench_processes=args.bench_processes, baseline=args.baseline,
    )  # fmt: skip

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def stop(signal_number: int, _frame: object) -> None:
        # SIGTERM as an exception: servers and the baseline worktree are cleaned up on the way.
        raise SystemExit(128 + signal_number)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    notes = machine_notes(settings)
    started_s = time.monotonic()
    try:
        measurements = compare(settings, log, notes)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    notes.append(f"whole comparison took {time.monotonic() - started_s:.0f} s; load at end {load}")
    command = "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render_markdown(settings, measurements, notes, command.strip())
    with open(args.out, "w") as out:
        out.write(markdown)
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump([asdict(m) for m in measurements], out, indent=1)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
