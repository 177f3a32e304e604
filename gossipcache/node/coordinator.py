"""Data commands in a cluster: each one coordinated over its key's owners by the replication
core, with the command's semantics (NX/XX, GET, KEEPTTL, EXPIRE conditions, TTL) decided here.

``Coordinator`` provides the node core's handlers for Get, Put, Delete, Exists, Expire, Persist
and Ttl when replication is on; they take the same ``(command, wall_ms)`` and return a result
or a ``Pending``, like the standalone ones. A command carries an optional consistency level
(``commands.ONE`` / ``QUORUM`` / ``ALL``); without one the node's defaults apply (reads ``one``,
writes ``quorum``).

- A read at ``one`` on an owner of the key is served from the local store at once: the
  one-hop path a smart client takes costs what a standalone GET costs, plus the bucket lookup.
- A plain write (SET without conditions) is one replicated write of the whole entry.
- Commands that depend on the current entry (SET NX/XX/GET/KEEPTTL, EXPIRE, PERSIST) read it
  first at the command's level, decide, then write with a version newer than the one read. Not
  atomic against a concurrent writer of the same key: the newest version wins (docs/design.md,
  "What each level guarantees").
- DEL writes a tombstone per key, collected after ``tombstone_grace_ms``; its count is of the
  keys that an acknowledging owner held live.
- Multi-key commands (DEL, EXISTS) run one operation per key and answer when all have.
"""

from __future__ import annotations

import random
from binascii import crc_hqx
from collections.abc import Callable

from ..errors import ServiceUnavailable
from ..limits import EXPIRES_AT_MS_MAX
from ..membership import MemberState
from ..placement import BUCKET_COUNT, bucket_of
from ..replication import Replication
from ..store import TTL_MISSING, TTL_PERSISTENT
from . import commands as c

BUCKET_MASK = BUCKET_COUNT - 1

_LEVEL_INDEX = {
    c.Get: 2,
    c.GetMany: 2,
    c.PutMany: 2,
    c.Delete: 2,
    c.Exists: 2,
    c.Persist: 2,
    c.Ttl: 2,
    c.Expire: 5,
    c.Put: 8,
}


def required_for(level: str, owners: int) -> int:
    """Answers (reads) or holders (writes) a level needs among ``owners``."""
    if level == c.ONE:
        return 1
    if level == c.QUORUM:
        return owners // 2 + 1
    return owners


def live_value(entry: tuple | None, wall_ms: int) -> bytes | None:
    """The value an entry ``(value, version, expires_at_ms)`` shows a client at ``wall_ms``."""
    if entry is None or entry[0] is None:
        return None
    expires_at_ms = entry[2]
    if expires_at_ms is not None and expires_at_ms <= wall_ms:
        return None
    return entry[0]


class LevelCounters:
    """Operations coordinated at one consistency level, and how many failed to reach it."""

    __slots__ = ("reads", "writes", "failures")

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0
        self.failures = 0


class Coordinator:
    """The cluster's data-command handlers (see the module docstring)."""

    def __init__(self, core, replication: Replication, rng: random.Random) -> None:
        self.core = core
        self.replication = replication
        self.store = core.store
        self.placement = core.placement
        self.own = core.placement.own_id
        self.rng = rng
        config = core.config
        self.read_level = config.read_consistency
        self.write_level = config.write_consistency
        self.tombstone_grace_ms = config.tombstone_grace_ms
        self.read_repair_chance = config.read_repair_chance
        self.by_level = {level: LevelCounters() for level in c.CONSISTENCY_LEVELS}
        #: Reads at ``one`` served by this node as an owner without asking anyone, besides the
        #: fast path's (``by_level["one"].reads`` counts both).
        self.local_reads = 0
        #: Requests for keys this node does not own (it coordinated them for the client).
        self.forwarded = 0
        #: Started with seeds and not joined yet (``join_pending_reason``): data commands are
        #: refused.
        self.joining = bool(config.seeds)
        self.placement.joined = not self.joining
        #: Owners whose copies are incomplete (filling: a new node, or one restarted empty):
        #: reads neither ask them nor count them; writes do. Empty outside a change.
        self.incomplete: frozenset[str] = frozenset()
        #: The target table while buckets move (a node fills or leaves), else None: writes
        #: also go to a bucket's target owners, uncounted (``Replication.write``'s extras).
        self.target_table = None
        #: Owners that get writes without counting towards the level (nodes just started:
        #: they may turn out to be newcomers and leave the layout again).
        self.uncounted: frozenset[str] = frozenset()

    def handlers(self) -> dict[type[c.Command], Callable]:
        return {
            c.Get: self.get_handler(),
            c.Put: self.put,
            c.GetMany: self.get_many,
            c.PutMany: self.put_many,
            c.Delete: self.delete,
            c.Exists: self.exists,
            c.Expire: self.expire,
            c.Persist: self.persist,
            c.Ttl: self.ttl,
        }

    # -- helpers ----------------------------------------------------------------------------

    def owners(self, key: bytes) -> tuple[str, ...]:
        table = self.placement.table
        if self.joining:
            self._check_joined(table)
        if table is None:  # before the first build: this node alone
            return (self.own,)
        # ``owners_of_key`` with its bucket computed inline (on every write's path).
        return table.owners_of_bucket(
            crc_hqx(key, 0) & BUCKET_MASK if b"{" not in key else bucket_of(key)
        )

    def extras(self, key: bytes, owners: tuple[str, ...]) -> tuple[str, ...]:
        """Who gets the write without counting: the key's target owners not among ``owners``
        and the uncounted owners (none outside a change)."""
        target = self.target_table
        extras = () if target is None else tuple(
            node for node in target.owners_of_key(key) if node not in owners
        )  # fmt: skip
        uncounted = self.uncounted
        if uncounted:
            extras += tuple(owner for owner in owners if owner in uncounted)
        return extras

    def counted(self, owners: tuple[str, ...]) -> tuple[str, ...]:
        """``owners`` whose acknowledgements count towards a write's level."""
        uncounted = self.uncounted
        if not uncounted:
            return owners
        return tuple(owner for owner in owners if owner not in uncounted)

    def readable(self, owners: tuple[str, ...]) -> tuple[str, ...]:
        """``owners`` whose copies are complete: the ones a read asks."""
        incomplete = self.incomplete
        if not incomplete:
            return owners
        return tuple(owner for owner in owners if owner not in incomplete)

    def _check_joined(self, table) -> None:
        reason = self.join_pending_reason(table)
        if reason is not None:
            raise ServiceUnavailable(f"this node is joining the cluster ({reason}); retry shortly")

    def join_pending_reason(self, table) -> str | None:
        """Why this node, started with seeds, may not serve data yet, or None (and from then
        on it serves). It serves once a seed answered its join (a full member list), its
        table ranks those members, and a majority of its seeds are live members. Before
        that it would take itself (or the few members it heard of) for a key's owners and
        acknowledge writes no real owner holds; two nodes restarted empty that reach only
        each other would take themselves for the whole cluster (the replication scenarios
        found all three: crash seed 36, mixed seeds 92 and 65). The node core calls this from
        ``tick`` while joining, so the node is marked joined as soon as it is."""
        if not self.joining:
            return None
        membership = self.core.membership
        if table is None or len(table.members) < 2 or self.placement.busy:
            return "no other member ranked yet"
        if membership is not None and membership.is_joining:
            return "no seed answered yet"
        seeds = {seed for seed in self.core.config.seeds if seed != self.own}
        if membership is not None and seeds:
            live = {
                member.address
                for member in membership.members()
                if member.state in (MemberState.ALIVE, MemberState.SUSPECT)
            }
            reached = len(seeds & live)
            if reached < len(seeds) // 2 + 1:
                return f"{reached} of {len(seeds)} seeds reached; it serves once a majority are"
        self.joining = False
        self.placement.joined = True
        return None

    def _level(self, command, default: str) -> str:
        index = _LEVEL_INDEX[type(command)] if isinstance(command, c.Command) else 99
        if len(command) > index and command[index] is not None:
            return command[index]
        return default

    def _run(self, command_type, command, start: Callable[[Callable], None]):
        """Start an operation whose ``start(finish)`` eventually calls ``finish(result,
        error)``; the result itself when that happened at once, else a ``Pending``."""
        core = self.core
        if core.pending_count >= core.config.pending_per_node_max:
            core.defer(command_type, command)  # raises ServiceUnavailable, counted
        state: list = []

        def finish(result, error=None, version=None):
            if state and state[0] is not None:
                if version:
                    state[0].version = version
                core.complete(state[0], result, error)
            else:
                state.append((result, error))

        start(finish)
        if state:
            result, error = state[0]
            if error is not None:
                raise error
            return result
        pending = core.defer(command_type, command)
        state.append(pending)
        return pending

    def _read(self, key, level, wall_ms, finish_entry: Callable) -> None:
        """Read ``key`` at ``level``; ``finish_entry(entry, error)``."""
        owners = self.owners(key)
        counters = self.by_level[level]
        counters.reads += 1
        if self.own not in owners:
            self.forwarded += 1

        def done(entry, error):
            if error is not None:
                counters.failures += 1
            finish_entry(entry, error)

        self.replication.read(
            key, self.readable(owners), required_for(level, len(owners)), done, wall_ms,
            self.core.clock.monotonic_ms(),
        )  # fmt: skip

    def _write(self, key, value, expires_at_ms, level, wall_ms, finish_write, after_version=0):
        """Write the entry at ``level``; ``finish_write(op, error)`` (``op.replaced_live``)."""
        owners = self.owners(key)
        counters = self.by_level[level]
        counters.writes += 1
        if self.own not in owners:
            self.forwarded += 1

        def done(op, error):
            if error is not None:
                counters.failures += 1
            finish_write(op, error)

        return self.replication.write(
            key, value, expires_at_ms, self.counted(owners), required_for(level, len(owners)),
            done, wall_ms, self.core.clock.monotonic_ms(), after_version=after_version,
            extras=self.extras(key, owners),
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------

    def get_handler(self) -> Callable:
        """The GET handler. Its fast path, a read at ``one`` (named, or the default) of a key
        this node owns (what a smart client sends), is a closure over what it reads, like the
        standalone handler: one bucket computation and one byte test more than a standalone
        GET."""
        store_get = self.store.get
        placement = self.placement
        one_counters = self.by_level[c.ONE]
        slow_get = self.get
        repairing = bool(self.read_repair_chance)
        default_is_one = self.read_level == c.ONE and not repairing
        one = c.ONE

        def get(command, wall_ms: int):
            key = command[1]
            if (
                default_is_one if len(command) == 2 else command[2] == one and not repairing
            ) and placement.owned[
                crc_hqx(key, 0) & BUCKET_MASK if b"{" not in key else bucket_of(key)
            ]:
                one_counters.reads += 1
                return store_get(key, wall_ms)
            return slow_get(command, wall_ms)

        return get

    def get(self, command, wall_ms: int):
        key = command[1]
        level = self._level(command, self.read_level) if len(command) > 2 else self.read_level
        if level == c.ONE:
            owners = self.owners(key)
            if self.own in owners and self.own not in self.incomplete:
                self.local_reads += 1
                self.by_level[c.ONE].reads += 1
                if self.read_repair_chance and self.rng.random() < self.read_repair_chance:
                    self.replication.read(
                        key, owners, 1, None, wall_ms, self.core.clock.monotonic_ms(),
                        background=True,
                    )  # fmt: skip
                return self.store.get(key, wall_ms)

        def start(finish):
            def entry_read(entry, error):
                if error is not None:
                    finish(None, error)
                else:
                    self._count_lookup(entry, self.core.clock.wall_ms())
                    finish(live_value(entry, self.core.clock.wall_ms()))

            self._read(key, level, wall_ms, entry_read)

        return self._run(c.Get, command, start)

    def _count_lookup(self, entry, wall_ms) -> None:
        """A coordinated read counts as a hit or a miss here, as a local one does in the store."""
        self.store.count_lookup(live_value(entry, wall_ms) is not None)

    def exists(self, command, wall_ms: int):
        keys = command[1]
        level = self._level(command, self.read_level)

        def start(finish):
            gather = _Gather(len(keys), finish)
            for key in keys:
                self._read(
                    key, level, wall_ms,
                    lambda entry, error: gather.one(
                        int(live_value(entry, self.core.clock.wall_ms()) is not None), error
                    ),
                )  # fmt: skip

        return self._run(c.Exists, command, start)

    def get_many(self, command, wall_ms: int):
        """MGET: one read per key (each at the command's level), gathered in order."""
        keys = command[1]
        level = self._level(command, self.read_level)

        def start(finish):
            gather = _Gather(len(keys), finish, [None] * len(keys))
            for index, key in enumerate(keys):

                def entry_read(entry, error, index=index):
                    now_ms = self.core.clock.wall_ms()
                    if error is None:
                        self._count_lookup(entry, now_ms)
                    gather.one(live_value(entry, now_ms), error, index)

                self._read(key, level, wall_ms, entry_read)

        return self._run(c.GetMany, command, start)

    def put_many(self, command, wall_ms: int):
        """MSET: one replicated write per key, answered once all reached the level."""
        pairs = command[1]
        level = self._level(command, self.write_level)
        for key, value in pairs:
            self.store.check_sizes(key, value)

        def start(finish):
            def all_written(result, error=None, version=None):
                finish(None if error else True, error, version)

            gather = _Gather(len(pairs), all_written)
            for key, value in pairs:
                self._write(
                    key, value, None, level, wall_ms, lambda op, error: gather.one(0, error)
                )

        return self._run(c.PutMany, command, start)

    def ttl(self, command, wall_ms: int):
        def decide(entry, now_ms, finish):
            if live_value(entry, now_ms) is None:
                finish(TTL_MISSING)
            else:
                finish(TTL_PERSISTENT if entry[2] is None else entry[2] - now_ms)

        return self._read_then(c.Ttl, command, self.read_level, wall_ms, decide)

    def _read_then(self, command_type, command, default_level, wall_ms, decide):
        """Read the command's key at its level, then ``decide(entry, wall_ms_now, finish)``
        (which may write): the shape of every command that depends on the current entry."""
        key = command[1]
        level = self._level(command, default_level)

        def start(finish):
            def entry_read(entry, error):
                if error is not None:
                    finish(None, error)
                else:
                    decide(entry, self.core.clock.wall_ms(), finish)

            self._read(key, level, wall_ms, entry_read)

        return self._run(command_type, command, start)

    # -- writes -----------------------------------------------------------------------------

    def put(self, command, wall_ms: int):
        key, value = command[1], command[2]
        ttl_ms = command[3] if len(command) > 3 else None
        if ttl_ms is not None and ttl_ms > EXPIRES_AT_MS_MAX - wall_ms:
            c.check_expiry_fits(ttl_ms, wall_ms)  # raises
        if len(command) <= 4:
            expires_at_ms, keep_ttl, condition, return_old = None, False, None, False
            level = self.write_level
        else:
            _, _, _, _, expires_at_ms, keep_ttl, condition, return_old = command[:8]
            level = self._level(command, self.write_level)
        if ttl_ms is not None:
            expires_at_ms = wall_ms + ttl_ms
        self.store.check_sizes(key, value)
        if not keep_ttl and condition is None and not return_old:
            if expires_at_ms is None or expires_at_ms > wall_ms:
                return self._plain_put(command, key, value, expires_at_ms, level, wall_ms)

            def start(finish):
                self._write_entry(key, value, expires_at_ms, level, wall_ms, finish, True)

            return self._run(c.Put, command, start)

        def decide(entry, now_ms, finish):
            old = live_value(entry, now_ms)
            if condition is not None and (condition == c.IF_ABSENT) == (old is not None):
                finish(old if return_old else False)
                return
            expires = entry[2] if keep_ttl and old is not None else expires_at_ms
            self._write_entry(
                key, value, expires, level, now_ms, finish, old if return_old else True,
                after_version=entry[1] if entry is not None else 0,
            )  # fmt: skip

        return self._read_then(c.Put, command, self.write_level, wall_ms, decide)

    def _plain_put(self, command, key, value, expires_at_ms, level, wall_ms):
        """SET without conditions: one replicated write, no read, no closures. The write
        carries a ``_Slot`` as its token: when it completes at once (this node is the key's
        only owner) the result is returned as it is, else the slot gets a ``Pending``."""
        owners = self.owners(key)
        counters = self.by_level[level]
        counters.writes += 1
        if self.own not in owners:
            self.forwarded += 1
        core = self.core
        if core.pending_count >= core.config.pending_per_node_max:
            core.defer(c.Put, command)  # raises ServiceUnavailable, counted
        slot = _Slot()
        changing = self.target_table is not None or self.uncounted
        version = self.replication.write(
            key, value, expires_at_ms, self.counted(owners) if changing else owners,
            required_for(level, len(owners)), self._plain_put_done, wall_ms,
            core.clock.monotonic_ms(), token=slot,
            extras=self.extras(key, owners) if changing else (),
        )  # fmt: skip
        if slot.done:
            if slot.error is not None:
                raise slot.error
            return True
        pending = slot.pending = core.defer(c.Put, command)
        pending.version = max(version, slot.version)  # a restamp may have come first
        return pending

    def _plain_put_done(self, op, error) -> None:
        slot = op.token
        if error is not None:
            self.by_level_failures(op)
        pending = slot.pending
        if pending is None:  # completed before ``_plain_put`` returned
            slot.done = True
            slot.error = error
            slot.version = op.version
            return
        pending.version = op.version
        self.core.complete(pending, None if error else True, error)

    def by_level_failures(self, op) -> None:
        """Count a plain write that missed its level (its level from the op's ``required``)."""
        owners = len(op.owners)
        for level in (c.ALL, c.QUORUM, c.ONE):
            if required_for(level, owners) == op.required:
                self.by_level[level].failures += 1
                return

    def _write_entry(self, key, value, expires_at_ms, level, wall_ms, finish, result, **kw):
        """Write ``value`` (or, with an expiry already past, a tombstone: Redis deletes the
        key) and ``finish(result)`` once the level holds it."""
        if expires_at_ms is not None and expires_at_ms <= wall_ms:
            value, expires_at_ms = None, wall_ms + self.tombstone_grace_ms

        def written(op, error):
            finish(None if error else result, error, op.version)

        self._write(key, value, expires_at_ms, level, wall_ms, written, **kw)

    def delete(self, command, wall_ms: int):
        keys = command[1]
        level = self._level(command, self.write_level)
        collect_at_ms = wall_ms + self.tombstone_grace_ms

        def start(finish):
            gather = _Gather(len(keys), finish)
            for key in keys:
                self._write(
                    key, None, collect_at_ms, level, wall_ms,
                    lambda op, error: gather.one(int(op.replaced_live), error, version=op.version),
                )  # fmt: skip

        return self._run(c.Delete, command, start)

    def expire(self, command, wall_ms: int):
        _, key, ttl_ms, expires_at_ms, conditions = command[:5]
        level = self._level(command, self.write_level)
        if ttl_ms is None:
            new_ms = expires_at_ms
        else:
            c.check_expiry_fits(ttl_ms, wall_ms)  # an error whether or not the key exists
            new_ms = wall_ms + ttl_ms

        def decide(entry, now_ms, finish):
            value = live_value(entry, now_ms)
            if value is None or (
                conditions and not c.expire_conditions_hold(conditions, entry[2], new_ms)
            ):
                finish(False)
                return
            self._write_entry(
                key, value, new_ms, level, now_ms, finish, True, after_version=entry[1]
            )

        return self._read_then(c.Expire, command, self.write_level, wall_ms, decide)

    def persist(self, command, wall_ms: int):
        key = command[1]
        level = self._level(command, self.write_level)

        def decide(entry, now_ms, finish):
            value = live_value(entry, now_ms)
            if value is None or entry[2] is None:
                finish(False)
                return
            self._write_entry(key, value, None, level, now_ms, finish, True, after_version=entry[1])

        return self._read_then(c.Persist, command, self.write_level, wall_ms, decide)

    # -- introspection --------------------------------------------------------------------

    def stats(self) -> dict:
        result = {
            "replication_local_reads": self.local_reads,
            "replication_forwarded": self.forwarded,
        }
        for level, counters in self.by_level.items():
            result[f"replication_{level}_reads"] = counters.reads
            result[f"replication_{level}_writes"] = counters.writes
            result[f"replication_{level}_failures"] = counters.failures
        return result


class _Slot:
    """Where a plain write's outcome goes: its ``Pending`` once the write had to wait."""

    __slots__ = ("pending", "done", "error", "version")

    def __init__(self) -> None:
        self.pending = None
        self.done = False
        self.error: Exception | None = None
        self.version = 0

    def restamped(self, version: int) -> None:
        """The write was restamped: its ``Pending`` shows the version it now carries."""
        self.version = version
        if self.pending is not None:
            self.pending.version = version


class _Gather:
    """Sums (or lists) per-key results of a multi-key command; finishes once all are in (with
    the first error, if any: the other keys' operations still ran)."""

    __slots__ = ("remaining", "total", "error", "finish", "version")

    def __init__(self, count: int, finish: Callable, slots: list | None = None) -> None:
        self.remaining = count
        #: The version of the last write gathered (a single-key command's write version).
        self.version = None
        #: The sum of the results, or with ``slots`` the results in key order.
        self.total = 0 if slots is None else slots
        self.error: Exception | None = None
        self.finish = finish

    def one(self, result, error: Exception | None, index: int | None = None, version=None):
        if version:
            self.version = version
        if error is not None:
            self.error = self.error or error
        elif index is None:
            self.total += result
        else:
            self.total[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            if self.error is not None:
                self.finish(None, self.error, self.version)
            else:
                self.finish(self.total, None, self.version)


__all__ = ["Coordinator", "live_value", "required_for"]
