"""Membership (SWIM + Lifeguard) on the simulator: node adapter, observer, checkers, scenarios.

Every node runs the real ``gossipcache.membership.Membership`` core (LAN profile, T = 1 s). A node
started by the simulator for the k-th time at ``address`` has node id ``address/k`` and starts
with incarnation = its wall clock in ms (docs/design.md: the incarnation should grow across
restarts), so a restart is a new id that replaces the old record at that address.

Scenarios (``python -m sim run NAME``):

- ``membership-crash``: crashes with restarts, 5 % loss, duplicates, delay spikes and partitions
  in the safety phase; every live node must agree on the live set after heal.
- ``membership-partition``: long symmetric and asymmetric partitions and clogged links, so whole
  groups declare each other dead and must merge again after heal.
- ``membership-starved``: one node (the last address) frozen 1.6 s of every 2 s (the simulator's
  pause) under 2 % loss; with Lifeguard no healthy node may be declared dead.
- ``membership-churn``: nodes join over time, some leave gracefully, some of those come back.
- ``membership-forged-claims``: a forger holding the cluster key sends suspect / dead / leave /
  alive claims about healthy members at arbitrary incarnations (0, the target's record, one
  above, 2^63 - 1, random, and 2^64 - 1, which the codec refuses) to random nodes, every
  ``FORGERY_INTERVAL_MS`` of the safety phase; every claim must be refuted within
  ``REFUTATION_WINDOW_MS`` and incarnations must stay within 2 per refutation.

Checkers:

- ``self-never-dead`` (ALWAYS): no live node holds itself as suspect, dead or left (unless it
  left), and none ever emitted an event about itself.
- ``members-genuine`` (ALWAYS): every id in every view belongs to a process that really started.
- ``healthy-never-dead`` (ALWAYS): no *healthy* node -- never crashed, paused or restarted by
  anyone, never on either side of a partition or clog -- is declared dead by any observer.
  It applies while the run has had no partition or clog and the safety-phase datagram loss is at
  most ``HEALTHY_LOSS_RATE_MAX`` (5 %); otherwise a partitioned side may rightly declare a healthy
  node dead, and the check reports itself as not applicable (passed).
- ``live-set-agreed`` (EVENTUALLY): every live node's alive set is exactly the set of processes
  that are up (and have not left), with no member still suspect; the liveness phase
  (``LIVENESS_PERIODS`` protocol periods) is the bound.
- ``claims-refuted`` (ALWAYS): no healthy node holds another healthy node suspect, dead or left
  for longer than ``REFUTATION_WINDOW_MS`` (the forged-claims scenario; same applicability as
  ``healthy-never-dead``).
- ``incarnations-bounded`` (ALWAYS): every running node's incarnation is at most its first
  observed one plus 2 per refutation it made, and far below 2^63 (so it can always refute).

The simulator has no fault-listener hook, so ``observe`` wraps the simulation instance's fault
methods (crash, restart, pause, partition, clog, set_network, heal_all) to learn which nodes were
touched and when the liveness phase began; the wrapped methods behave exactly as before.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from gossipcache.membership import (
    EventKind,
    Keyring,
    MemberEvent,
    Membership,
    MembershipConfig,
    MemberState,
)
from gossipcache.membership.codec import (
    INCARNATION_LIMIT,
    Alive,
    Dead,
    Leave,
    Suspect,
    encode_message,
    encode_packet,
)
from gossipcache.membership.core import INCARNATION_START_MAX
from gossipcache.sansio import Channel, Outgoing

from .bench import register_bench
from .faults import FaultPlan
from .network import NetworkConfig
from .scenarios import Checker, CheckMode, Scenario, register
from .simulation import Factory, NodeContext, Simulation, node_addresses

#: The profile every scenario and the bench use (T = probe_interval_ms = 1 s).
CONFIG = MembershipConfig.lan()
#: Shared HMAC key of the simulated cluster (32 bytes).
CLUSTER_KEY = b"gossipcache-sim-membership-key!!"
#: Every node joins through the first few addresses (fewer than all: joins stay O(1) per node).
SEEDS_PER_CLUSTER = 3
#: The healthy-never-dead checker applies up to this safety-phase datagram loss rate.
HEALTHY_LOSS_RATE_MAX = 0.05
#: Liveness bound in protocol periods (T). Worst path after heal: a restarted node whose joins
#: failed during the safety phase retries after at most ``join_retry_max_ms`` (30 T), and a
#: member that crashed just before heal still needs detection (~2 T) plus the longest suspicion
#: timeout (up to 6 x the minimum, 24-31 T for 5-20 nodes) before every view drops it.
LIVENESS_PERIODS = 75
#: Member events an observer keeps (oldest kept; the rest are only counted by kind).
OBSERVED_EVENTS_MAX = 1_000_000
#: Starved node: frozen this long out of every ``STARVE_PERIOD_MS``.
STARVE_PAUSE_MS = 1_600
STARVE_PERIOD_MS = 2_000

_LIVE_STATES = (MemberState.ALIVE, MemberState.SUSPECT)
#: Forged-claims scenario: the forger's address (no node there), when it starts (the cluster
#: has formed), how often it sends, and the most claims in one forged datagram.
FORGER_ADDRESS = "10.66.0.1:7946"
FORGERY_START_MS = 10_000
FORGERY_INTERVAL_MS = 300
FORGED_CLAIMS_PER_DATAGRAM_MAX = 4
#: A healthy member held suspect, dead or left by a healthy node this long is a failed refutation.
#: The slowest honest path: the claim reaches the member by gossip (a few 200 ms rounds), its
#: refutation or direct answer comes back; with 2-5 % loss, a few retries.
REFUTATION_WINDOW_MS = 10_000


def node_id_of(address: str, sim_incarnation: int) -> str:
    """Node id of the ``sim_incarnation``-th process started at ``address``."""
    return f"{address}/{sim_incarnation}"


# ---------------------------------------------------------------------------- observer


@dataclass(frozen=True, slots=True)
class ObservedEvent:
    """A member event and the address of the node that emitted it."""

    observer: str
    event: MemberEvent


class MembershipObserver:
    """What the checkers and the bench need beyond the cores: every member event in order,
    which nodes a fault touched, whether a partition or clog happened, the highest datagram loss
    rate in force, and when the liveness phase began (``healed_at_ms``)."""

    def __init__(self, sim: Simulation) -> None:
        # No reference to ``sim`` here: the observer is the value of a WeakKeyDictionary keyed by
        # the simulation, and a reference back would keep every finished simulation alive.
        self.events: list[ObservedEvent] = []
        self.dead_events: list[ObservedEvent] = []
        self.self_events: list[ObservedEvent] = []  # a node's events about itself: a bug
        self.event_counts: Counter[str] = Counter()
        self.events_dropped = 0
        # Address -> first fault kind that touched it (crash, restart, pause, partition, clog).
        self.faulted: dict[str, str] = {}
        self.network_faults = 0  # partitions and clogs
        self.loss_rate_max = sim.network.datagram_loss_rate
        self.healed_at_ms: int | None = None
        self.left: dict[str, int] = {}  # address -> time its current process left

    def record(self, address: str, node_id: str, events: list[MemberEvent]) -> None:
        """Keep ``events`` emitted by the process ``node_id`` at ``address``."""
        for event in events:
            self.event_counts[event.kind.value] += 1
            observed = ObservedEvent(address, event)
            if event.node_id == node_id:
                self.self_events.append(observed)
            if len(self.events) >= OBSERVED_EVENTS_MAX:
                self.events_dropped += 1
                continue
            self.events.append(observed)
            if event.kind is EventKind.DEAD:
                self.dead_events.append(observed)

    def mark_faulted(self, addresses: list[str] | tuple[str, ...], kind: str) -> None:
        """Remember that a fault of ``kind`` touched ``addresses``."""
        for address in addresses:
            self.faulted.setdefault(address, kind)

    def healthy(self, address: str) -> bool:
        """Never touched by a fault and never left."""
        return address not in self.faulted and address not in self.left


_OBSERVERS: weakref.WeakKeyDictionary[Simulation, MembershipObserver] = weakref.WeakKeyDictionary()


def observer_of(sim: Simulation) -> MembershipObserver:
    """The observer ``observe`` attached to ``sim``."""
    return _OBSERVERS[sim]


def observe(sim: Simulation) -> MembershipObserver:
    """Attach (once) a ``MembershipObserver`` to ``sim`` and wrap its fault methods."""
    existing = _OBSERVERS.get(sim)
    if existing is not None:
        return existing
    observer = MembershipObserver(sim)
    _OBSERVERS[sim] = observer

    def wrap(name: str, before: Callable[..., None]) -> None:
        original = getattr(sim, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            before(*args, **kwargs)
            return original(*args, **kwargs)

        setattr(sim, name, wrapped)

    def on_node_fault(kind: str) -> Callable[..., None]:
        def note(address: str, *_: Any, **__: Any) -> None:
            observer.mark_faulted([address], kind)

        return note

    def on_partition(side_a: Any, side_b: Any, **_: Any) -> None:
        observer.network_faults += 1
        observer.mark_faulted(sorted(side_a) + sorted(side_b), "partition")

    def on_clog(src: str, dst: str, **_: Any) -> None:
        observer.network_faults += 1
        observer.mark_faulted([src, dst], "clog")

    def on_set_network(network: NetworkConfig) -> None:
        observer.loss_rate_max = max(observer.loss_rate_max, network.datagram_loss_rate)

    def on_heal_all() -> None:
        if observer.healed_at_ms is None:
            observer.healed_at_ms = sim.now_ms

    wrap("crash", on_node_fault("crash"))
    wrap("restart", on_node_fault("restart"))
    wrap("pause", on_node_fault("pause"))
    wrap("partition", on_partition)
    wrap("clog", on_clog)
    wrap("set_network", on_set_network)
    wrap("heal_all", on_heal_all)
    return observer


# ---------------------------------------------------------------------------- nodes


class MembershipNode:
    """A sans-IO adapter around one ``Membership`` core that hands the core's events to the
    observer each time the simulator collects the outbox (after every call into the core)."""

    __slots__ = (
        "membership",
        "address",
        "handle",
        "stream_failed",
        "tick",
        "next_deadline_ms",
        "_observer",
    )

    def __init__(self, membership: Membership, observer: MembershipObserver) -> None:
        self.membership = membership
        self.address = membership.address
        self._observer = observer
        # Bound methods of the core itself: no extra frame on the simulator's hot path.
        self.handle = membership.handle
        self.stream_failed = membership.stream_failed
        self.tick = membership.tick
        self.next_deadline_ms = membership.next_deadline_ms

    def take_outbox(self) -> list:
        """The core's outbox; its events go to the observer on the way."""
        membership = self.membership
        outbox = membership.take_outbox()
        events = membership.take_events()
        if events:
            self._observer.record(self.address, membership.node_id, events)
        return outbox


def seed_addresses(addresses: list[str]) -> list[str]:
    """The join contacts of a cluster: its first ``SEEDS_PER_CLUSTER`` addresses."""
    return sorted(addresses)[:SEEDS_PER_CLUSTER]


def membership_factory(
    observer: MembershipObserver, seeds: list[str], config: MembershipConfig = CONFIG
) -> Factory:
    """A factory building a ``MembershipNode`` per process start (id ``address/k``)."""

    def build(context: NodeContext) -> MembershipNode:
        address = context.address
        membership = Membership(
            address,
            node_id_of(address, context.incarnation),
            config,
            context.rng,
            Keyring(CLUSTER_KEY),
            context.now_ms,
            seeds=[seed for seed in seeds if seed != address],
            incarnation=max(0, context.wall_ms()),
        )
        observer.left.pop(address, None)
        return MembershipNode(membership, observer)

    return build


def add_membership_nodes(
    sim: Simulation,
    nodes: int,
    config: MembershipConfig = CONFIG,
    start_at_ms: Callable[[int], int] | None = None,
) -> MembershipObserver:
    """Setup: ``nodes`` membership nodes joining through the first addresses; returns the
    observer. ``start_at_ms(index)`` staggers starts (default: all at time 0)."""
    observer = observe(sim)
    addresses = node_addresses(nodes)
    factory = membership_factory(observer, seed_addresses(addresses), config)
    for index, address in enumerate(addresses):
        sim.add_node(address, factory, 0 if start_at_ms is None else start_at_ms(index))
    return observer


def leave_node(sim: Simulation, address: str) -> bool:
    """Graceful leave of the node's current process; its goodbye datagrams are sent now."""
    node = sim.core(address)
    if node is None or node.membership.has_left or sim.is_paused(address):
        return False
    node.membership.leave(sim.now_ms)
    for outgoing in node.take_outbox():
        sim.send_from(address, outgoing)
    observer_of(sim).left[address] = sim.now_ms
    return True


# ---------------------------------------------------------------------------- views


def live_view(node: MembershipNode) -> dict[str, MemberState]:
    """Id -> state of the members this node counts as live (alive or suspect)."""
    return {m.node_id: m.state for m in node.membership.members() if m.state in _LIVE_STATES}


def running_nodes(sim: Simulation) -> list[MembershipNode]:
    """Cores of processes that are up and have not left."""
    nodes = (sim.core(address) for address in sim.live_addresses())
    return [node for node in nodes if node is not None and not node.membership.has_left]


def expected_live_ids(sim: Simulation) -> set[str]:
    """Ids of the processes that are up and have not left: what every view should hold."""
    return {node_id_of(n.address, sim.incarnation(n.address)) for n in running_nodes(sim)}


# ---------------------------------------------------------------------------- checkers


def check_self_never_dead(sim: Simulation) -> tuple[bool, str]:
    """No running node believes itself suspect, dead or left, nor emitted an event about itself."""
    for node in running_nodes(sim):
        membership = node.membership
        for member in membership.members():
            if member.node_id == membership.node_id and member.state is not MemberState.ALIVE:
                return False, f"{membership.node_id} holds itself as {member.state.value}"
    for observed in observer_of(sim).self_events[:1]:
        event = observed.event
        return False, f"{event.node_id} emitted {event.kind.value} about itself"
    return True, ""


def check_members_genuine(sim: Simulation) -> tuple[bool, str]:
    """Every id in every view is ``address/k`` of a process that really started."""
    for node in running_nodes(sim):
        for member in node.membership.members():
            address, _, started = member.node_id.rpartition("/")
            if address not in sim.addresses or not 1 <= int(started) <= sim.incarnation(address):
                return False, f"{node.address} holds invented member {member.node_id!r}"
            if member.address != address:
                return False, f"{node.address} holds {member.node_id!r} at {member.address}"
    return True, ""


def check_healthy_never_dead(sim: Simulation) -> tuple[bool, str]:
    """No healthy node was declared dead (while the run qualifies; see the module docstring)."""
    observer = observer_of(sim)
    if observer.network_faults:
        return True, "not applicable: partitions or clogs happened"
    if observer.loss_rate_max > HEALTHY_LOSS_RATE_MAX:
        return True, f"not applicable: loss {observer.loss_rate_max:g} > {HEALTHY_LOSS_RATE_MAX}"
    healthy_count = sum(1 for a in sim.addresses if observer.healthy(a))
    for observed in observer.dead_events:
        if observer.healthy(observed.event.address):
            return False, (
                f"healthy {observed.event.node_id} declared dead by {observed.observer} "
                f"at {observed.event.now_ms} ms"
            )
    return True, f"{healthy_count} healthy nodes, none declared dead"


def check_live_set_agreed(sim: Simulation) -> tuple[bool, str]:
    """Every running node's live set is exactly the running processes, none suspect."""
    expected = expected_live_ids(sim)
    for node in running_nodes(sim):
        view = live_view(node)
        if view.keys() != expected:
            missing = sorted(expected - view.keys())[:3]
            extra = sorted(view.keys() - expected)[:3]
            return False, f"{node.address}: missing {missing}, extra {extra}"
        suspects = [i for i, state in view.items() if state is MemberState.SUSPECT]
        if suspects:
            return False, f"{node.address} still suspects {suspects[:3]}"
    return True, f"{len(expected)} running nodes agree"


def check_claims_refuted(sim: Simulation) -> tuple[bool, str]:
    """No healthy node holds a healthy member non-alive for longer than the refutation window."""
    observer = observer_of(sim)
    if observer.network_faults:
        return True, "not applicable: partitions or clogs happened"
    if observer.loss_rate_max > HEALTHY_LOSS_RATE_MAX:
        return True, f"not applicable: loss {observer.loss_rate_max:g} > {HEALTHY_LOSS_RATE_MAX}"
    now_ms = sim.now_ms
    healthy = {
        node_id_of(n.address, sim.incarnation(n.address))
        for n in running_nodes(sim)
        if observer.healthy(n.address)
    }
    for node in running_nodes(sim):
        if not observer.healthy(node.address):
            continue
        for member in node.membership.members():
            if member.node_id not in healthy or member.state is MemberState.ALIVE:
                continue
            if now_ms - member.since_ms > REFUTATION_WINDOW_MS:
                return False, (
                    f"{node.address} holds healthy {member.node_id} {member.state.value} "
                    f"(incarnation {member.incarnation}) since {member.since_ms} ms"
                )
    return True, f"{len(healthy)} healthy nodes, every claim refuted in time"


_FIRST_INCARNATIONS: weakref.WeakKeyDictionary[Simulation, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


def check_incarnations_bounded(sim: Simulation) -> tuple[bool, str]:
    """Each running node's incarnation is at most its first observed one plus 2 per refutation
    (a claim, however high, moves it by at most 2), and below ``INCARNATION_START_MAX`` plus
    that: nowhere near 2^63, so it can always refute once more."""
    first = _FIRST_INCARNATIONS.setdefault(sim, {})
    highest = 0
    for node in running_nodes(sim):
        membership = node.membership
        start = first.setdefault(membership.node_id, membership.incarnation)
        refutations = membership.stats().get("refutations", 0)
        if membership.incarnation > start + 2 * refutations:
            return False, (
                f"{membership.node_id} at incarnation {membership.incarnation}: started at "
                f"{start}, {refutations} refutations"
            )
        if membership.incarnation >= INCARNATION_START_MAX + 2 * refutations:
            return False, f"{membership.node_id} at incarnation {membership.incarnation}"
        highest = max(highest, membership.incarnation)
    return True, f"highest incarnation {highest}"


SAFETY_CHECKERS = (
    Checker("self-never-dead", check_self_never_dead, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("members-genuine", check_members_genuine, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("healthy-never-dead", check_healthy_never_dead, CheckMode.ALWAYS, interval_ms=1_000),
)
LIVE_SET_AGREED = Checker(
    "live-set-agreed", check_live_set_agreed, CheckMode.EVENTUALLY, interval_ms=500
)
MEMBERSHIP_CHECKERS = (*SAFETY_CHECKERS, LIVE_SET_AGREED)
#: Forged claims: a forged ``dead`` is applied at once (it is a claim like any other), so
#: ``healthy-never-dead`` cannot hold; what must hold is that every such claim is refuted.
FORGED_CLAIMS_CHECKERS = (
    Checker("self-never-dead", check_self_never_dead, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("members-genuine", check_members_genuine, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("claims-refuted", check_claims_refuted, CheckMode.ALWAYS, interval_ms=500),
    Checker("incarnations-bounded", check_incarnations_bounded, CheckMode.ALWAYS, interval_ms=500),
    LIVE_SET_AGREED,
)

_LIVENESS_S = LIVENESS_PERIODS * CONFIG.probe_interval_ms / 1000


# ---------------------------------------------------------------------------- scenarios


def _setup_cluster(sim: Simulation, nodes: int) -> None:
    add_membership_nodes(sim, nodes)


def _setup_starved(sim: Simulation, nodes: int) -> None:
    """The last node is frozen ``STARVE_PAUSE_MS`` of every ``STARVE_PERIOD_MS`` until heal."""
    observer = add_membership_nodes(sim, nodes)
    starved = node_addresses(nodes)[-1]
    first_ms = 10 * CONFIG.probe_interval_ms  # let the cluster form first

    def starve() -> None:
        if observer.healed_at_ms is not None:
            return
        sim.pause(starved, STARVE_PAUSE_MS)
        sim.schedule(sim.now_ms + STARVE_PERIOD_MS, starve)

    sim.schedule(first_ms, starve)


#: Churn: nodes start within this window; leaves happen at this rate per node per minute.
CHURN_START_WINDOW_MS = 20_000
CHURN_LEAVES_PER_NODE_MIN = 0.5
#: A node that left comes back (new process, new id) after this long, with this probability.
CHURN_REJOIN_MS = (3_000, 15_000)
CHURN_REJOIN_PROBABILITY = 0.5


def _setup_churn(sim: Simulation, nodes: int) -> None:
    """Staggered joins; random graceful leaves, half of them followed by a restart (a rejoin)."""
    rng = sim.rng("scenario/churn")
    starts = [0] + [rng.randint(0, CHURN_START_WINDOW_MS) for _ in range(nodes - 1)]
    observer = add_membership_nodes(sim, nodes, start_at_ms=starts.__getitem__)
    addresses = node_addresses(nodes)
    # Keep the first seed up so every join and rejoin has a contact.
    leavers = addresses[1:]
    rate_per_ms = CHURN_LEAVES_PER_NODE_MIN * len(leavers) / 60_000

    def rejoin(address: str) -> None:
        if observer.healed_at_ms is None and address in observer.left:
            sim.crash(address)  # the process that left exits ...
            sim.restart(address)  # ... and a new one starts at the same address

    def churn() -> None:
        if observer.healed_at_ms is not None or not leavers:
            return
        address = rng.choice(leavers)
        if leave_node(sim, address) and rng.random() < CHURN_REJOIN_PROBABILITY:
            sim.schedule(sim.now_ms + rng.randint(*CHURN_REJOIN_MS), rejoin, address)
        sim.schedule(sim.now_ms + 1 + int(rng.expovariate(rate_per_ms)), churn)

    if leavers:
        sim.schedule(CHURN_START_WINDOW_MS + int(rng.expovariate(rate_per_ms)), churn)


class Forger:
    """Holds the cluster key and sends forged claims about running members to random nodes.

    Incarnations are picked to hit every rule: 0 (stale), the target's record of the victim,
    one above it, the victim's own, 2^63 - 1 (the end of the space), a random 63-bit value, and
    2^64 - 1 (encodable by msgpack, refused by the codec). Alive claims are about existing ids
    at their real address (inflating the record); the others name a made-up accuser."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = sim.rng("scenario/forger")
        self.keyring = Keyring(CLUSTER_KEY)
        self.claims_sent = 0
        self.datagrams_sent = 0

    def incarnation_for(self, record: int, own: int) -> int:
        choice = self.rng.randrange(7)
        return (
            0,
            record,
            min(record + 1, INCARNATION_LIMIT - 1),
            own,
            INCARNATION_LIMIT - 1,
            self.rng.randrange(INCARNATION_LIMIT),
            2**64 - 1,
        )[choice]

    def forge(self, target: MembershipNode, victim: MembershipNode) -> bytes:
        victim_core = victim.membership
        records = {m.node_id: m.incarnation for m in target.membership.members()}
        record = records.get(victim_core.node_id, victim_core.incarnation)
        incarnation = self.incarnation_for(record, victim_core.incarnation)
        kind = self.rng.randrange(4)
        accuser = f"forger-{self.rng.randrange(1_000)}"
        if incarnation >= INCARNATION_LIMIT:  # the codec would refuse to build it
            type_number = (Suspect.TYPE, Dead.TYPE)[kind % 2]
            return msgpack.packb([type_number, victim_core.node_id, incarnation, accuser])
        victim_id = victim_core.node_id
        message = (
            Suspect(victim_id, incarnation, accuser),
            Dead(victim_id, incarnation, accuser),
            Leave(victim_id, incarnation),
            Alive(victim_id, victim_core.address, incarnation, b""),
        )[kind]
        return encode_message(message)

    def send_round(self) -> None:
        observer = observer_of(self.sim)
        if observer.healed_at_ms is not None:
            return  # the liveness phase: the forger stops, every view must settle
        nodes = running_nodes(self.sim)
        if len(nodes) >= 2:
            target = self.rng.choice(nodes)
            claims = [
                self.forge(target, self.rng.choice(nodes))
                for _ in range(self.rng.randint(1, FORGED_CLAIMS_PER_DATAGRAM_MAX))
            ]
            payload = encode_packet(self.keyring, claims)
            self.sim.send_from(FORGER_ADDRESS, Outgoing(target.address, Channel.DATAGRAM, payload))
            self.claims_sent += len(claims)
            self.datagrams_sent += 1
        self.sim.schedule(self.sim.now_ms + FORGERY_INTERVAL_MS, self.send_round)


def _setup_forged_claims(sim: Simulation, nodes: int) -> None:
    """A cluster under a forger that sends claims every ``FORGERY_INTERVAL_MS`` until heal."""
    add_membership_nodes(sim, nodes)
    sim.schedule(FORGERY_START_MS, Forger(sim).send_round)


CRASH_PLAN = FaultPlan(
    datagram_loss_rate=0.05,
    datagram_duplicate_rate=0.02,
    spike_rate=0.01,
    partitions_per_min=2.0,
    partition_ms=(1_000, 10_000),
    crashes_per_min=4.0,
    crash_down_ms=(1_000, 20_000),
    clock_offset_ms_max=2_000,
    clock_drift_ppm_max=500,
)
PARTITION_PLAN = FaultPlan(
    datagram_loss_rate=0.01,
    partitions_per_min=3.0,
    partition_asymmetric_fraction=0.3,
    partition_ms=(2_000, 40_000),
    clogs_per_min=3.0,
    clog_ms=(2_000, 20_000),
)
STARVED_PLAN = FaultPlan(datagram_loss_rate=0.02)
CHURN_PLAN = FaultPlan(datagram_loss_rate=0.02, datagram_duplicate_rate=0.01)
FORGED_CLAIMS_PLAN = FaultPlan(datagram_loss_rate=0.02, datagram_duplicate_rate=0.01)


def _membership_scenario(
    name: str,
    description: str,
    setup: Callable[[Simulation, int], None],
    plan: FaultPlan,
    nodes: int,
    checkers: tuple[Checker, ...] = MEMBERSHIP_CHECKERS,
) -> Scenario:
    """Register a membership scenario: the checkers above, 60 s of faults, then the liveness
    bound of ``LIVENESS_PERIODS`` periods."""
    return register(
        Scenario(
            name=name,
            description=description,
            setup=setup,
            checkers=checkers,
            fault_plan=plan,
            nodes_default=nodes,
            duration_s_default=60.0,
            liveness_s=_LIVENESS_S,
        )
    )


MEMBERSHIP_CRASH = _membership_scenario(
    "membership-crash",
    "SWIM+Lifeguard under crashes/restarts, loss and partitions; views agree after",
    _setup_cluster,
    CRASH_PLAN,
    nodes=5,
)
MEMBERSHIP_PARTITION = _membership_scenario(
    "membership-partition",
    "long symmetric/asymmetric partitions and clogs; the cluster merges after heal",
    _setup_cluster,
    PARTITION_PLAN,
    nodes=5,
)
MEMBERSHIP_STARVED = _membership_scenario(
    "membership-starved",
    "one node frozen 80% of the time; Lifeguard keeps healthy nodes alive",
    _setup_starved,
    STARVED_PLAN,
    nodes=6,
)
MEMBERSHIP_CHURN = _membership_scenario(
    "membership-churn",
    "staggered joins, graceful leaves and rejoins under light loss",
    _setup_churn,
    CHURN_PLAN,
    nodes=8,
)

MEMBERSHIP_FORGED_CLAIMS = _membership_scenario(
    "membership-forged-claims",
    "a key holder forges suspect/dead/leave/alive claims at any incarnation; all refuted",
    _setup_forged_claims,
    FORGED_CLAIMS_PLAN,
    nodes=5,
    checkers=FORGED_CLAIMS_CHECKERS,
)

MEMBERSHIP_SCENARIOS = (
    MEMBERSHIP_CRASH,
    MEMBERSHIP_PARTITION,
    MEMBERSHIP_STARVED,
    MEMBERSHIP_CHURN,
    MEMBERSHIP_FORGED_CLAIMS,
)


def _membership_bench(argv: list[str]) -> int:
    from .membership_bench import main  # imported on use: the bench pulls in more code

    return main(argv)


register_bench(
    "membership",
    "SWIM+Lifeguard: detection time, false positives, Lifeguard on/off, dissemination, bytes",
    _membership_bench,
)
