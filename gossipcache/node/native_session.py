"""The native session: msgpack frames in, protocol-neutral commands to the core, frames out.

Each request frame is decoded (``gossipcache.wire.native``), translated into a command, executed
by the core and answered with its request id. Replies to commands that complete at once leave in
request order; a pending command is answered when the core completes it, possibly after later
requests (docs/protocol.md: clients match replies by request id).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import itemgetter

from ..errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    GossipCacheError,
    ProtocolError,
)
from ..metrics.counters import record_batch
from ..store import TTL_MISSING
from ..wire import native as protocol
from ..wire.framing import FrameDecoder, FrameTooLarge
from ..wire.native import (
    ERROR_BAD_REQUEST,
    ERROR_TOO_LARGE,
    ERROR_UNKNOWN_OP,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    RequestDecoder,
    ResponseEncoder,
    peek_request_id,
)
from . import commands as c
from .core import NodeCore, Pending
from .session import NOAUTH_MESSAGE, DispatchTable, Session, describe_error

# Encoders: (pack, request_id, result) -> the response frame, where ``pack`` is the session's
# ``ResponseEncoder.encode``. Status and packing in one call: one Python frame per reply.


def _ok(pack, request_id, result):
    return pack(request_id, STATUS_OK, result)


def _found_if_true(pack, request_id, result):
    if result:
        return pack(request_id, STATUS_OK, True)
    return pack(request_id, STATUS_NOT_FOUND, None)


def _value(pack, request_id, value):
    if value is None:
        return pack(request_id, STATUS_NOT_FOUND, None)
    return pack(request_id, STATUS_OK, value)


def _ttl(pack, request_id, ttl_ms):
    if ttl_ms == TTL_MISSING:
        return pack(request_id, STATUS_NOT_FOUND, None)
    return pack(request_id, STATUS_OK, ttl_ms)


def _expire(message: tuple) -> c.Command:
    ttl_ms = message[3]
    return c.Persist(message[2]) if ttl_ms is None else c.Expire(message[2], ttl_ms)


def _expire_with_level(message: tuple) -> c.Command:
    _, _, key, ttl_ms, level = message
    if ttl_ms is None:
        return c.Persist(key, consistency=level)
    return c.Expire(key, ttl_ms, consistency=level)


_with_level = protocol.with_consistency

#: Ops that translate to more than one command type: ``expire`` with nil is ``Persist``.
_OPS_OF_SEVERAL_TYPES = frozenset((protocol.OP_EXPIRE, _with_level(protocol.OP_EXPIRE)))

#: op -> (translator of the validated message ``(request_id, op, *args)`` into the command's
#: fields, encoder of the result into a response frame, the command type whose metrics series
#: it feeds).
NATIVE_OPS: dict[str, tuple[Callable, Callable, type[c.Command]]] = {
    protocol.OP_PING: (lambda m: c.Ping(), _ok, c.Ping),
    # The wire decoder has checked types and ranges: the hot ops slice the command, in C,
    # out of the message (op, key) and (op, key, value, ttl_ms): a Put's short form.
    protocol.OP_GET: (itemgetter(slice(1, 3)), _value, c.Get),
    protocol.OP_PUT: (itemgetter(slice(1, 5)), _ok, c.Put),
    protocol.OP_DEL: (lambda m: c.Delete((m[2],)), _found_if_true, c.Delete),
    protocol.OP_EXPIRE: (_expire, _found_if_true, c.Expire),
    protocol.OP_TTL: (lambda m: c.Ttl(m[2]), _ttl, c.Ttl),
    protocol.OP_STATS: (lambda m: c.Stats(), _ok, c.Stats),
    protocol.OP_MEMBERS: (lambda m: c.Members(), _ok, c.Members),
    protocol.OP_EXISTS: (lambda m: c.Exists((m[2],)), _found_if_true, c.Exists),
    protocol.OP_PERSIST: (lambda m: c.Persist(m[2]), _found_if_true, c.Persist),
    protocol.OP_TOPOLOGY: (lambda m: c.Topology(), _ok, c.Topology),
    protocol.OP_LEAVE: (lambda m: c.Leave(), _ok, c.Leave),
    # The data ops carrying a consistency level (their last argument, which the decoder
    # checked, and for which it tagged the op): whole commands, off the hot path.
    _with_level(protocol.OP_GET): (lambda m: c.Get(m[2], consistency=m[3]), _value, c.Get),
    _with_level(protocol.OP_PUT): (lambda m: c.Put(m[2], m[3], m[4], consistency=m[5]), _ok, c.Put),
    _with_level(protocol.OP_DEL): (
        lambda m: c.Delete((m[2],), consistency=m[3]),
        _found_if_true,
        c.Delete,
    ),
    _with_level(protocol.OP_EXPIRE): (_expire_with_level, _found_if_true, c.Expire),
    _with_level(protocol.OP_TTL): (lambda m: c.Ttl(m[2], consistency=m[3]), _ttl, c.Ttl),
    _with_level(protocol.OP_EXISTS): (
        lambda m: c.Exists((m[2],), consistency=m[3]),
        _found_if_true,
        c.Exists,
    ),
    _with_level(protocol.OP_PERSIST): (
        lambda m: c.Persist(m[2], consistency=m[3]),
        _found_if_true,
        c.Persist,
    ),
}
assert {_with_level(op) for op in protocol.OPS_WITH_CONSISTENCY} <= NATIVE_OPS.keys()


def _refuse_before_auth(message: tuple) -> c.Command:
    raise AuthenticationRequired(NOAUTH_MESSAGE)


class NativeTable(DispatchTable):
    """The native dispatch table, with the codec objects every session of the node shares: a
    msgpack ``Unpacker`` holds ~44 KiB and a ``Packer`` ~4 KiB, so one per connection cost
    48 KiB per idle connection (470 MiB at 10,000). One loop runs every session, and each
    request body is decoded whole, so sharing them is safe."""

    __slots__ = ("request_decoder", "response_encoder")


def native_table(core: NodeCore) -> NativeTable:
    """op -> (translator, the core's handler for its command type, encoder, metrics), built
    once per node (``NodeCore.handler_of``); its locked twin refuses every op (``auth`` is
    served by the session itself, on the slow path of ops the table does not know)."""
    table = {}
    locked = {}
    for op, (translate, encode, command_type) in NATIVE_OPS.items():
        handler, metrics = core.handler_of(command_type)
        if op in _OPS_OF_SEVERAL_TYPES:
            handler = None  # resolved per request, so each command counts in its own series
        table[op] = (translate, handler, encode, metrics)
        locked[op] = (_refuse_before_auth, handler, encode, metrics)
    native = NativeTable(table).with_locked(locked)
    native.request_decoder = RequestDecoder()
    native.response_encoder = ResponseEncoder()
    return native


class NativeSession(Session):
    """One native connection: its frame decoder and its replies ready to write."""

    __slots__ = ("decoder", "_table", "_request_decoder", "_encoder")

    def __init__(self, core: NodeCore, client_id: int, table: NativeTable) -> None:
        super().__init__(core, client_id)
        self.decoder = self.input_parser = FrameDecoder()
        self._table = self._initial_table(table)
        self._request_decoder = table.request_decoder
        self._encoder = table.response_encoder
        #: Completed pending commands whose replies are not yet taken.
        self.replies_held: deque[Pending] = deque()

    def receive(self, data: bytes) -> bytes:
        try:
            bodies = self.decoder.parse(data)
        except ProtocolError as error:
            # Framing is lost: say why (request id 0), then close. A length prefix over the cap
            # is ``too_large``, as docs/protocol.md says; any other framing error is
            # ``bad_request``.
            self.core.metrics.protocol_errors += 1
            self.closing = True
            code = ERROR_TOO_LARGE if isinstance(error, FrameTooLarge) else ERROR_BAD_REQUEST
            return self.take_ready() + self._encoder.encode(0, STATUS_ERROR, (code, str(error)))
        if not bodies:
            return b""
        if self.waiting:
            self.waiting.extend(bodies)
            return b""
        return self._run(bodies)

    def completed(self, pending: Pending) -> None:
        """``pending`` has its result; it is encoded when taken (``take_ready``), so completed
        replies waiting for the socket hold their results, not copies of them."""
        self._note_completed()
        self.replies_held.append(pending)

    @property
    def has_ready(self) -> bool:
        return bool(self.replies_held)

    @property
    def input_bytes(self) -> int:
        """Bytes received and not yet split into frames (a partial request)."""
        return self.decoder.buffered_size_bytes

    def take_ready(self) -> bytes:
        """Completed replies, encoded, up to ``connection_reply_bytes_max`` (plus the one that
        crosses it); the rest stay for the next call, once this is written."""
        ready = self.replies_held
        if not ready:
            return b""
        limit = self.core.config.connection_reply_bytes_max
        out = []
        size = 0
        while ready and size < limit:
            pending = ready.popleft()
            request_id, encode = pending.reply_tag
            if pending.error is not None:
                frame = self._error(request_id, pending.error)
            else:
                frame = self._encode(encode, request_id, pending.result)
            out.append(frame)
            size += len(frame)
        return b"".join(out)

    def _run(self, bodies: list[bytes]) -> bytes:
        core = self.core
        table = self._table
        decode = self._request_decoder.decode_message
        pack = self._encoder.encode
        clock = core.clock
        wall_ms = clock.wall_ms()
        out = []
        append = out.append
        served = []  # the histogram of every command answered, for ``record_batch``
        # Reply bytes produced: past the bound, the rest waits (``Session.resume``).
        produced = 0
        produced_max = core.config.connection_reply_bytes_max
        started_ns = clock.timer_ns()
        remaining = iter(bodies)
        for body in remaining:
            if produced >= produced_max:
                self.waiting.append(body)
                self.waiting.extend(remaining)
                break
            try:
                message = decode(body)
            except ProtocolError as error:
                code = getattr(error, "code", ERROR_BAD_REQUEST)
                request_id = getattr(error, "request_id", None) or peek_request_id(body) or 0
                append(self._encoder.encode(request_id, STATUS_ERROR, (code, str(error))))
                continue
            request_id = message[0]
            entry = table.get(message[1])
            if entry is None:
                if message[1] == protocol.OP_AUTH:
                    append(self._authenticate(request_id, message[2]))
                    table = self._table
                    continue
                reason = f"op {message[1]!r} is not served by this node"
                append(self._encoder.encode(request_id, STATUS_ERROR, (ERROR_UNKNOWN_OP, reason)))
                continue
            translate, handler, encode, metrics = entry
            try:
                command = translate(message)
                if handler is None:  # an op whose command type depends on its arguments
                    handler, metrics = core.handler_of(type(command))  # a Command object
                result = handler(command, wall_ms)
                if type(result) is Pending:
                    self._note_pending(result)
                    result.reply_tag = (request_id, encode)
                    if self._at_bound():
                        self.waiting.extend(remaining)
                        break
                    continue
                reply = encode(pack, request_id, result)
            except GossipCacheError as error:
                metrics.errors += 1
                reply = self._error(request_id, error)
            except Exception as error:  # a bug: answer, count, keep serving
                metrics.errors += 1
                core.metrics.internal_errors += 1
                reply = self._error(request_id, error)
            produced += len(reply)
            append(reply)
            served.append(metrics.latency_ns)
        record_batch(served, clock.timer_ns() - started_ns)
        return b"".join(out)

    def _authenticate(self, request_id: int, password: bytes) -> bytes:
        """The ``auth`` op: unlock the session's ops, or say why not (a session that was
        authenticated stays so)."""
        try:
            self._check_password(password)
        except AuthenticationFailed as error:
            return self._error(request_id, error)
        self._table = self._table.unlocked
        return self._encoder.encode(request_id, STATUS_OK, True)

    def _encode(self, encode: Callable, request_id: int, result: object) -> bytes:
        try:
            return encode(self._encoder.encode, request_id, result)
        except ValueError as error:  # a payload msgpack cannot encode: a bug, not the peer's
            self.core.metrics.internal_errors += 1
            return self._error(request_id, error)

    def _error(self, request_id: int, error: Exception) -> bytes:
        return self._encoder.encode(request_id, STATUS_ERROR, describe_error(error))
