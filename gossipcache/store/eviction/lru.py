"""Least recently used: evict the entry whose last access is oldest.

An ``OrderedDict`` is a hash map threaded by a doubly linked list implemented in C; its links are
not Python objects, so the collector does not see one per entry.
"""

from __future__ import annotations

from collections import OrderedDict

from ._order import oldest_except
from .base import NoExtraState


class LruPolicy(NoExtraState):
    name = "lru"
    entry_metadata_bytes = 200  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity, seed  # LRU needs neither: the order is the whole state.
        # Oldest first. The value is unused: the OrderedDict is the ordered set.
        self._order: OrderedDict[bytes, None] = OrderedDict()

    def insert(self, key: bytes, weight: int) -> None:
        self._order[key] = None

    def access(self, key: bytes) -> None:
        self._order.move_to_end(key)

    def update(self, key: bytes, weight: int) -> None:
        self._order.move_to_end(key)

    def remove(self, key: bytes) -> None:
        del self._order[key]

    def evict(self, protect: bytes | None = None) -> bytes:
        order = self._order
        if not order:
            raise LookupError("nothing to evict")
        victim = next(iter(order))
        if victim == protect and len(order) > 1:
            # The protected key is the LRU one only if it was written and then everything else
            # was touched: take the next oldest.
            victim = oldest_except(order, protect)
        del order[victim]
        return victim

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: bytes) -> bool:
        return key in self._order
