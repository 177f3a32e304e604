"""Peer stream connections on the wire: the preamble, an authenticated handshake, then frames.

A node's native port serves clients and peers. A peer connection starts with ``PREAMBLE`` (never
the start of a valid client frame), then carries frames in the one framing of
``gossipcache.wire.framing``. The first frame is the handshake; every later frame is one payload
for the node core. Connections are one-way: a peer answers over its own connection.

Handshake frame body (at most ``HANDSHAKE_FRAME_SIZE_BYTES_MAX`` with its version byte)::

    u8 n | sender "host:port" (n bytes) | u8 m | receiver "host:port" (m bytes)
    | u64 BE sender's wall-clock ms | 16-byte random nonce | 32-byte tag

``tag`` is HMAC-SHA256 over everything before it, under a key derived from a cluster key
(``HMAC-SHA256(cluster key, HANDSHAKE_KEY_LABEL)``, so a handshake tag can never pass for a
membership packet's tag or the other way round). The sender signs with its primary key; the
receiver tries every key it accepts (rotation as for membership packets). The receiver refuses a
handshake naming another receiver (one captured on its way to node B cannot open a stream to
C), a wall-clock time more than ``HANDSHAKE_CLOCK_SKEW_MS_MAX`` from its own, and a nonce seen
within that window (``PeerAuthenticator`` keeps a bounded replay cache). The sender's advertised
address travels in the handshake because a TCP source port says nothing about it.

``PeerStreamReader`` is the sans-IO receiving end: feed it bytes and the wall-clock time, get
payloads; it raises ``PeerStreamError`` (with a ``reason``) on a bad preamble, handshake or
frame, after which the connection is closed. Until the handshake has passed it buffers at most
one handshake frame, so an unauthenticated stream costs a few hundred bytes, never a 16 MiB frame.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import struct
from collections.abc import Sequence

from ..errors import ProtocolError
from ..limits import FRAME_SIZE_BYTES_MAX
from .framing import FRAME_HEADER_SIZE_BYTES, PROTOCOL_VERSION, FrameDecoder, frame

#: The first bytes of every peer stream connection. Never a valid native frame: as a length
#: prefix "GCPE" is ~1.2 GB, far above the frame cap, so one listener serves both. Version 2
#: added the authenticated handshake; a version-1 node's connections fail with ``bad_preamble``.
PREAMBLE = b"GCPEER2\n"
#: Largest peer frame after the handshake (version byte + payload): what a client frame may
#: carry, and the membership codec's own stream cap (8 MiB) is below it.
PEER_FRAME_SIZE_BYTES_MAX = FRAME_SIZE_BYTES_MAX
#: Longest advertised address (sender or receiver) in a handshake.
ADDRESS_SIZE_BYTES_MAX = 255
#: Random bytes the sender draws for every handshake; the replay cache remembers them.
HANDSHAKE_NONCE_SIZE_BYTES = 16
#: HMAC-SHA256, untruncated: the handshake is sent once per connection, so size does not matter.
HANDSHAKE_TAG_SIZE_BYTES = 32
#: Largest handshake frame (version byte + body): two maximal addresses with their length bytes,
#: the time, the nonce and the tag. Anything longer is refused before it is buffered.
HANDSHAKE_FRAME_SIZE_BYTES_MAX = (
    1 + 2 * (1 + ADDRESS_SIZE_BYTES_MAX) + 8 + HANDSHAKE_NONCE_SIZE_BYTES + HANDSHAKE_TAG_SIZE_BYTES
)
#: A handshake stamped further than this from the receiver's wall clock (either way) is refused.
#: It bounds how long a captured handshake must be remembered to refuse its replay; nodes' clocks
#: must agree within it (NTP keeps them within milliseconds).
HANDSHAKE_CLOCK_SKEW_MS_MAX = 30_000
#: Nonces the replay cache holds (~100 bytes each). Only handshakes that passed the tag check
#: enter it, so only key holders can fill it: a node accepting this many streams within one
#: skew window is far beyond any real cluster. When full, the oldest entry is forgotten and
#: every handshake stamped at or before it is refused from then on (``replay_floor``): the
#: window shrinks rather than a replay becoming possible.
HANDSHAKE_REPLAY_ENTRIES_MAX = 16_384
#: Derives the handshake key from a cluster key (domain separation from membership tags).
HANDSHAKE_KEY_LABEL = b"gossipcache peer stream handshake v2"

_WALL_MS = struct.Struct(">Q")
_LENGTH = struct.Struct(">I")
_HANDSHAKE_START = len(PREAMBLE) + FRAME_HEADER_SIZE_BYTES


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be HOST:PORT, got {address!r:.80}")
    return host, int(port)


def starts_like_preamble(data: bytes) -> bool:
    """True if ``data`` is (the start of) a peer connection: a prefix of or longer than
    ``PREAMBLE``. Also true for a lone b"G", which no valid native frame starts with."""
    return bool(data) and (data.startswith(PREAMBLE) or PREAMBLE.startswith(data))


class PeerStreamError(ProtocolError):
    """A peer connection broke the protocol. ``reason`` (the counter drivers increment as
    ``peer_dropped_<reason>``) is one of ``bad_preamble``, ``handshake_too_large``,
    ``bad_handshake`` (malformed), ``wrong_receiver``, ``bad_mac``, ``clock_skew``, ``replay``,
    ``replay_floor`` (see ``HANDSHAKE_REPLAY_ENTRIES_MAX``) or ``bad_frame``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _address_field(address: str) -> bytes:
    encoded = address.encode("ascii")
    split_address(address)
    if len(encoded) > ADDRESS_SIZE_BYTES_MAX:
        raise ValueError(f"address longer than {ADDRESS_SIZE_BYTES_MAX} bytes: {address:.80}")
    return bytes((len(encoded),)) + encoded


def _read_address(body: bytes, offset: int) -> tuple[str, int]:
    """The address field at ``offset`` and the offset after it; ValueError when malformed."""
    if offset >= len(body):
        raise ValueError("truncated")
    end = offset + 1 + body[offset]
    if end > len(body):
        raise ValueError("truncated")
    address = body[offset + 1 : end].decode("ascii")  # UnicodeDecodeError is a ValueError
    split_address(address)
    return address, end


class PeerAuthenticator:
    """One node's side of the peer handshake: signs the openings of its outgoing streams and
    verifies those of incoming ones. ``address`` is the node's advertised ``"host:port"``;
    ``keys`` its cluster keys, the first (primary) signs, all verify. Holds the replay cache
    shared by every incoming stream of the node. Sans-IO: wall time and nonces are passed in."""

    def __init__(
        self,
        address: str,
        keys: Sequence[bytes],
        replay_entries_max: int = HANDSHAKE_REPLAY_ENTRIES_MAX,
    ) -> None:
        if not keys:
            raise ValueError("a peer authenticator needs at least one cluster key")
        if replay_entries_max < 1:
            raise ValueError(f"replay_entries_max must be >= 1, got {replay_entries_max}")
        self.address = address
        self._address_field = _address_field(address)
        self._keys = [hmac.digest(key, HANDSHAKE_KEY_LABEL, hashlib.sha256) for key in keys]
        self._replay_entries_max = replay_entries_max
        # Nonces of accepted handshakes still inside the window, and a min-heap of
        # (wall ms, nonce) to forget them in time order.
        self._seen: set[bytes] = set()
        self._seen_by_time: list[tuple[int, bytes]] = []
        # Handshakes stamped at or before this were forgotten when the cache was full.
        self._replay_floor_ms = -1

    @property
    def replay_entries(self) -> int:
        return len(self._seen)

    def opening(self, receiver: str, wall_ms: int, nonce: bytes) -> bytes:
        """The first bytes of a stream to ``receiver``: the preamble and a handshake stamped
        ``wall_ms`` with the fresh random ``nonce``. ValueError for a bad address or nonce."""
        if len(nonce) != HANDSHAKE_NONCE_SIZE_BYTES:
            raise ValueError(f"nonce must be {HANDSHAKE_NONCE_SIZE_BYTES} bytes")
        signed = self._address_field + _address_field(receiver) + _WALL_MS.pack(wall_ms) + nonce
        tag = hmac.digest(self._keys[0], signed, hashlib.sha256)
        return PREAMBLE + frame(signed + tag, HANDSHAKE_FRAME_SIZE_BYTES_MAX)

    def verify(self, body: bytes, wall_ms: int) -> str:
        """The sender's address if the handshake frame ``body`` is genuine, fresh, meant for
        this node and not seen before (it is remembered from now on). Raises PeerStreamError."""
        try:
            sender, offset = _read_address(body, 0)
            receiver, offset = _read_address(body, offset)
        except ValueError:
            raise PeerStreamError("bad_handshake", "peer handshake: bad address") from None
        tag_start = offset + _WALL_MS.size + HANDSHAKE_NONCE_SIZE_BYTES
        if len(body) != tag_start + HANDSHAKE_TAG_SIZE_BYTES:
            raise PeerStreamError("bad_handshake", "peer handshake: wrong length")
        if receiver != self.address:
            raise PeerStreamError(
                "wrong_receiver", f"peer handshake for {receiver:.80}, this is {self.address}"
            )
        signed, tag = body[:tag_start], body[tag_start:]
        if not any(
            hmac.compare_digest(hmac.digest(key, signed, hashlib.sha256), tag) for key in self._keys
        ):
            raise PeerStreamError("bad_mac", "peer handshake: tag matches no cluster key")
        (sent_ms,) = _WALL_MS.unpack_from(body, offset)
        if abs(sent_ms - wall_ms) > HANDSHAKE_CLOCK_SKEW_MS_MAX:
            raise PeerStreamError(
                "clock_skew", f"peer handshake stamped {sent_ms - wall_ms} ms from this clock"
            )
        self._remember(body[offset + _WALL_MS.size : tag_start], sent_ms, wall_ms)
        return sender

    def _remember(self, nonce: bytes, sent_ms: int, wall_ms: int) -> None:
        seen, by_time = self._seen, self._seen_by_time
        # An entry stamped before the window can never be accepted again: forget it.
        while by_time and by_time[0][0] < wall_ms - HANDSHAKE_CLOCK_SKEW_MS_MAX:
            seen.discard(heapq.heappop(by_time)[1])
        if nonce in seen:
            raise PeerStreamError("replay", "peer handshake replayed")
        if sent_ms <= self._replay_floor_ms:
            raise PeerStreamError("replay_floor", "peer handshake older than the replay cache")
        seen.add(nonce)
        heapq.heappush(by_time, (sent_ms, nonce))
        if len(seen) > self._replay_entries_max:
            forgotten_ms, forgotten = heapq.heappop(by_time)
            seen.discard(forgotten)
            self._replay_floor_ms = max(self._replay_floor_ms, forgotten_ms)


class PeerStreamReader:
    """The receiving end of one peer connection. ``source`` (the sender's advertised address)
    is None until the handshake has passed; ``feed`` returns the payloads completed by
    ``data``. ``buffered_bytes`` is what it holds between calls (for memory budgets)."""

    __slots__ = ("source", "_authenticator", "_opening", "_decoder")

    def __init__(self, authenticator: PeerAuthenticator) -> None:
        self.source: str | None = None
        self._authenticator = authenticator
        # Preamble and handshake bytes until the handshake passes; then the frame decoder.
        self._opening = bytearray()
        self._decoder: FrameDecoder | None = None

    @property
    def handshaking(self) -> bool:
        return self._decoder is None

    @property
    def buffered_bytes(self) -> int:
        if self._decoder is None:
            return len(self._opening)
        return self._decoder.buffered_size_bytes

    def feed(self, data: bytes, wall_ms: int) -> list[bytes]:
        """Payloads completed by ``data``, received at ``wall_ms`` (wall clock, for the
        handshake's freshness). Raises PeerStreamError; the stream is then unusable."""
        if self._decoder is None:
            data = self._feed_opening(data, wall_ms)
            if self._decoder is None or not data:
                return []
        try:
            return self._decoder.parse(data)
        except ProtocolError as error:
            raise PeerStreamError("bad_frame", str(error)) from None

    def _feed_opening(self, data: bytes, wall_ms: int) -> bytes:
        """Buffer the preamble and the handshake frame; once it is complete, verify it and
        return the bytes after it. Never holds more than one handshake frame between calls:
        every longer input either completes the frame or fails a check first."""
        opening = self._opening
        opening += data
        head = bytes(opening[: len(PREAMBLE)])
        if not PREAMBLE.startswith(head):
            raise PeerStreamError("bad_preamble", "not a peer connection: bad preamble")
        if len(opening) < _HANDSHAKE_START:
            return b""
        (length,) = _LENGTH.unpack_from(opening, len(PREAMBLE))
        if length > HANDSHAKE_FRAME_SIZE_BYTES_MAX:
            raise PeerStreamError(
                "handshake_too_large",
                f"peer handshake frame of {length} bytes (at most {HANDSHAKE_FRAME_SIZE_BYTES_MAX})",
            )
        end = _HANDSHAKE_START + length
        if len(opening) < end:
            return b""
        if length == 0 or opening[_HANDSHAKE_START] != PROTOCOL_VERSION:
            raise PeerStreamError("bad_handshake", "peer handshake: bad frame version")
        self.source = self._authenticator.verify(
            bytes(opening[_HANDSHAKE_START + 1 : end]), wall_ms
        )
        rest = bytes(opening[end:])
        self._opening = bytearray()
        self._decoder = FrameDecoder(PEER_FRAME_SIZE_BYTES_MAX)
        return rest
