"""Scenarios, phases, checkers, the fault injector, the CLI and cross-process determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import scenarios
from sim.cli import main
from sim.faults import FaultPlan
from sim.scenarios import Checker, CheckMode, Scenario, run_scenario
from sim.scenarios_toy import TOY_GOSSIP, add_rumor_nodes
from sim.toy import PingCore

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def throwaway_scenarios():
    """Names registered through this fixture are unregistered after the test."""
    names: list[str] = []

    def add(scenario_: Scenario) -> Scenario:
        names.append(scenario_.name)
        return scenarios.register(scenario_)

    yield add
    for name in names:
        scenarios.unregister(name)


def test_registry_lists_toy_scenarios_and_rejects_duplicates():
    assert {"toy-gossip", "toy-calm"} <= set(scenarios.names())
    assert scenarios.get("toy-gossip") is TOY_GOSSIP
    scenarios.register(TOY_GOSSIP)  # the same object again is fine
    with pytest.raises(ValueError):
        scenarios.register(replace(TOY_GOSSIP, description="impostor"))
    with pytest.raises(KeyError, match="toy-gossip"):
        scenarios.get("no-such-scenario")


def test_decorator_registers_a_setup():
    @scenarios.scenario("test-decorated", "decorated setup", fault_plan=FaultPlan.none())
    def decorated(sim, nodes):
        add_rumor_nodes(sim, nodes)

    try:
        assert isinstance(decorated, Scenario)
        assert scenarios.get("test-decorated") is decorated
        assert run_scenario(decorated, seed=1, nodes=2, duration_s=1).passed
    finally:
        scenarios.unregister("test-decorated")


def test_toy_gossip_passes_and_every_fault_kind_fires():
    report = run_scenario(TOY_GOSSIP, seed=11, nodes=6, duration_s=60)
    assert report.passed, report.checks
    for kind in (
        "crash",
        "restart",
        "pause",
        "partition",
        "clock_jump",
        "datagram_lost",
        "datagram_duplicated",
        "datagram_reordered",
        "stream_break",
    ):
        assert report.coverage.get(kind, 0) > 0, kind
    assert report.coverage.get("clog_drop", 0) + report.coverage.get("clog_delay", 0) > 0
    converged = next(c for c in report.checks if c.name == "converged")
    assert converged.passed and 60_000 <= converged.at_ms <= 90_000


def test_same_seed_same_report_different_seed_different_digest():
    first = run_scenario(TOY_GOSSIP, seed=5, nodes=4, duration_s=10)
    again = run_scenario(TOY_GOSSIP, seed=5, nodes=4, duration_s=10)
    other = run_scenario(TOY_GOSSIP, seed=6, nodes=4, duration_s=10)
    assert first == again
    assert first.digest != other.digest


def never(sim):
    return False, "this checker always fails"


def test_always_checker_failure_is_reported_with_its_time(throwaway_scenarios):
    failing = throwaway_scenarios(
        replace(
            TOY_GOSSIP,
            name="test-always-fails",
            checkers=(Checker("never", never, CheckMode.ALWAYS, interval_ms=700),),
        )
    )
    report = run_scenario(failing, seed=1, nodes=3, duration_s=5)
    assert not report.passed
    (check,) = report.checks
    assert check.at_ms == 700 and check.message == "this checker always fails"


def test_eventually_checker_must_hold_during_liveness(throwaway_scenarios):
    failing = throwaway_scenarios(
        replace(
            TOY_GOSSIP,
            name="test-never-converges",
            checkers=(Checker("never", never, CheckMode.EVENTUALLY),),
            liveness_s=3,
        )
    )
    (check,) = run_scenario(failing, seed=1, nodes=3, duration_s=2).checks
    assert not check.passed and "did not converge" in check.message


def test_checker_exception_and_core_exception_fail_the_run(throwaway_scenarios):
    def broken_checker(sim):
        raise RuntimeError("checker bug")

    def exploding_core(context):
        core = PingCore(context)
        core.handle = lambda *args: (_ for _ in ()).throw(RuntimeError("core bug"))
        return core

    def setup(sim, nodes):
        for index in range(nodes):
            sim.add_node(f"n{index}:1", exploding_core)

    failing = throwaway_scenarios(
        Scenario(
            "test-exploding",
            "a core that raises",
            setup,
            checkers=(Checker("broken", broken_checker, CheckMode.FINAL),),
            fault_plan=FaultPlan.none(),
        )
    )
    report = run_scenario(failing, seed=1, nodes=2, duration_s=5)
    assert [c.name for c in report.checks] == ["no-exception", "broken"]
    assert "core bug" in report.checks[0].message
    assert not report.passed


def test_cli_list_and_run_pass(capsys):
    assert main(["list"]) == 0
    assert "toy-gossip" in capsys.readouterr().out
    assert main(["run", "toy-calm", "--nodes", "3", "--seed", "4", "--duration-s", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed: 4" in out and "PASS converged" in out and "digest: " in out
    assert "replay:" not in out


def test_cli_failure_prints_replay_command(capsys, throwaway_scenarios):
    throwaway_scenarios(
        replace(TOY_GOSSIP, name="test-cli-fails", checkers=(Checker("never", never),))
    )
    code = main(["run", "test-cli-fails", "--nodes", "3", "--seed", "77", "--duration-s", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL never" in out
    assert "replay: python -m sim run test-cli-fails --nodes 3 --seed 77 --duration-s 2" in out


def test_cli_json_and_unknown_names(capsys):
    assert main(["run", "toy-calm", "--nodes", "3", "--seed", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] == 4 and report["passed"] and len(report["digest"]) == 64
    assert main(["run", "no-such-scenario"]) == 2
    assert main(["bench", "no-such-bench"]) == 2
    assert main(["bench"]) == 0
    assert "toy:" in capsys.readouterr().out


def test_toy_bench_runs(capsys):
    args = ["bench", "toy", "--core", "ping", "--nodes", "5", "--duration-s", "5", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] > 0 and result["virtual_s"] == 5


def cli_digest(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    completed = subprocess.run(
        [sys.executable, "-m", "sim", "run", "toy-gossip", "--nodes", "4", "--seed", "9"]
        + ["--duration-s", "5", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)["digest"]


def test_digest_is_identical_across_processes_and_hash_seeds():
    assert cli_digest("0") == cli_digest("12345")


fault_plans = st.builds(
    FaultPlan,
    datagram_loss_rate=st.floats(0, 0.5),
    datagram_duplicate_rate=st.floats(0, 0.3),
    spike_rate=st.floats(0, 0.1),
    partitions_per_min=st.floats(0, 20),
    partition_asymmetric_fraction=st.floats(0, 1),
    clogs_per_min=st.floats(0, 20),
    crashes_per_min=st.floats(0, 20),
    pauses_per_min=st.floats(0, 20),
    clock_jumps_per_min=st.floats(0, 20),
    clock_offset_ms_max=st.integers(0, 60_000),
    clock_drift_ppm_max=st.integers(0, 10_000),
    down_nodes_max=st.none() | st.integers(0, 3),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), plan=fault_plans, nodes=st.integers(2, 6))
def test_any_seed_and_fault_plan_keeps_toy_invariants_and_replays(seed, plan, nodes):
    report = run_scenario(TOY_GOSSIP, seed=seed, nodes=nodes, duration_s=8, fault_plan=plan)
    assert report.passed, [c for c in report.checks if not c.passed]
    rerun = run_scenario(TOY_GOSSIP, seed=seed, nodes=nodes, duration_s=8, fault_plan=plan)
    assert rerun.digest == report.digest


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), limit=st.integers(0, 2))
def test_injector_respects_the_down_nodes_budget(seed, limit):
    def within_budget(sim):
        down = [a for a in sim.addresses if not sim.is_alive(a) or sim.is_paused(a)]
        return len(down) <= limit, f"down or paused at once: {down}"

    plan = replace(
        FaultPlan.standard(), crashes_per_min=60, pauses_per_min=60, down_nodes_max=limit
    )
    heavy = replace(
        TOY_GOSSIP,
        checkers=(Checker("budget", within_budget, CheckMode.ALWAYS, interval_ms=50),),
        liveness_s=1,
    )
    report = run_scenario(heavy, seed=seed, nodes=5, duration_s=20, fault_plan=plan)
    assert report.passed, report.checks
    fired = report.coverage.get("crash", 0) + report.coverage.get("pause", 0)
    assert (fired > 0) == (limit > 0)


def test_fault_plan_validates():
    with pytest.raises(ValueError):
        FaultPlan(datagram_loss_rate=2)
    with pytest.raises(ValueError):
        FaultPlan(crash_down_ms=(10, 1))
    with pytest.raises(ValueError):
        FaultPlan(crashes_per_min=float("inf"))


def test_cli_fuzz_runs_derived_seeds(capsys, throwaway_scenarios):
    assert main(["fuzz", "toy-calm", "--runs", "3", "--seed", "2", "--nodes", "3"]) == 0
    assert "result: 3/3 passed" in capsys.readouterr().out
    throwaway_scenarios(
        replace(TOY_GOSSIP, name="test-fuzz-fails", checkers=(Checker("never", never),))
    )
    args = ["fuzz", "test-fuzz-fails", "--runs", "2", "--seed", "2", "--duration-s", "1"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.count("replay: ") == 0 and out.count("python -m sim run test-fuzz-fails") == 2
