"""Memory a client can make a node hold (issue: hardening, items 1 and 2).

Reply amplification: a pipeline of GETs of a large value is answered one bounded batch of
replies at a time, resumed as the socket drains, and nothing is lost. Partial requests: a request
may buffer only what the largest legal request needs; all clients together stay within
``client_buffers_bytes_max`` (the connection holding the most is closed past it); a client that
goes silent in the middle of a request is closed after ``partial_request_timeout_s``.
"""

from __future__ import annotations

import socket

import pytest
import trio
from slow_command import Slow
from test_deferred import EXTRA_RESP, serve_slow
from test_reactor import POLL_S, WAIT_S_MAX, wait_until

from gossipcache.clock import ManualClock
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import ProtocolError
from gossipcache.limits import KEY_SIZE_BYTES_MAX, VALUE_SIZE_BYTES_MAX
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    OP_GET,
    OP_PING,
    OP_PUT,
    STATUS_OK,
    Request,
    decode_response,
    encode_request,
)
from gossipcache.wire.resp import RespParser, RespReplyParser, encode_command

VALUE_SIZE_BYTES = 256 * 1024
REPLY_BYTES_MAX = 1024 * 1024
GETS = 50


def core_with_big_value(**overrides) -> NodeCore:
    config = NodeConfig(
        membership_enabled=False,
        size_bytes_max=64 * 1024 * 1024,
        connection_reply_bytes_max=REPLY_BYTES_MAX,
        **overrides,
    )
    core = NodeCore(config, ManualClock())
    core.store.put(b"big", b"v" * VALUE_SIZE_BYTES, core.clock.wall_ms())
    return core


def resp_replies(data: bytes) -> list[object]:
    parser = RespReplyParser()
    parser.feed(data)
    return parser.pop_replies()


@pytest.mark.parametrize("protocol", ["resp", "native"])
def test_a_pipeline_of_large_gets_is_answered_one_bounded_batch_at_a_time(protocol) -> None:
    core = core_with_big_value()
    if protocol == "resp":
        session = RespSession(core, 1, resp_table(core))
        request = b"".join(encode_command("GET", "big") for _ in range(GETS))
    else:
        session = NativeSession(core, 1, native_table(core))
        request = b"".join(encode_request(Request(i + 1, OP_GET, (b"big",))) for i in range(GETS))
    one_reply_bytes_max = VALUE_SIZE_BYTES + 64
    batches = [session.receive(request)]
    # Not one reply per request at once: at most the bound plus the reply that crossed it.
    assert len(batches[0]) <= REPLY_BYTES_MAX + one_reply_bytes_max
    assert not session.wants_input and session.resumable
    while session.resumable:
        batch = session.resume()  # what the driver does once the previous batch is written
        assert 0 < len(batch) <= REPLY_BYTES_MAX + one_reply_bytes_max
        batches.append(batch)
    assert session.wants_input and len(batches) >= GETS * VALUE_SIZE_BYTES // REPLY_BYTES_MAX
    data = b"".join(batches)
    if protocol == "resp":
        assert resp_replies(data) == [b"v" * VALUE_SIZE_BYTES] * GETS
    else:
        decoded = [decode_response(body) for body in FrameDecoder().parse(data)]
        assert [r.request_id for r in decoded] == list(range(1, GETS + 1))  # none lost
        assert all(r.status == STATUS_OK and r.payload == b"v" * VALUE_SIZE_BYTES for r in decoded)


def test_writes_behind_held_back_replies_wait_their_turn() -> None:
    """Requests after the bound are not executed early: a SET behind the GETs sees them first."""
    core = core_with_big_value()
    session = RespSession(core, 1, resp_table(core))
    request = b"".join(encode_command("GET", "big") for _ in range(GETS))
    request += encode_command("SET", "big", "small")
    out = session.receive(request)
    assert core.store.get(b"big", core.clock.wall_ms()) == b"v" * VALUE_SIZE_BYTES
    while session.resumable:
        out += session.resume()
    replies = resp_replies(out)
    assert replies[:-1] == [b"v" * VALUE_SIZE_BYTES] * GETS and replies[-1] == "OK"
    assert core.store.get(b"big", core.clock.wall_ms()) == b"small"


def test_replies_queued_behind_a_pending_command_count_against_the_bound() -> None:
    """RESP replies wait in order behind a pending command: they are held on the node, so they
    count, and the batch stops at the bound even though nothing was written yet."""
    core = core_with_big_value()
    waiting = serve_slow(core)
    session = RespSession(core, 1, resp_table(core, EXTRA_RESP))
    request = encode_command("SLOW", "first") + b"".join(
        encode_command("GET", "big") for _ in range(GETS)
    )
    assert session.receive(request) == b""  # everything queues behind the pending SLOW
    queued_bytes_max = REPLY_BYTES_MAX + VALUE_SIZE_BYTES + 64
    assert session._queued_reply_bytes() <= queued_bytes_max
    assert not session.resumable  # held replies are at the bound: nothing more runs
    assert core.store.stats().gets < GETS
    core.complete(waiting[0], b"first")
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    out = session.take_ready()
    while session.resumable:
        batch = session.resume()
        assert len(batch) <= queued_bytes_max
        out += batch
    assert resp_replies(out) == ["first"] + [b"v" * VALUE_SIZE_BYTES] * GETS


@pytest.mark.parametrize("chunk_size_bytes", [64 * 1024, None])
def test_a_resp_command_may_buffer_only_what_the_largest_legal_request_needs(
    chunk_size_bytes,
) -> None:
    parser = RespParser()
    head = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % VALUE_SIZE_BYTES_MAX
    legal = head + b"v" * VALUE_SIZE_BYTES_MAX + b"\r\n"  # a whole legal value: fine
    step = chunk_size_bytes or len(legal)
    for start in range(0, len(legal), step):  # as one read, or as many
        assert parser.parse(legal[start : start + step]) == []
    # A second value-sized argument makes the command larger than any legal request: refused
    # when its length is announced, before any of it is buffered.
    with pytest.raises(ProtocolError, match="command too big"):
        parser.parse(b"$%d\r\n" % VALUE_SIZE_BYTES_MAX)
    assert parser.buffered_size_bytes < VALUE_SIZE_BYTES_MAX + KEY_SIZE_BYTES_MAX + 4096


# -- through the real reactor --------------------------------------------------------------


async def start(nursery, **overrides) -> NodeServer:
    server = NodeServer(
        NodeConfig(port=0, resp_port=0, metrics_port=None, membership_enabled=False, **overrides)
    )
    await nursery.start(server.serve)
    return server


async def resp_connect(server: NodeServer) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    # A small receive buffer, so the node's replies back up in its own unsent buffer quickly.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return stream


async def closed_by_node(stream: trio.SocketStream) -> bool:
    with trio.fail_after(WAIT_S_MAX):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return True


async def test_a_client_that_never_reads_holds_at_most_the_reply_bound(nursery) -> None:
    server = await start(nursery, connection_reply_bytes_max=REPLY_BYTES_MAX)
    metrics, store = server.core.metrics, server.core.store
    store.put(b"big", b"v" * VALUE_SIZE_BYTES, server.core.clock.wall_ms())
    stream = await resp_connect(server)
    await stream.send_all(b"".join(encode_command("GET", "big") for _ in range(200)))
    # The node answers what the socket takes plus at most one batch of unsent replies, then
    # stops executing: the rest of the GETs wait until the client reads.
    await wait_until(lambda: store.stats().gets > 0)
    gets_seen = set()
    for _ in range(30):
        assert metrics.client_buffers_bytes <= REPLY_BYTES_MAX + VALUE_SIZE_BYTES + 64
        gets_seen.add(store.stats().gets)
        await trio.sleep(POLL_S)
    assert max(gets_seen) < 100  # 200 x 256 KiB = 50 MiB was never produced at once
    # Then every reply arrives, in order, as the client reads.
    parser = RespReplyParser()
    replies: list[object] = []
    with trio.fail_after(WAIT_S_MAX):
        while len(replies) < 200:
            parser.feed(await stream.receive_some(1 << 20))
            replies += parser.pop_replies()
    assert replies == [b"v" * VALUE_SIZE_BYTES] * 200
    assert metrics.bytes_sent == 200 * (VALUE_SIZE_BYTES + len(b"$262144\r\n\r\n"))
    await wait_until(lambda: metrics.client_buffers_bytes == 0)
    await stream.aclose()


async def test_partial_requests_over_the_client_budget_close_the_largest(nursery) -> None:
    server = await start(nursery, client_buffers_bytes_max=3 * 1024 * 1024)
    metrics = server.core.metrics
    small = await resp_connect(server)
    await small.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % VALUE_SIZE_BYTES)
    await small.send_all(b"v" * (VALUE_SIZE_BYTES // 2))
    await wait_until(lambda: metrics.client_buffers_bytes >= VALUE_SIZE_BYTES // 2)
    large = await resp_connect(server)
    await large.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % VALUE_SIZE_BYTES_MAX)
    with pytest.raises(trio.BrokenResourceError):  # the node closes it on the way
        for _ in range(VALUE_SIZE_BYTES_MAX // (1024 * 1024)):
            await large.send_all(b"v" * (1024 * 1024))
    assert await closed_by_node(large)
    assert metrics.clients_closed_over_budget == 1
    assert metrics.client_buffers_bytes <= 3 * 1024 * 1024
    # The smaller one is still served: it finishes its value and gets its answer.
    await small.send_all(b"v" * (VALUE_SIZE_BYTES // 2) + b"\r\n")
    with trio.fail_after(WAIT_S_MAX):
        assert await small.receive_some(100) == b"+OK\r\n"
    assert metrics.client_buffers_bytes == 0


async def test_a_partial_request_the_node_is_not_reading_does_not_time_out(nursery) -> None:
    """A client whose replies back up is not read; the partial request behind its GETs is the
    node's doing, not the client's silence: the connection survives the timeout."""
    server = await start(
        nursery, partial_request_timeout_s=0.1, connection_reply_bytes_max=REPLY_BYTES_MAX
    )
    server.core.store.put(b"big", b"v" * VALUE_SIZE_BYTES, server.core.clock.wall_ms())
    stream = await resp_connect(server)
    gets = b"".join(encode_command("GET", "big") for _ in range(GETS))
    await stream.send_all(gets + b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv")
    await trio.sleep(1.0)  # ten timeouts pass while the client does not read
    assert server.core.metrics.clients_closed_partial_timeout == 0
    await stream.send_all(b"v\r\n")
    parser = RespReplyParser()
    replies: list[object] = []
    with trio.fail_after(WAIT_S_MAX):
        while len(replies) < GETS + 1:
            parser.feed(await stream.receive_some(1 << 20))
            replies += parser.pop_replies()
    assert replies == [b"v" * VALUE_SIZE_BYTES] * GETS + ["OK"]


@pytest.mark.parametrize("port", ["resp", "native"])
async def test_a_client_silent_in_the_middle_of_a_request_is_closed(nursery, port) -> None:
    server = await start(nursery, partial_request_timeout_s=0.2)
    metrics = server.core.metrics
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports[port])
    idle = await trio.open_tcp_stream("127.0.0.1", server.ports[port])  # between requests
    if port == "resp":
        await stream.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc")
    else:
        await stream.send_all(encode_request(Request(1, OP_PUT, (b"k", b"v" * 100, None)))[:50])
    assert await closed_by_node(stream)
    assert metrics.clients_closed_partial_timeout == 1 and metrics.client_buffers_bytes == 0
    # A connection idle between requests is not affected.
    await idle.send_all(
        encode_command("PING") if port == "resp" else encode_request(Request(2, OP_PING, ()))
    )
    with trio.fail_after(WAIT_S_MAX):
        assert await idle.receive_some(100)


def test_the_parsers_say_when_they_hold_input() -> None:
    """The reactor asks for buffer sizes only when ``holding`` says a parser keeps bytes; a
    command cut exactly between two arguments leaves the buffer empty but holds the first."""
    resp = RespParser()
    assert resp.parse(encode_command("GET", "k")) and not resp.holding
    assert resp.parse(b"*2\r\n$3\r\nGET\r\n") == [] and resp.holding
    assert resp.buffered_size_bytes > 0
    assert resp.parse(b"$1\r\nk\r\n") == [[b"GET", b"k"]] and not resp.holding
    resp.feed(b"*1\r\n")
    assert resp.holding  # fed, not yet parsed
    frames = FrameDecoder()
    frames.feed(b"\x00")
    assert frames.holding
    assert frames.pop_frames() == [] and frames.holding
    assert frames.parse(b"\x00\x00\x02\x01x") == [b"x"] and not frames.holding


async def test_a_command_cut_between_arguments_is_timed_out_too(nursery) -> None:
    server = await start(nursery, partial_request_timeout_s=0.2)
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    await stream.send_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n")  # the value never comes
    assert await closed_by_node(stream)
    assert server.core.metrics.clients_closed_partial_timeout == 1


def _complete_all(core, waiting, result) -> None:
    for pending in waiting:
        core.complete(pending, result)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)


@pytest.mark.parametrize("protocol", ["resp", "native"])
def test_completed_replies_are_taken_one_bounded_batch_at_a_time(protocol) -> None:
    """Deferred replies (a quorum read, later) complete together; they are encoded as they are
    taken, at most the reply bound at a time, not all at once."""
    core = core_with_big_value()
    waiting = serve_slow(core)
    big = b"w" * VALUE_SIZE_BYTES
    if protocol == "resp":
        session = RespSession(core, 1, resp_table(core, EXTRA_RESP))
        request = b"".join(encode_command("SLOW", str(i)) for i in range(GETS))
    else:
        table = native_table(core)
        handler, metrics = core.handler_of(Slow)
        table["ping"] = (lambda m: Slow(b"%d" % m[0]), handler, _native_value, metrics)
        session = NativeSession(core, 1, table)
        request = b"".join(encode_request(Request(i + 1, OP_PING, ())) for i in range(GETS))
    assert session.receive(request) == b"" and len(waiting) == GETS
    _complete_all(core, waiting, big)
    one_reply_bytes_max = VALUE_SIZE_BYTES + 64
    out = session.take_ready()
    assert len(out) <= REPLY_BYTES_MAX + one_reply_bytes_max and session.has_ready
    while session.has_ready:
        batch = session.resume()
        assert 0 < len(batch) <= REPLY_BYTES_MAX + one_reply_bytes_max
        out += batch
    if protocol == "resp":
        assert resp_replies(out) == [big.decode()] * GETS  # SLOW answers a simple string
    else:
        decoded = [decode_response(body) for body in FrameDecoder().parse(out)]
        assert sorted(r.request_id for r in decoded) == list(range(1, GETS + 1))
        assert all(r.payload == big for r in decoded)


def _native_value(pack, request_id, value):
    return pack(request_id, STATUS_OK, value)


@pytest.mark.parametrize("then_quit", [True, False])
async def test_completed_replies_reach_a_client_that_reads_slowly(nursery, then_quit) -> None:
    """Through the reactor: completions held back by the bound are written as the socket
    drains, and the connection closes only after the last one (QUIT after them)."""
    server = await start(nursery, connection_reply_bytes_max=REPLY_BYTES_MAX)
    waiting = serve_slow(server.core)
    server.reactor._resp_table = resp_table(server.core, EXTRA_RESP)
    stream = await resp_connect(server)
    request = b"".join(encode_command("SLOW", str(i)) for i in range(GETS))
    await stream.send_all(request + (encode_command("QUIT") if then_quit else b""))
    await wait_until(lambda: len(waiting) == GETS)
    for pending in waiting:  # the reactor delivers the completions
        server.core.complete(pending, b"w" * VALUE_SIZE_BYTES)
    server.reactor.wake()
    parser = RespReplyParser()
    replies: list[object] = []
    expected = ["w" * VALUE_SIZE_BYTES] * GETS + (["OK"] if then_quit else [])
    with trio.fail_after(WAIT_S_MAX):
        while len(replies) < len(expected):
            data = await stream.receive_some(1 << 20)
            assert data, "closed before every reply was written"
            parser.feed(data)
            replies += parser.pop_replies()
        if then_quit:
            assert await stream.receive_some(1) == b""  # closed after the last reply
    assert replies == expected
