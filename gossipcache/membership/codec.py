"""Wire format of the membership protocol: message classes, msgpack body, HMAC envelope, keyring.

Envelope of every datagram and stream frame::

    version (1 byte) | key id (1 byte) | tag (16 bytes) | body

``tag`` is HMAC-SHA256, truncated to 128 bits, over ``version | key id | channel byte | body``
with the key ``key id`` names in the :class:`Keyring`. Binding the channel into the tag stops a
datagram from being replayed as a stream frame. The body is a msgpack array of messages; each
message is a msgpack array ``[type, field, ...]``. A datagram carries one primary message (ping,
ack, ...) plus piggybacked member updates; a stream frame carries exactly one push-pull message.

Everything decoded from the wire is validated (types, lengths, integer ranges) and any failure
raises :class:`CodecError` with a short ``reason`` the core counts. Message type numbers are wire
protocol: the table :data:`MESSAGE_TYPES` is append-only.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import ClassVar

import msgpack

from ..errors import ProtocolError

WIRE_VERSION = 1
TAG_SIZE_BYTES = 16
HEADER_SIZE_BYTES = 2 + TAG_SIZE_BYTES
#: Worst-case msgpack array header of a body (array16: 0xdc + 2 bytes).
BODY_ARRAY_HEADER_BYTES_MAX = 3

#: Incarnations are unsigned 63-bit: a peer cannot push one past what we can still exceed.
INCARNATION_LIMIT = 2**63
#: Sequence numbers of probes wrap at 32 bits.
SEQ_LIMIT = 2**32
NODE_ID_LEN_MAX = 128
ADDRESS_LEN_MAX = 255
META_SIZE_BYTES_MAX = 128
#: Most members one push-pull may carry, and so the most members a node tracks.
MEMBERS_MAX = 10_000
#: Largest stream frame: MEMBERS_MAX states of at most ~530 bytes, rounded up.
STREAM_FRAME_SIZE_BYTES_MAX = 8 * 1024 * 1024
#: Most messages in one datagram body (a 1400-byte datagram cannot hold more than this anyway).
MESSAGES_PER_PACKET_MAX = 256

KEY_SIZE_BYTES_MIN = 16
KEY_SIZE_BYTES_MAX = 64
KEY_ID_MAX = 255

CHANNEL_BYTE_DATAGRAM = b"D"
CHANNEL_BYTE_STREAM = b"S"


class CodecError(ProtocolError):
    """Bytes from the wire failed authentication or validation. ``reason`` names the check."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Field validation (leaves: each checks one wire value and returns it typed).


def _int(value: object, limit: int, what: str) -> int:
    if type(value) is not int or value < 0:
        raise CodecError("malformed", f"{what} is not a non-negative int")
    if value >= limit:
        raise CodecError("out_of_range", f"{what} {value} >= {limit}")
    return value


def _incarnation(value: object) -> int:
    if type(value) is int and value >= INCARNATION_LIMIT:
        raise CodecError("incarnation_overflow", f"incarnation {value}")
    return _int(value, INCARNATION_LIMIT, "incarnation")


def _str(value: object, len_max: int, what: str) -> str:
    if type(value) is not str or not value or len(value) > len_max:
        raise CodecError("malformed", f"{what} is not a string of 1..{len_max} chars")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise CodecError("malformed", f"{what} is not a bool")
    return value


def _meta(value: object) -> bytes:
    if type(value) is not bytes or len(value) > META_SIZE_BYTES_MAX:
        raise CodecError("malformed", "meta is not bytes within bounds")
    return value


def _fields(item: object, count: int) -> list:
    if type(item) is not list or len(item) != count:
        raise CodecError("malformed", f"expected {count} fields")
    return item


# --------------------------------------------------------------------------------------------
# Messages. Frozen; each knows its type number and converts to / from a list of wire fields.


@dataclass(frozen=True, slots=True)
class Ping:
    """Are you alive? ``target_id`` lets a restarted process at the same address refuse to answer
    for the node it replaced."""

    TYPE: ClassVar[int] = 1
    seq: int
    target_id: str

    def to_wire(self) -> list:
        return [self.TYPE, self.seq, self.target_id]

    @classmethod
    def from_wire(cls, f: list) -> Ping:
        _fields(f, 3)
        return cls(_int(f[1], SEQ_LIMIT, "seq"), _str(f[2], NODE_ID_LEN_MAX, "target_id"))


@dataclass(frozen=True, slots=True)
class PingReq:
    """Please ping ``target`` for me and forward its ack with my ``seq`` (SWIM indirect probe).
    With ``want_nack`` the helper also reports a missing ack (Lifeguard)."""

    TYPE: ClassVar[int] = 2
    seq: int
    target_id: str
    target_address: str
    want_nack: bool

    def to_wire(self) -> list:
        return [self.TYPE, self.seq, self.target_id, self.target_address, self.want_nack]

    @classmethod
    def from_wire(cls, f: list) -> PingReq:
        _fields(f, 5)
        return cls(
            _int(f[1], SEQ_LIMIT, "seq"),
            _str(f[2], NODE_ID_LEN_MAX, "target_id"),
            _str(f[3], ADDRESS_LEN_MAX, "target_address"),
            _bool(f[4], "want_nack"),
        )


@dataclass(frozen=True, slots=True)
class _SeqReply:
    """Shared shape of ack and nack: a reply naming the prober's ``seq``."""

    TYPE: ClassVar[int] = 0
    seq: int

    def to_wire(self) -> list:
        return [self.TYPE, self.seq]

    @classmethod
    def from_wire(cls, f: list):  # -> the subclass
        _fields(f, 2)
        return cls(_int(f[1], SEQ_LIMIT, "seq"))


@dataclass(frozen=True, slots=True)
class Ack(_SeqReply):
    """Reply to a ping (or a forwarded reply to a ping-req) carrying the prober's ``seq``."""

    TYPE: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class Nack(_SeqReply):
    """A ping-req helper got no ack from the target in time: proof the helper is alive and that
    *we* are receiving, so a missed nack hints that the local node is the unhealthy one."""

    TYPE: ClassVar[int] = 4


@dataclass(frozen=True, slots=True)
class Alive:
    """Member update: ``node_id`` at ``address`` is alive at ``incarnation``."""

    TYPE: ClassVar[int] = 5
    node_id: str
    address: str
    incarnation: int
    meta: bytes = b""

    def to_wire(self) -> list:
        return [self.TYPE, self.node_id, self.address, self.incarnation, self.meta]

    @classmethod
    def from_wire(cls, f: list) -> Alive:
        _fields(f, 5)
        return cls(
            _str(f[1], NODE_ID_LEN_MAX, "node_id"),
            _str(f[2], ADDRESS_LEN_MAX, "address"),
            _incarnation(f[3]),
            _meta(f[4]),
        )


@dataclass(frozen=True, slots=True)
class _Accusation:
    """Shared shape of suspect and dead: ``from_id`` accuses ``node_id`` at ``incarnation``."""

    TYPE: ClassVar[int] = 0
    node_id: str
    incarnation: int
    from_id: str

    def to_wire(self) -> list:
        return [self.TYPE, self.node_id, self.incarnation, self.from_id]

    @classmethod
    def from_wire(cls, f: list):  # -> the subclass
        _fields(f, 4)
        return cls(
            _str(f[1], NODE_ID_LEN_MAX, "node_id"),
            _incarnation(f[2]),
            _str(f[3], NODE_ID_LEN_MAX, "from_id"),
        )


@dataclass(frozen=True, slots=True)
class Suspect(_Accusation):
    """Member update: ``from_id`` suspects ``node_id`` at ``incarnation``."""

    TYPE: ClassVar[int] = 6


@dataclass(frozen=True, slots=True)
class Dead(_Accusation):
    """Member update: ``from_id`` declared ``node_id`` dead at ``incarnation``."""

    TYPE: ClassVar[int] = 7


@dataclass(frozen=True, slots=True)
class Leave:
    """Member update: ``node_id`` left the cluster on purpose at ``incarnation``."""

    TYPE: ClassVar[int] = 8
    node_id: str
    incarnation: int

    def to_wire(self) -> list:
        return [self.TYPE, self.node_id, self.incarnation]

    @classmethod
    def from_wire(cls, f: list) -> Leave:
        _fields(f, 3)
        return cls(_str(f[1], NODE_ID_LEN_MAX, "node_id"), _incarnation(f[2]))


#: Member states as numbers on the wire (push-pull). Append-only.
STATE_ALIVE = 0
STATE_SUSPECT = 1
STATE_DEAD = 2
STATE_LEFT = 3
_STATE_LIMIT = 4


@dataclass(frozen=True, slots=True)
class NodeState:
    """One row of a push-pull: what the sender believes about one member."""

    node_id: str
    address: str
    incarnation: int
    state: int
    meta: bytes = b""

    def to_wire(self) -> list:
        return [self.node_id, self.address, self.incarnation, self.state, self.meta]

    @classmethod
    def from_wire(cls, f: object) -> NodeState:
        f = _fields(f, 5)
        return cls(
            _str(f[0], NODE_ID_LEN_MAX, "node_id"),
            _str(f[1], ADDRESS_LEN_MAX, "address"),
            _incarnation(f[2]),
            _int(f[3], _STATE_LIMIT, "state"),
            _meta(f[4]),
        )


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full member table exchange over a stream. The initiator sends ``reply=False`` (``join``
    when it is joining through a seed); the peer answers with its own table, ``reply=True``."""

    TYPE: ClassVar[int] = 9
    reply: bool
    join: bool
    states: tuple[NodeState, ...]

    def to_wire(self) -> list:
        return [self.TYPE, self.reply, self.join, [s.to_wire() for s in self.states]]

    @classmethod
    def from_wire(cls, f: list) -> PushPull:
        _fields(f, 4)
        if type(f[3]) is not list or len(f[3]) > MEMBERS_MAX:
            raise CodecError("malformed", "push-pull states")
        states = tuple(NodeState.from_wire(s) for s in f[3])
        return cls(_bool(f[1], "reply"), _bool(f[2], "join"), states)


Message = Ping | PingReq | Ack | Nack | Alive | Suspect | Dead | Leave | PushPull

#: Wire type number -> class. APPEND-ONLY: numbers are the wire protocol.
MESSAGE_TYPES: dict[int, type] = {
    Ping.TYPE: Ping,
    PingReq.TYPE: PingReq,
    Ack.TYPE: Ack,
    Nack.TYPE: Nack,
    Alive.TYPE: Alive,
    Suspect.TYPE: Suspect,
    Dead.TYPE: Dead,
    Leave.TYPE: Leave,
    PushPull.TYPE: PushPull,
}


def encode_message(message: Message) -> bytes:
    """One message as msgpack bytes (a body element). Encode once, reuse in many packets."""
    return msgpack.packb(message.to_wire(), use_bin_type=True)


def array_header(count: int) -> bytes:
    """msgpack array header for ``count`` elements, so a body can be built by concatenation."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 2**16:
        return b"\xdc" + count.to_bytes(2, "big")
    raise ValueError("too many messages in one body")


def decode_body(body: bytes, stream: bool) -> list[Message]:
    """Validate and decode a body (the bytes after the envelope). Raises CodecError."""
    try:
        items = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=4 * ADDRESS_LEN_MAX,  # bytes; fields check their length in chars
            max_bin_len=META_SIZE_BYTES_MAX,
            max_array_len=MEMBERS_MAX,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # hostile bytes can raise anything msgpack or utf-8 decoding can
        raise CodecError("malformed", type(exc).__name__) from exc
    if type(items) is not list or not items or len(items) > MESSAGES_PER_PACKET_MAX:
        raise CodecError("malformed", "body is not a non-empty list of messages")
    messages: list[Message] = []
    for item in items:
        if type(item) is not list or not item:
            raise CodecError("malformed", "message is not a list")
        cls = MESSAGE_TYPES.get(item[0]) if type(item[0]) is int else None
        if cls is None:
            raise CodecError("unknown_type", repr(item[0])[:20])
        if (cls is PushPull) != stream:
            raise CodecError("wrong_channel", cls.__name__)
        messages.append(cls.from_wire(item))
    return messages


# --------------------------------------------------------------------------------------------
# Authentication.


class Keyring:
    """Shared secret keys, each with a one-byte id. The primary key signs; every key verifies.

    Rotation without downtime: ``add_key`` the new key on every node, then ``use_key`` it on every
    node, then ``remove_key`` the old one everywhere. Between steps both keys verify.
    """

    def __init__(self, primary_key: bytes, primary_key_id: int = 0) -> None:
        self._keys: dict[int, bytes] = {}
        self.add_key(primary_key_id, primary_key)
        self._primary_key_id = primary_key_id

    @property
    def primary_key_id(self) -> int:
        return self._primary_key_id

    def key_ids(self) -> list[int]:
        return sorted(self._keys)

    def add_key(self, key_id: int, key: bytes) -> None:
        """Accept ``key`` for verification under ``key_id`` (replaces a key with that id)."""
        if not 0 <= key_id <= KEY_ID_MAX:
            raise ValueError(f"key_id must be 0..{KEY_ID_MAX}")
        if not KEY_SIZE_BYTES_MIN <= len(key) <= KEY_SIZE_BYTES_MAX:
            raise ValueError(f"key must be {KEY_SIZE_BYTES_MIN}..{KEY_SIZE_BYTES_MAX} bytes")
        self._keys[key_id] = bytes(key)

    def use_key(self, key_id: int) -> None:
        """Sign with ``key_id`` from now on. The key must have been added."""
        if key_id not in self._keys:
            raise KeyError(key_id)
        self._primary_key_id = key_id

    def remove_key(self, key_id: int) -> None:
        """Stop accepting ``key_id``. The primary key cannot be removed."""
        if key_id == self._primary_key_id:
            raise ValueError("cannot remove the primary key; use_key another one first")
        self._keys.pop(key_id, None)

    def seal(self, body: bytes, stream: bool) -> bytes:
        """Envelope ``body``: version, primary key id, tag, body."""
        head = bytes((WIRE_VERSION, self._primary_key_id))
        tag = _tag(self._keys[self._primary_key_id], head, stream, body)
        return head + tag + body

    def open(self, payload: bytes, stream: bool) -> bytes:
        """Check the envelope of ``payload`` and return its body. Raises CodecError."""
        size_max = STREAM_FRAME_SIZE_BYTES_MAX if stream else 65_507
        if len(payload) > size_max:
            raise CodecError("too_large", str(len(payload)))
        if len(payload) <= HEADER_SIZE_BYTES:
            raise CodecError("truncated", str(len(payload)))
        if payload[0] != WIRE_VERSION:
            raise CodecError("bad_version", str(payload[0]))
        key = self._keys.get(payload[1])
        if key is None:
            raise CodecError("unknown_key", str(payload[1]))
        body = payload[HEADER_SIZE_BYTES:]
        expected = _tag(key, payload[:2], stream, body)
        if not hmac.compare_digest(expected, payload[2:HEADER_SIZE_BYTES]):
            raise CodecError("bad_tag")
        return body


def _tag(key: bytes, head: bytes, stream: bool, body: bytes) -> bytes:
    channel = CHANNEL_BYTE_STREAM if stream else CHANNEL_BYTE_DATAGRAM
    return hmac.digest(key, head + channel + body, hashlib.sha256)[:TAG_SIZE_BYTES]


def encode_packet(keyring: Keyring, encoded_messages: list[bytes], stream: bool = False) -> bytes:
    """Seal a body made of already-encoded messages."""
    body = array_header(len(encoded_messages)) + b"".join(encoded_messages)
    return keyring.seal(body, stream)


def decode_packet(keyring: Keyring, payload: bytes, stream: bool = False) -> list[Message]:
    """Authenticate and decode a payload into its messages. Raises CodecError."""
    return decode_body(keyring.open(payload, stream), stream)
