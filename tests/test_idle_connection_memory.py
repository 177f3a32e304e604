"""Memory an idle connection keeps after one large request or reply (issue: hardening, found by
``benchmarks.memory_attacks``, attack ``idle-after-big``).

On a real node, 10 RESP and 10 native connections that each wrote and read one 16 MiB value and
then sat idle held 721 MiB resident (the node's baseline and data: 48 MiB), none of it in
``gossipcache_client_buffers_bytes``, and kept it after they closed: each native connection's
msgpack packer and unpacker kept buffers grown to the largest message they had handled, and a
closed connection's session was only freed by a full garbage collection (the session and the
driver's connection refer to each other), which an idle node does not run.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import msgpack
import pytest
import trio
from test_client_bounds import start
from test_reactor import wait_until

from gossipcache.clock import ManualClock
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.native import (
    ERROR_UNKNOWN_OP,
    LARGE_MESSAGE_SIZE_BYTES,
    OP_GET,
    OP_PUT,
    REQUEST_ID_MAX,
    STATUS_OK,
    BadRequest,
    Request,
    RequestDecoder,
    Response,
    ResponseEncoder,
    decode_response,
    encode_request,
    encode_response,
)
from gossipcache.wire.resp import encode_command

MIB = 1024 * 1024
VALUE_SIZE_BYTES = 4 * MIB
#: What a session may keep between requests beyond the data it stored: its parser and codec
#: state at their initial sizes (a fresh msgpack unpacker allocates 1 MiB), counters.
KEPT_BYTES_MAX = 3 * MIB // 2


def native_session() -> NativeSession:
    core = NodeCore(NodeConfig(membership_enabled=False, size_bytes_max=64 * MIB), ManualClock())
    core.store.put(b"big", b"v" * VALUE_SIZE_BYTES, core.clock.wall_ms())
    session = NativeSession(core, 1, native_table(core))
    session.receive(encode_request(Request(1, OP_GET, (b"small",))))  # first-use allocations
    return session


def bytes_kept_by(action) -> int:
    """Bytes still allocated (Python's allocators, msgpack's buffers included) after
    ``action()`` returned and its result was dropped."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_native_connection_keeps_no_buffer_of_a_large_reply() -> None:
    session = native_session()

    def get_big() -> None:
        reply = session.receive(encode_request(Request(2, OP_GET, (b"big",))))
        assert len(reply) > VALUE_SIZE_BYTES  # the whole reply, under the reply bound

    assert bytes_kept_by(get_big) < KEPT_BYTES_MAX


def test_a_native_connection_keeps_no_buffer_of_a_large_request() -> None:
    session = native_session()
    request = encode_request(Request(2, OP_PUT, (b"other", b"w" * VALUE_SIZE_BYTES, None)))

    def put_big() -> None:
        reply = session.receive(request)
        assert decode_response(reply[5:]).status == STATUS_OK

    # The stored value is kept, of course; nothing else of that size.
    assert bytes_kept_by(put_big) < VALUE_SIZE_BYTES + KEPT_BYTES_MAX


@pytest.mark.parametrize("protocol", ["resp", "native"])
def test_a_closed_session_is_freed_without_the_cycle_collector(protocol) -> None:
    core = NodeCore(NodeConfig(membership_enabled=False), ManualClock())

    class DriverConnection:  # the reactor's handle on a connection: it refers to its session
        session = None

    if protocol == "resp":
        session = RespSession(core, 1, resp_table(core))
        session.receive(encode_command("GET", "k"))
    else:
        session = NativeSession(core, 1, native_table(core))
        session.receive(encode_request(Request(1, OP_GET, (b"k",))))
    connection = DriverConnection()
    connection.session = session
    session.connection = connection
    freed = weakref.ref(connection)
    gc.disable()  # the node runs full collections rarely; a closed connection must not wait
    try:
        session.close()
        del session, connection
        assert freed() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "size_bytes",
    [LARGE_MESSAGE_SIZE_BYTES - 1, LARGE_MESSAGE_SIZE_BYTES, LARGE_MESSAGE_SIZE_BYTES + 1, 5 * MIB],
)
@pytest.mark.parametrize("request_id", [0, 127, 128, 65_536, REQUEST_ID_MAX])
def test_a_large_value_is_encoded_as_msgpack_would(size_bytes, request_id) -> None:
    """The large-value path assembles the frame around the value: byte for byte what packing
    the whole response gives."""
    value = bytes(range(256)) * (size_bytes // 256) + b"x" * (size_bytes % 256)
    encoder = ResponseEncoder()
    expected = encode_response(Response(request_id, STATUS_OK, value))
    assert encoder.encode(request_id, STATUS_OK, value) == expected
    assert encoder.encode(1, STATUS_OK, b"small") == encode_response(
        Response(1, STATUS_OK, b"small")
    )


def test_a_large_request_is_decoded_and_refused_as_before() -> None:
    decoder = RequestDecoder()
    value = b"v" * (LARGE_MESSAGE_SIZE_BYTES + 1)
    body = encode_request(Request(7, OP_PUT, (b"k", value, None)))[5:]
    assert decoder.decode_message(body) == (7, OP_PUT, b"k", value, None)
    unknown = msgpack.packb((8, "frobnicate", value))
    with pytest.raises(BadRequest) as refused:
        decoder.decode_message(unknown)
    assert refused.value.code == ERROR_UNKNOWN_OP and refused.value.request_id == 8
    assert decoder.decode_message(encode_request(Request(9, OP_GET, (b"k",)))[5:]) == (
        9,
        OP_GET,
        b"k",
    )


async def test_a_closed_connections_buffers_are_freed_at_once(nursery) -> None:
    """On a real reactor: a client that leaves in the middle of a 4 MiB value leaves nothing
    behind, even when no other client comes along to move the reactor on."""
    server = await start(nursery)
    metrics = server.core.metrics
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
        await stream.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (2 * VALUE_SIZE_BYTES))
        await stream.send_all(b"v" * VALUE_SIZE_BYTES)
        await wait_until(lambda: metrics.client_buffers_bytes >= VALUE_SIZE_BYTES)
        await stream.aclose()
        await wait_until(lambda: metrics.connections_open == 0)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < KEPT_BYTES_MAX


def test_an_idle_native_session_holds_no_codec_of_its_own() -> None:
    """Found by ``benchmarks.memory_attacks`` (``idle-native``): every native session made its own
    msgpack Unpacker (~44 KiB) and Packer (~4 KiB), 470 MiB for 10,000 idle connections."""
    core = NodeCore(NodeConfig(membership_enabled=False), ManualClock())
    table = native_table(core)
    sessions = [NativeSession(core, 0, table)]  # warm up whatever is allocated once
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        sessions += [NativeSession(core, index, table) for index in range(1, 201)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / 200 < 2048  # bytes per idle session
