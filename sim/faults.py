"""Fault plans and the injector that turns a plan into faults during the safety phase.

A ``FaultPlan`` says which faults happen and how often; the ``FaultInjector`` draws the actual
faults from the simulation's ``"faults"`` random stream. Each fault kind is an independent
Poisson process over the whole cluster (``*_per_min`` is the cluster-wide rate), so turning one
kind on or off never changes when another kind fires. Every fault that lasts (partition, clog,
crash, pause) is undone after a drawn duration, and ``heal`` undoes whatever is left when the
liveness phase starts.

Besides the injector's Poisson processes, two shapes of partition are offered as functions a
scripted scenario can call (``sim.scenarios_faults`` does): ``bridge_partition`` (two sides that
cannot reach each other and one bridge node that reaches both: a node sees peers its peers call
dead) and ``FlappingLink`` (one pair's link blocked and unblocked every few hundred ms: the
suspicion and stream-retry paths run over and over).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .network import CLOG_DELAY_MS_DEFAULT, NetworkConfig
from .simulation import Simulation

_MS_PER_MIN = 60_000


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults a scenario's safety phase injects, and how often.

    Network: ``datagram_loss_rate``, ``datagram_duplicate_rate`` and ``spike_rate`` override the
    scenario's network during the safety phase (the liveness phase runs on ``calm()``).
    Rates ``*_per_min`` are cluster-wide events per virtual minute; ``*_ms`` pairs are the
    (min, max) of a uniformly drawn duration. ``down_nodes_max`` bounds nodes crashed or paused
    by the injector at once (None: a minority, ``(nodes - 1) // 2``). Clock offsets and drifts
    are drawn once per node at start, uniformly within ``+-clock_offset_ms_max`` and
    ``+-clock_drift_ppm_max``; they are not faults that heal.
    """

    datagram_loss_rate: float = 0.0
    datagram_duplicate_rate: float = 0.0
    spike_rate: float = 0.0
    partitions_per_min: float = 0.0
    partition_asymmetric_fraction: float = 0.3
    partition_ms: tuple[int, int] = (1_000, 10_000)
    clogs_per_min: float = 0.0
    clog_drop_fraction: float = 0.5
    clog_ms: tuple[int, int] = (1_000, 10_000)
    clog_delay_ms: int = CLOG_DELAY_MS_DEFAULT
    crashes_per_min: float = 0.0
    crash_down_ms: tuple[int, int] = (1_000, 15_000)
    pauses_per_min: float = 0.0
    pause_ms: tuple[int, int] = (200, 5_000)
    clock_jumps_per_min: float = 0.0
    clock_jump_ms_max: int = 10_000
    clock_offset_ms_max: int = 0
    clock_drift_ppm_max: int = 0
    down_nodes_max: int | None = None
    bridges_per_min: float = 0.0
    bridge_ms: tuple[int, int] = (1_000, 10_000)
    flaps_per_min: float = 0.0
    flap_ms: tuple[int, int] = (2_000, 5_000)
    flap_toggle_ms: tuple[int, int] = (100, 500)

    def __post_init__(self) -> None:
        for name in (
            "datagram_loss_rate",
            "datagram_duplicate_rate",
            "spike_rate",
            "partition_asymmetric_fraction",
            "clog_drop_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for name in (
            "partitions_per_min",
            "clogs_per_min",
            "crashes_per_min",
            "pauses_per_min",
            "clock_jumps_per_min",
            "bridges_per_min",
            "flaps_per_min",
        ):
            if not 0.0 <= getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be finite and non-negative")
        for name in (
            "partition_ms",
            "clog_ms",
            "crash_down_ms",
            "pause_ms",
            "bridge_ms",
            "flap_ms",
            "flap_toggle_ms",
        ):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max")
        if self.flap_toggle_ms[0] < 1:
            raise ValueError("flap_toggle_ms must be at least 1 ms (a flap toggles forward)")
        if not 0 <= self.clock_drift_ppm_max < 1_000_000:
            raise ValueError("clock_drift_ppm_max must be within [0, 1,000,000)")

    @classmethod
    def none(cls) -> FaultPlan:
        """No faults at all."""
        return cls()

    @classmethod
    def standard(cls) -> FaultPlan:
        """Every kind of fault, often enough that a 30 s run with 5 nodes sees most of them."""
        return cls(
            datagram_loss_rate=0.05,
            datagram_duplicate_rate=0.02,
            spike_rate=0.01,
            partitions_per_min=4.0,
            clogs_per_min=4.0,
            crashes_per_min=3.0,
            pauses_per_min=4.0,
            clock_jumps_per_min=2.0,
            clock_offset_ms_max=2_000,
            clock_drift_ppm_max=500,
        )


#: The fault kinds the injector schedules, each an independent process.
_PROCESSES = ("partition", "clog", "crash", "pause", "clock_jump", "bridge", "flap")


class FaultInjector:
    """Applies a ``FaultPlan`` to a simulation until ``safety_end_ms``, then ``heal``s."""

    def __init__(self, sim: Simulation, plan: FaultPlan, safety_end_ms: int) -> None:
        self._sim = sim
        self._plan = plan
        self._safety_end_ms = safety_end_ms
        self._rng = sim.rng("faults")
        self._base_network = sim.network
        # Nodes this injector crashed or paused and has not yet restored, in fault order.
        self._down: dict[str, str] = {}

    def start(self) -> None:
        """Set clocks and the faulty network, and arm every fault process with a nonzero rate."""
        plan = self._plan
        rng = self._rng
        sim = self._sim
        for address in sim.addresses:
            sim.set_clock(
                address,
                offset_ms=rng.randint(-plan.clock_offset_ms_max, plan.clock_offset_ms_max),
                drift_ppm=rng.randint(-plan.clock_drift_ppm_max, plan.clock_drift_ppm_max),
            )
        sim.set_network(network_with_plan(self._base_network, plan))
        for kind in _PROCESSES:
            self._arm(kind)

    def heal(self) -> None:
        """End the safety phase: calm network, no partitions or clogs, every node this injector
        crashed or paused back up."""
        sim = self._sim
        sim.set_network(self._base_network.calm())
        sim.heal_all()
        # Only undo this injector's own crashes and pauses: a scenario may take nodes down
        # on purpose (a node that left stays gone).
        for address, kind in self._down.items():
            if kind == "crash" and not sim.is_alive(address):
                sim.restart(address)
            elif kind == "pause" and sim.is_paused(address):
                sim.resume(address)
        self._down.clear()

    def _rate_per_ms(self, kind: str) -> float:
        plan = self._plan
        per_min = {
            "partition": plan.partitions_per_min,
            "clog": plan.clogs_per_min,
            "crash": plan.crashes_per_min,
            "pause": plan.pauses_per_min,
            "clock_jump": plan.clock_jumps_per_min,
            "bridge": plan.bridges_per_min,
            "flap": plan.flaps_per_min,
        }[kind]
        return per_min / _MS_PER_MIN

    def _arm(self, kind: str) -> None:
        rate = self._rate_per_ms(kind)
        if rate <= 0:
            return
        gap_ms = self._rng.expovariate(rate)
        # Compare as floats first: a tiny rate draws gaps too large (even inf) for an int.
        if self._sim.now_ms + 1 + gap_ms < self._safety_end_ms:
            self._sim.schedule(self._sim.now_ms + 1 + int(gap_ms), self._fire, kind)

    def _fire(self, kind: str) -> None:
        getattr(self, f"_inject_{kind}")()
        self._arm(kind)

    def _duration_ms(self, bounds: tuple[int, int]) -> int:
        return self._rng.randint(bounds[0], bounds[1])

    def _down_budget_left(self) -> bool:
        sim = self._sim
        limit = self._plan.down_nodes_max
        if limit is None:
            limit = (len(sim.addresses) - 1) // 2
        # Forget nodes that came back on their own schedule.
        for address in [a for a in self._down if sim.is_alive(a) and not sim.is_paused(a)]:
            del self._down[address]
        return len(self._down) < limit

    def _healthy_nodes(self) -> list[str]:
        sim = self._sim
        return [a for a in sim.live_addresses() if not sim.is_paused(a)]

    def _inject_partition(self) -> None:
        sim = self._sim
        addresses = sim.addresses
        if len(addresses) < 2:
            return
        shuffled = self._rng.sample(addresses, len(addresses))
        cut = self._rng.randint(1, len(addresses) // 2)
        symmetric = self._rng.random() >= self._plan.partition_asymmetric_fraction
        partition_id = sim.partition(shuffled[:cut], shuffled[cut:], symmetric=symmetric)
        sim.schedule(
            sim.now_ms + self._duration_ms(self._plan.partition_ms), sim.heal, partition_id
        )

    def _inject_clog(self) -> None:
        sim = self._sim
        addresses = sim.addresses
        if len(addresses) < 2:
            return
        src, dst = self._rng.sample(addresses, 2)
        drop = self._rng.random() < self._plan.clog_drop_fraction
        sim.clog(src, dst, drop=drop, delay_ms=self._plan.clog_delay_ms)
        sim.schedule(sim.now_ms + self._duration_ms(self._plan.clog_ms), sim.unclog, src, dst)

    def _inject_crash(self) -> None:
        candidates = self._healthy_nodes()
        if not candidates or not self._down_budget_left():
            return
        address = self._rng.choice(candidates)
        sim = self._sim
        sim.crash(address)
        self._down[address] = "crash"
        sim.schedule(sim.now_ms + self._duration_ms(self._plan.crash_down_ms), sim.restart, address)

    def _inject_pause(self) -> None:
        candidates = self._healthy_nodes()
        if not candidates or not self._down_budget_left():
            return
        address = self._rng.choice(candidates)
        self._sim.pause(address, self._duration_ms(self._plan.pause_ms))
        self._down[address] = "pause"

    def _inject_clock_jump(self) -> None:
        addresses = self._sim.live_addresses()
        if not addresses or self._plan.clock_jump_ms_max <= 0:
            return
        delta_ms = self._rng.randint(1, self._plan.clock_jump_ms_max)
        if self._rng.random() < 0.5:
            delta_ms = -delta_ms
        self._sim.jump_clock(self._rng.choice(addresses), delta_ms)

    def _inject_bridge(self) -> None:
        sim = self._sim
        partition_id = bridge_partition(sim, self._rng, sim.addresses)
        if partition_id is not None:
            duration_ms = self._duration_ms(self._plan.bridge_ms)
            sim.schedule(sim.now_ms + duration_ms, sim.heal, partition_id)

    def _inject_flap(self) -> None:
        sim = self._sim
        if len(sim.addresses) < 2:
            return
        a, b = self._rng.sample(sim.addresses, 2)
        # Never past the safety phase: heal() must leave every link open.
        until_ms = min(self._safety_end_ms, sim.now_ms + self._duration_ms(self._plan.flap_ms))
        FlappingLink(sim, self._rng, a, b, self._plan.flap_toggle_ms, until_ms).start()


def bridge_partition(sim: Simulation, rng: random.Random, addresses: list[str]) -> int | None:
    """Split ``addresses`` (at least 3) into a bridge node and two non-empty sides that cannot
    reach each other (symmetric); the bridge reaches both. Counted as ``bridge_partition``.
    Returns the partition id for ``Simulation.heal``, or None with fewer than 3 addresses."""
    if len(addresses) < 3:
        return None
    shuffled = rng.sample(addresses, len(addresses))
    bridge, others = shuffled[0], shuffled[1:]
    cut = rng.randint(1, len(others) - 1)
    sim.trace("bridge", bridge)
    return sim.partition(others[:cut], others[cut:], symmetric=True, kind="bridge_partition")


class FlappingLink:
    """The link between ``a`` and ``b`` blocked (both ways) and unblocked in turn, each state
    lasting a uniform draw from ``toggle_ms``, from ``start()`` until ``until_ms``; the link is
    open from then on. Counted once as ``flapping_link`` and once per blocked spell as
    ``link_flap``."""

    def __init__(
        self,
        sim: Simulation,
        rng: random.Random,
        a: str,
        b: str,
        toggle_ms: tuple[int, int],
        until_ms: int,
    ) -> None:
        self._sim = sim
        self._rng = rng
        self.a = a
        self.b = b
        self._toggle_ms = toggle_ms
        self._until_ms = until_ms
        self._partition_id: int | None = None

    def start(self) -> None:
        self._sim.note("flapping_link")
        self._block()

    def _next_ms(self) -> int:
        return self._sim.now_ms + self._rng.randint(*self._toggle_ms)

    def _block(self) -> None:
        sim = self._sim
        if sim.now_ms >= self._until_ms:
            return
        self._partition_id = sim.partition([self.a], [self.b], kind="link_flap")
        sim.schedule(self._next_ms(), self._unblock)

    def _unblock(self) -> None:
        sim = self._sim
        if self._partition_id is not None:
            sim.heal(self._partition_id)
            self._partition_id = None
        at_ms = self._next_ms()
        if at_ms < self._until_ms:
            sim.schedule(at_ms, self._block)


def network_with_plan(network: NetworkConfig, plan: FaultPlan) -> NetworkConfig:
    """``network`` with the plan's loss, duplication and spike rates (the safety phase's)."""
    return replace(
        network,
        datagram_loss_rate=plan.datagram_loss_rate,
        datagram_duplicate_rate=plan.datagram_duplicate_rate,
        spike_rate=plan.spike_rate,
    )
