"""S3-FIFO (Yang et al., SOSP'23): three FIFO queues -- small, main and ghost.

- New keys enter the *small* queue (10 % of the capacity), unless the ghost queue remembers them,
  in which case they enter the *main* queue (the rest). Most objects are requested once
  ("one-hit wonders"); the small queue lets them leave quickly without disturbing main.
- A hit raises the key's 2-bit frequency, capped at 3. Hits never reorder anything.
- Evicting from small: the oldest key moves to main if it was read more than once while in small
  (frequency >= 2, the paper's ``freq > 1``; its frequency is cleared by the move), otherwise it
  leaves the cache and its key enters the ghost queue.
- Evicting from main: the oldest key is reinserted at the head with frequency - 1 if its frequency
  is positive (lazy promotion, a CLOCK with a 2-bit counter), otherwise it leaves the cache.
- Which queue: main when main is over its share or small has nothing to give, else small
  (libCacheSim's rule). While the cache has never evicted, a key that does not fit in the small
  queue goes to main, so the small queue respects its share from the start (libCacheSim's
  refinement of the paper's warm-up).
- The ghost queue holds each key's hash (a fingerprint, as in the paper: the key's bytes would
  outlive the entry) and weight, up to the main queue's share in weight -- as many entries as
  main can hold. A hash collision only sends a new key to main instead of small.

Per entry: one ``OrderedDict`` slot (bytes -> weight) and one ``_frequency`` slot (bytes -> int);
per ghost one ``OrderedDict`` slot (int -> int), charged to the store as ``extra_bytes``
(``GHOST_ENTRY_BYTES`` each) and dropped oldest first when the store needs the room. O(1) amortized: a small-queue step either moves a key to
main (once per insertion) or ends the eviction, and a main-queue reinsertion spends one unit of
frequency that one hit paid for.
"""

from __future__ import annotations

from collections import OrderedDict

from ...errors import InvariantViolation
from ._order import oldest_except

#: Share of the capacity (weight) the small queue may hold; the paper's 10 %.
SMALL_SHARE_PERCENT = 10
#: The 2-bit frequency counter's cap.
FREQUENCY_MAX = 3
#: Reads while in the small queue needed to move to main rather than leave (``freq > 1``).
MOVE_TO_MAIN_FREQUENCY_MIN = 2

#: Resident bytes of one ghost: its ``OrderedDict`` slot under churn plus the hash and weight
#: ints (measured with the entry constants, see ``entry_metadata_bytes``).
GHOST_ENTRY_BYTES = 160

SMALL = "small"
MAIN = "main"
GHOST = "ghost"


class S3FifoPolicy:
    """S3-FIFO eviction with weights."""

    name = "s3fifo"
    entry_metadata_bytes = 240  # measured: docs/benchmarks.md, "Memory against the limit"

    def __init__(self, capacity: int, seed: int = 0) -> None:
        del seed  # Deterministic.
        self._small_budget = max(1, capacity * SMALL_SHARE_PERCENT // 100)
        self._main_budget = max(1, capacity - self._small_budget)
        self._ghost_budget = self._main_budget
        # Oldest first; key -> weight.
        self._small: OrderedDict[bytes, int] = OrderedDict()
        self._main: OrderedDict[bytes, int] = OrderedDict()
        self._ghost: OrderedDict[int, int] = OrderedDict()  # hash(key) -> weight
        self._small_weight = 0
        self._main_weight = 0
        self._ghost_weight = 0
        self._frequency: dict[bytes, int] = {}
        self._has_evicted = False
        #: Resident bytes of the ghost queue: ``len(self._ghost) * GHOST_ENTRY_BYTES``.
        self.extra_bytes = 0

    def insert(self, key: bytes, weight: int) -> None:
        self._frequency[key] = 0
        ghost_weight = self._ghost.pop(hash(key), None)
        if ghost_weight is not None:
            self._ghost_weight -= ghost_weight
            self.extra_bytes -= GHOST_ENTRY_BYTES
            self._add_to_main(key, weight)
        elif (
            not self._has_evicted
            and self._small
            and self._small_weight + weight > self._small_budget
        ):
            self._add_to_main(key, weight)
        else:
            self._small[key] = weight
            self._small_weight += weight

    def access(self, key: bytes) -> None:
        frequency = self._frequency[key]
        if frequency < FREQUENCY_MAX:
            self._frequency[key] = frequency + 1

    def update(self, key: bytes, weight: int) -> None:
        if key in self._small:
            self._small_weight += weight - self._small[key]
            self._small[key] = weight
        else:
            self._main_weight += weight - self._main[key]
            self._main[key] = weight
        self.access(key)

    def remove(self, key: bytes) -> None:
        del self._frequency[key]
        weight = self._small.pop(key, None)
        if weight is not None:
            self._small_weight -= weight
        else:
            self._main_weight -= self._main.pop(key)

    def evict(self, protect: bytes | None = None) -> bytes:
        if not self._frequency:
            raise LookupError("nothing to evict")
        self._has_evicted = True
        if len(self._frequency) == 1:
            protect = None  # Nothing else can go.
        small_can_give = oldest_except(self._small, protect) is not None
        main_can_give = oldest_except(self._main, protect) is not None
        if small_can_give and (self._main_weight <= self._main_budget or not main_can_give):
            victim = self._evict_small(protect)
            if victim is not None:
                return victim
        # Either main was chosen, or every small key moved to main (so main can give).
        return self._evict_main(protect)

    def segment_of(self, key: bytes) -> str | None:
        """``"small"``, ``"main"``, ``"ghost"`` or None: where the policy holds ``key``."""
        if key in self._small:
            return SMALL
        if key in self._main:
            return MAIN
        if hash(key) in self._ghost:
            return GHOST
        return None

    def __len__(self) -> int:
        return len(self._frequency)

    def __contains__(self, key: bytes) -> bool:
        return key in self._frequency

    # -- internals ---------------------------------------------------------------------------

    def _add_to_main(self, key: bytes, weight: int) -> None:
        self._main[key] = weight
        self._main_weight += weight

    def _evict_small(self, protect: bytes | None) -> bytes | None:
        """Move read-again keys to main until one key leaves; None if none left."""
        small = self._small
        while True:
            key = oldest_except(small, protect)
            if key is None:
                return None
            weight = small.pop(key)
            self._small_weight -= weight
            if self._frequency[key] >= MOVE_TO_MAIN_FREQUENCY_MIN:
                self._frequency[key] = 0
                self._add_to_main(key, weight)
                continue
            del self._frequency[key]
            self._remember(key, weight)
            return key

    def _evict_main(self, protect: bytes | None) -> bytes:
        """Reinsert keys with frequency left (spending one) until one without leaves."""
        main = self._main
        frequency = self._frequency
        while True:
            key = oldest_except(main, protect)
            if key is None:  # an explicit raise: ``python -O`` drops asserts
                raise InvariantViolation("s3fifo: the main queue has nothing to evict")
            count = frequency[key]
            if count > 0:
                frequency[key] = count - 1
                main.move_to_end(key)
                continue
            del frequency[key]
            self._main_weight -= main.pop(key)
            return key

    def _remember(self, key: bytes, weight: int) -> None:
        """Put an evicted small-queue key in the ghost queue, dropping the oldest ghosts."""
        ghost = self._ghost
        ghost[hash(key)] = weight
        self._ghost_weight += weight
        self.extra_bytes += GHOST_ENTRY_BYTES
        while self._ghost_weight > self._ghost_budget:
            self.shed_extra()

    def shed_extra(self) -> bool:
        """Forget the oldest ghost; False when the ghost queue is empty."""
        if not self._ghost:
            return False
        _, weight = self._ghost.popitem(last=False)
        self._ghost_weight -= weight
        self.extra_bytes -= GHOST_ENTRY_BYTES
        return True
