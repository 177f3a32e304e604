"""Every registered eviction policy against a model set, plus each policy's signature behaviour."""

from __future__ import annotations

import random
from collections import Counter

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.store import Store
from gossipcache.store.eviction import POLICY_NAMES, make_policy
from gossipcache.store.eviction.s3fifo import GHOST_ENTRY_BYTES, S3FifoPolicy
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


def _check_segments(policy, model: dict[bytes, int]) -> None:
    """Segment budgets hold unless the segment holds a single entry; each segment's running
    weight is the sum of its entries' weights, and the segments hold exactly the model's entries
    with their current weights."""
    if isinstance(policy, WTinyLfuPolicy):
        segments = (
            (policy._window, policy._window_weight),
            (policy._probation, policy._probation_weight),
            (policy._protected, policy._protected_weight),
        )
        assert policy._window_weight <= policy._window_budget or len(policy._window) <= 1
        assert policy._protected_weight <= policy._protected_budget or len(policy._protected) <= 1
    elif isinstance(policy, S3FifoPolicy):
        segments = ((policy._small, policy._small_weight), (policy._main, policy._main_weight))
        assert policy._ghost_weight == sum(policy._ghost.values())
        assert policy._ghost_weight <= policy._ghost_budget
        assert not (set(policy._ghost) & {hash(key) for key in policy._frequency})
        assert policy.extra_bytes == len(policy._ghost) * GHOST_ENTRY_BYTES
        assert all(0 <= count <= 3 for count in policy._frequency.values())
    else:
        return
    held: dict[bytes, int] = {}
    for entries, weight in segments:
        assert weight == sum(entries.values())
        held.update(entries)
    assert held == model


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
        _check_segments(policy, model)
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


# -- eviction order against reference models -------------------------------------------------
#
# Simple O(n) reimplementations written from each module's docstring. The model-set test above
# only checks *which keys* are tracked; these check *which key goes*, op by op.


class _ReferenceLru:
    """Oldest first; a read or overwrite moves the key to the newest end."""

    refresh_on_access = True

    def __init__(self) -> None:
        self.order: list[bytes] = []

    def insert(self, key: bytes) -> None:
        self.order.append(key)

    def access(self, key: bytes) -> None:
        if self.refresh_on_access:
            self.order.remove(key)
            self.order.append(key)

    update = access

    def remove(self, key: bytes) -> None:
        self.order.remove(key)

    def evict(self, protect: bytes | None) -> bytes:
        others = [key for key in self.order if key != protect]
        victim = others[0] if others else self.order[0]
        self.order.remove(victim)
        return victim


class _ReferenceFifo(_ReferenceLru):
    """Insertion order only: reads and overwrites change nothing."""

    refresh_on_access = False


class _ReferenceLfu:
    """Lowest count goes; ties: the key that reached its count longest ago."""

    def __init__(self) -> None:
        self.count: dict[bytes, int] = {}
        self.since: dict[bytes, int] = {}
        self.clock = 0

    def _touch(self, key: bytes, count: int) -> None:
        self.clock += 1
        self.count[key] = count
        self.since[key] = self.clock

    def insert(self, key: bytes) -> None:
        self._touch(key, 1)

    def access(self, key: bytes) -> None:
        self._touch(key, self.count[key] + 1)

    update = access

    def remove(self, key: bytes) -> None:
        del self.count[key], self.since[key]

    def evict(self, protect: bytes | None) -> bytes:
        others = [key for key in self.count if key != protect] or list(self.count)
        victim = min(others, key=lambda key: (self.count[key], self.since[key]))
        self.remove(victim)
        return victim


class _ReferenceSieve:
    """A queue (oldest first), visited bits, and a hand that walks toward the newest and wraps."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.visited: set[bytes] = set()
        self.hand: bytes | None = None  # None: start at the oldest

    def insert(self, key: bytes) -> None:
        self.queue.append(key)

    def access(self, key: bytes) -> None:
        self.visited.add(key)

    update = access

    def remove(self, key: bytes) -> None:
        index = self.queue.index(key)
        if self.hand == key:
            self.hand = self.queue[index + 1] if index + 1 < len(self.queue) else None
        del self.queue[index]
        self.visited.discard(key)

    def evict(self, protect: bytes | None) -> bytes:
        queue = self.queue
        if len(queue) == 1:
            victim = queue[0]
        else:
            index = queue.index(self.hand) if self.hand is not None else 0
            while True:
                key = queue[index]
                if key in self.visited:
                    self.visited.discard(key)
                elif key != protect:
                    victim = key
                    break
                index = (index + 1) % len(queue)
        index = queue.index(victim)
        self.hand = queue[index + 1] if index + 1 < len(queue) else None
        self.remove(victim)
        return victim


REFERENCES = {
    "lru": _ReferenceLru,
    "fifo": _ReferenceFifo,
    "lfu": _ReferenceLfu,
    "sieve": _ReferenceSieve,
}

order_operations = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "access", "access", "update", "remove", "evict"]),
        st.sampled_from(KEYS[:8]),
        st.booleans(),
    ),
    max_size=150,
)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@settings(max_examples=200, deadline=None)
@given(ops=order_operations)
def test_policy_evicts_what_its_reference_model_evicts(name, ops) -> None:
    policy = make_policy(name, 1_000)
    reference = REFERENCES[name]()
    tracked: set[bytes] = set()
    for op, key, use_protect in ops:
        if op == "insert" and key not in tracked:
            policy.insert(key, 1)
            reference.insert(key)
            tracked.add(key)
        elif op in ("access", "update") and key in tracked:
            if op == "access":
                policy.access(key)
            else:
                policy.update(key, 1)
            getattr(reference, op)(key)
        elif op == "remove" and key in tracked:
            policy.remove(key)
            reference.remove(key)
            tracked.discard(key)
        elif op == "evict" and tracked:
            protect = key if use_protect and key in tracked else None
            victim = policy.evict(protect)
            assert victim == reference.evict(protect)
            tracked.discard(victim)
    drained = [policy.evict() for _ in range(len(tracked))]
    assert drained == [reference.evict(None) for _ in range(len(tracked))]


# -- eviction order: one small scenario per policy ----------------------------------------------


def test_lru_evicts_least_recently_used_and_reads_refresh() -> None:
    policy = _filled("lru", 10, [b"a", b"b", b"c", b"d"])
    policy.access(b"a")  # order now b c d a
    policy.update(b"b", 1)  # an overwrite counts as a use: c d a b
    assert policy.evict() == b"c"
    assert policy.evict(protect=b"d") == b"a"  # d is the oldest but protected
    assert policy.evict() == b"d"
    assert policy.evict(protect=b"b") == b"b"  # the only key left goes even if protected
    assert len(policy) == 0


def test_fifo_evicts_oldest_insert_whatever_the_reads() -> None:
    policy = _filled("fifo", 10, [b"a", b"b", b"c"])
    for _ in range(3):
        policy.access(b"a")
    policy.update(b"a", 5)
    policy.remove(b"b")
    policy.insert(b"b", 1)  # a new insert goes to the back: a c b
    assert [policy.evict() for _ in range(3)] == [b"a", b"c", b"b"]


def test_lfu_ties_go_to_the_key_that_reached_the_count_first() -> None:
    policy = _filled("lfu", 10, [b"a", b"b", b"c", b"d"])
    policy.access(b"b")  # b: 2
    policy.access(b"a")  # a: 2, after b
    policy.access(b"d")
    policy.access(b"d")  # d: 3
    policy.insert(b"e", 1)  # e: 1, newest
    assert policy.evict() == b"c"  # count 1, older than e
    assert policy.evict() == b"e"
    assert policy.evict(protect=b"b") == b"a"  # b is first at count 2 but protected
    assert policy.evict() == b"b"
    assert policy.evict() == b"d"


def test_lfu_remove_keeps_the_counts_of_the_others() -> None:
    policy = _filled("lfu", 10, [b"a", b"b", b"c"])
    policy.access(b"a")
    policy.access(b"b")
    policy.access(b"b")
    policy.remove(b"c")  # the count-1 list empties: count 2 is now the lowest
    assert policy.evict() == b"a"
    assert policy.frequency(b"b") == 3


def test_sieve_full_lap_clears_every_bit_then_evicts_where_it_started() -> None:
    policy = _filled("sieve", 10, [b"a", b"b", b"c"])
    for key in (b"a", b"b", b"c"):
        policy.access(key)
    # The hand starts at the oldest (a), clears a, b, c, wraps and takes a.
    assert policy.evict() == b"a"
    assert not policy.is_visited(b"b") and not policy.is_visited(b"c")
    # The hand rests at b (a's newer neighbour): b goes next, not c.
    assert policy.evict() == b"b"
    policy.insert(b"d", 1)
    policy.update(b"c", 1)  # an overwrite sets the bit like a read
    assert policy.evict() == b"d"  # c is spared once; the newcomer d is not
    assert policy.evict() == b"c"


def test_sieve_hand_skips_protected_without_clearing_and_moves_when_its_key_leaves() -> None:
    policy = _filled("sieve", 10, [b"a", b"b", b"c", b"d"])
    policy.access(b"c")
    assert policy.evict(protect=b"a") == b"b"  # a is unvisited but protected
    # The hand rests at c; removing c moves it to d, so d goes before a.
    policy.remove(b"c")
    assert policy.evict() == b"d"
    assert policy.evict() == b"a"


def _s3fifo(capacity: int) -> S3FifoPolicy:
    policy = make_policy("s3fifo", capacity)
    assert isinstance(policy, S3FifoPolicy)
    # Leave the warm-up: one eviction, after which every new key enters the small queue.
    policy.insert(b"warmup", 1)
    assert policy.evict() == b"warmup"
    return policy


def _s3fifo_to_main(policy: S3FifoPolicy, key: bytes) -> None:
    """Put ``key`` in main the documented way: evicted from small to the ghost, then a ghost hit."""
    policy.insert(key, 1)
    assert policy.segment_of(key) == "small"
    assert policy.evict() == key
    assert policy.segment_of(key) == "ghost"
    policy.insert(key, 1)
    assert policy.segment_of(key) == "main"


def test_s3fifo_small_queue_read_once_leaves_read_twice_moves_to_main() -> None:
    policy = _s3fifo(100)
    for key in (b"a", b"b", b"c"):
        policy.insert(key, 1)
        assert policy.segment_of(key) == "small"  # new keys enter small
    policy.access(b"a")
    policy.access(b"a")  # read twice: frequency 2 moves it to main
    policy.access(b"b")  # read once: frequency 1 is not enough
    assert policy.evict() == b"b"
    assert policy.segment_of(b"a") == "main"
    assert policy.segment_of(b"b") == "ghost"
    policy.insert(b"b", 1)  # a ghost hit enters main directly
    assert policy.segment_of(b"b") == "main"
    assert policy.evict() == b"c"  # small still has c; main is within its share


def test_s3fifo_main_reinserts_keys_with_frequency_spending_one_each_time() -> None:
    policy = _s3fifo(100)
    _s3fifo_to_main(policy, b"hot")
    for _ in range(5):
        policy.access(b"hot")  # frequency capped at 3
    # Small is empty, so main gives; hot survives exactly three passes (3 -> 2 -> 1 -> 0).
    for survivor_round in range(3):
        newcomer = b"g%d" % survivor_round
        _s3fifo_to_main(policy, newcomer)
        assert policy.evict() == newcomer
        assert policy.segment_of(b"hot") == "main"
    _s3fifo_to_main(policy, b"last")
    assert policy.evict() == b"hot"


def test_s3fifo_evicts_from_main_when_main_is_over_its_share() -> None:
    policy = _s3fifo(10)  # small 1, main 9
    for index in range(10):
        _s3fifo_to_main(policy, b"m%d" % index)  # main ends up holding 10 > 9
    policy.insert(b"s", 1)
    # Even though small can give (s), main is over its share: its oldest goes.
    assert policy.evict() == b"m0"
    assert policy.segment_of(b"s") == "small"
    assert policy.evict() == b"s"  # main is back within its share: small gives


def _wtinylfu_full(capacity: int, keys: list[bytes]) -> WTinyLfuPolicy:
    policy = make_policy("wtinylfu", capacity)
    assert isinstance(policy, WTinyLfuPolicy)
    for key in keys:
        policy.insert(key, 1)
    return policy


def test_wtinylfu_window_overflow_moves_to_probation_while_there_is_room() -> None:
    policy = _wtinylfu_full(100, [b"a", b"b", b"c"])  # window holds 1 (1 % of 100)
    assert [policy.segment_of(k) for k in (b"a", b"b", b"c")] == ["probation"] * 2 + ["window"]


def test_wtinylfu_tie_keeps_the_victim() -> None:
    policy = _wtinylfu_full(100, [b"c%d" % index for index in range(99)] + [b"w"])
    policy.insert(b"new", 1)
    assert policy.frequency_estimate(b"w") == policy.frequency_estimate(b"c0") == 1
    assert policy.evict(protect=b"new") == b"w"  # candidate w loses the tie to victim c0
    assert policy.segment_of(b"c0") == "probation"


def test_wtinylfu_victim_comes_from_probation_before_protected() -> None:
    policy = _wtinylfu_full(100, [b"c%d" % index for index in range(99)] + [b"w"])
    policy.access(b"c0")  # a hit in probation promotes to protected
    assert policy.segment_of(b"c0") == "protected"
    for _ in range(3):
        policy.access(b"w")
    policy.insert(b"new", 1)
    # w (seen 4 times) beats probation's oldest, now c1 (c0 is protected).
    assert policy.evict(protect=b"new") == b"c1"
    assert policy.segment_of(b"w") == "probation"
    assert policy.segment_of(b"c0") == "protected"


def _wtinylfu_contests(seed: int, candidate_hits: int, contests: int) -> list[tuple[int, bool]]:
    """Run contests that the candidate loses on frequency, until it wins one anyway or
    ``contests`` ran; return (candidate estimate, won) for each. Each candidate is a fresh
    weight-10 key read ``candidate_hits - 1`` times after its insert; the victims are hot
    weight-90 keys that fill main. (A wide sketch keeps collisions rare.)"""
    policy = make_policy("wtinylfu", 1000, seed)  # window 10, main 990
    hot = [b"h%d" % index for index in range(11)]  # 11 x 90 = 990
    for key in hot:
        policy.insert(key, 90)
    for _ in range(12):
        for key in hot:
            policy.access(key)
    results = []
    candidate = b"c0"
    policy.insert(candidate, 10)
    for number in range(1, contests + 1):
        for _ in range(candidate_hits - 1):
            policy.access(candidate)
        newcomer = b"c%d" % number
        policy.insert(newcomer, 10)
        victims = [key for key in hot if policy.segment_of(key) == "probation"]
        estimate = policy.frequency_estimate(candidate)
        # The sketch may overestimate a candidate, never above the hot victims here.
        assert victims and candidate_hits <= estimate < min(map(policy.frequency_estimate, victims))
        won = policy.evict(protect=newcomer) != candidate
        results.append((estimate, won))
        if won:
            assert policy.segment_of(candidate) == "probation"
            break
        candidate = newcomer
    return results


def test_wtinylfu_hot_candidate_sometimes_wins_a_lost_contest() -> None:
    """Hash-flooding defence: a candidate whose estimate is >= 6 wins about 1 lost contest in
    128, drawn from the seeded generator (so reproducible); a colder one never does."""
    runs = [_wtinylfu_contests(seed, hits, 150) for seed in range(10) for hits in (5, 6)]
    assert runs == [_wtinylfu_contests(seed, hits, 150) for seed in range(10) for hits in (5, 6)]
    contests = [contest for run in runs for contest in run]
    hot = [won for estimate, won in contests if estimate >= 6]
    cold = [won for estimate, won in contests if estimate < 6]
    assert len(cold) > 400 and not any(cold)
    assert 3 <= sum(hot) <= len(hot) // 32  # expected len(hot) / 128


def test_random_spreads_victims_over_every_key_and_spares_protect() -> None:
    keys = [b"k%d" % index for index in range(10)]
    unprotected: Counter[bytes] = Counter()
    protected: Counter[bytes] = Counter()
    for seed in range(400):
        policy = make_policy("random", 100, seed)
        for key in keys:
            policy.insert(key, 1)
        unprotected[policy.evict()] += 1
        protect = keys[seed % len(keys)]
        victim = policy.evict(protect)
        assert victim != protect
        protected[victim] += 1
    # Uniform: each of 10 keys is expected 40 times; a policy stuck on one slot fails.
    assert set(unprotected) == set(keys) and set(protected) == set(keys)
    assert max(unprotected.values()) < 70 and max(protected.values()) < 70


def test_random_replays_for_a_seed_and_differs_across_seeds() -> None:
    keys = [b"k%d" % index for index in range(20)]

    def drain(seed: int) -> list[bytes]:
        policy = make_policy("random", 100, seed)
        for key in keys:
            policy.insert(key, 1)
        policy.remove(b"k3")  # the last key moves into the freed slot
        order = [policy.evict(protect=b"k19") for _ in range(18)]
        assert policy.evict() == b"k19"
        return order

    assert drain(7) == drain(7)
    assert drain(7) != drain(8)
    assert sorted(drain(7)) == sorted(set(keys) - {b"k3", b"k19"})


# -- details the scenarios above leave open (found by mutation testing) ---------------------------


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_evicting_from_an_empty_policy_says_so(name: str) -> None:
    policy = make_policy(name, 10)
    with pytest.raises(LookupError, match="^nothing to evict$"):
        policy.evict()
    policy.insert(b"k", 1)
    assert policy.evict(protect=b"k") == b"k"  # the only key goes even if protected
    with pytest.raises(LookupError, match="^nothing to evict$"):
        policy.evict(protect=b"k")


@pytest.mark.parametrize("name", ["random", "wtinylfu"])
def test_seeded_policies_default_to_seed_zero(name: str) -> None:
    from gossipcache.store.eviction import _POLICY_CLASSES

    def drain(policy) -> list[bytes]:
        for index in range(40):
            policy.insert(b"k%d" % index, 1)
            policy.access(b"k%d" % (index // 3))
        return [policy.evict(protect=b"k39") for _ in range(39)]

    def fingerprint(policy) -> list:
        """The eviction order, plus for W-TinyLFU the seed-dependent sketch collisions."""
        order = drain(policy)
        if name == "wtinylfu":
            order.append([policy.frequency_estimate(b"q%d" % index) for index in range(60)])
        return order

    unseeded = fingerprint(_POLICY_CLASSES[name](20))
    assert unseeded == fingerprint(make_policy(name, 20, 0))
    assert unseeded != fingerprint(make_policy(name, 20, 1))


def test_sieve_removed_key_forgets_its_visited_bit() -> None:
    policy = _filled("sieve", 10, [b"a", b"b"])
    policy.access(b"b")
    policy.remove(b"b")
    policy.insert(b"b", 1)  # a new entry: unvisited
    assert not policy.is_visited(b"b")
    policy.access(b"a")
    # Hand from the tail: a is visited (cleared, spared), b is unvisited and goes.
    assert policy.evict() == b"b"


def test_s3fifo_small_queue_share_is_ten_percent_during_warm_up() -> None:
    policy = make_policy("s3fifo", 100)  # small 10, main 90
    for index in range(11):
        policy.insert(b"k%d" % index, 1)
    assert [policy.segment_of(b"k%d" % index) for index in range(11)] == ["small"] * 10 + ["main"]


def test_s3fifo_main_share_is_the_rest_of_the_capacity() -> None:
    policy = _s3fifo(15)  # small 15 * 10 // 100 = 1, main 14
    for index in range(14):
        _s3fifo_to_main(policy, b"m%d" % index)
    policy.insert(b"s", 1)
    assert policy.evict() == b"s"  # main holds exactly its 14: within its share, small gives
    _s3fifo_to_main(policy, b"m14")
    policy.insert(b"t", 1)
    assert policy.evict() == b"m0"  # main holds 15 > 14


def test_s3fifo_tiny_capacity_budgets() -> None:
    policy = _s3fifo(2)  # small max(1, 0) = 1, main max(1, 1) = 1
    _s3fifo_to_main(policy, b"m0")
    _s3fifo_to_main(policy, b"m1")  # main holds 2 > 1
    policy.insert(b"s", 1)
    assert policy.evict() == b"m0"


def test_s3fifo_ghost_holds_main_share_and_forgets_oldest_first() -> None:
    policy = _s3fifo(10)  # main share 9: the ghost remembers 9 weight
    for index in range(10):
        policy.insert(b"g%d" % index, 1)
        assert policy.evict() == b"g%d" % index
    assert policy.segment_of(b"g0") is None  # the oldest ghost was forgotten
    assert all(policy.segment_of(b"g%d" % index) == "ghost" for index in range(1, 10))
    policy.insert(b"g1", 1)
    assert policy.segment_of(b"g1") == "main"  # a ghost hit
    policy.insert(b"g0", 1)
    assert policy.segment_of(b"g0") == "small"  # forgotten: a plain newcomer


def test_s3fifo_moved_to_main_starts_with_frequency_zero() -> None:
    policy = _s3fifo(100)
    policy.insert(b"a", 1)
    policy.access(b"a")
    policy.access(b"a")
    policy.insert(b"b", 1)
    assert policy.evict() == b"b"  # a moves to main with its frequency cleared
    assert policy.segment_of(b"a") == "main"
    _s3fifo_to_main(policy, b"c")
    # Small is empty, so main gives: a (frequency 0) goes at once, before c.
    assert policy.evict() == b"a"


def _wtinylfu_window_pair(capacity: int, hot_candidate: bool) -> WTinyLfuPolicy:
    """Probation c0.. full, window [w, new]: the next eviction runs a contest."""
    policy = _wtinylfu_full(capacity, [b"c%d" % index for index in range(capacity - 1)] + [b"w"])
    if hot_candidate:
        for _ in range(5):
            policy.access(b"w")
    policy.insert(b"new", 1)
    return policy


def test_wtinylfu_protect_is_spared_as_candidate() -> None:
    policy = _wtinylfu_window_pair(100, hot_candidate=False)
    # w is the window's oldest but protected: new is the candidate, loses the tie and goes.
    assert policy.evict(protect=b"w") == b"new"


def test_wtinylfu_protect_is_spared_as_probation_victim() -> None:
    policy = _wtinylfu_window_pair(100, hot_candidate=True)
    # c0 is probation's oldest but protected: w meets c1, wins, and c1 goes.
    assert policy.evict(protect=b"c0") == b"c1"
    assert policy.segment_of(b"c0") == "probation"


def test_wtinylfu_protect_is_spared_in_protected_segment() -> None:
    policy = _wtinylfu_full(100, [b"c%d" % index for index in range(99)] + [b"w"])
    for index in range(10):
        policy.access(b"c%d" % index)  # promoted
    for index in range(10, 99):
        policy.remove(b"c%d" % index)  # probation now empty
    assert policy.evict(protect=b"c0") == b"c1"


def test_wtinylfu_window_gives_when_main_is_empty_and_spares_protect() -> None:
    policy = make_policy("wtinylfu", 100)
    policy.insert(b"a", 60)
    policy.insert(b"b", 50)  # over capacity: no drain, both in the window
    assert policy.segment_of(b"a") == policy.segment_of(b"b") == "window"
    assert policy.evict(protect=b"a") == b"b"


def test_wtinylfu_no_contest_while_window_within_its_budget() -> None:
    # Capacity 1000: window budget 10. Main holds 990; the window two keys of weight 5.
    def build(second_weight: int) -> WTinyLfuPolicy:
        policy = _wtinylfu_full(1000, [])
        for index in range(11):
            policy.insert(b"h%d" % index, 90)
        policy.insert(b"x", 5)
        policy.insert(b"y", second_weight)
        return policy

    within = build(5)  # window weight 10 == budget: no candidate, probation's oldest goes
    assert within.evict(protect=b"y") == b"h0"
    assert within.segment_of(b"x") == "window"
    over = build(6)  # 11 > 10: x is the candidate and loses the tie
    assert over.evict(protect=b"y") == b"x"
    single = _wtinylfu_full(1000, [])
    for index in range(10):
        single.insert(b"h%d" % index, 90)
    single.insert(b"big", 60)  # 960: h9 drains, big stays alone in the window over its budget
    assert single.segment_of(b"big") == "window" and single.segment_of(b"h9") == "probation"
    # A lone window key is never a candidate: probation's oldest goes.
    assert single.evict() == b"h0"


def test_wtinylfu_eviction_back_to_capacity_drains_the_window() -> None:
    policy = _wtinylfu_full(100, [b"c%d" % index for index in range(99)] + [b"w"])
    for _ in range(5):
        policy.access(b"w")
    policy.insert(b"y", 1)
    policy.insert(b"z", 1)  # 102 > 100: no drain, window [w, y, z]
    policy.remove(b"c98")  # 101
    # w wins against c0 (moves to probation), c0 goes: 100 == capacity, so the window drains.
    assert policy.evict(protect=b"z") == b"c0"
    assert policy.segment_of(b"y") == "probation"
    assert policy.segment_of(b"z") == "window"


def test_wtinylfu_update_back_to_capacity_drains_the_window() -> None:
    policy = _wtinylfu_full(100, [])
    policy.insert(b"b", 3)
    for index in range(96):
        policy.insert(b"c%d" % index, 1)
    policy.insert(b"w", 1)  # 100
    policy.insert(b"y", 1)
    policy.insert(b"z", 1)  # 102: window [w, y, z]
    assert policy.segment_of(b"w") == "window"
    policy.update(b"b", 1)  # 100 == capacity: the window drains to its budget
    assert policy.segment_of(b"w") == policy.segment_of(b"y") == "probation"
    assert policy.segment_of(b"z") == "window"


def test_wtinylfu_sketch_estimate_is_the_minimum_over_its_four_rows() -> None:
    from gossipcache.store.eviction.wtinylfu import FrequencySketch

    sketch = FrequencySketch(16, seed=3)  # narrow: rows collide, and differ
    for index in range(60):
        for _ in range(index % 5):
            sketch.increment(b"k%d" % index)
    differing = 0
    for index in range(200):
        key = b"q%d" % index
        counters = [sketch._counters[slot] for slot in sketch._slots(key)]
        assert sketch.estimate(key) == min(counters)
        differing += len(set(counters)) > 1
    assert differing > 150


class _ReferenceSketch:
    """The count-min sketch as the W-TinyLFU docstring describes it: four rows, the 128-bit
    MurmurHash3 giving each row a 32-bit index, counters capped at 15, an addition counted when
    any counter moved, and every counter halved after 10 x width additions."""

    def __init__(self, width: int, seed: int) -> None:
        self.width = width
        self.seed = seed
        self.rows = [[0] * width for _ in range(4)]
        self.additions = 0

    def _columns(self, key: bytes) -> list[int]:
        hashed = mmh3.hash128(key, self.seed, x64arch=True, signed=False)
        return [(hashed >> (32 * row)) & (self.width - 1) for row in range(4)]

    def increment(self, key: bytes) -> None:
        added = False
        for row, column in enumerate(self._columns(key)):
            if self.rows[row][column] < 15:
                self.rows[row][column] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= 10 * self.width:
                self.rows = [[count // 2 for count in row] for row in self.rows]
                self.additions //= 2

    def estimate(self, key: bytes) -> int:
        return min(self.rows[row][column] for row, column in enumerate(self._columns(key)))


def test_wtinylfu_sketch_matches_its_reference_through_saturation_and_aging() -> None:
    from gossipcache.store.eviction.wtinylfu import FrequencySketch

    keys = [b"k%d" % index for index in range(40)]
    sketch = FrequencySketch(16, seed=5)  # 16 columns, halving every 160 additions
    reference = _ReferenceSketch(16, seed=5)
    rng = random.Random(11)
    halvings = 0
    for step in range(1_200):
        # Mostly a few hot keys (they saturate), sometimes any key.
        key = keys[rng.randrange(4)] if step % 3 else rng.choice(keys)
        before = reference.additions
        sketch.increment(key)
        reference.increment(key)
        halvings += reference.additions < before
        if step % 7 == 0:
            assert [sketch.estimate(k) for k in keys] == [reference.estimate(k) for k in keys]
    assert halvings >= 3
    assert [sketch.estimate(k) for k in keys] == [reference.estimate(k) for k in keys]


def test_wtinylfu_sketch_saturated_key_does_not_age_the_sketch() -> None:
    from gossipcache.store.eviction.wtinylfu import FrequencySketch

    sketch = FrequencySketch(16, seed=0)
    for _ in range(1_000):  # 15 additions, then every counter is at its cap: nothing counts
        sketch.increment(b"hot")
    assert sketch.estimate(b"hot") == 15


def test_wtinylfu_sketch_width_is_a_power_of_two_at_least_16() -> None:
    from gossipcache.store.eviction.wtinylfu import FrequencySketch

    assert [FrequencySketch(width, 0).width for width in (1, 16, 17, 100, 128, 129)] == [
        16,
        16,
        32,
        128,
        128,
        256,
    ]
    sketch = FrequencySketch(16, 0)
    sketch.increment(b"a")
    sketch.ensure_width(16)  # enough already: nothing changes
    assert sketch.width == 16 and sketch.estimate(b"a") == 1
    sketch.ensure_width(17)  # grows, and the counts start over
    assert sketch.width == 32 and sketch.estimate(b"a") == 0


def test_wtinylfu_sketch_stops_growing_at_its_maximum() -> None:
    from gossipcache.store.eviction.wtinylfu import SKETCH_WIDTH_MAX, FrequencySketch

    sketch = FrequencySketch(SKETCH_WIDTH_MAX, 0)
    sketch.increment(b"a")
    sketch.ensure_width(SKETCH_WIDTH_MAX + 1)
    assert sketch.width == SKETCH_WIDTH_MAX and sketch.estimate(b"a") == 1


def test_wtinylfu_sketch_grows_once_keys_outnumber_its_width() -> None:
    policy = make_policy("wtinylfu", 16)  # sketch width 16
    for index in range(16):
        policy.insert(b"k%d" % index, 1)
    assert policy._sketch.width == 16 and policy.frequency_estimate(b"k0") == 1
    policy.insert(b"k16", 1)  # 17 tracked (the store evicts afterwards): the sketch doubles
    assert policy._sketch.width == 32
    assert policy.frequency_estimate(b"k0") == 0 and policy.frequency_estimate(b"k16") == 1


def test_wtinylfu_sketch_growth_counts_keys_in_every_segment() -> None:
    policy = make_policy("wtinylfu", 16)
    for index in range(16):
        policy.insert(b"k%d" % index, 1)
    for index in range(6):
        policy.access(b"k%d" % index)  # promoted to protected
    assert sum(policy.segment_of(b"k%d" % index) == "protected" for index in range(16)) == 6
    policy.insert(b"k16", 1)
    assert policy._sketch.width == 32


def test_wtinylfu_tiny_capacity_protected_budget_is_one() -> None:
    policy = _wtinylfu_full(3, [b"a", b"b", b"c"])  # window 1, main 2, protected max(1, 1) = 1
    assert policy.segment_of(b"a") == policy.segment_of(b"b") == "probation"
    policy.access(b"a")
    policy.access(b"b")  # protected would hold 2 > 1: its oldest, a, is demoted
    assert policy.segment_of(b"a") == "probation" and policy.segment_of(b"b") == "protected"


def test_wtinylfu_segment_budgets() -> None:
    policy = make_policy("wtinylfu", 150)  # window 1, main 149, protected 149 * 80 // 100 = 119
    for index in range(150):
        policy.insert(b"k%d" % index, 1)
    for index in range(150):
        policy.access(b"k%d" % index)
    segments = Counter(policy.segment_of(b"k%d" % index) for index in range(150))
    assert segments == {"protected": 119, "probation": 30, "window": 1}


def test_wtinylfu_protected_overflow_demotes_by_weight_but_keeps_a_lone_entry() -> None:
    policy = make_policy("wtinylfu", 100)  # protected budget 79
    policy.insert(b"a", 50)
    policy.insert(b"b", 40)
    policy.insert(b"c", 1)  # a and b drained to probation, c in the window
    assert policy.segment_of(b"a") == policy.segment_of(b"b") == "probation"
    policy.access(b"a")
    assert policy.segment_of(b"a") == "protected"  # 50 <= 79
    policy.access(b"b")  # 90 > 79: the oldest, a, goes back to probation
    assert policy.segment_of(b"a") == "probation" and policy.segment_of(b"b") == "protected"
    policy.update(b"b", 85)  # a lone entry over the budget stays
    assert policy.segment_of(b"b") == "protected"


@pytest.mark.parametrize("name", ["s3fifo", "wtinylfu"])
@pytest.mark.parametrize("capacity", [7, 40, 150])
def test_segment_weights_stay_exact_through_every_operation(name: str, capacity: int) -> None:
    """A dense seeded workload (inserts, hits, overwrites with new weights, removals from every
    segment, evictions as the store does them): after each step the segments hold exactly the
    tracked entries, with running weights equal to their sums."""
    rng = random.Random(capacity)
    policy = make_policy(name, capacity, seed=capacity)
    model: dict[bytes, int] = {}
    keys = [b"k%d" % index for index in range(3 * capacity // 2 + 4)]
    for _ in range(1_500):
        key = rng.choice(keys)
        weight = rng.randint(1, max(1, capacity // 4))
        roll = rng.random()
        if key not in model:
            policy.insert(key, weight)
            model[key] = weight
            _evict_to_capacity(policy, model, capacity, key)
        elif roll < 0.4:
            policy.access(key)
        elif roll < 0.7:
            policy.update(key, weight)
            model[key] = weight
            _evict_to_capacity(policy, model, capacity, key)
        else:
            policy.remove(key)
            del model[key]
        _check_segments(policy, model)
