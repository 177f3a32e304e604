"""The eviction policy interface.

A policy is told about every entry the store holds and, when the store is over its memory limit,
chooses which entry leaves. Policies are pure bookkeeping: no I/O, no clock, and no global
randomness (a policy that needs randomness takes a seed).

Each entry has a *weight*: its accounted size in bytes when a node's store uses the policy, or 1 in
trace replay (every object has size 1). ``capacity`` is in the same unit; policies that split their
space into segments (S3-FIFO, W-TinyLFU) size the segments by weight.

Per-key metadata is kept in dicts and lists whose keys and values are bytes and ints only, so that
CPython's cyclic garbage collector does not track one object per entry (see docs/design.md,
"Pauses").

Every operation is O(1) amortized.

Memory: the store charges each entry the policy's ``entry_metadata_bytes`` on top of its own
per-entry bytes, and charges ``extra_bytes`` (state that outlives entries: S3-FIFO's ghost queue)
as it changes. Both are resident bytes measured under churn (``tests/test_memory_charges.py``
checks them against allocation counts, ``benchmarks/memory_fill.py`` against RSS).
"""

from __future__ import annotations

from typing import ClassVar, Protocol


class EvictionPolicy(Protocol):
    """What the store calls. ``key`` is always bytes; ``weight`` a positive int."""

    #: The name chosen with ``--eviction NAME``.
    name: ClassVar[str]
    #: Resident bytes of per-key metadata for one tracked key, at the table sizes a dict settles
    #: at under churn (see ``ENTRY_OVERHEAD_BYTES`` in store.py for the method).
    entry_metadata_bytes: ClassVar[int]
    #: Resident bytes held for keys no longer tracked (ghosts), kept current by every call.
    extra_bytes: int

    def shed_extra(self) -> bool:
        """Drop the oldest piece of ``extra_bytes`` state; False when there is none. The store
        calls it only when evicting every other entry could not bring it under its limit."""

    def insert(self, key: bytes, weight: int) -> None:
        """A new key was written. It is not tracked yet."""

    def access(self, key: bytes) -> None:
        """A tracked key was read (a hit)."""

    def update(self, key: bytes, weight: int) -> None:
        """A tracked key was overwritten; its weight may have changed. Counts as an access."""

    def remove(self, key: bytes) -> None:
        """A tracked key left for a reason other than eviction (delete, expiry, flush)."""

    def evict(self, protect: bytes | None = None) -> bytes:
        """Choose a victim, stop tracking it and return it.

        ``protect`` is the key the caller has just written: it is never returned while any other
        key is tracked. Raises ``LookupError`` when nothing is tracked.
        """

    def __len__(self) -> int:
        """How many keys are tracked."""

    def __contains__(self, key: bytes) -> bool: ...


class NoExtraState:
    """For policies whose state is only per tracked key: nothing outlives an entry."""

    extra_bytes = 0

    def shed_extra(self) -> bool:
        return False
