"""``gossipcache status`` and ``examples/client.py`` against a real cluster of node processes
started by ``gossipcache cluster`` (what ``make run`` runs)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from test_cluster_cli import _cluster_command, _free_runs, _read_until_ready

from gossipcache.placement import BUCKET_COUNT

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_status_and_the_example_client_against_a_two_node_cluster(tmp_path) -> None:
    bases = _free_runs(2)
    process = subprocess.Popen(
        _cluster_command(2, bases, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output = _read_until_ready(process)
        seeds = [f"127.0.0.1:{bases[0] + index}" for index in range(2)]
        assert f"examples/client.py {' '.join(seeds)}" in output
        assert f"gossipcache status --node {seeds[0]}" in output

        example = _run(sys.executable, "examples/client.py", *seeds)
        assert example.returncode == 0, example.stderr
        assert "cluster: 2 nodes, each key on 2 of them" in example.stdout
        for key in ("user:1", "session:42"):
            line = next(x for x in example.stdout.splitlines() if x.startswith(f"{key}:"))
            assert sorted(line.split("owned by ")[1].split(" -> ")[0].split(", ")) == seeds
            assert line.endswith(f"-> b'profile of {key}'")
        assert "flash after 0.6 s: None" in example.stdout
        assert "delete user:2 -> True; get -> None" in example.stdout

        result = _run(sys.executable, "-m", "gossipcache", "status", "--node", seeds[1], "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        members = status["members"]
        assert [m["address"] for m in members] == seeds
        assert all(m["state"] == "alive" and m["reachable"] for m in members)
        assert {m["placement_epoch"] for m in members} == {status["epoch"]}
        total = status["total"]
        # R = 3 (the default) over 2 nodes: both own every bucket, one of them as primary.
        assert total["buckets_owned"] == 2 * BUCKET_COUNT
        assert total["buckets_primary"] == BUCKET_COUNT
        assert total["keys"] == sum(m["keys"] for m in members) >= 2
        assert total["hints_held"] == 0 and 0 < total["hit_ratio"] <= 1

        text = _run(sys.executable, "-m", "gossipcache", "status", "--node", seeds[0])
        assert text.returncode == 0 and "2/2 answered" in text.stdout
        gone = _run(sys.executable, "-m", "gossipcache", "status", "--node", "127.0.0.1:1")
        assert gone.returncode == 2 and "error" in gone.stderr
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
