"""Protocol-neutral commands: what a client asks of a node, whatever protocol carried it.

The RESP and native sessions translate bytes into these objects and the node core executes them
(``NodeCore.execute``). Every command validates its own fields when built, against the caps in
``gossipcache.limits``, and raises ``InvalidRequest`` for a value no node would accept; key and
value sizes are checked by the store, which owns the memory they would take. So the rules of a
command are written once, not once per protocol.

Results are plain values, documented per class. A command that must wait (a quorum write waits
for replicas) returns a ``Pending`` instead; the core completes it later (``NodeCore``).

A command is a tuple ``(name, *fields)`` with named properties for the fields, the shape of the
argument vector Redis itself dispatches on. ``Put(key, value, ...)`` checks its fields and
builds ``("put", key, value, ...)``. Handlers in the core unpack the tuple and ignore item 0, so
any sequence of that shape will do: for ``GET key`` and ``SET key value`` the RESP session hands
over the parsed argument list itself (``[b"GET", key]``), and the native session a slice of
the request message. Building an object per request costs about 1,500 CPU instructions, more
than the rest of a GET's dispatch; that is why there is none on the hot path. ``make(Type,
items)`` builds a command from items already checked. Two commands are equal when their types
and items are.
"""

from __future__ import annotations

from operator import itemgetter
from typing import ClassVar

from ..errors import InvalidRequest
from ..limits import EXPIRES_AT_MS_MAX, KEYS_PER_COMMAND_MAX, TTL_MS_MAX

#: Conditions of ``Put`` (Redis' SET NX / XX) and ``Expire`` (EXPIRE NX / XX / GT / LT).
IF_ABSENT = "nx"  # Put: only if the key holds no live value. Expire: only if it has no TTL.
IF_PRESENT = "xx"  # Put: only if the key holds a live value. Expire: only if it has a TTL.
IF_GREATER = "gt"  # Expire only: only if the new expiry is later than the current one.
IF_LESS = "lt"  # Expire only: only if the new expiry is earlier than the current one.
PUT_CONDITIONS = frozenset((IF_ABSENT, IF_PRESENT))

#: Consistency levels of a data command in a cluster: how many of a key's R owners must answer
#: (a read) or hold the write (a write) before the coordinator answers. None on a command means
#: the node's default (``NodeConfig.read_consistency`` / ``write_consistency``).
ONE = "one"
QUORUM = "quorum"
ALL = "all"
CONSISTENCY_LEVELS = (ONE, QUORUM, ALL)
EXPIRE_CONDITIONS = frozenset((IF_ABSENT, IF_PRESENT, IF_GREATER, IF_LESS))


#: Redis reads integers as signed 64-bit; a relative expiry below this is as good as any other past
#: instant (the key is deleted), and the check keeps Python ints from growing without bound.
INT64_MIN = -(2**63)


def _check_int_in(name: str, number: int | None, low: int, high: int) -> None:
    if number is not None and (type(number) is not int or not low <= number <= high):
        raise InvalidRequest(f"{name} must be an int in [{low}, {high}], got {number!r:.40}")


def check_expiry_fits(ttl_ms: int, wall_ms: int) -> None:
    """Refuse a relative expiry whose instant would be past ``EXPIRES_AT_MS_MAX``: what the
    core checks before it keeps ``wall_ms + ttl_ms``, whatever protocol carried the TTL."""
    if ttl_ms > EXPIRES_AT_MS_MAX - wall_ms:
        raise InvalidRequest(
            f"invalid expire time: {ttl_ms} ms from now is past the latest expiry this node "
            f"keeps ({EXPIRES_AT_MS_MAX} ms after the Unix epoch)"
        )


def _check_consistency(consistency: str | None) -> None:
    if consistency is not None and consistency not in CONSISTENCY_LEVELS:
        raise InvalidRequest(
            f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {consistency!r:.40}"
        )


def _with_level(items: tuple, consistency: str | None) -> tuple:
    """A data command's items, with the consistency level appended only when one is given:
    the common case (the node's default) keeps the short tuple the hot paths build."""
    if consistency is None:
        return items
    _check_consistency(consistency)
    return (*items, consistency)


def expire_conditions_hold(conditions, current_ms: int | None, new_ms: int) -> bool:
    """Whether Redis 7's EXPIRE conditions (NX / XX / GT / LT) allow moving an expiry at
    ``current_ms`` (None: persistent, which counts as infinite) to ``new_ms``."""
    if IF_ABSENT in conditions and current_ms is not None:
        return False
    if IF_PRESENT in conditions and current_ms is None:
        return False
    if IF_GREATER in conditions and (current_ms is None or new_ms <= current_ms):
        return False
    return not (IF_LESS in conditions and current_ms is not None and new_ms >= current_ms)


def _check_keys(keys: tuple[bytes, ...]) -> None:
    if not keys:
        raise InvalidRequest("at least one key is required")
    if len(keys) > KEYS_PER_COMMAND_MAX:
        raise InvalidRequest(f"at most {KEYS_PER_COMMAND_MAX} keys per command, got {len(keys)}")


#: ``make(CommandType, fields)``: a command from a tuple of fields already checked (C speed).
make = tuple.__new__


def _field(index: int, doc: str) -> property:
    return property(itemgetter(index), doc=doc)


def _optional_field(index: int, doc: str) -> property:
    """A trailing field that may be absent from the tuple (None then)."""
    return property(lambda self: self[index] if len(self) > index else None, doc=doc)


_CONSISTENCY_DOC = "ONE, QUORUM or ALL; None: the node's default for this kind of command."


class Command(tuple):
    """Base of every command: the tuple ``(name, *fields)``. ``name`` is the metrics series and
    the name in logs; ``writes`` tells whether it may change the keyspace; ``fields`` names the
    items after the name."""

    __slots__ = ()
    name: ClassVar[str]
    writes: ClassVar[bool] = False
    fields: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r:.60}" for name, value in zip(self.fields, self[1:]))
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__


class Get(Command):
    """The live value of ``key``. Result: ``bytes``, or None when missing or expired."""

    __slots__ = ()
    name = "get"
    fields = ("key", "consistency")
    key = _field(1, "The key to read.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, key: bytes, *, consistency: str | None = None) -> Get:
        return make(cls, _with_level((cls.name, key), consistency))


class Put(Command):
    """Write ``key`` = ``value``.

    Expiry: at most one of ``ttl_ms`` (relative, > 0) and ``expires_at_ms`` (absolute wall-clock
    ms, > 0; an instant already past deletes the key, as Redis' SET EXAT does), or ``keep_ttl`` to
    keep the current entry's expiry; none of them writes a persistent entry.
    ``condition``: None, ``IF_ABSENT`` or ``IF_PRESENT``. ``return_old``: Redis' SET GET.

    Result: True if written, False if the condition prevented it; with ``return_old``, the
    previous live value (bytes or None) whether or not it was written.
    """

    __slots__ = ()
    name = "put"
    writes = True
    fields = (
        "key",
        "value",
        "ttl_ms",
        "expires_at_ms",
        "keep_ttl",
        "condition",
        "return_old",
        "consistency",
    )
    key = _field(1, "The key to write.")
    value = _field(2, "The value to write.")
    ttl_ms = _field(3, "Relative expiry in ms, or None.")
    expires_at_ms = _field(4, "Absolute wall-clock expiry in ms, or None.")
    keep_ttl = _field(5, "Keep the overwritten entry's expiry.")
    condition = _field(6, "None, IF_ABSENT or IF_PRESENT.")
    return_old = _field(7, "Answer with the previous live value.")
    consistency = _optional_field(8, _CONSISTENCY_DOC)

    def __new__(
        cls,
        key: bytes,
        value: bytes,
        ttl_ms: int | None = None,
        *,
        expires_at_ms: int | None = None,
        keep_ttl: bool = False,
        condition: str | None = None,
        return_old: bool = False,
        consistency: str | None = None,
    ) -> Put:
        if ttl_ms is not None:
            _check_int_in("ttl_ms", ttl_ms, 1, TTL_MS_MAX)
        if expires_at_ms is not None or keep_ttl or condition is not None:
            _check_int_in("expires_at_ms", expires_at_ms, 1, EXPIRES_AT_MS_MAX)
            if (ttl_ms is not None) + (expires_at_ms is not None) + bool(keep_ttl) > 1:
                raise InvalidRequest("at most one of ttl_ms, expires_at_ms and keep_ttl")
            if condition is not None and condition not in PUT_CONDITIONS:
                raise InvalidRequest(f"put condition must be one of {sorted(PUT_CONDITIONS)}")
        items = (cls.name, key, value, ttl_ms, expires_at_ms, keep_ttl, condition, return_old)
        return make(cls, _with_level(items, consistency))


class Delete(Command):
    """Remove ``keys``. Result: how many held a live value."""

    __slots__ = ()
    name = "delete"
    writes = True
    fields = ("keys", "consistency")
    keys = _field(1, "The keys to remove.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, keys: tuple[bytes, ...], *, consistency: str | None = None) -> Delete:
        _check_keys(keys)
        return make(cls, _with_level((cls.name, keys), consistency))


class GetMany(Command):
    """The live values of ``keys`` (Redis' MGET). Result: a list, None where missing."""

    __slots__ = ()
    name = "get_many"
    fields = ("keys", "consistency")
    keys = _field(1, "The keys to read.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, keys: tuple[bytes, ...], *, consistency: str | None = None) -> GetMany:
        _check_keys(keys)
        return make(cls, _with_level((cls.name, keys), consistency))


class PutMany(Command):
    """Write every ``(key, value)`` of ``pairs``, persistent (Redis' MSET). Result: True.
    In a cluster each key is its own replicated write: not atomic across keys."""

    __slots__ = ()
    name = "put_many"
    writes = True
    fields = ("pairs", "consistency")
    pairs = _field(1, "The (key, value) pairs to write.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(
        cls, pairs: tuple[tuple[bytes, bytes], ...], *, consistency: str | None = None
    ) -> PutMany:
        _check_keys(pairs)
        return make(cls, _with_level((cls.name, pairs), consistency))


class Exists(Command):
    """Result: how many of ``keys`` hold a live value (a key named twice counts twice, as in
    Redis). Not a lookup: touches no hit counter and no recency."""

    __slots__ = ()
    name = "exists"
    fields = ("keys", "consistency")
    keys = _field(1, "The keys to look for.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, keys: tuple[bytes, ...], *, consistency: str | None = None) -> Exists:
        _check_keys(keys)
        return make(cls, _with_level((cls.name, keys), consistency))


class Expire(Command):
    """Set the expiry of a live entry: ``ttl_ms`` from now or at ``expires_at_ms`` (exactly one).
    A TTL <= 0 or an instant already past deletes the key, as Redis does. Either way the expiry
    is at most ``EXPIRES_AT_MS_MAX``: the core refuses a later one (``InvalidRequest``) before it
    looks at the key, as Redis refuses an expiry that overflows.

    ``conditions`` (Redis 7; all must hold): ``IF_ABSENT`` only if it has no expiry;
    ``IF_PRESENT`` only if it has one; ``IF_GREATER`` / ``IF_LESS`` only if the new expiry is
    later / earlier than the current one, a persistent key counting as an infinite expiry.
    ``IF_ABSENT`` excludes the others, and ``IF_GREATER`` excludes ``IF_LESS``.

    Result: True if the expiry was set (or the key deleted), False if the key is missing or a
    condition was not met.
    """

    __slots__ = ()
    name = "expire"
    writes = True
    fields = ("key", "ttl_ms", "expires_at_ms", "conditions", "consistency")
    key = _field(1, "The key whose expiry changes.")
    ttl_ms = _field(2, "Relative expiry in ms, or None.")
    expires_at_ms = _field(3, "Absolute wall-clock expiry in ms, or None.")
    conditions = _field(4, "A frozenset of IF_* conditions, all of which must hold.")
    consistency = _optional_field(5, _CONSISTENCY_DOC)

    def __new__(
        cls,
        key: bytes,
        ttl_ms: int | None = None,
        *,
        expires_at_ms: int | None = None,
        conditions: frozenset[str] = frozenset(),
        consistency: str | None = None,
    ) -> Expire:
        if (ttl_ms is None) == (expires_at_ms is None):
            raise InvalidRequest("exactly one of ttl_ms and expires_at_ms")
        # Any instant in the past deletes the key, however far back (as in Redis); the future
        # is bounded so that the expiry kept fits (``EXPIRES_AT_MS_MAX``).
        _check_int_in("ttl_ms", ttl_ms, INT64_MIN, TTL_MS_MAX)
        _check_int_in("expires_at_ms", expires_at_ms, INT64_MIN, EXPIRES_AT_MS_MAX)
        if conditions:
            if not conditions <= EXPIRE_CONDITIONS:
                raise InvalidRequest(
                    f"expire conditions are a subset of {sorted(EXPIRE_CONDITIONS)}"
                )
            if IF_ABSENT in conditions and len(conditions) > 1:
                raise InvalidRequest("nx excludes the other expire conditions")
            if IF_GREATER in conditions and IF_LESS in conditions:
                raise InvalidRequest("gt and lt exclude each other")
        items = (cls.name, key, ttl_ms, expires_at_ms, frozenset(conditions))
        return make(cls, _with_level(items, consistency))


class Persist(Command):
    """Remove the expiry of a live entry. Result: True if it had one."""

    __slots__ = ()
    name = "persist"
    writes = True
    fields = ("key", "consistency")
    key = _field(1, "The key whose expiry is removed.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, key: bytes, *, consistency: str | None = None) -> Persist:
        return make(cls, _with_level((cls.name, key), consistency))


class Ttl(Command):
    """Result: milliseconds until ``key`` expires, ``store.TTL_PERSISTENT`` without an expiry,
    ``store.TTL_MISSING`` without a live entry."""

    __slots__ = ()
    name = "ttl"
    fields = ("key", "consistency")
    key = _field(1, "The key asked about.")
    consistency = _optional_field(2, _CONSISTENCY_DOC)

    def __new__(cls, key: bytes, *, consistency: str | None = None) -> Ttl:
        return make(cls, _with_level((cls.name, key), consistency))


class Ping(Command):
    """Result: ``message``, or True without one."""

    __slots__ = ()
    name = "ping"
    fields = ("message",)
    message = _field(1, "What to echo, or None.")

    def __new__(cls, message: bytes | None = None) -> Ping:
        return make(cls, (cls.name, message))


class Stats(Command):
    """Result: the node's counters as a flat dict (O(1): never a scan of the keyspace)."""

    __slots__ = ()
    name = "stats"

    def __new__(cls) -> Stats:
        return make(cls, (cls.name,))


class Members(Command):
    """Result: a list of member dicts (id, address, state, incarnation, since_ms as wall ms).
    Raises ``Unavailable`` when membership is off. O(members)."""

    __slots__ = ()
    name = "members"

    def __new__(cls) -> Members:
        return make(cls, (cls.name,))


class Topology(Command):
    """Result: what a smart client needs to route keys itself, as a dict: ``epoch`` (the
    placement table's, None before the first build), ``replicas`` (R), ``self`` (this node's
    id) and ``members``, the members of that table (the live ones: alive or suspect), each a
    dict of ``id``, ``address`` (its native ``host:port``), ``host_id``, ``zone`` and
    ``capacity_bytes``. Works without membership too (one member, this node). O(members)."""

    __slots__ = ()
    name = "topology"

    def __new__(cls) -> Topology:
        return make(cls, (cls.name,))


class Flush(Command):
    """Remove every entry of this node. Result: True."""

    __slots__ = ()
    name = "flush"
    writes = True

    def __new__(cls) -> Flush:
        return make(cls, (cls.name,))


class Leave(Command):
    """Leave the cluster gracefully: hand this node's buckets to their new owners, announce
    the leave, then the node's process exits (``NodeCore.begin_leave``). Idempotent. Result:
    ``"leaving"``. Raises ``Unavailable`` when membership is off (a node alone has nobody to
    hand its data to: stop its process instead)."""

    __slots__ = ()
    name = "leave"

    def __new__(cls) -> Leave:
        return make(cls, (cls.name,))


#: Every command type the core executes (sessions may add their own local ones).
COMMAND_TYPES: tuple[type[Command], ...] = (
    Get,
    Put,
    GetMany,
    PutMany,
    Delete,
    Exists,
    Expire,
    Persist,
    Ttl,
    Ping,
    Stats,
    Members,
    Flush,
    Topology,
    Leave,
)
