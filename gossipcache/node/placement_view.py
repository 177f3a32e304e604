"""The node's placement table, kept up to date with the membership in bounded steps.

The node core tells the view which members placement should use (``update``: the live ones,
with the host, zone and capacity their metadata advertises) whenever membership changes, and
runs ``step`` from its ``tick`` while the view is ``busy``. Building a table costs 16384 scores
per member (about 0.7 s at 100 members), far more than one turn of the event loop may take, so
it is done in slices of at most ``STEP_SCORES_DEFAULT`` scores; a single join or leave uses the
incremental build, which recomputes only the buckets that can change. Until a build completes,
``table`` is the previous complete table: lookups are never served from a half-built one.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..limits import PLACEMENT_MEMBERS_MAX
from ..placement import (
    BUCKET_COUNT,
    STEP_SCORES_DEFAULT,
    Placement,
    PlacementBuild,
    PlacementMember,
)


class PlacementView:
    """The current complete ``table``, the member set wanted, and the build in between."""

    def __init__(self, replicas: int, own: PlacementMember) -> None:
        self.replicas = replicas
        self.own_id = own.node_id
        self._wanted: dict[str, PlacementMember] = {own.node_id: own}
        self._build: PlacementBuild | None = None
        #: The current complete table; None until the first build (run from the first ticks,
        #: so constructing a node costs nothing) completes.
        self.table: Placement | None = None
        self._current: dict[str, PlacementMember] = {}
        #: Buckets this node holds a replica of, and is the primary of, in ``table``.
        self.buckets_owned = 0
        self.buckets_primary = 0
        #: ``owned[bucket]`` is 1 when this node is one of the bucket's owners in ``table``
        #: (all 1 before the first table: the node alone owns everything). The read fast path
        #: tests it instead of searching the owner tuple. All 0 while ``joined`` is False.
        self.owned = bytearray(b"\x01" * BUCKET_COUNT)
        self._joined = True
        self._complete = True
        #: Tables completed since start, and members left out over the cap.
        self.builds_completed = 0
        self.members_over_cap = 0
        self.busy = True

    @property
    def joined(self) -> bool:
        """False while a node started with seeds has not seen another member: it owns nothing
        it may serve from (the coordinator refuses data commands meanwhile)."""
        return self._joined

    @joined.setter
    def joined(self, joined: bool) -> None:
        self._joined = joined
        self._refresh_owned()

    @property
    def complete(self) -> bool:
        """False while this node's copies are incomplete (it is being filled): ``owned`` is
        then all 0, so no read is served from them."""
        return self._complete

    @complete.setter
    def complete(self, complete: bool) -> None:
        if complete != self._complete:
            self._complete = complete
            self._refresh_owned()

    def _refresh_owned(self) -> None:
        table = self.table
        if not self._joined or not self._complete:
            self.owned = bytearray(BUCKET_COUNT)
        elif table is None:
            self.owned = bytearray(b"\x01" * BUCKET_COUNT)
        else:
            own = self.own_id
            self.owned = bytearray(
                own in table.owners_of_bucket(bucket) for bucket in range(BUCKET_COUNT)
            )

    @property
    def epoch(self) -> int | None:
        """The epoch of the current table (equal on nodes that agree on the members)."""
        return None if self.table is None else self.table.epoch

    def _refresh_busy(self) -> None:
        #: A build is under way, or the table's members are not the ones wanted. A plain
        #: attribute: the reactor reads it (through ``next_deadline_ms``) on every pass.
        self.busy = self._build is not None or self._current != self._wanted

    def update(self, members: Iterable[PlacementMember]) -> None:
        """Placement should use ``members`` (this node is always among them). Over
        ``PLACEMENT_MEMBERS_MAX``, the members with the smallest ids are kept (every node keeps
        the same ones) and the rest counted."""
        wanted = {member.node_id: member for member in members}
        if len(wanted) > PLACEMENT_MEMBERS_MAX:
            kept = sorted(wanted)[:PLACEMENT_MEMBERS_MAX]
            if self.own_id not in kept:
                kept[-1] = self.own_id
            self.members_over_cap = len(wanted) - len(kept)
            wanted = {node_id: wanted[node_id] for node_id in kept}
        else:
            self.members_over_cap = 0
        self._wanted = wanted
        self._refresh_busy()

    def step(self, scores_max: int = STEP_SCORES_DEFAULT) -> None:
        """Do at most about ``scores_max`` scores of work toward the wanted table."""
        if self._build is None:
            if self._current == self._wanted:
                self._refresh_busy()
                return
            self._build = self._begin()
        self._build.step(scores_max)
        if self._build.done:
            self._install(self._build.result())
            self._build = None
            self.builds_completed += 1
            self._refresh_busy()  # the wanted set may have moved on meanwhile

    def _begin(self) -> PlacementBuild:
        """One join or one leave (nothing else changed): incremental; else a full build."""
        current, wanted = self._current, self._wanted
        added = wanted.keys() - current.keys()
        removed = current.keys() - wanted.keys()
        changed = any(
            current[node_id] != wanted[node_id] for node_id in current.keys() & wanted.keys()
        )
        if self.table is not None and not changed and len(added) + len(removed) == 1:
            if added:
                return self.table.begin_add(wanted[added.pop()])
            return self.table.begin_remove(removed.pop())
        return Placement.begin_build(wanted.values(), self.replicas)

    def _install(self, table: Placement) -> None:
        self.table = table
        self._current = {member.node_id: member for member in table.members}
        self.buckets_owned = table.bucket_counts().get(self.own_id, 0)
        self._refresh_owned()
        self.buckets_primary = table.bucket_counts(primary_only=True).get(self.own_id, 0)
