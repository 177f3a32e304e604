"""gossipcache: a peer-to-peer distributed in-memory cache for Python teams.

The public API; everything else is internal and may change.
"""

from .client.client import Client, SyncClient
from .errors import (
    CacheTimeout,
    CacheUnavailable,
    EntryTooLarge,
    GossipCacheError,
    InvalidRequest,
    KeyTooLarge,
    ProtocolError,
    ServerError,
    ValueTooLarge,
)
from .store import Store, StoreStats
from .store.eviction import POLICY_NAMES, EvictionPolicy, make_policy

__version__ = "0.1.0"

__all__ = [
    "POLICY_NAMES",
    "CacheTimeout",
    "CacheUnavailable",
    "Client",
    "EntryTooLarge",
    "EvictionPolicy",
    "GossipCacheError",
    "InvalidRequest",
    "KeyTooLarge",
    "ProtocolError",
    "ServerError",
    "Store",
    "StoreStats",
    "SyncClient",
    "ValueTooLarge",
    "make_policy",
]
