"""Deferred replies: a command may stay pending while later ones complete.

A fake slow command (``Slow``) is served by a handler that leaves it pending; the test completes
it later, in an order of its choosing. RESP replies must still leave in request order; native
replies carry the right request ids; the per-connection and per-node bounds hold; a closed
connection's replies are dropped while the core still finishes the work.
"""

from __future__ import annotations

import random
import socket

import trio
from slow_command import Slow

from gossipcache.clock import ManualClock
from gossipcache.drivers.server import NodeServer
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore, Pending
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    STATUS_NOT_FOUND,
    STATUS_OK,
    Request,
    decode_response,
    encode_request,
)
from gossipcache.wire.resp import RespError, RespReplyParser, encode_command


def serve_slow(core: NodeCore) -> list[Pending]:
    """Make ``core`` serve ``Slow`` by leaving it pending; returns the list it waits in."""
    waiting: list[Pending] = []

    def run_slow(command: Slow, wall_ms: int) -> Pending:
        pending = core.defer(Slow, command)
        waiting.append(pending)
        return pending

    core.add_command(Slow, run_slow)
    return waiting


def slow_core(config: NodeConfig | None = None) -> tuple[NodeCore, list[Pending]]:
    core = NodeCore(config or NodeConfig(membership_enabled=False), ManualClock())
    return core, serve_slow(core)


async def slow_server(nursery) -> tuple[NodeServer, list[Pending]]:
    """A real node (sockets, reactor) whose RESP port also serves SLOW."""
    config = NodeConfig(port=0, resp_port=0, metrics_port=None, membership_enabled=False)
    server = NodeServer(config)
    await nursery.start(server.serve)
    waiting = serve_slow(server.core)
    server.reactor._resp_table = resp_table(server.core, EXTRA_RESP)  # the reactor's copy
    return server, waiting


def _translate_slow(session, args):
    return Slow(args[1]) if len(args) == 2 else b"-ERR wrong number of arguments\r\n"


def _encode_slow(tag):
    return b"+%s\r\n" % tag


EXTRA_RESP = {b"SLOW": (_translate_slow, _encode_slow, Slow)}


def mixed_resp_commands(count: int, seed: int) -> tuple[list[list[bytes]], list[object]]:
    """``count`` commands (SET, GET, DEL, SLOW) and the replies a correct node gives, in order."""
    rng = random.Random(seed)
    model: dict[bytes, bytes] = {}
    commands, expected = [], []
    for index in range(count):
        key = b"k%d" % rng.randrange(20)
        kind = rng.choice(["set", "get", "get", "del", "slow"])
        if kind == "set":
            value = b"v%d" % index
            commands.append([b"SET", key, value])
            model[key] = value
            expected.append("OK")
        elif kind == "get":
            commands.append([b"GET", key])
            expected.append(model.get(key))
        elif kind == "del":
            commands.append([b"DEL", key])
            expected.append(int(model.pop(key, None) is not None))
        else:
            tag = b"slow%d" % index
            commands.append([b"SLOW", tag])
            expected.append(tag.decode())
    return commands, expected


def parse_replies(data: bytes) -> list[object]:
    parser = RespReplyParser()
    parser.feed(data)
    replies = parser.pop_replies()
    return [r.decode() if isinstance(r, bytes) and r.startswith(b"slow") else r for r in replies]


def test_resp_replies_stay_in_request_order_while_slow_commands_complete_out_of_order() -> None:
    core, waiting = slow_core()
    session = RespSession(core, 1, resp_table(core, EXTRA_RESP))
    commands, expected = mixed_resp_commands(1000, seed=1)
    data = b"".join(encode_command(*args) for args in commands)
    first_slow = next(i for i, args in enumerate(commands) if args[0] == b"SLOW")
    out = session.receive(data)
    # Only the replies before the first pending command can leave now.
    assert parse_replies(out) == expected[:first_slow]
    assert len(waiting) == sum(args[0] == b"SLOW" for args in commands)
    # Complete the slow commands last first: nothing more may leave until the first completes.
    for pending in reversed(waiting[1:]):
        core.complete(pending, pending.command.tag)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    assert session.take_ready() == b""
    core.complete(waiting[0], waiting[0].command.tag)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    out += session.take_ready()
    assert parse_replies(out) == expected
    assert core.pending_count == 0 and session.pending_count == 0
    core.check_invariants()


def test_native_replies_carry_their_ids_and_may_overtake_a_slow_one() -> None:
    core, waiting = slow_core()
    table = native_table(core)
    handler, metrics = core.handler_of(Slow)
    table["ping"] = (
        lambda message: Slow(b"%d" % message[0]),
        handler,
        lambda pack, request_id, tag: pack(request_id, STATUS_OK, tag),
        metrics,
    )
    session = NativeSession(core, 1, table)
    requests = []
    for request_id in range(1, 1001):
        key = b"k%d" % (request_id % 7)
        op, args = [
            ("put", (key, b"v%d" % request_id, None)),
            ("get", (key,)),
            ("ping", ()),
            ("del", (key,)),
        ][request_id % 4]
        requests.append(Request(request_id, op, args))
    data = b"".join(encode_request(request) for request in requests)
    out = session.receive(data)
    for pending in reversed(waiting):
        core.complete(pending, pending.command.tag)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    out += session.take_ready()
    decoder = FrameDecoder()
    responses = [decode_response(body) for body in decoder.parse(out)]
    assert sorted(r.request_id for r in responses) == list(range(1, 1001))
    by_id = {r.request_id: r for r in responses}
    slow_ids = [r.request_id for r in requests if r.op == "ping"]
    for request_id in slow_ids:  # the slow ones answer with their own id as payload
        assert by_id[request_id].payload == b"%d" % request_id
    # They completed last first, after every other reply: out of request order, as allowed.
    order = [r.request_id for r in responses if r.request_id in set(slow_ids)]
    assert order == sorted(slow_ids, reverse=True)
    for request in requests:
        if request.op == "get":
            response = by_id[request.request_id]
            assert response.status in (STATUS_OK, STATUS_NOT_FOUND)
            if response.status == STATUS_OK:
                assert response.payload.startswith(b"v")


def test_a_connection_at_its_pending_bound_stops_executing_and_resumes_in_order() -> None:
    core, waiting = slow_core(NodeConfig(membership_enabled=False, pending_per_connection_max=3))
    session = RespSession(core, 1, resp_table(core, EXTRA_RESP))
    commands = [[b"SLOW", b"slow%d" % i] for i in range(5)] + [[b"SET", b"k", b"v"]]
    out = session.receive(b"".join(encode_command(*args) for args in commands))
    assert out == b"" and len(waiting) == 3 and not session.wants_input
    assert not core.store.contains(b"k", core.clock.wall_ms())  # the SET waits its turn
    for pending in list(waiting):
        core.complete(pending, pending.command.tag)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    assert len(waiting) == 3 and session.resumable  # the driver resumes once it has written
    out = session.resume()
    assert len(waiting) == 5  # the two that waited are now executing
    for pending in waiting[3:]:
        core.complete(pending, pending.command.tag)
    for pending in core.take_completed():
        pending.reply_to.completed(pending)
    out += session.take_ready()
    assert parse_replies(out) == [f"slow{i}" for i in range(5)] + ["OK"]
    assert session.wants_input and core.store.contains(b"k", core.clock.wall_ms())


def test_the_node_bound_refuses_with_tryagain_and_a_closed_connection_drops_its_replies() -> None:
    core, waiting = slow_core(NodeConfig(membership_enabled=False, pending_per_node_max=2))
    first = RespSession(core, 1, resp_table(core, EXTRA_RESP))
    second = RespSession(core, 2, resp_table(core, EXTRA_RESP))
    assert first.receive(encode_command("SLOW", "slow1") + encode_command("SLOW", "slow2")) == b""
    refused = parse_replies(second.receive(encode_command("SLOW", "slow3")))
    assert isinstance(refused[0], RespError) and refused[0].startswith("TRYAGAIN")
    assert core.metrics.pending_refused == 1
    first.close()  # the client went away; the core still finishes its commands
    for pending in waiting:
        core.complete(pending, pending.command.tag)
    assert [p.reply_to for p in core.take_completed()] == [first, first]
    assert core.pending_count == 0
    assert parse_replies(second.receive(encode_command("SLOW", "slow4"))) == []


async def test_real_node_keeps_resp_order_while_a_task_completes_slow_commands(nursery) -> None:
    """Through the reactor: 1,000 pipelined commands on one socket, slow ones completed by
    another task after later replies were ready; the reactor delivers the completions."""
    server, waiting = await slow_server(nursery)
    core = server.core

    async def complete_later() -> None:
        done = 0
        while True:
            await trio.sleep(0.001)
            for pending in reversed(waiting[done:]):
                core.complete(pending, pending.command.tag)
            done = len(waiting)
            server.reactor.wake()

    nursery.start_soon(complete_later)
    commands, expected = mixed_resp_commands(1000, seed=2)
    data = b"".join(encode_command(*args) for args in commands)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        await sock.connect(("127.0.0.1", server.ports["resp"]))
        await sock.send(data)
        parser = RespReplyParser()
        replies: list[object] = []
        with trio.fail_after(10):
            while len(replies) < len(expected):
                parser.feed(await sock.recv(65536))
                replies += parser.pop_replies()
    decoded = [r.decode() if isinstance(r, bytes) and r.startswith(b"slow") else r for r in replies]
    assert decoded == expected
    assert core.pending_count == 0


async def test_quit_after_a_slow_command_answers_it_before_closing(nursery) -> None:
    server, waiting = await slow_server(nursery)
    core = server.core
    stream = await trio.open_tcp_stream("127.0.0.1", server.ports["resp"])
    await stream.send_all(encode_command("SLOW", "slow1") + encode_command("QUIT"))
    with trio.fail_after(10):
        while not waiting:
            await trio.sleep(0.001)
    core.complete(waiting[0], waiting[0].command.tag)
    server.reactor.wake()
    received = b""
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            received += data
    assert parse_replies(received) == ["slow1", "OK"]  # then the node closed the connection
