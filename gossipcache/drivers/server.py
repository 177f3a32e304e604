"""The Trio driver of a node: it moves bytes between sockets and ``gossipcache.node``.

One process, one Trio loop, one nursery: the client reactor (``gossipcache.reactor``: every
native and RESP connection, served from one task over a private epoll set), the metrics HTTP
listener, the membership driver (``gossipcache.net``) and the expiry timer. No task awaits between
reading and writing the store: handlers run whole between two checkpoints, so no lock is needed
anywhere.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import random
import signal
import socket as _stdlib_socket
import time

import trio

from ..metrics.counters import iter_prometheus
from ..node.core import Node, NodeConfig
from ..node.resp_session import RespDispatcher
from . import peer as net
from .cluster_keys import load_cluster_keyring
from .reactor import NATIVE, RESP, ClientReactor

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
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def _to_stdlib(sock: trio.socket.SocketType) -> _stdlib_socket.socket:
    """The same listening socket as a plain stdlib socket, for the reactor's epoll set."""
    return _stdlib_socket.socket(fileno=sock.detach())


class NodeServer:
    """Listeners, connection handlers and timers of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.resp = RespDispatcher(node)
        #: The client reactor, once ``serve`` started it.
        self.reactor: ClientReactor | None = None
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
        async with trio.open_nursery() as nursery:
            reactor = ClientReactor(
                self.node,
                self.resp,
                wall_ms,
                on_peer_stream=(
                    None
                    if self.peer_driver is None
                    else lambda raw, first: nursery.start_soon(self._peer_stream, raw, first)
                ),
            )
            self.reactor = reactor
            self.ports["native"] = native_sock.getsockname()[1]
            reactor.add_listener(_to_stdlib(native_sock), NATIVE)
            if config.resp_port is not None:
                resp_sock = await _listen(config.host, config.resp_port)
                self.ports["resp"] = resp_sock.getsockname()[1]
                reactor.add_listener(_to_stdlib(resp_sock), RESP)
            if config.metrics_port is not None:
                metrics_sock = await _listen(config.host, config.metrics_port)
                self.ports["metrics"] = metrics_sock.getsockname()[1]
                nursery.start_soon(self._http_accept_loop, metrics_sock)
            if self.peer_driver is not None:
                await nursery.start(self.peer_driver.run)
            nursery.start_soon(reactor.run)
            nursery.start_soon(self._expire_loop)
            task_status.started(self.ports)

    async def _peer_stream(self, raw: _stdlib_socket.socket, first_bytes: bytes) -> None:
        """A membership peer connection the reactor recognised: the driver serves it."""
        with trio.socket.from_stdlib_socket(raw) as sock:
            await self.peer_driver.handle_peer_stream(sock, first_bytes)

    async def _start_membership(self, config: NodeConfig) -> trio.socket.SocketType:
        """Bind the native TCP port and the membership UDP port (same number), build the core
        and its driver (``gossipcache.net``); returns the native listener."""
        native_sock, udp_sock = await net.bind_tcp_and_udp(config.host, config.port, _listen)
        try:
            address = f"{config.host}:{native_sock.getsockname()[1]}"
            node = self.node
            core = node.start_membership(
                address,
                net.monotonic_ms,
                wall_ms(),
                random.Random(),
                load_cluster_keyring(config.cluster_key_file),
            )
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

    async def _http_accept_loop(self, listener: trio.socket.SocketType) -> None:
        """The metrics endpoint: rare, short requests, so a plain task per connection."""
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
                    nursery.start_soon(self._http_guarded, sock)

    async def _http_guarded(self, sock: trio.socket.SocketType) -> None:
        try:
            with sock:
                await self._http_connection(sock)
        except OSError:
            pass  # the scraper went away
        except Exception:
            self.node.metrics.internal_errors += 1
            log.exception("metrics request failed")

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
            pieces = []
            for piece in iter_prometheus(self.node):
                pieces.append(piece)
                await trio.lowlevel.checkpoint()  # let the client reactor run between pieces
            body = "".join(pieces).encode()
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
    node.process_id = os.getpid()
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
