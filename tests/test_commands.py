"""The protocol-neutral commands, checked against Redis itself.

Differential tests send the same commands to a real ``redis-server`` (7.0) and to a node's RESP
session, and require the same replies (``comparable``: TTL readings to 10 s, introspection
commands by shape), then probe the state each left. Skipped when ``redis-server`` is not
installed (``.ci/run`` installs it). Three sources of commands:

- ``test_every_command_in_every_shape_matches_redis``: every command served, in the argument
  shapes where implementations differ (``ARGUMENT_SHAPES``: integers with leading zeros, ``+``,
  ``_``, spaces, beyond int64; wrong arities; repeated and conflicting options; CR, LF, NUL and
  non-ASCII bytes).
- ``test_recorded_sequences_match_redis``: the recorded corpus ``tests/redis_corpus.txt``
  (issue 8's cases, protocol-level bytes included), which must name every command served.
- ``test_replies_match_redis``: random sequences of SET (every option), GET, DEL, EXISTS, the
  EXPIRE family (every option), PERSIST, TTL and PTTL, mixed with the shapes above.

What differs on purpose (docs/protocol.md, "Differences from Redis") is not sent to either side
(``documented_difference``). Plus direct tests of the core's command objects and their
validation.
"""

from __future__ import annotations

import codecs
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipcache.clock import ManualClock
from gossipcache.errors import InvalidRequest, ServiceUnavailable
from gossipcache.limits import EXPIRES_AT_MS_MAX, TTL_MS_MAX
from gossipcache.node import commands as c
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore
from gossipcache.node.resp_session import RespSession, resp_table
from gossipcache.wire.resp import RespError, RespReplyParser, encode_command

REDIS_SERVER = shutil.which("redis-server")
#: TTLs in the random sequences are far longer than a test run, so nothing expires by the clock
#: (expiry by an instant in the past, or a non-positive TTL, is exercised on purpose).
TTL_S_MIN = 1_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = RespReplyParser()

    def reconnect(self) -> None:
        """A new connection: a fresh session (name, protocol), the same keyspace."""
        self.sock.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.parser = RespReplyParser()

    def raw(self, data: bytes, count: int, expect_close: bool) -> list[object]:
        """Send ``data`` as it is; read ``count`` replies (and the close, if expected)."""
        self.sock.sendall(data)
        replies: list[object] = []
        while len(replies) < count or expect_close:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.parser.feed(chunk)
            replies += self.parser.pop_replies()
        return replies

    def call(self, args: list[bytes]) -> object:
        self.sock.sendall(encode_command(*args))
        while True:
            replies = self.parser.pop_replies()
            if replies:
                return replies[0]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.parser.feed(data)


@pytest.fixture(scope="module")
def redis():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                connection = RedisConnection(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield connection
    finally:
        process.terminate()
        process.wait(timeout=10)


def node_session() -> tuple[NodeCore, RespSession]:
    clock = ManualClock(wall_ms=time.time_ns() // 1_000_000)
    core = NodeCore(NodeConfig(membership_enabled=False), clock)
    return core, RespSession(core, 1, resp_table(core))


def node_call(session: RespSession, args: list[bytes]) -> object:
    parser = RespReplyParser()
    parser.feed(session.receive(encode_command(*args)))
    (reply,) = parser.pop_replies()
    return reply


KEYS = st.sampled_from([b"a", b"b", b"c"])
NOW_S = time.time_ns() // 1_000_000_000

#: Integer spellings Redis reads strictly (``string2ll``): only the canonical decimal form of a
#: signed 64-bit value is an integer.
INTEGER_SHAPES = [
    b"010", b"+10", b"1_0", b" 10", b"10 ", b"-0", b"00", b"", b"1e3", b"0x10", b"10.0",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
    b"-9223372036854775809", b"99999999999999999999", b"-1", b"0", b"7",
]  # fmt: skip
#: Arguments with bytes that need care: CR, LF, NUL, space, DEL, non-ASCII.
AWKWARD_ARGUMENTS = [b"a\r\nb", b"a\nb", b"\x00", b" ", b"a b", b"\x7f", b"\xff", b"", b"~!"]


def _seconds(draw) -> bytes:
    return b"%d" % draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, 3 * TTL_S_MIN, 0, -5]))


@st.composite
def command(draw) -> list[bytes]:
    kind = draw(st.sampled_from(["set", "get", "del", "exists", "expire", "persist", "ttl"]))
    key = draw(KEYS)
    if kind == "set":
        args = [b"SET", key, draw(st.sampled_from([b"v1", b"v2"]))]
        options = draw(st.lists(st.sampled_from(
            ["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT"]), max_size=3))  # fmt: skip
        for option in options:
            args.append(option.encode())
            if option in ("EX", "EXAT"):
                base = NOW_S if option == "EXAT" else 0
                args.append(b"%d" % (base + draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, -1]))))
            elif option in ("PX", "PXAT"):
                base = NOW_S * 1000 if option == "PXAT" else 0
                ms = draw(st.sampled_from([TTL_S_MIN * 1000, 3 * TTL_S_MIN * 1000, -1]))
                args.append(b"%d" % (base + ms))
        return args
    if kind in ("get", "persist"):
        return [kind.upper().encode(), key]
    if kind in ("del", "exists"):
        return [kind.upper().encode(), key, *draw(st.lists(KEYS, max_size=2))]
    if kind == "ttl":
        return [draw(st.sampled_from([b"TTL", b"PTTL"])), key]
    name = draw(st.sampled_from([b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"]))
    seconds = draw(st.sampled_from([TTL_S_MIN, 2 * TTL_S_MIN, 3 * TTL_S_MIN, 0, -5]))
    if name.endswith(b"AT"):
        seconds = NOW_S + seconds if seconds > 0 else seconds
    number = seconds * 1000 if name.startswith(b"P") else seconds
    options = draw(st.lists(st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"nx"]), max_size=2))
    return [name, key, b"%d" % number, *options]


@st.composite
def any_command(draw) -> list[bytes]:
    """A command of any kind this node serves, its arguments in the shapes where parsers
    differ (``argument_shapes``), or a plain data command (``command``)."""
    if draw(st.booleans()):
        return draw(command())
    return draw(st.sampled_from(ARGUMENT_SHAPES))


# -- what may differ, and how replies are compared ------------------------------------------

#: Our CONFIG GET parameters; Redis has many more (its extra names are not compared).
OUR_CONFIG_NAMES = {"maxmemory", "maxmemory-policy", "save", "appendonly", "databases", "port"}
OUR_CONFIG_NAMES.add("bind")


INT64_MAX = 2**63 - 1


def _expiry_redis_accepts_ms(args: list[bytes]) -> int | None:
    """The expiry instant (ms) Redis would accept from this SET or EXPIRE, if any: Redis only
    refuses what overflows int64."""
    name = args[0].upper()
    now_ms = time.time_ns() // 1_000_000
    for index, raw in enumerate(args):
        unit = raw.upper()
        if name == b"SET" and index >= 3 and unit in (b"EX", b"PX", b"EXAT", b"PXAT"):
            number = _int_or_none(args[index + 1]) if index + 1 < len(args) else None
        elif name in (b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT") and index == 0:
            unit = {b"EXPIRE": b"EX", b"PEXPIRE": b"PX"}.get(name, name[: -len(b"IRE")])
            unit = {b"EXPIREAT": b"EXAT", b"PEXPIREAT": b"PXAT"}.get(name, unit)
            number = _int_or_none(args[2]) if len(args) > 2 else None
        else:
            continue
        if number is None or number <= 0:
            continue
        milliseconds = number * 1000 if unit in (b"EX", b"EXAT") else number
        instant_ms = milliseconds + (now_ms if unit in (b"EX", b"PX") else 0)
        if milliseconds <= INT64_MAX and instant_ms <= INT64_MAX:
            return instant_ms
    return None


def _int_or_none(raw: bytes) -> int | None:
    try:
        return int(raw) if raw.strip() == raw and b"_" not in raw else None
    except ValueError:
        return None


def documented_difference(args: list[bytes]) -> str | None:
    """Why this command is not sent to both (docs/protocol.md lists each difference), or None.
    Such commands would also make the two keyspaces diverge."""
    name = args[0].upper() if args else b""
    sub = args[1].upper() if len(args) > 1 else b""
    instant_ms = _expiry_redis_accepts_ms(args)
    if instant_ms is not None and instant_ms > EXPIRES_AT_MS_MAX:
        return "expiry cap: an instant past EXPIRES_AT_MS_MAX is refused"
    if name == b"SELECT" and sub not in (b"0",) and (_int_or_none(sub) or 0) in range(1, 16):
        return "one database per node"
    if name == b"CLIENT" and sub == b"SETINFO":
        return "CLIENT SETINFO is Redis 7.2's"
    if name == b"HELLO" and sub == b"3":
        return "RESP3 replies are checked with redis-py (tests/test_server.py)"
    if name == b"COMMAND" and sub in (b"", b"GETKEYS", b"GETKEYSANDFLAGS"):
        return "COMMAND without a subcommand lists no command; GETKEYS is not served"
    if name == b"COMMAND" and sub == b"LIST" and len(args) > 2:
        return "COMMAND LIST takes no filter here"
    if name == b"CONFIG" and sub == b"SET":
        return "a node is configured at start"
    # The arguments an error message may quote: a subcommand, HELLO's and EXPIRE's options.
    quoted = {b"CLIENT": (1, 2), b"COMMAND": (1, 2), b"CONFIG": (1, 2), b"HELLO": (2, None)}
    quoted.update(dict.fromkeys((b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"), (3, None)))
    start, stop = quoted.get(name, (0, 0))
    if not _utf8(args[start:stop]):
        return "an error quotes a non-UTF-8 argument with U+FFFD; Redis sends its bytes"
    return None


def _utf8(args: list[bytes]) -> bool:
    try:
        for raw in args:
            raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _info_summary(text: bytes) -> object:
    """INFO's contents differ (other fields); its sections and keyspace counts must not."""
    lines = text.decode().split("\r\n")
    sections = [line for line in lines if line.startswith("# ")]
    keyspace = [line.split(",avg_ttl=")[0] for line in lines if line.startswith("db0:")]
    return ("info", sections if sections in ([], ["# Keyspace"]) else len(sections) > 0, keyspace)


def comparable(args: list[bytes], reply: object) -> object:
    """``reply`` reduced to what must equal Redis': errors, integers, values and arrays whole;
    TTL readings to 10 s (they move with the clock); and for the introspection commands
    (INFO, HELLO, CLIENT ID, COMMAND, CONFIG GET) their shape and our parameters."""
    if isinstance(reply, RespError) or not args:
        return reply
    name = args[0].upper()
    sub = args[1].upper() if len(args) > 1 else b""
    if name in (b"TTL", b"PTTL") and isinstance(reply, int) and reply >= 0:
        return ("ttl", round(reply / (1000 if name == b"PTTL" else 1) / 10))
    if name == b"INFO" and isinstance(reply, bytes):
        return _info_summary(reply)
    if name == b"HELLO" and isinstance(reply, list):
        return ("hello", reply[0::2], reply[reply.index(b"proto") + 1])
    if (name, sub) == (b"CLIENT", b"ID") or (name, sub) == (b"COMMAND", b"COUNT"):
        return ("integer", isinstance(reply, int))
    if name == b"COMMAND" and sub in (b"DOCS", b"INFO", b"LIST", b"HELP"):
        return ("array", isinstance(reply, list))
    if (name, sub) == (b"CONFIG", b"GET") and isinstance(reply, list):
        names = {n.decode().lower() for n in reply[0::2]} & OUR_CONFIG_NAMES
        return ("config", sorted(names))
    if name in (b"CONFIG", b"CLIENT") and sub == b"HELP" and isinstance(reply, list):
        return ("help", True)
    return reply


def _node_replies(session: RespSession, data: bytes) -> list[object]:
    parser = RespReplyParser()
    parser.feed(session.receive(data))
    return parser.pop_replies()


class DifferentialRun:
    """One keyspace on each side, a fresh node session and Redis connection; ``send`` a command
    (or raw bytes) to both and compare the replies."""

    def __init__(self, redis: RedisConnection) -> None:
        redis.reconnect()
        redis.call([b"FLUSHALL"])
        self.redis = redis
        self.core, self.session = node_session()

    def send(self, args: list[bytes], where: str = "") -> None:
        if documented_difference(args):
            return
        if self.session.closing:  # after QUIT or a protocol error both sides start over
            self._new_sessions()
        expected = self.redis.call(args)
        (got,) = _node_replies(self.session, encode_command(*args))
        assert comparable(args, got) == comparable(args, expected), (where, args, got, expected)

    def _new_sessions(self) -> None:
        self.redis.reconnect()
        self.session = RespSession(self.core, 2, resp_table(self.core))

    def send_raw(self, data: bytes, where: str = "") -> None:
        """Protocol-level bytes: the node's replies say how many to read from Redis."""
        got = _node_replies(self.session, data)
        expected = self.redis.raw(data, len(got), expect_close=self.session.closing)
        assert got == expected, (where, data, got, expected)
        if self.session.closing:
            self._new_sessions()


def _setup(run: DifferentialRun) -> None:
    for args in ([b"SET", b"k", b"v"], [b"SET", b"t", b"v", b"EX", b"1000"]):
        run.send(args)


def _probe(run: DifferentialRun, where: str) -> None:
    """State after a command: what it may have changed must match too. (Not DBSIZE: Redis
    counts a key whose expiry has passed until its expiry cycle collects it, a matter of
    timing.)"""
    for args in ([b"GET", b"k"], [b"PTTL", b"t"], [b"EXISTS", b"k", b"t", b"n"]):
        run.send(args, where)
    run.send([b"CLIENT", b"GETNAME"], where)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_command(), min_size=1, max_size=25))
def test_replies_match_redis(redis, sequence: list[list[bytes]]) -> None:
    run = DifferentialRun(redis)
    for args in sequence:
        run.send(args)
    _probe(run, "after the sequence")


# -- every command this node serves, in the argument shapes where implementations differ -------


def _integer_variants(base: list[bytes], positions: list[int]) -> list[list[bytes]]:
    return [
        base[:position] + [shape] + base[position + 1 :]
        for position in positions
        for shape in INTEGER_SHAPES
    ]


def _arity_variants(base: list[bytes]) -> list[list[bytes]]:
    return [base[:count] for count in range(1, len(base))] + [base + [b"x"], base + [b"x", b"y"]]


def _awkward_variants(base: list[bytes], positions: list[int]) -> list[list[bytes]]:
    return [
        base[:position] + [raw] + base[position + 1 :]
        for position in positions
        for raw in AWKWARD_ARGUMENTS
    ]


def _repeated_options(base: list[bytes], options: list[list[bytes]]) -> list[list[bytes]]:
    variants = []
    for first in options:
        for second in options:
            variants.append(base + first + second)
            variants.append(base + first + first)
    return variants


#: A valid form of each command served, the positions of its integer arguments and of its
#: free-form ones, and its options (with their arguments).
COMMAND_FORMS: list[tuple[list[bytes], list[int], list[int], list[list[bytes]]]] = [
    ([b"GET", b"k"], [], [1], []),
    ([b"SET", b"k", b"v"], [], [1, 2], [
        [b"NX"], [b"XX"], [b"GET"], [b"KEEPTTL"], [b"EX", b"100"], [b"PX", b"100000"],
        [b"EXAT", b"%d" % (NOW_S + 100)], [b"PXAT", b"%d" % (NOW_S * 1000 + 100_000)],
        [b"ex", b"100"], [b"EX"], [b"FOO"],
    ]),
    ([b"SET", b"k", b"v", b"EX", b"100"], [4], [], []),
    ([b"SET", b"k", b"v", b"PX", b"100000"], [4], [], []),
    ([b"SET", b"k", b"v", b"EXAT", b"%d" % (NOW_S + 100)], [4], [], []),
    ([b"SET", b"k", b"v", b"PXAT", b"%d" % (NOW_S * 1000 + 100_000)], [4], [], []),
    ([b"DEL", b"k", b"t"], [], [1], []),
    ([b"EXISTS", b"k", b"t"], [], [1], []),
    *[
        ([name, b"t", b"%d" % number], [2], [1], [[b"NX"], [b"XX"], [b"GT"], [b"LT"], [b"gt"], [b"FOO"]])
        for name, number in (
            (b"EXPIRE", 500), (b"PEXPIRE", 500_000), (b"EXPIREAT", NOW_S + 500),
            (b"PEXPIREAT", NOW_S * 1000 + 500_000),
        )
    ],
    ([b"PERSIST", b"t"], [], [1], []),
    ([b"TTL", b"t"], [], [1], []),
    ([b"PTTL", b"t"], [], [1], []),
    ([b"DBSIZE"], [], [], []),
    ([b"FLUSHALL"], [], [], [[b"ASYNC"], [b"SYNC"], [b"sync"], [b"FOO"]]),
    ([b"FLUSHDB"], [], [], [[b"ASYNC"], [b"SYNC"], [b"FOO"]]),
    ([b"PING"], [], [], [[b"hello"]]),
    ([b"PING", b"hello"], [], [1], []),
    ([b"ECHO", b"hello"], [], [1], []),
    ([b"INFO", b"keyspace"], [], [1], [[b"keyspace"], [b"all"], [b"default"], [b"foo"]]),
    ([b"SELECT", b"0"], [1], [], []),
    ([b"HELLO", b"2"], [1], [], [[b"SETNAME", b"n"], [b"SETNAME"], [b"FOO"]]),
    ([b"HELLO", b"2", b"SETNAME", b"n"], [], [3], []),
    ([b"CLIENT", b"SETNAME", b"n"], [], [2], []),
    ([b"CLIENT", b"GETNAME"], [], [], []),
    ([b"CLIENT", b"ID"], [], [], []),
    ([b"CLIENT", b"HELP"], [], [], []),
    ([b"CLIENT", b"FOO"], [], [1], []),
    ([b"COMMAND", b"COUNT"], [], [], []),
    ([b"COMMAND", b"DOCS", b"get"], [], [2], []),
    ([b"COMMAND", b"INFO", b"get"], [], [], []),
    ([b"COMMAND", b"FOO"], [], [1], []),
    ([b"CONFIG", b"GET", b"maxmemory"], [], [2], [[b"save"], [b"*"], [b"MAX*"], [b"port"]]),
    ([b"CONFIG", b"RESETSTAT"], [], [], []),
    ([b"CONFIG", b"HELP"], [], [], []),
    ([b"CONFIG", b"REWRITE"], [], [], []),
    ([b"CONFIG", b"FOO"], [], [1], []),
    ([b"QUIT"], [], [], []),
]  # fmt: skip


def argument_shapes() -> list[list[bytes]]:
    shapes = []
    for base, integers, free, options in COMMAND_FORMS:
        shapes.append(base)
        shapes += _arity_variants(base)
        shapes += _integer_variants(base, integers)
        shapes += _awkward_variants(base, free)
        shapes += _repeated_options(base, options)
        shapes.append([base[0].lower(), *base[1:]])
        shapes.append([base[0].title(), *base[1:]])
    return shapes


ARGUMENT_SHAPES = argument_shapes()


def test_every_command_in_every_shape_matches_redis(redis) -> None:
    """Each command served, in every shape above, after the same setup on both sides; then the
    state it left. About 900 commands."""
    for args in ARGUMENT_SHAPES:
        run = DifferentialRun(redis)
        _setup(run)
        run.send(args, "the command")
        _probe(run, f"after {args!r:.120}")


# -- recorded sequences ---------------------------------------------------------------------

CORPUS_PATH = Path(__file__).with_name("redis_corpus.txt")


def _token(text: str) -> bytes:
    """A corpus argument: Python escapes (``\\n``, ``\\x00``, ``\\x20`` for a space), and
    ``""`` for the empty argument."""
    return b"" if text == '""' else codecs.escape_decode(text.encode())[0]


def read_corpus(path: Path = CORPUS_PATH) -> list[tuple[str, list[tuple[str, object]]]]:
    """Sequences separated by blank lines, each titled by its ``#`` comment line. A line is a
    command (arguments split on spaces), or ``raw <bytes>`` sent as they are."""
    sequences, title, steps = [], "", []
    for line in path.read_text().splitlines() + [""]:
        if not line.strip():
            if steps:
                sequences.append((title, steps))
            title, steps = "", []
        elif line.startswith("#"):
            title = title or line[1:].strip()
        elif line.startswith("raw "):
            steps.append(("raw", _token(line[4:])))
        else:
            steps.append(("command", [_token(text) for text in line.split(" ")]))
    return sequences


CORPUS = read_corpus()


@pytest.mark.parametrize("title, steps", CORPUS, ids=[title for title, _ in CORPUS])
def test_recorded_sequences_match_redis(redis, title, steps) -> None:
    run = DifferentialRun(redis)
    for number, (kind, step) in enumerate(steps, 1):
        where = f"{title}, step {number}"
        if kind == "raw":
            run.send_raw(step, where)
        else:
            assert documented_difference(step) is None, f"{where}: not comparable"
            run.send(step, where)
    _probe(run, f"{title}, at the end")


def test_the_corpus_covers_every_command_served() -> None:
    from gossipcache.node.resp_session import _NAMES

    named = {step[0].upper() for _, steps in CORPUS for kind, step in steps if kind == "command"}
    assert set(_NAMES) <= named, set(_NAMES) - named


def test_error_wording_matches_redis(redis) -> None:
    _, session = node_session()
    for args in (
        [b"SET", b"k", b"v", b"NX", b"XX"],
        [b"SET", b"k", b"v", b"EX", b"0"],
        [b"SET", b"k", b"v", b"EX", b"abc"],
        [b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"10"],
        [b"EXPIRE", b"k", b"10", b"NX", b"XX"],
        [b"EXPIRE", b"k", b"10", b"GT", b"LT"],
        [b"EXPIRE", b"k", b"10", b"FOO"],
        [b"EXPIRE", b"k"],
        [b"GET"],
        [b"PERSIST", b"a", b"b"],
    ):
        assert node_call(session, args) == redis.call(args), args


# -- the command objects, without a protocol ------------------------------------------------


def test_put_conditions_and_old_value() -> None:
    core, _ = node_session()
    now = core.clock.wall_ms()
    run = core.execute
    assert run(c.Put(b"k", b"1", condition=c.IF_PRESENT), now) is False
    assert run(c.Put(b"k", b"1", condition=c.IF_ABSENT), now) is True
    assert run(c.Put(b"k", b"2", condition=c.IF_ABSENT, return_old=True), now) == b"1"
    assert run(c.Get(b"k"), now) == b"1"
    assert run(c.Put(b"k", b"3", return_old=True, ttl_ms=5_000), now) == b"1"
    assert run(c.Put(b"k", b"4", keep_ttl=True), now) is True
    assert run(c.Ttl(b"k"), now) == 5_000
    assert run(c.Put(b"k", b"5", expires_at_ms=now), now) is True  # an instant already past
    assert run(c.Get(b"k"), now) is None and run(c.Exists((b"k", b"k")), now) == 0


def test_expire_conditions_as_redis_7() -> None:
    core, _ = node_session()
    now = core.clock.wall_ms()
    run = core.execute
    run(c.Put(b"k", b"v"), now)
    assert (
        run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_PRESENT})), now) is False
    )  # no TTL yet
    assert (
        run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_GREATER})), now) is False
    )  # persistent = inf
    assert run(c.Expire(b"k", 1_000, conditions=frozenset({c.IF_LESS})), now) is True
    assert run(c.Expire(b"k", 2_000, conditions=frozenset({c.IF_ABSENT})), now) is False
    assert run(c.Expire(b"k", 500, conditions=frozenset({c.IF_GREATER})), now) is False
    assert run(c.Expire(b"k", 2_000, conditions=frozenset({c.IF_GREATER})), now) is True
    assert run(c.Ttl(b"k"), now) == 2_000
    assert run(c.Persist(b"k"), now) is True and run(c.Persist(b"k"), now) is False
    assert run(c.Expire(b"k", expires_at_ms=now - 1), now) is True  # past: deleted
    assert run(c.Exists((b"k",)), now) == 0
    assert run(c.Expire(b"missing", 1_000), now) is False


@pytest.mark.parametrize(
    "build",
    [
        lambda: c.Put(b"k", b"v", 0),
        lambda: c.Put(b"k", b"v", TTL_MS_MAX + 1),
        lambda: c.Put(b"k", b"v", 10, keep_ttl=True),
        lambda: c.Put(b"k", b"v", 10, expires_at_ms=10),
        lambda: c.Put(b"k", b"v", condition="gt"),
        lambda: c.Expire(b"k"),
        lambda: c.Expire(b"k", 1, expires_at_ms=1),
        lambda: c.Expire(b"k", 1, conditions=frozenset({"maybe"})),
        lambda: c.Expire(b"k", 1, conditions=frozenset({c.IF_ABSENT, c.IF_PRESENT})),
        lambda: c.Expire(b"k", 1, conditions=frozenset({c.IF_GREATER, c.IF_LESS})),
        lambda: c.Delete(()),
        lambda: c.Exists(()),
    ],
)
def test_commands_refuse_what_no_node_accepts(build) -> None:
    with pytest.raises(InvalidRequest):
        build()


def test_members_without_membership_is_unavailable_and_counted() -> None:
    core, _ = node_session()
    with pytest.raises(ServiceUnavailable):
        core.execute(c.Members(), core.clock.wall_ms())
    assert core.handler_of(c.Members)[1].errors == 1
    with pytest.raises(TypeError):
        core.execute(object(), 0)  # type: ignore[arg-type]


def test_one_metrics_series_per_command_whatever_the_protocol() -> None:
    from gossipcache.node.native_session import NativeSession, native_table
    from gossipcache.wire.native import Request, encode_request

    core, session = node_session()
    session.receive(encode_command("SET", "k", "v") + encode_command("GET", "k"))
    native = NativeSession(core, 2, native_table(core))
    native.receive(
        encode_request(Request(1, "put", (b"k", b"w", None)))
        + encode_request(Request(2, "get", (b"k",)))
    )
    series = core.metrics.commands
    assert series["put"].latency_ns.count == 2 and series["get"].latency_ns.count == 2
    assert "set" not in series
