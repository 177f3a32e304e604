"""Membership wire format: round trips, authentication, bounds, and fuzzing of ``handle``."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.membership import Keyring, Membership, MembershipConfig, MemberState
from gossipcache.membership.codec import (
    HEADER_SIZE_BYTES,
    INCARNATION_LIMIT,
    META_SIZE_BYTES_MAX,
    NODE_ID_LEN_MAX,
    SEQ_LIMIT,
    STATE_ALIVE,
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
    config = MembershipConfig.lan()
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
