"""The in-memory store every node runs: GET / PUT / DEL / EXPIRE / TTL under a byte limit.

Pure: no I/O and no clock of its own. Every call takes ``now_ms``, wall-clock milliseconds since
the Unix epoch, because an expiry is an absolute wall-clock instant that travels with the entry.
No method awaits or blocks, so a Trio node calls the store between two checkpoints and needs no
lock.

Layout (docs/design.md, "Store"): an entry is spread over dicts whose keys and values are bytes
and ints only. CPython's cyclic collector never tracks such dicts' contents, so a million entries
add no tracked objects and a full collection does not walk them.

- ``_values``: key -> value (bytes -> bytes)
- ``_versions``: key -> version (int; the replication layer's hybrid-logical-clock stamp, or a
  local counter when the caller gives none)
- ``_expires_at_ms``: key -> absolute expiry, only for keys that have a TTL
- ``_ttl_keys`` / ``_ttl_slot``: the keys with a TTL as a dense list plus each key's index, so the
  active expiry cycle can walk them with a cursor and removal is a swap with the last slot.

Accounting: an entry costs ``len(key) + len(value) + ENTRY_OVERHEAD_BYTES``. The overhead is the
measured cost of the store's and the eviction policy's per-entry structures (see
``tests/test_memory_overhead.py`` and docs/design.md). ``used_bytes`` never exceeds
``size_bytes_max`` after a call returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EntryTooLarge, KeyTooLarge, ValueTooLarge
from .eviction import EvictionPolicy, make_policy

#: Per-entry bytes charged on top of key and value: bytes-object headers, dict slots in the
#: store's maps, and the eviction policy's per-key metadata. Measured with tracemalloc over
#: 200,000 entries for every policy (largest: see docs/design.md); rounded up.
ENTRY_OVERHEAD_BYTES = 256

#: Default caps. Keys are identifiers, values are payloads; both bounded so that one request cannot
#: monopolise the loop or the memory limit. A node may lower them; frames are capped accordingly.
KEY_SIZE_BYTES_MAX_DEFAULT = 64 * 1024
VALUE_SIZE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024

#: TTL query results for keys without a remaining time, as Redis reports them.
TTL_MISSING = -2
TTL_PERSISTENT = -1

#: Active expiry: keys examined per batch, and the share of expired keys in a batch above which
#: the cycle runs another batch (Redis' adaptive cycle uses 20 keys and 25 %).
EXPIRE_BATCH_KEYS = 20
EXPIRE_REPEAT_RATIO = 0.25
#: Most keys one ``expire_tick`` may examine: bounds the pause one tick can cause.
EXPIRE_TICK_KEYS_MAX = 2000


@dataclass(frozen=True, slots=True)
class StoreStats:
    """An immutable snapshot of the store's counters. Building one is O(1)."""

    keys: int
    used_bytes: int
    size_bytes_max: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    gets: int
    puts: int
    deletes: int
    expires: int
    ttls: int
    eviction_policy: str

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class Store:
    """A byte-limited key-value store with expiry and pluggable eviction."""

    def __init__(
        self,
        size_bytes_max: int,
        eviction: str = "lru",
        *,
        seed: int = 0,
        key_size_bytes_max: int = KEY_SIZE_BYTES_MAX_DEFAULT,
        value_size_bytes_max: int = VALUE_SIZE_BYTES_MAX_DEFAULT,
    ) -> None:
        if size_bytes_max <= 0:
            raise ValueError(f"size_bytes_max must be positive, got {size_bytes_max}")
        self.size_bytes_max = size_bytes_max
        self.key_size_bytes_max = key_size_bytes_max
        self.value_size_bytes_max = value_size_bytes_max
        self._policy: EvictionPolicy = make_policy(eviction, size_bytes_max, seed)
        self._policy_name = eviction
        self._values: dict[bytes, bytes] = {}
        self._versions: dict[bytes, int] = {}
        self._expires_at_ms: dict[bytes, int] = {}
        self._ttl_keys: list[bytes] = []
        self._ttl_slot: dict[bytes, int] = {}
        self._expire_cursor = 0
        self._used_bytes = 0
        self._version_last = 0
        # Counters.
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._gets = 0
        self._puts = 0
        self._deletes = 0
        self._expires = 0
        self._ttls = 0

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes, now_ms: int) -> bytes | None:
        """The live value of ``key``, or None. An expired entry is removed and counts as a miss."""
        self._gets += 1
        value = self._values.get(key)
        if value is None or self._expired(key, now_ms):
            self._misses += 1
            return None
        self._hits += 1
        self._policy.access(key)
        return value

    def contains(self, key: bytes, now_ms: int) -> bool:
        """Whether ``key`` holds a live value. Not a lookup: touches no counter and no recency."""
        return key in self._values and not self._expired(key, now_ms)

    def version(self, key: bytes, now_ms: int) -> int | None:
        """The version of the live entry at ``key``, or None."""
        if key not in self._values or self._expired(key, now_ms):
            return None
        return self._versions[key]

    def ttl_ms(self, key: bytes, now_ms: int) -> int:
        """Milliseconds until ``key`` expires; ``TTL_PERSISTENT`` without a TTL, ``TTL_MISSING``
        when there is no live entry."""
        self._ttls += 1
        if key not in self._values or self._expired(key, now_ms):
            return TTL_MISSING
        expires_at_ms = self._expires_at_ms.get(key)
        if expires_at_ms is None:
            return TTL_PERSISTENT
        return expires_at_ms - now_ms

    def expires_at_ms(self, key: bytes, now_ms: int) -> int | None:
        """The absolute expiry of the live entry at ``key``, or None (no entry, or no TTL)."""
        if key not in self._values or self._expired(key, now_ms):
            return None
        return self._expires_at_ms.get(key)

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: bytes,
        value: bytes,
        now_ms: int,
        ttl_ms: int | None = None,
        *,
        keep_ttl: bool = False,
        version: int | None = None,
    ) -> int:
        """Write ``key`` = ``value`` and return the entry's version.

        ``ttl_ms`` sets a TTL (must be > 0); None writes a persistent entry unless ``keep_ttl``
        keeps the TTL of the entry being overwritten. Evicts by policy until the limit holds; the
        entry just written is never the victim. Raises ``KeyTooLarge``, ``ValueTooLarge`` or
        ``EntryTooLarge`` and leaves the store unchanged.
        """
        if len(key) > self.key_size_bytes_max:
            raise KeyTooLarge(f"key is {len(key)} bytes; the maximum is {self.key_size_bytes_max}")
        if len(value) > self.value_size_bytes_max:
            raise ValueTooLarge(
                f"value is {len(value)} bytes; the maximum is {self.value_size_bytes_max}"
            )
        if ttl_ms is not None and ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        weight = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if weight > self.size_bytes_max:
            raise EntryTooLarge(
                f"entry needs {weight} bytes (key + value + {ENTRY_OVERHEAD_BYTES} overhead); "
                f"the memory limit is {self.size_bytes_max}"
            )
        self._puts += 1
        old = self._values.get(key)
        if old is not None and self._expired(key, now_ms):
            old = None
        if old is None:
            self._policy.insert(key, weight)
        else:
            self._used_bytes -= len(key) + len(old) + ENTRY_OVERHEAD_BYTES
            self._policy.update(key, weight)
        self._values[key] = value
        self._used_bytes += weight
        if version is None:
            self._version_last += 1
            version = self._version_last
        self._versions[key] = version
        if ttl_ms is not None:
            self._set_expiry(key, now_ms + ttl_ms)
        elif not (keep_ttl and old is not None):
            self._clear_expiry(key)
        self._evict_to_limit(protect=key)
        return version

    def delete(self, key: bytes, now_ms: int) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        self._deletes += 1
        if key not in self._values or self._expired(key, now_ms):
            return False
        self._policy.remove(key)
        self._drop(key)
        return True

    def expire(self, key: bytes, ttl_ms: int | None, now_ms: int) -> bool:
        """Set (``ttl_ms`` > 0) or clear (None) the TTL of a live entry. ``ttl_ms`` <= 0 deletes
        the entry at once, as Redis' EXPIRE does. True when a live entry was found."""
        self._expires += 1
        if key not in self._values or self._expired(key, now_ms):
            return False
        if ttl_ms is None:
            self._clear_expiry(key)
        elif ttl_ms <= 0:
            self._policy.remove(key)
            self._drop(key)
        else:
            self._set_expiry(key, now_ms + ttl_ms)
        return True

    def flush(self) -> None:
        """Remove every entry. Counters are kept."""
        for key in list(self._values):
            self._policy.remove(key)
        self._values.clear()
        self._versions.clear()
        self._expires_at_ms.clear()
        self._ttl_keys.clear()
        self._ttl_slot.clear()
        self._expire_cursor = 0
        self._used_bytes = 0

    # -- active expiry -----------------------------------------------------------------------

    def expire_tick(self, now_ms: int, keys_max: int = EXPIRE_TICK_KEYS_MAX) -> int:
        """One bounded active-expiry cycle; returns how many entries expired.

        Walks the keys that have a TTL from a cursor that persists between ticks, in batches of
        ``EXPIRE_BATCH_KEYS``. Another batch runs only while the last one found more than
        ``EXPIRE_REPEAT_RATIO`` expired and fewer than ``keys_max`` keys were examined, so a tick's
        work is bounded whatever the keyspace holds, and a sweep of the whole TTL set completes
        every ``len(ttl keys) / EXPIRE_BATCH_KEYS`` ticks at least.
        """
        examined = 0
        expired_total = 0
        ttl_keys = self._ttl_keys
        while ttl_keys and examined < keys_max:
            expired = 0
            batch = min(EXPIRE_BATCH_KEYS, len(ttl_keys), keys_max - examined)
            for _ in range(batch):
                if not ttl_keys:
                    break
                if self._expire_cursor >= len(ttl_keys):
                    self._expire_cursor = 0
                key = ttl_keys[self._expire_cursor]
                examined += 1
                if self._expires_at_ms[key] <= now_ms:
                    # The last key moves into this slot: examine the slot again next.
                    self._policy.remove(key)
                    self._drop(key)
                    self._expirations += 1
                    expired += 1
                else:
                    self._expire_cursor += 1
            expired_total += expired
            if expired <= batch * EXPIRE_REPEAT_RATIO:
                break
        return expired_total

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        return StoreStats(
            keys=len(self._values),
            used_bytes=self._used_bytes,
            size_bytes_max=self.size_bytes_max,
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            gets=self._gets,
            puts=self._puts,
            deletes=self._deletes,
            expires=self._expires,
            ttls=self._ttls,
            eviction_policy=self._policy_name,
        )

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    def __len__(self) -> int:
        """Entries held, including expired ones not yet collected."""
        return len(self._values)

    # -- internals ---------------------------------------------------------------------------

    def _expired(self, key: bytes, now_ms: int) -> bool:
        """True when ``key`` has expired; the entry is then removed (lazy expiry)."""
        expires_at_ms = self._expires_at_ms.get(key)
        if expires_at_ms is None or expires_at_ms > now_ms:
            return False
        self._policy.remove(key)
        self._drop(key)
        self._expirations += 1
        return True

    def _evict_to_limit(self, protect: bytes) -> None:
        while self._used_bytes > self.size_bytes_max:
            victim = self._policy.evict(protect)
            self._drop(victim)
            self._evictions += 1

    def _drop(self, key: bytes) -> None:
        """Forget ``key`` in the store's own maps (the caller has told the policy)."""
        value = self._values.pop(key)
        del self._versions[key]
        self._used_bytes -= len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        self._clear_expiry(key)

    def _set_expiry(self, key: bytes, expires_at_ms: int) -> None:
        if key not in self._expires_at_ms:
            self._ttl_slot[key] = len(self._ttl_keys)
            self._ttl_keys.append(key)
        self._expires_at_ms[key] = expires_at_ms

    def _clear_expiry(self, key: bytes) -> None:
        if self._expires_at_ms.pop(key, None) is None:
            return
        slot = self._ttl_slot.pop(key)
        last = self._ttl_keys.pop()
        if last != key:
            self._ttl_keys[slot] = last
            self._ttl_slot[last] = slot
