"""Per-bucket summaries of a replica's contents, kept incrementally, for anti-entropy (issue 10).

**What a summary is.** Every entry (key, version, expiry, tombstone) has a 64-bit digest
(:func:`entry_digest`). A bucket's summary is the sum of its entries' digests modulo 2**64, and
its entry count. Two replicas holding the same entries in a bucket have equal sums; a replica
that missed a write, a delete or an expiry change holds a different one (up to a 64-bit
collision). A sum rather than an XOR: applying a change twice (adding an entry that is already
counted) moves the sum by one more digest, where an XOR would cancel it and hide the error.

**Updates are O(1).** The store tells the summary about every write, delete, expiry and eviction
as ``add`` / ``remove`` / ``replace`` of digests; each updates the bucket's sum, its group's sum
and the root, three additions. Nothing is ever recomputed on the hot path.

**A shallow tree.** The 16384 buckets are split into ``GROUP_COUNT`` groups of ``GROUP_SIZE``
consecutive buckets; each group's sum is the sum of its buckets', the root the sum of all. Two
replicas compare roots (8 bytes); if they differ, exchange the 128 group sums (1 KiB) and, for
each differing group, its 128 bucket sums (1 KiB each): the differing buckets are found in two
round trips, a few KiB for a few differing groups, instead of the 128 KiB of every bucket sum.

**Drift.** A bug, a lost notification or a bit flip would make the sums wrong forever, so the
store rechecks them in bounded steps, bucket by bucket (``Store.verify_summaries_step``, which
fixes a wrong bucket with :meth:`BucketSummaries.set_bucket`); :func:`rebuild` and the sliced
:func:`begin_rebuild` recompute them from any snapshot of entries.

Pure structure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator

from mmh3 import mmh3_x64_128_uintdigest as _murmur3_x64_128

from ..placement import BUCKET_COUNT, bucket_of

#: Sums wrap at 64 bits, so that they fit one unsigned machine word and one msgpack int.
DIGEST_MASK = (1 << 64) - 1
#: Buckets per group: 128 groups of 128 buckets makes both descent steps the same size, 1 KiB of
#: sums each (128 x 8 bytes).
GROUP_SIZE = 128
GROUP_COUNT = BUCKET_COUNT // GROUP_SIZE
#: Versions are encoded in 16 bytes: a stamp and a node tag, 64 bits each (gossipcache/hlc.py).
VERSION_SIZE_BYTES = 16
#: Entries hashed per step of a sliced rebuild: ~1.2 us each (docs/benchmarks.md), so a step
#: takes ~2.5 ms, short next to a reactor pass's other work.
REBUILD_STEP_ENTRIES_DEFAULT = 2048

# A digest's encoding: the fixed-size fields first, then the key, so that no two field tuples
# encode the same bytes (the key takes all that is left). No expiry and expiry 0 differ through
# the flags byte.
_FLAG_TOMBSTONE = 0x01
_FLAG_EXPIRES = 0x02
_EXPIRES_MS_MAX = (1 << 64) - 1
#: flags, the version's high and low 64 bits, the expiry: the 25 bytes before the key.
_DIGEST_HEAD = struct.Struct(">BQQQ")

assert GROUP_SIZE * GROUP_COUNT == BUCKET_COUNT


def entry_digest(key: bytes, version: int, expires_at_ms: int | None, tombstone: bool) -> int:
    """The 64-bit digest of one entry: MurmurHash3 x64 (seed 0, unsigned, the first 64 bits) of
    ``flags(1) || version(16, big-endian) || expires_at_ms(8, big-endian) || key``. The same in
    every process and on every platform.

    On the replicated write path (twice per write: the old entry and the new), so built for
    speed: one ``struct`` pack of the fixed fields (the version as its two 64-bit halves) and
    ``mmh3_x64_128_uintdigest``, whose low 64 bits are the first 64-bit word of the hash: ~0.3 us
    against ~0.55 us for ``to_bytes`` pieces and ``hash64``. A field out of range makes the pack
    fail, turned into ValueError here at no cost on the normal path."""
    flags = _FLAG_TOMBSTONE if tombstone else 0
    if expires_at_ms is not None:
        flags |= _FLAG_EXPIRES
    try:
        head = _DIGEST_HEAD.pack(flags, version >> 64, version & DIGEST_MASK, expires_at_ms or 0)
    except struct.error:
        if not 0 <= version < 1 << (8 * VERSION_SIZE_BYTES):
            raise ValueError(
                f"version {version} does not fit {VERSION_SIZE_BYTES} bytes unsigned"
            ) from None
        raise ValueError(f"expires_at_ms {expires_at_ms} outside [0, {_EXPIRES_MS_MAX}]") from None
    return _murmur3_x64_128(head + key, 0) & DIGEST_MASK


def _differing(mine: array, start: int, theirs: list[int]) -> list[int]:
    """Offsets ``i`` in ``range(len(theirs))`` where ``mine[start + i] != theirs[i]``."""
    return [i for i, their_sum in enumerate(theirs) if mine[start + i] != their_sum]


class BucketSummaries:
    """The summaries of one replica: per bucket a wrapping digest sum and an entry count, per
    group of ``GROUP_SIZE`` buckets a sum, and a root.

    ~262 KiB whatever the data size: bucket sums and counts as two ``array('Q')`` of 16384
    (128 KiB each), group sums as one of 128. Counts are not part of the comparison (the sums
    already differ when the contents do); they tell a repair how large a bucket is, and catch a
    ``remove`` of an entry that was never added (the count would go below zero).
    """

    __slots__ = ("_bucket_counts", "_bucket_sums", "_group_sums", "_root")

    def __init__(self) -> None:
        self._bucket_sums = array("Q", bytes(8 * BUCKET_COUNT))
        self._bucket_counts = array("Q", bytes(8 * BUCKET_COUNT))
        self._group_sums = array("Q", bytes(8 * GROUP_COUNT))
        self._root = 0

    # -- updates: O(1), three wrapping additions each ---------------------------------------------
    # Each update moves the bucket's sum, its group's and the root by the same delta (mod 2**64),
    # written out in each method rather than shared through a helper: these run on every
    # replicated write, and a Python call costs about as much as the three additions.

    def add(self, bucket: int, digest: int) -> None:
        """An entry with ``digest`` appeared in ``bucket`` (a write of a new key)."""
        sums = self._bucket_sums
        sums[bucket] = (sums[bucket] + digest) & DIGEST_MASK
        group_sums = self._group_sums
        group = bucket // GROUP_SIZE
        group_sums[group] = (group_sums[group] + digest) & DIGEST_MASK
        self._root = (self._root + digest) & DIGEST_MASK
        self._bucket_counts[bucket] += 1

    def remove(self, bucket: int, digest: int) -> None:
        """An entry with ``digest`` left ``bucket`` (deleted for good, expired or evicted).
        ValueError if the bucket holds no entries: the caller removed something it never added,
        and the summary is left unchanged."""
        counts = self._bucket_counts
        if counts[bucket] == 0:
            raise ValueError(f"remove from empty bucket {bucket}")
        counts[bucket] -= 1
        sums = self._bucket_sums
        sums[bucket] = (sums[bucket] - digest) & DIGEST_MASK
        group_sums = self._group_sums
        group = bucket // GROUP_SIZE
        group_sums[group] = (group_sums[group] - digest) & DIGEST_MASK
        self._root = (self._root - digest) & DIGEST_MASK

    def replace(self, bucket: int, old_digest: int, new_digest: int) -> None:
        """An entry of ``bucket`` changed (an overwrite, a new expiry, a delete that leaves a
        tombstone): its digest goes from ``old_digest`` to ``new_digest``; the count stays."""
        if self._bucket_counts[bucket] == 0:
            raise ValueError(f"replace in empty bucket {bucket}")
        delta = new_digest - old_digest
        sums = self._bucket_sums
        sums[bucket] = (sums[bucket] + delta) & DIGEST_MASK
        group_sums = self._group_sums
        group = bucket // GROUP_SIZE
        group_sums[group] = (group_sums[group] + delta) & DIGEST_MASK
        self._root = (self._root + delta) & DIGEST_MASK

    def set_bucket(self, bucket: int, bucket_sum: int, count: int) -> None:
        """Overwrite ``bucket``'s sum and count with recomputed ones (the drift check's fix); the
        group sum and the root move by the difference."""
        bucket_sum &= DIGEST_MASK
        sums = self._bucket_sums
        delta = bucket_sum - sums[bucket]
        sums[bucket] = bucket_sum
        group_sums = self._group_sums
        group = bucket // GROUP_SIZE
        group_sums[group] = (group_sums[group] + delta) & DIGEST_MASK
        self._root = (self._root + delta) & DIGEST_MASK
        self._bucket_counts[bucket] = count

    def add_key(self, key: bytes, version: int, expires_at_ms: int | None, tombstone: bool) -> None:
        """``add`` of an entry given by its fields (the bucket and digest computed here)."""
        self.add(bucket_of(key), entry_digest(key, version, expires_at_ms, tombstone))

    # -- reads ------------------------------------------------------------------------------------

    def root(self) -> int:
        """The sum of every entry's digest: equal on two replicas that hold the same entries."""
        return self._root

    def group_sums(self) -> list[int]:
        """The ``GROUP_COUNT`` group sums, the first descent step (1 KiB on the wire)."""
        return self._group_sums.tolist()

    def bucket_sums(self, group: int) -> list[int]:
        """The ``GROUP_SIZE`` bucket sums of ``group``, the second descent step."""
        start = self._group_start(group)
        return self._bucket_sums[start : start + GROUP_SIZE].tolist()

    def bucket_sum(self, bucket: int) -> int:
        return self._bucket_sums[bucket]

    def bucket_count(self, bucket: int) -> int:
        """How many entries ``bucket`` holds."""
        return self._bucket_counts[bucket]

    def entry_count(self) -> int:
        return sum(self._bucket_counts)

    def differing_groups(self, other_group_sums: list[int]) -> list[int]:
        """The groups whose sum differs from a peer's ``group_sums()``, ascending."""
        if len(other_group_sums) != GROUP_COUNT:
            raise ValueError(f"{len(other_group_sums)} group sums, expected {GROUP_COUNT}")
        return _differing(self._group_sums, 0, other_group_sums)

    def differing_buckets(self, group: int, other_bucket_sums: list[int]) -> list[int]:
        """The buckets of ``group`` whose sum differs from a peer's ``bucket_sums(group)``, as
        bucket numbers (0..16383), ascending."""
        if len(other_bucket_sums) != GROUP_SIZE:
            raise ValueError(f"{len(other_bucket_sums)} bucket sums, expected {GROUP_SIZE}")
        start = self._group_start(group)
        return [start + i for i in _differing(self._bucket_sums, start, other_bucket_sums)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BucketSummaries):
            return NotImplemented
        return (
            self._bucket_sums == other._bucket_sums and self._bucket_counts == other._bucket_counts
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def size_bytes(self) -> int:
        """The arrays' payload: what the structure costs per node, whatever the data size."""
        return sum(
            len(a) * a.itemsize for a in (self._bucket_sums, self._bucket_counts, self._group_sums)
        )

    @classmethod
    def _from_totals(cls, bucket_totals: list[int], bucket_counts: list[int]) -> BucketSummaries:
        """Summaries from per-bucket digest totals (any size, reduced here) and counts."""
        summaries = cls()
        summaries._bucket_sums = array("Q", [total & DIGEST_MASK for total in bucket_totals])
        summaries._bucket_counts = array("Q", bucket_counts)
        sums = summaries._bucket_sums
        summaries._group_sums = array(
            "Q",
            [
                sum(sums[start : start + GROUP_SIZE]) & DIGEST_MASK
                for start in range(0, BUCKET_COUNT, GROUP_SIZE)
            ],
        )
        summaries._root = sum(summaries._group_sums) & DIGEST_MASK
        return summaries

    @staticmethod
    def _group_start(group: int) -> int:
        if not 0 <= group < GROUP_COUNT:
            raise ValueError(f"group {group} outside [0, {GROUP_COUNT})")
        return group * GROUP_SIZE


Entry = tuple[bytes, int, "int | None", bool]


class SummaryRebuild:
    """Summaries being recomputed from the store, at most ``entries_max`` entries per
    :meth:`step`, so that a node can interleave the drift check with serving requests. The
    caller must pass entries of a consistent snapshot (or account for changes made meanwhile);
    this class only hashes what it is given.

    Steps only accumulate per-bucket totals (unmasked Python ints); the group sums and the root
    are computed once, when the last step finishes, which makes a rebuild cheaper per
    entry than ``add`` through the tree."""

    __slots__ = ("_bucket_counts", "_bucket_totals", "_entries", "_result")

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._entries: Iterator[Entry] | None = iter(entries)
        self._bucket_totals = [0] * BUCKET_COUNT
        self._bucket_counts = [0] * BUCKET_COUNT
        self._result: BucketSummaries | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def step(self, entries_max: int = REBUILD_STEP_ENTRIES_DEFAULT) -> bool:
        """Hash up to ``entries_max`` more entries. True when every entry has been hashed."""
        if entries_max < 1:
            raise ValueError(f"entries_max {entries_max} < 1")
        entries = self._entries
        if entries is None:
            return True
        totals, counts = self._bucket_totals, self._bucket_counts
        for _ in range(entries_max):
            entry = next(entries, None)
            if entry is None:
                self._entries = None
                self._result = BucketSummaries._from_totals(totals, counts)
                return True
            bucket = bucket_of(entry[0])
            totals[bucket] += entry_digest(*entry)
            counts[bucket] += 1
        return False

    def result(self) -> BucketSummaries:
        """The finished summaries. RuntimeError before :attr:`done`."""
        if self._result is None:
            raise RuntimeError("rebuild not finished")
        return self._result


def begin_rebuild(entries: Iterable[Entry]) -> SummaryRebuild:
    """A sliced rebuild over ``entries`` (key, version, expires_at_ms, tombstone)."""
    return SummaryRebuild(entries)


def rebuild(entries: Iterable[Entry]) -> BucketSummaries:
    """The summaries of ``entries`` (key, version, expires_at_ms, tombstone), in one go."""
    build = SummaryRebuild(entries)
    while not build.step(REBUILD_STEP_ENTRIES_DEFAULT):
        pass
    return build.result()
