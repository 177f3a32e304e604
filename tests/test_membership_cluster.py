"""Several membership cores wired together in memory: join, crash, refute, restart, leave,
Lifeguard under a starved node, keyring rotation. Virtual time only; no sleeps, no sockets.

The harness delivers each outgoing payload after ``delay_ms`` (datagrams may be lost by a seeded
rng), calls ``tick`` when a core's deadline comes, and can crash, pause or cut off a node.
"""

from __future__ import annotations

import heapq
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipcache.membership import (
    EventKind,
    InvariantViolation,
    Keyring,
    Membership,
    MembershipConfig,
    MemberState,
)
from gossipcache.membership.codec import (
    INCARNATION_LIMIT,
    MEMBERS_MAX,
    SEQ_LIMIT,
    Alive,
    Nack,
    Ping,
    PingReq,
    Suspect,
    decode_packet,
    encode_message,
    encode_packet,
)
from gossipcache.membership.core import (
    EVENTS_MAX,
    FORWARDS_MAX,
    SEEDS_MAX,
    _Forward,
    _Member,
    _Probe,
)
from gossipcache.sansio import Channel
from sim import scenarios_membership
from sim.faults import FaultPlan
from sim.scenarios import run_scenario
from sim.scenarios_membership import MEMBERSHIP_SCENARIOS

KEY_A = b"A" * 32
KEY_B = b"B" * 32
CONFIG = MembershipConfig.lan()


def address_of(index: int) -> str:
    return f"127.0.0.1:{7000 + index}"


class Cluster:
    """A tiny deterministic network of cores. Addresses are ``address_of(i)``."""

    def __init__(self, seed: int = 1, delay_ms: int = 5, loss: float = 0.0) -> None:
        self.now_ms = 0
        self.delay_ms = delay_ms
        self.loss = loss
        self.rng = random.Random(seed)
        self.cores: dict[str, Membership] = {}
        self.keyrings: dict[str, Keyring] = {}
        self.down: set[str] = set()
        self.cut_off: set[str] = set()  # up, but every packet to or from it is lost
        self.paused_until: dict[str, int] = {}
        self.held: dict[str, list[tuple[str, Channel, bytes]]] = {}
        self.events: list[tuple[str, object]] = []  # (observer address, MemberEvent)
        self.health_max: dict[str, int] = {}
        self.deadlines: dict[str, int | None] = {}  # refreshed whenever a core was driven
        self._heap: list[tuple[int, int, str, str, Channel, bytes]] = []
        self._order = 0

    def add(
        self,
        index: int,
        seeds: tuple[int, ...] = (0,),
        node_id: str | None = None,
        incarnation: int = 0,
        config: MembershipConfig = CONFIG,
        keyring: Keyring | None = None,
    ) -> Membership:
        address = address_of(index)
        keyring = keyring or Keyring(KEY_A)
        core = Membership(
            address,
            node_id or f"n{index}",
            config,
            random.Random(self.rng.random()),
            keyring,
            self.now_ms,
            [address_of(s) for s in seeds],
            incarnation=incarnation,
        )
        self.cores[address] = core
        self.keyrings[address] = keyring
        self.down.discard(address)
        self._flush(address)
        return core

    def crash(self, index: int) -> None:
        self.down.add(address_of(index))

    def pause(self, index: int, duration_ms: int) -> None:
        self.paused_until[address_of(index)] = self.now_ms + duration_ms

    def _flush(self, source: str) -> None:
        core = self.cores[source]
        core.check_invariants()  # after every call into a core, in every test of this file
        self.deadlines[source] = core.next_deadline_ms()
        for out in core.take_outbox():
            if out.channel is Channel.DATAGRAM and self.loss and self.rng.random() < self.loss:
                continue
            self._order += 1
            item = (
                self.now_ms + self.delay_ms,
                self._order,
                source,
                out.destination,
                out.channel,
                out.payload,
            )
            heapq.heappush(self._heap, item)
        for event in core.take_events():
            self.events.append((source, event))

    def _usable(self, address: str) -> bool:
        return address not in self.down and self.paused_until.get(address, -1) <= self.now_ms

    def _deliver(self, source: str, destination: str, channel: Channel, payload: bytes) -> None:
        unreachable = (
            destination not in self.cores
            or destination in self.down
            or source in self.cut_off
            or destination in self.cut_off
        )
        if unreachable:
            if channel is Channel.STREAM and self._usable(source):
                self.cores[source].stream_failed(destination, self.now_ms)
                self._flush(source)
            return
        if not self._usable(destination):
            self.held.setdefault(destination, []).append((source, channel, payload))
            return
        self.cores[destination].handle(source, channel, payload, self.now_ms)
        self._flush(destination)

    def _resume(self, address: str) -> None:
        # A paused process runs its overdue timers before reading its socket buffer, which is
        # exactly what makes a starved node think that everyone else is slow.
        del self.paused_until[address]
        if address in self.down:
            return
        core = self.cores[address]
        core.tick(self.now_ms)
        self._flush(address)
        for source, channel, payload in self.held.pop(address, []):
            core.handle(source, channel, payload, self.now_ms)
            self._flush(address)

    def run_until(self, end_ms: int) -> None:
        while True:
            times = [self._heap[0][0]] if self._heap else []
            times.extend(self.paused_until.values())
            due_cores = []
            for address, deadline in self.deadlines.items():
                if deadline is not None and self._usable(address):
                    times.append(deadline)
                    due_cores.append((deadline, address))
            if not times or min(times) > end_ms:
                self.now_ms = end_ms
                return
            self.now_ms = max(self.now_ms, min(times))
            for address, until in list(self.paused_until.items()):
                if until <= self.now_ms:
                    self._resume(address)
            while self._heap and self._heap[0][0] <= self.now_ms:
                _, _, source, destination, channel, payload = heapq.heappop(self._heap)
                if source not in self.down:
                    self._deliver(source, destination, channel, payload)
            for deadline, address in due_cores:
                if deadline <= self.now_ms and self._usable(address):
                    core = self.cores[address]
                    core.tick(self.now_ms)
                    self._flush(address)
                    health = core.local_health
                    self.health_max[address] = max(self.health_max.get(address, 0), health)
                    next_ms = self.deadlines[address]
                    assert next_ms is None or next_ms > self.now_ms  # tick did what was due

    def view(self, index: int) -> dict[str, MemberState]:
        return {m.node_id: m.state for m in self.cores[address_of(index)].members()}

    def live_ids(self, index: int) -> set[str]:
        return {i for i, s in self.view(index).items() if s in (MemberState.ALIVE, "suspect")}

    def events_about(self, node_id: str, kind: EventKind) -> list[tuple[str, object]]:
        return [(o, e) for o, e in self.events if e.node_id == node_id and e.kind is kind]


def build(count: int, seed: int = 1, loss: float = 0.0) -> Cluster:
    cluster = Cluster(seed=seed, loss=loss)
    for index in range(count):
        cluster.add(index, seeds=(0,) if index else ())
        cluster.run_until(cluster.now_ms + 50)
    return cluster


def converged(cluster: Cluster, indexes: list[int], expected: set[str]) -> bool:
    return all(cluster.live_ids(i) == expected for i in indexes)


def test_join_through_one_seed_converges_to_full_membership() -> None:
    cluster = build(8)
    cluster.run_until(10_000)
    everyone = {f"n{i}" for i in range(8)}
    assert converged(cluster, list(range(8)), everyone)
    for i in range(8):
        assert all(s is MemberState.ALIVE for s in cluster.view(i).values())
        assert not cluster.cores[address_of(i)].is_joining
    # Each node saw every other node join exactly once.
    for i in range(1, 8):
        assert len(cluster.events_about(f"n{i}", EventKind.JOINED)) == 7


def test_join_retries_seeds_until_one_answers() -> None:
    cluster = Cluster(seed=3)
    joiner = cluster.add(1, seeds=(0,))  # the seed does not exist yet
    cluster.run_until(5_000)
    assert joiner.is_joining and joiner.stats()["join_attempts"] >= 2
    cluster.add(0, seeds=())
    cluster.run_until(40_000)  # backoff is bounded by join_retry_max_ms
    assert not joiner.is_joining
    assert converged(cluster, [0, 1], {"n0", "n1"})


def test_crashed_node_is_suspected_then_declared_dead_within_bound() -> None:
    cluster = build(6, seed=2)
    cluster.run_until(10_000)
    crash_ms = cluster.now_ms
    cluster.crash(5)
    # Bound: the max suspicion timeout (lifeguard, N = 6) plus a few protocol periods for the
    # first probe to fail and the news to spread.
    n = 6
    suspicion_min_ms = CONFIG.suspicion_mult * CONFIG.probe_interval_ms  # log10(6) < 1
    bound_ms = CONFIG.suspicion_max_timeout_mult * suspicion_min_ms + 5 * CONFIG.probe_interval_ms
    assert n - 2 >= CONFIG.suspicion_mult - 2
    cluster.run_until(crash_ms + bound_ms)
    for i in range(5):
        assert cluster.view(i)["n5"] is MemberState.DEAD
    observers = {o for o, _ in cluster.events_about("n5", EventKind.SUSPECT)}
    assert observers  # it went through suspicion, not straight to dead
    dead_times = [e.now_ms - crash_ms for _, e in cluster.events_about("n5", EventKind.DEAD)]
    assert len(dead_times) == 5 and max(dead_times) <= bound_ms
    # Confirmations from independent members shrink the timeout well below the maximum.
    assert max(dead_times) < CONFIG.suspicion_max_timeout_mult * suspicion_min_ms


class RecordingCluster(Cluster):
    """Also logs every datagram's messages: (send time, source, destination, message)."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(seed=seed)
        self.sent: list[tuple[int, str, str, object]] = []

    def _flush(self, source: str) -> None:
        core = self.cores[source]
        outbox = core.take_outbox()
        for out in outbox:
            if out.channel is Channel.DATAGRAM:
                for message in decode_packet(self.keyrings[source], out.payload, False):
                    self.sent.append((self.now_ms, source, out.destination, message))
        core._outbox.extend(outbox)  # hand them back for the normal delivery
        super()._flush(source)


def test_probe_suspects_at_the_indirect_deadline_and_counts_helper_nacks() -> None:
    cluster = RecordingCluster(seed=4)
    for index in range(5):
        cluster.add(index, seeds=(0,) if index else ())
        cluster.run_until(cluster.now_ms + 50)
    cluster.run_until(10_000)
    crash_ms = cluster.now_ms
    cluster.crash(4)
    cluster.run_until(crash_ms + 3 * CONFIG.probe_interval_ms * 4)
    dead_address = address_of(4)
    # Each prober's own failed probe: the suspicion comes probe + indirect timeout after the
    # ping (not at the end of the period); the ping-reqs go out at the direct deadline.
    failures = 0
    for index in range(4):
        observer = address_of(index)
        pings = [
            t
            for t, src, dst, m in cluster.sent
            if src == observer and dst == dead_address and isinstance(m, Ping) and t >= crash_ms
        ]
        own = [
            e.now_ms
            for o, e in cluster.events
            if o == observer and e.kind is EventKind.SUSPECT and e.node_id == "n4"
            if any(
                e.now_ms - t == CONFIG.probe_timeout_ms + CONFIG.indirect_probe_timeout_ms
                for t in pings
            )
        ]
        if not own:
            continue
        failures += 1
        ping_ms = own[0] - CONFIG.probe_timeout_ms - CONFIG.indirect_probe_timeout_ms
        ping_reqs = [
            t
            for t, src, _, m in cluster.sent
            if src == observer and isinstance(m, PingReq) and t > ping_ms and t <= own[0]
        ]
        assert ping_reqs and all(t == ping_ms + CONFIG.probe_timeout_ms for t in ping_reqs)
        # Every helper nacked, early enough to arrive before the deadline (the 5 ms link delay),
        # so the prober's local health does not count them as missed.
        nacks = [
            t
            for t, _, dst, m in cluster.sent
            if dst == observer and isinstance(m, Nack) and ping_ms < t <= own[0]
        ]
        assert len(nacks) == len(ping_reqs)
        assert all(t + cluster.delay_ms <= own[0] for t in nacks)
    assert failures >= 1


def test_suspected_live_node_refutes_after_short_partition() -> None:
    cluster = build(5, seed=4)
    cluster.run_until(10_000)
    victim = cluster.cores[address_of(3)]
    before = victim.incarnation
    cluster.cut_off.add(address_of(3))
    cluster.run_until(12_500)
    cluster.cut_off.clear()
    cluster.run_until(30_000)
    assert cluster.events_about("n3", EventKind.SUSPECT)
    assert not cluster.events_about("n3", EventKind.DEAD)
    assert cluster.events_about("n3", EventKind.ALIVE)
    assert victim.incarnation > before
    assert victim.stats()["refutations"] >= 1
    assert converged(cluster, [0, 1, 2, 3, 4], {f"n{i}" for i in range(5)})


def test_restarted_node_rejoins_with_higher_incarnation() -> None:
    cluster = build(5, seed=5)
    cluster.run_until(10_000)
    cluster.crash(2)
    cluster.run_until(40_000)
    assert all(cluster.view(i)["n2"] is MemberState.DEAD for i in (0, 1, 3, 4))
    dead_at = {i: _record(cluster, i, "n2").incarnation for i in (0, 1, 3, 4)}
    # Same node id, later incarnation (e.g. wall-clock ms at start).
    cluster.add(2, seeds=(0,), incarnation=40_000)
    cluster.run_until(60_000)
    for i in (0, 1, 3, 4):
        record = _record(cluster, i, "n2")
        assert record.state is MemberState.ALIVE
        # Relayed claims raise a record one step at a time (a lagging record only lags: any
        # later alive of n2 beats it); n2's own word, from its address, is taken as it is.
        assert dead_at[i] < record.incarnation <= 40_000
    assert _record(cluster, 0, "n2").incarnation == 40_000  # the seed it joined through
    assert converged(cluster, [0, 1, 2, 3, 4], {f"n{i}" for i in range(5)})


def _record(cluster: Cluster, index: int, node_id: str):
    (record,) = [m for m in cluster.cores[address_of(index)].members() if m.node_id == node_id]
    return record


def test_quick_restart_with_new_id_replaces_the_old_record_at_that_address() -> None:
    cluster = build(5, seed=6)
    cluster.run_until(10_000)
    cluster.crash(2)
    cluster.run_until(10_500)  # too soon for anyone to have declared n2 dead
    cluster.add(2, seeds=(0,), node_id="n2-restarted", incarnation=10_500)
    cluster.run_until(30_000)
    expected = {"n0", "n1", "n2-restarted", "n3", "n4"}
    assert converged(cluster, [0, 1, 2, 3, 4], expected)
    for i in (0, 1, 3, 4):
        assert cluster.view(i)["n2"] is MemberState.DEAD


def test_graceful_leave_is_seen_as_left_not_dead() -> None:
    cluster = build(6, seed=7)
    cluster.run_until(10_000)
    leaver = cluster.cores[address_of(4)]
    leaver.leave(cluster.now_ms)
    cluster._flush(address_of(4))
    assert leaver.has_left and leaver.next_deadline_ms() is None
    cluster.run_until(13_000)
    for i in (0, 1, 2, 3, 5):
        assert cluster.view(i)["n4"] is MemberState.LEFT
    assert not cluster.events_about("n4", EventKind.DEAD)
    assert not cluster.events_about("n4", EventKind.SUSPECT)


def test_dead_records_are_reclaimed_after_the_retention() -> None:
    cluster = build(4, seed=8)
    cluster.run_until(10_000)
    cluster.crash(3)
    cluster.run_until(40_000 + CONFIG.dead_node_reclaim_ms + CONFIG.dead_node_reclaim_ms // 4)
    for i in range(3):
        assert "n3" not in cluster.view(i)


def _starve(lifeguard: bool) -> Cluster:
    config = CONFIG.replace(lifeguard=lifeguard)
    cluster = Cluster(seed=9)
    for index in range(6):
        cluster.add(index, seeds=(0,) if index else (), config=config)
        cluster.run_until(cluster.now_ms + 50)
    cluster.run_until(10_000)
    # Node 5 is starved: frozen for 1.6 s out of every 2 s (think GC pauses or a CPU hog).
    while cluster.now_ms < 60_000:
        cluster.pause(5, 1_600)
        cluster.run_until(cluster.now_ms + 2_000)
    return cluster


def test_lifeguard_starved_node_raises_its_local_health_and_healthy_nodes_survive() -> None:
    cluster = _starve(lifeguard=True)
    starved = cluster.cores[address_of(5)]
    assert cluster.health_max[address_of(5)] >= 2
    assert starved.stats()["probe_failed"] >= 1
    healthy = [f"n{i}" for i in range(5)]
    for node_id in healthy:
        assert not cluster.events_about(node_id, EventKind.DEAD)
    # Its false accusations were refuted by the accused (buddy system / refutation).
    refuted = sum(cluster.cores[address_of(i)].stats().get("refutations", 0) for i in range(5))
    suspected = {e.node_id for o, e in cluster.events if e.kind is EventKind.SUSPECT}
    assert not (suspected & set(healthy)) or refuted >= 1
    for i in range(5):
        assert cluster.health_max.get(address_of(i), 0) <= 1


def test_lifeguard_off_uses_plain_swim() -> None:
    cluster = _starve(lifeguard=False)
    assert cluster.health_max.get(address_of(5), 0) == 0  # no local health multiplier


def test_wrong_key_is_dropped_and_counted() -> None:
    cluster = build(3, seed=10)
    cluster.run_until(5_000)
    intruder = cluster.add(7, seeds=(0,), keyring=Keyring(KEY_B, primary_key_id=0))
    cluster.run_until(15_000)
    assert intruder.is_joining
    assert "n7" not in cluster.view(0)
    assert cluster.cores[address_of(0)].stats().get("drop_bad_tag", 0) >= 1
    other_id = cluster.add(8, seeds=(0,), keyring=Keyring(KEY_B, primary_key_id=9))
    cluster.run_until(20_000)
    assert other_id.is_joining
    assert cluster.cores[address_of(0)].stats().get("drop_unknown_key", 0) >= 1


def test_key_rotation_keeps_the_cluster_together() -> None:
    cluster = build(4, seed=11)
    cluster.run_until(5_000)
    for keyring in cluster.keyrings.values():
        keyring.add_key(1, KEY_B)
    cluster.run_until(8_000)
    for keyring in cluster.keyrings.values():
        keyring.use_key(1)
    cluster.run_until(11_000)
    for keyring in cluster.keyrings.values():
        keyring.remove_key(0)
    cluster.run_until(40_000)
    everyone = {f"n{i}" for i in range(4)}
    assert converged(cluster, [0, 1, 2, 3], everyone)
    assert not any(e.kind is EventKind.DEAD for _, e in cluster.events)
    stale = cluster.add(6, seeds=(0,), keyring=Keyring(KEY_A))  # only the retired key
    cluster.run_until(45_000)
    assert stale.is_joining


def test_lossy_network_still_converges_and_detects() -> None:
    cluster = build(8, seed=12, loss=0.05)
    cluster.run_until(20_000)
    assert converged(cluster, list(range(8)), {f"n{i}" for i in range(8)})
    cluster.crash(7)
    cluster.run_until(60_000)
    assert all(cluster.view(i)["n7"] is MemberState.DEAD for i in range(7))
    healthy = {f"n{i}" for i in range(7)}
    assert converged(cluster, list(range(7)), healthy)


def test_same_seed_replays_the_same_run() -> None:
    def run() -> list:
        cluster = build(5, seed=13, loss=0.1)
        cluster.run_until(8_000)
        cluster.crash(4)
        cluster.run_until(30_000)
        return [(o, e) for o, e in cluster.events]

    assert run() == run()


def test_stale_suspicion_is_answered_with_the_refutation() -> None:
    """A node gossiping a suspicion the member already refuted gets the refutation directly."""
    cluster = Cluster(seed=12)
    for index in range(3):
        cluster.add(index, seeds=(0,) if index else (), incarnation=5)
        cluster.run_until(cluster.now_ms + 50)
    cluster.run_until(5_000)
    observer = address_of(0)
    core = cluster.cores[observer]
    assert {m.node_id: m.incarnation for m in core.members()}["n2"] == 5
    keyring = cluster.keyrings[observer]
    stale = encode_packet(keyring, [encode_message(Suspect("n2", 4, "n1"))])
    core.handle(address_of(1), Channel.DATAGRAM, stale, cluster.now_ms)
    sent = [
        message
        for out in core.take_outbox()
        if out.destination == address_of(1)
        for message in decode_packet(keyring, out.payload, False)
    ]
    assert any(isinstance(m, Alive) and m.node_id == "n2" and m.incarnation == 5 for m in sent)
    assert core.stats()["stale_corrected"] == 1
    assert cluster.view(0)["n2"] is MemberState.ALIVE


# --------------------------------------------------------------------------------------------
# Invariant checks (Membership.check_invariants). Every Cluster above already runs them after
# each call into a core; here: each check fires on the corruption it is for, a left core passes,
# python -O keeps them, and simulated clusters under faults never trip them.


def _core_with_a_suspect() -> tuple[Cluster, Membership]:
    """Node 0 of a converged 4-node cluster, suspecting n3 (on n1's word)."""
    cluster = build(4, seed=21)
    cluster.run_until(10_000)
    core = cluster.cores[address_of(0)]
    accusation = encode_packet(
        cluster.keyrings[address_of(0)], [encode_message(Suspect("n3", 0, "n1"))]
    )
    core.handle(address_of(1), Channel.DATAGRAM, accusation, cluster.now_ms)
    cluster._flush(address_of(0))
    assert cluster.view(0)["n3"] is MemberState.SUSPECT
    return cluster, core


def _set(obj: object, name: str, value: object) -> Callable[[Membership], None]:
    return lambda core: setattr(obj(core) if callable(obj) else core, name, value)


def _other(core: Membership, node_id: str = "n2") -> _Member:
    return core._members[node_id]


def _probe(core: Membership, **changes: int | str) -> None:
    fields = {"seq": 1, "target_id": "n1", "direct_deadline_ms": 10_500}
    fields["indirect_deadline_ms"] = 10_600
    fields.update(changes)
    core._next_probe_ms = 11_000
    core._probe = _Probe(**fields)


def _too_many_forwards(core: Membership) -> None:
    for seq in range(FORWARDS_MAX + 1):
        core._forwards[seq] = _Forward("x:1", seq, None, 20_000)


def _misfiled_update(core: Membership) -> None:
    core._broadcasts.put("n1", b"u" * 20)
    core._broadcasts._items["n1"].key = "n2"


def _overfull_queue(core: Membership) -> None:
    core._broadcasts.put("n1", b"u" * 20)
    core._broadcasts.length_max = 0


def _twin(core: Membership) -> None:
    core._members["n1"].address = core._members["n2"].address


def _left_without_leaving(core: Membership) -> None:
    core._self.state = MemberState.LEFT


def _extra_member(core: Membership) -> None:
    ghost = _Member("ghost", "g:1", 0, 0, b"")
    ghost.state = MemberState.DEAD
    core._members["ghost"] = ghost


def _self_in_ids(core: Membership) -> None:
    del core._id_index[core._ids[0]]
    core._ids[0] = "n0"
    core._id_index["n0"] = 0


CORRUPTIONS: dict[str, tuple[Callable[[Membership], None], str]] = {
    "self missing": (lambda c: c._members.pop("n0"), "local member is not filed"),
    "self readdressed": (_set(lambda c: c._self, "address", "elsewhere:1"), "local member"),
    "self renamed": (_set(lambda c: c._self, "node_id", "n9"), "local member"),
    "self dead": (_set(lambda c: c._self, "state", MemberState.DEAD), "holds itself as dead"),
    "self left, core running": (_left_without_leaving, "holds itself as left"),
    "too many members": (lambda c: setattr(c, "_members", _Padded(c._members)), "bound"),
    "record under another id": (_set(lambda c: _other(c), "node_id", "n1"), "record of"),
    "state not an enum": (_set(lambda c: _other(c), "state", "alive"), "has state"),
    "incarnation at the limit": (
        _set(lambda c: _other(c), "incarnation", INCARNATION_LIMIT),
        "has incarnation",
    ),
    "negative incarnation": (_set(lambda c: _other(c), "incarnation", -1), "has incarnation"),
    "incarnation not an int": (_set(lambda c: _other(c), "incarnation", 1.0), "has incarnation"),
    "two live at one address": (_twin, "are both live at"),
    "suspect without timer": (lambda c: c._suspicions.clear(), "has no suspicion timer"),
    "timer of an alive member": (
        lambda c: c._suspicions.__setitem__("n2", c._suspicions["n3"]),
        r"non-suspects \['n2'\]",
    ),
    "timer of an unknown member": (
        lambda c: c._suspicions.__setitem__("zz", c._suspicions["n3"]),
        r"non-suspects \['zz'\]",
    ),
    "suspicion deadline moved": (
        lambda c: setattr(c._suspicions["n3"], "deadline_ms", c._suspicions["n3"].deadline_ms + 1),
        "suspicion deadline",
    ),
    "live count off": (lambda c: setattr(c, "_live_count", c._live_count + 1), "live count"),
    "address map stale": (lambda c: c._live_address.pop(address_of(2)), "address map"),
    "unknown member in ids": (_extra_member, "ids"),
    "id missing from ids": (lambda c: c._ids.pop(), "ids"),
    "wrong id index": (
        lambda c: c._id_index.__setitem__(c._ids[0], len(c._ids) - 1),
        r"ids\[0\]",
    ),
    "self in ids": (_self_in_ids, r"ids\[0\] = 'n0'"),
    "cursor past the order": (
        lambda c: setattr(c, "_probe_index", len(c._probe_order) + 1),
        "probe cursor",
    ),
    "negative cursor": (lambda c: setattr(c, "_probe_index", -1), "probe cursor"),
    "probes itself": (lambda c: c._probe_order.append("n0"), "probes itself"),
    "live member never probed": (
        lambda c: setattr(c, "_probe_order", [i for i in c._probe_order if i != "n2"]),
        "'n2' is never probed",
    ),
    "probe of itself": (lambda c: _probe(c, target_id="n0"), "probe of 'n0'"),
    "probe seq out of range": (lambda c: _probe(c, seq=SEQ_LIMIT), "seq"),
    "probe deadlines reversed": (lambda c: _probe(c, indirect_deadline_ms=10_499), "probe of"),
    "probe overlaps the next": (lambda c: _probe(c, indirect_deadline_ms=11_001), "probe of"),
    "more nacks expected than helpers": (
        lambda c: (_probe(c), setattr(c._probe, "expected_nacks", CONFIG.indirect_checks + 1)),
        "nacks 0/4",
    ),
    "sequence out of range": (lambda c: setattr(c, "_seq", SEQ_LIMIT), "sequence number"),
    "negative sequence": (lambda c: setattr(c, "_seq", -1), "sequence number"),
    "too many forwards": (_too_many_forwards, "relayed ping-reqs"),
    "forward seq out of range": (
        lambda c: c._forwards.__setitem__(SEQ_LIMIT, _Forward("x:1", 1, None, 20_000)),
        "relayed ping-req seq",
    ),
    "nack after expiry": (
        lambda c: c._forwards.__setitem__(1, _Forward("x:1", 1, 20_001, 20_000)),
        "relayed ping-req seq 1",
    ),
    "own address as seed": (lambda c: c._seeds.append(address_of(0)), "seeds"),
    "duplicate seed": (lambda c: c._seeds.extend(["s:1", "s:1"]), "seeds"),
    "too many seeds": (
        lambda c: setattr(c, "_seeds", [f"s:{i}" for i in range(SEEDS_MAX + 1)]),
        "seeds",
    ),
    "joining without seeds": (
        lambda c: (setattr(c, "_seeds", []), setattr(c, "_joining", True)),
        "joining without seeds",
    ),
    "backoff under the initial": (
        lambda c: setattr(c, "_join_backoff_ms", CONFIG.join_retry_initial_ms - 1),
        "join backoff",
    ),
    "backoff over the max": (
        lambda c: setattr(c, "_join_backoff_ms", CONFIG.join_retry_max_ms + 1),
        "join backoff",
    ),
    "too many events": (lambda c: c._events.extend([None] * (EVENTS_MAX + 1)), "events"),
    "health over the cap": (
        lambda c: setattr(c._awareness, "score", CONFIG.awareness_max_multiplier),
        "local health",
    ),
    "negative health": (lambda c: setattr(c._awareness, "score", -1), "local health"),
    "queue over its bound": (_overfull_queue, "broadcast queue holds"),
    "misfiled update": (_misfiled_update, "broadcast update filed under 'n1' is for 'n2'"),
    "negative counter": (
        lambda c: c._stats.__setitem__("probes", -1),
        r"negative counters \['probes'\]",
    ),
    "running without a deadline": (
        lambda c: setattr(c, "next_deadline_ms", lambda: None),
        "next deadline None while running",
    ),
}


class _Padded(dict):
    """A member table that claims one more record than ``MEMBERS_MAX``."""

    def __len__(self) -> int:
        return MEMBERS_MAX + 1


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_check_invariants_catches_each_corruption(name: str) -> None:
    _, core = _core_with_a_suspect()
    core.check_invariants()  # the uncorrupted core passes
    corrupt, message = CORRUPTIONS[name]
    corrupt(core)
    with pytest.raises(InvariantViolation, match=message):
        core.check_invariants()


def test_a_left_core_is_consistent_and_its_checks_stay_strict() -> None:
    cluster, core = _core_with_a_suspect()
    core.leave(cluster.now_ms)
    core.check_invariants()
    assert core.next_deadline_ms() is None
    core._probe = _Probe(1, "n1", cluster.now_ms + 500, cluster.now_ms + 600)
    with pytest.raises(InvariantViolation, match="probe of 'n1'"):
        core.check_invariants()  # a left core has no probe in flight
    core._probe = None
    core.next_deadline_ms = lambda: 5
    with pytest.raises(InvariantViolation, match="next deadline 5 while left"):
        core.check_invariants()


def test_invariant_violation_is_a_runtime_error_that_python_O_keeps() -> None:
    assert issubclass(InvariantViolation, RuntimeError)
    assert not issubclass(InvariantViolation, AssertionError)
    script = (
        "import random\n"
        "from gossipcache.membership import InvariantViolation, Keyring, Membership, "
        "MembershipConfig\n"
        "core = Membership('a:1', 'a', MembershipConfig(), random.Random(1), "
        "Keyring(b'k' * 32), 0)\n"
        "core.check_invariants()\n"
        "core._live_count = 5\n"
        "try:\n"
        "    core.check_invariants()\n"
        "except InvariantViolation as exc:\n"
        "    print('caught', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("caught a: live count is 5, the table holds 1")


def _checked_take_outbox(original: Callable) -> Callable:
    def take_outbox(node: scenarios_membership.MembershipNode) -> list:
        node.membership.check_invariants()  # after every call the simulator makes into the core
        return original(node)

    return take_outbox


_FAULTS = st.builds(
    FaultPlan,
    datagram_loss_rate=st.sampled_from([0.0, 0.05, 0.2]),
    datagram_duplicate_rate=st.sampled_from([0.0, 0.1]),
    partitions_per_min=st.sampled_from([0.0, 4.0]),
    clogs_per_min=st.sampled_from([0.0, 3.0]),
    crashes_per_min=st.sampled_from([0.0, 6.0]),
    pauses_per_min=st.sampled_from([0.0, 6.0]),
    clock_jumps_per_min=st.sampled_from([0.0, 3.0]),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario_index=st.integers(0, len(MEMBERSHIP_SCENARIOS) - 1),
    seed=st.integers(0, 2**32 - 1),
    nodes=st.integers(3, 8),
    plan=st.none() | _FAULTS,
)
def test_simulated_clusters_under_faults_never_break_an_invariant(
    scenario_index: int, seed: int, nodes: int, plan: FaultPlan | None
) -> None:
    node_class = scenarios_membership.MembershipNode
    original = node_class.take_outbox
    node_class.take_outbox = _checked_take_outbox(original)
    try:
        report = run_scenario(
            MEMBERSHIP_SCENARIOS[scenario_index],
            seed=seed,
            nodes=nodes,
            duration_s=20.0,
            fault_plan=plan,
        )
    finally:
        node_class.take_outbox = original
    crashes = [c.message for c in report.checks if c.name == "no-exception"]
    assert not crashes, (report.replay_command, plan, crashes)
    assert report.events > 0


def test_check_invariants_accepts_values_at_their_bounds() -> None:
    cluster, core = _core_with_a_suspect()
    now_ms = cluster.now_ms
    core._seq = 0  # sequence numbers wrap to 0
    core._next_probe_ms = now_ms + 1000
    core._probe = _Probe(0, "n1", now_ms + 1000, now_ms + 1000)  # ends as the next one starts
    core._forwards = {seq: _Forward("x:1", seq, None, now_ms + 500) for seq in range(FORWARDS_MAX)}
    core._forwards[0] = _Forward("x:1", 0, now_ms + 500, now_ms + 500)
    core._seeds = [f"s:{i}" for i in range(SEEDS_MAX)]
    core._events.extend([None] * (EVENTS_MAX - len(core._events)))
    core.check_invariants()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda c: c._ids.pop(), r"^n0: 2 ids / 3 indexes for 3 other members$"),
        (
            lambda c: c._id_index.__setitem__(c._ids[1], 0),
            r"^n0: ids\[1\] = '(n\d)', indexed at 0$",
        ),
    ],
)
def test_check_invariants_messages_name_the_numbers(corrupt, message) -> None:
    _, core = _core_with_a_suspect()
    corrupt(core)
    with pytest.raises(InvariantViolation, match=message):
        core.check_invariants()
