"""The SWIM + Lifeguard membership core: a sans-IO state machine (see gossipcache/sansio.py).

One protocol period (``probe_interval_ms`` scaled by the local health multiplier):

1. ping the next member of a shuffled round-robin order (SWIM's randomized round robin bounds
   the time until any given member is probed to two periods in the worst case);
2. no ack within ``probe_timeout_ms``: ask ``indirect_checks`` random members to ping it for us
   (ping-req); they answer with the target's ack, or with a nack when it stays silent (Lifeguard);
3. no ack within ``indirect_probe_timeout_ms`` more: *suspect* the target and gossip it right
   away (not at the end of the period: that would add the rest of the period to every
   detection); the next probe still starts at the next period boundary. A suspicion ends with a
   refutation (the member gossips ``alive`` with a higher incarnation) or, after the Lifeguard
   suspicion timeout, with the member declared *dead*.

Updates (alive / suspect / dead / leave) ride on every datagram the node sends and on
``gossip_nodes`` extra datagrams per ``gossip_interval_ms``. A full state push-pull over a stream
runs on join (through the seeds) and periodically with a random live member.

Rules that keep the state safe against stale and replayed messages (all updates are idempotent
and ordered by incarnation):

- ``alive`` overrides a record only with a strictly higher incarnation;
- ``suspect`` / ``dead`` / ``leave`` apply to a record with an incarnation no higher than theirs;
- every claim about a known member is read at no more than ``INCARNATION_STEP_MAX`` above the
  incarnation this node holds for it (the local node included): only a member raises its own
  incarnation, one refutation at a time, so a claim far above what we know is a forgery (or a
  buggy node), and taking it at face value would let one message push the member where it can
  no longer out-vote the claim;
- a claim that *this* node is suspect or dead is never applied: the node refutes it by gossiping
  ``alive`` one above the (capped) accusation, and answers the sender directly;
- a member's own word about itself (an ``alive`` in a payload from its own address) replaces a
  record that holds a higher incarnation: such a record can only come from forged claims, and
  the member could never out-vote it otherwise;
- one address holds one live member: an ``alive`` for a new node id at the address of a live
  record wins with a higher incarnation (a restarted process) or when it comes from that address
  itself, and the old record dies.

Members learned second-hand (gossip, push-pull rows about others) are *unconfirmed* until a
payload arrives from their address: they are probed like everyone, but never chosen as gossip
targets, ping-req helpers or push-pull partners, so forged rows cannot turn this node into a
traffic source aimed at addresses of someone's choosing; when the table is full they (then
tombstones) are evicted, oldest first, to make room. New members per payload and per second
are bounded (``new_members_per_packet_max``, ``new_members_burst``, ``new_members_per_s``),
except in the reply of a seed we are joining through.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from ..errors import InvariantViolation
from ..sansio import Channel, Outgoing
from .awareness import Awareness
from .broadcast import BroadcastQueue, retransmit_limit
from .codec import (
    BODY_ARRAY_HEADER_BYTES_MAX,
    HEADER_SIZE_BYTES,
    INCARNATION_LIMIT,
    MEMBERS_MAX,
    SEQ_LIMIT,
    STATE_ALIVE,
    STATE_DEAD,
    STATE_LEFT,
    STATE_SUSPECT,
    Ack,
    Alive,
    CodecError,
    Dead,
    Keyring,
    Leave,
    Nack,
    NodeState,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    decode_packet,
    encode_message,
    encode_packet,
)
from .config import MembershipConfig
from .suspicion import (
    Suspicion,
    expected_confirmations,
    suspicion_timeout_min_ms,
)

#: At most this many seeds are remembered (join contacts all of them at once).
SEEDS_MAX = 16
#: At most this many ping-reqs this node relays at once for other members.
FORWARDS_MAX = 256
#: Events not yet taken beyond this are dropped oldest first (and counted).
EVENTS_MAX = 65_536
#: A helper sends its nack after this share of the indirect probe timeout without an ack from
#: the target, so the nack reaches the prober (one more one-way trip) before the prober's
#: indirect deadline: the remaining 20 % (50 ms on the LAN profile) is the margin for that trip.
NACK_TIMEOUT_FRACTION = 0.8
#: Random picks are rejection-sampled from the member table; this many tries per pick at most.
SAMPLE_TRIES_PER_PICK = 8
#: A claim about a known member (alive, suspect, dead, leave, or a push-pull row) is read at
#: most this far above the incarnation this node holds for it, and the local node refutes a
#: claim about itself at most this far above its own incarnation plus one. Honest claims are
#: never higher than the member's own incarnation, which grows by one per refutation, so a
#: lagging record only lags (any later ``alive`` of the member still beats it). One message
#: thus moves any incarnation by at most 2, which is why 2^63 cannot be exhausted (see
#: docs/design.md, "Incarnations under forged claims").
INCARNATION_STEP_MAX = 1
#: A node starts at most here, leaving 2^62 refutations of headroom below INCARNATION_LIMIT
#: (wall-clock ms at start, the node's choice, is ~2^41).
INCARNATION_START_MAX = 2**62


#: Members a changed meta is pushed to at once (``set_meta``), besides gossip.
META_PUSH_FANOUT = 3


class MemberState(enum.StrEnum):
    """What this node believes about a member."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)
_STATE_TO_WIRE = {
    MemberState.ALIVE: STATE_ALIVE,
    MemberState.SUSPECT: STATE_SUSPECT,
    MemberState.DEAD: STATE_DEAD,
    MemberState.LEFT: STATE_LEFT,
}


class EventKind(enum.StrEnum):
    """Kinds of :class:`MemberEvent`."""

    JOINED = "joined"  # a member this node did not count as live before (new, or back from dead)
    SUSPECT = "suspect"  # a live member stopped answering; it may still refute
    ALIVE = "alive"  # a suspected member refuted the suspicion
    DEAD = "dead"  # the suspicion timed out (or a restarted process replaced it)
    LEFT = "left"  # the member announced a graceful leave
    EVICTED = "evicted"  # an unconfirmed live member dropped to make room in a full table


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """One change of this node's view, in the order it happened."""

    kind: EventKind
    node_id: str
    address: str
    incarnation: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A snapshot of one member record (``since_ms``: when it entered ``state``)."""

    node_id: str
    address: str
    state: MemberState
    incarnation: int
    since_ms: int
    meta: bytes


class _Member:
    __slots__ = ("node_id", "address", "incarnation", "state", "since_ms", "meta", "confirmed")

    def __init__(
        self, node_id: str, address: str, incarnation: int, now_ms: int, meta: bytes
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.incarnation = incarnation
        self.state = MemberState.ALIVE
        self.since_ms = now_ms
        self.meta = meta
        # True once a payload came from its address (it exists there and has the key).
        self.confirmed = False


class _Payload:
    """Where one payload came from, and how many new members it added so far."""

    __slots__ = ("source", "trusted", "added", "sender_added")

    def __init__(self, source: str, trusted: bool = False) -> None:
        self.source = source
        self.sender_added = False  # one address, one member: the sender is added once
        # The reply of a seed we are joining through: its rows may fill an empty table.
        self.trusted = trusted
        self.added = 0

    def from_itself(self, address: str) -> bool:
        """Is this payload the word of the member at ``address`` about itself?"""
        return self.source == address


class _Probe:
    """The probe of the current period: ping-reqs at ``direct_deadline_ms``, and the target is
    suspected at ``indirect_deadline_ms`` unless an ack (direct or forwarded) came first."""

    __slots__ = (
        "seq",
        "target_id",
        "direct_deadline_ms",
        "indirect_deadline_ms",
        "indirect_sent",
        "expected_nacks",
        "nacks",
    )

    def __init__(
        self, seq: int, target_id: str, direct_deadline_ms: int, indirect_deadline_ms: int
    ) -> None:
        self.seq = seq
        self.target_id = target_id
        self.direct_deadline_ms = direct_deadline_ms
        self.indirect_deadline_ms = indirect_deadline_ms
        self.indirect_sent = False
        self.expected_nacks = 0
        self.nacks = 0


class _Forward:
    """A ping-req this node relays: the target's ack goes back to ``requester``."""

    __slots__ = ("requester", "requester_seq", "nack_at_ms", "expires_ms")

    def __init__(
        self, requester: str, requester_seq: int, nack_at_ms: int | None, expires_ms: int
    ) -> None:
        self.requester = requester
        self.requester_seq = requester_seq
        self.nack_at_ms = nack_at_ms
        self.expires_ms = expires_ms


def push_pull_chance(member_count: int, scale_threshold: int) -> float:
    """Probability that a node runs its periodic push-pull in one ``push_pull_interval_ms``:
    1 up to ``scale_threshold`` live members, then ``scale_threshold / member_count``.

    The mean period is ``push_pull_interval_ms * max(1, N / scale_threshold)``: a sync carries N
    rows, so a node syncs 1/N as often and its push-pull bytes per second stay flat. A coin flip
    per base period rather than a longer timer: it follows N at once, and nodes that started
    together do not all sync in the same window of every long period (a timer armed at start
    keeps them in step).
    """
    return min(1.0, scale_threshold / max(1, member_count))


class Membership:
    """SWIM + Lifeguard membership of one node. Drive it as a :class:`~gossipcache.sansio.SansIOCore`.

    ``incarnation`` should grow across restarts of the same node (e.g. wall-clock ms at start), so
    a restarted node's ``alive`` overrides the record of its previous life everywhere.
    """

    def __init__(
        self,
        address: str,
        node_id: str,
        config: MembershipConfig,
        rng: random.Random,
        keyring: Keyring,
        now_ms: int,
        seeds: list[str] | tuple[str, ...] = (),
        incarnation: int = 0,
        meta: bytes = b"",
    ) -> None:
        try:  # our own identity must pass the checks the wire applies to everyone else's
            Alive.from_wire(Alive(node_id, address, incarnation, meta).to_wire())
        except CodecError as exc:
            raise ValueError(f"invalid identity: {exc}") from None
        if incarnation > INCARNATION_START_MAX:
            raise ValueError(f"incarnation {incarnation} above {INCARNATION_START_MAX}")
        self.address = address
        self.node_id = node_id
        self.config = config
        self._rng = rng
        self._keyring = keyring
        self._self = _Member(node_id, address, incarnation, now_ms, meta)
        self._self.confirmed = True
        self._members: dict[str, _Member] = {node_id: self._self}
        # Oldest first (dicts keep insertion order): the eviction candidates of a full table.
        self._unconfirmed: dict[str, None] = {}
        self._tombstones: dict[str, None] = {}  # dead and left records
        self._new_member_tokens = float(config.new_members_burst)
        self._new_member_tokens_ms = now_ms
        self._ids: list[str] = []  # every other member id, for O(1) random picks
        self._id_index: dict[str, int] = {}
        self._live_address: dict[str, str] = {address: node_id}  # address -> live member id
        self._live_count = 1
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._seq = rng.randrange(SEQ_LIMIT)
        self._forwards: dict[int, _Forward] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._broadcasts = BroadcastQueue(config.broadcast_queue_max)
        self._push_pulls: dict[str, int] = {}  # peer address -> give-up deadline
        self._seeds = [s for s in dict.fromkeys(seeds) if s != address][:SEEDS_MAX]
        self._joining = bool(self._seeds)
        self._join_backoff_ms = config.join_retry_initial_ms
        self._next_join_ms = now_ms
        self._next_probe_ms = now_ms + rng.randrange(config.probe_interval_ms)
        self._next_gossip_ms = now_ms + config.gossip_interval_ms
        self._next_push_pull_ms = now_ms + rng.randrange(config.push_pull_interval_ms)
        self._next_reclaim_ms = now_ms + config.dead_node_reclaim_ms
        self._view_changed_ms = now_ms  # last time a member was added or changed state
        self._left = False
        self._events: list[MemberEvent] = []
        self._outbox: list[Outgoing] = []
        self._stats: dict[str, int] = {}
        #: How many times a member's meta changed (the node core re-reads members on a change).
        self.meta_changes = 0
        #: (incarnation, meta) of the newest earlier process at our address we heard of.
        self._predecessor: tuple[int, bytes] | None = None
        self._queue_update(node_id, Alive(node_id, address, incarnation, meta))

    # ----------------------------------------------------------------------------------------
    # Public API.

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def predecessor_meta(self) -> bytes | None:
        """The meta of the newest earlier process at this node's address that a member told
        us of (alive or dead), or None: a restarted node learns what it was (the node core
        uses it to know that its address held data before)."""
        return None if self._predecessor is None else self._predecessor[1]

    def _note_predecessor(self, node_id: str, address: str, incarnation: int, meta: bytes):
        if (
            address == self.address
            and node_id != self.node_id
            and (self._predecessor is None or incarnation > self._predecessor[0])
        ):
            self._predecessor = (incarnation, meta)

    @property
    def local_health(self) -> int:
        """Lifeguard's local health score (0 = healthy)."""
        return self._awareness.score

    @property
    def has_left(self) -> bool:
        return self._left

    @property
    def is_joining(self) -> bool:
        """True until one seed answered the join (always False without seeds)."""
        return self._joining

    def members(self) -> list[MemberInfo]:
        """Every record this node holds (itself, live members, tombstones), sorted by id."""
        return [
            MemberInfo(m.node_id, m.address, m.state, m.incarnation, m.since_ms, m.meta)
            for _, m in sorted(self._members.items())
        ]

    def live_member_count(self) -> int:
        """Alive + suspect members, this node included."""
        return self._live_count

    def take_events(self) -> list[MemberEvent]:
        """Return and clear the view changes since the last call."""
        events, self._events = self._events, []
        return events

    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (``drop_<reason>`` for every dropped input)."""
        snapshot = dict(self._stats)
        snapshot["local_health"] = self._awareness.score
        snapshot["members_live"] = self._live_count
        snapshot["members_known"] = len(self._members)
        snapshot["members_unconfirmed"] = len(self._unconfirmed)
        snapshot["broadcast_queue"] = len(self._broadcasts)
        snapshot["broadcast_dropped"] = self._broadcasts.dropped
        return snapshot

    def set_meta(self, meta: bytes, now_ms: int) -> None:
        """Advertise new ``meta`` (a node's state changed): our incarnation goes up by one and
        an alive update carries it, which every member applies over the older record. A meta
        change is rare and others act on it (placement reads it), so it also goes at once by
        push-pull to ``META_PUSH_FANOUT`` members: gossip alone took up to ~7 s to reach
        every member of a 5-node cluster in the simulator."""
        if self._left or meta == self._self.meta:
            return
        Alive.from_wire(Alive(self.node_id, self.address, 0, meta).to_wire())  # checks its size
        me = self._self
        me.meta = meta
        me.incarnation = min(me.incarnation + 1, INCARNATION_LIMIT - 1)
        self._count("meta_updates")
        self.reannounce(now_ms)

    def reannounce(self, now_ms: int) -> None:
        """Gossip our record again and push it by push-pull to ``META_PUSH_FANOUT`` members:
        for a state others must learn even if every earlier copy was lost (the node core calls
        it while its data state is changing; gossip's retransmissions may all have gone while
        a partition cut the node off)."""
        if self._left:
            return
        me = self._self
        self._queue_update(me.node_id, Alive(me.node_id, me.address, me.incarnation, me.meta))
        for peer in self._sample(META_PUSH_FANOUT, None, alive_only=True, confirmed_only=True):
            self._start_push_pull(peer.address, now_ms, join=False)

    def leave(self, now_ms: int) -> None:
        """Announce a graceful leave to ``retransmit limit`` live members, then stop: from here on
        the core ignores input and arms no timer."""
        if self._left:
            return
        me = self._self
        encoded = encode_message(Leave(me.node_id, me.incarnation))
        fanout = retransmit_limit(self.config.retransmit_mult, self._live_count)
        for peer in self._sample(fanout, now_ms):
            self._send(peer.address, [encoded])
        me.state = MemberState.LEFT
        me.since_ms = now_ms
        self._left = True
        self._probe = None
        self._count("leaves")

    def check_invariants(self) -> None:
        """Recompute the bookkeeping from the member table; raise ``InvariantViolation`` if any
        of it disagrees. O(members): for tests and the simulator, not the hot path.

        Checks: the local member is in the table under its own id and address, alive (left
        after :meth:`leave`); every record is filed under its id with a valid state and an
        incarnation below ``INCARNATION_LIMIT``; the table is within ``MEMBERS_MAX``; the random
        pick list (``_ids`` / ``_id_index``) holds exactly the other members; the live count and
        the address -> live member map match the live records (the local member counts as live
        even after it left: a left core is frozen); exactly the suspects have a suspicion timer,
        each consistent with its formula; every live member is in the probe order, and the
        probe cursor is within it; the probe in flight ends before the next one starts; relayed
        ping-reqs, seeds, events, sequence numbers, the local health score, the join backoff
        and the broadcast queue are within their bounds; counters are non-negative; and a
        running core always has a next deadline (a left one none).
        """
        name = self.node_id
        me = self._self
        members = self._members
        if members.get(name) is not me or me.node_id != name or me.address != self.address:
            raise InvariantViolation(f"{name}: the local member is not filed under its own id")
        expected_state = MemberState.LEFT if self._left else MemberState.ALIVE
        if me.state is not expected_state:
            raise InvariantViolation(
                f"{name}: holds itself as {me.state}, expected {expected_state.value}"
            )
        if len(members) > MEMBERS_MAX:
            raise InvariantViolation(f"{name}: {len(members)} members, bound {MEMBERS_MAX}")
        live_count = 0
        live_address: dict[str, str] = {}
        suspects = 0
        for node_id, member in members.items():
            if member.node_id != node_id:
                raise InvariantViolation(f"{name}: record of {member.node_id!r} under {node_id!r}")
            if type(member.state) is not MemberState:
                raise InvariantViolation(f"{name}: {node_id!r} has state {member.state!r}")
            incarnation = member.incarnation
            if type(incarnation) is not int or not 0 <= incarnation < INCARNATION_LIMIT:
                raise InvariantViolation(f"{name}: {node_id!r} has incarnation {incarnation!r}")
            if member is me or member.state in _LIVE:
                live_count += 1
                if member.address in live_address:
                    raise InvariantViolation(
                        f"{name}: {live_address[member.address]!r} and {node_id!r} are both "
                        f"live at {member.address}"
                    )
                live_address[member.address] = node_id
            if member.state is MemberState.SUSPECT:
                suspects += 1
                suspicion = self._suspicions.get(node_id)
                if suspicion is None:
                    raise InvariantViolation(f"{name}: suspect {node_id!r} has no suspicion timer")
                suspicion.check_invariants()
        if len(self._suspicions) != suspects:
            orphans = sorted(
                i
                for i in self._suspicions
                if i not in members or members[i].state is not MemberState.SUSPECT
            )
            raise InvariantViolation(f"{name}: suspicion timers for non-suspects {orphans!r}")
        if live_count != self._live_count:
            raise InvariantViolation(
                f"{name}: live count is {self._live_count}, the table holds {live_count}"
            )
        if live_address != self._live_address:
            raise InvariantViolation(
                f"{name}: address map {self._live_address!r} disagrees with the live records "
                f"{live_address!r}"
            )
        ids, id_index = self._ids, self._id_index
        if len(ids) != len(members) - 1 or len(id_index) != len(ids):
            raise InvariantViolation(
                f"{name}: {len(ids)} ids / {len(id_index)} indexes for {len(members) - 1} "
                f"other members"
            )
        for index, node_id in enumerate(ids):
            if node_id == name or node_id not in members or id_index.get(node_id) != index:
                raise InvariantViolation(
                    f"{name}: ids[{index}] = {node_id!r}, indexed at {id_index.get(node_id)!r}"
                )
        order = self._probe_order
        if not 0 <= self._probe_index <= len(order):
            raise InvariantViolation(
                f"{name}: probe cursor {self._probe_index} outside an order of {len(order)}"
            )
        in_order = set(order)
        if name in in_order:
            raise InvariantViolation(f"{name}: probes itself")
        for node_id in ids:
            if members[node_id].state in _LIVE and node_id not in in_order:
                raise InvariantViolation(f"{name}: live member {node_id!r} is never probed")
        probe = self._probe
        if probe is not None and (
            self._left
            or probe.target_id == name
            or not 0 <= probe.seq < SEQ_LIMIT
            or not probe.direct_deadline_ms <= probe.indirect_deadline_ms
            or probe.indirect_deadline_ms > self._next_probe_ms
            or not 0 <= probe.expected_nacks <= self.config.indirect_checks
            or probe.nacks < 0
        ):
            raise InvariantViolation(
                f"{name}: probe of {probe.target_id!r} (seq {probe.seq}, deadlines "
                f"{probe.direct_deadline_ms}/{probe.indirect_deadline_ms} ms, next probe "
                f"{self._next_probe_ms} ms, nacks {probe.nacks}/{probe.expected_nacks})"
            )
        if not 0 <= self._seq < SEQ_LIMIT:
            raise InvariantViolation(f"{name}: sequence number {self._seq}")
        if len(self._forwards) > FORWARDS_MAX:
            raise InvariantViolation(f"{name}: {len(self._forwards)} relayed ping-reqs")
        for seq, forward in self._forwards.items():
            if not 0 <= seq < SEQ_LIMIT or (
                forward.nack_at_ms is not None and forward.nack_at_ms > forward.expires_ms
            ):
                raise InvariantViolation(
                    f"{name}: relayed ping-req seq {seq}: nack at {forward.nack_at_ms}, "
                    f"expires {forward.expires_ms}"
                )
        config = self.config
        seeds = self._seeds
        if len(seeds) > SEEDS_MAX or self.address in seeds or len(set(seeds)) != len(seeds):
            raise InvariantViolation(f"{name}: seeds {seeds!r}")
        if self._joining and not seeds:
            raise InvariantViolation(f"{name}: joining without seeds")
        if not config.join_retry_initial_ms <= self._join_backoff_ms <= config.join_retry_max_ms:
            raise InvariantViolation(f"{name}: join backoff {self._join_backoff_ms} ms")
        if len(self._events) > EVENTS_MAX:
            raise InvariantViolation(f"{name}: {len(self._events)} events pending")
        unconfirmed = {i for i, m in members.items() if not m.confirmed}
        if unconfirmed != self._unconfirmed.keys():
            raise InvariantViolation(
                f"{name}: unconfirmed list {sorted(self._unconfirmed)[:3]!r}... disagrees with "
                f"the table's {sorted(unconfirmed)[:3]!r}..."
            )
        tombstones = [i for i, m in members.items() if m is not me and m.state not in _LIVE]
        if set(tombstones) != self._tombstones.keys():
            raise InvariantViolation(f"{name}: tombstone list disagrees with the table")
        since = [members[i].since_ms for i in self._tombstones]
        if since != sorted(since):
            raise InvariantViolation(f"{name}: tombstones are not filed oldest first")
        if not 0 <= self._new_member_tokens <= config.new_members_burst:
            raise InvariantViolation(f"{name}: {self._new_member_tokens} new-member tokens")
        self._awareness.check_invariants()
        self._broadcasts.check_invariants()
        negative = sorted(k for k, v in self._stats.items() if v < 0)
        if negative:
            raise InvariantViolation(f"{name}: negative counters {negative!r}")
        deadline = self.next_deadline_ms()
        if (deadline is None) != self._left:
            raise InvariantViolation(
                f"{name}: next deadline {deadline!r} while {'left' if self._left else 'running'}"
            )

    # ----------------------------------------------------------------------------------------
    # The sans-IO contract.

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        """Decode and apply one payload; bad bytes are dropped and counted, never raised."""
        if self._left:
            self._count("drop_stopped")
            return
        stream = channel is Channel.STREAM
        try:
            messages = decode_packet(self._keyring, payload, stream)
        except CodecError as exc:
            self._count("drop_" + exc.reason)
            return
        self._count("stream_in" if stream else "datagrams_in")
        payload_info = _Payload(source)
        # An authenticated payload from a member's address: the member exists there. (A stream's
        # source is the address its sender advertised: naming many addresses takes as many
        # connections, which the driver bounds.)
        holder_id = self._live_address.get(source)
        if holder_id is not None:
            self._confirm(self._members[holder_id])
        for message in messages:
            self._dispatch(payload_info, message, now_ms)

    def stream_failed(self, peer: str, now_ms: int) -> None:
        if self._push_pulls.pop(peer, None) is not None:
            self._count("push_pull_failed")

    def tick(self, now_ms: int) -> None:
        if self._left:
            return
        self._run_forwards(now_ms)
        self._run_probe(now_ms)
        self._run_suspicions(now_ms)  # after the probe: its failure may confirm a suspicion
        self._run_gossip(now_ms)
        self._run_push_pull(now_ms)
        self._run_join(now_ms)
        if now_ms >= self._next_reclaim_ms:
            self._reclaim_tombstones(now_ms)

    def next_deadline_ms(self) -> int | None:
        if self._left:
            return None
        deadline = min(self._next_probe_ms, self._next_push_pull_ms)
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.indirect_deadline_ms)
            if not probe.indirect_sent:
                deadline = min(deadline, probe.direct_deadline_ms)
        if len(self._broadcasts):
            deadline = min(deadline, self._next_gossip_ms)
        if self._joining:
            deadline = min(deadline, self._next_join_ms)
        for suspicion in self._suspicions.values():
            deadline = min(deadline, suspicion.deadline_ms)
        for forward in self._forwards.values():
            deadline = min(deadline, forward.expires_ms)
            if forward.nack_at_ms is not None:
                deadline = min(deadline, forward.nack_at_ms)
        for give_up_ms in self._push_pulls.values():
            deadline = min(deadline, give_up_ms)
        return deadline

    def take_outbox(self) -> list[Outgoing]:
        outbox, self._outbox = self._outbox, []
        return outbox

    # ----------------------------------------------------------------------------------------
    # Incoming messages.

    def _dispatch(self, payload: _Payload, message: object, now_ms: int) -> None:
        source = payload.source
        match message:
            case Ping():
                self._on_ping(source, message)
            case Ack():
                self._on_ack(message, now_ms)
            case Nack():
                probe = self._probe
                if probe is not None and probe.seq == message.seq:
                    probe.nacks += 1
            case PingReq():
                self._on_ping_req(source, message, now_ms)
            case Alive():
                above_us = message.incarnation > self._self.incarnation
                self._on_alive(message, now_ms, payload)
                if message.node_id == self.node_id and above_us:
                    self._answer_claim_about_us(source)
            case Suspect():
                self._correct_stale(source, message.node_id, message.incarnation)
                self._on_suspect(message, now_ms)
            case Dead():
                self._correct_stale(source, message.node_id, message.incarnation)
                self._on_dead(message.node_id, message.incarnation, now_ms, left=False)
                if message.node_id == self.node_id:
                    self._answer_claim_about_us(source)
            case Leave():
                self._on_dead(message.node_id, message.incarnation, now_ms, left=True)
                if message.node_id == self.node_id:
                    self._answer_claim_about_us(source)
            case PushPull():
                self._on_push_pull(payload, message, now_ms)

    def _answer_claim_about_us(self, source: str) -> None:
        """``source`` holds us dead, left, or at an incarnation we never had: tell it directly.
        Our ``alive`` in a datagram from our own address replaces whatever it holds (see
        ``_on_alive``), even a record pushed above anything we could out-vote by forged claims.
        (A suspicion needs no answer here: it comes in a buddy ping, whose ack carries our
        refutation from our address anyway.) One datagram per such claim, like stale corrections."""
        if source == self.address:
            return
        # Queued afresh (so gossiped again too), it is the first update the datagram carries.
        me = self._self
        self._queue_update(me.node_id, Alive(me.node_id, me.address, me.incarnation, me.meta))
        self._send(source, [])
        self._count("claims_answered")

    def _correct_stale(self, source: str, node_id: str, incarnation: int) -> None:
        """``source`` gossips a suspicion or death that the member already refuted: send it the
        refutation directly. Gossip of the refutation can miss one node (every copy lost), and
        that node would declare a healthy member dead when its timer fires; its own stale
        gossip is what gives it away. One datagram per stale message, only while it repeats."""
        member = self._members.get(node_id)
        if (
            member is None
            or member is self._self  # our own refutation path handles claims about us
            or member.state is not MemberState.ALIVE
            or incarnation >= member.incarnation
        ):
            return
        alive = Alive(member.node_id, member.address, member.incarnation, member.meta)
        self._send(source, [encode_message(alive)])
        self._count("stale_corrected")

    def _on_ping(self, source: str, ping: Ping) -> None:
        if ping.target_id != self.node_id:
            # A ping for the process that used this address before us: staying silent lets
            # the cluster declare that process dead.
            self._count("drop_wrong_target")
            return
        self._send(source, [encode_message(Ack(ping.seq))])

    def _on_ack(self, ack: Ack, now_ms: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == ack.seq:
            if self.config.lifeguard and now_ms <= probe.direct_deadline_ms:
                self._awareness.apply_delta(-1)
            self._probe = None
            self._count("probe_acked")
            target = self._members.get(probe.target_id)
            if self.config.lifeguard and target is not None and target.state is MemberState.SUSPECT:
                # A suspect answered, but its refutation has not reached us (a lost direct ack,
                # or an ack forwarded by a helper): buddy-probe it again next period. At most
                # one extra slot per period, and only while it answers and stays suspect.
                self._probe_order.insert(self._probe_index, target.node_id)
            return
        forward = self._forwards.pop(ack.seq, None)
        if forward is not None:
            self._send(forward.requester, [encode_message(Ack(forward.requester_seq))])
            return
        self._count("ack_stale")

    def _on_ping_req(self, source: str, request: PingReq, now_ms: int) -> None:
        if len(self._forwards) >= FORWARDS_MAX:
            self._count("drop_forwards_full")
            return
        seq = self._next_seq()
        nack_at_ms = None
        if request.want_nack:
            nack_delay_ms = self.config.indirect_probe_timeout_ms * NACK_TIMEOUT_FRACTION
            nack_at_ms = now_ms + int(nack_delay_ms)
        expires_ms = now_ms + self.config.probe_interval_ms
        self._forwards[seq] = _Forward(source, request.seq, nack_at_ms, expires_ms)
        self._send(request.target_address, [encode_message(Ping(seq, request.target_id))])
        self._count("ping_req_relayed")

    def _on_alive(self, alive: Alive, now_ms: int, payload: _Payload) -> None:
        if alive.address == self.address:
            self._note_predecessor(alive.node_id, alive.address, alive.incarnation, alive.meta)
        if alive.node_id == self.node_id:
            # Our own announcement echoed back is fine; anything newer or elsewhere is a claim
            # about us we did not make (a previous life, a misconfigured twin): out-vote it.
            if alive.incarnation > self._self.incarnation or (
                alive.address != self.address and alive.incarnation == self._self.incarnation
            ):
                self._refute(alive.incarnation)
            return
        member = self._members.get(alive.node_id)
        if member is None:
            self._add_member(alive, now_ms, payload)
            return
        if payload.from_itself(alive.address) and alive.address == member.address:
            if alive.incarnation != member.incarnation:
                self._accept_own_word(member, alive, now_ms)
            return
        if alive.incarnation <= member.incarnation:
            return
        if alive.address != member.address and member.state in _LIVE:
            self._count("drop_address_conflict")
            return
        incarnation = min(alive.incarnation, member.incarnation + INCARNATION_STEP_MAX)
        if incarnation != alive.incarnation:
            self._count("claims_capped")
            alive = Alive(alive.node_id, alive.address, incarnation, alive.meta)
        if member.state not in _LIVE and not self._claim_address(alive, now_ms, payload):
            return
        member.address = alive.address
        member.incarnation = alive.incarnation
        if member.meta != alive.meta:
            self.meta_changes += 1
        member.meta = alive.meta
        self._revive(member, now_ms)
        self._queue_update(member.node_id, alive)

    def _revive(self, member: _Member, now_ms: int) -> None:
        previous = member.state
        if previous is not MemberState.ALIVE:
            self._set_state(member, MemberState.ALIVE, now_ms)
            kind = EventKind.ALIVE if previous is MemberState.SUSPECT else EventKind.JOINED
            self._emit(kind, member, now_ms)

    def _accept_own_word(self, member: _Member, alive: Alive, now_ms: int) -> None:
        """The member itself, from its own address, says it is alive at an incarnation other
        than our record: take its word, in either direction. Above: our record lagged (the
        step cap, or a restart with the same id). Below: honest records never exceed the
        member's own incarnation, so ours was pushed up by forged claims, and without this the
        member could never out-vote them (or the datagram was reordered behind the member's next
        refutation, which costs nothing: it is alive, and any later claim applies again)."""
        if member.state not in _LIVE and not self._claim_address(alive, now_ms, None):
            return
        raised = alive.incarnation > member.incarnation
        member.incarnation = alive.incarnation
        if member.meta != alive.meta:
            self.meta_changes += 1
        member.meta = alive.meta
        self._revive(member, now_ms)
        if raised:
            self._queue_update(member.node_id, alive)
        else:
            self._count("own_word_lowered")

    def _add_member(self, alive: Alive, now_ms: int, payload: _Payload) -> None:
        config = self.config
        first_hand = payload.from_itself(alive.address) and not payload.sender_added
        if not payload.trusted:
            if payload.added >= config.new_members_per_packet_max:
                self._count("drop_new_members_per_packet")
                return
            # The member announcing itself from its own address is not rate limited (that is
            # how a real node joins a node flooded with rows), but counts toward the packet.
            if not first_hand and not self._take_new_member_token(now_ms):
                self._count("drop_new_members_rate")
                return
        if len(self._members) >= MEMBERS_MAX and not self._evict_for_newcomer(now_ms):
            self._count("drop_members_full")
            return
        if not self._claim_address(alive, now_ms, payload):
            return
        payload.added += 1
        payload.sender_added = payload.sender_added or first_hand
        member = _Member(alive.node_id, alive.address, alive.incarnation, now_ms, alive.meta)
        self._view_changed_ms = now_ms
        self._members[member.node_id] = member
        self._id_index[member.node_id] = len(self._ids)
        self._ids.append(member.node_id)
        self._live_address[member.address] = member.node_id
        self._live_count += 1
        if first_hand:
            member.confirmed = True
        else:
            self._unconfirmed[member.node_id] = None
        # A random position, not the end: otherwise a member joining just after the cursor
        # would wait a whole round, and the detection bound would grow with churn.
        self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), member.node_id)
        self._emit(EventKind.JOINED, member, now_ms)
        self._queue_update(member.node_id, alive)

    def _claim_address(self, alive: Alive, now_ms: int, payload: _Payload | None) -> bool:
        """May ``alive`` become the live member at its address? Evicts an older holder.

        ``payload`` None: the claim is the member's own word (see ``_accept_own_word``)."""
        holder_id = self._live_address.get(alive.address)
        if holder_id is None or holder_id == alive.node_id:
            return True
        holder = self._members[holder_id]
        # A process speaking from the address owns it, whatever incarnation a forged claim gave
        # the holder; otherwise only a higher incarnation (a restart) takes the address over.
        own_word = payload is None or payload.from_itself(alive.address)
        if holder is self._self or (alive.incarnation <= holder.incarnation and not own_word):
            self._count("drop_address_conflict")
            return False
        # Only one process can own an address: the newer incarnation is a restart.
        self._declare(holder, MemberState.DEAD, holder.incarnation, now_ms)
        return True

    def _on_suspect(self, suspect: Suspect, now_ms: int) -> None:
        member = self._members.get(suspect.node_id)
        if member is self._self and suspect.incarnation < member.incarnation:
            # A stale accusation (e.g. a buddy ping from a suspecter): our refutation missed
            # that node. Gossip our alive again, or it declares us dead when its timer ends.
            me = self._self
            self._queue_update(me.node_id, Alive(me.node_id, me.address, me.incarnation, me.meta))
            self._count("refutations_repeated")
            return
        if member is None or suspect.incarnation < member.incarnation:
            return
        if member is self._self:
            self._refute(suspect.incarnation)
            return
        suspect = self._capped(member, suspect)
        if member.state is MemberState.SUSPECT:
            member.incarnation = suspect.incarnation
            suspicion = self._suspicions.get(member.node_id)
            if (
                self.config.lifeguard
                and suspicion is not None
                and suspicion.confirm(suspect.from_id)
            ):
                self._count("suspicion_confirmations")
                self._queue_update(member.node_id, suspect)
            return
        if member.state is not MemberState.ALIVE:
            return
        member.incarnation = suspect.incarnation
        self._set_state(member, MemberState.SUSPECT, now_ms)
        self._suspicions[member.node_id] = self._new_suspicion(suspect.from_id, now_ms)
        if self.config.lifeguard:
            # Probe a new suspect next: the buddy ping tells it of the suspicion, and its ack
            # carries its refutation straight back, so a suspecter that missed the refutation's
            # gossip (lossy links) still hears it long before its timer fires. A dead suspect
            # fails this probe too, an independent confirmation. One extra slot per suspicion;
            # the order is rebuilt every round, so it stays bounded.
            self._probe_order.insert(self._probe_index, member.node_id)
        self._emit(EventKind.SUSPECT, member, now_ms)
        self._queue_update(member.node_id, suspect)
        self._count("suspicions")

    def _new_suspicion(self, accuser_id: str, now_ms: int) -> Suspicion:
        config = self.config
        n = self._live_count
        min_ms = suspicion_timeout_min_ms(config.suspicion_mult, n, config.probe_interval_ms)
        if not config.lifeguard:
            return Suspicion(accuser_id, now_ms, 0, min_ms, min_ms)
        k = expected_confirmations(config.suspicion_mult, n)
        max_ms = config.suspicion_max_timeout_mult * min_ms
        return Suspicion(accuser_id, now_ms, k, min_ms, max_ms)

    def _capped(self, member: _Member, accusation: Suspect) -> Suspect:
        """``accusation`` read at most ``INCARNATION_STEP_MAX`` above our record of ``member``."""
        incarnation = min(accusation.incarnation, member.incarnation + INCARNATION_STEP_MAX)
        if incarnation == accusation.incarnation:
            return accusation
        self._count("claims_capped")
        return Suspect(accusation.node_id, incarnation, accusation.from_id)

    def _on_dead(self, node_id: str, incarnation: int, now_ms: int, left: bool) -> None:
        member = self._members.get(node_id)
        if member is None or incarnation < member.incarnation:
            return
        if member is self._self:
            self._refute(incarnation)
            return
        if member.state not in _LIVE:
            return
        if incarnation > member.incarnation + INCARNATION_STEP_MAX:
            incarnation = member.incarnation + INCARNATION_STEP_MAX
            self._count("claims_capped")
        self._declare(member, MemberState.LEFT if left else MemberState.DEAD, incarnation, now_ms)

    def _declare(self, member: _Member, state: MemberState, incarnation: int, now_ms: int) -> None:
        """Mark a live member dead or left, tell the application, and gossip it."""
        member.incarnation = incarnation
        self._set_state(member, state, now_ms)
        if state is MemberState.LEFT:
            self._emit(EventKind.LEFT, member, now_ms)
            self._queue_update(member.node_id, Leave(member.node_id, incarnation))
        else:
            self._emit(EventKind.DEAD, member, now_ms)
            self._queue_update(member.node_id, Dead(member.node_id, incarnation, self.node_id))
            self._count("declared_dead")

    def _refute(self, accused_incarnation: int) -> None:
        """Out-vote a claim about us at ``accused_incarnation`` (>= ours). We choose our next
        incarnation: one above the claim read at most ``INCARNATION_STEP_MAX`` above ours, so a
        claim at 2^63 - 1 moves us by 2, not to the end of the space. The cap at the limit is
        unreachable (2^62 claims from a start <= INCARNATION_START_MAX) but keeps the wire valid."""
        me = self._self
        accused = min(
            max(me.incarnation, accused_incarnation), me.incarnation + INCARNATION_STEP_MAX
        )
        if accused != accused_incarnation:
            self._count("claims_capped")
        me.incarnation = min(accused + 1, INCARNATION_LIMIT - 1)
        if self.config.lifeguard:
            # Being suspected is itself a hint that we are slow to answer (Lifeguard).
            self._awareness.apply_delta(1)
        self._queue_update(me.node_id, Alive(me.node_id, me.address, me.incarnation, me.meta))
        self._count("refutations")

    def _on_push_pull(self, payload: _Payload, push_pull: PushPull, now_ms: int) -> None:
        source = payload.source
        if push_pull.reply:
            if self._push_pulls.pop(source, None) is not None:
                # The answer of a peer we chose to contact. While we join, a seed's answer (the
                # operator chose it) is the initial view and may fill an empty table; every
                # other payload adds few members (``_add_member``).
                payload.trusted = self._joining and source in self._seeds
            if self._joining:
                self._joining = False
                self._count("joined")
        self._count("push_pull_merged")
        self._merge_states(push_pull.states, now_ms, payload)
        if not push_pull.reply:
            # Reply after merging, so the reply already carries our refutation of anything the
            # requester held against us (after a partition: "dead"); it heals in one exchange.
            self._send_push_pull(source, reply=True, join=False)

    def _merge_states(self, states: tuple[NodeState, ...], now_ms: int, payload: _Payload) -> None:
        for row in states:
            if row.address == self.address:
                self._note_predecessor(row.node_id, row.address, row.incarnation, row.meta)
            if row.state == STATE_ALIVE:
                alive = Alive(row.node_id, row.address, row.incarnation, row.meta)
                self._on_alive(alive, now_ms, payload)
            elif row.state == STATE_LEFT:
                self._on_dead(row.node_id, row.incarnation, now_ms, left=True)
            else:
                # Someone else's "dead" becomes our suspicion: it must survive our own
                # timeout (and the member's chance to refute) before we call it dead.
                self._on_suspect(Suspect(row.node_id, row.incarnation, self.node_id), now_ms)

    # ----------------------------------------------------------------------------------------
    # Timers.

    def _run_suspicions(self, now_ms: int) -> None:
        expired = [i for i, s in self._suspicions.items() if s.deadline_ms <= now_ms]
        for node_id in expired:
            member = self._members[node_id]
            self._declare(member, MemberState.DEAD, member.incarnation, now_ms)

    def _run_forwards(self, now_ms: int) -> None:
        for seq, forward in list(self._forwards.items()):
            if forward.nack_at_ms is not None and now_ms >= forward.nack_at_ms:
                forward.nack_at_ms = None
                self._send(forward.requester, [encode_message(Nack(forward.requester_seq))])
            if now_ms >= forward.expires_ms:
                del self._forwards[seq]

    def _run_probe(self, now_ms: int) -> None:
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now_ms >= probe.direct_deadline_ms:
                self._send_ping_reqs(probe)
            if now_ms >= probe.indirect_deadline_ms:
                self._probe = None
                self._probe_failed(probe, now_ms)
        if now_ms >= self._next_probe_ms:
            self._start_probe(now_ms)

    def _start_probe(self, now_ms: int) -> None:
        interval_ms = self._awareness.scale_ms(self.config.probe_interval_ms)
        self._next_probe_ms = now_ms + interval_ms
        target = self._next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        direct_deadline_ms = now_ms + self._awareness.scale_ms(self.config.probe_timeout_ms)
        indirect_ms = self._awareness.scale_ms(self.config.indirect_probe_timeout_ms)
        # Both timeouts and the period scale by the same health factor and the config checks
        # timeout + indirect <= period, so this probe ends before the next one starts.
        indirect_deadline_ms = direct_deadline_ms + indirect_ms
        assert indirect_deadline_ms <= self._next_probe_ms
        self._probe = _Probe(seq, target.node_id, direct_deadline_ms, indirect_deadline_ms)
        primary = [encode_message(Ping(seq, target.node_id))]
        if target.state is MemberState.SUSPECT and self.config.lifeguard:
            # Buddy system: tell a suspect directly, so it can refute without waiting for gossip.
            # The suspicion goes first: the target handles it before the ping, so the ack it
            # sends back already carries its refutation.
            suspect = Suspect(target.node_id, target.incarnation, self.node_id)
            primary.insert(0, encode_message(suspect))
        self._send(target.address, primary)
        self._count("probes")

    def _next_probe_target(self) -> _Member | None:
        for _ in range(len(self._probe_order) + 1):
            if self._probe_index >= len(self._probe_order):
                self._reshuffle_probe_order()
                if not self._probe_order:
                    return None
            node_id = self._probe_order[self._probe_index]
            self._probe_index += 1
            member = self._members.get(node_id)
            if member is not None and member.state in _LIVE:
                return member
        return None

    def _reshuffle_probe_order(self) -> None:
        order = [i for i in self._ids if self._members[i].state in _LIVE]
        self._rng.shuffle(order)
        self._probe_order = order
        self._probe_index = 0

    def _send_ping_reqs(self, probe: _Probe) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target_id)
        if target is None or target.state not in _LIVE:
            return
        helpers = self._sample(
            self.config.indirect_checks,
            None,
            exclude=target.node_id,
            alive_only=True,
            confirmed_only=True,
        )
        request = PingReq(probe.seq, target.node_id, target.address, self.config.lifeguard)
        encoded = encode_message(request)
        for helper in helpers:
            self._send(helper.address, [encoded])
        probe.expected_nacks = len(helpers) if self.config.lifeguard else 0
        self._count("ping_reqs", len(helpers))

    def _probe_failed(self, probe: _Probe, now_ms: int) -> None:
        self._count("probe_failed")
        if self.config.lifeguard:
            expected = probe.expected_nacks
            # Missing nacks mean our helpers could not reach us either: likely our fault.
            self._awareness.apply_delta(max(0, expected - probe.nacks) if expected else 1)
        target = self._members.get(probe.target_id)
        if target is not None and target.state in _LIVE:
            self._on_suspect(Suspect(target.node_id, target.incarnation, self.node_id), now_ms)

    def _run_gossip(self, now_ms: int) -> None:
        if now_ms < self._next_gossip_ms:
            return
        self._next_gossip_ms = now_ms + self.config.gossip_interval_ms
        if not len(self._broadcasts):
            return
        for peer in self._sample(self.config.gossip_nodes, now_ms):
            if not self._send(peer.address, []):
                break

    def _run_push_pull(self, now_ms: int) -> None:
        for peer, give_up_ms in list(self._push_pulls.items()):
            if now_ms >= give_up_ms:
                del self._push_pulls[peer]
                self._count("push_pull_timeout")
        if now_ms < self._next_push_pull_ms:
            return
        config = self.config
        self._next_push_pull_ms = now_ms + config.push_pull_interval_ms
        peers = self._sample(1, None, alive_only=True, confirmed_only=True)
        if peers:
            chance = push_pull_chance(self._live_count, config.push_pull_scale_threshold)
            # Thinned out only once the view has been quiet for a whole period: while members
            # come, go or refute (after a partition heals, say), views diverge and every node
            # syncs each period, as in a small cluster.
            quiet = now_ms - self._view_changed_ms >= config.push_pull_interval_ms
            if not quiet or chance >= 1.0 or self._rng.random() < chance:
                self._start_push_pull(peers[0].address, now_ms, join=False)
            else:
                self._count("push_pull_skipped")
        elif self._seeds and not self._joining:
            # Alone: everyone we knew is gone or declared us dead. Rejoin through the seeds.
            self._joining = True
            self._next_join_ms = now_ms
        # Partition healing: also try one member we believe dead; if it answers, both sides
        # learn of each other's refutations. Not thinned out like the sync above: it costs
        # nothing in steady state (no dead records) and is what merges partitions after heal.
        dead = self._sample(1, None, dead_only=True, confirmed_only=True)
        if dead:
            self._start_push_pull(dead[0].address, now_ms, join=False)

    def _run_join(self, now_ms: int) -> None:
        if not self._joining or now_ms < self._next_join_ms:
            return
        for seed in self._seeds:
            self._start_push_pull(seed, now_ms, join=True)
        self._next_join_ms = now_ms + self._join_backoff_ms
        self._join_backoff_ms = min(2 * self._join_backoff_ms, self.config.join_retry_max_ms)
        self._count("join_attempts")

    def _start_push_pull(self, peer: str, now_ms: int, join: bool) -> None:
        if peer in self._push_pulls:
            return
        self._push_pulls[peer] = now_ms + self.config.push_pull_timeout_ms
        self._send_push_pull(peer, reply=False, join=join)
        self._count("push_pull_started")

    def _send_push_pull(self, peer: str, reply: bool, join: bool) -> None:
        states = tuple(
            NodeState(m.node_id, m.address, m.incarnation, _STATE_TO_WIRE[m.state], m.meta)
            for m in self._members.values()
        )
        payload = encode_packet(
            self._keyring, [encode_message(PushPull(reply, join, states))], stream=True
        )
        self._outbox.append(Outgoing(peer, Channel.STREAM, payload))
        self._count("stream_out")
        self._count("stream_bytes_out", len(payload))

    def _reclaim_tombstones(self, now_ms: int) -> None:
        """Forget dead and left members after ``dead_node_reclaim_ms``."""
        self._next_reclaim_ms = now_ms + max(1, self.config.dead_node_reclaim_ms // 4)
        horizon_ms = now_ms - self.config.dead_node_reclaim_ms
        stale = []
        for node_id in self._tombstones:  # oldest first
            if self._members[node_id].since_ms > horizon_ms:
                break
            stale.append(node_id)
        for node_id in stale:
            self._forget(self._members[node_id])
            self._count("reclaimed")

    def _forget(self, member: _Member) -> None:
        """Remove a dead or left record from the table."""
        node_id = member.node_id
        del self._members[node_id]
        self._tombstones.pop(node_id, None)
        self._unconfirmed.pop(node_id, None)
        index = self._id_index.pop(node_id)
        last = self._ids.pop()
        if last != node_id:
            self._ids[index] = last
            self._id_index[last] = index

    def _evict_for_newcomer(self, now_ms: int) -> bool:
        """Make room in a full table: drop the oldest unconfirmed member (forged rows name
        addresses nobody answers from), else the oldest tombstone. Confirmed live members stay.
        False if every record is a confirmed live member."""
        victim_id = next(iter(self._unconfirmed), None)
        if victim_id is None:
            victim_id = next(iter(self._tombstones), None)
            if victim_id is None:
                return False
        victim = self._members[victim_id]
        if victim.state in _LIVE:
            self._set_state(victim, MemberState.DEAD, now_ms)
            self._emit(EventKind.EVICTED, victim, now_ms)
        self._forget(victim)
        self._count("evicted")
        return True

    def _confirm(self, member: _Member) -> None:
        if not member.confirmed:
            member.confirmed = True
            self._unconfirmed.pop(member.node_id, None)

    def _take_new_member_token(self, now_ms: int) -> bool:
        """Token bucket of second-hand new members: ``new_members_burst`` at once, refilled at
        ``new_members_per_s``."""
        config = self.config
        elapsed_ms = now_ms - self._new_member_tokens_ms
        if elapsed_ms > 0:
            refill = elapsed_ms * config.new_members_per_s / 1000
            self._new_member_tokens = min(
                float(config.new_members_burst), self._new_member_tokens + refill
            )
            self._new_member_tokens_ms = now_ms
        if self._new_member_tokens < 1:
            return False
        self._new_member_tokens -= 1
        return True

    # ----------------------------------------------------------------------------------------
    # Helpers.

    def _set_state(self, member: _Member, state: MemberState, now_ms: int) -> None:
        was_live = member.state in _LIVE
        is_live = state in _LIVE
        self._view_changed_ms = now_ms
        member.state = state
        member.since_ms = now_ms
        if state is not MemberState.SUSPECT:
            self._suspicions.pop(member.node_id, None)
        if not is_live:  # re-filed at the end: tombstones are reclaimed oldest first
            self._tombstones.pop(member.node_id, None)
            self._tombstones[member.node_id] = None
        if was_live and not is_live:
            self._live_count -= 1
            if self._live_address.get(member.address) == member.node_id:
                del self._live_address[member.address]
        elif is_live and not was_live:
            self._tombstones.pop(member.node_id, None)
            self._live_count += 1
            self._live_address[member.address] = member.node_id
            self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), member.node_id)

    def _sample(
        self,
        count: int,
        now_ms: int | None,
        exclude: str | None = None,
        alive_only: bool = False,
        dead_only: bool = False,
        confirmed_only: bool = False,
    ) -> list[_Member]:
        """Up to ``count`` distinct random members, by rejection sampling (O(count), not O(N)).
        ``confirmed_only`` for ping-req helpers and push-pull partners: a forged row must not
        make this node open streams to, or relay probes through, addresses of someone's
        choosing. (Gossip still goes to unconfirmed members, a few datagrams per period; in a
        cold start everyone is unconfirmed until first contact, and dissemination needs them.)

        Default: live members, plus dead and left ones for ``gossip_to_the_dead_ms`` when
        ``now_ms`` is given (so a member wrongly declared dead, or left by a forged leave,
        hears about it and refutes; a member that really left ignores a few datagrams).
        """
        ids = self._ids
        if not ids or count <= 0:
            return []
        if count >= len(ids):
            candidates = list(ids)
            self._rng.shuffle(candidates)
        else:
            candidates = [ids[self._rng.randrange(len(ids))] for _ in range(count * 8)]
        chosen: dict[str, _Member] = {}
        dead_horizon_ms = None if now_ms is None else now_ms - self.config.gossip_to_the_dead_ms
        for node_id in candidates:
            if len(chosen) >= count:
                break
            member = self._members[node_id]
            if node_id == exclude or node_id in chosen or (confirmed_only and not member.confirmed):
                continue
            state = member.state
            if dead_only:
                ok = state is MemberState.DEAD
            elif alive_only:
                ok = state is MemberState.ALIVE
            else:
                ok = state in _LIVE or (
                    state is not MemberState.ALIVE  # dead or left: it may have been forged
                    and dead_horizon_ms is not None
                    and member.since_ms > dead_horizon_ms
                )
            if ok:
                chosen[node_id] = member
        return list(chosen.values())

    def _send(self, destination: str, primary: list[bytes]) -> bool:
        """Send ``primary`` plus as many queued updates as fit; False if there was nothing."""
        used = HEADER_SIZE_BYTES + BODY_ARRAY_HEADER_BYTES_MAX + sum(map(len, primary))
        limit = retransmit_limit(self.config.retransmit_mult, self._live_count)
        updates = self._broadcasts.take(self.config.packet_size_bytes_max - used, limit)
        if not primary and not updates:
            return False
        payload = encode_packet(self._keyring, primary + updates)
        self._outbox.append(Outgoing(destination, Channel.DATAGRAM, payload))
        self._count("datagrams_out")
        self._count("datagram_bytes_out", len(payload))
        return True

    def _queue_update(self, node_id: str, update: Alive | Suspect | Dead | Leave) -> None:
        self._broadcasts.put(node_id, encode_message(update))

    def _emit(self, kind: EventKind, member: _Member, now_ms: int) -> None:
        if len(self._events) >= EVENTS_MAX:
            del self._events[0]
            self._count("events_dropped")
        self._events.append(
            MemberEvent(kind, member.node_id, member.address, member.incarnation, now_ms)
        )

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_LIMIT
        return self._seq

    def _count(self, name: str, amount: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + amount
