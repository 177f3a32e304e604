"""Placement tables computed per bucket on demand, for simulated clusters with few keys.

A real node builds its whole placement table (16384 buckets ranked over the members) on every
membership change, in slices of ``STEP_SCORES_DEFAULT`` scores per tick. In a simulated
5-node cluster that churns (joins at start, crashes, restarts with new ids) those builds are
about 90 % of the CPU a run costs -- while a workload over a few dozen keys looks up a few
dozen buckets. ``LazyPlacement`` ranks a bucket the first time it is asked, with the same
ranking code (``rendezvous._Ranker.owners``) a full build runs, so every answer equals the full
table's (``tests/test_sim_replication.py`` compares them).

``LazyPlacementView`` keeps the view's timing: a change still takes as many ticks to install as
the full build's slices would (``build_steps``), so nodes still run on their previous table for
a while after a membership change, as real ones do. What it gives up: ``buckets_owned`` and
``buckets_primary`` (stats only) stay 0, and incremental builds are not exercised (their
equality with full builds is tested in tests/test_placement.py).

``LazyPlacementObserver`` switches each node a ``node_factory`` builds to the lazy view (pass it
in ``observers``), before the node's first tick.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from gossipcache.node.placement_view import PlacementView
from gossipcache.placement import BUCKET_COUNT, STEP_SCORES_DEFAULT, Placement, PlacementMember
from gossipcache.placement.rendezvous import _BUCKET_OVERHEAD_SCORES, _Ranker

from .node import SimNode


class _LazyOwners:
    """The owner tuples of every bucket, each computed on first access and kept."""

    __slots__ = ("_ranker", "_known")

    def __init__(self, ranker: _Ranker) -> None:
        self._ranker = ranker
        self._known: dict[int, tuple[str, ...]] = {}

    def __getitem__(self, bucket: int) -> tuple[str, ...]:
        owners = self._known.get(bucket)
        if owners is None:
            if not 0 <= bucket < BUCKET_COUNT:
                raise IndexError(bucket)
            ranker = self._ranker
            picked = ranker.owners(bucket)[0]
            owners = self._known[bucket] = tuple(ranker.node_ids[i] for i in picked)
        return owners

    def __len__(self) -> int:
        return BUCKET_COUNT

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return (self[bucket] for bucket in range(BUCKET_COUNT))

    @property
    def computed(self) -> int:
        """Buckets ranked so far."""
        return len(self._known)


class LazyPlacement(Placement):
    """A ``Placement`` whose buckets are ranked when first looked up (module docstring).
    Incremental changes (``begin_add`` / ``begin_remove``) are not supported: they would rank
    every bucket; the lazy view builds a new table per member set instead."""

    __slots__ = ()

    def __init__(self, members: Iterable[PlacementMember], replicas: int) -> None:
        ranker = _Ranker(members, replicas)
        super().__init__(ranker, _LazyOwners(ranker), array("d"), [])  # type: ignore[arg-type]

    @property
    def buckets_computed(self) -> int:
        """Buckets ranked so far (for tests)."""
        return self._owners.computed  # type: ignore[attr-defined]

    def begin_add(self, member: PlacementMember):  # type: ignore[override]
        raise NotImplementedError("a lazy placement is rebuilt, not extended")

    def begin_remove(self, node_id: str):  # type: ignore[override]
        raise NotImplementedError("a lazy placement is rebuilt, not shrunk")


def build_steps(member_count: int) -> int:
    """Steps a full build of ``member_count`` members takes at the default step budget."""
    work = BUCKET_COUNT * (member_count + _BUCKET_OVERHEAD_SCORES)
    return -(-work // STEP_SCORES_DEFAULT)


class LazyPlacementView(PlacementView):
    """A ``PlacementView`` installing ``LazyPlacement`` tables after as many steps as a full
    build would take. Set as the class of a node's existing view (``LazyPlacementObserver``),
    so whatever holds the view keeps holding it."""

    _steps_left: int | None = None

    def step(self, scores_max: int = STEP_SCORES_DEFAULT) -> None:
        if self._current == self._wanted:
            self._steps_left = None
            self._refresh_busy()
            return
        if self._steps_left is None:
            self._steps_left = build_steps(len(self._wanted))
        self._steps_left -= 1
        if self._steps_left > 0:
            return
        self._steps_left = None
        self._install(LazyPlacement(self._wanted.values(), self.replicas))
        self.builds_completed += 1
        self._refresh_busy()

    def _install(self, table: Placement) -> None:
        self.table = table
        self._current = {member.node_id: member for member in table.members}
        # Counting owned buckets would rank all of them: the stats stay 0 in the simulator.
        self.buckets_owned = 0
        self.buckets_primary = 0
        self._refresh_owned()

    def _refresh_owned(self) -> None:
        self.owned = _LazyOwned(self)


class _LazyOwned:
    """The view's ``owned`` map, each bucket answered from the lazy table when asked."""

    __slots__ = ("_view",)

    def __init__(self, view: PlacementView) -> None:
        self._view = view

    def __getitem__(self, bucket: int) -> int:
        view = self._view
        if not view.joined:
            return 0
        if view.table is None:
            return 1
        return int(view.own_id in view.table.owners_of_bucket(bucket))


class LazyPlacementObserver:
    """Switches every node it hears of to ``LazyPlacementView`` (pass to ``node_factory``)."""

    def node_started(self, node: SimNode) -> None:
        view = node.core.placement
        if type(view) is PlacementView:
            view.__class__ = LazyPlacementView
            view._refresh_owned()
