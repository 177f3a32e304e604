"""The command line: sizes, key generation, and the client commands' exit codes."""

from __future__ import annotations

import argparse
import json

import pytest
import trio

from gossipcache.cli.main import EXIT_ERROR, EXIT_MISSING, EXIT_OK, main, parse_size_bytes
from gossipcache.drivers.cluster_keys import parse_cluster_keys
from gossipcache.drivers.server import NodeServer
from gossipcache.node.config import NodeConfig


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [("256MiB", 256 * 2**20), ("1GiB", 2**30), ("64kb", 64_000), ("1.5KiB", 1536), ("100", 100)],
)
def test_sizes(text: str, size_bytes: int) -> None:
    assert parse_size_bytes(text) == size_bytes


@pytest.mark.parametrize("text", ["", "MiB", "-1MiB", "12parsecs", "nan", "0"])
def test_bad_sizes_are_refused_clearly(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size_bytes(text)


def test_keygen_prints_a_key_a_key_file_accepts(capsys) -> None:
    assert main(["keygen"]) == EXIT_OK
    key_hex = capsys.readouterr().out.strip()
    assert len(key_hex) == 64
    assert parse_cluster_keys(key_hex + "\n") == [bytes.fromhex(key_hex)]


async def test_client_commands_exit_codes(nursery, capsys) -> None:
    config = NodeConfig(port=0, resp_port=None, metrics_port=None, membership_enabled=False)
    server = NodeServer(config)
    await nursery.start(server.serve)
    node = ["--node", f"127.0.0.1:{server.ports['native']}"]

    def run(*argv: str) -> int:
        return main([argv[0], *node, *argv[1:]])

    def session() -> None:
        assert run("get", "k") == EXIT_MISSING
        assert run("put", "k", "v", "--ttl-s", "60") == EXIT_OK
        assert run("get", "k") == EXIT_OK
        assert run("ttl", "k") == EXIT_OK
        assert run("expire", "k", "--clear") == EXIT_OK
        assert run("del", "k") == EXIT_OK
        assert run("del", "k") == EXIT_MISSING
        assert run("stats", "--json") == EXIT_OK
        assert main(["get", "--node", "127.0.0.1:1", "k"]) == EXIT_ERROR

    await trio.to_thread.run_sync(session)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "v"
    assert 59 < float(out[1]) <= 60
    assert json.loads("\n".join(out[2:]))["puts"] == 1
