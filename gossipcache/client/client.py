"""Clients of the native protocol: ``Client`` for Trio code, ``SyncClient`` for blocking code.

``Client`` keeps one TCP connection per node and pipelines: any number of tasks may call it at
once; each request gets an id, a writer task sends whatever requests are queued in one write, and
a reader task hands each response to the task waiting for its id. A request that gets no answer
within ``timeout_s`` raises ``CacheTimeout`` (it may still have applied on the node).

Exceptions (all in ``gossipcache.errors``): ``CacheUnavailable`` (cannot connect, or the connection
broke), ``CacheTimeout``, ``ServerError`` (the node answered with an error; ``.code``: ``noauth``
when the node needs a password the client was not given), ``AuthenticationFailed`` (the
``password`` given is refused), and ``InvalidRequest`` subclasses raised locally for arguments
the node would refuse.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
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
from ..wire import native as protocol
from ..wire.framing import FrameDecoder
from ..wire.native import (
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    Request,
    decode_response,
    encode_request,
)

#: Default per-request timeout.
TIMEOUT_S_DEFAULT = 5.0
#: Requests one client may have in flight; further callers wait for a slot (back-pressure).
IN_FLIGHT_MAX = 4096
_RECEIVE_SIZE_BYTES = 256 * 1024


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


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidRequest(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)


class Client:
    """An async client of one node. Use as ``async with Client("127.0.0.1:7000") as c:``."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        password: bytes | str | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        #: The node's client password (``--client-password-file``), sent on every connection.
        self._password = None if password is None else _as_bytes(password, "password")
        self._host, self._port = parse_address(address)
        self._stream: trio.SocketStream | None = None
        self._next_id = 1
        self._waiting: dict[int, list] = {}  # id -> [event, response]
        self._outgoing: list[bytes] = []
        self._wake_writer = trio.Event()
        self._slots = trio.Semaphore(IN_FLIGHT_MAX)
        self._broken: BaseException | None = None
        self._closed = False
        self._reconnecting: trio.Event | None = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> Client:
        self._exit_stack = contextlib.AsyncExitStack()
        await self._exit_stack.enter_async_context(self._running())
        return self

    async def __aexit__(self, *exc_info) -> bool | None:
        return await self._exit_stack.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def _running(self):
        self._stream = await self._connect()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._start_io(self._stream)
                try:
                    await self._authenticate()
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader and writer handle their own errors, so what arrives here came from the
            # caller's block: give it back as it was raised, not wrapped in a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._closed = True
            self._fail_all(CacheUnavailable("client closed"))
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _connect(self) -> trio.SocketStream:
        try:
            with trio.fail_after(self.timeout_s):
                return await trio.open_tcp_stream(self._host, self._port)
        except (OSError, trio.TooSlowError) as error:
            raise CacheUnavailable(f"cannot connect to {self.address}: {error}") from error

    def _start_io(self, stream: trio.SocketStream) -> None:
        self._broken = None
        self._outgoing = []
        self._wake_writer = trio.Event()
        self._nursery.start_soon(self._reader, stream)
        self._nursery.start_soon(self._writer, stream)

    async def _reconnect(self) -> None:
        """After the connection broke: one new connection attempt, shared by every caller that
        arrives meanwhile. Requests in flight when it broke already failed (they may or may not
        have applied); nothing is retried behind the caller's back."""
        if self._reconnecting is not None:
            await self._reconnecting.wait()
            return
        self._reconnecting = trio.Event()
        try:
            stream = await self._connect()
            old, self._stream = self._stream, stream
            with trio.CancelScope(shield=True):
                await old.aclose()
            self._start_io(stream)
            await self._authenticate()
        finally:
            self._reconnecting.set()
            self._reconnecting = None

    async def _authenticate(self) -> None:
        """Send the password first on a new connection (nothing else is served before it)."""
        if self._password is None:
            return
        try:
            await self._call(protocol.OP_AUTH, self._password)
        except ServerError as error:
            if error.code == protocol.ERROR_WRONG_PASSWORD:
                raise AuthenticationFailed(f"{self.address}: {error.message}") from None
            raise

    # -- operations -------------------------------------------------------------------------

    async def get(self, key: bytes | str) -> bytes | None:
        """The value of ``key``, or None when it is missing or expired."""
        status, payload = await self._call(protocol.OP_GET, _as_bytes(key, "key"))
        return None if status == STATUS_NOT_FOUND else payload

    async def put(self, key: bytes | str, value: bytes | str, ttl_s: float | None = None) -> None:
        """Write ``key`` = ``value``, expiring after ``ttl_s`` seconds when given."""
        await self._call(
            protocol.OP_PUT, _as_bytes(key, "key"), _as_bytes(value, "value"), _ttl_ms(ttl_s)
        )

    async def delete(self, key: bytes | str) -> bool:
        """Remove ``key``; True if it held a live value."""
        status, _ = await self._call(protocol.OP_DEL, _as_bytes(key, "key"))
        return status != STATUS_NOT_FOUND

    async def expire(self, key: bytes | str, ttl_s: float | None) -> bool:
        """Set ``key`` to expire after ``ttl_s`` seconds, or clear its TTL with None.
        True if the key holds a live value."""
        status, _ = await self._call(protocol.OP_EXPIRE, _as_bytes(key, "key"), _ttl_ms(ttl_s))
        return status != STATUS_NOT_FOUND

    async def ttl(self, key: bytes | str) -> float | None:
        """Seconds until ``key`` expires; ``math.inf`` without a TTL; None when missing."""
        status, payload = await self._call(protocol.OP_TTL, _as_bytes(key, "key"))
        if status == STATUS_NOT_FOUND:
            return None
        return math.inf if payload < 0 else payload / 1000

    async def stats(self) -> dict[str, Any]:
        """The node's counters (hits, misses, hit_ratio, keys, used_bytes, ...)."""
        return (await self._call(protocol.OP_STATS))[1]

    async def ping(self) -> None:
        await self._call(protocol.OP_PING)

    async def members(self) -> list[dict[str, Any]]:
        """The node's member list: one dict per record with ``id``, ``address``, ``state``
        (alive / suspect / dead / left), ``incarnation`` and ``since_ms`` (wall-clock ms when
        the member entered that state). Raises ``ServerError`` ("unavailable") when the node
        runs without membership."""
        return (await self._call(protocol.OP_MEMBERS))[1]

    # -- machinery -------------------------------------------------------------------------

    async def _call(self, op: str, *args: object) -> tuple[int, Any]:
        if self._stream is None or self._closed:
            raise CacheUnavailable("client is not open: use `async with Client(...)`")
        if self._broken is not None:
            await self._reconnect()
            if self._broken is not None:
                raise CacheUnavailable(f"connection to {self.address} is broken: {self._broken}")
        async with self._slots:
            request_id = self._next_id
            self._next_id = request_id + 1 if request_id < protocol.REQUEST_ID_MAX else 1
            frame = encode_request(Request(request_id, op, args))
            slot = [trio.Event(), None]
            self._waiting[request_id] = slot
            self._outgoing.append(frame)
            self._wake_writer.set()
            try:
                with trio.fail_after(self.timeout_s):
                    await slot[0].wait()
            except trio.TooSlowError:
                raise CacheTimeout(
                    f"{op} got no reply from {self.address} within {self.timeout_s} s"
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

    async def _writer(self, stream: trio.SocketStream) -> None:
        try:
            while True:
                await self._wake_writer.wait()
                if stream is not self._stream:
                    return  # replaced by a reconnection
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
            self._fail_all(error)
            self._wake_writer.set()  # let the writer see the stream is done

    def _fail_all(self, error: CacheUnavailable) -> None:
        self._broken = error
        for slot in list(self._waiting.values()):
            slot[1] = error
            slot[0].set()


class SyncClient:
    """The same API as ``Client`` for blocking code: a private Trio loop runs in a thread.

    ``with SyncClient("127.0.0.1:7000") as c: c.put("k", "v"); c.get("k")``. Safe to call from
    several threads; calls are pipelined on one connection.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        password: bytes | str | None = None,
    ) -> None:
        self._client = Client(address, timeout_s=timeout_s, password=password)
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gossipcache-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

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

    def _call(self, method: Callable, *args: Any) -> Any:
        if self._token is None:
            raise CacheUnavailable("client is closed")
        try:
            return trio.from_thread.run(method, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise CacheUnavailable("client is closed") from None

    def get(self, key):
        return self._call(self._client.get, key)

    def put(self, key, value, ttl_s=None):
        return self._call(self._client.put, key, value, ttl_s)

    def delete(self, key):
        return self._call(self._client.delete, key)

    def expire(self, key, ttl_s):
        return self._call(self._client.expire, key, ttl_s)

    def ttl(self, key):
        return self._call(self._client.ttl, key)

    def stats(self):
        return self._call(self._client.stats)

    def ping(self):
        return self._call(self._client.ping)

    def members(self):
        return self._call(self._client.members)

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            token, self._token = self._token, None
            trio.from_thread.run_sync(self._stop.set, trio_token=token)
            self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
