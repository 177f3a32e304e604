"""Wire format of node-to-node data traffic (replica reads and writes, acks, eviction notices).

A payload is ``b"R"`` followed by a msgpack array of messages; each message is an array
``[type, ...]``. One payload carries many messages (a coordinator batches every message for a
peer produced in one step), so the per-frame costs (framing, a syscall) are shared. Membership
payloads start with their wire version byte (1), so the node core tells the two apart by the
first byte.

Versions are 128-bit ints (``stamp << 64 | node_tag``, ``gossipcache.hlc``); msgpack carries
them as two unsigned 64-bit ints.

Messages (``key``/``value`` bytes; ``expires_at_ms`` an int or nil; ``req`` the coordinator's
request id, unique among its requests in flight):

- ``[WRITE, req, key, value|nil, stamp, tag, expires_at_ms|nil]``: apply if newer (nil value:
  a tombstone, ``expires_at_ms`` is when it is collected).
- ``[ACK, req, outcome, held_stamp, held_tag]``: the write's outcome (``OUTCOME_*``) and, when
  stale, the version the replica holds.
- ``[READ, req, key]`` and ``[ENTRY, req, entry|nil]`` with ``entry = [value|nil, stamp, tag,
  expires_at_ms|nil]``.
- ``[EVICT, key, stamp, tag]``: the key's primary evicted this version; no answer.

Decoding treats bytes as hostile: msgpack limits sized to one frame, every field type- and
range-checked; any failure raises ``ReplicationCodecError`` (the core drops and counts it).
"""

from __future__ import annotations

import msgpack

from ..errors import ProtocolError
from ..limits import EXPIRES_AT_MS_MAX, FRAME_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX

#: First byte of every replication payload.
PAYLOAD_TAG = b"R"

WRITE = 1
ACK = 2
READ = 3
ENTRY = 4
EVICT = 5

#: Write outcomes a replica reports.
OUTCOME_STALE = 0  # a version at least as new is held (its version follows)
OUTCOME_NEW = 1  # written; no live value was held
OUTCOME_REPLACED = 2  # written over a live value
OUTCOME_REFUSED = 3  # not written: too far ahead of the replica's clock, or too large

#: Most messages one payload may carry (a payload of acks for a busy coordinator).
MESSAGES_PER_PAYLOAD_MAX = 65_536
REQUEST_ID_LIMIT = 2**63
_UINT64_LIMIT = 2**64
_UINT64_MASK = _UINT64_LIMIT - 1


class ReplicationCodecError(ProtocolError):
    """A replication payload failed validation; ``reason`` names the check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def split_version(version: int) -> tuple[int, int]:
    return version >> 64, version & (_UINT64_LIMIT - 1)


def encode_payload(messages: list[list]) -> bytes:
    return PAYLOAD_TAG + msgpack.packb(messages, use_bin_type=True)


def _uint(value: object, limit: int = _UINT64_LIMIT) -> int:
    if type(value) is not int or not 0 <= value < limit:
        raise ReplicationCodecError("bad_int")
    return value


def _key(value: object) -> bytes:
    if type(value) is not bytes or len(value) > KEY_SIZE_BYTES_MAX:
        raise ReplicationCodecError("bad_key")
    return value


def _value(value: object) -> bytes | None:
    if value is not None and type(value) is not bytes:
        raise ReplicationCodecError("bad_value")
    return value


def _expiry(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 < value <= EXPIRES_AT_MS_MAX:
        raise ReplicationCodecError("bad_expiry")
    return value


def _version(stamp: object, tag: object) -> int:
    return _uint(stamp) << 64 | _uint(tag)


def decode_entry(entry: object) -> tuple | None:
    """``(value|None, version, expires_at_ms|None)`` or None."""
    if entry is None:
        return None
    if type(entry) is not list or len(entry) != 4:
        raise ReplicationCodecError("bad_entry")
    return _value(entry[0]), _version(entry[1], entry[2]), _expiry(entry[3])


def decode_payload(payload: bytes) -> list[tuple]:
    """Validated messages as tuples: ``(WRITE, req, key, value, version, expires_at_ms)``,
    ``(ACK, req, outcome, held_version)``, ``(READ, req, key)``, ``(ENTRY, req, entry)``,
    ``(EVICT, key, version)``. Raises ``ReplicationCodecError``."""
    if payload[:1] != PAYLOAD_TAG or len(payload) > FRAME_SIZE_BYTES_MAX:
        raise ReplicationCodecError("bad_envelope")
    try:
        body = msgpack.unpackb(
            memoryview(payload)[1:],
            raw=True,
            use_list=True,
            strict_map_key=True,
            max_bin_len=FRAME_SIZE_BYTES_MAX,
            max_str_len=0,
            max_array_len=MESSAGES_PER_PAYLOAD_MAX,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise ReplicationCodecError("malformed") from None
    if type(body) is not list:
        raise ReplicationCodecError("malformed")
    messages = []
    for message in body:
        if type(message) is not list or not message:
            raise ReplicationCodecError("malformed")
        kind = message[0]
        size = len(message)
        if kind == WRITE and size == 7:
            # The hot message: its checks inline (one function call per field cost ~40 %).
            _, req, key, value, stamp, tag, expires_at_ms = message
            if (
                type(req) is not int
                or not 0 <= req < REQUEST_ID_LIMIT
                or type(key) is not bytes
                or len(key) > KEY_SIZE_BYTES_MAX
                or (value is not None and type(value) is not bytes)
                or type(stamp) is not int
                or not 0 <= stamp < _UINT64_LIMIT
                or type(tag) is not int
                or not 0 <= tag < _UINT64_LIMIT
            ):
                raise ReplicationCodecError("bad_write")
            if expires_at_ms is None:
                if value is None:
                    raise ReplicationCodecError("tombstone_without_expiry")
            elif type(expires_at_ms) is not int or not 0 < expires_at_ms <= EXPIRES_AT_MS_MAX:
                raise ReplicationCodecError("bad_expiry")
            messages.append((WRITE, req, key, value, stamp << 64 | tag, expires_at_ms))
        elif kind == ACK and size == 5:
            _, req, outcome, stamp, tag = message
            if (
                type(req) is not int
                or not 0 <= req < REQUEST_ID_LIMIT
                or type(outcome) is not int
                or not 0 <= outcome <= OUTCOME_REFUSED
                or type(stamp) is not int
                or not 0 <= stamp < _UINT64_LIMIT
                or type(tag) is not int
                or not 0 <= tag < _UINT64_LIMIT
            ):
                raise ReplicationCodecError("bad_ack")
            messages.append((ACK, req, outcome, stamp << 64 | tag))
        elif kind == READ and size == 3:
            messages.append((READ, _uint(message[1], REQUEST_ID_LIMIT), _key(message[2])))
        elif kind == ENTRY and size == 3:
            messages.append((ENTRY, _uint(message[1], REQUEST_ID_LIMIT), decode_entry(message[2])))
        elif kind == EVICT and size == 4:
            messages.append((EVICT, _key(message[1]), _version(message[2], message[3])))
        else:
            raise ReplicationCodecError("unknown_message")
    return messages


def write_message(req: int, key: bytes, value: bytes | None, version: int, expires: int | None):
    return [WRITE, req, key, value, version >> 64, version & _UINT64_MASK, expires]


def ack_message(req: int, outcome: int, held_version: int) -> list:
    stamp, tag = split_version(held_version)
    return [ACK, req, outcome, stamp, tag]


def entry_message(req: int, entry: tuple | None) -> list:
    if entry is None:
        return [ENTRY, req, None]
    value, version, expires_at_ms = entry
    stamp, tag = split_version(version)
    return [ENTRY, req, [value, stamp, tag, expires_at_ms]]


def evict_message(key: bytes, version: int) -> list:
    stamp, tag = split_version(version)
    return [EVICT, key, stamp, tag]
