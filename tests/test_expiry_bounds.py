"""Expiry bounds and the counters that describe them (issue 8, items 9 and 12).

Every expiry a node accepts, by any protocol, is an absolute instant of at most
``EXPIRES_AT_MS_MAX``; anything later is the client's mistake (an error, nothing written),
never an internal error, and every TTL a node keeps can be read back by both protocols. INFO
keyspace reports the keys with an expiry and their average remaining time from counters kept by
the store, and the native protocol answers an oversized length prefix with ``too_large``.
"""

from __future__ import annotations

import struct

import pytest

from gossipcache.clock import ManualClock
from gossipcache.limits import EXPIRES_AT_MS_MAX, TTL_MS_MAX
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    STATUS_ERROR,
    STATUS_OK,
    Request,
    decode_response,
    encode_request,
)
from gossipcache.wire.resp import RespError, RespReplyParser, encode_command

WALL_MS = 1_700_000_000_000


def _node() -> tuple[NodeCore, RespSession, NativeSession]:
    core = NodeCore(NodeConfig(membership_enabled=False), ManualClock(wall_ms=WALL_MS))
    return core, RespSession(core, 1, resp_table(core)), NativeSession(core, 2, native_table(core))


def _resp(session: RespSession, *args) -> object:
    parser = RespReplyParser()
    parser.feed(session.receive(encode_command(*args)))
    (reply,) = parser.pop_replies()
    return reply


def _native(session: NativeSession, op: str, *args):
    decoder = FrameDecoder()
    decoder.feed(session.receive(encode_request(Request(7, op, args))))
    (body,) = decoder.pop_frames()
    response = decode_response(body)
    return response.status, response.payload


INVALID_SET = RespError("ERR invalid expire time in 'set' command")


@pytest.mark.parametrize(
    "option, number",
    [
        ("EXAT", 9223372036854775807),  # the case: answered OK, then PTTL ~9.2e21
        ("PXAT", 9223372036854775807),
        ("EXAT", EXPIRES_AT_MS_MAX // 1000 + 1),
        ("PXAT", EXPIRES_AT_MS_MAX + 1),
        ("EX", (EXPIRES_AT_MS_MAX - WALL_MS) // 1000 + 1),
        ("PX", EXPIRES_AT_MS_MAX - WALL_MS + 1),
        ("EXAT", 0),  # zero or negative: Redis' error, and the key is kept
        ("PXAT", -1),
        ("EX", -5),
    ],
)
def test_set_refuses_an_expiry_it_could_not_keep_and_keeps_the_key(option, number) -> None:
    core, resp, native = _node()
    assert _resp(resp, "SET", "k", "old") == "OK"
    assert _resp(resp, "SET", "k", "new", option, number) == INVALID_SET
    assert _resp(resp, "GET", "k") == b"old" and _resp(resp, "PTTL", "k") == -1
    assert core.metrics.internal_errors == 0


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v", "PXAT", EXPIRES_AT_MS_MAX),
        ("SET", "k", "v", "PX", EXPIRES_AT_MS_MAX - WALL_MS),
        ("SET", "k", "v", "EXAT", EXPIRES_AT_MS_MAX // 1000),
        ("PEXPIREAT", "k", EXPIRES_AT_MS_MAX),
        ("PEXPIRE", "k", EXPIRES_AT_MS_MAX - WALL_MS),
    ],
)
def test_the_latest_expiry_accepted_reads_back_by_both_protocols(args) -> None:
    core, resp, native = _node()
    _resp(resp, "SET", "k", "v")
    assert _resp(resp, *args) in ("OK", 1)
    remaining_ms = _resp(resp, "PTTL", "k")
    assert 0 < remaining_ms <= EXPIRES_AT_MS_MAX - WALL_MS
    assert _resp(resp, "TTL", "k") == (remaining_ms + 500) // 1000
    # The native ttl encodes it: the "internal: cannot encode payload" is gone.
    assert _native(native, "ttl", b"k") == (STATUS_OK, remaining_ms)
    assert core.metrics.internal_errors == 0


def test_native_ttls_past_the_latest_expiry_are_the_clients_mistake() -> None:
    core, resp, native = _node()
    _resp(resp, "SET", "k", "v")
    too_late_ms = EXPIRES_AT_MS_MAX - WALL_MS + 1
    assert too_late_ms <= TTL_MS_MAX  # the codec lets it through; the core refuses it
    for op, args in (("put", (b"k", b"w", too_late_ms)), ("expire", (b"k", too_late_ms))):
        status, (code, message) = _native(native, op, *args)
        assert (status, code) == (STATUS_ERROR, "bad_request") and "expire time" in message
    assert _native(native, "get", b"k") == (STATUS_OK, b"v")
    assert _native(native, "ttl", b"k") == (STATUS_OK, -1)
    assert core.metrics.internal_errors == 0
    assert _native(native, "put", b"k", b"w", too_late_ms - 1) == (STATUS_OK, True)
    assert _native(native, "ttl", b"k") == (STATUS_OK, too_late_ms - 1)


@pytest.mark.parametrize(
    "args, reply",
    [
        # Redis refuses only what overflows int64 (seconds beyond LLONG_MIN / 1000) ...
        (("EXPIRE", "k", "-9223372036854775807"), "ERR invalid expire time in 'expire' command"),
        (("EXPIRE", "k", "-9223372036854775808"), "ERR invalid expire time in 'expire' command"),
        # ... and deletes the key for any other time in the past, however far.
        (("EXPIRE", "k", "-9223372036854775"), 1),
        (("PEXPIRE", "k", "-9223372036854775808"), 1),
        (("PEXPIREAT", "k", "-9223372036854775808"), 1),
        (("EXPIREAT", "k", "0"), 1),
    ],
)
def test_expire_in_the_far_past_deletes_as_redis(args, reply) -> None:
    core, resp, _ = _node()
    _resp(resp, "SET", "k", "v")
    got = _resp(resp, *args)
    assert got == (RespError(reply) if isinstance(reply, str) else reply)
    assert _resp(resp, "EXISTS", "k") == (0 if reply == 1 else 1)


def _keyspace_line(resp: RespSession) -> str:
    info = _resp(resp, "INFO", "keyspace").decode()
    return info.split("\r\n")[1] if "db0" in info else ""


def test_info_keyspace_reports_expires_and_average_ttl_from_counters() -> None:
    core, resp, _ = _node()
    assert _keyspace_line(resp) == ""
    _resp(resp, "SET", "persistent", "v")
    _resp(resp, "SET", "a", "v", "PX", 10_000)
    _resp(resp, "SET", "b", "v", "PX", 30_000)
    assert _keyspace_line(resp) == "db0:keys=3,expires=2,avg_ttl=20000"
    core.clock.advance(5_000)
    assert _keyspace_line(resp) == "db0:keys=3,expires=2,avg_ttl=15000"
    _resp(resp, "PEXPIRE", "a", 2_000)  # replaces an expiry: counted once
    _resp(resp, "PERSIST", "b")
    _resp(resp, "PEXPIRE", "persistent", 4_000)
    assert _keyspace_line(resp) == "db0:keys=3,expires=2,avg_ttl=3000"
    _resp(resp, "SET", "a", "w")  # a plain SET clears the expiry
    _resp(resp, "DEL", "persistent")
    assert _keyspace_line(resp) == "db0:keys=2,expires=0,avg_ttl=0"
    _resp(resp, "SET", "c", "v", "PX", 1_000)
    core.clock.advance(1_000)
    # Expired, not collected yet: counted with no time remaining, as in Redis.
    assert _keyspace_line(resp) == "db0:keys=3,expires=1,avg_ttl=0"
    assert _resp(resp, "GET", "c") is None  # collected
    assert _keyspace_line(resp) == "db0:keys=2,expires=0,avg_ttl=0"
    _resp(resp, "SET", "d", "v", "PX", 1_000)
    _resp(resp, "FLUSHALL")
    _resp(resp, "SET", "e", "v")
    assert _keyspace_line(resp) == "db0:keys=1,expires=0,avg_ttl=0"
    core.store.check_invariants()


def test_info_keyspace_costs_the_same_whatever_the_keyspace() -> None:
    """Monitoring never scans the keyspace: INFO's expiry summary reads two counters."""
    core, resp, _ = _node()
    for index in range(2_000):
        core.store.put(b"k%d" % index, b"v", WALL_MS, 1_000 + index)
    shards = core.store._shards
    core.store._shards = None  # any walk over the keyspace would fail
    try:
        line = _keyspace_line(resp)
    finally:
        core.store._shards = shards
    assert line == "db0:keys=2000,expires=2000,avg_ttl=1999"


def test_an_oversized_native_length_prefix_is_too_large() -> None:
    core, _, native = _node()
    decoder = FrameDecoder()
    decoder.feed(native.receive(struct.pack(">I", 0xFFFFFFFF) + b"\x01"))
    response = decode_response(decoder.pop_frames()[0])
    assert response.status == STATUS_ERROR and response.payload[0] == "too_large"
    assert native.closing and core.metrics.protocol_errors == 1
    _, _, empty_frame = _node()
    decoder = FrameDecoder()
    decoder.feed(empty_frame.receive(struct.pack(">I", 0)))
    assert decode_response(decoder.pop_frames()[0]).payload[0] == "bad_request"
