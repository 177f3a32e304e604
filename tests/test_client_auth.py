"""Client authentication (issue: hardening, item 13): with a client password, a connection is
refused every command until it authenticates (RESP ``AUTH`` / ``HELLO ... AUTH``, native
``auth``), with Redis' replies; the Python clients send the password on every connection."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import trio
from test_commands import REDIS_SERVER, RedisConnection, _free_port

from gossipcache.client.client import Client, SyncClient
from gossipcache.clock import ManualClock
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import AuthenticationFailed, ServerError
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    ERROR_NOAUTH,
    ERROR_WRONG_PASSWORD,
    OP_AUTH,
    OP_GET,
    OP_PUT,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    Request,
    decode_response,
    encode_request,
)
from gossipcache.wire.resp import RespError, RespReplyParser, encode_command

PASSWORD = b"s3cret pass"


def resp_session(password: bytes | None = PASSWORD) -> RespSession:
    core = NodeCore(NodeConfig(membership_enabled=False, client_password=password), ManualClock())
    return RespSession(core, 1, resp_table(core))


def call(session: RespSession, *args) -> object:
    parser = RespReplyParser()
    parser.feed(session.receive(encode_command(*args)))
    (reply,) = parser.pop_replies()
    return reply


#: Sequences run on a fresh connection to a node and to Redis, both with the same password.
SEQUENCES = [
    [("GET", "k"), ("SET", "k", "v"), ("AUTH", "wrong"), ("GET", "k"), ("AUTH", PASSWORD),
     ("SET", "k", "v"), ("GET", "k"), ("AUTH", "wrong"), ("GET", "k")],
    [("GET",), ("SET", "k"), ("DEL",), ("PING",), ("ECHO", "x"), ("DBSIZE",), ("INFO",),
     ("NOSUCHCOMMAND",), ("AUTH",), ("AUTH", "a", "b", "c"), ("QUIT",)],
    [("HELLO",), ("HELLO", "3"), ("HELLO", "3", "AUTH", "default", "wrong"), ("PING",),
     ("AUTH", "nobody", PASSWORD), ("AUTH", "default", PASSWORD), ("PING",)],
    [("HELLO", "2", "AUTH", "default", PASSWORD), ("SET", "k", "v"), ("GET", "k")],
]  # fmt: skip


def _comparable(reply: object) -> object:
    if isinstance(reply, list):  # HELLO's map: the server's own fields differ, the shape not
        return "map"
    return reply


def _run_node(sequence) -> list[object]:
    session = resp_session()
    return [_comparable(call(session, *args)) for args in sequence]


@pytest.fixture(scope="module")
def redis_with_password():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    arguments = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [REDIS_SERVER, *arguments, "--requirepass", PASSWORD.decode()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                RedisConnection(port).sock.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("index", range(len(SEQUENCES)))
def test_replies_before_and_after_auth_match_redis(redis_with_password, index) -> None:
    sequence = [
        [a if isinstance(a, bytes) else a.encode() for a in args] for args in SEQUENCES[index]
    ]
    redis = RedisConnection(redis_with_password)
    redis.call([b"AUTH", PASSWORD])
    redis.call([b"FLUSHALL"])
    redis.sock.close()
    redis = RedisConnection(redis_with_password)
    expected = [_comparable(redis.call(args)) for args in sequence]
    assert _run_node(sequence) == expected


def test_nothing_runs_before_auth_and_a_failed_auth_keeps_an_authenticated_session() -> None:
    session = resp_session()
    core = session.core
    assert call(session, "SET", "k", "v").startswith("NOAUTH")
    assert call(session, "FLUSHALL").startswith("NOAUTH")
    assert len(core.store) == 0 and core.store.stats().puts == 0
    assert call(session, "AUTH", "wrong").startswith("WRONGPASS")
    assert core.metrics.auth_failures == 1 and not session.authenticated
    assert call(session, "AUTH", PASSWORD) == "OK" and session.authenticated
    assert call(session, "SET", "k", "v") == "OK"
    assert call(session, "AUTH", "wrong").startswith("WRONGPASS") and session.authenticated
    assert call(session, "GET", "k") == b"v"


def test_a_refused_hello_changes_nothing() -> None:
    session = resp_session()
    reply = call(session, "HELLO", "3", "AUTH", "default", "wrong", "SETNAME", "x")
    assert isinstance(reply, RespError) and reply.startswith("WRONGPASS")
    assert session.protocol_version == 2 and session.name == b"" and not session.authenticated
    reply = session.receive(
        encode_command("HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "x")
    )
    assert reply.startswith(b"%")  # a RESP3 map
    assert session.protocol_version == 3 and session.name == b"x" and session.authenticated


def test_without_a_password_auth_says_so_as_redis_does() -> None:
    session = resp_session(password=None)
    assert call(session, "GET", "k") is None
    assert call(session, "AUTH", "x").startswith("ERR AUTH <password> called without")
    assert call(session, "AUTH", "default", "anything") == "OK"


def native_call(session: NativeSession, request_id: int, op: str, *args):
    out = session.receive(encode_request(Request(request_id, op, args)))
    (body,) = FrameDecoder().parse(out)
    return decode_response(body)


def test_native_ops_are_refused_until_auth() -> None:
    core = NodeCore(NodeConfig(membership_enabled=False, client_password=PASSWORD), ManualClock())
    session = NativeSession(core, 1, native_table(core))
    refused = native_call(session, 1, OP_PUT, b"k", b"v", None)
    assert refused.status == STATUS_ERROR and refused.payload[0] == ERROR_NOAUTH
    assert len(core.store) == 0
    wrong = native_call(session, 2, OP_AUTH, b"wrong")
    assert wrong.status == STATUS_ERROR and wrong.payload[0] == ERROR_WRONG_PASSWORD
    assert native_call(session, 3, OP_AUTH, PASSWORD).status == STATUS_OK
    assert native_call(session, 4, OP_GET, b"k").status == STATUS_NOT_FOUND
    assert native_call(session, 5, OP_PUT, b"k", b"v", None).status == STATUS_OK


async def test_python_clients_send_the_password_on_every_connection(nursery) -> None:
    config = NodeConfig(
        port=0, resp_port=None, metrics_port=None, membership_enabled=False,
        client_password=PASSWORD,
    )  # fmt: skip
    server = NodeServer(config)
    await nursery.start(server.serve)
    address = f"127.0.0.1:{server.ports['native']}"
    async with Client(address, password=PASSWORD) as client:
        await client.put("k", "v")
        assert await client.get("k") == b"v"
    async with Client(address) as client:
        with pytest.raises(ServerError) as refused:
            await client.get("k")
        assert refused.value.code == ERROR_NOAUTH
    with pytest.raises(AuthenticationFailed):
        async with Client(address, password="wrong"):
            pass

    def blocking_get() -> bytes | None:  # the blocking client runs its own loop in a thread
        with SyncClient(address, password=PASSWORD.decode()) as sync_client:
            return sync_client.get("k")

    assert await trio.to_thread.run_sync(blocking_get) == b"v"


def test_an_empty_password_file_is_refused_at_start(tmp_path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    result = subprocess.run(
        [sys.executable, "-m", "gossipcache", "node", "--no-membership", "--port", "0",
         "--client-password-file", str(empty)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "first line is empty" in result.stderr
