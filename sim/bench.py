"""Registry of simulator benchmarks run as ``python -m sim bench NAME [ARGS...]``.

A bench is a function taking the remaining command-line arguments and returning an exit code.
Plugins (``sim/scenarios_*.py``, see ``sim.scenarios.load_plugins``) register theirs with
``register_bench``. Benches measure CPU seconds of this process (``cpu_seconds``) instead of
reading a clock: the simulator never looks at time, and for a single-threaded loop CPU time is
what the wall-clock budget is spent on.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

#: A bench: remaining argv -> exit code.
BenchFunction = Callable[[list[str]], int]


@dataclass(frozen=True, slots=True)
class Bench:
    """A named benchmark and a one-line description for ``python -m sim bench``."""

    name: str
    description: str
    run: BenchFunction


_BENCHES: dict[str, Bench] = {}


def register_bench(name: str, description: str, run: BenchFunction) -> Bench:
    """Make ``python -m sim bench name`` call ``run(argv)``."""
    existing = _BENCHES.get(name)
    if existing is not None and existing.run is not run:
        raise ValueError(f"bench {name!r} is already registered")
    bench = Bench(name, description, run)
    _BENCHES[name] = bench
    return bench


def get_bench(name: str) -> Bench:
    """The bench registered as ``name`` (plugins loaded first)."""
    from .scenarios import load_plugins

    load_plugins()
    try:
        return _BENCHES[name]
    except KeyError:
        raise KeyError(f"unknown bench {name!r}; known: {', '.join(bench_names())}") from None


def bench_names() -> list[str]:
    """Registered bench names, sorted (plugins loaded first)."""
    from .scenarios import load_plugins

    load_plugins()
    return sorted(_BENCHES)


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
