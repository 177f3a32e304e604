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

from ..node import commands as c
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
#: While a graceful leave runs, how often the driver checks whether the core finished it (a
#: flag read; the leave itself is driven by the core's timers and peer input).
LEAVE_POLL_S = 0.05


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
        #: Set by the first SIGTERM / SIGINT or a ``leave`` request: ``run_node`` then leaves.
        self.leave_requested = trio.Event()

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
        self._watch_leave_requests(core)
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

    async def leave_cluster(self, timeout_s: float | None = None) -> bool:
        """Leave the membership gracefully: begin the leave (``NodeCore.begin_leave``: the
        buckets' hand-off, then the announcement), wait up to ``timeout_s`` (default: the
        config's ``leave_timeout_s``) for the core to finish it, then up to ``STOP_WAIT_S``
        for what it queued to be sent. True when the leave finished in time; past the timeout
        the leave is announced anyway, with a warning, and the result is False. The reactor
        keeps serving meanwhile (the hand-off needs its peer streams and timers). A no-op
        returning True without membership."""
        core = self.core
        if self.peer_driver is None or core is None:
            return True
        if timeout_s is None:
            timeout_s = self.config.leave_timeout_s
        self.peer_driver.step(core.begin_leave)
        with trio.move_on_after(timeout_s):
            while not core.leave_finished:
                await trio.sleep(LEAVE_POLL_S)
        finished = core.leave_finished
        if not finished:
            log.warning(
                "the graceful leave did not finish within %.1f s: leaving anyway (keys not "
                "handed off remain on their other replicas only)",
                timeout_s,
            )
        await self.peer_driver.stop(None if finished else core.leave, net.STOP_WAIT_S)
        return finished

    def _watch_leave_requests(self, core: NodeCore) -> None:
        """Serve the ``leave`` command through the core's own handler, and also set
        ``leave_requested`` so that ``run_node`` takes the process out once the leave is done."""
        handler, _ = core.handler_of(c.Leave)

        def leave(command: c.Leave, wall_ms: int) -> object:
            result = handler(command, wall_ms)  # raises when the node cannot leave
            self.leave_requested.set()
            return result

        core.add_command(c.Leave, leave)


async def run_node(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> bool:
    """Build a node and serve it until a graceful leave (SIGTERM, SIGINT or a ``leave``
    request) is done, or until cancelled. A second signal during the leave exits at once.
    Returns True when the node left cleanly (False: the leave timed out or was cut short)."""
    server = NodeServer(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(server.serve)
            log.info("node serving: %s", ports)
            task_status.started(server)
            cut_short = trio.CancelScope()
            nursery.start_soon(_take_signals, signals, server, cut_short)
            await server.leave_requested.wait()
            left_cleanly = False
            with cut_short:
                left_cleanly = await server.leave_cluster()
            nursery.cancel_scope.cancel()
    if left_cleanly:
        log.info("left the cluster: exiting")
    return left_cleanly


async def _take_signals(signals, server: NodeServer, cut_short: trio.CancelScope) -> None:
    """The first SIGINT / SIGTERM begins a graceful leave; the next one cuts it short."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if not server.leave_requested.is_set():
            log.info("received %s: leaving the cluster (again to exit at once)", name)
            server.leave_requested.set()
        else:
            log.warning("received %s during the leave: exiting at once", name)
            cut_short.cancel()
            return
