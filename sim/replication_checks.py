"""Checkers of a replicated cluster's history, in the spirit of Jepsen's register and set checkers.

They read a ``ReplicationRun`` (``sim.scenarios_replication``): the client history (every
operation with its consistency level, outcome, times and, for replicated writes, its version),
the final ``all`` read of every key taken after heal (the *sweep*), and, white-box, what each
live owner of a key holds (``Store.lookup``). Every value the workload writes is unique, so a
value read names the one ``put`` that wrote it.

Terms:

- *write*: a put, delete, expire or persist that may have taken effect (any outcome but
  ``UNAVAILABLE``; an expire or persist answered False wrote nothing).
- *acknowledged strong write*: a write answered OK at ``quorum`` or ``all`` (the node default
  for writes is quorum). Writes at ``one`` are never required to survive.
- *superseded* (real time): an acknowledged strong write is superseded once another
  acknowledged strong write of the key was invoked after it was acknowledged; the contract
  gives the later one the higher version, so the earlier value may never be the final one.
  Nothing else is ever superseded (a write at ``one`` or one that failed may carry any version).
- *rewrite*: expire and persist read the entry and write it back whole with a new version, so
  they may carry the value of an older put forward; a value is excused by a rewrite invoked
  no earlier than its put.
- *clock error*: every node's wall clock stays within ``clock_error_ms_max`` of true time (the
  scenario's offsets, drift and jumps are drawn inside it); an expiry instant is on the writing
  node's clock, so a value may be served until its expiry plus that error.

Checkers (each returns ``(passed, message)``; all run once, at the end of the run):

- ``no-lost-writes``: for every key with acknowledged strong writes, (a) the sweep's ``all``
  read returns a value that is not superseded (or nothing, when a non-superseded delete or a
  passed expiry explains it); (b) with versions: that value's version is at least the highest
  acknowledged one, and every live owner holds a version at least that high. Reports how many
  acknowledged writes were checked; none checked is a failure. Writes without a version fail
  (b): replication stamps every write.
- ``reads-valid``: every value a read returned was written by a put invoked before the read
  completed, and was not past its latest possible expiry plus the clock error when the read was
  invoked.
- ``deletes-hold``: no ``quorum`` / ``all`` read (the sweep's included) invoked after an
  acknowledged strong delete returns a value whose put has a lower version than the delete
  (unless a later rewrite carried it); without versions, a value whose put was acknowledged
  at quorum/all before the delete began. Reads at ``one`` may lag a delete like any write
  (``stale-reads-one`` counts them): a stale copy on one replica is not the delete undone.
- ``replicas-agree``: every live owner of every written key holds the same version and value
  (nothing held equals a tombstone about to be collected).
- ``stale-reads-one``: reads at ``one`` that returned an older version than the newest write
  acknowledged before they were invoked (or nothing instead of a live value): counted and
  reported, never a failure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gossipcache.node import commands as c

from .simulation import WALL_EPOCH_MS, Simulation
from .workload import OK, UNAVAILABLE, HistoryEntry

if TYPE_CHECKING:
    from .scenarios_replication import ReplicationRun

#: Write command kinds; expire and persist are the rewrites.
WRITE_KINDS = frozenset(("put", "delete", "expire", "persist"))
REWRITE_KINDS = frozenset(("expire", "persist"))
STRONG_LEVELS = frozenset((c.QUORUM, c.ALL))
#: Violations quoted per checker (all are counted).
EXAMPLES_KEPT = 5
#: Stands for "never expires" in comparisons.
NEVER = float("inf")


def level_of(entry: HistoryEntry) -> str:
    """The consistency level a command ran at (None on the command: the node's default)."""
    level = getattr(entry.command, "consistency", None)
    if level is not None:
        return level
    return c.QUORUM if entry.command.writes else c.ONE


def true_wall_ms(virtual_ms: int) -> int:
    """True wall-clock time at a virtual instant (what a perfect clock reads)."""
    return WALL_EPOCH_MS + virtual_ms


@dataclass
class Violations:
    """A count and the first few descriptions."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(message)

    def __str__(self) -> str:
        return f"{self.count} violations: " + " | ".join(self.examples)


class HistoryIndex:
    """The history sorted for the checkers: writes per key, puts by value, reads."""

    def __init__(self, history: Iterable[HistoryEntry], clock_error_ms: int) -> None:
        self.clock_error_ms = clock_error_ms
        self.writes: dict[bytes, list[HistoryEntry]] = defaultdict(list)
        self.put_of_value: dict[bytes, HistoryEntry] = {}
        self.reads: list[HistoryEntry] = []
        for entry in history:
            if entry.kind in WRITE_KINDS:
                if entry.kind == "put":
                    self.put_of_value[entry.value] = entry  # values are unique per run
                if entry.outcome == UNAVAILABLE or not self.may_have_written(entry):
                    continue
                for key in entry.keys:
                    self.writes[key].append(entry)
            elif entry.kind == "get" and entry.outcome == OK:
                self.reads.append(entry)
        # Per key: the latest invocation of an acknowledged strong write (superseded() uses it).
        self._last_strong_invoke: dict[bytes, int] = {}
        for key, writes in self.writes.items():
            invokes = [w.invoked_at_ms for w in writes if self.acked_strong(w)]
            if invokes:
                self._last_strong_invoke[key] = max(invokes)

    # -- classification ------------------------------------------------------------------------

    @staticmethod
    def may_have_written(entry: HistoryEntry) -> bool:
        """An expire or persist answered False found nothing to change, and a delete that
        found nothing and was never stamped wrote no tombstone: neither wrote anything."""
        if entry.outcome != OK:
            return True
        if entry.kind in REWRITE_KINDS:
            return entry.result is not False
        return not (entry.kind == "delete" and entry.result == 0 and entry.version is None)

    @staticmethod
    def acked_strong(entry: HistoryEntry) -> bool:
        return entry.outcome == OK and level_of(entry) in STRONG_LEVELS

    def superseded(self, key: bytes, entry: HistoryEntry) -> bool:
        if not self.acked_strong(entry):
            return False
        return entry.completed_at_ms < self._last_strong_invoke.get(key, -1)

    def expiry_window_ms(self, entry: HistoryEntry) -> tuple[float, float]:
        """The earliest and latest wall-clock expiry (on the writer's clock) ``entry`` can
        have given its value; NEVER for none. A relative TTL counts from the coordinator's
        clock when it ran the command at the earliest, and at the latest from when it answered
        (an expire reads before it writes; a restamped write may take its instant later)."""
        command = entry.command
        if entry.kind not in ("put", "expire"):
            return NEVER, NEVER  # persist; a delete carries no value
        if command.expires_at_ms is not None:
            return command.expires_at_ms, command.expires_at_ms
        if entry.kind == "put" and command.ttl_ms is None:
            return NEVER, NEVER
        earliest = entry.invoked_wall_ms + command.ttl_ms
        if entry.completed_at_ms is None:
            return earliest, NEVER
        latest = true_wall_ms(entry.completed_at_ms) + self.clock_error_ms + command.ttl_ms
        return earliest, max(earliest, latest)

    def expiry_bound_ms(self, entry: HistoryEntry) -> float:
        """The latest expiry ``entry`` can have given its value (``expiry_window_ms``)."""
        return self.expiry_window_ms(entry)[1]

    def expired_by(self, entry: HistoryEntry, now_true_ms: int) -> bool:
        """Whether ``entry``'s value (or expiry) may have passed on some node by now."""
        return self.expiry_window_ms(entry)[0] <= now_true_ms + self.clock_error_ms

    def rewritten_after(
        self, key: bytes, put: HistoryEntry, writes: Iterable[HistoryEntry]
    ) -> bool:
        """Whether one of ``writes`` is a rewrite that may carry ``put``'s value forward."""
        return any(
            w.kind in REWRITE_KINDS
            and (w.completed_at_ms is None or w.completed_at_ms >= put.invoked_at_ms)
            for w in writes
        )

    def explains_nothing(self, writes: Iterable[HistoryEntry], now_true_ms: int) -> bool:
        """Whether one of ``writes`` leaves the key legitimately empty: a delete, or an expiry
        that may have passed."""
        return any(
            w.kind == "delete" or (w.kind != "persist" and self.expired_by(w, now_true_ms))
            for w in writes
        )


def _owner_address(owner: str) -> str:
    """Placement ids are addresses (``host:port``: a restarted process keeps its buckets) or,
    in an earlier layout, membership ids ``host:port#nonce``: the address is before the ``#``."""
    return owner.partition("#")[0]


class ClusterView:
    """White-box: who owns a key now and what each live owner holds (final checks only:
    ``Store.lookup`` turns expired values into tombstones, so it is not used mid-run)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.problems: list[str] = []
        self.table = None
        epochs: dict[str, object] = {}
        for address in sim.live_addresses():
            node = sim.core(address)
            table = node.core.placement.table
            epochs[address] = None if table is None else table.epoch
            if self.table is None and table is not None:
                self.table = table
        if len(set(epochs.values())) > 1:
            self.problems.append(f"live nodes disagree on the placement epoch: {epochs}")
        if self.table is None:
            self.problems.append("no live node has a placement table")

    def owners(self, key: bytes) -> tuple[str, ...]:
        return () if self.table is None else self.table.owners_of_key(key)

    def holdings(self, key: bytes) -> dict[str, tuple | None | str]:
        """Owner id -> ``lookup`` result, or a string saying why the owner cannot be read."""
        result: dict[str, tuple | None | str] = {}
        for owner in self.owners(key):
            address = _owner_address(owner)
            if address not in self.sim.addresses or not self.sim.is_alive(address):
                result[owner] = "not a live node of this simulation"
                continue
            node = self.sim.core(address)
            membership = node.core.membership
            if membership is None or owner not in (address, membership.node_id):
                result[owner] = f"{address} now runs another process"
                continue
            result[owner] = node.core.store.lookup(key, node.clock.wall_ms())
        return result


def _version_text(version: int | None) -> str:
    return "none" if version is None else f"{version >> 64 >> 16}.{(version >> 64) & 0xFFFF}"


# ---------------------------------------------------------------------------- checkers


def check_no_lost_writes(
    run: ReplicationRun, sim: Simulation, cluster: ClusterView | None = None
) -> tuple[bool, str]:
    """See the module docstring; ``cluster`` (default: the live one) is what (b) reads."""
    index = run.index()
    cluster = ClusterView(sim) if cluster is None else cluster
    now_true = true_wall_ms(sim.now_ms)
    violations = Violations()
    checked = unversioned = owners_read = keys = 0
    for key, writes in sorted(index.writes.items()):
        acked = [w for w in writes if index.acked_strong(w)]
        if not acked:
            continue
        keys += 1
        checked += len(acked)
        alive = [w for w in writes if not index.superseded(key, w)]
        final = run.sweep.get(key)
        if final is None:
            violations.add(f"{key!r}: no successful final read at all ({run.sweep_note(key)})")
            final_value: object = "unread"
        else:
            final_value = final.result
        # (a) real time: the final value comes from a write that is not superseded.
        if isinstance(final_value, bytes):
            put = index.put_of_value.get(final_value)
            if put is None:
                violations.add(f"{key!r}: final read returned {final_value!r}, never written")
            elif index.superseded(key, put) and not index.rewritten_after(key, put, alive):
                latest = max((w for w in acked), key=lambda w: w.invoked_at_ms)
                violations.add(
                    f"{key!r}: final read (op {final.op_id}) returned {final_value!r} of op "
                    f"{put.op_id}, superseded by acknowledged op {latest.op_id} "
                    f"({latest.kind} at {level_of(latest)}, invoked {latest.invoked_at_ms} ms)"
                )
        elif final_value is None and not index.explains_nothing(alive, now_true):
            latest = max((w for w in acked), key=lambda w: w.invoked_at_ms)
            violations.add(
                f"{key!r}: final read (op {final.op_id}) found nothing; acknowledged op "
                f"{latest.op_id} ({latest.kind} {latest.value!r} at {level_of(latest)}) is lost"
            )
        # (b) versions: the final value and every live owner are at least the newest ack.
        versioned = [w for w in acked if w.version is not None]
        unversioned += len(acked) - len(versioned)
        if not versioned:
            continue
        top = max(versioned, key=lambda w: w.version)
        # Writes that may be as new as the newest acknowledged one (a version unknown: maybe).
        newer = [w for w in writes if w.version is None or w.version >= top.version]
        if isinstance(final_value, bytes):
            put = index.put_of_value.get(final_value)
            if (
                put is not None
                and put.version is not None
                and put.version < top.version
                and not index.rewritten_after(key, put, newer)
            ):
                violations.add(
                    f"{key!r}: final read returned op {put.op_id}'s value (version "
                    f"{_version_text(put.version)}), older than acknowledged op {top.op_id} "
                    f"({top.kind}, version {_version_text(top.version)})"
                )
        elif (
            final_value is None
            and top.kind != "delete"
            and not index.explains_nothing(newer, now_true)
        ):
            violations.add(
                f"{key!r}: final read found nothing; acknowledged op {top.op_id} "
                f"({top.kind}, version {_version_text(top.version)}) is lost"
            )
        for owner, held in cluster.holdings(key).items():
            owners_read += 1
            if isinstance(held, str):
                violations.add(f"{key!r}: owner {owner}: {held}")
            elif held is None:
                if not index.explains_nothing(newer, now_true):
                    violations.add(
                        f"{key!r}: owner {owner} holds nothing; acknowledged op {top.op_id} "
                        f"({top.kind}, version {_version_text(top.version)}) is lost there"
                    )
            elif held[1] < top.version:
                gone = (
                    " after it expired: an older write came back"
                    if index.expired_by(top, now_true)
                    else ""
                )
                violations.add(
                    f"{key!r}: owner {owner} holds version {_version_text(held[1])} < "
                    f"acknowledged op {top.op_id} ({top.kind}, {_version_text(top.version)})"
                    f"{gone}"
                )
    summary = (
        f"{checked} acknowledged quorum/all writes checked over {keys} keys, "
        f"{owners_read} owner copies read"
    )
    # Run-wide findings first: the per-key examples are capped.
    notes = list(cluster.problems)
    if unversioned:
        notes.append(
            f"{unversioned} acknowledged quorum/all writes carry no version (is the write "
            "replicated?)"
        )
    if violations.count or notes:
        return False, "; ".join([*notes, str(violations), summary])
    if not checked:
        return False, f"nothing checked: no acknowledged quorum/all write; {summary}"
    return True, summary


def check_reads_valid(run: ReplicationRun, sim: Simulation) -> tuple[bool, str]:
    index = run.index()
    violations = Violations()
    values = misses = 0
    for read in index.reads:
        value = read.result
        if value is None:
            misses += 1
            continue
        values += 1
        put = index.put_of_value.get(value)
        if put is None or put.outcome == UNAVAILABLE or put.invoked_at_ms > read.completed_at_ms:
            violations.add(f"op {read.op_id} read {read.key!r} = {value!r}: never written")
            continue
        # The latest expiry the value may carry: its put's, or a later rewrite's.
        bound = index.expiry_bound_ms(put)
        for w in index.writes.get(read.key, ()):
            if (
                w.kind in REWRITE_KINDS
                and w.invoked_at_ms <= read.completed_at_ms
                and (w.completed_at_ms is None or w.completed_at_ms >= put.invoked_at_ms)
            ):
                bound = max(bound, index.expiry_bound_ms(w))
        invoked_true = true_wall_ms(read.invoked_at_ms)
        if invoked_true >= bound + index.clock_error_ms:
            violations.add(
                f"op {read.op_id} read {read.key!r} = {value!r} at {read.invoked_at_ms} ms, "
                f"{invoked_true - bound:.0f} ms past its latest expiry (clock error bound "
                f"{index.clock_error_ms} ms)"
            )
    summary = f"{values} values read and checked, {misses} misses"
    if violations.count:
        return False, f"{violations}; {summary}"
    if not values:
        return False, f"nothing checked: no read returned a value; {summary}"
    return True, summary


def check_deletes_hold(run: ReplicationRun, sim: Simulation) -> tuple[bool, str]:
    index = run.index()
    violations = Violations()
    deletes = reads_checked = 0
    reads_by_key: dict[bytes, list[HistoryEntry]] = defaultdict(list)
    for read in index.reads:
        if read.result is not None and level_of(read) in STRONG_LEVELS:
            reads_by_key[read.key].append(read)
    for key, writes in index.writes.items():
        for delete in writes:
            if delete.kind != "delete" or not index.acked_strong(delete):
                continue
            deletes += 1
            for read in reads_by_key.get(key, ()):
                if read.invoked_at_ms <= delete.completed_at_ms:
                    continue
                put = index.put_of_value.get(read.result)
                if put is None:
                    continue  # reads-valid reports it
                reads_checked += 1
                if delete.version is not None and put.version is not None:
                    older = put.version < delete.version
                    carriers = [w for w in writes if (w.version or 0) > delete.version]
                else:  # no versions: real-time order, sound only for an acknowledged strong
                    # put (a put at one, or one that failed, may carry a newer version)
                    older = index.acked_strong(put) and put.completed_at_ms < delete.invoked_at_ms
                    carriers = [w for w in writes if w.invoked_at_ms > delete.invoked_at_ms]
                if older and not index.rewritten_after(key, put, carriers):
                    violations.add(
                        f"{key!r}: op {read.op_id} (at {level_of(read)}, {read.invoked_at_ms} ms) "
                        f"read {read.result!r} of op {put.op_id} after delete op "
                        f"{delete.op_id} was acknowledged at {delete.completed_at_ms} ms "
                        f"(versions {_version_text(put.version)} < "
                        f"{_version_text(delete.version)})"
                    )
    summary = f"{deletes} acknowledged quorum/all deletes, {reads_checked} later reads checked"
    if violations.count:
        return False, f"{violations}; {summary}"
    return True, summary


def check_replicas_agree(
    run: ReplicationRun, sim: Simulation, cluster: ClusterView | None = None
) -> tuple[bool, str]:
    index = run.index()
    cluster = ClusterView(sim) if cluster is None else cluster
    now_true = true_wall_ms(sim.now_ms)
    violations = Violations()
    keys = copies = 0
    for key in sorted(index.writes):
        keys += 1
        holdings = cluster.holdings(key)
        held: dict[str, tuple] = {}
        empty: list[str] = []
        for owner, entry in holdings.items():
            copies += 1
            if isinstance(entry, str):
                violations.add(f"{key!r}: owner {owner}: {entry}")
            elif entry is None:
                empty.append(owner)
            else:
                held[owner] = entry
        versions = {entry[1] for entry in held.values()}
        # The same version as a value on one owner and a tombstone on another: the value
        # expired on the clocks that are ahead (an expired value turns into its tombstone).
        expired_apart = all(
            entry[0] is None
            or (entry[2] is not None and entry[2] <= now_true + index.clock_error_ms)
            for entry in held.values()
        )
        # Nothing held matches a tombstone whose collection instant may have passed somewhere.
        collectable = all(
            entry[0] is None
            and entry[2] is not None
            and entry[2] <= now_true + 2 * index.clock_error_ms
            for entry in held.values()
        )
        kinds = {entry[0] is None for entry in held.values()}
        differ = len(versions) > 1 or (len(kinds) > 1 and not expired_apart)
        if differ or (empty and held and not collectable):
            shown = {
                owner: (
                    "nothing"
                    if entry is None
                    else f"{entry[0]!r} v{_version_text(entry[1])}"
                    if isinstance(entry, tuple)
                    else entry
                )
                for owner, entry in holdings.items()
            }
            violations.add(f"{key!r}: owners differ: {shown}")
    summary = f"{keys} written keys, {copies} owner copies compared"
    if violations.count or cluster.problems:
        return False, "; ".join([*cluster.problems, str(violations), summary])
    if not keys:
        return False, f"nothing checked: no key was written; {summary}"
    return True, summary


def check_stale_reads_one(run: ReplicationRun, sim: Simulation) -> tuple[bool, str]:
    """Never fails: measures how often ``one`` reads lag the newest acknowledged write."""
    index = run.index()
    counts: Counter[str] = Counter()
    for read in index.reads:
        if level_of(read) != c.ONE:
            continue
        counts["reads"] += 1
        acked_before = [
            w
            for w in index.writes.get(read.key, ())
            if w.outcome == OK and w.version is not None and w.completed_at_ms < read.invoked_at_ms
        ]
        if not acked_before:
            continue
        newest = max(acked_before, key=lambda w: w.version)
        counts["judged"] += 1
        if read.result is None:
            if newest.kind == "put" and not index.expired_by(
                newest, true_wall_ms(read.invoked_at_ms)
            ):
                counts["stale_miss"] += 1
            continue
        put = index.put_of_value.get(read.result)
        if put is not None and put.version is not None and put.version < newest.version:
            counts["stale_value"] += 1
    stale = counts["stale_miss"] + counts["stale_value"]
    judged = counts["judged"]
    ratio = f"{stale / judged:.1%}" if judged else "n/a"
    return True, (
        f"{stale} of {judged} judged reads at one were stale ({ratio}: {counts['stale_value']} "
        f"older values, {counts['stale_miss']} misses of a live value); {counts['reads']} reads "
        "at one in all (judged: a versioned write was acknowledged before the read)"
    )
