"""The store's bucket tracking for anti-entropy (issue 10): with ``track_buckets`` the store keeps
per-bucket summaries equal, after every call, to a rebuild from every held entry, an index of
each bucket's keys, and the newest stamp of a value evicted from each bucket."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gossipcache.clock import ManualClock
from gossipcache.errors import EntryTooLarge
from gossipcache.membership import Keyring
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import SUMMARY_VERIFY_INTERVAL_MS, NodeCore
from gossipcache.placement import BUCKET_COUNT, bucket_of
from gossipcache.store import BucketSummaries, Store, entry_digest
from gossipcache.store.store import (
    BUCKET_INDEX_OVERHEAD_BYTES,
    ENTRY_OVERHEAD_BYTES,
    TOMBSTONE,
)
from gossipcache.store.summaries import rebuild

NOW_MS = 1_700_000_000_000
GRACE_MS = 100
#: Keys that share buckets (hash tags), so a bucket holds several entries.
KEYS = [b"{a}1", b"{a}2", b"{a}3", b"{b}1", b"{b}2", b"c", b"d", b"e"]


def version_of(stamp: int, tag: int = 7) -> int:
    """A replicated version: the HLC stamp in the high 64 bits, a node tag in the low."""
    return stamp << 64 | tag


def tracked_store(size_bytes_max: int = 1 << 20, **kwargs) -> Store:
    return Store(
        size_bytes_max,
        shard_count=2,
        expired_tombstone_ms=GRACE_MS,
        record_evictions=True,
        track_buckets=True,
        **kwargs,
    )


def held_entries(store: Store) -> list[tuple[bytes, int, int | None, bool]]:
    """Every held entry, read from the store's maps (expired ones included)."""
    return [
        (key, shard.versions[key], shard.expires_at_ms.get(key), value is TOMBSTONE)
        for shard in store._shards
        for key, value in shard.values.items()
    ]


def summed(entries: list[tuple[bytes, int, int | None, bool]]) -> BucketSummaries:
    """The summaries of ``entries`` by ``add``, one entry at a time: equal to ``rebuild``
    (tests/test_summary.py) and ~50x cheaper for a handful of entries, which keeps the stateful
    test fast; ``check_invariants`` compares with ``rebuild`` itself."""
    summaries = BucketSummaries()
    for entry in entries:
        summaries.add_key(*entry)
    return summaries


def assert_tracked(store: Store, *, full: bool = True) -> None:
    """Summaries equal the held entries' and the key index lists exactly the held keys; with
    ``full`` also ``check_invariants`` (a ``rebuild`` of 16384 buckets, ~2 ms)."""
    entries = held_entries(store)
    assert store.summaries == summed(entries)
    for bucket in {bucket_of(entry[0]) for entry in entries}:
        in_bucket = {entry[0] for entry in entries if bucket_of(entry[0]) == bucket}
        assert store.bucket_key_count(bucket) == len(in_bucket)
    if full:
        assert store.summaries == rebuild(entries)
        store.check_invariants()


class TrackedStoreMachine(RuleBasedStateMachine):
    """Random sequences of every mutating call on a small tracked store (evictions happen: the
    limit holds a handful of entries), checked after each step against a rebuild."""

    def __init__(self) -> None:
        super().__init__()
        # ~8 entries fit: writes of new keys evict.
        self.store = tracked_store(8 * (ENTRY_OVERHEAD_BYTES + BUCKET_INDEX_OVERHEAD_BYTES + 300))
        self.now_ms = NOW_MS
        #: The evicted stamp each bucket should show: from take_evicted and evict_version.
        self.evicted_stamps: dict[int, int] = {}

    def _note_evicted(self, key: bytes, version: int) -> None:
        bucket = bucket_of(key)
        self.evicted_stamps[bucket] = max(self.evicted_stamps.get(bucket, 0), version >> 64)

    @rule(
        key=st.sampled_from(KEYS),
        value=st.none() | st.binary(max_size=40),
        stamp=st.integers(1, 30),
        tag=st.integers(0, 3),
        expiry_offset_ms=st.none() | st.integers(-300, 500),
    )
    def apply(self, key, value, stamp, tag, expiry_offset_ms) -> None:
        if value is None and expiry_offset_ms is None:
            expiry_offset_ms = GRACE_MS
        expires_at_ms = None if expiry_offset_ms is None else self.now_ms + expiry_offset_ms
        self.store.apply(key, value, version_of(stamp, tag), expires_at_ms, self.now_ms)

    @rule(
        key=st.sampled_from(KEYS),
        value=st.binary(max_size=40),
        ttl_ms=st.none() | st.integers(1, 500),
    )
    def put(self, key, value, ttl_ms) -> None:
        self.store.put(key, value, self.now_ms, ttl_ms)

    @rule(key=st.sampled_from(KEYS), value=st.binary(max_size=40))
    def put_keep_ttl(self, key, value) -> None:
        self.store.put(key, value, self.now_ms, keep_ttl=True)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key) -> None:
        self.store.delete(key, self.now_ms)

    @rule(key=st.sampled_from(KEYS), ttl_ms=st.none() | st.integers(-5, 500))
    def expire(self, key, ttl_ms) -> None:
        with contextlib.suppress(EntryTooLarge):  # a TTL that does not fit: nothing changed
            self.store.expire(key, ttl_ms, self.now_ms)

    @rule(key=st.sampled_from(KEYS))
    def get(self, key) -> None:  # lazy expiry
        self.store.get(key, self.now_ms)

    @rule(key=st.sampled_from(KEYS))
    def lookup(self, key) -> None:  # lazy expiry, replication's read
        self.store.lookup(key, self.now_ms)

    @rule(elapsed_ms=st.integers(0, 600))
    def advance(self, elapsed_ms) -> None:
        self.now_ms += elapsed_ms

    @rule(keys_max=st.integers(1, 50))
    def expire_tick(self, keys_max) -> None:  # active expiry
        self.store.expire_tick(self.now_ms, keys_max)

    @rule(key=st.sampled_from(KEYS), exact=st.booleans())
    def evict_version(self, key, exact) -> None:
        found = self.store.lookup(key, self.now_ms)
        version = found[1] if found is not None and exact else version_of(3)
        if self.store.evict_version(key, version):
            self._note_evicted(key, version)

    @rule()
    def flush(self) -> None:
        self.store.flush()
        self.store.reclaim_tick()

    @rule(key=st.sampled_from(KEYS))
    def bucket_entries(self, key) -> None:
        bucket = bucket_of(key)
        before = {entry[0]: entry for entry in held_entries(self.store)}
        listed = self.store.bucket_entries(bucket, self.now_ms)
        after = {entry[0]: entry for entry in held_entries(self.store)}
        in_bucket = {k: entry for k, entry in after.items() if bucket_of(k) == bucket}
        assert sorted(listed) == sorted(in_bucket.values())
        for _, _, expires_at_ms, _ in listed:
            assert expires_at_ms is None or expires_at_ms > self.now_ms
        # Only what was due in that bucket changed.
        for k, entry in before.items():
            if bucket_of(k) != bucket or (entry[2] is None or entry[2] > self.now_ms):
                assert after.get(k) == entry

    @rule(entries_max=st.integers(1, 5000))
    def verify_step(self, entries_max) -> None:
        self.store.verify_summaries_step(self.now_ms, entries_max)
        assert self.store.stats().summary_drift_buckets == 0  # nothing ever drifted

    def teardown(self) -> None:
        assert_tracked(self.store, full=True)

    @invariant()
    def summaries_equal_a_rebuild(self) -> None:
        store = self.store
        assert_tracked(store, full=False)
        for key, version in store.take_evicted():
            self._note_evicted(key, version)
        for bucket, stamp in self.evicted_stamps.items():
            assert store.evicted_stamp(bucket) == stamp


TestTrackedStore = TrackedStoreMachine.TestCase
TestTrackedStore.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


# -- one test per mutation site: each fails if that site forgets its update ------------------


def _apply(store: Store, key: bytes, value, stamp: int, expires_at_ms=None, now_ms=NOW_MS):
    return store.apply(key, value, version_of(stamp), expires_at_ms, now_ms)


MUTATIONS = {
    # put: a new key, an overwrite, an overwrite that keeps / clears / sets a TTL
    "put_new": lambda s: s.put(b"k", b"v", NOW_MS),
    "put_overwrite": lambda s: (s.put(b"k", b"v", NOW_MS), s.put(b"k", b"w", NOW_MS)),
    "put_ttl": lambda s: (s.put(b"k", b"v", NOW_MS), s.put(b"k", b"v", NOW_MS, 500)),
    "put_keep_ttl": lambda s: (
        s.put(b"k", b"v", NOW_MS, 500),
        s.put(b"k", b"w", NOW_MS, keep_ttl=True),
    ),
    "put_clear_ttl": lambda s: (s.put(b"k", b"v", NOW_MS, 500), s.put(b"k", b"v", NOW_MS)),
    "put_over_expired": lambda s: (s.put(b"k", b"v", NOW_MS, 5), s.put(b"k", b"w", NOW_MS + 9)),
    "delete": lambda s: (s.put(b"k", b"v", NOW_MS), s.delete(b"k", NOW_MS)),
    "expire_set": lambda s: (s.put(b"k", b"v", NOW_MS), s.expire(b"k", 500, NOW_MS)),
    "expire_clear": lambda s: (s.put(b"k", b"v", NOW_MS, 500), s.expire(b"k", None, NOW_MS)),
    "expire_drop": lambda s: (s.put(b"k", b"v", NOW_MS), s.expire(b"k", 0, NOW_MS)),
    # apply: every branch
    "apply_new": lambda s: _apply(s, b"k", b"v", 1),
    "apply_new_ttl": lambda s: _apply(s, b"k", b"v", 1, NOW_MS + 500),
    "apply_replace": lambda s: (_apply(s, b"k", b"v", 1), _apply(s, b"k", b"w", 2, NOW_MS + 9)),
    "apply_replace_clears_ttl": lambda s: (
        _apply(s, b"k", b"v", 1, NOW_MS + 500),
        _apply(s, b"k", b"w", 2),
    ),
    "apply_tombstone": lambda s: (_apply(s, b"k", b"v", 1), _apply(s, b"k", None, 2, NOW_MS + 50)),
    "apply_tombstone_new": lambda s: _apply(s, b"k", None, 2, NOW_MS + 50),
    "apply_value_over_tombstone": lambda s: (
        _apply(s, b"k", None, 1, NOW_MS + 50),
        _apply(s, b"k", b"v", 2),
    ),
    "apply_expired_value_becomes_tombstone": lambda s: (
        _apply(s, b"k", b"v", 1),
        _apply(s, b"k", b"w", 2, NOW_MS - 10),
    ),
    "apply_tombstone_past_drops": lambda s: (
        _apply(s, b"k", b"v", 1),
        _apply(s, b"k", None, 2, NOW_MS - 1),
    ),
    "apply_over_lazily_expired": lambda s: (
        _apply(s, b"k", b"v", 1, NOW_MS + 5),
        _apply(s, b"k", b"w", 2, None, NOW_MS + 10),
    ),
    # expiry: lazy (a read) and active (a tick); a value to its tombstone, a tombstone collected
    "lazy_expiry_to_tombstone": lambda s: (
        s.put(b"k", b"v", NOW_MS, 5),
        s.get(b"k", NOW_MS + 10),
    ),
    "lazy_expiry_collects_tombstone": lambda s: (
        _apply(s, b"k", None, 1, NOW_MS + 5),
        s.lookup(b"k", NOW_MS + 10),
    ),
    "active_expiry": lambda s: (s.put(b"k", b"v", NOW_MS, 5), s.expire_tick(NOW_MS + 10)),
    "active_expiry_collects_tombstone": lambda s: (
        _apply(s, b"k", None, 1, NOW_MS + 5),
        s.expire_tick(NOW_MS + 10),
    ),
    "evict_version": lambda s: (_apply(s, b"k", b"v", 1), s.evict_version(b"k", version_of(1))),
    "flush": lambda s: (s.put(b"k", b"v", NOW_MS), s.flush()),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_each_mutation_site_updates_the_summaries(mutation) -> None:
    store = tracked_store()
    _apply(store, b"other", b"x", 1)  # a neighbour the change must leave alone
    mutation(store)
    assert_tracked(store)


def test_expiry_without_tombstones_drops_the_entry_from_its_summary() -> None:
    store = Store(1 << 20, track_buckets=True)
    store.put(b"k", b"v", NOW_MS, 5)
    store.expire_tick(NOW_MS + 10)
    assert not store.holds(b"k")
    assert_tracked(store)
    assert store.summaries == BucketSummaries()


def test_eviction_updates_the_summaries_and_records_the_evicted_stamp() -> None:
    overhead = tracked_store().entry_overhead_bytes
    store = tracked_store(size_bytes_max=4 * (overhead + 20))
    for index in range(12):
        _apply(store, b"key:%d" % index, b"v" * 10, 100 + index)
        assert_tracked(store)
    evicted = store.take_evicted()
    assert len(evicted) >= 8
    expected: dict[int, int] = {}
    for key, version in evicted:
        expected[bucket_of(key)] = max(expected.get(bucket_of(key), 0), version >> 64)
    for bucket in range(BUCKET_COUNT):
        assert store.evicted_stamp(bucket) == expected.get(bucket, 0)


def test_evicted_stamp_keeps_the_largest_and_ignores_tombstones() -> None:
    store = tracked_store()
    bucket = bucket_of(b"{t}a")
    _apply(store, b"{t}a", b"v", 50)
    _apply(store, b"{t}b", b"v", 20)
    assert store.evict_version(b"{t}a", version_of(50))
    assert store.evict_version(b"{t}b", version_of(20))
    assert store.evicted_stamp(bucket) == 50
    _apply(store, b"{t}c", None, 90, NOW_MS + 50)
    assert not store.evict_version(b"{t}c", version_of(90))  # a tombstone is not evicted
    assert store.evicted_stamp(bucket) == 50
    store.flush()
    assert store.evicted_stamp(bucket) == 50  # a flush is no eviction: the stamp stays


def test_bucket_entries_expires_what_is_due_first() -> None:
    store = tracked_store()
    _apply(store, b"{x}value", b"v", 1, NOW_MS + 10)
    _apply(store, b"{x}tombstone", None, 2, NOW_MS + 10)
    _apply(store, b"{x}old_value", b"v", 3, NOW_MS - GRACE_MS - 50)  # stored as its tombstone
    _apply(store, b"{x}live", b"v", 4)
    bucket = bucket_of(b"{x}")
    assert store.bucket_key_count(bucket) == 3  # the old value's tombstone was already past
    listed = sorted(store.bucket_entries(bucket, NOW_MS + 20))
    assert listed == [
        (b"{x}live", version_of(4), None, False),
        (b"{x}value", version_of(1), NOW_MS + 10 + GRACE_MS, True),
    ]
    # Past the value's tombstone grace as well: a value due long ago goes in one call.
    _apply(store, b"{x}late", b"v", 5, NOW_MS + 30)
    listed = store.bucket_entries(bucket, NOW_MS + 30 + GRACE_MS)
    assert sorted(listed) == [(b"{x}live", version_of(4), None, False)]
    assert_tracked(store)


def test_drift_is_found_fixed_and_counted() -> None:
    store = tracked_store()
    keys = [b"key:%d" % index for index in range(300)]
    for index, key in enumerate(keys):
        _apply(store, key, b"v", index + 1)
    correct = rebuild(held_entries(store))
    broken = bucket_of(keys[17])
    store.summaries.add(broken, 12345)  # a lost or doubled update
    store.summaries.set_bucket(0, 99, 1)  # an empty bucket that claims an entry
    assert store.summaries != correct
    hashed = 0
    steps = 0
    while steps == 0 or store._verify_bucket != 0:
        hashed += store.verify_summaries_step(NOW_MS, 256)
        steps += 1
    assert store.summaries == correct
    assert store.summaries.root() == correct.root()
    assert store.stats().summary_drift_buckets == 2
    assert hashed == len(keys)
    assert steps > 1  # bounded steps, not one pass


def test_verify_step_is_bounded() -> None:
    store = tracked_store()
    for index in range(3000):
        _apply(store, b"key:%d" % index, b"v", index + 1)
    largest = max(store.bucket_key_count(bucket) for bucket in range(BUCKET_COUNT))
    # Whole buckets: at most one bucket past the budget.
    assert store.verify_summaries_step(NOW_MS, 100) < 100 + largest
    # Empty buckets count as work too: a step over an empty store visits a bounded number.
    empty = tracked_store()
    assert empty.verify_summaries_step(NOW_MS, 100) == 0
    assert empty._verify_bucket == 100


def test_a_store_that_does_not_track_pays_nothing() -> None:
    plain = Store(1 << 20)
    assert plain.summaries is None
    assert (
        plain.entry_overhead_bytes
        == ENTRY_OVERHEAD_BYTES + plain._shards[0].policy.entry_metadata_bytes
    )
    assert (
        tracked_store().entry_overhead_bytes
        == plain.entry_overhead_bytes + BUCKET_INDEX_OVERHEAD_BYTES
    )
    plain.put(b"k", b"v", NOW_MS)
    assert plain.bucket_entries(bucket_of(b"k"), NOW_MS) == []
    assert plain.bucket_key_count(bucket_of(b"k")) == 0
    assert plain.evicted_stamp(0) == 0
    assert plain.verify_summaries_step(NOW_MS, 100) == 0


def test_digest_layout_is_what_the_store_feeds() -> None:
    store = tracked_store()
    _apply(store, b"k", b"v", 5, NOW_MS + 10)
    assert store.summaries.bucket_sum(bucket_of(b"k")) == entry_digest(
        b"k", version_of(5), NOW_MS + 10, False
    )


def _replicated_core() -> NodeCore:
    return NodeCore(
        NodeConfig(size_bytes_max=1 << 24),
        ManualClock(wall_ms=NOW_MS),
        address="127.0.0.1:7001",
        rng=random.Random(1),
        keyring=Keyring(b"k" * 32),
    )


def test_a_replicated_node_tracks_buckets_and_checks_for_drift_in_its_tick() -> None:
    core = _replicated_core()
    store = core.store
    assert store.summaries is not None
    assert NodeCore(NodeConfig(membership_enabled=False), ManualClock()).store.summaries is None
    for index in range(50):
        _apply(store, b"key:%d" % index, b"v", index + 1)
    store.summaries.add(bucket_of(b"key:3"), 1)
    clock = core.clock
    # 16384 buckets (empty ones count as one entry of work): 8 steps of 2048, one a second.
    for _ in range(9):
        clock.advance(SUMMARY_VERIFY_INTERVAL_MS)
        assert core.next_deadline_ms() <= clock.monotonic_ms()
        core.tick(clock.monotonic_ms())
    assert store.stats().summary_drift_buckets == 1
    assert store.summaries == rebuild(held_entries(store))
