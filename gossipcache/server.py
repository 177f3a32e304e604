"""The Trio driver of a node: it moves bytes between sockets and ``gossipcache.node``.

One process, one Trio loop, one nursery with a child task per listener, per connection and per
timer. No task awaits between reading and writing the store: handlers run whole between two
checkpoints, so no lock is needed anywhere.

The data path uses raw ``trio.socket`` sockets rather than ``trio.SocketStream``: one ``recv``
returns every pipelined request a client has sent (up to ``receive_size_bytes``), the node answers
them all, and one ``send`` returns the replies. That halves the per-request checkpoints and
syscalls compared with a stream per request (docs/benchmarks.md, "Node server vs Redis").

Bounds: at most ``connections_max`` client connections (more are closed on accept); a connection
has at most one read batch in flight -- the loop does not read again until the replies to the last
batch are written, so a client that does not read its replies stops being read (back-pressure),
and the parser caps any single request (``protocol.FRAME_SIZE_BYTES_MAX``, ``resp`` caps).
"""

from __future__ import annotations

import errno
import gc
import itertools
import logging
import random
import signal
import socket as _stdlib_socket
import time
from collections.abc import Awaitable, Callable

import trio

from . import net
from .errors import ProtocolError
from .metrics import render_prometheus
from .node import Node, NodeConfig
from .protocol import ERROR_BAD_REQUEST, FrameDecoder, encode_response, error_response
from .resp import RespParser, encode_error
from .resp_commands import RespDispatcher, RespSession

log = logging.getLogger("gossipcache.server")

#: Pending connections the kernel queues per listener.
LISTEN_BACKLOG = 1024
#: The metrics endpoint answers requests whose head fits in this many bytes.
HTTP_REQUEST_SIZE_BYTES_MAX = 8 * 1024
#: A metrics client that sends no complete request within this time is disconnected.
HTTP_REQUEST_TIMEOUT_S = 5.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def tune_gc() -> None:
    """Keep the cyclic collector out of the data path (docs/design.md, "Pauses").

    Entries live in containers the collector does not track, so collections only ever see
    short-lived request objects. ``freeze`` moves every object alive at start -- the store's
    containers, modules, classes -- out of all generations, so a full collection never walks
    them; fewer young collections cost less overall.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _listen(host: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(_stdlib_socket.AF_INET, _stdlib_socket.SOCK_STREAM)
    sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_REUSEADDR, 1)
    await sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    """Write all of ``data``. Tries the send at once and waits for writability only if the
    kernel buffer is full: no scheduler round trip when the write fits (the common case)."""
    raw = sock._sock  # the stdlib socket under the Trio wrapper (non-blocking)
    view = memoryview(data)
    while view:
        try:
            sent = raw.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(raw)
            continue
        view = view[sent:]


async def _receive(sock: trio.socket.SocketType, size_bytes: int) -> bytes:
    """Wait until ``sock`` is readable, then read up to ``size_bytes``.

    Called right after the replies to the previous batch were written, when the client has
    usually not sent more yet: waiting first saves the receive call that would fail with EAGAIN.
    The wait is also this connection's one checkpoint per batch (cancellation and fairness).
    """
    raw = sock._sock
    while True:
        await trio.lowlevel.wait_readable(raw)
        try:
            return raw.recv(size_bytes)
        except BlockingIOError:  # spurious wake-up
            continue


class NodeServer:
    """Listeners, connection handlers and timers of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.resp = RespDispatcher(node)
        self._client_ids = itertools.count(1)
        #: Bound ports (useful when configured as 0); filled as listeners start.
        self.ports: dict[str, int] = {}
        #: The membership driver, once ``serve`` bound its sockets (None: membership off).
        self.peer_driver: net.PeerDriver | None = None

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. ``task_status.started`` fires once every listener is bound."""
        config = self.node.config
        if config.membership_enabled:
            native_sock = await self._start_membership(config)
        else:
            native_sock = await _listen(config.host, config.port)
        listeners: list[tuple[str, trio.socket.SocketType, Callable]] = [
            ("native", native_sock, self._native_connection)
        ]
        if config.resp_port is not None:
            listeners.append(
                ("resp", await _listen(config.host, config.resp_port), self._resp_connection)
            )
        if config.metrics_port is not None:
            listeners.append(
                ("metrics", await _listen(config.host, config.metrics_port), self._http_connection)
            )
        async with trio.open_nursery() as nursery:
            if self.peer_driver is not None:
                await nursery.start(self.peer_driver.run)
            for name, sock, handler in listeners:
                self.ports[name] = sock.getsockname()[1]
                nursery.start_soon(self._accept_loop, sock, handler, name != "metrics")
            nursery.start_soon(self._expire_loop)
            task_status.started(self.ports)

    async def _start_membership(self, config: NodeConfig) -> trio.socket.SocketType:
        """Bind the native TCP port and the membership UDP port (same number), build the core
        and its driver (``gossipcache.net``); returns the native listener."""
        native_sock, udp_sock = await net.bind_tcp_and_udp(config.host, config.port, _listen)
        try:
            address = f"{config.host}:{native_sock.getsockname()[1]}"
            node = self.node
            core = node.start_membership(address, net.monotonic_ms, wall_ms(), random.Random())
            self.peer_driver = net.PeerDriver(
                core,
                address,
                udp_sock,
                on_step=node.after_membership_step,
                stats=node.membership_transport_stats,
            )
        except BaseException:
            native_sock.close()
            udp_sock.close()
            raise
        return native_sock

    async def leave_cluster(self) -> None:
        """Leave the membership gracefully: announce it, then wait (bounded) for the
        announcement to be sent. A no-op without membership."""
        if self.peer_driver is not None and self.node.membership is not None:
            await self.peer_driver.stop(self.node.membership.leave, net.STOP_WAIT_S)

    async def _accept_loop(
        self,
        listener: trio.socket.SocketType,
        handler: Callable[[trio.socket.SocketType], Awaitable[None]],
        counted: bool,
    ) -> None:
        metrics = self.node.metrics
        async with trio.open_nursery() as nursery:
            with listener:
                while True:
                    try:
                        sock, _ = await listener.accept()
                    except OSError as error:
                        # Out of file descriptors and the like: log, back off, keep serving.
                        if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.warning("accept failed: %s", error)
                            await trio.sleep(0.1)
                            continue
                        raise
                    if counted:
                        if metrics.connections_open >= self.node.config.connections_max:
                            metrics.connections_refused += 1
                            sock.close()
                            continue
                        metrics.connections_accepted += 1
                    sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
                    nursery.start_soon(self._guarded, sock, handler, counted)

    async def _guarded(self, sock, handler, counted: bool) -> None:
        """Run one connection; whatever happens, close it and keep the node up."""
        metrics = self.node.metrics
        if counted:
            metrics.connections_open += 1
        try:
            with sock:
                await handler(sock)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away
        except Exception:
            metrics.internal_errors += 1
            log.exception("connection handler failed")
        finally:
            if counted:
                metrics.connections_open -= 1

    async def _native_connection(self, sock: trio.socket.SocketType) -> None:
        if self.peer_driver is not None:
            # Membership peer streams share this port; they start with a preamble no native
            # frame can start with. Peeked once per connection, so the data path is unchanged.
            head = await sock.recv(len(net.PREAMBLE), _stdlib_socket.MSG_PEEK)
            if net.starts_like_preamble(head):
                await self.peer_driver.handle_peer_stream(sock, b"")
                return
        node = self.node
        metrics = node.metrics
        decoder = FrameDecoder()
        receive_size_bytes = node.config.receive_size_bytes
        while True:
            data = await _receive(sock, receive_size_bytes)
            if not data:
                return
            metrics.bytes_received += len(data)
            try:
                decoder.feed(data)
                bodies = decoder.pop_frames()
            except ProtocolError as error:
                # Framing is lost: say why (request id 0), then close.
                metrics.protocol_errors += 1
                await _send_all(
                    sock, encode_response(error_response(0, ERROR_BAD_REQUEST, str(error)))
                )
                return
            if not bodies:
                continue
            metrics.batches += 1
            reply = node.handle_native_frames(bodies, wall_ms())
            metrics.bytes_sent += len(reply)
            await _send_all(sock, reply)

    async def _resp_connection(self, sock: trio.socket.SocketType) -> None:
        node = self.node
        metrics = node.metrics
        parser = RespParser()
        session = RespSession(next(self._client_ids))
        handle = self.resp.handle
        receive_size_bytes = node.config.receive_size_bytes
        while True:
            data = await _receive(sock, receive_size_bytes)
            if not data:
                return
            metrics.bytes_received += len(data)
            try:
                commands = parser.parse(data)
            except ProtocolError as error:
                metrics.protocol_errors += 1
                # Commands complete before the bad one are lost with the connection, as in Redis.
                await _send_all(sock, encode_error(f"ERR {error}"))
                return
            if not commands:
                continue
            metrics.batches += 1
            reply = handle(session, commands, wall_ms())
            metrics.bytes_sent += len(reply)
            await _send_all(sock, reply)
            if session.closing:
                return

    async def _http_connection(self, sock: trio.socket.SocketType) -> None:
        """A minimal HTTP/1.1 endpoint: GET /metrics (Prometheus text) and GET /health."""
        head = b""
        with trio.move_on_after(HTTP_REQUEST_TIMEOUT_S):
            while b"\r\n\r\n" not in head and len(head) < HTTP_REQUEST_SIZE_BYTES_MAX:
                data = await sock.recv(4096)
                if not data:
                    return
                head += data
        request_line = head.split(b"\r\n", 1)[0].split()
        if b"\r\n\r\n" not in head or len(request_line) != 3:
            status, body, content_type = b"400 Bad Request", b"bad request\n", b"text/plain"
        elif request_line[0] != b"GET":
            status, body, content_type = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
        elif request_line[1].split(b"?")[0] == b"/metrics":
            self.node.metrics.metrics_scrapes += 1
            body = render_prometheus(self.node).encode()
            status, content_type = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
        elif request_line[1] == b"/health":
            status, body, content_type = b"200 OK", b"ok\n", b"text/plain"
        else:
            status, body, content_type = b"404 Not Found", b"not found\n", b"text/plain"
        await _send_all(
            sock,
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, content_type, len(body))
            + body,
        )

    async def _expire_loop(self) -> None:
        interval_s = self.node.config.expire_interval_ms / 1000
        while True:
            await trio.sleep(interval_s)
            self.node.expire_tick(wall_ms())


async def run_node(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Build a node and serve it until cancelled or until SIGINT / SIGTERM."""
    node = Node(config, time.perf_counter_ns)
    tune_gc()
    server = NodeServer(node)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(server.serve)
        log.info("node serving: %s", ports)
        task_status.started(server)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                await server.leave_cluster()
                nursery.cancel_scope.cancel()
                break
