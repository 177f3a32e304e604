"""Where keys live: keys to buckets (rendezvous ranking of buckets over nodes comes next)."""

from .buckets import BUCKET_COUNT, bucket_of, hash_tag

__all__ = ["BUCKET_COUNT", "bucket_of", "hash_tag"]
