"""A test-only command that a test's handler leaves pending: the fake slow command of the
deferred-reply tests (sans-IO, through the reactor, and in the simulator)."""

from __future__ import annotations

from gossipcache.node import commands as c


class Slow(c.Command):
    """Completes only when the test says so; its result is its tag."""

    __slots__ = ()
    name = "slow"
    fields = ("tag",)

    def __new__(cls, tag: bytes) -> Slow:
        return c.make(cls, (cls.name, tag))

    @property
    def tag(self) -> bytes:
        return self[1]
