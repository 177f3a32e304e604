"""Which members own each bucket: weighted rendezvous (HRW) ranking per bucket, cached.

For every one of the 16384 buckets, every member gets a score from a 64-bit mmh3 hash of
(bucket, node id) -- murmur3 x64-128 of the node id with the bucket as seed, first 64 bits --
mapped to ``u`` in (0, 1) and weighted logarithmically: ``score = weight / -ln(u)``
(Schindelhauer and Schomaker's weighted rendezvous), so a member with twice the weight wins about
twice the buckets. Members rank by score, highest first; equal scores rank the smaller node id
first. The owners of a bucket are the first ``R`` members of its ranking taken in three passes:

1. members whose zone is not yet among the owners (one per zone, the best-ranked of each);
2. then members whose host is not yet among the owners;
3. then any member not yet an owner (fewer hosts than ``R``: a one-machine cluster still gets
   ``R`` replicas on distinct node processes).

A host has one zone: the zone advertised by its member with the smallest node id (members of a
host that disagree cannot split it across zones, and the choice is the same on every node).
Members without a zone share one unnamed zone. Owners are listed in pass order, so the first
owner (the primary) is always the top-ranked member.

Everything a lookup needs is computed ahead, so ``owners_of_key`` is one CRC16 and one list
index. Rebuilding a table costs 16384 x N scores (about half a second at N = 100 in CPython),
too long for one step of an event loop, so every change goes through a :class:`PlacementBuild`
that does bounded work per :meth:`PlacementBuild.step`. A join recomputes only the buckets the
newcomer enters; a leave only the buckets the leaver owned (see :meth:`Placement.begin_add`).
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

import mmh3

from ..limits import (
    PLACEMENT_MEMBERS_MAX,
    PLACEMENT_NAME_SIZE_BYTES_MAX,
    PLACEMENT_REPLICAS_MAX,
    PLACEMENT_WEIGHT_MAX,
    PLACEMENT_WEIGHT_MIN,
)
from .buckets import BUCKET_COUNT, bucket_of

__all__ = [
    "STEP_SCORES_DEFAULT",
    "Placement",
    "PlacementBuild",
    "PlacementMember",
    "placement_epoch",
]

#: Work a build does per step by default, in scores (one mmh3 hash and one log, ~0.35 us of
#: CPython): about 3-5 ms on the shared machine (docs/benchmarks.md, "Placement"), inside the
#: loop's ~10 ms budget for one step with room for a slow machine.
STEP_SCORES_DEFAULT = 8192
#: What ranking one bucket costs beyond its N scores (sorting, picking, the owner tuple), in
#: scores: measured ~5 us a bucket at N = 3, i.e. ~15 scores.
_BUCKET_OVERHEAD_SCORES = 16

# Positional call (key, seed) -> (h1, h2) as unsigned 64-bit ints; keyword parsing costs time.
_hash_pair = mmh3.mmh3_x64_128_utupledigest
_log = math.log
# u = (top 53 bits of the hash + 0.5) / 2**53: exactly representable, never 0 and never 1.
_U_SCALE = 2.0**-53
_EPOCH_FORMAT = b"gossipcache placement epoch v1"


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value.encode()) > PLACEMENT_NAME_SIZE_BYTES_MAX:
        raise ValueError(f"{what} is longer than {PLACEMENT_NAME_SIZE_BYTES_MAX} bytes")


@dataclass(frozen=True, slots=True)
class PlacementMember:
    """One member as placement sees it.

    ``weight`` is the member's capacity in any unit shared by all members (the node's memory
    limit in bytes, say); only ratios matter.
    """

    node_id: str
    host_id: str
    zone: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_name("node_id", self.node_id)
        _check_name("host_id", self.host_id)
        if self.zone is not None:
            _check_name("zone", self.zone)
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError("weight must be a number")
        if not PLACEMENT_WEIGHT_MIN <= weight <= PLACEMENT_WEIGHT_MAX:  # NaN fails too
            raise ValueError(f"weight must be in {PLACEMENT_WEIGHT_MIN}..{PLACEMENT_WEIGHT_MAX}")


def placement_epoch(members: Iterable[PlacementMember], replicas: int) -> int:
    """A 64-bit fingerprint of the member set and ``replicas``.

    Two nodes with the same epoch rank every bucket the same way. It hashes a canonical byte
    string (members sorted by id, lengths prefixed, the weight as an IEEE double), never
    Python's ``hash``, so it is the same in every process whatever PYTHONHASHSEED is.
    """
    parts = [_EPOCH_FORMAT, struct.pack(">I", replicas)]
    for member in sorted(members, key=lambda m: m.node_id):
        for name in (member.node_id, member.host_id):
            encoded = name.encode()
            parts.append(struct.pack(">H", len(encoded)) + encoded)
        if member.zone is None:
            parts.append(b"\xff\xff")  # longer than any name: cannot collide with a zone
        else:
            encoded = member.zone.encode()
            parts.append(struct.pack(">H", len(encoded)) + encoded)
        parts.append(struct.pack(">d", float(member.weight)))
    return _hash_pair(b"".join(parts), 0)[0]


class _Ranker:
    """A member set prepared for scoring: sorted by id, hosts and zones as small integers."""

    __slots__ = (
        "host_count",
        "host_zone",
        "hosts",
        "id_bytes",
        "members",
        "node_ids",
        "replicas",
        "weights",
        "zone_count",
        "zones",
    )

    def __init__(self, members: Iterable[PlacementMember], replicas: int) -> None:
        ordered = tuple(sorted(members, key=lambda m: m.node_id))
        if not ordered:
            raise ValueError("a placement needs at least one member")
        if len(ordered) > PLACEMENT_MEMBERS_MAX:
            raise ValueError(f"more than {PLACEMENT_MEMBERS_MAX} members")
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            raise ValueError("replicas must be an integer")
        if not 1 <= replicas <= PLACEMENT_REPLICAS_MAX:
            raise ValueError(f"replicas must be 1..{PLACEMENT_REPLICAS_MAX}")
        for before, after in zip(ordered, ordered[1:], strict=False):
            if before.node_id == after.node_id:
                raise ValueError(f"duplicate node_id {after.node_id!r}")
        self.members = ordered
        self.replicas = replicas
        self.node_ids = [m.node_id for m in ordered]
        self.id_bytes = [m.node_id.encode() for m in ordered]
        self.weights = [float(m.weight) for m in ordered]
        # A host's zone is its smallest-id member's (members come sorted by id).
        self.host_zone: dict[str, str | None] = {}
        for member in ordered:
            self.host_zone.setdefault(member.host_id, member.zone)
        host_index = {host: i for i, host in enumerate(self.host_zone)}
        zone_index: dict[str | None, int] = {}
        for zone in self.host_zone.values():
            zone_index.setdefault(zone, len(zone_index))
        self.hosts = [host_index[m.host_id] for m in ordered]
        self.zones = [zone_index[self.host_zone[m.host_id]] for m in ordered]
        self.host_count = len(host_index)
        self.zone_count = len(zone_index)

    def scores(self, bucket: int) -> list[float]:
        return [
            weight / -_log(((_hash_pair(id_bytes, bucket)[0] >> 11) + 0.5) * _U_SCALE)
            for id_bytes, weight in zip(self.id_bytes, self.weights, strict=True)
        ]

    def owners(self, bucket: int) -> tuple[list[int], float, int]:
        """Owner indices of ``bucket`` in pass order, and the score and index of the
        lowest-ranked owner (what a newcomer must beat to enter)."""
        scores = self.scores(bucket)
        # Stable sort of id-sorted members, reversed: equal scores keep the smaller id first.
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        wanted = min(self.replicas, len(order))
        if self.zone_count == 1 and self.host_count == len(order):
            picked = order[:wanted]  # every member on its own host, no zones: the top R
        else:
            picked = self._spread(order, wanted)
        floor = max(picked, key=order.index)
        return picked, scores[floor], floor

    def _spread(self, order: list[int], wanted: int) -> list[int]:
        hosts, zones = self.hosts, self.zones
        picked: list[int] = []
        used_zones: set[int] = set()
        used_hosts: set[int] = set()
        for i in order:  # pass 1: new zones (a host has one zone, so new hosts too)
            if zones[i] not in used_zones:
                picked.append(i)
                used_zones.add(zones[i])
                used_hosts.add(hosts[i])
                if len(picked) == wanted:
                    return picked
        for i in order:  # pass 2: new hosts
            if hosts[i] not in used_hosts:
                picked.append(i)
                used_hosts.add(hosts[i])
                if len(picked) == wanted:
                    return picked
        chosen = set(picked)
        for i in order:  # pass 3: distinct nodes
            if i not in chosen:
                picked.append(i)
                if len(picked) == wanted:
                    break
        return picked


class Placement:
    """The owners of every bucket for one member set and replica count ``R``.

    Immutable: changes return a new table (through a :class:`PlacementBuild`). Lookups are O(1).
    """

    __slots__ = ("_floor_ids", "_floor_scores", "_owners", "_ranker", "epoch")

    def __init__(
        self,
        ranker: _Ranker,
        owners: list[tuple[str, ...]],
        floor_scores: array,
        floor_ids: list[str],
    ) -> None:
        self._ranker = ranker
        self._owners = owners
        # Per bucket, the lowest-ranked owner's score and id: a join compares against them.
        self._floor_scores = floor_scores
        self._floor_ids = floor_ids
        self.epoch = placement_epoch(ranker.members, ranker.replicas)

    @classmethod
    def build(cls, members: Iterable[PlacementMember], replicas: int) -> Placement:
        """The whole table at once (blocks for 16384 x N scores; see :meth:`begin_build`)."""
        return cls.begin_build(members, replicas).run()

    @staticmethod
    def begin_build(members: Iterable[PlacementMember], replicas: int) -> PlacementBuild:
        """A full build to run in slices with :meth:`PlacementBuild.step`."""
        return PlacementBuild(_Ranker(members, replicas))

    @property
    def members(self) -> tuple[PlacementMember, ...]:
        """The member set, sorted by node id."""
        return self._ranker.members

    @property
    def replicas(self) -> int:
        return self._ranker.replicas

    def owners_of_bucket(self, bucket: int) -> tuple[str, ...]:
        """Node ids owning ``bucket``: min(R, N) of them, the primary first."""
        return self._owners[bucket]

    def owners_of_key(self, key: bytes) -> tuple[str, ...]:
        return self._owners[bucket_of(key)]

    def primary_of_key(self, key: bytes) -> str:
        return self._owners[bucket_of(key)][0]

    def bucket_counts(self, *, primary_only: bool = False) -> dict[str, int]:
        """Buckets each member owns (as any replica, or as primary), every member listed."""
        counts = dict.fromkeys(self._ranker.node_ids, 0)
        for owners in self._owners:
            for node_id in owners[:1] if primary_only else owners:
                counts[node_id] += 1
        return counts

    def begin_add(self, member: PlacementMember) -> PlacementBuild:
        """The table with ``member`` joined, computed in slices.

        A bucket changes only if the newcomer enters its owners, and it can enter only by
        outranking the bucket's lowest-ranked owner -- unless it brings a zone or host the
        owners lack while the cluster has fewer than R of those (then it enters everywhere), or
        it changes a host's zone. Every other bucket is copied after one score (the newcomer's);
        the others are recomputed from scratch, so the result equals a full rebuild exactly.
        """
        old = self._ranker
        if member.node_id in old.node_ids:
            raise ValueError(f"node_id {member.node_id!r} is already a member")
        new = _Ranker((*old.members, member), old.replicas)
        every_bucket = (
            len(old.members) < old.replicas
            or (member.host_id not in old.host_zone and old.host_count < old.replicas)
            or (
                new.host_zone[member.host_id] not in old.host_zone.values()
                and old.zone_count < old.replicas
            )
            or _zones_moved(old, new)
        )
        return PlacementBuild(new, base=self, added=None if every_bucket else member)

    def with_member_added(self, member: PlacementMember) -> Placement:
        return self.begin_add(member).run()

    def begin_remove(self, node_id: str) -> PlacementBuild:
        """The table with ``node_id`` gone, computed in slices: only the buckets it owned are
        recomputed (a member that owns nothing was passed over everywhere), unless its leaving
        changes a host's zone."""
        old = self._ranker
        if node_id not in old.node_ids:
            raise ValueError(f"node_id {node_id!r} is not a member")
        new = _Ranker((m for m in old.members if m.node_id != node_id), old.replicas)
        if _zones_moved(old, new):
            return PlacementBuild(new, base=self)
        return PlacementBuild(new, base=self, removed=node_id)

    def with_member_removed(self, node_id: str) -> Placement:
        return self.begin_remove(node_id).run()


def _zones_moved(old: _Ranker, new: _Ranker) -> bool:
    """True when a host present before and after changed zone (its smallest-id member changed)."""
    return any(
        old.host_zone[host] != zone for host, zone in new.host_zone.items() if host in old.host_zone
    )


class PlacementBuild:
    """A table being computed, a bounded slice of buckets per :meth:`step`.

    Without a base it computes every bucket; with a base and ``added`` / ``removed`` it copies
    the buckets the change cannot touch. A node calls ``step`` from its loop until it returns
    True, then takes :meth:`result`; lookups keep using the old table meanwhile.
    """

    __slots__ = (
        "_added",
        "_added_bytes",
        "_added_weight",
        "_base",
        "_floor_ids",
        "_floor_scores",
        "_interned",
        "_next_bucket",
        "_owners",
        "_ranker",
        "_removed",
        "_result",
    )

    def __init__(
        self,
        ranker: _Ranker,
        *,
        base: Placement | None = None,
        added: PlacementMember | None = None,
        removed: str | None = None,
    ) -> None:
        self._ranker = ranker
        self._base = base
        self._added = added
        self._removed = removed
        self._added_bytes = added.node_id.encode() if added is not None else b""
        self._added_weight = float(added.weight) if added is not None else 0.0
        if base is not None and (added is not None or removed is not None):
            self._owners = list(base._owners)
            self._floor_scores = array("d", base._floor_scores)
            self._floor_ids = list(base._floor_ids)
        else:
            self._owners = [()] * BUCKET_COUNT
            self._floor_scores = array("d", bytes(8 * BUCKET_COUNT))
            self._floor_ids = [""] * BUCKET_COUNT
        # Many buckets share an owner list when N is small: keep one tuple per distinct list.
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._next_bucket = 0
        self._result: Placement | None = None

    @property
    def done(self) -> bool:
        return self._next_bucket >= BUCKET_COUNT

    def step(self, scores_max: int = STEP_SCORES_DEFAULT) -> bool:
        """Work through buckets until about ``scores_max`` scores' worth of work is done (a
        bucket costs its N scores plus a fixed overhead; one skipped by a join or leave costs 1-2;
        a bucket is never split, so a step may run one bucket over). True when finished."""
        ranker = self._ranker
        member_count = len(ranker.node_ids)
        added, removed = self._added, self._removed
        added_bytes, added_weight = self._added_bytes, self._added_weight
        owners, floor_scores, floor_ids = self._owners, self._floor_scores, self._floor_ids
        bucket = self._next_bucket
        spent = 0
        while bucket < BUCKET_COUNT and spent < scores_max:
            if added is not None:
                spent += 2  # the newcomer's score and the comparison
                score = added_weight / -_log(
                    ((_hash_pair(added_bytes, bucket)[0] >> 11) + 0.5) * _U_SCALE
                )
                floor = floor_scores[bucket]
                enters = score > floor or (score == floor and added.node_id < floor_ids[bucket])
                if not enters:
                    bucket += 1
                    continue
            elif removed is not None and removed not in owners[bucket]:
                spent += 1
                bucket += 1
                continue
            picked, floor_score, floor_index = ranker.owners(bucket)
            spent += member_count + _BUCKET_OVERHEAD_SCORES
            names = tuple(ranker.node_ids[i] for i in picked)
            owners[bucket] = self._interned.setdefault(names, names)
            floor_scores[bucket] = floor_score
            floor_ids[bucket] = ranker.node_ids[floor_index]
            bucket += 1
        self._next_bucket = bucket
        return bucket >= BUCKET_COUNT

    def run(self) -> Placement:
        """Finish in one go and return the table."""
        while not self.step(scores_max=1 << 30):
            pass
        return self.result()

    def result(self) -> Placement:
        if not self.done:
            raise RuntimeError("the placement build has not finished")
        if self._result is None:
            self._result = Placement(
                self._ranker, self._owners, self._floor_scores, self._floor_ids
            )
        return self._result
