"""The node core's placement view: kept up to date with membership in bounded steps, always
serving a complete table, and the same table on every node of a cluster."""

from __future__ import annotations

import trio

from gossipcache.client.client import Client
from gossipcache.drivers.server import NodeServer
from gossipcache.limits import PLACEMENT_MEMBERS_MAX
from gossipcache.node.config import NodeConfig
from gossipcache.node.placement_view import PlacementView
from gossipcache.placement import BUCKET_COUNT, Placement, PlacementMember

STEP_SCORES = 8192


def member(index: int, host: str | None = None, weight: float = 1.0) -> PlacementMember:
    return PlacementMember(f"node-{index}", host or f"host-{index}", None, weight)


def settle(view: PlacementView) -> int:
    steps = 0
    while view.busy:
        view.step(STEP_SCORES)
        steps += 1
        assert steps < 10_000
    return steps


def same_table(a: Placement, b: Placement) -> bool:
    return a.epoch == b.epoch and all(
        a.owners_of_bucket(bucket) == b.owners_of_bucket(bucket) for bucket in range(BUCKET_COUNT)
    )


def test_the_view_reaches_the_wanted_table_in_bounded_steps() -> None:
    view = PlacementView(3, member(0))
    assert view.busy and view.table is None and view.epoch is None  # nothing built yet
    settle(view)
    members = [member(i) for i in range(5)]
    view.update(members)
    previous = view.table
    view.step(STEP_SCORES)
    assert view.busy and view.table is previous  # lookups use the old table meanwhile
    steps = 1 + settle(view)
    # Every bucket costs its members' scores plus a fixed overhead: at least this many steps.
    assert steps >= BUCKET_COUNT * (5 + 16) // (STEP_SCORES + 5 + 16)
    assert same_table(view.table, Placement.build(members, 3))
    # R = 3 of 5 nodes: each holds a replica of about 3/5 of the buckets, 1/5 as primary.
    assert abs(view.buckets_owned - 3 * BUCKET_COUNT / 5) < 0.1 * BUCKET_COUNT
    assert abs(view.buckets_primary - BUCKET_COUNT / 5) < 0.1 * BUCKET_COUNT


def test_one_join_or_leave_is_incremental_and_exact() -> None:
    members = [member(i) for i in range(6)]
    view = PlacementView(2, members[0])
    view.update(members)
    full_steps = settle(view)
    view.update([*members, member(6)])
    join_steps = settle(view)
    assert same_table(view.table, Placement.build([*members, member(6)], 2))
    view.update(members[:5])  # node-5 left and node-6 too: two changes, a full build
    settle(view)
    assert same_table(view.table, Placement.build(members[:5], 2))
    view.update(members[:4])
    leave_steps = settle(view)
    assert same_table(view.table, Placement.build(members[:4], 2))
    assert join_steps < full_steps and leave_steps < full_steps


def test_changed_metadata_rebuilds_the_table() -> None:
    members = [member(i) for i in range(4)]
    view = PlacementView(2, members[0])
    view.update(members)
    settle(view)
    heavier = [*members[:3], member(3, weight=4.0)]
    view.update(heavier)
    settle(view)
    assert same_table(view.table, Placement.build(heavier, 2))


def test_members_over_the_cap_are_left_out_the_same_way_everywhere() -> None:
    own = member(PLACEMENT_MEMBERS_MAX + 5)  # its id sorts late: it is kept anyway
    view = PlacementView(1, own)
    view.update([member(i) for i in range(PLACEMENT_MEMBERS_MAX + 10)])
    assert view.members_over_cap == 10
    assert len(view._wanted) == PLACEMENT_MEMBERS_MAX and own.node_id in view._wanted


async def test_every_node_of_a_cluster_computes_the_same_table(nursery) -> None:
    servers = []
    for index in range(3):
        config = NodeConfig(
            port=0, resp_port=None, metrics_port=None, membership_profile="local",
            host_id=f"host-{index}", replicas=2,
            seeds=tuple(f"127.0.0.1:{s.ports['native']}" for s in servers[:1]),
        )  # fmt: skip
        server = NodeServer(config)
        await nursery.start(server.serve)
        servers.append(server)

    def settled() -> bool:
        views = [server.core.placement for server in servers]
        return (
            all(
                not view.busy and view.table is not None and len(view.table.members) == 3
                for view in views
            )
            and len({view.epoch for view in views}) == 1
        )

    with trio.fail_after(20):
        while not settled():
            await trio.sleep(0.05)
    tables = [server.core.placement.table for server in servers]
    for key in (b"a", b"user:1", b"{tag}x", b"\x00" * 10):
        owners = {table.owners_of_key(key) for table in tables}
        assert len(owners) == 1 and len(next(iter(owners))) == 2
    # R = 2 over 3 nodes: each owns about 2/3 of the buckets, together 2 x 16384.
    assert sum(server.core.placement.buckets_owned for server in servers) == 2 * BUCKET_COUNT
    async with Client(f"127.0.0.1:{servers[1].ports['native']}") as client:
        stats = await client.stats()
    assert stats["placement_epoch"] == tables[0].epoch and stats["placement_members"] == 3
    assert stats["buckets_owned"] == servers[1].core.placement.buckets_owned
