"""The in-memory store and its eviction policies (pure: no I/O, no clock of its own)."""

from .store import (
    ENTRY_OVERHEAD_BYTES,
    KEY_SIZE_BYTES_MAX_DEFAULT,
    TTL_MISSING,
    TTL_OVERHEAD_BYTES,
    TTL_PERSISTENT,
    VALUE_SIZE_BYTES_MAX_DEFAULT,
    InvariantViolation,
    Store,
    StoreStats,
    shard_count_for,
)
from .summaries import BucketSummaries, entry_digest

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "KEY_SIZE_BYTES_MAX_DEFAULT",
    "TTL_MISSING",
    "TTL_OVERHEAD_BYTES",
    "TTL_PERSISTENT",
    "VALUE_SIZE_BYTES_MAX_DEFAULT",
    "BucketSummaries",
    "InvariantViolation",
    "Store",
    "StoreStats",
    "entry_digest",
    "shard_count_for",
]
