"""Scenarios: setup + fault plan + checkers + duration, a registry, and the two-phase runner.

A run has two phases, as TigerBeetle's VOPR does:

1. **Safety** (``duration_s``): the fault plan is active. ``ALWAYS`` checkers must hold at every
   poll.
2. **Liveness** (``liveness_s``): every fault is healed (calm network, partitions and clogs gone,
   crashed nodes restarted, paused nodes resumed). ``EVENTUALLY`` checkers must become true at
   some poll before the phase ends: that is the convergence bound. ``ALWAYS`` checkers keep
   running. ``FINAL`` checkers run once at the end.

A core that raises ends the run: the report's first check is ``no-exception`` with the
traceback, or ``core-invariants`` when the simulator's call to a core's ``check_invariants()``
failed (``Scenario.check_invariants``, on by default, turns those calls on for the run).

Other modules add scenarios with ``register(Scenario(...))`` or the ``@scenario(...)`` decorator
on a setup function. The CLI imports every module of the ``sim`` package whose name starts with
``scenarios_`` (sorted), so dropping ``sim/scenarios_membership.py`` in place is enough.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .faults import FaultInjector, FaultPlan
from .network import NetworkConfig
from .simulation import CoreInvariantError, Simulation

#: Modules of the ``sim`` package with this prefix are imported by ``load_plugins``.
PLUGIN_PREFIX = "scenarios_"

#: Longest failure message kept per checker (a checker may describe a whole cluster).
CHECK_MESSAGE_CHARS_MAX = 2_000


class CheckMode(enum.Enum):
    """When a checker runs and what passing means."""

    ALWAYS = "always"  # an invariant: must hold at every poll, in both phases
    EVENTUALLY = "eventually"  # liveness: must hold at some poll of the liveness phase
    FINAL = "final"  # checked once at the end of the run


#: A check looks at the simulation (cores via ``sim.core(address)``) and says (passed, message).
CheckFunction = Callable[[Simulation], tuple[bool, str]]


@dataclass(frozen=True, slots=True)
class Checker:
    """A named check, its mode and (for ALWAYS / EVENTUALLY) how often it polls."""

    name: str
    check: CheckFunction
    mode: CheckMode = CheckMode.FINAL
    interval_ms: int = 1_000


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of one checker: ``at_ms`` is when it failed (ALWAYS), converged
    (EVENTUALLY) or ran (FINAL)."""

    name: str
    mode: str
    passed: bool
    message: str
    at_ms: int


#: Adds the scenario's nodes (and any scripted steps) to a fresh simulation: (sim, nodes).
SetupFunction = Callable[[Simulation, int], None]
#: Called after setup with the run's phase bounds: (sim, safety_end_ms, end_ms); for scripted
#: steps that depend on the run's length (a workload that stops at heal, a final sweep).
PhasesFunction = Callable[[Simulation, int, int], None]


@dataclass(frozen=True)
class Scenario:
    """Everything needed to run one kind of simulation from a seed."""

    name: str
    description: str
    setup: SetupFunction
    checkers: tuple[Checker, ...] = ()
    fault_plan: FaultPlan = field(default_factory=FaultPlan.standard)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    nodes_default: int = 5
    duration_s_default: float = 30.0
    liveness_s: float = 30.0
    #: Call each core's ``check_invariants()`` (if it has one) after every call into it.
    check_invariants: bool = True
    #: Optional: told the phase bounds right after ``setup`` (see ``PhasesFunction``).
    phases: PhasesFunction | None = None


@dataclass(frozen=True)
class RunReport:
    """What one run did and whether it passed."""

    scenario: str
    nodes: int
    seed: int
    duration_s: float
    liveness_s: float
    checks: tuple[CheckResult, ...]
    coverage: dict[str, int]
    digest: str
    events: int
    virtual_ms: int

    @property
    def passed(self) -> bool:
        """True when every checker passed."""
        return all(check.passed for check in self.checks)

    @property
    def replay_command(self) -> str:
        """The command line that reruns exactly this run."""
        return (
            f"python -m sim run {self.scenario} --nodes {self.nodes} --seed {self.seed} "
            f"--duration-s {self.duration_s:g}"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return {
            "scenario": self.scenario,
            "nodes": self.nodes,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "liveness_s": self.liveness_s,
            "passed": self.passed,
            "checks": [
                {
                    "name": c.name,
                    "mode": c.mode,
                    "passed": c.passed,
                    "message": c.message,
                    "at_ms": c.at_ms,
                }
                for c in self.checks
            ],
            "coverage": self.coverage,
            "digest": self.digest,
            "events": self.events,
            "virtual_ms": self.virtual_ms,
            "replay": self.replay_command,
        }


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, Scenario] = {}


def register(scenario_: Scenario) -> Scenario:
    """Add a scenario under its name; registering another scenario under a taken name fails."""
    existing = _REGISTRY.get(scenario_.name)
    if existing is not None and existing is not scenario_:
        raise ValueError(f"scenario {scenario_.name!r} is already registered")
    _REGISTRY[scenario_.name] = scenario_
    return scenario_


def scenario(name: str, description: str, **options: Any) -> Callable[[SetupFunction], Scenario]:
    """Decorator form of ``register``: ``@scenario("name", "what it shows", checkers=...)`` on a
    setup function registers ``Scenario(name, description, setup, **options)``."""

    def decorate(setup: SetupFunction) -> Scenario:
        return register(Scenario(name=name, description=description, setup=setup, **options))

    return decorate


def unregister(name: str) -> None:
    """Remove a scenario (tests register throwaway ones)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Scenario:
    """The scenario registered as ``name`` (plugins loaded first); KeyError names the known ones."""
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """Registered scenario names, sorted (plugins loaded first)."""
    load_plugins()
    return sorted(_REGISTRY)


def load_plugins() -> None:
    """Import every ``sim.scenarios_*`` module so it can register scenarios and benches."""
    import sim

    for module in sorted(pkgutil.iter_modules(sim.__path__), key=lambda m: m.name):
        if module.name.startswith(PLUGIN_PREFIX):
            importlib.import_module(f"sim.{module.name}")


# ---------------------------------------------------------------------- runner


class _CheckerState:
    """One checker's progress through a run."""

    __slots__ = ("checker", "result")

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.result: CheckResult | None = None


def _evaluate(checker: Checker, sim: Simulation) -> tuple[bool, str]:
    try:
        passed, message = checker.check(sim)
    except Exception:  # a checker bug is a failed check with its traceback, not a lost run
        passed, message = False, "checker raised:\n" + traceback.format_exc()
    return bool(passed), str(message)[:CHECK_MESSAGE_CHARS_MAX]


def run_scenario(
    scenario_: Scenario,
    *,
    seed: int,
    nodes: int | None = None,
    duration_s: float | None = None,
    fault_plan: FaultPlan | None = None,
    record_trace: bool = False,
) -> RunReport:
    """Run one seed of ``scenario_`` through its safety and liveness phases."""
    nodes = scenario_.nodes_default if nodes is None else nodes
    duration_s = scenario_.duration_s_default if duration_s is None else duration_s
    plan = scenario_.fault_plan if fault_plan is None else fault_plan
    safety_end_ms = int(duration_s * 1000)
    end_ms = safety_end_ms + int(scenario_.liveness_s * 1000)

    sim = Simulation(
        seed,
        scenario_.network,
        record_trace=record_trace,
        check_invariants=scenario_.check_invariants,
    )
    scenario_.setup(sim, nodes)
    if scenario_.phases is not None:
        scenario_.phases(sim, safety_end_ms, end_ms)
    injector = FaultInjector(sim, plan, safety_end_ms)
    injector.start()
    sim.schedule(safety_end_ms, injector.heal)

    states = [_CheckerState(checker) for checker in scenario_.checkers]
    for state in states:
        _arm_checker(sim, state, safety_end_ms, end_ms)

    crash_result: CheckResult | None = None
    try:
        sim.run_until(end_ms)
    except CoreInvariantError as error:  # a core's own consistency check failed
        message = f"{error}\n{traceback.format_exc()}"[:CHECK_MESSAGE_CHARS_MAX]
        crash_result = CheckResult("core-invariants", "always", False, message, error.at_ms)
    except Exception:  # a core raising is a bug the run must report with its replay command
        crash_result = CheckResult(
            "no-exception", "always", False, traceback.format_exc(), sim.now_ms
        )

    results = [_final_result(sim, state, crash_result is None) for state in states]
    if crash_result is not None:
        results.insert(0, crash_result)
    return RunReport(
        scenario=scenario_.name,
        nodes=nodes,
        seed=seed,
        duration_s=duration_s,
        liveness_s=scenario_.liveness_s,
        checks=tuple(results),
        coverage=sim.coverage,
        digest=sim.digest(),
        events=sim.events_processed,
        virtual_ms=sim.now_ms,
    )


def _arm_checker(sim: Simulation, state: _CheckerState, safety_end_ms: int, end_ms: int) -> None:
    checker = state.checker
    if checker.interval_ms <= 0:
        raise ValueError(f"checker {checker.name!r}: interval_ms must be positive")
    if checker.mode is CheckMode.ALWAYS:
        first_ms = checker.interval_ms
    elif checker.mode is CheckMode.EVENTUALLY:
        first_ms = safety_end_ms
    else:
        return

    def poll() -> None:
        if state.result is not None:
            return
        passed, message = _evaluate(checker, sim)
        if checker.mode is CheckMode.ALWAYS and not passed:
            state.result = CheckResult(checker.name, checker.mode.value, False, message, sim.now_ms)
            return
        if checker.mode is CheckMode.EVENTUALLY and passed:
            converged_s = (sim.now_ms - safety_end_ms) / 1000
            message = f"converged {converged_s:g} s after heal" + (
                f": {message}" if message else ""
            )
            state.result = CheckResult(checker.name, checker.mode.value, True, message, sim.now_ms)
            return
        next_ms = sim.now_ms + checker.interval_ms
        if next_ms <= end_ms:
            sim.schedule(next_ms, poll)

    sim.schedule(first_ms, poll)


def _final_result(sim: Simulation, state: _CheckerState, completed: bool) -> CheckResult:
    checker = state.checker
    mode = checker.mode.value
    if state.result is not None:
        return state.result
    if not completed:
        return CheckResult(checker.name, mode, False, "run aborted before the check", sim.now_ms)
    passed, message = _evaluate(checker, sim)
    if checker.mode is CheckMode.EVENTUALLY and passed:
        message = f"converged only at the end of the liveness phase: {message}"
    elif checker.mode is CheckMode.EVENTUALLY:
        message = f"did not converge within the liveness phase: {message}"
    elif checker.mode is CheckMode.ALWAYS and passed:
        message = message or "held at every poll"
    return CheckResult(checker.name, mode, passed, message, sim.now_ms)
