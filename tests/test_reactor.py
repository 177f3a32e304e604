"""The reactor as a node runs it: the core's timers fire from its idle sleep, and incoming peer
streams are served in its own pass (handshake, bad input, bounds) next to client connections."""

from __future__ import annotations

import os

import trio

from gossipcache.client.client import Client
from gossipcache.drivers import reactor as reactor_module
from gossipcache.drivers.cluster_keys import DEVELOPMENT_CLUSTER_KEY
from gossipcache.drivers.server import NodeServer
from gossipcache.node.config import NodeConfig
from gossipcache.wire.framing import FrameDecoder, frame
from gossipcache.wire.native import OP_PUT, STATUS_OK, Request, decode_response, encode_request
from gossipcache.wire.peer import PREAMBLE, PeerAuthenticator

WAIT_S_MAX = 10.0
POLL_S = 0.01


async def wait_until(predicate) -> None:
    """Bounded polling: these nodes run on real sockets and real time."""
    with trio.fail_after(WAIT_S_MAX):
        while not predicate():
            await trio.sleep(POLL_S)


async def start(nursery, **overrides) -> NodeServer:
    config = NodeConfig(
        port=0, resp_port=None, metrics_port=None, membership_profile="local", **overrides
    )
    server = NodeServer(config)
    await nursery.start(server.serve)
    return server


async def start_with(nursery, monkeypatch, **constants) -> NodeServer:
    """A node whose reactor runs with some of its bounds (module constants) replaced."""
    for name, value in constants.items():
        monkeypatch.setattr(reactor_module, name, value)
    return await start(nursery)


async def test_active_expiry_runs_from_the_reactor_with_no_client_traffic(nursery) -> None:
    server = await start(nursery, membership_enabled=False, expire_interval_ms=10)
    async with Client(f"127.0.0.1:{server.ports['native']}") as client:
        await client.put("short", "v", ttl_s=0.05)
    store = server.core.store
    # Nobody reads the key again: only the core's tick, run by the idle reactor, removes it.
    await wait_until(lambda: store.stats().expirations == 1)
    assert len(store) == 0 and store.stats().gets == 0


async def connect(server: NodeServer) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", server.ports["native"])


def opening(server: NodeServer, sender: str) -> bytes:
    """A genuine handshake from ``sender`` to ``server`` (test nodes use the development key)."""
    authenticator = PeerAuthenticator(sender, [DEVELOPMENT_CLUSTER_KEY])
    receiver = f"127.0.0.1:{server.ports['native']}"
    return authenticator.opening(receiver, server.clock.wall_ms(), os.urandom(16))


async def closed_by_node(stream: trio.SocketStream) -> bool:
    with trio.fail_after(WAIT_S_MAX):
        return await stream.receive_some(1) == b""


async def test_bad_peer_input_is_counted_and_closed_in_the_reactor(nursery) -> None:
    server = await start(nursery)
    stats = server.core.membership_transport_stats
    for accepted, (counter, data) in enumerate(
        {
            "peer_dropped_bad_preamble": b"GCPEER9\nxxxx",
            "peer_dropped_bad_handshake": PREAMBLE + frame(b"not a handshake"),
            "peer_dropped_handshake_too_large": PREAMBLE + (2**31).to_bytes(4, "big"),
            "peer_dropped_bad_frame": opening(server, "127.0.0.1:1") + (2**31).to_bytes(4, "big"),
        }.items(),
        start=1,
    ):
        stream = await connect(server)
        # The first read decides: two bytes of the preamble make it a peer stream.
        await stream.send_all(data[:2])
        await wait_until(lambda: stats.get("peer_incoming_accepted") == accepted)  # noqa: B023
        await stream.send_all(data[2:])
        assert await closed_by_node(stream)
        await stream.aclose()
        assert stats[counter] == 1
    assert server.core.metrics.connections_open == 0  # peers are not clients


async def test_peer_payloads_reach_the_core_and_the_handshake_is_timed(
    nursery, monkeypatch
) -> None:
    server = await start_with(
        nursery, monkeypatch, PEER_HANDSHAKE_TIMEOUT_S=0.2, PEER_SWEEP_INTERVAL_S=0.05
    )
    stats = server.core.membership_transport_stats
    membership = server.core.membership
    stream = await connect(server)
    # A valid opening and one payload the membership core cannot decode: delivered, dropped.
    drops_before = sum(v for k, v in membership.stats().items() if k.startswith("drop_"))
    await stream.send_all(opening(server, "127.0.0.1:1") + frame(b"\x00garbage"))
    await wait_until(lambda: stats.get("stream_frames_received") == 1)
    drops = sum(v for k, v in membership.stats().items() if k.startswith("drop_"))
    assert drops == drops_before + 1
    assert server.reactor.peer_connections == 1
    # A connection that never finishes its handshake is closed after the timeout.
    slow = await connect(server)
    await slow.send_all(PREAMBLE[:3])
    assert await closed_by_node(slow)
    assert stats["peer_dropped_handshake_timeout"] == 1
    assert server.reactor.peer_connections == 1  # the good one stays
    await stream.aclose()
    await wait_until(lambda: server.reactor.peer_connections == 0)


async def test_peer_streams_over_the_bound_are_refused(nursery, monkeypatch) -> None:
    server = await start_with(nursery, monkeypatch, PEER_INCOMING_MAX=2)
    streams = []
    for index in range(3):
        stream = await connect(server)
        await stream.send_all(opening(server, f"127.0.0.1:{index + 1}"))
        streams.append(stream)
    assert await closed_by_node(streams[2])
    stats = server.core.membership_transport_stats
    assert stats["peer_incoming_refused"] == 1 and stats["peer_incoming_accepted"] == 2
    # Clients are still served on the same port.
    async with Client(f"127.0.0.1:{server.ports['native']}") as client:
        await client.put("k", "v")
        assert await client.get("k") == b"v"
    for stream in streams:
        await stream.aclose()


async def connect_from(server: NodeServer, source_ip: str) -> trio.SocketStream:
    """A connection to the node from another loopback address (Linux routes all of 127/8)."""
    sock = trio.socket.socket()
    await sock.bind((source_ip, 0))
    await sock.connect(("127.0.0.1", server.ports["native"]))
    return trio.SocketStream(sock)


async def test_unfinished_handshakes_wait_in_a_small_budget_per_source(
    nursery, monkeypatch
) -> None:
    server = await start_with(
        nursery, monkeypatch, PEER_HANDSHAKING_MAX=3, PEER_HANDSHAKING_PER_SOURCE_MAX=2
    )
    stats = server.core.membership_transport_stats
    genuine = opening(server, "127.0.0.1:1")
    # Two unfinished handshakes from 127.0.0.1 are held; a third from there is closed at once.
    held = [await connect(server) for _ in range(2)]
    for index, stream in enumerate(held, start=1):
        await stream.send_all(genuine[:3])
        await wait_until(lambda: stats.get("peer_incoming_accepted") == index)  # noqa: B023
    third = await connect(server)
    await third.send_all(PREAMBLE[:3])
    assert await closed_by_node(third)
    assert stats["peer_dropped_source_handshakes_full"] == 1
    # Another source still gets the last slot; the budget as a whole is then full.
    other = await connect_from(server, "127.0.0.2")
    await other.send_all(PREAMBLE[:3])
    await wait_until(lambda: stats.get("peer_incoming_accepted") == 3)
    fourth = await connect_from(server, "127.0.0.3")
    await fourth.send_all(PREAMBLE[:3])
    assert await closed_by_node(fourth)
    assert stats["peer_dropped_handshakes_full"] == 1
    # A whole handshake in the first read needs no slot: a real peer gets through meanwhile.
    peer = await connect(server)
    await peer.send_all(opening(server, "127.0.0.1:2"))
    await wait_until(lambda: stats.get("peer_incoming_authenticated") == 1)
    # Finishing a held handshake frees its slot for the next unfinished one from 127.0.0.1.
    await held[0].send_all(genuine[3:])
    await wait_until(lambda: stats.get("peer_incoming_authenticated") == 2)
    fifth = await connect(server)
    await fifth.send_all(PREAMBLE[:3])
    await wait_until(lambda: stats.get("peer_incoming_accepted") == 5)
    assert stats["peer_dropped_source_handshakes_full"] == 1
    assert server.reactor.peer_connections == 5
    for stream in (*held, other, peer, fifth):
        await stream.aclose()


async def test_a_clients_replicated_write_leaves_in_the_same_pass(nursery) -> None:
    """A write a client sends makes the coordinator queue messages for the other owners; they
    must leave when the reactor finishes that pass, not at the core's next tick or next peer
    input (which made every quorum write wait ~30 ms for a membership timer)."""
    servers = []
    for index in range(3):
        seeds = (f"127.0.0.1:{servers[0].ports['native']}",) if servers else ()
        servers.append(await start(nursery, seeds=seeds, replicas=3, host_id=f"host-{index}"))
    await wait_until(
        lambda: all(
            s.core.layout_settled and len(s.core.placement.table.members) == 3 for s in servers
        )
    )
    coordinator = servers[0]
    core, replication = coordinator.core, coordinator.core.replication
    events: list[str] = []

    def record(name: str, function):
        def recorded(*args, **kwargs):
            events.append(name)
            return function(*args, **kwargs)

        return recorded

    core.tick = record("tick", core.tick)
    core.handle = record("input", core.handle)  # peer streams served by the reactor
    step = coordinator.peer_driver.step
    # Datagrams and link failures reach the core through the driver's step(action).
    coordinator.peer_driver.step = lambda action: (
        events.append("input" if action is not None else "flush"),
        step(action),
    )
    replication.write = record("write", replication.write)
    take_outbox = replication.take_outbox

    def take() -> list:
        outbox = take_outbox()
        if outbox:
            events.append("sent")
        return outbox

    replication.take_outbox = take
    stream = await connect(coordinator)
    decoder = FrameDecoder()
    for index in range(5):
        events.clear()
        key = b"pass:%d" % index
        await stream.send_all(encode_request(Request(index, OP_PUT, (key, b"v", None, "quorum"))))
        with trio.fail_after(WAIT_S_MAX):
            while not (bodies := decoder.pop_frames()):
                decoder.feed(await stream.receive_some(65536))
        assert decode_response(bodies[0]).status == STATUS_OK
        after_write = events[events.index("write") + 1 :]
        first = next(event for event in after_write if event in ("tick", "input", "sent"))
        assert first == "sent", events
    await stream.aclose()
