"""Node metadata (issue 9, placement's inputs): host id, zone and capacity travel in each member's
membership ``meta``; every form decodes, unreadable ones to a host of their own."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gossipcache.client.client import Client
from gossipcache.drivers.server import NodeServer, machine_host_id
from gossipcache.membership.codec import META_SIZE_BYTES_MAX
from gossipcache.node.config import NodeConfig
from gossipcache.node.metadata import (
    CAPACITY_BYTES_DEFAULT,
    CAPACITY_BYTES_MAX,
    HOST_ID_SIZE_BYTES_MAX,
    ZONE_SIZE_BYTES_MAX,
    NodeMetadata,
    decode_metadata,
)

names = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=20
)


@given(
    host_id=names.filter(lambda n: len(n.encode()) <= HOST_ID_SIZE_BYTES_MAX),
    zone=st.none() | names.filter(lambda n: len(n.encode()) <= ZONE_SIZE_BYTES_MAX),
    capacity=st.integers(1, CAPACITY_BYTES_MAX),
)
def test_metadata_round_trips_within_the_meta_field(host_id, zone, capacity) -> None:
    metadata = NodeMetadata(host_id, zone, capacity)
    meta = metadata.encode()
    assert len(meta) <= META_SIZE_BYTES_MAX
    assert decode_metadata(meta, "node-a") == metadata


def test_the_longest_names_still_fit() -> None:
    longest = NodeMetadata("h" * 21 + "\u20ac" * 14, "z" * 31, CAPACITY_BYTES_MAX)
    assert len(longest.encode()) <= META_SIZE_BYTES_MAX


@pytest.mark.parametrize(
    "fields",
    [
        ("h" * (HOST_ID_SIZE_BYTES_MAX + 1), None, 1),
        ("", None, 1),
        ("a\nb", None, 1),
        ("h", "z" * (ZONE_SIZE_BYTES_MAX + 1), 1),
        ("h", "", 1),
        ("h", None, 0),
        ("h", None, CAPACITY_BYTES_MAX + 1),
        ("h", None, 1.5),
    ],
)
def test_out_of_range_metadata_is_refused(fields) -> None:
    with pytest.raises(ValueError):
        NodeMetadata(*fields)


@given(st.binary(max_size=META_SIZE_BYTES_MAX))
def test_any_meta_decodes(meta: bytes) -> None:
    metadata = decode_metadata(meta, "127.0.0.1:7000#0badc0de")
    assert isinstance(metadata, NodeMetadata)


@pytest.mark.parametrize(
    "meta",
    [
        b"",
        b"\xc1",
        msgpack.packb([2, "h", None, 1]),  # a newer version
        msgpack.packb([1, "h", None]),
        msgpack.packb([1, "", None, 1]),
        msgpack.packb([1, "h", None, -5]),
        msgpack.packb({"h": 1}),
    ],
)
def test_unreadable_meta_is_a_host_of_its_own(meta: bytes) -> None:
    first = decode_metadata(meta, "10.0.0.1:7000#00000001")
    second = decode_metadata(meta, "10.0.0.1:7000#00000002")
    assert first.host_id != second.host_id  # never merged into one host
    assert first.capacity_bytes == CAPACITY_BYTES_DEFAULT and first.zone is None


def test_a_bad_host_id_is_a_clear_error_at_start() -> None:
    with pytest.raises(ValueError, match="host_id"):
        NodeConfig(host_id="x" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "gossipcache", "node", "--no-membership", "--port", "0",
         "--zone", "z" * 40],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "zone is longer than 31 bytes" in result.stderr


async def test_members_carry_each_nodes_host_zone_and_capacity(nursery) -> None:
    servers = []
    for host_id, zone in [("rack-a-host-1", "zone-a"), (None, None)]:
        config = NodeConfig(
            port=0, resp_port=None, metrics_port=None, membership_profile="local",
            host_id=host_id, zone=zone, size_bytes_max=(len(servers) + 1) * 64 * 1024 * 1024,
            seeds=tuple(f"127.0.0.1:{s.ports['native']}" for s in servers),
        )  # fmt: skip
        server = NodeServer(config)
        await nursery.start(server.serve)
        servers.append(server)
    address = f"127.0.0.1:{servers[1].ports['native']}"
    async with Client(address) as client:
        with trio.fail_after(10):
            while len(members := await client.members()) < 2:
                await trio.sleep(0.05)
    by_port = {m["address"].rpartition(":")[2]: m for m in members}
    first = by_port[str(servers[0].ports["native"])]
    second = by_port[str(servers[1].ports["native"])]
    assert (first["host_id"], first["zone"], first["capacity_bytes"]) == (
        "rack-a-host-1",
        "zone-a",
        64 * 1024 * 1024,
    )
    # No --host-id: the machine's name, as the other node learned it through gossip.
    assert second["host_id"] == (machine_host_id() or "127.0.0.1")
    assert (second["zone"], second["capacity_bytes"]) == (None, 128 * 1024 * 1024)
