"""``benchmarks.memory_attacks`` imports, parses its arguments and formats a result row (the
attacks themselves start real nodes for minutes: ``make bench-memory-attacks``)."""

from __future__ import annotations

import pytest

from benchmarks import memory_attacks


def test_help_lists_every_attack(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        memory_attacks.main(["--help"])
    assert exit_info.value.code == 0
    assert "fds-hard" in capsys.readouterr().out


def test_a_row_over_its_budget_fails_and_says_why() -> None:
    budget = memory_attacks.Budget(baseline=30 * memory_attacks.MIB, connections=2)
    result = memory_attacks.AttackResult(
        "partial-idle",
        "two partial requests",
        baseline_bytes=budget.baseline,
        peak_bytes=budget.total + 1,
        after_bytes=budget.baseline,
        budget=budget,
        checks={"closed": True},
    )
    assert not result.passed
    table = memory_attacks.format_table([result])
    assert "| 2c partial-idle | two partial requests |" in table and "FAIL" in table
    assert "2 conns x 16 KiB" in table
