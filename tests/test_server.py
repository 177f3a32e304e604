"""The node server over real loopback sockets, in-process (pytest-trio), plus connection-handler
fuzzing through an in-memory fake socket."""

from __future__ import annotations

import math
import socket

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipcache.client.client import Client, SyncClient
from gossipcache.clock import ManualClock
from gossipcache.drivers.reactor import NATIVE, RESP, ClientReactor, Connection
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import CacheUnavailable, ServerError, ValueTooLarge
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import Request, decode_response, encode_request
from gossipcache.wire.resp import RespReplyParser, encode_command


@pytest.fixture
async def server(nursery):
    config = NodeConfig(port=0, resp_port=0, metrics_port=0, size_bytes_max=16 * 1024 * 1024)
    node_server = NodeServer(config)
    await nursery.start(node_server.serve)
    return node_server


def native_address(server: NodeServer) -> str:
    return f"127.0.0.1:{server.ports['native']}"


async def test_client_operations(server) -> None:
    async with Client(native_address(server)) as client:
        await client.ping()
        assert await client.get("k") is None
        await client.put("k", b"v")
        assert await client.get(b"k") == b"v"
        assert await client.ttl("k") == math.inf
        assert await client.expire("k", 30)
        assert 29 < await client.ttl("k") <= 30
        assert await client.expire("k", None)
        assert await client.ttl("k") == math.inf
        assert await client.delete("k")
        assert not await client.delete("k")
        assert await client.ttl("k") is None
        await client.put("t", "v", ttl_s=0.001)
        await trio.sleep(0.01)  # real time: a real server's wall clock decides expiry
        assert await client.get("t") is None
        stats = await client.stats()
        assert stats["hits"] == 1 and stats["misses"] == 2 and stats["expirations"] == 1


async def test_concurrent_tasks_share_one_pipelined_connection(server) -> None:
    async with Client(native_address(server)) as client:

        async def worker(i: int) -> None:
            for j in range(20):
                await client.put(f"k{i}:{j}", f"v{i}:{j}")
                assert await client.get(f"k{i}:{j}") == f"v{i}:{j}".encode()

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(worker, i)
        assert (await client.stats())["keys"] == 1000
    # Many requests were answered per read: batching happened.
    assert server.core.metrics.batches < 2000


async def test_server_errors_are_raised_with_a_code(server) -> None:
    async with Client(native_address(server)) as client:
        with pytest.raises(ServerError) as caught:
            await client.put("k", b"x" * (16 * 1024 * 1024 + 1))
        assert caught.value.code == "too_large"
        with pytest.raises(ValueTooLarge):  # refused locally: over the frame cap
            await client.put("k", b"x" * (17 * 1024 * 1024))
        await client.ping()  # the connection survives a refused request


async def test_malformed_native_frame_closes_only_that_connection(server) -> None:
    async with Client(native_address(server)) as healthy:
        stream = await trio.open_tcp_stream("127.0.0.1", server.ports["native"])
        await stream.send_all(b"\xff\xff\xff\xff garbage")
        decoder = FrameDecoder()
        while not (frames := decoder.pop_frames()):
            data = await stream.receive_some(4096)
            assert data, "connection closed without an error reply"
            decoder.feed(data)
        response = decode_response(frames[0])
        # A length prefix over the cap is "too_large" (docs/protocol.md), not "bad_request".
        assert response.status == 2 and response.payload[0] == "too_large"
        assert await stream.receive_some(4096) == b""  # then closed
        await healthy.put("k", "v")
        assert await healthy.get("k") == b"v"
    assert server.core.metrics.protocol_errors == 1


async def test_resp_pipeline_is_answered_in_one_write(server) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    commands = [encode_command("SET", f"k{i}", "v") for i in range(16)]
    commands += [encode_command("GET", f"k{i}") for i in range(16)]
    batches_before = server.core.metrics.batches
    await stream.send_all(b"".join(commands))
    parser = RespReplyParser()
    replies: list = []
    while len(replies) < 32:
        parser.feed(await stream.receive_some(65536))
        replies += parser.pop_replies()
    assert replies[:16] == ["OK"] * 16 and replies[16:] == [b"v"] * 16
    assert server.core.metrics.batches - batches_before == 1


async def test_malformed_resp_gets_an_error_and_close(server) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    await stream.send_all(b"*2\r\n$3\r\nGET\r\n$-7\r\n")
    data = b""
    while chunk := await stream.receive_some(4096):
        data += chunk
    assert data.startswith(b"-ERR Protocol error")


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_works_unmodified(server, protocol: int) -> None:
    redis = pytest.importorskip("redis")
    port = server.ports["resp"]

    def session() -> None:
        r = redis.Redis(port=port, socket_timeout=5, protocol=protocol)
        assert r.ping()
        assert r.set("a", "1") and r.get("a") == b"1"
        assert r.set("a", "2", nx=True) is None
        assert r.set("b", "2", xx=True) is None
        assert r.set("b", "3", ex=100) and 99 <= r.ttl("b") <= 100
        assert r.pttl("b") > 99_000 and r.persist("b") and r.ttl("b") == -1
        assert r.exists("a", "b", "c") == 2
        assert r.delete("a", "b", "c") == 2
        assert r.ttl("a") == -2 and r.dbsize() == 0
        r.client_setname("tester")
        assert r.client_getname() in ("tester", b"tester")  # RESP3 callbacks keep bytes
        info = r.info()
        assert {"keyspace_hits", "keyspace_misses", "used_memory", "evicted_keys"} <= set(info)
        assert r.config_get("maxmemory") == {"maxmemory": str(16 * 1024 * 1024)}
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command("NOSUCHCOMMAND", "x")
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i)
        pipe.get("p99")
        assert pipe.execute()[-1] == b"99"
        assert r.flushall() and r.dbsize() == 0
        r.close()

    await trio.to_thread.run_sync(session)


async def test_metrics_endpoint(server) -> None:
    async with Client(native_address(server)) as client:
        await client.put("k", "v")
        await client.get("k")
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["metrics"])
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    text = body.decode()
    assert "gossipcache_hits_total 1" in text
    assert 'gossipcache_command_duration_seconds_count{command="get"} 1' in text
    assert 'gossipcache_command_duration_seconds_bucket{command="put",le="+Inf"} 1' in text


async def test_sync_client_from_a_thread(server) -> None:
    address = native_address(server)

    def blocking_code() -> None:
        with SyncClient(address) as client:
            client.put("s", "v", ttl_s=60)
            assert client.get("s") == b"v"
            assert 59 < client.ttl("s") <= 60
            assert client.delete("s")
        with pytest.raises(CacheUnavailable):
            SyncClient("127.0.0.1:1")

    await trio.to_thread.run_sync(blocking_code)


async def test_connections_over_the_cap_are_closed(nursery) -> None:
    config = NodeConfig(port=0, resp_port=None, metrics_port=None, connections_max=2)
    node_server = NodeServer(config)
    await nursery.start(node_server.serve)
    address = native_address(node_server)
    async with Client(address) as a, Client(address) as b:
        await a.ping()
        await b.ping()
        with pytest.raises(CacheUnavailable):
            async with Client(address) as c:
                await c.ping()
    assert node_server.core.metrics.connections_refused == 1


# -- fuzzing the connection handlers ----------------------------------------------------------


def _valid_native() -> st.SearchStrategy[bytes]:
    keys = st.binary(max_size=20)
    requests = st.one_of(
        st.builds(lambda k: Request(1, "get", (k,)), keys),
        st.builds(lambda k, v: Request(2, "put", (k, v, None)), keys, st.binary(max_size=50)),
        st.builds(lambda k: Request(3, "del", (k,)), keys),
    )
    return requests.map(encode_request)


def _mutate(data: bytes, position: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    position %= len(data)
    return data[:position] + bytes([byte]) + data[position + 1 :]


chunk_lists = st.lists(
    st.one_of(
        st.binary(max_size=64),
        _valid_native(),
        st.builds(_mutate, _valid_native(), st.integers(0, 100), st.integers(0, 255)),
        st.sampled_from([b"*1\r\n$4\r\nPING\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n", b"PING\r\n"]),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=chunk_lists, resp=st.booleans())
def test_no_input_raises_out_of_connection_processing(chunks: list[bytes], resp: bool) -> None:
    """Whatever bytes arrive, in whatever pieces, processing answers or closes; never raises."""
    node = NodeCore(NodeConfig(size_bytes_max=1024 * 1024), ManualClock())
    reactor = ClientReactor(node)
    if resp:
        session = RespSession(node, 1, resp_table(node))
    else:
        session = NativeSession(node, 1, native_table(node))
    with socket.socket() as sock:  # never used for I/O: processing is sans-IO
        connection = Connection(sock, RESP if resp else NATIVE, session)
        for chunk in chunks:
            if session.closing:
                break
            reply = reactor.process(connection, chunk)
            assert isinstance(reply, bytes)
    assert node.metrics.internal_errors == 0


async def test_client_reconnects_after_the_node_restarts(nursery) -> None:
    config = NodeConfig(port=0, resp_port=None, metrics_port=None, membership_enabled=False)
    first = NodeServer(config)
    scope = trio.CancelScope()

    async def serve_until_cancelled(server: NodeServer, task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await server.serve(task_status=task_status)

    await nursery.start(serve_until_cancelled, first)
    port = first.ports["native"]
    async with Client(f"127.0.0.1:{port}", timeout_s=2) as client:
        await client.put("k", "v")
        scope.cancel()  # the node goes away: the connection breaks
        with pytest.raises(CacheUnavailable):
            for _ in range(100):
                await client.ping()
                await trio.sleep(0.01)
        restarted = NodeConfig(
            port=port, resp_port=None, metrics_port=None, membership_enabled=False
        )
        second = NodeServer(restarted)
        await nursery.start(second.serve)
        await client.ping()  # one call reconnects
        assert await client.get("k") is None  # a new node: the old data is gone


async def test_replies_larger_than_the_socket_buffer_arrive_whole(server) -> None:
    """A client that sends before it reads: the node keeps what the kernel will not take yet,
    stops reading that connection meanwhile, and every reply arrives intact and in order."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    value = bytes(range(256)) * 4096  # 1 MiB
    await stream.send_all(encode_command("SET", "big", value))
    parser = RespReplyParser()
    while not (replies := parser.pop_replies()):
        parser.feed(await stream.receive_some(65536))
    assert replies == ["OK"]
    gets = 20
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, encode_command("GET", "big") * gets)
        received: list = []
        while len(received) < gets:
            parser.feed(await stream.receive_some(1 << 20))
            received += parser.pop_replies()
    assert received == [value] * gets
