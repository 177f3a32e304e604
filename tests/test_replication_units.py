"""The replication wire codec (round trips, hostile bytes) and the hint store's bounds."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipcache.replication import codec
from gossipcache.replication.hints import HINT_OVERHEAD_BYTES, Hint, HintStore

VERSIONS = st.integers(0, 2**128 - 1)
EXPIRIES = st.one_of(st.none(), st.integers(1, 2**48 - 1))
KEYS = st.binary(max_size=64)
VALUES = st.one_of(st.none(), st.binary(max_size=256))
REQS = st.integers(0, codec.REQUEST_ID_LIMIT - 1)


@st.composite
def messages(draw):
    kind = draw(st.sampled_from((codec.WRITE, codec.ACK, codec.READ, codec.ENTRY, codec.EVICT)))
    if kind == codec.WRITE:
        value = draw(VALUES)
        expiry = draw(EXPIRIES) if value is not None else draw(st.integers(1, 2**48 - 1))
        req, key, version = draw(REQS), draw(KEYS), draw(VERSIONS)
        return codec.write_message(req, key, value, version, expiry), (
            codec.WRITE, req, key, value, version, expiry,
        )  # fmt: skip
    if kind == codec.ACK:
        req, outcome, version = draw(REQS), draw(st.integers(0, 3)), draw(VERSIONS)
        return codec.ack_message(req, outcome, version), (codec.ACK, req, outcome, version)
    if kind == codec.READ:
        req, key = draw(REQS), draw(KEYS)
        return [codec.READ, req, key], (codec.READ, req, key)
    if kind == codec.ENTRY:
        req = draw(REQS)
        entry = draw(st.one_of(st.none(), st.tuples(VALUES, VERSIONS, EXPIRIES)))
        return codec.entry_message(req, entry), (codec.ENTRY, req, entry)
    key, version = draw(KEYS), draw(VERSIONS)
    return codec.evict_message(key, version), (codec.EVICT, key, version)


@given(st.lists(messages(), max_size=20))
def test_every_message_round_trips(pairs):
    payload = codec.encode_payload([wire for wire, _ in pairs])
    assert codec.decode_payload(payload) == [decoded for _, decoded in pairs]


@given(st.binary(max_size=300))
def test_hostile_bytes_raise_only_the_codec_error(data):
    with contextlib.suppress(codec.ReplicationCodecError):
        codec.decode_payload(codec.PAYLOAD_TAG + data)


@given(st.lists(messages(), min_size=1, max_size=5), st.data())
def test_a_mutated_valid_payload_is_decoded_or_refused_never_crashes(pairs, data):
    payload = bytearray(codec.encode_payload([wire for wire, _ in pairs]))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(1, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(codec.ReplicationCodecError):
        codec.decode_payload(bytes(payload))


@pytest.mark.parametrize(
    "body",
    [
        [[codec.WRITE, 1, b"k", None, 1, 1, None]],  # a tombstone must say when it goes
        [[codec.WRITE, -1, b"k", b"v", 1, 1, None]],
        [[codec.WRITE, 1, b"k" * 70_000, b"v", 1, 1, None]],  # key over the cap
        [[codec.WRITE, 1, b"k", b"v", -5, 1, None]],  # versions are unsigned
        [[codec.WRITE, 1, b"k", b"v", 1, 1, 2**48]],  # expiry past the latest kept
        [[codec.ACK, 1, 4, 0, 0]],
        [[codec.ENTRY, 1, [b"v", 1, 1]]],
        [[99, 1]],
        [[]],
        {"not": "a list"},
        [["str-type"]],
    ],
)
def test_invalid_fields_are_refused(body):
    with pytest.raises(codec.ReplicationCodecError):
        codec.decode_payload(codec.PAYLOAD_TAG + msgpack.packb(body, use_bin_type=True))


def test_too_many_messages_are_refused_before_they_are_built():
    payload = codec.PAYLOAD_TAG + b"\xdd" + (codec.MESSAGES_PER_PAYLOAD_MAX + 1).to_bytes(4, "big")
    with pytest.raises(codec.ReplicationCodecError):
        codec.decode_payload(payload)


def hint(version: int, value: bytes | None = b"v", created_ms: int = 0) -> Hint:
    return Hint(value, version, None, created_ms)


def test_hints_keep_the_newest_version_per_key():
    hints = HintStore(window_ms=1000, target_bytes_max=10_000, total_bytes_max=10_000)
    assert hints.add("a", b"k", hint(2))
    assert hints.add("a", b"k", hint(1))  # older: the held one stays
    assert hints.add("a", b"k", hint(3, b"vv"))
    assert hints.held == 1 and hints.bytes_held == HintStore.size_of(b"k", b"vv")
    assert hints.oldest("a", 10, 0) == [(b"k", hint(3, b"vv"))]
    hints.delivered_one("a", b"k", 2)  # an ack of an older version: still needed
    assert hints.held == 1
    hints.delivered_one("a", b"k", 3)
    assert hints.held == 0 and hints.bytes_held == 0 and hints.delivered == 1


def test_hints_over_a_bound_are_dropped_and_counted():
    size = HintStore.size_of(b"k0", b"v" * 100)
    hints = HintStore(window_ms=1000, target_bytes_max=2 * size, total_bytes_max=3 * size)
    results = [hints.add("a", b"k%d" % i, hint(1, b"v" * 100)) for i in range(3)]
    assert results == [True, True, False]
    assert hints.add("b", b"k0", hint(1, b"v" * 100))
    assert not hints.add("c", b"k0", hint(1, b"v" * 100))  # the total bound
    assert hints.dropped_full == 2 and hints.held == 3
    assert hints.bytes_held == 3 * size <= hints.total_bytes_max


def test_hints_past_the_window_are_dropped_when_met():
    hints = HintStore(window_ms=1000, target_bytes_max=10_000, total_bytes_max=10_000)
    hints.add("a", b"old", hint(1, created_ms=0))
    hints.add("a", b"new", hint(1, created_ms=900))
    assert [key for key, _ in hints.oldest("a", 10, 1500)] == [b"new"]
    assert hints.dropped_expired == 1 and hints.held == 1
    assert hints.drop_target("a") == 1 and hints.held == 0 and hints.targets() == []
    assert HINT_OVERHEAD_BYTES > 0
