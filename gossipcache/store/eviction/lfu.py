"""Least frequently used, ties broken by recency (LRU among the least frequent).

The O(1) scheme of Shah, Mitra and Matani (2010): one list per frequency that some key has, oldest
key first, and the lists chained in increasing frequency. An access moves a key from the list of
frequency ``f`` to that of ``f + 1``, which is either the next list in the chain or is created
right after ``f``; the least frequent list is the chain's head, so eviction never searches.

Everything lives in dicts of bytes and ints, which the cyclic collector never tracks: the lists
are doubly linked through ``_newer`` / ``_older`` (key -> key), each list is known by its
``_oldest`` and ``_newest`` key (frequency -> key), and the chain by ``_higher`` / ``_lower``
(frequency -> frequency). A container per frequency (an ``OrderedDict`` each) would be simpler,
but each would be a tracked object created while serving, which a full collection walks entry by
entry.

Per entry: one slot in ``_frequency`` and up to two in ``_newer`` / ``_older``.
"""

from __future__ import annotations

from .base import NoExtraState

#: The frequency chain's sentinel: "no list on this side". Frequencies start at 1.
_NONE = 0


class LfuPolicy(NoExtraState):
    """LFU with LRU tie-breaking; all operations O(1)."""

    name = "lfu"
    entry_metadata_bytes = 350  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity, seed  # Counts and recency are the whole state.
        self._frequency: dict[bytes, int] = {}
        self._newer: dict[bytes, bytes] = {}  # within a frequency's list
        self._older: dict[bytes, bytes] = {}
        self._oldest: dict[int, bytes] = {}  # per frequency
        self._newest: dict[int, bytes] = {}
        self._higher: dict[int, int] = {}  # the chain of frequencies that have a list
        self._lower: dict[int, int] = {}
        self._lowest = _NONE

    def insert(self, key: bytes, weight: int) -> None:
        self._frequency[key] = 1
        self._append(1, key, lower=_NONE)

    def access(self, key: bytes) -> None:
        frequency = self._frequency[key]
        # Unlink first (the links are reused), drop the emptied list only once the next one is
        # chained after it.
        emptied = self._unlink(frequency, key)
        self._append(frequency + 1, key, lower=frequency)
        if emptied:
            self._drop_list(frequency)
        self._frequency[key] = frequency + 1

    def update(self, key: bytes, weight: int) -> None:
        self.access(key)

    def remove(self, key: bytes) -> None:
        frequency = self._frequency.pop(key)
        if self._unlink(frequency, key):
            self._drop_list(frequency)

    def evict(self, protect: bytes | None = None) -> bytes:
        if not self._frequency:
            raise LookupError("nothing to evict")
        victim = self._oldest[self._lowest]
        if victim == protect and len(self._frequency) > 1:
            # Next in the lowest list, or else the oldest of the next frequency.
            newer = self._newer.get(victim)  # (b"" is a valid key: compare with None)
            victim = newer if newer is not None else self._oldest[self._higher[self._lowest]]
        self.remove(victim)
        return victim

    def frequency(self, key: bytes) -> int:
        """How often ``key`` was inserted, read or overwritten while tracked (for tests)."""
        return self._frequency[key]

    def __len__(self) -> int:
        return len(self._frequency)

    def __contains__(self, key: bytes) -> bool:
        return key in self._frequency

    # -- lists and chain ---------------------------------------------------------------------

    def _append(self, frequency: int, key: bytes, lower: int) -> None:
        """Make ``key`` the newest of ``frequency``'s list, creating the list right after
        ``lower`` in the chain (or at its head) when it does not exist."""
        newest = self._newest.get(frequency)
        if newest is None:
            self._oldest[frequency] = key
            higher = self._higher[lower] if lower != _NONE else self._lowest
            self._lower[frequency] = lower
            self._higher[frequency] = higher
            if lower == _NONE:
                self._lowest = frequency
            else:
                self._higher[lower] = frequency
            if higher != _NONE:
                self._lower[higher] = frequency
        else:
            self._newer[newest] = key
            self._older[key] = newest
        self._newest[frequency] = key

    def _unlink(self, frequency: int, key: bytes) -> bool:
        """Take ``key`` out of ``frequency``'s list; True when the list is now empty (the caller
        then drops it)."""
        older = self._older.pop(key, None)
        newer = self._newer.pop(key, None)
        if older is None:
            if newer is None:
                return True
            self._oldest[frequency] = newer
        else:
            if newer is None:
                del self._newer[older]
            else:
                self._newer[older] = newer
        if newer is None:
            self._newest[frequency] = older
        elif older is None:
            del self._older[newer]
        else:
            self._older[newer] = older
        return False

    def _drop_list(self, frequency: int) -> None:
        del self._oldest[frequency]
        del self._newest[frequency]
        lower = self._lower.pop(frequency)
        higher = self._higher.pop(frequency)
        if lower == _NONE:
            self._lowest = higher
        else:
            self._higher[lower] = higher
        if higher != _NONE:
            self._lower[higher] = lower
