"""Least frequently used, ties broken by recency (LRU among the least frequent).

The O(1) scheme of Shah, Mitra and Matani (2010): one bucket per frequency that some key has, each
an ``OrderedDict`` of its keys oldest first, and the buckets chained in increasing frequency by two
int -> int dicts. An access moves a key from bucket ``f`` to bucket ``f + 1``, which is either the
next bucket in the chain or is created right after ``f``; the least frequent bucket is the chain's
head, so eviction never searches.

Per entry: one slot in ``_frequency`` (bytes -> int) and one in its bucket (bytes -> None). The
buckets are the only container objects the collector tracks, one per distinct frequency: ``k``
distinct frequencies need at least ``k * (k + 1) / 2`` accesses, so they stay few.
"""

from __future__ import annotations

from collections import OrderedDict

from ._order import oldest_except

#: The frequency chain's sentinel: "no bucket on this side".
_NO_BUCKET = 0


class LfuPolicy:
    """LFU with LRU tie-breaking; all operations O(1)."""

    name = "lfu"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity, seed  # Counts and recency are the whole state.
        self._frequency: dict[bytes, int] = {}
        self._buckets: dict[int, OrderedDict[bytes, None]] = {}
        # Chain of frequencies that have a bucket, ascending; _NO_BUCKET marks the ends.
        self._higher: dict[int, int] = {}
        self._lower: dict[int, int] = {}
        self._lowest = _NO_BUCKET

    def insert(self, key: bytes, weight: int) -> None:
        self._frequency[key] = 1
        bucket = self._buckets.get(1)
        if bucket is None:
            bucket = self._add_bucket(1, lower=_NO_BUCKET)
        bucket[key] = None

    def access(self, key: bytes) -> None:
        frequency = self._frequency[key]
        bucket = self._buckets[frequency]
        higher = self._buckets.get(frequency + 1)
        if higher is None:
            higher = self._add_bucket(frequency + 1, lower=frequency)
        del bucket[key]
        higher[key] = None
        self._frequency[key] = frequency + 1
        if not bucket:
            self._drop_bucket(frequency)

    def update(self, key: bytes, weight: int) -> None:
        self.access(key)

    def remove(self, key: bytes) -> None:
        frequency = self._frequency.pop(key)
        bucket = self._buckets[frequency]
        del bucket[key]
        if not bucket:
            self._drop_bucket(frequency)

    def evict(self, protect: bytes | None = None) -> bytes:
        if not self._frequency:
            raise LookupError("nothing to evict")
        lowest = self._buckets[self._lowest]
        victim = oldest_except(lowest, protect)
        if victim is None:
            # The lowest bucket holds only ``protect``: take the next bucket's oldest key.
            higher = self._higher[self._lowest]
            victim = next(iter(self._buckets[higher])) if higher != _NO_BUCKET else protect
        self.remove(victim)
        return victim

    def frequency(self, key: bytes) -> int:
        """How often ``key`` was inserted, read or overwritten while tracked (for tests)."""
        return self._frequency[key]

    def __len__(self) -> int:
        return len(self._frequency)

    def __contains__(self, key: bytes) -> bool:
        return key in self._frequency

    # -- the frequency chain -----------------------------------------------------------------

    def _add_bucket(self, frequency: int, lower: int) -> OrderedDict[bytes, None]:
        """Create the bucket for ``frequency`` right after ``lower`` (or at the head)."""
        higher = self._higher[lower] if lower != _NO_BUCKET else self._lowest
        self._lower[frequency] = lower
        self._higher[frequency] = higher
        if lower == _NO_BUCKET:
            self._lowest = frequency
        else:
            self._higher[lower] = frequency
        if higher != _NO_BUCKET:
            self._lower[higher] = frequency
        bucket: OrderedDict[bytes, None] = OrderedDict()
        self._buckets[frequency] = bucket
        return bucket

    def _drop_bucket(self, frequency: int) -> None:
        del self._buckets[frequency]
        lower = self._lower.pop(frequency)
        higher = self._higher.pop(frequency)
        if lower == _NO_BUCKET:
            self._lowest = higher
        else:
            self._higher[lower] = higher
        if higher != _NO_BUCKET:
            self._lower[higher] = lower
