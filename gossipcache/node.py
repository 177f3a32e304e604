"""A gossipcache node's command layer: where a request meets the store it reads or changes.

Sans-IO like the cores: the Trio driver (``gossipcache.server``) hands it complete requests and
the time, and writes back the bytes it returns. Every handler runs to completion without awaiting,
so no other task can observe the store half-changed: that is what makes the node lock-free.

``now_ms`` is wall-clock milliseconds (expiry instants are wall-clock); ``clock_ns`` is a
monotonic nanosecond clock used only to time commands for the latency histograms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import protocol
from .errors import EntryTooLarge, InvalidRequest, KeyTooLarge, ProtocolError, ValueTooLarge
from .metrics import ServerMetrics
from .protocol import (
    ERROR_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_TOO_LARGE,
    ERROR_UNKNOWN_OP,
    STATUS_NOT_FOUND,
    STATUS_OK,
    Response,
    decode_request,
    encode_response,
    error_response,
    peek_request_id,
)
from .store import TTL_MISSING, Store

_TOO_LARGE = (KeyTooLarge, ValueTooLarge, EntryTooLarge)


@dataclass(frozen=True)
class NodeConfig:
    """What one node process serves and how much it may hold. CLI flags map onto these."""

    host: str = "127.0.0.1"
    port: int = 7000
    resp_port: int | None = 6379
    metrics_port: int | None = 9100
    size_bytes_max: int = 256 * 1024 * 1024
    eviction: str = "sieve"
    #: Client connections open at once, over all protocols; more are closed on accept.
    connections_max: int = 10_000
    #: Bytes read per receive call: with pipelining, the requests answered in one write.
    receive_size_bytes: int = 64 * 1024
    #: Period of the bounded active-expiry cycle.
    expire_interval_ms: int = 100


class Node:
    """A store plus its counters, answering native requests and (through ``resp_commands``)
    Redis commands."""

    def __init__(self, config: NodeConfig, clock_ns: Callable[[], int]) -> None:
        self.config = config
        self.store = Store(config.size_bytes_max, config.eviction)
        self.metrics = ServerMetrics()
        self.clock_ns = clock_ns
        self._native_ops: dict[str, Callable[[tuple, int], Response | tuple]] = {
            protocol.OP_PING: self._op_ping,
            protocol.OP_GET: self._op_get,
            protocol.OP_PUT: self._op_put,
            protocol.OP_DEL: self._op_del,
            protocol.OP_EXPIRE: self._op_expire,
            protocol.OP_TTL: self._op_ttl,
            protocol.OP_STATS: self._op_stats,
        }
        self._native_metrics = {op: self.metrics.command(op) for op in self._native_ops}

    # -- native protocol -------------------------------------------------------------------

    def handle_native_frames(self, bodies: list[bytes], now_ms: int) -> bytes:
        """Answer every request body of one read batch; returns the bytes of all responses.

        A body that is not a valid request gets an error response to its id (0 when unreadable);
        framing is intact, so the connection stays open.
        """
        out = []
        clock_ns = self.clock_ns
        for body in bodies:
            try:
                request = decode_request(body)
            except ProtocolError as error:
                code = getattr(error, "code", ERROR_BAD_REQUEST)
                request_id = peek_request_id(body) or 0
                out.append(encode_response(error_response(request_id, code, str(error))))
                continue
            handler = self._native_ops.get(request.op)
            if handler is None:
                message = f"op {request.op!r} is not served by this node"
                out.append(
                    encode_response(error_response(request.request_id, ERROR_UNKNOWN_OP, message))
                )
                continue
            metrics = self._native_metrics[request.op]
            started_ns = clock_ns()
            try:
                status, payload = handler(request.args, now_ms)
            except _TOO_LARGE as error:
                metrics.errors += 1
                status, payload = protocol.STATUS_ERROR, (ERROR_TOO_LARGE, str(error))
            except (InvalidRequest, ValueError) as error:
                metrics.errors += 1
                status, payload = protocol.STATUS_ERROR, (ERROR_BAD_REQUEST, str(error))
            except Exception as error:  # a bug: answer, count, keep serving
                metrics.errors += 1
                self.metrics.internal_errors += 1
                status, payload = protocol.STATUS_ERROR, (ERROR_INTERNAL, repr(error))
            metrics.latency_ns.record(clock_ns() - started_ns)
            out.append(encode_response(Response(request.request_id, status, payload)))
        return b"".join(out)

    def _op_ping(self, args: tuple, now_ms: int) -> tuple:
        return STATUS_OK, "pong"

    def _op_get(self, args: tuple, now_ms: int) -> tuple:
        value = self.store.get(args[0], now_ms)
        return (STATUS_NOT_FOUND, None) if value is None else (STATUS_OK, value)

    def _op_put(self, args: tuple, now_ms: int) -> tuple:
        key, value, ttl_ms = args
        self.store.put(key, value, now_ms, ttl_ms)
        return STATUS_OK, True

    def _op_del(self, args: tuple, now_ms: int) -> tuple:
        found = self.store.delete(args[0], now_ms)
        return (STATUS_OK, True) if found else (STATUS_NOT_FOUND, None)

    def _op_expire(self, args: tuple, now_ms: int) -> tuple:
        found = self.store.expire(args[0], args[1], now_ms)
        return (STATUS_OK, True) if found else (STATUS_NOT_FOUND, None)

    def _op_ttl(self, args: tuple, now_ms: int) -> tuple:
        ttl_ms = self.store.ttl_ms(args[0], now_ms)
        return (STATUS_NOT_FOUND, None) if ttl_ms == TTL_MISSING else (STATUS_OK, ttl_ms)

    def _op_stats(self, args: tuple, now_ms: int) -> tuple:
        return STATUS_OK, self.stats_dict()

    # -- shared ------------------------------------------------------------------------------

    def stats_dict(self) -> dict:
        """Store and server counters as one flat dict (what ``stats`` returns). O(1)."""
        stats = self.store.stats()
        result = asdict(stats)
        result["hit_ratio"] = stats.hit_ratio
        server = self.metrics
        result.update(
            connections_open=server.connections_open,
            connections_accepted=server.connections_accepted,
            protocol_errors=server.protocol_errors,
            internal_errors=server.internal_errors,
        )
        return result

    def expire_tick(self, now_ms: int) -> int:
        return self.store.expire_tick(now_ms)
