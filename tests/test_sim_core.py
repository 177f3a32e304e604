"""The simulator's event loop, network model and node faults, driven with ScriptedCore."""

from __future__ import annotations

from collections import Counter

import pytest

from gossipcache.sansio import Channel
from sim import WALL_EPOCH_MS, NetworkConfig, Simulation, derive_rng, derive_seed
from sim.toy import ScriptedCore

A, B, C = "a:1", "b:1", "c:1"
DGRAM = Channel.DATAGRAM
STREAM = Channel.STREAM


def make_sim(
    scripts: dict[str, list[tuple[int, str, Channel, bytes]]] | None = None,
    *,
    seed: int = 1,
    network: NetworkConfig | None = None,
    nodes: tuple[str, ...] = (A, B, C),
    record_trace: bool = False,
    **core_options,
) -> Simulation:
    """A simulation of ScriptedCore nodes; ``scripts`` maps address -> sends."""
    scripts = scripts or {}
    sim = Simulation(seed, network, record_trace=record_trace)
    for address in nodes:
        script = scripts.get(address, ())
        sim.add_node(address, lambda ctx, s=script: ScriptedCore(ctx, s, **core_options))
    return sim


def burst(dst: str, channel: Channel, count: int, start_ms: int = 0, every_ms: int = 1) -> list:
    """``count`` numbered payloads to ``dst``, one every ``every_ms``."""
    return [(start_ms + i * every_ms, dst, channel, b"%d" % i) for i in range(count)]


def numbers(core: ScriptedCore, source: str | None = None) -> list[int]:
    """The numbered payloads a core received, in arrival order."""
    return [int(p) for _, s, _, p in core.received if source is None or s == source]


# ---------------------------------------------------------------------- seeds and the loop


def test_derived_streams_are_stable_and_independent():
    assert derive_seed(1, "network") == derive_seed(1, "network")
    assert derive_seed(1, "network") != derive_seed(1, "faults")
    assert derive_seed(1, "network") != derive_seed(2, "network")
    # SHA-256 based: the value never depends on the interpreter or PYTHONHASHSEED.
    assert derive_seed(0, "x") == int.from_bytes(
        __import__("hashlib").sha256(b"0/x").digest()[:8], "big"
    )
    first = derive_rng(7, "node/a:1/1")
    second = derive_rng(7, "node/a:1/1")
    assert [first.random() for _ in range(5)] == [second.random() for _ in range(5)]


def network_busy_run(seed: int) -> Simulation:
    network = NetworkConfig(delay_exp_mean_ms=10, datagram_loss_rate=0.1)
    sim = make_sim({A: burst(B, DGRAM, 200), B: burst(A, STREAM, 50)}, seed=seed, network=network)
    sim.run_until(5_000)
    return sim


def test_same_seed_same_digest_different_seed_different_digest():
    assert network_busy_run(3).digest() == network_busy_run(3).digest()
    assert network_busy_run(3).digest() != network_busy_run(4).digest()


def test_events_at_one_instant_run_in_scheduling_order():
    sim = Simulation(1)
    seen = []
    for label in "abcde":
        sim.schedule(100, seen.append, label)
    sim.schedule(50, seen.append, "early")
    sim.run_until(100)
    assert seen == ["early", "a", "b", "c", "d", "e"]
    assert sim.now_ms == 100


def test_run_until_advances_time_and_leaves_later_events():
    sim = Simulation(1)
    seen = []
    sim.schedule(500, seen.append, 1)
    sim.run_until(200)
    assert sim.now_ms == 200 and seen == []
    sim.run_for(300)
    assert seen == [1]


def test_node_context_and_timers():
    sim = make_sim(tick_every_ms=100)
    sim.run_until(1_000)
    core = sim.core(A)
    assert core.context.address == A
    assert core.context.incarnation == 1
    assert core.context.addresses == (A, B, C)
    assert core.tick_times_ms == list(range(100, 1_001, 100))


def test_trace_records_deliveries():
    sim = make_sim({A: [(10, B, DGRAM, b"hello")]}, record_trace=True)
    sim.run_until(100)
    assert any(" deliver a:1 b:1 5" in line for line in sim.trace_lines)


# ---------------------------------------------------------------------- datagrams


def test_datagram_loss_rate_is_observed():
    network = NetworkConfig(datagram_loss_rate=0.3)
    sim = make_sim({A: burst(B, DGRAM, 2_000)}, network=network)
    sim.run_until(5_000)
    received = len(sim.core(B).received)
    # Binomial(2000, 0.7): mean 1400, sd ~20; the bound is 5 sd.
    assert 1_300 <= received <= 1_500
    assert sim.coverage["datagram_lost"] == 2_000 - received


def test_datagram_duplication():
    network = NetworkConfig(datagram_duplicate_rate=0.2)
    sim = make_sim({A: burst(B, DGRAM, 1_000)}, network=network)
    sim.run_until(5_000)
    counts = Counter(numbers(sim.core(B)))
    duplicated = sum(1 for n in counts.values() if n == 2)
    assert set(counts) == set(range(1_000)) and max(counts.values()) == 2
    assert 140 <= duplicated <= 260
    assert sim.coverage["datagram_duplicated"] == duplicated


def test_independent_delays_reorder_datagrams():
    network = NetworkConfig(delay_exp_mean_ms=20)
    sim = make_sim({A: burst(B, DGRAM, 300)}, network=network)
    sim.run_until(5_000)
    received = numbers(sim.core(B))
    assert sorted(received) == list(range(300))
    assert received != sorted(received)
    assert sim.coverage["datagram_reordered"] > 0


def test_constant_delay_keeps_datagram_order():
    network = NetworkConfig(delay_min_ms=5, delay_exp_mean_ms=0)
    sim = make_sim({A: burst(B, DGRAM, 300)}, network=network)
    sim.run_until(5_000)
    assert numbers(sim.core(B)) == list(range(300))
    assert sim.coverage.get("datagram_reordered", 0) == 0
    assert sim.core(B).received[0][0] == 5


def test_delay_spikes():
    network = NetworkConfig(delay_exp_mean_ms=0, spike_rate=0.5, spike_delay_ms_max=1_000)
    sim = make_sim({A: burst(B, DGRAM, 200, every_ms=10)}, network=network)
    sim.run_until(10_000)
    latencies = [at for at, *_ in sim.core(B).received]
    assert sim.coverage["delay_spike"] > 50
    assert max(latencies) > 2_000  # a spike pushed something far beyond the last send


def test_echo_round_trip():
    sim = make_sim({A: [(0, B, DGRAM, b"ping1")]}, echo=True)
    sim.run_until(100)
    assert [(s, p) for _, s, _, p in sim.core(A).received] == [(B, b"echo1")]


# ---------------------------------------------------------------------- partitions and clogs


def test_symmetric_partition_blocks_both_ways_and_heals():
    sim = make_sim({A: burst(B, DGRAM, 10, every_ms=100), B: burst(A, DGRAM, 10, every_ms=100)})
    partition_id = sim.partition([A], [B, C])
    sim.run_until(450)
    assert sim.core(A).received == [] and sim.core(B).received == []
    sim.heal(partition_id)
    sim.run_until(2_000)
    assert numbers(sim.core(B)) == [5, 6, 7, 8, 9]
    assert numbers(sim.core(A)) == [5, 6, 7, 8, 9]
    assert sim.coverage["partition"] == 1 and sim.coverage["partition_drop"] == 10


def test_asymmetric_partition_blocks_one_direction_only():
    sim = make_sim({A: burst(B, DGRAM, 10, every_ms=10), B: burst(A, DGRAM, 10, every_ms=10)})
    sim.partition([A], [B], symmetric=False)
    assert sim.is_blocked(A, B) and not sim.is_blocked(B, A)
    sim.run_until(1_000)
    assert sim.core(B).received == []
    assert numbers(sim.core(A)) == list(range(10))
    assert sim.coverage["partition_asymmetric"] == 1


def test_datagrams_in_flight_across_a_new_cut_are_dropped():
    network = NetworkConfig(delay_min_ms=100, delay_exp_mean_ms=0)
    sim = make_sim({A: [(0, B, DGRAM, b"0")]}, network=network)
    sim.run_until(50)
    sim.partition([A], [B])
    sim.run_until(500)
    assert sim.core(B).received == []


def test_clog_delays_then_unclogs():
    network = NetworkConfig(delay_min_ms=1, delay_exp_mean_ms=0)
    sim = make_sim({A: [(0, B, DGRAM, b"0"), (10_000, B, DGRAM, b"1")]}, network=network)
    sim.clog(A, B, delay_ms=3_000)
    sim.run_until(5_000)
    assert [at for at, *_ in sim.core(B).received] == [3_001]
    sim.unclog(A, B)
    sim.run_until(20_000)
    assert [at for at, *_ in sim.core(B).received] == [3_001, 10_001]


def test_clog_drop_mode_drops_datagrams_and_breaks_streams():
    sim = make_sim({A: [(0, B, STREAM, b"s"), (100, B, DGRAM, b"d"), (200, B, STREAM, b"t")]})
    sim.run_until(50)
    sim.clog(B, A, drop=True)  # the reverse direction: a stream needs both
    sim.run_until(1_000)
    assert [p for *_, p in sim.core(B).received] == [b"s", b"d"]
    assert [peer for _, peer in sim.core(A).failures] == [B, B]  # the break, then the refusal
    assert sim.coverage["clog_drop"] == 1


# ---------------------------------------------------------------------- streams


def test_stream_is_ordered_and_lossless_despite_random_delays():
    network = NetworkConfig(delay_exp_mean_ms=50, datagram_loss_rate=0.5)
    sim = make_sim({A: burst(B, STREAM, 500)}, network=network)
    sim.run_until(10_000)
    assert numbers(sim.core(B)) == list(range(500))


def test_partition_breaks_stream_at_both_ends_and_loses_undelivered():
    network = NetworkConfig(delay_min_ms=20, delay_exp_mean_ms=0)
    sim = make_sim({A: burst(B, STREAM, 100, every_ms=10)}, network=network)
    sim.run_until(505)
    sim.partition([A], [B])
    sim.run_until(2_000)
    received = numbers(sim.core(B))
    assert received == list(range(len(received))) and 40 < len(received) < 50
    assert sim.core(A).failures[0] == (505, B)
    assert sim.core(B).failures == [(505, A)]
    assert sim.coverage["stream_break"] == 1 and sim.coverage["stream_payload_lost"] >= 1


def test_crash_breaks_stream_and_notifies_the_live_end():
    sim = make_sim({A: burst(B, STREAM, 10, every_ms=100)})
    sim.run_until(250)
    sim.crash(B)
    sim.run_until(260)
    assert sim.core(A).failures == [(250, B)]


def test_stream_to_down_node_is_refused_after_connect_timeout():
    network = NetworkConfig(stream_connect_fail_ms=300)
    sim = make_sim({A: [(100, B, STREAM, b"x")]}, network=network)
    sim.run_until(1)
    sim.crash(B)
    sim.run_until(1_000)
    assert sim.core(A).failures == [(400, B)]
    assert sim.coverage["stream_refused"] == 1


# ---------------------------------------------------------------------- inboxes and node faults


def test_paused_node_queues_in_bounded_inbox_and_drops_the_rest():
    network = NetworkConfig(inbox_messages_max=10, delay_min_ms=1, delay_exp_mean_ms=0)
    sim = make_sim({A: burst(B, DGRAM, 50, start_ms=100)}, network=network)
    sim.run_until(50)
    assert sim.pause(B, 1_000)
    sim.run_until(500)
    assert sim.inbox_size(B) == 10 and sim.core(B).received == []
    sim.run_until(2_000)
    received = sim.core(B).received
    assert numbers(sim.core(B)) == list(range(10))
    assert {at for at, *_ in received} == {1_050}
    assert sim.coverage["inbox_overflow"] == 40


def test_inbox_overflow_breaks_streams_rather_than_losing_silently():
    network = NetworkConfig(inbox_messages_max=5, delay_min_ms=1, delay_exp_mean_ms=0)
    sim = make_sim({A: burst(B, STREAM, 20, start_ms=10)}, network=network)
    sim.run_until(0)  # start the nodes
    assert sim.pause(B, 1_000)
    sim.run_until(2_000)
    received = numbers(sim.core(B))
    assert received[:5] == [0, 1, 2, 3, 4]
    assert (1_000, A) in sim.core(B).failures
    assert sim.coverage["stream_break"] >= 1


def test_crash_loses_memory_and_restart_builds_a_new_core():
    sim = make_sim({A: burst(B, DGRAM, 5, every_ms=10)})
    sim.run_until(1_000)
    old = sim.core(B)
    assert len(old.received) == 5
    assert sim.crash(B) and not sim.crash(B)
    assert sim.core(B) is None and not sim.is_alive(B)
    sim.run_until(2_000)
    assert sim.restart(B) and not sim.restart(B)
    new = sim.core(B)
    assert new is not old and new.received == []
    assert new.context.incarnation == sim.incarnation(B) == 2
    assert new.context.address == B
    assert sim.coverage["crash"] == 1 and sim.coverage["restart"] == 1


def test_datagrams_to_a_down_node_are_dropped_and_counted():
    sim = make_sim({A: burst(B, DGRAM, 5, start_ms=100)})
    sim.run_until(0)
    assert sim.crash(B)
    sim.run_until(1_000)
    assert sim.coverage["datagram_to_down_node"] == 5


def test_pause_delays_timers_until_resume():
    sim = make_sim(tick_every_ms=100)
    sim.run_until(250)
    sim.pause(A, 500)
    sim.run_until(2_000)
    ticks = sim.core(A).tick_times_ms
    assert ticks[:3] == [100, 200, 750]
    assert not [t for t in ticks if 250 < t < 750]
    assert sim.core(B).tick_times_ms[:5] == [100, 200, 300, 400, 500]


def test_pause_is_extended_by_a_second_pause_and_ended_by_resume():
    sim = make_sim(tick_every_ms=100)
    sim.run_until(50)
    sim.pause(A, 100)
    sim.pause(A, 400)
    sim.run_until(300)
    assert sim.is_paused(A)
    sim.run_until(460)
    assert not sim.is_paused(A) and sim.core(A).tick_times_ms == [450]
    sim.pause(A, 10_000)
    sim.resume(A)
    assert not sim.is_paused(A)


def test_clock_offset_drift_and_jump_move_wall_clock_only():
    reference = make_sim(tick_every_ms=1_000)
    reference.run_until(10_000)
    sim = make_sim(tick_every_ms=1_000)
    sim.set_clock(A, offset_ms=5_000, drift_ppm=1_000)
    sim.schedule(5_500, sim.jump_clock, A, -3_000)
    sim.run_until(10_000)
    core = sim.core(A)
    assert core.tick_times_ms == reference.core(A).tick_times_ms  # monotonic time unaffected
    assert core.wall_times_ms[0] == WALL_EPOCH_MS + 1_000 + 5_000 + 1
    assert core.wall_times_ms[4] == WALL_EPOCH_MS + 5_000 + 5_000 + 5
    assert core.wall_times_ms[5] == WALL_EPOCH_MS + 6_000 + 2_000 + 6  # after the jump back
    assert sim.wall_ms(A) == WALL_EPOCH_MS + 10_000 + 2_000 + 10
    assert sim.wall_ms(B) == WALL_EPOCH_MS + 10_000
    assert sim.coverage["clock_jump"] == 1
    with pytest.raises(ValueError):
        sim.set_clock(A, drift_ppm=-1_000_000)


def test_send_from_routes_like_an_outbox():
    sim = make_sim()
    from gossipcache.sansio import Outgoing

    sim.send_from(A, Outgoing(B, DGRAM, b"injected"))
    sim.send_from(A, Outgoing("nowhere:1", DGRAM, b"lost"))
    sim.run_until(100)
    assert [p for *_, p in sim.core(B).received] == [b"injected"]
    assert sim.coverage["unknown_destination"] == 1


def test_network_config_validates():
    with pytest.raises(ValueError):
        NetworkConfig(datagram_loss_rate=1.5)
    with pytest.raises(ValueError):
        NetworkConfig(inbox_messages_max=0)
    calm = NetworkConfig(datagram_loss_rate=0.2, spike_rate=0.1).calm()
    assert calm.datagram_loss_rate == 0 and calm.spike_rate == 0
