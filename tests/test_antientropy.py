"""The anti-entropy core (gossipcache/antientropy/): rounds between replicas find what differs
through the summaries and repair it key by key, within bounds; hostile payloads are dropped."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipcache.antientropy import AntiEntropy, AntiEntropyConfig, Layout, codec
from gossipcache.placement import BUCKET_COUNT, bucket_of
from gossipcache.store import Store
from gossipcache.store.summaries import rebuild

WALL_MS = 1_700_000_000_000
STAMP = WALL_MS << 80  # versions stamped at the wall clock (hlc: stamp = wall_ms << 16 | c)


class _Table:
    """A placement table where every node given owns every bucket (``half``: only the buckets
    below 8192)."""

    def __init__(self, owners: tuple[str, ...], epoch: int = 1, half: bool = False) -> None:
        self.owners = owners
        self.epoch = epoch
        self.half = half

    def owners_of_bucket(self, bucket: int) -> tuple[str, ...]:
        if self.half and bucket >= BUCKET_COUNT // 2:
            return self.owners[-1:]
        return self.owners


def _store() -> Store:
    return Store(64 * 1024 * 1024, track_buckets=True)


def _entries(store: Store, now_ms: int = WALL_MS) -> list[tuple]:
    entries = []
    for bucket in range(BUCKET_COUNT):
        if store.summaries.bucket_count(bucket):
            entries.extend(store.bucket_entries(bucket, now_ms))
    return entries


class Pair:
    """Nodes ``a`` and ``b`` (and more) sharing every bucket, with a message pump."""

    def __init__(self, names=("a", "b"), config: AntiEntropyConfig | None = None) -> None:
        self.config = config or AntiEntropyConfig()
        self.now_ms = 0
        self.wall_ms = WALL_MS
        table = _Table(tuple(names))
        self.stores = {name: _store() for name in names}
        self.cores = {}
        for index, name in enumerate(names):
            core = AntiEntropy(
                name, self.stores[name], self.config, random.Random(index), self.now_ms
            )
            core.set_layout(Layout(name, table, table))
            self.cores[name] = core
        self.sent: list[tuple[str, str, bytes]] = []

    def put(self, name: str, key: bytes, value: bytes | None, version: int, expires=None):
        self.stores[name].apply(key, value, version, expires, self.wall_ms)

    def pump(self) -> None:
        """Deliver messages until none is left."""
        for _ in range(1000):
            moved = False
            for name, core in self.cores.items():
                for outgoing in core.take_outbox():
                    moved = True
                    self.sent.append((name, outgoing.destination, outgoing.payload))
                    if outgoing.destination not in self.cores:
                        continue  # a node outside the test: lost
                    self.cores[outgoing.destination].handle(
                        name, outgoing.payload, self.now_ms, self.wall_ms
                    )
            if not moved:
                return
        raise AssertionError("messages never stopped")

    def advance(self, ms: int, initiators=None) -> None:
        """Run ticks over ``ms`` of virtual time, 10 ms apart, pumping after each (only the
        ``initiators``' ticks, by name, when given: the others only answer)."""
        end_ms = self.now_ms + ms
        while self.now_ms < end_ms:
            self.now_ms += 10
            self.wall_ms += 10
            for name, core in self.cores.items():
                if initiators is not None and name not in initiators:
                    continue
                if core.next_deadline_ms() <= self.now_ms:
                    core.tick(self.now_ms, self.wall_ms)
            self.pump()

    def agree(self) -> bool:
        stores = list(self.stores.values())
        return all(store.summaries == stores[0].summaries for store in stores[1:])


def test_agreeing_replicas_exchange_a_few_bytes_per_round():
    pair = Pair()
    for index in range(500):
        for name in ("a", "b"):
            pair.put(name, b"k%d" % index, b"v", STAMP + index)
    pair.advance(5000)
    a = pair.cores["a"].stats
    assert a.rounds_started >= 4 and a.rounds_agreed == a.rounds_started
    per_round = (a.bytes_sent + a.bytes_received) / a.rounds_started
    assert per_round < 100, per_round  # SYNC and SAME only, whatever the data size
    assert a.keys_listed == 0


def test_missed_writes_are_repaired_both_ways_after_confirmation():
    pair = Pair()
    for index in range(300):
        key = b"k%d" % index
        pair.put("a", key, b"old", STAMP + index)
        pair.put("b", key, b"old", STAMP + index)
    for index in range(0, 300, 3):  # a holds newer versions of some keys, b of others
        pair.put("a", b"k%d" % index, b"new-a", STAMP + 1000 + index)
        pair.put("b", b"k%d" % (index + 1), b"new-b", STAMP + 1000 + index)
    pair.put("a", b"only-a", b"x", STAMP + 5)
    pair.put("b", b"only-b", b"y", STAMP + 6)
    assert not pair.agree()
    pair.advance(1500)  # at most one round each: seen once, not yet confirmed
    assert pair.cores["a"].stats.keys_repaired + pair.cores["b"].stats.keys_repaired == 0
    pair.advance(4000)
    assert pair.agree()
    for store in pair.stores.values():
        assert store.lookup(b"k0", pair.wall_ms)[0] == b"new-a"
        assert store.lookup(b"k1", pair.wall_ms)[0] == b"new-b"
        assert store.lookup(b"only-a", pair.wall_ms)[0] == b"x"
        assert store.lookup(b"only-b", pair.wall_ms)[0] == b"y"


def test_one_round_repairs_both_directions():
    """Only ``a`` starts rounds: what ``b`` holds newer reaches ``a`` in ENTRIES, and what ``a``
    holds newer reaches ``b`` because ``b`` asks for it (the pull list) and ``a`` pushes it."""
    pair = Pair(config=AntiEntropyConfig(confirm_ms=0))
    for index in range(60):
        key = b"k%d" % index
        for name in ("a", "b"):
            pair.put(name, key, b"old", STAMP + index)
        newer = "a" if index % 2 else "b"
        pair.put(newer, key, b"new-" + newer.encode(), STAMP + 1000 + index)
    pair.put("a", b"only-a", b"x", STAMP)
    pair.advance(5000, initiators=("a",))
    assert pair.cores["b"].stats.rounds_started == 0
    assert pair.agree()
    assert pair.stores["b"].lookup(b"only-a", pair.wall_ms)[0] == b"x"


def test_a_filling_node_counts_only_complete_owners_as_sources():
    """Buckets compared with a peer whose copies are incomplete stay unsynced."""
    pair = Pair(config=AntiEntropyConfig(confirm_ms=0))
    table = _Table(("a", "b"))
    filling = pair.cores["b"]
    filling.set_layout(Layout("b", table, table, serving_nodes={"b"}))  # a is incomplete
    filling.require_sync({1, 2, 3})
    pair.advance(3000)
    assert filling.unsynced == {1, 2, 3}
    filling.set_layout(Layout("b", table, table, serving_nodes={"a", "b"}))
    filling.require_sync({1, 2, 3})
    pair.advance(3000)
    assert filling.unsynced_count == 0


def test_tombstones_propagate_and_expired_values_are_not_revived():
    pair = Pair()
    pair.put("a", b"gone", b"v", STAMP + 1)
    pair.put("b", b"gone", None, STAMP + 2, expires=WALL_MS + 3_600_000)  # a delete a missed
    pair.put("a", b"short", b"v", STAMP + 3, expires=WALL_MS + 500)  # expires before repair
    pair.advance(5000)
    assert pair.agree()
    for store in pair.stores.values():
        assert store.lookup(b"gone", pair.wall_ms)[0] is None  # the tombstone won
        held = store.lookup(b"short", pair.wall_ms)
        assert held is None or held[0] is None  # never a live value after its expiry


def test_an_evicted_key_is_not_copied_back_and_not_examined_again():
    pair = Pair(config=AntiEntropyConfig(confirm_ms=0))
    small = Store(40_000, track_buckets=True)
    pair.stores["b"] = small
    pair.cores["b"].store = small
    for index in range(200):  # b is too small for all: it evicts the oldest writes
        for name in ("a", "b"):
            pair.put(name, b"k%03d" % index, b"x" * 100, STAMP + index)
    assert len(small) < 200
    evictions = small.stats().evictions
    pair.advance(5000)
    assert len(small) < 200  # nothing evicted came back...
    assert small.stats().evictions == evictions  # ...not even to be evicted again
    assert pair.cores["b"].stats.keys_repaired == 0
    b_stats, a_stats = pair.cores["b"].stats, pair.cores["a"].stats
    assert a_stats.keys_withheld_evicted + b_stats.keys_withheld_evicted > 0
    listed = a_stats.keys_listed + b_stats.keys_listed
    pair.advance(5000)
    assert a_stats.keys_listed + b_stats.keys_listed == listed  # explained: not listed again


def test_a_filling_node_syncs_every_bucket_without_the_confirmation_delay():
    config = AntiEntropyConfig(confirm_ms=60_000, buckets_per_round_max=512)
    pair = Pair(config=config)
    for index in range(2000):
        pair.put("a", b"key:%d" % index, b"value", STAMP + index)
    filling = pair.cores["b"]
    filling.require_sync(set(range(BUCKET_COUNT)))
    pair.advance(3000)
    assert filling.unsynced_count == 0
    assert pair.agree()
    assert filling.stats.buckets_synced == BUCKET_COUNT


def test_work_per_round_is_bounded_and_the_rest_follows():
    config = AntiEntropyConfig(confirm_ms=0, buckets_per_round_max=4, rounds_per_s_max=50)
    pair = Pair(config=config)
    keys = [b"key:%d" % index for index in range(400)]
    for index, key in enumerate(keys):
        pair.put("a", key, b"v", STAMP + index)
    buckets = {bucket_of(key) for key in keys}
    pair.advance(1200)
    a = pair.cores["a"].stats
    b = pair.cores["b"].stats
    assert 0 < a.keys_repaired + b.keys_repaired < len(keys)  # not all in one round
    pair.advance(20_000)
    assert pair.agree()
    listing_rounds = a.rounds_repaired + b.rounds_repaired
    assert listing_rounds >= len(buckets) // 4


def test_bytes_per_round_cap_splits_a_transfer():
    config = AntiEntropyConfig(confirm_ms=0, bytes_per_round_max=10_000)
    pair = Pair(config=config)
    for index in range(100):
        pair.put("a", b"{same}%d" % index, b"x" * 1000, STAMP + index)  # one bucket, 100 KB
    pair.advance(10_000)
    assert pair.agree()
    # No payload carried much more than the cap (one entry may cross it; a payload may hold
    # this node's answer as responder and its push as initiator), so the transfer took at
    # least ten rounds.
    assert max(len(payload) for _, _, payload in pair.sent) < 2 * (10_000 + 1100)
    repairing = pair.cores["a"].stats.rounds_repaired + pair.cores["b"].stats.rounds_repaired
    assert repairing >= 10


def test_a_huge_bucket_is_listed_in_ranges():
    config = AntiEntropyConfig(confirm_ms=0, listing_entries_max=7)
    pair = Pair(config=config)
    for index in range(50):
        pair.put("a", b"{tag}%d" % index, b"v", STAMP + index)
        if index % 2:
            pair.put("b", b"{tag}%d" % index, b"v", STAMP + index)
    pair.advance(5000)
    assert pair.agree()


def test_entries_for_buckets_not_shared_and_versions_far_ahead_are_refused():
    pair = Pair()
    core = pair.cores["a"]
    core.set_layout(Layout("a", _Table(("a", "b")), _Table(("a", "b"))))
    ahead = (WALL_MS + 10_000) << 80
    payload = codec.encode_payload(
        [[codec.PUSH, 1, [*codec.entry_fields(b"k", b"v", ahead, None)]]]
    )
    core.handle("b", payload, 0, WALL_MS)
    assert core.stats.entries_refused == 1 and len(pair.stores["a"]) == 0
    stranger = codec.encode_payload(
        [[codec.PUSH, 1, [*codec.entry_fields(b"k", b"v", STAMP, None)]]]
    )
    core.handle("mallory", stranger, 0, WALL_MS)
    assert len(pair.stores["a"]) == 0 and core.stats.unexpected_messages >= 1


def test_a_responder_with_another_view_says_busy():
    pair = Pair()
    other_view = _Table(("a", "b"), half=True)
    pair.cores["b"].set_layout(Layout("b", other_view, other_view))
    pair.advance(3000)
    assert pair.cores["a"].stats.rounds_busy >= 1


def test_a_round_without_answer_times_out():
    pair = Pair()
    core = pair.cores["a"]
    core.tick(5000, WALL_MS)
    assert core.round_in_flight() == "b"
    core.take_outbox()  # lost
    core.tick(5000 + core.config.round_timeout_ms, WALL_MS)
    assert core.stats.rounds_timed_out == 1


@given(st.binary(max_size=300))
def test_decoder_rejects_junk_cleanly(junk):
    with contextlib.suppress(codec.AntiEntropyCodecError):
        codec.decode_payload(codec.PAYLOAD_TAG + junk)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-5, max_value=2**65),
            st.binary(max_size=8),
            st.none(),
            st.booleans(),
            st.lists(st.integers(min_value=-1, max_value=2**64), max_size=8),
        ),
        max_size=7,
    )
)
def test_decoder_checks_every_field(fields):
    payload = codec.PAYLOAD_TAG + msgpack.packb([fields], use_bin_type=True)
    try:
        messages = codec.decode_payload(payload)
    except codec.AntiEntropyCodecError:
        return
    assert len(messages) == 1 and messages[0][0] in range(1, 10)


def test_a_junk_payload_changes_nothing():
    pair = Pair()
    core = pair.cores["a"]
    core.handle("b", b"A\xc1junk", 0, WALL_MS)
    assert core.stats.bad_messages == 1


def test_summaries_match_a_rebuild_after_repair():
    pair = Pair(config=AntiEntropyConfig(confirm_ms=0))
    rng = random.Random(7)
    for index in range(300):
        name = rng.choice(("a", "b"))
        pair.put(name, b"k%d" % rng.randrange(100), b"v%d" % index, STAMP + index)
    pair.advance(5000)
    for store in pair.stores.values():
        assert store.summaries == rebuild(_entries(store, pair.wall_ms))


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        AntiEntropyConfig(interval_ms=0)
    with pytest.raises(ValueError):
        AntiEntropyConfig(confirm_ms=-1)
