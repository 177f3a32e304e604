"""The store's replicated side: last-writer-wins ``apply``, tombstones, expired values turned
into tombstones, eviction records and version-checked eviction notices."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.store import Store
from gossipcache.store.store import (
    APPLY_NEW,
    APPLY_REPLACED,
    APPLY_STALE,
    EVICTED_RECORD_MAX,
)

GRACE_MS = 1000


def replicated_store(size_bytes_max: int = 1 << 20, **options) -> Store:
    return Store(
        size_bytes_max, "lru", expired_tombstone_ms=GRACE_MS, record_evictions=True, **options
    )


def test_newer_version_wins_whatever_the_order():
    forward, backward = replicated_store(), replicated_store()
    writes = [(b"a", 5), (b"b", 9), (b"c", 7)]
    for value, version in writes:
        forward.apply(b"k", value, version, None, 0)
    for value, version in reversed(writes):
        backward.apply(b"k", value, version, None, 0)
    assert forward.lookup(b"k", 0) == backward.lookup(b"k", 0) == (b"b", 9, None)


def test_apply_outcomes_and_equal_version_is_stale():
    store = replicated_store()
    assert store.apply(b"k", b"v1", 10, None, 0) == APPLY_NEW
    assert store.apply(b"k", b"v2", 10, None, 0) == APPLY_STALE
    assert store.apply(b"k", b"v2", 11, None, 0) == APPLY_REPLACED
    assert store.apply(b"k", None, 12, 500, 0) == APPLY_REPLACED  # a delete over a live value
    assert store.apply(b"k", b"old", 11, None, 0) == APPLY_STALE  # the tombstone keeps it out
    assert store.get(b"k", 0) is None
    assert store.lookup(b"k", 0) == (None, 12, 500)
    assert store.apply(b"k", b"v3", 13, None, 0) == APPLY_NEW  # a tombstone is not live
    store.check_invariants()


def test_tombstone_is_collected_after_its_instant():
    store = replicated_store()
    store.apply(b"k", None, 3, 100, 0)
    assert store.stats().tombstones == 1 and store.stats().keys == 0
    store.expire_tick(100)
    assert store.lookup(b"k", 100) is None
    assert store.stats().tombstones == 0
    assert store.apply(b"k", b"late", 2, None, 100) == APPLY_NEW  # after the grace: accepted
    store.check_invariants()


def test_expired_value_becomes_a_tombstone_that_refuses_older_writes():
    store = replicated_store()
    store.apply(b"k", b"v", 8, 50, 0)
    assert store.lookup(b"k", 49) == (b"v", 8, 50)
    assert store.get(b"k", 50) is None
    assert store.lookup(b"k", 50) == (None, 8, 50 + GRACE_MS)
    assert store.apply(b"k", b"older", 7, None, 60) == APPLY_STALE
    store.expire_tick(50 + GRACE_MS)
    assert store.lookup(b"k", 50 + GRACE_MS) is None
    store.check_invariants()


def test_active_expiry_turns_values_into_tombstones():
    store = replicated_store()
    for index in range(50):
        store.apply(b"k%d" % index, b"v", index + 1, 10, 0)
    store.expire_tick(10, keys_max=1000)
    stats = store.stats()
    assert (stats.keys, stats.tombstones, stats.expirations) == (0, 50, 50)
    store.check_invariants()


def test_an_expired_value_is_never_stored():
    store = replicated_store()
    assert store.apply(b"k", b"v", 4, 100, 200) == APPLY_NEW
    assert store.get(b"k", 200) is None
    assert store.lookup(b"k", 200) == (None, 4, 100 + GRACE_MS)
    store.check_invariants()


def test_evictions_are_recorded_with_their_version_and_bounded():
    entry = replicated_store().entry_bytes(b"k0000", b"x" * 100, False)
    store = replicated_store(size_bytes_max=entry * 10)
    for index in range(30):
        store.apply(b"k%04d" % index, b"x" * 100, 1000 + index, None, 0)
    evicted = store.take_evicted()
    assert len(evicted) == 20
    assert evicted[0] == (b"k0000", 1000)  # lru: the oldest first
    assert store.take_evicted() == []
    store.check_invariants()
    many = replicated_store(size_bytes_max=entry * 2)
    for index in range(EVICTED_RECORD_MAX + 10):
        many.apply(b"k%06d" % index, b"x" * 96, index + 1, None, 0)
    assert len(many.take_evicted()) == EVICTED_RECORD_MAX
    assert many.evictions_unreported == many.stats().evictions - EVICTED_RECORD_MAX > 0


def test_eviction_notice_removes_only_the_version_it_names():
    store = replicated_store()
    store.apply(b"k", b"v", 5, None, 0)
    assert not store.evict_version(b"k", 4)
    assert store.evict_version(b"k", 5)
    assert store.lookup(b"k", 0) is None
    store.apply(b"k", None, 9, 100, 0)
    assert not store.evict_version(b"k", 9)  # tombstones are not evicted by notice
    store.check_invariants()


OPS = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"c"]),
        st.one_of(st.none(), st.binary(max_size=8)),
        st.integers(1, 40),  # version
        st.one_of(st.none(), st.integers(1, 60)),  # expiry
        st.integers(0, 3),  # time step
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(OPS)
def test_apply_matches_a_last_writer_wins_model(ops):
    """Against a model that knows exactly what is legal: the newest version ever applied wins,
    a value past its expiry reads as absent, and a tombstone keeps older versions out until
    it is collected."""
    store = replicated_store()
    model: dict[bytes, tuple] = {}  # key -> (value or None, version, collect/expiry instant)
    now = 0
    for key, value, version, expiry, step in ops:
        now += step
        if value is None and expiry is None:
            expiry = now + 5
        held = model.get(key)
        if held is not None and held[2] is not None:
            if held[0] is None and held[2] <= now:
                held = None  # the tombstone was collected
            elif held[0] is not None and held[2] <= now:
                held = (None, held[1], held[2] + GRACE_MS)
                if held[2] <= now:
                    held = None
        if held is not None and held[1] >= version:
            expected = APPLY_STALE
        else:
            expected = APPLY_REPLACED if held is not None and held[0] is not None else APPLY_NEW
            if value is not None and expiry is not None and expiry <= now:
                value, expiry = None, expiry + GRACE_MS
            held = None if value is None and expiry <= now else (value, version, expiry)
        if held is None:
            model.pop(key, None)
        else:
            model[key] = held
        assert store.apply(key, value, version, expiry, now) == expected
        store.check_invariants()
        for probe in (b"a", b"b", b"c"):
            entry = model.get(probe)
            live = (
                entry is not None and entry[0] is not None and (entry[2] is None or entry[2] > now)
            )
            assert store.get(probe, now) == (entry[0] if live else None)


def test_a_delete_keeps_the_instant_it_carries_whatever_was_held():
    """Replicas that held an expiring value, a persistent one, or nothing must end with the
    same tombstone: anti-entropy compares their digests (a shorter tombstone on the replicas
    that held an expiring value showed as a difference forever, faults-membership seed 1)."""
    expiring, persistent, empty = replicated_store(), replicated_store(), replicated_store()
    expiring.apply(b"k", b"v", 1, 100, 0)
    persistent.apply(b"k", b"v", 1, None, 0)
    for store in (expiring, persistent, empty):
        store.apply(b"k", None, 2, 3_600_000, 10)  # a delete with an hour of grace
        assert store.lookup(b"k", 10) == (None, 2, 3_600_000)
    assert expiring.summaries == persistent.summaries == empty.summaries
    store.check_invariants()
