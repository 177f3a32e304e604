"""Replication on whole nodes in the simulator (virtual time, seeded faults): a key written on
any node is read on every node; levels, hints, read repair, tombstones and clock skew."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gossipcache.node import commands as c
from gossipcache.node.config import NodeConfig
from gossipcache.sansio import Channel
from sim.node import SIM_NODE_CONFIG, node_factory
from sim.simulation import Simulation, node_addresses
from sim.workload import OK, ClientWorkload

CLUSTER_CONFIG = replace(
    SIM_NODE_CONFIG, membership_enabled=True, membership_profile="local", replicas=3
)
SETTLE_MS = 5_000


def cluster(nodes: int = 5, seed: int = 1, config: NodeConfig = CLUSTER_CONFIG):
    sim = Simulation(seed)
    addresses = node_addresses(nodes)
    factory = node_factory(sim, config, seeds=lambda address: addresses[:2])
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(SETTLE_MS)

    def settled() -> bool:  # every node sees every other serving, and has built its table
        cores = [sim.core(address).core for address in addresses]
        return all(c.layout_settled and len(c.placement.table.members) == nodes for c in cores)

    while not settled():
        assert sim.now_ms < 6 * SETTLE_MS, "the simulated cluster did not settle"
        sim.run_until(sim.now_ms + 100)
    return sim, addresses, ClientWorkload(sim)


def run(sim: Simulation, workload: ClientWorkload, address: str, command, wait_ms: int = 3000):
    entry = workload.submit(address, command)
    sim.run_until(sim.now_ms + wait_ms)
    assert entry.outcome == OK, (entry.outcome, entry.error)
    return entry.result


def owners(sim: Simulation, address: str, key: bytes) -> tuple[str, ...]:
    return sim.core(address).core.placement.table.owners_of_key(key)


def held(sim: Simulation, address: str, key: bytes):
    core = sim.core(address).core
    return core.store.lookup(key, core.clock.wall_ms())


def test_a_write_on_any_node_is_read_on_every_node():
    sim, addresses, workload = cluster()
    for index in range(20):
        key = b"key:%d" % index
        writer = addresses[index % 5]
        assert run(sim, workload, writer, c.Put(key, b"v%d" % index)) is True
        for reader in addresses:
            assert run(sim, workload, reader, c.Get(key), 500) == b"v%d" % index
        # Exactly the key's three owners hold it, with one version.
        holders = [a for a in addresses if held(sim, a, key) is not None]
        assert sorted(holders) == sorted(owners(sim, addresses[0], key))
        assert len({held(sim, a, key)[1] for a in holders}) == 1


def test_owners_are_the_same_on_every_node_and_spread_over_hosts():
    sim, addresses, _ = cluster()
    tables = [sim.core(a).core.placement.table for a in addresses]
    assert len({table.epoch for table in tables}) == 1
    for key in (b"a", b"b", b"{user}1"):
        assert len(set(owners(sim, addresses[0], key))) == 3


def test_delete_and_expire_are_versioned_writes():
    sim, addresses, workload = cluster()
    run(sim, workload, addresses[0], c.Put(b"k", b"v"))
    assert run(sim, workload, addresses[1], c.Delete((b"k", b"missing"))) == 1
    for reader in addresses:
        assert run(sim, workload, reader, c.Get(b"k", consistency=c.QUORUM), 500) is None
    for owner in owners(sim, addresses[0], b"k"):
        value, _, collect_at_ms = held(sim, owner, b"k")
        assert value is None and collect_at_ms > sim.core(owner).core.clock.wall_ms()
    run(sim, workload, addresses[2], c.Put(b"t", b"v"))
    assert run(sim, workload, addresses[3], c.Expire(b"t", 10_000), 100) is True
    ttl = run(sim, workload, addresses[4], c.Ttl(b"t", consistency=c.ALL), 100)
    assert 9_000 < ttl <= 10_000
    assert run(sim, workload, addresses[0], c.Persist(b"t")) is True
    assert run(sim, workload, addresses[1], c.Ttl(b"t", consistency=c.ALL), 500) == -1
    assert run(sim, workload, addresses[1], c.Exists((b"t", b"k", b"t"))) == 2


def test_conditional_puts_read_then_write():
    sim, addresses, workload = cluster()
    nx = c.Put(b"k", b"1", condition=c.IF_ABSENT)
    assert run(sim, workload, addresses[0], nx) is True
    assert run(sim, workload, addresses[1], nx) is False
    old = run(sim, workload, addresses[2], c.Put(b"k", b"2", return_old=True))
    assert old == b"1"
    assert run(sim, workload, addresses[3], c.Get(b"k", consistency=c.ALL)) == b"2"


def test_quorum_write_survives_one_owner_down_and_the_owner_gets_a_hint():
    sim, addresses, workload = cluster()
    key = b"hinted"
    victim = owners(sim, addresses[0], key)[1]
    coordinator = next(a for a in addresses if a not in owners(sim, addresses[0], key))
    sim.crash(victim)
    entry = workload.submit(coordinator, c.Put(key, b"v"))
    sim.run_until(sim.now_ms + 3000)
    assert entry.outcome == OK
    stats = sim.core(coordinator).core.stats_dict()
    assert stats["replication_hints_held"] == 1
    sim.restart(victim)
    sim.run_until(sim.now_ms + 10_000)
    assert held(sim, victim, key)[0] == b"v"  # delivered, though its memory was lost
    stats = sim.core(coordinator).core.stats_dict()
    assert stats["replication_hints_held"] == 0 and stats["replication_hints_delivered"] == 1


def test_a_level_that_cannot_be_met_names_the_replicas_that_answered():
    sim, addresses, workload = cluster()
    key = b"lonely"
    key_owners = owners(sim, addresses[0], key)
    coordinator = key_owners[0]
    for other in key_owners[1:]:
        sim.crash(other)
    entry = workload.submit(coordinator, c.Put(key, b"v", consistency=c.ALL))
    sim.run_until(sim.now_ms + 3000)
    assert entry.error and "1 of 3 required replicas answered" in entry.error
    read = workload.submit(coordinator, c.Get(key, consistency=c.QUORUM))
    sim.run_until(sim.now_ms + 3000)
    assert read.error and "of 2 required replicas answered" in read.error
    # At one, the coordinator (an owner) answers from what it holds: the write landed there.
    assert run(sim, workload, coordinator, c.Get(key)) == b"v"


def test_quorum_read_repairs_a_stale_owner_before_answering():
    sim, addresses, workload = cluster()
    key = b"repair"
    run(sim, workload, addresses[0], c.Put(key, b"old"))
    key_owners = owners(sim, addresses[0], key)
    stale = key_owners[2]
    # The newest version reaches two owners only: write it into their stores directly.
    newest = max(held(sim, o, key)[1] for o in key_owners) + (1 << 70)
    for owner in key_owners[:2]:
        sim.core(owner).core.store.apply(key, b"new", newest, None, 0)
    assert run(sim, workload, stale, c.Get(key, consistency=c.ALL)) == b"new"
    assert held(sim, stale, key)[:2] == (b"new", newest)


def test_a_coordinator_whose_clock_is_behind_restamps_above_the_newer_version():
    sim, addresses, workload = cluster()
    key = b"skew"
    behind = next(a for a in addresses if a not in owners(sim, addresses[0], key))
    sim.set_clock(behind, offset_ms=-300)
    run(sim, workload, addresses[0], c.Put(key, b"first"), 50)
    # Without the restamp, this later write would lose to "first" (an older wall clock).
    run(sim, workload, behind, c.Put(key, b"second"))
    for reader in addresses:
        assert run(sim, workload, reader, c.Get(key, consistency=c.QUORUM), 500) == b"second"
    assert sim.core(behind).core.stats_dict()["replication_restamps"] == 1


def test_a_version_too_far_ahead_is_refused_and_counted():
    sim, addresses, workload = cluster()
    key = b"future"
    key_owners = owners(sim, addresses[0], key)
    ahead = next(a for a in addresses if a not in key_owners)
    sim.set_clock(ahead, offset_ms=5_000)
    entry = workload.submit(ahead, c.Put(key, b"v"))
    sim.run_until(sim.now_ms + 3000)
    assert entry.error and "0 of 2 required" in entry.error
    refused = sum(
        sim.core(o).core.stats_dict()["replication_writes_refused_clock"] for o in key_owners
    )
    assert refused == 3


def test_the_primary_tells_the_other_owners_of_its_evictions():
    small = replace(CLUSTER_CONFIG, size_bytes_max=64 * 1024)
    sim, addresses, workload = cluster(config=small)
    primary = addresses[0]
    keys = [k for k in (b"ev:%d" % i for i in range(400)) if owners(sim, primary, k)[0] == primary]
    for key in keys[:60]:
        run(sim, workload, primary, c.Put(key, b"x" * 2000), 200)
    evicted = [k for k in keys[:60] if held(sim, primary, k) is None]
    assert evicted, "the primary evicted nothing: the test needs a full primary"
    for key in evicted:
        for owner in owners(sim, primary, key):
            assert held(sim, owner, key) is None, (key, owner)
    assert sim.core(primary).core.stats_dict()["replication_evict_notices_sent"] >= 2 * len(evicted)


@pytest.mark.parametrize("seed", range(3))
def test_replicated_cluster_checks_its_invariants_under_a_workload(seed):
    sim, addresses, workload = cluster(seed=seed)
    for index in range(200):
        key = b"w:%d" % (index % 17)
        address = addresses[index % 5]
        if index % 3 == 0:
            workload.submit_at(sim.now_ms + index * 5, address, c.Get(key, consistency=c.QUORUM))
        else:
            workload.submit_at(sim.now_ms + index * 5, address, c.Put(key, b"%d" % index))
    sim.run_until(sim.now_ms + 5_000)
    assert all(entry.outcome == OK for entry in workload.history)


def test_bad_replication_payloads_are_dropped_and_counted():
    sim, addresses, _ = cluster()
    core = sim.core(addresses[0]).core
    for payload in (b"R", b"R\xff", b"R\x91\x93\x01", b"R" + b"\x91" * 100_000):
        core.handle(addresses[1], Channel.STREAM, payload, sim.now_ms)
    assert core.stats_dict()["replication_bad_messages"] == 4


def test_mget_and_mset_fan_out_by_owner_and_gather_in_order():
    sim, addresses, workload = cluster()
    pairs = tuple((b"m:%d" % i, b"v%d" % i) for i in range(30))
    assert run(sim, workload, addresses[0], c.PutMany(pairs)) is True
    keys = tuple(key for key, _ in pairs) + (b"absent",)
    expected = [value for _, value in pairs] + [None]
    for reader in addresses:
        assert run(sim, workload, reader, c.GetMany(keys, consistency=c.QUORUM), 500) == expected
    for key, _ in pairs:  # every key on its own three owners
        assert sum(held(sim, a, key) is not None for a in addresses) == 3


def test_replication_metrics_are_exported_by_level():
    from gossipcache.metrics.counters import render_prometheus

    sim, addresses, workload = cluster()
    run(sim, workload, addresses[0], c.Put(b"k", b"v", consistency=c.ALL))
    run(sim, workload, addresses[0], c.Get(b"k", consistency=c.QUORUM), 500)
    text = render_prometheus(sim.core(addresses[0]).core)
    assert 'gossipcache_writes_by_level_total{level="all"} 1' in text
    assert 'gossipcache_reads_by_level_total{level="quorum"} 1' in text
    assert "gossipcache_replication_writes_coordinated_total 1" in text
    assert "gossipcache_hints_held 0" in text


def test_a_node_started_with_seeds_refuses_data_until_it_has_joined():
    """Found by the replication-crash scenario (seed 36): a node restarted empty took itself
    for every key's only owner until it rejoined, and acknowledged a write at `all` that no
    real owner held."""
    sim = Simulation(5)
    lonely = replace(CLUSTER_CONFIG, seeds=("node009:7946",))  # nobody there
    factory = node_factory(sim, lonely)
    sim.add_node("node000:7946", factory)
    sim.run_until(3000)
    workload = ClientWorkload(sim)
    for command in (c.Put(b"k", b"v", consistency=c.ALL), c.Get(b"k")):
        entry = workload.submit("node000:7946", command)
        sim.run_until(sim.now_ms + 100)
        assert entry.error and "joining the cluster" in entry.error
    assert sim.core("node000:7946").core.store.lookup(b"k", 0) is None


def test_all_fails_with_one_owner_down_and_quorum_does_not():
    sim, addresses, workload = cluster()
    key = b"one-down"
    key_owners = owners(sim, addresses[0], key)
    coordinator = next(a for a in addresses if a not in key_owners)
    sim.crash(key_owners[2])
    failed = workload.submit(coordinator, c.Put(key, b"v", consistency=c.ALL))
    sim.run_until(sim.now_ms + 3000)
    assert failed.error and "2 of 3 required replicas answered" in failed.error
    assert run(sim, workload, coordinator, c.Put(key, b"w", consistency=c.QUORUM)) is True


def test_a_quorum_read_answers_only_after_its_repair_landed():
    sim, addresses, workload = cluster()
    key = b"repair-first"
    run(sim, workload, addresses[0], c.Put(key, b"old"))
    key_owners = owners(sim, addresses[0], key)
    newest = max(held(sim, o, key)[1] for o in key_owners) + (1 << 70)
    for owner in key_owners[:2]:
        sim.core(owner).core.store.apply(key, b"new", newest, None, 0)
    stale = key_owners[2]
    coordinator = next(a for a in addresses if a not in key_owners)  # the repair is remote
    entry = workload.submit(coordinator, c.Get(key, consistency=c.ALL))
    while entry.completed_at_ms is None:
        sim.run_until(sim.now_ms + 1)
    assert entry.result == b"new"
    assert held(sim, stale, key)[:2] == (b"new", newest)  # at the moment of the answer


def test_expired_values_read_as_missing_through_any_node():
    sim, addresses, workload = cluster()
    key = b"short"
    key_owners = owners(sim, addresses[0], key)
    reader = next(a for a in addresses if a not in key_owners)
    for owner in key_owners:  # the owners' clocks lag: they still hold the value as live
        sim.set_clock(owner, offset_ms=-300)
    run(sim, workload, reader, c.Put(key, b"v", 500), 100)
    assert run(sim, workload, reader, c.Get(key, consistency=c.QUORUM), 100) == b"v"
    sim.run_until(sim.now_ms + 400)  # past the expiry on the reader's clock, not the owners'
    assert held(sim, key_owners[0], key)[0] == b"v"
    for level in (c.ONE, c.QUORUM, c.ALL):
        assert run(sim, workload, reader, c.Get(key, consistency=level), 200) is None


def test_a_dead_member_keeps_its_buckets_for_the_hint_window():
    sim, addresses, workload = cluster()
    key = b"kept"
    key_owners = owners(sim, addresses[0], key)
    victim = key_owners[1]
    coordinator = next(a for a in addresses if a not in key_owners)
    sim.crash(victim)
    sim.run_until(sim.now_ms + 15_000)  # long enough to be declared dead everywhere
    core = sim.core(coordinator).core
    assert victim in core.replication.down
    assert owners(sim, coordinator, key) == key_owners  # no data moves
    run(sim, workload, coordinator, c.Put(key, b"v"))
    assert core.replication.hints.count_for(victim) == 1


def test_keepttl_and_expire_conditions_in_a_cluster():
    sim, addresses, workload = cluster()
    run(sim, workload, addresses[0], c.Put(b"k", b"v", 60_000), 100)
    run(sim, workload, addresses[1], c.Put(b"k", b"w", keep_ttl=True), 100)
    assert 50_000 < run(sim, workload, addresses[2], c.Ttl(b"k", consistency=c.ALL), 100) <= 60_000
    nx = c.Expire(b"k", 10_000, conditions=frozenset((c.IF_ABSENT,)))
    assert run(sim, workload, addresses[3], nx, 100) is False  # it has a TTL already
    gt = c.Expire(b"k", 120_000, conditions=frozenset((c.IF_GREATER,)))
    assert run(sim, workload, addresses[4], gt, 100) is True
    assert run(sim, workload, addresses[0], c.Ttl(b"k", consistency=c.ALL), 100) > 100_000


def test_read_repair_chance_repairs_owners_in_the_background_of_a_read_at_one():
    sim, addresses, workload = cluster(config=replace(CLUSTER_CONFIG, read_repair_chance=1.0))
    key = b"background"
    run(sim, workload, addresses[0], c.Put(key, b"old"))
    key_owners = owners(sim, addresses[0], key)
    newest = max(held(sim, o, key)[1] for o in key_owners) + (1 << 70)
    sim.core(key_owners[0]).core.store.apply(key, b"new", newest, None, 0)
    # A read at one on the primary answers from its own copy at once...
    assert run(sim, workload, key_owners[0], c.Get(key), 500) == b"new"
    # ...and brought the other owners up to date behind it.
    for owner in key_owners[1:]:
        assert held(sim, owner, key)[:2] == (b"new", newest)
    assert sim.core(key_owners[0]).core.stats_dict()["replication_read_repairs"] == 2
