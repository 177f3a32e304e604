"""Where keys live: keys to buckets, and buckets ranked over the members by weighted rendezvous."""

from .buckets import BUCKET_COUNT, bucket_of, hash_tag
from .rendezvous import (
    STEP_SCORES_DEFAULT,
    Placement,
    PlacementBuild,
    PlacementMember,
    placement_epoch,
)

__all__ = [
    "BUCKET_COUNT",
    "STEP_SCORES_DEFAULT",
    "Placement",
    "PlacementBuild",
    "PlacementMember",
    "bucket_of",
    "hash_tag",
    "placement_epoch",
]
