"""The in-memory store every node runs: GET / PUT / DEL / EXPIRE / TTL under a byte limit.

Pure: no I/O and no clock of its own. Every call takes ``now_ms``, wall-clock milliseconds since
the Unix epoch, because an expiry is an absolute wall-clock instant that travels with the entry.
No method awaits or blocks, so a Trio node calls the store between two checkpoints and needs no
lock.

Layout (docs/design.md, "Store"). The keyspace is split into shards by ``hash(key)``: the hash
CPython caches in every bytes object and that the dict lookup needs anyway, so choosing a shard
costs one mask (a CRC16 bucket would cost ~170 ns per request). Sharding bounds pauses: CPython
grows a dict by rehashing all of it at once, which takes ~60 ms at a million entries; a shard
holds at most about ``SHARD_SIZE_BYTES_TARGET / ENTRY_OVERHEAD_BYTES`` entries, so no single resize
costs more than a few milliseconds whatever the total. Shard membership is process-local (string
hashes are randomised per process) and is never sent anywhere.

Within a shard an entry is spread over dicts whose keys and values are bytes and ints only, which
CPython's cyclic collector never tracks:

- ``values``: key -> value
- ``versions``: key -> version (the replication layer's hybrid-logical-clock stamp, or a local
  counter when the caller gives none)
- ``expires_at_ms``: key -> absolute expiry, only for keys that have a TTL
- ``ttl_keys`` / ``ttl_index``: the keys with a TTL as a dense list plus each key's index, so the
  active expiry cycle can walk them with a cursor and removal is a swap with the last slot.

Each shard has its own eviction policy instance sized for its share of the limit; the limit itself
is global. Over the limit, the store evicts from the shard it just wrote to (an approximation of a
global policy that is exact per shard, like memcached's per-class LRUs), and from the other shards
in turn once that shard holds only the entry just written.

Accounting: an entry costs ``len(key) + len(value) + entry_overhead_bytes``, where
``entry_overhead_bytes`` is ``ENTRY_OVERHEAD_BYTES`` (the store's own maps) plus the policy's
``entry_metadata_bytes``, plus ``TTL_OVERHEAD_BYTES`` while it has a TTL; state a policy keeps for
keys it no longer tracks (S3-FIFO's ghosts) is charged as the policy's ``extra_bytes``. The
constants are resident bytes measured under churn, calibrated against the RSS of a real node
(``benchmarks/memory_fill.py``, docs/benchmarks.md "Memory against the limit"). ``used_bytes``
never exceeds ``size_bytes_max`` after a call returns: a change that cannot fit (an entry, or an
entry plus its TTL, larger than the limit) raises ``EntryTooLarge`` before anything changes.

``Store.check_invariants()`` recomputes all of this from scratch (O(n): for tests and the simulator,
never the serving path) and raises ``InvariantViolation`` on the first inconsistency.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass

from ..errors import EntryTooLarge, InvariantViolation, KeyTooLarge, ValueTooLarge
from ..limits import KEY_SIZE_BYTES_MAX, VALUE_SIZE_BYTES_MAX
from ..placement import BUCKET_COUNT, bucket_of
from .eviction import EvictionPolicy, make_policy
from .summaries import DIGEST_MASK, BucketSummaries, entry_digest

#: Per-entry resident bytes the store itself adds to key and value (the eviction policy's per-key
#: metadata, ``entry_metadata_bytes``, comes on top): the key and value objects' headers and
#: allocator rounding, the slots of ``values`` and ``versions``, and the version int.
#:
#: Measured, not estimated. A dict that keeps taking inserts and deletes (a full cache) settles at
#: a table of 3-6 slots per live key: CPython resizes only when the slots run out, to the
#: smallest power of two above 3 x the live keys. One slot costs 24 bytes of entry plus a 4-byte
#: index, so a dict costs 60-120 bytes per key under churn, not the 30-40 a freshly built one
#: shows. The constants charge the upper part of that range, and are checked against allocation
#: counts after churn (tests/test_store.py) and against the RSS of a real node
#: (benchmarks/memory_fill.py).
ENTRY_OVERHEAD_BYTES = 360
#: Extra resident bytes while an entry has a TTL: its slots in ``expires_at_ms`` and
#: ``ttl_index``, its place in ``ttl_keys``, and the expiry int. Measured the same way.
TTL_OVERHEAD_BYTES = 300

#: Extra resident bytes per entry while the store tracks buckets (``track_buckets``): the key's
#: slot in its bucket's set of keys (the per-bucket index). A set under churn resizes to the
#: smallest power of two above 4 x its live keys once live plus deleted slots fill 60 %, so it
#: keeps 4-8 slots of 16 bytes per live key. Measured with tracemalloc, largest value over 2 x N
#: random replacements (``benchmarks/bucket_index_memory.py``): 100.7 bytes/entry at 1M
#: entries (61 a bucket), 123.2 at 200k (12 a bucket, set headers included); charged 128, the
#: upper part as for ``ENTRY_OVERHEAD_BYTES``. Not charged: the set headers (216 bytes per
#: bucket that ever held a key, at most 3.5 MiB) which dominate below ~100k entries, the
#: summaries (257 KiB) and the evicted stamps (128 KiB): fixed per node, whatever the data.
BUCKET_INDEX_OVERHEAD_BYTES = 128

#: ``check_invariants`` checks the bucket tracking (O(keys) digests plus a walk of the 16384
#: buckets) on its first call and once in this many.
BUCKET_CHECK_EVERY = 16

#: Most shards a store may have (a power of two): far more than any limit needs.
SHARD_COUNT_MAX = 16384

#: A shard's share of the limit. Bounds the largest dict (and so the longest rehash) to about
#: 8 MiB / 256 B = 32768 entries, about 2 ms on this machine.
SHARD_SIZE_BYTES_TARGET = 8 * 1024 * 1024

#: Default caps (``gossipcache.limits``). A store may be built with lower ones, never higher.
KEY_SIZE_BYTES_MAX_DEFAULT = KEY_SIZE_BYTES_MAX
VALUE_SIZE_BYTES_MAX_DEFAULT = VALUE_SIZE_BYTES_MAX

#: TTL query results for keys without a remaining time, as Redis reports them.
TTL_MISSING = -2
TTL_PERSISTENT = -1

#: Active expiry: keys examined per batch, and the share of expired keys in a batch above which
#: the cycle runs another batch (Redis' adaptive cycle uses 20 keys and 25 %).
EXPIRE_BATCH_KEYS = 20
EXPIRE_REPEAT_RATIO = 0.25
#: Most keys one ``expire_tick`` may examine: bounds the pause one tick can cause.
EXPIRE_TICK_KEYS_MAX = 1000

#: Entries one ``reclaim_tick`` frees, at least (it frees whole shards: one at the least). A
#: flush swaps in empty shards at once and leaves the old ones to be freed over later ticks:
#: freeing a million entries in one go costs 35-160 ms of the loop, a full shard 2-20 ms.
RECLAIM_TICK_ENTRIES_MAX = 32768


class _Tombstone(bytes):
    """The type of ``TOMBSTONE``: an empty bytes object that is not ``b""``."""

    __slots__ = ()


#: The value of a deleted entry that replication keeps for a while (a tombstone): it holds the
#: delete's version, so an older write arriving late (a hint, a repair) cannot bring the value
#: back. Compared by identity; it weighs 0 bytes of value, its key and overhead are charged.
TOMBSTONE = _Tombstone()

#: ``apply`` outcomes: a version at least as new was held (nothing changed); written where no
#: live value was; written over a live value.
APPLY_STALE = 0
APPLY_NEW = 1
APPLY_REPLACED = 2

#: Evictions remembered for ``take_evicted`` (replication tells a key's other owners); past it
#: the oldest are forgotten and counted (``evictions_unreported``).
EVICTED_RECORD_MAX = 4096


def shard_count_for(size_bytes_max: int) -> int:
    """Shards for a limit: the smallest power of two giving each at most the target share."""
    count = 1
    while count < SHARD_COUNT_MAX and size_bytes_max > count * SHARD_SIZE_BYTES_TARGET:
        count *= 2
    return count


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
    #: Tombstones held (replicated deletes and expiries), not counted in ``keys``.
    tombstones: int = 0
    #: Buckets whose summary the drift check (``verify_summaries_step``) found wrong and fixed.
    summary_drift_buckets: int = 0

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class _Shard:
    """One shard's maps and policy. Plain containers; the Store keeps them consistent."""

    __slots__ = ("values", "versions", "expires_at_ms", "ttl_keys", "ttl_index", "policy")

    def __init__(self, policy: EvictionPolicy) -> None:
        self.values: dict[bytes, bytes] = {}
        self.versions: dict[bytes, int] = {}
        self.expires_at_ms: dict[bytes, int] = {}
        self.ttl_keys: list[bytes] = []
        self.ttl_index: dict[bytes, int] = {}
        self.policy = policy


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
        shard_count: int | None = None,
        expired_tombstone_ms: int | None = None,
        record_evictions: bool = False,
        track_buckets: bool = False,
    ) -> None:
        """``shard_count`` (a power of two) overrides ``shard_count_for(size_bytes_max)``.

        Replication sets the last two. ``expired_tombstone_ms``: an entry that expires turns
        into a ``TOMBSTONE`` of the same version, kept that long past its expiry, so an older
        write delivered late cannot take its place (None: expired entries just go).
        ``record_evictions``: remember ``(key, version)`` of evicted entries for
        ``take_evicted``. ``track_buckets``: keep, for anti-entropy, per-bucket summaries of
        every held entry (``summaries``), the keys of each bucket (``bucket_entries``) and the
        newest value evicted from each (``evicted_stamp``); see "Bucket tracking" below."""
        if size_bytes_max <= 0:
            raise ValueError(f"size_bytes_max must be positive, got {size_bytes_max}")
        self.size_bytes_max = size_bytes_max
        self.key_size_bytes_max = key_size_bytes_max
        self.value_size_bytes_max = value_size_bytes_max
        self.eviction_policy = eviction
        if shard_count is None:
            shard_count = shard_count_for(size_bytes_max)
        if not 1 <= shard_count <= SHARD_COUNT_MAX or shard_count & (shard_count - 1):
            raise ValueError(f"shard_count must be a power of two <= {SHARD_COUNT_MAX}")
        share_bytes = -(-size_bytes_max // shard_count)
        # What a fresh set of shards is made of: construction and ``flush`` build them alike.
        self._shard_share_bytes = share_bytes
        self._seed = seed
        self._shards = self._new_shards(shard_count)
        #: Shards a flush replaced, freed a few per ``reclaim_tick`` (bounded work per call).
        self._flushed_shards: deque[_Shard] = deque()
        #: Keys with an expiry and the sum of their expiry instants: INFO's ``expires`` and
        #: ``avg_ttl`` in O(1) (``expiry_summary``), kept up to date where an expiry changes.
        self._keys_with_ttl = 0
        self._expires_at_ms_sum = 0
        self._shard_mask = shard_count - 1
        #: What an entry costs beyond its key and value bytes (without a TTL).
        self.entry_overhead_bytes = (
            ENTRY_OVERHEAD_BYTES + self._shards[0].policy.entry_metadata_bytes
        )
        # Bucket tracking (anti-entropy). Invariant, after every call: ``summaries`` equals
        # ``rebuild`` of every held entry (values and tombstones) and ``_bucket_keys[b]`` holds
        # exactly the held keys of bucket ``b``.
        #: Per-bucket sums of the held entries' digests, or None when not tracking.
        self.summaries: BucketSummaries | None = BucketSummaries() if track_buckets else None
        #: Per bucket, the set of its held keys; created on a bucket's first key and kept
        #: (at most ``BUCKET_COUNT`` sets, ~3.5 MiB once every bucket has had a key).
        self._bucket_keys: list[set[bytes] | None] = [None] * BUCKET_COUNT if track_buckets else []
        #: Per bucket, the largest HLC stamp (``version >> 64``) of a value this store evicted.
        self._evicted_stamps = array("Q", bytes(8 * BUCKET_COUNT)) if track_buckets else None
        self._verify_bucket = 0  # where the next ``verify_summaries_step`` resumes
        self._summary_drift_buckets = 0
        self._bucket_checks = 0  # calls of ``_check_bucket_tracking``
        if track_buckets:
            self.entry_overhead_bytes += BUCKET_INDEX_OVERHEAD_BYTES
        # Entries up to this weight fit even with a TTL: put() checks the exact sum only above.
        self._entry_bytes_max_without_ttl = size_bytes_max - TTL_OVERHEAD_BYTES
        self._keys = 0
        self._tombstones = 0
        self._used_bytes = 0
        self._version_last = 0
        self._expired_tombstone_ms = expired_tombstone_ms
        self._evicted: deque[tuple[bytes, int]] | None = deque() if record_evictions else None
        self.evictions_unreported = 0
        self._expire_shard = 0  # active expiry: shard and slot where the next tick resumes
        self._expire_cursor = 0
        self._evict_shard = 0  # where eviction continues once the written shard is exhausted
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

    def _new_shards(self, shard_count: int) -> list[_Shard]:
        eviction, share_bytes, seed = self.eviction_policy, self._shard_share_bytes, self._seed
        return [
            _Shard(make_policy(eviction, share_bytes, seed + index)) for index in range(shard_count)
        ]

    @property
    def shard_count(self) -> int:
        return self._shard_mask + 1

    def entry_bytes(self, key: bytes, value: bytes, with_ttl: bool) -> int:
        """What an entry of ``key`` and ``value`` is charged."""
        ttl_bytes = TTL_OVERHEAD_BYTES if with_ttl else 0
        return len(key) + len(value) + self.entry_overhead_bytes + ttl_bytes

    def _shard(self, key: bytes) -> _Shard:
        return self._shards[hash(key) & self._shard_mask]

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes, now_ms: int) -> bytes | None:
        """The live value of ``key``, or None. An expired entry is removed and counts as a miss."""
        self._gets += 1
        shard = self._shards[hash(key) & self._shard_mask]
        value = shard.values.get(key)
        if (
            value is None
            or (key in shard.expires_at_ms and self._expired(shard, key, now_ms))
            or value is TOMBSTONE
        ):
            self._misses += 1
            return None
        self._hits += 1
        shard.policy.access(key)
        return value

    def contains(self, key: bytes, now_ms: int) -> bool:
        """Whether ``key`` holds a live value. Not a lookup: touches no counter and no recency."""
        shard = self._shard(key)
        return self._live(shard, key, now_ms)

    def version(self, key: bytes, now_ms: int) -> int | None:
        """The version of the live entry at ``key``, or None."""
        shard = self._shard(key)
        if not self._live(shard, key, now_ms):
            return None
        return shard.versions[key]

    def ttl_ms(self, key: bytes, now_ms: int) -> int:
        """Milliseconds until ``key`` expires; ``TTL_PERSISTENT`` without a TTL, ``TTL_MISSING``
        when there is no live entry."""
        self._ttls += 1
        shard = self._shard(key)
        if not self._live(shard, key, now_ms):
            return TTL_MISSING
        expires_at_ms = shard.expires_at_ms.get(key)
        if expires_at_ms is None:
            return TTL_PERSISTENT
        return expires_at_ms - now_ms

    def expires_at_ms(self, key: bytes, now_ms: int) -> int | None:
        """The absolute expiry of the live entry at ``key``, or None (no entry, or no TTL)."""
        shard = self._shard(key)
        if not self._live(shard, key, now_ms):
            return None
        return shard.expires_at_ms.get(key)

    def lookup(self, key: bytes, now_ms: int, *, touch: bool = False) -> tuple | None:
        """What replication compares: None when nothing is held, else ``(value, version,
        expires_at_ms)`` with ``value`` None for a tombstone and ``expires_at_ms`` None for a
        persistent value (a tombstone's is when it will be collected). A value that expired
        meanwhile is turned into its tombstone first. Counts nothing; ``touch`` records an
        access with the eviction policy (a read served for a coordinator)."""
        shard = self._shards[hash(key) & self._shard_mask]
        value = shard.values.get(key)
        if value is None:
            return None
        if key in shard.expires_at_ms and self._expired(shard, key, now_ms):
            value = shard.values.get(key)
            if value is None:
                return None
        if value is TOMBSTONE:
            return None, shard.versions[key], shard.expires_at_ms.get(key)
        if touch:
            shard.policy.access(key)
        return value, shard.versions[key], shard.expires_at_ms.get(key)

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
        shard = self._shards[hash(key) & self._shard_mask]
        values = shard.values
        expires = shard.expires_at_ms
        old = values.get(key)
        if old is not None and key in expires and self._expired(shard, key, now_ms):
            old = values.get(key)  # None, or the tombstone it turned into
        if old is TOMBSTONE:
            self._tombstones -= 1
        keeps_ttl = keep_ttl and old is not None and old is not TOMBSTONE and key in expires
        weight = len(key) + len(value) + self.entry_overhead_bytes
        if weight > self._entry_bytes_max_without_ttl:
            self._check_fits(weight, ttl_ms is not None or keeps_ttl)
        summaries = self.summaries
        if summaries is not None:
            bucket = bucket_of(key)
            old_digest = self._digest_held(shard, key)
        self._puts += 1
        if old is None:
            policy = shard.policy
            extra_bytes_before = policy.extra_bytes
            policy.insert(key, weight)  # may forget a ghost: extra_bytes shrinks
            self._keys += 1
            self._used_bytes += weight + policy.extra_bytes - extra_bytes_before
        else:
            self._used_bytes += len(value) - len(old)
            shard.policy.update(key, weight)
        values[key] = value
        if version is None:
            self._version_last += 1
            version = self._version_last
        shard.versions[key] = version
        if ttl_ms is not None:
            self._set_expiry(shard, key, now_ms + ttl_ms)
        elif not keeps_ttl and key in expires:
            self._clear_expiry(shard, key)
        if summaries is not None:
            self._track(shard, key, bucket, old_digest)
        if self._used_bytes > self.size_bytes_max:
            self._evict_to_limit(shard, key)
        return version

    def delete(self, key: bytes, now_ms: int) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        self._deletes += 1
        shard = self._shard(key)
        if not self._live(shard, key, now_ms):
            return False
        tracking = self._track_begin(shard, key)
        shard.policy.remove(key)
        self._drop(shard, key)
        self._track_end(shard, key, tracking)
        return True

    def expire(self, key: bytes, ttl_ms: int | None, now_ms: int) -> bool:
        """Set (``ttl_ms`` > 0) or clear (None) the TTL of a live entry. ``ttl_ms`` <= 0 deletes
        the entry at once, as Redis' EXPIRE does. True when a live entry was found.

        Giving a persistent entry a TTL costs ``TTL_OVERHEAD_BYTES``, which may evict others (never
        the entry itself). When the entry with its TTL would not fit in the limit even alone,
        raises ``EntryTooLarge`` and changes nothing, as ``put`` with that TTL would.
        """
        self._expires += 1
        shard = self._shard(key)
        if not self._live(shard, key, now_ms):
            return False
        if ttl_ms is not None and ttl_ms > 0 and key not in shard.expires_at_ms:
            self._check_fits(len(key) + len(shard.values[key]) + self.entry_overhead_bytes, True)
        tracking = self._track_begin(shard, key)
        if ttl_ms is None:
            self._clear_expiry(shard, key)
        elif ttl_ms <= 0:
            shard.policy.remove(key)
            self._drop(shard, key)
        else:
            self._set_expiry(shard, key, now_ms + ttl_ms)
        self._track_end(shard, key, tracking)
        if self._used_bytes > self.size_bytes_max:
            self._evict_to_limit(shard, key)
        return True

    def check_sizes(self, key: bytes, value: bytes) -> None:
        """Raise what ``put`` would raise for sizes (``KeyTooLarge``, ``ValueTooLarge``,
        ``EntryTooLarge``): a coordinator checks before it sends a write anywhere."""
        if len(key) > self.key_size_bytes_max:
            raise KeyTooLarge(f"key is {len(key)} bytes; the maximum is {self.key_size_bytes_max}")
        if len(value) > self.value_size_bytes_max:
            raise ValueTooLarge(
                f"value is {len(value)} bytes; the maximum is {self.value_size_bytes_max}"
            )
        self._check_fits(len(key) + len(value) + self.entry_overhead_bytes, False)

    def count_lookup(self, hit: bool) -> None:
        """Count a lookup served elsewhere (a coordinated read) in the hit ratio."""
        self._gets += 1
        if hit:
            self._hits += 1
        else:
            self._misses += 1

    def apply(
        self,
        key: bytes,
        value: bytes | None,
        version: int,
        expires_at_ms: int | None,
        now_ms: int,
    ) -> int:
        """Write a replicated entry if ``version`` is newer than what is held (last writer
        wins); return ``APPLY_STALE``, ``APPLY_NEW`` or ``APPLY_REPLACED`` (over a live value).

        ``value`` None writes a tombstone collected at ``expires_at_ms`` (required). A value
        whose ``expires_at_ms`` has passed is never stored: it becomes its tombstone, as it
        would have had it arrived in time. Raises like ``put`` (sizes) and changes nothing then.
        """
        shard = self._shards[hash(key) & self._shard_mask]
        values = shard.values
        held = values.get(key)
        if held is not None and key in shard.expires_at_ms:
            self._expired(shard, key, now_ms)  # an expired value turns into its tombstone
            held = values.get(key)
        if held is not None and shard.versions[key] >= version:
            return APPLY_STALE
        replaced_live = held is not None and held is not TOMBSTONE
        # The summary moves once for the whole apply (``_write`` and the expiry change that
        # follows it are one change of the entry): the old digest now, the new one at the end.
        # Nothing below changes the store before a size check may raise.
        summaries = self.summaries
        if summaries is not None:
            bucket = bucket_of(key)
            old_digest = None
            if held is not None:
                old_digest = entry_digest(
                    key, shard.versions[key], shard.expires_at_ms.get(key), held is TOMBSTONE
                )
        if value is None or (expires_at_ms is not None and expires_at_ms <= now_ms):
            if value is not None:
                expires_at_ms += self._expired_tombstone_ms or 0
            if expires_at_ms is None:
                raise ValueError("a tombstone needs the instant it is collected")
            # The tombstone keeps the instant the write carries, whatever was held: replicas
            # that held different things must end with the same entry, or their summaries
            # would differ until it is collected (anti-entropy found this: a delete of an
            # expiring value was shortened on the replicas that held the value only).
            if len(key) > self.key_size_bytes_max:
                raise KeyTooLarge(
                    f"key is {len(key)} bytes; the maximum is {self.key_size_bytes_max}"
                )
            if expires_at_ms <= now_ms:
                # Nothing worth keeping: the older value goes, no tombstone stays.
                if held is not None:
                    if held is TOMBSTONE:
                        self._tombstones -= 1
                    shard.policy.remove(key)
                    self._drop(shard, key)
                    if summaries is not None:
                        self._track(shard, key, bucket, old_digest)
                return APPLY_REPLACED if replaced_live else APPLY_NEW
            self._check_fits(len(key) + self.entry_overhead_bytes, True)
            self._write(shard, key, TOMBSTONE, held, version)
            self._set_expiry(shard, key, expires_at_ms)
        else:
            if len(key) > self.key_size_bytes_max:
                raise KeyTooLarge(
                    f"key is {len(key)} bytes; the maximum is {self.key_size_bytes_max}"
                )
            if len(value) > self.value_size_bytes_max:
                raise ValueTooLarge(
                    f"value is {len(value)} bytes; the maximum is {self.value_size_bytes_max}"
                )
            weight = len(key) + len(value) + self.entry_overhead_bytes
            if weight > self._entry_bytes_max_without_ttl:  # as in put: the exact check is rare
                self._check_fits(weight, expires_at_ms is not None)
            self._write(shard, key, value, held, version)
            if expires_at_ms is not None:
                self._set_expiry(shard, key, expires_at_ms)
            elif key in shard.expires_at_ms:
                self._clear_expiry(shard, key)
        if summaries is not None:  # ``_track`` written out: both branches above hold the key
            new_digest = entry_digest(
                key, version, shard.expires_at_ms.get(key), shard.values[key] is TOMBSTONE
            )
            if old_digest is None:
                summaries.add(bucket, new_digest)
                self._index_add(bucket, key)
            else:
                summaries.replace(bucket, old_digest, new_digest)
        self._puts += 1
        if self._used_bytes > self.size_bytes_max:
            self._evict_to_limit(shard, key)
        return APPLY_REPLACED if replaced_live else APPLY_NEW

    def _write(self, shard: _Shard, key: bytes, value: bytes, held: bytes | None, version: int):
        """Put ``value`` (maybe ``TOMBSTONE``) with ``version`` in place of ``held``."""
        weight = len(key) + len(value) + self.entry_overhead_bytes
        if held is None:
            policy = shard.policy
            extra_bytes_before = policy.extra_bytes
            policy.insert(key, weight)
            self._keys += 1
            self._used_bytes += weight + policy.extra_bytes - extra_bytes_before
        else:
            self._used_bytes += len(value) - len(held)
            shard.policy.update(key, weight)
            if held is TOMBSTONE:
                self._tombstones -= 1
        if value is TOMBSTONE:
            self._tombstones += 1
        shard.values[key] = value
        shard.versions[key] = version

    def evict_version(self, key: bytes, version: int) -> bool:
        """Remove ``key`` if it holds exactly ``version`` (another owner evicted that write; a
        newer one stays). True when removed. Counted as an eviction, not reported again."""
        shard = self._shards[hash(key) & self._shard_mask]
        if shard.versions.get(key) != version or shard.values[key] is TOMBSTONE:
            return False
        if self.summaries is not None:
            self._untrack_evicted(shard, key)
        shard.policy.remove(key)
        self._drop(shard, key)
        self._evictions += 1
        return True

    def take_evicted(self) -> list[tuple[bytes, int]]:
        """``(key, version)`` of the values evicted since the last call, oldest first (empty
        unless built with ``record_evictions``)."""
        evicted = self._evicted
        if not evicted:
            return []
        taken = list(evicted)
        evicted.clear()
        return taken

    def flush(self) -> None:
        """Remove every entry. Counters are kept.

        O(shards), whatever the entries: empty shards replace the full ones, which wait in
        ``_flushed_shards`` and are freed by later ``reclaim_tick`` calls. Freeing them here
        would cost the loop time proportional to the keyspace."""
        self._flushed_shards.extend(shard for shard in self._shards if shard.values)
        self._shards = self._new_shards(len(self._shards))
        if self.summaries is not None:
            # Every entry went: empty summaries and index. The evicted stamps stay (a flush is
            # no eviction, and what was evicted before it must still not be copied back).
            self.summaries = BucketSummaries()
            self._bucket_keys = [None] * BUCKET_COUNT
        self._keys = 0
        self._tombstones = 0
        self._used_bytes = 0
        self._expire_cursor = 0
        self._keys_with_ttl = 0
        self._expires_at_ms_sum = 0

    def reclaim_tick(self, entries_max: int = RECLAIM_TICK_ENTRIES_MAX) -> int:
        """Free shards left by ``flush``, whole ones, until ``entries_max`` entries were freed
        (one shard at the least). Returns how many entries were freed. A shard holds a bounded
        number of entries (``SHARD_SIZE_BYTES_TARGET``), so the work per call is bounded."""
        freed = 0
        flushed = self._flushed_shards
        while flushed and (freed == 0 or freed + len(flushed[0].values) <= entries_max):
            freed += len(flushed.popleft().values)  # the last reference: freed here
        return freed

    @property
    def flushed_entries_pending(self) -> int:
        """Entries a flush removed that ``reclaim_tick`` has not freed yet. O(shards)."""
        return sum(len(shard.values) for shard in self._flushed_shards)

    # -- active expiry -----------------------------------------------------------------------

    def expire_tick(self, now_ms: int, keys_max: int = EXPIRE_TICK_KEYS_MAX) -> int:
        """One bounded active-expiry cycle; returns how many entries expired.

        Walks the keys that have a TTL, shard after shard, from a cursor that persists between
        ticks, in batches of ``EXPIRE_BATCH_KEYS``. Another batch runs only while the last one
        found more than ``EXPIRE_REPEAT_RATIO`` expired, and never past ``keys_max`` keys examined
        (empty shards passed over count as examined keys too), so a tick's work is bounded
        whatever the keyspace holds.
        """
        examined = 0
        expired_total = 0
        shards = self._shards
        while examined < keys_max:
            expired = 0
            batch = min(EXPIRE_BATCH_KEYS, keys_max - examined)
            for _ in range(batch):
                shard = shards[self._expire_shard]
                ttl_keys = shard.ttl_keys
                examined += 1
                if self._expire_cursor >= len(ttl_keys):
                    self._expire_shard = (self._expire_shard + 1) & self._shard_mask
                    self._expire_cursor = 0
                    continue
                key = ttl_keys[self._expire_cursor]
                if shard.expires_at_ms[key] <= now_ms:
                    if self._expire(shard, key):
                        self._expire_cursor += 1  # it stays, as a tombstone, in this slot
                    # Otherwise the last key moved into this slot: it is examined next.
                    expired += 1
                else:
                    self._expire_cursor += 1
            expired_total += expired
            if expired <= batch * EXPIRE_REPEAT_RATIO:
                break
        return expired_total

    # -- bucket tracking (anti-entropy) ------------------------------------------------------

    def bucket_entries(self, bucket: int, now_ms: int) -> list[tuple[bytes, int, int | None, bool]]:
        """``(key, version, expires_at_ms, tombstone)`` of every entry of ``bucket``, after
        expiring what is due in it (a value past its expiry becomes its tombstone, a tombstone
        past its instant goes), so the list is what the bucket holds at ``now_ms``. O(entries
        in the bucket). Empty when the store does not track buckets."""
        if self.summaries is None:
            return []
        keys = self._bucket_keys[bucket]
        if not keys:
            return []
        shards, mask = self._shards, self._shard_mask
        entries = []
        for key in list(keys):  # a copy: expiring below may remove keys from the set
            shard = shards[hash(key) & mask]
            expires_at_ms = shard.expires_at_ms.get(key)
            # A value's tombstone may itself be due already: expire until nothing is.
            while expires_at_ms is not None and expires_at_ms <= now_ms:
                if not self._expire(shard, key):
                    break
                expires_at_ms = shard.expires_at_ms.get(key)
            value = shard.values.get(key)
            if value is not None:
                entries.append((key, shard.versions[key], expires_at_ms, value is TOMBSTONE))
        return entries

    def bucket_key_count(self, bucket: int) -> int:
        """How many entries (values and tombstones, expired or not) ``bucket`` holds. O(1)."""
        keys = self._bucket_keys[bucket] if self.summaries is not None else None
        return len(keys) if keys else 0

    def evicted_stamp(self, bucket: int) -> int:
        """The largest HLC stamp (``version >> 64``) of a value this store evicted from
        ``bucket`` (``_evict_one``, ``evict_version``), 0 if none: anti-entropy never copies back
        a key whose version is not newer. 0 when the store does not track buckets."""
        stamps = self._evicted_stamps
        return stamps[bucket] if stamps is not None else 0

    def verify_summaries_step(self, now_ms: int, entries_max: int) -> int:
        """One bounded step of the drift check: recompute the summaries of the next buckets
        (round-robin, resuming where the last step stopped) from their entries, and fix and
        count (``summary_drift_buckets``) any that differ. Returns the entries hashed.

        Stops once ``entries_max`` entries were hashed, counting a visited bucket as at least
        one so that a step over empty buckets is bounded too; a bucket is always done whole
        (the first one even when it holds more). 0 when the store does not track buckets."""
        summaries = self.summaries
        if summaries is None:
            return 0
        hashed = 0
        work = 0
        bucket_keys = self._bucket_keys
        while work < entries_max:
            bucket = self._verify_bucket
            self._verify_bucket = (bucket + 1) % BUCKET_COUNT
            work += 1
            if not bucket_keys[bucket]:
                # Most buckets of a small node are empty: no call into bucket_entries for them
                # (this path made a replicated simulation ~1.7x slower before it existed).
                if summaries.bucket_count(bucket) or summaries.bucket_sum(bucket):
                    summaries.set_bucket(bucket, 0, 0)
                    self._summary_drift_buckets += 1
                continue
            entries = self.bucket_entries(bucket, now_ms)
            bucket_sum = sum(entry_digest(*entry) for entry in entries) & DIGEST_MASK
            count = len(entries)
            if (bucket_sum, count) != (
                summaries.bucket_sum(bucket),
                summaries.bucket_count(bucket),
            ):
                summaries.set_bucket(bucket, bucket_sum, count)
                self._summary_drift_buckets += 1
            hashed += count
            work += count - 1 if count else 0
        return hashed

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> StoreStats:
        return StoreStats(
            keys=self._keys - self._tombstones,
            tombstones=self._tombstones,
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
            eviction_policy=self.eviction_policy,
            summary_drift_buckets=self._summary_drift_buckets,
        )

    def expiry_summary(self, now_ms: int) -> tuple[int, int]:
        """``(keys with an expiry, their average remaining ms)``, as INFO's ``expires`` and
        ``avg_ttl`` report them (0 without such keys). O(1): kept as the expiries change.
        Entries expired but not yet collected count, as in Redis, with no time remaining."""
        count = self._keys_with_ttl
        if not count:
            return 0, 0
        return count, max(0, self._expires_at_ms_sum // count - now_ms)

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    def __len__(self) -> int:
        """Entries held, including expired ones not yet collected."""
        return self._keys

    def holds(self, key: bytes) -> bool:
        """Whether an entry for ``key`` is held at all, expired or not. For tests and repair."""
        return key in self._shard(key).values

    def check_invariants(self) -> None:
        """Recompute the bookkeeping from the entries; raise ``InvariantViolation`` if it differs.

        Checks, shard by shard: ``values`` and ``versions`` hold the same keys, each in the shard
        its hash selects; every key with an expiry is held and sits exactly once in ``ttl_keys``
        at the slot ``ttl_index`` gives; the policy tracks exactly the shard's keys. Then that the
        key count and ``used_bytes`` equal the sums of the entries' charges, and that
        ``used_bytes`` is within ``size_bytes_max``. O(n): for tests and the simulator only.
        """
        keys = 0
        used_bytes = 0
        for index, shard in enumerate(self._shards):
            values = shard.values
            if values.keys() != shard.versions.keys():
                raise InvariantViolation(
                    f"shard {index}: values and versions hold different keys: only in values "
                    f"{sorted(values.keys() - shard.versions.keys())!r}, only in versions "
                    f"{sorted(shard.versions.keys() - values.keys())!r}"
                )
            for key, value in values.items():
                if hash(key) & self._shard_mask != index:
                    raise InvariantViolation(f"shard {index}: key {key!r} belongs to another shard")
                used_bytes += len(key) + len(value) + self.entry_overhead_bytes
            keys += len(values)
            expires = shard.expires_at_ms
            if not expires.keys() <= values.keys():
                raise InvariantViolation(
                    f"shard {index}: expiry for keys not held: "
                    f"{sorted(expires.keys() - values.keys())!r}"
                )
            used_bytes += len(expires) * TTL_OVERHEAD_BYTES
            if len(shard.ttl_keys) != len(expires) or shard.ttl_index.keys() != expires.keys():
                raise InvariantViolation(
                    f"shard {index}: ttl_keys ({len(shard.ttl_keys)} slots) / ttl_index "
                    f"({len(shard.ttl_index)} keys) disagree with expires_at_ms "
                    f"({len(expires)} keys)"
                )
            ttl_keys = shard.ttl_keys
            for key, slot in shard.ttl_index.items():
                # Same sizes and distinct keys each at its own slot: every TTL key exactly once.
                found = ttl_keys[slot] if 0 <= slot < len(ttl_keys) else None
                if found != key:
                    raise InvariantViolation(
                        f"shard {index}: ttl_index puts {key!r} at slot {slot}, "
                        f"where ttl_keys holds {found!r}"
                    )
            policy = shard.policy
            used_bytes += policy.extra_bytes
            if len(policy) != len(values):
                raise InvariantViolation(
                    f"shard {index}: the {self.eviction_policy} policy tracks {len(policy)} keys, "
                    f"the shard holds {len(values)}"
                )
            for key in values:
                if key not in policy:
                    raise InvariantViolation(
                        f"shard {index}: the {self.eviction_policy} policy does not track {key!r}"
                    )
        if keys != self._keys:
            raise InvariantViolation(f"key count is {self._keys}, the shards hold {keys}")
        tombstones = sum(
            1 for shard in self._shards for value in shard.values.values() if value is TOMBSTONE
        )
        if tombstones != self._tombstones:
            raise InvariantViolation(
                f"tombstone count is {self._tombstones}, the shards hold {tombstones}"
            )
        keys_with_ttl = sum(len(shard.expires_at_ms) for shard in self._shards)
        expires_at_ms_sum = sum(sum(shard.expires_at_ms.values()) for shard in self._shards)
        if (keys_with_ttl, expires_at_ms_sum) != (self._keys_with_ttl, self._expires_at_ms_sum):
            raise InvariantViolation(
                f"expiry summary is {self._keys_with_ttl} keys summing to "
                f"{self._expires_at_ms_sum} ms, the shards hold {keys_with_ttl} summing to "
                f"{expires_at_ms_sum}"
            )
        if self.summaries is not None:
            self._check_bucket_tracking()
        if used_bytes != self._used_bytes:
            raise InvariantViolation(
                f"used_bytes is {self._used_bytes}, the entries' charges sum to {used_bytes}"
            )
        if used_bytes > self.size_bytes_max:
            raise InvariantViolation(
                f"used_bytes {used_bytes} exceeds size_bytes_max {self.size_bytes_max}"
            )

    def _check_bucket_tracking(self) -> None:
        """``check_invariants``' part for bucket tracking: the summaries equal the sums of every
        held entry's digest, and the key index holds exactly the held keys, each in its bucket.

        O(keys + buckets), a fraction of the calls (below). Per bucket that
        holds entries, sum and count must match; the summary's total count and root must equal
        the entries' (so no other bucket holds anything); and every held key must sit in its
        bucket's set while the sets hold as many keys as the store (so they hold no others)."""
        # On the first call and every ``BUCKET_CHECK_EVERY``th after: the simulator calls this
        # after every step, and hashing every entry each time made its tests ~1.7x slower. A
        # wrong summary or index entry is never undone by later steps, so it is still caught,
        # a few steps later.
        self._bucket_checks += 1
        if self._bucket_checks % BUCKET_CHECK_EVERY != 1:
            return
        summaries = self.summaries
        bucket_keys = self._bucket_keys
        sums: dict[int, int] = {}
        counts: dict[int, int] = {}
        for shard in self._shards:
            for key, value in shard.values.items():
                bucket = bucket_of(key)
                digest = entry_digest(
                    key, shard.versions[key], shard.expires_at_ms.get(key), value is TOMBSTONE
                )
                sums[bucket] = sums.get(bucket, 0) + digest
                counts[bucket] = counts.get(bucket, 0) + 1
                keys = bucket_keys[bucket]
                if keys is None or key not in keys:
                    raise InvariantViolation(f"bucket index misses {key!r} (bucket {bucket})")
        for bucket, total in sums.items():
            found = (summaries.bucket_sum(bucket), summaries.bucket_count(bucket))
            if found != (total & DIGEST_MASK, counts[bucket]):
                raise InvariantViolation(
                    f"bucket {bucket}: summary (sum, count) {found}, the entries give "
                    f"{(total & DIGEST_MASK, counts[bucket])}"
                )
        if summaries.root() != sum(sums.values()) & DIGEST_MASK:
            raise InvariantViolation(
                f"summaries root {summaries.root()}, the entries give "
                f"{sum(sums.values()) & DIGEST_MASK}: a bucket without entries has a sum"
            )
        if summaries.entry_count() != self._keys:
            raise InvariantViolation(
                f"summaries count {summaries.entry_count()} entries with root {summaries.root()}, "
                f"the store holds {self._keys} (root {sum(sums.values()) & DIGEST_MASK})"
            )
        indexed = sum(map(len, filter(None, bucket_keys)))
        if indexed != self._keys:
            raise InvariantViolation(
                f"bucket index lists {indexed} keys, the store holds {self._keys}"
            )

    # -- internals ---------------------------------------------------------------------------

    def _digest_held(self, shard: _Shard, key: bytes) -> int | None:
        """The summary digest of the entry held at ``key``, or None when nothing is held."""
        value = shard.values.get(key)
        if value is None:
            return None
        return entry_digest(
            key, shard.versions[key], shard.expires_at_ms.get(key), value is TOMBSTONE
        )

    def _track(self, shard: _Shard, key: bytes, bucket: int, old_digest: int | None) -> None:
        """After a change of ``key``'s entry (``old_digest`` before it, None if nothing was
        held): move the bucket summary from the old digest to the new and keep the key index
        in step. One ``entry_digest`` (the new entry's) at most."""
        summaries = self.summaries
        if key in shard.values:
            new_digest = self._digest_held(shard, key)
            if old_digest is None:
                summaries.add(bucket, new_digest)
                self._index_add(bucket, key)
            elif new_digest != old_digest:
                summaries.replace(bucket, old_digest, new_digest)
        elif old_digest is not None:
            summaries.remove(bucket, old_digest)
            self._bucket_keys[bucket].remove(key)

    def _index_add(self, bucket: int, key: bytes) -> None:
        keys = self._bucket_keys[bucket]
        if keys is None:
            keys = self._bucket_keys[bucket] = set()
        keys.add(key)

    def _track_begin(self, shard: _Shard, key: bytes) -> tuple[int, int | None] | None:
        """``(bucket, old digest)`` for ``_track_end`` when tracking, else None (off the hot
        path: the write paths inline this)."""
        if self.summaries is None:
            return None
        return bucket_of(key), self._digest_held(shard, key)

    def _track_end(self, shard: _Shard, key: bytes, tracking: tuple[int, int | None] | None):
        if tracking is not None:
            self._track(shard, key, *tracking)

    def _untrack_evicted(self, shard: _Shard, key: bytes) -> None:
        """Before ``key`` is evicted: take it out of its bucket's summary and index, and raise
        the bucket's evicted stamp to the version's if it is a value."""
        bucket = bucket_of(key)
        old_digest = self._digest_held(shard, key)
        self.summaries.remove(bucket, old_digest)
        self._bucket_keys[bucket].remove(key)
        if shard.values[key] is not TOMBSTONE:
            stamp = shard.versions[key] >> 64
            stamps = self._evicted_stamps
            if stamp > stamps[bucket]:
                stamps[bucket] = stamp

    def _live(self, shard: _Shard, key: bytes, now_ms: int) -> bool:
        """Whether ``key`` holds a live value (expiring it lazily if due)."""
        value = shard.values.get(key)
        return (
            value is not None
            and value is not TOMBSTONE
            and not (key in shard.expires_at_ms and self._expired(shard, key, now_ms))
        )

    def _expired(self, shard: _Shard, key: bytes, now_ms: int) -> bool:
        """True when ``key`` has expired; the entry is then removed or, for a value with
        ``expired_tombstone_ms`` set, turned into its tombstone (lazy expiry)."""
        expires_at_ms = shard.expires_at_ms.get(key)
        if expires_at_ms is None or expires_at_ms > now_ms:
            return False
        self._expire(shard, key)
        return True

    def _expire(self, shard: _Shard, key: bytes) -> bool:
        """Expire ``key`` (due): True when it stays as a tombstone, False when it went."""
        if self.summaries is None:
            return self._expire_entry(shard, key)
        bucket = bucket_of(key)
        old_digest = self._digest_held(shard, key)
        stays = self._expire_entry(shard, key)
        self._track(shard, key, bucket, old_digest)
        return stays

    def _expire_entry(self, shard: _Shard, key: bytes) -> bool:
        """``_expire`` without the bucket tracking."""
        value = shard.values[key]
        if value is TOMBSTONE:  # its grace is over
            self._tombstones -= 1
            shard.policy.remove(key)
            self._drop(shard, key)
            return False
        self._expirations += 1
        if self._expired_tombstone_ms is None:
            shard.policy.remove(key)
            self._drop(shard, key)
            return False
        self._used_bytes -= len(value)
        shard.values[key] = TOMBSTONE
        self._tombstones += 1
        shard.policy.update(key, len(key) + self.entry_overhead_bytes)
        self._set_expiry(shard, key, shard.expires_at_ms[key] + self._expired_tombstone_ms)
        return True

    def _check_fits(self, weight: int, with_ttl: bool) -> None:
        """Raise ``EntryTooLarge`` when an entry of ``weight`` (plus its TTL) exceeds the limit
        alone: evicting everything else would not make room for it."""
        if weight + (TTL_OVERHEAD_BYTES if with_ttl else 0) > self.size_bytes_max:
            raise EntryTooLarge(
                f"entry needs {weight} bytes (key + value + {self.entry_overhead_bytes} "
                f"overhead, +{TTL_OVERHEAD_BYTES} with a TTL); the memory limit is "
                f"{self.size_bytes_max}"
            )

    def _evict_to_limit(self, written: _Shard, protect: bytes) -> None:
        """Evict until the limit holds: from the shard just written, then from the others, and
        when no entry but the one written is left, forget the policies' ghosts."""
        limit = self.size_bytes_max
        while self._used_bytes > limit and len(written.policy) > 1:
            self._evict_one(written, protect)
        shards = self._shards
        empty_in_a_row = 0
        while self._used_bytes > limit and empty_in_a_row <= len(shards):
            shard = shards[self._evict_shard]
            self._evict_shard = (self._evict_shard + 1) & self._shard_mask
            if shard is not written and len(shard.policy):
                self._evict_one(shard, None)
                empty_in_a_row = 0
            else:
                empty_in_a_row += 1
        # Only the written entry is left. Callers check that it fits alone (``_check_fits``), so
        # shedding ghosts always suffices; each step drops one, so the loop ends.
        for shard in shards:
            policy = shard.policy
            while self._used_bytes > limit:
                extra_bytes_before = policy.extra_bytes
                if not policy.shed_extra():
                    break
                self._used_bytes += policy.extra_bytes - extra_bytes_before
        if self._used_bytes > limit:
            raise InvariantViolation(
                f"over the limit with nothing to evict: used_bytes {self._used_bytes} > "
                f"size_bytes_max {limit}, no entry but the one written and no ghost left"
            )

    def _evict_one(self, shard: _Shard, protect: bytes | None) -> None:
        policy = shard.policy
        extra_bytes_before = policy.extra_bytes
        victim = policy.evict(protect)  # may remember the victim as a ghost
        self._used_bytes += policy.extra_bytes - extra_bytes_before
        evicted = self._evicted
        if self.summaries is not None:
            self._untrack_evicted(shard, victim)
        if shard.values[victim] is TOMBSTONE:
            self._tombstones -= 1
        elif evicted is not None:
            if len(evicted) >= EVICTED_RECORD_MAX:
                evicted.popleft()
                self.evictions_unreported += 1
            evicted.append((victim, shard.versions[victim]))
        self._drop(shard, victim)
        self._evictions += 1

    def _drop(self, shard: _Shard, key: bytes) -> None:
        """Forget ``key`` in the shard's maps (the caller has told the policy)."""
        value = shard.values.pop(key)
        del shard.versions[key]
        self._keys -= 1
        self._used_bytes -= len(key) + len(value) + self.entry_overhead_bytes
        self._clear_expiry(shard, key)

    def _set_expiry(self, shard: _Shard, key: bytes, expires_at_ms: int) -> None:
        previous_ms = shard.expires_at_ms.get(key)
        if previous_ms is None:
            shard.ttl_index[key] = len(shard.ttl_keys)
            shard.ttl_keys.append(key)
            self._used_bytes += TTL_OVERHEAD_BYTES
            self._keys_with_ttl += 1
        else:
            self._expires_at_ms_sum -= previous_ms
        self._expires_at_ms_sum += expires_at_ms
        shard.expires_at_ms[key] = expires_at_ms

    def _clear_expiry(self, shard: _Shard, key: bytes) -> None:
        previous_ms = shard.expires_at_ms.pop(key, None)
        if previous_ms is None:
            return
        self._keys_with_ttl -= 1
        self._expires_at_ms_sum -= previous_ms
        self._used_bytes -= TTL_OVERHEAD_BYTES
        slot = shard.ttl_index.pop(key)
        last = shard.ttl_keys.pop()
        if last != key:
            shard.ttl_keys[slot] = last
            shard.ttl_index[last] = slot
