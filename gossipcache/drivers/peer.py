"""The Trio driver of a sans-IO core (``gossipcache.sansio``): sockets and timers, nothing else.

One :class:`PeerDriver` serves one core. It owns a UDP socket bound to the node's host and the
*same port number* as the node's native TCP port, so a member's advertised ``"host:port"`` names
both its datagram and its stream endpoint.

- ``DATAGRAM`` payloads travel one per UDP datagram. Received datagrams over
  ``DATAGRAM_SIZE_BYTES_MAX`` are dropped; the sender is the datagram's source address (the peer
  sends from its bound socket, so that is its advertised address).
- ``STREAM`` payloads travel over TCP to the peer's native port. A peer connection starts with
  ``PREAMBLE``, then carries frames in the native protocol's framing (u32 big-endian length L,
  then L bytes: version byte + payload; L <= ``PEER_FRAME_SIZE_BYTES_MAX``). The first frame is
  the handshake, signed with the cluster key by ``authenticator`` (the sender's advertised
  address, the receiver's, the wall-clock time and a fresh random nonce); every later frame is
  one payload (``gossipcache.wire.peer``). In a node, the client reactor serves incoming peer
  connections in its own pass, with the handshaking budgets per source IP;
  :meth:`PeerDriver.handle_peer_stream` serves them for a core driven on its own (tests), with
  the same handshake check and timeout but only the overall ``PEER_INCOMING_MAX`` bound.
- Outgoing streams: one connection per peer, opened on demand (``CONNECT_TIMEOUT_S``), closed
  after ``PEER_IDLE_TIMEOUT_S`` without traffic, at most ``PEER_CONNECTIONS_MAX`` at once, each
  with a queue bounded in frames and bytes. A connection that cannot be opened, breaks, stalls
  (``PEER_SEND_TIMEOUT_S``) or overflows its queue is reported to the core with
  ``stream_failed(peer, now_ms)``. Connections are one-way: a peer answers over its own.
- Timers (with ``run_timers``): one task sleeps until ``core.next_deadline_ms()`` and calls
  ``tick``; every input re-arms it, because handling a payload can move the deadline earlier.
  In a node the client reactor runs the core's timers instead, and ``after_step`` wakes it.

After every call into the core the driver sends the outbox, then runs ``after_step()``. A bad packet or a failing peer never stops the node: the core
drops and counts bad input, the driver counts what it drops and catches ``OSError`` per send.
Time is ``trio.current_time()`` in integer milliseconds (monotonic; virtual under a MockClock).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import secrets
import socket as _stdlib_socket
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ..sansio import Channel, Outgoing, SansIOCore
from ..wire.framing import frame
from ..wire.peer import (
    HANDSHAKE_NONCE_SIZE_BYTES,
    PEER_FRAME_SIZE_BYTES_MAX,
    PeerAuthenticator,
    PeerStreamError,
    PeerStreamReader,
    split_address,
)
from .clock import TrioClock

log = logging.getLogger("gossipcache.net")

#: Received datagrams longer than this are dropped (and counted) without reaching the core.
DATAGRAM_SIZE_BYTES_MAX = 64 * 1024
#: Outgoing peer connections open at once; a payload for one more peer is dropped and reported.
PEER_CONNECTIONS_MAX = 256
#: Incoming peer connections served at once; more are closed on arrival.
PEER_INCOMING_MAX = 1024
#: Bound of one outgoing connection's queue, in frames and in bytes. Replication sends one frame
#: per peer per loop pass (many operations each), so a busy node queues many small frames.
PEER_QUEUE_FRAMES_MAX = 4096
PEER_QUEUE_BYTES_MAX = 32 * 1024 * 1024
#: Datagrams waiting for the socket; beyond this new ones are dropped (UDP may lose them anyway).
DATAGRAM_QUEUE_MAX = 1024
#: Opening a peer connection (resolve + TCP handshake) gives up after this long.
CONNECT_TIMEOUT_S = 2.0
#: A write that does not complete within this long means the peer stopped reading: fail it.
PEER_SEND_TIMEOUT_S = 10.0
#: After a failed connect to a peer, payloads for it fail at once (reported to the core as a
#: failed stream) for a back-off that starts here and doubles per failure up to the maximum;
#: a successful connection resets it. Without it every payload for a dead peer would start a
#: connect attempt of its own.
RECONNECT_BACKOFF_S_MIN = 0.1
RECONNECT_BACKOFF_S_MAX = 5.0
#: An outgoing connection with nothing to send for this long is closed (reopened on demand).
PEER_IDLE_TIMEOUT_S = 60.0
#: An incoming connection silent this long is closed. Longer than the sender's idle timeout, so
#: normally the sender closes first and nobody sees a spurious failure.
PEER_INCOMING_IDLE_TIMEOUT_S = 2 * PEER_IDLE_TIMEOUT_S
#: The preamble and the handshake must arrive within this long of connecting, however slowly
#: their bytes trickle in (an honest peer sends them in one segment).
PEER_HANDSHAKE_TIMEOUT_S = 2.0
#: Bytes read per receive call on an incoming peer connection.
PEER_RECEIVE_SIZE_BYTES = 256 * 1024
#: With port 0, tries to find a port number free for both TCP and UDP.
BIND_ATTEMPTS_MAX = 32
#: ``stop`` (graceful leave on shutdown) waits at most this long for output to be written.
STOP_WAIT_S = 1.0
#: ``stop`` polls for drained queues this often (only while shutting down).
DRAIN_POLL_S = 0.01
#: Rounds of ``stream_failed`` feedback handled in one step (each may produce more output).
STEP_ROUNDS_MAX = 4


_CLOCK = TrioClock()
#: The driver's clock: Trio's, in integer milliseconds (virtual under a MockClock).
monotonic_ms = _CLOCK.monotonic_ms
#: The wall clock that stamps and checks peer stream handshakes.
wall_ms = _CLOCK.wall_ms


async def bind_tcp_and_udp(
    host: str,
    port: int,
    listen: Callable[[str, int], Awaitable[trio.socket.SocketType]],
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A TCP listener (made by ``listen``) and a UDP socket bound to the same port number.

    With ``port`` 0 the TCP port is chosen by the kernel first; if that number is taken for UDP,
    both are closed and the pair is tried again (at most ``BIND_ATTEMPTS_MAX`` times).
    """
    for _ in range(BIND_ATTEMPTS_MAX):
        tcp = await listen(host, port)
        bound_port = tcp.getsockname()[1]
        udp = trio.socket.socket(_stdlib_socket.AF_INET, _stdlib_socket.SOCK_DGRAM)
        try:
            await udp.bind((host, bound_port))
        except OSError as error:
            udp.close()
            tcp.close()
            if port != 0 or error.errno != errno.EADDRINUSE:
                raise
            continue
        return tcp, udp
    raise OSError(errno.EADDRINUSE, f"no port free for both TCP and UDP on {host}")


class _Link:
    """One outgoing peer connection's queue (the connection itself lives in its task)."""

    __slots__ = ("peer", "frames", "size_bytes", "wake", "sending")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.frames: deque[bytes] = deque()
        self.size_bytes = 0
        self.wake = trio.Event()
        self.sending = False

    def push(self, frame: bytes) -> bool:
        """Queue ``frame``; False (nothing queued) when a bound would be exceeded."""
        if (
            len(self.frames) >= PEER_QUEUE_FRAMES_MAX
            or self.size_bytes + len(frame) > PEER_QUEUE_BYTES_MAX
        ):
            return False
        self.frames.append(frame)
        self.size_bytes += len(frame)
        self.wake.set()
        return True

    def pop_all(self) -> bytes:
        data = b"".join(self.frames)
        self.frames.clear()
        self.size_bytes = 0
        return data


class PeerDriver:
    """Runs ``core`` over a UDP socket and peer TCP connections; see the module docstring.

    ``address`` is this node's advertised ``"host:port"``; ``udp_sock`` is bound to it.
    ``authenticator`` (for the same address) signs outgoing and checks incoming stream handshakes.
    ``after_step()`` runs after every call into the core, once its outbox is queued.
    ``stats`` (a dict, shared with whoever renders metrics) receives the driver's counters.
    """

    def __init__(
        self,
        core: SansIOCore,
        address: str,
        udp_sock: trio.socket.SocketType,
        *,
        authenticator: PeerAuthenticator,
        after_step: Callable[[], None] | None = None,
        run_timers: bool = True,
        stats: dict[str, int] | None = None,
    ) -> None:
        split_address(address)  # fail early on a bad advertised address
        if authenticator.address != address:
            raise ValueError(f"authenticator is for {authenticator.address}, not {address}")
        self.authenticator = authenticator
        self.core = core
        self.address = address
        self.stats: dict[str, int] = stats if stats is not None else {}
        self._udp = udp_sock
        self._after_step = after_step
        self._run_timers_enabled = run_timers
        self._links: dict[str, _Link] = {}
        #: Outgoing links open at once (lowered at start when descriptors are short).
        self.links_max = PEER_CONNECTIONS_MAX
        self._incoming = 0
        self._failed_peers: list[str] = []
        #: peer -> (no connect attempt before this trio time, the back-off that set it).
        self._backoff: dict[str, tuple[float, float]] = {}
        self._datagrams_out, self._datagrams_queue = trio.open_memory_channel[tuple[str, bytes]](
            DATAGRAM_QUEUE_MAX
        )
        self._rearm = trio.Event()
        self._nursery: trio.Nursery | None = None

    # -- public -----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` once the core's first output is queued."""
        with self._udp:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_datagrams)
                nursery.start_soon(self._send_datagrams)
                if self._run_timers_enabled:
                    nursery.start_soon(self._run_timers)
                self.step(None)  # the core's initial output (a join, an announcement)
                task_status.started()

    def step(self, action: Callable[[int], None] | None) -> None:
        """Call ``action(now_ms)`` on the core (None: nothing), send the outbox, then run
        ``after_step``. Synchronous: nothing else touches the core meanwhile. A bug in the core is
        logged and counted; it never takes the node down."""
        now_ms = monotonic_ms()
        try:
            if action is not None:
                action(now_ms)
            for _ in range(STEP_ROUNDS_MAX):
                self._dispatch(self.core.take_outbox())
                if not self._failed_peers:
                    break
                failed, self._failed_peers = self._failed_peers, []
                for peer in dict.fromkeys(failed):
                    self.core.stream_failed(peer, now_ms)
        except Exception:
            self._count("core_errors")
            log.exception("core failed while handling input")
        self._rearm.set()
        if self._after_step is not None:
            self._after_step()

    def flush(self) -> None:
        """Send what the core put in its outbox meanwhile (the reactor calls this after it fed
        the core peer payloads or ran its timers)."""
        self.step(None)

    async def handle_peer_stream(self, sock: trio.socket.SocketType, first_bytes: bytes) -> None:
        """Serve one incoming peer connection whose first bytes (already read from ``sock``,
        possibly none) are ``first_bytes``. Returns when it closes, breaks, idles or misbehaves;
        the caller closes ``sock``."""
        if self._incoming >= PEER_INCOMING_MAX:
            self._count("peer_incoming_refused")
            return
        self._incoming += 1
        self._count("peer_incoming_accepted")
        try:
            await self._read_peer_stream(sock, bytes(first_bytes))
        except OSError:
            self._count("peer_incoming_broken")
        finally:
            self._incoming -= 1

    async def stop(self, last_action: Callable[[int], None] | None, timeout_s: float) -> None:
        """Run ``last_action`` (e.g. the core's ``leave``), then wait up to ``timeout_s`` for the
        queued datagrams and stream frames to be written. The caller cancels the driver after."""
        self.step(last_action)
        with trio.move_on_after(timeout_s):
            while self._datagrams_queue.statistics().current_buffer_used or any(
                link.frames or link.sending for link in self._links.values()
            ):
                await trio.sleep(DRAIN_POLL_S)
            # The datagram sender may still hold the last one it took off the queue.
            await trio.sleep(DRAIN_POLL_S)

    @property
    def outgoing_connections(self) -> int:
        return len(self._links)

    @property
    def incoming_connections(self) -> int:
        return self._incoming

    # -- output -----------------------------------------------------------------------------

    def _dispatch(self, outbox: list[Outgoing]) -> None:
        for destination, channel, payload in outbox:
            if channel is Channel.DATAGRAM:
                if len(payload) > DATAGRAM_SIZE_BYTES_MAX:
                    self._count("datagrams_dropped_too_large")
                    continue
                try:
                    self._datagrams_out.send_nowait((destination, payload))
                except trio.WouldBlock:
                    self._count("datagrams_dropped_queue_full")
            else:
                self._queue_stream(destination, payload)

    def _queue_stream(self, peer: str, payload: bytes) -> None:
        if len(payload) + 1 > PEER_FRAME_SIZE_BYTES_MAX:
            self._count("stream_dropped_too_large")
            self._failed_peers.append(peer)
            return
        link = self._links.get(peer)
        if link is None:
            backoff = self._backoff.get(peer)
            if backoff is not None and trio.current_time() < backoff[0]:
                self._count("stream_dropped_backoff")
                self._failed_peers.append(peer)
                return
            if len(self._links) >= self.links_max or self._nursery is None:
                self._count("stream_dropped_connections_full")
                self._failed_peers.append(peer)
                return
            link = self._links[peer] = _Link(peer)
            self._nursery.start_soon(self._run_link, link)
        if not link.push(frame(payload, PEER_FRAME_SIZE_BYTES_MAX)):
            self._count("stream_dropped_queue_full")
            self._failed_peers.append(peer)

    async def _send_datagrams(self) -> None:
        async for destination, payload in self._datagrams_queue:
            try:
                await self._udp.sendto(payload, split_address(destination))
                self._count("datagrams_sent")
            except (OSError, ValueError):
                # Unreachable, unresolvable, no buffer space: UDP may lose it anyway.
                self._count("datagram_send_errors")

    async def _run_link(self, link: _Link) -> None:
        """Open the connection to ``link.peer``, write its queue until idle, then retire it."""
        try:
            host, port = split_address(link.peer)
            # Stamped when the link opens: a handshake is only accepted close to that time.
            opening = self.authenticator.opening(
                link.peer, wall_ms(), secrets.token_bytes(HANDSHAKE_NONCE_SIZE_BYTES)
            )
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, ValueError, trio.TooSlowError):
            previous = self._backoff.get(link.peer)
            delay_s = (
                RECONNECT_BACKOFF_S_MIN
                if previous is None
                else min(previous[1] * 2, RECONNECT_BACKOFF_S_MAX)
            )
            if len(self._backoff) < PEER_INCOMING_MAX:  # bounded like the peers themselves
                self._backoff[link.peer] = (trio.current_time() + delay_s, delay_s)
            self._link_failed(link, "peer_connect_failed")
            return
        self._backoff.pop(link.peer, None)
        self._count("peer_connections_opened")
        async with stream:
            if await self._serve_link(stream, link, opening):
                return  # retired when idle
        self._link_failed(link, "peer_connections_broken")

    async def _serve_link(self, stream: trio.SocketStream, link: _Link, opening: bytes) -> bool:
        """Write until idle (True) or until the connection breaks (False)."""
        broken = False

        async def watch_for_close(cancel_scope: trio.CancelScope) -> None:
            # The peer never writes on our connection: any return means it closed or broke.
            nonlocal broken
            with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.receive_some(1)
            broken = True
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_for_close, nursery.cancel_scope)
            try:
                await self._write_link(stream, link, opening)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                broken = True
            nursery.cancel_scope.cancel()
        return not broken

    async def _write_link(self, stream: trio.SocketStream, link: _Link, opening: bytes) -> None:
        data = opening
        while True:
            link.sending = True
            with trio.fail_after(PEER_SEND_TIMEOUT_S):
                await stream.send_all(data)
            link.sending = False
            if not link.frames:
                link.wake = trio.Event()
                with trio.move_on_after(PEER_IDLE_TIMEOUT_S):
                    await link.wake.wait()
                if not link.frames:
                    # Retire now, synchronously: a payload queued after this opens a new link.
                    self._links.pop(link.peer, None)
                    self._count("peer_connections_idle_closed")
                    return
            data = link.pop_all()

    def _link_failed(self, link: _Link, counter: str) -> None:
        self._count(counter)
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
        link.frames.clear()
        self.step(functools.partial(self.core.stream_failed, link.peer))

    # -- input ------------------------------------------------------------------------------

    async def _receive_datagrams(self) -> None:
        handle = self.core.handle
        while True:
            try:
                data, sender = await self._udp.recvfrom(DATAGRAM_SIZE_BYTES_MAX + 1)
            except OSError:
                # Some platforms surface ICMP errors of earlier sends here; keep receiving.
                self._count("datagram_receive_errors")
                await trio.lowlevel.checkpoint()
                continue
            if len(data) > DATAGRAM_SIZE_BYTES_MAX:
                self._count("datagrams_dropped_too_large")
                continue
            self._count("datagrams_received")
            self.step(functools.partial(handle, f"{sender[0]}:{sender[1]}", Channel.DATAGRAM, data))

    async def _read_peer_stream(self, sock: trio.socket.SocketType, received: bytes) -> None:
        reader = PeerStreamReader(self.authenticator)
        handshake_deadline = trio.current_time() + PEER_HANDSHAKE_TIMEOUT_S
        handle = self.core.handle
        data = received
        while True:
            try:
                payloads = reader.feed(data, wall_ms())
            except PeerStreamError as error:
                self._count(f"peer_dropped_{error.reason}")
                return
            for payload in payloads:
                self._count("stream_frames_received")
                self.step(functools.partial(handle, reader.source, Channel.STREAM, payload))
            deadline = (
                handshake_deadline
                if reader.handshaking
                else trio.current_time() + PEER_INCOMING_IDLE_TIMEOUT_S
            )
            data = b""
            with trio.move_on_at(deadline):
                data = await sock.recv(PEER_RECEIVE_SIZE_BYTES)
                if not data:
                    return
            if not data:
                self._count(
                    "peer_dropped_handshake_timeout"
                    if reader.handshaking
                    else "peer_incoming_idle_closed"
                )
                return

    # -- timers -----------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        core = self.core
        last_tick_ms = -1
        while True:
            self._rearm = trio.Event()
            deadline_ms = core.next_deadline_ms()
            if deadline_ms is None:
                wake_s = math.inf
            else:
                # Never twice in one millisecond: a core whose deadline stays in the past must
                # not spin the loop. +0.5 ms: wake once monotonic_ms() (a floor) has reached it.
                wake_s = (max(deadline_ms, last_tick_ms + 1) + 0.5) / 1000
            with trio.move_on_at(wake_s):
                await self._rearm.wait()
                continue  # new input may have moved the deadline: read it again
            last_tick_ms = monotonic_ms()
            self.step(core.tick)

    def _count(self, name: str, amount: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + amount
