"""RESP2, the Redis wire protocol, sans-IO: so redis-cli, redis-py and redis-benchmark can talk
to a node.

Server side: ``RespParser`` turns received bytes into commands (lists of bytes arguments) and the
``encode_*`` functions build replies. Client side (tests, the load generator): ``encode_command``
and ``RespReplyParser``. The supported commands are listed in docs/protocol.md.

Parsing is the hot path of the benchmark against Redis, so the parser works on one ``bytes``
snapshot of its buffer per call and only uses C-level operations per command (``bytes.find``,
``int()`` on a slice, slicing): there is no loop over bytes in Python. Counts and lengths are read
as Redis reads integers (``parse_integer``), stricter than ``int()``.

A ``ProtocolError`` message reads like Redis' own ("Protocol error: invalid bulk length"); the
server replies ``encode_error("ERR " + str(error))`` and closes the connection, as Redis does.
"""

from __future__ import annotations

from ..errors import ProtocolError
from ..limits import FRAME_SIZE_BYTES_MAX, KEY_SIZE_BYTES_MAX, VALUE_SIZE_BYTES_MAX

#: Defaults of the parser's caps: a bulk argument holds at most a value or a key of the largest
#: sizes ``gossipcache.limits`` allows (Redis' own cap, ``proto-max-bulk-len``, is 512 MiB); a command has at most ~1M arguments
#: (Redis' cap for unauthenticated clients); an inline command line is at most 64 KiB (Redis'
#: ``PROTO_INLINE_MAX_SIZE``).
BULK_SIZE_BYTES_MAX = VALUE_SIZE_BYTES_MAX + KEY_SIZE_BYTES_MAX
ARRAY_LEN_MAX = 1024 * 1024
INLINE_SIZE_BYTES_MAX = 64 * 1024
#: Most bytes one command may occupy on the wire: what the largest legal request (one key, one
#: value and their options) needs, the same cap as a native frame. Redis allows 1 GiB per client
#: query buffer; a partial command is memory a client makes the node hold, so ours is smaller.
COMMAND_SIZE_BYTES_MAX = FRAME_SIZE_BYTES_MAX
#: A bulk argument at least this long that ends a read's cut command is copied out of the
#: receive buffer directly (``RespParser._take_large_bulk``), not through a snapshot.
LARGE_BULK_SIZE_BYTES_MIN = 64 * 1024
#: What one parsed argument of a partial command costs beyond its bytes: the ``bytes`` object's
#: header and its list slot (counted so a command of a million 1-byte arguments is charged
#: for the ~40 MB it really holds, not its 7 MB on the wire).
PARSED_ARG_OVERHEAD_BYTES = 48
#: Longest ``*N`` / ``$N`` line, CRLF included. A longer one cannot hold a valid count, so the
#: parser stops looking for its end instead of scanning a large buffer.
LENGTH_LINE_SIZE_BYTES_MAX = 32

#: Reply parser caps: simple string / error line length, and nesting depth of arrays.
REPLY_LINE_SIZE_BYTES_MAX = 1024 * 1024
REPLY_DEPTH_MAX = 32

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL_BULK = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"

_CRLF = b"\r\n"
_STAR = ord("*")
_DOLLAR = ord("$")
_PLUS = ord("+")
_MINUS = ord("-")
_COLON = ord(":")
_CR = ord("\r")
_LF = ord("\n")


#: Redis integers are signed 64-bit: at most 20 bytes in decimal ("-9223372036854775808").
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INTEGER_SIZE_BYTES_MAX = 20


def parse_integer(text: bytes) -> int | None:
    """``text`` as Redis reads an integer (``string2ll``: protocol lengths and integer
    arguments alike), or None when it is not one. Stricter than ``int()``: only the canonical
    decimal form of a signed 64-bit value, so no sign ``+``, no leading zero, no ``-0``, no
    space and no ``_`` (``int()`` accepts all of these, Redis none)."""
    if len(text) > _INTEGER_SIZE_BYTES_MAX:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    # The canonical spelling of the value is the only one Redis accepts.
    if b"%d" % value != text or not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


class RespError(str):
    """An error reply (``-ERR ...``) as the reply parser returns it: the message, type prefix
    included. Distinct from ``str`` (a simple-string reply) by its type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RespError({str.__repr__(self)})"


class _ByteStream:
    """The buffer shared by both parsers: bytes received, the size below which parsing cannot
    progress, and the error that broke the stream (raised again on every later call)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Parsing cannot progress before the buffer holds this many bytes: a half-received
        # 16 MiB value is not rescanned on every 64 KiB read.
        self._size_bytes_needed = 1
        self._error: ProtocolError | None = None
        #: Whether any received bytes are held (a partial command): False after a read parsed
        #: whole, so a driver need not ask ``buffered_size_bytes`` on the hot path.
        self.holding = False

    @property
    def buffered_size_bytes(self) -> int:
        """Bytes received but not yet returned parsed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        self.holding = True

    def _snapshot(self) -> bytes | None:
        """The buffered bytes, or None when they cannot hold anything new."""
        if self._error is not None:
            raise self._error
        if len(self._buffer) < self._size_bytes_needed:
            return None
        return bytes(self._buffer)

    def _consume(self, size_bytes: int) -> None:
        if size_bytes == len(self._buffer):
            self._buffer.clear()
        else:
            del self._buffer[:size_bytes]  # O(1) in CPython: moves the bytearray's start


# -- server side: parsing commands ----------------------------------------------------------


class RespParser(_ByteStream):
    """Splits a RESP2 byte stream into commands: ``[b"SET", b"key", b"value"]``.

    Accepts multibulk commands (``*N\\r\\n$len\\r\\narg\\r\\n...``, what clients send) and inline
    commands (``PING\\r\\n``, split on whitespace, what telnet sends). ``feed`` bytes as they
    arrive, then ``pop_commands``. Malformed input raises ``ProtocolError``; the stream cannot
    be resynchronised after that, so the parser keeps raising it.
    """

    def __init__(
        self,
        bulk_size_bytes_max: int = BULK_SIZE_BYTES_MAX,
        array_len_max: int = ARRAY_LEN_MAX,
        inline_size_bytes_max: int = INLINE_SIZE_BYTES_MAX,
        command_size_bytes_max: int = COMMAND_SIZE_BYTES_MAX,
    ) -> None:
        super().__init__()
        self.bulk_size_bytes_max = bulk_size_bytes_max
        self.array_len_max = array_len_max
        self.inline_size_bytes_max = inline_size_bytes_max
        self.command_size_bytes_max = command_size_bytes_max
        # A multibulk command cut by the end of the buffer: the arguments parsed so far, how many
        # remain, and the wire bytes they took, so a long command is parsed once, not rescanned.
        self._partial_args: list[bytes] = []
        self._partial_remaining = 0
        self._partial_size_bytes = 0

    @property
    def buffered_size_bytes(self) -> int:
        """Bytes held for commands not yet returned: the buffer, and the arguments already
        parsed of a command cut by the end of a read."""
        partial = self._partial_args
        if not partial:
            return len(self._buffer)
        return (
            len(self._buffer) + self._partial_size_bytes + len(partial) * PARSED_ARG_OVERHEAD_BYTES
        )

    def parse(self, data: bytes) -> list[list[bytes]]:
        """``feed(data)`` then ``pop_commands()``, faster in the common case.

        When nothing is buffered and ``data`` holds only whole, small multibulk commands (one
        read of a pipelining client), the fast path parses ``data`` in place: no copy into the
        buffer and out again. Anything else takes the general route, from the start of ``data``.
        """
        if not self._buffer and self._error is None and not self._partial_remaining:
            consumed, commands = _parse_simple_multibulk(data)
            if consumed == len(data) and commands:
                return commands
        self.feed(data)
        return self.pop_commands()

    def pop_commands(self) -> list[list[bytes]]:
        """Return every complete command buffered, in order; keep an incomplete tail."""
        commands = self._pop_commands()
        self.holding = bool(self._buffer) or bool(self._partial_remaining)
        return commands

    def _pop_commands(self) -> list[list[bytes]]:
        done = None
        # ``_suspend`` validated a large argument's length line and waits for all of it.
        needed = self._size_bytes_needed
        if needed >= LARGE_BULK_SIZE_BYTES_MIN and len(self._buffer) >= needed:
            done = self._take_large_bulk()
        data = self._snapshot()
        if data is None:
            return [] if done is None else [done]
        try:
            commands, consumed = self._parse_all(data)
        except ProtocolError as error:
            self._error = error
            raise
        self._consume(consumed)
        return commands if done is None else [done, *commands]

    def _take_large_bulk(self) -> list[bytes] | None:
        """The cut command's next argument, when it is large and has arrived whole, copied once
        straight out of the buffer: the general path would first copy the whole buffer into a
        snapshot, holding a 16 MiB value three times over (buffer, snapshot, argument) instead
        of twice. Returns the command if that argument completed it. Called only when
        ``_suspend`` cut the command at this argument's length line, which it had validated
        (with the command's size) and whose bytes the buffer now holds whole."""
        buffer = self._buffer
        line_end = buffer.find(_CRLF, 0, LENGTH_LINE_SIZE_BYTES_MAX)
        start = line_end + 2
        stop = start + int(buffer[1:line_end])
        if buffer[stop] != _CR or buffer[stop + 1] != _LF:
            return None  # the general path raises the precise error
        with memoryview(buffer) as view:
            argument = bytes(view[start:stop])
        del buffer[: stop + 2]
        self._partial_args.append(argument)
        self._partial_remaining -= 1
        self._partial_size_bytes += stop + 2
        self._size_bytes_needed = 1
        if self._partial_remaining:
            return None
        command = self._partial_args
        self._partial_args = []
        self._partial_size_bytes = 0
        return command

    def _parse_all(self, data: bytes) -> tuple[list[list[bytes]], int]:
        consumed = 0
        commands: list[list[bytes]] = []
        if self._partial_remaining:
            # Finish the command the previous read cut, then go back to the fast path.
            commands, consumed = self._parse(data, 0, commands, finish_cut_command=True)
            if self._partial_remaining or consumed == len(data):
                return commands, consumed
            data = data[consumed:]
        position, fast_commands = _parse_simple_multibulk(data)
        commands += fast_commands
        commands, position = self._parse(data, position, commands)
        return commands, consumed + position

    def _parse(
        self,
        data: bytes,
        position: int,
        commands: list[list[bytes]],
        finish_cut_command: bool = False,
    ) -> tuple[list[list[bytes]], int]:
        """Parse ``data`` (a snapshot of the buffer) from ``position``, appending to
        ``commands``; return them and the bytes consumed. Handles every case, including a
        command cut by the end of the buffer. With ``finish_cut_command``, return as soon as the
        command a previous call left partial is complete."""
        end = len(data)
        find = data.find
        args = self._partial_args
        remaining = self._partial_remaining
        # Whatever is still partial when this call returns is saved again by ``_suspend``.
        self._partial_args = []
        self._partial_remaining = 0
        command_start = 0
        bulk_size_bytes_max = self.bulk_size_bytes_max
        while True:
            if not remaining:
                # Between commands.
                if position >= end:
                    self._size_bytes_needed = 1
                    return commands, position
                if data[position] != _STAR:
                    line_end = find(b"\n", position, position + self.inline_size_bytes_max + 1)
                    if line_end < 0:
                        if end - position > self.inline_size_bytes_max:
                            raise ProtocolError("Protocol error: too big inline request")
                        self._size_bytes_needed = end - position + 1
                        return commands, position
                    inline = data[position:line_end].split()
                    position = line_end + 1
                    if inline:  # Redis ignores empty lines
                        commands.append(inline)
                    continue
                line_end = find(_CRLF, position, position + LENGTH_LINE_SIZE_BYTES_MAX)
                if line_end < 0:
                    if end - position >= LENGTH_LINE_SIZE_BYTES_MAX:
                        raise ProtocolError("Protocol error: too big mbulk count string")
                    self._size_bytes_needed = end - position + 1
                    return commands, position
                remaining = parse_integer(data[position + 1 : line_end])
                if remaining is None or remaining > self.array_len_max:
                    raise ProtocolError("Protocol error: invalid multibulk length")
                command_start = position
                position = line_end + 2
                if remaining <= 0:  # `*0` and `*-1` are no command, as in Redis
                    remaining = 0
                    continue
                args = []
            # Inside a multibulk command: `remaining` bulk arguments to go.
            while remaining:
                if position >= end:
                    return self._suspend(commands, args, remaining, command_start, end, 1)
                if data[position] != _DOLLAR:
                    got = chr(data[position])
                    raise ProtocolError(f"Protocol error: expected '$', got '{got}'")
                line_end = find(_CRLF, position, position + LENGTH_LINE_SIZE_BYTES_MAX)
                if line_end < 0:
                    if end - position >= LENGTH_LINE_SIZE_BYTES_MAX:
                        raise ProtocolError("Protocol error: too big bulk count string")
                    return self._suspend(
                        commands, args, remaining, command_start, position, end - position + 1
                    )
                size = parse_integer(data[position + 1 : line_end])
                if size is None or not 0 <= size <= bulk_size_bytes_max:
                    raise ProtocolError("Protocol error: invalid bulk length")
                start = line_end + 2
                stop = start + size
                if stop + 2 > end:
                    return self._suspend(
                        commands, args, remaining, command_start, position, stop + 2 - position
                    )
                if data[stop] != _CR or data[stop + 1] != _LF:
                    raise ProtocolError("Protocol error: expected CRLF after bulk argument")
                args.append(data[start:stop])
                position = stop + 2
                remaining -= 1
            commands.append(args)
            self._partial_size_bytes = 0
            if finish_cut_command:
                self._size_bytes_needed = 1
                return commands, position

    def _suspend(
        self,
        commands: list[list[bytes]],
        args: list[bytes],
        remaining: int,
        command_start: int,
        position: int,
        size_bytes_needed: int,
    ) -> tuple[list[list[bytes]], int]:
        """Keep a command cut by the end of the buffer for the next call; consume up to
        ``position`` (the start of its first incomplete argument)."""
        size_bytes = self._partial_size_bytes + position - command_start
        if size_bytes + size_bytes_needed > self.command_size_bytes_max:
            raise ProtocolError("Protocol error: command too big")
        self._partial_args = args
        self._partial_remaining = remaining
        self._partial_size_bytes = size_bytes
        self._size_bytes_needed = size_bytes_needed
        return commands, position


#: Fast-path tables: the count and length lines small commands use, mapped to their value. A
#: dict lookup both validates such a line and parses it, cheaper than slicing it and ``int()``.
#: Anything not in the tables (large values, huge commands) takes the general path.
_FAST_ARGS_MAX = 64
_FAST_BULK_SIZE_BYTES_MAX = 4096
_FAST_COUNT_LINES = {b"*%d" % count: count for count in range(1, _FAST_ARGS_MAX + 1)}
_FAST_SIZE_LINES = {b"$%d" % size: size for size in range(_FAST_BULK_SIZE_BYTES_MAX + 1)}


def _parse_simple_multibulk(data: bytes) -> tuple[int, list[list[bytes]]]:
    """The fast path: parse the leading run of complete multibulk commands with few, small
    arguments that contain no CRLF. Return where it stopped and the commands.

    One ``split`` on CRLF tokenises the whole buffer in C. A command is accepted only if every
    length line is in ``_FAST_SIZE_LINES`` and equals the length of the line after it; the first
    argument that contains a CRLF is split short and fails that test, so nothing is accepted that
    the general parser would read differently. It stops at the first line it cannot accept (an
    inline command, a large value, a cut command) and the general parser takes over there.
    """
    lines = data.split(_CRLF)
    complete_lines = len(lines) - 1  # the last piece has no CRLF after it
    count_of = _FAST_COUNT_LINES.get
    size_of = _FAST_SIZE_LINES.get
    commands = []
    index = 0
    while index < complete_lines:
        count = count_of(lines[index])
        if count is None:
            break
        stop = index + 1 + 2 * count
        if stop > complete_lines:
            break
        # Unrolled for the commands a cache sees most (GET / DEL / TTL, SET / EXPIRE): tuple
        # unpacking beats building lists to compare.
        if count == 3:
            size_line_1, arg_1, size_line_2, arg_2, size_line_3, arg_3 = lines[index + 1 : stop]
            if (
                size_of(size_line_1) != len(arg_1)
                or size_of(size_line_2) != len(arg_2)
                or size_of(size_line_3) != len(arg_3)
            ):
                break
            commands.append([arg_1, arg_2, arg_3])
        elif count == 2:
            size_line_1, arg_1, size_line_2, arg_2 = lines[index + 1 : stop]
            if size_of(size_line_1) != len(arg_1) or size_of(size_line_2) != len(arg_2):
                break
            commands.append([arg_1, arg_2])
        else:
            args = lines[index + 2 : stop : 2]
            if list(map(size_of, lines[index + 1 : stop : 2])) != list(map(len, args)):
                break
            commands.append(args)
        index = stop
    if index == complete_lines:
        return len(data) - len(lines[-1]), commands
    # The unconsumed lines, with the CRLFs between them.
    tail_size_bytes = sum(map(len, lines[index:])) + 2 * (complete_lines - index)
    return len(data) - tail_size_bytes, commands


# -- server side: encoding replies ---------------------------------------------------------


def _one_line(text: str) -> bytes:
    # A simple string or error cannot contain CR or LF; Redis replaces them with spaces too.
    # Lone surrogates (from bytes decoded with surrogateescape) cannot be UTF-8: replace them.
    return text.replace("\r", " ").replace("\n", " ").encode(errors="replace")


def encode_simple(text: str) -> bytes:
    """A simple-string reply: ``+OK\\r\\n``. CR / LF in ``text`` become spaces."""
    return b"+" + _one_line(text) + _CRLF


def encode_error(message: str) -> bytes:
    """An error reply. ``message`` is sent whole and should start with the error type, as in
    ``"ERR unknown command 'FOO'"`` or ``"WRONGTYPE ..."``. CR / LF become spaces."""
    return b"-" + _one_line(message) + _CRLF


def encode_integer(number: int) -> bytes:
    """An integer reply: ``:42\\r\\n``."""
    return b":%d\r\n" % number


def encode_bulk(data: bytes | None) -> bytes:
    """A bulk-string reply; None is the null bulk ``$-1\\r\\n`` (a missing key)."""
    if data is None:
        return NULL_BULK
    size = len(data)
    if size < _BULK_HEADERS_CACHED:
        return _BULK_HEADERS[size] + data + _CRLF
    return b"$%d\r\n%b\r\n" % (size, data)


#: Bulk headers for common value sizes, built once: concatenating a cached header is about twice
#: as fast as formatting one per reply (a GET's hot path).
_BULK_HEADERS_CACHED = 16 * 1024
_BULK_HEADERS = [b"$%d\r\n" % size for size in range(_BULK_HEADERS_CACHED)]


def _encode_item(item: object, parts: list[bytes]) -> None:
    if isinstance(item, bytes | bytearray):
        parts.append(b"$%d\r\n%b\r\n" % (len(item), item))
    elif isinstance(item, RespError):
        parts.append(encode_error(item))
    elif isinstance(item, str):
        encoded = item.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(encoded), encoded))
    elif isinstance(item, int):
        parts.append(b":%d\r\n" % item)
    elif item is None:
        parts.append(NULL_BULK)
    elif isinstance(item, list | tuple):
        parts.append(b"*%d\r\n" % len(item))
        for element in item:
            _encode_item(element, parts)
    else:
        raise TypeError(f"cannot encode {type(item).__name__} in a RESP reply")


def encode_array(items: list | tuple | None) -> bytes:
    """An array reply, encoded recursively: bytes and str as bulk strings (str in UTF-8), int
    as integer, None as null bulk, ``RespError`` as error, list / tuple as nested array. None
    for ``items`` is the null array ``*-1\\r\\n``."""
    if items is None:
        return NULL_ARRAY
    parts: list[bytes] = []
    _encode_item(items, parts)
    return b"".join(parts)


# -- client side ---------------------------------------------------------------------------


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as clients send it (multibulk); str in UTF-8, int in decimal."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class _NeedMore(Exception):
    """The buffer ends inside a reply; ``size_bytes_needed`` counts from the reply's start."""

    def __init__(self, size_bytes_needed: int) -> None:
        self.size_bytes_needed = size_bytes_needed


class RespReplyParser(_ByteStream):
    """Splits a RESP2 reply stream into Python values.

    Simple string -> ``str``, error -> ``RespError``, integer -> ``int``, bulk -> ``bytes`` (or
    None for ``$-1``), array -> ``list`` (or None for ``*-1``). Malformed input raises
    ``ProtocolError`` and the parser keeps raising it.
    """

    def __init__(
        self,
        bulk_size_bytes_max: int = BULK_SIZE_BYTES_MAX,
        array_len_max: int = ARRAY_LEN_MAX,
        line_size_bytes_max: int = REPLY_LINE_SIZE_BYTES_MAX,
        depth_max: int = REPLY_DEPTH_MAX,
    ) -> None:
        super().__init__()
        self.bulk_size_bytes_max = bulk_size_bytes_max
        self.array_len_max = array_len_max
        self.line_size_bytes_max = line_size_bytes_max
        self.depth_max = depth_max

    def pop_replies(self) -> list[object]:
        """Return every complete reply buffered, in order; keep an incomplete tail."""
        data = self._snapshot()
        if data is None:
            return []
        replies: list[object] = []
        position = 0
        self._size_bytes_needed = 1
        try:
            while position < len(data):
                reply, position_next = self._parse_value(data, position, 0)
                replies.append(reply)
                position = position_next
        except _NeedMore as need:
            # A reply is reparsed from its start when more bytes come (replies are small).
            self._size_bytes_needed = need.size_bytes_needed - position
        except ProtocolError as error:
            self._error = error
            raise
        self._consume(position)
        return replies

    def _line(self, data: bytes, position: int) -> int:
        """The index of the CRLF ending the line that starts at ``position``."""
        line_end = data.find(_CRLF, position, position + self.line_size_bytes_max)
        if line_end < 0:
            if len(data) - position >= self.line_size_bytes_max:
                raise ProtocolError("Protocol error: reply line too long")
            raise _NeedMore(len(data) + 1)
        return line_end

    def _length(self, data: bytes, position: int, line_end: int, what: str) -> int:
        try:
            return int(data[position + 1 : line_end])
        except ValueError:
            raise ProtocolError(f"Protocol error: invalid {what}") from None

    def _parse_value(self, data: bytes, position: int, depth: int) -> tuple[object, int]:
        """Parse the reply at ``position``; return it and the position after it."""
        if position >= len(data):
            raise _NeedMore(position + 1)
        kind = data[position]
        line_end = self._line(data, position)
        if kind == _DOLLAR:
            size = self._length(data, position, line_end, "bulk length")
            if size == -1:
                return None, line_end + 2
            if not 0 <= size <= self.bulk_size_bytes_max:
                raise ProtocolError("Protocol error: invalid bulk length")
            start = line_end + 2
            stop = start + size
            if stop + 2 > len(data):
                raise _NeedMore(stop + 2)
            if data[stop] != _CR or data[stop + 1] != _LF:
                raise ProtocolError("Protocol error: expected CRLF after bulk reply")
            return data[start:stop], stop + 2
        if kind in (_PLUS, _MINUS):
            try:
                text = data[position + 1 : line_end].decode()
            except UnicodeDecodeError:
                raise ProtocolError("Protocol error: reply line is not UTF-8") from None
            return (text if kind == _PLUS else RespError(text)), line_end + 2
        if kind == _COLON:
            return self._length(data, position, line_end, "integer"), line_end + 2
        if kind == _STAR:
            count = self._length(data, position, line_end, "multibulk length")
            if count == -1:
                return None, line_end + 2
            if not 0 <= count <= self.array_len_max:
                raise ProtocolError("Protocol error: invalid multibulk length")
            if depth >= self.depth_max:
                raise ProtocolError("Protocol error: replies nested too deep")
            items = []
            position = line_end + 2
            for _ in range(count):
                item, position = self._parse_value(data, position, depth + 1)
                items.append(item)
            return items, position
        raise ProtocolError(f"Protocol error: unknown reply type {chr(kind)!r}")
