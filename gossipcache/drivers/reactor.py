"""Client connections served by one Trio task over a private epoll set.

Why not a Trio task per connection: each wake-up of a task costs a pass through Trio's scheduler
plus two ``epoll_ctl`` calls to register and unregister the socket, which at one request per
round trip (redis-benchmark ``-P 1``) cost more than parsing and answering the request. Here the
listeners and every client socket sit in one ``select.epoll`` object; the reactor task polls it
without blocking and serves every ready socket in one go (accept, ``recv``, parse, answer against
the store, ``send``), yields to other tasks with a plain checkpoint, and polls again; only when
nothing is ready does it sleep in Trio's own epoll, waiting for its epoll fd to become readable. Registrations stay in place
between requests, so the steady state is one ``epoll_wait`` per batch of ready sockets plus one
``recv`` and one ``send`` per request batch -- what Redis does.

Still one Trio loop, and still lock-free: the reactor is one task; nothing awaits between reading
a request and writing the store. Other tasks (metrics, membership, expiry) run whenever the
reactor yields, which it does after every pass over the ready sockets (at most
``READY_SOCKETS_PER_PASS_MAX`` of them).

Bounds: ``connections_max`` client connections (more are closed at accept, counted); one read
batch in flight per connection: when a reply cannot be written whole, the rest waits in the
connection's pending buffer and the reactor stops reading that socket until it drains
(back-pressure through TCP); requests are capped by the parsers' limits.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
from collections.abc import Callable

import trio

from ..errors import ProtocolError
from ..node.core import Node
from ..node.resp_session import RespDispatcher, RespSession
from ..wire.framing import FrameDecoder
from ..wire.native import ERROR_BAD_REQUEST, encode_response, error_response
from ..wire.resp import RespParser, encode_error
from . import peer as net

log = logging.getLogger("gossipcache.reactor")

#: Most ready sockets served per pass before the reactor yields to other tasks.
READY_SOCKETS_PER_PASS_MAX = 256
#: Connections accepted per listener per pass (the kernel's backlog holds the rest).
ACCEPTS_PER_PASS_MAX = 64

_READ = select.EPOLLIN | select.EPOLLRDHUP
_WRITE = select.EPOLLOUT
_ACCEPT_RETRY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

NATIVE = "native"
RESP = "resp"


class Connection:
    """One client connection's state: its socket, its parser, and what is left to write."""

    __slots__ = (
        "sock", "fd", "kind", "decoder", "parser", "session", "pending", "writing", "closing",
        "fresh",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, kind: str, client_id: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = kind
        self.decoder = FrameDecoder() if kind == NATIVE else None
        self.parser = RespParser() if kind == RESP else None
        self.session = RespSession(client_id) if kind == RESP else None
        self.pending: memoryview | None = None  # reply bytes not yet written
        self.writing = False  # registered for writability while ``pending`` drains
        self.closing = False  # close once ``pending`` is written
        self.fresh = True  # no byte read yet (a native connection may turn out to be a peer)


class ClientReactor:
    """Accepts and serves native and RESP clients of one node from a single task."""

    def __init__(
        self,
        node: Node,
        resp: RespDispatcher,
        wall_ms: Callable[[], int],
        on_peer_stream: Callable[[socket.socket, bytes], None] | None = None,
    ) -> None:
        self.node = node
        self.resp = resp
        self.wall_ms = wall_ms
        #: Called with a native connection whose first bytes are the membership preamble; the
        #: reactor forgets the socket and the callee owns it (``gossipcache.net``).
        self.on_peer_stream = on_peer_stream
        self._epoll = select.epoll()
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._connections: dict[int, Connection] = {}
        self._client_ids = 0

    def add_listener(self, listener: socket.socket, kind: str) -> None:
        listener.setblocking(False)
        self._listeners[listener.fileno()] = (listener, kind)
        self._epoll.register(listener.fileno(), select.EPOLLIN)

    async def run(self) -> None:
        """Serve until cancelled; then close every socket it owns."""
        epoll = self._epoll
        listeners = self._listeners
        connections = self._connections
        try:
            while True:
                ready = epoll.poll(0, READY_SOCKETS_PER_PASS_MAX)
                if not ready:
                    # Nothing to do: sleep in Trio's own epoll until a socket is ready.
                    await trio.lowlevel.wait_readable(epoll.fileno())
                    continue
                for fd, events in ready:
                    listener = listeners.get(fd)
                    if listener is not None:
                        self._accept(*listener)
                        continue
                    connection = connections.get(fd)
                    if connection is not None:
                        self._serve(connection, events)
                # Let the other tasks run, without the registration and the wake-up that
                # waiting on the epoll fd costs when more sockets are probably ready already.
                await trio.lowlevel.checkpoint()
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            for listener, _ in self._listeners.values():
                listener.close()
            epoll.close()

    # -- per socket -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, kind: str) -> None:
        metrics = self.node.metrics
        for _ in range(ACCEPTS_PER_PASS_MAX):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in _ACCEPT_RETRY_ERRNOS:  # out of descriptors: retry next pass
                    log.warning("accept failed: %s", error)
                    return
                raise
            if metrics.connections_open >= self.node.config.connections_max:
                metrics.connections_refused += 1
                sock.close()
                continue
            metrics.connections_accepted += 1
            metrics.connections_open += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client_ids += 1
            connection = Connection(sock, kind, self._client_ids)
            self._connections[connection.fd] = connection
            self._epoll.register(connection.fd, _READ)

    def _serve(self, connection: Connection, events: int) -> None:
        """Handle one readiness event; never raises (a failing connection is closed)."""
        try:
            if events & _WRITE:
                self._flush(connection)
            elif events & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
                data = connection.sock.recv(self.node.config.receive_size_bytes)
                if not data:
                    self._close(connection)
                    return
                if connection.fresh:
                    connection.fresh = False
                    if connection.kind == NATIVE and self._is_peer(connection, data):
                        return
                reply = self.process(connection, data)
                if reply:
                    # Usually the whole reply fits the socket buffer: one send, nothing kept.
                    try:
                        sent = connection.sock.send(reply)
                    except BlockingIOError:  # the kernel buffer is full: all of it waits
                        sent = 0
                    if sent < len(reply):
                        connection.pending = memoryview(reply)[sent:]
                        self._flush(connection)
                    elif connection.closing:
                        self._close(connection)
                elif connection.closing:
                    self._close(connection)
        except BlockingIOError:
            pass  # a spurious readiness report: wait for the next one
        except OSError:
            self._close(connection)  # the peer went away
        except Exception:
            self.node.metrics.internal_errors += 1
            log.exception("connection handler failed")
            self._close(connection)

    def process(self, connection: Connection, data: bytes) -> bytes:
        """Parse ``data`` and answer every complete request in it; returns the replies (maybe
        empty). Marks the connection ``closing`` after malformed input or QUIT. Pure with respect
        to sockets, so tests can fuzz it directly."""
        node = self.node
        metrics = node.metrics
        metrics.bytes_received += len(data)
        if connection.kind == RESP:
            try:
                commands = connection.parser.parse(data)
            except ProtocolError as error:
                # Commands complete before the bad one are lost with the connection, as in Redis.
                metrics.protocol_errors += 1
                connection.closing = True
                return encode_error(f"ERR {error}")
            if not commands:
                return b""
            reply = self.resp.handle(connection.session, commands, self.wall_ms())
            connection.closing = connection.session.closing
        else:
            try:
                bodies = connection.decoder.parse(data)
            except ProtocolError as error:
                # Framing is lost: say why (request id 0), then close.
                metrics.protocol_errors += 1
                connection.closing = True
                return encode_response(error_response(0, ERROR_BAD_REQUEST, str(error)))
            if not bodies:
                return b""
            reply = node.handle_native_frames(bodies, self.wall_ms())
        metrics.batches += 1
        metrics.bytes_sent += len(reply)
        return reply

    def _flush(self, connection: Connection) -> None:
        """Write what is pending; if the kernel's buffer is full, keep the rest and watch for
        writability instead of readability (back-pressure: no reading until it drains)."""
        pending = connection.pending
        while pending:
            try:
                sent = connection.sock.send(pending)
            except BlockingIOError:
                break
            pending = pending[sent:]
        if pending:
            connection.pending = pending
            if not connection.writing:
                connection.writing = True
                self._epoll.modify(connection.fd, _WRITE)
            return
        connection.pending = None
        if connection.writing:
            connection.writing = False
            self._epoll.modify(connection.fd, _READ)
        if connection.closing:
            self._close(connection)

    def _is_peer(self, connection: Connection, data: bytes) -> bool:
        """Hand a membership peer stream over to ``on_peer_stream``; True if it was one."""
        if self.on_peer_stream is None or not net.starts_like_preamble(data):
            return False
        self._forget(connection)
        self.on_peer_stream(connection.sock, data)
        return True

    def _forget(self, connection: Connection) -> None:
        del self._connections[connection.fd]
        self._epoll.unregister(connection.fd)
        self.node.metrics.connections_open -= 1

    def _close(self, connection: Connection) -> None:
        if self._connections.get(connection.fd) is connection:
            self._forget(connection)
        connection.sock.close()
