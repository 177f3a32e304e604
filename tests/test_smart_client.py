"""Issue 9's client surfaces: the ``topology`` command and op, the native consistency level, and
the smart client that routes each key to its owners and fails over when one is down."""

from __future__ import annotations

import msgpack
import pytest
import trio

from gossipcache.cli.status import collect_status, print_status
from gossipcache.client.client import Client, SyncClient, build_route, parse_topology
from gossipcache.clock import ManualClock
from gossipcache.drivers.server import NodeServer
from gossipcache.errors import CacheUnavailable, InvalidRequest, ProtocolError
from gossipcache.node import commands as c
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import LOCAL_NODE_ID, NodeCore
from gossipcache.node.metadata import CAPACITY_BYTES_MAX
from gossipcache.node.native_session import NativeSession, native_table
from gossipcache.placement import Placement
from gossipcache.wire import native as protocol
from gossipcache.wire.framing import FrameDecoder, frame
from gossipcache.wire.native import (
    ERROR_BAD_REQUEST,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    decode_response,
)
from sim import Simulation
from sim.node import node_factory

WALL_MS = 1_700_000_000_000
KEYS = [f"key:{index}".encode() for index in range(200)]


def _standalone_core(**config) -> NodeCore:
    defaults = dict(membership_enabled=False, port=7123, resp_port=None, metrics_port=None)
    return NodeCore(NodeConfig(**(defaults | config)), ManualClock(wall_ms=WALL_MS))


def _native(session: NativeSession, *messages: tuple) -> list:
    """Send raw request messages ``(request_id, op, *args)``; the decoded responses."""
    decoder = FrameDecoder()
    decoder.feed(session.receive(b"".join(frame(msgpack.packb(m)) for m in messages)))
    return [decode_response(body) for body in decoder.pop_frames()]


# -- the topology command ----------------------------------------------------------------------


def test_a_standalone_core_reports_itself_as_the_one_member() -> None:
    core = _standalone_core(size_bytes_max=64 << 20, zone="z1", host_id="box")
    topology = core.execute(c.Topology(), WALL_MS)
    assert topology == {
        "epoch": None,  # no table built yet: the first ticks build it
        "replicas": 3,
        "self": LOCAL_NODE_ID,
        "members": [
            {
                "id": LOCAL_NODE_ID,
                "address": "127.0.0.1:7123",
                "host_id": "box",
                "zone": "z1",
                "capacity_bytes": 64 << 20,
            }
        ],
    }
    while core.placement.busy:
        core.tick(core.clock.monotonic_ms())
    assert core.execute(c.Topology(), WALL_MS)["epoch"] == core.placement.epoch is not None
    assert c.Topology() in {c.Topology()} and c.Topology in c.COMMAND_TYPES


def test_every_node_of_a_simulated_cluster_reports_its_own_table() -> None:
    """From any node's topology a client computes that node's owners for every key, and the
    node's epoch."""
    sim = Simulation(3)
    addresses = [f"node00{index}:7946" for index in range(3)]
    factory = node_factory(sim, membership=lambda a: True, seeds=lambda a: addresses)
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(100)  # the nodes start
    cores = [sim.core(address).core for address in addresses]
    deadline_ms = 30_000
    while not all(core.layout_settled and len(core.placement.table.members) == 3 for core in cores):
        assert sim.now_ms < deadline_ms, "the simulated cluster did not settle"
        sim.run_until(sim.now_ms + 100)
    for core in cores:
        topology = core.execute(c.Topology(), WALL_MS)
        assert topology["self"] == core.placement.own_id == core.membership.address
        assert sorted(m["address"] for m in topology["members"]) == addresses
        epoch, replicas, members, ids_to_addresses = parse_topology(topology)
        assert (epoch, replicas) == (core.placement.epoch, 3)
        table = Placement.build(members, replicas)
        assert table.epoch == epoch
        for key in KEYS:
            assert table.owners_of_key(key) == core.placement.table.owners_of_key(key)
        assert {ids_to_addresses[m.node_id] for m in members} == set(addresses)
    capacity = min(cores[0].config.size_bytes_max, CAPACITY_BYTES_MAX)
    assert {m["capacity_bytes"] for m in topology["members"]} == {capacity}


# -- the native session: the topology op and the consistency level ----------------------------


def test_the_topology_op_answers_the_command() -> None:
    core = _standalone_core()
    session = NativeSession(core, 1, native_table(core))
    (response,) = _native(session, (4, "topology"))
    assert response.status == STATUS_OK
    assert response.payload == core.execute(c.Topology(), WALL_MS)


class _Recorder:
    """Handlers that keep every command they get, as they got it, and answer a fixed value."""

    def __init__(self, core: NodeCore, answers: dict) -> None:
        self.seen: list = []
        for command_type, answer in answers.items():
            core.add_command(command_type, self._handler(answer))

    def _handler(self, answer):
        def handle(command, wall_ms):
            self.seen.append(command)
            return answer

        return handle


def test_a_consistency_level_reaches_the_core_as_the_command_field() -> None:
    core = _standalone_core()
    recorder = _Recorder(
        core,
        {c.Get: b"v", c.Put: True, c.Delete: 1, c.Exists: 1, c.Expire: True, c.Persist: True,
         c.Ttl: 5},
    )  # fmt: skip
    session = NativeSession(core, 1, native_table(core))
    responses = _native(
        session,
        (1, "get", b"k", "quorum"),
        (2, "put", b"k", b"v", 100, "all"),
        (3, "del", b"k", "one"),
        (4, "exists", b"k", "all"),
        (5, "expire", b"k", 50, "quorum"),
        (6, "expire", b"k", None, "one"),
        (7, "ttl", b"k", "quorum"),
        (8, "persist", b"k", "all"),
    )
    assert [r.status for r in responses] == [STATUS_OK] * 8
    assert recorder.seen == [
        c.Get(b"k", consistency="quorum"),
        c.Put(b"k", b"v", 100, consistency="all"),
        c.Delete((b"k",), consistency="one"),
        c.Exists((b"k",), consistency="all"),
        c.Expire(b"k", 50, consistency="quorum"),
        c.Persist(b"k", consistency="one"),
        c.Ttl(b"k", consistency="quorum"),
        c.Persist(b"k", consistency="all"),
    ]
    assert all(command.consistency for command in recorder.seen)
    # Without a level: the hot paths' slices of the message, no command object built.
    recorder.seen.clear()
    _native(session, (9, "get", b"k"), (10, "put", b"k", b"v", None))
    assert recorder.seen == [("get", b"k"), ("put", b"k", b"v", None)]
    assert [type(command) for command in recorder.seen] == [tuple, tuple]
    # Both forms count in the command's one metrics series.
    assert core.metrics.commands["get"].latency_ns.count == 2


def test_a_bad_consistency_level_is_a_bad_request_and_the_session_goes_on() -> None:
    core = _standalone_core()
    session = NativeSession(core, 1, native_table(core))
    bad, bad_type, good = _native(
        session, (1, "get", b"k", "eventual"), (2, "put", b"k", b"v", None, 3), (3, "get", b"k")
    )
    for response in (bad, bad_type):
        assert response.status == STATUS_ERROR and response.payload[0] == ERROR_BAD_REQUEST
        assert "consistency must be one of one, quorum, all" in response.payload[1]
    assert good.status == STATUS_NOT_FOUND and not session.closing
    assert core.metrics.internal_errors == 0


def test_the_levels_are_the_same_on_the_wire_and_in_commands() -> None:
    assert protocol.CONSISTENCY_LEVELS == c.CONSISTENCY_LEVELS


# -- the client's checks -----------------------------------------------------------------------


def _topology(**changes) -> dict:
    member = {"id": "a:1#1", "address": "a:1", "host_id": "a", "zone": None, "capacity_bytes": 1}
    other = dict(member, id="b:1#1", address="b:1", host_id="b")
    return {"epoch": 7, "replicas": 2, "self": "a:1#1", "members": [member, other]} | changes


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        _topology(epoch="7"),
        _topology(replicas=0),
        _topology(replicas=99),
        _topology(members=[]),
        _topology(members="a:1"),
        _topology(members=[{"id": "a:1#1"}]),
        _topology(members=[dict(_topology()["members"][0], address="nowhere")]),
        _topology(members=[dict(_topology()["members"][0], capacity_bytes=-1)]),
        _topology(members=[dict(_topology()["members"][0], capacity_bytes=1.5)]),
        _topology(members=[dict(_topology()["members"][0], host_id="")]),
        _topology(members=[_topology()["members"][0]] * 2),
    ],
)
def test_a_malformed_topology_is_a_protocol_error(payload) -> None:
    with pytest.raises(ProtocolError, match="^malformed topology"):
        parse_topology(payload)


async def test_a_route_gives_owners_by_the_table() -> None:
    route = await build_route(_topology(), "a:1")
    table = Placement.build(parse_topology(_topology())[2], 2)
    assert route.owners(b"k") == [
        {"a:1#1": "a:1", "b:1#1": "b:1"}[i] for i in table.owners_of_key(b"k")
    ]
    single = await build_route(_topology(members=_topology()["members"][:1]), "seed:9")
    assert single.placement is None and single.owners(b"k") == ["seed:9"]


def test_client_arguments_are_checked_before_anything_is_sent() -> None:
    for seeds in ([], ["nowhere"], ["h:1"] * 65, [7]):
        with pytest.raises(InvalidRequest):
            Client(seeds)


# -- a real cluster of in-process nodes --------------------------------------------------------


async def _start_node(
    nursery, seeds: tuple[str, ...] = (), **config
) -> tuple[NodeServer, trio.CancelScope]:
    server = NodeServer(
        NodeConfig(
            port=0, resp_port=None, metrics_port=None, membership_profile="local", seeds=seeds,
            **config,
        )
    )  # fmt: skip
    scope = trio.CancelScope()

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await server.serve(task_status=task_status)

    await nursery.start(serve)
    return server, scope


def _address(server: NodeServer) -> str:
    return f"127.0.0.1:{server.ports['native']}"


async def _settled(servers: list[NodeServer], count: int) -> None:
    """Wait (bounded) until every node's table has ``count`` members and they agree."""

    def agreed() -> bool:
        views = [server.core.placement for server in servers]
        return (
            all(
                server.core.layout_settled and len(server.core.placement.table.members) == count
                for server in servers
            )
            and len({view.epoch for view in views}) == 1
        )

    with trio.fail_after(15):
        while not agreed():
            await trio.sleep(0.02)


async def _cluster(nursery, count: int, replicas: int = 2):
    nodes = []
    for index in range(count):
        seeds = (_address(nodes[0][0]),) if nodes else ()
        nodes.append(await _start_node(nursery, seeds, replicas=replicas, host_id=f"host-{index}"))
    servers = [server for server, _ in nodes]
    await _settled(servers, count)
    return nodes


async def test_the_client_sends_each_key_to_its_owners(nursery) -> None:
    nodes = await _cluster(nursery, 3)
    servers = [server for server, _ in nodes]
    by_address = {_address(server): server for server in servers}
    table = servers[0].core.placement.table
    node_address = {server.core.placement.own_id: _address(server) for server in servers}
    # Seeds: the first is not listening; the second answers.
    async with Client(["127.0.0.1:1", _address(servers[1])], timeout_s=2) as client:
        assert client.address == _address(servers[1])
        assert client.route.placement.epoch == client.route.epoch == table.epoch
        for key in KEYS:
            assert client.owners(key) == [node_address[i] for i in table.owners_of_key(key)]
        for key in KEYS[:60]:
            await client.put(key, b"v:" + key)
        # One hop: each key went straight to its primary, which holds it and coordinated it:
        # no node coordinated a key it does not own.
        for key in KEYS[:60]:
            primary = by_address[client.owners(key)[0]]
            assert primary.core.store.get(key, WALL_MS) == b"v:" + key
            assert await client.get(key) == b"v:" + key
        assert all(server.core.coordinator.forwarded == 0 for server in servers)
        assert await client.exists(KEYS[0]) and await client.ttl(KEYS[0]) == float("inf")
        assert await client.expire(KEYS[0], 30, consistency=None)
        assert await client.delete(KEYS[0]) and await client.get(KEYS[0]) is None
        with pytest.raises(InvalidRequest, match="consistency"):
            await client.get(KEYS[0], consistency="eventual")
        topology = await client.topology(node=_address(servers[2]))
        assert topology["epoch"] == table.epoch and len(topology["members"]) == 3
        stats = await client.stats(node=_address(servers[2]))
        assert stats["buckets_owned"] == servers[2].core.placement.buckets_owned


async def test_the_client_fails_over_when_an_owner_is_down(nursery) -> None:
    nodes = await _cluster(nursery, 3)
    servers = [server for server, _ in nodes]
    async with Client([_address(s) for s in servers], timeout_s=2) as client:
        down, scope = nodes[2]
        scope.cancel()  # the node is gone: its connections close, its port refuses
        keys = [key for key in KEYS if client.owners(key)[0] == _address(down)][:20]
        assert keys, "R = 2 of 3 nodes: about a third of the keys have it as primary"
        with trio.fail_after(5):
            for key in keys:
                # R = 2 with one owner down: quorum (2) cannot be met, one can.
                await client.put(key, b"after", consistency="one")
                assert await client.get(key) == b"after"
        # The other owner got them: one of the two live nodes, per key.
        held = sum(s.core.store.get(key, WALL_MS) == b"after" for s in servers[:2] for key in keys)
        assert held == len(keys)
        # The failure asked for a topology refresh at once (the periodic one is 5 s away).
        with trio.fail_after(2):
            while sum(_topology_requests(s) for s in servers[:2]) < 2:
                await trio.sleep(0.02)


def _topology_requests(server: NodeServer) -> int:
    return server.core.metrics.commands["topology"].latency_ns.count


async def test_the_client_learns_a_join_from_its_periodic_refresh(nursery) -> None:
    nodes = await _cluster(nursery, 2)
    first = nodes[0][0]
    async with Client(_address(first), topology_refresh_s=0.1) as client:
        assert len(client.route.addresses) == 2
        third, _ = await _start_node(nursery, (_address(first),), replicas=2, host_id="host-2")
        await _settled([server for server, _ in nodes] + [third], 3)
        with trio.fail_after(5):
            while client.route.epoch != third.core.placement.epoch:
                await trio.sleep(0.02)
        assert _address(third) in client.route.addresses.values()


async def test_a_client_of_one_standalone_node_sends_it_everything(nursery) -> None:
    server, _ = await _start_node(nursery, membership_enabled=False)
    address = _address(server)

    def blocking() -> None:
        with SyncClient(address) as client:
            assert client.owners("k") == [address]
            client.put("k", "v")
            assert client.get("k") == b"v"
            assert client.topology()["self"] == LOCAL_NODE_ID
        with pytest.raises(CacheUnavailable, match="no seed answered"):
            SyncClient(["127.0.0.1:1", "127.0.0.1:2"])

    await trio.to_thread.run_sync(blocking)


async def test_status_shows_a_member_that_does_not_answer(nursery, capsys) -> None:
    nodes = await _cluster(nursery, 3)
    servers = [server for server, _ in nodes]
    down, scope = nodes[2]
    scope.cancel()  # membership still lists it alive for a few seconds: its port refuses
    with trio.fail_after(5):
        status = await collect_status(_address(servers[0]), 1.0, None)
    rows = {row["address"]: row for row in status["members"]}
    assert not rows[_address(down)]["reachable"] and "error" in rows[_address(down)]
    assert status["total"]["reachable"] == 2 and status["total"]["members"] == 3
    answered = [rows[_address(server)] for server in servers[:2]]
    assert [row["buckets_owned"] for row in answered] == [
        server.core.placement.buckets_owned for server in servers[:2]
    ]
    print_status(status)
    text = capsys.readouterr().out
    assert f"{_address(down)}  alive, unreachable" in text and "2/3 answered" in text
