"""The replication core: any node coordinates a read or a write over a key's owners, and every
node serves as a replica. Sans-IO: the node core hands it payloads, the time and the owners of
a key, and sends what it puts in its outbox.

Coordinating (docs/design.md, "Replication"):

- A **write** is stamped with this node's hybrid logical clock (``gossipcache.hlc``): its
  version is ``stamp << 64 | node_tag``, and every replica keeps the highest version it saw
  (``Store.apply``: last writer wins, the same on every replica whatever the arrival order).
  It goes to every owner; the coordinator answers once ``required`` owners hold it. An owner
  that reports a *newer* version (a coordinator whose clock is behind) makes the coordinator
  restamp above it and send again, up to ``write_restamps_max`` times; so a write acknowledged
  at quorum is newer than every write acknowledged at quorum before it started (any two quorums
  meet). An owner known to be down, or that does not answer within ``replica_timeout_ms``, gets
  the write as a **hint** held here and delivered when it is back (``hints``). Hints never count
  towards the level: an acknowledged quorum write is on a quorum of owners.
- A **read** asks as many owners as the level needs (this node first when it is one), asks the
  others when one fails or is slow, and takes the newest version among the answers. At quorum
  and all it first writes that version back to the owners that answered with an older one
  (**read repair**) and answers only once ``required`` owners hold it, so a later quorum read
  cannot see an older value.

Serving as a replica: ``WRITE`` applies if newer (a version more than ``max_clock_offset_ms``
ahead of this node's wall clock is refused and counted), ``READ`` answers the entry held,
``EVICT`` removes exactly the version named.

Owners are placement ids: node addresses (``"host:port"``), stable across restarts. Messages
to one peer produced in one step travel in one payload.
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import GossipCacheError, ServiceUnavailable
from ..hlc import ClockExhausted, HybridClock, VersionTooFarAhead
from ..sansio import Channel, Outgoing
from ..store import Store
from ..store.store import APPLY_NEW, APPLY_REPLACED, APPLY_STALE
from . import codec
from .hints import Hint, HintStore

#: A payload is closed once its messages reach this many bytes (a bigger single message still
#: travels alone): bounds what one frame holds and what one peer's queue takes at once.
PAYLOAD_SIZE_BYTES_TARGET = 1024 * 1024
#: Requests (reads, writes, hint deliveries) in flight from this coordinator; past it new
#: requests are refused with ``ServiceUnavailable`` (the node's pending bound comes first).
OPS_IN_FLIGHT_MAX = 131_072

#: A payload with less than this queued takes one more acknowledgement without the size check.
_ACK_ROOM_BYTES = PAYLOAD_SIZE_BYTES_TARGET - 48
#: After a peer's stream failed, new requests treat it as down (hints, other owners) for this
#: long instead of sending to it again at once; membership decides for longer.
UNREACHABLE_MS = 1000
#: Bytes of message envelope counted per message when packing payloads.
_MESSAGE_OVERHEAD_BYTES = 48


@dataclass(frozen=True)
class ReplicationConfig:
    """Replication's knobs (``NodeConfig`` carries them; docs/design.md explains each)."""

    replica_timeout_ms: int = 1000
    max_clock_offset_ms: int = 500
    tombstone_grace_ms: int = 3_600_000
    hint_window_ms: int = 600_000
    hint_target_bytes_max: int = 64 * 1024 * 1024
    hint_total_bytes_max: int = 256 * 1024 * 1024
    #: Hints sent to one target per delivery round, and the rounds' period: delivery is
    #: throttled so a returning node is not flooded (2,560 hints/s per target by default).
    hint_delivery_batch: int = 256
    hint_delivery_interval_ms: int = 100
    #: Chance that a read at ``one`` also asks every owner and repairs them in the background.
    read_repair_chance: float = 0.0
    write_restamps_max: int = 2


@dataclass(slots=True)
class ReplicationStats:
    """Counters (``replication_*`` in the node's stats and /metrics)."""

    reads_coordinated: int = 0
    writes_coordinated: int = 0
    reads_served: int = 0
    writes_served: int = 0
    writes_stale: int = 0
    writes_refused_clock: int = 0
    writes_refused_other: int = 0
    replica_timeouts: int = 0
    replica_failures: int = 0
    read_repairs: int = 0
    read_repair_failures: int = 0
    restamps: int = 0
    level_failures: int = 0
    evict_notices_sent: int = 0
    evict_notices_applied: int = 0
    bad_messages: int = 0
    unexpected_replies: int = 0
    hints_sent: int = 0


class _Read:
    __slots__ = (
        "req", "key", "owners", "required", "asked", "spares", "replies", "deadline_ms",
        "on_done", "repair", "repair_holders", "newest", "answered", "background",
    )  # fmt: skip

    def __init__(self, req, key, owners, required, on_done, deadline_ms, background):
        self.req = req
        self.key = key
        self.owners = owners
        self.required = required
        self.on_done = on_done
        self.deadline_ms = deadline_ms
        self.asked: set[str] = set()
        self.spares: list[str] = []
        self.replies: dict[str, tuple | None] = {}
        self.repair = False  # sending the newest version back to stale owners
        self.repair_holders: set[str] = set()
        self.newest: tuple | None = None
        self.answered = False
        self.background = background


class _Write:
    __slots__ = (
        "req", "key", "value", "expires_at_ms", "version", "owners", "required", "waiting",
        "acked", "replaced_live", "deadline_ms", "on_done", "restamps", "answered",
        "restamp_above", "token", "extras",
    )  # fmt: skip

    def __init__(self, req, key, value, expires_at_ms, owners, required, on_done, deadline_ms):
        self.req = req
        self.key = key
        self.value = value
        self.expires_at_ms = expires_at_ms
        self.version = 0
        self.owners = owners
        self.required = required
        self.on_done = on_done
        self.deadline_ms = deadline_ms
        self.waiting: set[str] = set()  # owners asked, not answered yet
        self.acked: set[str] = set()
        self.replaced_live = False
        self.restamps = 0
        self.answered = False
        #: A newer version an owner holds, above which the write is restamped and resent.
        self.restamp_above = 0
        #: The caller's, handed back with the op (the command's ``Pending``, say).
        self.token = None
        #: Nodes that get the write without counting towards the level: a bucket's next
        #: owners while it moves to them (docs/design.md, "Scaling and refill").
        self.extras: tuple[str, ...] = ()


class _HintDelivery:
    __slots__ = ("req", "target", "keys", "deadline_ms")

    def __init__(self, req, target, keys, deadline_ms):
        self.req = req
        self.target = target
        self.keys = keys  # key -> version sent
        self.deadline_ms = deadline_ms


def level_error(level: str, answered: int, required: int, owners: int) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{level} not reached: {answered} of {required} required replicas answered "
        f"({owners} owners)"
    )


class Replication:
    """See the module docstring. ``own`` is this node's placement id (its address);
    ``node_id`` its membership id (the HLC tie-break tag is derived from it)."""

    def __init__(
        self,
        own: str,
        node_tag: int,
        store: Store,
        config: ReplicationConfig,
        rng: random.Random,
    ) -> None:
        self.own = own
        self.store = store
        self.config = config
        self.rng = rng
        self.clock = HybridClock(node_tag, config.max_clock_offset_ms)
        self.stats = ReplicationStats()
        self.hints = HintStore(
            config.hint_window_ms, config.hint_target_bytes_max, config.hint_total_bytes_max
        )
        #: Owners known to be down (membership says dead): written to as hints only.
        self.down: set[str] = set()
        #: Peers whose stream failed recently -> until when they count as down (monotonic ms).
        self._unreachable: dict[str, int] = {}
        self._ops: dict[int, _Read | _Write | _HintDelivery] = {}
        #: (deadline_ms, req) in deadline order. Every deadline is "now + the replica timeout"
        #: and now never goes back, so appending keeps the order: a deque, not a heap.
        self._deadlines: deque[tuple[int, int]] = deque()
        self._outgoing: dict[str, list[list]] = {}
        self._outgoing_bytes: dict[str, int] = {}
        self._outbox: list[Outgoing] = []
        self._next_req = rng.getrandbits(40)
        self._hint_busy: set[str] = set()  # targets with a delivery in flight
        self._next_hint_round_ms = 0

    # -- coordinating -----------------------------------------------------------------------

    def read(
        self,
        key: bytes,
        owners: tuple[str, ...],
        required: int,
        on_done: Callable[[tuple | None, Exception | None], None] | None,
        wall_ms: int,
        now_ms: int,
        *,
        background: bool = False,
    ) -> None:
        """Read ``key`` from ``required`` of ``owners``; ``on_done(entry, error)`` runs once,
        with the newest entry ``(value|None, version, expires_at_ms)`` (None: none held).
        ``background``: ask every owner, repair the stale ones, tell nobody (``on_done``
        unused: the read-repair chance of reads at ``one``)."""
        self.stats.reads_coordinated += 1
        op = _Read(
            self._req(), key, owners, required, on_done, now_ms + self.config.replica_timeout_ms,
            background,
        )  # fmt: skip
        remote = []
        for owner in owners:
            if owner == self.own:
                op.replies[owner] = self.store.lookup(key, wall_ms, touch=True)
            elif owner not in self.down and not self._unreachable_at(owner, now_ms):
                remote.append(owner)
        want = required - len(op.replies)
        if background:
            want = len(remote)
        op.spares = remote[max(want, 0) :]
        for owner in remote[: max(want, 0)]:
            self._ask(op, owner)
        self._track(op)
        self._read_progress(op, wall_ms)

    def write(
        self,
        key: bytes,
        value: bytes | None,
        expires_at_ms: int | None,
        owners: tuple[str, ...],
        required: int,
        on_done: Callable[[_Write, Exception | None], None],
        wall_ms: int,
        now_ms: int,
        *,
        after_version: int = 0,
        token: object = None,
        extras: tuple[str, ...] = (),
    ) -> int:
        """Write ``key`` (``value`` None: a tombstone collected at ``expires_at_ms``) to
        ``owners``; ``on_done(op, error)`` runs once, when ``required`` of them hold it (``op``
        tells ``version``, ``replaced_live`` and the caller's ``token``) or when that became
        impossible (``error`` set). The version is newer than ``after_version`` (a
        read-modify-write passes what it read). ``extras`` get the write too, uncounted and
        unhinted. Returns the version (0 if none was stamped)."""
        self.stats.writes_coordinated += 1
        op = _Write(
            self._req(), key, value, expires_at_ms, owners, required, on_done,
            now_ms + self.config.replica_timeout_ms,
        )  # fmt: skip
        op.token = token
        op.extras = extras
        stamp_base = after_version >> 64
        try:
            stamp = (
                self.clock.observe(stamp_base, wall_ms) if stamp_base else self.clock.now(wall_ms)
            )
        except (VersionTooFarAhead, ClockExhausted) as error:
            on_done(op, ServiceUnavailable(f"cannot stamp the write: {error}"))
            return 0
        op.version = stamp << 64 | self.clock.node_tag
        self._track(op)
        self._send_write(op, wall_ms, now_ms)
        return op.version

    def evict_notice(self, key: bytes, version: int, owners: tuple[str, ...]) -> None:
        """This node, the key's primary, evicted ``version``: tell the other owners."""
        message = codec.evict_message(key, version)
        for owner in owners:
            if owner != self.own and owner not in self.down:
                self._queue(owner, message, len(key))
                self.stats.evict_notices_sent += 1

    # -- the sans-IO contract -----------------------------------------------------------------

    def handle(self, source: str, payload: bytes, now_ms: int, wall_ms: int) -> None:
        try:
            messages = codec.decode_payload(payload)
        except codec.ReplicationCodecError:
            self.stats.bad_messages += 1
            return
        for message in messages:
            kind = message[0]
            if kind == codec.WRITE:
                self._serve_write(source, message, wall_ms)
            elif kind == codec.READ:
                self.stats.reads_served += 1
                entry = self.store.lookup(message[2], wall_ms, touch=True)
                size = len(entry[0]) if entry is not None and entry[0] is not None else 0
                self._queue(source, codec.entry_message(message[1], entry), size)
            elif kind == codec.ACK:
                self._on_ack(source, message, now_ms, wall_ms)
            elif kind == codec.ENTRY:
                self._on_entry(source, message, wall_ms)
            else:  # EVICT
                _, key, version = message
                if self.store.evict_version(key, version):
                    self.stats.evict_notices_applied += 1

    def _unreachable_at(self, peer: str, now_ms: int) -> bool:
        until_ms = self._unreachable.get(peer)
        if until_ms is None:
            return False
        if until_ms > now_ms:
            return True
        del self._unreachable[peer]
        return False

    def peer_failed(self, peer: str, now_ms: int, wall_ms: int) -> None:
        """The stream to ``peer`` broke: what it was asked will not be answered, and new
        requests leave it out for ``UNREACHABLE_MS``."""
        if len(self._unreachable) < OPS_IN_FLIGHT_MAX:
            self._unreachable[peer] = now_ms + UNREACHABLE_MS
        for op in list(self._ops.values()):
            if isinstance(op, _Read):
                if peer in op.asked and peer not in op.replies:
                    op.asked.discard(peer)
                    self.stats.replica_failures += 1
                    self._ask_spare(op)
                    self._read_progress(op, wall_ms)
            elif isinstance(op, _Write):
                if peer in op.waiting:
                    op.waiting.discard(peer)
                    self.stats.replica_failures += 1
                    self._hint(peer, op, now_ms)
                    self._write_progress(op, now_ms)
            elif op.target == peer:
                self._finish_delivery(op)

    def tick(self, now_ms: int, wall_ms: int) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now_ms:
            _, req = deadlines.popleft()
            op = self._ops.get(req)
            if op is not None:
                self._expired(op, now_ms, wall_ms)
        if now_ms >= self._next_hint_round_ms and self.hints.held:
            self._next_hint_round_ms = now_ms + self.config.hint_delivery_interval_ms
            self._deliver_hints(now_ms)

    def next_deadline_ms(self) -> int | None:
        deadline = self._deadlines[0][0] if self._deadlines else None
        if self.hints.held:
            hint_ms = self._next_hint_round_ms
            deadline = hint_ms if deadline is None else min(deadline, hint_ms)
        return deadline

    def take_outbox(self) -> list[Outgoing]:
        if self._outgoing:
            for destination, messages in self._outgoing.items():
                self._outbox.append(
                    Outgoing(destination, Channel.STREAM, codec.encode_payload(messages))
                )
            self._outgoing = {}
            self._outgoing_bytes = {}
        outbox = self._outbox
        self._outbox = []
        return outbox

    @property
    def has_output(self) -> bool:
        """Messages wait for ``take_outbox`` (the driver checks after serving clients)."""
        return bool(self._outgoing or self._outbox)

    @property
    def ops_in_flight(self) -> int:
        return len(self._ops)

    # -- coordinator internals ----------------------------------------------------------------

    def _req(self) -> int:
        if len(self._ops) >= OPS_IN_FLIGHT_MAX:
            raise ServiceUnavailable(f"{len(self._ops)} replica requests in flight; retry later")
        self._next_req = (self._next_req + 1) % codec.REQUEST_ID_LIMIT
        return self._next_req

    def _track(self, op) -> None:
        self._ops[op.req] = op
        deadlines = self._deadlines
        if deadlines and deadlines[-1][0] > op.deadline_ms:  # never: kept in order regardless
            op.deadline_ms = deadlines[-1][0]
        deadlines.append((op.deadline_ms, op.req))

    def _ask(self, op: _Read, owner: str) -> None:
        op.asked.add(owner)
        self._queue(owner, [codec.READ, op.req, op.key], len(op.key))

    def _ask_spare(self, op: _Read) -> None:
        if op.spares and not op.answered:
            self._ask(op, op.spares.pop(0))

    def _on_entry(self, source: str, message: tuple, wall_ms: int) -> None:
        _, req, entry = message
        op = self._ops.get(req)
        if not isinstance(op, _Read) or source not in op.asked or source in op.replies:
            self.stats.unexpected_replies += 1
            return
        if entry is not None:
            # Counted by the clock when refused; the entry still answers the read.
            with contextlib.suppress(VersionTooFarAhead, ClockExhausted):
                self.clock.observe(entry[1] >> 64, wall_ms)
        op.replies[source] = entry
        self._read_progress(op, wall_ms)

    def _read_progress(self, op: _Read, wall_ms: int) -> None:
        if op.repair:
            if len(op.repair_holders) >= op.required:
                self._answer_read(op)
            return
        answered = len(op.replies)
        if answered < op.required and not op.background:
            if not op.asked.difference(op.replies) and not op.spares:
                self._fail_read(op)  # nobody left to ask
            return
        if op.background and op.asked.difference(op.replies):
            return
        newest = None
        for entry in op.replies.values():
            if entry is not None and (newest is None or entry[1] > newest[1]):
                newest = entry
        op.newest = newest
        if newest is None or (op.required < 2 and not op.background):
            self._answer_read(op)
            return
        holders = {owner for owner, entry in op.replies.items() if _same_version(entry, newest)}
        stale = [owner for owner in op.replies if owner not in holders]
        if not stale:
            self._answer_read(op)
            return
        self.stats.read_repairs += len(stale)
        op.repair = True
        op.repair_holders = holders
        value, version, expires_at_ms = newest
        for owner in stale:
            if owner == self.own:
                self._apply_local(op.key, value, version, expires_at_ms, wall_ms)
                op.repair_holders.add(owner)
            else:
                self._queue(
                    owner,
                    codec.write_message(op.req, op.key, value, version, expires_at_ms),
                    len(op.key) + (len(value) if value else 0),
                )
        if op.background or len(op.repair_holders) >= op.required:
            self._answer_read(op)

    def _answer_read(self, op: _Read) -> None:
        if not op.answered:
            op.answered = True
            if not op.background:
                op.on_done(op.newest, None)
        if not op.repair or op.background or len(op.repair_holders) >= len(op.replies):
            self._forget(op)

    def _fail_read(self, op: _Read) -> None:
        if op.answered:
            self._forget(op)
            return
        op.answered = True
        self.stats.level_failures += 1
        self._forget(op)
        if not op.background:
            count = len(op.repair_holders) if op.repair else len(op.replies)
            op.on_done(None, level_error("read", count, op.required, len(op.owners)))

    def _send_write(self, op: _Write, wall_ms: int, now_ms: int) -> None:
        message = None
        for owner in op.owners:
            if owner == self.own:
                try:  # ``_apply_local``, inlined: every coordinated write passes here
                    outcome = self.store.apply(
                        op.key, op.value, op.version, op.expires_at_ms, wall_ms
                    )
                except GossipCacheError:
                    self.stats.writes_refused_other += 1
                    outcome = -1
                held = 0
                if outcome == APPLY_STALE:
                    entry = self.store.lookup(op.key, wall_ms)
                    held = entry[1] if entry is not None else 0
                self._on_outcome(op, owner, outcome, held)
            elif owner in self.down or (self._unreachable and self._unreachable_at(owner, now_ms)):
                self._hint(owner, op, now_ms)
            else:
                if message is None:
                    message = codec.write_message(
                        op.req, op.key, op.value, op.version, op.expires_at_ms
                    )
                op.waiting.add(owner)
                self._queue(owner, message, len(op.key) + len(op.value or b""))
        if op.extras:
            self._send_extras(op, message, wall_ms, now_ms)
        if op.restamp_above:
            self._restamp(op, wall_ms, now_ms)
            return
        self._write_progress(op, now_ms)

    def _send_extras(self, op: _Write, message: list | None, wall_ms: int, now_ms: int) -> None:
        """The write to a bucket's next owners: applied or sent, never counted, never hinted
        (a next owner that misses it gets the bucket by anti-entropy)."""
        for extra in op.extras:
            if extra == self.own:
                self._apply_local(op.key, op.value, op.version, op.expires_at_ms, wall_ms)
            elif extra not in self.down and not self._unreachable_at(extra, now_ms):
                if message is None:
                    message = codec.write_message(
                        op.req, op.key, op.value, op.version, op.expires_at_ms
                    )
                self._queue(extra, message, len(op.key) + len(op.value or b""))

    def _apply_local(self, key, value, version, expires_at_ms, wall_ms) -> int:
        try:
            return self.store.apply(key, value, version, expires_at_ms, wall_ms)
        except GossipCacheError:
            self.stats.writes_refused_other += 1
            return -1

    def _on_outcome(self, op: _Write, owner: str, outcome: int, held_version: int) -> None:
        """Count one owner's answer (``outcome``: an ``APPLY_*`` or -1 refused)."""
        if outcome == APPLY_STALE and held_version > op.version:
            if op.restamps < self.config.write_restamps_max and not op.answered:
                op.restamp_above = max(op.restamp_above, held_version)
                return
            outcome = APPLY_NEW  # superseded by a concurrent newer write: it holds a newer one
        if outcome < 0:
            return
        if outcome == APPLY_REPLACED:
            op.replaced_live = True
        op.acked.add(owner)

    def _on_ack(self, source: str, message: tuple, now_ms: int, wall_ms: int) -> None:
        _, req, outcome, held_version = message
        op = self._ops.get(req)
        if type(op) is _Write and source in op.waiting and outcome != codec.OUTCOME_STALE:
            # The common case (a write acknowledged as new or replaced, or refused).
            op.waiting.discard(source)
            if outcome == codec.OUTCOME_REPLACED:
                op.replaced_live = True
                op.acked.add(source)
            elif outcome == codec.OUTCOME_NEW:
                op.acked.add(source)
            self._write_progress(op, now_ms)
            return
        if isinstance(op, _HintDelivery):
            if source == op.target:
                for key, version in op.keys.items():
                    self.hints.delivered_one(source, key, version)
                self._finish_delivery(op)
            return
        if isinstance(op, _Read) and op.repair and source in op.asked:
            if outcome != codec.OUTCOME_REFUSED:
                op.repair_holders.add(source)
            op.asked.discard(source)
            self._read_progress(op, wall_ms)
            return
        if not isinstance(op, _Write) or source not in op.waiting:
            if not (isinstance(op, _Write) and source in op.extras):
                self.stats.unexpected_replies += 1
            return
        if outcome == codec.OUTCOME_STALE and held_version > op.version:
            with contextlib.suppress(VersionTooFarAhead, ClockExhausted):
                self.clock.observe(held_version >> 64, wall_ms)
        op.waiting.discard(source)
        self._on_outcome(op, source, _OUTCOME_TO_APPLY[outcome], held_version)
        if op.restamp_above:
            self._restamp(op, wall_ms, now_ms)
            return
        self._write_progress(op, now_ms)

    def _restamp(self, op: _Write, wall_ms: int, now_ms: int) -> None:
        """An owner holds a newer version than ``op``'s: stamp the write above it and send it
        again, under a new request id (answers to the old one are ignored), with a new
        timeout."""
        try:
            stamp = self.clock.observe(op.restamp_above >> 64, wall_ms)
        except (VersionTooFarAhead, ClockExhausted):
            stamp = self.clock.now(wall_ms)
        self.stats.restamps += 1
        op.restamps += 1
        op.version = max(stamp << 64 | self.clock.node_tag, op.restamp_above + 1)
        restamped = getattr(op.token, "restamped", None)
        if restamped is not None:
            restamped(op.version)  # the caller tracks the write's version (checkers read it)
        op.restamp_above = 0
        op.acked.clear()
        op.waiting.clear()
        op.replaced_live = False
        self._forget(op)
        op.req = self._req()
        op.deadline_ms = now_ms + self.config.replica_timeout_ms
        self._track(op)
        self._send_write(op, wall_ms, now_ms)

    def _write_progress(self, op: _Write, now_ms: int) -> None:
        if not op.answered and len(op.acked) >= op.required:
            op.answered = True
            op.on_done(op, None)
        elif not op.answered and not op.waiting and len(op.acked) < op.required:
            # Impossible now; reported once every owner asked has answered, so the error
            # names how many hold the write.
            op.answered = True
            self.stats.level_failures += 1
            op.on_done(op, level_error("write", len(op.acked), op.required, len(op.owners)))
        if not op.waiting:
            self._forget(op)

    def _expired(self, op, now_ms: int, wall_ms: int) -> None:
        if isinstance(op, _Read):
            unanswered = op.asked.difference(op.replies)
            self.stats.replica_timeouts += len(unanswered)
            if op.repair:
                if not op.answered:
                    self.stats.read_repair_failures += 1
                    self._fail_read(op)
                else:
                    self._forget(op)
            elif op.spares and not op.answered:
                # Slow owners: ask the rest, and give them one more timeout.
                while op.spares:
                    self._ask(op, op.spares.pop(0))
                op.deadline_ms = now_ms + self.config.replica_timeout_ms
                self._track(op)
            else:
                self._fail_read(op)
        elif isinstance(op, _Write):
            self.stats.replica_timeouts += len(op.waiting)
            for owner in op.waiting:
                self._hint(owner, op, now_ms)
            op.waiting.clear()
            self._write_progress(op, now_ms)
            self._forget(op)
        else:
            self._finish_delivery(op)

    def _forget(self, op) -> None:
        self._ops.pop(op.req, None)

    def _hint(self, owner: str, op: _Write, now_ms: int) -> None:
        self.hints.add(owner, op.key, Hint(op.value, op.version, op.expires_at_ms, now_ms))

    # -- hints ------------------------------------------------------------------------------

    def _deliver_hints(self, now_ms: int) -> None:
        config = self.config
        for target in self.hints.targets():
            if (
                target in self.down
                or target in self._hint_busy
                or self._unreachable_at(target, now_ms)
            ):
                continue
            if len(self._ops) >= OPS_IN_FLIGHT_MAX:
                return  # clients' requests come first; the hints wait for the next round
            batch = self.hints.oldest(target, config.hint_delivery_batch, now_ms)
            if not batch:
                continue
            req = self._req()
            delivery = _HintDelivery(
                req, target, {key: hint.version for key, hint in batch},
                now_ms + config.replica_timeout_ms,
            )  # fmt: skip
            self._hint_busy.add(target)
            self._track(delivery)
            for key, hint in batch:
                self.stats.hints_sent += 1
                self._queue(
                    target,
                    codec.write_message(req, key, hint.value, hint.version, hint.expires_at_ms),
                    len(key) + len(hint.value or b""),
                )

    def _finish_delivery(self, op: _HintDelivery) -> None:
        self._hint_busy.discard(op.target)
        self._forget(op)

    # -- serving as a replica -------------------------------------------------------------

    def _serve_write(self, source: str, message: tuple, wall_ms: int) -> None:
        _, req, key, value, version, expires_at_ms = message
        self.stats.writes_served += 1
        try:
            self.clock.observe(version >> 64, wall_ms)
        except VersionTooFarAhead:
            self.stats.writes_refused_clock += 1
            self._queue(source, codec.ack_message(req, codec.OUTCOME_REFUSED, 0), 0)
            return
        except ClockExhausted:
            self.stats.writes_refused_clock += 1
            self._queue(source, codec.ack_message(req, codec.OUTCOME_REFUSED, 0), 0)
            return
        try:  # ``_apply_local``, inlined: every replica write passes here
            outcome = self.store.apply(key, value, version, expires_at_ms, wall_ms)
        except GossipCacheError:
            self.stats.writes_refused_other += 1
            outcome = -1
        if outcome == APPLY_STALE:
            self.stats.writes_stale += 1
            entry = self.store.lookup(key, wall_ms)
            held = entry[1] if entry is not None else 0
            self._queue(source, codec.ack_message(req, codec.OUTCOME_STALE, held), 0)
            return
        # The common answer, queued inline: no held version to split, no size to weigh.
        ack = [codec.ACK, req, _APPLY_TO_OUTCOME[outcome], 0, 0]
        queued = self._outgoing.get(source)
        if queued is not None and self._outgoing_bytes[source] < _ACK_ROOM_BYTES:
            queued.append(ack)
            self._outgoing_bytes[source] += _MESSAGE_OVERHEAD_BYTES
        else:
            self._queue(source, ack, 0)

    # -- output -------------------------------------------------------------------------------

    def _queue(self, destination: str, message: list, size: int) -> None:
        size += _MESSAGE_OVERHEAD_BYTES
        queued = self._outgoing.get(destination)
        if queued is None:
            self._outgoing[destination] = [message]
            self._outgoing_bytes[destination] = size
            return
        if self._outgoing_bytes[destination] + size > PAYLOAD_SIZE_BYTES_TARGET:
            self._outbox.append(Outgoing(destination, Channel.STREAM, codec.encode_payload(queued)))
            self._outgoing[destination] = [message]
            self._outgoing_bytes[destination] = size
            return
        queued.append(message)
        self._outgoing_bytes[destination] += size


def _same_version(entry: tuple | None, newest: tuple) -> bool:
    return entry is not None and entry[1] == newest[1]


_OUTCOME_TO_APPLY = {
    codec.OUTCOME_STALE: APPLY_STALE,
    codec.OUTCOME_NEW: APPLY_NEW,
    codec.OUTCOME_REPLACED: APPLY_REPLACED,
    codec.OUTCOME_REFUSED: -1,
}
_APPLY_TO_OUTCOME = {
    APPLY_STALE: codec.OUTCOME_STALE,
    APPLY_NEW: codec.OUTCOME_NEW,
    APPLY_REPLACED: codec.OUTCOME_REPLACED,
    -1: codec.OUTCOME_REFUSED,
}
