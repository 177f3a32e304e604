"""Hypothesis helper shared by the codec fuzz tests: damage a valid byte stream a little, so the
decoders are fuzzed near valid input, where bugs hide, not only with random noise."""

from __future__ import annotations

from hypothesis import strategies as st

#: Most edits applied to one stream.
EDITS_MAX = 4


@st.composite
def mutated(draw, streams: st.SearchStrategy[bytes], replacement_bytes: st.SearchStrategy[int]):
    """A stream from ``streams`` with 1..EDITS_MAX bytes replaced, inserted or deleted."""
    stream = bytearray(draw(streams))
    for _ in range(draw(st.integers(1, EDITS_MAX))):
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "replace":
            stream[at] = draw(replacement_bytes)
        elif kind == "insert":
            stream[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del stream[at : at + draw(st.integers(1, 4))]
    return bytes(stream)
