"""Anti-entropy (issue 10): replicas compare per-bucket summaries with the other holders of their
buckets and repair, key by key, only what differs (``core``); the wire format (``codec``)."""

from .codec import PAYLOAD_TAG
from .core import AntiEntropy, AntiEntropyConfig, AntiEntropyStats, Layout, key_hash

__all__ = [
    "PAYLOAD_TAG",
    "AntiEntropy",
    "AntiEntropyConfig",
    "AntiEntropyStats",
    "Layout",
    "key_hash",
]
