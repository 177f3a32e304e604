"""``python -m sim``: list scenarios, run one seed, or run a registered bench.

- ``python -m sim list``
- ``python -m sim run SCENARIO --nodes N --seed S [--duration-s T] [--json]``
  prints the seed, each checker's verdict, fault counts by kind, the trace digest and, on
  failure, the command that replays the run. Exit code 0 when every checker passed, 1 otherwise.
- ``python -m sim run SCENARIO --seeds N [--seed S]`` runs the N consecutive seeds S, S + 1, ...
  (S defaults to 0, so ``--seeds 200`` is the CI set), printing each failing seed with the
  checks that failed and its replay command, then a one-line summary.
- ``python -m sim fuzz SCENARIO [--runs K] [--seed S] [--nodes N] [--duration-s T]`` runs K
  seeds derived from S and prints the replay command of each failing one (exit 1 if any failed).
- ``python -m sim soak --seeds N [--scenario S ...] [--jobs J] [--first-seed K]`` runs N seeds
  of each scenario (default: the fault suite) on J processes, printing progress, each failing
  seed's replay command and the coverage totals (``sim.soak``); exit 1 if any failed.
- ``python -m sim bench NAME [ARGS...]`` (``python -m sim bench`` lists the benches).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import scenarios
from .bench import bench_names, get_bench
from .rng import derive_seed
from .soak import SOAK_JOBS_MAX, SOAK_SEEDS_MAX, default_names, soak

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Seeds a fuzz run tries at most (each is a full scenario run).
FUZZ_RUNS_MAX = 100_000
#: Characters of a failing seed's first failed check shown by ``run --seeds``.
SEED_LINE_CHARS_MAX = 300


def _random_seed() -> int:
    """A fresh seed for a run that names none (the run prints it, so it still replays)."""
    return int.from_bytes(os.urandom(4), "big")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="name the registered scenarios")
    run = commands.add_parser("run", help="run one seed of a scenario")
    run.add_argument("scenario")
    run.add_argument("--nodes", type=int, default=None)
    run.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    run.add_argument("--duration-s", type=float, default=None, help="safety phase length")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.add_argument(
        "--seeds", type=int, default=None, help="run N consecutive seeds from --seed (default 0)"
    )
    fuzz = commands.add_parser("fuzz", help="run many seeds of a scenario")
    fuzz.add_argument("scenario")
    fuzz.add_argument("--runs", type=int, default=20)
    fuzz.add_argument("--seed", type=int, default=None, help="root of the derived seeds")
    fuzz.add_argument("--nodes", type=int, default=None)
    fuzz.add_argument("--duration-s", type=float, default=None)
    soak_ = commands.add_parser("soak", help="run many seeds of many scenarios")
    soak_.add_argument("--seeds", type=int, required=True, help="seeds per scenario")
    soak_.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="a scenario to run (repeatable; default: every faults-* scenario)",
    )
    soak_.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    soak_.add_argument("--first-seed", type=int, default=0)
    bench = commands.add_parser("bench", help="run a registered bench")
    bench.add_argument("name", nargs="?")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def _print_report(report: scenarios.RunReport) -> None:
    print(f"scenario: {report.scenario}")
    print(f"seed: {report.seed}")
    print(
        f"nodes: {report.nodes}  safety: {report.duration_s:g} s  "
        f"liveness: {report.liveness_s:g} s  events: {report.events}"
    )
    print("checks:")
    for check in report.checks:
        verdict = "PASS" if check.passed else "FAIL"
        detail = f" ({check.message})" if check.message else ""
        print(f"  {verdict} {check.name} [{check.mode}] at {check.at_ms} ms{detail}")
    faults = " ".join(f"{kind}={count}" for kind, count in report.coverage.items())
    print(f"faults: {faults or 'none'}")
    print(f"digest: {report.digest}")
    print(f"result: {'PASS' if report.passed else 'FAIL'}")
    if not report.passed:
        print(f"replay: {report.replay_command}")


def _fuzz(scenario_: scenarios.Scenario, args: argparse.Namespace) -> int:
    runs = min(max(args.runs, 0), FUZZ_RUNS_MAX)
    root_seed = _random_seed() if args.seed is None else args.seed
    print(f"fuzz: {scenario_.name}  runs: {runs}  root seed: {root_seed}")
    failures = 0
    for run_index in range(runs):
        seed = derive_seed(root_seed, f"fuzz/{run_index}") & 0xFFFF_FFFF
        report = scenarios.run_scenario(
            scenario_, seed=seed, nodes=args.nodes, duration_s=args.duration_s
        )
        if not report.passed:
            failures += 1
            failed = ", ".join(c.name for c in report.checks if not c.passed)
            print(f"FAIL seed {seed} ({failed}): {report.replay_command}")
    print(f"result: {runs - failures}/{runs} passed")
    return EXIT_FAILED if failures else EXIT_PASSED


def _run_seeds(scenario_: scenarios.Scenario, args: argparse.Namespace) -> int:
    count = min(max(args.seeds, 0), FUZZ_RUNS_MAX)
    first = 0 if args.seed is None else args.seed
    print(f"scenario: {scenario_.name}  seeds: {first}..{first + count - 1}")
    failures = 0
    for seed in range(first, first + count):
        report = scenarios.run_scenario(
            scenario_, seed=seed, nodes=args.nodes, duration_s=args.duration_s
        )
        if not report.passed:
            failures += 1
            failed = [check for check in report.checks if not check.passed]
            # A traceback's telling line is its last one.
            lines = [line for line in failed[0].message.splitlines() if line.strip()]
            first = (lines[-1] if failed[0].name == "no-exception" else lines[0]) if lines else ""
            print(
                f"FAIL seed {seed}: {', '.join(check.name for check in failed)}\n"
                f"  {failed[0].name}: {first[:SEED_LINE_CHARS_MAX]}\n"
                f"  replay: {report.replay_command}"
            )
    print(f"result: {count - failures}/{count} seeds passed")
    return EXIT_FAILED if failures else EXIT_PASSED


def _soak(args: argparse.Namespace) -> int:
    names = args.scenario or default_names()
    unknown = [name for name in names if name not in scenarios.names()]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {', '.join(scenarios.names())}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if not 0 < args.seeds <= SOAK_SEEDS_MAX or not 0 < args.jobs <= SOAK_JOBS_MAX:
        print(f"--seeds must be within 1..{SOAK_SEEDS_MAX} and --jobs within 1..{SOAK_JOBS_MAX}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    results = soak(names, args.seeds, first_seed=args.first_seed, jobs=args.jobs)
    return EXIT_PASSED if all(result.passed for result in results) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in scenarios.names():
            print(f"{name}: {scenarios.get(name).description}")
        return EXIT_PASSED
    if args.command == "bench":
        if not args.name:
            for name in bench_names():
                print(f"{name}: {get_bench(name).description}")
            return EXIT_PASSED
        try:
            bench = get_bench(args.name)
        except KeyError as error:
            print(error.args[0], file=sys.stderr)
            return EXIT_USAGE
        return bench.run(args.bench_args)
    if args.command == "soak":
        return _soak(args)
    try:
        scenario_ = scenarios.get(args.scenario)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return EXIT_USAGE
    if args.command == "fuzz":
        return _fuzz(scenario_, args)
    if args.seeds is not None:
        return _run_seeds(scenario_, args)
    seed = _random_seed() if args.seed is None else args.seed
    report = scenarios.run_scenario(
        scenario_, seed=seed, nodes=args.nodes, duration_s=args.duration_s
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    return EXIT_PASSED if report.passed else EXIT_FAILED
