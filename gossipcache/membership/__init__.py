"""SWIM + Lifeguard cluster membership as a sans-IO core (see docs/design.md, "Membership").

Modules, one per mechanism: ``config`` (knobs and profiles), ``codec`` (messages, msgpack,
HMAC envelope, keyring), ``suspicion`` (Lifeguard dynamic suspicion timeout), ``awareness``
(Lifeguard local health multiplier), ``broadcast`` (retransmit queue) and ``core`` (the
:class:`Membership` state machine). ``Membership.check_invariants`` raises the package-wide
:class:`gossipcache.errors.InvariantViolation`, re-exported here.
"""

from __future__ import annotations

from ..errors import InvariantViolation
from .codec import CodecError, Keyring
from .config import MembershipConfig
from .core import EventKind, MemberEvent, MemberInfo, Membership, MemberState

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
