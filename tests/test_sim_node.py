"""Whole nodes on the simulator: the simulated clock, invariant checks after every step, the
client workload's history, and the node-single scenario -- passing, replaying, and failing when
the node is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from slow_command import Slow

from gossipcache.node import commands as c
from gossipcache.node.core import NodeCore
from gossipcache.store import Store
from sim import WALL_EPOCH_MS, Simulation, scenarios
from sim.node import SIM_NODE_CONFIG, SimClock, SimNode, node_factory
from sim.scenarios import run_scenario
from sim.scenarios_node import NODE_SINGLE, NodeSingleRun, node_single_scenario, setup_single_nodes
from sim.workload import (
    ERROR,
    INDETERMINATE,
    OK,
    PENDING,
    UNAVAILABLE,
    ClientWorkload,
    HistoryEntry,
    canonical,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
A = "node000:7946"


def capturing(scenario_, runs: list[NodeSingleRun], core_class: type[NodeCore] = NodeCore):
    """``scenario_`` with a setup that keeps the run's workload and model in ``runs``."""

    def setup(sim, nodes):
        runs.append(setup_single_nodes(sim, nodes, core_class=core_class))

    return replace(scenario_, setup=setup)


def failed(report) -> dict[str, str]:
    return {check.name: check.message for check in report.checks if not check.passed}


# ---------------------------------------------------------------------------- clock and node


def test_sim_clock_reads_virtual_time_and_the_nodes_wall_clock():
    sim = Simulation(1)
    sim.add_node(A, node_factory(sim))
    clock = SimClock(sim, A)
    sim.run_until(1_000)
    assert clock.monotonic_ms() == 1_000 and clock.timer_ns() == 1_000_000_000
    assert clock.wall_ms() == WALL_EPOCH_MS + 1_000
    sim.set_clock(A, offset_ms=-500, drift_ppm=10_000)
    sim.jump_clock(A, 2_000)
    assert clock.wall_ms() == WALL_EPOCH_MS + 1_000 - 500 + 10 + 2_000
    node = sim.core(A)
    assert isinstance(node, SimNode) and node.clock.wall_ms() == clock.wall_ms()
    assert node.core.membership is None and node.core.store.shard_count == 1


def test_membership_nodes_join_each_other_inside_node_cores():
    sim = Simulation(2)
    addresses = [A, "node001:7946", "node002:7946"]
    factory = node_factory(sim, membership=lambda a: True, seeds=lambda a: addresses)
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(10_000)
    for address in addresses:
        members = sim.core(address).core.membership.members()
        assert {m.address for m in members} == set(addresses)
    assert sim.invariant_checks > 100


# ---------------------------------------------------------------------------- invariant checks


class BrokenInvariants(NodeCore):
    """Fine until 2 s of virtual time, then its self-check fails."""

    def check_invariants(self) -> None:
        super().check_invariants()
        if self.clock.monotonic_ms() >= 2_000:
            raise RuntimeError("deliberately broken")


def test_failing_check_invariants_is_reported_with_node_and_step():
    scenario_ = node_single_scenario("test-broken-invariants", core_class=BrokenInvariants)
    report = run_scenario(scenario_, seed=3, nodes=2, duration_s=5)
    assert not report.passed
    first = report.checks[0]
    assert first.name == "core-invariants" and not first.passed and first.at_ms == 2_000
    assert "node00" in first.message and "deliberately broken" in first.message
    assert "after " in first.message  # the step: tick, client call, ...
    # Switched off per scenario (hence per Simulation), the same core runs to the end.
    quiet = replace(scenario_, check_invariants=False)
    assert run_scenario(quiet, seed=3, nodes=2, duration_s=5).passed


def test_invariant_checks_switch_per_simulation():
    for enabled in (True, False):
        sim = Simulation(1, check_invariants=enabled)
        sim.add_node(A, node_factory(sim, core_class=BrokenInvariants))
        sim.run_until(1_000)
        assert (sim.invariant_checks > 0) == enabled
        if enabled:
            with pytest.raises(Exception, match="deliberately broken"):
                sim.run_until(3_000)
        else:
            sim.run_until(3_000)
    sim.check_invariants = True  # switching on affects the running core too
    with pytest.raises(Exception, match="deliberately broken"):
        sim.run_until(4_000)


# ---------------------------------------------------------------------------- workload history


class SlowNode(NodeCore):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = []
        self.add_command(Slow, self._slow)

    def _slow(self, command: Slow, wall_ms: int):
        pending = self.defer(Slow, command)
        self.waiting.append(pending)
        return pending

    def tick(self, now_ms: int) -> None:
        super().tick(now_ms)
        for pending in self.waiting:
            self.complete(pending, pending.command.tag)
        self.waiting.clear()


def test_history_records_invocations_completions_and_every_outcome():
    sim = Simulation(5)
    workload = ClientWorkload(sim)
    heard: list[tuple[int, str]] = []
    workload.on_complete(lambda entry, node: heard.append((entry.op_id, entry.outcome)))
    sim.add_node(A, node_factory(sim, observers=(workload,), core_class=SlowNode))
    workload.submit_at(10, A, c.Put(b"k", b"v", 500))
    workload.submit_at(20, A, c.Get(b"k"))
    workload.submit_at(30, A, Slow(b"later"))
    workload.submit_at(40, A, c.Members())  # membership is off: the node refuses
    workload.submit_at(45, A, c.Put(b"k", b"x" * 2_000_000))  # too large: the node refuses
    workload.submit_at(210, A, Slow(b"lost"))
    sim.schedule(220, sim.crash, A)  # before the next tick (250 ms)
    workload.submit_at(300, A, c.Get(b"k"))  # down
    sim.schedule(400, sim.restart, A)
    workload.submit_at(500, A, c.Get(b"k"))  # memory lost
    sim.run_until(1_000)

    history = workload.history
    assert [entry.op_id for entry in history] == list(range(1, 9))
    put, get, slow, members, big, lost, down, after = history
    assert (put.kind, put.key, put.value, put.outcome, put.result) == ("put", b"k", b"v", OK, True)
    assert put.invoked_at_ms == put.completed_at_ms == 10 and put.incarnation == 1
    assert put.invoked_wall_ms == WALL_EPOCH_MS + 10 and not put.deferred
    assert (get.kind, get.value, get.outcome, get.result) == ("get", None, OK, b"v")
    assert slow.deferred and slow.outcome == OK and slow.result == b"later"
    # At the next tick: the regular one is at most 50 ms away; while the start-up placement
    # build runs, its slices tick every millisecond.
    assert 30 <= slow.completed_at_ms <= 80
    assert members.outcome == ERROR and "ServiceUnavailable" in members.error
    assert members.key is None and members.keys == ()
    assert big.outcome == ERROR and "TooLarge" in big.error
    assert lost.deferred and lost.outcome == INDETERMINATE and lost.completed_at_ms == 400
    assert down.outcome == UNAVAILABLE and down.error == "down" and down.incarnation == 0
    assert after.incarnation == 2 and after.outcome == OK and after.result is None
    assert workload.open_entries() == []
    assert sorted(heard) == [(entry.op_id, entry.outcome) for entry in history]
    assert all(entry.done for entry in history)
    assert json.loads(json.dumps([entry.to_dict() for entry in history]))[2]["outcome"] == OK


def test_pending_entry_stays_open_until_completed():
    sim = Simulation(5)
    workload = ClientWorkload(sim)
    sim.add_node(A, node_factory(sim, observers=(workload,), core_class=SlowNode))
    sim.run_until(0)  # the node starts
    entry = workload.submit(A, Slow(b"t"))
    assert isinstance(entry, HistoryEntry) and entry.outcome == PENDING and not entry.done
    assert workload.open_entries() == [entry]
    sim.run_until(100)
    assert entry.outcome == OK and workload.open_entries() == []


def test_paused_or_down_node_takes_nothing_and_after_call_needs_a_live_node():
    sim = Simulation(5)
    workload = ClientWorkload(sim)
    sim.add_node(A, node_factory(sim, observers=(workload,)))
    sim.run_until(0)
    sim.pause(A, 100)
    paused = workload.submit(A, c.Get(b"k"))
    assert (paused.outcome, paused.error, paused.invoked_wall_ms) == (UNAVAILABLE, "paused", None)
    sim.run_until(200)
    assert workload.submit(A, c.Put(b"k", b"v")).outcome == OK
    sim.crash(A)
    with pytest.raises(ValueError, match="down"):
        sim.after_call(A)


def test_canonical_form_does_not_depend_on_set_order():
    first = c.Expire(b"k", 5, conditions=frozenset(["xx", "lt"]))
    second = c.Expire(b"k", 5, conditions=frozenset(["lt", "xx"]))
    assert (
        canonical(first)
        == canonical(second)
        == ("Expire(key=b'k', ttl_ms=5, expires_at_ms=None, conditions={'lt', 'xx'})")
    )
    assert canonical({"b": {2, 1}, "a": (1, [b"x"])}) == "{'a': (1, [b'x']), 'b': {1, 2}}"


# ---------------------------------------------------------------------------- node-single


def test_node_single_is_registered():
    assert scenarios.get("node-single") is NODE_SINGLE
    assert "node-single" in scenarios.names()


@pytest.mark.parametrize("seed", [1, 2, 3, 7])
def test_node_single_passes_and_is_never_empty(seed):
    runs: list[NodeSingleRun] = []
    report = run_scenario(capturing(NODE_SINGLE, runs), seed=seed)
    assert report.passed, failed(report)
    (run,) = runs
    counts = run.model.counts
    for name in ("reads_checked", "writes", "get_hits", "get_misses"):
        assert counts[name] > 100, name
    for name in ("ttl_remaining", "expired_lazy", "expired_active", "put_at_past"):
        assert counts[name] > 10, name
    for name in ("expire_deleted", "put_condition_failed", "expire_condition_failed"):
        assert counts[name] > 0, name
    assert counts["wall_steps_back"] > 0 and counts["memory_lost"] > 0
    assert report.coverage["clock_jump"] > 0 and report.coverage["crash"] > 0
    assert counts["ops"] == len(run.workload.history)
    assert run.model.sim.invariant_checks > len(run.workload.history)
    messages = {check.name: check.message for check in report.checks}
    assert "reads checked" in messages["coverage"] and "crashes" in messages["coverage"]


def test_node_single_replays_in_process():
    first = run_scenario(NODE_SINGLE, seed=11, duration_s=10)
    again = run_scenario(NODE_SINGLE, seed=11, duration_s=10)
    other = run_scenario(NODE_SINGLE, seed=12, duration_s=10)
    assert first == again
    assert first.digest != other.digest


def cli_digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    completed = subprocess.run(
        [sys.executable, "-m", "sim", "run", "node-single", "--seed", "7", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(completed.stdout)
    assert report["passed"], report["checks"]
    return report["digest"]


def test_node_single_digest_is_identical_across_processes_and_hash_seeds():
    in_process = run_scenario(NODE_SINGLE, seed=7).digest
    assert cli_digest("0") == cli_digest("12345") == in_process


# ---------------------------------------------------------------------------- the checker fails


class ExpiryBlindGet(NodeCore):
    """Get returns whatever the store holds, expired or not."""

    def _get_handler(self):
        def get(command, wall_ms):
            _, key = command
            return self.store._shard(key).values.get(key)

        return get


class TtlOffByOne(NodeCore):
    def _ttl(self, command, wall_ms):
        ttl_ms = self.store.ttl_ms(command.key, wall_ms)
        return ttl_ms + 1 if ttl_ms > 0 else ttl_ms


class EagerActiveExpiry(NodeCore):
    """Active expiry collects entries 100 ms before their time."""

    def tick(self, now_ms):
        if self._next_expire_ms <= now_ms:
            self.store.expire_tick(self.clock.wall_ms() + 100)
        super().tick(now_ms)


class IfAbsentIgnored(NodeCore):
    def _put(self, command, wall_ms):
        if command.condition == c.IF_ABSENT:
            return super()._put(c.Put(command.key, command.value, command.ttl_ms), wall_ms)
        return super()._put(command, wall_ms)


class TinyStore(NodeCore):
    """A store so small it must evict: the model cannot be exact, and says so."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store = Store(2_000, SIM_NODE_CONFIG.eviction)


@pytest.mark.parametrize(
    ("core_class", "expected"),
    [
        (ExpiryBlindGet, "expected None, got b'v"),
        (TtlOffByOne, "Ttl("),
        (EagerActiveExpiry, "dropped live"),
        (IfAbsentIgnored, "condition='nx'"),
        (TinyStore, "evictions"),
    ],
)
def test_model_catches_a_wrong_node(core_class, expected):
    scenario_ = node_single_scenario(f"test-{core_class.__name__}", core_class=core_class)
    report = run_scenario(scenario_, seed=5, duration_s=10)
    problems = failed(report)
    assert "model-exact" in problems, report.checks
    assert expected in problems["model-exact"]
    if core_class is TinyStore:
        assert "no-eviction" in problems
