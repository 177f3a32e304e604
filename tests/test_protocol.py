"""The native protocol codec: round trips, stream splitting, caps, and fuzzing of every decoder."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutations import mutated

from gossipcache.errors import ProtocolError, ValueTooLarge
from gossipcache.limits import FRAME_SIZE_BYTES_MAX, TTL_MS_MAX
from gossipcache.wire.framing import PROTOCOL_VERSION, FrameDecoder, FrameTooLarge, frame
from gossipcache.wire.native import (
    CONSISTENCY_LEVELS,
    ERROR_BAD_REQUEST,
    ERROR_CODES,
    ERROR_UNKNOWN_OP,
    OP_ARGS,
    OPS,
    OPS_WITH_CONSISTENCY,
    REQUEST_ID_MAX,
    RESPONSE_ARRAY_LEN_MAX,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    BadRequest,
    Request,
    RequestDecoder,
    Response,
    ResponseEncoder,
    _check_args,
    _explain_invalid,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    peek_request_id,
)

FAST = settings(max_examples=150, deadline=None)
FUZZ = settings(max_examples=400, deadline=None)

request_ids = st.integers(0, REQUEST_ID_MAX)
keys = st.binary(max_size=64)
values = st.binary(max_size=256)
put_ttls = st.none() | st.integers(1, TTL_MS_MAX)
expire_ttls = st.none() | st.integers(-TTL_MS_MAX, TTL_MS_MAX)

ARG_STRATEGIES = {
    "ping": st.tuples(),
    "get": st.tuples(keys),
    "put": st.tuples(keys, values, put_ttls),
    "del": st.tuples(keys),
    "expire": st.tuples(keys, expire_ttls),
    "ttl": st.tuples(keys),
    "stats": st.tuples(),
    "members": st.tuples(),
    "exists": st.tuples(keys),
    "persist": st.tuples(keys),
    "auth": st.tuples(st.binary(min_size=1, max_size=64)),
    "topology": st.tuples(),
    "leave": st.tuples(),
}

assert set(ARG_STRATEGIES) == OPS == set(OP_ARGS)

levels = st.sampled_from(CONSISTENCY_LEVELS)


def _args_of(op: str) -> st.SearchStrategy[tuple]:
    """An op's arguments, with a consistency level after them or not where the op takes one."""
    args = ARG_STRATEGIES[op]
    if op not in OPS_WITH_CONSISTENCY:
        return args
    return args | st.tuples(args, levels).map(lambda pair: (*pair[0], pair[1]))


requests = st.sampled_from(sorted(OPS)).flatmap(
    lambda op: st.builds(Request, request_ids, st.just(op), _args_of(op))
)

# What an OK payload can be: results of get / ttl / stats / members, and anything msgpack holds.
payload_leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=64)
) | st.text(max_size=32)
ok_payloads = st.recursive(
    payload_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
responses = st.one_of(
    st.builds(Response, request_ids, st.just(STATUS_OK), ok_payloads),
    st.builds(Response, request_ids, st.just(STATUS_NOT_FOUND), st.none()),
    st.builds(
        error_response, request_ids, st.sampled_from(sorted(ERROR_CODES)), st.text(max_size=64)
    ),
)


def decode_frames(stream: bytes, chunk_sizes: list[int]) -> list[bytes]:
    """Feed ``stream`` in chunks of the given sizes (cycled) and collect every frame body."""
    decoder = FrameDecoder()
    bodies = []
    position = 0
    index = 0
    while position < len(stream):
        size = chunk_sizes[index % len(chunk_sizes)] if chunk_sizes else len(stream)
        decoder.feed(stream[position : position + size])
        bodies.extend(decoder.pop_frames())
        position += size
        index += 1
    assert decoder.buffered_size_bytes == 0
    return bodies


def body_of(frame: bytes) -> bytes:
    decoder = FrameDecoder()
    decoder.feed(frame)
    (body,) = decoder.pop_frames()
    return body


# -- round trips -----------------------------------------------------------------------------


@FAST
@given(requests)
def test_request_round_trip(request):
    frame = encode_request(request)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert frame[4] == PROTOCOL_VERSION
    assert decode_request(body_of(frame)) == request
    assert peek_request_id(body_of(frame)) == request.request_id


@FAST
@given(responses)
def test_response_round_trip(response):
    assert decode_response(body_of(encode_response(response))) == response


@FAST
@given(
    st.lists(requests, min_size=1, max_size=20),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
)
def test_split_stream_gives_same_frames(batch, chunk_sizes):
    stream = b"".join(encode_request(request) for request in batch)
    bodies = decode_frames(stream, chunk_sizes)
    assert [decode_request(body) for body in bodies] == batch


def test_many_pipelined_frames_in_one_feed():
    batch = [Request(i, "put", (b"key:%d" % i, b"v" * (i % 50), None)) for i in range(2000)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_request(request) for request in batch))
    assert [decode_request(body) for body in decoder.pop_frames()] == batch
    assert decoder.pop_frames() == []


def test_partial_frame_stays_buffered():
    frame = encode_request(Request(1, "get", (b"k",)))
    decoder = FrameDecoder()
    decoder.feed(frame + frame[:-1])
    assert len(decoder.pop_frames()) == 1
    assert decoder.buffered_size_bytes == len(frame) - 1
    decoder.feed(frame[-1:])
    assert decode_request(decoder.pop_frames()[0]) == Request(1, "get", (b"k",))


def test_largest_value_fits_in_a_frame():
    request = Request(REQUEST_ID_MAX, "put", (b"k" * 65536, b"v" * (16 * 1024 * 1024), TTL_MS_MAX))
    frame = encode_request(request)
    assert len(frame) - 4 <= FRAME_SIZE_BYTES_MAX
    assert decode_request(body_of(frame)) == request


# -- caps ------------------------------------------------------------------------------------


def test_oversized_length_rejected_before_buffering():
    decoder = FrameDecoder(frame_size_bytes_max=1000)
    with pytest.raises(FrameTooLarge, match="exceeds"):
        decoder.feed(struct.pack(">I", 1001))
    # The decoder stays broken: the stream cannot be resynchronised.
    with pytest.raises(ProtocolError):
        decoder.feed(b"x")
    with pytest.raises(ProtocolError):
        decoder.pop_frames()


def test_oversized_length_after_valid_frames_rejected():
    decoder = FrameDecoder(frame_size_bytes_max=1000)
    frame = encode_request(Request(1, "ping", ()))
    decoder.feed(frame + struct.pack(">I", 2**32 - 1))
    with pytest.raises(ProtocolError):
        decoder.pop_frames()


def test_default_cap_rejects_just_above():
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", FRAME_SIZE_BYTES_MAX))  # at the cap: fine, waits for the body
    assert decoder.pop_frames() == []
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(struct.pack(">I", FRAME_SIZE_BYTES_MAX + 1))


def test_empty_frame_and_bad_version_rejected():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="empty"):
        decoder.feed(struct.pack(">I", 0))
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">IB", 2, PROTOCOL_VERSION + 1) + b"\x90")
    with pytest.raises(ProtocolError, match="version"):
        decoder.pop_frames()


def test_encoders_refuse_oversized_frames():
    with pytest.raises(ValueTooLarge):
        encode_request(Request(1, "put", (b"k", b"v" * FRAME_SIZE_BYTES_MAX, None)))
    with pytest.raises(ValueTooLarge):
        encode_response(Response(1, STATUS_OK, b"v" * FRAME_SIZE_BYTES_MAX))


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        Request(-1, "ping", ()),
        Request(2**32, "ping", ()),
        Request(True, "ping", ()),
        Request(1, "nope", ()),
        Request(1, "get", ()),
        Request(1, "get", ("key",)),
        Request(1, "put", (b"k", b"v")),
        Request(1, "put", (b"k", b"v", 0)),
        Request(1, "put", (b"k", b"v", 1.5)),
        Request(1, "expire", (b"k", TTL_MS_MAX + 1)),
        Request(1, "ping", (b"extra",)),
    ],
)
def test_invalid_requests(request_):
    with pytest.raises(ValueError):
        encode_request(request_)
    # The same bytes from a peer are a BadRequest.
    body = msgpack.packb((request_.request_id, request_.op, *request_.args))
    with pytest.raises(BadRequest):
        decode_request(body)


arg_values = st.one_of(
    st.none(),
    st.booleans(),
    st.binary(max_size=4),
    st.text(max_size=4),
    st.sampled_from([*CONSISTENCY_LEVELS, "ONE", "any", ""]),
    st.integers(-(2**50), 2**50),
    st.sampled_from([0, 1, -1, TTL_MS_MAX, TTL_MS_MAX + 1, -TTL_MS_MAX, -TTL_MS_MAX - 1]),
    st.floats(allow_nan=False),
)


@FAST
@given(request_ids, st.sampled_from(sorted(OPS)), st.lists(arg_values, max_size=4))
def test_fast_validation_agrees_with_precise_checks(request_id, op, args):
    """The decoder's per-op fast checks accept exactly what the precise checker accepts."""
    body = msgpack.packb((request_id, op, *args))
    try:
        _check_args(op, tuple(args))
    except ProtocolError:
        with pytest.raises(BadRequest) as caught:
            decode_request(body)
        assert caught.value.request_id == request_id
        assert "invalid" not in str(caught.value)  # the precise reason, never the fallback
    else:
        assert decode_request(body) == Request(request_id, op, tuple(args))


def test_bad_request_carries_id_and_code():
    with pytest.raises(BadRequest) as caught:
        decode_request(msgpack.packb([7, "frobnicate", b"k"]))
    assert (caught.value.code, caught.value.request_id) == (ERROR_UNKNOWN_OP, 7)
    with pytest.raises(BadRequest) as caught:
        decode_request(msgpack.packb([8, "get", "text key"]))
    assert (caught.value.code, caught.value.request_id) == (ERROR_BAD_REQUEST, 8)
    # Extra bytes after the array: the id is still recoverable.
    with pytest.raises(BadRequest) as caught:
        decode_request(msgpack.packb([9, "ping"]) + b"\xc0")
    assert caught.value.request_id == 9


def test_peek_request_id():
    assert peek_request_id(msgpack.packb([5, "get"])[:-2]) == 5
    assert peek_request_id(b"") is None
    assert peek_request_id(msgpack.packb(5)) is None
    assert peek_request_id(msgpack.packb([])) is None
    assert peek_request_id(msgpack.packb([-1, "ping"])) is None
    assert peek_request_id(msgpack.packb(["x", "ping"])) is None


@pytest.mark.parametrize(
    "message",
    [
        [1, 3, None],
        [1, STATUS_NOT_FOUND, b"x"],
        [1, STATUS_ERROR, "oops"],
        [1, STATUS_ERROR, ["code"]],
        [1, STATUS_ERROR, ["code", 5]],
        [2**32, STATUS_OK, None],
        [1, STATUS_OK],
        {"id": 1},
    ],
)
def test_invalid_responses(message):
    with pytest.raises(ProtocolError):
        decode_response(msgpack.packb(message))


def test_hostile_lengths_do_not_allocate():
    # A 6-byte body announcing a 4-billion-element array must fail fast, not allocate.
    for body in (b"\xdd\xff\xff\xff\xff\x00", b"\xdf\xff\xff\xff\xff\x00", b"\xc6\xff\xff\xff\xff"):
        with pytest.raises(ProtocolError):
            decode_request(body)
        with pytest.raises(ProtocolError):
            decode_response(body)


# -- fuzz: decoders only ever raise ProtocolError ---------------------------------------------


def decode_body_every_way(body: bytes) -> None:
    """Decode ``body`` as a request and as a response; only ProtocolError may escape."""
    for decode in (decode_request, decode_response):
        with contextlib.suppress(ProtocolError):
            decode(body)
    request_id = peek_request_id(body)
    assert request_id is None or 0 <= request_id <= REQUEST_ID_MAX


def decode_everything(stream: bytes, chunk_sizes: list[int]) -> None:
    decoder = FrameDecoder(frame_size_bytes_max=4096)
    position = 0
    index = 0
    try:
        while position < len(stream):
            size = chunk_sizes[index % len(chunk_sizes)]
            decoder.feed(stream[position : position + size])
            position += size
            index += 1
            for body in decoder.pop_frames():
                decode_body_every_way(body)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(1, 64), min_size=1, max_size=5))
def test_fuzz_arbitrary_bytes(data, chunk_sizes):
    decode_everything(data, chunk_sizes)
    decode_body_every_way(data)


mutated_frames = mutated(
    st.lists(
        st.one_of(requests.map(encode_request), responses.map(encode_response)),
        min_size=1,
        max_size=4,
    ).map(b"".join),
    st.integers(0, 255),
)


@FUZZ
@given(mutated_frames, st.lists(st.integers(1, 64), min_size=1, max_size=5))
def test_fuzz_mutated_frames(stream, chunk_sizes):
    decode_everything(stream, chunk_sizes)


@FUZZ
@given(st.one_of(requests.map(encode_request), responses.map(encode_response)), st.data())
def test_fuzz_mutated_bodies(frame, data):
    body = bytearray(body_of(frame))
    at = data.draw(st.integers(0, len(body) - 1))
    body[at] = data.draw(st.integers(0, 255))
    decode_body_every_way(bytes(body))


def _outcome(decode, body: bytes):
    try:
        return ("ok", decode(body))
    except ProtocolError as error:
        return ("error", type(error), getattr(error, "code", None), getattr(error, "request_id", 0))


@FAST
@given(
    st.lists(
        st.one_of(
            requests.map(lambda r: body_of(encode_request(r))),
            st.binary(max_size=40),
            requests.map(lambda r: body_of(encode_request(r)) + b"\x01"),  # trailing byte
        ),
        max_size=8,
    )
)
def test_reusable_decoder_agrees_with_one_shot_decoder(bodies: list[bytes]) -> None:
    decoder = RequestDecoder()
    for body in bodies:
        assert _outcome(decoder.decode, body) == _outcome(decode_request, body)


@FAST
@given(responses)
def test_reusable_encoder_agrees_with_one_shot_encoder(response) -> None:
    assert ResponseEncoder().encode(*response) == encode_response(response)


@FAST
@given(
    st.lists(requests.map(encode_request), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=400), max_size=4),
    st.binary(max_size=12),
)
def test_parse_equals_feed_then_pop(frames, cuts, junk) -> None:
    """The fast path agrees with the general one on any split, including a broken tail."""
    wire = b"".join(frames) + junk
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    fast, slow = FrameDecoder(), FrameDecoder()
    for start, stop in zip(bounds, bounds[1:]):
        try:
            got_slow = ("ok", (slow.feed(wire[start:stop]), slow.pop_frames())[1])
        except ProtocolError as error:
            got_slow = ("error", str(error))
        try:
            got_fast = ("ok", fast.parse(wire[start:stop]))
        except ProtocolError as error:
            got_fast = ("error", str(error))
        assert got_fast == got_slow
        if got_fast[0] == "error":
            break


# -- exact reasons and boundaries (found by mutation testing, docs/mutation-membership.md) -----


def test_parse_fast_path_refuses_what_the_general_path_refuses():
    """Whole frames in one read take the fast path; it must not accept what ``feed`` refuses."""
    small = FrameDecoder(frame_size_bytes_max=8)
    with pytest.raises(FrameTooLarge, match="^frame length 20 exceeds the cap of 8$"):
        small.parse(struct.pack(">IB", 20, PROTOCOL_VERSION) + b"x" * 19)
    with pytest.raises(ProtocolError, match="^empty frame"):
        FrameDecoder().parse(b"\x00\x00\x00\x00" + bytes([PROTOCOL_VERSION]))
    # A bad version byte, with a valid-looking version byte elsewhere in the frame.
    bad_version = struct.pack(">IB", 5, 7) + bytes([PROTOCOL_VERSION]) + b"abc"
    with pytest.raises(ProtocolError, match="^unsupported protocol version 7"):
        FrameDecoder().parse(bad_version)
    exact = FrameDecoder(frame_size_bytes_max=5)
    assert exact.parse(struct.pack(">IB", 5, PROTOCOL_VERSION) + b"abcd") == [b"abcd"]
    assert exact.parse(frame(b"")) == [b""] and exact.buffered_size_bytes == 0


def test_parse_finishes_the_buffered_frame_before_reading_new_ones():
    inner = frame(b"z")  # the outer frame's body is itself a well-formed frame
    outer = frame(inner)
    decoder = FrameDecoder()
    assert decoder.parse(outer[:5]) == [] and decoder.buffered_size_bytes == 5
    assert decoder.parse(outer[5:]) == [inner]
    assert decoder.buffered_size_bytes == 0


def test_parse_keeps_raising_after_an_error():
    decoder = FrameDecoder(frame_size_bytes_max=8)
    with pytest.raises(FrameTooLarge):
        decoder.parse(struct.pack(">I", 9))
    with pytest.raises(FrameTooLarge):
        decoder.parse(frame(b"ok"))


MAX = TTL_MS_MAX
BAD_REQUESTS = [
    # (message, code, request_id, str(BadRequest)) -- the reason a client is told
    (
        (1, "get"),
        ERROR_BAD_REQUEST,
        1,
        "op 'get' takes 1 arguments (2 with a consistency level), got 0",
    ),
    ((1, "ping", b"x"), ERROR_BAD_REQUEST, 1, "op 'ping' takes 0 arguments, got 1"),
    ((1, "get", "k"), ERROR_BAD_REQUEST, 1, "op 'get' argument 0 (key) must be bin, got str"),
    (
        (1, "put", b"k", "v", None),
        ERROR_BAD_REQUEST,
        1,
        "op 'put' argument 1 (value) must be bin, got str",
    ),
    (
        (2, "put", b"k", b"v", 1.5),
        ERROR_BAD_REQUEST,
        2,
        "op 'put' argument 2 (ttl_ms) must be an int or nil, got float",
    ),
    ((3, "put", b"k", b"v", 0), ERROR_BAD_REQUEST, 3, f"op 'put' ttl_ms 0 is outside [1, {MAX}]"),
    (
        (3, "put", b"k", b"v", MAX + 1),
        ERROR_BAD_REQUEST,
        3,
        f"op 'put' ttl_ms {MAX + 1} is outside [1, {MAX}]",
    ),
    (
        (4, "expire", b"k", -MAX - 1),
        ERROR_BAD_REQUEST,
        4,
        f"op 'expire' ttl_ms {-MAX - 1} is outside [{-MAX}, {MAX}]",
    ),
    (
        (4, "expire", b"k", MAX + 1),
        ERROR_BAD_REQUEST,
        4,
        f"op 'expire' ttl_ms {MAX + 1} is outside [{-MAX}, {MAX}]",
    ),
    ((5, 7), ERROR_BAD_REQUEST, 5, "op must be a str, got int"),
    ((6, "nope"), ERROR_UNKNOWN_OP, 6, "unknown op 'nope'"),
    (
        (-1, "ping"),
        ERROR_BAD_REQUEST,
        None,
        "request id must be an int in [0, 2**32), got -1",
    ),
    (
        (2**32, "ping"),
        ERROR_BAD_REQUEST,
        None,
        "request id must be an int in [0, 2**32), got 4294967296",
    ),
    (("x", "ping"), ERROR_BAD_REQUEST, None, "request id must be an int in [0, 2**32), got 'x'"),
    ((7,), ERROR_BAD_REQUEST, 7, "request must be an array [request_id, op, *args]"),
    (8, ERROR_BAD_REQUEST, None, "request must be an array [request_id, op, *args]"),
]


@pytest.mark.parametrize(("message", "code", "request_id", "text"), BAD_REQUESTS)
def test_bad_requests_name_the_precise_reason(message, code, request_id, text):
    body = msgpack.packb(message)
    for decode in (decode_request, RequestDecoder().decode):
        with pytest.raises(BadRequest) as caught:
            decode(body)
        assert (str(caught.value), caught.value.code) == (text, code)
        assert caught.value.request_id == request_id


def test_reusable_decoder_recovers_after_bad_bodies():
    decoder = RequestDecoder()
    for bad in (b"\xc1", msgpack.packb([1, "ping"]) + b"\x00", msgpack.packb([1, "get"])):
        with pytest.raises(BadRequest):
            decoder.decode(bad)
        assert decoder.decode(msgpack.packb([9, "get", b"k"])) == Request(9, "get", (b"k",))


def test_malformed_msgpack_is_described():
    with pytest.raises(BadRequest, match=r"^malformed msgpack \(FormatError: "):
        decode_request(b"\xc1")
    with pytest.raises(ProtocolError, match=r"^malformed msgpack \(FormatError: "):
        decode_response(b"\xc1")


def test_ttl_bounds_are_inclusive():
    for args in ((b"k", b"v", 1), (b"k", b"v", MAX), (b"k", b"v", None)):
        _check_args("put", args)
        assert decode_request(msgpack.packb((1, "put", *args))).args == args
    for ttl_ms in (-MAX, -1, 0, MAX, None):
        _check_args("expire", (b"k", ttl_ms))


def test_the_fallback_explanation_names_the_op():
    """Reached only if the fast checks and ``_check_args`` ever disagree."""
    error = _explain_invalid((3, "ping"), None)
    assert (str(error), error.request_id, error.code) == (
        "invalid 'ping' request",
        3,
        "bad_request",
    )


def test_peek_request_id_bounds():
    assert peek_request_id(msgpack.packb([5])) == 5  # one element is enough
    assert peek_request_id(msgpack.packb([REQUEST_ID_MAX, "ping"])) == REQUEST_ID_MAX
    assert peek_request_id(msgpack.packb([REQUEST_ID_MAX + 1, "ping"])) is None
    assert peek_request_id(msgpack.packb([0, "ping"])) == 0


_ERROR_PAYLOAD = "an ERROR response's payload must be [code: str, message: str]"
RESPONSE_ERRORS = [
    (Response(1, 7, None), "unknown status 7"),
    (Response(1, "0", None), "unknown status '0'"),
    (Response(1, STATUS_NOT_FOUND, b"x"), "a NOT_FOUND response carries no payload"),
    (
        Response(1, STATUS_ERROR, "oops"),
        _ERROR_PAYLOAD,
    ),
    (Response(1, STATUS_ERROR, (5, "message")), _ERROR_PAYLOAD),
    (Response(1, STATUS_ERROR, ("code", 5)), _ERROR_PAYLOAD),
    (Response(1, STATUS_ERROR, ("code",)), _ERROR_PAYLOAD),
    (Response(2**32, STATUS_OK, None), "request id must be an int in [0, 2**32), got 4294967296"),
    (Response(-1, STATUS_OK, None), "request id must be an int in [0, 2**32), got -1"),
]


@pytest.mark.parametrize(("response", "text"), RESPONSE_ERRORS)
def test_invalid_responses_are_refused_both_ways_with_the_reason(response, text):
    with pytest.raises(ValueError) as caught:
        encode_response(response)
    assert str(caught.value) == text
    with pytest.raises(ProtocolError) as caught:
        decode_response(msgpack.packb(list(response)))
    assert str(caught.value) == text


def test_reusable_encoder_recovers_after_an_unencodable_payload():
    encoder = ResponseEncoder()
    with pytest.raises(ValueError, match="^cannot encode payload: "):
        encoder.encode(1, STATUS_OK, object())
    assert encoder.encode(2, STATUS_OK, b"v") == encode_response(Response(2, STATUS_OK, b"v"))
    with pytest.raises(ValueError, match="^cannot encode payload: "):
        encode_response(Response(1, STATUS_OK, object()))


def test_frame_cap_is_inclusive_and_must_be_positive():
    assert (
        frame(b"x" * 4, frame_size_bytes_max=5)
        == struct.pack(">IB", 5, PROTOCOL_VERSION) + b"x" * 4
    )
    with pytest.raises(ValueTooLarge, match="^frame of 6 bytes exceeds 5$"):
        frame(b"x" * 5, frame_size_bytes_max=5)
    assert FrameDecoder(frame_size_bytes_max=1).parse(frame(b"")) == [b""]
    with pytest.raises(ValueError, match="^frame_size_bytes_max must be >= 1, got 0$"):
        FrameDecoder(frame_size_bytes_max=0)


def test_an_empty_frame_after_a_valid_one_is_refused():
    decoder = FrameDecoder()
    decoder.feed(frame(b"a") + b"\x00\x00\x00\x00" + bytes([PROTOCOL_VERSION]))
    with pytest.raises(ProtocolError, match="^empty frame"):
        decoder.pop_frames()


def test_expire_ttl_bounds_pass_the_fast_checks():
    for ttl_ms in (-MAX, MAX):
        request = Request(1, "expire", (b"k", ttl_ms))
        assert decode_request(body_of(encode_request(request))) == request


def test_encode_request_names_the_reason():
    with pytest.raises(
        ValueError, match=r"^op 'get' takes 1 arguments \(2 with a consistency level\), got 0$"
    ):
        encode_request(Request(1, "get", ()))


def test_responses_are_unpacked_within_limits():
    for message in ([1, STATUS_OK], {"id": 1}):
        with pytest.raises(ProtocolError, match=r"^response must be an array \[request_id"):
            decode_response(msgpack.packb(message))
    too_long = msgpack.packb([1, STATUS_OK, [0] * (RESPONSE_ARRAY_LEN_MAX + 1)])
    ext = msgpack.packb([1, STATUS_OK, msgpack.ExtType(1, b"x")])
    for body in (too_long, ext):
        with pytest.raises(ProtocolError, match="^malformed msgpack"):
            decode_response(body)
    fits = msgpack.packb([1, STATUS_OK, [0] * RESPONSE_ARRAY_LEN_MAX])
    assert len(decode_response(fits).payload) == RESPONSE_ARRAY_LEN_MAX


# -- the optional consistency level (issue 9) ---------------------------------------------------


def test_data_ops_take_an_optional_consistency_level():
    assert {"get", "put", "del", "exists", "expire", "ttl", "persist"} == OPS_WITH_CONSISTENCY
    decoder = RequestDecoder()
    for level in CONSISTENCY_LEVELS:
        for op, args in (("get", (b"k",)), ("put", (b"k", b"v", None)), ("expire", (b"k", 5))):
            body = msgpack.packb((3, op, *args, level))
            assert decode_request(body) == Request(3, op, (*args, level))
            assert decoder.decode(body) == Request(3, op, (*args, level))
            # The server's form: the op tagged, so its dispatcher needs no argument count.
            assert decoder.decode_message(body) == (3, f"{op}+consistency", *args, level)
    # Without a level the message comes back as it was unpacked (the hot path).
    assert decoder.decode_message(msgpack.packb((4, "get", b"k"))) == (4, "get", b"k")


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ((5, "get", b"k", "eventual"), "op 'get' consistency must be one of one, quorum, all"),
        ((5, "get", b"k", "ONE"), "op 'get' consistency must be one of one, quorum, all"),
        ((5, "put", b"k", b"v", None, 3), "op 'put' consistency must be one of one, quorum, all"),
        ((5, "get", b"k", "one", "one"), "op 'get' takes 1 arguments (2 with a consistency level)"),
        ((5, "ping", "one"), "op 'ping' takes 0 arguments, got 1"),
        ((5, "auth", b"pw", "one"), "op 'auth' takes 1 arguments, got 2"),
        ((5, "topology", "one"), "op 'topology' takes 0 arguments, got 1"),
        ((5, "get+consistency", b"k", "one"), "unknown op 'get+consistency'"),
    ],
)
def test_a_bad_consistency_level_is_a_bad_request(message, text):
    body = msgpack.packb(message)
    for decode in (decode_request, RequestDecoder().decode_message):
        with pytest.raises(BadRequest) as caught:
            decode(body)
        assert str(caught.value).startswith(text)
        assert caught.value.request_id == 5
        expected = ERROR_UNKNOWN_OP if "unknown op" in text else ERROR_BAD_REQUEST
        assert caught.value.code == expected
    with pytest.raises(ValueError):
        encode_request(Request(message[0], message[1], message[2:]))
