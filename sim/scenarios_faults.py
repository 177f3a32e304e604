"""The fault suite (issue 10): replicated nodes under every fault kind, joins and leaves
included, each run with a safety phase (faults on) and a liveness phase (healed).

Scenarios (``python -m sim run NAME --seed S``; ``python -m sim soak`` runs many seeds):

- ``faults-mixed``: a crash with restart (memory lost) and a join, symmetric, asymmetric and
  bridge partitions, a flapping link, a pause, clock jumps within the bound, skew, drift,
  datagram loss and duplication.
- ``faults-membership``: a join and a graceful leave, with a bridge partition, a flapping link,
  a symmetric partition, a pause, a clock jump, loss and duplication.

On top of the replication scenarios' faults (``sim.scenarios_replication``) a run scripts:

- *bridge partition* (``bridge_partition``): two sides that cannot reach each other and one
  bridge node that reaches both, for ``BRIDGE_MS``;
- *flapping link* (``FlappingLink``): one pair's link blocked and unblocked every
  ``FLAP_TOGGLE_MS`` for ``FLAP_MS``;
- *join*: a new address (``node005:7946``, ...) started mid-run with seeds = the nodes running
  then, the same config and a clock inside the bound;
- *graceful leave*: ``core.begin_leave(now)`` (else ``core.leave(now)``) on a running node; it
  stays up until ``core.leave_finished`` (True when the core has no such attribute), lingers
  ``LEAVE_LINGER_MS`` so its last stream bytes arrive, and is stopped for good. A leave not
  finished ``LEAVE_FINISH_MS_MAX`` after it began is stopped anyway and fails ``faults-fired``.

Fault budget: a crash with restart (memory lost), a join (an owner that starts empty) and a
leave (an owner gone, its copies with it unless handed off) each take one owner's copies of the
keys it touches. A run may have at most R - 1 = 2 of them in all (``FaultSuiteFaults`` refuses
more), so at any time at least one owner of every key holds every acknowledged write: nothing
checks for a loss the budget allows. Pauses, partitions and clock faults lose no memory and are
not counted. (Counted per run, not per key, which is stricter than "2 owners of a key at once":
it stays right before refill-before-counting lands, when a wiped owner is never known to be
whole again.)

Phases: the workload and faults run until the safety phase ends; the cluster settles (every
node up but those that left, views and placement agree, no hint held, no command open); the
convergence watch (``sim.convergence``) then waits up to ``convergence_s`` for every bucket's
live owners to hold equal summaries; then the sweep reads every key at ``all`` and the
checkers run. The liveness phase is ``LIVENESS_S + convergence_s`` long: the convergence wait
is a parameter (``fault_suite_scenario(..., convergence_s=...)``).

Checkers: those of the replication scenarios (no acknowledged quorum/all write lost, no value
never written, TTLs honoured, deletes hold, replicas agree, stale reads at one counted), the
``layout`` checker (the final placement has every joined node and no node that left), the
``converged`` checker, and ``faults-fired`` (every planned kind fired, the budget held, every
leave finished). Each run's coverage (``RunReport.coverage``) counts what fired by kind:
``bridge_partition``, ``flapping_link`` (and each blocked spell ``link_flap``), ``join``,
``leave`` (and ``leave_stopped``), ``crash``, ``partition``, ``partition_asymmetric``,
``pause``, ``clock_jump``, ``datagram_lost``, ``datagram_duplicated`` and the network's effects.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from gossipcache.node.core import NodeCore

from .convergence import ConvergenceWatch
from .faults import FlappingLink, bridge_partition
from .lazy_placement import LazyPlacementObserver
from .node import node_factory
from .scenarios import Checker, CheckMode, Scenario, register
from .scenarios_replication import (
    CLOCK_DRIFT_PPM_MAX,
    CLOCK_OFFSET_MS_MAX,
    LIVENESS_S,
    NODE_CONFIG,
    REPLICATION_CHECKERS,
    WIPES_MAX,
    ReplicationFaults,
    ReplicationRun,
    check_faults_fired,
    replication_scenario,
    run_of,
    setup_replicated_nodes,
)
from .simulation import Simulation, node_addresses

#: How long the convergence watch waits after the cluster settled, by default.
CONVERGENCE_S_DEFAULT = 10.0
#: The suite's safety phase: long enough for a flapping link, a join and a leave in one run.
SAFETY_S = 8.0
#: Fault durations (min, max) in ms.
BRIDGE_MS = (300, 2_000)
FLAP_MS = (1_500, 3_000)
FLAP_TOGGLE_MS = (100, 500)
#: Joins and leaves happen no later than this before the safety phase ends (the cluster has
#: time to see them under faults).
MEMBERSHIP_CHANGE_LEAD_MS = 1_500
#: A node that finished its leave lingers this long before it stops: longer than the largest
#: one-way delay (a spike included), so its last stream payloads arrive.
LEAVE_LINGER_MS = 600
#: A leave must finish within this; a node still handing off then is stopped anyway (a failure).
LEAVE_FINISH_MS_MAX = 15_000
LEAVE_POLL_MS = 50


@dataclass(frozen=True, slots=True)
class FaultSuiteFaults(ReplicationFaults):
    """The replication faults plus bridges, flapping links, joins and leaves."""

    bridges: int = 0
    flaps: int = 0
    joins: int = 0
    leaves: int = 0

    def __post_init__(self) -> None:
        ReplicationFaults.__post_init__(self)  # (zero-argument super() fails in slots classes)
        if min(self.bridges, self.flaps, self.joins, self.leaves) < 0:
            raise ValueError("fault counts must be non-negative")
        if self.memory_losses > WIPES_MAX:
            raise ValueError(
                f"crashes + joins + leaves must be at most {WIPES_MAX} (R - 1 owners' copies "
                "lost at most)"
            )

    @property
    def memory_losses(self) -> int:
        """Faults that take one owner's copies (the budget, module docstring)."""
        return self.crashes + self.joins + self.leaves

    def planned_kinds(self) -> tuple[str, ...]:
        extra = [
            kind
            for kind, planned in (
                ("bridge_partition", self.bridges),
                ("flapping_link", self.flaps),
                ("join", self.joins),
                ("leave", self.leaves),
            )
            if planned
        ]
        return ReplicationFaults.planned_kinds(self) + tuple(extra)


class FaultSuiteRun(ReplicationRun):
    """A replication run that also scripts bridges, flapping links, joins and leaves, and waits
    for the summaries to converge before its sweep."""

    def __init__(
        self,
        sim: Simulation,
        faults: FaultSuiteFaults,
        *,
        core_class: type[NodeCore],
        membership: bool,
        convergence_s: float,
    ) -> None:
        super().__init__(sim, faults)
        self.convergence = ConvergenceWatch(sim, int(convergence_s * 1000))
        self.sweep_reserve_ms += self.convergence.bound_ms
        self.joined: list[str] = []
        #: Leaves stopped before they finished: address -> when the leave began.
        self.leaves_overdue: dict[str, int] = {}
        self._join_seeds: tuple[str, ...] = ()
        self._join_factory = node_factory(
            sim,
            NODE_CONFIG,
            observers=(self.workload, LazyPlacementObserver()),
            core_class=core_class,
            membership=lambda address: membership,
            seeds=lambda address: self._join_seeds,
        )

    # -- scripting -------------------------------------------------------------------------------

    def _script_faults(self, start_ms: int, end_ms: int) -> None:
        super()._script_faults(start_ms, end_ms)
        sim, faults = self.sim, self.faults
        for _ in range(faults.bridges):
            at_ms, duration = self._window(start_ms, end_ms, BRIDGE_MS)
            sim.schedule(at_ms, self._bridge, duration)
        for _ in range(faults.flaps):
            at_ms, duration = self._window(start_ms, end_ms, FLAP_MS)
            sim.schedule(at_ms, self._flap, at_ms + duration)
        change_end_ms = max(start_ms + 1, end_ms - MEMBERSHIP_CHANGE_LEAD_MS)
        initial = len(sim.addresses)
        for address in node_addresses(initial + faults.joins)[initial:]:
            sim.schedule(self.rng.randint(start_ms, change_end_ms - 1), self._join, address)
        for _ in range(faults.leaves):
            sim.schedule(self.rng.randint(start_ms, change_end_ms - 1), self._leave)

    def _bridge(self, duration_ms: int) -> None:
        sim = self.sim
        partition_id = bridge_partition(sim, self.rng, sim.addresses)
        if partition_id is not None:
            sim.schedule(sim.now_ms + duration_ms, sim.heal, partition_id)

    def _flap(self, until_ms: int) -> None:
        a, b = self.rng.sample(self.sim.addresses, 2)
        FlappingLink(self.sim, self.rng, a, b, FLAP_TOGGLE_MS, until_ms).start()

    def _join(self, address: str) -> None:
        """Start a new node at ``address`` whose seeds are the nodes running now."""
        sim = self.sim
        self._join_seeds = tuple(self.running())
        sim.add_node(address, self._join_factory)
        sim.set_clock(
            address,
            offset_ms=self.rng.randint(-CLOCK_OFFSET_MS_MAX, CLOCK_OFFSET_MS_MAX),
            drift_ppm=self.rng.randint(-CLOCK_DRIFT_PPM_MAX, CLOCK_DRIFT_PPM_MAX),
        )
        self.joined.append(address)
        self.wipes += 1
        sim.note("join")

    def _leave(self) -> None:
        """Make a running node leave gracefully; it is stopped once its leave finished."""
        sim = self.sim
        running = self.running()
        if len(running) <= 1 or self.wipes >= WIPES_MAX:
            return
        address = self.rng.choice(running)
        self.departed.add(address)
        self.wipes += 1
        sim.note("leave")
        core = sim.core(address).core
        begin_leave = getattr(core, "begin_leave", None)
        if begin_leave is not None:
            begin_leave(sim.now_ms)
        else:
            core.leave(sim.now_ms)
        sim.after_call(address, "leave")
        sim.schedule(sim.now_ms, self._await_leave, address, sim.now_ms, sim.incarnation(address))

    def _await_leave(self, address: str, began_ms: int, incarnation: int) -> None:
        sim = self.sim
        if not sim.is_alive(address) or sim.incarnation(address) != incarnation:
            return  # the leaver is gone already (nothing restarts a departed node)
        if getattr(sim.core(address).core, "leave_finished", True):
            sim.schedule(sim.now_ms + LEAVE_LINGER_MS, self._stop, address)
        elif sim.now_ms - began_ms >= LEAVE_FINISH_MS_MAX:
            self.leaves_overdue[address] = began_ms
            self._stop(address)
        else:
            sim.schedule(sim.now_ms + LEAVE_POLL_MS, self._await_leave, address, began_ms,
                         incarnation)  # fmt: skip

    def _stop(self, address: str) -> None:
        if self.sim.crash(address, kind="leave_stopped"):
            self.workload.node_stopped(address)

    # -- liveness: converge, then sweep ----------------------------------------------------------

    def _start_sweep(self) -> None:
        self.convergence.start(super()._start_sweep)


def check_suite_faults(run: FaultSuiteRun, sim: Simulation) -> tuple[bool, str]:
    """``faults-fired`` plus the suite's own: every leave finished in time."""
    passed, message = check_faults_fired(run, sim)
    if run.leaves_overdue:
        overdue = {a: f"began at {t} ms" for a, t in sorted(run.leaves_overdue.items())}
        limit = f"leaves not finished within {LEAVE_FINISH_MS_MAX} ms: {overdue}"
        return False, f"{limit}; {message}"
    return passed, f"{message}; joined {run.joined}, left {sorted(run.departed)}"


def check_layout(run: FaultSuiteRun, sim: Simulation) -> tuple[bool, str]:
    """The final layout (every live node's placement table) has every joined node and no node
    that left: a leave the cluster took for a crash keeps the leaver's buckets on it."""
    wrong = {}
    for address in sim.live_addresses():
        table = sim.core(address).core.placement.table
        members = set() if table is None else {m.node_id.partition("#")[0] for m in table.members}
        missing = [a for a in run.joined if a not in members and sim.is_alive(a)]
        kept = sorted(members & run.departed)
        if missing or kept:
            wrong[address] = f"joined but not placed {missing}, left but placed {kept}"
    summary = f"joined {run.joined}, left {sorted(run.departed)}"
    if wrong:
        return False, f"{wrong}; {summary}"
    return True, f"{summary}: every live node's layout agrees"


def check_converged(run: FaultSuiteRun, sim: Simulation) -> tuple[bool, str]:
    return run.convergence.verdict()


def _checker(name: str, function) -> Checker:
    return Checker(name, lambda sim: function(run_of(sim), sim), CheckMode.FINAL)


FAULT_SUITE_CHECKERS = (
    *(checker for checker in REPLICATION_CHECKERS if checker.name != "faults-fired"),
    _checker("layout", check_layout),
    _checker("converged", check_converged),
    _checker("faults-fired", check_suite_faults),
)

SUITE_FAULTS = {
    "faults-mixed": (
        "a crash (memory lost) and a join, symmetric, asymmetric and bridge partitions, a "
        "flapping link, a pause, clock jumps, skew, drift, loss, duplication",
        FaultSuiteFaults(
            crashes=1,
            joins=1,
            partitions_symmetric=1,
            partitions_asymmetric=1,
            bridges=1,
            flaps=1,
            pauses=1,
            clock_jumps=2,
        ),
    ),
    "faults-membership": (
        "a join and a graceful leave, a bridge partition, a flapping link, a symmetric "
        "partition, a pause, a clock jump, loss, duplication",
        FaultSuiteFaults(
            joins=1, leaves=1, bridges=1, flaps=1, partitions_symmetric=1, pauses=1, clock_jumps=1
        ),
    ),
}


def fault_suite_scenario(
    name: str,
    description: str,
    faults: FaultSuiteFaults,
    *,
    convergence_s: float = CONVERGENCE_S_DEFAULT,
    core_class: type[NodeCore] = NodeCore,
    membership: bool = True,
) -> Scenario:
    """A fault-suite scenario (unregistered); ``convergence_s`` bounds the convergence wait
    and lengthens the liveness phase by as much."""
    base = replication_scenario(
        name, description, faults, core_class=core_class, membership=membership
    )
    run_class = functools.partial(
        FaultSuiteRun, core_class=core_class, membership=membership, convergence_s=convergence_s
    )

    def setup(sim: Simulation, nodes: int) -> None:
        setup_replicated_nodes(
            sim, nodes, faults, core_class=core_class, membership=membership, run_class=run_class
        )

    return replace(
        base,
        description=base.description.replace("replicated nodes", "fault suite: replicated nodes"),
        setup=setup,
        checkers=FAULT_SUITE_CHECKERS,
        duration_s_default=SAFETY_S,
        liveness_s=LIVENESS_S + convergence_s,
    )


FAULT_SUITE_SCENARIOS = {
    name: register(fault_suite_scenario(name, description, faults))
    for name, (description, faults) in SUITE_FAULTS.items()
}
