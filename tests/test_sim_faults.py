"""The fault suite (issue 10): the faults-* scenarios over the CI seeds, every planned fault kind
fired across them (green runs are not empty), the new fault shapes (bridge, flapping link,
join, graceful leave), the convergence checker on hand-made disagreements, the budget, and
``python -m sim soak``."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

import sim.convergence as sim_convergence
from gossipcache.node.core import NodeCore
from gossipcache.placement import bucket_of
from sim import Simulation, scenarios
from sim.cli import main
from sim.convergence import SKIPPED, ConvergenceWatch, differing_buckets
from sim.faults import FaultInjector, FaultPlan, FlappingLink, bridge_partition
from sim.lazy_placement import LazyPlacementObserver
from sim.node import node_factory
from sim.scenarios import run_scenario
from sim.scenarios_faults import (
    FAULT_SUITE_SCENARIOS,
    SUITE_FAULTS,
    FaultSuiteFaults,
    fault_suite_scenario,
)
from sim.scenarios_replication import NODE_CONFIG, LevelBlindCore
from sim.simulation import node_addresses
from tests.test_sim_replication import LosingCore, ReferenceCore

#: CI seeds per fault-suite scenario. A seed costs ~5 s of CPU with anti-entropy and the
#: store's bucket tracking checked after every simulator step; these ranges cover the seeds
#: that found bugs (faults-membership 1 and faults-mixed 2: one delete's tombstones kept with
#: different collection instants; faults-membership 10: a "leaving" record lost to a
#: partition, so the leave stalled). ``python -m sim soak`` runs many more.
CI_SEEDS = {"faults-mixed": range(0, 4), "faults-membership": range(0, 6)}
SEED_CHUNK = 5

#: Seeds that fail on the node (the lead's code), left out of CI; replay with
#: ``python -m sim run NAME --nodes 5 --seed S --duration-s 8``. With anti-entropy (main at
#: 3860705): the joined node005's summary of one or two buckets still differs from its
#: co-owners' 10 s (11-12 rounds) after the cluster settled. Before it, faults-membership seeds
#: 1, 2, 4, 8, 9, 11, 13, 15, 19-22, 25, 26, 39, 40, 51, 55, 57 lost the leave announcement
#: and faults-mixed 80 coordinated a quorum delete on a partial member list (docs/design.md).
#: Both seeds below were tombstones of one delete kept with different collection instants
#: (the store shortened it on replicas that held an expiring value); fixed, and kept in CI.
KNOWN_NODE_BUGS: dict[tuple[str, int], str] = {}

#: Seeds beyond the CI ranges that found a bug (fixed), replayed in CI.
SEEDS_THAT_FOUND_BUGS = (
    ("faults-membership", 10),  # a "leaving" record lost to a partition: the leave stalled
    ("faults-membership", 4),  # the Leave datagram lost: the leaver, dead, kept its buckets
    # A joined node crashed while starting and restarted: some nodes placed its address for
    # its dead "starting" record, others not, so their shared bucket sets never matched and
    # every anti-entropy round of the new process was refused (BUSY): it filled forever.
    ("faults-mixed", 29),
)


@pytest.mark.parametrize(("name", "seed"), SEEDS_THAT_FOUND_BUGS)
def test_seeds_that_found_bugs_stay_green(name: str, seed: int):
    report = run_scenario(FAULT_SUITE_SCENARIOS[name], seed=seed)
    assert report.passed, _failures(report)


def _failures(report) -> dict[str, str]:
    return {check.name: check.message for check in report.checks if not check.passed}


def _leading_int(message: str) -> int:
    return int(message.split()[0])


# ---------------------------------------------------------------------------- the CI seeds


@pytest.mark.parametrize(
    ("name", "first_seed"),
    [(name, first) for name, seeds in CI_SEEDS.items() for first in seeds[::SEED_CHUNK]],
)
def test_fault_suite_scenarios_pass_and_cover_every_planned_kind(name: str, first_seed: int):
    scenario_ = FAULT_SUITE_SCENARIOS[name]
    failed = {}
    coverage: Counter[str] = Counter()
    acked = values = runs = 0
    for seed in range(first_seed, min(first_seed + SEED_CHUNK, CI_SEEDS[name].stop)):
        if (name, seed) in KNOWN_NODE_BUGS:
            continue
        report = run_scenario(scenario_, seed=seed)
        runs += 1
        if not report.passed:
            failed[report.replay_command] = _failures(report)
            continue
        coverage.update(report.coverage)
        checks = {check.name: check.message for check in report.checks}
        acked += _leading_int(checks["no-lost-writes"])
        values += _leading_int(checks["reads-valid"])
    assert not failed, failed
    planned = SUITE_FAULTS[name][1].planned_kinds()
    assert all(coverage[kind] >= runs for kind in planned), (planned, coverage)
    assert acked >= runs * 50 and values >= runs * 50, (acked, values)


@pytest.mark.parametrize("name", sorted(SUITE_FAULTS))
def test_the_suite_checkers_pass_a_cluster_right_by_construction(name: str):
    """No false alarms under bridges, flaps, joins and leaves: one shared store, one version
    counter (``ReferenceCore`` of test_sim_replication)."""
    description, faults = SUITE_FAULTS[name]
    scenario_ = fault_suite_scenario(
        f"test-ref-{name}", description, faults, core_class=ReferenceCore
    )
    # Seeds 0 and 4 of faults-membership lose the leave announcement here (LEAVE_LOST above;
    # membership is the node's own): the layout checker rightly fails them.
    for seed in (1, 2):
        report = run_scenario(scenario_, seed=seed)
        assert report.passed, (report.replay_command, _failures(report))


@pytest.mark.parametrize("name", sorted(SUITE_FAULTS))
def test_the_suite_checkers_reject_islands_and_lost_writes(name: str):
    description, faults = SUITE_FAULTS[name]
    islands = fault_suite_scenario(
        f"test-islands-{name}", description, faults, core_class=LevelBlindCore, membership=False
    )
    report = run_scenario(islands, seed=0)
    failures = _failures(report)
    assert "no-lost-writes" in failures and "deletes-hold" in failures, failures
    # The suite's faults fire on islands too (islands send no datagram to lose or duplicate).
    assert all(report.coverage.get(kind) for kind in ("bridge_partition", "flapping_link", "join"))
    losing = fault_suite_scenario(f"test-losing-{name}", description, faults, core_class=LosingCore)
    assert "no-lost-writes" in _failures(run_scenario(losing, seed=0))


# ---------------------------------------------------------------------------- the fault shapes


def _idle_sim(count: int = 5) -> Simulation:
    sim = Simulation(3)
    for address in node_addresses(count):
        sim.add_node(address, node_factory(sim))
    return sim


def test_bridge_partition_leaves_one_node_reaching_both_sides():
    sim = _idle_sim()
    rng = sim.rng("test")
    for _ in range(20):
        partition_id = bridge_partition(sim, rng, sim.addresses)
        bridges = [
            a
            for a in sim.addresses
            if not any(sim.is_blocked(a, b) or sim.is_blocked(b, a) for b in sim.addresses)
        ]
        assert len(bridges) == 1
        cut = {a for a in sim.addresses if a not in bridges}
        blocked = {(a, b) for a in cut for b in cut if sim.is_blocked(a, b)}
        # Two non-empty sides, fully cut both ways.
        assert blocked and all((b, a) in blocked for a, b in blocked)
        sim.heal(partition_id)
    assert sim.coverage["bridge_partition"] == 20 and "partition" not in sim.coverage
    assert bridge_partition(sim, rng, sim.addresses[:2]) is None


def test_flapping_link_toggles_within_bounds_and_ends_open():
    sim = _idle_sim(2)
    a, b = sim.addresses
    states: list[tuple[int, bool]] = []

    def sample() -> None:
        states.append((sim.now_ms, sim.is_blocked(a, b)))
        if sim.now_ms < 4_000:
            sim.schedule(sim.now_ms + 10, sample)

    FlappingLink(sim, sim.rng("flap"), a, b, (100, 500), until_ms=3_000).start()
    sample()
    sim.run_until(4_000)
    changes = [t for (t, s), (_, before) in zip(states[1:], states) if s != before]
    assert len(changes) >= 5  # 3 s of spells of 100-500 ms
    gaps = [later - earlier for earlier, later in zip(changes, changes[1:])]
    assert all(90 <= gap <= 510 for gap in gaps), gaps
    assert not sim.is_blocked(a, b) and not sim.is_blocked(b, a)
    assert sim.coverage["flapping_link"] == 1 and sim.coverage["link_flap"] >= 3


def test_the_injector_fires_bridges_and_flaps_and_heals_them():
    sim = _idle_sim()
    plan = FaultPlan(bridges_per_min=30.0, flaps_per_min=30.0, flap_ms=(2_000, 4_000))
    injector = FaultInjector(sim, plan, safety_end_ms=20_000)
    injector.start()
    sim.schedule(20_000, injector.heal)
    sim.run_until(25_000)
    assert sim.coverage["bridge_partition"] >= 3 and sim.coverage["flapping_link"] >= 3
    assert not any(sim.is_blocked(a, b) for a in sim.addresses for b in sim.addresses)
    with pytest.raises(ValueError, match="flap_toggle_ms"):
        FaultPlan(flap_toggle_ms=(0, 10))


def test_budget_counts_crashes_joins_and_leaves():
    assert FaultSuiteFaults(crashes=1, joins=1).memory_losses == 2
    with pytest.raises(ValueError, match="crashes \\+ joins \\+ leaves"):
        FaultSuiteFaults(crashes=1, joins=1, leaves=1)
    with pytest.raises(ValueError, match="non-negative"):
        FaultSuiteFaults(flaps=-1)


def test_join_and_leave_change_the_final_layout():
    """A run of faults-membership: the joined address is an owner in the final table, the node
    that left is stopped (not counted as a crash) and no owner any more."""
    report = run_scenario(FAULT_SUITE_SCENARIOS["faults-membership"], seed=0)
    assert report.passed, _failures(report)
    fired = report.coverage
    assert fired["join"] == fired["leave"] == fired["leave_stopped"] == 1
    assert "crash" not in fired and "restart" not in fired
    message = {check.name: check.message for check in report.checks}["faults-fired"]
    assert "joined ['node005:7946'], left ['node" in message


class LeaveNeverFinishes(NodeCore):
    """``leave_finished`` stays False: the suite must stop the node anyway and fail."""

    def begin_leave(self, now_ms: int) -> None:
        self.leave(now_ms)

    @property
    def leave_finished(self) -> bool:
        return False


def test_a_leave_that_never_finishes_fails_faults_fired():
    description, faults = SUITE_FAULTS["faults-membership"]
    scenario_ = fault_suite_scenario(
        "test-stuck-leave", description, faults, core_class=LeaveNeverFinishes
    )
    report = run_scenario(scenario_, seed=0)
    assert "leaves not finished within 15000 ms" in _failures(report)["faults-fired"]


# ---------------------------------------------------------------------------- convergence


#: Anti-entropy off: these tests make and mend the differences themselves.
_NO_REPAIR_CONFIG = replace(NODE_CONFIG, antientropy_interval_ms=0)


def _formed_cluster() -> Simulation:
    sim = Simulation(9)
    addresses = node_addresses(4)
    factory = node_factory(
        sim, _NO_REPAIR_CONFIG, observers=(LazyPlacementObserver(),), seeds=lambda a: addresses
    )
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(3_000)
    return sim


@pytest.fixture
def watched(monkeypatch):
    """The watch treats the cluster as running anti-entropy (it is off: nothing but the test
    repairs), so it waits instead of skipping."""
    monkeypatch.setattr(sim_convergence, "antientropy_missing", lambda sim: False)


def _owners(sim: Simulation, key: bytes) -> list[str]:
    table = sim.core(sim.addresses[0]).core.placement.table
    return [owner.partition("#")[0] for owner in table.owners_of_key(key)]


def _put(sim: Simulation, address: str, key: bytes, value: bytes, version: int) -> None:
    wall_ms = sim.wall_ms(address)
    sim.core(address).core.store.apply(key, value, version, None, wall_ms)


def test_differing_buckets_compares_the_live_owners_only():
    sim = _formed_cluster()
    key = b"rk:converge"
    owners = _owners(sim, key)
    outsider = next(a for a in sim.addresses if a not in owners)
    for address in owners[:2]:
        _put(sim, address, key, b"v", 7)
    _put(sim, outsider, key, b"stale", 5)  # not an owner: ignored
    compared, differing, problems = differing_buckets(sim)
    assert not problems and compared == 1
    assert len(differing) == 1 and differing[0].startswith(f"bucket {bucket_of(key)}: ")
    _put(sim, owners[2], key, b"v", 7)
    assert differing_buckets(sim)[:2] == (1, [])


def test_convergence_watch_waits_for_agreement_and_reports_the_time(watched):
    sim = _formed_cluster()
    key = b"rk:later"
    owners = _owners(sim, key)
    _put(sim, owners[0], key, b"v", 7)
    swept = []
    watch = ConvergenceWatch(sim, bound_ms=5_000)
    watch.start(lambda: swept.append(sim.now_ms))

    def repair() -> None:  # what anti-entropy would do, 1.2 s later
        for address in owners[1:]:
            _put(sim, address, key, b"v", 7)

    sim.schedule(sim.now_ms + 1_200, repair)
    sim.run_until(sim.now_ms + 6_000)
    passed, message = watch.verdict()
    assert passed and "owners agree 1.25 s after the cluster settled (bound 5 s)" in message
    assert "anti-entropy rounds" in message and swept == [watch.converged_ms]

    stuck = ConvergenceWatch(sim, bound_ms=2_000)
    _put(sim, owners[1], key, b"w", 8)
    stuck.start(lambda: swept.append(sim.now_ms))
    sim.run_until(sim.now_ms + 3_000)
    passed, message = stuck.verdict()
    assert not passed and "owners still differ 2 s after" in message, message
    assert f"bucket {bucket_of(key)}" in message and len(swept) == 2


def test_convergence_is_skipped_without_anti_entropy():
    sim = _formed_cluster()
    watch = ConvergenceWatch(sim, bound_ms=1_000)
    assert watch.verdict()[0] is False  # never started
    watch.start(lambda: None)
    assert watch.verdict() == (True, SKIPPED)


# ---------------------------------------------------------------------------- soak


def test_soak_prints_progress_failures_replays_and_coverage(capsys):
    # A copy of faults-mixed whose extra checker fails on even seeds: the soak must report
    # that seed with its replay command and still count the other.
    base = scenarios.get("faults-mixed")
    name = "faults-test-even-seeds-fail"

    def odd_seeds_only(sim):
        return sim.seed % 2 == 1, f"seed {sim.seed} is even"

    failing = replace(
        base, name=name, checkers=(*base.checkers, scenarios.Checker("odd-seed", odd_seeds_only))
    )
    scenarios.register(failing)
    try:
        code = main(["soak", "--seeds", "2", "--scenario", name, "--first-seed", "1"])
    finally:
        scenarios.unregister(name)
    out = capsys.readouterr().out
    assert code == 1
    assert f"soak: {name}  seeds: 1..2  runs: 2  jobs: 1" in out
    assert f"FAIL {name} seed 2: odd-seed" in out
    assert f"replay: python -m sim run {name} --nodes 5 --seed 2 --duration-s 8" in out
    assert "bridge_partition=2" in out and "join=2" in out
    assert "result: 1/2 runs passed" in out
    assert main(["soak", "--seeds", "1", "--scenario", "nope"]) == 2
