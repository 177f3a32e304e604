"""Versions as hybrid-logical-clock stamps (Kulkarni et al. 2014), sans-IO: wall time is passed in.

**Stamp layout.** A stamp is one unsigned 64-bit int, ``wall_ms << 16 | logical``: the top 48
bits are wall-clock milliseconds since the Unix epoch (the HLC's ``l``), the low 16 bits a
logical counter (its ``c``). Comparing stamps as ints compares ``(l, c)`` lexicographically.
48 bits of milliseconds last until the year 10889, the same range as expiry instants
(``limits.EXPIRES_AT_MS_MAX``).

**Versions.** A version is ``Version(stamp, node_tag)``: a named tuple compared as a tuple, so
equal stamps from two nodes are ordered by their tags, the same way on every replica. The tag is
``node_tag(node_id)``: the unsigned 64-bit MurmurHash3 (x64, seed 0) of the UTF-8 node id, the
same in every process and on every platform. On the wire a version is two msgpack ints
``[stamp, node_tag]`` (msgpack ints stop at 64 bits unsigned, so the pair is not combined into
one 128-bit int).

**Tag collisions.** One node never issues the same stamp twice (below), so two equal versions
are either the same write delivered twice (applying it again changes nothing) or two nodes whose
ids hash to the same tag writing in the same millisecond with the same counter. The second needs
a 64-bit hash collision between two live node ids (about n²/2⁶⁵ for n nodes: 3·10⁻¹⁶ for 10,000)
*and* equal stamps. ``newer`` then answers False both ways: neither write replaces the other, so
a replica keeps whichever arrived first. Replicas that must agree even then break the tie on
something both writes carry (the value bytes); this module only promises that distinct versions
are ordered identically everywhere.

**Guarantees** of one ``HybridClock``, for any sequence of wall-clock readings:

- *Monotonic per node*: every stamp ``now`` or ``observe`` returns is greater than every stamp
  the clock returned before, even when the wall clock steps back (the clock keeps ``l`` and
  counts ``c`` up until the wall clock passes ``l`` again).
- *Causality*: a stamp returned by ``observe(remote)`` is greater than ``remote``; so a write
  that has seen another (directly or through a chain of messages) gets a greater version, and
  last-writer-wins never lets a cause overwrite its effect.
- *Bounded distance from the wall clock*: if every node's wall clock is within ``max_offset_ms``
  of true time, ``l`` stays within ``max_offset_ms`` of the local wall clock (``l`` is always
  some node's wall reading, and stamps from further ahead are refused), except for the
  logical-overflow carries below.

**Beyond the bound.** ``observe`` refuses a stamp whose wall part is more than ``max_offset_ms``
(500 ms by default) ahead of the local wall clock: it raises ``VersionTooFarAhead``, leaves the
clock unchanged and counts the refusal in ``refused_total``. A node whose clock runs ahead of its
peers by more than the bound therefore has its writes refused by them (visible in their counters)
instead of dragging every clock in the cluster forward, from where it could only be undone by
waiting. A node whose clock is *behind* needs no refusal: its ``l`` carries the largest stamp it
has seen, so its writes still order after everything they observed; it only risks losing
last-writer-wins races to writes it has not seen, as any node does.

**Logical overflow.** When ``c`` would pass 65535 (more than 65,536 stamps within one
millisecond of ``l``), the stamp advances to ``(l + 1, 0)`` instead: one int increment carries
into the wall part. Stamps stay strictly increasing; ``l`` then runs ahead of the wall clock by
one millisecond per 65,536 stamps, counted in ``overflow_total``. A stamp costs hundreds of
nanoseconds, so one node issues a few thousand per millisecond at most: in practice the carry
follows a received stamp whose counter was already near the maximum, and the wall clock catches
up within a millisecond.

**Restarts.** The clock lives in memory, like the cache: a restarted node starts from its wall
clock again and relearns from its peers' stamps.
"""

from __future__ import annotations

from typing import NamedTuple

import mmh3

from .errors import GossipCacheError, ProtocolError

#: Bits of the logical counter in a stamp; the wall-clock milliseconds sit above them.
LOGICAL_BITS = 16
#: Largest logical counter: one more carries into the wall part.
LOGICAL_MAX = (1 << LOGICAL_BITS) - 1
#: Bits of wall-clock milliseconds in a stamp (the same range as ``limits.EXPIRES_AT_MS_MAX``).
WALL_BITS = 48
#: Latest wall-clock reading a stamp can carry, in ms since the Unix epoch (the year 10889).
WALL_MS_MAX = (1 << WALL_BITS) - 1
#: Largest stamp: ``(WALL_MS_MAX, LOGICAL_MAX)``, an unsigned 64-bit int.
STAMP_MAX = (1 << (WALL_BITS + LOGICAL_BITS)) - 1
#: Largest node tag (an unsigned 64-bit hash).
NODE_TAG_MAX = (1 << 64) - 1
#: How far ahead of the local wall clock a remote stamp may be before it is refused, by default.
MAX_OFFSET_MS_DEFAULT = 500
#: Largest configurable offset bound: one hour. Beyond that the bound no longer protects the
#: cluster from a node whose clock is badly wrong, and expiry instants would be off by as much.
MAX_OFFSET_MS_MAX = 3_600_000


class VersionTooFarAhead(GossipCacheError):
    """A remote stamp's wall part is more than the clock's ``max_offset_ms`` ahead of the local
    wall clock. The stamp (and the write carrying it) is refused; the local clock is unchanged.
    Retrying succeeds once the local wall clock has caught up, or the sender's clock is fixed."""

    def __init__(self, remote_wall_ms: int, local_wall_ms: int, max_offset_ms: int) -> None:
        ahead_ms = remote_wall_ms - local_wall_ms
        super().__init__(
            f"version {ahead_ms} ms ahead of the local clock (the bound is {max_offset_ms} ms)"
        )
        self.ahead_ms = ahead_ms


class InvalidVersion(ProtocolError):
    """A peer sent something that is not an encoded version: ``[stamp, node_tag]``, two unsigned
    64-bit ints."""


class ClockExhausted(GossipCacheError):
    """The next stamp would need a wall part past ``WALL_MS_MAX`` (the year 10889)."""


def make_stamp(wall_ms: int, logical: int) -> int:
    """The stamp of ``(wall_ms, logical)``; both must fit their fields."""
    if not 0 <= wall_ms <= WALL_MS_MAX:
        raise ValueError(f"wall_ms {wall_ms} outside [0, {WALL_MS_MAX}]")
    if not 0 <= logical <= LOGICAL_MAX:
        raise ValueError(f"logical {logical} outside [0, {LOGICAL_MAX}]")
    return wall_ms << LOGICAL_BITS | logical


def stamp_wall_ms(stamp: int) -> int:
    """The wall-clock milliseconds of a stamp (its HLC ``l``)."""
    return stamp >> LOGICAL_BITS


def stamp_logical(stamp: int) -> int:
    """The logical counter of a stamp (its HLC ``c``)."""
    return stamp & LOGICAL_MAX


def node_tag(node_id: str) -> int:
    """The tiebreak integer of a node: MurmurHash3 x64 (seed 0) of its UTF-8 id, unsigned 64 bits.
    ``surrogatepass`` so that any ``str`` has a tag rather than an encoding error. Keyword
    arguments: mmh3 5.3 ignores ``signed`` when it is passed by position."""
    encoded = node_id.encode("utf-8", "surrogatepass")
    return mmh3.hash64(encoded, seed=0, x64arch=True, signed=False)[0]


class Version(NamedTuple):
    """A write's version: compared as ``(stamp, node_tag)``, the same way on every replica."""

    stamp: int
    node_tag: int


def newer(a: Version, b: Version) -> bool:
    """Whether ``a`` wins last-writer-wins against ``b``: its stamp is greater, or the stamps are
    equal and its node tag is greater. Equal versions: False both ways (module docstring)."""
    return a > b


def encode_version(version: Version) -> list[int]:
    """The msgpack-ready form of a version: ``[stamp, node_tag]``."""
    return [version.stamp, version.node_tag]


def _is_uint64(value: object, maximum: int) -> bool:
    # bool is an int subclass; msgpack never decodes to it here, but a True must not pass as 1.
    return type(value) is int and 0 <= value <= maximum


def decode_version(obj: object) -> Version:
    """The version a peer sent, as msgpack decoded it; anything else raises ``InvalidVersion``."""
    if not isinstance(obj, (list, tuple)) or len(obj) != 2:
        raise InvalidVersion(f"a version is [stamp, node_tag], not {type(obj).__name__}")
    stamp, tag = obj
    if not _is_uint64(stamp, STAMP_MAX):
        raise InvalidVersion("a version's stamp must be an unsigned 64-bit int")
    if not _is_uint64(tag, NODE_TAG_MAX):
        raise InvalidVersion("a version's node tag must be an unsigned 64-bit int")
    return Version(stamp, tag)


def _refuse_wall_ms(wall_ms: int) -> None:
    """A wall reading outside the 48-bit field: a broken clock, not input."""
    raise ValueError(f"wall clock reading {wall_ms} ms outside [0, {WALL_MS_MAX}]")


class HybridClock:
    """One node's hybrid logical clock (module docstring: the guarantees, the bound, overflow).

    ``now(wall_ms)`` stamps a local event (a write this node coordinates); ``observe(stamp,
    wall_ms)`` merges a stamp received from another node and returns a stamp greater than both.
    ``version(stamp)`` pairs a stamp with this node's tag. The counters are for the node's
    metrics: ``refused_total`` (stamps refused as too far ahead), ``overflow_total`` (logical
    counter carries into the wall part).
    """

    __slots__ = ("node_tag", "max_offset_ms", "_stamp", "refused_total", "overflow_total")

    def __init__(self, node_tag: int, max_offset_ms: int = MAX_OFFSET_MS_DEFAULT) -> None:
        if not 0 <= node_tag <= NODE_TAG_MAX:
            raise ValueError(f"node_tag {node_tag} outside [0, {NODE_TAG_MAX}]")
        if not 0 <= max_offset_ms <= MAX_OFFSET_MS_MAX:
            raise ValueError(f"max_offset_ms {max_offset_ms} outside [0, {MAX_OFFSET_MS_MAX}]")
        self.node_tag = node_tag
        self.max_offset_ms = max_offset_ms
        self._stamp = 0
        self.refused_total = 0
        self.overflow_total = 0

    @property
    def last_stamp(self) -> int:
        """The latest stamp issued (0 before the first)."""
        return self._stamp

    def version(self, stamp: int) -> Version:
        return Version(stamp, self.node_tag)

    def now(self, wall_ms: int) -> int:
        """Stamp a local or send event: ``l' = max(l, wall)``; ``c' = c + 1`` if ``l'`` is ``l``,
        else 0. With packed stamps that is ``max(stamp + 1, wall << 16)``: the ``+ 1`` carries
        into the wall part when ``c`` is at its maximum (the overflow rule)."""
        if not 0 <= wall_ms <= WALL_MS_MAX:  # inline: this is on every write's path
            _refuse_wall_ms(wall_ms)
        return self._advance(self._stamp, wall_ms)

    def observe(self, remote_stamp: int, wall_ms: int) -> int:
        """Stamp a receive event: ``l' = max(l, l_remote, wall)`` and ``c'`` one past the largest
        counter among the stamps whose ``l`` is ``l'`` (0 if only the wall clock reached it):
        ``max(stamp, remote) + 1`` or ``wall << 16``, whichever is greater. A remote stamp more
        than ``max_offset_ms`` ahead of ``wall_ms`` raises ``VersionTooFarAhead`` and changes
        nothing but ``refused_total``."""
        if not 0 <= wall_ms <= WALL_MS_MAX:
            _refuse_wall_ms(wall_ms)
        if not 0 <= remote_stamp <= STAMP_MAX:
            raise ValueError(f"stamp {remote_stamp} outside [0, {STAMP_MAX}]")
        remote_wall_ms = remote_stamp >> LOGICAL_BITS
        if remote_wall_ms - wall_ms > self.max_offset_ms:
            self.refused_total += 1
            raise VersionTooFarAhead(remote_wall_ms, wall_ms, self.max_offset_ms)
        return self._advance(max(self._stamp, remote_stamp), wall_ms)

    def _advance(self, seen: int, wall_ms: int) -> int:
        """The next stamp after ``seen`` (the largest stamp known) at wall time ``wall_ms``."""
        physical = wall_ms << LOGICAL_BITS
        following = seen + 1
        if following > physical:
            if following & LOGICAL_MAX == 0:
                # The counter wrapped: the wall part moved by one ms the wall clock had not.
                if following > STAMP_MAX:
                    raise ClockExhausted(f"no stamp follows {seen}")
                self.overflow_total += 1
            self._stamp = following
        else:
            self._stamp = physical
        return self._stamp
