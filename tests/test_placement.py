"""Placement: weighted rendezvous owners per bucket (gossipcache/placement/rendezvous.py).

Full tables cost 16384 x N scores each, so the property tests that build tables keep N small and
run fewer examples than Hypothesis' default; every check still covers all 16384 buckets.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.placement import (
    BUCKET_COUNT,
    Placement,
    PlacementMember,
    bucket_of,
    placement_epoch,
)

TABLE_EXAMPLES = 8

NODE_IDS = [f"node-{i:02d}" for i in range(16)]
HOST_IDS = ["alpha", "bravo", "charlie", "delta", "echo"]
ZONES = [None, "zone-a", "zone-b", "zone-c"]


@st.composite
def member_sets(
    draw, min_size: int = 1, max_size: int = 6, zones_per_host: bool = True
) -> list[PlacementMember]:
    """Members with a few hosts (several nodes per host happen often) and optional zones.
    With ``zones_per_host`` every member of a host advertises the host's zone; otherwise members
    of one host may disagree (the table must still be well defined)."""
    node_ids = draw(
        st.lists(st.sampled_from(NODE_IDS), min_size=min_size, max_size=max_size, unique=True)
    )
    host_zone = {host: draw(st.sampled_from(ZONES)) for host in HOST_IDS}
    members = []
    for node_id in node_ids:
        host = draw(st.sampled_from(HOST_IDS))
        zone = host_zone[host] if zones_per_host else draw(st.sampled_from(ZONES))
        weight = draw(st.sampled_from([1, 1, 2, 0.5, 1_000_000]))
        members.append(PlacementMember(node_id, host, zone, weight))
    return members


def all_owners(placement: Placement) -> list[tuple[str, ...]]:
    return [placement.owners_of_bucket(b) for b in range(BUCKET_COUNT)]


def new_member(members: list[PlacementMember], draw_host: str, zone: str | None) -> PlacementMember:
    taken = {m.node_id for m in members}
    node_id = next(n for n in NODE_IDS if n not in taken)
    return PlacementMember(node_id, draw_host, zone, 1)


@settings(max_examples=TABLE_EXAMPLES)
@given(member_sets(zones_per_host=False), st.integers(1, 3), st.randoms(use_true_random=False))
def test_same_member_set_same_table(members: list[PlacementMember], replicas: int, rnd) -> None:
    shuffled = list(members)
    rnd.shuffle(shuffled)
    one = Placement.build(members, replicas)
    two = Placement.build(shuffled, replicas)
    assert all_owners(one) == all_owners(two)
    assert one.epoch == two.epoch


def _table_digest(code_members: str) -> str:
    return (
        "from gossipcache.placement import Placement, PlacementMember\n"
        "import mmh3\n"
        f"p = Placement.build({code_members}, 3)\n"
        "data = ';'.join(','.join(p.owners_of_bucket(b)) for b in range(16384)).encode()\n"
        "print(p.epoch, mmh3.hash128(data))\n"
    )


def test_same_table_in_other_processes_whatever_the_hash_seed() -> None:
    members_code = (
        "[PlacementMember(f'node-{i}', f'host-{i % 3}', f'zone-{i % 2}' if i % 3 else 'zone-1',"
        " 1 + i % 2) for i in range(7)]"
    )
    code = _table_digest(members_code)
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.add(done.stdout.strip())
    members = [
        PlacementMember(
            f"node-{i}", f"host-{i % 3}", f"zone-{i % 2}" if i % 3 else "zone-1", 1 + i % 2
        )
        for i in range(7)
    ]
    here = Placement.build(members, 3)
    data = ";".join(",".join(o) for o in all_owners(here)).encode()
    assert outputs == {f"{here.epoch} {mmh3.hash128(data)}"}


@settings(max_examples=TABLE_EXAMPLES)
@given(member_sets(zones_per_host=False), st.integers(1, 4))
def test_owners_are_spread_over_zones_then_hosts_then_nodes(
    members: list[PlacementMember], replicas: int
) -> None:
    placement = Placement.build(members, replicas)
    by_id = {m.node_id: m for m in members}
    # A host's zone is the one its smallest-id member advertises.
    host_zone: dict[str, str | None] = {}
    for member in sorted(members, key=lambda m: m.node_id):
        host_zone.setdefault(member.host_id, member.zone)
    host_count, zone_count = len(host_zone), len(set(host_zone.values()))
    wanted = min(replicas, len(members))
    for bucket in range(BUCKET_COUNT):
        owners = placement.owners_of_bucket(bucket)
        assert len(owners) == wanted
        assert len(set(owners)) == wanted
        hosts = {by_id[o].host_id for o in owners}
        zones = {host_zone[h] for h in hosts}
        assert len(hosts) == min(wanted, host_count)
        assert len(zones) == min(wanted, zone_count)


def test_primary_is_the_top_score_and_lookups_use_the_bucket() -> None:
    members = [PlacementMember(f"n{i}", f"h{i % 2}", None, 1 + i) for i in range(5)]
    placement = Placement.build(members, 2)
    ranker = placement._ranker
    for bucket in range(0, BUCKET_COUNT, 97):
        scores = ranker.scores(bucket)
        top = ranker.node_ids[max(range(len(scores)), key=scores.__getitem__)]
        assert placement.owners_of_bucket(bucket)[0] == top
    for key in (b"foo", b"{user1}.a", b"", b"x" * 1000):
        assert placement.owners_of_key(key) == placement.owners_of_bucket(bucket_of(key))
        assert placement.primary_of_key(key) == placement.owners_of_key(key)[0]


@settings(max_examples=TABLE_EXAMPLES)
@given(
    member_sets(min_size=1, max_size=5),
    st.integers(1, 3),
    st.sampled_from(HOST_IDS + ["foxtrot"]),
    st.sampled_from(ZONES),
)
def test_join_and_leave_incrementally_equal_a_rebuild_and_move_only_what_they_must(
    members: list[PlacementMember], replicas: int, host: str, zone: str | None
) -> None:
    # Keep one zone per host (the newcomer takes its host's zone when the host exists), so the
    # minimal-movement rule applies; test_zone_disagreement covers the other case.
    zone = next((m.zone for m in members if m.host_id == host), zone)
    newcomer = new_member(members, host, zone)
    before = Placement.build(members, replicas)
    joined = before.with_member_added(newcomer)
    rebuilt = Placement.build([*members, newcomer], replicas)
    assert all_owners(joined) == all_owners(rebuilt)
    assert joined.epoch == rebuilt.epoch
    for old, new in zip(all_owners(before), all_owners(joined), strict=True):
        if old != new:
            assert newcomer.node_id in new  # a join moves a bucket only into the newcomer

    left = joined.with_member_removed(newcomer.node_id)
    assert all_owners(left) == all_owners(before)
    assert left.epoch == before.epoch

    if len(members) > 1:
        leaver = members[0].node_id
        gone = before.with_member_removed(leaver)
        assert all_owners(gone) == all_owners(Placement.build(members[1:], replicas))
        for old, new in zip(all_owners(before), all_owners(gone), strict=True):
            if old != new:
                assert leaver in old  # a leave moves only the leaver's buckets


@pytest.mark.parametrize(
    ("members", "newcomer", "replicas"),
    [
        # Fewer members than R: the newcomer joins every bucket, even on a known host.
        ([PlacementMember("a", "laptop")], PlacementMember("b", "laptop"), 3),
        # Fewer hosts than R: a new host joins every bucket, though it may rank last.
        (
            [PlacementMember("a", "laptop"), PlacementMember("b", "laptop")],
            PlacementMember("c", "desktop"),
            2,
        ),
        # Fewer zones than R: a new zone joins every bucket.
        (
            [PlacementMember("a", "h1", "zone-a"), PlacementMember("b", "h2", "zone-a")],
            PlacementMember("c", "h3", "zone-b"),
            2,
        ),
    ],
)
def test_a_join_that_must_enter_every_bucket(members, newcomer, replicas) -> None:
    joined = Placement.build(members, replicas).with_member_added(newcomer)
    assert all_owners(joined) == all_owners(Placement.build([*members, newcomer], replicas))
    assert all(newcomer.node_id in owners for owners in all_owners(joined))


@settings(max_examples=TABLE_EXAMPLES)
@given(
    member_sets(min_size=2, max_size=5, zones_per_host=False),
    st.integers(1, 3),
    st.sampled_from(ZONES),
)
def test_zone_disagreement_still_equals_a_rebuild(
    members: list[PlacementMember], replicas: int, zone
) -> None:
    # The newcomer joins an existing host with the smallest id, so the host's zone may change.
    newcomer = PlacementMember("node-", members[0].host_id, zone, 1)
    before = Placement.build(members, replicas)
    joined = before.with_member_added(newcomer)
    assert all_owners(joined) == all_owners(Placement.build([*members, newcomer], replicas))
    assert all_owners(joined.with_member_removed("node-")) == all_owners(before)


@given(
    member_sets(max_size=8, zones_per_host=False),
    member_sets(max_size=8, zones_per_host=False),
    st.integers(1, 3),
)
def test_epoch_changes_iff_the_member_set_changes(
    one: list[PlacementMember], two: list[PlacementMember], replicas: int
) -> None:
    same_set = {(m.node_id, m.host_id, m.zone, float(m.weight)) for m in one} == {
        (m.node_id, m.host_id, m.zone, float(m.weight)) for m in two
    }
    assert (placement_epoch(one, replicas) == placement_epoch(two, replicas)) == same_set
    assert placement_epoch(one, replicas) != placement_epoch(one, replicas + 1)
    assert placement_epoch(one, replicas) == placement_epoch(list(reversed(one)), replicas)


def test_epoch_sees_every_field() -> None:
    base = PlacementMember("n1", "h1", "z1", 2)
    epoch = placement_epoch([base], 2)
    for changed in (
        PlacementMember("n2", "h1", "z1", 2),
        PlacementMember("n1", "h2", "z1", 2),
        PlacementMember("n1", "h1", None, 2),
        PlacementMember("n1", "h1", "z1", 3),
    ):
        assert placement_epoch([changed], 2) != epoch
    assert placement_epoch([PlacementMember("n1", "h1", "z1", 2.0)], 2) == epoch
    assert 0 <= epoch < 2**64


def test_twice_the_weight_owns_about_twice_the_buckets() -> None:
    # Fixed ids, so the counts are fixed too: the bounds only say how close HRW gets.
    members = [PlacementMember(f"node-{i}", f"host-{i}", None, 1) for i in range(9)]
    members.append(PlacementMember("node-heavy", "host-heavy", None, 2))
    placement = Placement.build(members, 1)
    counts = placement.bucket_counts()
    light_mean = sum(c for n, c in counts.items() if n != "node-heavy") / 9
    assert 1.8 < counts["node-heavy"] / light_mean < 2.2
    # As one of R = 2 replicas too (a weight-2 node cannot hold more than one copy per bucket).
    counts = Placement.build(members, 2).bucket_counts()
    light_mean = sum(c for n, c in counts.items() if n != "node-heavy") / 9
    assert 1.6 < counts["node-heavy"] / light_mean < 2.2


def test_unweighted_buckets_are_balanced() -> None:
    members = [PlacementMember(f"node-{i}", f"host-{i}") for i in range(10)]
    counts = Placement.build(members, 3).bucket_counts()
    mean = 3 * BUCKET_COUNT / 10
    assert max(counts.values()) / mean < 1.05
    assert min(counts.values()) / mean > 0.95


def test_one_host_still_gets_r_replicas() -> None:
    members = [PlacementMember(f"node-{i}", "laptop") for i in range(3)]
    placement = Placement.build(members, 3)
    assert all(len(set(placement.owners_of_bucket(b))) == 3 for b in range(BUCKET_COUNT))


def test_a_build_in_slices_does_bounded_work_and_equals_one_build() -> None:
    members = [PlacementMember(f"node-{i}", f"host-{i % 4}", f"zone-{i % 2}") for i in range(8)]
    build = Placement.begin_build(members, 2)
    with pytest.raises(RuntimeError):
        build.result()
    steps = 0
    while not build.step(scores_max=2400):  # 100 buckets of 8 scores + 16 of overhead
        steps += 1
    assert steps + 1 == BUCKET_COUNT // 100 + 1
    assert all_owners(build.result()) == all_owners(Placement.build(members, 2))

    whole = build.result()
    join = whole.begin_add(PlacementMember("node-new", "host-9", "zone-1"))
    join_steps = 1
    while not join.step(scores_max=2000):
        join_steps += 1
    assert join_steps >= 2  # a join scores the newcomer in every bucket: 16384 scores at least
    assert all_owners(join.result()) == all_owners(
        whole.with_member_added(PlacementMember("node-new", "host-9", "zone-1"))
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", "h"), "node_id"),
        (("n", ""), "host_id"),
        (("n", "h", ""), "zone"),
        (("n", "h", None, 0), "weight"),
        (("n", "h", None, -1), "weight"),
        (("n", "h", None, float("nan")), "weight"),
        (("n", "h", None, float("inf")), "weight"),
        (("n", "h", None, True), "weight"),
        (("n", "h", None, 1e-9), "weight"),
        (("n", "h", None, 2.0**65), "weight"),
        (("n" * 256, "h"), "longer"),
    ],
)
def test_bad_members_are_refused(fields: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlacementMember(*fields)


def test_bad_member_sets_are_refused() -> None:
    one = PlacementMember("n1", "h1")
    with pytest.raises(ValueError, match="at least one"):
        Placement.build([], 1)
    with pytest.raises(ValueError, match="duplicate"):
        Placement.build([one, PlacementMember("n1", "h2")], 1)
    for replicas in (0, 9, True):
        with pytest.raises(ValueError, match="replicas"):
            Placement.build([one], replicas)
    with pytest.raises(ValueError, match="more than"):
        Placement.build([PlacementMember(f"n{i}", "h") for i in range(1025)], 1)
    placement = Placement.build([one], 1)
    with pytest.raises(ValueError, match="already"):
        placement.with_member_added(PlacementMember("n1", "h9"))
    with pytest.raises(ValueError, match="not a member"):
        placement.with_member_removed("n2")
    with pytest.raises(ValueError, match="at least one"):
        placement.with_member_removed("n1")
