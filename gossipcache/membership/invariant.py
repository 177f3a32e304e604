"""The error the membership's invariant checks raise (``Membership.check_invariants`` and the
mechanisms' own ``check_invariants``)."""

from __future__ import annotations


class InvariantViolation(RuntimeError):
    """The membership core's state contradicts itself: a bug in the core, never bad input.

    A ``RuntimeError``, not an ``AssertionError``, and raised by explicit checks rather than
    ``assert`` statements, so ``python -O`` does not strip the checks.
    """
