"""Every registered eviction policy against a model set, plus each policy's signature behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.store import Store
from gossipcache.store.eviction import POLICY_NAMES, make_policy
from gossipcache.store.eviction.s3fifo import S3FifoPolicy
from gossipcache.store.eviction.wtinylfu import WTinyLfuPolicy

KEYS = [b"k%d" % index for index in range(12)] + [b""]

operations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "access", "update", "remove", "evict"]),
        st.sampled_from(KEYS),
        st.integers(min_value=1, max_value=20),
    ),
    max_size=120,
)


def _evict_to_capacity(policy, model: dict[bytes, int], capacity: int, written: bytes) -> None:
    """What the store does after a write: evict until the weight fits, sparing ``written``."""
    while sum(model.values()) > capacity:
        victim = policy.evict(written)
        assert victim in model
        assert victim != written or len(model) == 1
        del model[victim]


def _check_segments(policy) -> None:
    """Segment budgets hold unless the segment holds a single entry."""
    if isinstance(policy, WTinyLfuPolicy):
        assert policy._window_weight <= policy._window_budget or len(policy._window) <= 1
        assert policy._protected_weight <= policy._protected_budget or len(policy._protected) <= 1
    if isinstance(policy, S3FifoPolicy):
        assert policy._ghost_weight <= policy._ghost_budget
        assert not (set(policy._ghost) & set(policy._frequency))


@pytest.mark.parametrize("name", POLICY_NAMES)
@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=60),
    seed=st.integers(min_value=0, max_value=3),
    ops=operations,
)
def test_policy_tracks_the_model_set(name, capacity, seed, ops) -> None:
    policy = make_policy(name, capacity, seed)
    model: dict[bytes, int] = {}
    for op, key, weight in ops:
        weight = min(weight, capacity)  # The store refuses entries larger than the limit.
        if op == "insert" and key not in model:
            policy.insert(key, weight)
            model[key] = weight
            _evict_to_capacity(policy, model, capacity, key)
        elif op == "update" and key in model:
            policy.update(key, weight)
            model[key] = weight
            _evict_to_capacity(policy, model, capacity, key)
        elif op == "access" and key in model:
            policy.access(key)
        elif op == "remove" and key in model:
            policy.remove(key)
            del model[key]
        elif op == "evict":
            protect = key if key in model else None
            if not model:
                with pytest.raises(LookupError):
                    policy.evict(protect)
                continue
            victim = policy.evict(protect)
            assert victim in model
            assert victim != protect or len(model) == 1
            del model[victim]
        assert len(policy) == len(model)
        for candidate in KEYS:
            assert (candidate in policy) == (candidate in model)
        _check_segments(policy)
    assert sum(model.values()) <= capacity or not ops
    # Everything left can be evicted, each key exactly once.
    drained = [policy.evict() for _ in range(len(model))]
    assert sorted(drained) == sorted(model)
    assert len(policy) == 0


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_store_with_every_policy_respects_its_limit(name) -> None:
    limit_bytes = 4096
    store = Store(limit_bytes, eviction=name, seed=1)
    for index in range(400):
        key = b"key-%d" % (index % 97)
        store.put(key, b"v" * (index * 37 % 300), now_ms=index)
        assert store.used_bytes <= limit_bytes
        assert store.get(key, now_ms=index) is not None
        store.get(b"key-%d" % (index * 7 % 97), now_ms=index)
        if index % 11 == 0:
            store.delete(b"key-%d" % (index * 3 % 97), now_ms=index)
    assert store.stats().evictions > 0


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown eviction policy"):
        make_policy("clock", 10)


# -- characteristic behaviour ----------------------------------------------------------------


def _filled(name: str, capacity: int, keys: list[bytes]):
    policy = make_policy(name, capacity)
    for key in keys:
        policy.insert(key, 1)
    return policy


def test_lfu_evicts_least_frequent_then_least_recent() -> None:
    policy = _filled("lfu", 10, [b"a", b"b", b"c", b"d"])
    for key in (b"a", b"a", b"c", b"d"):
        policy.access(key)
    assert policy.evict() == b"b"  # frequency 1
    assert policy.evict() == b"c"  # frequency 2, older than d
    assert policy.evict() == b"d"
    assert policy.frequency(b"a") == 3


def test_lfu_protect_skips_to_next_frequency() -> None:
    policy = _filled("lfu", 10, [b"a", b"b"])
    policy.access(b"a")
    assert policy.evict(protect=b"b") == b"a"


def test_fifo_ignores_reads() -> None:
    policy = _filled("fifo", 10, [b"a", b"b", b"c"])
    policy.access(b"a")
    policy.update(b"a", 1)
    assert policy.evict() == b"a"
    assert policy.evict(protect=b"b") == b"c"


def test_random_is_seeded_and_spares_protect() -> None:
    keys = [b"%d" % index for index in range(50)]
    first = _filled("random", 100, keys)
    second = _filled("random", 100, keys)
    assert [first.evict(b"7") for _ in range(30)] == [second.evict(b"7") for _ in range(30)]
    assert b"7" in first


def test_sieve_keeps_visited_and_evicts_unvisited() -> None:
    policy = _filled("sieve", 10, [b"a", b"b", b"c"])
    policy.access(b"a")
    assert policy.evict() == b"b"
    assert not policy.is_visited(b"a")  # The hand cleared it on the way.
    # The hand stays where it stopped and keeps moving toward the head: c, then the newcomer d,
    # go before a, which the hand already passed (a new key gets no grace: quick demotion).
    policy.insert(b"d", 1)
    assert policy.evict() == b"c"
    assert policy.evict() == b"d"
    assert policy.evict() == b"a"


def test_s3fifo_one_hit_goes_to_ghost_and_ghost_hit_enters_main() -> None:
    policy = make_policy("s3fifo", 10)
    assert isinstance(policy, S3FifoPolicy)
    for index in range(10):
        policy.insert(b"k%d" % index, 1)
    assert policy.segment_of(b"k0") == "small"
    assert policy.segment_of(b"k1") == "main"  # the small queue (1 item) was full
    policy.insert(b"x", 1)
    assert policy.evict(protect=b"x") == b"k1"  # main is over its 9 items
    policy.insert(b"y", 1)
    assert policy.segment_of(b"y") == "small"
    assert policy.evict(protect=b"y") == b"k0"  # small is over 1 item; k0 never read
    assert policy.segment_of(b"k0") == "ghost"
    policy.insert(b"k0", 1)
    assert policy.segment_of(b"k0") == "main"


def test_s3fifo_read_twice_moves_from_small_to_main() -> None:
    policy = make_policy("s3fifo", 10)
    for index in range(10):
        policy.insert(b"k%d" % index, 1)
    policy.insert(b"x", 1)
    policy.evict(protect=b"x")  # k1 leaves main; eviction has begun
    policy.access(b"k0")
    policy.access(b"k0")
    policy.insert(b"y", 1)
    # Small holds k0 (read twice) and y: k0 moves to main, y is the next candidate but is
    # protected, so main gives its oldest instead.
    victim = policy.evict(protect=b"y")
    assert policy.segment_of(b"k0") == "main"
    assert victim == b"k2"


def test_wtinylfu_rejects_cold_candidate_against_hot_victim() -> None:
    policy = make_policy("wtinylfu", 100)
    assert isinstance(policy, WTinyLfuPolicy)
    hot = [b"h%d" % index for index in range(99)]
    for key in hot:
        policy.insert(key, 1)
    policy.insert(b"w", 1)  # stays in the 1-item window
    for _ in range(4):
        for key in hot:
            policy.access(key)
    assert policy.segment_of(b"w") == "window"
    policy.insert(b"cold", 1)
    # Candidate w (seen once) meets probation's oldest (seen 5 times): w loses.
    assert policy.evict(protect=b"cold") == b"w"
    assert policy.segment_of(b"cold") == "window"


def test_wtinylfu_admits_hot_candidate_over_cold_victim() -> None:
    policy = make_policy("wtinylfu", 100)
    for index in range(99):
        policy.insert(b"c%d" % index, 1)
    policy.insert(b"w", 1)
    for _ in range(5):
        policy.access(b"w")
    policy.insert(b"new", 1)
    victim = policy.evict(protect=b"new")
    assert victim == b"c0"
    assert policy.segment_of(b"w") == "probation"
    assert policy.frequency_estimate(b"w") >= 6


def test_wtinylfu_promotes_and_bounds_protected() -> None:
    policy = make_policy("wtinylfu", 100)
    for index in range(100):
        policy.insert(b"k%d" % index, 1)
    for index in range(99):
        policy.access(b"k%d" % index)
    assert policy.segment_of(b"k98") == "protected"
    assert policy.segment_of(b"k0") == "probation"  # demoted: protected holds 79 items


def test_eviction_bench_smoke() -> None:
    from benchmarks.eviction_bench import render_markdown, run_benchmark

    rows = run_benchmark(unique_keys=1000, requests=3000, runs=1)
    loop = {row.policy: row.hit_ratio for row in rows if row.trace == "loop-1.1x"}
    assert loop["lru"] == loop["fifo"] == 0.0  # a loop larger than the cache defeats recency
    assert loop["wtinylfu"] > 0.5
    report = render_markdown(rows, 1000, 3000, 1)
    assert "| zipf-1.0+scans | 10 |" in report
