"""The Trio membership driver (``gossipcache.drivers.peer``) over real loopback sockets, in-process.

Two kinds of test: a scripted fake core shows what the driver itself does (datagrams, peer
streams, failures, bounds, timers); pairs of real nodes show the membership core running on it
(join, ``members`` op, metrics, graceful leave). Waiting is always for a condition (an event set
by the core or node), with a generous safety deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import socket
import time

import pytest
import trio

from gossipcache.client.client import Client
from gossipcache.drivers import peer as net
from gossipcache.drivers.cluster_keys import (
    DEVELOPMENT_CLUSTER_KEY,
    cluster_keyring,
    load_cluster_keyring,
    parse_cluster_keys,
)
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import ServerError
from gossipcache.membership import EventKind
from gossipcache.metrics.counters import render_prometheus
from gossipcache.node.config import NodeConfig
from gossipcache.sansio import Channel, Outgoing
from gossipcache.wire import peer as wire_peer
from gossipcache.wire.framing import frame

#: Safety net for waits on conditions; a healthy run takes milliseconds.
WAIT_S_MAX = 10.0


class FakeCore:
    """A scripted sans-IO core: records every call, sends whatever the test queues."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Channel, bytes]] = []
        self.failed: list[str] = []
        self.ticks: list[int] = []
        self.outbox: list[Outgoing] = []
        self.deadline_ms: int | None = None
        self.raise_on_handle = False
        self.changed = trio.Event()

    def handle(self, source: str, channel: Channel, payload: bytes, now_ms: int) -> None:
        self.received.append((source, channel, payload))
        self.changed.set()
        if self.raise_on_handle:
            raise RuntimeError("a bug in the core")

    def stream_failed(self, peer: str, now_ms: int) -> None:
        self.failed.append(peer)
        self.changed.set()

    def tick(self, now_ms: int) -> None:
        self.ticks.append(now_ms)
        self.deadline_ms = None
        self.changed.set()

    def next_deadline_ms(self) -> int | None:
        return self.deadline_ms

    def take_outbox(self) -> list[Outgoing]:
        outbox, self.outbox = self.outbox, []
        return outbox

    async def wait_until(self, predicate) -> None:
        with trio.fail_after(WAIT_S_MAX):
            while not predicate():
                self.changed = trio.Event()
                await self.changed.wait()


async def _listen(host: str, port: int):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((host, port))
    sock.listen(16)
    return sock


async def _accept_peers(listener, driver: net.PeerDriver, consume: int) -> None:
    """What the node's native listener does for peer connections; reads ``consume`` bytes
    itself first to exercise ``first_bytes``."""
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()

            async def serve(sock=sock) -> None:
                with sock:
                    first = await sock.recv(consume) if consume else b""
                    await driver.handle_peer_stream(sock, first)

            nursery.start_soon(serve)


async def start_fake(
    nursery, consume: int = 0, cluster_key: bytes = DEVELOPMENT_CLUSTER_KEY
) -> tuple[FakeCore, net.PeerDriver]:
    core = FakeCore()
    listener, udp = await net.bind_tcp_and_udp("127.0.0.1", 0, _listen)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    authenticator = wire_peer.PeerAuthenticator(address, [cluster_key])
    driver = net.PeerDriver(core, address, udp, authenticator=authenticator)
    await nursery.start(driver.run)
    nursery.start_soon(_accept_peers, listener, driver, consume)
    return core, driver


def send(driver: net.PeerDriver, core: FakeCore, destination: str, channel, payload) -> None:
    core.outbox.append(Outgoing(destination, channel, payload))
    driver.step(None)


def unused_address() -> str:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# -- the driver with a fake core ------------------------------------------------------------


async def test_udp_and_tcp_share_one_port_number(nursery) -> None:
    _, driver = await start_fake(nursery)
    port = int(driver.address.rpartition(":")[2])
    assert driver._udp.getsockname()[1] == port


async def test_datagrams_arrive_with_the_senders_address(nursery) -> None:
    core_a, driver_a = await start_fake(nursery)
    core_b, driver_b = await start_fake(nursery)
    send(driver_a, core_a, driver_b.address, Channel.DATAGRAM, b"hello")
    await core_b.wait_until(lambda: core_b.received)
    assert core_b.received == [(driver_a.address, Channel.DATAGRAM, b"hello")]
    assert driver_b.stats["datagrams_received"] == 1


@pytest.mark.parametrize("consume", [0, 3, 8, 12, 30])
async def test_stream_payloads_arrive_in_order_from_the_advertised_address(
    nursery, consume: int
) -> None:
    core_a, driver_a = await start_fake(nursery)
    core_b, driver_b = await start_fake(nursery, consume=consume)
    payloads = [bytes([i]) * (i * 1000 + 1) for i in range(20)]
    for payload in payloads:
        send(driver_a, core_a, driver_b.address, Channel.STREAM, payload)
    await core_b.wait_until(lambda: len(core_b.received) == len(payloads))
    assert core_b.received == [(driver_a.address, Channel.STREAM, p) for p in payloads]
    assert driver_a.outgoing_connections == 1  # one connection carried them all
    assert core_a.failed == []


async def test_unreachable_peer_is_reported_as_stream_failed(nursery) -> None:
    core, driver = await start_fake(nursery)
    peer = unused_address()
    send(driver, core, peer, Channel.STREAM, b"push-pull")
    await core.wait_until(lambda: core.failed)
    assert core.failed == [peer]
    assert driver.stats["peer_connect_failed"] == 1
    assert driver.outgoing_connections == 0


async def test_peer_that_closes_is_reported_as_stream_failed(nursery) -> None:
    core, driver = await start_fake(nursery)
    listener = await _listen("127.0.0.1", 0)
    peer = f"127.0.0.1:{listener.getsockname()[1]}"
    send(driver, core, peer, Channel.STREAM, b"x")
    sock, _ = await listener.accept()
    with trio.fail_after(WAIT_S_MAX):
        received = b""
        while len(received) < len(wire_peer.PREAMBLE):
            received += await sock.recv(1024)
    assert received.startswith(wire_peer.PREAMBLE)
    sock.close()
    listener.close()
    await core.wait_until(lambda: core.failed)
    assert core.failed == [peer]


async def test_bad_peer_input_is_dropped_and_counted(nursery) -> None:
    core, driver = await start_fake(nursery)
    host, port = wire_peer.split_address(driver.address)
    bad_inputs = {
        "peer_dropped_bad_preamble": b"GCPEER9\nxxxx",
        "peer_dropped_bad_handshake": wire_peer.PREAMBLE + frame(b"not a handshake"),
        "peer_dropped_handshake_too_large": wire_peer.PREAMBLE + (2**31).to_bytes(4, "big"),
        "peer_dropped_bad_frame": driver.authenticator.opening(
            driver.address, net.wall_ms(), bytes(16)
        )
        + (2**31).to_bytes(4, "big"),
    }
    for counter, data in bad_inputs.items():
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(data)
        with trio.fail_after(WAIT_S_MAX):
            assert await stream.receive_some(1) == b""  # the driver hung up
        await stream.aclose()
        assert driver.stats[counter] == 1
    assert core.received == []
    # Still serving: a well-formed peer gets through.
    core_a, driver_a = await start_fake(nursery)
    send(driver_a, core_a, driver.address, Channel.STREAM, b"ok")
    await core.wait_until(lambda: core.received)


async def test_a_peer_with_another_cluster_key_cannot_open_a_stream(nursery) -> None:
    core_a, driver_a = await start_fake(nursery, cluster_key=b"a" * 32)
    core_b, driver_b = await start_fake(nursery, cluster_key=b"b" * 32)
    send(driver_a, core_a, driver_b.address, Channel.STREAM, b"push-pull")
    # b hangs up on the handshake; a sees its link break and reports it to its core.
    await core_a.wait_until(lambda: core_a.failed)
    assert core_a.failed == [driver_b.address]
    assert driver_b.stats["peer_dropped_bad_mac"] == 1
    assert core_b.received == []


async def test_output_over_the_bounds_is_dropped_and_counted(nursery) -> None:
    core, driver = await start_fake(nursery)
    oversized = b"x" * (net.DATAGRAM_SIZE_BYTES_MAX + 1)
    send(driver, core, unused_address(), Channel.DATAGRAM, oversized)
    assert driver.stats["datagrams_dropped_too_large"] == 1
    # A peer that never accepts: the queue fills, the rest is dropped and reported at once.
    peer = unused_address()
    for _ in range(net.PEER_QUEUE_FRAMES_MAX + 1):
        core.outbox.append(Outgoing(peer, Channel.STREAM, b"frame"))
    driver.step(None)
    assert driver.stats["stream_dropped_queue_full"] == 1
    assert peer in core.failed


async def test_timer_calls_tick_at_the_deadline_and_rearms_on_input(nursery) -> None:
    core, driver = await start_fake(nursery)
    deadline_ms = core.deadline_ms = net.monotonic_ms() + 10
    driver.step(None)  # as after any input: the timer reads the new deadline
    await core.wait_until(lambda: core.ticks)
    assert core.ticks == [core.ticks[0]] and core.ticks[0] >= deadline_ms


async def test_a_failing_core_does_not_stop_the_driver(nursery) -> None:
    core_a, driver_a = await start_fake(nursery)
    core_b, driver_b = await start_fake(nursery)
    core_b.raise_on_handle = True
    send(driver_a, core_a, driver_b.address, Channel.DATAGRAM, b"1")
    await core_b.wait_until(lambda: len(core_b.received) == 1)
    core_b.raise_on_handle = False
    send(driver_a, core_a, driver_b.address, Channel.DATAGRAM, b"2")
    await core_b.wait_until(lambda: len(core_b.received) == 2)
    assert driver_b.stats["core_errors"] == 1


def test_preamble_is_never_a_native_frame() -> None:
    from gossipcache.limits import FRAME_SIZE_BYTES_MAX

    assert int.from_bytes(wire_peer.PREAMBLE[:4], "big") > FRAME_SIZE_BYTES_MAX
    assert wire_peer.starts_like_preamble(wire_peer.PREAMBLE + b"more")
    assert wire_peer.starts_like_preamble(b"GC")
    assert not wire_peer.starts_like_preamble(b"")
    assert not wire_peer.starts_like_preamble(b"\x00\x00\x00\x05\x01")


# -- real nodes -----------------------------------------------------------------------------


#: How often the real-node tests look at a node's membership view again.
POLL_S = 0.01


class Watched:
    """A served node's membership view, for tests that wait on it (bounded polling: the
    nodes run on real sockets and real time)."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server

    @property
    def membership(self):
        return self.server.core.membership

    @property
    def membership_events(self):
        return self.server.core.membership_events

    async def wait_until(self, predicate) -> None:
        with trio.fail_after(WAIT_S_MAX):
            while not predicate():
                await trio.sleep(POLL_S)

    def states(self) -> dict[str, str]:
        return {m.address: str(m.state) for m in self.membership.members()}


async def start_node(nursery, seeds: tuple[str, ...] = ()) -> NodeServer:
    config = NodeConfig(
        port=0, resp_port=None, metrics_port=None, seeds=seeds, membership_profile="local"
    )
    server = NodeServer(config)
    await nursery.start(server.serve)
    server.node = Watched(server)
    return server


def address_of(server: NodeServer) -> str:
    return f"127.0.0.1:{server.ports['native']}"


async def test_node_pair_joins_and_serves_members(nursery) -> None:
    a = await start_node(nursery)
    b = await start_node(nursery, seeds=(address_of(a),))
    both = {address_of(a): "alive", address_of(b): "alive"}
    await a.node.wait_until(lambda: a.node.states() == both)
    await b.node.wait_until(lambda: b.node.states() == both)
    for node in (a, b):  # and both rank both: b serves data once its table holds a
        await node.node.wait_until(
            lambda node=node: (
                node.core.layout_settled and len(node.core.placement.table.members) == 2
            )
        )
    assert [e.kind for e in a.node.membership_events] == [EventKind.JOINED]
    async with Client(address_of(a)) as client:  # native clients share the port with peers
        await client.put("k", "v")
        members = await client.members()
        assert await client.get("k") == b"v"
    assert {m["address"]: m["state"] for m in members} == both
    wall_now_ms = time.time_ns() // 1_000_000
    for member in members:
        assert member["id"].startswith(member["address"] + "#")
        assert wall_now_ms - 60_000 < member["since_ms"] <= wall_now_ms + 1000
        assert member["incarnation"] > 0
    text = render_prometheus(a.core)
    assert 'gossipcache_members{state="alive"} 2' in text
    assert 'gossipcache_members{state="dead"} 0' in text
    assert "gossipcache_membership_local_health 0" in text
    assert 'gossipcache_membership_transport_total{name="peer_incoming_accepted"}' in text


async def test_graceful_leave_is_seen_as_left(nursery) -> None:
    a = await start_node(nursery)
    b = await start_node(nursery, seeds=(address_of(a),))
    await a.node.wait_until(lambda: len(a.node.states()) == 2)
    await b.node.wait_until(lambda: len(b.node.states()) == 2)  # else b has nobody to tell
    await b.leave_cluster()
    assert b.node.membership.has_left
    await a.node.wait_until(lambda: a.node.states()[address_of(b)] == "left")


async def test_members_op_without_membership_is_unavailable(nursery) -> None:
    config = NodeConfig(port=0, resp_port=None, metrics_port=None, membership_enabled=False)
    server = NodeServer(config)
    await nursery.start(server.serve)
    assert server.peer_driver is None
    async with Client(address_of(server)) as client:
        with pytest.raises(ServerError) as caught:
            await client.members()
    assert caught.value.code == "unavailable"


# -- cluster keys ---------------------------------------------------------------------------


def test_key_file_parsing_and_order_independent_key_ids(tmp_path) -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    text = f"# cluster keys\n{key_a.hex()}\n\n{key_b.hex()}  # next\n"
    assert parse_cluster_keys(text) == [key_a, key_b]
    ring_ab = cluster_keyring([key_a, key_b])
    ring_ba = cluster_keyring([key_b, key_a])
    assert ring_ab.key_ids() == ring_ba.key_ids()
    # Signed with a's primary key, verified by a node that lists the keys the other way round.
    sealed = ring_ab.seal(b"body", stream=False)
    assert ring_ba.open(sealed, stream=False) == b"body"
    path = tmp_path / "keys"
    path.write_text(text)
    assert load_cluster_keyring(str(path)).primary_key_id == ring_ab.primary_key_id
    assert (
        load_cluster_keyring(None).key_ids() == cluster_keyring([DEVELOPMENT_CLUSTER_KEY]).key_ids()
    )
    for bad in ("", "# only a comment\n", "zz\n", "abcd\n"):
        with pytest.raises(ValueError):
            cluster_keyring(parse_cluster_keys(bad))
