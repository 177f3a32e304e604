"""Membership wire format: round trips, authentication, bounds, and fuzzing of ``handle``."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.membership import Keyring, Membership, MembershipConfig, MemberState
from gossipcache.membership.codec import (
    ADDRESS_LEN_MAX,
    HEADER_SIZE_BYTES,
    INCARNATION_LIMIT,
    KEY_ID_MAX,
    KEY_SIZE_BYTES_MAX,
    KEY_SIZE_BYTES_MIN,
    MEMBERS_MAX,
    MESSAGES_PER_PACKET_MAX,
    META_SIZE_BYTES_MAX,
    NODE_ID_LEN_MAX,
    SEQ_LIMIT,
    STATE_ALIVE,
    STREAM_FRAME_SIZE_BYTES_MAX,
    Ack,
    Alive,
    CodecError,
    Dead,
    Leave,
    Nack,
    NodeState,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    array_header,
    decode_body,
    decode_packet,
    encode_message,
    encode_packet,
)
from gossipcache.sansio import Channel

KEY = b"k" * 32
SELF = "127.0.0.1:7000"
PEER = "127.0.0.1:7001"

ids = st.text(min_size=1, max_size=NODE_ID_LEN_MAX)
addresses = st.text(min_size=1, max_size=40)
incarnations = st.integers(0, INCARNATION_LIMIT - 1)
seqs = st.integers(0, SEQ_LIMIT - 1)
metas = st.binary(max_size=META_SIZE_BYTES_MAX)

updates = st.one_of(
    st.builds(Alive, ids, addresses, incarnations, metas),
    st.builds(Suspect, ids, incarnations, ids),
    st.builds(Dead, ids, incarnations, ids),
    st.builds(Leave, ids, incarnations),
)
datagram_messages = st.one_of(
    updates,
    st.builds(Ping, seqs, ids),
    st.builds(PingReq, seqs, ids, addresses, st.booleans()),
    st.builds(Ack, seqs),
    st.builds(Nack, seqs),
)
node_states = st.builds(NodeState, ids, addresses, incarnations, st.integers(0, 3), metas)


def make_core(config: MembershipConfig | None = None, seeds: tuple[str, ...] = ()) -> Membership:
    return Membership(
        SELF, "me", config or MembershipConfig.lan(), random.Random(1), Keyring(KEY), 0, seeds
    )


def signed(messages: list, stream: bool = False) -> bytes:
    return encode_packet(Keyring(KEY), [encode_message(m) for m in messages], stream)


@settings(max_examples=150, deadline=None)
@given(st.lists(datagram_messages, min_size=1, max_size=8))
def test_datagram_round_trip(messages: list) -> None:
    keyring = Keyring(KEY)
    payload = encode_packet(keyring, [encode_message(m) for m in messages])
    assert decode_packet(keyring, payload) == messages


@settings(max_examples=50, deadline=None)
@given(st.booleans(), st.booleans(), st.lists(node_states, max_size=20))
def test_push_pull_round_trip(reply: bool, join: bool, states: list) -> None:
    message = PushPull(reply, join, tuple(states))
    keyring = Keyring(KEY)
    assert decode_packet(keyring, signed([message], stream=True), stream=True) == [message]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_flipped_byte_fails_authentication(data: st.DataObject) -> None:
    payload = signed([Alive("a", "b:1", 7, b"m"), Ping(3, "x")])
    index = data.draw(st.integers(0, len(payload) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = bytearray(payload)
    mutated[index] ^= flip
    with pytest.raises(CodecError):
        decode_packet(Keyring(KEY), bytes(mutated))


def test_datagram_cannot_be_replayed_as_stream_frame() -> None:
    with pytest.raises(CodecError) as info:
        decode_packet(Keyring(KEY), signed([Ping(1, "x")]), stream=True)
    assert info.value.reason == "bad_tag"


def test_incarnation_at_or_above_two_to_the_63_is_rejected() -> None:
    keyring = Keyring(KEY)
    fine = msgpack.packb([Alive.TYPE, "a", "h:1", INCARNATION_LIMIT - 1, b""])
    assert decode_packet(keyring, encode_packet(keyring, [fine]))[0].incarnation == 2**63 - 1
    for bad in (INCARNATION_LIMIT, 2**64 - 1):
        raw = msgpack.packb([Suspect.TYPE, "a", bad, "b"])
        with pytest.raises(CodecError) as info:
            decode_packet(keyring, encode_packet(keyring, [raw]))
        assert info.value.reason == "incarnation_overflow"


def test_keyring_rotation_rules() -> None:
    old = Keyring(KEY, primary_key_id=1)
    payload = encode_packet(old, [encode_message(Ack(1))])
    ring = Keyring(b"n" * 32, primary_key_id=2)
    with pytest.raises(CodecError) as info:
        decode_packet(ring, payload)
    assert info.value.reason == "unknown_key"
    ring.add_key(1, KEY)  # accept both while the cluster switches
    assert decode_packet(ring, payload) == [Ack(1)]
    with pytest.raises(ValueError):
        ring.remove_key(2)  # the primary
    ring.use_key(1)
    ring.remove_key(2)
    assert ring.key_ids() == [1]
    with pytest.raises(KeyError):
        ring.use_key(2)
    with pytest.raises(ValueError):
        ring.add_key(3, b"short")
    with pytest.raises(ValueError):
        Keyring(KEY, primary_key_id=256)


def test_wrong_key_same_id_is_counted_as_bad_tag() -> None:
    core = make_core()
    payload = encode_packet(Keyring(b"z" * 32), [encode_message(Ping(1, "me"))])
    core.handle(PEER, Channel.DATAGRAM, payload, 10)
    assert core.stats()["drop_bad_tag"] == 1
    assert core.take_outbox() == []


def _drops(core: Membership) -> int:
    return sum(v for k, v in core.stats().items() if k.startswith("drop_"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.booleans())
def test_fuzz_arbitrary_bytes_never_raise_and_are_counted(payload: bytes, stream: bool) -> None:
    core = make_core()
    core.handle(PEER, Channel.STREAM if stream else Channel.DATAGRAM, payload, 5)
    assert _drops(core) == 1


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 12), wire_values), max_size=6), st.booleans())
def test_fuzz_authenticated_garbage_never_raises(fields: list, stream: bool) -> None:
    """Correctly signed but malformed bodies exercise every validator behind the HMAC."""
    core = make_core()
    keyring = Keyring(KEY)
    body = msgpack.packb([fields])
    payload = encode_packet(keyring, [body], stream)
    core.handle(PEER, Channel.STREAM if stream else Channel.DATAGRAM, payload, 5)
    core.tick(10)
    me = [m for m in core.members() if m.node_id == "me"]
    assert me and me[0].state is MemberState.ALIVE


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_packets_resigned_never_raise(data: st.DataObject) -> None:
    """Mutate the body of real traffic, re-sign it, and feed it back."""
    keyring = Keyring(KEY)
    message = data.draw(
        st.one_of(
            datagram_messages,
            st.builds(
                PushPull, st.booleans(), st.booleans(), st.lists(node_states, max_size=3).map(tuple)
            ),
        )
    )
    stream = isinstance(message, PushPull)
    body = bytearray(msgpack.packb([message.to_wire()]))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    payload = keyring.seal(bytes(body), stream)
    core = make_core()
    core.handle(PEER, Channel.STREAM if stream else Channel.DATAGRAM, payload, 5)
    core.tick(1_000_000)
    core.take_outbox()


def test_remote_claims_cannot_kill_the_local_node() -> None:
    core = make_core()
    claims = (
        lambda inc: Dead("me", inc, "x"),
        lambda inc: Leave("me", inc),
        lambda inc: Suspect("me", inc, "x"),
        lambda inc: Alive("me", SELF, inc + 5),
    )
    for make_claim in claims:
        before = core.incarnation
        core.handle(PEER, Channel.DATAGRAM, signed([make_claim(before)]), 10)
        assert core.incarnation > before
        assert core.members()[0].state is MemberState.ALIVE
    assert core.stats()["refutations"] == 4
    assert core.local_health == 4  # Lifeguard: being accused hints at local trouble
    # A claim about an older incarnation of ourselves is already refuted: ignored.
    core.handle(PEER, Channel.DATAGRAM, signed([Dead("me", 0, "x")]), 11)
    assert core.stats()["refutations"] == 4


def test_stale_claims_are_ignored() -> None:
    core = make_core()
    core.handle(PEER, Channel.DATAGRAM, signed([Alive("p", PEER, 10)]), 1)
    core.handle(PEER, Channel.DATAGRAM, signed([Dead("p", 9, "x"), Leave("p", 3)]), 2)
    core.handle(PEER, Channel.DATAGRAM, signed([Suspect("p", 9, "x")]), 3)
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.ALIVE
    core.handle(PEER, Channel.DATAGRAM, signed([Dead("p", 10, "x")]), 4)
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.DEAD
    core.handle(PEER, Channel.DATAGRAM, signed([Alive("p", PEER, 10)]), 5)  # not newer
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.DEAD
    core.handle(PEER, Channel.DATAGRAM, signed([Alive("p", PEER, 11)]), 6)
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.ALIVE
    kinds = [e.kind for e in core.take_events()]
    assert kinds == ["joined", "dead", "joined"]


def test_ping_for_another_node_id_is_not_acked() -> None:
    core = make_core()
    core.handle(PEER, Channel.DATAGRAM, signed([Ping(5, "previous-owner")]), 1)
    assert core.take_outbox() == []
    assert core.stats()["drop_wrong_target"] == 1
    core.handle(PEER, Channel.DATAGRAM, signed([Ping(6, "me")]), 2)
    [out] = core.take_outbox()
    assert out.destination == PEER and Ack(6) in decode_packet(Keyring(KEY), out.payload)


def test_packets_never_exceed_the_size_limit_with_many_pending_updates() -> None:
    # Lets one push-pull teach 600 members (the default bounds would keep 64 of them).
    config = MembershipConfig.lan().replace(new_members_per_packet_max=600, new_members_burst=600)
    core = make_core(config)
    states = tuple(
        NodeState(f"node-{i:04d}-" + "x" * 100, f"10.0.{i // 250}.{i % 250}:7946", i, 0, b"m" * 100)
        for i in range(600)
    )
    core.handle(PEER, Channel.STREAM, signed([PushPull(False, False, states)], stream=True), 1)
    assert core.stats()["broadcast_queue"] >= 600
    sizes = []
    now = 1
    for _ in range(50):
        now = max(now, core.next_deadline_ms() or now)
        core.tick(now)
        core.handle(PEER, Channel.DATAGRAM, signed([Ping(now, "me")]), now)
        for out in core.take_outbox():
            if out.channel is Channel.DATAGRAM:
                sizes.append(len(out.payload))
                assert len(decode_packet(Keyring(KEY), out.payload)) >= 1
    assert sizes and max(sizes) <= config.packet_size_bytes_max
    assert max(sizes) > config.packet_size_bytes_max - 300  # packets are actually filled
    assert min(sizes) > HEADER_SIZE_BYTES


def test_push_pull_reply_merges_and_rows_about_dead_become_suspicions() -> None:
    core = make_core(seeds=(PEER,))
    core.tick(0)
    [out] = [o for o in core.take_outbox() if o.channel is Channel.STREAM]
    assert out.destination == PEER
    rows = (
        NodeState("p", PEER, 1, STATE_ALIVE, b""),
        NodeState("q", "127.0.0.1:7002", 1, STATE_ALIVE, b""),
        NodeState("q", "127.0.0.1:7002", 1, 2, b""),  # "dead" elsewhere: only suspected here
    )
    core.handle(PEER, Channel.STREAM, signed([PushPull(True, False, rows)], stream=True), 3)
    assert not core.is_joining
    view = {m.node_id: m.state for m in core.members()}
    assert view == {"me": "alive", "p": "alive", "q": "suspect"}


# --------------------------------------------------------------------------------------------
# Every validator, one bad value each: the exact reason (the core counts ``drop_<reason>``) and
# the detail naming the field. Boundary values pass.

_LONG_ID = "i" * (NODE_ID_LEN_MAX + 1)
_LONG_ADDRESS = "a" * (ADDRESS_LEN_MAX + 1)
_STATE_ROW = ["n", "h:1", 1, 0, b""]

INVALID_MESSAGES = [
    # (wire fields, stream, str(CodecError))
    ([Ping.TYPE, -1, "x"], False, "malformed: seq is not a non-negative int"),
    ([Ping.TYPE, "1", "x"], False, "malformed: seq is not a non-negative int"),
    ([Ping.TYPE, True, "x"], False, "malformed: seq is not a non-negative int"),
    ([Ping.TYPE, SEQ_LIMIT, "x"], False, f"out_of_range: seq {SEQ_LIMIT} >= {SEQ_LIMIT}"),
    ([Ping.TYPE, 1, ""], False, "malformed: target_id is not a string of 1..128 chars"),
    ([Ping.TYPE, 1, 5], False, "malformed: target_id is not a string of 1..128 chars"),
    ([Ping.TYPE, 1, _LONG_ID], False, "malformed: target_id is not a string of 1..128 chars"),
    ([Ping.TYPE, 1, "x", 0], False, "malformed: expected 3 fields"),
    ([PingReq.TYPE, -1, "t", "h:1", True], False, "malformed: seq is not a non-negative int"),
    (
        [PingReq.TYPE, 1, "", "h:1", True],
        False,
        "malformed: target_id is not a string of 1..128 chars",
    ),
    (
        [PingReq.TYPE, 1, "t", _LONG_ADDRESS, True],
        False,
        "malformed: target_address is not a string of 1..255 chars",
    ),
    ([PingReq.TYPE, 1, "t", "h:1", 1], False, "malformed: want_nack is not a bool"),
    ([PingReq.TYPE, 1, "t", "h:1"], False, "malformed: expected 5 fields"),
    ([Ack.TYPE, -1], False, "malformed: seq is not a non-negative int"),
    ([Nack.TYPE, SEQ_LIMIT], False, f"out_of_range: seq {SEQ_LIMIT} >= {SEQ_LIMIT}"),
    ([Nack.TYPE], False, "malformed: expected 2 fields"),
    ([Alive.TYPE, "", "h:1", 1, b""], False, "malformed: node_id is not a string of 1..128 chars"),
    ([Alive.TYPE, "n", "", 1, b""], False, "malformed: address is not a string of 1..255 chars"),
    ([Alive.TYPE, "n", "h:1", -1, b""], False, "malformed: incarnation is not a non-negative int"),
    ([Alive.TYPE, "n", "h:1", "1", b""], False, "malformed: incarnation is not a non-negative int"),
    (
        [Alive.TYPE, "n", "h:1", INCARNATION_LIMIT, b""],
        False,
        f"incarnation_overflow: incarnation {INCARNATION_LIMIT}",
    ),
    ([Alive.TYPE, "n", "h:1", 1, "meta"], False, "malformed: meta is not bytes within bounds"),
    ([Suspect.TYPE, _LONG_ID, 1, "f"], False, "malformed: node_id is not a string of 1..128 chars"),
    ([Suspect.TYPE, "n", -1, "f"], False, "malformed: incarnation is not a non-negative int"),
    ([Dead.TYPE, "n", 1, ""], False, "malformed: from_id is not a string of 1..128 chars"),
    ([Dead.TYPE, "n", 1], False, "malformed: expected 4 fields"),
    ([Leave.TYPE, "", 1], False, "malformed: node_id is not a string of 1..128 chars"),
    ([Leave.TYPE, "n", -1], False, "malformed: incarnation is not a non-negative int"),
    ([PushPull.TYPE, 1, False, []], True, "malformed: reply is not a bool"),
    ([PushPull.TYPE, True, None, []], True, "malformed: join is not a bool"),
    ([PushPull.TYPE, True, False, {}], True, "malformed: push-pull states"),
    ([PushPull.TYPE, True, False, "rows"], True, "malformed: push-pull states"),
    ([PushPull.TYPE, True, False, [5]], True, "malformed: expected 5 fields"),
    (
        [PushPull.TYPE, True, False, [["", "h:1", 1, 0, b""]]],
        True,
        "malformed: node_id is not a string of 1..128 chars",
    ),
    (
        [PushPull.TYPE, True, False, [["n", "", 1, 0, b""]]],
        True,
        "malformed: address is not a string of 1..255 chars",
    ),
    (
        [PushPull.TYPE, True, False, [["n", "h:1", -1, 0, b""]]],
        True,
        "malformed: incarnation is not a non-negative int",
    ),
    ([PushPull.TYPE, True, False, [["n", "h:1", 1, 4, b""]]], True, "out_of_range: state 4 >= 4"),
    (
        [PushPull.TYPE, True, False, [["n", "h:1", 1, -1, b""]]],
        True,
        "malformed: state is not a non-negative int",
    ),
    (
        [PushPull.TYPE, True, False, [["n", "h:1", 1, 0, None]]],
        True,
        "malformed: meta is not bytes within bounds",
    ),
    ([PushPull.TYPE, True, False], True, "malformed: expected 4 fields"),
    ([99], False, "unknown_type: 99"),
    (["x" * 30], False, "unknown_type: '" + "x" * 19),
    ([Ping.TYPE, 1, "x"], True, "wrong_channel: Ping"),
    ([PushPull.TYPE, True, False, []], False, "wrong_channel: PushPull"),
]


@pytest.mark.parametrize(("fields", "stream", "expected"), INVALID_MESSAGES)
def test_each_validator_names_its_reason_and_field(
    fields: list, stream: bool, expected: str
) -> None:
    with pytest.raises(CodecError) as info:
        decode_body(msgpack.packb([fields]), stream)
    assert str(info.value) == expected
    assert info.value.reason == expected.split(":")[0]
    core = make_core()  # and the core counts the reason instead of raising
    channel = Channel.STREAM if stream else Channel.DATAGRAM
    core.handle(PEER, channel, encode_packet(Keyring(KEY), [msgpack.packb(fields)], stream), 1)
    assert core.stats()["drop_" + info.value.reason] == 1


def test_field_boundaries_are_accepted() -> None:
    longest_id, longest_address = "i" * NODE_ID_LEN_MAX, "a" * ADDRESS_LEN_MAX
    fullest_meta = b"m" * META_SIZE_BYTES_MAX
    messages = [
        Ping(SEQ_LIMIT - 1, longest_id),
        PingReq(0, longest_id, longest_address, False),
        Alive(longest_id, longest_address, INCARNATION_LIMIT - 1, fullest_meta),
        Leave("n", 0),
    ]
    body = array_header(len(messages)) + b"".join(encode_message(m) for m in messages)
    assert decode_body(body, False) == messages
    row = NodeState(longest_id, longest_address, INCARNATION_LIMIT - 1, 3, fullest_meta)
    assert NodeState.from_wire(row.to_wire()) == row
    with pytest.raises(CodecError, match="meta is not bytes within bounds"):
        Alive.from_wire([Alive.TYPE, "n", "h:1", 1, fullest_meta + b"m"])
    with pytest.raises(CodecError, match="meta is not bytes within bounds"):
        NodeState.from_wire(["n", "h:1", 1, 0, fullest_meta + b"m"])


def test_push_pull_holds_at_most_members_max_rows() -> None:
    rows = [list(_STATE_ROW) for _ in range(MEMBERS_MAX)]
    assert len(PushPull.from_wire([PushPull.TYPE, True, False, rows]).states) == MEMBERS_MAX
    with pytest.raises(CodecError) as info:
        PushPull.from_wire([PushPull.TYPE, True, False, [*rows, _STATE_ROW]])
    assert str(info.value) == "malformed: push-pull states"


BAD_BODIES = [
    # (body bytes, stream, str(CodecError)): what msgpack itself refuses, then the body's shape.
    (b"\xc1", False, "malformed: FormatError"),
    (msgpack.packb([[Ack.TYPE, 1]]) + b"\x00", False, "malformed: ExtraData"),
    (msgpack.packb([{"a": 1}]), False, "malformed: ValueError"),  # no maps at all
    (msgpack.packb([msgpack.ExtType(1, b"x")]), False, "malformed: ValueError"),  # no ext
    (
        msgpack.packb([[Alive.TYPE, "n", "h:1", 1, b"m" * (META_SIZE_BYTES_MAX + 1)]]),
        False,
        "malformed: ValueError",
    ),
    (
        msgpack.packb([[Ping.TYPE, 1, "x" * (4 * ADDRESS_LEN_MAX + 1)]]),
        False,
        "malformed: ValueError",
    ),
    (msgpack.packb([[Ack.TYPE, 1]] * (MEMBERS_MAX + 1)), False, "malformed: ValueError"),
    (msgpack.packb(5), False, "malformed: body is not a non-empty list of messages"),
    (msgpack.packb([]), False, "malformed: body is not a non-empty list of messages"),
    (
        msgpack.packb([[Ack.TYPE, 1]] * (MESSAGES_PER_PACKET_MAX + 1)),
        False,
        "malformed: body is not a non-empty list of messages",
    ),
    (msgpack.packb([5]), False, "malformed: message is not a list"),
    (msgpack.packb([[]]), False, "malformed: message is not a list"),
]


@pytest.mark.parametrize(("body", "stream", "expected"), BAD_BODIES)
def test_bodies_msgpack_or_the_shape_check_refuse(body: bytes, stream: bool, expected: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_body(body, stream)
    assert str(info.value) == expected and info.value.reason == "malformed"


def test_a_body_holds_up_to_messages_per_packet_max() -> None:
    body = msgpack.packb([[Ack.TYPE, 1]] * MESSAGES_PER_PACKET_MAX)
    assert decode_body(body, False) == [Ack(1)] * MESSAGES_PER_PACKET_MAX


def test_codec_error_message_is_the_reason_then_any_detail() -> None:
    assert str(CodecError("bad_tag")) == "bad_tag" and CodecError("bad_tag").reason == "bad_tag"
    error = CodecError("truncated", "3")
    assert str(error) == "truncated: 3" and error.reason == "truncated"


def test_array_header_switches_to_array16_at_sixteen() -> None:
    assert array_header(0) == b"\x90" and array_header(15) == b"\x9f"
    assert array_header(16) == b"\xdc\x00\x10"
    assert array_header(2**16 - 1) == b"\xdc\xff\xff"
    for count in (0, 15, 16, 17, 33, 300):
        assert msgpack.unpackb(array_header(count) + b"\xc0" * count) == [None] * count
    with pytest.raises(ValueError, match="^too many messages in one body$"):
        array_header(2**16)


def test_keyring_key_bounds_and_primary_switch() -> None:
    ring = Keyring(KEY)
    assert ring.primary_key_id == 0 and ring.key_ids() == [0]
    assert ring.seal(b"\x90", False)[:2] == b"\x01\x00"  # version 1, key id 0
    ring.add_key(KEY_ID_MAX, b"x" * KEY_SIZE_BYTES_MIN)
    ring.add_key(7, b"y" * KEY_SIZE_BYTES_MAX)
    assert ring.key_ids() == [0, 7, KEY_ID_MAX]
    with pytest.raises(ValueError, match=r"^key_id must be 0\.\.255$"):
        ring.add_key(KEY_ID_MAX + 1, KEY)
    with pytest.raises(ValueError, match=r"^key_id must be 0\.\.255$"):
        ring.add_key(-1, KEY)
    for size in (KEY_SIZE_BYTES_MIN - 1, KEY_SIZE_BYTES_MAX + 1):
        with pytest.raises(ValueError, match=r"^key must be 16\.\.64 bytes$"):
            ring.add_key(1, b"k" * size)
    ring.use_key(7)
    assert ring.primary_key_id == 7
    sealed = ring.seal(b"\x90", True)
    assert sealed[1] == 7 and ring.open(sealed, True) == b"\x90"
    with pytest.raises(KeyError) as info:
        ring.use_key(3)
    assert info.value.args == (3,)
    with pytest.raises(
        ValueError, match="^cannot remove the primary key; use_key another one first$"
    ):
        ring.remove_key(7)
    ring.remove_key(3)  # never added: nothing to do
    ring.remove_key(0)
    assert ring.key_ids() == [7, KEY_ID_MAX]


def test_datagram_size_cap_is_the_largest_udp_payload() -> None:
    ring = Keyring(KEY)
    largest = ring.seal(b"b" * (65_507 - HEADER_SIZE_BYTES), False)
    assert len(largest) == 65_507 and ring.open(largest, False) == b"b" * (
        65_507 - HEADER_SIZE_BYTES
    )
    too_large = ring.seal(b"b" * (65_508 - HEADER_SIZE_BYTES), False)
    with pytest.raises(CodecError) as info:
        ring.open(too_large, False)
    assert str(info.value) == "too_large: 65508"
    stream_frame = ring.seal(b"b" * 100_000, True)  # streams may carry more
    assert ring.open(stream_frame, True) == b"b" * 100_000
    with pytest.raises(CodecError, match="^too_large"):
        ring.open(b"\x01" * (STREAM_FRAME_SIZE_BYTES_MAX + 1), True)


def test_envelope_errors_name_what_was_wrong() -> None:
    ring = Keyring(KEY)
    sealed = ring.seal(b"\x90", False)
    cases = [
        (sealed[:HEADER_SIZE_BYTES], "truncated: 18"),  # a header and no body
        (b"\x01\x00\x00", "truncated: 3"),
        (b"\x02" + sealed[1:], "bad_version: 2"),
        (sealed[:1] + b"\x09" + sealed[2:], "unknown_key: 9"),
    ]
    for payload, text in cases:
        with pytest.raises(CodecError) as info:
            ring.open(payload, False)
        assert str(info.value) == text
