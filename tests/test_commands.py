"""The protocol-neutral commands, checked against Redis itself.

A hypothesis test sends the same random command sequences (SET with every option, GET, DEL,
EXISTS, EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT with NX / XX / GT / LT, PERSIST, TTL, PTTL) to
a real ``redis-server`` and to a node's RESP session, and requires the same replies. Skipped
when ``redis-server`` is not installed (``.ci/run`` installs it). Plus direct tests of the core's
command objects and their validation.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.clock import ManualClock
from gossipcache.errors import InvalidRequest, ServiceUnavailable
from gossipcache.limits import TTL_MS_MAX
from gossipcache.node import commands as c
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.resp import RespError, RespReplyParser, encode_command

REDIS_SERVER = shutil.which("redis-server")
#: TTLs in the random sequences are far longer than a test run, so nothing expires by the clock
#: (expiry by an instant in the past, or a non-positive TTL, is exercised on purpose).
TTL_S_MIN = 1_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisConnection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = RespReplyParser()

    def call(self, args: list[bytes]) -> object:
        self.sock.sendall(encode_command(*args))
        while True:
            replies = self.parser.pop_replies()
            if replies:
                return replies[0]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.parser.feed(data)


@pytest.fixture(scope="module")
def redis():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = RedisConnection(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield connection
    finally:
        process.terminate()
        process.wait(timeout=10)


def node_session() -> tuple[NodeCore, RespSession]:
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    core = NodeCore(NodeConfig(membership_enabled=False), clock)
    return core, RespSession(core, 1, resp_table(core))


def node_call(session: RespSession, args: list[bytes]) -> object:
    parser = RespReplyParser()
    parser.feed(session.receive(encode_command(*args)))
    (reply,) = parser.pop_replies()
    return reply


KEYS = st.sampled_from([b"a", b"b", b"c"])
NOW_S = time.time_ns() // 1_000_000_000


def _seconds(draw) -> bytes:
    return b"%d" % draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, 3 * TTL_S_MIN, 0, -5]))


@st.composite
def command(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["set", "get", "del", "exists", "expire", "persist", "ttl"]))
    key = draw(KEYS)
    if kind == "set":
        args = [b"SET", key, draw(st.sampled_from([b"v1", b"v2"]))]
        options = draw(st.lists(st.sampled_from(
            ["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT"]), max_size=3))  # fmt: skip
        for option in options:
            args.append(option.encode())
            if option in ("EX", "EXAT"):
                base = NOW_S if option == "EXAT" else 0
                args.append(b"%d" % (base + draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, -1]))))
            elif option in ("PX", "PXAT"):
                base = NOW_S * 1000 if option == "PXAT" else 0
                ms = draw(st.sampled_from([TTL_S_MIN * 1000, 3 * TTL_S_MIN * 1000, -1]))
                args.append(b"%d" % (base + ms))
        return args
    if kind in ("get", "persist"):
        return [kind.upper().encode(), key]
    if kind in ("del", "exists"):
        return [kind.upper().encode(), key, *draw(st.lists(KEYS, max_size=2))]
    if kind == "ttl":
        return [draw(st.sampled_from([b"TTL", b"PTTL"])), key]
    name = draw(st.sampled_from([b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"]))
    seconds = draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, 3 * TTL_S_MIN, 0, -5]))
    if name.endswith(b"AT"):
        seconds = NOW_S + seconds if seconds > 0 else seconds
    number = seconds * 1000 if name.startswith(b"P") else seconds
    options = draw(st.lists(st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"nx"]), max_size=2))
    return [name, key, b"%d" % number, *options]


def _comparable(args: list[bytes], reply: object) -> object:
    """TTL readings move with the clock: compare them to the second."""
    if args[0] in (b"TTL", b"PTTL") and isinstance(reply, int) and reply >= 0:
        return ("ttl", round(reply / (1000 if args[0] == b"PTTL" else 1) / 10))
    if isinstance(reply, RespError):
        return RespError(reply.split(" ")[0])  # the same error class; wording is checked below
    return reply


@settings(max_examples=300, deadline=None)
@given(st.lists(command(), min_size=1, max_size=25))
def test_replies_match_redis(redis, sequence: list[list[bytes]]) -> None:
    redis.call([b"FLUSHALL"])
    _, session = node_session()
    for args in sequence:
        expected = redis.call(args)
        got = node_call(session, args)
        assert _comparable(args, got) == _comparable(args, expected), (args, got, expected)
        if isinstance(expected, RespError) and "syntax" in expected:
            assert got == expected


def test_error_wording_matches_redis(redis) -> None:
    _, session = node_session()
    for args in (
        [b"SET", b"k", b"v", b"NX", b"XX"],
        [b"SET", b"k", b"v", b"EX", b"0"],
        [b"SET", b"k", b"v", b"EX", b"abc"],
        [b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"10"],
        [b"EXPIRE", b"k", b"10", b"NX", b"XX"],
        [b"EXPIRE", b"k", b"10", b"GT", b"LT"],
        [b"EXPIRE", b"k", b"10", b"FOO"],
        [b"EXPIRE", b"k"],
        [b"GET"],
        [b"PERSIST", b"a", b"b"],
    ):
        assert node_call(session, args) == redis.call(args), args


# -- the command objects, without a protocol ------------------------------------------------


def test_put_conditions_and_old_value() -> None:
    core, _ = node_session()
    now = core.clock.wall_ms()
    run = core.execute
    assert run(c.Put(b"k", b"1", condition=c.IF_PRESENT), now) is False
    assert run(c.Put(b"k", b"1", condition=c.IF_ABSENT), now) is True
    assert run(c.Put(b"k", b"2", condition=c.IF_ABSENT, return_old=True), now) == b"1"
    assert run(c.Get(b"k"), now) == b"1"
    assert run(c.Put(b"k", b"3", return_old=True, ttl_ms=5_000), now) == b"1"
    assert run(c.Put(b"k", b"4", keep_ttl=True), now) is True
    assert run(c.Ttl(b"k"), now) == 5_000
    assert run(c.Put(b"k", b"5", expires_at_ms=now), now) is True  # an instant already past
    assert run(c.Get(b"k"), now) is None and run(c.Exists((b"k", b"k")), now) == 0


def test_expire_conditions_as_redis_7() -> None:
    core, _ = node_session()
    now = core.clock.wall_ms()
    run = core.execute
    run(c.Put(b"k", b"v"), now)
    assert (
        run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_PRESENT})), now) is False
    )  # no TTL yet
    assert (
        run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_GREATER})), now) is False
    )  # persistent = inf
    assert run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_LESS})), now) is True
    assert run(c.Expire(b"k", 2_000, conditions=frozenset({c.IF_ABSENT})), now) is False
    assert run(c.Expire(b"k", 500, conditions=frozenset({c.IF_GREATER})), now) is False
    assert run(c.Expire(b"k", 2_000, conditions=frozenset({c.IF_GREATER})), now) is True
    assert run(c.Ttl(b"k"), now) == 2_000
    assert run(c.Persist(b"k"), now) is True and run(c.Persist(b"k"), now) is False
    assert run(c.Expire(b"k", expires_at_ms=now - 1), now) is True  # past: deleted
    assert run(c.Exists((b"k",)), now) == 0
    assert run(c.Expire(b"missing", 1_000), now) is False


@pytest.mark.parametrize(
    "build",
    [
        lambda: c.Put(b"k", b"v", 0),
        lambda: c.Put(b"k", b"v", TTL_MS_MAX + 1),
        lambda: c.Put(b"k", b"v", 10, keep_ttl=True),
        lambda: c.Put(b"k", b"v", 10, expires_at_ms=10),
        lambda: c.Put(b"k", b"v", condition="gt"),
        lambda: c.Expire(b"k"),
        lambda: c.Expire(b"k", 1, expires_at_ms=1),
        lambda: c.Expire(b"k", 1, conditions=frozenset({"maybe"})),
        lambda: c.Expire(b"k", 1, conditions=frozenset({c.IF_ABSENT, c.IF_PRESENT})),
        lambda: c.Expire(b"k", 1, conditions=frozenset({c.IF_GREATER, c.IF_LESS})),
        lambda: c.Delete(()),
        lambda: c.Exists(()),
    ],
)
def test_commands_refuse_what_no_node_accepts(build) -> None:
    with pytest.raises(InvalidRequest):
        build()


def test_members_without_membership_is_unavailable_and_counted() -> None:
    core, _ = node_session()
    with pytest.raises(ServiceUnavailable):
        core.execute(c.Members(), core.clock.wall_ms())
    assert core.handler_of(c.Members)[1].errors == 1
    with pytest.raises(TypeError):
        core.execute(object(), 0)  # type: ignore[arg-type]


def test_one_metrics_series_per_command_whatever_the_protocol() -> None:
    from gossipcache.node.native_session import NativeSession, native_table
    from gossipcache.wire.native import Request, encode_request

    core, session = node_session()
    session.receive(encode_command("SET", "k", "v") + encode_command("GET", "k"))
    native = NativeSession(core, 2, native_table(core))
    native.receive(
        encode_request(Request(1, "put", (b"k", b"w", None)))
        + encode_request(Request(2, "get", (b"k",)))
    )
    series = core.metrics.commands
    assert series["put"].latency_ns.count == 2 and series["get"].latency_ns.count == 2
    assert "set" not in series
