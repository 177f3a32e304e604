"""gossipcache's deterministic network simulator.

Drives sans-IO cores (``gossipcache.sansio``) on virtual time through a seeded, faulty network:
delay, loss, duplication, reordering, partitions, clogged links, bounded inboxes, crashes with
memory loss, restarts, pauses and wall-clock skew. A root seed replays a run exactly; a SHA-256
trace digest proves it. See docs/design.md, section "Simulator".

Never imports trio, time, socket or asyncio and never uses the global ``random`` module.
"""

from .bench import Bench, cpu_seconds, register_bench
from .faults import FaultInjector, FaultPlan
from .network import NetworkConfig
from .rng import derive_rng, derive_seed
from .scenarios import (
    Checker,
    CheckMode,
    CheckResult,
    RunReport,
    Scenario,
    register,
    run_scenario,
    scenario,
)
from .simulation import (
    WALL_EPOCH_MS,
    CoreInvariantError,
    Factory,
    NodeContext,
    SimStats,
    Simulation,
    node_addresses,
)

__all__ = [
    "WALL_EPOCH_MS",
    "Bench",
    "CheckMode",
    "CheckResult",
    "Checker",
    "CoreInvariantError",
    "Factory",
    "FaultInjector",
    "FaultPlan",
    "NetworkConfig",
    "NodeContext",
    "RunReport",
    "Scenario",
    "SimStats",
    "Simulation",
    "cpu_seconds",
    "derive_rng",
    "derive_seed",
    "node_addresses",
    "register",
    "register_bench",
    "run_scenario",
    "scenario",
]
