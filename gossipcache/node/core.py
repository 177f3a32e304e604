"""The node core: the one sans-IO object where a command or a peer message meets the state it
changes.

It composes the store, the membership core (replication and anti-entropy come next), active
expiry and the node's events and metrics. Drivers hand it commands, peer payloads and the time,
and send what it returns; the Trio node (``gossipcache.drivers``) and the simulator (``sim``)
drive this very class.

- **Commands** (``gossipcache.node.commands``) arrive from protocol sessions through
  ``execute(command, wall_ms)``, which returns the result, or a ``Pending`` when the answer must
  wait (a quorum write waits for replicas). A pending command is finished later by the core
  (``complete``); the driver collects finished ones with ``take_completed`` and routes each to
  the session named in its ``reply_to``. A session that went away leaves its ``reply_to`` set;
  the core still finishes the work and the driver drops the reply.
- **Peer payloads** follow the sans-IO contract of ``gossipcache.sansio``: ``handle``,
  ``stream_failed``, ``tick``, ``next_deadline_ms``, ``take_outbox``. Membership events are
  consumed here, right after the membership core produced them.
- **Time** comes from one ``Clock`` (``gossipcache.clock``): ``now_ms`` arguments are its
  monotonic milliseconds, ``wall_ms`` its wall clock. Active expiry runs from ``tick`` every
  ``expire_interval_ms``.

Nothing here awaits: each call runs to completion, which is what keeps a node lock-free.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict

from ..antientropy import PAYLOAD_TAG as ANTIENTROPY_TAG
from ..antientropy import AntiEntropy, AntiEntropyConfig, Layout
from ..clock import Clock
from ..errors import InvariantViolation, ServiceUnavailable
from ..hlc import node_tag
from ..limits import EXPIRES_AT_MS_MAX
from ..membership import Keyring, MemberEvent, Membership, MemberState
from ..metrics.counters import CommandMetrics, ServerMetrics
from ..placement import PlacementMember
from ..replication import PAYLOAD_TAG, Replication, ReplicationConfig
from ..sansio import Channel, Outgoing
from ..store import Store
from . import commands as c
from .config import MEMBERSHIP_PROFILES, NodeConfig
from .coordinator import Coordinator
from .metadata import (
    CAPACITY_BYTES_MAX,
    STATE_FILLED,
    STATE_FILLING,
    STATE_LEAVING,
    STATE_REFILLING,
    STATE_SERVING,
    STATE_STARTING,
    NodeMetadata,
    decode_metadata,
)
from .placement_view import PlacementView

log = logging.getLogger("gossipcache.node")

#: The placement id of a node that runs without membership (it is alone).
LOCAL_NODE_ID = "local"
#: Membership events kept for the placement layer and for inspection; older ones are dropped.
MEMBERSHIP_EVENTS_KEPT = 4096
#: How often the core re-reads the member list for placement even without membership events:
#: a dead member leaves placement once its hint window has passed.
PLACEMENT_REFRESH_MS = 1000
#: While a node started with seeds joins, how often the core checks whether it has.
JOIN_CHECK_INTERVAL_MS = 20
#: Hints a node holds in all, at most: this, or 5 % of its memory limit if less.
HINTS_BYTES_MAX = 256 * 1024 * 1024
HINTS_MEMORY_SHARE = 0.05
#: Hints held for one target, at most.
HINTS_TARGET_BYTES_MAX = 64 * 1024 * 1024
#: The store's drift check of its bucket summaries (replicated nodes): a bug or a missed update
#: would otherwise make anti-entropy see a difference that is not there (or miss one) forever.
#: A step hashes ~2048 entries, ~1 ms at ~0.5 us an entry, once a second: a pause too short to
#: notice and ~0.1 % of a core. The price is slowness: a full pass over 1M keys takes ~500 s,
#: which is fine for catching a rare bug, not a substitute for correct incremental updates.
SUMMARY_VERIFY_INTERVAL_MS = 1000
SUMMARY_VERIFY_ENTRIES_MAX = 2048
#: The states in which a process that died held data (its address keeps its buckets for the
#: hint window): not ``starting``, ``filling`` or ``filled``, which never served, nor
#: ``leaving``, which handed its buckets over (or was handing them: the other owners keep
#: theirs). So a leave whose SWIM announcement is lost (the others time the node out as dead)
#: takes it out of the layout all the same (faults-membership seed 4).
DEAD_HOLDING_STATES = frozenset((STATE_SERVING, STATE_REFILLING))
#: How often the core checks whether its data state moves on (filled, serving, left).
DATA_STATE_CHECK_INTERVAL_MS = 50
#: While its data state is changing, a node re-announces its record this often: the others
#: must learn it (a leave waits for it) even when every gossiped copy was lost to a partition.
DATA_STATE_REANNOUNCE_MS = 1000
#: What the ``leave`` command answers once the leave has begun.
LEAVE_REPLY = "leaving"


class Pending:
    """A command whose result is not known yet. The core completes it with ``result`` or
    ``error``; ``reply_to`` (the session) and ``reply_tag`` (what the session needs to answer,
    e.g. a request id) are set by the submitter and opaque to the core."""

    __slots__ = (
        "command_type", "items", "started_ns", "reply_to", "reply_tag", "result", "error", "done",
        "version",
    )  # fmt: skip

    def __init__(self, command_type: type[c.Command], items: tuple, started_ns: int) -> None:
        self.command_type = command_type
        self.items = items  # the command as its handler got it: ``(name, *fields)``
        self.started_ns = started_ns
        self.reply_to: object = None
        self.reply_tag: object = None
        self.result: object = None
        self.error: Exception | None = None
        self.done = False
        #: A replicated write's version (``replication.pack_version``) once the coordinator
        #: stamped it, kept after completion for checkers; None for reads.
        self.version: int | None = None

    @property
    def command(self) -> c.Command:
        """The command waiting, as a ``Command`` object."""
        items = self.items
        if type(items) is self.command_type:
            return items
        return c.make(self.command_type, (self.command_type.name, *items[1:]))

    def __repr__(self) -> str:
        state = "done" if self.done else "waiting"
        return f"Pending({self.command!r}, {state})"


class NodeCore:
    """See the module docstring. ``address`` (``"host:port"``) turns membership on, with
    ``rng`` and ``keyring``; without it the node is standalone."""

    def __init__(
        self,
        config: NodeConfig,
        clock: Clock,
        *,
        address: str | None = None,
        rng: random.Random | None = None,
        keyring: Keyring | None = None,
        process_id: int = 0,
    ) -> None:
        self.config = config
        self.clock = clock
        #: The serving process's id (INFO); 0 in the simulator.
        self.process_id = process_id
        replicated = address is not None and config.membership_enabled
        replicated = replicated and config.replication_enabled
        self.store = Store(
            config.size_bytes_max,
            config.eviction,
            expired_tombstone_ms=config.expired_tombstone_ms if replicated else None,
            record_evictions=replicated,
            track_buckets=replicated,
        )
        #: This node's data state (node/metadata.py), advertised to the cluster: a node that
        #: joins a replicated cluster (it has seeds) is filled from its peers before its copies
        #: count (docs/design.md, "Scaling and refill").
        self.data_state = STATE_STARTING if replicated and config.seeds else STATE_SERVING
        self.metrics = ServerMetrics()
        self._handlers: dict[type[c.Command], tuple[Callable, CommandMetrics]] = {}
        for command_type, handler in (
            (c.Get, self._get_handler()),
            (c.Put, self._put_handler()),
            (c.GetMany, self._get_many),
            (c.PutMany, self._put_many),
            (c.Delete, self._delete),
            (c.Exists, self._exists),
            (c.Expire, self._expire),
            (c.Persist, self._persist),
            (c.Ttl, self._ttl),
            (c.Ping, self._ping),
            (c.Stats, self._stats),
            (c.Members, self._members),
            (c.Flush, self._flush),
            (c.Topology, self._topology),
            (c.Leave, self._leave),
        ):
            self.add_command(command_type, handler)
        #: Commands waiting for completion, and those completed but not yet taken.
        self._pending_count = 0
        self._completed: list[Pending] = []
        self._outbox: list[Outgoing] = []
        now_ms = clock.monotonic_ms()
        self._next_expire_ms = now_ms + config.expire_interval_ms
        self._next_summary_verify_ms = now_ms + SUMMARY_VERIFY_INTERVAL_MS
        #: Recent membership events, oldest first (bounded; the placement layer reads these).
        self.membership_events: deque[MemberEvent] = deque(maxlen=MEMBERSHIP_EVENTS_KEPT)
        #: Counters of the membership transport (the peer driver fills it), in /metrics.
        self.membership_transport_stats: dict[str, int] = {}
        self.membership: Membership | None = None
        if address is not None and config.membership_enabled:
            if rng is None or keyring is None:
                raise ValueError("membership needs an rng and a keyring")
            self._start_membership(address, rng, keyring, now_ms)
        # Where keys live: this node alone until membership says more. Placement ranks members
        # by address, which a restarted process keeps (its membership id is new): it takes
        # back the same buckets.
        own_id = address if self.membership is not None else LOCAL_NODE_ID
        own = self.metadata(address or f"{config.host}:{config.port}")
        self._own_member = PlacementMember(own_id, own.host_id, own.zone, float(own.capacity_bytes))
        self.placement = PlacementView(config.replicas, self._own_member)
        self._last_tick_ms = now_ms
        self._next_placement_refresh_ms = now_ms + PLACEMENT_REFRESH_MS
        self._next_join_check_ms = now_ms
        self.replication: Replication | None = None
        self.coordinator: Coordinator | None = None
        self.antientropy: AntiEntropy | None = None
        #: The placement of the members that will hold the data once buckets have moved, while
        #: it differs from ``placement`` (a node fills or leaves); else None.
        self.target_placement: PlacementView | None = None
        #: Placement ids whose copies are incomplete (filling), and whether a live member fills.
        self._incomplete: frozenset[str] = frozenset()
        self._fillers = False
        self._holders_known = False
        self._uncounted: frozenset[str] = frozenset()
        self._meta_changes_seen = 0
        self._next_reannounce_ms = 0
        self._layout_key: tuple | None = None
        self._layout_base: Layout | None = None
        self._fill_layout_key: tuple | None = None
        #: Buckets this node received completely while filling (kept across layout changes).
        self._synced: set[int] = set()
        self._leave_started = False
        self._leave_finished = False
        self._next_data_state_check_ms = now_ms
        if self.membership is not None and config.replication_enabled:
            self._start_replication(own_id, rng)
            if config.antientropy_interval_ms:
                self._start_antientropy(own_id, rng, now_ms)

    def _start_replication(self, own_id: str, rng: random.Random) -> None:
        config = self.config
        hints_bytes_max = min(HINTS_BYTES_MAX, int(config.size_bytes_max * HINTS_MEMORY_SHARE))
        self.replication = Replication(
            own_id,
            node_tag(self.membership.node_id),
            self.store,
            ReplicationConfig(
                replica_timeout_ms=config.replica_timeout_ms,
                max_clock_offset_ms=config.max_clock_offset_ms,
                tombstone_grace_ms=config.tombstone_grace_ms,
                hint_window_ms=config.hint_window_ms,
                hint_target_bytes_max=min(HINTS_TARGET_BYTES_MAX, hints_bytes_max),
                hint_total_bytes_max=hints_bytes_max,
                read_repair_chance=config.read_repair_chance,
            ),
            rng,
        )
        self.coordinator = Coordinator(self, self.replication, rng)
        for command_type, handler in self.coordinator.handlers().items():
            self.add_command(command_type, handler)

    def _start_antientropy(self, own_id: str, rng: random.Random, now_ms: int) -> None:
        config = self.config
        self.antientropy = AntiEntropy(
            own_id,
            self.store,
            AntiEntropyConfig(
                interval_ms=config.antientropy_interval_ms,
                confirm_ms=config.replica_timeout_ms,
                keys_per_round_max=config.antientropy_keys_per_round_max,
                bytes_per_round_max=config.antientropy_bytes_per_round_max,
                rounds_per_s_max=config.antientropy_rounds_per_s_max,
                max_clock_offset_ms=config.max_clock_offset_ms,
            ),
            rng,
            now_ms,
        )
        self.antientropy.on_synced = self._synced.add

    def add_command(self, command_type: type[c.Command], handler: Callable) -> None:
        """Serve ``command_type`` with ``handler(command, wall_ms)``; its metrics series is
        ``command_type.name``. ``command`` is a sequence ``(name, *fields)``: a ``Command`` or,
        from the sessions' hot paths, a plain sequence of that shape. The built-in commands are added at construction; tests add
        their own (a command that stays pending, say)."""
        self._handlers[command_type] = (handler, self.metrics.command(command_type.name))

    # -- commands ------------------------------------------------------------------------------

    def execute(self, command: c.Command, wall_ms: int) -> object:
        """Run ``command`` now; return its result or a ``Pending``. Raises ``InvalidRequest``
        (the caller's mistake), ``ServiceUnavailable`` (try later), or ``TypeError`` for an
        object that is not a command this node serves. Errors are counted per command."""
        entry = self._handlers.get(type(command))
        if entry is None:
            raise TypeError(f"not a command this node serves: {command!r:.80}")
        try:
            return entry[0](command, wall_ms)
        except Exception:
            entry[1].errors += 1
            raise

    def handler_of(self, command_type: type[c.Command]) -> tuple[Callable, CommandMetrics]:
        """``(handler, metrics)`` of ``command_type``: what ``execute`` looks up per command,
        for sessions that resolve it once per node and count errors themselves. ``metrics`` is
        the command's one series, whatever protocol carried it."""
        return self._handlers[command_type]

    def defer(self, command_type: type[c.Command], command: tuple) -> Pending:
        """A ``Pending`` for ``command`` (of ``command_type``, as its handler got it), counted
        against the node's bound: what a handler returns when its answer must wait. Raises
        ``ServiceUnavailable`` at the bound."""
        if self._pending_count >= self.config.pending_per_node_max:
            self.metrics.pending_refused += 1
            raise ServiceUnavailable(
                f"{self._pending_count} requests are waiting on this node; retry later"
            )
        self._pending_count += 1
        return Pending(command_type, command, self.clock.timer_ns())

    def complete(self, pending: Pending, result: object = None, error: Exception | None = None):
        """Finish ``pending`` with ``result`` (or ``error``); it is handed out by the next
        ``take_completed``. Completing twice is a bug."""
        if pending.done:
            raise InvariantViolation(f"{pending!r} completed twice")
        pending.done = True
        pending.result = result
        pending.error = error
        self._pending_count -= 1
        metrics = self._handlers[pending.command_type][1]
        metrics.latency_ns.record(self.clock.timer_ns() - pending.started_ns)
        if error is not None:
            metrics.errors += 1
        self._completed.append(pending)

    def take_completed(self) -> list[Pending]:
        """Return and clear the commands completed since the last call, in completion order."""
        completed = self._completed
        if completed:
            self._completed = []
        return completed

    @property
    def has_completed(self) -> bool:
        """Whether ``take_completed`` has something to hand out."""
        return bool(self._completed)

    @property
    def pending_count(self) -> int:
        """Commands executed whose completion has not happened yet."""
        return self._pending_count

    # -- the sans-IO contract (peer payloads and timers) ---------------------------------------

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """A peer payload: replication's (first byte ``PAYLOAD_TAG``, streams only) or
        membership's."""
        if self.membership is None:
            return
        if payload[:1] == PAYLOAD_TAG:
            if channel is Channel.STREAM and self.replication is not None:
                self.replication.handle(source, payload, now_ms, self.clock.wall_ms())
            return
        if payload[:1] == ANTIENTROPY_TAG:
            if channel is Channel.STREAM and self.antientropy is not None:
                self.antientropy.handle(source, payload, now_ms, self.clock.wall_ms())
            return
        self.membership.handle(source, channel, payload, now_ms)
        self._after_membership()

    def stream_failed(self, peer: str, now_ms: int) -> None:
        if self.membership is not None:
            self.membership.stream_failed(peer, now_ms)
            self._after_membership()
        if self.replication is not None:
            self.replication.peer_failed(peer, now_ms, self.clock.wall_ms())
        if self.antientropy is not None:
            self.antientropy.peer_failed(peer)

    def tick(self, now_ms: int) -> None:
        """Run what is due at ``now_ms``: membership timers, the active-expiry cycle and a
        bounded step of a placement build."""
        self._last_tick_ms = now_ms
        if self.placement.busy:
            self.placement.step()
        target = self.target_placement
        if target is not None and target.busy:
            target.step()
        membership = self.membership
        if membership is not None:
            deadline_ms = membership.next_deadline_ms()
            if deadline_ms is not None and deadline_ms <= now_ms:
                membership.tick(now_ms)
                self._after_membership()
        if self._next_expire_ms <= now_ms:
            self.store.expire_tick(self.clock.wall_ms())
            self.store.reclaim_tick()  # what a FLUSHALL left, a bounded share per tick
            self._next_expire_ms = now_ms + self.config.expire_interval_ms
        if self.store.summaries is not None and self._next_summary_verify_ms <= now_ms:
            self.store.verify_summaries_step(self.clock.wall_ms(), SUMMARY_VERIFY_ENTRIES_MAX)
            self._next_summary_verify_ms = now_ms + SUMMARY_VERIFY_INTERVAL_MS
        replication = self.replication
        if replication is not None:
            coordinator = self.coordinator
            if coordinator.joining and now_ms >= self._next_join_check_ms:
                # O(members) while joining only: at most every JOIN_CHECK_INTERVAL_MS.
                self._next_join_check_ms = now_ms + JOIN_CHECK_INTERVAL_MS
                coordinator.join_pending_reason(self.placement.table)
            if self._next_placement_refresh_ms <= now_ms:
                self._next_placement_refresh_ms = now_ms + PLACEMENT_REFRESH_MS
                self._update_placement()
            deadline_ms = replication.next_deadline_ms()
            if deadline_ms is not None and deadline_ms <= now_ms:
                replication.tick(now_ms, self.clock.wall_ms())
            antientropy = self.antientropy
            if antientropy is not None:
                self._refresh_layout()
                if antientropy.next_deadline_ms() <= now_ms:
                    antientropy.tick(now_ms, self.clock.wall_ms())
                if now_ms >= self._next_data_state_check_ms:
                    self._next_data_state_check_ms = now_ms + DATA_STATE_CHECK_INTERVAL_MS
                    self._advance_data_state(now_ms)

    def next_deadline_ms(self) -> int:
        if self.placement.busy or (
            self.target_placement is not None and self.target_placement.busy
        ):  # the next slice of the build, right after this turn
            return self._last_tick_ms + 1
        deadline_ms = self._next_expire_ms
        if self.store.summaries is not None:
            deadline_ms = min(deadline_ms, self._next_summary_verify_ms)
        if self.membership is not None:
            membership_ms = self.membership.next_deadline_ms()
            if membership_ms is not None and membership_ms < deadline_ms:
                deadline_ms = membership_ms
        if self.replication is not None:
            deadline_ms = min(deadline_ms, self._next_placement_refresh_ms)
            replication_ms = self.replication.next_deadline_ms()
            if replication_ms is not None and replication_ms < deadline_ms:
                deadline_ms = replication_ms
        if self.antientropy is not None:
            deadline_ms = min(
                deadline_ms, self.antientropy.next_deadline_ms(), self._next_data_state_check_ms
            )
        return deadline_ms

    def take_outbox(self) -> list[Outgoing]:
        outbox = self._outbox
        if self.membership is not None:
            outbox += self.membership.take_outbox()
        replication = self.replication
        if replication is not None:
            evicted = self.store.take_evicted()
            if evicted:
                self._tell_evictions(evicted)
            outbox += replication.take_outbox()
        if self.antientropy is not None:
            outbox += self.antientropy.take_outbox()
        self._outbox = []
        return outbox

    def _tell_evictions(self, evicted: list[tuple[bytes, int]]) -> None:
        """The key's primary decides its eviction: what this node evicted as a key's primary
        is evicted on the other owners too, by version (never a newer write). What it evicted
        as a mere replica stays on the others."""
        table = self.placement.table
        if table is None:
            return
        own = self.placement.own_id
        for key, version in evicted:
            owners = table.owners_of_key(key)
            if owners[0] == own:
                self.replication.evict_notice(key, version, owners)

    def leave(self, now_ms: int) -> None:
        """Announce a graceful leave to the cluster at once (a no-op without membership): what
        this node alone holds is lost. ``begin_leave`` hands the buckets over first."""
        if self.membership is not None:
            self.membership.leave(now_ms)
            self._after_membership()
        self._leave_started = self._leave_finished = True

    def begin_leave(self, now_ms: int) -> None:
        """Leave gracefully: advertise ``leaving`` (the others compute the layout without this
        node and send new writes to its buckets' next owners too), hand every bucket to its
        next owners by anti-entropy rounds, then announce the leave; ``leave_finished`` tells
        when. Idempotent. Without replication there is nothing to hand over."""
        if self._leave_started:
            return
        if (
            self.antientropy is None
            or self.coordinator.joining  # it never served: it holds nothing of the cluster's
            or self.membership.live_member_count() <= 1  # the last node: nobody to hand to
        ):
            self.leave(now_ms)
            return
        self._leave_started = True
        self._set_data_state(STATE_LEAVING)
        self._update_placement()

    @property
    def layout_settled(self) -> bool:
        """True when no bucket is moving as this node sees it: it serves, every member it
        knows serves, and its tables are built (tests and tools wait for this)."""
        return (
            self.data_state == STATE_SERVING
            and not self._incomplete
            and not self._uncounted
            and self.target_placement is None
            and not self.placement.busy
            and self.placement.table is not None
        )

    @property
    def leave_finished(self) -> bool:
        """True once the buckets are handed over and the leave announced: a server exits."""
        return self._leave_finished

    def _set_data_state(self, state: str) -> None:
        if state == self.data_state:
            return
        log.info("data state: %s -> %s", self.data_state, state)
        self.data_state = state
        membership = self.membership
        membership.set_meta(self.metadata(membership.address).encode(), self.clock.monotonic_ms())
        self._update_placement()

    def _refresh_layout(self) -> None:
        """Once both tables are built, give anti-entropy and the coordinator the layout they
        describe (O(buckets), once per change of either table or of the incomplete set)."""
        serving = self.placement
        target = self.target_placement or serving
        if serving.busy or target.busy or serving.table is None or target.table is None:
            return
        key = (serving.table.epoch, target.table.epoch, self._incomplete, self.data_state)
        if key == self._layout_key:
            return
        self._layout_key = key
        incomplete = self._incomplete
        own = serving.own_id
        complete = {member.node_id for member in serving.table.members} - incomplete
        base = self._layout_base
        if base is not None and base.epoch == key[:2]:
            layout = base.with_complete(complete)  # same tables: no pass over the buckets
        else:
            layout = self._layout_base = Layout(own, serving.table, target.table, complete)
        antientropy = self.antientropy
        antientropy.set_layout(layout)
        coordinator = self.coordinator
        coordinator.incomplete = incomplete
        coordinator.uncounted = self._uncounted
        coordinator.target_table = target.table if target is not serving else None
        serving.complete = own not in incomplete
        if self.data_state in (STATE_FILLING, STATE_REFILLING):
            antientropy.require_sync(layout.fill_from - self._synced)
            self._fill_layout_key = key
        if self.data_state == STATE_LEAVING:
            antientropy.require_handoff(layout.handoff)

    def _advance_data_state(self, now_ms: int) -> None:
        """filling -> filled once every bucket was received; filled -> serving once no
        member fills any more; leaving -> left once every bucket was handed over."""
        state = self.data_state
        if state == STATE_SERVING or self.coordinator.joining:
            return
        if now_ms >= self._next_reannounce_ms:
            self._next_reannounce_ms = now_ms + DATA_STATE_REANNOUNCE_MS
            self.membership.reannounce(now_ms)
        antientropy = self.antientropy
        settled = (
            self._layout_key is not None
            and not self.placement.busy
            and not (self.target_placement is not None and self.target_placement.busy)
        )
        if state in (STATE_STARTING, STATE_FILLING) and any(
            decode_metadata(meta, "").state in DEAD_HOLDING_STATES
            for meta in self.membership.predecessor_metas
        ):
            # This address held data before (a restart): keep its buckets while refilling. Also
            # from filling: the news of the predecessor may come after the start (the seed
            # that answered had restarted too, and only a later push-pull carries it).
            self._set_data_state(STATE_REFILLING)
        elif state == STATE_STARTING:
            if self._holders_known:
                self._set_data_state(STATE_FILLING)  # a newcomer: receive buckets first
            else:
                # A cluster starting: no member holds data. Serving at once keeps the layout
                # still (starting nodes are placed already) while the others decide the same.
                self._set_data_state(STATE_SERVING)
        elif state == STATE_FILLING:
            if settled and self._fill_layout_key == self._layout_key and not antientropy.unsynced:
                self._set_data_state(STATE_FILLED)
        elif state == STATE_REFILLING:
            if settled and self._fill_layout_key == self._layout_key and not antientropy.unsynced:
                self._set_data_state(STATE_SERVING)
        elif state == STATE_FILLED:
            if settled and not self._fillers:
                self._set_data_state(STATE_SERVING)
        elif state == STATE_LEAVING and not self._leave_finished and settled:
            target = self.target_placement
            own = self.placement.own_id
            gone = target is None or all(m.node_id != own for m in target.table.members)
            if gone and self._layout_key[3] == STATE_LEAVING and not antientropy.handoff:
                log.info("buckets handed over: leaving the cluster")
                self.leave(now_ms)

    # -- checks --------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if any rule of the store, membership or core is broken.
        O(keys): for tests and the simulator, which call it after every step."""
        self.store.check_invariants()
        if self.membership is not None:
            self.membership.check_invariants()
        if not 0 <= self._pending_count <= self.config.pending_per_node_max:
            raise InvariantViolation(f"pending count {self._pending_count} out of bounds")
        if any(not pending.done for pending in self._completed):
            raise InvariantViolation("an unfinished command sits among the completed ones")

    # -- membership ----------------------------------------------------------------------------

    def _start_membership(
        self, address: str, rng: random.Random, keyring: Keyring, now_ms: int
    ) -> None:
        """The node id is the address plus a random start nonce, and the incarnation starts at
        the wall clock: a restarted process at the same address is a new id with a higher
        incarnation, which the cluster accepts at once and which declares the previous process
        dead."""
        config = self.config
        node_id = f"{address}#{rng.getrandbits(32):08x}"
        incarnation = self.clock.wall_ms()
        self.membership = Membership(
            address,
            node_id,
            MEMBERSHIP_PROFILES[config.membership_profile](),
            rng,
            keyring,
            now_ms,
            seeds=config.seeds,
            incarnation=incarnation,
            meta=self.metadata(address).encode(),
        )
        log.info("membership: %s, incarnation %d, seeds %s", node_id, incarnation, config.seeds)

    def metadata(self, address: str) -> NodeMetadata:
        """What this node advertises for placement: its host (the configured one, else the
        host part of its address), zone and capacity (its memory limit)."""
        config = self.config
        host_id = config.host_id or address.rpartition(":")[0]
        return NodeMetadata(
            host_id,
            config.zone,
            min(config.size_bytes_max, CAPACITY_BYTES_MAX),
            getattr(self, "data_state", STATE_SERVING),
        )

    def _after_membership(self) -> None:
        """Consume the membership core's events: logged and kept (bounded) for now; placement
        will rebalance here."""
        events = self.membership.take_events()
        for event in events:
            log.info(
                "member %s: %s at %s (incarnation %d)",
                event.kind,
                event.node_id,
                event.address,
                event.incarnation,
            )
        self.membership_events.extend(events)
        meta_changes = self.membership.meta_changes
        if events or meta_changes != self._meta_changes_seen:
            # A member's data state is in its meta: placement depends on it too.
            self._meta_changes_seen = meta_changes
            self._update_placement()

    def _update_placement(self) -> None:
        members, target, down, incomplete = self._placement_members()
        self.placement.update(members)
        if not target:  # None: no change under way; empty: the last node is leaving
            self.target_placement = None
        else:
            if self.target_placement is None:
                view = self.placement
                self.target_placement = PlacementView(view.replicas, self._own_member)
            self.target_placement.update(target)
        self._incomplete = frozenset(incomplete)
        replication = self.replication
        if replication is not None:
            replication.down = down
            ranked = {member.node_id for member in members}
            ranked.update(member.node_id for member in target or ())
            for hint_target in replication.hints.targets():
                if hint_target not in ranked:  # gone for good: its buckets moved on
                    replication.hints.drop_target(hint_target)
        if self.antientropy is not None:
            self.antientropy.down = down
            self._refresh_layout()  # at once when the tables need no rebuild (states moved)

    def _placement_members(
        self,
    ) -> tuple[list[PlacementMember], list[PlacementMember] | None, set[str], set[str]]:
        """The members placement uses, by address, as their metadata describes them.

        Returns ``(serving, target, down, incomplete)``:

        - ``serving``: the members whose copies hold the data, which reads and writes use: the
          live ones (alive or suspect: a suspect may be fine) and the dead ones still within
          the hint window (they keep their buckets meanwhile: writes to them become hints, a
          node that returns gets them back, a flapping node moves no data), whose data state
          is ``serving`` or ``leaving`` (``filled`` too once no member fills). An address with
          such a record stays, even while a process restarted there (empty) fills.
        - ``target``: the members that will hold the data once buckets have moved: the live
          ones not leaving and the dead ones within the window that were not; None when equal
          to ``serving`` (no change under way).
        - ``down``: the dead ones' addresses; ``incomplete``: the live ones still filling.

        A member that left gracefully, or is dead longer, is out. When no member at all holds
        data (a cluster starting), ``serving`` is ``target``: nobody has anything to fill."""
        now_ms = self.clock.monotonic_ms()
        window_ms = self.config.hint_window_ms
        live_records: dict[str, tuple[PlacementMember, str]] = {}
        dead_records: dict[str, list[tuple[PlacementMember, str]]] = {}
        for member in self.membership.members():
            state = member.state
            live = state in (MemberState.ALIVE, MemberState.SUSPECT)
            if not live and not (
                state == MemberState.DEAD and now_ms - member.since_ms < window_ms
            ):
                continue
            metadata = decode_metadata(member.meta, member.node_id)
            placed = PlacementMember(
                member.address, metadata.host_id, metadata.zone, float(metadata.capacity_bytes)
            )
            if live:
                live_records.setdefault(member.address, (placed, metadata.state))
            else:
                dead_records.setdefault(member.address, []).append((placed, metadata.state))
        fillers = any(state == STATE_FILLING for _, state in live_records.values())
        self._fillers = fillers
        own_address = self.placement.own_id
        # A member past ``starting`` means the cluster holds (or held) data: a node that
        # starts now is a newcomer and fills.
        self._holders_known = any(
            state != STATE_STARTING and address != own_address
            for address, (_, state) in live_records.items()
        ) or any(
            state != STATE_STARTING and address != own_address
            for address, records in dead_records.items()
            for _, state in records
        )
        # Whose copies hold the data; ``filled`` ones join once nobody fills any more, all at
        # once (one layout change, and no node owns buckets it did not receive).
        complete_states = {STATE_SERVING, STATE_LEAVING} if fillers else {
            STATE_SERVING, STATE_LEAVING, STATE_FILLED
        }  # fmt: skip
        holding = complete_states | {STATE_REFILLING, STATE_STARTING}
        serving: list[PlacementMember] = []
        target: list[PlacementMember] = []
        down: set[str] = set()
        incomplete: set[str] = set()
        for address in live_records.keys() | dead_records.keys():
            live = live_records.get(address)
            dead = dead_records.get(address, ())
            states = [state for _, state in dead]
            placed = live[0] if live is not None else dead[0][0]
            if live is None:
                down.add(address)
            else:
                states.append(live[1])
                if live[1] not in complete_states:
                    incomplete.add(address)
            # A dead process held data only if it served (or refilled, or was handing over):
            # one that died starting or filling held nothing, whatever others last heard.
            dead_holding = any(state in DEAD_HOLDING_STATES for _, state in dead)
            if dead_holding or (live is not None and live[1] in holding):
                serving.append(placed)
            if (live is not None and live[1] != STATE_LEAVING) or (
                live is None and any(state in (STATE_SERVING, STATE_REFILLING) for state in states)
            ):
                target.append(placed)
        if not serving:
            serving = target
        self._uncounted = frozenset(
            address for address, (_, state) in live_records.items() if state == STATE_STARTING
        )
        same = {m.node_id for m in serving} == {m.node_id for m in target}
        return serving, None if same else target, down, incomplete

    # -- command handlers: (command, wall_ms) -> result ------------------------------------------

    # Handlers take a command as a sequence ``(name, *fields)`` (a Command, which is a tuple, or
    # on a session's hot path the parsed argument list itself: building an object per request
    # costs more than serving a GET), unpack it in one C-level operation and ignore the name.
    # A Put may stop after the value or the TTL (the short forms of a plain write).

    # GET and plain PUT are the hot path: their handlers are closures over the store's bound
    # methods, which saves the attribute lookups and the bound-method call of the others.

    def _get_handler(self) -> Callable:
        store_get = self.store.get

        def get(command: c.Get, wall_ms: int) -> bytes | None:
            return store_get(command[1], wall_ms)

        return get

    def _put_handler(self) -> Callable:
        store_put = self.store.put
        put_with_options = self._put
        check_expiry_fits = c.check_expiry_fits
        expires_at_ms_max = EXPIRES_AT_MS_MAX

        def put(command: c.Put, wall_ms: int) -> object:
            if len(command) == 3:  # the short form (name, key, value): SET key value
                _, key, value = command
                store_put(key, value, wall_ms)
                return True
            if len(command) == 4:  # the short form (name, key, value, ttl_ms): a native put
                _, key, value, ttl_ms = command
                if ttl_ms is not None and ttl_ms > expires_at_ms_max - wall_ms:
                    check_expiry_fits(ttl_ms, wall_ms)  # raises
                store_put(key, value, wall_ms, ttl_ms)
                return True
            return put_with_options(command, wall_ms)

        return put

    def _put(self, command: c.Put, wall_ms: int) -> object:
        _, key, value, ttl_ms, expires_at_ms, keep_ttl, condition, return_old = command[:8]
        store = self.store
        if ttl_ms is not None and ttl_ms > EXPIRES_AT_MS_MAX - wall_ms:
            c.check_expiry_fits(ttl_ms, wall_ms)  # raises
        if condition is None and not return_old and expires_at_ms is None:
            # The hot path: SET key value [EX | PX | KEEPTTL].
            if keep_ttl:
                store.put(key, value, wall_ms, ttl_ms, keep_ttl=True)
            else:
                store.put(key, value, wall_ms, ttl_ms)
            return True
        old = store.get(key, wall_ms) if return_old else None
        if condition is not None:
            exists = old is not None if return_old else store.contains(key, wall_ms)
            if (condition == c.IF_ABSENT) == exists:
                return old if return_old else False
        if expires_at_ms is not None:
            ttl_ms = expires_at_ms - wall_ms
            if ttl_ms <= 0:  # an instant already past: Redis deletes the key
                store.delete(key, wall_ms)
                return old if return_old else True
        store.put(key, value, wall_ms, ttl_ms, keep_ttl=keep_ttl)
        return old if return_old else True

    def _get_many(self, command: c.GetMany, wall_ms: int) -> list:
        get = self.store.get
        return [get(key, wall_ms) for key in command[1]]

    def _put_many(self, command: c.PutMany, wall_ms: int) -> bool:
        store = self.store
        for key, value in command[1]:
            store.check_sizes(key, value)  # all or nothing, as far as sizes go
        for key, value in command[1]:
            store.put(key, value, wall_ms)
        return True

    def _delete(self, command: c.Delete, wall_ms: int) -> int:
        keys = command[1]
        delete = self.store.delete
        return sum(delete(key, wall_ms) for key in keys)

    def _exists(self, command: c.Exists, wall_ms: int) -> int:
        keys = command[1]
        contains = self.store.contains
        return sum(contains(key, wall_ms) for key in keys)

    def _expire(self, command: c.Expire, wall_ms: int) -> bool:
        _, key, ttl_ms, expires_at_ms, conditions = command[:5]
        store = self.store
        if ttl_ms is None:
            new_ms = expires_at_ms  # the command checked it is at most EXPIRES_AT_MS_MAX
            ttl_ms = expires_at_ms - wall_ms
        else:
            c.check_expiry_fits(ttl_ms, wall_ms)  # an error whether or not the key exists
            new_ms = wall_ms + ttl_ms
        if not store.contains(key, wall_ms):
            return False
        if conditions and not c.expire_conditions_hold(
            conditions, store.expires_at_ms(key, wall_ms), new_ms
        ):
            return False
        return store.expire(key, ttl_ms if ttl_ms > 0 else 0, wall_ms)

    def _persist(self, command: c.Persist, wall_ms: int) -> bool:
        key = command[1]
        store = self.store
        if store.expires_at_ms(key, wall_ms) is None:
            return False
        return store.expire(key, None, wall_ms)

    def _ttl(self, command: c.Ttl, wall_ms: int) -> int:
        return self.store.ttl_ms(command[1], wall_ms)

    def _ping(self, command: c.Ping, wall_ms: int) -> object:
        _, message = command
        return True if message is None else message

    def _stats(self, command: c.Stats, wall_ms: int) -> dict:
        return self.stats_dict()

    def _members(self, command: c.Members, wall_ms: int) -> list[dict]:
        core = self.membership
        if core is None:
            raise ServiceUnavailable("membership is not running")
        monotonic_now_ms = self.clock.monotonic_ms()
        members = []
        for member in core.members():
            metadata = decode_metadata(member.meta, member.node_id)
            members.append(
                {
                    "id": member.node_id,
                    "address": member.address,
                    "state": str(member.state),
                    "incarnation": member.incarnation,
                    "since_ms": wall_ms - (monotonic_now_ms - member.since_ms),
                    "host_id": metadata.host_id,
                    "zone": metadata.zone,
                    "capacity_bytes": metadata.capacity_bytes,
                    "data_state": metadata.state,
                }
            )
        return members

    def _topology(self, command: c.Topology, wall_ms: int) -> dict:
        # The members of the table the epoch names (not the membership of this instant, which
        # the table may lag by a build), so a client that builds its own table from them gets
        # the same owners and the same epoch. Before the first build: the members wanted.
        view = self.placement
        if self.membership is not None:
            # Placement ids are addresses; a dead member within its hint window is listed too
            # (it keeps its buckets meanwhile: a client fails over from it).
            placed = view.table.members if view.table is not None else self._placement_members()[0]
            addresses = {member.node_id: member.node_id for member in placed}
        else:  # standalone: the one member is this node, at its configured address
            address = f"{self.config.host}:{self.config.port}"
            own = self.metadata(address)
            placed = (
                PlacementMember(view.own_id, own.host_id, own.zone, float(own.capacity_bytes)),
            )
            addresses = {view.own_id: address}
        return {
            "epoch": view.epoch,
            "replicas": self.config.replicas,
            "self": view.own_id,
            "members": [
                {
                    "id": member.node_id,
                    "address": addresses[member.node_id],
                    "host_id": member.host_id,
                    "zone": member.zone,
                    "capacity_bytes": int(member.weight),  # the capacity, exact below 2**53
                }
                for member in placed
            ],
        }

    def _flush(self, command: c.Flush, wall_ms: int) -> bool:
        self.store.flush()
        return True

    def _leave(self, command: c.Leave, wall_ms: int) -> str:
        if self.membership is None:
            raise ServiceUnavailable(
                "membership is not running: a node alone has nobody to hand its data to "
                "(stop its process instead)"
            )
        self.begin_leave(self.clock.monotonic_ms())
        return LEAVE_REPLY

    # -- shared --------------------------------------------------------------------------------

    def stats_dict(self) -> dict:
        """Store and server counters as one flat dict (what ``Stats`` returns). O(1)."""
        stats = self.store.stats()
        result = asdict(stats)
        result["hit_ratio"] = stats.hit_ratio
        server = self.metrics
        result.update(
            connections_open=server.connections_open,
            connections_accepted=server.connections_accepted,
            protocol_errors=server.protocol_errors,
            internal_errors=server.internal_errors,
            pending=self._pending_count,
            placement_epoch=self.placement.epoch,
            placement_members=len(self.placement.table.members) if self.placement.table else 0,
            placement_rebuilding=self.placement.busy,
            buckets_owned=self.placement.buckets_owned,
            buckets_primary=self.placement.buckets_primary,
        )
        replication = self.replication
        if replication is not None:
            result.update(
                {f"replication_{name}": value for name, value in asdict(replication.stats).items()}
            )
            hints = replication.hints
            result.update(
                replication_hints_held=hints.held,
                replication_hints_bytes=hints.bytes_held,
                replication_hints_added=hints.added,
                replication_hints_delivered=hints.delivered,
                replication_hints_dropped_full=hints.dropped_full,
                replication_hints_dropped_expired=hints.dropped_expired,
                replication_stale_versions_refused=replication.clock.refused_total,
                replication_in_flight=replication.ops_in_flight,
                replication_evictions_unreported=self.store.evictions_unreported,
            )
            result.update(self.coordinator.stats())
        antientropy = self.antientropy
        if antientropy is not None:
            result.update(
                {f"antientropy_{name}": value for name, value in asdict(antientropy.stats).items()}
            )
            result.update(
                antientropy_unsynced_buckets=antientropy.unsynced_count,
                antientropy_handoff_buckets=sum(map(len, antientropy.handoff.values())),
                data_state=self.data_state,
            )
        return result
