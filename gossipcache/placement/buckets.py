"""Keys to buckets, the way Redis Cluster maps keys to hash slots.

``bucket_of(key)`` is CRC16-XMODEM of the key modulo 16384; when the key contains a non-empty
``{...}`` hash tag, only the tag is hashed, so related keys can be kept together. This matches
Redis Cluster's slot function, which keeps the door open to cluster-aware Redis clients.
``binascii.crc_hqx(data, 0)`` is exactly CRC16-XMODEM and runs in C.
"""

from __future__ import annotations

from binascii import crc_hqx

BUCKET_COUNT = 16384


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that decides its bucket."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def bucket_of(key: bytes) -> int:
    """The bucket (0..16383) of ``key``."""
    return crc_hqx(hash_tag(key), 0) & (BUCKET_COUNT - 1)
