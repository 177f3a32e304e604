"""Whole nodes (``NodeCore``) on the simulator, each its own cache, checked read by read.

Scenario ``node-single`` (``python -m sim run node-single --seed S``): 1 to a few independent
nodes (default 3; the first runs without membership, the others run membership and join each
other, but nothing is replicated: every node is its own cache; their active-expiry periods
differ, 50 ms to 1.5 s). A seeded client workload (``sim.workload``) sends each node about 40
commands per second over a keyspace of ``KEYSPACE_SIZE`` keys: put (persistent, with a TTL, at
an absolute instant -- some already past --, keeping the TTL, NX / XX, returning the old value),
get, delete, exists, expire (relative or absolute; NX, XX, GT, LT, XX+GT, XX+LT; some deleting),
persist and ttl. Faults: the nodes' wall clocks get offsets, drift and frequent jumps forward
and back; nodes crash (memory lost) and restart; light datagram loss for the membership nodes.

The model (``SingleNodeModel``) knows exactly what each node must answer. Per node it holds, for
each key, the value and the absolute expiry on *that node's* wall clock, and applies every
command at the wall clock the command ran at (``HistoryEntry.invoked_wall_ms``) with the store's
rules: an entry whose expiry <= now is gone, and every command on a key first drops it if it has
expired (lazy expiry). Active expiry is bounded and walks keys from a cursor, so *when* it
collects an expired key is the node's choice; after every tick the model looks at which keys the
store still holds (``Store.holds``): a key gone must have had its expiry <= that tick's wall
clock (else a live write was lost), and it leaves the model too. That keeps the model exact even
when the clock steps back past an expiry: an entry not yet collected is live again (its instant
is in the future again), one collected is gone, and the model knows which. After every command
and tick the set of keys the store holds must equal the model's, and the eviction counter must
stay 0 (``size_bytes_max`` is far above the keyspace's needs, so eviction never has to drop a
key and the check is exact). A restart empties the model: memory is lost.

Every result is compared with the model's, type included (True is not 1): gets, TTLs (expiry
minus the node's wall now, ``TTL_PERSISTENT`` / ``TTL_MISSING``), exists counts, and the results
of writes (NX / XX outcomes, old values, delete counts, expire / persist booleans).

Checkers: ``model-exact`` (ALWAYS; every result and every post-step state matched),
``no-eviction`` (ALWAYS), ``coverage`` (FINAL: reads and writes were checked and expiries were
observed; its message counts reads, writes, expiries, clocks stepping back, jumps, crashes and
invariant checks). The simulator also runs ``NodeCore.check_invariants()`` after every call.

Determinism: the store of each node has one shard (checked), so which expired key the bounded
active expiry collects first never depends on ``hash()`` -- and so neither do the answers after
a clock steps back; the digest covers every command and every answer.
"""

from __future__ import annotations

import random
import weakref
from collections import Counter
from dataclasses import replace
from typing import Any

from gossipcache.node import commands as c
from gossipcache.node.core import NodeCore
from gossipcache.store import TTL_MISSING, TTL_PERSISTENT

from .faults import FaultPlan
from .network import NetworkConfig
from .node import SIM_NODE_CONFIG, SimNode, node_factory
from .scenarios import Checker, CheckMode, Scenario, register
from .simulation import WALL_EPOCH_MS, Simulation, node_addresses
from .workload import OK, UNAVAILABLE, ClientWorkload, HistoryEntry, canonical

#: Keys the workload uses: few, so keys are overwritten, expired and read back often.
KEYSPACE_SIZE = 16
KEYSPACE = tuple(b"key:%02d" % index for index in range(KEYSPACE_SIZE))
#: Mean gap between two commands to one node.
MEAN_GAP_MS = 25.0
#: Active-expiry period of node i is ``EXPIRE_INTERVALS_MS[i % 3]``: the fast one collects an
#: expired key within a tick; the slow ones leave expired entries in place for a while, so
#: commands meet them (lazy expiry) and a clock stepping back finds them live again.
EXPIRE_INTERVALS_MS = (50, 400, 1_500)
#: One shard (<= 8 MiB) and far more room than KEYSPACE_SIZE entries need: never an eviction.
NODE_CONFIG = SIM_NODE_CONFIG
#: Violations kept verbatim (all are counted).
VIOLATIONS_KEPT = 10

NODE_SINGLE_PLAN = FaultPlan(
    datagram_loss_rate=0.02,
    crashes_per_min=8.0,
    crash_down_ms=(200, 3_000),
    clock_jumps_per_min=30.0,
    clock_jump_ms_max=5_000,
    clock_offset_ms_max=3_000,
    clock_drift_ppm_max=20_000,
    # Every node is independent: any number may be down at once.
    down_nodes_max=1_000,
)

_Entry = tuple[bytes, "int | None"]  # (value, absolute expiry on the node's wall clock)


# ---------------------------------------------------------------------------- the workload


def _ttl_ms(rng: random.Random) -> int:
    """Short TTLs expire while the run watches; long ones outlive clock jumps."""
    band = rng.random()
    if band < 0.3:
        return rng.randint(1, 300)
    if band < 0.8:
        return rng.randint(300, 4_000)
    return rng.randint(4_000, 30_000)


#: Expire condition sets the workload draws (no conditions twice as often as each other).
_EXPIRE_CONDITIONS = (
    frozenset(),
    frozenset(),
    frozenset((c.IF_ABSENT,)),
    frozenset((c.IF_PRESENT,)),
    frozenset((c.IF_GREATER,)),
    frozenset((c.IF_LESS,)),
    frozenset((c.IF_PRESENT, c.IF_GREATER)),
    frozenset((c.IF_PRESENT, c.IF_LESS)),
)


def random_command(rng: random.Random, address: str, sim: Simulation) -> c.Command:
    """One command of the node-single mix. Absolute instants come from the client's clock (true
    time), which differs from the node's by its offset, drift and jumps."""
    key = rng.choice(KEYSPACE)
    client_wall_ms = WALL_EPOCH_MS + sim.now_ms
    roll = rng.random()
    if roll < 0.32:
        value = b"v%d@%s" % (rng.getrandbits(32), address.encode())
        expiry = rng.random()
        options: dict[str, Any] = {}
        if expiry < 0.35:
            options["ttl_ms"] = _ttl_ms(rng)
        elif expiry < 0.5:
            options["expires_at_ms"] = client_wall_ms + rng.randint(-2_000, 6_000)
        elif expiry < 0.6:
            options["keep_ttl"] = True
        if rng.random() < 0.15:
            options["condition"] = rng.choice((c.IF_ABSENT, c.IF_PRESENT))
        if rng.random() < 0.1:
            options["return_old"] = True
        ttl_ms = options.pop("ttl_ms", None)
        return c.Put(key, value, ttl_ms, **options)
    if roll < 0.57:
        return c.Get(key)
    if roll < 0.67:
        return c.Ttl(key)
    if roll < 0.73:
        return c.Exists(tuple(rng.choice(KEYSPACE) for _ in range(rng.randint(1, 3))))
    if roll < 0.80:
        return c.Delete(tuple(rng.choice(KEYSPACE) for _ in range(rng.randint(1, 2))))
    if roll < 0.94:
        conditions = rng.choice(_EXPIRE_CONDITIONS)
        if rng.random() < 0.7:
            ttl_ms = _ttl_ms(rng) if rng.random() < 0.9 else rng.randint(-100, 0)
            return c.Expire(key, ttl_ms, conditions=conditions)
        at_ms = client_wall_ms + rng.randint(-2_000, 6_000)
        return c.Expire(key, expires_at_ms=at_ms, conditions=conditions)
    return c.Persist(key)


# ---------------------------------------------------------------------------- the model


def _same(a: object, b: object) -> bool:
    """Equal and of the same type: True is not 1, b"" is not None."""
    return type(a) is type(b) and a == b


class SingleNodeModel:
    """The exact model of independent nodes; see the module docstring.

    Pass it to ``node_factory(observers=...)`` (it hears of starts and ticks) and add
    ``completed`` to the workload with ``ClientWorkload.on_complete``.
    """

    def __init__(self, sim: Simulation, keyspace: tuple[bytes, ...] = KEYSPACE) -> None:
        self.sim = sim
        self.keyspace = keyspace
        self.entries: dict[str, dict[bytes, _Entry]] = {}
        self.incarnations: dict[str, int] = {}
        # Highest and latest wall clock each node's current process showed the store.
        self.wall_max: dict[str, int] = {}
        self.wall_last: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.violation_count = 0

    # -- observers -----------------------------------------------------------------------------

    def node_started(self, node: SimNode) -> None:
        address = node.address
        if address in self.incarnations:
            self.counts["memory_lost"] += 1
        self.entries[address] = {}
        self.incarnations[address] = node.incarnation
        self.wall_max.pop(address, None)
        self.wall_last.pop(address, None)
        store = node.core.store
        if store.shard_count != 1:
            self._violation(node, f"the store has {store.shard_count} shards; the model needs 1")

    def node_ticked(self, node: SimNode, wall_ms: int) -> None:
        model = self._model_of(node)
        if model is None:
            return
        self._observe_wall(node.address, wall_ms)
        store = node.core.store
        for key in self.keyspace:
            entry = model.get(key)
            if entry is None or store.holds(key):
                continue
            expires_at_ms = entry[1]
            if expires_at_ms is not None and expires_at_ms <= wall_ms:
                del model[key]
                self.counts["expired_active"] += 1
            else:
                self._violation(
                    node,
                    f"tick at wall {wall_ms} dropped live {key!r} = {entry[0]!r} "
                    f"(expires at {expires_at_ms})",
                )
                del model[key]
        self._check_store(node, model, f"tick at wall {wall_ms}")

    def completed(self, entry: HistoryEntry, node: SimNode | None) -> None:
        """Check one operation's answer against the model, then apply it."""
        self.counts["ops"] += 1
        if entry.outcome == UNAVAILABLE:
            self.counts["unavailable"] += 1
            return
        if node is None or entry.outcome != OK or entry.deferred:
            self._violation(
                node,
                f"op {entry.op_id} {canonical(entry.command)}: outcome {entry.outcome} "
                f"(deferred {entry.deferred}, error {entry.error}); a single node answers at once",
                address=entry.node,
            )
            return
        model = self._model_of(node)
        if model is None:
            return
        wall_ms = entry.invoked_wall_ms
        assert wall_ms is not None
        wall_max = self.wall_max.get(node.address, wall_ms)
        before = {key: model.get(key) for key in entry.keys}
        expected = self._apply(model, entry.command, wall_ms, wall_max)
        self._observe_wall(node.address, wall_ms)
        if not _same(entry.result, expected):
            self._violation(
                node,
                f"op {entry.op_id} {canonical(entry.command)} at wall {wall_ms}: "
                f"expected {expected!r}, got {entry.result!r} (model before: {before!r})",
            )
        self._check_store(node, model, f"op {entry.op_id}")

    # -- the rules -------------------------------------------------------------------------------

    def _live(self, model: dict[bytes, _Entry], key: bytes, wall_ms: int) -> _Entry | None:
        """The live entry at ``key``; an expired one is dropped, as the store's lazy expiry
        does on every command that names the key."""
        entry = model.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= wall_ms:
            del model[key]
            self.counts["expired_lazy"] += 1
            return None
        return entry

    def _read(self, model: dict, key: bytes, wall_ms: int, wall_max: int) -> _Entry | None:
        entry = self._live(model, key, wall_ms)
        self.counts["reads_checked"] += 1
        if entry is not None and entry[1] is not None and entry[1] <= wall_max:
            # The node's clock had passed this expiry, then stepped back before a collection.
            self.counts["read_after_clock_back"] += 1
        return entry

    def _apply(
        self, model: dict[bytes, _Entry], command: c.Command, wall_ms: int, wall_max: int
    ) -> object:
        """Apply ``command`` at ``wall_ms`` to ``model``; return the answer the node owes."""
        counts = self.counts
        counts[command.name] += 1
        if command.writes:
            counts["writes"] += 1
        if isinstance(command, c.Get):
            entry = self._read(model, command.key, wall_ms, wall_max)
            counts["get_hits" if entry is not None else "get_misses"] += 1
            return None if entry is None else entry[0]
        if isinstance(command, c.Ttl):
            entry = self._read(model, command.key, wall_ms, wall_max)
            if entry is None:
                return TTL_MISSING
            if entry[1] is None:
                return TTL_PERSISTENT
            counts["ttl_remaining"] += 1
            return entry[1] - wall_ms
        if isinstance(command, c.Exists):
            return sum(
                self._read(model, key, wall_ms, wall_max) is not None for key in command.keys
            )
        if isinstance(command, c.Delete):
            deleted = 0
            for key in command.keys:
                if self._live(model, key, wall_ms) is not None:
                    del model[key]
                    deleted += 1
            return deleted
        if isinstance(command, c.Put):
            return self._put(model, command, wall_ms)
        if isinstance(command, c.Expire):
            return self._expire(model, command, wall_ms)
        if isinstance(command, c.Persist):
            entry = self._live(model, command.key, wall_ms)
            if entry is None or entry[1] is None:
                return False
            model[command.key] = (entry[0], None)
            return True
        raise TypeError(f"the model does not know {command!r}")

    def _put(self, model: dict[bytes, _Entry], command: c.Put, wall_ms: int) -> object:
        """SET: the condition looks at the live entry; an absolute instant already past deletes
        the key; KEEPTTL keeps the live entry's expiry; no expiry option writes a persistent
        entry."""
        key = command.key
        current = self._live(model, key, wall_ms)
        old = current[0] if current is not None else None
        if command.condition is not None and (
            (command.condition == c.IF_ABSENT) == (current is not None)
        ):
            self.counts["put_condition_failed"] += 1
            return old if command.return_old else False
        answer = old if command.return_old else True
        if command.expires_at_ms is not None:
            self.counts["put_at"] += 1
            if command.expires_at_ms <= wall_ms:
                self.counts["put_at_past"] += 1
                model.pop(key, None)
                return answer
            expires_at_ms = command.expires_at_ms
        elif command.ttl_ms is not None:
            self.counts["put_ttl"] += 1
            expires_at_ms = wall_ms + command.ttl_ms
        elif command.keep_ttl and current is not None:
            expires_at_ms = current[1]
        else:
            expires_at_ms = None
        model[key] = (command.value, expires_at_ms)
        return answer

    def _expire(self, model: dict[bytes, _Entry], command: c.Expire, wall_ms: int) -> bool:
        key = command.key
        current = self._live(model, key, wall_ms)
        if current is None:
            return False
        ttl_ms = command.ttl_ms
        if ttl_ms is None:
            ttl_ms = command.expires_at_ms - wall_ms
        conditions = command.conditions
        if conditions:
            # All must hold; a persistent key counts as expiring never.
            current_ms = current[1]
            new_ms = wall_ms + ttl_ms
            allowed = (
                (c.IF_ABSENT not in conditions or current_ms is None)
                and (c.IF_PRESENT not in conditions or current_ms is not None)
                and (
                    c.IF_GREATER not in conditions
                    or (current_ms is not None and new_ms > current_ms)
                )
                and (c.IF_LESS not in conditions or current_ms is None or new_ms < current_ms)
            )
            if not allowed:
                self.counts["expire_condition_failed"] += 1
                return False
        if ttl_ms <= 0:
            self.counts["expire_deleted"] += 1
            del model[key]
        else:
            model[key] = (current[0], wall_ms + ttl_ms)
        return True

    # -- helpers -------------------------------------------------------------------------------

    def _model_of(self, node: SimNode) -> dict[bytes, _Entry] | None:
        if self.incarnations.get(node.address) != node.incarnation:
            self._violation(node, "the model missed this process's start")
            return None
        return self.entries[node.address]

    def _observe_wall(self, address: str, wall_ms: int) -> None:
        last = self.wall_last.get(address)
        if last is not None and wall_ms < last:
            self.counts["wall_steps_back"] += 1
        self.wall_last[address] = wall_ms
        if wall_ms > self.wall_max.get(address, wall_ms - 1):
            self.wall_max[address] = wall_ms

    def _check_store(self, node: SimNode, model: dict[bytes, _Entry], when: str) -> None:
        """After a step: the store holds exactly the model's keys, and evicted nothing."""
        store = node.core.store
        held = [key for key in self.keyspace if store.holds(key)]
        if len(held) != len(model) or len(store) != len(model) or any(k not in model for k in held):
            self._violation(
                node,
                f"after {when}: the store holds {len(store)} keys {held!r}, the model "
                f"{sorted(model)!r}",
            )
            # Resynchronise on what the store holds is impossible (values unknown): forget.
            for key in [key for key in model if key not in held]:
                del model[key]
        evictions = store.stats().evictions
        if evictions:
            self._violation(node, f"after {when}: {evictions} evictions; the model needs none")

    def _violation(self, node: SimNode | None, message: str, *, address: str = "") -> None:
        self.violation_count += 1
        if len(self.violations) < VIOLATIONS_KEPT:
            where = f"{node.address}#{node.incarnation}" if node is not None else address
            self.violations.append(f"{self.sim.now_ms} ms {where}: {message}")

    def summary(self) -> str:
        """Coverage counts, most telling first."""
        counts = self.counts
        sim_coverage = self.sim.coverage
        parts = [
            f"reads checked {counts['reads_checked']}",
            f"(gets {counts['get']}: {counts['get_hits']} hits; ttls {counts['ttl']}; "
            f"exists {counts['exists']})",
            f"writes {counts['writes']}",
            f"(puts {counts['put']}, deletes {counts['delete']}, expires {counts['expire']}, "
            f"persists {counts['persist']})",
            f"expiries observed {counts['expired_lazy'] + counts['expired_active']}",
            f"(lazy {counts['expired_lazy']}, active {counts['expired_active']})",
            f"reads after a clock stepped back past the expiry {counts['read_after_clock_back']}",
            f"clock jumps {sim_coverage.get('clock_jump', 0)}",
            f"wall steps back seen {counts['wall_steps_back']}",
            f"crashes {sim_coverage.get('crash', 0)}",
            f"memory lost {counts['memory_lost']}",
            f"unavailable {counts['unavailable']}",
            f"invariant checks {self.sim.invariant_checks}",
        ]
        return ", ".join(parts)


# ---------------------------------------------------------------------------- the scenario


class NodeSingleRun:
    """What one run of node-single keeps: the workload (history) and the model."""

    def __init__(self, sim: Simulation) -> None:
        self.workload = ClientWorkload(sim)
        self.model = SingleNodeModel(sim)
        self.workload.on_complete(self.model.completed)


_RUNS: weakref.WeakKeyDictionary[Simulation, NodeSingleRun] = weakref.WeakKeyDictionary()


def run_of(sim: Simulation) -> NodeSingleRun:
    """The node-single state of ``sim`` (for checkers and tests)."""
    return _RUNS[sim]


def setup_single_nodes(
    sim: Simulation, nodes: int, *, core_class: type[NodeCore] = NodeCore
) -> NodeSingleRun:
    """``nodes`` independent nodes under the random workload; the first has no membership, the
    others run membership and join each other."""
    run = NodeSingleRun(sim)
    _RUNS[sim] = run
    addresses = node_addresses(nodes)
    members = addresses[1:]
    factory = node_factory(
        sim,
        NODE_CONFIG,
        observers=(run.workload, run.model),
        core_class=core_class,
        membership=members.__contains__,
        seeds=lambda address: members[:3],
        configure=lambda address, config: replace(
            config,
            expire_interval_ms=EXPIRE_INTERVALS_MS[addresses.index(address) % 3],
            replication_enabled=False,  # each node its own cache, checked against its model
        ),
    )
    for address in addresses:
        sim.add_node(address, factory)
    run.workload.start_random(addresses, random_command, mean_gap_ms=MEAN_GAP_MS)
    return run


def check_model_exact(sim: Simulation) -> tuple[bool, str]:
    model = run_of(sim).model
    if model.violation_count:
        return False, f"{model.violation_count} violations: " + " | ".join(model.violations)
    return True, model.summary()


def check_no_eviction(sim: Simulation) -> tuple[bool, str]:
    for address in sim.live_addresses():
        node = sim.core(address)
        evictions = node.core.store.stats().evictions
        if evictions:
            return False, f"{address} evicted {evictions} entries"
    return True, "no node evicted anything"


def check_coverage(sim: Simulation) -> tuple[bool, str]:
    model = run_of(sim).model
    counts = model.counts
    missing = [
        name
        for name, count in (
            ("reads", counts["reads_checked"]),
            ("writes", counts["writes"]),
            ("expiries", counts["expired_lazy"] + counts["expired_active"]),
        )
        if not count
    ]
    summary = model.summary()
    if missing:
        return False, f"nothing checked for: {', '.join(missing)}; {summary}"
    return True, summary


NODE_SINGLE_CHECKERS = (
    Checker("model-exact", check_model_exact, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("no-eviction", check_no_eviction, CheckMode.ALWAYS, interval_ms=1_000),
    Checker("coverage", check_coverage, CheckMode.FINAL),
)


def node_single_scenario(
    name: str = "node-single",
    *,
    core_class: type[NodeCore] = NodeCore,
    description: str = (
        "independent whole nodes (NodeCore) under a random workload, clock jumps/drift and "
        "crashes; every answer checked against an exact model"
    ),
) -> Scenario:
    """The node-single scenario (unregistered), optionally with a test's ``core_class``."""

    def setup(sim: Simulation, nodes: int) -> None:
        setup_single_nodes(sim, nodes, core_class=core_class)

    return Scenario(
        name=name,
        description=description,
        setup=setup,
        checkers=NODE_SINGLE_CHECKERS,
        fault_plan=NODE_SINGLE_PLAN,
        network=NetworkConfig(),
        nodes_default=3,
        duration_s_default=30.0,
        liveness_s=5.0,
        check_invariants=True,
    )


NODE_SINGLE = register(node_single_scenario())
