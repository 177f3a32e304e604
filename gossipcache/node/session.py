"""What the RESP and native sessions share: a connection's requests, replies and waiting.

A session is sans-IO. The driver gives it the bytes it read (``receive``) and writes the bytes it
returns; when the core completes a command the session had left pending, the driver calls
``completed`` and then writes ``take_ready()``.

Bounds, per connection: at most ``pending_per_connection_max`` commands pending at once, and at
most ``connection_reply_bytes_max`` of reply bytes produced by one batch (plus, for RESP, replies
queued behind a pending command). At either bound the session stops executing: the rest of what
it parsed waits in ``waiting`` (in order), ``wants_input`` turns False so the driver stops
reading the socket (TCP pushes back on the client), and the driver calls ``resume`` once what it
wrote has drained and ``resumable`` says the bounds allow more. Nothing is dropped: a request
waits parsed in ``waiting`` or unread in the kernel's socket buffer.

The reply bound is what makes a pipeline of ``GET`` of a 16 MiB value cost one reply of memory
at a time instead of one per request (a 64 KiB read holds ~3,000 such requests: 46 GiB).
"""

from __future__ import annotations

import hmac
from collections import deque

from ..errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    EntryTooLarge,
    InvalidRequest,
    KeyTooLarge,
    ServiceUnavailable,
    ValueTooLarge,
)
from ..wire.native import (
    ERROR_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_NOAUTH,
    ERROR_TOO_LARGE,
    ERROR_UNAVAILABLE,
    ERROR_WRONG_PASSWORD,
)
from .core import NodeCore, Pending

#: The one user name a node knows (Redis' ``default`` user): ``AUTH default <password>``.
DEFAULT_USER = b"default"
#: What the errors of authentication say, in Redis' words (its clients match them).
NOAUTH_MESSAGE = "Authentication required."
WRONG_PASSWORD_MESSAGE = "invalid username-password pair or user is disabled."

# Error kinds every protocol renders in its own words (``describe_error``): the native
# protocol's error codes, which RESP maps to Redis' prefixes.


def describe_error(error: Exception) -> tuple[str, str]:
    """The one mapping from what a command raised to an error kind and a message."""
    if isinstance(error, KeyTooLarge | ValueTooLarge | EntryTooLarge):
        return ERROR_TOO_LARGE, str(error)
    if isinstance(error, InvalidRequest):
        return ERROR_BAD_REQUEST, str(error)
    if isinstance(error, ServiceUnavailable):
        return ERROR_UNAVAILABLE, str(error)
    if isinstance(error, AuthenticationRequired):
        return ERROR_NOAUTH, NOAUTH_MESSAGE
    if isinstance(error, AuthenticationFailed):
        return ERROR_WRONG_PASSWORD, WRONG_PASSWORD_MESSAGE
    return ERROR_INTERNAL, f"internal error: {error!r}"


class DispatchTable(dict):
    """A protocol's command table (name -> entry), with its twin for connections that have not
    authenticated yet: ``locked`` refuses every command but the few that authenticate. A
    session switches tables when it authenticates, so the hot path never checks a flag."""

    __slots__ = ("locked", "unlocked")

    def __init__(self, entries: dict) -> None:
        super().__init__(entries)
        self.locked: DispatchTable = self
        self.unlocked: DispatchTable = self

    def with_locked(self, locked_entries: dict) -> DispatchTable:
        """Attach the locked twin built from ``locked_entries``; returns self."""
        locked = DispatchTable(locked_entries)
        locked.locked, locked.unlocked = locked, self
        self.locked, self.unlocked = locked, self
        return self


class Session:
    """State shared by both protocols: see the module docstring."""

    __slots__ = (
        "core", "client_id", "connection", "closing", "closed", "_pending", "waiting",
        "input_parser", "replies_held",
    )  # fmt: skip

    def __init__(self, core: NodeCore, client_id: int) -> None:
        self.core = core
        self.client_id = client_id
        #: The driver's handle on the connection (opaque here).
        self.connection: object = None
        #: The connection is to close once what is ready has been written (QUIT, bad input).
        self.closing = False
        #: The connection is gone: completions for it are dropped.
        self.closed = False
        #: Commands of this session executed but not completed.
        self._pending = 0
        #: Parsed requests not yet executed because the pending bound was reached.
        #: Parsed requests not yet executed (a bound was reached), in order; drivers read it.
        self.waiting: deque = deque()
        #: The protocol's parser of received bytes; its ``holding`` flag says whether it keeps
        #: any (a partial request), so drivers look at ``input_bytes`` only then.
        self.input_parser = None
        #: The protocol's container of replies held back (pending, or completed and not yet
        #: taken); drivers test it for emptiness, cheaply, before asking ``has_ready``.
        self.replies_held = None

    @property
    def wants_input(self) -> bool:
        """Whether the driver should read more from the connection now."""
        return not self.closing and not self.waiting

    @property
    def resumable(self) -> bool:
        """Parsed requests wait and the bounds now let some run: call ``resume`` (once what
        was written has drained)."""
        return bool(self.waiting) and not self.closing and not self._at_bound()

    @property
    def has_ready(self) -> bool:  # pragma: no cover - each protocol defines it
        """Completed replies wait to be taken (``take_ready`` stops at the reply bound)."""
        raise NotImplementedError

    def resume(self) -> bytes:
        """Run the requests that waited, as far as the bounds allow; return what can be
        written now (completed replies first, up to the reply bound)."""
        if not self.resumable:
            return self.take_ready()
        waiting = list(self.waiting)
        self.waiting.clear()
        ready = self._run(waiting)
        return ready + self.take_ready()

    def take_ready(self) -> bytes:  # pragma: no cover - each protocol defines it
        raise NotImplementedError

    def _run(self, requests: list) -> bytes:  # pragma: no cover - each protocol defines it
        raise NotImplementedError

    @property
    def pending_count(self) -> int:
        return self._pending

    def close(self) -> None:
        """The connection is gone; pending commands still complete in the core."""
        self.closed = True
        self.waiting.clear()
        # The driver's connection refers back to this session: break the cycle, so a closed
        # connection's buffers are freed now, not at a full collection that may never come
        # (the node collects rarely, docs/design.md "Pauses").
        self.connection = None

    def _initial_table(self, table: DispatchTable) -> DispatchTable:
        """The locked table when the node requires a client password."""
        return table if self.core.config.client_password is None else table.locked

    def _check_password(self, password: bytes, user: bytes = DEFAULT_USER) -> None:
        """Raise ``AuthenticationFailed`` unless ``user`` and ``password`` are the node's; a
        node without a password accepts any password for the default user (Redis' ``nopass``).
        Compared in constant time."""
        expected = self.core.config.client_password
        if user != DEFAULT_USER or (
            expected is not None and not hmac.compare_digest(password, expected)
        ):
            self.core.metrics.auth_failures += 1
            raise AuthenticationFailed(WRONG_PASSWORD_MESSAGE)

    def _at_bound(self) -> bool:
        return self._pending >= self.core.config.pending_per_connection_max or (
            self._queued_reply_bytes() >= self.core.config.connection_reply_bytes_max
        )

    def _queued_reply_bytes(self) -> int:
        """Reply bytes held behind a pending command (RESP's in-order queue); 0 by default."""
        return 0

    def _note_pending(self, pending: Pending) -> None:
        pending.reply_to = self
        self._pending += 1

    def _note_completed(self) -> None:
        self._pending -= 1
