"""The peer stream handshake, sans-IO (``gossipcache.wire.peer``): what ``PeerStreamReader``
accepts and refuses before a peer stream may carry payloads, and what it buffers meanwhile."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossipcache.wire.framing import frame
from gossipcache.wire.peer import (
    HANDSHAKE_CLOCK_SKEW_MS_MAX,
    HANDSHAKE_FRAME_SIZE_BYTES_MAX,
    PEER_FRAME_SIZE_BYTES_MAX,
    PREAMBLE,
    PeerAuthenticator,
    PeerStreamError,
    PeerStreamReader,
)

KEY = b"k" * 32
OLD_KEY = b"o" * 32
OTHER_KEY = b"x" * 32
SENDER = "10.0.0.1:7001"
RECEIVER = "10.0.0.2:7002"
NOW_MS = 1_700_000_000_000
#: The largest possible opening: preamble, frame header, handshake frame.
OPENING_SIZE_BYTES_MAX = len(PREAMBLE) + 4 + HANDSHAKE_FRAME_SIZE_BYTES_MAX


def nonce(number: int) -> bytes:
    return number.to_bytes(16, "big")


def opening(
    keys=(KEY,), sender=SENDER, receiver=RECEIVER, wall_ms=NOW_MS, number: int = 1
) -> bytes:
    return PeerAuthenticator(sender, list(keys)).opening(receiver, wall_ms, nonce(number))


def refusal(reader: PeerStreamReader, data: bytes, wall_ms: int = NOW_MS) -> str:
    with pytest.raises(PeerStreamError) as caught:
        reader.feed(data, wall_ms)
    return caught.value.reason


def receiver(keys=(KEY,), **kwargs) -> PeerAuthenticator:
    return PeerAuthenticator(RECEIVER, list(keys), **kwargs)


def test_a_genuine_handshake_opens_the_stream_whole_or_byte_by_byte() -> None:
    data = opening() + frame(b"one") + frame(b"two")
    reader = PeerStreamReader(receiver())
    assert reader.feed(data, NOW_MS) == [b"one", b"two"]
    assert reader.source == SENDER and not reader.handshaking

    trickled = PeerStreamReader(receiver())
    payloads = []
    for index in range(len(data)):
        payloads += trickled.feed(data[index : index + 1], NOW_MS)
        if trickled.handshaking:
            assert trickled.source is None and payloads == []
    assert payloads == [b"one", b"two"] and trickled.source == SENDER


def test_a_forged_tag_or_a_foreign_key_is_refused() -> None:
    assert refusal(PeerStreamReader(receiver()), opening(keys=(OTHER_KEY,))) == "bad_mac"
    tampered = bytearray(opening())
    tampered[-1] ^= 1
    assert refusal(PeerStreamReader(receiver()), bytes(tampered)) == "bad_mac"
    # Claiming another sender breaks the tag too: the sender's address is signed.
    genuine = opening()
    forged = genuine.replace(SENDER.encode(), b"10.0.0.9:7001")
    assert refusal(PeerStreamReader(receiver()), forged) == "bad_mac"


def test_a_handshake_for_another_node_is_refused() -> None:
    # Captured on its way to 10.0.0.3: replayed to this node it is refused, tag or not.
    captured = opening(receiver="10.0.0.3:7003")
    assert refusal(PeerStreamReader(receiver()), captured) == "wrong_receiver"
    rewritten = captured.replace(b"10.0.0.3:7003", RECEIVER.encode())
    assert refusal(PeerStreamReader(receiver()), rewritten) == "bad_mac"


@pytest.mark.parametrize(
    "offset_ms", [-HANDSHAKE_CLOCK_SKEW_MS_MAX - 1, HANDSHAKE_CLOCK_SKEW_MS_MAX + 1]
)
def test_a_stale_or_future_handshake_is_refused(offset_ms: int) -> None:
    reader = PeerStreamReader(receiver())
    assert refusal(reader, opening(wall_ms=NOW_MS + offset_ms)) == "clock_skew"


@pytest.mark.parametrize("offset_ms", [-HANDSHAKE_CLOCK_SKEW_MS_MAX, HANDSHAKE_CLOCK_SKEW_MS_MAX])
def test_a_handshake_at_the_edge_of_the_window_passes(offset_ms: int) -> None:
    reader = PeerStreamReader(receiver())
    assert reader.feed(opening(wall_ms=NOW_MS + offset_ms), NOW_MS) == []
    assert reader.source == SENDER


def test_a_replayed_handshake_is_refused_for_as_long_as_its_time_is_accepted() -> None:
    authenticator = receiver()
    captured = opening()
    PeerStreamReader(authenticator).feed(captured, NOW_MS)
    for later_ms in (NOW_MS, NOW_MS + 1, NOW_MS + HANDSHAKE_CLOCK_SKEW_MS_MAX):
        assert refusal(PeerStreamReader(authenticator), captured, later_ms) == "replay"
    # Past the window its time alone refuses it, so the cache has let it go.
    late_ms = NOW_MS + HANDSHAKE_CLOCK_SKEW_MS_MAX + 1
    assert refusal(PeerStreamReader(authenticator), captured, late_ms) == "clock_skew"
    PeerStreamReader(authenticator).feed(opening(wall_ms=late_ms, number=2), late_ms)
    assert authenticator.replay_entries == 1
    # A fresh handshake from the same sender is fine: only the nonce is remembered.
    PeerStreamReader(authenticator).feed(opening(wall_ms=late_ms, number=3), late_ms)


def test_a_full_replay_cache_shrinks_the_window_instead_of_forgetting() -> None:
    authenticator = receiver(replay_entries_max=2)
    openings = [opening(wall_ms=NOW_MS - 10 + index, number=index) for index in range(3)]
    for data in openings:
        PeerStreamReader(authenticator).feed(data, NOW_MS)
    assert authenticator.replay_entries == 2
    # The oldest was forgotten: its replay, and anything stamped no later, is refused.
    assert refusal(PeerStreamReader(authenticator), openings[0]) == "replay_floor"
    older = opening(wall_ms=NOW_MS - 10, number=9)
    assert refusal(PeerStreamReader(authenticator), older) == "replay_floor"
    assert refusal(PeerStreamReader(authenticator), openings[2]) == "replay"
    PeerStreamReader(authenticator).feed(opening(number=10), NOW_MS)  # fresh ones pass


def test_keys_rotate_without_a_refused_stream() -> None:
    # Step 1 of a rotation: this node already holds the new key, the sender signs with the old.
    assert (
        PeerStreamReader(receiver(keys=(KEY, OLD_KEY))).feed(opening(keys=(OLD_KEY,)), NOW_MS) == []
    )
    # Step 2: the sender signs with the new key, this node still lists the old one first.
    reader = PeerStreamReader(receiver(keys=(OLD_KEY, KEY)))
    reader.feed(opening(keys=(KEY, OLD_KEY), number=2), NOW_MS)
    assert reader.source == SENDER
    # Step 3: the old key is retired here; a sender still on it is refused.
    assert refusal(PeerStreamReader(receiver()), opening(keys=(OLD_KEY,), number=3)) == "bad_mac"


def test_an_oversized_handshake_is_refused_before_it_is_buffered() -> None:
    for length in (HANDSHAKE_FRAME_SIZE_BYTES_MAX + 1, PEER_FRAME_SIZE_BYTES_MAX):
        reader = PeerStreamReader(receiver())
        header = PREAMBLE + length.to_bytes(4, "big")
        assert refusal(reader, header) == "handshake_too_large"
    # A legal length trickled in byte by byte: the reader never holds more than one opening.
    reader = PeerStreamReader(receiver())
    data = PREAMBLE + HANDSHAKE_FRAME_SIZE_BYTES_MAX.to_bytes(4, "big") + b"\x01" * 100
    for index in range(len(data)):
        reader.feed(data[index : index + 1], NOW_MS)
        assert reader.buffered_bytes == index + 1 <= OPENING_SIZE_BYTES_MAX


def test_after_the_handshake_frames_are_capped_by_the_peer_frame_cap() -> None:
    reader = PeerStreamReader(receiver())
    reader.feed(opening(), NOW_MS)
    partial = frame(b"p" * 1000)[:600]
    assert reader.feed(partial, NOW_MS) == [] and reader.buffered_bytes == 600
    over = PeerStreamReader(receiver())
    assert refusal(over, opening() + (PEER_FRAME_SIZE_BYTES_MAX + 1).to_bytes(4, "big")) == (
        "bad_frame"
    )


def test_malformed_openings_are_refused() -> None:
    assert refusal(PeerStreamReader(receiver()), b"GCPEER1\n") == "bad_preamble"
    assert refusal(PeerStreamReader(receiver()), b"HTTP") == "bad_preamble"
    # The version-1 opening: the preamble and a bare address frame.
    address_frame = PREAMBLE + frame(SENDER.encode())
    assert refusal(PeerStreamReader(receiver()), address_frame) == "bad_handshake"
    wrong_version = bytearray(opening())
    wrong_version[len(PREAMBLE) + 4] = 9
    assert refusal(PeerStreamReader(receiver()), bytes(wrong_version)) == "bad_handshake"
    assert refusal(PeerStreamReader(receiver()), PREAMBLE + bytes(4)) == "bad_handshake"
    truncated = opening()
    body = truncated[len(PREAMBLE) + 5 : -1]
    assert refusal(PeerStreamReader(receiver()), PREAMBLE + frame(body)) == "bad_handshake"


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(ValueError):
        PeerAuthenticator(SENDER, [])
    with pytest.raises(ValueError):
        PeerAuthenticator("no port", [KEY])
    with pytest.raises(ValueError):
        PeerAuthenticator(SENDER, [KEY]).opening(RECEIVER, NOW_MS, b"short")
    with pytest.raises(ValueError):
        PeerAuthenticator(SENDER, [KEY]).opening("h" * 300 + ":1", NOW_MS, nonce(1))


@given(st.lists(st.binary(max_size=80), max_size=12))
def test_arbitrary_input_is_refused_cleanly_and_stays_small(chunks: list[bytes]) -> None:
    reader = PeerStreamReader(receiver())
    for chunk in [PREAMBLE, *chunks]:
        try:
            assert reader.feed(chunk, NOW_MS) == []
        except PeerStreamError:
            return
        assert reader.handshaking and reader.buffered_bytes <= OPENING_SIZE_BYTES_MAX
