"""Hints: writes an owner did not acknowledge, held for it by the coordinator (hinted handoff).

Pure bookkeeping; the replication core decides when to add, deliver and drop. Per target
address, hints are kept by key with only the newest version (a later write to the key replaces
the hint: the owner needs the newest, not the history), in insertion order so delivery goes
oldest first.

Bounds, after Cassandra's and Scylla's experience (docs/design.md, "Hinted handoff"):

- a hint older than ``window_ms`` is dropped (a node down longer is refilled by anti-entropy);
- at most ``target_bytes_max`` per target and ``total_bytes_max`` in all. A hint over a bound is
  dropped and counted; the write itself is never refused for it (Scylla refused every write once
  its hint store filled).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

#: What a hint costs beyond its key and value (its tuple and dict slots), charged to the bounds.
HINT_OVERHEAD_BYTES = 200


class Hint(NamedTuple):
    value: bytes | None
    version: int
    expires_at_ms: int | None
    created_ms: int


class HintStore:
    """Hints by target address, bounded in bytes and age."""

    def __init__(self, window_ms: int, target_bytes_max: int, total_bytes_max: int) -> None:
        self.window_ms = window_ms
        self.target_bytes_max = target_bytes_max
        self.total_bytes_max = total_bytes_max
        self._by_target: dict[str, OrderedDict[bytes, Hint]] = {}
        self._target_bytes: dict[str, int] = {}
        self.bytes_held = 0
        self.held = 0
        self.added = 0
        self.delivered = 0
        self.dropped_full = 0
        self.dropped_expired = 0

    @staticmethod
    def size_of(key: bytes, value: bytes | None) -> int:
        return len(key) + (len(value) if value is not None else 0) + HINT_OVERHEAD_BYTES

    def add(self, target: str, key: bytes, hint: Hint) -> bool:
        """Hold ``hint`` for ``target``; False (counted) when a bound refuses it."""
        hints = self._by_target.get(target)
        old = hints.get(key) if hints is not None else None
        if old is not None:
            if old.version >= hint.version:
                return True  # it already holds this write or a newer one
            self._remove(target, key)
            hints = self._by_target.get(target)
        size = self.size_of(key, hint.value)
        target_bytes = self._target_bytes.get(target, 0)
        if (
            target_bytes + size > self.target_bytes_max
            or self.bytes_held + size > self.total_bytes_max
        ):
            self.dropped_full += 1
            return False
        if hints is None:
            hints = self._by_target[target] = OrderedDict()
        hints[key] = hint
        self._target_bytes[target] = target_bytes + size
        self.bytes_held += size
        self.held += 1
        self.added += 1
        return True

    def targets(self) -> list[str]:
        return list(self._by_target)

    def count_for(self, target: str) -> int:
        hints = self._by_target.get(target)
        return len(hints) if hints is not None else 0

    def oldest(self, target: str, count_max: int, now_ms: int) -> list[tuple[bytes, Hint]]:
        """Up to ``count_max`` of ``target``'s hints, oldest first, dropping those past the
        window on the way (counted)."""
        hints = self._by_target.get(target)
        taken: list[tuple[bytes, Hint]] = []
        if hints is None:
            return taken
        expired = []
        for key, hint in hints.items():
            if now_ms - hint.created_ms > self.window_ms:
                expired.append(key)
                continue
            taken.append((key, hint))
            if len(taken) >= count_max:
                break
        for key in expired:
            self._remove(target, key)
            self.dropped_expired += 1
        return taken

    def delivered_one(self, target: str, key: bytes, version: int) -> None:
        """``target`` acknowledged ``version`` of ``key``: forget the hint if it is that one."""
        hints = self._by_target.get(target)
        hint = hints.get(key) if hints is not None else None
        if hint is not None and hint.version <= version:
            self._remove(target, key)
            self.delivered += 1

    def drop_target(self, target: str) -> int:
        """Forget every hint for ``target`` (it is gone for good); returns how many."""
        hints = self._by_target.get(target)
        if hints is None:
            return 0
        count = len(hints)
        for key in list(hints):
            self._remove(target, key)
        self.dropped_expired += count
        return count

    def _remove(self, target: str, key: bytes) -> None:
        hints = self._by_target[target]
        hint = hints.pop(key)
        size = self.size_of(key, hint.value)
        self.bytes_held -= size
        self.held -= 1
        remaining = self._target_bytes[target] - size
        if hints:
            self._target_bytes[target] = remaining
        else:
            del self._by_target[target]
            del self._target_bytes[target]
