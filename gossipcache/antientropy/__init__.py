"""Anti-entropy (issue 10): per-bucket summaries that replicas compare to find what differs."""

from .summary import (
    DIGEST_MASK,
    GROUP_COUNT,
    GROUP_SIZE,
    REBUILD_STEP_ENTRIES_DEFAULT,
    BucketSummaries,
    SummaryRebuild,
    begin_rebuild,
    entry_digest,
    rebuild,
)

__all__ = [
    "DIGEST_MASK",
    "GROUP_COUNT",
    "GROUP_SIZE",
    "REBUILD_STEP_ENTRIES_DEFAULT",
    "BucketSummaries",
    "SummaryRebuild",
    "begin_rebuild",
    "entry_digest",
    "rebuild",
]
