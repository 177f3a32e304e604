"""W-TinyLFU (Einziger, Friedman and Manes, 2017), the policy of Caffeine.

Three LRU segments share the capacity (all budgets in weight units):

- the *window* (1 %) takes every new key, so a burst of new keys can build up frequency;
- the main space (99 %) is a segmented LRU: *probation* and *protected* (80 % of main). A hit in
  probation promotes the key to protected; protected's overflow is demoted back to probation's
  most recent end. Probation holds whatever main space protected does not use.

When the window overflows and the cache is full, the window's oldest key (the *candidate*) and
probation's oldest key (the *victim*) meet at the admission filter, *TinyLFU*: the key with the
higher estimated frequency stays, ties keep the victim. While the cache has room, window overflow
simply moves to probation. To blunt an attacker who inflates a victim's estimate with colliding
keys, a candidate whose estimate is at least ``ADMIT_RANDOM_FREQUENCY_MIN`` wins one loss in
``ADMIT_RANDOM_ONE_IN`` anyway (Caffeine's defence), drawn from the seeded generator.

Frequencies come from :class:`FrequencySketch`, a count-min sketch of 4 rows of 4-bit-range
counters (capped at 15) in one ``bytearray``; all counters are halved after ``10 x width``
increments so old popularity fades. No doorkeeper: the window already absorbs one-hit keys.

Per entry: one ``OrderedDict`` slot (bytes -> weight) in exactly one segment; the sketch is shared
and fixed in size. Every operation is O(1) amortized (halving costs O(width) once per
``10 x width`` increments; growing the sketch costs O(width) once per doubling of the key count).
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict

import mmh3

from ...errors import InvariantViolation
from ._order import oldest_except
from .base import NoExtraState

#: Window share of the capacity, and protected share of the main space (Caffeine's defaults).
WINDOW_SHARE_PERCENT = 1
PROTECTED_SHARE_PERCENT = 80
#: Hash-flooding defence: a candidate this frequent wins one lost contest in this many.
ADMIT_RANDOM_FREQUENCY_MIN = 6
ADMIT_RANDOM_ONE_IN = 128

WINDOW = "window"
PROBATION = "probation"
PROTECTED = "protected"

#: Count-min sketch shape. The width is a power of two so a slice of the hash indexes a row.
SKETCH_ROWS = 4
SKETCH_COUNTER_MAX = 15
#: Counters are halved after this many increments per counter column (the paper's W = 10 x C).
SKETCH_SAMPLE_PER_WIDTH = 10
SKETCH_WIDTH_MIN = 16
#: The width is sized from the capacity read as an item count, but not above this at the start:
#: a byte capacity (256 MiB) would otherwise ask for a sketch far larger than the key count. The
#: sketch then doubles as the tracked key count passes its width, up to ``SKETCH_WIDTH_MAX``
#: (4 rows x 4 Mi counters = 16 MiB), which covers any key count a node's memory can hold.
SKETCH_WIDTH_INITIAL_MAX = 1 << 16
SKETCH_WIDTH_MAX = 1 << 22
#: Hash slice per row: the 128-bit hash gives four independent 32-bit row indexes.
_ROW_HASH_BITS = 32
#: mmh3.hash128(key, seed, x64arch, signed), called positionally: keyword parsing costs time here.
_hash128 = mmh3.hash128
#: Byte translation table that halves every counter in one C-level pass.
_HALVE = bytes(value >> 1 for value in range(256))


def _power_of_two_at_least(count: int) -> int:
    return 1 << max(0, count - 1).bit_length()


class FrequencySketch:
    """A count-min sketch with 4 rows, counters capped at 15 and periodic halving (aging)."""

    def __init__(self, width: int, seed: int) -> None:
        self._seed = seed
        self._reset(_power_of_two_at_least(max(SKETCH_WIDTH_MIN, width)))

    @property
    def width(self) -> int:
        return self._width

    def estimate(self, key: bytes) -> int:
        """An upper bound of ``key``'s recent frequency (the minimum over the rows)."""
        counters = self._counters
        first, second, third, fourth = self._slots(key)
        return min(counters[first], counters[second], counters[third], counters[fourth])

    def increment(self, key: bytes) -> None:
        """Count one occurrence of ``key``; runs on every insert and hit, so it is unrolled."""
        counters = self._counters
        first, second, third, fourth = self._slots(key)
        added = False
        if counters[first] < SKETCH_COUNTER_MAX:
            counters[first] += 1
            added = True
        if counters[second] < SKETCH_COUNTER_MAX:
            counters[second] += 1
            added = True
        if counters[third] < SKETCH_COUNTER_MAX:
            counters[third] += 1
            added = True
        if counters[fourth] < SKETCH_COUNTER_MAX:
            counters[fourth] += 1
            added = True
        if added:
            self._additions += 1
            if self._additions >= self._sample_size:
                self._counters = counters.translate(_HALVE)
                self._additions //= 2

    def ensure_width(self, key_count: int) -> None:
        """Grow to at least ``key_count`` columns (clearing the counts, as Caffeine does)."""
        if key_count > self._width and self._width < SKETCH_WIDTH_MAX:
            self._reset(min(_power_of_two_at_least(key_count), SKETCH_WIDTH_MAX))

    def _reset(self, width: int) -> None:
        self._width = width
        self._mask = width - 1
        self._counters = bytearray(SKETCH_ROWS * width)
        self._sample_size = SKETCH_SAMPLE_PER_WIDTH * width
        self._additions = 0

    def _slots(self, key: bytes) -> tuple[int, int, int, int]:
        hashed = _hash128(key, self._seed, True, False)
        mask = self._mask
        width = self._width
        return (
            hashed & mask,
            width + ((hashed >> _ROW_HASH_BITS) & mask),
            2 * width + ((hashed >> (2 * _ROW_HASH_BITS)) & mask),
            3 * width + ((hashed >> (3 * _ROW_HASH_BITS)) & mask),
        )


class WTinyLfuPolicy(NoExtraState):
    """W-TinyLFU eviction with weights."""

    name = "wtinylfu"
    entry_metadata_bytes = 150  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self._capacity = capacity
        self._window_budget = max(1, capacity * WINDOW_SHARE_PERCENT // 100)
        main_budget = max(1, capacity - self._window_budget)
        self._protected_budget = max(1, main_budget * PROTECTED_SHARE_PERCENT // 100)
        # Oldest first; key -> weight.
        self._window: OrderedDict[bytes, int] = OrderedDict()
        self._probation: OrderedDict[bytes, int] = OrderedDict()
        self._protected: OrderedDict[bytes, int] = OrderedDict()
        self._window_weight = 0
        self._probation_weight = 0
        self._protected_weight = 0
        self._sketch = FrequencySketch(min(capacity, SKETCH_WIDTH_INITIAL_MAX), seed)
        self._rng = _random.Random(seed)

    def insert(self, key: bytes, weight: int) -> None:
        self._window[key] = weight
        self._window_weight += weight
        sketch = self._sketch
        if len(self._probation) + len(self._protected) + len(self._window) > sketch.width:
            sketch.ensure_width(len(self))
        sketch.increment(key)
        if self._total_weight() <= self._capacity:
            self._drain_window()

    def access(self, key: bytes) -> None:
        self._sketch.increment(key)
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._probation:
            weight = self._probation.pop(key)
            self._probation_weight -= weight
            self._protected[key] = weight
            self._protected_weight += weight
            self._demote_protected_overflow()
        else:
            self._protected.move_to_end(key)

    def update(self, key: bytes, weight: int) -> None:
        if key in self._window:
            self._window_weight += weight - self._window[key]
            self._window[key] = weight
        elif key in self._probation:
            self._probation_weight += weight - self._probation[key]
            self._probation[key] = weight
        else:
            self._protected_weight += weight - self._protected[key]
            self._protected[key] = weight
        self.access(key)
        self._demote_protected_overflow()
        if self._total_weight() <= self._capacity:
            self._drain_window()

    def remove(self, key: bytes) -> None:
        weight = self._window.pop(key, None)
        if weight is not None:
            self._window_weight -= weight
            return
        weight = self._probation.pop(key, None)
        if weight is not None:
            self._probation_weight -= weight
            return
        self._protected_weight -= self._protected.pop(key)

    def evict(self, protect: bytes | None = None) -> bytes:
        count = len(self)
        if count == 0:
            raise LookupError("nothing to evict")
        if count == 1:
            protect = None  # Nothing else can go.
        candidate = None
        if self._window_weight > self._window_budget and len(self._window) > 1:
            candidate = oldest_except(self._window, protect)
        victim = oldest_except(self._probation, protect)
        if victim is None:
            victim = oldest_except(self._protected, protect)
        if candidate is not None and victim is not None:
            if self._admit(candidate, victim):
                weight = self._window.pop(candidate)
                self._window_weight -= weight
                self._probation[candidate] = weight
                self._probation_weight += weight
            else:
                victim = candidate
        elif victim is None:
            # Main holds nothing that may go: the window gives up its oldest.
            victim = oldest_except(self._window, protect)
            if victim is None:  # an explicit raise: ``python -O`` drops asserts
                raise InvariantViolation("wtinylfu: two keys tracked but none may be evicted")
        self.remove(victim)
        if self._total_weight() <= self._capacity:
            self._drain_window()
        return victim

    def segment_of(self, key: bytes) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or None: where ``key`` is."""
        if key in self._window:
            return WINDOW
        if key in self._probation:
            return PROBATION
        if key in self._protected:
            return PROTECTED
        return None

    def frequency_estimate(self, key: bytes) -> int:
        """The sketch's estimate of ``key``'s recent frequency."""
        return self._sketch.estimate(key)

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def __contains__(self, key: bytes) -> bool:
        return key in self._probation or key in self._protected or key in self._window

    # -- internals ---------------------------------------------------------------------------

    def _total_weight(self) -> int:
        return self._window_weight + self._probation_weight + self._protected_weight

    def _admit(self, candidate: bytes, victim: bytes) -> bool:
        """TinyLFU: does ``candidate`` replace ``victim`` in main?"""
        candidate_frequency = self._sketch.estimate(candidate)
        if candidate_frequency > self._sketch.estimate(victim):
            return True
        if candidate_frequency >= ADMIT_RANDOM_FREQUENCY_MIN:
            return self._rng.randrange(ADMIT_RANDOM_ONE_IN) == 0
        return False

    def _drain_window(self) -> None:
        """With room in the cache, window overflow moves to probation without a contest."""
        while self._window_weight > self._window_budget and len(self._window) > 1:
            key, weight = self._window.popitem(last=False)
            self._window_weight -= weight
            self._probation[key] = weight
            self._probation_weight += weight

    def _demote_protected_overflow(self) -> None:
        while self._protected_weight > self._protected_budget and len(self._protected) > 1:
            key, weight = self._protected.popitem(last=False)
            self._protected_weight -= weight
            self._probation[key] = weight
            self._probation_weight += weight
