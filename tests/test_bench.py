"""The load generator: key sampling, request stream, reply accounting, and short end-to-end runs
of ``gossipcache bench`` (both protocols) against a node served in a background thread."""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import threading
from collections import Counter

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import compare
from gossipcache.cli import bench
from gossipcache.cli import main as cli
from gossipcache.cli.bench import (
    KIND_GET,
    KIND_SET,
    KeyDistribution,
    Tally,
    build_batches,
    make_reply_reader,
    parse_key_distribution,
    record_many,
    sample_key_indices,
)
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import ProtocolError
from gossipcache.metrics.histogram import Histogram
from gossipcache.node.config import NodeConfig
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    STATUS_NOT_FOUND,
    STATUS_OK,
    Response,
    decode_request,
    encode_response,
    error_response,
)
from gossipcache.wire.resp import RespParser

ZIPF = KeyDistribution("zipf", 0.99)
UNIFORM = KeyDistribution("uniform")

# -- key distribution ------------------------------------------------------------------------


def test_parse_key_distribution() -> None:
    assert parse_key_distribution("zipf:0.99") == ZIPF
    assert parse_key_distribution("Zipf:1.2") == KeyDistribution("zipf", 1.2)
    assert parse_key_distribution("zipf") == ZIPF
    assert parse_key_distribution("uniform") == UNIFORM
    assert str(ZIPF) == "zipf:0.99" and str(UNIFORM) == "uniform"
    for bad in ("zipf:0", "zipf:-1", "zipf:x", "zipf:nan", "normal", "uniform:1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_key_distribution(bad)


def test_zipf_is_skewed_and_uniform_is_not() -> None:
    keys, draws = 1000, 50_000
    zipf = Counter(sample_key_indices(ZIPF, keys, draws, random.Random(7)))
    # Rank r has weight r**-0.99: key 0 about 10x as often as key 9, the top 1% of keys take
    # H(10) / H(1000) ~ 38% of the requests.
    assert zipf[0] > 5 * zipf[9] > 0
    top_share = sum(zipf[index] for index in range(10)) / draws
    assert 0.33 < top_share < 0.43
    uniform = Counter(sample_key_indices(UNIFORM, keys, draws, random.Random(7)))
    assert sum(uniform[index] for index in range(10)) / draws < 0.02
    assert len(uniform) > 990


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([ZIPF, UNIFORM, KeyDistribution("zipf", 2.0)]),
    st.integers(1, 500),
    st.integers(0, 2**32),
)
def test_samples_are_in_range_and_seeded(distribution, keys, seed) -> None:
    sample = sample_key_indices(distribution, keys, 200, random.Random(seed))
    assert all(0 <= index < keys for index in sample)
    assert sample == sample_key_indices(distribution, keys, 200, random.Random(seed))


def test_request_stream_is_deterministic_per_seed() -> None:
    def stream(protocol: str, seed: int) -> list:
        return build_batches(protocol, ZIPF, 1000, 0.9, 10, 16, seed, sample_size_requests=4096)

    for protocol in bench.PROTOCOLS:
        first = stream(protocol, 1)
        assert first == stream(protocol, 1)
        assert first != stream(protocol, 2)
        assert len(first) == 256 and all(len(batch.kinds) == 16 for batch in first)
        gets = sum(batch.kinds.count(KIND_GET) for batch in first)
        assert 0.85 < gets / 4096 < 0.95


def test_native_batch_requests_carry_their_position_as_id() -> None:
    batch = build_batches("native", UNIFORM, 50, 0.5, 3, 8, 1, sample_size_requests=8)[0]
    decoder = FrameDecoder()
    decoder.feed(batch.payload)
    requests = [decode_request(body) for body in decoder.pop_frames()]
    assert [request.request_id for request in requests] == list(range(8))
    assert [request.op for request in requests] == [
        "get" if kind == KIND_GET else "put" for kind in batch.kinds
    ]
    assert all(request.args[0].startswith(b"key:") for request in requests)


def test_resp_batch_is_get_and_set_commands() -> None:
    batch = build_batches("resp", UNIFORM, 50, 0.5, 3, 8, 1, sample_size_requests=8)[0]
    parser = RespParser()
    parser.feed(batch.payload)
    commands = parser.pop_commands()
    assert [command[0] for command in commands] == [
        b"GET" if kind == KIND_GET else b"SET" for kind in batch.kinds
    ]
    assert all(command[2] == b"vvv" for command in commands if command[0] == b"SET")


# -- reply accounting ------------------------------------------------------------------------

KINDS = bytes([KIND_GET, KIND_GET, KIND_SET, KIND_GET, KIND_SET])
RESP_REPLIES = b"$3\r\nabc\r\n$-1\r\n+OK\r\n-ERR boom\r\n+OK\r\n"
NATIVE_REPLIES = b"".join(
    encode_response(response)
    for response in (
        Response(0, STATUS_OK, b"abc"),
        Response(1, STATUS_NOT_FOUND, None),
        Response(2, STATUS_OK, True),
        error_response(3, "internal", "boom"),
        Response(4, STATUS_OK, True),
    )
)


def _tally_in_pieces(protocol: str, data: bytes, cuts: list[int]) -> Tally:
    read = make_reply_reader(protocol)
    tally = Tally()
    received = 0
    bounds = [0, *sorted(cuts), len(data)]
    for start, stop in zip(bounds, bounds[1:]):
        received += read(data[start:stop], KINDS, received, tally)
    assert received == len(KINDS)
    return tally


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(bench.PROTOCOLS), st.lists(st.integers(0, len(NATIVE_REPLIES)), max_size=6))
def test_hits_and_misses_are_counted_from_parsed_replies(protocol, cuts) -> None:
    data = RESP_REPLIES if protocol == "resp" else NATIVE_REPLIES
    tally = _tally_in_pieces(protocol, data, [cut for cut in cuts if cut <= len(data)])
    assert (tally.gets, tally.sets, tally.hits, tally.misses, tally.errors) == (3, 2, 1, 1, 1)
    assert len(tally.error_messages) == 1 and "boom" in tally.error_messages[0]


def test_unexpected_replies_are_errors() -> None:
    tally = Tally()
    tally.add_resp([":1", 5], bytes([KIND_GET, KIND_SET]), 0)
    tally.add_native(
        [encode_response(Response(9, STATUS_OK, b"v"))[5:],
         encode_response(Response(1, STATUS_NOT_FOUND, None))[5:], b"\xc1"],
        bytes([KIND_GET, KIND_SET, KIND_GET]), 0,
    )  # fmt: skip
    assert tally.errors == 5 and tally.hits == 0 and tally.ops == 5
    with pytest.raises(ProtocolError):  # more replies than requests in the batch
        make_reply_reader("resp")(b"+OK\r\n+OK\r\n", bytes([KIND_SET]), 0, Tally())


def test_tally_merge_and_error_message_bound() -> None:
    first, second = Tally(), Tally()
    for index in range(bench.ERROR_MESSAGES_MAX + 3):
        second.error(f"error {index}")
    second.hits = second.gets = 4
    first.error("error 0")
    first.merge(second)
    assert first.errors == bench.ERROR_MESSAGES_MAX + 4
    assert len(first.error_messages) == bench.ERROR_MESSAGES_MAX
    assert first.hits == first.gets == 4


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**50), st.integers(1, 100))
def test_record_many_equals_repeated_record(value, count) -> None:
    once, repeated = Histogram(), Histogram()
    record_many(once, value, count)
    for _ in range(count):
        repeated.record(value)
    assert (once.counts, once.count, once.total, once.min, once.max) == (
        repeated.counts, repeated.count, repeated.total, repeated.min, repeated.max,
    )  # fmt: skip


def test_bench_config_rejects_bad_values() -> None:
    for bad in ({"protocol": "http"}, {"pipeline": 0}, {"read_ratio": 1.5},
                {"connections": 1, "processes": 2}, {"duration_s": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            bench.BenchConfig(**bad)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
def node_ports():
    """A node served by its own Trio loop in a background thread (``bench`` runs its own
    ``trio.run``, so the node cannot share the test's loop)."""
    started: queue.Queue = queue.Queue()

    async def serve() -> None:
        config = NodeConfig(port=0, resp_port=0, metrics_port=0, size_bytes_max=16 * 1024 * 1024)
        server = NodeServer(config)
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(server.serve)
            started.put((ports, nursery.cancel_scope, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    ports, cancel_scope, token = started.get(timeout=30)
    yield ports
    trio.from_thread.run_sync(cancel_scope.cancel, trio_token=token)
    thread.join(timeout=30)


def _run_cli(capsys, port: int, protocol: str, *extra: str) -> dict:
    argv = [
        "bench", "--node", f"127.0.0.1:{port}", "--protocol", protocol, "--duration-s", "1",
        "--warmup-s", "0.2", "--connections", "2", "--pipeline", "4", "--keys", "100", "--json",
        *extra,
    ]  # fmt: skip
    exit_code = cli.main(argv)
    captured = capsys.readouterr()
    assert exit_code == 0, captured.err
    assert "ops/s" in captured.err  # the progress line
    return json.loads(captured.out)


@pytest.mark.parametrize("protocol", bench.PROTOCOLS)
def test_short_run_against_a_node(node_ports, capsys, protocol) -> None:
    port = node_ports["resp" if protocol == "resp" else "native"]
    # The node runs in this process, so this process's CPU stands in for the server's.
    summary = _run_cli(capsys, port, protocol, "--server-pid", str(os.getpid()))
    assert summary["protocol"] == protocol and summary["pipeline"] == 4
    assert summary["ops"] > 0 and summary["ops_per_s"] > 0
    assert summary["errors"] == 0 and summary["preload_errors"] == 0
    assert summary["gets"] + summary["sets"] == summary["ops"]
    # Every key was preloaded and 100 keys fit: every GET hits.
    assert summary["hits"] == summary["gets"] > 0 and summary["hit_ratio"] == 1.0
    latencies = [summary[f"latency_us_{name}"] for name in ("p50", "p90", "p99", "p999", "max")]
    assert latencies == sorted(latencies) and latencies[0] > 0
    assert summary["generator_cpu_s"] > 0 and summary["server_cpu_us_per_op"] is not None
    assert isinstance(summary["generator_saturated"], bool)


def test_without_preload_gets_miss(node_ports, capsys) -> None:
    summary = _run_cli(capsys, node_ports["native"], "native", "--no-preload", "--read-ratio", "1")
    assert summary["misses"] == summary["gets"] > 0 and summary["preload_s"] is None


def test_generator_processes_merge(node_ports, capsys) -> None:
    summary = _run_cli(capsys, node_ports["resp"], "resp", "--processes", "2")
    assert summary["processes"] == 2 and summary["ops"] > 0 and summary["errors"] == 0


def test_unreachable_node_exits_2(capsys) -> None:
    exit_code = cli.main(["bench", "--node", "127.0.0.1:1", "--duration-s", "1", "--keys", "10"])
    assert exit_code == 2
    assert "bench:" in capsys.readouterr().err


# -- compare (pure parts; no Redis needed) ---------------------------------------------------

REDIS_BENCHMARK_CSV = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
    '"p99_latency_ms","max_latency_ms"\n'
    '"SET","100000.00","0.3","0.1","0.3","0.5","0.7","1.0"\n'
    '"GET","50000.00","0.3","0.1","0.3","0.5","0.7","1.0"\n'
)


def test_parse_redis_benchmark_csv() -> None:
    assert compare.parse_redis_benchmark_csv(REDIS_BENCHMARK_CSV) == {
        "SET": 100000.0,
        "GET": 50000.0,
    }
    with pytest.raises(RuntimeError):
        compare.parse_redis_benchmark_csv("SET: 1 requests per second\n")


def _measurements() -> list:
    m = compare.Measurement
    rows = []
    for round_index in range(3):
        rows += [
            m(round_index, "redis-benchmark -P 1", "redis", 100_000, 4.0),
            m(round_index, "redis-benchmark -P 1", "gossipcache", 20_000, 6.0 + round_index),
            m(round_index, "redis-benchmark -P 16", "redis", 400_000, 1.0),
            m(round_index, "redis-benchmark -P 16", "gossipcache", 100_000, 2.0),
            m(round_index, "gossipcache bench resp -P 16", "redis", 120_000, 1.5, 1000.0, 40.0),
            m(round_index, "gossipcache bench resp -P 16", "gossipcache", 90_000, 5.0, 2000.0),
            m(round_index, "gossipcache bench native -P 16", "gossipcache", 60_000, 6.0, 3000.0),
            m(round_index, "scrape: off", "gossipcache", 60_000, 6.0, 1000.0),
            m(round_index, "scrape: every 100 ms", "gossipcache", 59_000, 6.1, 1030.0, scrapes=60),
        ]
    return rows


def test_comparison_medians_and_ratios() -> None:
    rows = {
        row["config"]: row for row in compare.comparison_rows(compare.Settings(), _measurements())
    }
    p1 = rows["redis-benchmark -P 1"]
    assert p1["gossipcache"]["server_cpu_us_per_op"] == 7.0  # median of 6, 7, 8
    assert p1["cpu_ratio"] == pytest.approx(7.0 / 4.0) and p1["cpu_ratio_target"] == 2.0
    assert rows["redis-benchmark -P 16"]["cpu_ratio"] == 2.0
    native = rows["gossipcache bench native -P 16"]
    assert native["cpu_ratio"] == 4.0  # against Redis over RESP under the same generator
    scrape = compare.scrape_result(_measurements())
    assert scrape["p99_change"] == pytest.approx(0.03)
    assert scrape["p99_change_paired_median"] == pytest.approx(0.03)
    markdown = compare.render_markdown(compare.Settings(), _measurements(), ["2 cores"], "cmd")
    assert (
        "| redis-benchmark -P 1 | 100,000 | 20,000 | 0.20 | 4.00 | 7.00 | 1.75 | 1.50, 1.75, 2.00 | <= 2.0x met |"
        in (markdown)
    )
    assert "<= 1.5x **missed**" in markdown and "change 3.0 %" in markdown


def _with_baseline() -> list:
    m = compare.Measurement
    old = compare.baseline_label("477ecf6")
    rows = _measurements()
    for round_index, (p1, p16) in enumerate([(8.0, 2.0), (7.0, 2.5), (7.5, 1.6)]):
        rows += [
            m(round_index, "redis-benchmark -P 1", old, 18_000, p1),
            m(round_index, "redis-benchmark -P 16", old, 90_000, p16),
        ]
    return rows


def test_baseline_rows_and_table() -> None:
    measurements = _with_baseline()
    assert compare.baseline_server(measurements) == "gossipcache@477ecf6"
    assert compare.baseline_server(_measurements()) is None
    p1, p16 = compare.baseline_rows(measurements, "gossipcache@477ecf6")
    # -P 1: current 6, 7, 8 (median 7) against baseline 8, 7, 7.5 (median 7.5); Redis 4.
    assert (p1["current"], p1["baseline"], p1["redis"]) == (7.0, 7.5, 4.0)
    assert p1["current_per_redis"] == 1.75 and p1["baseline_per_redis"] == 1.875
    assert p1["change"] == pytest.approx(7.0 / 7.5 - 1) and p1["met"] is True
    assert [r["change"] for r in p1["per_round"]] == pytest.approx([-0.25, 0.0, 8.0 / 7.5 - 1])
    assert p1["change_paired_median"] == 0.0
    # -P 16: current 2 every round against baseline 2, 2.5, 1.6 (median 2): no change overall,
    # though round 3 alone is +25 %.
    assert p16["change"] == 0.0 and p16["met"] is True
    assert p16["per_round"][2]["change"] == pytest.approx(0.25)
    assert p16["per_round"][2]["baseline_per_redis"] == 1.6
    markdown = compare.render_markdown(compare.Settings(), measurements, ["2 cores"], "cmd")
    assert "## Before and after: the current node against gossipcache@477ecf6" in markdown
    assert (
        "| redis-benchmark -P 1 | 7.00 | 7.50 | 4.00 | 1.75 | 1.88 | -6.7 % "
        "| -25.0 %, +0.0 %, +6.7 % (+0.0 %) | <= +5 % met |" in markdown
    )
    assert "| 3 | redis-benchmark -P 16 | 2.00 | 1.60 | 1.00 | 2.00 | 1.60 | +25.0 % |" in markdown
    # A baseline 10 % cheaper than the current node misses the target.
    cheaper = [
        compare.Measurement(**{**compare.asdict(m), "server_cpu_us_per_op": 6.3})
        if m.server == "gossipcache@477ecf6" and m.config == "redis-benchmark -P 1"
        else m
        for m in measurements
    ]
    assert "| +11.1 % | -4.8 %, +11.1 %, +27.0 % (+11.1 %) | <= +5 % **missed** |" in (
        compare.render_markdown(compare.Settings(), cheaper, [], "cmd")
    )
    assert "Before and after" not in compare.render_markdown(
        compare.Settings(), _measurements(), [], "cmd"
    )


def test_import_origin_check(tmp_path) -> None:
    compare.check_import_origin("node", os.path.realpath(tmp_path / "gossipcache"), tmp_path)
    with pytest.raises(RuntimeError, match="would import gossipcache from"):
        compare.check_import_origin("node", "/elsewhere/gossipcache", tmp_path)


def test_scraper_fetches_metrics(node_ports) -> None:
    assert compare.Scraper(node_ports["metrics"]).fetch()


# -- cluster mode ------------------------------------------------------------------------------


@pytest.fixture
def cluster_servers():
    """Three in-process nodes (R = 2, one host id each) on their own Trio loop in a background
    thread, once every node's table ranks all three and they agree on its epoch."""
    started: queue.Queue = queue.Queue()

    async def serve() -> None:
        servers: list[NodeServer] = []
        async with trio.open_nursery() as nursery:
            for index in range(3):
                seeds = (f"127.0.0.1:{servers[0].ports['native']}",) if servers else ()
                config = NodeConfig(
                    port=0, resp_port=None, metrics_port=None, membership_profile="local",
                    seeds=seeds, replicas=2, host_id=f"host-{index}",
                    size_bytes_max=16 * 1024 * 1024,
                )  # fmt: skip
                server = NodeServer(config)
                await nursery.start(server.serve)
                servers.append(server)
            views = [server.core.placement for server in servers]
            with trio.fail_after(15):
                while not (
                    all(
                        s.core.layout_settled and len(s.core.placement.table.members) == 3
                        for s in servers
                    )
                    and len({v.epoch for v in views}) == 1
                ):
                    await trio.sleep(0.02)
            started.put((servers, nursery.cancel_scope, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    servers, cancel_scope, token = started.get(timeout=30)
    yield servers
    trio.from_thread.run_sync(cancel_scope.cancel, trio_token=token)
    thread.join(timeout=30)


def test_cluster_mode_sends_each_request_to_its_keys_primary(cluster_servers, capsys) -> None:
    servers = cluster_servers
    addresses = [f"127.0.0.1:{server.ports['native']}" for server in servers]
    coordinators = [server.core.coordinator for server in servers]
    # Two seeds in one flag, the third repeated: all one list; the first answers.
    summary = _run_cli(
        capsys, servers[0].ports["native"], "native", "--seeds", ",".join(addresses[:2]),
        "--seeds", addresses[2], "--consistency", "quorum", "--read-ratio", "0.5",
    )  # fmt: skip
    assert sorted(summary["cluster_nodes"]) == sorted(addresses) and summary["node"] is None
    assert summary["consistency"] == "quorum" and summary["errors"] == 0
    assert summary["hits"] == summary["gets"] > 0 and summary["sets"] > 0
    # One hop: no node coordinated a key it does not own; each coordinated the keys it is
    # primary of, at the level the requests carried (preloaded SETs at the default, quorum).
    assert [coordinator.forwarded for coordinator in coordinators] == [0, 0, 0]
    for coordinator in coordinators:
        assert coordinator.by_level["quorum"].reads > 0
        assert coordinator.by_level["quorum"].writes > 0
        assert coordinator.by_level["all"].reads == coordinator.by_level["all"].writes == 0
    # The same workload through one node: it coordinates keys it does not own (forwarded),
    # so the zero above is the routing's doing.
    summary = _run_cli(
        capsys, servers[0].ports["native"], "native", "--consistency", "all", "--no-preload",
        "--read-ratio", "1",
    )  # fmt: skip
    assert summary["errors"] == 0 and summary["cluster_nodes"] is None
    assert coordinators[0].forwarded > 0 and coordinators[0].by_level["all"].reads > 0
    assert coordinators[1].by_level["all"].reads == 0


def test_cluster_mode_needs_the_native_protocol() -> None:
    with pytest.raises(ValueError, match="native"):
        bench.BenchConfig(protocol="resp", consistency="one")
    with pytest.raises(ValueError, match="native"):
        bench.BenchConfig(protocol="resp", seeds=("127.0.0.1:7000",))
    with pytest.raises(ValueError, match="consistency"):
        bench.BenchConfig(consistency="eventual")


def test_replies_out_of_order_are_matched_by_id() -> None:
    """A node answers a request that waits for replicas after later ones: the tally matches
    replies by id, and a duplicate id is an error."""
    read = make_reply_reader("native")
    tally = Tally()
    kinds = bytes([KIND_SET, KIND_GET, KIND_GET])
    replies = [
        Response(2, STATUS_NOT_FOUND, None), Response(1, STATUS_OK, b"v"),
        Response(0, STATUS_OK, None),
    ]  # fmt: skip
    assert read(b"".join(encode_response(r) for r in replies), kinds, 0, tally) == 3
    assert (tally.gets, tally.sets, tally.hits, tally.misses, tally.errors) == (2, 1, 1, 1, 0)
    duplicate = Tally()
    assert read(encode_response(replies[1]) * 2, kinds, 0, duplicate) == 2
    assert duplicate.errors == 1 and "not expected" in duplicate.error_messages[0]


def test_a_batch_is_split_by_primary_with_the_same_draws() -> None:
    route = bench.ClusterRoute(
        (("127.0.0.1", 1), ("127.0.0.1", 2)), [bucket % 2 for bucket in range(16384)]
    )
    plain = build_batches("native", ZIPF, 500, 0.7, 10, 16, seed=3)
    routed = build_batches("native", ZIPF, 500, 0.7, 10, 16, seed=3, route=route)
    assert len(plain) == len(routed)
    for batch, parts in zip(plain, routed):
        requests = [decode_request(body) for body in _bodies(batch.payload)]
        split = [
            (node, decode_request(body)) for node, part in parts for body in _bodies(part.payload)
        ]
        # The same requests, each on its key's node, ids renumbered 0..n-1 per part.
        assert sorted((r.op, r.args) for r in requests) == sorted((r.op, r.args) for _, r in split)
        for node, request in split:
            assert route.node_of(request.args[0]) == node
        for _, part in parts:
            ids = [decode_request(body).request_id for body in _bodies(part.payload)]
            assert ids == list(range(len(part.kinds)))


def _bodies(payload: bytes) -> list[bytes]:
    decoder = FrameDecoder()
    decoder.feed(payload)
    return decoder.pop_frames()
