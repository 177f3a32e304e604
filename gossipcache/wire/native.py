"""The native wire protocol: length-prefixed msgpack frames, sans-IO.

Nothing here touches a socket. The server and the client feed received bytes to a
``FrameDecoder``, get whole frame bodies back, and decode each body with ``decode_request`` /
``decode_response``; they send the bytes ``encode_request`` / ``encode_response`` return. The
full specification, with one section per op, is docs/protocol.md.

Frame::

    +----------------------+---------+------------------------------+
    | length L (u32, BE)   | version | msgpack body (L - 1 bytes)   |
    +----------------------+---------+------------------------------+

Request body: ``[request_id, op, *args]``. Response body: ``[request_id, status, payload]``.

Every decoder treats its input as hostile: a malformed frame or body raises ``ProtocolError``
(never another exception), and msgpack is unpacked with limits sized to what a valid message can
hold, so a small frame cannot make the unpacker allocate a huge structure.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import msgpack

from ..errors import ProtocolError
from ..limits import FRAME_SIZE_BYTES_MAX, TTL_MS_MAX
from .framing import FRAME_HEADER, PROTOCOL_VERSION, frame, frame_parts

#: Request ids are unsigned 32-bit: the client wraps around; ids only need to be unique among
#: the requests in flight on one connection.
REQUEST_ID_MAX = 2**32 - 1

#: Op codes. The set is append-only: the strings are wire protocol.
OP_PING = "ping"
OP_GET = "get"
OP_PUT = "put"
OP_DEL = "del"
OP_EXPIRE = "expire"
OP_TTL = "ttl"
OP_STATS = "stats"
OP_MEMBERS = "members"
OP_EXISTS = "exists"
OP_PERSIST = "persist"
OP_AUTH = "auth"
OP_TOPOLOGY = "topology"
OP_LEAVE = "leave"

#: Response statuses.
STATUS_OK = 0
STATUS_NOT_FOUND = 1
STATUS_ERROR = 2
STATUSES = frozenset((STATUS_OK, STATUS_NOT_FOUND, STATUS_ERROR))

#: Error codes carried in an ERROR response's payload ``[code, message]``.
ERROR_BAD_REQUEST = "bad_request"  # malformed body, wrong argument types or arity
ERROR_TOO_LARGE = "too_large"  # key, value or frame over a cap
ERROR_UNKNOWN_OP = "unknown_op"  # well-formed request naming an op this server does not know
ERROR_INTERNAL = "internal"  # a bug on the server; the request may or may not have applied
ERROR_UNAVAILABLE = "unavailable"  # the node cannot serve now (not enough replicas, shutting down)
ERROR_NOAUTH = "noauth"  # the node requires a client password: send ``auth`` first
ERROR_WRONG_PASSWORD = "wrong_password"  # ``auth`` with a password the node does not accept
ERROR_CODES = frozenset(
    (
        ERROR_BAD_REQUEST,
        ERROR_TOO_LARGE,
        ERROR_UNKNOWN_OP,
        ERROR_INTERNAL,
        ERROR_UNAVAILABLE,
        ERROR_NOAUTH,
        ERROR_WRONG_PASSWORD,
    )
)

#: Unpacker limits. A request holds at most a handful of scalars; a response payload may be a
#: stats map or a member list, bounded here. Strings are op names, error messages, stat names
#: and member addresses.
REQUEST_ARRAY_LEN_MAX = 8
RESPONSE_ARRAY_LEN_MAX = 65536
RESPONSE_MAP_LEN_MAX = 4096
STR_SIZE_BYTES_MAX = 64 * 1024

# Argument kinds in the per-op table below.
_KEY = "key"  # bin
_VALUE = "value"  # bin
_TTL_PUT = "ttl_put"  # positive int or nil
_TTL_EXPIRE = "ttl_expire"  # int or nil: nil clears the TTL, <= 0 deletes the key (as Redis)
_PASSWORD = "password"  # bin

#: The one table of ops and their arguments (arity is the tuple's length).
OP_ARGS: dict[str, tuple[str, ...]] = {
    OP_PING: (),
    OP_GET: (_KEY,),
    OP_PUT: (_KEY, _VALUE, _TTL_PUT),
    OP_DEL: (_KEY,),
    OP_EXPIRE: (_KEY, _TTL_EXPIRE),
    OP_TTL: (_KEY,),
    OP_STATS: (),
    OP_MEMBERS: (),
    OP_EXISTS: (_KEY,),
    OP_PERSIST: (_KEY,),
    OP_AUTH: (_PASSWORD,),
    OP_TOPOLOGY: (),
    OP_LEAVE: (),
}
OPS = frozenset(OP_ARGS)

#: The consistency levels a data op may carry as an optional last argument (a str), beyond the
#: arity ``OP_ARGS`` gives; without it the node applies its default for the op.
CONSISTENCY_LEVELS = ("one", "quorum", "all")
_CONSISTENCY_LEVEL_SET = frozenset(CONSISTENCY_LEVELS)
OPS_WITH_CONSISTENCY = frozenset((OP_GET, OP_PUT, OP_DEL, OP_EXPIRE, OP_TTL, OP_EXISTS, OP_PERSIST))
#: ``RequestDecoder.decode_message`` returns a request that carries a consistency level under
#: its op plus this suffix (``"get+consistency"``): a name no client can send, so a dispatcher
#: keyed by op serves the two forms with different translators and the common short form never
#: counts its arguments.
CONSISTENCY_OP_SUFFIX = "+consistency"


def with_consistency(op: str) -> str:
    """The name ``RequestDecoder.decode_message`` gives ``op`` carrying a consistency level."""
    return op + CONSISTENCY_OP_SUFFIX


def _unpack_options(array_len_max: int, map_len_max: int, use_list: bool) -> dict[str, object]:
    """``msgpack.unpackb`` options bounding every length by what a valid message can hold.
    Ext types are refused outright: the protocol never sends them."""
    return {
        "raw": False,
        "use_list": use_list,
        "strict_map_key": True,
        "max_bin_len": FRAME_SIZE_BYTES_MAX,
        "max_str_len": STR_SIZE_BYTES_MAX,
        "max_array_len": array_len_max,
        "max_map_len": map_len_max,
        "max_ext_len": 0,
    }


#: Messages larger than this bypass the reused msgpack packer and unpacker of ``ResponseEncoder``
#: and ``RequestDecoder``, which keep a buffer grown to the largest message they ever handled:
#: through them, every connection that once moved a 16 MiB value would hold 16 MiB while idle.
#: msgpack's initial packer buffer; smaller messages never grow it.
LARGE_MESSAGE_SIZE_BYTES = 256 * 1024

# Requests unpack to tuples so ``args`` is a slice of the message, no copy into a new type.
_REQUEST_UNPACK_OPTIONS = _unpack_options(REQUEST_ARRAY_LEN_MAX, 0, use_list=False)
_RESPONSE_UNPACK_OPTIONS = _unpack_options(
    RESPONSE_ARRAY_LEN_MAX, RESPONSE_MAP_LEN_MAX, use_list=True
)

# Everything msgpack's unpacker raises for bad input (ExtraData, FormatError, StackError and
# OutOfData derive from ValueError; UnicodeDecodeError too).
_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def _describe_unpack_error(error: Exception) -> str:
    return f"malformed msgpack ({type(error).__name__}: {error})"


class Request(NamedTuple):
    """One request. ``args`` follows ``OP_ARGS[op]``: keys and values are bytes."""

    request_id: int
    op: str
    args: tuple


class Response(NamedTuple):
    """One response. ``payload``: the result for OK, None for NOT_FOUND, ``(code, message)`` for
    ERROR (see ``error_response``)."""

    request_id: int
    status: int
    payload: object


class BadRequest(ProtocolError):
    """A well-framed request body that is not a valid request.

    Framing is intact, so the server can answer with an ERROR response (``code``:
    ``bad_request`` or ``unknown_op``) to ``request_id`` when it could be read (else 0) and keep
    the connection.
    """

    def __init__(self, message: str, code: str = ERROR_BAD_REQUEST, request_id: int | None = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def error_response(request_id: int, code: str, message: str) -> Response:
    """An ERROR response carrying ``code`` (one of ``ERROR_CODES``) and a human message."""
    return Response(request_id, STATUS_ERROR, (code, message))


# -- requests --------------------------------------------------------------------------------


def _check_request_id(request_id: object) -> int:
    if type(request_id) is not int or not 0 <= request_id <= REQUEST_ID_MAX:
        raise ProtocolError(f"request id must be an int in [0, 2**32), got {request_id!r:.40}")
    return request_id


def _check_args(op: str, args: tuple) -> None:
    """Raise ``ProtocolError`` unless ``args`` match ``OP_ARGS[op]`` (and, for the ops of
    ``OPS_WITH_CONSISTENCY``, an optional consistency level after them)."""
    kinds = OP_ARGS[op]
    takes_level = op in OPS_WITH_CONSISTENCY
    if takes_level and len(args) == len(kinds) + 1:
        level = args[-1]
        if type(level) is not str or level not in _CONSISTENCY_LEVEL_SET:
            raise ProtocolError(
                f"op {op!r} consistency must be one of {', '.join(CONSISTENCY_LEVELS)},"
                f" got {level!r:.40}"
            )
        args = args[:-1]
    if len(args) != len(kinds):
        also = f" ({len(kinds) + 1} with a consistency level)" if takes_level else ""
        raise ProtocolError(f"op {op!r} takes {len(kinds)} arguments{also}, got {len(args)}")
    for index, (kind, arg) in enumerate(zip(kinds, args)):
        if kind is _KEY or kind is _VALUE or kind is _PASSWORD:
            if type(arg) is not bytes:
                raise ProtocolError(
                    f"op {op!r} argument {index} ({kind}) must be bin, got {type(arg).__name__}"
                )
        elif arg is not None:
            if type(arg) is not int:
                raise ProtocolError(
                    f"op {op!r} argument {index} (ttl_ms) must be an int or nil,"
                    f" got {type(arg).__name__}"
                )
            low = 1 if kind is _TTL_PUT else -TTL_MS_MAX
            if not low <= arg <= TTL_MS_MAX:
                raise ProtocolError(f"op {op!r} ttl_ms {arg} is outside [{low}, {TTL_MS_MAX}]")


# Fast validity checks on a whole request message ``(request_id, op, *args)``, one per op: the
# hot path pays for a few type checks only. When one fails, ``_explain_invalid`` finds the
# precise reason with ``_check_args``.
def _valid_without_args(message: tuple) -> bool:
    return len(message) == 2


def _valid_key_only(message: tuple) -> bool:
    return len(message) == 3 and type(message[2]) is bytes


def _valid_put(message: tuple) -> bool:
    if len(message) != 5:
        return False
    _, _, key, value, ttl_ms = message
    return (
        type(key) is bytes
        and type(value) is bytes
        and (ttl_ms is None or (type(ttl_ms) is int and 0 < ttl_ms <= TTL_MS_MAX))
    )


def _valid_expire(message: tuple) -> bool:
    if len(message) != 4:
        return False
    _, _, key, ttl_ms = message
    return type(key) is bytes and (
        ttl_ms is None or (type(ttl_ms) is int and -TTL_MS_MAX <= ttl_ms <= TTL_MS_MAX)
    )


_VALID_MESSAGE = {
    OP_PING: _valid_without_args,
    OP_GET: _valid_key_only,
    OP_PUT: _valid_put,
    OP_DEL: _valid_key_only,
    OP_EXPIRE: _valid_expire,
    OP_TTL: _valid_key_only,
    OP_STATS: _valid_without_args,
    OP_MEMBERS: _valid_without_args,
    OP_EXISTS: _valid_key_only,
    OP_PERSIST: _valid_key_only,
    OP_AUTH: _valid_key_only,  # one bin argument, the password
    OP_TOPOLOGY: _valid_without_args,
    OP_LEAVE: _valid_without_args,
}
assert set(_VALID_MESSAGE) == OPS, "every op needs a fast validity check"


def _valid_with_consistency(message: tuple) -> bool:
    """A request of an op of ``OPS_WITH_CONSISTENCY`` carrying a level: the short form's
    checks on the message without its last item, which must name a level. Only tried once the
    short form's check failed, so the common requests never pay for it."""
    op = message[1]
    level = message[-1]
    return (
        op in OPS_WITH_CONSISTENCY
        and type(level) is str
        and level in _CONSISTENCY_LEVEL_SET
        and _VALID_MESSAGE[op](message[:-1])
    )


def _tagged(message: tuple) -> tuple:
    """A valid message as ``decode_message`` returns it: the long form's op tagged."""
    if len(message) - 2 > len(OP_ARGS[message[1]]):
        return (message[0], with_consistency(message[1]), *message[2:])
    return message


_BIN32_HEADER = struct.Struct(">BI")  # msgpack bin 32: type byte, length
_frame_header = FRAME_HEADER.pack

_new_request = Request._make  # skips NamedTuple.__new__'s argument handling


def _is_valid_request(message: tuple) -> bool:
    request_id = message[0]
    op = message[1]
    if type(request_id) is not int or not 0 <= request_id <= REQUEST_ID_MAX or type(op) is not str:
        return False
    valid = _VALID_MESSAGE.get(op)
    return valid is not None and (valid(message) or _valid_with_consistency(message))


def _explain_invalid(message: object, request_id_readable: int | None) -> BadRequest:
    """The precise ``BadRequest`` for a message that failed the fast checks."""
    if type(message) is not tuple or len(message) < 2:
        return BadRequest(
            "request must be an array [request_id, op, *args]", request_id=request_id_readable
        )
    request_id, op = message[0], message[1]
    try:
        _check_request_id(request_id)
    except ProtocolError as error:
        return BadRequest(str(error))
    if type(op) is not str:
        return BadRequest(f"op must be a str, got {type(op).__name__}", request_id=request_id)
    if op not in OP_ARGS:
        return BadRequest(f"unknown op {op!r:.80}", ERROR_UNKNOWN_OP, request_id)
    try:
        _check_args(op, message[2:])
    except ProtocolError as error:
        return BadRequest(str(error), request_id=request_id)
    # Unreachable while _VALID_MESSAGE and _check_args agree; tests check they do.
    return BadRequest(f"invalid {op!r} request", request_id=request_id)


def encode_request(request: Request) -> bytes:
    """The full frame (length prefix included) for ``request``.

    Raises ``ValueError`` (``ProtocolError`` is for the peer's mistakes; this is the caller's) for
    an invalid request and ``ValueTooLarge`` when the frame would exceed ``FRAME_SIZE_BYTES_MAX``.
    """
    request_id, op, args = request
    message = (request_id, op, *args)
    if not _is_valid_request(message):
        raise ValueError(str(_explain_invalid(message, None)))
    return frame(msgpack.packb(message))


def peek_request_id(body: bytes) -> int | None:
    """The request id of a request body, if one can be read, even when the rest is invalid.

    Lets the server answer a malformed request with an ERROR response to the right id.
    """
    # The id is the first element of the top-level array. Stream-unpack just that element so a
    # broken tail does not matter.
    unpacker = msgpack.Unpacker(
        max_buffer_size=len(body) or 1, max_bin_len=0, max_str_len=0, max_ext_len=0,
        max_array_len=REQUEST_ARRAY_LEN_MAX, max_map_len=0,
    )  # fmt: skip
    try:
        unpacker.feed(body)
        if unpacker.read_array_header() < 1:
            return None
        request_id = unpacker.unpack()
    except (*_UNPACK_ERRORS, msgpack.OutOfData, StopIteration):
        return None
    if type(request_id) is not int or not 0 <= request_id <= REQUEST_ID_MAX:
        return None
    return request_id


def decode_request(body: bytes) -> Request:
    """Decode a frame body into a ``Request``.

    Raises ``BadRequest`` (a ``ProtocolError``) for any malformed body, with ``code``
    ``unknown_op`` when only the op name is unknown, and ``request_id`` when it was readable.
    """
    try:
        message = msgpack.unpackb(body, **_REQUEST_UNPACK_OPTIONS)
    except _UNPACK_ERRORS as error:
        raise BadRequest(_describe_unpack_error(error), request_id=peek_request_id(body)) from None
    if type(message) is tuple and len(message) >= 2 and _is_valid_request(message):
        return _new_request((message[0], message[1], message[2:]))
    raise _explain_invalid(message, peek_request_id(body))


class RequestDecoder:
    """``decode_request`` for a server's hot path: the same checks and errors, with one reusable
    ``msgpack.Unpacker`` instead of a new one (and its options parsed) per request, and the
    validated message returned as it was unpacked, ``(request_id, op, *args)``, without building
    a ``Request``; a request carrying a consistency level comes back with its op tagged
    (``with_consistency(op)``). Not thread-safe: one per event loop."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(**_REQUEST_UNPACK_OPTIONS)

    def decode_message(self, body: bytes) -> tuple:
        """The message tuple of a valid request body; ``BadRequest`` otherwise."""
        if len(body) > LARGE_MESSAGE_SIZE_BYTES:
            # Unpacked in place: no copy into the unpacker's buffer, none kept (and ~3x faster
            # for a 16 MiB value).
            request = decode_request(body)
            return _tagged((request.request_id, request.op, *request.args))
        unpacker = self._unpacker
        start = unpacker.tell()
        unpacker.feed(body)
        try:
            message = unpacker.unpack()
            complete = unpacker.tell() - start == len(body)
        except (*_UNPACK_ERRORS, msgpack.OutOfData):
            complete = False
        if not complete:
            # Bad or trailing bytes may be left in the unpacker: start afresh, and let the
            # one-shot decoder produce the precise error.
            self._unpacker = msgpack.Unpacker(**_REQUEST_UNPACK_OPTIONS)
            request = decode_request(body)
            return _tagged((request.request_id, request.op, *request.args))
        if type(message) is tuple and len(message) >= 2:
            request_id = message[0]
            if type(request_id) is int and 0 <= request_id <= REQUEST_ID_MAX:
                valid = _VALID_MESSAGE.get(message[1])
                if valid is not None:
                    if valid(message):
                        return message
                    if _valid_with_consistency(message):
                        return _tagged(message)
        raise _explain_invalid(message, peek_request_id(body))

    def decode(self, body: bytes) -> Request:
        """Like ``decode_request`` (the op as sent, untagged)."""
        message = self.decode_message(body)
        op = message[1]
        if op.endswith(CONSISTENCY_OP_SUFFIX):
            op = op[: -len(CONSISTENCY_OP_SUFFIX)]
        return _new_request((message[0], op, message[2:]))


# -- responses -------------------------------------------------------------------------------


def _check_response(request_id: object, status: object, payload: object) -> None:
    _check_request_id(request_id)
    if type(status) is not int or status not in STATUSES:
        raise ProtocolError(f"unknown status {status!r:.40}")
    if status == STATUS_NOT_FOUND and payload is not None:
        raise ProtocolError("a NOT_FOUND response carries no payload")
    if status == STATUS_ERROR and not (
        isinstance(payload, tuple | list)
        and len(payload) == 2
        and type(payload[0]) is str
        and type(payload[1]) is str
    ):
        raise ProtocolError("an ERROR response's payload must be [code: str, message: str]")


def encode_response(response: Response) -> bytes:
    """The full frame (length prefix included) for ``response``.

    Raises ``ValueError`` for an invalid response (unknown status, malformed error payload) or a
    payload msgpack cannot encode, and ``ValueTooLarge`` when the frame would exceed
    ``FRAME_SIZE_BYTES_MAX``.
    """
    request_id, status, payload = response
    # Only an OK response to a valid id skips the checks: it is the hot path and its payload
    # is whatever msgpack can encode.
    if not (
        type(status) is int
        and status == STATUS_OK
        and type(request_id) is int
        and 0 <= request_id <= REQUEST_ID_MAX
    ):
        try:
            _check_response(request_id, status, payload)
        except ProtocolError as error:
            raise ValueError(str(error)) from None
    try:
        body = msgpack.packb((request_id, status, payload))
    except (TypeError, OverflowError, ValueError) as error:
        raise ValueError(f"cannot encode payload: {error}") from None
    return frame(body)


class ResponseEncoder:
    """``encode_response`` for a server's hot path: one reusable ``msgpack.Packer``, and no
    validation of what the server itself built (``status`` one of ``STATUSES``; an ERROR payload
    a ``(code, message)`` pair). Raises ``ValueError`` if msgpack cannot encode the payload and
    ``ValueTooLarge`` over the frame cap. Not thread-safe: one per event loop."""

    def __init__(self) -> None:
        self._pack = msgpack.Packer().pack

    def encode(self, request_id: int, status: int, payload: object) -> bytes:
        if type(payload) is bytes or payload is None:  # a value or nothing: the common replies
            if payload is not None and len(payload) > LARGE_MESSAGE_SIZE_BYTES:
                return self._encode_large_value(request_id, status, payload)
            # Cannot fail, and far below the frame cap: framed inline, no call.
            body = self._pack((request_id, status, payload))
            return _frame_header(len(body) + 1, PROTOCOL_VERSION) + body
        try:
            body = self._pack((request_id, status, payload))
        except (TypeError, OverflowError, ValueError) as error:
            self._pack = msgpack.Packer().pack  # a failed pack may leave state behind
            raise ValueError(f"cannot encode payload: {error}") from None
        if len(body) > LARGE_MESSAGE_SIZE_BYTES:  # a large stats map or member list
            self._pack = msgpack.Packer().pack  # do not keep a buffer grown to its size
        return frame(body)

    def _encode_large_value(self, request_id: int, status: int, value: bytes) -> bytes:
        """The frame of a response carrying a large value, assembled around it: the value is
        copied once, into the frame (packing copies it twice, and keeps a buffer its size)."""
        # ``[request_id, status, b""]`` packs to its head followed by b"\xc4\x00" (bin 8, empty);
        # a value this large takes a bin 32 header instead.
        head = self._pack((request_id, status, b""))[:-2]
        return frame_parts((head, _BIN32_HEADER.pack(0xC6, len(value)), value))


def decode_response(body: bytes) -> Response:
    """Decode a frame body into a ``Response``; ``ProtocolError`` for any malformed body.

    Arrays in an OK payload come back as lists; an ERROR payload as a ``(code, message)`` tuple.
    """
    try:
        message = msgpack.unpackb(body, **_RESPONSE_UNPACK_OPTIONS)
    except _UNPACK_ERRORS as error:
        raise ProtocolError(_describe_unpack_error(error)) from None
    if type(message) is not list or len(message) != 3:
        raise ProtocolError("response must be an array [request_id, status, payload]")
    request_id, status, payload = message
    _check_response(request_id, status, payload)
    if status == STATUS_ERROR:
        payload = (payload[0], payload[1])
    return Response(request_id, status, payload)
