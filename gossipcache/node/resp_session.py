"""Redis commands (RESP2) served by a node, mapped onto the same store as the native protocol.

Enough of Redis for redis-cli, redis-py and redis-benchmark to work unmodified: PING, ECHO, GET,
SET (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL, GET), DEL, EXISTS, EXPIRE, PEXPIRE, PERSIST, TTL, PTTL,
DBSIZE, INFO, CONFIG GET, COMMAND, CLIENT SETNAME/GETNAME/SETINFO/ID, SELECT 0, HELLO (2 or 3),
QUIT, FLUSHALL, FLUSHDB. A session that says HELLO 3 gets RESP3's null and map types. Error replies use Redis' wording so clients map them to the same exceptions.

Each handler takes ``(node, session, args, now_ms)`` with ``args[0]`` the command name and returns
the reply's bytes; none awaits (see ``gossipcache.node``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from ..errors import EntryTooLarge, KeyTooLarge, ValueTooLarge
from ..metrics.counters import record_batch
from ..metrics.histogram import Histogram
from ..store import TTL_MISSING, TTL_PERSISTENT
from ..wire.resp import (
    EMPTY_ARRAY,
    NULL_BULK,
    OK,
    PONG,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
)

_ZERO = b":0\r\n"
_ONE = b":1\r\n"
_SYNTAX = encode_error("ERR syntax error")
_NOT_INTEGER = encode_error("ERR value is not an integer or out of range")
#: Longest TTL accepted, in ms (Redis refuses expiries that overflow 64-bit ms; we keep well below).
TTL_MS_MAX = 2**48


class RespSession:
    """Per-connection state: the client's name, the protocol version chosen with HELLO (2 or 3),
    and whether the connection is to close."""

    __slots__ = ("name", "closing", "client_id", "protocol_version")

    def __init__(self, client_id: int) -> None:
        self.name = b""
        self.closing = False
        self.client_id = client_id
        self.protocol_version = 2


_RESP3_NULL = b"_\r\n"


def _encode_map(session: RespSession, pairs: list) -> bytes:
    """A map reply: RESP3's ``%`` type, or the flat array RESP2 clients expect."""
    if session.protocol_version == 2:
        return encode_array([item for pair in pairs for item in pair])
    parts = [b"%%%d\r\n" % len(pairs)]
    for key, value in pairs:
        parts.append(encode_array([key, value])[len(b"*2\r\n") :])
    return b"".join(parts)


def _wrong_arity(name: str) -> bytes:
    return encode_error(f"ERR wrong number of arguments for '{name}' command")


def _int_arg(raw: bytes) -> int | None:
    """A Redis integer argument, or None when it is not one."""
    try:
        value = int(raw)
    except ValueError:
        return None
    # int() accepts "+1", " 1", "1_0": Redis does not.
    if raw[:1] in (b"+", b" ") or b"_" in raw or raw[-1:] == b" " or abs(value) >= 2**63:
        return None
    return value


def _too_large(error: Exception) -> bytes:
    return encode_error(f"ERR {error}")


# -- keys --------------------------------------------------------------------------------------


def cmd_get(node, session, args, now_ms):
    if len(args) != 2:
        return _wrong_arity("get")
    return encode_bulk(node.store.get(args[1], now_ms))


def cmd_set(node, session, args, now_ms):
    store = node.store
    if len(args) == 3:  # the fast path: SET key value
        try:
            store.put(args[1], args[2], now_ms)
        except (KeyTooLarge, ValueTooLarge, EntryTooLarge) as error:
            return _too_large(error)
        return OK
    if len(args) < 3:
        return _wrong_arity("set")
    key, value = args[1], args[2]
    ttl_ms = None
    condition = None  # b"NX" or b"XX"
    keep_ttl = want_old = False
    index = 3
    while index < len(args):
        option = args[index].upper()
        if option in (b"NX", b"XX") and condition is None:
            condition = option
        elif option == b"KEEPTTL" and ttl_ms is None:
            keep_ttl = True
        elif option == b"GET":
            want_old = True
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and ttl_ms is None and not keep_ttl:
            index += 1
            if index >= len(args):
                return _SYNTAX
            number = _int_arg(args[index])
            if number is None:
                return _NOT_INTEGER
            if option in (b"EX", b"EXAT"):
                number *= 1000
            if option in (b"EXAT", b"PXAT"):
                number -= now_ms
                if number <= 0:  # an instant already past: the key is written expired
                    number = 0
            elif number <= 0 or number > TTL_MS_MAX:
                return encode_error("ERR invalid expire time in 'set' command")
            ttl_ms = number
        else:
            return _SYNTAX
        index += 1
    old = store.get(key, now_ms) if want_old else None
    if condition is not None:
        exists = old is not None if want_old else store.contains(key, now_ms)
        if (condition == b"NX") == exists:
            return encode_bulk(old) if want_old else NULL_BULK
    if ttl_ms == 0:  # EXAT/PXAT in the past: Redis deletes the key
        store.delete(key, now_ms)
    else:
        try:
            store.put(key, value, now_ms, ttl_ms, keep_ttl=keep_ttl)
        except (KeyTooLarge, ValueTooLarge, EntryTooLarge) as error:
            return _too_large(error)
    return encode_bulk(old) if want_old else OK


def cmd_del(node, session, args, now_ms):
    if len(args) < 2:
        return _wrong_arity("del")
    delete = node.store.delete
    return encode_integer(sum(delete(key, now_ms) for key in args[1:]))


def cmd_exists(node, session, args, now_ms):
    if len(args) < 2:
        return _wrong_arity("exists")
    contains = node.store.contains
    return encode_integer(sum(contains(key, now_ms) for key in args[1:]))


def _expire(node, args, now_ms, name, unit_ms):
    if len(args) != 3:
        return _wrong_arity(name)
    number = _int_arg(args[2])
    if number is None:
        return _NOT_INTEGER
    ttl_ms = number * unit_ms
    if ttl_ms > TTL_MS_MAX:
        return encode_error(f"ERR invalid expire time in '{name}' command")
    return _ONE if node.store.expire(args[1], ttl_ms, now_ms) else _ZERO


def cmd_expire(node, session, args, now_ms):
    return _expire(node, args, now_ms, "expire", 1000)


def cmd_pexpire(node, session, args, now_ms):
    return _expire(node, args, now_ms, "pexpire", 1)


def cmd_persist(node, session, args, now_ms):
    if len(args) != 2:
        return _wrong_arity("persist")
    store = node.store
    if store.expires_at_ms(args[1], now_ms) is None:
        return _ZERO
    store.expire(args[1], None, now_ms)
    return _ONE


def _ttl(node, args, now_ms, name, divisor):
    if len(args) != 2:
        return _wrong_arity(name)
    ttl_ms = node.store.ttl_ms(args[1], now_ms)
    if ttl_ms in (TTL_MISSING, TTL_PERSISTENT):
        return encode_integer(ttl_ms)
    return encode_integer((ttl_ms + divisor // 2) // divisor)  # Redis rounds TTL to nearest


def cmd_ttl(node, session, args, now_ms):
    return _ttl(node, args, now_ms, "ttl", 1000)


def cmd_pttl(node, session, args, now_ms):
    return _ttl(node, args, now_ms, "pttl", 1)


def cmd_dbsize(node, session, args, now_ms):
    return encode_integer(len(node.store))


def cmd_flushall(node, session, args, now_ms):
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        return _SYNTAX
    node.store.flush()
    return OK


# -- connection and server -------------------------------------------------------------------


def cmd_ping(node, session, args, now_ms):
    if len(args) == 1:
        return PONG
    if len(args) == 2:
        return encode_bulk(args[1])
    return _wrong_arity("ping")


def cmd_echo(node, session, args, now_ms):
    return encode_bulk(args[1]) if len(args) == 2 else _wrong_arity("echo")


def cmd_quit(node, session, args, now_ms):
    session.closing = True
    return OK


def cmd_hello(node, session, args, now_ms):
    # redis-py 5+ opens with HELLO 3. We speak RESP3 to such a session where the two differ for
    # our replies: the null and map types.
    if len(args) > 1:
        version = _int_arg(args[1])
        if version not in (2, 3):
            return encode_error("NOPROTO unsupported protocol version")
        session.protocol_version = version
    index = 2
    while index < len(args):
        option = args[index].upper()
        if option == b"SETNAME" and index + 1 < len(args):
            session.name = args[index + 1]
            index += 2
        else:  # AUTH and anything else: this node has no users to authenticate
            return encode_error("ERR HELLO options other than SETNAME are not supported")
    pairs = [
        ("server", "gossipcache"),
        ("version", "7.0.0"),
        ("proto", session.protocol_version),
        ("id", session.client_id),
        ("mode", "standalone"),
        ("role", "master"),
        ("modules", []),
    ]
    return _encode_map(session, pairs)


def cmd_select(node, session, args, now_ms):
    if len(args) != 2:
        return _wrong_arity("select")
    return OK if args[1] == b"0" else encode_error("ERR DB index is out of range")


def cmd_client(node, session, args, now_ms):
    sub = args[1].upper() if len(args) > 1 else b""
    if sub == b"SETNAME" and len(args) == 3:
        if b" " in args[2]:
            return encode_error(
                "ERR Client names cannot contain spaces, newlines or special characters."
            )
        session.name = args[2]
        return OK
    if sub == b"GETNAME" and len(args) == 2:
        return encode_bulk(session.name or None)
    if sub == b"SETINFO" and len(args) == 4:
        return OK  # redis-py announces its library name and version; nothing to keep
    if sub == b"ID" and len(args) == 2:
        return encode_integer(session.client_id)
    return encode_error(f"ERR unknown subcommand '{sub.decode(errors='replace')}'.")


def cmd_command(node, session, args, now_ms):
    # redis-cli asks for COMMAND DOCS to offer hints; an empty answer means "no hints".
    if len(args) == 2 and args[1].upper() == b"COUNT":
        return encode_integer(len(COMMANDS))
    return EMPTY_ARRAY


def _config_values(node) -> dict[str, str]:
    store = node.store
    return {
        "maxmemory": str(store.size_bytes_max),
        "maxmemory-policy": store.eviction_policy,
        "save": "",
        "appendonly": "no",
        "databases": "1",
        "port": str(node.config.resp_port or 0),
        "bind": node.config.host,
    }


def cmd_config(node, session, args, now_ms):
    sub = args[1].upper() if len(args) > 1 else b""
    if sub == b"GET" and len(args) >= 3:
        values = _config_values(node)
        found: dict[str, str] = {}
        for raw in args[2:]:
            pattern = raw.decode(errors="replace").lower()
            for name in sorted(values):
                if fnmatch.fnmatchcase(name, pattern):
                    found[name] = values[name]
        return _encode_map(session, list(found.items()))
    if sub == b"RESETSTAT" and len(args) == 2:
        return OK
    return encode_error("ERR CONFIG supports GET and RESETSTAT only")


def cmd_info(node, session, args, now_ms):
    stats = node.store.stats()
    server = node.metrics
    sections = {
        "server": [
            ("gossipcache_version", "0.1.0"),
            ("redis_version", "7.0.0"),  # what clients check for feature support
            ("process_id", node.process_id),
            ("tcp_port", node.config.resp_port or 0),
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
        "keyspace": [("db0", f"keys={stats.keys},expires=0,avg_ttl=0")] if stats.keys else [],
    }
    wanted = {a.decode(errors="replace").lower() for a in args[1:]} - {"all", "everything"}
    lines = []
    for section, fields in sections.items():
        if wanted and section not in wanted and "default" not in wanted:
            continue
        lines.append(f"# {section.capitalize()}")
        lines.extend(f"{name}:{value}" for name, value in fields)
        lines.append("")
    return encode_bulk("\r\n".join(lines).encode())


COMMANDS: dict[bytes, Callable] = {
    b"GET": cmd_get,
    b"SET": cmd_set,
    b"DEL": cmd_del,
    b"EXISTS": cmd_exists,
    b"EXPIRE": cmd_expire,
    b"PEXPIRE": cmd_pexpire,
    b"PERSIST": cmd_persist,
    b"TTL": cmd_ttl,
    b"PTTL": cmd_pttl,
    b"DBSIZE": cmd_dbsize,
    b"FLUSHALL": cmd_flushall,
    b"FLUSHDB": cmd_flushall,
    b"PING": cmd_ping,
    b"ECHO": cmd_echo,
    b"QUIT": cmd_quit,
    b"SELECT": cmd_select,
    b"HELLO": cmd_hello,
    b"CLIENT": cmd_client,
    b"COMMAND": cmd_command,
    b"CONFIG": cmd_config,
    b"INFO": cmd_info,
}


class RespDispatcher:
    """Answers the commands of one read batch for one node."""

    def __init__(self, node) -> None:
        self.node = node
        # Handler and metrics object per command name, upper- and lower-case spellings both
        # looked up directly (clients send one or the other); mixed case goes through upper().
        self._table: dict[bytes, tuple[Callable, Histogram, object]] = {}
        for name, handler in COMMANDS.items():
            metrics = node.metrics.command(name.decode().lower())
            entry = (handler, metrics.latency_ns, metrics)
            self._table[name] = entry
            self._table[name.lower()] = entry

    def handle(self, session: RespSession, commands: list[list[bytes]], now_ms: int) -> bytes:
        """The replies to ``commands``, concatenated. Stops after QUIT. Latency is timed per
        batch (``metrics.record_batch``)."""
        node = self.node
        table = self._table
        clock_ns = node.clock_ns
        out = []
        append = out.append
        served = []  # the histogram of every command answered, for ``record_batch``
        started_ns = clock_ns()
        for args in commands:
            entry = table.get(args[0])
            if entry is None:
                entry = table.get(args[0].upper())
                if entry is None:
                    append(_unknown_command(args))
                    continue
            handler, histogram, metrics = entry
            try:
                reply = handler(node, session, args, now_ms)
            except Exception as error:  # a bug: answer, count, keep serving
                node.metrics.internal_errors += 1
                reply = encode_error(f"ERR internal error: {error!r}")
            served.append(histogram)
            if reply[0] == 45:  # b"-": an error reply
                metrics.errors += 1
            elif session.protocol_version == 3 and reply == NULL_BULK:
                reply = _RESP3_NULL
            append(reply)
            if session.closing:
                break
        record_batch(served, clock_ns() - started_ns)
        return b"".join(out)


def _unknown_command(args: list[bytes]) -> bytes:
    name = args[0].decode(errors="replace")[:128]
    shown = " ".join(f"'{a.decode(errors='replace')[:128]}'" for a in args[1:4])
    return encode_error(f"ERR unknown command '{name}', with args beginning with: {shown}")
