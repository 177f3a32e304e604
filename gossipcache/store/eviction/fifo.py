"""First in, first out: evict the entry written longest ago; reads change nothing.

The ``OrderedDict`` holds the insertion order (oldest first); an overwrite keeps the entry's place,
as in a plain FIFO queue. Per entry: one ``OrderedDict`` slot (bytes -> None).
"""

from __future__ import annotations

from collections import OrderedDict

from ._order import oldest_except
from .base import NoExtraState


class FifoPolicy(NoExtraState):
    """FIFO eviction; all operations O(1)."""

    name = "fifo"
    entry_metadata_bytes = 200  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity, seed  # The queue order is the whole state.
        self._order: OrderedDict[bytes, None] = OrderedDict()

    def insert(self, key: bytes, weight: int) -> None:
        self._order[key] = None

    def access(self, key: bytes) -> None:
        pass  # FIFO ignores reads: that is what makes it cheap.

    def update(self, key: bytes, weight: int) -> None:
        pass  # An overwrite keeps the entry's place in the queue.

    def remove(self, key: bytes) -> None:
        del self._order[key]

    def evict(self, protect: bytes | None = None) -> bytes:
        order = self._order
        if not order:
            raise LookupError("nothing to evict")
        victim = next(iter(order))
        if victim == protect and len(order) > 1:
            victim = oldest_except(order, protect)
        del order[victim]
        return victim

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: bytes) -> bool:
        return key in self._order
