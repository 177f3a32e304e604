"""The RESP session: Redis commands in, protocol-neutral commands to the core, RESP replies out.

Enough of Redis for redis-cli, redis-py and redis-benchmark to work unmodified: PING, ECHO, GET,
SET (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL, GET), DEL, EXISTS, EXPIRE / PEXPIRE / EXPIREAT /
PEXPIREAT (NX, XX, GT, LT), PERSIST, TTL, PTTL, DBSIZE, INFO, CONFIG GET, COMMAND, CLIENT
SETNAME/GETNAME/SETINFO/ID, SELECT 0, HELLO (2 or 3), QUIT, FLUSHALL, FLUSHDB. A session that says
HELLO 3 gets RESP3's null and map types. Error replies use Redis' wording so clients map them to
the same exceptions.

Every Redis command has a translator ``(session, args) -> Command | bytes``: a command for the
core, or a finished reply (session-local commands such as HELLO, and argument errors). The
core's handler for the command's type runs it (``NodeCore.handler_of``: the same code
``NodeCore.execute`` runs, looked up once per node instead of once per command), and its encoder
turns the result into the reply. The hottest commands (GET key, SET key value) skip the
translator: their argument list has the shape of the command, ``(name, *fields)``
(``_DIRECT_ARITY``), and goes to the handler as it is; building an object per request would
cost more than serving a GET. Replies leave in request order: while a
command is pending, later replies queue behind it (``_replies``) and the longest completed prefix
is written.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from ..errors import AuthenticationFailed, EntryTooLarge, GossipCacheError, ProtocolError
from ..limits import ARGS_PER_COMMAND_MAX, CONFIG_PATTERNS_SIZE_BYTES_MAX, EXPIRES_AT_MS_MAX
from ..metrics.counters import record_batch
from ..store import TTL_MISSING, TTL_PERSISTENT
from ..wire.resp import (
    EMPTY_ARRAY,
    INT64_MAX,
    INT64_MIN,
    NULL_BULK,
    OK,
    PONG,
    RespParser,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_simple,
    parse_integer,
)
from . import commands as c
from .core import NodeCore, Pending
from .session import (
    DEFAULT_USER,
    ERROR_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_NOAUTH,
    ERROR_TOO_LARGE,
    ERROR_UNAVAILABLE,
    ERROR_WRONG_PASSWORD,
    NOAUTH_MESSAGE,
    DispatchTable,
    Session,
    describe_error,
)

_ZERO = b":0\r\n"
_ONE = b":1\r\n"
_SYNTAX = encode_error("ERR syntax error")
_NOT_INTEGER = encode_error("ERR value is not an integer or out of range")
_RESP3_NULL = b"_\r\n"

#: How each error kind reads in Redis' words: ERR for the caller's mistakes (what Redis says for
#: over-long arguments too), TRYAGAIN (which clients retry) for a node that cannot serve now.
_ERROR_PREFIX = {
    ERROR_BAD_REQUEST: "ERR",
    ERROR_TOO_LARGE: "ERR",
    ERROR_UNAVAILABLE: "TRYAGAIN",
    ERROR_INTERNAL: "ERR",
    ERROR_NOAUTH: "NOAUTH",
    ERROR_WRONG_PASSWORD: "WRONGPASS",
}


def error_reply(error: Exception) -> bytes:
    kind, message = describe_error(error)
    if type(error) is EntryTooLarge:
        # An entry the memory limit can never hold: Redis' prefix for writes refused for
        # memory, so clients raise the same exception (redis-py: OutOfMemoryError).
        return encode_error(f"OOM {message}")
    return encode_error(f"{_ERROR_PREFIX[kind]} {message}")


class RespSession(Session):
    """One RESP connection: parser, HELLO version, client name, and the in-order reply queue."""

    __slots__ = ("parser", "name", "protocol_version", "_replies", "_queued_bytes", "_table")

    def __init__(self, core: NodeCore, client_id: int, table: dict[bytes, tuple]) -> None:
        """``table`` is ``resp_table(core)``, built once per node and shared by its sessions."""
        super().__init__(core, client_id)
        self.parser = self.input_parser = RespParser()
        self.name = b""
        self.protocol_version = 2
        #: Replies waiting behind a pending command: ``bytes`` when ready, else
        #: ``[Pending, encoder]``. Empty whenever nothing is pending (the hot path).
        self._replies: deque = deque()
        self.replies_held = self._replies
        #: Bytes of the ready replies in ``_replies`` (they count against the reply bound).
        self._queued_bytes = 0
        self._table = self._initial_table(table)

    # -- driver interface ------------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Parse ``data``, run every complete command it may, and return the replies that can
        be written now. Marks the session ``closing`` after malformed input or QUIT."""
        try:
            commands = self.parser.parse(data)
        except ProtocolError as error:
            # Commands complete before the bad one are lost with the connection, as in Redis.
            self.core.metrics.protocol_errors += 1
            self.closing = True
            reply = encode_error(f"ERR {error}")
            if self._replies:  # after the replies still queued, in order
                self._queue(reply)
                return self.take_ready()
            return reply
        if not commands:
            return b""
        if self.waiting:
            self.waiting.extend(commands)
            return b""
        return self._run(commands)

    @property
    def authenticated(self) -> bool:
        """Whether commands run (no client password, or it was given)."""
        return self._table is self._table.unlocked

    def authenticate(self, password: bytes, user: bytes = DEFAULT_USER) -> None:
        """Unlock the session's commands, or raise ``AuthenticationFailed`` (a session that
        was authenticated stays so, as in Redis)."""
        self._check_password(password, user)
        self._table = self._table.unlocked

    @property
    def input_bytes(self) -> int:
        """Bytes received and not yet parsed into commands (a partial request)."""
        return self.parser.buffered_size_bytes

    def completed(self, pending: Pending) -> None:
        """``pending`` (one of this session's) has its result; requests that waited run on
        ``resume``."""
        self._note_completed()

    def take_ready(self) -> bytes:
        """The replies at the head of the queue that are complete, in order, up to
        ``connection_reply_bytes_max`` (plus the one that crosses it): a completed reply is
        encoded only when taken, so those left for the next call hold their results, not
        copies of them."""
        replies = self._replies
        limit = self.core.config.connection_reply_bytes_max
        out = []
        size = 0
        while replies and size < limit:
            head = replies[0]
            if type(head) is bytes:
                self._queued_bytes -= len(head)
            else:
                pending, encode = head
                if not pending.done:
                    break
                head = self._reply_to_completion(pending, encode)
            out.append(head)
            size += len(head)
            replies.popleft()
        return b"".join(out)

    @property
    def has_ready(self) -> bool:
        """A completed reply waits at the head of the queue (``take_ready`` stopped at the
        bound)."""
        replies = self._replies
        if not replies:
            return False
        head = replies[0]
        return type(head) is bytes or head[0].done

    def _queued_reply_bytes(self) -> int:
        return self._queued_bytes

    def _queue(self, reply: bytes) -> None:
        """Hold ``reply`` behind the pending command ahead of it."""
        self._replies.append(reply)
        self._queued_bytes += len(reply)

    # -- the dispatch loop -----------------------------------------------------------------------

    def _run(self, commands: list[list[bytes]]) -> bytes:
        """Translate, execute and encode ``commands`` in order; see the module docstring.

        The hot path: one table lookup, the translator, the core's handler for the command's
        type and the encoder, with the bookkeeping of pending commands and session-local ones
        kept out of the common case."""
        core = self.core
        table = self._table
        clock = core.clock
        wall_ms = clock.wall_ms()
        replies = self._replies
        resp3 = self.protocol_version == 3
        out = []
        served = []  # the histogram of every command answered, for ``record_batch``
        # Reply bytes produced (or queued before this call): past the bound, the rest waits.
        produced = self._queued_bytes
        produced_max = core.config.connection_reply_bytes_max
        started_ns = clock.timer_ns()
        remaining = iter(commands)
        for args in remaining:
            if produced >= produced_max:
                self.waiting.append(args)
                self.waiting.extend(remaining)
                break
            entry = table.get(args[0])
            if entry is None:
                entry = table.get(_word(args[0]))
                if entry is None:
                    reply = _unknown_command(args)
                    produced += len(reply)
                    if replies:
                        self._queue(reply)
                    else:
                        out.append(reply)
                    continue
            translate, handler, encode, metrics, histogram, direct_arity = entry
            try:
                if len(args) == direct_arity:
                    # The argument list is the command (``_DIRECT_ARITY``): no translator.
                    result = handler(args, wall_ms)
                else:
                    if len(args) <= ARGS_PER_COMMAND_MAX:
                        command = translate(self, args)
                    else:  # every loop over arguments is bounded by this (docs/design.md)
                        command = _too_many_args(args)
                    if type(command) is bytes:  # an argument error, or a session-local reply
                        if command[0] == 45:  # b"-"
                            metrics.errors += 1
                        elif resp3 and command == NULL_BULK:  # CLIENT GETNAME without a name
                            command = _RESP3_NULL
                        served.append(histogram)
                        produced += len(command)
                        if replies:
                            self._queue(command)
                        else:
                            out.append(command)
                        if handler is None:
                            resp3 = self.protocol_version == 3  # HELLO may have changed it
                            if self.closing:  # QUIT: nothing after it is answered
                                self.waiting.clear()
                                break
                        continue
                    result = handler(command, wall_ms)
                if type(result) is Pending:
                    self._note_pending(result)
                    replies.append([result, encode])
                    if self._at_bound():
                        self.waiting.extend(remaining)
                        break
                    continue
                reply = encode(result)
            except GossipCacheError as error:
                metrics.errors += 1
                reply = error_reply(error)
            except Exception as error:  # a bug: answer, count, keep serving
                metrics.errors += 1
                core.metrics.internal_errors += 1
                reply = error_reply(error)
            served.append(histogram)
            if resp3 and reply == NULL_BULK:
                reply = _RESP3_NULL
            produced += len(reply)
            if replies:
                self._queue(reply)
            else:
                out.append(reply)
        record_batch(served, clock.timer_ns() - started_ns)
        return b"".join(out)

    def _reply_to_completion(self, pending: Pending, encode: Callable) -> bytes:
        if pending.error is not None:
            return error_reply(pending.error)
        try:
            reply = encode(pending.result)
        except Exception as error:
            self.core.metrics.internal_errors += 1
            return error_reply(error)
        return _RESP3_NULL if self.protocol_version == 3 and reply == NULL_BULK else reply

    def encode_map(self, pairs: list) -> bytes:
        """A map reply: RESP3's ``%`` type, or the flat array RESP2 clients expect."""
        if self.protocol_version == 2:
            return encode_array([item for pair in pairs for item in pair])
        parts = [b"%%%d\r\n" % len(pairs)]
        for key, value in pairs:
            parts.append(encode_array([key, value])[len(b"*2\r\n") :])
        return b"".join(parts)


# -- argument helpers --------------------------------------------------------------------------

#: Longest option, subcommand or INFO section name worth comparing ("GETKEYSANDFLAGS"): a
#: longer argument is none of them, and is refused without being upper-cased or decoded, so an
#: option of 16 MiB costs no more than a short one.
_WORD_SIZE_BYTES_MAX = 32


def _word(raw: bytes) -> bytes:
    """``raw`` upper-cased for comparison with option names; b"" when too long to be one."""
    return raw.upper() if len(raw) <= _WORD_SIZE_BYTES_MAX else b""


def _shown(raw: bytes, size_bytes_max: int = 128) -> str:
    """An argument quoted in an error message as Redis prints it (``%.128s``): cut at 128
    bytes, or at a NUL byte (the end of a C string)."""
    return raw[:size_bytes_max].split(b"\0", 1)[0].decode(errors="replace")


def _wrong_arity(name: str) -> bytes:
    return encode_error(f"ERR wrong number of arguments for '{name}' command")


def _arity_ok(args: list[bytes], arity: int) -> bool:
    """Redis' arity rule: a positive arity is the exact argument count (name included), a
    negative one the least."""
    return len(args) == arity if arity >= 0 else len(args) >= -arity


def _unknown_subcommand(container: str, raw: bytes) -> bytes:
    return encode_error(f"ERR unknown subcommand '{_shown(raw)}'. Try {container} HELP.")


def _too_many_args(args: list[bytes]) -> bytes:
    name = _shown(args[0]).lower()
    return encode_error(
        f"ERR too many arguments for '{name}' command"
        f" (at most {ARGS_PER_COMMAND_MAX}, name included)"
    )


def _invalid_expire_time(name: str) -> bytes:
    return encode_error(f"ERR invalid expire time in '{name}' command")


def _help(lines: list[str]) -> bytes:
    """A HELP reply as Redis sends it: an array of status lines."""
    return b"*%d\r\n" % len(lines) + b"".join(encode_simple(line) for line in lines)


#: Redis' ``LLONG_MIN / 1000`` and ``LLONG_MAX / 1000`` (C division truncates toward zero): the
#: seconds an EXPIRE may name before Redis calls the time invalid (its overflow check).
_SECONDS_MIN = -(-INT64_MIN // 1000)
_SECONDS_MAX = INT64_MAX // 1000


#: A relative TTL up to this fits the expiry cap from any wall clock before the year 6429, so the
#: translators read the clock only above it (the core checks every TTL exactly anyway).
_TTL_MS_FITS_ANY_DAY = EXPIRES_AT_MS_MAX // 2


# -- translators: (session, args) -> Command | reply bytes ------------------------------


def _get(session, args):
    return _wrong_arity("get")  # two arguments take the direct path (``_DIRECT_ARITY``)


def _set(session, args):
    """Redis 7's SET: options parse first (a repeated NX, EX, GET or KEEPTTL is accepted, the
    last expiry wins, a conflicting option is a syntax error), then the expiry is checked."""
    if len(args) < 3:  # SET key value takes the direct path (``_DIRECT_ARITY``)
        return _wrong_arity("set")
    condition = None
    keep_ttl = return_old = False
    unit = raw_expiry = None  # b"EX" / b"PX" / b"EXAT" / b"PXAT" and its argument
    index = 3
    while index < len(args):
        option = _word(args[index])
        has_next = index + 1 < len(args)
        if option == b"NX" and condition != c.IF_PRESENT:
            condition = c.IF_ABSENT
        elif option == b"XX" and condition != c.IF_ABSENT:
            condition = c.IF_PRESENT
        elif option == b"GET":
            return_old = True
        elif option == b"KEEPTTL" and unit is None:
            keep_ttl = True
        elif option in _SET_EXPIRY_UNITS and not keep_ttl and unit in (None, option) and has_next:
            unit = option
            index += 1
            raw_expiry = args[index]
        else:
            return _SYNTAX
        index += 1
    ttl_ms = expires_at_ms = None
    if unit is not None:
        number = parse_integer(raw_expiry)
        if number is None:
            return _NOT_INTEGER
        if unit in (b"EX", b"EXAT"):
            number *= 1000
        # Redis refuses <= 0 and an instant that overflows int64; we refuse an instant past
        # EXPIRES_AT_MS_MAX (a stricter bound: docs/protocol.md).
        if unit in (b"EX", b"PX"):
            if number <= 0 or (
                number > _TTL_MS_FITS_ANY_DAY
                and number > EXPIRES_AT_MS_MAX - session.core.clock.wall_ms()
            ):
                return _invalid_expire_time("set")
            ttl_ms = number
        else:
            if not 0 < number <= EXPIRES_AT_MS_MAX:
                return _invalid_expire_time("set")
            expires_at_ms = number
    return c.Put(
        args[1],
        args[2],
        ttl_ms,
        expires_at_ms=expires_at_ms,
        keep_ttl=keep_ttl,
        condition=condition,
        return_old=return_old,
    )


_SET_EXPIRY_UNITS = (b"EX", b"PX", b"EXAT", b"PXAT")


class _PutReplies(dict):
    """SET's reply by result: written (True) is OK, not written (False) and no old value
    (None) are null; anything else is the old value of SET ... GET, encoded on the miss. A
    dict lookup runs in C: the commonest reply costs no Python call."""

    def __missing__(self, old_value: bytes) -> bytes:
        return encode_bulk(old_value)


_encode_put = _PutReplies({True: OK, False: NULL_BULK, None: NULL_BULK}).__getitem__


def _del(session, args):
    return c.Delete(tuple(args[1:])) if len(args) >= 2 else _wrong_arity("del")


def _mget(session, args):
    return c.GetMany(tuple(args[1:])) if len(args) >= 2 else _wrong_arity("mget")


def _mset(session, args):
    if len(args) < 3 or len(args) % 2 == 0:
        return _wrong_arity("mset")
    return c.PutMany(tuple(zip(args[1::2], args[2::2], strict=True)))


def _exists(session, args):
    return c.Exists(tuple(args[1:])) if len(args) >= 2 else _wrong_arity("exists")


_EXPIRE_OPTIONS = {b"NX": c.IF_ABSENT, b"XX": c.IF_PRESENT, b"GT": c.IF_GREATER, b"LT": c.IF_LESS}


def _expire_translator(name: str, unit_ms: int, absolute: bool):
    """Redis 7's EXPIRE family: options first, then the number, then its range. A time in the
    past, however far, deletes the key (Redis refuses only what overflows int64: seconds
    beyond +-LLONG_MAX / 1000); a future instant past EXPIRES_AT_MS_MAX is refused."""

    def translate(session, args):
        if len(args) < 3:
            return _wrong_arity(name)
        conditions = set()
        for raw in args[3:]:
            option = _EXPIRE_OPTIONS.get(_word(raw))
            if option is None:
                return encode_error(f"ERR Unsupported option {_shown(raw)}")
            conditions.add(option)
        if c.IF_ABSENT in conditions and len(conditions) > 1:
            return encode_error(
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            )
        if c.IF_GREATER in conditions and c.IF_LESS in conditions:
            return encode_error("ERR GT and LT options at the same time are not compatible")
        number = parse_integer(args[2])
        if number is None:
            return _NOT_INTEGER
        if unit_ms == 1000 and not _SECONDS_MIN <= number <= _SECONDS_MAX:
            return _invalid_expire_time(name)
        milliseconds = number * unit_ms
        if absolute:
            if milliseconds > EXPIRES_AT_MS_MAX:
                return _invalid_expire_time(name)
        elif (
            milliseconds > _TTL_MS_FITS_ANY_DAY
            and milliseconds > EXPIRES_AT_MS_MAX - session.core.clock.wall_ms()
        ):
            return _invalid_expire_time(name)
        if absolute:
            return c.Expire(args[1], expires_at_ms=milliseconds, conditions=frozenset(conditions))
        return c.Expire(args[1], milliseconds, conditions=frozenset(conditions))

    return translate


def _encode_boolean(result):
    return _ONE if result else _ZERO


def _persist(session, args):
    return c.Persist(args[1]) if len(args) == 2 else _wrong_arity("persist")


def _ttl_translator(name: str):
    def translate(session, args):
        return c.Ttl(args[1]) if len(args) == 2 else _wrong_arity(name)

    return translate


def _ttl_encoder(divisor: int):
    def encode(ttl_ms):
        if ttl_ms in (TTL_MISSING, TTL_PERSISTENT):
            return encode_integer(ttl_ms)
        return encode_integer((ttl_ms + divisor // 2) // divisor)  # Redis rounds to nearest

    return encode


def _dbsize(session, args):
    return c.Stats() if len(args) == 1 else _wrong_arity("dbsize")


def _encode_dbsize(stats):
    return encode_integer(stats["keys"])


def _flushall(session, args):
    if len(args) > 2 or (len(args) == 2 and _word(args[1]) not in (b"ASYNC", b"SYNC")):
        return _SYNTAX
    return c.Flush()


def _encode_ok(result):
    return OK


def _ping(session, args):
    if len(args) > 2:
        return _wrong_arity("ping")
    return c.Ping(args[1] if len(args) == 2 else None)


def _encode_ping(result):
    return PONG if result is True else encode_bulk(result)


# -- session-local commands: the reply is built by the translator ---------------------------------


def _echo(session, args):
    return encode_bulk(args[1]) if len(args) == 2 else _wrong_arity("echo")


def _quit(session, args):
    session.closing = True
    return OK


#: The bytes Redis allows in a client name: printable ASCII other than space.
_NAME_BYTES = bytes(range(ord("!"), ord("~") + 1))
_BAD_CLIENT_NAME = encode_error(
    "ERR Client names cannot contain spaces, newlines or special characters."
)


def _valid_client_name(name: bytes) -> bool:
    # Deleting the allowed bytes leaves the others: C speed, ~7 ms for a 16 MiB name where a
    # regular expression takes ~70 ms. Empty is valid: it clears the name.
    return not name.translate(None, _NAME_BYTES)


def _hello(session, args):
    """Redis 7.0's HELLO: the version (an integer, 2 or 3), then options (SETNAME name, AUTH
    user password), and the version switched only once all are read and the client is
    authenticated. redis-py 5+ opens with HELLO 3; such a session gets RESP3's null and map
    types, where RESP2 and RESP3 differ for our replies."""
    version = session.protocol_version
    if len(args) > 1:
        version = parse_integer(args[1])
        if version is None:
            return encode_error("ERR Protocol version is not an integer or out of range")
        if version not in (2, 3):
            return encode_error("NOPROTO unsupported protocol version")
    index = 2
    name = credentials = None
    while index < len(args):
        option = _word(args[index])
        arguments_after = len(args) - 1 - index
        if option == b"SETNAME" and arguments_after >= 1:
            name = args[index + 1]
            if not _valid_client_name(name):
                return _BAD_CLIENT_NAME
            if session.authenticated:
                # Redis 7.0 names the client as it reads the option: a later error keeps the
                # name. An unauthenticated session changes nothing before AUTH succeeds.
                session.name = name
            index += 2
        elif option == b"AUTH" and arguments_after >= 2:
            credentials = args[index + 1], args[index + 2]
            index += 3
        else:
            return encode_error(f"ERR Syntax error in HELLO option '{_shown(args[index])}'")
    # Authenticate first: a refused HELLO changes nothing.
    if credentials is not None:
        try:
            session.authenticate(credentials[1], credentials[0])
        except AuthenticationFailed as error:
            return error_reply(error)
    elif not session.authenticated:
        return encode_error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the"
            " HELLO AUTH <user> <pass> option can be used to authenticate the client and"
            " select the RESP protocol version at the same time"
        )
    session.protocol_version = version
    if name is not None:
        session.name = name
    pairs = [
        ("server", "gossipcache"),
        ("version", "7.0.0"),
        ("proto", session.protocol_version),
        ("id", session.client_id),
        ("mode", "standalone"),
        ("role", "master"),
        ("modules", []),
    ]
    return session.encode_map(pairs)


def _auth(session, args):
    """``AUTH password`` or ``AUTH user password`` (Redis 6+); only the ``default`` user."""
    if len(args) < 2:
        return _wrong_arity("auth")
    if len(args) > 3:
        return _SYNTAX
    if len(args) == 2 and session.core.config.client_password is None:
        return encode_error(
            "ERR AUTH <password> called without any password configured for the default user."
            " Are you sure your configuration is correct?"
        )
    try:
        if len(args) == 2:
            session.authenticate(args[1])
        else:
            session.authenticate(args[2], args[1])
    except AuthenticationFailed as error:
        return error_reply(error)
    return OK


#: SELECT's index is a C int in Redis: outside this range it is "not an integer".
_C_INT_MIN = -(2**31)
_C_INT_MAX = 2**31 - 1


def _select(session, args):
    if len(args) != 2:
        return _wrong_arity("select")
    index = parse_integer(args[1])
    if index is None:
        return _NOT_INTEGER
    if not _C_INT_MIN <= index <= _C_INT_MAX:
        return encode_error(
            f"ERR value is out of range, value must between {_C_INT_MIN} and {_C_INT_MAX}"
        )
    # One database per node: Redis' 1..15 are out of range here (docs/protocol.md).
    return OK if index == 0 else encode_error("ERR DB index is out of range")


#: Subcommands of CLIENT, COMMAND and CONFIG served, with their arity (Redis' rule: positive is
#: exact, negative at least; the name and subcommand count).
_CLIENT_ARITY = {b"ID": 2, b"GETNAME": 2, b"SETNAME": 3, b"SETINFO": 4, b"HELP": 2}
_COMMAND_ARITY = {b"COUNT": 2, b"DOCS": -2, b"INFO": -2, b"LIST": 2, b"HELP": 2}
_CONFIG_ARITY = {b"GET": -3, b"SET": -4, b"RESETSTAT": 2, b"REWRITE": 2, b"HELP": 2}
#: CLIENT SETINFO (Redis 7.2, which redis-py sends) takes these attributes.
_CLIENT_INFO_ATTRIBUTES = (b"LIB-NAME", b"LIB-VER")


def _subcommand(container: str, arities: dict[bytes, int], args: list[bytes]):
    """``(SUBCOMMAND, None)``, or ``(None, error reply)`` when the container is called without
    one, with one it does not serve, or with the wrong number of arguments for it."""
    if len(args) < 2:
        return None, _wrong_arity(container.lower())
    sub = _word(args[1])
    arity = arities.get(sub)
    if arity is None:
        return None, _unknown_subcommand(container, args[1])
    if not _arity_ok(args, arity):
        return None, _wrong_arity(f"{container.lower()}|{sub.lower().decode()}")
    return sub, None


def _client(session, args):
    sub, error = _subcommand("CLIENT", _CLIENT_ARITY, args)
    if error is not None:
        return error
    if sub == b"SETNAME":
        if not _valid_client_name(args[2]):
            return _BAD_CLIENT_NAME
        session.name = args[2]
        return OK
    if sub == b"GETNAME":
        return encode_bulk(session.name or None)
    if sub == b"ID":
        return encode_integer(session.client_id)
    if sub == b"SETINFO":
        # redis-py announces its library name and version; nothing to keep.
        if _word(args[2]) not in _CLIENT_INFO_ATTRIBUTES:
            return encode_error(f"ERR Unrecognized option '{_shown(args[2])}'")
        return OK
    return _help(["CLIENT <subcommand>. Subcommands are: ID, GETNAME, SETNAME, SETINFO, HELP."])


def _command(session, args):
    if len(args) == 1:
        return EMPTY_ARRAY  # Redis describes every command; this node describes none
    sub, error = _subcommand("COMMAND", _COMMAND_ARITY, args)
    if error is not None:
        return error
    if sub == b"COUNT":
        return encode_integer(len(_NAMES))
    if sub == b"DOCS":
        # redis-cli asks for COMMAND DOCS to offer hints; an empty answer means "no hints".
        return session.encode_map([])
    if sub == b"INFO":
        # No command details: as Redis answers for a name it does not know.
        return encode_array([None] * (len(args) - 2)) if len(args) > 2 else EMPTY_ARRAY
    if sub == b"LIST":
        return encode_array([name.lower() for name in _NAMES])
    return _help(["COMMAND <subcommand>. Subcommands are: COUNT, DOCS, INFO, LIST, HELP."])


# -- CONFIG GET: glob patterns matched with bounded work ------------------------------------

#: The parameters CONFIG GET knows, in the order it lists them.
_CONFIG_NAMES = ("maxmemory", "maxmemory-policy", "save", "appendonly", "databases", "port", "bind")


def _config_values(core: NodeCore) -> dict[str, str]:
    store = core.store
    return {
        "maxmemory": str(store.size_bytes_max),
        "maxmemory-policy": store.eviction_policy,
        "save": "",
        "appendonly": "no",
        "databases": "1",
        "port": str(core.config.resp_port or 0),
        "bind": core.config.host,
    }


class _GlobMatcher:
    """Redis' glob patterns (``stringmatchlen`` without case: ``*``, ``?``, ``[...]`` with ``^``,
    ranges and ``\\`` escapes) matched against a fixed set of names, all at once, in work linear
    in the pattern's length.

    A backtracking matcher (Redis', or ``fnmatch``'s regular expressions) may take time
    exponential in the number of ``*``; ``fnmatch`` also caches every pattern compiled, and a
    1 MB pattern froze a node for 12.9 s. Here the names are laid end to end in one string
    (each followed by a separator) and the matcher runs the pattern's automaton over all of them
    at once, as a bit set of positions: bit p set means "the pattern read so far matches the
    name up to position p". A token that consumes a character keeps the positions holding one it
    accepts and moves them on by one (a shift); ``*`` spreads each position to the end of its
    name (five shifts, by doubling). A name matches when the bit at its end is set at the end.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        text = "".join(name + "\0" for name in names).encode()
        self._ends = []  # the separator position after each name
        self._any = 0  # positions holding a character of a name
        self._positions: dict[int, int] = {}  # character -> positions holding it
        start = 0
        # _same_name[k]: positions p whose p - k lies in the same name (shift by k stays inside)
        self._same_name = {k: 0 for k in (1, 2, 4, 8, 16, 32)}
        for name in names:
            end = start + len(name)
            for position in range(start, end):
                self._positions[text[position]] = self._positions.get(text[position], 0) | (
                    1 << position
                )
                self._any |= 1 << position
            for k in self._same_name:
                for position in range(start + k, end + 1):
                    self._same_name[k] |= 1 << position
            self._ends.append(end)
            start = end + 1
        if max(map(len, names)) >= 2 * 32:
            raise ValueError("names too long for the spreading shifts")
        self._starts = sum(1 << (end - len(name)) for name, end in zip(names, self._ends))

    def matches(self, pattern: bytes) -> list[str]:
        """The names ``pattern`` matches (case-insensitive), in their order."""
        state = self._starts
        positions = self._positions
        length = len(pattern)
        index = 0
        while index < length and state:
            byte = pattern[index]
            if byte == 42:  # "*": any run of characters; a run of stars is one star
                while index + 1 < length and pattern[index + 1] == 42:
                    index += 1
                for k, same_name in self._same_name.items():
                    state |= (state << k) & same_name
            elif byte == 63:  # "?": any one character
                state = (state & self._any) << 1
            elif byte == 91:  # "[": a class of characters
                accepted, index = self._class(pattern, index + 1)
                state = (state & accepted) << 1
            else:
                if byte == 92 and index + 1 < length:  # "\": the next byte is literal
                    index += 1
                    byte = pattern[index]
                state = (state & positions.get(_lower(byte), 0)) << 1
            index += 1
        if index < length:
            return []  # no position survived: nothing matches
        return [name for name, end in zip(self.names, self._ends) if state >> end & 1]

    def _class(self, pattern: bytes, index: int) -> tuple[int, int]:
        """The positions ``[...]`` accepts, starting after its ``[``, and the index of its last
        byte. Follows ``stringmatchlen`` to the byte: ``^`` negates, ``\\`` makes the next byte
        literal (compared with case), ``a-z`` is a range (swapped if reversed), a class left
        open runs to the end of the pattern."""
        length = len(pattern)
        negate = index < length and pattern[index] == 94  # "^"
        if negate:
            index += 1
        accepted = 0
        positions = self._positions
        while True:
            if index >= length:
                index = length - 1  # an open class ends with the pattern
                break
            byte = pattern[index]
            if byte == 92 and length - index >= 2:  # "\x": x, with case
                index += 1
                accepted |= positions.get(pattern[index], 0)
            elif byte == 93:  # "]"
                break
            elif length - index >= 3 and pattern[index + 1] == 45:  # "a-z"
                low, high = byte, pattern[index + 2]
                if low > high:
                    low, high = high, low
                low, high = _lower(low), _lower(high)
                for character, at in positions.items():
                    if low <= character <= high:  # the names are lower case already
                        accepted |= at
                index += 2
            else:
                accepted |= positions.get(_lower(byte), 0)
            index += 1
        if negate:
            accepted = self._any & ~accepted
        return accepted, index


def _lower(byte: int) -> int:
    return byte + 32 if 65 <= byte <= 90 else byte


_CONFIG_MATCHER = _GlobMatcher(_CONFIG_NAMES)
_GLOB_BYTES = re.compile(rb"[*?\[]").search


def _config(session, args):
    sub, error = _subcommand("CONFIG", _CONFIG_ARITY, args)
    if error is not None:
        return error
    if sub == b"GET":
        return _config_get(session, args[2:])
    if sub == b"RESETSTAT":
        return OK
    if sub == b"REWRITE":
        return encode_error("ERR The server is running without a config file")
    if sub == b"SET":
        return encode_error("ERR CONFIG SET is not supported: a node is configured at start")
    return _help(["CONFIG <subcommand>. Subcommands are: GET, RESETSTAT, HELP."])


def _config_get(session, patterns: list[bytes]) -> bytes:
    """Redis 7's CONFIG GET: a pattern without glob characters names one parameter (answered
    with the name as given), others are matched (``_GlobMatcher``); each parameter once. The
    patterns' total size is capped (``CONFIG_PATTERNS_SIZE_BYTES_MAX``), which with the linear
    matcher bounds the work of a call."""
    size_bytes = sum(map(len, patterns))
    if size_bytes > CONFIG_PATTERNS_SIZE_BYTES_MAX:
        return encode_error(
            f"ERR CONFIG GET patterns are too long: {size_bytes} bytes, at most "
            f"{CONFIG_PATTERNS_SIZE_BYTES_MAX} in all"
        )
    values = _config_values(session.core)
    found: dict[str, tuple[bytes, str]] = {}  # parameter -> (the name replied, value)
    for pattern in dict.fromkeys(patterns):  # each pattern once
        if len(found) == len(values):
            break  # every parameter is in: no pattern can add one
        if _GLOB_BYTES(pattern) is None:
            name = pattern.lower().decode(errors="replace")
            if name in values and name not in found:
                found[name] = (pattern, values[name])
            continue
        for name in _CONFIG_MATCHER.matches(pattern):
            if name not in found:
                found[name] = (name.encode(), values[name])
    return session.encode_map(list(found.values()))


def _info_reply(session, args):
    """INFO is answered from O(1) counters, like Stats, without going through a command: its
    reply depends on the sections asked for."""
    core = session.core
    stats = core.store.stats()
    server = core.metrics
    keys_with_ttl, average_ttl_ms = core.store.expiry_summary(core.clock.wall_ms())
    sections = {
        "server": [
            ("gossipcache_version", "0.1.0"),
            ("redis_version", "7.0.0"),  # what clients check for feature support
            ("process_id", core.process_id),
            ("tcp_port", core.config.resp_port or 0),
        ],
        "clients": [("connected_clients", server.connections_open)],
        "memory": [
            ("used_memory", stats.used_bytes),
            ("maxmemory", stats.size_bytes_max),
            ("maxmemory_policy", stats.eviction_policy),
        ],
        "stats": [
            ("total_connections_received", server.connections_accepted),
            ("rejected_connections", server.connections_refused),
            ("keyspace_hits", stats.hits),
            ("keyspace_misses", stats.misses),
            ("evicted_keys", stats.evictions),
            ("expired_keys", stats.expirations),
        ],
        "keyspace": (
            [("db0", f"keys={stats.keys},expires={keys_with_ttl},avg_ttl={average_ttl_ms}")]
            if stats.keys
            else []
        ),
    }
    wanted = {_word(a).decode(errors="replace").lower() for a in args[1:]}
    # No section, "all", "everything" or "default" (all of ours are default ones) ask for all.
    every_section = not wanted or bool(wanted & {"all", "everything", "default"})
    lines = []
    for section, fields in sections.items():
        if not every_section and section not in wanted:
            continue
        lines.append(f"# {section.capitalize()}")
        lines.extend(f"{name}:{value}" for name, value in fields)
        lines.append("")
    return encode_bulk("\r\n".join(lines).encode())


#: Redis command -> (translator, encoder, the command type whose metrics it feeds, or None for
#: a session-local command with a series of its own).
#:
#: ``_DIRECT_ARITY``: commands whose argument list, at this length, is exactly the command's
#: shape ``(name, *fields)`` (Redis' command table has an arity the same way). Those skip the
#: translator: the parsed list goes to the core's handler as it is.
_NAMES: dict[bytes, tuple[Callable, Callable | None, type[c.Command] | None]] = {
    b"GET": (_get, encode_bulk, c.Get),
    b"SET": (_set, _encode_put, c.Put),
    b"MGET": (_mget, encode_array, c.GetMany),
    b"MSET": (_mset, _encode_ok, c.PutMany),
    b"DEL": (_del, encode_integer, c.Delete),
    b"EXISTS": (_exists, encode_integer, c.Exists),
    b"EXPIRE": (_expire_translator("expire", 1000, False), _encode_boolean, c.Expire),
    b"PEXPIRE": (_expire_translator("pexpire", 1, False), _encode_boolean, c.Expire),
    b"EXPIREAT": (_expire_translator("expireat", 1000, True), _encode_boolean, c.Expire),
    b"PEXPIREAT": (_expire_translator("pexpireat", 1, True), _encode_boolean, c.Expire),
    b"PERSIST": (_persist, _encode_boolean, c.Persist),
    b"TTL": (_ttl_translator("ttl"), _ttl_encoder(1000), c.Ttl),
    b"PTTL": (_ttl_translator("pttl"), _ttl_encoder(1), c.Ttl),
    b"DBSIZE": (_dbsize, _encode_dbsize, c.Stats),
    b"FLUSHALL": (_flushall, _encode_ok, c.Flush),
    b"FLUSHDB": (_flushall, _encode_ok, c.Flush),
    b"PING": (_ping, _encode_ping, c.Ping),
    b"INFO": (_info_reply, None, None),
    b"ECHO": (_echo, None, None),
    b"QUIT": (_quit, None, None),
    b"SELECT": (_select, None, None),
    b"HELLO": (_hello, None, None),
    b"CLIENT": (_client, None, None),
    b"COMMAND": (_command, None, None),
    b"CONFIG": (_config, None, None),
    b"AUTH": (_auth, None, None),
}

#: Redis' arity of each command (n: exactly n arguments, name included; -n: at least n).
#: Before authentication Redis checks arity, then refuses with NOAUTH; so do we.
_REDIS_ARITY = {
    b"GET": 2, b"SET": -3, b"MGET": -2, b"MSET": -3, b"DEL": -2, b"EXISTS": -2, b"EXPIRE": -3, b"PEXPIRE": -3,
    b"EXPIREAT": -3, b"PEXPIREAT": -3, b"PERSIST": 2, b"TTL": 2, b"PTTL": 2, b"DBSIZE": 1,
    b"FLUSHALL": -1, b"FLUSHDB": -1, b"PING": -1, b"INFO": -1, b"ECHO": 2, b"QUIT": -1,
    b"SELECT": 2, b"HELLO": -1, b"CLIENT": -2, b"COMMAND": -1, b"CONFIG": -2, b"AUTH": -2,
}  # fmt: skip
#: Commands a connection may send before it authenticates (Redis' ``no-auth`` flag).
_BEFORE_AUTH = frozenset((b"AUTH", b"HELLO", b"QUIT"))
_NOAUTH = encode_error(f"NOAUTH {NOAUTH_MESSAGE}")


def _refused_before_auth(name: bytes) -> Callable:
    arity = _REDIS_ARITY.get(name, -1)

    def refuse(session, args):
        if not _arity_ok(args, arity):
            return _wrong_arity(name.decode().lower())
        return _NOAUTH

    return refuse


_DIRECT_ARITY = {b"GET": 2, b"SET": 3, b"PERSIST": 2, b"TTL": 2, b"PTTL": 2}


def resp_table(core: NodeCore, extra: dict[bytes, tuple] | None = None) -> DispatchTable:
    """The dispatch table of ``core``'s RESP sessions: upper- and lower-case spellings
    (clients send one or the other; mixed case goes through ``upper()``) -> (translator, the
    core's handler for the command type (None for a session-local command), encoder, the
    command's one metrics series and its latency histogram, the argument count at which the
    argument list is the command itself). ``extra`` adds commands
    in the form of ``_NAMES`` (tests add one that stays pending; the core must serve its type)."""
    table = {}
    locked = {}
    for name, (translate, encode, command_type) in {**_NAMES, **(extra or {})}.items():
        if command_type is None:
            handler, metrics = None, core.metrics.command(name.decode().lower())
        else:
            handler, metrics = core.handler_of(command_type)
        entry = (
            translate,
            handler,
            encode,
            metrics,
            metrics.latency_ns,
            _DIRECT_ARITY.get(name, -1),
        )
        table[name] = entry
        table[name.lower()] = entry
        if name not in _BEFORE_AUTH:
            # Arity checked, then NOAUTH: no handler, so nothing runs; errors counted.
            entry = (_refused_before_auth(name), None, encode, metrics, metrics.latency_ns, -1)
        locked[name] = entry
        locked[name.lower()] = entry
    return DispatchTable(table).with_locked(locked)


def _unknown_command(args: list[bytes]) -> bytes:
    """Redis' words: the name cut at 128 bytes, then the arguments quoted, each followed by a
    space, while the list is shorter than 128 bytes (each cut to what is left of them)."""
    shown = b""
    for raw in args[1:]:
        if len(shown) >= 128:
            break
        shown += b"'" + raw[: 128 - len(shown)].split(b"\0", 1)[0] + b"' "
    return encode_error(
        f"ERR unknown command '{_shown(args[0])}', with args beginning with: "
        + shown.decode(errors="replace")
    )
