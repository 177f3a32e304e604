"""Length-prefixed frames, the one framing every stream connection uses (clients and peers).

Frame::

    +----------------------+---------+------------------------------+
    | length L (u32, BE)   | version | body (L - 1 bytes)           |
    +----------------------+---------+------------------------------+

``frame(body)`` builds one; ``FrameDecoder`` splits a received byte stream into bodies, refusing a
length above its cap as soon as the 4-byte prefix is buffered, before any of the frame is.
"""

from __future__ import annotations

import struct

from ..errors import ProtocolError, ValueTooLarge
from ..limits import FRAME_SIZE_BYTES_MAX

#: The version byte that starts every frame body. Bumped on any incompatible change.
PROTOCOL_VERSION = 1

#: Bytes of the length prefix.
FRAME_HEADER_SIZE_BYTES = 4

#: The length prefix and version byte of a frame; ``FRAME_HEADER.pack(len(body) + 1,
#: PROTOCOL_VERSION) + body`` is ``frame(body)`` without the cap check, for callers that know
#: their body is small (a hot path saves the call).
FRAME_HEADER = struct.Struct(">IB")
_HEADER = FRAME_HEADER
_LENGTH = struct.Struct(">I")


class FrameTooLarge(ProtocolError):
    """A frame's length prefix is above the decoder's cap (the server answers ``too_large``)."""


def frame(body: bytes, frame_size_bytes_max: int = FRAME_SIZE_BYTES_MAX) -> bytes:
    """The frame carrying ``body``; ``ValueTooLarge`` when it would exceed the cap."""
    length = len(body) + 1
    if length > frame_size_bytes_max:
        raise ValueTooLarge(f"frame of {length} bytes exceeds {frame_size_bytes_max}")
    return _HEADER.pack(length, PROTOCOL_VERSION) + body


def frame_parts(
    parts: tuple[bytes, ...], frame_size_bytes_max: int = FRAME_SIZE_BYTES_MAX
) -> bytes:
    """``frame(b"".join(parts))`` copying each part once instead of twice (for large bodies)."""
    length = sum(map(len, parts)) + 1
    if length > frame_size_bytes_max:
        raise ValueTooLarge(f"frame of {length} bytes exceeds {frame_size_bytes_max}")
    return b"".join((_HEADER.pack(length, PROTOCOL_VERSION), *parts))


class FrameDecoder:
    """Splits a byte stream into frame bodies (version byte checked and stripped).

    ``feed`` bytes as they arrive, then ``pop_frames``. A length above
    ``frame_size_bytes_max`` is rejected as soon as its 4-byte prefix is buffered, before any of
    the frame is. After a ``ProtocolError`` the stream cannot be resynchronised: the decoder
    keeps raising it, and the caller closes the connection. Frames that preceded the bad one in
    the same ``pop_frames`` call are dropped with it (the connection is closing anyway).
    """

    def __init__(self, frame_size_bytes_max: int = FRAME_SIZE_BYTES_MAX) -> None:
        if frame_size_bytes_max < 1:
            raise ValueError(f"frame_size_bytes_max must be >= 1, got {frame_size_bytes_max}")
        self.frame_size_bytes_max = frame_size_bytes_max
        # Bytes not yet returned. ``pop_frames`` walks it with an offset and drops the consumed
        # head once per call: CPython deletes a bytearray's head by moving its start pointer,
        # copying the rest only when it shrinks below half its allocation (amortised O(1)/byte).
        self._buffer = bytearray()
        self._error: ProtocolError | None = None
        #: Whether any received bytes are held (a partial frame): False after a read split
        #: whole, so a driver need not ask ``buffered_size_bytes`` on the hot path.
        self.holding = False

    @property
    def buffered_size_bytes(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes. Raises ``ProtocolError`` if the next frame's length prefix is
        already known to be invalid, so an oversized frame is never buffered."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        self.holding = True
        if len(self._buffer) >= FRAME_HEADER_SIZE_BYTES:
            self._check_length(_LENGTH.unpack_from(self._buffer)[0])

    def parse(self, data: bytes) -> list[bytes]:
        """``feed(data)`` then ``pop_frames()``, faster in the common case: when nothing is
        buffered, complete frames are sliced straight out of ``data`` (one copy each, no trip
        through the buffer) and only an incomplete tail is buffered."""
        if self._buffer or self._error is not None:
            self.feed(data)
            return self.pop_frames()
        end = len(data)
        offset = 0
        frames = []
        cap = self.frame_size_bytes_max
        while end - offset >= FRAME_HEADER_SIZE_BYTES:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > cap or length == 0 or end - offset - FRAME_HEADER_SIZE_BYTES < 1:
                break  # let the general path judge (and raise) from here
            frame_end = offset + FRAME_HEADER_SIZE_BYTES + length
            if frame_end > end or data[offset + FRAME_HEADER_SIZE_BYTES] != PROTOCOL_VERSION:
                break
            frames.append(data[offset + FRAME_HEADER_SIZE_BYTES + 1 : frame_end])
            offset = frame_end
        if offset < end:
            self.feed(data[offset:])
            frames += self.pop_frames()
        return frames

    def pop_frames(self) -> list[bytes]:
        """Return the bodies of all complete frames buffered, in order; keep the rest."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        end = len(buffer)
        frame_size_bytes_max = self.frame_size_bytes_max
        unpack_length = _LENGTH.unpack_from
        offset = 0
        frames = []
        while end - offset >= FRAME_HEADER_SIZE_BYTES:
            (length,) = unpack_length(buffer, offset)
            if not 0 < length <= frame_size_bytes_max:
                self._check_length(length)
            body_start = offset + FRAME_HEADER_SIZE_BYTES + 1
            frame_end = body_start - 1 + length
            if frame_end > end:
                break
            if buffer[body_start - 1] != PROTOCOL_VERSION:
                self._fail(
                    f"unsupported protocol version {buffer[body_start - 1]}"
                    f" (this node speaks {PROTOCOL_VERSION})"
                )
            frames.append(bytes(buffer[body_start:frame_end]))
            offset = frame_end
        if offset == end:
            buffer.clear()
        elif offset:
            del buffer[:offset]
        self.holding = bool(buffer)
        return frames

    def _check_length(self, length: int) -> None:
        if length > self.frame_size_bytes_max:
            self._fail(
                f"frame length {length} exceeds the cap of {self.frame_size_bytes_max}",
                FrameTooLarge,
            )
        if length == 0:
            self._fail("empty frame (no version byte)")

    def _fail(self, message: str, error_type: type[ProtocolError] = ProtocolError) -> None:
        self._error = error_type(message)
        raise self._error
