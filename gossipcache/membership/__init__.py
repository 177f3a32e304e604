"""SWIM + Lifeguard cluster membership as a sans-IO core (see docs/design.md, "Membership").

Modules, one per mechanism: ``config`` (knobs and profiles), ``codec`` (messages, msgpack,
HMAC envelope, keyring), ``suspicion`` (Lifeguard dynamic suspicion timeout), ``awareness``
(Lifeguard local health multiplier), ``broadcast`` (retransmit queue), ``core`` (the
:class:`Membership` state machine) and ``invariant`` (:class:`InvariantViolation`, raised by
``Membership.check_invariants``).
"""

from __future__ import annotations

from .codec import CodecError, Keyring
from .config import MembershipConfig
from .core import EventKind, MemberEvent, MemberInfo, Membership, MemberState
from .invariant import InvariantViolation

__all__ = [
    "CodecError",
    "EventKind",
    "InvariantViolation",
    "Keyring",
    "MemberEvent",
    "MemberInfo",
    "MemberState",
    "Membership",
    "MembershipConfig",
]
