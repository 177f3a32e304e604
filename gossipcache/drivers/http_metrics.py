"""The metrics endpoint: a minimal HTTP/1.1 server for ``GET /metrics`` and ``GET /health``.

Scrapes are rare and short, so a plain Trio task per connection. Rendering yields to the reactor
between metric families (``metrics.counters.iter_prometheus``), so a scrape never holds the loop
for the whole render; it reads counters only, never the keyspace.
"""

from __future__ import annotations

import errno
import logging

import trio

from ..metrics.counters import iter_prometheus
from ..node.core import NodeCore
from .descriptors import METRICS_CONNECTIONS_MAX

log = logging.getLogger("gossipcache.metrics")

#: The metrics endpoint answers requests whose head fits in this many bytes.
HTTP_REQUEST_SIZE_BYTES_MAX = 8 * 1024
#: A metrics client that sends no complete request within this time is disconnected.
HTTP_REQUEST_TIMEOUT_S = 5.0
_ACCEPT_RETRY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: After an accept fails for want of descriptors, wait this long before the next attempt.
ACCEPT_BACKOFF_S = 0.5
#: Accept failures are logged at most once per interval.
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0


async def serve_metrics(
    core: NodeCore,
    listener: trio.socket.SocketType,
    connections_max: int = METRICS_CONNECTIONS_MAX,
) -> None:
    """Accept and answer metrics requests until cancelled, at most ``connections_max`` at
    once (more are closed on accept, counted)."""
    open_connections = [0]
    failures_unlogged = 0
    logged_at = -ACCEPT_ERROR_LOG_INTERVAL_S
    async with trio.open_nursery() as nursery:
        with listener:
            while True:
                try:
                    sock, _ = await listener.accept()
                except OSError as error:
                    # Out of file descriptors and the like: back off, keep serving, and log
                    # once per interval rather than once per attempt.
                    if error.errno not in _ACCEPT_RETRY_ERRNOS:
                        raise
                    core.metrics.accept_failures += 1
                    failures_unlogged += 1
                    if trio.current_time() - logged_at >= ACCEPT_ERROR_LOG_INTERVAL_S:
                        log.warning(
                            "metrics accept failed %d time(s): %s", failures_unlogged, error
                        )
                        logged_at = trio.current_time()
                        failures_unlogged = 0
                    await trio.sleep(ACCEPT_BACKOFF_S)
                    continue
                if open_connections[0] >= connections_max:
                    core.metrics.metrics_connections_refused += 1
                    sock.close()
                    continue
                open_connections[0] += 1
                nursery.start_soon(_guarded, core, sock, open_connections)


async def _guarded(core: NodeCore, sock: trio.socket.SocketType, open_connections: list) -> None:
    try:
        with sock:
            await _answer(core, sock)
    except OSError:
        pass  # the scraper went away
    except Exception:
        core.metrics.internal_errors += 1
        log.exception("metrics request failed")
    finally:
        open_connections[0] -= 1


async def _answer(core: NodeCore, sock: trio.socket.SocketType) -> None:
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
        core.metrics.metrics_scrapes += 1
        pieces = []
        for piece in iter_prometheus(core):
            pieces.append(piece)
            await trio.lowlevel.checkpoint()  # let the reactor run between pieces
        body = "".join(pieces).encode()
        status, content_type = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
    elif request_line[1] == b"/health":
        status, body, content_type = b"200 OK", b"ok\n", b"text/plain"
    else:
        status, body, content_type = b"404 Not Found", b"not found\n", b"text/plain"
    data = memoryview(
        b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, content_type, len(body))
        + body
    )
    while data:
        sent = await sock.send(data)
        data = data[sent:]
