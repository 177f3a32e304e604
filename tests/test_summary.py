"""Per-bucket anti-entropy summaries (gossipcache/store/summaries.py): incremental updates
agree with a rebuild, the two-level descent finds exactly the differing buckets, and a change
applied twice shows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipcache.placement import bucket_of
from gossipcache.store.summaries import (
    GROUP_COUNT,
    GROUP_SIZE,
    BucketSummaries,
    begin_rebuild,
    entry_digest,
    rebuild,
)

keys = st.binary(max_size=12)
versions = st.integers(min_value=0, max_value=(1 << 128) - 1)
expiries = st.none() | st.integers(min_value=0, max_value=(1 << 64) - 1)
entries = st.tuples(keys, versions, expiries, st.booleans())
#: A replica's contents: one entry per key, as in the store.
contents = st.dictionaries(keys, st.tuples(versions, expiries, st.booleans()), max_size=40)


def as_entries(content: dict) -> list[tuple]:
    return [(key, *fields) for key, fields in content.items()]


def digest_of(key: bytes, fields: tuple) -> int:
    return entry_digest(key, *fields)


def descend(mine: BucketSummaries, theirs: BucketSummaries) -> list[int]:
    """The differing buckets as two replicas find them: roots, then group sums, then the bucket
    sums of each differing group."""
    if mine.root() == theirs.root():
        return []
    found = []
    for group in mine.differing_groups(theirs.group_sums()):
        found += mine.differing_buckets(group, theirs.bucket_sums(group))
    return found


def test_digest_is_pinned() -> None:
    """The digest is part of the protocol between replicas: it must not change between versions
    or platforms."""
    assert entry_digest(b"user:1", (1 << 64) | 7, 1_700_000_000_000, False) == 18200562507518041442
    assert entry_digest(b"user:1", 5, None, False) == entry_digest(b"user:1", 5, None, False)


@given(entries)
def test_digest_separates_every_field(entry: tuple) -> None:
    key, version, expires_at_ms, tombstone = entry
    digest = entry_digest(*entry)
    assert 0 <= digest < 1 << 64
    assert entry_digest(key, version, expires_at_ms, not tombstone) != digest
    assert entry_digest(key, version ^ 1, expires_at_ms, tombstone) != digest
    assert entry_digest(key + b"x", version, expires_at_ms, tombstone) != digest
    # No expiry and expiry 0 are different entries.
    other_expiry = 0 if expires_at_ms is None else None
    assert entry_digest(key, version, other_expiry, tombstone) != digest


def test_digest_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="version"):
        entry_digest(b"k", 1 << 128, None, False)
    with pytest.raises(ValueError, match="version"):
        entry_digest(b"k", -1, None, False)
    with pytest.raises(ValueError, match="expires_at_ms"):
        entry_digest(b"k", 1, -1, False)


@given(contents, contents, st.randoms(use_true_random=False))
def test_incremental_updates_in_any_order_equal_a_rebuild(before: dict, after: dict, rng) -> None:
    """Start from ``before``, turn it into ``after`` with adds, removes and replaces in a random
    order: the sums and counts equal a rebuild of ``after``, and the tree is consistent."""
    summaries = rebuild(as_entries(before))
    changes = []
    for key in before.keys() | after.keys():
        if key not in after:
            changes.append(("remove", key))
        elif key not in before:
            changes.append(("add", key))
        elif before[key] != after[key]:
            changes.append(("replace", key))
    rng.shuffle(changes)
    for kind, key in changes:
        bucket = bucket_of(key)
        if kind == "add":
            summaries.add(bucket, digest_of(key, after[key]))
        elif kind == "remove":
            summaries.remove(bucket, digest_of(key, before[key]))
        else:
            summaries.replace(bucket, digest_of(key, before[key]), digest_of(key, after[key]))
    expected = rebuild(as_entries(after))
    assert summaries == expected
    assert summaries.root() == expected.root()
    assert summaries.group_sums() == expected.group_sums()
    assert summaries.entry_count() == len(after)
    # The tree's levels agree with each other.
    group_sums = summaries.group_sums()
    for group in range(GROUP_COUNT):
        assert sum(summaries.bucket_sums(group)) % (1 << 64) == group_sums[group]
    assert sum(group_sums) % (1 << 64) == summaries.root()


@given(contents, entries)
def test_add_then_remove_restores_the_sums(content: dict, entry: tuple) -> None:
    summaries = rebuild(as_entries(content))
    before = (summaries.root(), summaries.group_sums(), summaries.entry_count())
    bucket = bucket_of(entry[0])
    summaries.add(bucket, entry_digest(*entry))
    assert summaries.root() != before[0] or entry_digest(*entry) == 0
    summaries.remove(bucket, entry_digest(*entry))
    assert (summaries.root(), summaries.group_sums(), summaries.entry_count()) == before
    assert summaries == rebuild(as_entries(content))


@given(contents, entries)
def test_a_change_applied_twice_shows(content: dict, entry: tuple) -> None:
    """Adding the same entry twice, or replacing twice, leaves the sums different from the
    correct ones and from the ones before the change. With an XOR the second application would
    cancel the first: the replica would look equal to a peer that never saw the entry."""
    key = entry[0]
    content = {k: v for k, v in content.items() if k != key}
    bucket = bucket_of(key)
    digest = entry_digest(*entry)
    correct = rebuild(as_entries(content) + [entry])
    doubled = rebuild(as_entries(content))
    doubled.add(bucket, digest)
    doubled.add(bucket, digest)
    assert doubled.bucket_sum(bucket) != correct.bucket_sum(bucket)
    assert doubled.root() != correct.root()
    assert descend(doubled, correct) == [bucket]
    assert descend(doubled, rebuild(as_entries(content))) == [bucket]

    newer = (key, entry[1] ^ 1, entry[2], entry[3])
    replaced_twice = rebuild(as_entries(content) + [entry])
    replaced_twice.replace(bucket, digest, entry_digest(*newer))
    replaced_twice.replace(bucket, digest, entry_digest(*newer))
    assert descend(replaced_twice, rebuild(as_entries(content) + [newer])) == [bucket]
    assert descend(replaced_twice, rebuild(as_entries(content) + [entry])) == [bucket]


@given(contents, contents)
def test_descent_finds_exactly_the_buckets_whose_contents_differ(mine: dict, theirs: dict) -> None:
    a, b = rebuild(as_entries(mine)), rebuild(as_entries(theirs))
    differing = sorted(
        {bucket_of(key) for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)}
    )
    assert descend(a, b) == differing
    assert descend(b, a) == differing
    assert (a.root() == b.root()) == (not differing)


@given(contents, st.integers(min_value=1, max_value=7))
def test_sliced_rebuild_equals_a_rebuild(content: dict, entries_max: int) -> None:
    build = begin_rebuild(as_entries(content))
    with pytest.raises(RuntimeError):
        build.result()
    steps = 0
    while not build.step(entries_max):
        steps += 1
        assert steps <= len(content) // entries_max + 1
    assert build.done
    assert build.step(entries_max)  # finished builds stay finished
    assert build.result() == rebuild(as_entries(content))


def test_misuse_is_rejected_and_leaves_the_summary_unchanged() -> None:
    summaries = BucketSummaries()
    with pytest.raises(ValueError, match="empty bucket"):
        summaries.remove(5, 123)
    with pytest.raises(ValueError, match="empty bucket"):
        summaries.replace(5, 123, 456)
    assert summaries == BucketSummaries()
    assert summaries.root() == 0
    with pytest.raises(ValueError, match="group sums"):
        summaries.differing_groups([0] * (GROUP_COUNT - 1))
    with pytest.raises(ValueError, match="bucket sums"):
        summaries.differing_buckets(0, [0] * (GROUP_SIZE + 1))
    with pytest.raises(ValueError, match="group"):
        summaries.bucket_sums(GROUP_COUNT)
    with pytest.raises(ValueError, match="entries_max"):
        begin_rebuild([]).step(0)


def test_size_is_fixed() -> None:
    """The structure costs the same whatever the data size: 2 x 16384 + 128 words."""
    summaries = BucketSummaries()
    assert summaries.size_bytes() == 8 * (2 * 16384 + 128)
    summaries.add_key(b"k", 1, None, False)
    assert summaries.size_bytes() == 8 * (2 * 16384 + 128)
