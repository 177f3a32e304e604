"""The anti-entropy core: replicas that missed writes converge by comparing per-bucket summaries
with the other holders of their buckets and repairing key by key what differs. Sans-IO: the
node core hands it payloads, the time and the layout; it sends what it puts in its outbox.

A **round** (docs/design.md, "Anti-entropy") runs between this node (the initiator) and one
peer that holds some of the same buckets (``Layout.shared``):

1. The sum of our summaries over the shared buckets (8 bytes). Equal: the round is over; that
   is what a round costs when replicas agree, about 40 bytes each way whatever the data size.
2. Else the peer's 128 group sums, then its bucket sums of the groups that differ (at most
   ``groups_per_round_max``): the differing buckets in two round trips.
3. A bucket that differs is **confirmed** before it is repaired: it must still differ at least
   ``confirm_ms`` later (a write in flight reaches both replicas well within that; it is not a
   difference). A follow-up round with the same peer is scheduled for then.
4. For confirmed buckets (at most ``buckets_per_round_max``, ``keys_per_round_max`` listed
   entries) we send our listing: per entry a 64-bit key hash, the version, the expiry and the
   tombstone flag. The peer answers the entries it holds newer (values included, at most
   ``bytes_per_round_max``) and the hashes of the ones we hold newer, which we push.

Repair rules: the newer version wins (``Store.apply``, the same rule as every write); an entry
past its expiry is never revived (``apply`` turns it into its tombstone); tombstones are copied
like values until they are collected; an entry older than the newest write a replica evicted
from that bucket (``Store.evicted_stamp``) is not copied to it: it may have been evicted, and
copying it back would undo the eviction (and thrash). A difference that a complete exchange
leaves in place (an eviction so withheld, or two tombstones of one version collected at
different instants) is remembered with both sums as **explained** and not examined again
until a sum moves.

**Filling.** A node that must receive buckets (a new node, one restarted empty, one that gains
buckets from a leaving node) gets them through the same rounds: its ``unsynced`` buckets are
compared without the confirmation delay and marked synced once a round with one of their
serving owners found them equal or transferred them completely. The node core reads
``unsynced_count`` to decide when the node counts as a full owner.

The responder keeps no state between messages: each is answered from the store as it is then.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import mmh3

from ..errors import GossipCacheError
from ..placement import bucket_of
from ..sansio import Channel, Outgoing
from ..store import Store
from ..store.store import APPLY_STALE
from ..store.summaries import DIGEST_MASK, GROUP_COUNT, GROUP_SIZE
from . import codec

#: Seed of the 64-bit key hashes in listings (any fixed value: both sides must agree).
KEY_HASH_SEED = 0x6763
#: A payload of entries is closed once it reaches this many bytes (a larger entry travels
#: alone): what one frame and one peer queue slot hold at once.
PAYLOAD_SIZE_BYTES_TARGET = 1024 * 1024
#: Bytes counted per entry beyond its key and value (msgpack headers, version, expiry).
ENTRY_OVERHEAD_BYTES = 32
_HASH_LIMIT = 1 << 64
#: Bits of an HLC stamp below its wall milliseconds (gossipcache/hlc.py).
_LOGICAL_BITS = 16


@dataclass(frozen=True)
class AntiEntropyConfig:
    """Anti-entropy's knobs (``NodeConfig`` carries them; docs/design.md explains each)."""

    #: A round with one peer starts this often (peers taken in turn).
    interval_ms: int = 1000
    #: A round not finished by then is abandoned (the peer is slow or gone).
    round_timeout_ms: int = 5000
    #: A bucket must differ this long before it is repaired (writes in flight are not
    #: differences): at least the replica timeout.
    confirm_ms: int = 1000
    #: Work per round: groups descended, buckets listed, entries listed, and bytes of entries
    #: sent each way. Past a bound the rest waits for the next round.
    groups_per_round_max: int = 16
    buckets_per_round_max: int = 256
    keys_per_round_max: int = 32_768
    bytes_per_round_max: int = 8 * 1024 * 1024
    #: When a round leaves work, the next one starts after 1000 / this many ms, not after
    #: ``interval_ms``: how fast a wiped node is refilled, and the cap on rounds per second.
    rounds_per_s_max: int = 50
    #: A version more than this far ahead of our wall clock is refused (as replication does).
    max_clock_offset_ms: int = 500
    #: A listed range holds at most this many entries (a huge bucket is listed in ranges of
    #: key hashes), which keeps a listing within one frame (~30 bytes an entry).
    listing_entries_max: int = 65_536

    def __post_init__(self) -> None:
        for name in (
            "interval_ms", "round_timeout_ms", "groups_per_round_max", "buckets_per_round_max",
            "keys_per_round_max", "bytes_per_round_max", "rounds_per_s_max",
            "listing_entries_max",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.confirm_ms < 0:
            raise ValueError("confirm_ms must not be negative")


@dataclass(slots=True)
class AntiEntropyStats:
    """Counters (``antientropy_*`` in the node's stats and /metrics)."""

    rounds_started: int = 0
    rounds_agreed: int = 0
    rounds_repaired: int = 0
    rounds_timed_out: int = 0
    rounds_busy: int = 0
    rounds_served: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    buckets_differing: int = 0
    buckets_confirmed: int = 0
    buckets_explained: int = 0
    buckets_synced: int = 0
    keys_listed: int = 0
    keys_repaired: int = 0
    keys_sent: int = 0
    keys_withheld_evicted: int = 0
    entries_refused: int = 0
    bad_messages: int = 0
    unexpected_messages: int = 0


def key_hash(key: bytes) -> int:
    """The 64-bit hash standing for ``key`` in listings."""
    return mmh3.hash64(key, seed=KEY_HASH_SEED, x64arch=True, signed=False)[0]


class Layout:
    """Which buckets this node shares with which peer, from the serving and the target
    placement tables (equal outside a change of membership): a bucket's **holders** are its
    serving owners plus its target owners, and two nodes share the buckets both hold.

    The owners of every bucket are read once per change of either table (16384 lookups per
    table, ~20 ms); ``with_complete`` derives, without that pass, the layout for another set
    of complete nodes (a node started, filled, refilled), which is what changes most often."""

    def __init__(self, own: str, serving, target, serving_nodes: set[str] | None = None) -> None:
        """``serving`` / ``target``: objects with ``owners_of_bucket(bucket)`` (placement
        tables; ``target`` may be ``serving``). ``serving_nodes``: the nodes whose copies are
        complete (a filling node's are not); None: every serving owner."""
        self.own = own
        self.epoch = (getattr(serving, "epoch", 0), getattr(target, "epoch", 0))
        shared: dict[str, list[int]] = {}
        #: bucket -> (serving owners, target owners), for the buckets this node holds.
        owners: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for bucket in range(GROUP_COUNT * GROUP_SIZE):
            serving_owners = serving.owners_of_bucket(bucket)
            target_owners = serving_owners if target is serving else target.owners_of_bucket(bucket)
            if own not in serving_owners and own not in target_owners:
                continue
            owners[bucket] = (serving_owners, target_owners)
            for peer in serving_owners:
                if peer != own:
                    shared.setdefault(peer, []).append(bucket)
            if target_owners is not serving_owners:
                for peer in target_owners:
                    if peer != own and peer not in serving_owners:
                        shared.setdefault(peer, []).append(bucket)
        self._owners = owners
        self._shared = shared
        self._hashes = {peer: mmh3.hash64(
            b"".join(b.to_bytes(2, "big") for b in buckets), seed=0, x64arch=True, signed=False
        )[0] for peer, buckets in shared.items()}  # fmt: skip
        self._shared_sets = {peer: set(buckets) for peer, buckets in shared.items()}
        #: Peers in a fixed order (rounds take them in turn).
        self.peers = sorted(shared)
        self._derive(serving_nodes)

    def with_complete(self, serving_nodes: set[str] | None) -> Layout:
        """This layout with another set of complete nodes: O(buckets held), no table pass."""
        layout = object.__new__(Layout)
        layout.__dict__.update(self.__dict__)
        layout._derive(serving_nodes)
        return layout

    def _derive(self, serving_nodes: set[str] | None) -> None:
        own = self.own
        #: The nodes whose copies are complete (None: every serving owner).
        self.complete = serving_nodes
        #: Buckets this node will own that a complete peer holds: what filling must receive.
        self.fill_from: set[int] = set()
        #: peer -> buckets this node holds that move to that peer: what a leave hands over.
        self.handoff: dict[str, set[int]] = {}
        for bucket, (serving_owners, target_owners) in self._owners.items():
            if own in target_owners and any(
                peer != own and (serving_nodes is None or peer in serving_nodes)
                for peer in serving_owners
            ):
                self.fill_from.add(bucket)
            if own in serving_owners and target_owners is not serving_owners:
                for peer in target_owners:
                    if peer not in serving_owners:
                        self.handoff.setdefault(peer, set()).add(bucket)

    def shared(self, peer: str) -> tuple[list[int], int]:
        """The buckets shared with ``peer`` (ascending) and the hash naming that set."""
        return self._shared.get(peer, []), self._hashes.get(peer, 0)

    def shares(self, peer: str, bucket: int) -> bool:
        shared = self._shared_sets.get(peer)
        return shared is not None and bucket in shared

    def serves(self, peer: str, bucket: int) -> bool:
        """Whether ``peer`` holds a complete copy of ``bucket`` (a serving owner)."""
        owners = self._owners.get(bucket)
        complete = self.complete
        return owners is not None and peer in owners[0] and (complete is None or peer in complete)

    def is_complete(self, peer: str) -> bool:
        complete = self.complete
        return complete is None or peer in complete


class _Round:
    __slots__ = (
        "number", "peer", "started_ms", "buckets", "bucket_set", "keys_by_hash",
        "listed", "sums", "received", "pulled", "more",
    )  # fmt: skip

    def __init__(self, number: int, peer: str, started_ms: int, buckets: list[int]) -> None:
        self.number = number
        self.peer = peer
        self.started_ms = started_ms
        self.buckets = buckets
        self.bucket_set = set(buckets)
        self.keys_by_hash: dict[int, bytes] = {}
        #: Listed ranges (bucket, hash_lo) -> whether the peer answered them completely.
        self.listed: dict[tuple[int, int], bool] = {}
        #: (ours, theirs) bucket sums of the buckets listed, for "explained".
        self.sums: dict[int, tuple[int, int]] = {}
        self.received: dict[int, int] = {}  # bucket -> entries received
        self.pulled: dict[int, int] = {}  # bucket -> entries the peer asked for
        self.more = False  # work was left for a later round


class AntiEntropy:
    """See the module docstring. ``own`` is this node's placement id."""

    def __init__(
        self, own: str, store: Store, config: AntiEntropyConfig, rng: random.Random, now_ms: int
    ) -> None:
        self.own = own
        self.store = store
        self.config = config
        self.stats = AntiEntropyStats()
        self.layout: Layout | None = None
        #: Peers not to start rounds with (membership says down).
        self.down: set[str] = set()
        #: Whether this node may answer rounds (False while it cannot serve data at all).
        self.serving = True
        #: Buckets this node must receive from one of their serving owners.
        self.unsynced: set[int] = set()
        #: peer -> buckets this node must hand to it (a graceful leave).
        self.handoff: dict[str, set[int]] = {}
        self._round: _Round | None = None
        self._round_number = rng.getrandbits(40)
        self._next_round_ms = now_ms + rng.randrange(config.interval_ms)
        self._rotation = 0
        #: peer -> bucket -> when it was first seen differing (cleared when seen equal).
        self._suspects: dict[str, dict[int, int]] = {}
        #: peer -> the group a capped descent continues from.
        self._group_cursors: dict[str, int] = {}
        #: peer -> when to come back to it (a confirmation, or work left over).
        self._followups: dict[str, int] = {}
        #: peer -> bucket -> (our sum, their sum) of a difference a full exchange left.
        self._explained: dict[str, dict[int, tuple[int, int]]] = {}
        self._outgoing: dict[str, list[list]] = {}
        self._outbox: list[Outgoing] = []
        #: Called with each bucket a round found synced (the node core's filling progress).
        self.on_synced: Callable[[int], None] | None = None

    # -- layout ----------------------------------------------------------------------------

    def set_layout(self, layout: Layout | None) -> None:
        """Use ``layout`` from now on. Per-peer memory of buckets no longer shared goes; the
        round in flight, if any, is abandoned (its buckets may have moved)."""
        self.layout = layout
        self._round = None
        if layout is None:
            self._suspects.clear()
            self._explained.clear()
            self._followups.clear()
            return
        for memory in (self._suspects, self._explained):
            for peer in list(memory):
                if peer not in layout._shared_sets:
                    del memory[peer]
                    continue
                shared = layout._shared_sets[peer]
                buckets = memory[peer]
                for bucket in [b for b in buckets if b not in shared]:
                    del buckets[bucket]
        for peer in [p for p in self._followups if p not in layout._shared_sets]:
            del self._followups[peer]

    def require_sync(self, buckets: set[int]) -> None:
        """These buckets must be received from one of their serving owners (a filling node).
        The next round starts at once: a node waiting for its data should not wait longer."""
        self.unsynced = set(buckets)
        if self.unsynced:
            self._next_round_ms = 0

    def require_handoff(self, handoff: dict[str, set[int]]) -> None:
        """Each peer's buckets must be compared with it (and repaired) once more: this node
        leaves, and those peers own the buckets next. The next round starts at once."""
        self.handoff = {peer: set(buckets) for peer, buckets in handoff.items() if buckets}
        if self.handoff:
            self._next_round_ms = 0

    @property
    def unsynced_count(self) -> int:
        return len(self.unsynced)

    # -- the sans-IO contract ----------------------------------------------------------------

    def next_deadline_ms(self) -> int:
        round_ = self._round
        if round_ is not None:
            return round_.started_ms + self.config.round_timeout_ms
        deadline_ms = self._next_round_ms
        for due_ms in self._followups.values():
            if due_ms < deadline_ms:
                deadline_ms = due_ms
        return deadline_ms

    def tick(self, now_ms: int, wall_ms: int) -> None:
        round_ = self._round
        if round_ is not None:
            if now_ms - round_.started_ms < self.config.round_timeout_ms:
                return
            self.stats.rounds_timed_out += 1
            self._round = None
        layout = self.layout
        if layout is None or not self.serving or not layout.peers:
            self._next_round_ms = now_ms + self.config.interval_ms
            return
        peer = self._due_followup(now_ms)
        if peer is None:
            if now_ms < self._next_round_ms:
                return
            peer = self._next_peer(layout)
            if self.unsynced or self.handoff:
                # Buckets to receive or hand over: the next peer after the next pause, not
                # after a whole interval (a newcomer fills from many peers).
                self._next_round_ms = now_ms + max(1, 1000 // self.config.rounds_per_s_max)
            else:
                self._next_round_ms = now_ms + self.config.interval_ms
        if peer is not None:
            self._start_round(peer, now_ms, wall_ms)

    def handle(self, source: str, payload: bytes, now_ms: int, wall_ms: int) -> None:
        self.stats.bytes_received += len(payload)
        try:
            messages = codec.decode_payload(payload)
        except codec.AntiEntropyCodecError:
            self.stats.bad_messages += 1
            return
        for message in messages:
            kind = message[0]
            if kind == codec.SYNC:
                self._serve_sync(source, message)
            elif kind == codec.SUMS_REQ:
                self._serve_sums(source, message)
            elif kind == codec.KEYS:
                self._serve_keys(source, message, wall_ms)
            elif kind == codec.PUSH:
                self._apply_entries(source, message[2], wall_ms, None)
            else:
                round_ = self._round
                if round_ is None or round_.peer != source or round_.number != message[1]:
                    self.stats.unexpected_messages += 1
                    continue
                if kind == codec.SAME:
                    self._on_same(round_, now_ms)
                elif kind == codec.GROUPS:
                    self._on_groups(round_, message[2], now_ms)
                elif kind == codec.SUMS:
                    self._on_sums(round_, message[2], now_ms, wall_ms)
                elif kind == codec.ENTRIES:
                    self._on_entries(round_, message, now_ms, wall_ms)
                else:  # BUSY
                    self.stats.rounds_busy += 1
                    self._round = None

    def peer_failed(self, peer: str) -> None:
        """The stream to ``peer`` broke: a round with it will not be answered."""
        round_ = self._round
        if round_ is not None and round_.peer == peer:
            self._round = None

    def take_outbox(self) -> list[Outgoing]:
        outgoing = self._outgoing
        if outgoing:
            for peer, messages in outgoing.items():
                self._emit(peer, messages)
            outgoing.clear()
        outbox = self._outbox
        self._outbox = []
        return outbox

    @property
    def has_output(self) -> bool:
        return bool(self._outgoing) or bool(self._outbox)

    def round_in_flight(self) -> str | None:
        """The peer of the round in flight, if any (tests, status)."""
        return None if self._round is None else self._round.peer

    # -- initiating ----------------------------------------------------------------------------

    def _due_followup(self, now_ms: int) -> str | None:
        due = [(due_ms, peer) for peer, due_ms in self._followups.items() if due_ms <= now_ms]
        if not due:
            return None
        _, peer = min(due)
        del self._followups[peer]
        if peer in self.down or self.layout is None or peer not in self.layout._shared_sets:
            return None
        return peer

    def _next_peer(self, layout: Layout) -> str | None:
        """The next peer in turn that is up; while filling, one that serves unsynced buckets."""
        peers = layout.peers
        count = len(peers)
        fallback = None
        handoff = self.handoff
        for offset in range(count):
            peer = peers[(self._rotation + offset) % count]
            if peer in self.down:
                continue
            if handoff and peer not in handoff:
                continue
            if not layout.is_complete(peer) and peer not in handoff:
                # A filling peer runs its own rounds with us; ours would send it every entry a
                # second time (measured: 1.3-1.7 M keys sent to refill 1 M).
                continue
            if self.unsynced and not any(layout.serves(peer, b) for b in self._sample_unsynced()):
                if fallback is None:
                    fallback = (offset, peer)
                continue
            self._rotation = (self._rotation + offset + 1) % count
            return peer
        if fallback is not None:
            self._rotation = (self._rotation + fallback[0] + 1) % count
            return fallback[1]
        return None

    def _sample_unsynced(self) -> list[int]:
        """A few unsynced buckets to test peers against (cheap, not exhaustive)."""
        sample = []
        for bucket in self.unsynced:
            sample.append(bucket)
            if len(sample) == 8:
                break
        return sample

    def _start_round(self, peer: str, now_ms: int, wall_ms: int) -> None:
        buckets, set_hash = self.layout.shared(peer)
        if not buckets:
            return
        self._round_number = (self._round_number + 1) % codec.ROUND_LIMIT
        round_ = _Round(self._round_number, peer, now_ms, buckets)
        self._round = round_
        self.stats.rounds_started += 1
        root = sum(self._group_sums(buckets)) & DIGEST_MASK
        self._queue(peer, [codec.SYNC, round_.number, set_hash, root])

    def _group_sums(self, buckets: list[int]) -> list[int]:
        """Our sums per group over ``buckets`` (masked)."""
        sums = [0] * GROUP_COUNT
        bucket_sum = self.store.summaries.bucket_sum
        for bucket in buckets:
            sums[bucket // GROUP_SIZE] += bucket_sum(bucket)
        return [total & DIGEST_MASK for total in sums]

    def _on_same(self, round_: _Round, now_ms: int) -> None:
        self.stats.rounds_agreed += 1
        self._suspects.pop(round_.peer, None)
        for bucket in round_.buckets:
            self._synced(round_.peer, bucket)
        self._round = None

    def _on_groups(self, round_: _Round, their_sums: list[int], now_ms: int) -> None:
        ours = self._group_sums(round_.buckets)
        differing = [group for group in range(GROUP_COUNT) if ours[group] != their_sums[group]]
        if not differing:  # equal by now: writes landed on both meanwhile
            self._on_same(round_, now_ms)
            return
        differing_set = set(differing)
        for bucket in round_.buckets:  # equal groups: those buckets agree
            if bucket // GROUP_SIZE not in differing_set:
                self._settled(round_.peer, bucket)
        limit = self.config.groups_per_round_max
        if len(differing) > limit:
            # Start where the last capped round with this peer stopped, so no group is
            # starved; come back soon until a pass over the groups is complete.
            cursor = self._group_cursors.get(round_.peer, 0)
            after = [group for group in differing if group >= cursor]
            chosen = after[:limit]
            if len(chosen) < limit:  # the pass wraps around: complete
                chosen += differing[: limit - len(chosen)]
                self._group_cursors.pop(round_.peer, None)
            else:
                self._group_cursors[round_.peer] = chosen[-1] + 1
                round_.more = True
            differing = chosen
        self._queue(round_.peer, [codec.SUMS_REQ, round_.number, sorted(differing)])

    def _on_sums(self, round_: _Round, their_sums: list, now_ms: int, wall_ms: int) -> None:
        peer = round_.peer
        bucket_sum = self.store.summaries.bucket_sum
        suspects = self._suspects.setdefault(peer, {})
        explained = self._explained.get(peer, {})
        confirm_before_ms = now_ms - self.config.confirm_ms
        confirmed: list[int] = []
        waiting = False
        for bucket, theirs in their_sums:
            if bucket not in round_.bucket_set:
                continue
            ours = bucket_sum(bucket)
            if ours == theirs:
                self._settled(peer, bucket)
                continue
            self.stats.buckets_differing += 1
            if explained.get(bucket) == (ours, theirs):
                self._synced(peer, bucket)  # a full exchange found nothing to copy
                continue
            round_.sums[bucket] = (ours, theirs)
            if bucket in self.unsynced or bucket in self.handoff.get(peer, ()):
                confirmed.append(bucket)  # the copy is missing, not a write in flight
                continue
            first_seen_ms = suspects.get(bucket)
            if first_seen_ms is None:
                suspects[bucket] = now_ms
                waiting = True
            elif first_seen_ms <= confirm_before_ms:
                confirmed.append(bucket)
            else:
                waiting = True
        if waiting:
            self._follow_up(peer, now_ms + self.config.confirm_ms)
        self._send_listing(round_, confirmed, now_ms, wall_ms)

    def _send_listing(self, round_: _Round, buckets: list[int], now_ms: int, wall_ms: int):
        config = self.config
        if not buckets:
            self._finish(round_, now_ms)
            return
        self.stats.buckets_confirmed += len(buckets)
        items = []
        listed_entries = 0
        for index, bucket in enumerate(buckets):
            if index >= config.buckets_per_round_max or listed_entries >= config.keys_per_round_max:
                round_.more = True
                break
            entries = self.store.bucket_entries(bucket, wall_ms)
            listed_entries += len(entries)
            hashed = []
            for key, version, expires_at_ms, tombstone in entries:
                hashed_key = key_hash(key)
                round_.keys_by_hash[hashed_key] = key
                hashed.append((hashed_key, version, expires_at_ms, tombstone))
            hashed.sort()
            evicted_stamp = self.store.evicted_stamp(bucket)
            for lo, hi, chunk in _ranges(hashed, config.listing_entries_max):
                listing = []
                for fields in chunk:
                    listing.extend(codec.listing_fields(*fields))
                items.append([bucket, lo, hi, evicted_stamp, listing])
                round_.listed[(bucket, lo)] = False
        self.stats.keys_listed += listed_entries
        self._queue(round_.peer, [codec.KEYS, round_.number, items])

    def _on_entries(self, round_: _Round, message: tuple, now_ms: int, wall_ms: int) -> None:
        _, _, entries, last, pull, complete = message
        self._apply_entries(round_.peer, entries, wall_ms, round_)
        if not last:
            return
        # Push what the peer asked for, within the round's byte budget.
        keys_by_hash = round_.keys_by_hash
        lookup = self.store.lookup
        fields: list = []
        size = 0
        budget = self.config.bytes_per_round_max
        for hashed_key in pull:
            key = keys_by_hash.get(hashed_key)
            if key is None:
                self.stats.unexpected_messages += 1
                continue
            bucket = bucket_of(key)
            round_.pulled[bucket] = round_.pulled.get(bucket, 0) + 1
            if size >= budget:
                round_.more = True
                continue
            entry = lookup(key, wall_ms)
            if entry is None:
                continue
            value, version, expires_at_ms = entry
            fields.extend(codec.entry_fields(key, value, version, expires_at_ms))
            size += len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD_BYTES
            self.stats.keys_sent += 1
            if size >= PAYLOAD_SIZE_BYTES_TARGET:
                self._queue(round_.peer, [codec.PUSH, round_.number, fields])
                self._flush(round_.peer)
                fields = []
                size -= PAYLOAD_SIZE_BYTES_TARGET
        if fields:
            self._queue(round_.peer, [codec.PUSH, round_.number, fields])
        listed = round_.listed
        for bucket, hash_lo in complete:
            if (bucket, hash_lo) in listed:
                listed[(bucket, hash_lo)] = True
        buckets_complete: dict[int, bool] = {}
        for (bucket, _), done in listed.items():
            buckets_complete[bucket] = buckets_complete.get(bucket, True) and done
        peer = round_.peer
        suspects = self._suspects.get(peer, {})
        for bucket, done in buckets_complete.items():
            if not done:
                round_.more = True
                continue
            suspects.pop(bucket, None)
            self._synced(peer, bucket)
            if not round_.received.get(bucket) and not round_.pulled.get(bucket):
                # Nothing to copy either way, yet the sums differ: remember why not to look
                # again until a sum moves.
                self._explained.setdefault(peer, {})[bucket] = round_.sums[bucket]
                self.stats.buckets_explained += 1
        self.stats.rounds_repaired += 1
        self._finish(round_, now_ms)

    def _finish(self, round_: _Round, now_ms: int) -> None:
        self._round = None
        if round_.more:
            self._follow_up(round_.peer, now_ms + max(1, 1000 // self.config.rounds_per_s_max))

    def _follow_up(self, peer: str, at_ms: int) -> None:
        due_ms = self._followups.get(peer)
        if due_ms is None or at_ms < due_ms:
            self._followups[peer] = at_ms

    def _settled(self, peer: str, bucket: int) -> None:
        """``bucket`` agrees with ``peer``'s copy."""
        suspects = self._suspects.get(peer)
        if suspects:
            suspects.pop(bucket, None)
        self._synced(peer, bucket)

    def _synced(self, peer: str, bucket: int) -> None:
        handoff = self.handoff.get(peer)
        if handoff is not None:
            handoff.discard(bucket)
            if not handoff:
                del self.handoff[peer]
        if bucket in self.unsynced and self.layout.serves(peer, bucket):
            self.unsynced.discard(bucket)
            self.stats.buckets_synced += 1
            if self.on_synced is not None:
                self.on_synced(bucket)

    # -- responding ----------------------------------------------------------------------------

    def _serve_sync(self, source: str, message: tuple) -> None:
        _, number, set_hash, root = message
        layout = self.layout
        if layout is None or not self.serving:
            self._queue(source, [codec.BUSY, number, codec.BUSY_NOT_READY])
            return
        buckets, my_hash = layout.shared(source)
        if my_hash != set_hash or not buckets:
            self._queue(source, [codec.BUSY, number, codec.BUSY_OTHER_VIEW])
            return
        self.stats.rounds_served += 1
        sums = self._group_sums(buckets)
        if sum(sums) & DIGEST_MASK == root:
            self._queue(source, [codec.SAME, number])
        else:
            self._queue(source, [codec.GROUPS, number, sums])

    def _serve_sums(self, source: str, message: tuple) -> None:
        _, number, groups = message
        layout = self.layout
        if layout is None or not self.serving:
            self._queue(source, [codec.BUSY, number, codec.BUSY_NOT_READY])
            return
        wanted = set(groups)
        bucket_sum = self.store.summaries.bucket_sum
        flat = []
        for bucket in layout.shared(source)[0]:
            if bucket // GROUP_SIZE in wanted:
                flat.append(bucket)
                flat.append(bucket_sum(bucket))
        self._queue(source, [codec.SUMS, number, flat])

    def _serve_keys(self, source: str, message: tuple, wall_ms: int) -> None:
        _, number, ranges = message
        layout = self.layout
        if layout is None or not self.serving:
            self._queue(source, [codec.BUSY, number, codec.BUSY_NOT_READY])
            return
        store = self.store
        budget = self.config.bytes_per_round_max
        size = 0
        fields: list = []
        pull: list[int] = []
        complete: list[int] = []
        for bucket, hash_lo, hash_last, their_evicted_stamp, listing in ranges:
            if not layout.shares(source, bucket):
                self.stats.unexpected_messages += 1
                continue
            theirs = {entry[0]: entry for entry in listing}
            my_evicted_stamp = store.evicted_stamp(bucket)
            whole = True
            for key, version, _expires_at_ms, tombstone in store.bucket_entries(bucket, wall_ms):
                hashed_key = key_hash(key)
                if not hash_lo <= hashed_key <= hash_last:
                    continue
                their = theirs.pop(hashed_key, None)
                if their is not None:
                    their_version = their[1]
                    if their_version > version:
                        pull.append(hashed_key)
                    if their_version >= version:
                        continue
                elif not tombstone and version >> 64 <= their_evicted_stamp:
                    self.stats.keys_withheld_evicted += 1  # they may have evicted it
                    continue
                if size >= budget:
                    whole = False
                    continue
                entry = store.lookup(key, wall_ms)
                if entry is None:
                    continue
                value = entry[0]
                fields.extend(codec.entry_fields(key, value, entry[1], entry[2]))
                size += len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD_BYTES
                self.stats.keys_sent += 1
                if size >= PAYLOAD_SIZE_BYTES_TARGET:
                    self._queue(source, [codec.ENTRIES, number, fields, False, [], []])
                    self._flush(source)
                    fields = []
                    budget -= size
                    size = 0
            for hashed_key, version, _, tombstone in theirs.values():
                if not tombstone and version >> 64 <= my_evicted_stamp:
                    self.stats.keys_withheld_evicted += 1  # we may have evicted it
                    continue
                pull.append(hashed_key)
            if whole:
                complete.extend((bucket, hash_lo))
        self._queue(source, [codec.ENTRIES, number, fields, True, pull, complete])

    # -- applying ----------------------------------------------------------------------------

    def _apply_entries(
        self, source: str, entries: list, wall_ms: int, round_: _Round | None
    ) -> None:
        """Apply entries a peer sent (newer wins), only for buckets we share with it."""
        layout = self.layout
        if layout is None:
            return
        store = self.store
        # Versions are ``stamp << 64 | tag`` with ``stamp = wall_ms << 16 | logical``
        # (gossipcache/hlc.py): refuse wall parts more than the clock bound ahead of ours.
        version_limit = (wall_ms + self.config.max_clock_offset_ms + 1) << (64 + _LOGICAL_BITS)
        for key, value, version, expires_at_ms in entries:
            bucket = bucket_of(key)
            if not layout.shares(source, bucket):
                self.stats.unexpected_messages += 1
                continue
            if round_ is not None:
                round_.received[bucket] = round_.received.get(bucket, 0) + 1
            if version >= version_limit:
                self.stats.entries_refused += 1
                continue
            try:
                outcome = store.apply(key, value, version, expires_at_ms, wall_ms)
            except GossipCacheError:
                self.stats.entries_refused += 1
                continue
            if outcome != APPLY_STALE:
                self.stats.keys_repaired += 1

    # -- output --------------------------------------------------------------------------------

    def _queue(self, peer: str, message: list) -> None:
        self._outgoing.setdefault(peer, []).append(message)

    def _flush(self, peer: str) -> None:
        messages = self._outgoing.pop(peer, None)
        if messages:
            self._emit(peer, messages)

    def _emit(self, peer: str, messages: list[list]) -> None:
        payload = codec.encode_payload(messages)
        self.stats.bytes_sent += len(payload)
        self._outbox.append(Outgoing(peer, Channel.STREAM, payload))


def _ranges(hashed: list[tuple], entries_max: int):
    """``(hash_lo, hash_last, entries)`` splitting sorted ``hashed`` into ranges of at most
    ``entries_max`` entries that cover the whole hash space (``hash_last`` inclusive)."""
    if len(hashed) <= entries_max:
        yield 0, _HASH_LIMIT - 1, hashed
        return
    lo = 0
    for start in range(0, len(hashed), entries_max):
        chunk = hashed[start : start + entries_max]
        end = start + entries_max
        last = hashed[end][0] - 1 if end < len(hashed) else _HASH_LIMIT - 1
        yield lo, last, chunk
        lo = last + 1
