"""Whole nodes on the simulator (issue 10): a node restarted empty is refilled before its copies
count; a node that joins receives its buckets before it owns them; a node that leaves hands its
buckets over first. Acknowledged writes stay readable through every node all along."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gossipcache.node import commands as c
from gossipcache.node.core import Pending
from sim import Simulation
from sim.node import node_factory
from sim.scenarios_replication import NODE_CONFIG
from sim.simulation import node_addresses

KEYS = 240


class Cluster:
    """Simulated nodes with membership and replication, and a blocking client call."""

    def __init__(self, count: int, *, total: int | None = None, replicas: int = 3, seed: int = 1):
        self.sim = Simulation(seed, check_invariants=False)
        self.addresses = node_addresses(total or count)
        config = replace(NODE_CONFIG, replicas=replicas)
        seeds = self.addresses[:count]
        self.factory = node_factory(self.sim, config, seeds=lambda address: seeds)
        for address in self.addresses[:count]:
            self.sim.add_node(address, self.factory)
        self.run_until(lambda: len(self.live()) == count and self.settled(), 20_000)

    def settled(self) -> bool:
        return all(
            self.state(a) == "serving"
            and not self.core(a).placement.busy
            and not self.core(a).coordinator.incomplete
            for a in self.live()
        )

    def live(self) -> list[str]:
        return self.sim.live_addresses()

    def core(self, address: str):
        return self.sim.core(address).core

    def state(self, address: str) -> str:
        if self.sim.core(address) is None:
            return "down"
        core = self.core(address)
        return "joining" if core.coordinator.joining else core.data_state

    def run_until(self, condition, limit_ms: int) -> int:
        """Run virtual time until ``condition()``; the time it took. Fails past ``limit_ms``."""
        start_ms = self.sim.now_ms
        while not condition():
            if self.sim.now_ms - start_ms > limit_ms:
                raise AssertionError(f"not reached within {limit_ms} ms")
            self.sim.run_for(20)
        return self.sim.now_ms - start_ms

    def call(self, address: str, command: c.Command):
        node = self.sim.core(address)
        result = node.core.execute(command, node.clock.wall_ms())
        self.sim.after_call(address)
        if isinstance(result, Pending):
            self.run_until(lambda: result.done, 5_000)
            if result.error is not None:
                raise result.error
            return result.result
        return result

    def write_keys(self, through: str, prefix: bytes = b"key", level: str = c.QUORUM) -> dict:
        written = {}
        for index in range(KEYS):
            key, value = b"%s:%d" % (prefix, index), b"value-%d" % index
            assert self.call(through, c.Put(key, value, consistency=level))
            written[key] = value
        return written

    def held_by_owners(self, written: dict) -> list[bytes]:
        """Keys not held by every owner (by each node's own table)."""
        missing = []
        for key, value in written.items():
            for address in self.live():
                core = self.core(address)
                if address in core.placement.table.owners_of_key(key):
                    held = core.store.lookup(key, self.sim.wall_ms(address))
                    if held is None or held[0] != value:
                        missing.append(key)
        return missing


def _reads_all(cluster: Cluster, written: dict, level: str = c.ONE) -> None:
    for address in cluster.live():
        for key, value in written.items():
            assert cluster.call(address, c.Get(key, consistency=level)) == value, (address, key)


def test_a_node_restarted_empty_is_refilled_before_its_copies_count():
    cluster = Cluster(3)
    written = cluster.write_keys(cluster.addresses[0])
    wiped = cluster.addresses[2]
    cluster.sim.crash(wiped)
    cluster.sim.run_for(200)
    cluster.sim.restart(wiped)
    cluster.run_until(lambda: cluster.state(wiped) == "refilling", 10_000)
    # Refilling: its reads at one are served by complete owners, never a miss.
    for key, value in list(written.items())[:20]:
        assert cluster.call(wiped, c.Get(key, consistency=c.ONE)) == value
    cluster.run_until(lambda: cluster.state(wiped) == "serving", 30_000)
    assert len(cluster.core(wiped).store) == KEYS
    assert not cluster.held_by_owners(written)
    _reads_all(cluster, written)


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_joining_node_receives_its_buckets_before_it_owns_them(replicas: int):
    cluster = Cluster(3, total=4, replicas=replicas)
    written = cluster.write_keys(cluster.addresses[0])
    joiner = cluster.addresses[3]
    cluster.sim.add_node(joiner, cluster.factory)
    cluster.run_until(lambda: cluster.state(joiner) in ("filling", "filled"), 10_000)
    _reads_all(cluster, written)  # no miss while the buckets move (R = 1 included)
    cluster.run_until(lambda: all(cluster.state(a) == "serving" for a in cluster.live()), 30_000)
    cluster.run_until(lambda: not cluster.core(joiner).placement.busy, 5_000)
    owned = cluster.core(joiner).placement.buckets_owned
    assert owned > 0
    assert not cluster.held_by_owners(written)
    _reads_all(cluster, written)


def test_a_leaving_node_hands_its_buckets_over_before_it_goes():
    cluster = Cluster(4, replicas=1)  # R = 1: what the leaving node holds exists nowhere else
    written = cluster.write_keys(cluster.addresses[0])
    leaver = cluster.addresses[1]
    held = len(cluster.core(leaver).store)
    assert held > 0
    cluster.core(leaver).begin_leave(cluster.sim.now_ms)
    cluster.sim.after_call(leaver)
    took_ms = cluster.run_until(lambda: cluster.core(leaver).leave_finished, 30_000)
    cluster.sim.run_for(3000)  # the others see it leave
    cluster.sim.crash(leaver)
    cluster.run_until(
        lambda: all(len(cluster.core(a).placement.table.members) == 3 for a in cluster.live()),
        10_000,
    )
    assert not cluster.held_by_owners(written), took_ms
    _reads_all(cluster, written)


def test_nodes_leave_one_after_another_without_losing_a_key():
    cluster = Cluster(5, replicas=2)
    written = cluster.write_keys(cluster.addresses[0])
    for leaver in cluster.addresses[3:]:
        cluster.core(leaver).begin_leave(cluster.sim.now_ms)
        cluster.sim.after_call(leaver)
        cluster.run_until(lambda leaver=leaver: cluster.core(leaver).leave_finished, 30_000)
        cluster.sim.run_for(3000)
        cluster.sim.crash(leaver)
    cluster.run_until(
        lambda: all(len(cluster.core(a).placement.table.members) == 3 for a in cluster.live()),
        10_000,
    )
    assert not cluster.held_by_owners(written)
    _reads_all(cluster, written)
