"""Clients of the native protocol: ``Client`` for Trio code, ``SyncClient`` for blocking code.

**Routing (a smart client).** A client is given one or more seed addresses (``"host:port"``, the
nodes' native ports). It asks a seed for the cluster's topology (op ``topology``: the members,
their addresses, hosts, zones and capacities, the replica count R and the placement epoch),
builds the same placement table every node builds (``gossipcache.placement``) and sends each
key's request straight to an owner of the key, the primary first: one network hop, no
forwarding. It keeps the topology fresh: every ``topology_refresh_s`` seconds, and at once when
a connection to a node fails or times out. When an owner cannot be reached, the request goes to
the key's next owner, then to any other node, which coordinates it on the client's behalf; a
node that failed is skipped for ``NODE_DOWN_S`` before it is tried again. A single node, or a
node too old to answer ``topology``, gets every request (the client is then a plain one).

The client keeps one TCP connection per node it talks to, opened on first use, at most
``node_connections_max`` of them (the least recently used idle one is closed past that). Every
connection pipelines: any number of tasks may call the client at once; each request gets an id,
a writer task sends whatever requests are queued in one write, and a reader task hands each
response to the task waiting for its id.

**Consistency.** Every data method takes ``consistency=``: None (the node's default: reads
``one``, writes ``quorum``), ``"one"``, ``"quorum"`` or ``"all"``. Of the key's R owners, ONE
needs 1, QUORUM ``R // 2 + 1`` and ALL R to answer (a read) or to hold the write (a write)
before the coordinating node answers. What each level guarantees:

- ``one``: a read returns one owner's copy, which may be stale (miss a write another owner
  already holds); a write is acknowledged once one owner holds it, and is lost if that owner
  dies before the others get it.
- ``quorum``: a quorum write followed by a quorum read of the same key: the read sees the
  latest write acknowledged at quorum (or a later one), because the two sets of owners overlap;
  an acknowledged quorum write survives the loss of any ``R - R // 2 - 1`` of its owners.
- ``all``: every owner holds the write before it is acknowledged, and an ``all`` read compares
  every owner's copy; any one owner down makes the level fail.

A level that cannot be met within the node's replica timeout fails with ``ServerError`` (code
``unavailable``), whose message names how many replicas answered, e.g. "quorum not reached: 1 of
2 required replicas answered (3 owners)". A write that failed this way MAY still have landed on
some replicas: it is not rolled back, and a later read may return it. (Replication is coming
with issue 9: until a node runs it, a key lives only on the node that took it.)

Exceptions (all in ``gossipcache.errors``): ``CacheUnavailable`` (no node of the key could be
reached, or a connection broke), ``CacheTimeout`` (no reply within ``timeout_s``; the request
may or may not have applied), ``ServerError`` (the node answered with an error; ``.code``:
``unavailable`` when a consistency level was not met, ``noauth`` when the node needs a password
the client was not given), ``AuthenticationFailed`` (the ``password`` given is refused), and
``InvalidRequest`` subclasses raised locally for arguments the node would refuse.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import (
    AuthenticationFailed,
    CacheTimeout,
    CacheUnavailable,
    InvalidRequest,
    ProtocolError,
    ServerError,
)
from ..limits import PLACEMENT_MEMBERS_MAX, PLACEMENT_REPLICAS_MAX
from ..placement import STEP_SCORES_DEFAULT, Placement, PlacementMember
from ..wire import native as protocol
from ..wire.framing import FrameDecoder
from ..wire.native import (
    CONSISTENCY_LEVELS,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    Request,
    decode_response,
    encode_request,
)

log = logging.getLogger("gossipcache.client")

#: Default per-request timeout (per attempt: a request that fails over tries another node).
TIMEOUT_S_DEFAULT = 5.0
#: Requests one client may have in flight, over all its connections; further callers wait for
#: a slot (back-pressure).
IN_FLIGHT_MAX = 4096
#: Default period of the topology refresh.
TOPOLOGY_REFRESH_S_DEFAULT = 5.0
#: Least time between two topology refreshes: however many requests fail over at once (a node
#: just died), the client asks for the topology at most this often.
TOPOLOGY_REFRESH_GAP_S = 0.2
#: A node whose connection failed or timed out is skipped for this long (its keys go to their
#: next owner at once) before it is tried again.
NODE_DOWN_S = 1.0
#: Default bound on the connections one client keeps open, one per node it talks to.
NODE_CONNECTIONS_MAX_DEFAULT = 64
#: Most seed addresses one client accepts.
SEEDS_MAX = 64
#: Nodes asked in turn for the topology by one refresh before it gives up until the next one.
TOPOLOGY_SOURCES_MAX = 3
_RECEIVE_SIZE_BYTES = 256 * 1024

#: The consistency levels of ``consistency=`` (None: the node's default for the command).
ONE, QUORUM, ALL = CONSISTENCY_LEVELS


def _as_bytes(value: bytes | str, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise InvalidRequest(f"{what} must be bytes or str, not {type(value).__name__}")


def _ttl_ms(ttl_s: float | None) -> int | None:
    if ttl_s is None:
        return None
    if not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InvalidRequest(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    return max(1, round(ttl_s * 1000))


def _level(consistency: str | None) -> tuple[str, ...]:
    """The optional last argument of a data op: nothing for the node's default."""
    if consistency is None:
        return ()
    if consistency not in CONSISTENCY_LEVELS:
        raise InvalidRequest(
            f"consistency must be None or one of {', '.join(CONSISTENCY_LEVELS)},"
            f" got {consistency!r:.40}"
        )
    return (consistency,)


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``."""
    if not isinstance(address, str):
        raise InvalidRequest(f"address must be a HOST:PORT string, got {address!r:.60}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"address must be HOST:PORT, got {address!r:.80}")
    return host, int(port)


# -- topology ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How the client routes, from one topology: the placement table and each member's
    address, or (``placement`` None) every request to ``home``."""

    #: The node that gave this topology (and the target of node-level calls by default).
    home: str
    placement: Placement | None = None
    #: node id -> native address.
    addresses: dict[str, str] | None = None
    #: The epoch the node reported (None before its first table).
    epoch: int | None = None

    def owners(self, key: bytes) -> list[str]:
        """Addresses of ``key``'s owners, the primary first."""
        if self.placement is None:
            return [self.home]
        addresses = self.addresses
        return [addresses[node_id] for node_id in self.placement.owners_of_key(key)]


def parse_topology(payload: object) -> tuple[int | None, int, list[PlacementMember], dict]:
    """``(epoch, replicas, placement members, node id -> address)`` of a ``topology`` answer;
    ``ProtocolError`` for anything malformed (a node's answer is checked like any input)."""
    try:
        epoch, replicas, members = payload["epoch"], payload["replicas"], payload["members"]
        if epoch is not None and (type(epoch) is not int or epoch < 0):
            raise ValueError(f"bad epoch {epoch!r:.40}")
        if type(replicas) is not int or not 1 <= replicas <= PLACEMENT_REPLICAS_MAX:
            raise ValueError(f"bad replica count {replicas!r:.40}")
        if type(members) is not list or not 1 <= len(members) <= PLACEMENT_MEMBERS_MAX:
            raise ValueError("members must be a list of 1 to PLACEMENT_MEMBERS_MAX members")
        placed = []
        addresses = {}
        for member in members:
            capacity = member["capacity_bytes"]
            if type(capacity) is not int:
                raise ValueError(f"bad capacity {capacity!r:.40}")
            # PlacementMember checks the names and the weight's range.
            placed.append(
                PlacementMember(member["id"], member["host_id"], member["zone"], float(capacity))
            )
            parse_address(member["address"])
            addresses[member["id"]] = member["address"]
        if len(addresses) != len(placed):
            raise ValueError("a member is listed twice")
    except (TypeError, KeyError, ValueError) as error:  # InvalidRequest is a ValueError
        raise ProtocolError(f"malformed topology: {error}") from None
    return epoch, replicas, placed, addresses


async def build_route(payload: object, home: str) -> Route:
    """The ``Route`` of a ``topology`` answer from the node at ``home``. The table is built in
    slices (16384 x N scores: about half a second at 100 members), yielding to other tasks
    between them. One member: every request to ``home``, whatever address it advertises
    (a standalone node knows only its configured one)."""
    epoch, replicas, members, addresses = parse_topology(payload)
    if len(members) == 1:
        return Route(home, epoch=epoch)
    build = Placement.begin_build(members, replicas)
    while not build.step(STEP_SCORES_DEFAULT):
        await trio.sleep(0)
    placement = build.result()
    if epoch is not None and placement.epoch != epoch:
        log.warning(
            "the placement built from %s's topology has epoch %d, the node reports %d: owners "
            "may differ (nodes then forward)",
            home,
            placement.epoch,
            epoch,
        )
    return Route(home, placement, addresses, epoch)


# -- one connection ----------------------------------------------------------------------------


class _NodeConnection:
    """One pipelined connection to one node: opened on first use, reopened (one attempt,
    shared by every caller meanwhile) after it broke. Requests in flight when it broke fail
    (they may or may not have applied); nothing is retried behind the caller's back here."""

    def __init__(self, client: Client, address: str) -> None:
        self.client = client
        self.address = address
        self._host, self._port = parse_address(address)
        self._stream: trio.SocketStream | None = None
        self._next_id = 1
        self._waiting: dict[int, list] = {}  # id -> [event, response]
        self._outgoing: list[bytes] = []
        self._wake_writer = trio.Event()
        self._broken: BaseException | None = None
        self._opening: trio.Event | None = None
        self._open_error: BaseException | None = None
        self.closed = False

    @property
    def _usable(self) -> bool:
        return self._stream is not None and self._broken is None and not self.closed

    @property
    def idle(self) -> bool:
        return not self._waiting and self._opening is None

    async def call(self, op: str, args: tuple) -> tuple[int, Any]:
        """Send ``op`` with ``args``; ``(status, payload)`` of its OK or NOT_FOUND answer."""
        if self._opening is not None or self._stream is None or self._broken is not None:
            await self._open()  # nothing is sent before the connection has authenticated
        return await self._request(op, args)

    async def _request(self, op: str, args: tuple) -> tuple[int, Any]:
        client = self.client
        async with client._slots:
            if self._broken is not None or self.closed:
                raise CacheUnavailable(f"connection to {self.address} is broken: {self._broken}")
            request_id = self._next_id
            self._next_id = request_id + 1 if request_id < protocol.REQUEST_ID_MAX else 1
            frame = encode_request(Request(request_id, op, args))
            slot = [trio.Event(), None]
            self._waiting[request_id] = slot
            self._outgoing.append(frame)
            self._wake_writer.set()
            try:
                with trio.fail_after(client.timeout_s):
                    await slot[0].wait()
            except trio.TooSlowError:
                raise CacheTimeout(
                    f"{op} got no reply from {self.address} within {client.timeout_s} s"
                ) from None
            finally:
                self._waiting.pop(request_id, None)
        response = slot[1]
        if isinstance(response, BaseException):
            raise response
        if response.status == STATUS_ERROR:
            code, message = response.payload
            raise ServerError(code, message)
        return response.status, response.payload

    async def _open(self) -> None:
        """Connect (and authenticate), or wait for the attempt under way; raise its error."""
        if self.closed:
            raise CacheUnavailable(f"connection to {self.address} is closed")
        if self._opening is not None:
            # Share the attempt under way. If it fails, it may have begun before the node came
            # back (the topology refresh opens connections too): one fresh attempt of our own,
            # shared with whoever else waited, before giving up.
            await self._opening.wait()
            if self._usable:
                return
            if self._opening is not None:
                await self._opening.wait()
                if self._usable:
                    return
                raise self._open_error or CacheUnavailable(f"cannot connect to {self.address}")
        self._opening = trio.Event()
        try:
            self._open_error = None
            stream = await self._connect()
            old, self._stream = self._stream, stream
            if old is not None:
                with trio.CancelScope(shield=True):
                    await old.aclose()
            self._broken = None
            self._outgoing = []
            self._wake_writer = trio.Event()
            nursery = self.client._nursery
            nursery.start_soon(self._reader, stream)
            nursery.start_soon(self._writer, stream)
            await self._authenticate()
        except BaseException as error:
            self._open_error = error
            if self._stream is not None and self._broken is None:
                self._broken = error  # not usable unauthenticated: the next call reconnects
            raise
        finally:
            self._opening.set()
            self._opening = None

    async def _connect(self) -> trio.SocketStream:
        try:
            with trio.fail_after(self.client.timeout_s):
                return await trio.open_tcp_stream(self._host, self._port)
        except (OSError, trio.TooSlowError) as error:
            raise CacheUnavailable(f"cannot connect to {self.address}: {error}") from error

    async def _authenticate(self) -> None:
        """Send the password first on a new connection (nothing else is served before it)."""
        password = self.client._password
        if password is None:
            return
        try:
            await self._request(protocol.OP_AUTH, (password,))
        except ServerError as error:
            if error.code == protocol.ERROR_WRONG_PASSWORD:
                raise AuthenticationFailed(f"{self.address}: {error.message}") from None
            raise

    async def _writer(self, stream: trio.SocketStream) -> None:
        try:
            while True:
                await self._wake_writer.wait()
                if stream is not self._stream or self.closed:
                    return  # replaced by a reconnection, or closed
                self._wake_writer = trio.Event()
                batch, self._outgoing = self._outgoing, []
                await stream.send_all(b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._broke(stream, CacheUnavailable(f"connection to {self.address} broke: {error}"))

    async def _reader(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await stream.receive_some(_RECEIVE_SIZE_BYTES)
                if not data:
                    raise CacheUnavailable(f"{self.address} closed the connection")
                decoder.feed(data)
                for body in decoder.pop_frames():
                    response = decode_response(body)
                    slot = self._waiting.get(response.request_id)
                    if slot is not None:  # else: its caller timed out and left
                        slot[1] = response
                        slot[0].set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._broke(stream, CacheUnavailable(f"connection to {self.address} broke: {error}"))
        except (CacheUnavailable, ProtocolError) as error:
            self._broke(stream, CacheUnavailable(str(error)))

    def _broke(self, stream: trio.SocketStream, error: CacheUnavailable) -> None:
        """``stream`` failed: if it is still the current one, fail everything waiting on it."""
        if stream is self._stream and self._broken is None:
            self.fail_all(error)
            self._wake_writer.set()  # let the writer see the stream is done
            self.client._node_failed(self.address)

    def fail_all(self, error: CacheUnavailable) -> None:
        self._broken = error
        for slot in list(self._waiting.values()):
            slot[1] = error
            slot[0].set()

    async def aclose(self) -> None:
        self.closed = True
        self.fail_all(CacheUnavailable(f"connection to {self.address} closed"))
        self._wake_writer.set()
        if self._stream is not None:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()


# -- the client --------------------------------------------------------------------------------


class Client:
    """An async client of a cluster (or of one node). See the module docstring.

    ``seeds``: one ``"host:port"`` string or several (a list). Use as
    ``async with Client(["127.0.0.1:7000", "127.0.0.1:7001"]) as c:``; entering raises
    ``CacheUnavailable`` when no seed answers. ``timeout_s`` bounds each attempt of a request
    (connecting included); ``password``: the nodes' client password (``--client-password-file``),
    sent first on every connection.
    """

    def __init__(
        self,
        seeds: str | Iterable[str],
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        password: bytes | str | None = None,
        topology_refresh_s: float = TOPOLOGY_REFRESH_S_DEFAULT,
        node_connections_max: int = NODE_CONNECTIONS_MAX_DEFAULT,
    ) -> None:
        seeds = (seeds,) if isinstance(seeds, str) else tuple(seeds)
        if not 1 <= len(seeds) <= SEEDS_MAX:
            raise InvalidRequest(f"give 1 to {SEEDS_MAX} seed addresses, got {len(seeds)}")
        for seed in seeds:
            parse_address(seed)
        if not (topology_refresh_s > 0 and timeout_s > 0 and node_connections_max >= 1):
            raise InvalidRequest("timeout_s, topology_refresh_s and node_connections_max > 0")
        self.seeds = seeds
        #: The node node-level calls (stats, members, ping, topology) go to by default: the
        #: seed that answered when the client opened.
        self.address = seeds[0]
        self.timeout_s = timeout_s
        self.topology_refresh_s = topology_refresh_s
        self.node_connections_max = node_connections_max
        self._password = None if password is None else _as_bytes(password, "password")
        self._connections: OrderedDict[str, _NodeConnection] = OrderedDict()
        self._slots = trio.Semaphore(IN_FLIGHT_MAX)
        self._route = Route(seeds[0])
        #: Address -> trio time until which it is skipped (bounded: one per node talked to).
        self._down_until: dict[str, float] = {}
        self._refresh_soon = trio.Event()
        self._random = random.Random()
        self._open = False
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Client:
        self._exit_stack = contextlib.AsyncExitStack()
        await self._exit_stack.enter_async_context(self._running())
        return self

    async def __aexit__(self, *exc_info) -> bool | None:
        return await self._exit_stack.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def _running(self):
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._open = True
                try:
                    await self._discover()
                    nursery.start_soon(self._keep_topology_fresh)
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The connections' tasks handle their own errors, so what arrives here came from
            # the caller's block: give it back as it was raised, not wrapped in a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._open = False
            for connection in list(self._connections.values()):
                await connection.aclose()
            self._connections.clear()

    # -- topology --------------------------------------------------------------------------

    @property
    def route(self) -> Route:
        """The current routing (placement table and member addresses)."""
        return self._route

    def owners(self, key: bytes | str) -> list[str]:
        """Native addresses of ``key``'s owners by the client's current topology, the primary
        first (where its requests go). No network traffic."""
        return self._route.owners(_as_bytes(key, "key"))

    async def _discover(self) -> None:
        """Learn the topology from the first seed that answers."""
        errors = []
        for seed in self.seeds:
            try:
                _, payload = await self._connection(seed).call(protocol.OP_TOPOLOGY, ())
                route = await build_route(payload, seed)
            except CacheUnavailable as error:
                errors.append(str(error))
                continue
            except (ServerError, ProtocolError) as error:
                # The node cannot tell (too old: unknown_op; a password the client lacks:
                # noauth, which the first request reports): the client talks to it alone.
                log.info("no topology from %s (%s): every request goes to it", seed, error)
                route = Route(seed)
            self._route = route
            self.address = seed
            return
        raise CacheUnavailable("no seed answered: " + "; ".join(errors))

    async def refresh_topology(self) -> bool:
        """Ask a node for the topology now and route by it; True if a node answered. Tries up
        to ``TOPOLOGY_SOURCES_MAX`` nodes: live members first (in random order), then seeds."""
        route = self._route
        now = trio.current_time()
        members = list(route.addresses.values()) if route.addresses else [route.home]
        self._random.shuffle(members)
        sources = [a for a in members if self._down_until.get(a, 0.0) <= now]
        sources += [seed for seed in self.seeds if seed not in sources]
        for source in sources[:TOPOLOGY_SOURCES_MAX]:
            try:
                _, payload = await self._connection(source).call(protocol.OP_TOPOLOGY, ())
                new = await build_route(payload, source)
            except (CacheUnavailable, ServerError, ProtocolError) as error:
                log.debug("topology from %s failed: %s", source, error)
                continue
            self._install(new)
            return True
        return False

    def _install(self, new: Route) -> None:
        old = self._route
        if new.epoch == old.epoch and new.addresses == old.addresses and new.home == old.home:
            return  # nothing changed: keep the table (and its identity)
        self._route = new
        # Connections to nodes gone from the topology are closed when idle (the bound on
        # connections would close them eventually; this frees them now).
        kept = set(new.addresses.values()) if new.addresses else set()
        kept |= {new.home, *self.seeds}
        for address in [a for a in self._connections if a not in kept]:
            if self._connections[address].idle:
                self._close_connection(address)
        self._down_until = {a: t for a, t in self._down_until.items() if a in kept}

    async def _keep_topology_fresh(self) -> None:
        while True:
            with trio.move_on_after(self.topology_refresh_s):
                await self._refresh_soon.wait()
            self._refresh_soon = trio.Event()  # a failure during this refresh asks again
            await self.refresh_topology()
            await trio.sleep(TOPOLOGY_REFRESH_GAP_S)

    def _node_failed(self, address: str) -> None:
        """``address`` could not be reached: skip it for a while and refresh the topology."""
        if self._open:
            self._down_until[address] = trio.current_time() + NODE_DOWN_S
            self._refresh_soon.set()

    # -- connections -----------------------------------------------------------------------

    def _connection(self, address: str) -> _NodeConnection:
        connections = self._connections
        connection = connections.get(address)
        if connection is not None:
            connections.move_to_end(address)  # most recently used last
            return connection
        if not self._open:
            raise CacheUnavailable("client is not open: use `async with Client(...)`")
        if len(connections) >= self.node_connections_max:
            idle = next((a for a, c in connections.items() if c.idle), None)
            if idle is None:
                raise CacheUnavailable(
                    f"all {len(connections)} connections are busy; no new one to {address}"
                )
            self._close_connection(idle)
        connection = connections[address] = _NodeConnection(self, address)
        return connection

    def _close_connection(self, address: str) -> None:
        connection = self._connections.pop(address)
        self._nursery.start_soon(connection.aclose)

    # -- routing ---------------------------------------------------------------------------

    def _candidates(self, key: bytes) -> Iterator[str]:
        """Where to send ``key``'s request, in order: its owners not marked down (the primary
        first), then one other node (which coordinates), then the node the topology came
        from, then the owners marked down (the mark may be stale): at most R + 2 nodes, each
        once. Lazy: the common request, served by the first, computes nothing more."""
        route = self._route
        if route.placement is None:
            yield route.home
            return
        owners = route.owners(key)
        down = self._down_until
        if down:
            now = trio.current_time()
            for address in [a for a, until in down.items() if until <= now]:
                del down[address]
        tried = []
        for address in owners:
            if address not in down:
                tried.append(address)
                yield address
        for address in (self._any_other_node(route, owners), route.home, *owners):
            if address is not None and address not in tried:
                tried.append(address)
                yield address

    def _any_other_node(self, route: Route, owners: list[str]) -> str | None:
        """A random member that owns nothing of this key and is not marked down."""
        addresses = route.addresses
        if len(addresses) <= len(owners):
            return None
        for _ in range(4):  # a few random picks; a small cluster is mostly owners
            address = self._random.choice(list(addresses.values()))
            if address not in owners and address not in self._down_until:
                return address
        return None

    async def _key_call(self, key: bytes, op: str, args: tuple) -> tuple[int, Any]:
        """Send ``op`` for ``key`` to its owner, failing over as ``_candidates`` orders."""
        error: CacheUnavailable | None = None
        for address in self._candidates(key):
            try:
                connection = self._connection(address)
            except CacheUnavailable as failure:  # no connection to spare: the next node
                error = failure
                continue
            try:
                return await connection.call(op, args)
            except CacheUnavailable as failure:  # connection refused, broken, timed out
                error = failure
                self._node_failed(address)
        raise error

    async def _node_call(self, node: str | None, op: str) -> Any:
        return (await self._connection(node or self.address).call(op, ()))[1]

    # -- operations ------------------------------------------------------------------------

    async def get(self, key: bytes | str, *, consistency: str | None = None) -> bytes | None:
        """The value of ``key``, or None when it is missing or expired."""
        key = _as_bytes(key, "key")
        status, payload = await self._key_call(key, protocol.OP_GET, (key, *_level(consistency)))
        return None if status == STATUS_NOT_FOUND else payload

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        ttl_s: float | None = None,
        *,
        consistency: str | None = None,
    ) -> None:
        """Write ``key`` = ``value``, expiring after ``ttl_s`` seconds when given."""
        key = _as_bytes(key, "key")
        args = (key, _as_bytes(value, "value"), _ttl_ms(ttl_s), *_level(consistency))
        await self._key_call(key, protocol.OP_PUT, args)

    async def delete(self, key: bytes | str, *, consistency: str | None = None) -> bool:
        """Remove ``key``; True if it held a live value."""
        key = _as_bytes(key, "key")
        status, _ = await self._key_call(key, protocol.OP_DEL, (key, *_level(consistency)))
        return status != STATUS_NOT_FOUND

    async def exists(self, key: bytes | str, *, consistency: str | None = None) -> bool:
        """Whether ``key`` holds a live value (touches no hit counter or recency)."""
        key = _as_bytes(key, "key")
        status, _ = await self._key_call(key, protocol.OP_EXISTS, (key, *_level(consistency)))
        return status != STATUS_NOT_FOUND

    async def expire(
        self, key: bytes | str, ttl_s: float | None, *, consistency: str | None = None
    ) -> bool:
        """Set ``key`` to expire after ``ttl_s`` seconds, or clear its TTL with None.
        True if the key holds a live value."""
        key = _as_bytes(key, "key")
        args = (key, _ttl_ms(ttl_s), *_level(consistency))
        status, _ = await self._key_call(key, protocol.OP_EXPIRE, args)
        return status != STATUS_NOT_FOUND

    async def ttl(self, key: bytes | str, *, consistency: str | None = None) -> float | None:
        """Seconds until ``key`` expires; ``math.inf`` without a TTL; None when missing."""
        key = _as_bytes(key, "key")
        status, payload = await self._key_call(key, protocol.OP_TTL, (key, *_level(consistency)))
        if status == STATUS_NOT_FOUND:
            return None
        return math.inf if payload < 0 else payload / 1000

    # Node-level calls: to ``node`` (a native address) or, by default, ``self.address``.

    async def stats(self, *, node: str | None = None) -> dict[str, Any]:
        """One node's counters (hits, misses, hit_ratio, keys, used_bytes, buckets_owned ...)."""
        return await self._node_call(node, protocol.OP_STATS)

    async def ping(self, *, node: str | None = None) -> None:
        await self._node_call(node, protocol.OP_PING)

    async def members(self, *, node: str | None = None) -> list[dict[str, Any]]:
        """A node's member list: one dict per record with ``id``, ``address``, ``state``
        (alive / suspect / dead / left), ``incarnation``, ``since_ms`` (wall-clock ms when
        the member entered that state), ``host_id``, ``zone`` and ``capacity_bytes``. Raises
        ``ServerError`` ("unavailable") when the node runs without membership."""
        return await self._node_call(node, protocol.OP_MEMBERS)

    async def topology(self, *, node: str | None = None) -> dict[str, Any]:
        """A node's topology as it sends it: ``epoch``, ``replicas``, ``self`` (its id) and
        ``members`` (``id``, ``address``, ``host_id``, ``zone``, ``capacity_bytes``: the members
        its placement table ranks)."""
        return await self._node_call(node, protocol.OP_TOPOLOGY)

    async def leave(self, *, node: str | None = None) -> str:
        """Ask a node to leave the cluster gracefully (hand off its data, announce the leave,
        exit): returns ``"leaving"`` at once; the node goes away afterwards (``gossipcache
        leave`` waits for that). Raises ``ServerError`` ("unavailable") when the node runs
        without membership."""
        return await self._node_call(node, protocol.OP_LEAVE)


class SyncClient:
    """The same API as ``Client`` for blocking code: a private Trio loop runs in a thread.

    ``with SyncClient(["127.0.0.1:7000", "127.0.0.1:7001"]) as c: c.put("k", "v"); c.get("k")``
    (one address works too). Safe to call from several threads; calls are pipelined.
    """

    def __init__(
        self,
        seeds: str | Iterable[str],
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        password: bytes | str | None = None,
        topology_refresh_s: float = TOPOLOGY_REFRESH_S_DEFAULT,
        node_connections_max: int = NODE_CONNECTIONS_MAX_DEFAULT,
    ) -> None:
        self._client = Client(
            seeds,
            timeout_s=timeout_s,
            password=password,
            topology_refresh_s=topology_refresh_s,
            node_connections_max=node_connections_max,
        )
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gossipcache-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def address(self) -> str:
        return self._client.address

    def _run(self) -> None:
        async def main() -> None:
            try:
                async with self._client:
                    self._token = trio.lowlevel.current_trio_token()
                    self._stop = trio.Event()
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as error:
                self._error = error
                self._ready.set()

        trio.run(main)

    def _call(self, method: Callable, *args: Any, **kwargs: Any) -> Any:
        if self._token is None:
            raise CacheUnavailable("client is closed")

        async def call() -> Any:
            return await method(*args, **kwargs)

        try:
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise CacheUnavailable("client is closed") from None

    def get(self, key, *, consistency=None):
        return self._call(self._client.get, key, consistency=consistency)

    def put(self, key, value, ttl_s=None, *, consistency=None):
        return self._call(self._client.put, key, value, ttl_s, consistency=consistency)

    def delete(self, key, *, consistency=None):
        return self._call(self._client.delete, key, consistency=consistency)

    def exists(self, key, *, consistency=None):
        return self._call(self._client.exists, key, consistency=consistency)

    def expire(self, key, ttl_s, *, consistency=None):
        return self._call(self._client.expire, key, ttl_s, consistency=consistency)

    def ttl(self, key, *, consistency=None):
        return self._call(self._client.ttl, key, consistency=consistency)

    def stats(self, *, node=None):
        return self._call(self._client.stats, node=node)

    def ping(self, *, node=None):
        return self._call(self._client.ping, node=node)

    def members(self, *, node=None):
        return self._call(self._client.members, node=node)

    def topology(self, *, node=None):
        return self._call(self._client.topology, node=node)

    def refresh_topology(self) -> bool:
        return self._call(self._client.refresh_topology)

    def owners(self, key) -> list[str]:
        """Native addresses of ``key``'s owners, the primary first (see ``Client.owners``)."""
        return self._client.owners(key)  # reads one immutable Route: safe from any thread

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            token, self._token = self._token, None
            trio.from_thread.run_sync(self._stop.set, trio_token=token)
            self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
