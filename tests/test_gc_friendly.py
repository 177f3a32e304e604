"""Entries stay out of the cyclic collector's way (docs/design.md, "Pauses").

A store and its policy create all their containers up front; entries live in dicts of bytes and
ints, which the collector does not track. So filling a store must not add tracked objects, and
``gc.freeze()`` after building the store takes every container out of full collections.
"""

from __future__ import annotations

import gc

import pytest

from gossipcache.store import ENTRY_OVERHEAD_BYTES, Store
from gossipcache.store.eviction import POLICY_NAMES

#: Objects the test's own bookkeeping may allocate between the two counts.
TRACKED_SLACK = 16


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_filling_a_store_adds_no_tracked_objects(policy: str) -> None:
    # Room for about 2,000 entries in 4 shards: the run both fills and evicts.
    store = Store(2_000 * (ENTRY_OVERHEAD_BYTES + 110), policy, shard_count=4)
    gc.collect()
    tracked_before = len(gc.get_objects())
    for i in range(5_000):
        key = b"key:%08d" % i
        store.put(key, b"v" * 100, now_ms=i, ttl_ms=50 if i % 3 == 0 else None)
        store.get(b"key:%08d" % (i // 2), now_ms=i)
        store.get(b"key:%08d" % (i % 97), now_ms=i)
        if i % 500 == 0:
            store.expire_tick(now_ms=i)
    gc.collect()
    assert store.stats().evictions > 0
    assert len(gc.get_objects()) - tracked_before <= TRACKED_SLACK
