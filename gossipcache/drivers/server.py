"""Process start-up and the Trio drivers of one node around its ``NodeCore``.

One process, one Trio loop, one nursery: the reactor (``drivers.reactor``: every native and RESP
connection and every incoming peer stream, served from one task over a private epoll set, which
also runs the core's timers), the metrics HTTP listener (``drivers.http_metrics``) and the peer
driver (``drivers.peer``: UDP gossip and outgoing peer streams). No task awaits between reading
and writing the store: the core runs whole between two checkpoints, so no lock is needed anywhere.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import random
import signal
import socket as _stdlib_socket

import trio

from ..node.config import NodeConfig
from ..node.core import NodeCore
from ..node.metadata import HOST_ID_SIZE_BYTES_MAX
from ..wire.peer import PeerAuthenticator
from . import peer as net
from .clock import TrioClock
from .cluster_keys import cluster_keyring, load_cluster_keys
from .descriptors import plan_for_process
from .http_metrics import serve_metrics
from .reactor import NATIVE, PEER_INCOMING_MAX, RESP, ClientReactor

log = logging.getLogger("gossipcache.server")

#: Pending connections the kernel queues per listener.
LISTEN_BACKLOG = 1024


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


def machine_host_id() -> str | None:
    """The machine's name as a host id (``--host-id``'s default), cut to the cap; None when it
    has none usable (the core then uses the address's host part)."""
    name = _stdlib_socket.gethostname().encode()[:HOST_ID_SIZE_BYTES_MAX].decode(errors="ignore")
    return name if name and name.isprintable() else None


def _to_stdlib(sock: trio.socket.SocketType) -> _stdlib_socket.socket:
    """The same listening socket as a plain stdlib socket, for the reactor's epoll set."""
    return _stdlib_socket.socket(fileno=sock.detach())


class NodeServer:
    """Listeners, the reactor and the peer driver of one node core."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.clock = TrioClock()
        #: The node core, once ``serve`` built it (its address needs the bound port).
        self.core: NodeCore | None = None
        #: The reactor, once ``serve`` started it.
        self.reactor: ClientReactor | None = None
        #: Bound ports (useful when configured as 0); filled as listeners start.
        self.ports: dict[str, int] = {}
        #: The membership driver, once ``serve`` bound its sockets (None: membership off).
        self.peer_driver: net.PeerDriver | None = None

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. ``task_status.started`` fires once every listener is bound."""
        descriptors = plan_for_process(
            self.config.connections_max, PEER_INCOMING_MAX, net.PEER_CONNECTIONS_MAX
        )
        if descriptors.connections_max < self.config.connections_max:
            self.config = dataclasses.replace(
                self.config, connections_max=descriptors.connections_max
            )
        if self.config.host_id is None:
            self.config = dataclasses.replace(self.config, host_id=machine_host_id())
        config = self.config
        udp_sock = None
        peer_authenticator = None
        if config.membership_enabled:
            native_sock, udp_sock = await net.bind_tcp_and_udp(config.host, config.port, _listen)
            address = f"{config.host}:{native_sock.getsockname()[1]}"
            try:
                cluster_keys = load_cluster_keys(config.cluster_key_file)
                peer_authenticator = PeerAuthenticator(address, cluster_keys)
                core = NodeCore(
                    config,
                    self.clock,
                    address=address,
                    rng=random.Random(),
                    keyring=cluster_keyring(cluster_keys),
                    process_id=os.getpid(),
                )
            except BaseException:
                native_sock.close()
                udp_sock.close()
                raise
        else:
            native_sock = await _listen(config.host, config.port)
            core = NodeCore(config, self.clock, process_id=os.getpid())
        self.core = core
        tune_gc()
        async with trio.open_nursery() as nursery:
            reactor = ClientReactor(
                core, serve_peers=udp_sock is not None, peer_authenticator=peer_authenticator
            )
            reactor.peer_incoming_max = min(
                reactor.peer_incoming_max, descriptors.peer_incoming_max
            )
            self.reactor = reactor
            if udp_sock is not None:
                self.peer_driver = net.PeerDriver(
                    core,
                    address,
                    udp_sock,
                    authenticator=peer_authenticator,
                    after_step=reactor.wake,
                    run_timers=False,
                    stats=core.membership_transport_stats,
                )
                self.peer_driver.links_max = descriptors.peer_outgoing_max
                reactor.after_core_input = self.peer_driver.flush
            self.ports["native"] = native_sock.getsockname()[1]
            reactor.add_listener(_to_stdlib(native_sock), NATIVE)
            if config.resp_port is not None:
                resp_sock = await _listen(config.host, config.resp_port)
                self.ports["resp"] = resp_sock.getsockname()[1]
                reactor.add_listener(_to_stdlib(resp_sock), RESP)
            if config.metrics_port is not None:
                metrics_sock = await _listen(config.host, config.metrics_port)
                self.ports["metrics"] = metrics_sock.getsockname()[1]
                nursery.start_soon(
                    serve_metrics, core, metrics_sock, descriptors.metrics_connections_max
                )
            if self.peer_driver is not None:
                await nursery.start(self.peer_driver.run)
            nursery.start_soon(reactor.run)
            task_status.started(self.ports)

    async def leave_cluster(self) -> None:
        """Leave the membership gracefully: announce it, then wait (bounded) for the
        announcement to be sent. A no-op without membership."""
        if self.peer_driver is not None and self.core is not None:
            await self.peer_driver.stop(self.core.leave, net.STOP_WAIT_S)


async def run_node(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Build a node and serve it until cancelled or until SIGINT / SIGTERM."""
    server = NodeServer(config)
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
