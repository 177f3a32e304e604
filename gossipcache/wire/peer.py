"""Peer stream connections on the wire: the preamble, the sender's address, then frames.

A node's native port serves clients and peers. A peer connection starts with ``PREAMBLE`` (never
the start of a valid client frame), then carries frames in the one framing of
``gossipcache.wire.framing``: the first frame is the sender's advertised ``"host:port"`` (a TCP
source port says nothing about it), every later frame one payload for the node core. Connections
are one-way: a peer answers over its own connection.

``PeerStreamReader`` is the sans-IO receiving end: feed it bytes, get payloads; it raises
``PeerStreamError`` on a bad preamble, frame or address, after which the connection is closed.
"""

from __future__ import annotations

from ..errors import ProtocolError
from ..limits import FRAME_SIZE_BYTES_MAX
from .framing import FrameDecoder, frame

#: The first bytes of every peer stream connection. Never a valid native frame: as a length
#: prefix "GCPE" is ~1.2 GB, far above the frame cap, so one listener serves both.
PREAMBLE = b"GCPEER1\n"
#: Largest peer frame (version byte + payload): what a client frame may carry, and the
#: membership codec's own stream cap (8 MiB) is below it.
PEER_FRAME_SIZE_BYTES_MAX = FRAME_SIZE_BYTES_MAX
#: Longest advertised address accepted in the first frame.
ADDRESS_SIZE_BYTES_MAX = 255


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


def opening(address: str) -> bytes:
    """What a peer connection from ``address`` starts with: the preamble and address frame."""
    split_address(address)
    return PREAMBLE + frame(address.encode())


def parse_address_frame(body: bytes) -> str | None:
    """The advertised address in a first frame, or None when it is not a valid one."""
    if len(body) > ADDRESS_SIZE_BYTES_MAX:
        return None
    try:
        address = body.decode("ascii")
        split_address(address)
    except (UnicodeDecodeError, ValueError):
        return None
    return address


class PeerStreamError(ProtocolError):
    """A peer connection broke the protocol; ``reason`` is ``bad_preamble``, ``bad_address``
    or ``bad_frame`` (the counter drivers increment)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerStreamReader:
    """The receiving end of one peer connection. ``source`` is None until the address frame
    has arrived; ``feed`` returns the payloads completed by ``data``."""

    __slots__ = ("source", "_preamble_left", "_decoder")

    def __init__(self) -> None:
        self.source: str | None = None
        self._preamble_left = PREAMBLE
        self._decoder = FrameDecoder(PEER_FRAME_SIZE_BYTES_MAX)

    @property
    def handshaking(self) -> bool:
        return self.source is None

    def feed(self, data: bytes) -> list[bytes]:
        if self._preamble_left:
            head = data[: len(self._preamble_left)]
            if not self._preamble_left.startswith(head):
                raise PeerStreamError("bad_preamble", "not a peer connection: bad preamble")
            self._preamble_left = self._preamble_left[len(head) :]
            data = data[len(head) :]
            if not data:
                return []
        try:
            bodies = self._decoder.parse(data)
        except ProtocolError as error:
            raise PeerStreamError("bad_frame", str(error)) from None
        if self.source is None and bodies:
            self.source = parse_address_frame(bodies[0])
            if self.source is None:
                raise PeerStreamError("bad_address", "peer connection: bad address frame")
            del bodies[0]
        return bodies
