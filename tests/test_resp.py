"""RESP2 codec: command parsing (fast and general paths), reply encoding and parsing, caps, fuzz."""

from __future__ import annotations

import contextlib
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutations import mutated

from gossipcache.errors import ProtocolError
from gossipcache.wire.resp import (
    LARGE_BULK_SIZE_BYTES_MIN,
    NULL_ARRAY,
    NULL_BULK,
    OK,
    PARSED_ARG_OVERHEAD_BYTES,
    PONG,
    RespError,
    RespParser,
    RespReplyParser,
    _parse_simple_multibulk,
    encode_array,
    encode_bulk,
    encode_command,
    encode_error,
    encode_integer,
    encode_simple,
)

FAST = settings(max_examples=150, deadline=None)
FUZZ = settings(max_examples=400, deadline=None)

REDIS_BENCHMARK_SET = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nxxx\r\n"

# Arguments: mostly small, sometimes holding CRLF, sometimes above the fast path's 4 KiB table.
arguments = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"\r\n", b"a\r\nb", b"$3\r\nSET", b"*1\r\n", b""]),
    # Cheap to generate: hypothesis drawing 4 KiB of random bytes would dominate the run time.
    st.tuples(st.integers(4090, 4100), st.binary(min_size=1, max_size=1)).map(
        lambda size_and_byte: size_and_byte[1] * size_and_byte[0]
    ),
)
commands = st.lists(arguments, min_size=1, max_size=6)
inline_words = st.binary(min_size=1, max_size=8).filter(
    lambda word: not word.startswith(b"*") and not any(c in b" \t\r\n\x0b\x0c" for c in word)
)
inline_commands = st.lists(inline_words, min_size=1, max_size=4)
chunk_sizes = st.lists(st.integers(1, 50), min_size=1, max_size=8)


def feed_in_chunks(parser, stream: bytes, sizes: list[int], pop) -> list:
    """Feed ``stream`` in chunks of ``sizes`` (cycled), popping after each; return everything."""
    out = []
    position = 0
    index = 0
    while position < len(stream):
        size = sizes[index % len(sizes)]
        parser.feed(stream[position : position + size])
        out.extend(pop())
        position += size
        index += 1
    return out


def parse_commands(stream: bytes, sizes: list[int] | None = None, **caps) -> list[list[bytes]]:
    parser = RespParser(**caps)
    if sizes is None:
        parser.feed(stream)
        result = parser.pop_commands()
    else:
        result = feed_in_chunks(parser, stream, sizes, parser.pop_commands)
    assert parser.buffered_size_bytes == 0
    return result


# -- commands --------------------------------------------------------------------------------


def test_redis_benchmark_pipeline():
    assert parse_commands(REDIS_BENCHMARK_SET * 16) == [[b"SET", b"key:000000000042", b"xxx"]] * 16
    assert encode_command("SET", b"key:000000000042", "xxx") == REDIS_BENCHMARK_SET


@FAST
@given(st.lists(commands, min_size=1, max_size=10), chunk_sizes)
def test_multibulk_round_trip_any_split(batch, sizes):
    stream = b"".join(encode_command(*command) for command in batch)
    assert parse_commands(stream) == batch
    assert parse_commands(stream, sizes) == batch


@FAST
@given(st.lists(commands | inline_commands, min_size=1, max_size=10), chunk_sizes, st.data())
def test_mixed_inline_and_multibulk(batch, sizes, data):
    parts = []
    for command in batch:
        if inline_commands_of(command) and data.draw(st.booleans()):
            ending = data.draw(st.sampled_from([b"\r\n", b"\n"]))
            parts.append(b" ".join(command) + ending)
        else:
            parts.append(encode_command(*command))
    assert parse_commands(b"".join(parts), sizes) == batch


def inline_commands_of(command: list[bytes]) -> list[list[bytes]]:
    """``[command]`` if it can be written inline, else []."""
    writable = all(
        word and not word.startswith(b"*") and not any(c in b" \t\r\n\x0b\x0c" for c in word)
        for word in command
    )
    return [command] if writable else []


@FAST
@given(st.lists(commands, max_size=8), st.binary(max_size=40))
def test_fast_path_agrees_with_general_path(batch, tail):
    """The split-based fast path never accepts what the general parser reads differently."""
    data = b"".join(encode_command(*command) for command in batch) + tail
    assert fast_parse(data) == general_parse(data)


def general_parse(data: bytes):
    """The general parser alone on ``data``: (commands, consumed), or "error"."""
    try:
        return RespParser()._parse(data, 0, [])
    except ProtocolError:
        return "error"


def fast_parse(data: bytes):
    """The fast path, then the general parser where it stopped."""
    try:
        return RespParser()._parse(data, *_parse_simple_multibulk(data))
    except ProtocolError:
        return "error"


def test_inline_commands():
    assert parse_commands(b"PING\r\n\r\n \n  GET   a  b\nset k\tv\r\n") == [
        [b"PING"],
        [b"GET", b"a", b"b"],
        [b"set", b"k", b"v"],
    ]


def test_empty_multibulk_is_no_command():
    assert parse_commands(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_incomplete_tail_stays_buffered():
    parser = RespParser()
    parser.feed(REDIS_BENCHMARK_SET + REDIS_BENCHMARK_SET[:-1])
    assert len(parser.pop_commands()) == 1
    assert parser.pop_commands() == []
    parser.feed(b"\n")
    assert parser.pop_commands() == [[b"SET", b"key:000000000042", b"xxx"]]


def test_large_value_in_small_reads():
    value = bytes(range(256)) * 4096  # 1 MiB, full of CRLF-free and CRLF-bearing spans
    stream = encode_command(b"SET", b"k", value) + encode_command(b"GET", b"k")
    parser = RespParser()
    out = []
    for position in range(0, len(stream), 65536):
        parser.feed(stream[position : position + 65536])
        out.extend(parser.pop_commands())
    assert out == [[b"SET", b"k", value], [b"GET", b"k"]]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*2000000\r\n", "invalid multibulk length"),
        (b"*1\r\nPING\r\n", "expected '$', got 'P'"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$4\r\nPINGxx", "expected CRLF"),
        (b"*" + b"1" * 40, "too big mbulk count string"),
        (b"*1\r\n$" + b"1" * 40, "too big bulk count string"),
    ],
)
def test_malformed_commands(stream, message):
    parser = RespParser()
    parser.feed(stream)
    with pytest.raises(ProtocolError, match="Protocol error: " + message.replace("$", r"\$")):
        parser.pop_commands()
    # Broken for good: the stream cannot be resynchronised.
    with pytest.raises(ProtocolError):
        parser.feed(b"*1\r\n$4\r\nPING\r\n")


def assert_rejected(parser: RespParser | RespReplyParser, stream: bytes, match: str) -> None:
    parser.feed(stream)
    with pytest.raises(ProtocolError, match=match):
        parser.pop_commands() if isinstance(parser, RespParser) else parser.pop_replies()


def test_caps_enforced_before_the_data_arrives():
    assert_rejected(
        RespParser(bulk_size_bytes_max=100), b"*2\r\n$3\r\nSET\r\n$101\r\n", "invalid bulk length"
    )
    assert_rejected(RespParser(array_len_max=10), b"*11\r\n", "invalid multibulk length")
    assert_rejected(RespParser(inline_size_bytes_max=100), b"x" * 101, "too big inline request")
    parser = RespParser(inline_size_bytes_max=100)
    parser.feed(b"x" * 100 + b"\n")
    assert parser.pop_commands() == [[b"x" * 100]]


def test_command_size_cap_across_reads():
    parser = RespParser(command_size_bytes_max=1000)
    parser.feed(b"*100\r\n")
    with pytest.raises(ProtocolError, match="command too big"):  # noqa: PT012
        for _ in range(100):
            parser.feed(b"$20\r\n" + b"a" * 20 + b"\r\n")
            parser.pop_commands()


# -- replies ---------------------------------------------------------------------------------


def test_reply_encoders():
    assert encode_simple("OK") == OK
    assert encode_simple("PONG") == PONG
    assert encode_simple("a\r\nb") == b"+a  b\r\n"
    assert encode_error("ERR unknown command 'FOO'") == b"-ERR unknown command 'FOO'\r\n"
    assert encode_error("ERR x\ny") == b"-ERR x y\r\n"
    assert encode_integer(-42) == b":-42\r\n"
    assert encode_bulk(b"") == b"$0\r\n\r\n"
    assert encode_bulk(None) == NULL_BULK
    assert encode_array(None) == NULL_ARRAY
    assert encode_array([b"a", "é", 1, None, [RespError("ERR x")], []]) == (
        b"*6\r\n$1\r\na\r\n$2\r\n\xc3\xa9\r\n:1\r\n$-1\r\n*1\r\n-ERR x\r\n*0\r\n"
    )
    with pytest.raises(TypeError):
        encode_array([1.5])


nested_replies = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=30)
    | st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        max_size=20,
    ).map(RespError),
    lambda children: st.lists(children, max_size=4),
    max_leaves=15,
)
top_replies = nested_replies | st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)


def encode_reply(value) -> bytes:
    if isinstance(value, RespError):
        return encode_error(value)
    if isinstance(value, str):
        return encode_simple(value)
    if isinstance(value, int):
        return encode_integer(value)
    if isinstance(value, list):
        return encode_array(value)
    return encode_bulk(value)


@FAST
@given(st.lists(top_replies, min_size=1, max_size=10), chunk_sizes)
def test_reply_round_trip_any_split(replies, sizes):
    stream = b"".join(encode_reply(reply) for reply in replies)
    parser = RespReplyParser()
    parsed = feed_in_chunks(parser, stream, sizes, parser.pop_replies)
    assert parsed == replies
    assert [type(reply) for reply in parsed] == [type(reply) for reply in replies]
    assert parser.buffered_size_bytes == 0


def test_reply_types():
    parser = RespReplyParser()
    parser.feed(b"+OK\r\n-ERR boom\r\n:5\r\n$-1\r\n*-1\r\n$3\r\nabc\r\n*0\r\n")
    replies = parser.pop_replies()
    assert replies == ["OK", "ERR boom", 5, None, None, b"abc", []]
    assert isinstance(replies[1], RespError)
    assert not isinstance(replies[0], RespError)


@pytest.mark.parametrize(
    "stream",
    [b"?x\r\n", b":abc\r\n", b"$abc\r\n", b"$-2\r\n", b"*-2\r\n", b"$1\r\nabc", b"+\xff\r\n"],
)
def test_malformed_replies(stream):
    assert_rejected(RespReplyParser(), stream, "Protocol error")


def test_reply_caps():
    assert_rejected(RespReplyParser(depth_max=3), b"*1\r\n" * 4 + b":1\r\n", "nested")
    assert_rejected(RespReplyParser(line_size_bytes_max=10), b"+" + b"a" * 20, "too long")
    assert_rejected(RespReplyParser(bulk_size_bytes_max=10), b"$11\r\n", "bulk length")


# -- fuzz: parsers only ever raise ProtocolError ---------------------------------------------


def parse_all(stream: bytes, sizes: list[int]) -> None:
    small_caps = {"bulk_size_bytes_max": 1000, "array_len_max": 100}
    for parser, pop in (
        (RespParser(inline_size_bytes_max=100, **small_caps), "pop_commands"),
        (RespReplyParser(line_size_bytes_max=100, **small_caps), "pop_replies"),
    ):
        with contextlib.suppress(ProtocolError):
            feed_in_chunks(parser, stream, sizes, getattr(parser, pop))


@FUZZ
@given(st.binary(max_size=300), chunk_sizes)
def test_fuzz_arbitrary_bytes(stream, sizes):
    parse_all(stream, sizes)


mutated_streams = mutated(
    st.tuples(st.lists(commands, max_size=4), st.lists(top_replies, max_size=4)).map(
        lambda both: (
            b"".join(encode_command(*command) for command in both[0])
            + b"".join(encode_reply(reply) for reply in both[1])
            + b"*1\r\n$4\r\nPING\r\n"
        )
    ),
    # Bytes that matter to RESP, so edits hit its structure.
    st.sampled_from(b"*$+-:\r\n0123456789x"),
)


@FUZZ
@given(mutated_streams, chunk_sizes)
def test_fuzz_mutated_streams(stream, sizes):
    parse_all(stream, sizes)
    assert fast_parse(stream) == general_parse(stream)


def test_parses_what_redis_py_sends():
    """redis-py (the reference client) packs large arguments in separate chunks."""
    connection = pytest.importorskip("redis.connection")
    encoder = connection.Encoder("utf-8", "strict", False)
    serializer = connection.PythonRespSerializer(6000, encoder.encode)
    value = b"v" * 7000
    parser = RespParser()
    for chunk in serializer.pack("SET", "k", value, "EX", 10) + serializer.pack("GET", "k"):
        parser.feed(chunk)
    assert parser.pop_commands() == [[b"SET", b"k", value, b"EX", b"10"], [b"GET", b"k"]]


@settings(max_examples=200, deadline=None)
@given(
    commands=st.lists(
        st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=10
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=4),
)
def test_parse_equals_feed_then_pop(commands: list[list[bytes]], cuts: list[int]) -> None:
    wire = b"".join(encode_command(*command) for command in commands)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    fast, slow = RespParser(), RespParser()
    got_fast: list[list[bytes]] = []
    got_slow: list[list[bytes]] = []
    for start, stop in zip(bounds, bounds[1:]):
        got_fast += fast.parse(wire[start:stop])
        slow.feed(wire[start:stop])
        got_slow += slow.pop_commands()
    assert got_fast == got_slow == commands


# -- exact reasons and boundaries (found by mutation testing, docs/mutation-membership.md) -----


def test_parse_fast_path_never_skips_buffered_bytes():
    inline = RespParser()
    assert inline.parse(b"EC") == []  # half an inline command
    assert inline.parse(b"*1\r\n$4\r\nPING\r\n") == [[b"EC*1"], [b"$4"], [b"PING"]]
    cut = RespParser()
    assert cut.parse(b"*2\r\n$3\r\nGET\r\n") == []
    # Nothing is left in the buffer, but the parsed argument is held: it counts.
    assert cut.buffered_size_bytes == len(b"*2\r\n$3\r\nGET\r\n") + PARSED_ARG_OVERHEAD_BYTES
    # One argument still owed: a new command in its place breaks the stream.
    with pytest.raises(ProtocolError, match="expected '\\$', got '\\*'"):
        cut.parse(b"*1\r\n$4\r\nPING\r\n")
    with pytest.raises(ProtocolError, match="expected '\\$', got '\\*'"):
        cut.parse(b"*1\r\n$4\r\nPING\r\n")  # and it stays broken


REPLY_ERRORS = [
    (b"\r\n", "Protocol error: unknown reply type '\\r'"),
    (b"$x\r\n", "Protocol error: invalid bulk length"),
    (b":x\r\n", "Protocol error: invalid integer"),
    (b"*x\r\n", "Protocol error: invalid multibulk length"),
    (b"*-2\r\n", "Protocol error: invalid multibulk length"),
    (b"$-2\r\n", "Protocol error: invalid bulk length"),
    (b"$1\r\na\rX", "Protocol error: expected CRLF after bulk reply"),
    (b"$1\r\naX\n", "Protocol error: expected CRLF after bulk reply"),
    (b"+\xff\r\n", "Protocol error: reply line is not UTF-8"),
]


@pytest.mark.parametrize(("stream", "text"), REPLY_ERRORS)
def test_malformed_replies_name_the_reason_and_stay_broken(stream, text):
    parser = RespReplyParser()
    parser.feed(stream)
    with pytest.raises(ProtocolError) as caught:
        parser.pop_replies()
    assert str(caught.value) == text
    with pytest.raises(ProtocolError):
        parser.pop_replies()


def test_reply_caps_are_inclusive():
    parser = RespReplyParser(bulk_size_bytes_max=3, array_len_max=2, depth_max=2)
    parser.feed(b"$3\r\nabc\r\n*2\r\n:1\r\n:2\r\n*1\r\n*1\r\n:1\r\n")
    assert parser.pop_replies() == [b"abc", [1, 2], [[1]]]
    assert_rejected(RespReplyParser(depth_max=2), b"*1\r\n*1\r\n*1\r\n:1\r\n", "nested too deep")
    assert_rejected(RespReplyParser(array_len_max=2), b"*3\r\n", "invalid multibulk length")
    assert_rejected(RespReplyParser(bulk_size_bytes_max=3), b"$4\r\n", "invalid bulk length")


def test_reply_line_cap_counts_from_the_line_start():
    parser = RespReplyParser(line_size_bytes_max=8)
    parser.feed(b"+OK\r\n+abc")  # the second line is short so far: wait for more
    assert parser.pop_replies() == ["OK"]
    parser.feed(b"d\r\n")
    assert parser.pop_replies() == ["abcd"]
    for stream in (b"+abcdefg", b"+" + b"x" * 20 + b"\r\n"):
        with pytest.raises(ProtocolError, match="^Protocol error: reply line too long$"):
            parser = RespReplyParser(line_size_bytes_max=8)
            parser.feed(stream)
            parser.pop_replies()


def test_reply_encoders_at_their_edges():
    assert encode_simple("a\udcffb") == b"+a?b\r\n"  # a lone surrogate cannot be UTF-8
    assert encode_error("ERR a\udcff") == b"-ERR a?\r\n"
    for size in (16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1):  # around the cached headers
        assert encode_bulk(b"x" * size) == b"$%d\r\n" % size + b"x" * size + b"\r\n"
    with pytest.raises(TypeError, match="^cannot encode object in a RESP reply$"):
        encode_array([1, object()])


COMMAND_ERRORS = [
    # (stream, caps, exact message): what a client is told before the connection closes
    (b"*x\r\n", {}, "Protocol error: invalid multibulk length"),
    (b"*3\r\n", {"array_len_max": 2}, "Protocol error: invalid multibulk length"),
    (b"*1\r\n$x\r\n", {}, "Protocol error: invalid bulk length"),
    (b"*1\r\n$5\r\n", {"bulk_size_bytes_max": 4}, "Protocol error: invalid bulk length"),
    (b"*1\r\n$1\r\naXY", {}, "Protocol error: expected CRLF after bulk argument"),
    (b"*1\r\n$1\r\na\rY", {}, "Protocol error: expected CRLF after bulk argument"),
    (b"*1\r\n$1\r\naX\n", {}, "Protocol error: expected CRLF after bulk argument"),
    (b"*1\r\nX", {}, "Protocol error: expected '$', got 'X'"),
    (b"*" + b"1" * 31, {}, "Protocol error: too big mbulk count string"),
    (b"*1\r\n$" + b"1" * 31, {}, "Protocol error: too big bulk count string"),
    (b"x" * 11, {"inline_size_bytes_max": 10}, "Protocol error: too big inline request"),
    (
        b"*2\r\n$3\r\nSET\r\n$100\r\n",
        {"command_size_bytes_max": 100},
        "Protocol error: command too big",
    ),
]


@pytest.mark.parametrize(("stream", "caps", "text"), COMMAND_ERRORS)
def test_malformed_commands_name_the_exact_reason(stream, caps, text):
    parser = RespParser(**caps)
    parser.feed(stream)
    with pytest.raises(ProtocolError) as caught:
        parser.pop_commands()
    assert str(caught.value) == text


def test_command_caps_are_inclusive():
    parser = RespParser(array_len_max=2, bulk_size_bytes_max=3, inline_size_bytes_max=10)
    # After an inline command the fast path stops at once: the general path checks the caps.
    parser.feed(b"PING\r\n*2\r\n$3\r\nabc\r\n$1\r\nb\r\n")
    assert parser.pop_commands() == [[b"PING"], [b"abc", b"b"]]
    assert parser.parse(b"x" * 10) == []  # a full-size inline line, its newline not here yet
    assert parser.parse(b"\n") == [[b"x" * 10]]
    assert parser.parse(b"abcdefghi\r\n") == [[b"abcdefghi"]]
    # Length lines of 30 bytes + CRLF fit in 32 (the parser waits for their end), but leading
    # zeros are not an integer to Redis, nor to the parser.
    count_line = RespParser()
    assert count_line.parse(b"*" + b"0" * 28) == []
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        count_line.parse(b"1\r\n")
    size_line = RespParser()
    assert size_line.parse(b"*1\r\n$" + b"0" * 28) == []
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        size_line.parse(b"1\r\nz\r\n")
    # A cut command counts the bytes it took (not those of the command before it) plus the
    # bytes it still needs against the cap: 13 taken + 23 needed (5 + 16 + 2) = 36.
    first, second = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nSET\r\n", b"$16\r\n"
    exact = RespParser(command_size_bytes_max=36)
    assert exact.parse(first) == [[b"PING"]] and exact.parse(second) == []
    assert exact.parse(b"x" * 16 + b"\r\n") == [[b"SET", b"x" * 16]]
    tight = RespParser(command_size_bytes_max=35)
    assert tight.parse(first) == [[b"PING"]]
    with pytest.raises(ProtocolError, match="command too big"):
        tight.parse(second)
    # The same when the command before it was itself finished by the general path.
    after_cut = RespParser(command_size_bytes_max=36)
    assert after_cut.parse(b"*1\r\n$4\r\nPI") == []
    assert after_cut.parse(b"NG\r\n*2\r\n$3\r\nSET\r\n") == [[b"PING"]]
    assert after_cut.parse(second) == []


def test_commands_split_anywhere_parse_the_same():
    stream = b"PING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nECHO hi\n*1\r\n$4\r\nQUIT\r\n"
    expected = [[b"PING"], [b"GET", b"k"], [b"ECHO", b"hi"], [b"QUIT"]]
    for cut in range(len(stream) + 1):
        parser = RespParser()
        assert parser.parse(stream[:cut]) + parser.parse(stream[cut:]) == expected
        assert parser.buffered_size_bytes == 0


@pytest.mark.parametrize(
    "stream",
    [
        b"*3\r\n$4\r\nSET\r\n$3\r\nkey\r\n$1\r\nv\r\n",
        b"*3\r\n$3\r\nSET\r\n$4\r\nkey\r\n$1\r\nv\r\n",
        b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$2\r\nv\r\n",
        b"*2\r\n$4\r\nGET\r\n$1\r\nk\r\n",
        b"*2\r\n$3\r\nGET\r\n$2\r\nk\r\n",
        b"*1\r\n$5\r\n$2\r\n",  # the argument looks like a length line of its own size
        b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$2\r\nd\r\n",
    ],
)
def test_fast_path_accepts_nothing_with_a_wrong_length(stream):
    assert _parse_simple_multibulk(stream) == (0, [])
    assert _parse_simple_multibulk(REDIS_BENCHMARK_SET + stream) == (
        len(REDIS_BENCHMARK_SET),
        [[b"SET", b"key:000000000042", b"xxx"]],
    )


def test_client_side_encoding_and_error_repr():
    assert encode_command("EXPIRE", b"k", 10) == b"*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n10\r\n"
    assert repr(RespError("ERR x")) == "RespError('ERR x')"


def test_length_and_inline_lines_are_bounded_even_when_a_crlf_follows():
    for stream, text in (
        (b"*" + b"0" * 40 + b"1\r\n$1\r\na\r\n", "too big mbulk count string"),
        (b"*1\r\n$" + b"0" * 40 + b"1\r\na\r\n", "too big bulk count string"),
        (b"x" * 20 + b"\r\n", "too big inline request"),
        (b"x" * 10 + b"\r\n", "too big inline request"),  # the CR counts: 11 bytes
    ):
        parser = RespParser(inline_size_bytes_max=10)
        parser.feed(stream)
        with pytest.raises(ProtocolError, match=text):
            parser.pop_commands()


def test_inline_edges():
    assert RespParser().parse(b"\nPING\r\n") == [[b"PING"]]  # an empty first line is skipped
    parser = RespParser(inline_size_bytes_max=10)
    assert parser.parse(b"PING\r\nEC") == [[b"PING"]]  # a short tail waits, wherever it is
    assert parser.parse(b"HO x\n") == [[b"ECHO", b"x"]]
    assert parser.parse(b"PING") == [] and parser.parse(b"\n") == [[b"PING"]]  # one byte ends it


def test_reply_nesting_error_is_exact():
    parser = RespReplyParser(depth_max=1)
    parser.feed(b"*1\r\n*1\r\n:1\r\n")
    with pytest.raises(ProtocolError) as caught:
        parser.pop_replies()
    assert str(caught.value) == "Protocol error: replies nested too deep"


# -- large arguments: copied once out of the receive buffer -----------------------------------


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(LARGE_BULK_SIZE_BYTES_MIN - 2, 3 * LARGE_BULK_SIZE_BYTES_MIN),
    chunk=st.integers(1000, 100_000),
    values_before=st.integers(0, 2),
)
def test_large_arguments_parse_the_same_in_any_chunks(size, chunk, values_before) -> None:
    big = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    commands = [[b"SET", b"k%d" % i, big] for i in range(values_before)]
    commands += [[b"SET", b"key", big, b"EX", b"10"], [b"GET", b"key"], [b"PING"]]
    wire = b"".join(encode_command(*command) for command in commands)
    parser = RespParser()
    got: list[list[bytes]] = []
    for start in range(0, len(wire), chunk):
        got += parser.parse(wire[start : start + chunk])
    assert got == commands and parser.buffered_size_bytes == 0


def test_a_large_value_is_held_twice_not_three_times_while_it_arrives() -> None:
    value_size = 4 * 1024 * 1024
    wire = encode_command(b"SET", b"k", b"v" * value_size)
    chunks = [wire[i : i + 65536] for i in range(0, len(wire), 65536)]
    del wire
    parser = RespParser()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for chunk in chunks:
            commands = parser.parse(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert commands == [[b"SET", b"k", b"v" * value_size]]
    # The receive buffer and the argument copied out of it; no snapshot of the buffer.
    assert peak - base < 2.2 * value_size
