"""Client workloads on the simulator, and the history they leave for checkers.

A ``ClientWorkload`` submits commands (``gossipcache.node.commands``) to the ``SimNode``s of a
simulation at virtual times (``submit_at`` schedules with ``Simulation.schedule``;
``start_random`` runs a seeded Poisson process of generated commands per node) and records every
invocation and completion in ``history``, one ``HistoryEntry`` per operation, in invocation
order. Checkers read the history after (or during) a run; listeners added with
``on_complete`` hear of each operation when its outcome is known.

``HistoryEntry`` fields:

- ``op_id``: 1, 2, ... in invocation order (unique within the workload).
- ``node``: the address the client sent the command to; ``incarnation``: which process there
  took it (``Simulation.incarnation``; 0 when the node was down and nothing took it).
- ``kind``: the command's name (``"get"``, ``"put"``, ``"delete"``, ``"exists"``, ``"expire"``,
  ``"persist"``, ``"ttl"``, ...); ``key``: its first key (None for keyless commands);
  ``keys``: every key it names; ``value``: the value a ``put`` writes (else None);
  ``command``: the command object itself (TTL, expiry instant, condition, ...).
- ``invoked_at_ms``: virtual time of the invocation; ``invoked_wall_ms``: the node's wall clock
  the command ran at (None when it never ran).
- ``completed_at_ms``: virtual time the outcome became known (None while pending).
- ``outcome``, one of:

  - ``OK``: the node answered; ``result`` holds the answer (an acknowledged write is an ``OK``
    write).
  - ``ERROR``: the node answered with an error (``InvalidRequest``, ``ServiceUnavailable``);
    ``error`` is ``"TypeName: message"``. Refusals so far have no effect; later layers may
    document errors after a partial effect (a quorum write that reached too few replicas).
  - ``UNAVAILABLE``: the command never reached a process (the node was down or paused):
    certainly no effect. ``error`` says why.
  - ``PENDING``: a process took it and has not answered yet (``deferred`` is True).
  - ``INDETERMINATE``: the process that took it crashed before answering: it may or may not
    have taken effect. Set when the next process starts at that address.

- ``deferred``: ``execute`` returned a ``Pending`` (the answer came later, or never).
- ``version``: a replicated write's version (``Pending.version``: the coordinator's stamp, an
  int ordered as last-writer-wins orders writes), copied when the outcome becomes known, even
  an ``ERROR`` or ``INDETERMINATE`` one (the write may have landed); None for reads, for
  commands answered at once, and for writes never stamped.

Every invocation and outcome is also folded into the simulation's digest (``Simulation.trace``),
in a canonical text form (``canonical``: sets and dicts sorted, since the ``repr`` of a set of
strings depends on ``PYTHONHASHSEED``), so two runs agree exactly when their histories do.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gossipcache.errors import GossipCacheError
from gossipcache.node.commands import Command
from gossipcache.node.core import Pending

from .node import SimNode
from .simulation import Simulation

OK = "ok"
ERROR = "error"
UNAVAILABLE = "unavailable"
PENDING = "pending"
INDETERMINATE = "indeterminate"
OUTCOMES = (OK, ERROR, UNAVAILABLE, PENDING, INDETERMINATE)

#: Builds the next command for a node: (rng, address, simulation) -> command.
CommandGenerator = Callable[[random.Random, str, Simulation], Command]
#: Hears of an operation whose outcome became known: (entry, the node or None when down).
CompletionListener = Callable[["HistoryEntry", "SimNode | None"], None]


@dataclass(slots=True, eq=False)
class HistoryEntry:
    """One client operation; see the module docstring for each field."""

    op_id: int
    node: str
    incarnation: int
    kind: str
    key: bytes | None
    keys: tuple[bytes, ...]
    value: bytes | None
    command: Command
    invoked_at_ms: int
    invoked_wall_ms: int | None = None
    completed_at_ms: int | None = None
    outcome: str = PENDING
    result: Any = None
    error: str | None = None
    deferred: bool = False
    version: int | None = None

    @property
    def done(self) -> bool:
        """Whether the outcome is known (anything but ``PENDING``)."""
        return self.outcome != PENDING

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes shown as ``repr``)."""
        return {
            "op_id": self.op_id,
            "node": self.node,
            "incarnation": self.incarnation,
            "kind": self.kind,
            "key": None if self.key is None else repr(self.key),
            "keys": [repr(key) for key in self.keys],
            "value": None if self.value is None else repr(self.value),
            "command": canonical(self.command),
            "invoked_at_ms": self.invoked_at_ms,
            "invoked_wall_ms": self.invoked_wall_ms,
            "completed_at_ms": self.completed_at_ms,
            "outcome": self.outcome,
            "result": repr(self.result),
            "error": self.error,
            "deferred": self.deferred,
            "version": self.version,
        }


def canonical(value: object) -> str:
    """A text form of a command field or result that never depends on hash order: sets and
    dicts are sorted (``repr`` of a ``frozenset`` of strings changes with ``PYTHONHASHSEED``)."""
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(canonical(item) for item in value)) + "}"
    if isinstance(value, dict):
        items = sorted(f"{canonical(k)}: {canonical(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, Command):  # before tuple: a command is a tuple of its fields
        names = type(value).fields
        fields = ", ".join(f"{name}={canonical(item)}" for name, item in zip(names, value[1:]))
        return f"{type(value).__name__}({fields})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(canonical(item) for item in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def command_keys(command: Command) -> tuple[bytes, ...]:
    """Every key a command names, in order (empty for keyless commands)."""
    keys = getattr(command, "keys", None)
    if keys is not None:
        return tuple(keys)
    key = getattr(command, "key", None)
    return () if key is None else (key,)


@dataclass(slots=True)
class _RandomProcess:
    address: str
    generate: CommandGenerator
    rng: random.Random
    mean_gap_ms: float
    until_ms: int | None


class ClientWorkload:
    """Submits commands to the nodes of ``sim`` and keeps the history (see module docstring).

    Pass the workload to ``node_factory(observers=...)`` so it hears of restarts (which turn the
    previous process's unanswered commands ``INDETERMINATE``); it receives deferred completions
    through ``Pending.reply_to``.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        #: Every operation, in invocation order (``history[i].op_id == i + 1``).
        self.history: list[HistoryEntry] = []
        self._open: dict[int, HistoryEntry] = {}  # op_id -> PENDING entry
        # op_id -> the Pending of an open entry, read for its version when the outcome is known
        # (also when the process crashed: the write may have been stamped and sent).
        self._pendings: dict[int, Pending] = {}
        self._listeners: list[CompletionListener] = []

    def on_complete(self, listener: CompletionListener) -> None:
        """Call ``listener(entry, node)`` each time an operation's outcome becomes known."""
        self._listeners.append(listener)

    # -- submitting ----------------------------------------------------------------------------

    def submit_at(self, at_ms: int, address: str, command: Command) -> None:
        """Submit ``command`` to ``address`` at virtual time ``at_ms``."""
        self.sim.schedule(at_ms, self.submit, address, command)

    def submit(self, address: str, command: Command) -> HistoryEntry:
        """Submit ``command`` to the node at ``address`` now; returns its history entry."""
        sim = self.sim
        keys = command_keys(command)
        node = sim.core(address)
        entry = HistoryEntry(
            op_id=len(self.history) + 1,
            node=address,
            incarnation=sim.incarnation(address) if node is not None else 0,
            kind=command.name,
            key=keys[0] if keys else None,
            keys=keys,
            value=getattr(command, "value", None) if command.writes else None,
            command=command,
            invoked_at_ms=sim.now_ms,
        )
        self.history.append(entry)
        sim.trace("op", address, str(entry.op_id), canonical(command).encode())
        if node is None or sim.is_paused(address):
            self._finish(entry, None, UNAVAILABLE, error="down" if node is None else "paused")
            return entry
        if not isinstance(node, SimNode):
            raise TypeError(f"{address} runs {type(node).__name__}, not a SimNode")
        entry.invoked_wall_ms = wall_ms = node.clock.wall_ms()
        try:
            result = node.execute(command, wall_ms)
        except GossipCacheError as error:
            self._finish(entry, node, ERROR, error=f"{type(error).__name__}: {error}")
        else:
            if isinstance(result, Pending):
                entry.deferred = True
                result.reply_to = self
                result.reply_tag = entry.op_id
                self._open[entry.op_id] = entry
                self._pendings[entry.op_id] = result
            else:
                self._finish(entry, node, OK, result=result)
        # Outbox, timer, invariants; a completion the command caused is routed from here.
        sim.after_call(address)
        return entry

    def start_random(
        self,
        addresses: Iterable[str],
        generate: CommandGenerator,
        *,
        mean_gap_ms: float,
        stream: str = "workload",
        start_ms: int = 0,
        until_ms: int | None = None,
    ) -> None:
        """For each address, a Poisson process of commands from ``generate`` (mean gap
        ``mean_gap_ms``), drawn from the simulation's stream ``"{stream}/{address}"``, from
        ``start_ms`` until ``until_ms`` (None: as long as the run lasts)."""
        if mean_gap_ms <= 0:
            raise ValueError("mean_gap_ms must be positive")
        for address in addresses:
            process = _RandomProcess(
                address, generate, self.sim.rng(f"{stream}/{address}"), mean_gap_ms, until_ms
            )
            self._arm(process, start_ms)

    def _arm(self, process: _RandomProcess, after_ms: int) -> None:
        at_ms = after_ms + 1 + int(process.rng.expovariate(1.0 / process.mean_gap_ms))
        if process.until_ms is None or at_ms <= process.until_ms:
            self.sim.schedule(at_ms, self._fire, process)

    def _fire(self, process: _RandomProcess) -> None:
        command = process.generate(process.rng, process.address, self.sim)
        self.submit(process.address, command)
        self._arm(process, self.sim.now_ms)

    # -- outcomes ------------------------------------------------------------------------------

    def pending_completed(self, node: SimNode, pending: Pending) -> None:
        """A deferred command finished (routed by ``SimNode.take_outbox``)."""
        entry = self._open.pop(pending.reply_tag, None)  # type: ignore[arg-type]
        if entry is None:
            return
        self._pendings.pop(entry.op_id, None)
        entry.version = pending.version
        if pending.error is not None:
            error = pending.error
            self._finish(entry, node, ERROR, error=f"{type(error).__name__}: {error}")
        else:
            self._finish(entry, node, OK, result=pending.result)

    def node_started(self, node: SimNode) -> None:
        """A new process at ``node.address``: commands the previous ones never answered are
        ``INDETERMINATE``."""
        self._abandon(node.address, node.incarnation, "the node crashed before answering")

    def node_stopped(self, address: str) -> None:
        """The process at ``address`` stopped for good (it left the cluster): commands it never
        answered are ``INDETERMINATE`` (no restart will tell)."""
        self._abandon(address, self.sim.incarnation(address) + 1, "the node left before answering")

    def _abandon(self, address: str, incarnation_below: int, reason: str) -> None:
        lost = [
            entry
            for entry in self._open.values()
            if entry.node == address and entry.incarnation < incarnation_below
        ]
        for entry in lost:
            del self._open[entry.op_id]
            pending = self._pendings.pop(entry.op_id, None)
            if pending is not None:
                entry.version = pending.version
            self._finish(entry, None, INDETERMINATE, error=reason)

    def open_entries(self) -> list[HistoryEntry]:
        """Operations still ``PENDING``, in invocation order."""
        return sorted(self._open.values(), key=lambda entry: entry.op_id)

    def _finish(
        self,
        entry: HistoryEntry,
        node: SimNode | None,
        outcome: str,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        entry.completed_at_ms = self.sim.now_ms
        entry.outcome = outcome
        entry.result = result
        entry.error = error
        detail = canonical(result) if outcome == OK else str(error)
        self.sim.trace("op_done", entry.node, f"{entry.op_id} {outcome}", detail.encode())
        for listener in self._listeners:
            listener(entry, node)
