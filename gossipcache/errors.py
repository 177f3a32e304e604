"""The package's exceptions: one narrow class per situation.

``InvalidRequest`` and its subclasses mean the caller asked for something the cache refuses (a key
too long, a value too big); ``ProtocolError`` means the remote peer sent bytes that break the
protocol; ``CacheUnavailable`` means the network or the node failed us.
"""

from __future__ import annotations


class GossipCacheError(Exception):
    """Base class of every error gossipcache raises on purpose."""


class InvalidRequest(GossipCacheError, ValueError):
    """The request is refused as asked; retrying it unchanged fails the same way."""


class KeyTooLarge(InvalidRequest):
    """The key is longer than the store's ``key_size_bytes_max``."""


class ValueTooLarge(InvalidRequest):
    """The value is longer than the store's ``value_size_bytes_max``."""


class EntryTooLarge(InvalidRequest):
    """One entry alone would exceed the store's memory limit; evicting everything would not help."""


class ServiceUnavailable(GossipCacheError):
    """The node cannot serve the request now: membership is off, too many requests are pending,
    not enough replicas answered. Retrying later may succeed."""


class InvariantViolation(RuntimeError):
    """A state that must always hold does not (the store's bookkeeping, the membership table,
    the node core's counters): a bug, never bad input. Raised by the ``check_invariants``
    methods with explicit checks rather than ``assert`` statements, so ``python -O`` keeps them.
    Not a ``GossipCacheError``: a command that hits one is answered and counted as an internal
    error."""


class AuthenticationRequired(GossipCacheError):
    """The node requires a client password and this connection has not given it yet."""


class AuthenticationFailed(GossipCacheError):
    """The password (or user name) given does not match the node's client password."""


class ProtocolError(GossipCacheError):
    """The peer sent bytes that do not follow the protocol. The connection is closed."""


class CacheUnavailable(GossipCacheError, ConnectionError):
    """The node could not be reached, or the connection broke before a reply arrived."""


class CacheTimeout(CacheUnavailable, TimeoutError):
    """No reply arrived within the request's timeout. The request may or may not have applied."""


class ServerError(GossipCacheError):
    """The node answered with an error reply. ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
