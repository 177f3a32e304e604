"""Pluggable eviction: one module per policy, one interface (:class:`EvictionPolicy`).

``make_policy(name, capacity, seed)`` builds the policy chosen with ``--eviction NAME``.
"""

from __future__ import annotations

from .base import EvictionPolicy
from .fifo import FifoPolicy
from .lfu import LfuPolicy
from .lru import LruPolicy
from .random import RandomPolicy
from .s3fifo import S3FifoPolicy
from .sieve import SievePolicy
from .wtinylfu import WTinyLfuPolicy

_POLICY_CLASSES: dict[str, type] = {
    cls.name: cls
    for cls in (
        LruPolicy,
        LfuPolicy,
        FifoPolicy,
        RandomPolicy,
        SievePolicy,
        S3FifoPolicy,
        WTinyLfuPolicy,
    )
}

#: The names ``--eviction`` accepts, in the order docs list them.
POLICY_NAMES: tuple[str, ...] = tuple(_POLICY_CLASSES)


def make_policy(name: str, capacity: int, seed: int = 0) -> EvictionPolicy:
    """Build policy ``name`` for ``capacity`` units of weight (bytes in a store, items in a trace)."""
    try:
        cls = _POLICY_CLASSES[name]
    except KeyError:
        raise ValueError(
            f"unknown eviction policy {name!r}; choose one of: {', '.join(POLICY_NAMES)}"
        ) from None
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    return cls(capacity, seed)


__all__ = ["POLICY_NAMES", "EvictionPolicy", "make_policy"]
