"""Membership scenarios on the simulator: registered scenarios pass, checkers catch violations,
Hypothesis-drawn seeds and fault plans keep every checker green and replay to the same digest,
and the membership bench's parts run. Virtual time only."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipcache.membership import Keyring, Membership
from gossipcache.membership.codec import (
    Alive,
    Ping,
    Suspect,
    decode_packet,
    encode_message,
    encode_packet,
)
from gossipcache.sansio import Channel
from sim import membership_bench, scenarios
from sim.faults import FaultPlan
from sim.membership_bench import (
    dead_everywhere_bound_ms,
    measure_detection,
    measure_starved,
    percentile,
)
from sim.membership_bench import (
    main as bench_main,
)
from sim.scenarios import run_scenario
from sim.scenarios_membership import (
    CLUSTER_KEY,
    CONFIG,
    MEMBERSHIP_CHURN,
    MEMBERSHIP_CRASH,
    MEMBERSHIP_FORGED_CLAIMS,
    MEMBERSHIP_SCENARIOS,
    MEMBERSHIP_STARVED,
    add_membership_nodes,
    check_healthy_never_dead,
    check_live_set_agreed,
    check_self_never_dead,
)
from sim.simulation import Simulation, node_addresses


def _failed(report) -> list[str]:
    return [f"{c.name}: {c.message}" for c in report.checks if not c.passed]


def test_scenarios_are_registered():
    names = set(scenarios.names())
    assert {s.name for s in MEMBERSHIP_SCENARIOS} <= names
    assert {"membership-crash", "membership-partition", "membership-starved"} <= names
    assert "membership-forged-claims" in names


def test_forged_claims_scenario_refutes_every_claim():
    # Fails on the old core at the first claim at 2^63 - 1 (all of claims-refuted,
    # incarnations-bounded and live-set-agreed).
    report = run_scenario(MEMBERSHIP_FORGED_CLAIMS, seed=3, nodes=5)
    assert report.passed, _failed(report)
    assert report.coverage.get("datagram_lost", 0) > 0


def test_crash_scenario_with_20_nodes_seed_7_passes_and_covers_faults():
    report = run_scenario(MEMBERSHIP_CRASH, seed=7, nodes=20)
    assert report.passed, _failed(report)
    assert report.coverage.get("crash", 0) >= 1 and report.coverage.get("datagram_lost", 0) > 0


def test_starved_node_seed_that_found_the_missed_refutation_bug():
    # Before the fix a suspecter that missed the refutation kept a stale suspicion for the
    # whole max timeout, although its buddy pings told the suspect about it every round.
    report = run_scenario(MEMBERSHIP_STARVED, seed=4144274176, nodes=6)
    assert report.passed, _failed(report)


def test_stale_suspicion_about_self_is_answered_with_alive():
    keyring = Keyring(CLUSTER_KEY)
    core = Membership("b:1", "b", CONFIG, random.Random(1), keyring, 0, incarnation=5)

    def ping_and_ack(seq: int, extra: list[bytes]) -> list[object]:
        packet = encode_packet(keyring, [encode_message(Ping(seq, "b")), *extra])
        core.handle("a:1", Channel.DATAGRAM, packet, seq)
        (ack,) = [o for o in core.take_outbox() if o.destination == "a:1"]
        return decode_packet(keyring, ack.payload, False)

    for seq in range(1, 10):  # drain the start-up announcement of itself
        messages = ping_and_ack(seq, [])
    assert not any(isinstance(m, Alive) for m in messages)
    ping_and_ack(20, [encode_message(Suspect("b", 3, "a"))])  # stale: we are at 5
    messages = ping_and_ack(21, [])
    assert Alive("b", "b:1", 5, b"") in messages
    assert core.incarnation == 5 and core.stats()["refutations_repeated"] == 1


def test_live_set_checker_fails_while_a_crashed_node_is_still_a_member():
    sim = Simulation(3)
    add_membership_nodes(sim, 4)
    sim.run_until(10_000)
    assert check_live_set_agreed(sim)[0]
    sim.crash(node_addresses(4)[2])
    sim.run_until(10_500)
    passed, message = check_live_set_agreed(sim)
    assert not passed and "extra" in message
    sim.run_until(10_000 + dead_everywhere_bound_ms(4) + 5_000)
    assert check_live_set_agreed(sim)[0]
    assert check_self_never_dead(sim)[0]
    passed, message = check_healthy_never_dead(sim)
    assert passed and "3 healthy nodes" in message


_PLANS = st.builds(
    FaultPlan,
    datagram_loss_rate=st.sampled_from([0.0, 0.02, 0.05, 0.1]),
    datagram_duplicate_rate=st.sampled_from([0.0, 0.05]),
    partitions_per_min=st.sampled_from([0.0, 4.0]),
    clogs_per_min=st.sampled_from([0.0, 3.0]),
    crashes_per_min=st.sampled_from([0.0, 6.0]),
    pauses_per_min=st.sampled_from([0.0, 6.0]),
    clock_jumps_per_min=st.sampled_from([0.0, 3.0]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario_index=st.integers(0, len(MEMBERSHIP_SCENARIOS) - 1),
    seed=st.integers(0, 2**32 - 1),
    nodes=st.integers(3, 6),
    duration_s=st.sampled_from([10.0, 25.0]),
    plan=_PLANS,
)
def test_drawn_seeds_and_fault_plans_keep_every_checker_green(
    scenario_index, seed, nodes, duration_s, plan
):
    scenario_ = MEMBERSHIP_SCENARIOS[scenario_index]
    report = run_scenario(scenario_, seed=seed, nodes=nodes, duration_s=duration_s, fault_plan=plan)
    assert report.passed, (report.replay_command, plan, _failed(report))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), nodes=st.integers(3, 5))
def test_same_seed_same_digest(seed, nodes):
    short = replace(MEMBERSHIP_CHURN, liveness_s=10.0)
    first = run_scenario(short, seed=seed, nodes=nodes, duration_s=30.0)
    second = run_scenario(short, seed=seed, nodes=nodes, duration_s=30.0)
    assert first.digest == second.digest
    assert [c.passed for c in first.checks] == [c.passed for c in second.checks]


def test_bench_detection_run_is_within_its_bound():
    result = measure_detection(5, seed=1)
    assert result["first_suspicion_ms"] is not None and result["first_suspicion_ms"] > 0
    assert result["dead_everywhere_ms"] <= dead_everywhere_bound_ms(6)
    assert result["join_spread_ms"] is not None


def test_bench_starved_lifeguard_spares_healthy_nodes():
    with_lifeguard = measure_starved(1, lifeguard=True, periods=40)
    without = measure_starved(1, lifeguard=False, periods=40)
    assert with_lifeguard["dead_about_healthy"] == 0
    assert without["dead_about_healthy"] > 0


def test_bench_cli_quick_part_and_percentile(capsys, monkeypatch):
    monkeypatch.setattr(membership_bench, "BYTES_SIZES", (3, 4))
    assert bench_main(["--only", "bytes", "--quick", "--json"]) == 0
    assert '"datagram_bytes_per_node_s"' in capsys.readouterr().out
    assert percentile([3, 1, 2], 0.5) == 2 and percentile([], 0.9) is None
    assert percentile(list(range(1, 101)), 0.99) == 99
