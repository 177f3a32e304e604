"""SIEVE (Zhang et al., NSDI'24): a FIFO queue, one visited bit per entry, and a moving hand.

New entries go to the head of the queue; a hit only sets the entry's visited bit (no reordering,
which is why hits are cheap). To evict, the hand walks from where it last stopped toward the head,
wrapping to the tail (oldest) at the end: a visited entry has its bit cleared and stays where it is;
the first unvisited entry is the victim, and the hand stays at its newer neighbour for next time.
Survivors keep their queue position, so new entries are weeded out quickly while popular old ones
remain ("quick demotion, lazy promotion").

The queue is a doubly linked list kept in two dicts, key -> newer key and key -> older key (None
at the ends), so there is no node object per entry. Per entry: two dict slots plus, when
visited, one set slot. O(1) amortized: each step of the hand past an entry clears a bit that a hit
(O(1)) set, and a full sweep ends at an unvisited entry.
"""

from __future__ import annotations

from .base import NoExtraState


class SievePolicy(NoExtraState):
    """SIEVE eviction."""

    name = "sieve"
    entry_metadata_bytes = 250  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity, seed  # The queue, the bits and the hand are the whole state.
        self._newer: dict[bytes, bytes | None] = {}
        self._older: dict[bytes, bytes | None] = {}
        self._head: bytes | None = None  # newest
        self._tail: bytes | None = None  # oldest
        # Where the next sweep starts; None starts at the tail.
        self._hand: bytes | None = None
        self._visited: set[bytes] = set()

    def insert(self, key: bytes, weight: int) -> None:
        head = self._head
        self._newer[key] = None
        self._older[key] = head
        if head is None:
            self._tail = key
        else:
            self._newer[head] = key
        self._head = key

    def access(self, key: bytes) -> None:
        self._visited.add(key)

    def update(self, key: bytes, weight: int) -> None:
        self._visited.add(key)

    def remove(self, key: bytes) -> None:
        newer = self._newer.pop(key)
        older = self._older.pop(key)
        if self._hand == key:
            self._hand = newer
        if newer is None:
            self._head = older
        else:
            self._older[newer] = older
        if older is None:
            self._tail = newer
        else:
            self._newer[older] = newer
        self._visited.discard(key)

    def evict(self, protect: bytes | None = None) -> bytes:
        if self._tail is None:
            raise LookupError("nothing to evict")
        if len(self._newer) == 1:
            victim = self._tail
        else:
            victim = self._sweep(protect)
        self._hand = self._newer[victim]
        self.remove(victim)
        return victim

    def is_visited(self, key: bytes) -> bool:
        """Whether ``key`` was hit since the hand last passed it (for tests)."""
        return key in self._visited

    def __len__(self) -> int:
        return len(self._newer)

    def __contains__(self, key: bytes) -> bool:
        return key in self._newer

    def _sweep(self, protect: bytes | None) -> bytes:
        """Move the hand to the first unvisited entry other than ``protect``; two entries or more.

        Ends within two laps: the first lap clears every bit it passes.
        """
        visited = self._visited
        newer = self._newer
        node = self._hand if self._hand is not None else self._tail
        while True:
            if node in visited:
                visited.discard(node)
            elif node != protect:
                return node
            node = newer[node]
            if node is None:
                node = self._tail
