"""The membership mechanisms one by one: config profiles, suspicion formula, local health,
retransmit queue, push-pull scaling."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.membership import (
    EventKind,
    InvariantViolation,
    Keyring,
    MemberInfo,
    Membership,
    MembershipConfig,
    MemberState,
)
from gossipcache.membership import core as core_module
from gossipcache.membership.awareness import Awareness
from gossipcache.membership.broadcast import BroadcastQueue, retransmit_limit
from gossipcache.membership.codec import (
    HEADER_SIZE_BYTES,
    INCARNATION_LIMIT,
    MEMBERS_MAX,
    STATE_ALIVE,
    Ack,
    Alive,
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
from gossipcache.membership.core import EVENTS_MAX, FORWARDS_MAX, push_pull_chance
from gossipcache.membership.suspicion import (
    CONFIRMATIONS_MAX,
    Suspicion,
    expected_confirmations,
    suspicion_timeout_min_ms,
    suspicion_timeout_ms,
)
from gossipcache.sansio import Channel


def test_profiles_derive_from_one_default_and_validate() -> None:
    lan, local = MembershipConfig.lan(), MembershipConfig.local()
    assert lan == MembershipConfig()
    assert local.probe_timeout_ms < lan.probe_timeout_ms
    assert local.gossip_interval_ms < lan.gossip_interval_ms
    assert local.packet_size_bytes_max == lan.packet_size_bytes_max  # untouched knobs shared
    with pytest.raises(ValueError):
        lan.replace(probe_timeout_ms=2000)  # longer than the period
    with pytest.raises(ValueError):
        lan.replace(indirect_probe_timeout_ms=600)  # direct + indirect longer than the period
    with pytest.raises(ValueError):
        lan.replace(push_pull_scale_threshold=0)
    with pytest.raises(ValueError):
        lan.replace(packet_size_bytes_max=100)
    with pytest.raises(ValueError):
        lan.replace(gossip_nodes=0)


def test_suspicion_minimum_follows_log10_of_cluster_size() -> None:
    assert suspicion_timeout_min_ms(4, 1, 1000) == 4000
    assert suspicion_timeout_min_ms(4, 10, 1000) == 4000
    assert suspicion_timeout_min_ms(4, 100, 1000) == 8000
    assert suspicion_timeout_min_ms(4, 1000, 1000) == 12000
    assert expected_confirmations(4, 3) == 0  # too small to get 2 independent confirmations
    assert expected_confirmations(4, 4) == 2


@settings(max_examples=100)
@given(st.integers(1, 10), st.integers(1, 100_000), st.integers(1, 10))
def test_suspicion_timeout_shrinks_monotonically_from_max_to_min(
    k: int, min_ms: int, mult: int
) -> None:
    max_ms = min_ms * mult
    timeouts = [suspicion_timeout_ms(c, k, min_ms, max_ms) for c in range(k + 2)]
    assert timeouts[0] == max_ms
    assert timeouts == sorted(timeouts, reverse=True)
    assert timeouts[k] == min_ms and timeouts[k + 1] == min_ms


def test_suspicion_counts_only_new_independent_confirmations() -> None:
    suspicion = Suspicion("accuser", started_ms=1000, k=3, min_ms=4000, max_ms=24000)
    assert suspicion.deadline_ms == 25000
    assert not suspicion.confirm("accuser")  # our own rumour coming back is not news
    assert suspicion.confirm("b")
    expected = 1000 + int(24000 - math.log(2) / math.log(4) * 20000)
    assert suspicion.deadline_ms == expected
    assert not suspicion.confirm("b")
    assert suspicion.confirm("c") and suspicion.confirm("d")
    assert suspicion.deadline_ms == 5000
    assert not suspicion.confirm("e")  # k reached: nothing more to learn


def test_awareness_is_clamped_and_scales_timeouts() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(-3)
    assert awareness.score == 0 and awareness.scale_ms(500) == 500
    awareness.apply_delta(100)
    assert awareness.score == 7 and awareness.scale_ms(500) == 4000
    awareness.apply_delta(-1)
    assert awareness.scale_ms(1000) == 7000


def test_retransmit_limit_grows_with_log_of_cluster() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 100) == 12


def test_queue_newer_update_replaces_older_and_fresh_go_first() -> None:
    queue = BroadcastQueue(length_max=10)
    queue.put("a", b"a1" * 10)
    queue.put("b", b"b1" * 10)
    queue.put("a", b"a2" * 10)
    assert len(queue) == 2
    assert queue.take(1000, transmit_limit=3) == [b"a2" * 10, b"b1" * 10]
    queue.put("c", b"c1" * 10)
    assert queue.take(1000, transmit_limit=3)[0] == b"c1" * 10  # least transmitted first
    assert queue.take(25, transmit_limit=3) == [b"c1" * 10]  # only one fits the budget


def test_queue_forgets_after_the_transmit_limit_and_is_bounded() -> None:
    queue = BroadcastQueue(length_max=3)
    queue.put("a", b"x" * 20)
    for _ in range(4):
        assert queue.take(1000, transmit_limit=4) == [b"x" * 20]
    assert queue.take(1000, transmit_limit=4) == [] and len(queue) == 0
    for key in "abcd":
        queue.put(key, key.encode() * 20)
    assert len(queue) == 3 and queue.dropped == 1


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.binary(min_size=16, max_size=80))))
def test_queue_matches_a_model_of_latest_update_per_member(puts: list) -> None:
    queue = BroadcastQueue(length_max=100)
    latest: dict[str, bytes] = {}
    for key, encoded in puts:
        queue.put(key, encoded)
        latest[key] = encoded
    taken = queue.take(10_000, transmit_limit=1)
    assert sorted(taken) == sorted(latest.values())
    assert len(queue) == 0


def test_push_pull_chance_keeps_rows_per_node_flat_above_the_threshold() -> None:
    assert push_pull_chance(1, 10) == 1.0 and push_pull_chance(10, 10) == 1.0
    assert push_pull_chance(20, 10) == 0.5 and push_pull_chance(100, 10) == 0.1


@settings(max_examples=100)
@given(st.integers(0, 10_000), st.integers(1, 100))
def test_push_pull_rows_per_period_are_those_of_the_threshold_cluster(
    members: int, threshold: int
) -> None:
    """A sync sends ``members`` rows: expected rows per base period = min(members, N0)."""
    chance = push_pull_chance(members, threshold)
    assert 0.0 < chance <= 1.0
    assert members * chance == pytest.approx(min(members, threshold))


def test_suspicion_invariants_hold_through_confirmations_and_catch_corruption() -> None:
    suspicion = Suspicion("accuser", started_ms=1000, k=3, min_ms=4000, max_ms=24000)
    suspicion.check_invariants()
    for confirmer in "bcde":  # the last one is refused: k reached
        suspicion.confirm(confirmer)
        suspicion.check_invariants()
    Suspicion("a", 0, 0, 4000, 4000).check_invariants()  # plain SWIM: fixed timeout
    suspicion.confirmers.add("f")  # one more than k, behind confirm()'s back
    with pytest.raises(InvariantViolation, match="4 confirmations, more than k = 3"):
        suspicion.check_invariants()
    fixed = Suspicion("a", 0, 0, 4000, 4000)
    fixed.confirmers.add("b")
    with pytest.raises(InvariantViolation, match="more than k = 0"):
        fixed.check_invariants()
    empty = Suspicion("a", 0, 3, 4000, 24000)
    empty.confirmers.clear()
    with pytest.raises(InvariantViolation, match="holds 0 confirmers"):
        empty.check_invariants()
    crowded = Suspicion("a", 0, 100, 4000, 24000)
    crowded.confirmers.update(f"c{i}" for i in range(CONFIRMATIONS_MAX))
    with pytest.raises(InvariantViolation, match=f"holds {CONFIRMATIONS_MAX + 1} confirmers"):
        crowded.check_invariants()
    for min_ms, max_ms in ((0, 0), (5000, 4000)):
        bounds = Suspicion("a", 0, 3, 4000, 24000)
        bounds.min_ms, bounds.max_ms = min_ms, max_ms
        with pytest.raises(InvariantViolation, match="timeout bounds"):
            bounds.check_invariants()
    late = Suspicion("a", 1000, 3, 4000, 24000)
    late.deadline_ms -= 1
    with pytest.raises(InvariantViolation, match="expected 1000 \\+ 24000 ms for 0"):
        late.check_invariants()


def test_awareness_invariants_hold_at_both_clamps_and_catch_corruption() -> None:
    awareness = Awareness(3)
    for delta in (-5, 1, 1, 1, 9):
        awareness.apply_delta(delta)
        awareness.check_invariants()
    assert awareness.score == 2
    for score in (-1, 3):
        awareness.score = score
        with pytest.raises(InvariantViolation, match=f"score {score} outside \\[0, 2\\]"):
            awareness.check_invariants()


def test_queue_invariants_hold_through_puts_drops_and_takes_and_catch_corruption() -> None:
    queue = BroadcastQueue(length_max=2)
    queue.check_invariants()
    for key in "abcab":
        queue.put(key, key.encode() * 20)
        queue.check_invariants()
    queue.take(1000, transmit_limit=2)
    queue.check_invariants()
    corruptions = {
        "negative transmits": lambda q, item: setattr(item, "transmits", -1),
        "order from the future": lambda q, item: setattr(item, "order", q._order + 1),
        "order never issued": lambda q, item: setattr(item, "order", 0),
        "wrong key": lambda q, item: setattr(item, "key", "zz"),
    }
    for corrupt in corruptions.values():
        broken = BroadcastQueue(length_max=2)
        broken.put("a", b"a" * 20)
        corrupt(broken, broken._items["a"])
        with pytest.raises(InvariantViolation, match="filed under 'a'"):
            broken.check_invariants()
    queue.dropped = -1
    with pytest.raises(InvariantViolation, match="dropped count is -1"):
        queue.check_invariants()
    queue.dropped = 0
    queue.length_max = 0
    with pytest.raises(InvariantViolation, match="holds 2 updates, bound 0"):
        queue.check_invariants()


# --------------------------------------------------------------------------------------------
# The core's mechanisms driven by hand: one core, signed datagrams in, its outbox and counters
# out. Each pins a detail a whole-cluster run does not see (found by mutation testing,
# docs/mutation-membership.md).

KEY = b"k" * 32
SELF = "127.0.0.1:7000"
PEER = "127.0.0.1:7001"
OTHER = "127.0.0.1:7002"


def _core(config: MembershipConfig | None = None, seeds: tuple[str, ...] = ()) -> Membership:
    config = config or MembershipConfig.lan()
    return Membership(SELF, "me", config, random.Random(1), Keyring(KEY), 0, seeds)


def _send(core: Membership, now_ms: int, *messages: object, source: str = PEER) -> None:
    payload = encode_packet(Keyring(KEY), [encode_message(m) for m in messages])
    core.handle(source, Channel.DATAGRAM, payload, now_ms)
    core.check_invariants()


def _sent(core: Membership) -> list[tuple[str, object]]:
    return [
        (out.destination, message)
        for out in core.take_outbox()
        if out.channel is Channel.DATAGRAM
        for message in decode_packet(Keyring(KEY), out.payload)
    ]


def test_stats_report_the_gauges_with_the_counters() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1), Alive("q", OTHER, 1))
    _send(core, 2, Dead("q", 1, "x"))
    stats = core.stats()
    assert stats["local_health"] == 0 and stats["members_live"] == 2
    assert stats["members_known"] == 3 and stats["broadcast_queue"] == 3
    assert stats["broadcast_dropped"] == 0 and stats["declared_dead"] == 1


def test_leave_reaches_the_recently_dead_too_and_freezes_the_core() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1))
    _send(core, 2, Dead("p", 1, "x"))  # dead 2 ms ago: still gossiped to, so it can refute
    core.take_outbox()
    core.leave(5)
    assert (PEER, Leave("me", 0)) in _sent(core)
    me = [m for m in core.members() if m.node_id == "me"][0]
    assert me.state is MemberState.LEFT and me.since_ms == 5
    assert core.stats()["leaves"] == 1 and core.next_deadline_ms() is None
    core.check_invariants()
    core.leave(6)  # twice is once
    assert core.stats()["leaves"] == 1


def test_a_failed_stream_frees_its_push_pull_and_is_counted_once() -> None:
    core = _core(seeds=(PEER,))
    core.tick(0)
    assert [o.destination for o in core.take_outbox() if o.channel is Channel.STREAM] == [PEER]
    core.stream_failed(OTHER, 1)  # no exchange with that peer: nothing to count
    assert "push_pull_failed" not in core.stats()
    core.stream_failed(PEER, 1)
    core.stream_failed(PEER, 2)
    assert core.stats()["push_pull_failed"] == 1
    streams: list[str] = []
    while not streams:  # the slot is free again: the next join attempt contacts the seed
        core.tick(core.next_deadline_ms())
        streams = [o.destination for o in core.take_outbox() if o.channel is Channel.STREAM]
    assert streams == [PEER] and core.stats()["join_attempts"] == 2


def test_ping_req_relays_to_the_target_and_nacks_at_its_fraction() -> None:
    core = _core()
    _send(core, 100, PingReq(7, "t", OTHER, True))
    [(destination, ping)] = [(d, m) for d, m in _sent(core) if isinstance(m, Ping)]
    assert destination == OTHER and ping.target_id == "t"
    nack_at = 100 + int(0.8 * core.config.indirect_probe_timeout_ms)
    assert core.next_deadline_ms() == nack_at
    core.tick(nack_at - 1)
    assert _sent(core) == []
    core.tick(nack_at)
    assert [(d, m) for d, m in _sent(core) if not isinstance(m, Alive)] == [(PEER, Nack(7))]
    core.check_invariants()


def test_ping_reqs_relayed_at_once_are_bounded() -> None:
    core = _core()
    for seq in range(FORWARDS_MAX + 1):
        _send(core, 1, PingReq(seq, "t", OTHER, False))
    stats = core.stats()
    assert stats["ping_req_relayed"] == FORWARDS_MAX and stats["drop_forwards_full"] == 1


def test_leave_and_dead_are_queued_under_the_member_and_replaced_by_news() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1), Alive("q", OTHER, 1))
    queued = core.stats()["broadcast_queue"]
    _send(core, 2, Leave("p", 1), Dead("q", 1, "x"))
    assert core.stats()["broadcast_queue"] == queued  # each replaced the member's alive
    events = core.take_events()[-2:]
    assert [(e.kind, e.node_id, e.incarnation, e.now_ms) for e in events] == [
        (EventKind.LEFT, "p", 1, 2),
        (EventKind.DEAD, "q", 1, 2),
    ]
    _send(core, 3, Ping(1, "me"))
    gossip = [m for _, m in _sent(core)]
    assert Leave("p", 1) in gossip and Dead("q", 1, "me") in gossip


def test_refutation_is_one_above_the_accusation_and_gossiped_once() -> None:
    core = _core()
    _send(core, 1, Suspect("me", 0, "x"))
    assert core.incarnation == 1
    _send(core, 1, Suspect("me", 4, "x"))  # above anything we ever had: read as ours + 1
    assert core.incarnation == 3 and core.stats()["claims_capped"] == 1
    _send(core, 2, Ping(1, "me"))
    about_me = [m for _, m in _sent(core) if isinstance(m, Alive) and m.node_id == "me"]
    assert about_me == [Alive("me", SELF, 3, b"")]  # the refutation replaced the first alive
    _send(core, 3, Dead("me", INCARNATION_LIMIT - 1, "x"))
    assert core.incarnation == 5  # the end of the space moves us by 2, not to the end
    # ... and the sender, which may now hold us dead, hears our word from our address at once.
    assert (PEER, Alive("me", SELF, 5, b"")) in _sent(core)


def test_tombstones_are_reclaimed_on_the_quarter_period_cadence() -> None:
    config = MembershipConfig.lan()  # dead_node_reclaim_ms = 60 s: a sweep at 60 s, then every 15 s
    core = _core(config)
    _send(core, 1, Alive("p", PEER, 1))
    _send(core, 15_000, Dead("p", 1, "x"))
    for now_ms in (60_000, 74_999):
        core.tick(now_ms)
        assert "p" in {m.node_id for m in core.members()}
    core.tick(75_000)  # exactly dead_node_reclaim_ms after the death
    assert "p" not in {m.node_id for m in core.members()}
    assert core.stats()["reclaimed"] == 1
    core.check_invariants()


def test_a_full_member_table_is_consistent_and_makes_room_from_the_unconfirmed() -> None:
    unbounded = MembershipConfig.lan().replace(
        broadcast_queue_max=2 * MEMBERS_MAX,
        new_members_per_packet_max=MEMBERS_MAX,
        new_members_burst=MEMBERS_MAX,
    )
    core = _core(unbounded)
    rows = tuple(
        NodeState(f"n{i}", f"10.0.{i // 250}.{i % 250}:7946", 1, STATE_ALIVE, b"")
        for i in range(MEMBERS_MAX - 1)
    )
    packet = encode_packet(Keyring(KEY), [encode_message(PushPull(False, False, rows))], True)
    core.handle(PEER, Channel.STREAM, packet, 1)
    stats = core.stats()
    assert stats["members_known"] == MEMBERS_MAX
    assert stats["members_unconfirmed"] == MEMBERS_MAX - 1  # none of them ever spoke to us
    core.check_invariants()
    core.take_events()
    _send(core, 2, Alive("one-more", OTHER, 1), source=OTHER)  # a real node, from its address
    assert [(e.kind, e.node_id) for e in core.take_events()] == [
        (EventKind.EVICTED, "n0"),  # the oldest unconfirmed member
        (EventKind.JOINED, "one-more"),
    ]
    assert core.stats()["members_known"] == MEMBERS_MAX and core.stats()["evicted"] == 1


def test_a_table_full_of_confirmed_members_refuses_more(monkeypatch) -> None:
    monkeypatch.setattr(core_module, "MEMBERS_MAX", 3)
    core = _core()
    for address in (PEER, OTHER):
        _send(core, 1, Alive(address, address, 1), source=address)
    _send(core, 2, Alive("one-more", "127.0.0.1:7003", 1))
    assert core.stats()["drop_members_full"] == 1 and core.stats()["members_known"] == 3


def test_suspicion_bounds_are_inclusive() -> None:
    Suspicion("a", 0, 0, 1, 1).check_invariants()  # the shortest timeout a config can give
    crowded = Suspicion("a", 0, 100, 4000, 24000)
    for i in range(CONFIRMATIONS_MAX - 1):
        assert crowded.confirm(f"c{i}")
    assert len(crowded.confirmers) == CONFIRMATIONS_MAX
    crowded.check_invariants()
    deadline = crowded.deadline_ms
    assert not crowded.confirm("one-too-many")  # remembered confirmers are bounded
    assert len(crowded.confirmers) == CONFIRMATIONS_MAX and crowded.deadline_ms == deadline


def _addr(i: int) -> str:
    return f"127.0.0.1:{7100 + i}"


def _core_with(
    members: int, config: MembershipConfig | None = None, meta: bytes = b""
) -> tuple[Membership, dict[str, str]]:
    """A core that knows ``members`` alive peers m0.. (their id -> address), each confirmed:
    it announced itself from its own address."""
    config = config or MembershipConfig.lan()
    core = Membership(SELF, "me", config, random.Random(3), Keyring(KEY), 0, meta=meta)
    peers = {f"m{i}": _addr(i) for i in range(members)}
    for node_id, address in peers.items():
        _send(core, 1, Alive(node_id, address, 1), source=address)
    core.take_outbox()
    return core, peers


def _next_ping(core: Membership) -> tuple[int, str, list[object]]:
    """Tick from deadline to deadline until a probe goes out: (time, destination, messages)."""
    for _ in range(100):
        now_ms = core.next_deadline_ms()
        core.tick(now_ms)
        core.check_invariants()
        for out in core.take_outbox():
            messages = decode_packet(Keyring(KEY), out.payload)
            if any(isinstance(m, Ping) for m in messages):
                return now_ms, out.destination, messages
    raise AssertionError("no probe")


def test_stale_gossip_is_corrected_only_while_stale_and_with_the_meta() -> None:
    core = Membership(SELF, "me", MembershipConfig.lan(), random.Random(1), Keyring(KEY), 0)
    _send(core, 1, Alive("p", PEER, 5, b"meta"))
    core.take_outbox()
    for stale in (Suspect("p", 4, "x"), Dead("p", 4, "x")):  # already refuted: tell the sender
        _send(core, 2, stale, source=OTHER)
        corrections = [
            m for d, m in _sent(core) if d == OTHER and isinstance(m, Alive) and m.node_id == "p"
        ]
        assert corrections and set(corrections) == {Alive("p", PEER, 5, b"meta")}
    assert core.stats()["stale_corrected"] == 2
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.ALIVE
    _send(core, 3, Suspect("p", 5, "x"), source=OTHER)  # current: applied, not corrected
    assert core.stats()["stale_corrected"] == 2
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.SUSPECT
    _send(core, 4, Dead("p", 4, "x"), source=OTHER)  # stale, but p is no longer plainly alive
    assert core.stats()["stale_corrected"] == 2


def test_suspicion_counts_confirmers_other_than_the_accuser() -> None:
    core, _ = _core_with(6)
    _send(core, 2, Suspect("m1", 1, "a"))
    assert core.stats()["suspicions"] == 1
    deadline = core._suspicions["m1"].deadline_ms
    _send(core, 3, Suspect("m1", 1, "a"))  # the accuser repeating itself confirms nothing
    assert "suspicion_confirmations" not in core.stats()
    assert core._suspicions["m1"].deadline_ms == deadline
    queued = core.stats()["broadcast_queue"]
    _send(core, 4, Suspect("m1", 1, "b"))
    assert core.stats()["suspicion_confirmations"] == 1
    assert core._suspicions["m1"].deadline_ms < deadline
    assert core.stats()["broadcast_queue"] == queued  # the confirmation replaced the suspicion
    _send(core, 5, Alive("m1", _addr(1), 2))  # refuted: the alive replaces it again
    assert core.stats()["broadcast_queue"] == queued


def test_a_stale_suspicion_of_ourselves_regossips_our_alive_with_meta() -> None:
    core, _ = _core_with(2, meta=b"zone-a")
    _send(core, 2, Suspect("me", 1, "x"))
    _send(core, 2, Suspect("me", 2, "x"))
    assert core.incarnation == 3
    _send(core, 3, Suspect("me", 1, "y"))  # older than our refutation
    assert core.stats()["refutations_repeated"] == 1
    _send(core, 4, Ping(9, "me"))
    about_me = [m for _, m in _sent(core) if isinstance(m, Alive) and m.node_id == "me"]
    assert about_me == [Alive("me", SELF, 3, b"zone-a")]


def _run_until(
    core: Membership, end_ms: int, source_of_nacks: int = 0, ack: bool = False
) -> list[tuple[str, object]]:
    """Tick every deadline up to ``end_ms``; the first ``source_of_nacks`` helpers asked by a
    ping-req answer with a nack at once; with ``ack`` every probe is acked at once. Returns
    what was sent (destination, message)."""
    sent: list[tuple[str, object]] = []
    while (deadline := core.next_deadline_ms()) <= end_ms:
        core.tick(deadline)
        core.check_invariants()
        new = _sent(core)
        sent += new
        asked = [(d, m) for d, m in new if isinstance(m, PingReq)]
        for helper, request in asked[:source_of_nacks]:
            _send(core, deadline, Nack(request.seq), source=helper)
        for destination, message in new:
            if ack and isinstance(message, Ping):
                _send(core, deadline, Ack(message.seq), source=destination)
    return sent


def _probe_times(core: Membership, start_ms: int) -> tuple[int, int]:
    config = core.config
    direct_ms = start_ms + core._awareness.scale_ms(config.probe_timeout_ms)
    return direct_ms, direct_ms + core._awareness.scale_ms(config.indirect_probe_timeout_ms)


def test_a_new_suspect_is_probed_next_with_the_suspicion_first() -> None:
    core, peers = _core_with(8)
    for node_id in ("m6", "m2", "m4"):
        now_ms, _, messages = _next_ping(core)
        ping = next(m for m in messages if isinstance(m, Ping))
        _send(core, now_ms + 1, Ack(ping.seq), Suspect(node_id, 1, "a"))
        _, destination, messages = _next_ping(core)
        assert destination == peers[node_id]
        assert messages[:2] == [Suspect(node_id, 1, "me"), Ping(messages[1].seq, node_id)]
        _send(core, now_ms + 2, Ack(messages[1].seq), Alive(node_id, peers[node_id], 2))


def test_local_health_counts_missing_nacks_or_one_without_helpers() -> None:
    core, _ = _core_with(5)
    start_ms, _, _ = _next_ping(core)
    sent = _run_until(core, _probe_times(core, start_ms)[1], source_of_nacks=3)
    assert len([m for _, m in sent if isinstance(m, PingReq)]) == 3
    assert core.stats()["ping_reqs"] == 3 and core.stats()["probe_failed"] == 1
    assert core.local_health == 0  # every helper answered: the target is the problem
    start_ms, _, _ = _next_ping(core)
    _run_until(core, _probe_times(core, start_ms)[1], source_of_nacks=1)
    assert core.stats()["probe_failed"] == 2
    assert core.local_health == 2  # two nacks missing
    alone, _ = _core_with(1)
    start_ms, _, _ = _next_ping(alone)
    _run_until(alone, _probe_times(alone, start_ms)[1])
    assert alone.stats()["probe_failed"] == 1 and alone.stats()["ping_reqs"] == 0
    assert alone.local_health == 1


def test_ping_reqs_go_to_alive_helpers_only() -> None:
    core, peers = _core_with(4)
    start_ms, _, messages = _next_ping(core)
    target_id = next(m.target_id for m in messages if isinstance(m, Ping))
    others = [i for i in peers if i != target_id]
    _send(core, start_ms + 1, Suspect(others[0], 1, "a"), Suspect(others[1], 1, "a"))
    sent = _run_until(core, _probe_times(core, start_ms)[0])
    assert [d for d, m in sent if isinstance(m, PingReq)] == [peers[others[2]]]


def test_no_ping_reqs_for_a_target_that_died_meanwhile() -> None:
    core, _ = _core_with(4)
    start_ms, _, messages = _next_ping(core)
    target_id = next(m.target_id for m in messages if isinstance(m, Ping))
    _send(core, start_ms + 1, Dead(target_id, 1, "a"))
    sent = _run_until(core, _probe_times(core, start_ms)[1])
    assert not any(isinstance(m, PingReq) for _, m in sent)
    assert "ping_reqs" not in core.stats() and core.stats()["probe_failed"] == 1


def test_a_target_reclaimed_while_probed_ends_the_probe_quietly() -> None:
    config = MembershipConfig.lan().replace(dead_node_reclaim_ms=0)
    core, _ = _core_with(3, config)
    start_ms, _, messages = _next_ping(core)
    target_id = next(m.target_id for m in messages if isinstance(m, Ping))
    _send(core, start_ms + 1, Dead(target_id, 1, "a"))
    core.tick(start_ms + 2)  # the sweep runs on every tick with a zero retention
    assert target_id not in {m.node_id for m in core.members()}
    _run_until(core, _probe_times(core, start_ms)[1])
    assert core.stats()["probe_failed"] == 1 and "suspicions" not in core.stats()


def test_plain_swim_expects_no_nacks() -> None:
    config = MembershipConfig.lan().replace(lifeguard=False, indirect_checks=0)
    core, _ = _core_with(2, config)
    start_ms, _, _ = _next_ping(core)
    _run_until(core, _probe_times(core, start_ms)[1])  # checks: expected nacks <= helpers asked
    assert core.stats()["probe_failed"] == 1
    assert core.local_health == 0


def test_members_snapshot_carries_since_and_meta() -> None:
    core = Membership(SELF, "me", MembershipConfig.lan(), random.Random(1), Keyring(KEY), 0)
    _send(core, 7, Alive("p", PEER, 2, b"rack-3"))
    assert core.members()[1] == MemberInfo("p", PEER, MemberState.ALIVE, 2, 7, b"rack-3")


def test_no_expected_confirmations_without_enough_confirmers_or_mult() -> None:
    assert expected_confirmations(2, 10) == 0 and expected_confirmations(1, 10) == 0
    assert expected_confirmations(3, 3) == 1 and expected_confirmations(3, 2) == 0


def test_a_timely_ack_lowers_local_health_by_one_up_to_the_direct_deadline() -> None:
    core, _ = _core_with(3)
    core._awareness.apply_delta(2)
    start_ms, _, messages = _next_ping(core)
    ping = next(m for m in messages if isinstance(m, Ping))
    direct_ms, _ = _probe_times(core, start_ms)
    _send(core, direct_ms, Ack(ping.seq))  # at the deadline is still in time
    assert core.local_health == 1 and core.stats()["probe_acked"] == 1
    start_ms, _, messages = _next_ping(core)
    ping = next(m for m in messages if isinstance(m, Ping))
    direct_ms, _ = _probe_times(core, start_ms)
    _run_until(core, direct_ms)
    _send(core, direct_ms + 1, Ack(ping.seq))  # late (a helper's): no credit
    assert core.local_health == 1 and core.stats()["probe_acked"] == 2
    _send(core, direct_ms + 2, Ack(ping.seq))  # answered already
    assert core.stats()["ack_stale"] == 1


def test_a_suspect_that_acks_without_refuting_is_probed_again() -> None:
    core, peers = _core_with(6)
    now_ms, _, messages = _next_ping(core)
    ping = next(m for m in messages if isinstance(m, Ping))
    _send(core, now_ms + 1, Ack(ping.seq), Suspect("m3", 1, "a"))
    for _ in range(2):  # it answers, but its refutation never reaches us
        _, destination, messages = _next_ping(core)
        assert destination == peers["m3"]
        _send(core, core.next_deadline_ms() - 1, Ack(messages[1].seq))


def test_a_relayed_ping_req_returns_the_targets_ack_to_the_requester() -> None:
    core = _core()
    _send(core, 100, PingReq(41, "t", OTHER, False), source=PEER)
    [relay] = [m for d, m in _sent(core) if isinstance(m, Ping)]
    _send(core, 110, Ack(relay.seq), source=OTHER)
    assert [(d, m) for d, m in _sent(core) if isinstance(m, Ack)] == [(PEER, Ack(41))]
    _send(core, 111, Ack(relay.seq), source=OTHER)  # relayed once only
    assert core.stats()["ack_stale"] == 1


def test_a_live_member_keeps_its_address_and_a_dead_one_may_move() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1))
    _send(core, 2, Alive("p", OTHER, 2))  # a live record does not move
    assert core.stats()["drop_address_conflict"] == 1
    assert core.members()[1].address == PEER
    _send(core, 3, Dead("p", 1, "x"))
    _send(core, 4, Alive("p", OTHER, 3))  # restarted elsewhere
    assert (core.members()[1].address, core.members()[1].state) == (OTHER, MemberState.ALIVE)


def test_claims_about_ourselves_are_out_voted() -> None:
    core = _core()
    _send(core, 1, Alive("me", SELF, 0))  # our own announcement echoed back
    assert core.incarnation == 0
    # A previous life with a higher incarnation: read as ours + 1 (a claim we cannot check moves
    # us by 2 at most); a node still holding 5 takes our word from our own address.
    _send(core, 2, Alive("me", SELF, 5))
    assert core.incarnation == 2
    _send(core, 3, Alive("me", "twin:1", 2))  # same incarnation elsewhere: a twin
    assert core.incarnation == 3
    _send(core, 4, Alive("me", "twin:1", 1))  # older: already out-voted
    assert core.incarnation == 3 and core.stats()["refutations"] == 2


def test_a_member_revived_after_the_probe_order_emptied_is_probed() -> None:
    core, peers = _core_with(1)
    _send(core, 2, Dead("m0", 1, "x"))
    for _ in range(5):  # the probe order is rebuilt with no live member in it
        core.tick(core.next_deadline_ms())
        core.check_invariants()
    assert core._probe_order == []
    _send(core, core.next_deadline_ms(), Alive("m0", peers["m0"], 2))
    _, destination, _ = _next_ping(core)
    assert destination == peers["m0"]


def test_one_live_member_per_address_the_newer_incarnation_wins() -> None:
    core = _core()
    _send(core, 1, Alive("old", PEER, 5))
    # Relayed (from OTHER): a new id takes the address only with a higher incarnation.
    _send(core, 2, Alive("new", PEER, 5), Alive("newer", PEER, 4), source=OTHER)
    assert core.stats()["drop_address_conflict"] == 2
    _send(core, 3, Alive("restarted", PEER, 6), source=OTHER)  # a restart: the old one died
    view = {m.node_id: (m.state, m.since_ms) for m in core.members()}
    assert view["old"] == (MemberState.DEAD, 3) and view["restarted"] == (MemberState.ALIVE, 3)
    events = [(e.kind, e.node_id, e.now_ms) for e in core.take_events()]
    assert events[-2:] == [(EventKind.DEAD, "old", 3), (EventKind.JOINED, "restarted", 3)]
    _send(core, 4, Alive("usurper", SELF, 10**6))  # our own address is never given away
    assert "usurper" not in {m.node_id for m in core.members()}
    assert core.stats()["drop_address_conflict"] == 3
    # The process speaking from the address owns it, whatever incarnation a (forged) relayed
    # claim gave the holder: otherwise one forged alive would lock a node out of its address.
    _send(core, 5, Alive("speaker", PEER, 1), source=PEER)
    view = {m.node_id: m.state for m in core.members()}
    assert view["speaker"] is MemberState.ALIVE and view["restarted"] is MemberState.DEAD


def test_a_dead_member_comes_back_only_to_a_free_address() -> None:
    core = _core()
    _send(core, 1, Alive("p", OTHER, 1), Alive("q", PEER, 5))
    _send(core, 2, Dead("p", 1, "x"))
    _send(core, 3, Alive("p", PEER, 2), source=OTHER)  # q holds PEER, higher incarnation
    assert core.stats()["drop_address_conflict"] == 1
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.DEAD


def test_returning_members_are_joined_and_refuting_ones_alive_in_the_events() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1), Alive("q", OTHER, 1))
    queued = core.stats()["broadcast_queue"]
    _send(core, 2, Dead("p", 1, "x"), Suspect("q", 1, "x"))
    _send(core, 3, Alive("p", PEER, 2), Alive("q", OTHER, 2))
    assert core.stats()["broadcast_queue"] == queued  # each news replaced the member's last
    events = [(e.kind, e.node_id, e.incarnation, e.now_ms) for e in core.take_events()]
    assert events[-2:] == [(EventKind.JOINED, "p", 2, 3), (EventKind.ALIVE, "q", 2, 3)]


def _stream(core: Membership, now_ms: int, message: PushPull, source: str = PEER) -> None:
    payload = encode_packet(Keyring(KEY), [encode_message(message)], True)
    core.handle(source, Channel.STREAM, payload, now_ms)
    core.check_invariants()


def test_a_join_reply_ends_the_join_and_its_exchange() -> None:
    core = _core(seeds=(PEER,))
    core.tick(0)
    core.take_outbox()
    assert core.is_joining is True
    rows = (
        NodeState("p", PEER, 1, STATE_ALIVE, b"meta"),
        NodeState("gone", OTHER, 4, 3, b""),  # left
    )
    _stream(core, 5, PushPull(True, False, rows))
    assert core.is_joining is False
    stats = core.stats()
    assert stats["joined"] == 1 and stats["push_pull_merged"] == 1
    assert core.take_outbox() == []  # a reply is not answered
    core.stream_failed(PEER, 6)  # the exchange is over: nothing left to fail
    assert "push_pull_failed" not in core.stats()
    members = {m.node_id: m for m in core.members()}
    assert members["p"] == MemberInfo("p", PEER, MemberState.ALIVE, 1, 5, b"meta")
    assert "gone" not in members  # a leave about a stranger teaches nothing
    _stream(core, 7, PushPull(True, False, ()), source=OTHER)  # an unasked reply: merged
    assert core.stats()["push_pull_merged"] == 2 and core.stats()["joined"] == 1


def test_a_push_pull_is_answered_with_our_table_after_merging() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1), Alive("q", OTHER, 1))
    core.take_outbox()
    _stream(core, 2, PushPull(False, True, (NodeState("q", OTHER, 1, 3, b""),)))
    [out] = core.take_outbox()
    assert (out.destination, out.channel) == (PEER, Channel.STREAM)
    [reply] = decode_packet(Keyring(KEY), out.payload, stream=True)
    assert (reply.reply, reply.join) == (True, False)
    states = {s.node_id: s.state for s in reply.states}
    assert states == {"me": STATE_ALIVE, "p": STATE_ALIVE, "q": 3}  # q's leave merged first
    left = [(e.kind, e.node_id, e.now_ms) for e in core.take_events() if e.node_id == "q"]
    assert left[-1] == (EventKind.LEFT, "q", 2)


def test_dead_rows_of_a_push_pull_become_suspicions_here() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1))
    _stream(core, 2, PushPull(True, False, (NodeState("p", PEER, 1, 2, b""),)))
    assert {m.node_id: m.state for m in core.members()}["p"] is MemberState.SUSPECT


def test_dead_members_are_never_probed_and_the_live_one_every_period() -> None:
    core, peers = _core_with(5)
    _send(core, 2, *(Dead(f"m{i}", 1, "x") for i in range(4)))  # only m4 is left alive
    probes = []
    start_ms = core.next_deadline_ms()
    sent = _run_until(core, start_ms + 10 * core.config.probe_interval_ms - 1, ack=True)
    for destination, message in sent:
        if isinstance(message, Ping):
            probes.append((destination, message.target_id))
    assert probes == [(peers["m4"], "m4")] * 10 and core.stats()["probes"] == 10


def test_gossip_rounds_reach_gossip_nodes_peers_and_the_recently_dead() -> None:
    core, peers = _core_with(6)
    _send(core, 2, Dead("m5", 1, "x"))  # recently dead: still gossiped to
    reached: set[str] = set()
    rounds = 0
    end_ms = core.next_deadline_ms() + 3_000
    while (deadline := core.next_deadline_ms()) <= end_ms:
        core.tick(deadline)
        batch = {
            out.destination
            for out in core.take_outbox()
            if not any(isinstance(m, Ping) for m in decode_packet(Keyring(KEY), out.payload))
        }
        if batch:
            rounds += 1
            assert len(batch) == core.config.gossip_nodes or not len(core._broadcasts)
            reached |= batch
        if not len(core._broadcasts):
            break
    assert rounds >= 1 and peers["m5"] in reached


def test_periodic_push_pull_goes_to_an_alive_member_and_times_out() -> None:
    config = MembershipConfig.lan()
    core, peers = _core_with(6, config)
    _send(core, 2, *(Suspect(f"m{i}", 1, "x") for i in range(5)))  # suspects are no partners
    end_ms = 4 * config.push_pull_interval_ms
    streams = []
    while (deadline := core.next_deadline_ms()) <= end_ms:
        core.tick(deadline)
        core.check_invariants()
        state_at = {m.address: m.state for m in core.members()}
        for out in core.take_outbox():
            if out.channel is Channel.STREAM:  # to the alive one, or a dead one (heal): never
                streams.append(out.destination)  # to a suspect
                assert state_at[out.destination] is not MemberState.SUSPECT
    assert peers["m5"] in streams
    assert core.stats()["push_pull_timeout"] >= 1  # nobody answered


def test_push_pull_thins_out_only_once_the_view_is_quiet() -> None:
    config = MembershipConfig.lan().replace(push_pull_interval_ms=2_000)
    core, _ = _core_with(4 * config.push_pull_scale_threshold, config)
    half_ms = config.push_pull_interval_ms // 2
    now_ms = 0
    for i in range(20):  # a member joins every half period: the view keeps moving
        now_ms += half_ms
        _run_until(core, now_ms, ack=True)
        _send(core, now_ms, Alive(f"new{i}", f"10.9.9.{i}:7946", 1))
    started = core.stats()["push_pull_started"]
    assert started >= 9 and "push_pull_skipped" not in core.stats()
    _run_until(core, now_ms + 30 * config.push_pull_interval_ms, ack=True)  # quiet from here
    assert core.stats()["push_pull_skipped"] >= 10
    assert core.stats()["push_pull_started"] > started  # thinned, not stopped


def test_a_probe_may_end_exactly_when_the_next_begins() -> None:
    config = MembershipConfig.lan().replace(probe_timeout_ms=600, indirect_probe_timeout_ms=400)
    core, _ = _core_with(3, config)
    _run_until(core, 4 * config.probe_interval_ms, ack=True)
    assert core.stats()["probes"] == 4 and core.stats()["probe_acked"] == 4


def test_counters_name_the_traffic() -> None:
    core = _core(seeds=(PEER,))
    core.tick(0)  # a join: one push-pull stream out
    _send(core, 1, Ping(1, "me"), Ping(2, "someone-else"))
    _stream(core, 2, PushPull(True, False, ()))
    stats = core.stats()
    assert stats["push_pull_started"] == 1 and stats["stream_out"] == 1
    assert stats["stream_bytes_out"] > HEADER_SIZE_BYTES
    assert stats["datagrams_in"] == 1 and stats["stream_in"] == 1
    assert stats["datagrams_out"] == 1 and stats["datagram_bytes_out"] > HEADER_SIZE_BYTES
    assert stats["drop_wrong_target"] == 1
    core.leave(3)
    _send(core, 4, Ping(3, "me"))
    assert core.stats()["drop_stopped"] == 1


def test_identity_and_health_are_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="^invalid identity: malformed: meta is not bytes"):
        Membership(SELF, "me", MembershipConfig.lan(), random.Random(1), Keyring(KEY), 0,
                   meta=b"m" * 129)  # fmt: skip
    with pytest.raises(ValueError, match="^max_multiplier must be >= 1$"):
        Awareness(0)
    assert Awareness(1).scale_ms(100) == 100
    core = Membership(SELF, "me", MembershipConfig.lan(), random.Random(1), Keyring(KEY), 42,
                      meta=b"zone")  # fmt: skip
    assert core.members()[0] == MemberInfo("me", SELF, MemberState.ALIVE, 0, 42, b"zone")
    _send(core, 43, Ping(1, "me"))
    assert Alive("me", SELF, 0, b"zone") in [m for _, m in _sent(core)]


def test_events_beyond_the_bound_drop_the_oldest() -> None:
    core = _core()
    core._events = list(range(EVENTS_MAX))
    _send(core, 1, Alive("p", PEER, 1))
    events = core.take_events()
    assert len(events) == EVENTS_MAX and events[:2] == [1, 2] and events[-1].node_id == "p"
    assert core._events == [] and core.stats()["events_dropped"] == 1


def test_dead_members_get_a_push_pull_to_heal_partitions() -> None:
    core, peers = _core_with(1)
    _send(core, 2, Dead("m0", 1, "x"))
    streams = []
    while not streams and core.next_deadline_ms() <= core.config.push_pull_interval_ms:
        core.tick(core.next_deadline_ms())
        streams = [o for o in core.take_outbox() if o.channel is Channel.STREAM]
    assert [o.destination for o in streams] == [peers["m0"]]
    [message] = decode_packet(Keyring(KEY), streams[0].payload, stream=True)
    assert (message.reply, message.join) == (False, False)


def test_alone_with_seeds_the_core_rejoins_with_join_exchanges() -> None:
    config = MembershipConfig.lan()
    core = Membership(SELF, "me", config, random.Random(1), Keyring(KEY), 0, [PEER])
    core.tick(0)
    core.take_outbox()
    _stream(core, 1, PushPull(True, False, (NodeState("p", OTHER, 1, STATE_ALIVE, b""),)))
    _send(core, 2, Dead("p", 1, "x"))  # everyone we knew is gone
    assert not core.is_joining
    joins = []
    while not joins and core.next_deadline_ms() <= 2 * config.push_pull_interval_ms:
        core.tick(core.next_deadline_ms())
        for out in core.take_outbox():
            if out.channel is Channel.STREAM and out.destination == PEER:
                [message] = decode_packet(Keyring(KEY), out.payload, stream=True)
                joins.append(message.join)
    assert core.is_joining and joins == [True]


def test_join_retries_back_off_doubling() -> None:
    config = MembershipConfig.lan()
    core = Membership(SELF, "me", config, random.Random(1), Keyring(KEY), 0, [PEER])
    attempts = []
    while len(attempts) < 5:
        now_ms = core.next_deadline_ms()
        core.tick(now_ms)
        for out in core.take_outbox():
            if out.channel is Channel.STREAM:
                [message] = decode_packet(Keyring(KEY), out.payload, stream=True)
                assert message.join
                attempts.append(now_ms)
                core.stream_failed(PEER, now_ms)  # the seed is not there
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps == [1000, 2000, 4000, 8000]


def test_gossip_to_the_dead_and_left_stops_after_its_window() -> None:
    config = MembershipConfig.lan().replace(gossip_to_the_dead_ms=1000)
    core, peers = _core_with(3, config)
    _send(core, 2, Dead("m0", 1, "x"), Leave("m1", 1))
    reached = set()
    for _ in range(10):  # within the window: a forged leave is heard (and refuted) too
        core.tick(min(core.next_deadline_ms(), 1001))
        reached |= {o.destination for o in core.take_outbox() if o.channel is Channel.DATAGRAM}
    assert {peers["m0"], peers["m1"]} <= reached
    core.tick(1002)  # exactly the window later: no longer gossiped to
    core.take_outbox()
    reached = set()
    for _ in range(40):
        core.tick(core.next_deadline_ms())
        reached |= {o.destination for o in core.take_outbox() if o.channel is Channel.DATAGRAM}
    assert peers["m0"] not in reached and peers["m1"] not in reached and peers["m2"] in reached


def test_push_pull_rows_carry_meta() -> None:
    core = _core()
    _send(core, 1, Alive("p", PEER, 1, b"rack-7"))
    _stream(core, 2, PushPull(False, False, ()))
    [out] = [o for o in core.take_outbox() if o.channel is Channel.STREAM]
    [reply] = decode_packet(Keyring(KEY), out.payload, stream=True)
    assert NodeState("p", PEER, 1, STATE_ALIVE, b"rack-7") in reply.states


def test_queue_take_fills_the_budget_exactly_and_skips_what_does_not_fit() -> None:
    queue = BroadcastQueue(length_max=10)
    queue.put("small", b"s" * 16)  # older
    queue.put("big", b"b" * 100)  # fresher: tried first
    assert queue.take(16, transmit_limit=5) == [b"s" * 16]  # big skipped, small fits exactly
    queue.put("a", b"a" * 50)
    queue.put("c", b"c" * 16)
    # 50 + 16 = 66: after "c" (freshest) 50 bytes remain for "a", then 0.
    assert queue.take(66, transmit_limit=5) == [b"c" * 16, b"a" * 50]
    queue.put("d", b"d" * 34)
    queue.put("e", b"e" * 16)
    # After "e" and "d" exactly 16 bytes remain: still enough for a 16-byte update.
    assert queue.take(66, transmit_limit=5) == [b"e" * 16, b"d" * 34, b"c" * 16]


def test_queue_counts_every_drop() -> None:
    queue = BroadcastQueue(length_max=1)
    for key in "abc":
        queue.put(key, key.encode() * 20)
    assert len(queue) == 1 and queue.dropped == 2
    queue.check_invariants()


def test_a_returning_member_evicts_an_older_holder_of_its_address() -> None:
    core = _core()
    _send(core, 1, Alive("p", OTHER, 1), Alive("q", PEER, 1))
    _send(core, 2, Dead("p", 1, "x"))
    _send(core, 3, Alive("p", PEER, 5))  # p restarted where q was; q's incarnation is older
    view = {m.node_id: (m.state, m.address, m.since_ms) for m in core.members()}
    assert view["q"] == (MemberState.DEAD, PEER, 3) and view["p"] == (MemberState.ALIVE, PEER, 3)
    assert [(e.kind, e.node_id, e.now_ms) for e in core.take_events()][-2:] == [
        (EventKind.DEAD, "q", 3),
        (EventKind.JOINED, "p", 3),
    ]


def test_a_refutation_is_gossiped_with_our_meta() -> None:
    core, _ = _core_with(1, meta=b"zone-b")
    _send(core, 2, Dead("me", 0, "x"), source=OTHER)
    _send(core, 3, Ping(1, "me"))
    about_me = [(d, m) for d, m in _sent(core) if isinstance(m, Alive) and m.node_id == "me"]
    refutation = Alive("me", SELF, 1, b"zone-b")
    # Answered to the sender of the claim at once, and gossiped (here: in the ack).
    assert about_me == [(OTHER, refutation), (PEER, refutation)]


def test_no_join_exchanges_once_joined() -> None:
    core = _core(seeds=(PEER,))
    core.tick(0)
    core.take_outbox()
    _stream(core, 1, PushPull(True, False, (NodeState("p", PEER, 1, STATE_ALIVE, b""),)))
    joins = []
    while (now_ms := core.next_deadline_ms()) <= 3 * core.config.push_pull_interval_ms:
        core.tick(now_ms)
        for out in core.take_outbox():
            [message, *_] = decode_packet(Keyring(KEY), out.payload, out.channel is Channel.STREAM)
            if out.channel is Channel.STREAM:
                joins.append(message.join)
                core.stream_failed(out.destination, now_ms)
            elif isinstance(message, Ping):  # p answers every probe: it stays alive
                _send(core, now_ms, Ack(message.seq))
    assert joins and not any(joins)  # periodic syncs only, never a join
    assert core.stats()["join_attempts"] == 1


def _reference_take(items: dict, budget_bytes: int, transmit_limit: int) -> list[bytes]:
    """The queue's take as it was (a sort of the whole queue per datagram): the model."""
    chosen = []
    for key, entry in sorted(items.items(), key=lambda kv: (kv[1][1], -kv[1][2])):
        encoded, transmits, order = entry
        if len(encoded) > budget_bytes:
            continue
        budget_bytes -= len(encoded)
        chosen.append(encoded)
        if transmits + 1 >= transmit_limit:
            del items[key]
        else:
            items[key] = [encoded, transmits + 1, order]
        if budget_bytes < 16:
            break
    return chosen


@settings(max_examples=150, deadline=None)
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.integers(0, 12), st.integers(16, 90)),
            st.tuples(st.just("take"), st.integers(0, 400), st.integers(1, 4)),
        ),
        max_size=120,
    ),
    length_max=st.integers(1, 10),
)
def test_queue_take_sends_exactly_what_sorting_the_queue_would(operations, length_max) -> None:
    """The heap-ordered take picks the same updates, in the same order, as sorting the whole
    queue by (transmits, newest) did, through puts, replacements, drops and sends."""
    queue = BroadcastQueue(length_max)
    model: dict[str, list] = {}  # key -> [encoded, transmits, order]
    order = 0
    for index, (kind, a, b) in enumerate(operations):
        if kind == "put":
            key = f"m{a}"
            encoded = bytes([index % 256]) * b
            queue.put(key, encoded)
            order += 1
            model.pop(key, None)
            model[key] = [encoded, 0, order]
            if len(model) > length_max:  # the most sent, oldest among equals, is dropped
                worst = max(model, key=lambda k: (model[k][1], -model[k][2]))
                del model[worst]
        else:
            assert queue.take(a, b) == _reference_take(model, a, b)
        assert {k: v.encoded for k, v in queue._items.items()} == {
            k: v[0] for k, v in model.items()
        }
        queue.check_invariants()
