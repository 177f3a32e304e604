"""Small helpers shared by the policies that keep keys in an ``OrderedDict`` (oldest first)."""

from __future__ import annotations

from collections import OrderedDict


def oldest_except(order: OrderedDict[bytes, object], protect: bytes | None) -> bytes | None:
    """The oldest key of ``order`` that is not ``protect``, or None when there is none.

    Looks at two keys at most, so it is O(1).
    """
    keys = iter(order)
    for key in keys:
        if key != protect:
            return key
        # ``protect`` is the oldest: the next one is the answer, if any.
        return next(keys, None)
    return None
