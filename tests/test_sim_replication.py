"""Replicated whole nodes on the simulator (issue 9's must-show): 200 seeds of the replication
scenarios must pass every checker; the checkers must reject a cluster that does not replicate
(islands); each checker's rules on small hand-written histories; lazy placement tables equal
full builds; ``python -m sim run --seeds``."""

from __future__ import annotations

import itertools
import random
import weakref
from dataclasses import dataclass, field, replace

import pytest

from gossipcache.node import commands as c
from gossipcache.placement import BUCKET_COUNT, Placement, PlacementMember
from gossipcache.store import Store
from sim import WALL_EPOCH_MS, Simulation, scenarios
from sim.cli import main
from sim.lazy_placement import LazyPlacement, LazyPlacementObserver, LazyPlacementView
from sim.node import node_factory
from sim.replication_checks import (
    HistoryIndex,
    check_deletes_hold,
    check_no_lost_writes,
    check_reads_valid,
    check_stale_reads_one,
    true_wall_ms,
)
from sim.scenarios import run_scenario
from sim.scenarios_replication import (
    NODE_CONFIG,
    REPLICATION_SCENARIOS,
    SCENARIO_FAULTS,
    LevelBlindCore,
    ReplicationFaults,
    replication_scenario,
    run_of,
)
from sim.simulation import node_addresses
from sim.workload import ERROR, INDETERMINATE, OK, HistoryEntry

#: Seeds per replication scenario in CI: 4 scenarios x 50 = 200 seeds.
SEEDS_PER_SCENARIO = 50
SEED_CHUNK = 10


def _failures(report) -> dict[str, str]:
    return {check.name: check.message for check in report.checks if not check.passed}


# ---------------------------------------------------------------------------- the must-show


@pytest.mark.parametrize("first_seed", range(0, SEEDS_PER_SCENARIO, SEED_CHUNK))
@pytest.mark.parametrize("name", sorted(REPLICATION_SCENARIOS))
def test_replication_scenarios_pass_every_checker(name: str, first_seed: int):
    scenario_ = REPLICATION_SCENARIOS[name]
    failed = {}
    checked = 0
    for seed in range(first_seed, first_seed + SEED_CHUNK):
        report = run_scenario(scenario_, seed=seed)
        if not report.passed:
            failed[report.replay_command] = _failures(report)
            continue
        lost = next(check for check in report.checks if check.name == "no-lost-writes")
        checked += int(lost.message.split()[0])  # "N acknowledged quorum/all writes checked"
    assert not failed, failed
    assert checked >= SEED_CHUNK * 20  # green runs are not empty


def test_the_ci_seed_set_has_200_seeds():
    assert len(REPLICATION_SCENARIOS) * SEEDS_PER_SCENARIO >= 200


@pytest.mark.parametrize("name", sorted(SCENARIO_FAULTS))
def test_checkers_reject_islands(name: str):
    """Standalone nodes (no membership, levels ignored): every write lands on one node only.
    The same workload and sweep must fail the black-box and white-box checkers."""
    description, faults = SCENARIO_FAULTS[name]
    islands = replication_scenario(
        f"test-islands-{name}", description, faults, core_class=LevelBlindCore, membership=False
    )
    for seed in range(2):
        report = run_scenario(islands, seed=seed)
        failures = _failures(report)
        assert "no-exception" not in failures and "core-invariants" not in failures
        assert "superseded by acknowledged op" in failures["no-lost-writes"] or (
            "is lost" in failures["no-lost-writes"]
        )
        assert "carry no version" in failures["no-lost-writes"]
        assert "after delete op" in failures["deletes-hold"]
        assert "replicas-agree" in failures
        # What islands do right stays green: values read were written and within their TTL.
        assert "reads-valid" not in failures
        assert "stale-reads-one" not in failures


def test_replication_runs_replay_exactly_and_cover_their_faults():
    """Levels dropped and membership on: today's islands, tomorrow's replicated cluster at the
    default levels; either way the run completes, replays to the same digest and fires every
    planned fault."""
    description, faults = SCENARIO_FAULTS["replication-mixed"]
    scenario_ = replication_scenario("test-mixed", description, faults, core_class=LevelBlindCore)
    first = run_scenario(scenario_, seed=11)
    again = run_scenario(scenario_, seed=11)
    assert first.digest == again.digest and first.checks == again.checks
    assert "no-exception" not in _failures(first)
    assert "faults-fired" not in _failures(first)
    assert all(first.coverage.get(kind, 0) > 0 for kind in faults.planned_kinds())
    assert first.coverage["crash"] == 2 and first.coverage["pause"] == 1


def test_faults_fired_fails_when_a_planned_fault_never_fires():
    """A plan naming a pause that was never scripted: faults-fired must say so."""
    faults = ReplicationFaults(crashes=1)
    scenario_ = replication_scenario(
        "test-missing-fault", "d", faults, core_class=LevelBlindCore, membership=False
    )

    def phases(sim, safety_end_ms, end_ms):
        scenario_.phases(sim, safety_end_ms, end_ms)
        run_of(sim).faults = ReplicationFaults(crashes=1, pauses=1)  # planned after scripting

    report = run_scenario(replace(scenario_, phases=phases), seed=1)
    assert "planned faults that never fired: pause" in _failures(report)["faults-fired"]


def test_wipes_stay_within_r_minus_1():
    with pytest.raises(ValueError, match="R - 1"):
        ReplicationFaults(crashes=3)


# ---------------------------------------------------------------------------- a reference cluster

#: How long the reference cluster keeps a delete's tombstone (the contract's grace period).
TOMBSTONE_GRACE_MS = 3_600_000
_SHARED_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ReferenceCore(LevelBlindCore):
    """A cluster that is right by construction: every node serves one store shared by the
    whole simulation (it survives crashes), and every write is applied at once with a version
    from one counter, answered through a ``Pending`` carrying it. Linearizable, never loses a
    write: the replication checkers must pass on it under every fault (no false alarms)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        sim = self.clock._sim
        shared = _SHARED_STORES.setdefault(
            sim,
            (
                Store(self.config.size_bytes_max, "lru"),
                itertools.count(WALL_EPOCH_MS << 80, 1 << 64),
            ),
        )
        self.store, self._versions = shared

    def execute(self, command: c.Command, wall_ms: int) -> object:
        kind = command.name
        if kind not in ("get", "put", "delete", "expire", "persist"):
            return super().execute(command, wall_ms)
        key = command.keys[0] if kind == "delete" else command.key
        held = self.store.lookup(key, wall_ms)
        live = held is not None and held[0] is not None
        if kind == "get":
            return held[0] if live else None
        version = next(self._versions)
        if kind == "put":
            expires = None if command.ttl_ms is None else wall_ms + command.ttl_ms
            self.write(key, command.value, version, expires, wall_ms)
            return self.answer(command, True, version)
        if kind == "delete":
            self.write(key, None, version, wall_ms + TOMBSTONE_GRACE_MS, wall_ms)
            return self.answer(command, int(live), version)
        if kind == "expire" and live:
            self.write(key, held[0], version, wall_ms + command.ttl_ms, wall_ms)
            return self.answer(command, True, version)
        if kind == "persist" and live and held[2] is not None:
            self.write(key, held[0], version, None, wall_ms)
            return self.answer(command, True, version)
        return self.answer(command, False, None)

    def write(self, key, value, version, expires_at_ms, wall_ms) -> None:
        self.store.apply(key, value, version, expires_at_ms, wall_ms)

    def answer(self, command: c.Command, result: object, version: int | None):
        pending = self.defer(type(command), command)
        pending.version = version
        self.complete(pending, result)
        return pending


class LosingCore(ReferenceCore):
    """Acknowledges every tenth write without applying it."""

    def write(self, key, value, version, expires_at_ms, wall_ms) -> None:
        if version % 10:
            super().write(key, value, version, expires_at_ms, wall_ms)


class ResurrectingCore(ReferenceCore):
    """Applies deletes, then brings the deleted value back 300 ms later with its old version
    raised above the delete (a repair that copies a stale value over a tombstone)."""

    def write(self, key, value, version, expires_at_ms, wall_ms) -> None:
        held = self.store.lookup(key, wall_ms)
        super().write(key, value, version, expires_at_ms, wall_ms)
        if value is None and held is not None and held[0] is not None:
            self.undo_at = (key, held[0], held[2], self.clock.monotonic_ms() + 300)

    def tick(self, now_ms: int) -> None:
        undo = getattr(self, "undo_at", None)
        if undo is not None and undo[3] <= now_ms:
            self.undo_at = None
            key, value, expires, _ = undo
            super().write(key, value, next(self._versions), expires, self.clock.wall_ms())
        super().tick(now_ms)


def _reference_scenario(name: str, core_class: type) -> scenarios.Scenario:
    description, faults = SCENARIO_FAULTS[name]
    return replication_scenario(
        f"test-reference-{name}", description, faults, core_class=core_class
    )


@pytest.mark.parametrize("name", sorted(SCENARIO_FAULTS))
def test_checkers_pass_a_cluster_that_is_right_by_construction(name: str):
    scenario_ = _reference_scenario(name, ReferenceCore)
    for seed in range(3):
        report = run_scenario(scenario_, seed=seed)
        assert report.passed, (report.replay_command, _failures(report))


def test_checkers_catch_lost_writes_and_resurrected_deletes():
    losing = _reference_scenario("replication-crash", LosingCore)
    resurrecting = _reference_scenario("replication-partition", ResurrectingCore)
    for seed in range(3):
        failures = _failures(run_scenario(losing, seed=seed))
        assert "no-lost-writes" in failures, failures
        failures = _failures(run_scenario(resurrecting, seed=seed))
        assert "after delete op" in failures.get("deletes-hold", ""), failures


# ---------------------------------------------------------------------------- checker rules


@dataclass
class FakeRun:
    """What the checkers read from a ``ReplicationRun``."""

    history: list[HistoryEntry]
    sweep: dict[bytes, HistoryEntry] = field(default_factory=dict)
    clock_error_ms_max: int = 100

    def index(self) -> HistoryIndex:
        return HistoryIndex(self.history, self.clock_error_ms_max)

    def sweep_note(self, key: bytes) -> str:
        return "not swept"


class FakeCluster:
    """A ``ClusterView`` with fixed holdings."""

    def __init__(self, holdings: dict[bytes, dict] | None = None) -> None:
        self.problems: list[str] = []
        self._holdings = holdings or {}

    def holdings(self, key: bytes) -> dict:
        return self._holdings.get(key, {})


class FakeSim:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms


K = b"k"


def op(
    history: list[HistoryEntry],
    command: c.Command,
    invoked: int,
    completed: int | None,
    *,
    outcome: str = OK,
    result: object = True,
    version: int | None = None,
) -> HistoryEntry:
    entry = HistoryEntry(
        op_id=len(history) + 1,
        node="n0",
        incarnation=1,
        kind=command.name,
        key=K,
        keys=(K,),
        value=getattr(command, "value", None) if command.writes else None,
        command=command,
        invoked_at_ms=invoked,
        invoked_wall_ms=true_wall_ms(invoked),
        completed_at_ms=completed,
        outcome=outcome,
        result=result,
        version=version,
        deferred=True,
    )
    history.append(entry)
    return entry


def put(history, value, invoked, completed, level=c.QUORUM, **options):
    ttl_ms = options.pop("ttl_ms", None)
    return op(history, c.Put(K, value, ttl_ms, consistency=level), invoked, completed, **options)


def get(history, result, invoked, completed, level=c.ONE):
    return op(history, c.Get(K, consistency=level), invoked, completed, result=result)


def lost_verdict(history, final_result, *, holdings=None, now_ms=10_000):
    run = FakeRun(history)
    run.sweep[K] = get(history, final_result, now_ms - 10, now_ms - 5, level=c.ALL)
    return check_no_lost_writes(run, FakeSim(now_ms), FakeCluster(holdings))


def test_no_lost_writes_real_time_order_without_versions():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 10)
    put(history, b"v2", 20, 30)
    put(history, b"one", 5, 40, level=c.ONE)  # never required to survive, never superseded
    ok, message = lost_verdict(list(history), b"v1")
    assert not ok and "superseded by acknowledged op 2" in message
    ok, message = lost_verdict(list(history), None)
    assert not ok and "is lost" in message
    for admissible in (b"v2", b"one"):
        ok, message = lost_verdict(list(history), admissible)
        # Only the missing versions fail it.
        assert "superseded" not in message and "is lost" not in message
        assert "2 acknowledged quorum/all writes carry no version" in message


def test_no_lost_writes_concurrent_acks_rewrites_expiry_and_deletes():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 30, version=5)
    put(history, b"v2", 10, 20, version=6)
    ok, message = lost_verdict(list(history), b"v2")
    assert ok, message
    assert message.startswith("2 acknowledged quorum/all writes checked")
    # v1 is concurrent with v2 (not superseded in real time) but older by version.
    ok, message = lost_verdict(list(history), b"v1")
    assert not ok and "older than acknowledged op 2" in message
    # A persist invoked after v1 may carry v1 forward with a newer version.
    carried = list(history)
    op(carried, c.Persist(K, consistency=c.ONE), 40, 50, version=9)
    assert lost_verdict(carried, b"v1")[0]
    # A TTL that passed explains an empty key; an acknowledged delete explains it too.
    expiring = []
    put(expiring, b"t", 0, 10, ttl_ms=500, version=3)
    assert lost_verdict(expiring, None, now_ms=10_000)[0]
    assert not lost_verdict(list(expiring), None, now_ms=300)[0]
    deleted = list(history)
    op(deleted, c.Delete((K,), consistency=c.ALL), 40, 50, result=1, version=8)
    assert lost_verdict(deleted, None)[0]


def test_no_lost_writes_reads_every_live_owner():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 10, version=5)
    holdings = {K: {"a#1": (b"v1", 5, None), "b#1": (b"v0", 4, None), "c#1": None}}
    ok, message = lost_verdict(history, b"v1", holdings=holdings)
    assert not ok
    assert "owner b#1 holds version" in message and "owner c#1 holds nothing" in message
    assert "2 violations" in message


def test_no_lost_writes_fails_when_nothing_was_checked():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 10, level=c.ONE, version=1)
    put(history, b"v2", 20, 30, outcome=ERROR, version=2)
    ok, message = lost_verdict(history, b"v2")
    assert not ok and message.startswith("nothing checked")


def test_reads_valid_rejects_unwritten_values_and_reads_past_expiry():
    history: list[HistoryEntry] = []
    # Expires at 1,000 ms if stamped at invocation, 1,110 ms (+ the clock error of 100 ms) if
    # stamped when answered: readable until 1,210 ms.
    put(history, b"t", 0, 10, ttl_ms=1_000)
    get(history, b"t", 1_150, 1_160)
    run = FakeRun(list(history))
    assert check_reads_valid(run, None)[0]
    get(history, b"t", 1_210, 1_220)
    get(history, b"ghost", 1_200, 1_210)
    ok, message = check_reads_valid(FakeRun(history), None)
    assert not ok and "2 violations" in message
    assert "past its latest expiry" in message and "never written" in message
    # An expire invoked later extends what the value may carry.
    extended: list[HistoryEntry] = []
    put(extended, b"t", 0, 10, ttl_ms=1_000)
    op(extended, c.Expire(K, 5_000, consistency=c.ONE), 500, 510, outcome=INDETERMINATE)
    get(extended, b"t", 3_000, 3_010)
    assert check_reads_valid(FakeRun(extended), None)[0]


def test_deletes_hold_flags_older_values_after_the_ack():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 10, version=1)
    op(history, c.Delete((K,), consistency=c.QUORUM), 20, 30, result=1, version=2)
    get(history, b"v1", 25, 28, level=c.QUORUM)  # concurrent with the delete: allowed
    get(history, b"v1", 40, 45, level=c.ONE)  # one replica may lag: a stale read, not an undo
    assert check_deletes_hold(FakeRun(list(history)), None)[0]
    get(history, b"v1", 40, 45, level=c.QUORUM)
    ok, message = check_deletes_hold(FakeRun(list(history)), None)
    assert not ok and "1 violations" in message and "after delete op 2" in message
    # A newer put of the same key afterwards is fine.
    later: list[HistoryEntry] = []
    op(later, c.Delete((K,), consistency=c.ALL), 20, 30, result=0, version=2)
    put(later, b"v3", 35, 40, level=c.ONE, version=3)
    get(later, b"v3", 50, 55, level=c.ALL)
    assert check_deletes_hold(FakeRun(later), None)[0]


def test_stale_reads_at_one_are_counted_not_failed():
    history: list[HistoryEntry] = []
    put(history, b"v1", 0, 10, version=1)
    put(history, b"v2", 20, 30, version=2)
    get(history, b"v1", 40, 45)  # stale value
    get(history, None, 50, 55)  # stale miss
    get(history, b"v2", 60, 65)
    get(history, b"v1", 15, 18)  # before v2 was acknowledged: not stale
    ok, message = check_stale_reads_one(FakeRun(history), None)
    assert ok and message.startswith("2 of 4 judged reads at one were stale (50.0%")


# ---------------------------------------------------------------------------- lazy placement


def test_lazy_placement_equals_the_full_table():
    rng = random.Random(5)
    members = [
        PlacementMember(f"node{i}:7946#{rng.getrandbits(32):08x}", f"host{i % 4}", None, 1.0)
        for i in range(5)
    ]
    full = Placement.build(members, 3)
    lazy = LazyPlacement(members, 3)
    assert lazy.epoch == full.epoch and lazy.members == full.members
    assert all(lazy.owners_of_bucket(b) == full.owners_of_bucket(b) for b in range(BUCKET_COUNT))
    zoned = [
        PlacementMember(m.node_id, m.host_id, f"z{i % 2}", float(1 + i))
        for i, m in enumerate(members)
    ]
    full, lazy = Placement.build(zoned, 3), LazyPlacement(zoned, 3)
    assert all(lazy.owners_of_key(b"k%d" % i) == full.owners_of_key(b"k%d" % i) for i in range(500))
    assert lazy.buckets_computed <= 500


def test_lazy_view_installs_after_a_full_builds_steps():
    sim = Simulation(3)
    addresses = node_addresses(3)
    factory = node_factory(
        sim, NODE_CONFIG, observers=(LazyPlacementObserver(),), seeds=lambda a: addresses
    )
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(3_000)
    views = [sim.core(address).core.placement for address in addresses]
    assert all(type(view) is LazyPlacementView for view in views)
    assert len({view.epoch for view in views}) == 1
    assert not any(view.busy for view in views)
    assert len(views[0].table.members) == 3


# ---------------------------------------------------------------------------- the CLI


def test_run_seeds_prints_each_failing_seed_with_its_replay(capsys):
    description, faults = SCENARIO_FAULTS["replication-crash"]
    islands = replication_scenario(
        "test-cli-islands", description, faults, core_class=LevelBlindCore, membership=False
    )
    scenarios.register(islands)
    try:
        code = main(["run", "test-cli-islands", "--seeds", "2", "--seed", "4"])
    finally:
        scenarios.unregister("test-cli-islands")
    out = capsys.readouterr().out
    assert code == 1
    assert "seeds: 4..5" in out and "result: 0/2 seeds passed" in out
    assert "FAIL seed 4: " in out and "FAIL seed 5: " in out
    assert "replay: python -m sim run test-cli-islands --nodes 5 --seed 5 --duration-s 5" in out


#: Seeds that found a bug (each fixed; docs/design.md §10 tells the story), replayed in CI
#: whatever the seed range above covers.
SEEDS_THAT_FOUND_BUGS = (
    ("replication-crash", 36),  # a restarted node acknowledged an `all` write as sole owner
    ("replication-crash", 87),  # a restamped write's Pending kept its first version
    ("replication-mixed", 92),  # a partial member list: writes on the wrong owners
    ("replication-mixed", 65),  # two restarted nodes formed a cluster of their own
    ("replication-partition", 97),  # overlapping bursts: duplication never fired
    ("replication-mixed", 355),  # two owners wiped: a quorum read met only them (refill fixes)
)


@pytest.mark.parametrize(("name", "seed"), SEEDS_THAT_FOUND_BUGS)
def test_seeds_that_found_bugs_stay_green(name: str, seed: int):
    report = run_scenario(REPLICATION_SCENARIOS[name], seed=seed)
    assert report.passed, _failures(report)
