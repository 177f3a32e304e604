"""Forged membership messages from a holder of the cluster key (issue 8, items 7 and 8): claims
at any incarnation are refuted and cannot exhaust incarnations; one push-pull cannot fill the
member table or aim this node at addresses of someone's choosing; the public development key
stays on loopback unless told otherwise. Virtual time only (the simulator and hand-driven
cores); the CLI check never binds."""

from __future__ import annotations

import random
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipcache.cli.main import EXIT_ERROR, main
from gossipcache.drivers.cluster_keys import DEVELOPMENT_CLUSTER_KEY, cluster_keyring
from gossipcache.membership import EventKind, Keyring, Membership, MembershipConfig, MemberState
from gossipcache.membership.broadcast import BroadcastQueue
from gossipcache.membership.codec import (
    INCARNATION_LIMIT,
    STATE_ALIVE,
    Alive,
    Dead,
    Leave,
    NodeState,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode_packet,
    encode_message,
    encode_packet,
)
from gossipcache.node.config import NodeConfig, is_loopback_host
from gossipcache.sansio import Channel, Outgoing
from sim.scenarios_membership import (
    CLUSTER_KEY,
    FORGER_ADDRESS,
    add_membership_nodes,
    observer_of,
    running_nodes,
)
from sim.simulation import Simulation

MAX = INCARNATION_LIMIT - 1  # 2^63 - 1, the highest incarnation the codec accepts

# ------------------------------------------------------------------- item 7: incarnations


def _forge(sim: Simulation, target: str, *messages: object) -> None:
    payload = encode_packet(Keyring(CLUSTER_KEY), [encode_message(m) for m in messages])
    sim.send_from(FORGER_ADDRESS, Outgoing(target, Channel.DATAGRAM, payload))


def _views_of(sim: Simulation, node_id: str) -> dict[str, tuple[MemberState, int]]:
    """Every running node's record of ``node_id``: address -> (state, incarnation)."""
    views = {}
    for node in running_nodes(sim):
        for member in node.membership.members():
            if member.node_id == node_id:
                views[node.address] = (member.state, member.incarnation)
    return views


def test_the_issue_reproduction_dead_then_suspect_at_2_63_minus_1_is_refuted():
    # Issue 8, item 7: one forged Dead about A at 2^63 - 1 pinned A's own incarnation there,
    # and one Suspect at 2^63 - 1 then got the healthy A declared dead within 4 s.
    sim = Simulation(8)
    observer = add_membership_nodes(sim, 3)
    sim.run_until(10_000)
    b, a = running_nodes(sim)[:2]
    a_id, start = a.membership.node_id, a.membership.incarnation
    _forge(sim, b.address, Dead(a_id, MAX, "forger"))
    sim.run_until(20_000)
    assert a.membership.incarnation <= start + 2  # one claim moves it by 2 at most
    assert {state for state, _ in _views_of(sim, a_id).values()} == {MemberState.ALIVE}
    _forge(sim, b.address, Suspect(a_id, MAX, "forger"))
    sim.run_until(60_000)  # past the longest suspicion timeout at N = 3 (24 s)
    views = _views_of(sim, a_id)
    assert {state for state, _ in views.values()} == {MemberState.ALIVE}, views
    assert all(incarnation < start + 10 for _, incarnation in views.values())
    late_deaths = [
        o for o in observer.dead_events if o.event.node_id == a_id and o.event.now_ms > 20_000
    ]
    assert late_deaths == []


_KINDS = st.sampled_from(["suspect", "dead", "leave", "alive", "overflow"])
_INCARNATIONS = st.sampled_from(["zero", "record", "record+1", "own", "max"]) | st.integers(0, MAX)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    claims=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), _KINDS, _INCARNATIONS, st.integers(0, 900)),
        min_size=1,
        max_size=30,
    ),
)
def test_forged_claims_at_any_incarnation_keep_being_refuted(seed, claims):
    """A forger sends drawn claims (suspect / dead / leave / alive, or a dead at 2^64 - 1 that
    msgpack encodes and the codec refuses) about drawn members to drawn nodes, at 0, the
    target's record, one above it, the member's own, 2^63 - 1 or any 63-bit value. After the
    refutation window every node holds every member alive, and no incarnation moved more than
    2 per refutation."""
    sim = Simulation(seed)
    add_membership_nodes(sim, 4)
    sim.run_until(10_000)
    nodes = running_nodes(sim)
    starts = {n.membership.node_id: n.membership.incarnation for n in nodes}
    for target_index, victim_index, kind, chosen, gap_ms in claims:
        target, victim = nodes[target_index], nodes[victim_index].membership
        record = {m.node_id: m.incarnation for m in target.membership.members()}[victim.node_id]
        incarnation = {
            "zero": 0,
            "record": record,
            "record+1": min(record + 1, MAX),
            "own": victim.incarnation,
            "max": MAX,
        }.get(chosen, chosen)
        if kind == "overflow":
            raw = msgpack.packb([Dead.TYPE, victim.node_id, 2**64 - 1, "forger"])
            payload = encode_packet(Keyring(CLUSTER_KEY), [raw])
            sim.send_from(FORGER_ADDRESS, Outgoing(target.address, Channel.DATAGRAM, payload))
        else:
            message = {
                "suspect": Suspect(victim.node_id, incarnation, "forger"),
                "dead": Dead(victim.node_id, incarnation, "forger"),
                "leave": Leave(victim.node_id, incarnation),
                "alive": Alive(victim.node_id, victim.address, incarnation, b""),
            }[kind]
            _forge(sim, target.address, message)
        sim.run_until(sim.now_ms + gap_ms)
    sim.run_until(sim.now_ms + 15_000)  # the refutation window (REFUTATION_WINDOW_MS + margin)
    for node in nodes:
        membership = node.membership
        states = {m.node_id: m.state for m in membership.members()}
        assert states == dict.fromkeys(starts, MemberState.ALIVE), (node.address, states)
        refutations = membership.stats().get("refutations", 0)
        assert membership.incarnation <= starts[membership.node_id] + 2 * refutations
        assert membership.incarnation < 2**62  # nowhere near the end of the space
    assert not observer_of(sim).self_events


def test_a_record_pushed_up_by_forged_alives_yields_to_the_members_own_word():
    # Forged alives raise a record one step each; 50 of them put B's record of A 50 above A's
    # own incarnation, beyond what A's refutations (one above what A knows) can out-vote. A's
    # own word, from its own address, is taken as it is: the buddy ping's ack carries it.
    sim = Simulation(3)
    add_membership_nodes(sim, 3)
    sim.run_until(10_000)
    b, a = running_nodes(sim)[:2]
    a_id, a_address = a.membership.node_id, a.membership.address
    own = a.membership.incarnation
    forged = [encode_message(Alive(a_id, a_address, own + 1 + i, b"")) for i in range(50)]
    b.membership.handle(
        FORGER_ADDRESS, Channel.DATAGRAM, encode_packet(Keyring(CLUSTER_KEY), forged), sim.now_ms
    )
    assert _views_of(sim, a_id)[b.address][1] == own + 50
    sim.after_call(b.address, "forged datagram")
    _forge(sim, b.address, Suspect(a_id, MAX, "forger"))
    sim.run_until(40_000)
    assert {state for state, _ in _views_of(sim, a_id).values()} == {MemberState.ALIVE}
    assert b.membership.stats()["own_word_lowered"] >= 1
    # A never had to follow the forged record up: a few refutations, 2 at most each.
    refutations = a.membership.stats()["refutations"]
    assert a.membership.incarnation <= own + 2 * refutations < own + 50


# ------------------------------------------------------------------- item 8: bulk rows

FLOOD_ROWS = 9_999


def _forged_push_pull(keyring: Keyring) -> bytes:
    """The issue's frame: 9,999 alive rows at addresses of the forger's choosing."""
    rows = tuple(
        NodeState(
            f"fake-{i:05d}#{i:08x}", f"198.51.{i // 250}.{i % 250}:7000", 1_700_000_000_000, 0
        )
        for i in range(FLOOD_ROWS)
    )
    return encode_packet(keyring, [encode_message(PushPull(False, False, rows))], stream=True)


def test_one_forged_push_pull_of_447_kb_adds_a_bounded_few_and_real_nodes_still_join():
    keyring = cluster_keyring([DEVELOPMENT_CLUSTER_KEY])
    config = MembershipConfig.lan()
    victim = Membership("127.0.0.1:7000", "victim", config, random.Random(1), keyring, 0)
    frame = _forged_push_pull(keyring)
    assert len(frame) > 440_000  # the issue's was 447 KB
    started = time.perf_counter()
    victim.handle("127.0.0.1:6666", Channel.STREAM, frame, 1)
    assert time.perf_counter() - started < 2.0  # was 10.8 s: one put scanned the whole queue
    victim.check_invariants()
    stats = victim.stats()
    assert stats["members_known"] == 1 + config.new_members_per_packet_max
    assert stats["drop_new_members_per_packet"] == FLOOD_ROWS - config.new_members_per_packet_max
    # Ten more floods over 10 s add what the token bucket allows, not 10 x 64.
    for second in range(1, 11):
        victim.handle("127.0.0.1:6666", Channel.STREAM, frame, second * 1000)
    added = victim.stats()["members_known"] - 1
    assert added <= config.new_members_burst + 10 * config.new_members_per_s
    # A real node announcing itself from its own address joins (the bucket does not apply).
    real = encode_packet(keyring, [encode_message(Alive("real", "127.0.0.1:7001", 5, b""))])
    victim.handle("127.0.0.1:7001", Channel.DATAGRAM, real, 11_000)
    (record,) = [m for m in victim.members() if m.node_id == "real"]
    assert record.state is MemberState.ALIVE
    victim.check_invariants()


def test_forged_rows_never_become_helpers_or_push_pull_partners():
    keyring = cluster_keyring([DEVELOPMENT_CLUSTER_KEY])
    victim = Membership(
        "127.0.0.1:7000", "victim", MembershipConfig.lan(), random.Random(2), keyring, 0
    )
    victim.handle("127.0.0.1:6666", Channel.STREAM, _forged_push_pull(keyring), 1)
    real = encode_packet(keyring, [encode_message(Alive("real", "127.0.0.1:7001", 5, b""))])
    victim.handle("127.0.0.1:7001", Channel.DATAGRAM, real, 2)
    victim.take_outbox()
    pinged, streams, helpers = set(), [], []
    now_ms = 2
    while now_ms < 120_000:  # two minutes of the victim's own timers; nobody answers
        now_ms = victim.next_deadline_ms()
        victim.tick(now_ms)
        for out in victim.take_outbox():
            if not out.destination.startswith("198.51."):
                continue
            if out.channel is Channel.STREAM:
                streams.append(out.destination)
                continue
            messages = decode_packet(keyring, out.payload)
            pinged |= {out.destination for m in messages if isinstance(m, Ping)}
            helpers += [out.destination for m in messages if isinstance(m, PingReq)]
        victim.check_invariants()
    # Ping-req helpers and push-pull partners are confirmed members only: no stream and no
    # relay request ever went to a forged address. Forged addresses are probed one per period,
    # each until it is suspected (it never answers): no more of them than were admitted.
    assert streams == [] and helpers == []
    assert len(pinged) <= MembershipConfig.lan().new_members_per_packet_max


def test_a_full_broadcast_queue_takes_puts_in_logarithmic_time():
    queue = BroadcastQueue(4096)
    started = time.perf_counter()
    queue.take(1400, 100)  # some updates sent once: they go first
    for i in range(40_000):  # 36,000 puts beyond the bound: each drops the worst update
        queue.put(f"m{i}", b"x" * 40)
    assert time.perf_counter() - started < 2.0  # a scan per put: 36,000 x 4,096 items
    queue.check_invariants()
    assert len(queue) == 4096 and queue.dropped > 30_000


# ------------------------------------------------------------------- the development key


def test_the_development_key_stays_on_loopback_unless_allowed():
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host)
        NodeConfig(host=host)
    for host in ("0.0.0.0", "10.0.0.5", "::", "node1.example"):
        assert not is_loopback_host(host)
        with pytest.raises(ValueError, match="development key"):
            NodeConfig(host=host)
        NodeConfig(host=host, allow_development_key_on_network=True)
        NodeConfig(host=host, cluster_key_file="/etc/gossipcache/cluster.keys")
        NodeConfig(host=host, membership_enabled=False)  # no membership, no key


def test_the_cli_refuses_the_development_key_on_a_network_address(capsys):
    assert main(["node", "--host", "0.0.0.0", "--port", "0"]) == EXIT_ERROR
    error = capsys.readouterr().err
    assert "development key" in error and "--allow-development-key-on-network" in error
    assert "--cluster-key-file" in error


def test_unconfirmed_members_are_evicted_before_a_real_node_is_refused(monkeypatch):
    from gossipcache.membership import core as core_module

    monkeypatch.setattr(core_module, "MEMBERS_MAX", 6)
    keyring = Keyring(CLUSTER_KEY)
    config = MembershipConfig.lan()
    victim = Membership("127.0.0.1:7000", "victim", config, random.Random(3), keyring, 0)
    rows = tuple(NodeState(f"fake{i}", f"198.51.0.{i}:7000", 1, STATE_ALIVE) for i in range(10))
    frame = encode_packet(keyring, [encode_message(PushPull(False, False, rows))], stream=True)
    victim.handle("127.0.0.1:6666", Channel.STREAM, frame, 1)
    # Full after five rows; each later row evicted the oldest unconfirmed one.
    assert sorted(m.node_id for m in victim.members()) == [f"fake{i}" for i in range(5, 10)] + [
        "victim"
    ]
    victim.take_events()
    for index in (1, 2):
        address = f"127.0.0.1:700{index}"
        real = encode_packet(keyring, [encode_message(Alive(f"real{index}", address, 5, b""))])
        victim.handle(address, Channel.DATAGRAM, real, 2)
        victim.check_invariants()
    events = [(e.kind, e.node_id) for e in victim.take_events()]
    assert events == [
        (EventKind.EVICTED, "fake5"),
        (EventKind.JOINED, "real1"),
        (EventKind.EVICTED, "fake6"),
        (EventKind.JOINED, "real2"),
    ]
