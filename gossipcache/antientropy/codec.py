"""Wire format of anti-entropy (docs/design.md, "Anti-entropy"): ``b"A"`` and a msgpack array
of messages, each ``[type, round, ...]``. ``round`` is the initiator's round number: the
responder keeps no state between messages, it answers each from its store as it is then.

One round, initiator I, responder R (``shared``: the buckets both hold, from each one's view of
the layout; ``set_hash`` identifies that set, so two views that differ are noticed):

- I -> R ``[SYNC, round, set_hash, root]``: the sum of I's summaries over the shared buckets.
- R -> I ``[SAME, round]`` when R's sum is equal (16 bytes each way: the whole round when
  replicas agree), else ``[GROUPS, round, [sum x 128]]``: R's sums per group of 128 buckets,
  over the shared buckets. ``[BUSY, round, reason]`` when R cannot compare (another view).
- I -> R ``[SUMS_REQ, round, [group, ...]]`` for the groups whose sums differ.
- R -> I ``[SUMS, round, [bucket, sum, bucket, sum, ...]]``: R's sums of the shared buckets in
  those groups.
- I -> R ``[KEYS, round, [[bucket, hash_lo, hash_last, evicted_stamp, listing], ...]]`` for
  the buckets that differed twice: I's entries of ``bucket`` whose key hash is in ``[hash_lo,
  hash_last]`` (a huge bucket is listed in ranges), ``listing`` a flat list ``key_hash, stamp,
  tag, expires_at_ms|nil, tombstone`` per entry: keys are not sent, only 64-bit hashes (a
  listing entry is ~30 bytes whatever the key's size). ``evicted_stamp``: the newest write I
  evicted from the bucket (R never copies an older value back to I).
- R -> I ``[ENTRIES, round, [key, value|nil, stamp, tag, expires_at_ms|nil, ...], last,
  pull, complete]``: the entries R holds newer than I's (or I lacks), split over several
  messages when large; the ``last`` one (true) carries ``pull``, the key hashes whose entries R
  wants from I, and ``complete``, the listed ranges R answered in full
  ``[bucket, hash_lo, ...]``.
- I -> R ``[PUSH, round, [key, value|nil, stamp, tag, expires_at_ms|nil, ...]]``: those entries.

Decoding treats bytes as hostile: msgpack limits sized to one frame, every field type- and
range-checked; any failure raises ``AntiEntropyCodecError`` (the core drops and counts it).
"""

from __future__ import annotations

import msgpack

from ..errors import ProtocolError
from ..limits import EXPIRES_AT_MS_MAX, FRAME_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX
from ..store.summaries import GROUP_COUNT

#: First byte of every anti-entropy payload.
PAYLOAD_TAG = b"A"

SYNC = 1
SAME = 2
GROUPS = 3
SUMS_REQ = 4
SUMS = 5
KEYS = 6
ENTRIES = 7
PUSH = 8
BUSY = 9

#: Why a responder could not compare.
BUSY_OTHER_VIEW = 0  # its shared bucket set differs (layouts not yet agreed)
BUSY_NOT_READY = 1  # no layout yet, or not serving data

#: Bounds on what one payload may make the decoder build: a listing entry is 5 fields, an
#: entry 5; a payload holds at most one frame.
ITEMS_PER_MESSAGE_MAX = 5 * 65_536
MESSAGES_PER_PAYLOAD_MAX = 4096
ROUND_LIMIT = 2**63
_UINT64_LIMIT = 2**64
_UINT64_MASK = _UINT64_LIMIT - 1
_BUCKET_LIMIT = GROUP_COUNT * 128
_LISTING_FIELDS = 5
_ENTRY_FIELDS = 5


class AntiEntropyCodecError(ProtocolError):
    """An anti-entropy payload failed validation; ``reason`` names the check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_payload(messages: list[list]) -> bytes:
    return PAYLOAD_TAG + msgpack.packb(messages, use_bin_type=True)


def _uint(value: object, limit: int = _UINT64_LIMIT) -> int:
    if type(value) is not int or not 0 <= value < limit:
        raise AntiEntropyCodecError("bad_int")
    return value


def _uints(value: object, limit: int = _UINT64_LIMIT) -> list[int]:
    if type(value) is not list:
        raise AntiEntropyCodecError("bad_list")
    for item in value:
        if type(item) is not int or not 0 <= item < limit:
            raise AntiEntropyCodecError("bad_int")
    return value


def _expiry(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= EXPIRES_AT_MS_MAX:
        raise AntiEntropyCodecError("bad_expiry")
    return value


def _listing(value: object) -> list[tuple[int, int, int | None, bool]]:
    """``(key_hash, version, expires_at_ms, tombstone)`` per listed entry."""
    if type(value) is not list or len(value) % _LISTING_FIELDS:
        raise AntiEntropyCodecError("bad_listing")
    entries = []
    for at in range(0, len(value), _LISTING_FIELDS):
        key_hash, stamp, tag, expires_at_ms, tombstone = value[at : at + _LISTING_FIELDS]
        if type(tombstone) is not bool:
            raise AntiEntropyCodecError("bad_listing")
        if tombstone and expires_at_ms is None:
            raise AntiEntropyCodecError("tombstone_without_expiry")
        entries.append(
            (_uint(key_hash), _uint(stamp) << 64 | _uint(tag), _expiry(expires_at_ms), tombstone)
        )
    return entries


def _entries(value: object) -> list[tuple[bytes, bytes | None, int, int | None]]:
    """``(key, value|None, version, expires_at_ms)`` per entry."""
    if type(value) is not list or len(value) % _ENTRY_FIELDS:
        raise AntiEntropyCodecError("bad_entries")
    entries = []
    for at in range(0, len(value), _ENTRY_FIELDS):
        key, data, stamp, tag, expires_at_ms = value[at : at + _ENTRY_FIELDS]
        if type(key) is not bytes or not 0 < len(key) <= KEY_SIZE_BYTES_MAX:
            raise AntiEntropyCodecError("bad_key")
        if data is None:
            if expires_at_ms is None:
                raise AntiEntropyCodecError("tombstone_without_expiry")
        elif type(data) is not bytes:
            raise AntiEntropyCodecError("bad_value")
        entries.append((key, data, _uint(stamp) << 64 | _uint(tag), _expiry(expires_at_ms)))
    return entries


def _ranges(value: object, fields: int) -> list[list]:
    if type(value) is not list or len(value) % fields:
        raise AntiEntropyCodecError("bad_ranges")
    return [value[at : at + fields] for at in range(0, len(value), fields)]


def decode_payload(payload: bytes) -> list[tuple]:
    """Validated messages as tuples (see the module docstring; versions as one int):

    ``(SYNC, round, set_hash, root)``, ``(SAME, round)``, ``(GROUPS, round, sums)``,
    ``(SUMS_REQ, round, groups)``, ``(SUMS, round, [(bucket, sum), ...])``,
    ``(KEYS, round, [(bucket, hash_lo, hash_last, evicted_stamp, listing), ...])``,
    ``(ENTRIES, round, entries, last, pull_hashes, [(bucket, hash_lo), ...])``,
    ``(PUSH, round, entries)``, ``(BUSY, round, reason)``. Raises ``AntiEntropyCodecError``."""
    if payload[:1] != PAYLOAD_TAG or len(payload) > FRAME_SIZE_BYTES_MAX:
        raise AntiEntropyCodecError("bad_envelope")
    try:
        body = msgpack.unpackb(
            memoryview(payload)[1:],
            raw=True,
            use_list=True,
            strict_map_key=True,
            max_bin_len=FRAME_SIZE_BYTES_MAX,
            max_str_len=0,
            max_array_len=ITEMS_PER_MESSAGE_MAX,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise AntiEntropyCodecError("malformed") from None
    if type(body) is not list or len(body) > MESSAGES_PER_PAYLOAD_MAX:
        raise AntiEntropyCodecError("malformed")
    return [_decode_message(message) for message in body]


def _decode_message(message: object) -> tuple:
    if type(message) is not list or len(message) < 2:
        raise AntiEntropyCodecError("malformed")
    kind, size = message[0], len(message)
    round_number = _uint(message[1], ROUND_LIMIT)
    if kind == SYNC and size == 4:
        return SYNC, round_number, _uint(message[2]), _uint(message[3])
    if kind == SAME and size == 2:
        return SAME, round_number
    if kind == GROUPS and size == 3:
        sums = _uints(message[2])
        if len(sums) != GROUP_COUNT:
            raise AntiEntropyCodecError("bad_groups")
        return GROUPS, round_number, sums
    if kind == SUMS_REQ and size == 3:
        groups = _uints(message[2], GROUP_COUNT)
        if len(groups) > GROUP_COUNT:
            raise AntiEntropyCodecError("bad_groups")
        return SUMS_REQ, round_number, groups
    if kind == SUMS and size == 3:
        flat = _uints(message[2])
        pairs = _ranges(flat, 2)
        for bucket, _ in pairs:
            if bucket >= _BUCKET_LIMIT:
                raise AntiEntropyCodecError("bad_bucket")
        return SUMS, round_number, [(bucket, total) for bucket, total in pairs]
    if kind == KEYS and size == 3:
        items = message[2]
        if type(items) is not list:
            raise AntiEntropyCodecError("bad_keys")
        ranges = []
        for item in items:
            if type(item) is not list or len(item) != 5:
                raise AntiEntropyCodecError("bad_keys")
            bucket = _uint(item[0], _BUCKET_LIMIT)
            hash_lo, hash_last = _uint(item[1]), _uint(item[2])
            if hash_lo > hash_last:
                raise AntiEntropyCodecError("bad_range")
            ranges.append((bucket, hash_lo, hash_last, _uint(item[3]), _listing(item[4])))
        return KEYS, round_number, ranges
    if kind == ENTRIES and size == 6:
        last = message[3]
        if type(last) is not bool:
            raise AntiEntropyCodecError("bad_entries")
        complete = _ranges(_uints(message[5]), 2)
        for bucket, _ in complete:
            if bucket >= _BUCKET_LIMIT:
                raise AntiEntropyCodecError("bad_bucket")
        return (
            ENTRIES,
            round_number,
            _entries(message[2]),
            last,
            _uints(message[4]),
            [(bucket, hash_lo) for bucket, hash_lo in complete],
        )
    if kind == PUSH and size == 3:
        return PUSH, round_number, _entries(message[2])
    if kind == BUSY and size == 3:
        return BUSY, round_number, _uint(message[2], 256)
    raise AntiEntropyCodecError("unknown_message")


def entry_fields(key: bytes, value: bytes | None, version: int, expires_at_ms: int | None):
    """The five flat fields of one entry in ``ENTRIES`` / ``PUSH``."""
    return key, value, version >> 64, version & _UINT64_MASK, expires_at_ms


def listing_fields(key_hash: int, version: int, expires_at_ms: int | None, tombstone: bool):
    """The five flat fields of one listed entry in ``KEYS``."""
    return key_hash, version >> 64, version & _UINT64_MASK, expires_at_ms, tombstone
