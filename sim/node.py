"""Whole nodes on the simulator: ``NodeCore`` behind a simulated clock and a thin adapter.

- ``SimClock`` is the clock interface of ``gossipcache.clock`` read from the simulation:
  ``monotonic_ms`` is virtual time, ``wall_ms`` the node's own wall clock (offset, drift and jumps
  of ``Simulation.set_clock`` / ``jump_clock`` apply), ``timer_ns`` virtual time in ns.
- ``SimNode`` is what the simulator drives: the sans-IO contract delegated to one ``NodeCore``
  (bound methods, no extra frame on the hot path), ``check_invariants`` delegated too (so the
  simulator checks the whole core after every call), and two hooks: each ``tick`` is reported to
  the node's observers with the wall clock the core saw, and commands the core completed later
  (``Pending``) are routed to their ``reply_to`` each time the simulator collects the outbox,
  i.e. after every call into the core.
- ``node_factory`` builds a ``SimNode`` per process start from the ``NodeContext``: the node's
  own random stream, a fixed cluster key, and the test-only ``core_class`` hook a test uses to
  break a core on purpose.

A client calls ``SimNode.execute`` and then ``Simulation.after_call(address)`` (the client
workload in ``sim.workload`` does both), so its commands get the same outbox, timer and
invariant handling as a delivered payload.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

from gossipcache.membership import Keyring
from gossipcache.node.commands import Command
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import NodeCore, Pending

from .simulation import Factory, NodeContext, Simulation

#: The simulated cluster's HMAC key (32 bytes), as fixed as the membership tests' keys.
NODE_CLUSTER_KEY = b"gossipcache-sim-node-cluster-key"

#: A simulated node serves no sockets of its own: no RESP or metrics port, no key file.
SIM_NODE_CONFIG = NodeConfig(
    resp_port=None,
    metrics_port=None,
    membership_enabled=False,
    membership_profile="local",
    size_bytes_max=1024 * 1024,
)


class SimClock:
    """The ``gossipcache.clock.Clock`` of one simulated node."""

    __slots__ = ("_sim", "address")

    def __init__(self, sim: Simulation, address: str) -> None:
        self._sim = sim
        self.address = address

    def monotonic_ms(self) -> int:
        return self._sim.now_ms

    def wall_ms(self) -> int:
        return self._sim.wall_ms(self.address)

    def timer_ns(self) -> int:
        return self._sim.now_ms * 1_000_000


class NodeObserver(Protocol):
    """What ``node_factory`` tells about the nodes it builds (each method optional)."""

    def node_started(self, node: SimNode) -> None:
        """A new process (``node.incarnation``) started at ``node.address``: empty memory."""

    def node_ticked(self, node: SimNode, wall_ms: int) -> None:
        """The node's ``tick`` ran; ``wall_ms`` is its wall clock during that tick."""


class CompletionReceiver(Protocol):
    """What a submitter puts in ``Pending.reply_to`` to hear of the completion."""

    def pending_completed(self, node: SimNode, pending: Pending) -> None:
        """``pending`` finished (``result`` or ``error`` set)."""


class SimNode:
    """One process at ``address``: its ``NodeCore``, its clock and its incarnation."""

    __slots__ = (
        "core",
        "clock",
        "address",
        "incarnation",
        "handle",
        "stream_failed",
        "next_deadline_ms",
        "check_invariants",
        "_tick_observers",
        "_completions_dropped",
    )

    def __init__(
        self,
        core: NodeCore,
        clock: SimClock,
        incarnation: int,
        tick_observers: Iterable[Callable[[SimNode, int], None]] = (),
    ) -> None:
        self.core = core
        self.clock = clock
        self.address = clock.address
        self.incarnation = incarnation
        self.handle = core.handle
        self.stream_failed = core.stream_failed
        self.next_deadline_ms = core.next_deadline_ms
        self.check_invariants = core.check_invariants
        self._tick_observers = tuple(tick_observers)
        self._completions_dropped = 0

    def tick(self, now_ms: int) -> None:
        self.core.tick(now_ms)
        if self._tick_observers:
            wall_ms = self.clock.wall_ms()  # no virtual time passed: what the tick read
            for observer in self._tick_observers:
                observer(self, wall_ms)

    def take_outbox(self) -> list:
        """The core's outbox; commands it completed since the last call go to their
        ``reply_to`` on the way (those without a receiver are counted and dropped)."""
        core = self.core
        if core.has_completed:
            for pending in core.take_completed():
                receiver = getattr(pending.reply_to, "pending_completed", None)
                if receiver is None:
                    self._completions_dropped += 1
                else:
                    receiver(self, pending)
        return core.take_outbox()

    @property
    def completions_dropped(self) -> int:
        """Completed commands nobody was waiting for (a submitter that set no ``reply_to``)."""
        return self._completions_dropped

    def execute(self, command: Command, wall_ms: int | None = None) -> object:
        """Run ``command`` at ``wall_ms`` (default: the node's wall clock now); the result or a
        ``Pending``. Raises what ``NodeCore.execute`` raises. The caller then calls
        ``Simulation.after_call(address)``."""
        return self.core.execute(command, self.clock.wall_ms() if wall_ms is None else wall_ms)


def node_factory(
    sim: Simulation,
    config: NodeConfig = SIM_NODE_CONFIG,
    *,
    observers: Iterable[Any] = (),
    core_class: type[NodeCore] = NodeCore,
    membership: Callable[[str], bool] | None = None,
    seeds: Callable[[str], Iterable[str]] | None = None,
    configure: Callable[[str, NodeConfig], NodeConfig] | None = None,
) -> Factory:
    """A factory building a ``SimNode`` around ``core_class(config, SimClock, ...)``.

    ``configure(address, config)`` may return another config for that node (an expiry
    interval, say). ``membership(address)`` says whether that node runs membership (default:
    ``config.membership_enabled``); ``seeds(address)`` gives its join contacts (default:
    ``config.seeds`` without itself). ``observers`` get ``node_started`` / ``node_ticked`` calls
    when they define those methods. ``core_class`` lets a test inject a deliberately broken core.
    """
    observers = tuple(observers)
    started = [o.node_started for o in observers if hasattr(o, "node_started")]
    ticked = [o.node_ticked for o in observers if hasattr(o, "node_ticked")]

    def build(context: NodeContext) -> SimNode:
        address = context.address
        base = config if configure is None else configure(address, config)
        enabled = base.membership_enabled if membership is None else membership(address)
        contacts = base.seeds if seeds is None else tuple(seeds(address))
        node_config = replace(
            base,
            membership_enabled=enabled,
            seeds=tuple(seed for seed in contacts if seed != address),
        )
        clock = SimClock(sim, address)
        core = core_class(
            node_config,
            clock,
            address=address,
            rng=context.rng,
            keyring=Keyring(NODE_CLUSTER_KEY),
        )
        node = SimNode(core, clock, context.incarnation, ticked)
        for observer in started:
            observer(node)
        return node

    return build
