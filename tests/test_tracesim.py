"""Trace replay: the pure function and the ``trace-sim`` command."""

from __future__ import annotations

import json

import pytest

from gossipcache.cli.main import main
from gossipcache.cli.tracesim import replay
from gossipcache.store.eviction import POLICY_NAMES


def test_replay_counts_every_request() -> None:
    result = replay("lru", 2, [b"a", b"b", b"a", b"c", b"b", b"a"])
    # a b | a hit | c evicts b | b evicts a | a miss
    assert (result.requests, result.hits) == (6, 1)
    assert result.hit_ratio == pytest.approx(1 / 6)


def test_replay_of_empty_trace() -> None:
    assert replay("sieve", 5, []).hit_ratio == 0.0


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_hits_everything_when_it_fits(name) -> None:
    keys = [b"%d" % (index % 20) for index in range(200)]
    result = replay(name, 20, keys)
    assert result.hits == 180


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_trace_sim_json(name, tmp_path, capsys) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{index % 9}\n" for index in range(100)) + "\n")
    code = main(
        ["trace-sim", "--policy", name, "--capacity-items", "5", "--trace", str(trace), "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["policy", "capacity_items", "requests", "hits", "hit_ratio"]
    assert report["policy"] == name
    assert report["capacity_items"] == 5
    assert report["requests"] == 100
    assert 0 <= report["hits"] <= 100
    assert report["hit_ratio"] == pytest.approx(report["hits"] / 100)


def test_trace_sim_human_output(tmp_path, capsys) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("a\nb\na\n")
    assert (
        main(["trace-sim", "--policy", "lru", "--capacity-items", "2", "--trace", str(trace)]) == 0
    )
    out = capsys.readouterr().out
    assert "lru" in out and "1/3" in out


def test_trace_sim_missing_file(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nope.txt")
    assert main(["trace-sim", "--policy", "lru", "--capacity-items", "2", "--trace", missing]) == 2
    assert "cannot read trace" in capsys.readouterr().err


def test_trace_sim_rejects_zero_capacity(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["trace-sim", "--policy", "lru", "--capacity-items", "0", "--trace", "x"])
