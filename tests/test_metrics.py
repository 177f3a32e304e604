"""Reading metrics never scans the keyspace."""

from __future__ import annotations

from gossipcache.clock import ManualClock
from gossipcache.metrics.counters import render_prometheus
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.resp import encode_command


class Untouchable:
    """Stands in for the store's shards: any use fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"metrics touched the keyspace ({name})")

    def __getitem__(self, index):
        raise AssertionError("metrics touched the keyspace")

    def __iter__(self):
        raise AssertionError("metrics touched the keyspace")


def test_render_reads_counters_only() -> None:
    node = NodeCore(NodeConfig(membership_enabled=False), ManualClock())
    session = RespSession(node, 1, resp_table(node))
    data = b"".join(encode_command(b"SET", b"k%d" % i, b"v") for i in range(5_000))
    data += b"".join(encode_command(b"GET", b"k%d" % i) for i in range(6_000))
    session.receive(data)
    node.store._shards = Untouchable()
    text = render_prometheus(node)
    assert "gossipcache_keys 5000" in text
    assert "gossipcache_hits_total 5000" in text and "gossipcache_misses_total 1000" in text
    assert 'gossipcache_command_duration_seconds_count{command="get"} 6000' in text


def test_record_batch_gives_every_command_the_batch_mean() -> None:
    from gossipcache.metrics.counters import record_batch
    from gossipcache.metrics.histogram import Histogram

    get, put = Histogram(), Histogram()
    record_batch([get, get, put, get], elapsed_ns=4_000)
    assert (get.count, get.total, put.count, put.total) == (3, 3_000, 1, 1_000)
    record_batch([], elapsed_ns=5)  # an empty batch records nothing
    assert get.count == 3
