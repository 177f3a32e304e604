"""What a node tells the cluster about itself, in its membership record's ``meta`` bytes.

Placement needs three facts about every member: the host it runs on (replicas of a key go to
distinct hosts, so several node processes on one machine never hold the same key twice while
enough hosts exist), optionally its zone, and its capacity (a node with twice the memory owns
about twice the buckets). Membership carries them opaquely in each member's ``meta`` (at most
``META_SIZE_BYTES_MAX`` = 128 bytes, gossiped with every alive update); this module is the one
encoding of them.

It also carries the node's **data state** (``STATE_*``): whether its copies of its buckets are
complete (``serving``), being received (``filling``, then ``filled`` once received while other
nodes still fill; ``refilling`` for a process restarted empty at an address that held data),
or being handed to their next owners (``leaving``). Placement and the
coordinator read it (docs/design.md, "Scaling and refill").

Wire form: a msgpack array ``[1, host_id, zone or nil, capacity_bytes, state]``, the leading 1
the format version; a record without ``state`` (an older node) is ``serving``. A record this node cannot read (empty, malformed, a newer version) is not an
error: its member is treated as a host of its own with the default capacity, so an old or odd
node still gets buckets, just without the host rule's protection.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ..membership.codec import META_SIZE_BYTES_MAX

#: The format version leading the array; another version reads as unknown.
METADATA_VERSION = 1
#: Longest host id and zone, in UTF-8 bytes: with the rest they fit the 128-byte meta field.
HOST_ID_SIZE_BYTES_MAX = 63
ZONE_SIZE_BYTES_MAX = 31
#: Capacity assumed for a member whose metadata cannot be read (the default --max-memory).
CAPACITY_BYTES_DEFAULT = 256 * 1024 * 1024
#: Largest capacity accepted (1 PiB): keeps weights finite and comparable.
CAPACITY_BYTES_MAX = 1 << 50

#: Data states, by wire code.
STATE_SERVING = "serving"
STATE_FILLING = "filling"
STATE_FILLED = "filled"
STATE_LEAVING = "leaving"
#: Filling, at an address that held data before (a process restarted empty): it keeps its
#: address's buckets meanwhile (reads skip it, writes count it).
STATE_REFILLING = "refilling"
#: Just started, not yet told by its peers whether the cluster holds data: placed like a holder
#: (so the layout does not move when a starting cluster begins serving) but neither read nor
#: counted for writes. It then serves (a cluster starting), fills (a newcomer) or refills.
STATE_STARTING = "starting"
STATES = (
    STATE_SERVING, STATE_FILLING, STATE_FILLED, STATE_LEAVING, STATE_REFILLING, STATE_STARTING
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodeMetadata:
    """One node's placement facts. ``zone`` None: no zone."""

    host_id: str
    zone: str | None
    capacity_bytes: int
    state: str = STATE_SERVING

    def __post_init__(self) -> None:
        _check_name("host_id", self.host_id, HOST_ID_SIZE_BYTES_MAX)
        if self.zone is not None:
            _check_name("zone", self.zone, ZONE_SIZE_BYTES_MAX)
        capacity = self.capacity_bytes
        if type(capacity) is not int or not 0 < capacity <= CAPACITY_BYTES_MAX:
            raise ValueError(f"capacity_bytes must be in (0, 2**50], got {capacity!r:.40}")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r:.40}")

    def encode(self) -> bytes:
        fields = [METADATA_VERSION, self.host_id, self.zone, self.capacity_bytes]
        if self.state != STATE_SERVING:
            fields.append(STATES.index(self.state))
        meta = msgpack.packb(fields)
        if len(meta) > META_SIZE_BYTES_MAX:  # cannot happen within the caps above
            raise ValueError(f"node metadata is {len(meta)} bytes, over {META_SIZE_BYTES_MAX}")
        return meta


def decode_metadata(meta: bytes, node_id: str) -> NodeMetadata:
    """The metadata in ``meta``; for anything unreadable, a host of its own (named after
    ``node_id``, which is unique) with the default capacity."""
    try:
        fields = msgpack.unpackb(
            meta, max_str_len=META_SIZE_BYTES_MAX, max_bin_len=0, max_array_len=8,
            max_map_len=0, max_ext_len=0,
        )  # fmt: skip
        version, host_id, zone, capacity, *rest = fields
        if version == METADATA_VERSION and len(rest) <= 1:
            code = rest[0] if rest else 0
            if type(code) is not int or not 0 <= code < len(STATES):
                raise ValueError("bad state")
            state = STATES[code]
            return NodeMetadata(host_id, zone, capacity, state)
    except (ValueError, TypeError, msgpack.UnpackException):
        pass  # every malformed form: below
    return NodeMetadata(_unknown_host(node_id), None, CAPACITY_BYTES_DEFAULT)


def _unknown_host(node_id: str) -> str:
    # A node id is unique; trimmed to the cap it may collide only with another unknown one.
    name = f"?{node_id}"
    return name.encode()[:HOST_ID_SIZE_BYTES_MAX].decode(errors="ignore")


def _check_name(field: str, value: object, size_bytes_max: int) -> None:
    if type(value) is not str or not value or not value.isprintable():
        raise ValueError(f"{field} must be a non-empty printable string, got {value!r:.80}")
    if len(value.encode()) > size_bytes_max:
        raise ValueError(f"{field} is longer than {size_bytes_max} bytes: {value!r:.80}")
