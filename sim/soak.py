"""``python -m sim soak``: many seeds of many scenarios, each failing seed with its replay.

``python -m sim soak --seeds N [--scenario S ...] [--jobs J] [--first-seed K]`` runs seeds
K .. K + N - 1 of every named scenario (default: the fault suite, every ``faults-*``
scenario) on J worker processes (default 1: in this process). It prints a progress line about
every tenth of the runs, a ``FAIL`` block with the replay command as soon as a seed fails, and
at the end the totals: runs passed, coverage summed by fault kind, how many runs each kind
fired in, how many acknowledged writes and read values the checkers checked, and every replay
command again. Exit code 1 when a run failed.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import scenarios

#: Seeds a soak runs per scenario at most.
SOAK_SEEDS_MAX = 1_000_000
#: Worker processes at most.
SOAK_JOBS_MAX = 64
#: Progress lines per soak (about one per this fraction of the runs).
PROGRESS_LINES = 10
#: Characters of a failing run's first failed check shown.
FAIL_LINE_CHARS_MAX = 300
#: The scenarios a soak runs when none is named: the fault suite.
DEFAULT_PREFIX = "faults-"


@dataclass(frozen=True, slots=True)
class SoakResult:
    """What a worker sends back about one run (small: reports carry whole messages)."""

    scenario: str
    seed: int
    passed: bool
    failed_checks: tuple[str, ...]
    first_failure: str
    replay: str
    coverage: dict[str, int]
    acked_writes_checked: int
    values_checked: int
    virtual_ms: int


def _leading_int(message: str) -> int:
    """The count a checker's message starts with (``"46 acknowledged ..."``), else 0."""
    head = message.split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


def run_one(task: tuple[str, int]) -> SoakResult:
    """Run one seed of one scenario (in a worker process, or here)."""
    name, seed = task
    report = scenarios.run_scenario(scenarios.get(name), seed=seed)
    checks = {check.name: check for check in report.checks}
    failed = [check for check in report.checks if not check.passed]
    first = ""
    if failed:
        # A traceback's telling line is its last one; any other message's its first.
        lines = [line for line in failed[0].message.splitlines() if line.strip()]
        if lines:
            first = lines[-1] if failed[0].name == "no-exception" else lines[0]
    lost = checks.get("no-lost-writes")
    reads = checks.get("reads-valid")
    return SoakResult(
        scenario=name,
        seed=seed,
        passed=report.passed,
        failed_checks=tuple(check.name for check in failed),
        first_failure=first[:FAIL_LINE_CHARS_MAX],
        replay=report.replay_command,
        coverage=report.coverage,
        acked_writes_checked=_leading_int(lost.message) if lost and lost.passed else 0,
        values_checked=_leading_int(reads.message) if reads and reads.passed else 0,
        virtual_ms=report.virtual_ms,
    )


def _results(tasks: list[tuple[str, int]], jobs: int) -> Iterator[SoakResult]:
    if jobs <= 1:
        yield from map(run_one, tasks)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(run_one, tasks, chunksize=1)


def soak(
    names: Iterable[str], seeds: int, *, first_seed: int = 0, jobs: int = 1, out=print
) -> list[SoakResult]:
    """Run the soak (module docstring); returns every run's result, failures first."""
    names = list(names)
    tasks = [(name, seed) for seed in range(first_seed, first_seed + seeds) for name in names]
    total = len(tasks)
    out(
        f"soak: {', '.join(names)}  seeds: {first_seed}..{first_seed + seeds - 1}  "
        f"runs: {total}  jobs: {jobs}"
    )
    every = max(1, total // PROGRESS_LINES)
    results: list[SoakResult] = []
    failed: list[SoakResult] = []
    for result in _results(tasks, jobs):
        results.append(result)
        if not result.passed:
            failed.append(result)
            out(
                f"FAIL {result.scenario} seed {result.seed}: {', '.join(result.failed_checks)}\n"
                f"  {result.failed_checks[0]}: {result.first_failure}\n"
                f"  replay: {result.replay}"
            )
        if len(results) % every == 0 and len(results) < total:
            out(f"progress: {len(results)}/{total} runs, {len(failed)} failed")
    _summary(results, failed, out)
    return sorted(results, key=lambda r: (r.passed, r.scenario, r.seed))


def _summary(results: list[SoakResult], failed: list[SoakResult], out) -> None:
    coverage: Counter[str] = Counter()
    runs_fired: Counter[str] = Counter()
    for result in results:
        coverage.update(result.coverage)
        runs_fired.update(kind for kind, count in result.coverage.items() if count)
    out(f"coverage (sum over runs): {' '.join(f'{k}={v}' for k, v in sorted(coverage.items()))}")
    out(f"runs each kind fired in: {' '.join(f'{k}={v}' for k, v in sorted(runs_fired.items()))}")
    out(
        f"checked: {sum(r.acked_writes_checked for r in results)} acknowledged quorum/all "
        f"writes, {sum(r.values_checked for r in results)} read values"
    )
    for result in sorted(failed, key=lambda r: (r.scenario, r.seed)):
        out(f"replay: {result.replay}")
    virtual_s = sum(result.virtual_ms for result in results) / 1000
    out(
        f"result: {len(results) - len(failed)}/{len(results)} runs passed "
        f"({virtual_s:.0f} s of virtual time)"
    )


def default_names() -> list[str]:
    """The fault suite's scenarios."""
    return [name for name in scenarios.names() if name.startswith(DEFAULT_PREFIX)]
