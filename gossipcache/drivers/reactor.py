"""Client and peer connections served by one Trio task over a private epoll set.

Why not a Trio task per connection: each wake-up of a task costs a pass through Trio's scheduler
plus two ``epoll_ctl`` calls to register and unregister the socket, which at one request per
round trip (redis-benchmark ``-P 1``) cost more than parsing and answering the request. Here the
listeners, every client socket and every incoming peer stream sit in one ``select.epoll`` object;
the reactor task polls it without blocking and serves every ready socket in one go (accept,
``recv``, hand the bytes to the connection's session or to the node core, ``send``), delivers
the commands the core completed meanwhile, yields to other tasks with a plain checkpoint, and
polls again. Only when nothing is ready does it sleep in Trio's own epoll, and never past the
core's next deadline: the reactor runs the core's timers (membership, expiry), so acks received,
replies sent and timers fired share one pass.

Still one Trio loop, and still lock-free: the reactor is one task; nothing awaits between reading
a request and writing the store. Other tasks (metrics, the UDP side of membership, outgoing peer
links) run whenever the reactor yields, after every pass over at most
``READY_SOCKETS_PER_PASS_MAX`` ready sockets.

Bounds: ``connections_max`` client connections (more are closed at accept, counted);
``PEER_INCOMING_MAX`` authenticated incoming peer streams, which close after
``PEER_INCOMING_IDLE_TIMEOUT_S`` of silence; a peer stream whose first read does not hold its
whole handshake waits in a small budget of its own (``PEER_HANDSHAKING_MAX``, at most
``PEER_HANDSHAKING_PER_SOURCE_MAX`` per source IP) and must finish within
``PEER_HANDSHAKE_TIMEOUT_S``, so keyless connections never take an authenticated peer's slot;
one read batch in flight per connection: when a reply cannot be written whole, the rest waits in
the connection's ``unsent`` buffer and the reactor stops reading that socket until it drains
(back-pressure through TCP); a session with too many commands pending stops being read too; the
parsers cap requests.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
from collections.abc import Callable

import trio

from ..node.core import NodeCore
from ..node.native_session import NativeSession, native_table
from ..node.resp_session import RespSession, resp_table
from ..sansio import Channel
from ..wire.peer import (
    PeerAuthenticator,
    PeerStreamError,
    PeerStreamReader,
    starts_like_preamble,
)

log = logging.getLogger("gossipcache.reactor")

#: Most ready sockets served per pass before the reactor yields to other tasks.
READY_SOCKETS_PER_PASS_MAX = 256
#: Connections accepted per listener per pass (the kernel's backlog holds the rest).
ACCEPTS_PER_PASS_MAX = 64
#: Authenticated incoming peer streams served at once; more are closed once authenticated. One
#: source IP may hold all of them: test clusters run every node on 127.0.0.1.
PEER_INCOMING_MAX = 1024
#: Incoming peer streams still in their handshake, held at once; more are closed on arrival. An
#: honest peer sends its whole handshake in one segment, which the first read authenticates
#: without taking one of these, so only split (slow or hostile) handshakes wait here.
PEER_HANDSHAKING_MAX = 64
#: Of those, the most one source IP may hold: a single attacker cannot take the whole budget.
PEER_HANDSHAKING_PER_SOURCE_MAX = 8
#: The preamble and the handshake must arrive within this long of the first byte, however
#: slowly they trickle in; the deadline is not extended by progress.
PEER_HANDSHAKE_TIMEOUT_S = 2.0
#: An authenticated peer stream silent this long is closed (its sender closes idle links after
#: 60 s).
PEER_INCOMING_IDLE_TIMEOUT_S = 120.0
#: How often incoming peer streams are checked against those two timeouts.
PEER_SWEEP_INTERVAL_S = 0.5
#: Bytes read per receive call on an incoming peer stream.
PEER_RECEIVE_SIZE_BYTES = 256 * 1024
#: How often client connections holding a partial request are checked against
#: ``partial_request_timeout_s``.
CLIENT_SWEEP_INTERVAL_S = 1.0
#: Out of descriptors at accept (EMFILE/ENFILE): stop accepting for this long, doubling on each
#: failure up to the max, instead of retrying on every pass (a spin that starves everyone).
ACCEPT_BACKOFF_S = 0.1
ACCEPT_BACKOFF_S_MAX = 2.0
#: Accept failures (and clients closed over the buffer budget) are logged at most once per
#: interval, with the count since the last line: an attacker must not be able to flood the log.
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0

_READ = select.EPOLLIN | select.EPOLLRDHUP
_WRITE = select.EPOLLOUT
_INPUT_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_ACCEPT_RETRY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

NATIVE = "native"
RESP = "resp"
PEER = "peer"


class ThrottledLog:
    """A warning logged at most once per interval, saying how many times it happened since the
    last line it wrote."""

    __slots__ = ("interval_ms", "_logged_ms", "_unlogged")

    def __init__(self, interval_s: float) -> None:
        self.interval_ms = int(interval_s * 1000)
        self._logged_ms: int | None = None
        self._unlogged = 0

    def warning(self, now_ms: int, message: str, *args: object) -> None:
        self._unlogged += 1
        if self._logged_ms is not None and now_ms - self._logged_ms < self.interval_ms:
            return
        log.warning(
            f"{message} [%d time(s) in the last %.0f s]",
            *args,
            self._unlogged,
            self.interval_ms / 1000,
        )
        self._logged_ms = now_ms
        self._unlogged = 0


class Connection:
    """One connection's socket, its session (clients) or stream reader (peers), and the bytes
    not yet written."""

    __slots__ = (
        "sock", "fd", "kind", "session", "peer", "unsent", "interest", "fresh", "deadline_ms",
        "held_bytes",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, kind: str, session) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = kind
        self.session = session  # RespSession / NativeSession; None for a peer stream
        self.peer: PeerStreamReader | None = None
        self.unsent: memoryview | None = None  # reply bytes not yet written
        self.interest = _READ  # what the epoll set watches for: _READ, _WRITE or 0
        self.fresh = True  # no byte read yet (a native connection may turn out to be a peer)
        # Peer streams: when the handshake or the idle time runs out. Clients: when a partial
        # request times out (``partial_request_timeout_s`` after its last byte).
        self.deadline_ms = 0
        #: Clients: bytes held for it (partial request + unsent replies), in the reactor's total.
        self.held_bytes = 0


class ClientReactor:
    """Accepts and serves the native and RESP clients and incoming peer streams of one node
    from a single task, and runs the node core's timers.

    ``peer_authenticator`` checks incoming peer streams' handshakes (required with
    ``serve_peers``). ``after_core_input()`` runs after every pass that fed the core peer payloads or ticked it:
    the node's peer driver sends the core's outbox there. ``wake()`` cuts an idle sleep short
    (another task fed the core, which may have moved its deadline or completed commands).
    """

    def __init__(
        self,
        core: NodeCore,
        *,
        serve_peers: bool = False,
        after_core_input: Callable[[], None] | None = None,
        peer_authenticator: PeerAuthenticator | None = None,
    ) -> None:
        if serve_peers and peer_authenticator is None:
            raise ValueError("serving peer streams needs a peer authenticator")
        self.core = core
        self.serve_peers = serve_peers
        self.peer_authenticator = peer_authenticator
        self.after_core_input = after_core_input
        self._epoll = select.epoll()
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._connections: dict[int, Connection] = {}
        self._peers: dict[int, Connection] = {}
        #: Peer streams still in their handshake: fd -> source IP (a subset of ``_peers``).
        self._handshaking: dict[int, str] = {}
        self._client_ids = 0
        self._resp_table = resp_table(core)
        self._native_table = native_table(core)
        self._idle_scope: trio.CancelScope | None = None
        self._core_fed = False
        self._next_sweep_ms = 0
        #: Counters of peer streams served here (shared with the peer driver's, in /metrics).
        self.peer_stats = core.membership_transport_stats
        #: Incoming peer streams served at once (lowered at start when descriptors are short).
        self.peer_incoming_max = PEER_INCOMING_MAX
        #: Client connections holding bytes (``Connection.held_bytes`` > 0); their total is
        #: ``metrics.client_buffers_bytes``, bounded by ``client_buffers_bytes_max``.
        self._holding: dict[int, Connection] = {}
        self._next_client_sweep_ms = 0
        # Accepting is paused (listeners out of the epoll set) until this instant; 0: it is not.
        self._accept_resume_ms = 0
        self._accept_backoff_s = ACCEPT_BACKOFF_S
        self._accept_failures_log = ThrottledLog(ACCEPT_ERROR_LOG_INTERVAL_S)
        self._over_budget_log = ThrottledLog(ACCEPT_ERROR_LOG_INTERVAL_S)

    def add_listener(self, listener: socket.socket, kind: str) -> None:
        listener.setblocking(False)
        self._listeners[listener.fileno()] = (listener, kind)
        self._epoll.register(listener.fileno(), select.EPOLLIN)

    def wake(self) -> None:
        """Cut the reactor's idle sleep short (safe to call from any task of the loop)."""
        scope = self._idle_scope
        if scope is not None:
            scope.cancel()

    @property
    def peer_connections(self) -> int:
        return len(self._peers)

    async def run(self) -> None:
        """Serve until cancelled; then close every socket it owns."""
        epoll = self._epoll
        listeners = self._listeners
        connections = self._connections
        core = self.core
        clock = core.clock
        try:
            while True:
                ready = epoll.poll(0, READY_SOCKETS_PER_PASS_MAX)
                now_ms = clock.monotonic_ms()
                if core.next_deadline_ms() <= now_ms:
                    core.tick(now_ms)
                    self._core_fed = True
                if not ready:
                    self._finish_pass()
                    # Nothing to do: sleep in Trio's own epoll until a socket is ready, the
                    # core's next deadline, or a ``wake``.
                    wake_ms = core.next_deadline_ms()
                    if self._accept_resume_ms:
                        wake_ms = min(wake_ms, self._accept_resume_ms)
                    with trio.move_on_at((wake_ms + 0.5) / 1000) as scope:
                        self._idle_scope = scope
                        await trio.lowlevel.wait_readable(epoll.fileno())
                    self._idle_scope = None
                    continue
                for fd, events in ready:
                    listener = listeners.get(fd)
                    if listener is not None:
                        self._accept(*listener)
                        continue
                    connection = connections.get(fd)
                    if connection is not None:
                        self._serve(connection, events)
                # Held by this frame, a connection closed in the pass (and its buffers, up to a
                # request's 16 MiB) would stay alive until the next ready socket.
                connection = None
                self._finish_pass()
                # Let the other tasks run, without the registration and the wake-up that
                # waiting on the epoll fd costs when more sockets are probably ready already.
                await trio.lowlevel.checkpoint()
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            for listener, _ in self._listeners.values():
                listener.close()
            epoll.close()

    def _finish_pass(self) -> None:
        """Deliver completed commands, let the peer driver send what the core produced, and
        check peer streams' deadlines once a second."""
        if self.core.has_completed:
            self._deliver_completions()
        # Client commands fan out to replicas too: their messages must leave in this pass, not
        # at the next tick or peer input (a quorum write waited ~30 ms for a gossip timer).
        replication = self.core.replication
        if self._core_fed or (replication is not None and replication.has_output):
            self._core_fed = False
            if self.after_core_input is not None:
                self.after_core_input()
            if self.core.has_completed:
                self._deliver_completions()
        if self._peers:
            now_ms = self.core.clock.monotonic_ms()
            if now_ms >= self._next_sweep_ms:
                self._next_sweep_ms = now_ms + int(PEER_SWEEP_INTERVAL_S * 1000)
                self._sweep_peers(now_ms)
        if self._holding or self._accept_resume_ms:
            now_ms = self.core.clock.monotonic_ms()
            if self._accept_resume_ms and now_ms >= self._accept_resume_ms:
                self._resume_accepting()
            if self._holding and now_ms >= self._next_client_sweep_ms:
                self._next_client_sweep_ms = now_ms + int(CLIENT_SWEEP_INTERVAL_S * 1000)
                self._sweep_partial_requests(now_ms)

    # -- clients ---------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, kind: str) -> None:
        metrics = self.core.metrics
        for _ in range(ACCEPTS_PER_PASS_MAX):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in _ACCEPT_RETRY_ERRNOS:  # out of descriptors: back off
                    self._pause_accepting(error)
                    return
                raise
            if metrics.connections_open >= self.core.config.connections_max:
                metrics.connections_refused += 1
                sock.close()
                continue
            self._accept_backoff_s = ACCEPT_BACKOFF_S  # descriptors are back: start over
            metrics.connections_accepted += 1
            metrics.connections_open += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._client_ids += 1
            if kind == RESP:
                session = RespSession(self.core, self._client_ids, self._resp_table)
            else:
                session = NativeSession(self.core, self._client_ids, self._native_table)
            connection = Connection(sock, kind, session)
            session.connection = connection
            self._connections[connection.fd] = connection
            self._epoll.register(connection.fd, _READ)

    def _pause_accepting(self, error: OSError) -> None:
        """Out of descriptors: take the listeners out of the epoll set for a back-off (the
        kernel's backlog holds new clients meanwhile) and log once per interval."""
        metrics = self.core.metrics
        metrics.accept_failures += 1
        now_ms = self.core.clock.monotonic_ms()
        if not self._accept_resume_ms:
            for fd in self._listeners:
                self._epoll.modify(fd, 0)
        self._accept_resume_ms = now_ms + int(self._accept_backoff_s * 1000)
        self._accept_backoff_s = min(self._accept_backoff_s * 2, ACCEPT_BACKOFF_S_MAX)
        self._accept_failures_log.warning(
            now_ms,
            "accept failed: %s; not accepting for %.1f s (open client connections: %d)",
            error,
            (self._accept_resume_ms - now_ms) / 1000,
            metrics.connections_open,
        )

    def _resume_accepting(self) -> None:
        self._accept_resume_ms = 0
        for fd in self._listeners:
            self._epoll.modify(fd, select.EPOLLIN)

    def _serve(self, connection: Connection, events: int) -> None:
        """Handle one readiness event; never raises (a failing connection is closed)."""
        try:
            if events & _WRITE:
                session = connection.session
                if connection.unsent is None and (session.resumable or session.has_ready):
                    # Replies drained: the completed replies and the requests the reply bound
                    # held back.
                    self._write(connection, session.resume())
                else:
                    self._flush(connection)
                read = False
            elif events & _INPUT_EVENTS:
                if connection.kind == PEER:
                    self._serve_peer(connection)
                    return
                data = connection.sock.recv(self.core.config.receive_size_bytes)
                if not data:
                    self._close(connection)
                    return
                if connection.fresh:
                    connection.fresh = False
                    if connection.kind == NATIVE and self._become_peer(connection, data):
                        return
                self._write(connection, self.process(connection, data))
                read = True
            else:
                return
            session = connection.session
            if session.input_parser.holding or connection.unsent or connection.held_bytes:
                held = session.input_bytes
                if connection.unsent is not None:
                    held += len(connection.unsent)
                self._account(connection, held, read)
        except BlockingIOError:
            pass  # a spurious readiness report: wait for the next one
        except OSError:
            self._close(connection)  # the peer went away
        except Exception:
            self.core.metrics.internal_errors += 1
            log.exception("connection handler failed")
            self._close(connection)

    def process(self, connection: Connection, data: bytes) -> bytes:
        """Hand ``data`` to the connection's session; returns the replies it can write now
        (maybe empty). Pure with respect to sockets, so tests can fuzz it directly."""
        metrics = self.core.metrics
        metrics.bytes_received += len(data)
        reply = connection.session.receive(data)
        if reply:
            metrics.batches += 1
        return reply

    def _write(self, connection: Connection, reply: bytes) -> None:
        """Send ``reply`` (after anything unsent), then settle what to watch the socket for."""
        if reply:
            self.core.metrics.bytes_sent += len(reply)
            if connection.unsent is None:
                # Usually the whole reply fits the socket buffer: one send, nothing kept.
                try:
                    sent = connection.sock.send(reply)
                except BlockingIOError:  # the kernel buffer is full: all of it waits
                    sent = 0
                if sent < len(reply):
                    connection.unsent = memoryview(reply)[sent:]
            else:
                connection.unsent = memoryview(bytes(connection.unsent) + reply)
        if connection.unsent is not None:
            self._flush(connection)
        else:
            self._settle(connection)

    def _flush(self, connection: Connection) -> None:
        """Write what is unsent; if the kernel's buffer is full, keep the rest and watch for
        writability instead of readability (back-pressure: no reading until it drains)."""
        unsent = connection.unsent
        while unsent:
            try:
                sent = connection.sock.send(unsent)
            except BlockingIOError:
                break
            unsent = unsent[sent:]
        connection.unsent = unsent if unsent else None
        self._settle(connection)

    def _settle(self, connection: Connection) -> None:
        """Watch the socket for writability while bytes are unsent, for readability while the
        session wants input, for nothing while it waits on pending commands; close it once a
        closing session has written everything, the replies to its pending commands included."""
        session = connection.session
        if connection.unsent is not None:
            interest = _WRITE
        elif session.closing:
            if not session.pending_count and not session.replies_held:
                self._close(connection)  # everything answered before QUIT / bad input is written
                return
            interest = _WRITE if session.has_ready else 0
        elif session.waiting or session.replies_held:
            # Parsed requests wait for a bound, or completed replies for the socket: once the
            # bounds allow, the socket is writable at once and ``_serve`` resumes on the next
            # pass.
            interest = _WRITE if session.resumable or session.has_ready else 0
        else:
            interest = _READ
        if interest != connection.interest:
            connection.interest = interest
            self._epoll.modify(connection.fd, interest)

    def _deliver_completions(self) -> None:
        """Route every command the core completed to its session and write what that makes
        ready. A session whose connection closed is skipped: its replies are dropped."""
        touched = {}
        for pending in self.core.take_completed():
            session = pending.reply_to
            if session is None or session.closed:
                continue
            session.completed(pending)
            touched[id(session)] = session
        for session in touched.values():
            connection = self._connection_of(session)
            if connection is None:
                continue
            try:
                self._write(connection, session.take_ready())
            except OSError:
                self._close(connection)
                continue
            if session.input_parser.holding or connection.unsent or connection.held_bytes:
                held = session.input_bytes
                if connection.unsent is not None:
                    held += len(connection.unsent)
                self._account(connection, held, False)

    def _connection_of(self, session) -> Connection | None:
        connection = session.connection
        if connection is not None and self._connections.get(connection.fd) is connection:
            return connection
        return None

    def _account(self, connection: Connection, held: int, read: bool) -> None:
        """Record that ``connection`` (a client, or an incoming peer stream with a partial
        frame) holds ``held`` bytes; after a client read that left a partial
        request, restart its timeout. Over ``client_buffers_bytes_max`` in total, close the
        connections holding the most until under it (Redis' client eviction)."""
        if self._connections.get(connection.fd) is not connection:
            return  # closed while being served
        metrics = self.core.metrics
        metrics.client_buffers_bytes += held - connection.held_bytes
        connection.held_bytes = held
        if held:
            self._holding[connection.fd] = connection
            if read and connection.session.input_bytes:
                connection.deadline_ms = self._deadline_ms(
                    self.core.config.partial_request_timeout_s
                )
        else:
            self._holding.pop(connection.fd, None)
        budget = self.core.config.client_buffers_bytes_max
        while metrics.client_buffers_bytes > budget and self._holding:
            # Rare (only over budget) and bounded by the connections holding bytes.
            largest = max(self._holding.values(), key=_held_bytes_of)
            metrics.clients_closed_over_budget += 1
            self._over_budget_log.warning(
                self.core.clock.monotonic_ms(),
                "client buffers at %d bytes, over the %d-byte budget: closed a %s connection"
                " holding %d bytes",
                metrics.client_buffers_bytes,
                budget,
                largest.kind,
                largest.held_bytes,
            )
            self._close(largest)

    def _sweep_partial_requests(self, now_ms: int) -> None:
        """Close clients silent for ``partial_request_timeout_s`` in the middle of a request.
        A connection the reactor is not reading (back-pressure) is not the client's fault: its
        clock restarts."""
        timeout_ms = int(self.core.config.partial_request_timeout_s * 1000)
        for connection in list(self._holding.values()):
            if connection.session is None or not connection.session.input_bytes:
                continue  # a peer stream (its own timeouts apply), or only replies held
            if connection.interest != _READ:
                connection.deadline_ms = now_ms + timeout_ms
            elif connection.deadline_ms <= now_ms:
                self.core.metrics.clients_closed_partial_timeout += 1
                self._close(connection)

    # -- peers -----------------------------------------------------------------------------------

    def _become_peer(self, connection: Connection, data: bytes) -> bool:
        """Turn a native connection whose first bytes are the peer preamble into a peer
        stream; True if it was one. A stream whose first read completes its handshake is
        authenticated at once; one still handshaking after it takes a handshaking slot (if
        the global and per-source budgets allow) and must finish in time."""
        if not self.serve_peers or not starts_like_preamble(data):
            return False
        self.core.metrics.connections_open -= 1  # a peer is not a client
        connection.session.close()
        connection.session = None
        connection.kind = PEER
        connection.peer = PeerStreamReader(self.peer_authenticator)
        connection.deadline_ms = self._deadline_ms(PEER_HANDSHAKE_TIMEOUT_S)
        self._peers[connection.fd] = connection
        self._feed_peer(connection, data)
        if self._peers.get(connection.fd) is not connection or not connection.peer.handshaking:
            return True  # dropped, or authenticated by its first read
        try:
            source_ip = connection.sock.getpeername()[0]
        except OSError:
            self._close(connection)  # already gone
            return True
        if len(self._handshaking) >= PEER_HANDSHAKING_MAX:
            reason = "handshakes_full"
        elif (
            sum(1 for ip in self._handshaking.values() if ip == source_ip)
            >= PEER_HANDSHAKING_PER_SOURCE_MAX
        ):
            reason = "source_handshakes_full"
        else:
            self._handshaking[connection.fd] = source_ip
            self._count("peer_incoming_accepted")
            return True
        self._count(f"peer_dropped_{reason}")
        self._close(connection)
        return True

    def _serve_peer(self, connection: Connection) -> None:
        data = connection.sock.recv(PEER_RECEIVE_SIZE_BYTES)
        if not data:
            self._close(connection)
            return
        self._feed_peer(connection, data)
        # A partial peer frame counts in the same budget as clients' buffers.
        held = connection.peer.buffered_bytes
        if held or connection.held_bytes:
            self._account(connection, held, False)

    def _feed_peer(self, connection: Connection, data: bytes) -> None:
        reader = connection.peer
        was_handshaking = reader.handshaking
        try:
            payloads = reader.feed(data, self.core.clock.wall_ms())
        except PeerStreamError as error:
            self._count(f"peer_dropped_{error.reason}")
            self._close(connection)
            return
        if reader.handshaking:
            return
        if was_handshaking and not self._admit_peer(connection):
            return
        connection.deadline_ms = self._deadline_ms(PEER_INCOMING_IDLE_TIMEOUT_S)
        if payloads:
            core = self.core
            now_ms = core.clock.monotonic_ms()
            source = reader.source
            for payload in payloads:
                core.handle(source, Channel.STREAM, payload, now_ms)
            self._count("stream_frames_received", len(payloads))
            self._core_fed = True

    def _admit_peer(self, connection: Connection) -> bool:
        """A stream that just passed its handshake leaves the handshaking budget and takes one
        of the ``PEER_INCOMING_MAX`` slots, or is closed when they are all taken."""
        held = self._handshaking.pop(connection.fd, None) is not None
        if len(self._peers) - len(self._handshaking) > self.peer_incoming_max:
            self._count("peer_incoming_refused")
            self._close(connection)
            return False
        if not held:  # authenticated by its first read: never counted as accepted before
            self._count("peer_incoming_accepted")
        self._count("peer_incoming_authenticated")
        return True

    def _deadline_ms(self, timeout_s: float) -> int:
        return self.core.clock.monotonic_ms() + int(timeout_s * 1000)

    def _sweep_peers(self, now_ms: int) -> None:
        for connection in list(self._peers.values()):
            if connection.deadline_ms <= now_ms:
                handshaking = connection.peer.handshaking
                self._count(
                    "peer_dropped_handshake_timeout" if handshaking else "peer_incoming_idle_closed"
                )
                self._close(connection)

    def _count(self, name: str, amount: int = 1) -> None:
        self.peer_stats[name] = self.peer_stats.get(name, 0) + amount

    # -- both --------------------------------------------------------------------------------------

    def _close(self, connection: Connection) -> None:
        if self._connections.get(connection.fd) is connection:
            del self._connections[connection.fd]
            self._epoll.unregister(connection.fd)
            if connection.kind == PEER:
                self._peers.pop(connection.fd, None)
                self._handshaking.pop(connection.fd, None)
            else:
                self.core.metrics.connections_open -= 1
            if connection.held_bytes:
                self.core.metrics.client_buffers_bytes -= connection.held_bytes
                connection.held_bytes = 0
                self._holding.pop(connection.fd, None)
        if connection.session is not None:
            connection.session.close()
        connection.sock.close()


def _held_bytes_of(connection: Connection) -> int:
    return connection.held_bytes
