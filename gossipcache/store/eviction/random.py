"""Random eviction: every tracked entry is equally likely to be the victim.

Keys live in a dense list plus a key -> slot dict, so a uniform pick is one ``randrange`` and a
removal swaps the last key into the freed slot: O(1) with no per-entry objects. The generator is a
``random.Random`` seeded by the caller, so a run replays exactly.
"""

from __future__ import annotations

import random as _random

from .base import NoExtraState


class RandomPolicy(NoExtraState):
    """Uniform random eviction; all operations O(1)."""

    name = "random"
    entry_metadata_bytes = 160  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del capacity  # Randomness needs no budget.
        self._rng = _random.Random(seed)
        self._keys: list[bytes] = []
        self._slot: dict[bytes, int] = {}

    def insert(self, key: bytes, weight: int) -> None:
        self._slot[key] = len(self._keys)
        self._keys.append(key)

    def access(self, key: bytes) -> None:
        pass

    def update(self, key: bytes, weight: int) -> None:
        pass

    def remove(self, key: bytes) -> None:
        slot = self._slot.pop(key)
        last = self._keys.pop()
        if last != key:
            self._keys[slot] = last
            self._slot[last] = slot

    def evict(self, protect: bytes | None = None) -> bytes:
        keys = self._keys
        if not keys:
            raise LookupError("nothing to evict")
        protect_slot = self._slot.get(protect) if protect is not None else None
        # ``int(random() * n)`` is uniform to within 2**-53 and several times faster than
        # ``randrange``; the counts here are far below 2**53.
        if protect_slot is None or len(keys) == 1:
            victim = keys[int(self._rng.random() * len(keys))]
        else:
            # Draw among the other slots: skip over the protected one.
            slot = int(self._rng.random() * (len(keys) - 1))
            victim = keys[slot + 1 if slot >= protect_slot else slot]
        self.remove(victim)
        return victim

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: bytes) -> bool:
        return key in self._slot
