"""Replicated whole nodes on the simulator: a cluster of ``NodeCore``s under faults, a client
workload at every consistency level, and the checkers of ``sim.replication_checks``.

Scenarios (``python -m sim run NAME --seed S`` or ``--seeds N``):

- ``replication-crash``: two crashes with restarts (memory lost; a restarted process is a new
  member), loss and duplication, skewed clocks.
- ``replication-partition``: symmetric and asymmetric partitions, loss, duplication, skew.
- ``replication-clock``: clock jumps within the bound, skew and drift, one crash, loss.
- ``replication-mixed``: all of the above and pauses, at most two crashes in all.

Each runs ``nodes`` nodes (default 5) with membership (profile ``local``) and R = 3 (replicated
mode is on whenever membership is, per the replication contract). Every node runs a client
process that sends it about ``1000 / MEAN_GAP_MS`` commands a second over ``KEYSPACE_SIZE``
keys: puts (30 % with a TTL), deletes, expires and persists at ``quorum``, ``all`` or ``one``,
and gets at ``one``, ``quorum`` or ``all``. Every put writes a value no other put writes, so a
value read names its write.

Fault budget (``ReplicationFaults``): crashes wipe memory and there is no anti-entropy yet, so
a run crashes at most R - 1 = 2 processes in all (each a planned fault; more could legitimately
lose a key whose every copy was wiped). Clocks: every node starts within
``CLOCK_OFFSET_MS_MAX`` of true time, drifts at most ``CLOCK_DRIFT_PPM_MAX``, and a jump moves
it to another offset inside the same range, so every clock stays within
``ReplicationRun.clock_error_ms_max`` (about 100 ms) of true time and two clocks within about
200 ms of each other: well inside the HLC bound (500 ms).

A run's phases: the cluster forms (``WORKLOAD_START_MS``); the workload and the scripted faults
run until the safety phase ends; every fault is healed (restarts happened already); then the
*settle* watcher waits until every live node sees exactly the live processes, every placement
table agrees, no hint is held (``replication_hints_held``-like stats are 0) and no client
command is open; then the *sweep* reads every key at ``all`` from a live node (read repair
brings the contacted owners up to date), retrying failures; the checkers run at the end of the
liveness phase. ``settled`` fails when the sweep could not complete.

``python -m sim bench replication-cost`` measures messages and bytes per operation.
"""

from __future__ import annotations

import random
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from gossipcache.membership import MemberState
from gossipcache.node import commands as c
from gossipcache.node.core import NodeCore

from .bench import register_bench
from .faults import FaultPlan
from .lazy_placement import LazyPlacementObserver
from .network import NetworkConfig
from .node import SIM_NODE_CONFIG, SimNode, node_factory
from .replication_checks import (
    WRITE_KINDS,
    HistoryIndex,
    check_deletes_hold,
    check_no_lost_writes,
    check_reads_valid,
    check_replicas_agree,
    check_stale_reads_one,
    level_of,
)
from .replication_cost import main as replication_cost_main
from .scenarios import Checker, CheckMode, Scenario, register
from .simulation import WALL_EPOCH_MS, Simulation, node_addresses
from .workload import OK, ClientWorkload, HistoryEntry

REPLICAS = 3
#: Most processes a run may crash (memory lost): R - 1, since nothing but hints and read repair
#: refills a wiped node (no anti-entropy yet).
WIPES_MAX = REPLICAS - 1
KEYSPACE_SIZE = 24
KEYSPACE = tuple(b"rk:%02d" % index for index in range(KEYSPACE_SIZE))
#: Mean gap between two commands of one node's client.
MEAN_GAP_MS = 40.0
#: The cluster forms before the workload and the faults start (local profile: well under 1 s).
WORKLOAD_START_MS = 1_500
#: Clock bounds: offset from true time at start and after a jump, and drift.
CLOCK_OFFSET_MS_MAX = 80
CLOCK_DRIFT_PPM_MAX = 500
#: Settle watcher and sweep.
SETTLE_POLL_MS = 250
#: The sweep starts at the latest this long before the run ends, settled or not.
SWEEP_RESERVE_MS = 4_000
SWEEP_RETRY_MS = 400
SWEEP_ATTEMPTS_MAX = 6
#: The run ends this long after the sweep completed (the liveness phase is a bound, not a wait).
QUIET_AFTER_SWEEP_MS = 1_000
#: Fault durations (min, max) in ms.
CRASH_DOWN_MS = (300, 2_000)
PARTITION_MS = (300, 2_000)
PAUSE_MS = (200, 1_000)
BURST_MS = (200, 400)

NODE_CONFIG = replace(
    SIM_NODE_CONFIG,
    membership_enabled=True,
    membership_profile="local",
    replicas=REPLICAS,
    # Active expiry every 250 ms instead of 50: reads expire lazily anyway, and each tick costs
    # a full invariant check of the node (half of a run's CPU is those checks).
    expire_interval_ms=250,
)


# ---------------------------------------------------------------------------- faults


#: The coverage kind each scripted burst makes fire.
_BURST_COVERAGE = {
    "datagram_loss_rate": "datagram_lost",
    "datagram_duplicate_rate": "datagram_duplicated",
}


@dataclass(frozen=True, slots=True)
class ReplicationFaults:
    """A run's planned faults: how many of each scripted kind, and the network's rates."""

    crashes: int = 0
    partitions_symmetric: int = 0
    partitions_asymmetric: int = 0
    clock_jumps: int = 0
    pauses: int = 0
    # Membership sends ~100 datagrams in a 6 s safety phase; a scripted burst of each (rate 1
    # for 200-400 ms) makes sure both fire in every run.
    datagram_loss_rate: float = 0.1
    datagram_duplicate_rate: float = 0.08
    spike_rate: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.crashes <= WIPES_MAX:
            raise ValueError(f"crashes must be within [0, {WIPES_MAX}] (R - 1 wipes at most)")

    def planned_kinds(self) -> tuple[str, ...]:
        """Coverage kinds (``Simulation.coverage``) each run must show."""
        kinds = []
        for kind, planned in (
            ("crash", self.crashes),
            ("partition", self.partitions_symmetric),
            ("partition_asymmetric", self.partitions_asymmetric),
            ("clock_jump", self.clock_jumps),
            ("pause", self.pauses),
            ("datagram_lost", self.datagram_loss_rate),
            ("datagram_duplicated", self.datagram_duplicate_rate),
        ):
            if planned:
                kinds.append(kind)
        return tuple(kinds)

    def plan(self) -> FaultPlan:
        """What the injector applies: the network's rates and the clocks' start offsets."""
        return FaultPlan(
            datagram_loss_rate=self.datagram_loss_rate,
            datagram_duplicate_rate=self.datagram_duplicate_rate,
            spike_rate=self.spike_rate,
            clock_offset_ms_max=CLOCK_OFFSET_MS_MAX,
            clock_drift_ppm_max=CLOCK_DRIFT_PPM_MAX,
        )


# ---------------------------------------------------------------------------- the workload


_WRITE_LEVELS = ((c.QUORUM, 0.55), (c.ALL, 0.2), (c.ONE, 0.25))
_READ_LEVELS = ((c.ONE, 0.5), (c.QUORUM, 0.35), (c.ALL, 0.15))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for choice, weight in weighted:
        if roll < weight:
            return choice
        roll -= weight
    return weighted[-1][0]


class ReplicationCommands:
    """The command generator: unique put values (a counter), seeded choices."""

    def __init__(self) -> None:
        self.values_written = 0

    def __call__(self, rng: random.Random, address: str, sim: Simulation) -> c.Command:
        key = rng.choice(KEYSPACE)
        roll = rng.random()
        if roll < 0.36:
            self.values_written += 1
            value = b"v%d@%s" % (self.values_written, address.encode())
            ttl_ms = rng.randint(300, 4_000) if rng.random() < 0.3 else None
            return c.Put(key, value, ttl_ms, consistency=_pick(rng, _WRITE_LEVELS))
        if roll < 0.46:
            return c.Delete((key,), consistency=_pick(rng, _WRITE_LEVELS))
        if roll < 0.53:
            ttl_ms = rng.randint(500, 5_000)
            return c.Expire(key, ttl_ms, consistency=_pick(rng, _WRITE_LEVELS))
        if roll < 0.56:
            return c.Persist(key, consistency=_pick(rng, _WRITE_LEVELS))
        return c.Get(key, consistency=_pick(rng, _READ_LEVELS))


# ---------------------------------------------------------------------------- a run


class ReplicationRun:
    """What one run keeps for its checkers: the workload and history, the planned faults, the
    settle and sweep progress."""

    def __init__(self, sim: Simulation, faults: ReplicationFaults) -> None:
        self.sim = sim
        self.faults = faults
        self.workload = ClientWorkload(sim)
        self.commands = ReplicationCommands()
        self.rng = sim.rng("replication/script")
        self.wipes = 0
        #: Addresses that left the cluster on purpose: expected down when the run settles.
        self.departed: set[str] = set()
        #: The sweep starts at the latest this long before the run ends (a subclass that waits
        #: for something before its sweep reserves that wait too).
        self.sweep_reserve_ms = SWEEP_RESERVE_MS
        self.clock_error_ms_max = CLOCK_OFFSET_MS_MAX
        self.settled_at_ms: int | None = None
        self.settle_note = "the liveness phase has not started"
        self.sweep_started_ms: int | None = None
        self.sweep_done_ms: int | None = None
        #: Key -> its successful final ``all`` read.
        self.sweep: dict[bytes, HistoryEntry] = {}
        self._sweep_attempts: Counter[bytes] = Counter()
        self._sweep_errors: dict[bytes, str] = {}
        self._sweep_ops: dict[int, bytes] = {}
        self._index: tuple[int, HistoryIndex] | None = None
        self.workload.on_complete(self._completed)

    def index(self) -> HistoryIndex:
        """The history indexed for the checkers (rebuilt when the history grew)."""
        size = len(self.workload.history)
        if self._index is None or self._index[0] != size:
            self._index = (size, HistoryIndex(self.workload.history, self.clock_error_ms_max))
        return self._index[1]

    def running(self) -> list[str]:
        """Nodes up, not paused and not leaving: what a fault or the sweep may pick."""
        sim = self.sim
        return [a for a in sim.live_addresses() if not sim.is_paused(a) and a not in self.departed]

    def sweep_note(self, key: bytes) -> str:
        attempts = self._sweep_attempts[key]
        return f"{attempts} attempts, last error: {self._sweep_errors.get(key, 'none')}"

    # -- phases ----------------------------------------------------------------------------------

    def arm(self, safety_end_ms: int, end_ms: int) -> None:
        """Start the workload and script the faults inside the safety phase; watch for the
        settled cluster after it."""
        sim = self.sim
        drift_ms = -(-CLOCK_DRIFT_PPM_MAX * end_ms // 1_000_000)
        self.clock_error_ms_max = CLOCK_OFFSET_MS_MAX + drift_ms
        self.workload.start_random(
            sim.addresses,
            self.commands,
            mean_gap_ms=MEAN_GAP_MS,
            stream="replication/workload",
            start_ms=WORKLOAD_START_MS,
            until_ms=safety_end_ms,
        )
        self._script_faults(WORKLOAD_START_MS, safety_end_ms)
        sim.schedule(safety_end_ms, self._settle_poll, end_ms - self.sweep_reserve_ms)

    def _window(self, start_ms: int, end_ms: int, bounds: tuple[int, int]) -> tuple[int, int]:
        """A fault's (start, duration) drawn so that it is over before ``end_ms``."""
        duration = self.rng.randint(*bounds)
        latest = max(start_ms, end_ms - duration - 100)
        return self.rng.randint(start_ms, latest), duration

    def _script_faults(self, start_ms: int, end_ms: int) -> None:
        sim, rng, faults = self.sim, self.rng, self.faults
        addresses = sim.addresses
        for _ in range(faults.crashes):
            at_ms, down_ms = self._window(start_ms, end_ms, CRASH_DOWN_MS)
            sim.schedule(at_ms, self._crash, down_ms)
        partitions = [True] * faults.partitions_symmetric + [False] * faults.partitions_asymmetric
        for symmetric in partitions:
            at_ms, duration = self._window(start_ms, end_ms, PARTITION_MS)
            shuffled = rng.sample(addresses, len(addresses))
            cut = rng.randint(1, max(1, len(addresses) // 2))
            sim.schedule(
                at_ms, self._partition, shuffled[:cut], shuffled[cut:], symmetric, duration
            )
        for _ in range(faults.clock_jumps):
            at_ms = rng.randint(start_ms, end_ms - 1)
            offset = rng.randint(-CLOCK_OFFSET_MS_MAX, CLOCK_OFFSET_MS_MAX)
            sim.schedule(at_ms, self._jump, rng.choice(addresses), offset)
        # One burst each of total loss and of duplication, so both surely fire (at the plan's
        # rates a run of ~100 datagrams may by chance see neither). Loss in the first third of
        # the phase, duplication in the second third: a lost datagram is never duplicated, so
        # overlapping bursts left duplication unfired (replication-partition seed 97).
        third_ms = (end_ms - start_ms) // 3
        halves = (
            ("datagram_loss_rate", start_ms, start_ms + third_ms),
            ("datagram_duplicate_rate", start_ms + third_ms, start_ms + 2 * third_ms),
        )  # the last third is left for a burst that must be tried again (below)
        for rate_name, half_start_ms, half_end_ms in halves:
            if getattr(faults, rate_name):
                at_ms, duration = self._window(half_start_ms, half_end_ms, BURST_MS)
                sim.schedule(at_ms, self._burst, rate_name, duration, end_ms)
        for _ in range(faults.pauses):
            at_ms, duration = self._window(start_ms, end_ms, PAUSE_MS)
            sim.schedule(at_ms, self._pause, duration)

    def _crash(self, down_ms: int) -> None:
        """Crash a running node (chosen now, so a planned crash never hits a node that is down
        already) and restart it ``down_ms`` later, empty."""
        sim = self.sim
        running = self.running()
        if self.wipes >= WIPES_MAX or not running:
            return
        address = self.rng.choice(running)
        sim.crash(address)
        self.wipes += 1
        sim.schedule(sim.now_ms + down_ms, sim.restart, address)

    def _burst(self, rate_name: str, duration_ms: int, end_ms: int | None = None) -> None:
        """Set one datagram rate to 1 for ``duration_ms``, then back to the plan's rate; while
        its fault has not fired yet (partitions may have blocked every datagram meanwhile),
        again, until ``end_ms`` (the end of the safety phase)."""
        self._set_rate(rate_name, 1.0)
        self.sim.schedule(self.sim.now_ms + duration_ms, self._burst_over, rate_name, duration_ms,
                          end_ms)  # fmt: skip

    def _burst_over(self, rate_name: str, duration_ms: int, end_ms: int | None) -> None:
        self._set_rate(rate_name, getattr(self.faults, rate_name))
        fired = self.sim.coverage.get(_BURST_COVERAGE[rate_name], 0)
        if not fired and end_ms is not None and self.sim.now_ms + 2 * duration_ms + 100 < end_ms:
            self.sim.schedule(self.sim.now_ms + duration_ms, self._burst, rate_name, duration_ms,
                              end_ms)  # fmt: skip

    def _set_rate(self, rate_name: str, rate: float) -> None:
        self.sim.set_network(replace(self.sim.network, **{rate_name: rate}))

    def _pause(self, duration_ms: int) -> None:
        """Freeze a running node (chosen now: never one that is down) for ``duration_ms``."""
        sim = self.sim
        running = self.running()
        if running:
            sim.pause(self.rng.choice(running), duration_ms)

    def _partition(self, side_a: list[str], side_b: list[str], symmetric: bool, ms: int) -> None:
        sim = self.sim
        partition_id = sim.partition(side_a, side_b, symmetric=symmetric)
        sim.schedule(sim.now_ms + ms, sim.heal, partition_id)

    def _jump(self, address: str, offset_ms: int) -> None:
        """Step the node's clock so that it reads true time + ``offset_ms`` (inside the bound)."""
        sim = self.sim
        error_ms = sim.wall_ms(address) - (WALL_EPOCH_MS + sim.now_ms)
        sim.jump_clock(address, offset_ms - error_ms)

    # -- settle and sweep --------------------------------------------------------------------------

    def _settle_poll(self, deadline_ms: int) -> None:
        sim = self.sim
        unsettled = unsettled_reason(sim, self.workload, self.departed)
        if unsettled is None:
            self.settled_at_ms = sim.now_ms
            self.settle_note = f"settled at {sim.now_ms} ms"
            self._start_sweep()
        elif sim.now_ms >= deadline_ms:
            self.settle_note = f"not settled by {sim.now_ms} ms: {unsettled}"
            self._start_sweep()
        else:
            self.settle_note = unsettled
            sim.schedule(sim.now_ms + SETTLE_POLL_MS, self._settle_poll, deadline_ms)

    def _start_sweep(self) -> None:
        self.sweep_started_ms = self.sim.now_ms
        for offset, key in enumerate(KEYSPACE):
            self.sim.schedule(self.sim.now_ms + offset, self._sweep_read, key)

    def _sweep_read(self, key: bytes) -> None:
        live = self.running()
        self._sweep_attempts[key] += 1
        # The op id the submit will take: an island answers inside submit, before it returns.
        self._sweep_ops[len(self.workload.history) + 1] = key
        self.workload.submit(self.rng.choice(live), c.Get(key, consistency=c.ALL))

    def _completed(self, entry: HistoryEntry, node: SimNode | None) -> None:
        if entry.version is None and entry.outcome == OK and not entry.deferred:
            note_immediate_version(entry, node)
        key = self._sweep_ops.pop(entry.op_id, None)
        if key is None:
            return
        if entry.outcome == OK:
            self.sweep[key] = entry
            if len(self.sweep) == len(KEYSPACE):
                self.sweep_done_ms = self.sim.now_ms
                # Nothing is left to happen but idling: end the run (the final checks run then).
                self.sim.schedule(self.sim.now_ms + QUIET_AFTER_SWEEP_MS, self.sim.request_stop)
            return
        self._sweep_errors[key] = f"{entry.outcome}: {entry.error}"
        if self._sweep_attempts[key] < SWEEP_ATTEMPTS_MAX:
            self.sim.schedule(self.sim.now_ms + SWEEP_RETRY_MS, self._sweep_read, key)


def note_immediate_version(entry: HistoryEntry, node: SimNode | None) -> None:
    """A replicated write answered at once (at ``one`` by an owner, which applied it locally)
    returns no ``Pending`` to carry its version: read it from that owner's store, which holds
    exactly that write at this instant (white-box, as the checkers read owners)."""
    if entry.kind not in WRITE_KINDS or node is None or entry.key is None:
        return
    if getattr(node.core, "replication", None) is None:
        return
    held = node.core.store.lookup(entry.key, node.clock.wall_ms())
    if held is not None:
        entry.version = held[1]


def unsettled_reason(
    sim: Simulation, workload: ClientWorkload, departed: set[str] | frozenset[str] = frozenset()
) -> str | None:
    """None when the cluster has settled after heal, else what is still moving: a node down or
    paused (but those in ``departed``, which left on purpose), one that left and still runs, a
    membership view other than the live processes, placement tables that disagree or are being
    rebuilt, a node still filling (anti-entropy), hints still held, client commands still
    open."""
    live = sim.live_addresses()
    down = set(sim.addresses) - set(live) - departed
    if down:
        return f"nodes down: {sorted(down)}"
    lingering = departed.intersection(live)
    if lingering:
        return f"nodes leaving: {sorted(lingering)}"
    paused = [a for a in live if sim.is_paused(a)]
    if paused:
        return f"nodes paused: {paused}"
    cores = [sim.core(address).core for address in live]
    ids = {core.membership.node_id for core in cores if core.membership is not None}
    epochs = set()
    hints = 0
    for core in cores:
        if core.membership is not None:
            seen = {
                m.node_id
                for m in core.membership.members()
                if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            }
            suspects = [
                m.node_id for m in core.membership.members() if m.state is MemberState.SUSPECT
            ]
            if seen != ids or suspects:
                return f"{core.membership.node_id} sees {sorted(seen)}, suspects {suspects}"
        if core.placement.busy or core.placement.table is None:
            return "a placement table is being built"
        data_state = getattr(core, "data_state", "serving")
        if data_state != "serving":
            return f"{core.membership.node_id} is {data_state}"
        epochs.add(core.placement.epoch)
        hints += hints_held(core)
    if len(epochs) > 1:
        return f"placement epochs differ: {len(epochs)}"
    if hints:
        return f"{hints} hints still held"
    open_entries = workload.open_entries()
    if open_entries:
        return f"{len(open_entries)} client commands still open"
    return None


def hints_held(core: NodeCore) -> int:
    """Hints a node holds for others (0 before replication has hints)."""
    stats = core.stats_dict()
    return sum(
        value
        for name, value in stats.items()
        if name.startswith("replication_hints") and name.endswith("held") and type(value) is int
    )


class LevelBlindCore(NodeCore):
    """A node that drops the consistency level of every command before running it: how a node
    without replication serves this workload (tests build islands with it; the history still
    records the level the client asked for)."""

    def execute(self, command: c.Command, wall_ms: int) -> object:
        if len(command) > len(type(command).fields):
            command = c.make(type(command), tuple(command)[:-1])
        return super().execute(command, wall_ms)


_RUNS: weakref.WeakKeyDictionary[Simulation, ReplicationRun] = weakref.WeakKeyDictionary()


def run_of(sim: Simulation) -> ReplicationRun:
    """The replication run of ``sim`` (for checkers and tests)."""
    return _RUNS[sim]


def setup_replicated_nodes(
    sim: Simulation,
    nodes: int,
    faults: ReplicationFaults,
    *,
    core_class: type[NodeCore] = NodeCore,
    membership: bool = True,
    run_class: Callable[[Simulation, ReplicationFaults], ReplicationRun] | None = None,
) -> ReplicationRun:
    """``nodes`` nodes with membership (so replicated) joining through the first three;
    ``membership=False`` builds standalone islands (what the checkers must reject).
    ``run_class`` builds the run (default ``ReplicationRun``; the fault suite's adds faults)."""
    run = (ReplicationRun if run_class is None else run_class)(sim, faults)
    _RUNS[sim] = run
    addresses = node_addresses(nodes)
    factory = node_factory(
        sim,
        NODE_CONFIG,
        observers=(run.workload, LazyPlacementObserver()),
        core_class=core_class,
        membership=lambda address: membership,
        seeds=lambda address: addresses[:3],
    )
    for address in addresses:
        sim.add_node(address, factory)
    return run


# ---------------------------------------------------------------------------- checkers


def _checker(function: Callable[[ReplicationRun, Simulation], tuple[bool, str]]):
    def check(sim: Simulation) -> tuple[bool, str]:
        return function(run_of(sim), sim)

    return check


def check_settled(run: ReplicationRun, sim: Simulation) -> tuple[bool, str]:
    swept = f"{len(run.sweep)}/{len(KEYSPACE)} keys read at all"
    if run.sweep_done_ms is None:
        failed = {key: run.sweep_note(key) for key in KEYSPACE if key not in run.sweep}
        return False, f"{run.settle_note}; sweep incomplete: {swept}; {failed}"
    if run.settled_at_ms is None:
        return False, f"{run.settle_note}; {swept}"
    return True, f"{run.settle_note}; sweep done at {run.sweep_done_ms} ms: {swept}"


def check_faults_fired(run: ReplicationRun, sim: Simulation) -> tuple[bool, str]:
    coverage = sim.coverage
    index = run.index()
    levels = Counter(
        f"{entry.kind}@{level_of(entry)}:{entry.outcome}" for entry in run.workload.history
    )
    writes = sum(len(writes) for writes in index.writes.values())
    fired = ", ".join(f"{kind}={count}" for kind, count in coverage.items())
    missing = [kind for kind in run.faults.planned_kinds() if not coverage.get(kind)]
    summary = (
        f"faults: {fired}; wipes {run.wipes}; {len(run.workload.history)} ops, {writes} writes; "
        + ", ".join(f"{name}={count}" for name, count in sorted(levels.items()))
    )
    if run.wipes > WIPES_MAX:
        return False, f"{run.wipes} wipes, over the budget of {WIPES_MAX}; {summary}"
    if missing:
        return False, f"planned faults that never fired: {', '.join(missing)}; {summary}"
    return True, summary


REPLICATION_CHECKERS = tuple(
    Checker(name, _checker(function), CheckMode.FINAL)
    for name, function in (
        ("settled", check_settled),
        ("no-lost-writes", check_no_lost_writes),
        ("reads-valid", check_reads_valid),
        ("deletes-hold", check_deletes_hold),
        ("replicas-agree", check_replicas_agree),
        ("stale-reads-one", check_stale_reads_one),
        ("faults-fired", check_faults_fired),
    )
)


# ---------------------------------------------------------------------------- scenarios

#: Safety phase (workload and faults) and liveness phase (heal, settle, sweep) defaults.
DURATION_S_DEFAULT = 5.0
#: Long enough for the slowest membership convergence seen (a suspicion nobody refutes runs to
#: its full Lifeguard timeout, ~13 s in the local profile); a run ends as soon as its sweep is done.
LIVENESS_S = 40.0

SCENARIO_FAULTS = {
    "replication-crash": (
        "2 crashes with restarts (memory lost), loss, duplication, skewed clocks",
        ReplicationFaults(crashes=2),
    ),
    "replication-partition": (
        "symmetric and asymmetric partitions with heal, loss, duplication, skewed clocks",
        ReplicationFaults(partitions_symmetric=2, partitions_asymmetric=1),
    ),
    "replication-clock": (
        "clock jumps within the HLC bound, skew, drift, one crash, loss, duplication",
        ReplicationFaults(crashes=1, clock_jumps=3),
    ),
    "replication-mixed": (
        "crashes (2 in all), partitions, pauses, clock jumps, loss, duplication",
        ReplicationFaults(
            crashes=2, partitions_symmetric=1, partitions_asymmetric=1, clock_jumps=2, pauses=1
        ),
    ),
}


def replication_scenario(
    name: str,
    description: str,
    faults: ReplicationFaults,
    *,
    core_class: type[NodeCore] = NodeCore,
    membership: bool = True,
) -> Scenario:
    """A replication scenario (unregistered), optionally with a test's ``core_class`` or as
    standalone islands (``membership=False``)."""

    def setup(sim: Simulation, nodes: int) -> None:
        setup_replicated_nodes(sim, nodes, faults, core_class=core_class, membership=membership)

    def phases(sim: Simulation, safety_end_ms: int, end_ms: int) -> None:
        run_of(sim).arm(safety_end_ms, end_ms)

    return Scenario(
        name=name,
        description=f"replicated nodes (R = {REPLICAS}), workload at every level: {description}",
        setup=setup,
        phases=phases,
        checkers=REPLICATION_CHECKERS,
        fault_plan=faults.plan(),
        network=NetworkConfig(),
        nodes_default=5,
        duration_s_default=DURATION_S_DEFAULT,
        liveness_s=LIVENESS_S,
        check_invariants=True,
    )


REPLICATION_SCENARIOS = {
    name: register(replication_scenario(name, description, faults))
    for name, (description, faults) in SCENARIO_FAULTS.items()
}


register_bench(
    "replication-cost",
    "node-to-node messages and bytes per put/get/delete at one/quorum/all (simulated cluster)",
    replication_cost_main,
)
