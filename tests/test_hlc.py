"""Hybrid logical clocks (gossipcache/hlc.py) against a model written from the paper.

The model keeps ``(l, c)`` as two ints and follows Kulkarni et al.'s send and receive rules case
by case, plus this project's two additions: a counter past 65535 carries into ``l``, and a remote
stamp more than the bound ahead of the local wall clock is refused. The clock under test packs
``(l, c)`` into one int and takes a shortcut (``max(stamp + 1, wall << 16)``); the stateful test
checks the two agree step by step while several clocks exchange stamps under wall clocks that
jump back and forward.
"""

from __future__ import annotations

import itertools
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from benchmarks import hlc_bench
from gossipcache.errors import ProtocolError
from gossipcache.hlc import (
    LOGICAL_MAX,
    MAX_OFFSET_MS_DEFAULT,
    MAX_OFFSET_MS_MAX,
    NODE_TAG_MAX,
    STAMP_MAX,
    WALL_MS_MAX,
    ClockExhausted,
    HybridClock,
    InvalidVersion,
    Version,
    VersionTooFarAhead,
    decode_version,
    encode_version,
    make_stamp,
    newer,
    node_tag,
    stamp_logical,
    stamp_wall_ms,
)
from gossipcache.limits import EXPIRES_AT_MS_MAX
from tests.mutations import mutated

#: A plausible wall clock reading (November 2023), far from both ends of the 48-bit range.
WALL_MS = 1_700_000_000_000

stamps = st.integers(0, STAMP_MAX)
tags = st.integers(0, NODE_TAG_MAX)
versions = st.builds(Version, stamps, tags)


class ModelClock:
    """Kulkarni et al.'s HLC with explicit ``(l, c)``, plus the overflow carry and the refusal."""

    def __init__(self, max_offset_ms: int) -> None:
        self.max_offset_ms = max_offset_ms
        self.l = 0
        self.c = 0
        self.refused = 0
        self.overflows = 0

    def _set(self, l_next: int, c_next: int, wall_ms: int) -> int:
        if c_next > LOGICAL_MAX:
            l_next, c_next = l_next + 1, 0
            if l_next > wall_ms:
                self.overflows += 1
        self.l, self.c = l_next, c_next
        return make_stamp(l_next, c_next)

    def send(self, wall_ms: int) -> int:
        l_next = max(self.l, wall_ms)
        c_next = self.c + 1 if l_next == self.l else 0
        return self._set(l_next, c_next, wall_ms)

    def receive(self, remote: int, wall_ms: int) -> int | None:
        l_m, c_m = stamp_wall_ms(remote), stamp_logical(remote)
        if l_m > wall_ms + self.max_offset_ms:
            self.refused += 1
            return None
        l_next = max(self.l, l_m, wall_ms)
        if l_next == self.l == l_m:
            c_next = max(self.c, c_m) + 1
        elif l_next == self.l:
            c_next = self.c + 1
        elif l_next == l_m:
            c_next = c_m + 1
        else:
            c_next = 0
        return self._set(l_next, c_next, wall_ms)


# --- stamps and versions -------------------------------------------------------------------------


@given(st.integers(0, WALL_MS_MAX), st.integers(0, LOGICAL_MAX))
def test_stamp_fields_round_trip(wall_ms: int, logical: int) -> None:
    stamp = make_stamp(wall_ms, logical)
    assert 0 <= stamp <= STAMP_MAX
    assert (stamp_wall_ms(stamp), stamp_logical(stamp)) == (wall_ms, logical)


@given(
    st.integers(0, WALL_MS_MAX),
    st.integers(0, LOGICAL_MAX),
    st.integers(0, WALL_MS_MAX),
    st.integers(0, LOGICAL_MAX),
)
def test_stamps_order_as_wall_then_logical(
    wall_a: int, logical_a: int, wall_b: int, logical_b: int
) -> None:
    a, b = make_stamp(wall_a, logical_a), make_stamp(wall_b, logical_b)
    assert (a < b) == ((wall_a, logical_a) < (wall_b, logical_b))


def test_stamp_layout_is_48_bits_of_ms_and_16_of_counter() -> None:
    assert make_stamp(1, 0) == 1 << 16
    assert make_stamp(0, 1) == 1
    assert make_stamp(WALL_MS_MAX, LOGICAL_MAX) == STAMP_MAX == 2**64 - 1
    # Expiry instants and stamps share the 48-bit range: an expiry fits a stamp's wall part.
    assert WALL_MS_MAX == EXPIRES_AT_MS_MAX


@pytest.mark.parametrize(
    ("wall_ms", "logical", "message"),
    [
        (-1, 0, r"wall_ms -1 outside \[0, 281474976710655\]"),
        (WALL_MS_MAX + 1, 0, "wall_ms 281474976710656 outside"),
        (0, -1, r"logical -1 outside \[0, 65535\]"),
        (0, LOGICAL_MAX + 1, "logical 65536 outside"),
    ],
)
def test_make_stamp_refuses_fields_out_of_range(wall_ms: int, logical: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_stamp(wall_ms, logical)


def test_make_stamp_accepts_both_ends() -> None:
    assert make_stamp(0, 0) == 0
    assert make_stamp(WALL_MS_MAX, 0) == WALL_MS_MAX << 16
    assert make_stamp(0, LOGICAL_MAX) == LOGICAL_MAX


def test_newer_orders_by_stamp_then_tag() -> None:
    assert newer(Version(2, 0), Version(1, NODE_TAG_MAX))
    assert not newer(Version(1, NODE_TAG_MAX), Version(2, 0))
    assert newer(Version(5, 2), Version(5, 1))
    assert not newer(Version(5, 1), Version(5, 2))
    # Equal versions (a redelivery, or a tag collision in the same ms): neither replaces the other.
    assert not newer(Version(5, 1), Version(5, 1))


@given(st.lists(versions, min_size=1, max_size=20, unique=True), st.randoms(use_true_random=False))
def test_last_writer_wins_is_the_same_on_every_replica(
    writes: list[Version], rng: random.Random
) -> None:
    """Replicas receiving the same distinct writes in any order keep the same one: the greatest."""
    winners = set()
    for _ in range(3):
        order = writes[:]
        rng.shuffle(order)
        kept = order[0]
        for version in order[1:]:
            if newer(version, kept):
                kept = version
        winners.add(kept)
    assert winners == {max(writes)}


def test_node_tag_is_stable_across_processes_and_releases() -> None:
    """Pinned values: a change of hash, seed or encoding would reorder ties between nodes that run
    different releases, so it must fail here first."""
    assert node_tag("node-a") == 4946567488793437375
    assert node_tag("") == 0
    assert node_tag("10.0.0.7:7000") == node_tag("10.0.0.7:7000")
    assert node_tag("node-a") != node_tag("node-b")


@given(st.text())
def test_node_tag_is_an_unsigned_64_bit_int_for_any_id(node_id: str) -> None:
    tag = node_tag(node_id)
    assert 0 <= tag <= NODE_TAG_MAX
    HybridClock(tag)  # accepted as a clock's tag


def test_node_tag_of_an_id_with_a_lone_surrogate() -> None:
    """A ``str`` that is not valid Unicode still has a tag (no UnicodeEncodeError), the tag of
    its surrogate-escaped bytes."""
    assert node_tag("node-\ud800") == node_tag("node-\ud800")
    assert node_tag("node-\ud800") != node_tag("node-")


def test_node_tags_of_distinct_ids_differ() -> None:
    ids = [f"node-{i}" for i in range(10_000)]
    assert len({node_tag(i) for i in ids}) == len(ids)


# --- encoding ------------------------------------------------------------------------------------


@given(versions)
def test_version_round_trips_through_msgpack(version: Version) -> None:
    encoded = msgpack.packb(encode_version(version))
    decoded = decode_version(msgpack.unpackb(encoded))
    assert decoded == version
    assert type(decoded) is Version


def test_decode_accepts_a_tuple_and_the_extremes() -> None:
    assert decode_version((0, 0)) == Version(0, 0)
    assert decode_version([STAMP_MAX, NODE_TAG_MAX]) == Version(STAMP_MAX, NODE_TAG_MAX)


NOT_A_PAIR = r"a version is \[stamp, node_tag\], not "
BAD_STAMP = "a version's stamp must be an unsigned 64-bit int"
BAD_TAG = "a version's node tag must be an unsigned 64-bit int"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (None, NOT_A_PAIR + "NoneType"),
        (7, NOT_A_PAIR + "int"),
        (b"\x00" * 16, NOT_A_PAIR + "bytes"),
        ("1,2", NOT_A_PAIR + "str"),
        ({"stamp": 1, "node_tag": 2}, NOT_A_PAIR + "dict"),
        ([], NOT_A_PAIR + "list"),
        ([1], NOT_A_PAIR + "list"),
        ([1, 2, 3], NOT_A_PAIR + "list"),
        ([-1, 0], BAD_STAMP),
        ([0, -1], BAD_TAG),
        ([STAMP_MAX + 1, 0], BAD_STAMP),
        ([0, NODE_TAG_MAX + 1], BAD_TAG),
        ([1.0, 2], BAD_STAMP),
        ([1, 2.0], BAD_TAG),
        ([True, 0], BAD_STAMP),
        ([0, False], BAD_TAG),
        (["1", 2], BAD_STAMP),
        ([None, 2], BAD_STAMP),
        ([1, b"\x02"], BAD_TAG),
    ],
)
def test_decode_refuses_what_is_not_a_version(obj: object, message: str) -> None:
    with pytest.raises(InvalidVersion, match=f"^{message}$"):
        decode_version(obj)


def test_invalid_version_is_a_protocol_error() -> None:
    """A peer sending a malformed version broke the protocol: the session closes the stream."""
    assert issubclass(InvalidVersion, ProtocolError)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)


@given(msgpack_values | st.lists(msgpack_values, min_size=2, max_size=2))
def test_decoder_fuzz_any_msgpack_value(obj: object) -> None:
    """Any decoded msgpack value is a valid version or a clear InvalidVersion, never a crash."""
    try:
        version = decode_version(obj)
    except InvalidVersion:
        return
    assert 0 <= version.stamp <= STAMP_MAX and 0 <= version.node_tag <= NODE_TAG_MAX


@settings(max_examples=300)
@given(
    mutated(st.builds(lambda v: msgpack.packb(encode_version(v)), versions), st.integers(0, 255))
)
def test_decoder_fuzz_damaged_bytes(stream: bytes) -> None:
    """Bytes near a valid encoding: msgpack's own errors belong to the framing layer; whatever
    msgpack decodes is a valid version or an InvalidVersion."""
    try:
        obj = msgpack.unpackb(stream)
    except (ValueError, msgpack.UnpackException):
        return
    try:
        version = decode_version(obj)
    except InvalidVersion:
        return
    assert msgpack.packb(encode_version(version)) == msgpack.packb(obj)


# --- one clock -----------------------------------------------------------------------------------


def test_constructor_validates_its_bounds() -> None:
    assert HybridClock(0).max_offset_ms == MAX_OFFSET_MS_DEFAULT == 500
    HybridClock(NODE_TAG_MAX, max_offset_ms=0)
    HybridClock(0, max_offset_ms=MAX_OFFSET_MS_MAX)
    for tag in (-1, NODE_TAG_MAX + 1):
        with pytest.raises(ValueError, match=rf"node_tag {tag} outside \[0, {NODE_TAG_MAX}\]"):
            HybridClock(tag)
    for offset_ms in (-1, MAX_OFFSET_MS_MAX + 1):
        with pytest.raises(ValueError, match=rf"max_offset_ms {offset_ms} outside \[0, 3600000\]"):
            HybridClock(0, max_offset_ms=offset_ms)


def test_now_follows_the_wall_clock_and_counts_within_a_millisecond() -> None:
    clock = HybridClock(7)
    assert clock.last_stamp == 0
    assert clock.now(WALL_MS) == make_stamp(WALL_MS, 0)
    assert clock.now(WALL_MS) == make_stamp(WALL_MS, 1)
    assert clock.now(WALL_MS + 3) == make_stamp(WALL_MS + 3, 0)
    assert clock.last_stamp == make_stamp(WALL_MS + 3, 0)
    assert clock.version(clock.last_stamp) == Version(make_stamp(WALL_MS + 3, 0), 7)


def test_wall_clock_stepping_back_keeps_l_and_counts_up() -> None:
    clock = HybridClock(0)
    clock.now(WALL_MS)
    assert clock.now(WALL_MS - 10_000) == make_stamp(WALL_MS, 1)
    assert clock.now(WALL_MS - 5_000) == make_stamp(WALL_MS, 2)
    assert clock.now(WALL_MS + 1) == make_stamp(WALL_MS + 1, 0)


def test_observe_cases_of_the_receive_rule() -> None:
    clock = HybridClock(0)
    clock.now(WALL_MS)  # (W, 0)
    # Remote ahead of both: its counter + 1.
    assert clock.observe(make_stamp(WALL_MS + 10, 4), WALL_MS) == make_stamp(WALL_MS + 10, 5)
    # Same l as the local one: the larger counter + 1.
    assert clock.observe(make_stamp(WALL_MS + 10, 9), WALL_MS) == make_stamp(WALL_MS + 10, 10)
    assert clock.observe(make_stamp(WALL_MS + 10, 2), WALL_MS) == make_stamp(WALL_MS + 10, 11)
    # Remote behind: the local counter + 1.
    assert clock.observe(make_stamp(WALL_MS - 50, 60), WALL_MS) == make_stamp(WALL_MS + 10, 12)
    # The wall clock passes both: counter 0.
    assert clock.observe(make_stamp(WALL_MS + 10, 70), WALL_MS + 20) == make_stamp(WALL_MS + 20, 0)


def test_refusal_exactly_beyond_the_bound() -> None:
    clock = HybridClock(0, max_offset_ms=500)
    clock.now(WALL_MS)
    at_bound = make_stamp(WALL_MS + 500, LOGICAL_MAX)
    assert clock.observe(at_bound, WALL_MS) > at_bound
    assert clock.refused_total == 0
    before = clock.last_stamp
    with pytest.raises(VersionTooFarAhead) as refused:
        clock.observe(make_stamp(WALL_MS + 1001, 0), WALL_MS + 500)
    assert refused.value.ahead_ms == 501
    assert "501 ms ahead" in str(refused.value) and "500 ms" in str(refused.value)
    assert clock.refused_total == 1
    assert clock.last_stamp == before  # a refusal changes nothing else
    assert clock.now(WALL_MS + 500) == before + 1
    with pytest.raises(VersionTooFarAhead):
        clock.observe(make_stamp(WALL_MS + 1001, 0), WALL_MS + 500)
    assert clock.refused_total == 2  # counted, not flagged


def test_bound_zero_refuses_anything_ahead() -> None:
    clock = HybridClock(0, max_offset_ms=0)
    clock.observe(make_stamp(WALL_MS, LOGICAL_MAX), WALL_MS)
    with pytest.raises(VersionTooFarAhead):
        clock.observe(make_stamp(WALL_MS + 1, 0), WALL_MS)
    assert clock.refused_total == 1


def test_logical_overflow_advances_the_wall_part_by_one_ms() -> None:
    clock = HybridClock(0)
    clock.observe(make_stamp(WALL_MS, LOGICAL_MAX - 1), WALL_MS)  # (W, MAX)
    assert clock.last_stamp == make_stamp(WALL_MS, LOGICAL_MAX)
    assert clock.overflow_total == 0
    assert clock.now(WALL_MS) == make_stamp(WALL_MS + 1, 0)
    assert clock.overflow_total == 1
    assert clock.now(WALL_MS) == make_stamp(WALL_MS + 1, 1)
    assert clock.observe(make_stamp(WALL_MS + 1, LOGICAL_MAX), WALL_MS) == make_stamp(
        WALL_MS + 2, 0
    )
    assert clock.overflow_total == 2  # counted, not flagged
    # The wall clock reaching the carried ms is not an overflow.
    clock.observe(make_stamp(WALL_MS + 2, LOGICAL_MAX - 1), WALL_MS)
    assert clock.now(WALL_MS + 3) == make_stamp(WALL_MS + 3, 0)
    assert clock.overflow_total == 2


def test_overflow_on_receive_of_a_full_counter() -> None:
    clock = HybridClock(0)
    assert clock.observe(make_stamp(WALL_MS, LOGICAL_MAX), WALL_MS) == make_stamp(WALL_MS + 1, 0)
    assert clock.overflow_total == 1


def test_overflow_met_by_the_wall_clock_is_not_counted() -> None:
    clock = HybridClock(0)
    clock.observe(make_stamp(WALL_MS, LOGICAL_MAX - 1), WALL_MS)
    assert clock.now(WALL_MS + 1) == make_stamp(WALL_MS + 1, 0)
    assert clock.overflow_total == 0


def test_a_full_millisecond_of_stamps_stays_increasing() -> None:
    """65,536 stamps in one wall millisecond and beyond: strictly increasing, through the carry."""
    clock = HybridClock(0)
    previous = -1
    for _ in range(LOGICAL_MAX + 3):
        stamp = clock.now(WALL_MS)
        assert stamp > previous
        previous = stamp
    assert previous == make_stamp(WALL_MS + 1, 1)
    assert clock.overflow_total == 1


def test_the_last_stamp_has_no_successor() -> None:
    clock = HybridClock(0)
    assert clock.observe(STAMP_MAX - 1, WALL_MS_MAX) == STAMP_MAX
    with pytest.raises(ClockExhausted, match=f"no stamp follows {STAMP_MAX}"):
        clock.now(WALL_MS_MAX)
    with pytest.raises(ClockExhausted):
        clock.observe(0, WALL_MS_MAX)
    assert clock.last_stamp == STAMP_MAX
    assert clock.overflow_total == 0


@pytest.mark.parametrize("wall_ms", [-1, WALL_MS_MAX + 1])
def test_wall_readings_outside_48_bits_are_refused(wall_ms: int) -> None:
    clock = HybridClock(0)
    message = rf"wall clock reading {wall_ms} ms outside \[0, {WALL_MS_MAX}\]"
    with pytest.raises(ValueError, match=message):
        clock.now(wall_ms)
    with pytest.raises(ValueError, match=message):
        clock.observe(0, wall_ms)
    assert clock.last_stamp == 0


def test_wall_readings_at_both_ends_are_accepted() -> None:
    assert HybridClock(0).now(0) == 1  # l stays 0, c counts from the initial (0, 0)
    assert HybridClock(0).now(WALL_MS_MAX) == make_stamp(WALL_MS_MAX, 0)
    assert HybridClock(0).observe(0, 0) == 1


@pytest.mark.parametrize("remote", [-1, STAMP_MAX + 1])
def test_observe_refuses_stamps_outside_64_bits(remote: int) -> None:
    clock = HybridClock(0, max_offset_ms=MAX_OFFSET_MS_MAX)
    with pytest.raises(ValueError, match=rf"stamp {remote} outside \[0, {STAMP_MAX}\]"):
        clock.observe(remote, WALL_MS_MAX)
    assert clock.refused_total == 0
    assert clock.observe(0, 0) == 1  # the smallest is accepted...
    with pytest.raises(ClockExhausted):  # ...and so is the largest, which has no successor
        clock.observe(STAMP_MAX, WALL_MS_MAX)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(-3_000, 3_000), st.integers(0, LOGICAL_MAX)),
        max_size=60,
    )
)
def test_l_never_falls_behind_the_wall_clock(steps: list[tuple[bool, int, int]]) -> None:
    """After any event, ``l >= wall``: the clock reads the wall clock at every event."""
    clock = HybridClock(0)
    wall_ms = WALL_MS
    for is_receive, delta_ms, logical in steps:
        wall_ms += delta_ms
        if is_receive:
            try:
                stamp = clock.observe(make_stamp(wall_ms + delta_ms // 4, logical), wall_ms)
            except VersionTooFarAhead:
                continue
        else:
            stamp = clock.now(wall_ms)
        assert stamp_wall_ms(stamp) >= wall_ms


@settings(max_examples=60)
@given(
    st.lists(st.integers(-250, 250), min_size=2, max_size=5),
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 40), st.booleans()),
        max_size=80,
    ),
)
def test_clocks_within_the_bound_stay_within_it(
    offsets_ms: list[int], steps: list[tuple[int, int, int, bool]]
) -> None:
    """Wall clocks within ±250 ms of true time (so within 500 ms of each other): nothing is
    refused and every node's ``l`` stays within 500 ms of its own wall clock."""
    clocks = [HybridClock(i) for i in range(len(offsets_ms))]
    true_ms = WALL_MS
    for sender, receiver, elapsed_ms, deliver in steps:
        sender, receiver = sender % len(clocks), receiver % len(clocks)
        true_ms += elapsed_ms
        stamp = clocks[sender].now(true_ms + offsets_ms[sender])
        if deliver:
            clocks[receiver].observe(stamp, true_ms + offsets_ms[receiver])
        for clock, offset_ms in zip(clocks, offsets_ms):
            assert stamp_wall_ms(clock.last_stamp) - (true_ms + offset_ms) <= 500
    assert sum(clock.refused_total for clock in clocks) == 0


# --- several clocks, against the model -----------------------------------------------------------

NODES = 3
BOUND_MS = 500


class ClusterOfClocks(RuleBasedStateMachine):
    """Several clocks stamp local writes and exchange stamps in any order, their wall clocks
    drifting and jumping (within the bound and far beyond it); each step is checked against the
    model, and every stamp against the causal past of its event."""

    @initialize(
        offsets_ms=st.lists(st.integers(-2_000, 2_000), min_size=NODES, max_size=NODES),
        tags=st.lists(st.integers(0, 3), min_size=NODES, max_size=NODES),
    )
    def start(self, offsets_ms: list[int], tags: list[int]) -> None:
        # Small tags, so equal tags (collisions) happen too.
        self.clocks = [HybridClock(tag, max_offset_ms=BOUND_MS) for tag in tags]
        self.models = [ModelClock(BOUND_MS) for _ in range(NODES)]
        self.walls_ms = [WALL_MS + offset for offset in offsets_ms]
        #: The largest stamp in each node's causal past (its own events and what it received).
        self.causal_max = [-1] * NODES
        #: Stamps sent and not yet delivered: (stamp, the sender's causal max when it sent).
        self.in_flight: list[int] = []
        #: Every version issued, in the order a first replica saw them, and the node issuing it.
        self.issued: list[Version] = []
        self.issuers: list[int] = []

    @rule(node=st.integers(0, NODES - 1), delta_ms=st.integers(-1_500, 1_500))
    def wall_clock_moves(self, node: int, delta_ms: int) -> None:
        """Drift, NTP steps back and forward, a badly wrong clock: any move."""
        self.walls_ms[node] = min(max(self.walls_ms[node] + delta_ms, 0), WALL_MS_MAX)

    def _check_step(self, node: int, stamp: int, expected: int, past_max: int) -> None:
        assert stamp == expected
        assert stamp > past_max  # monotonic, and happened-before implies greater
        assert stamp_wall_ms(stamp) >= self.walls_ms[node]
        self.causal_max[node] = stamp
        self.issued.append(self.clocks[node].version(stamp))
        self.issuers.append(node)

    @rule(node=st.integers(0, NODES - 1))
    def write(self, node: int) -> None:
        wall_ms = self.walls_ms[node]
        stamp = self.clocks[node].now(wall_ms)
        self._check_step(node, stamp, self.models[node].send(wall_ms), self.causal_max[node])
        self.in_flight.append(stamp)

    @precondition(lambda self: self.in_flight)
    @rule(node=st.integers(0, NODES - 1), pick=st.integers(0, 100), keep=st.booleans())
    def deliver(self, node: int, pick: int, keep: bool) -> None:
        """Deliver a stamp in flight to any node (its sender too), in any order, possibly twice."""
        remote = self.in_flight[pick % len(self.in_flight)]
        if not keep:
            self.in_flight.remove(remote)
        self._receive(node, remote)

    @rule(
        node=st.integers(0, NODES - 1),
        ahead_ms=st.integers(-1_000, 1_000),
        logical=st.sampled_from([0, 1, LOGICAL_MAX - 1, LOGICAL_MAX]),
    )
    def receive_forged(self, node: int, ahead_ms: int, logical: int) -> None:
        """A stamp from a node outside the test (any offset, counters near the overflow)."""
        wall_ms = min(max(self.walls_ms[node] + ahead_ms, 0), WALL_MS_MAX)
        self._receive(node, make_stamp(wall_ms, logical))

    def _receive(self, node: int, remote: int) -> None:
        clock, model = self.clocks[node], self.models[node]
        wall_ms = self.walls_ms[node]
        before = clock.last_stamp
        expected = model.receive(remote, wall_ms)
        refused = stamp_wall_ms(remote) > wall_ms + BOUND_MS
        assert (expected is None) == refused
        if refused:
            with pytest.raises(VersionTooFarAhead):
                clock.observe(remote, wall_ms)
            assert clock.last_stamp == before
            return
        past_max = max(self.causal_max[node], remote)
        self._check_step(node, clock.observe(remote, wall_ms), expected, past_max)

    @invariant()
    def counters_match_the_model(self) -> None:
        for clock, model in zip(self.clocks, self.models):
            assert clock.refused_total == model.refused
            assert clock.overflow_total == model.overflows
            assert clock.last_stamp == make_stamp(model.l, model.c)

    @invariant()
    def replicas_agree_on_the_order(self) -> None:
        """Two replicas that saw the versions in different orders sort them identically, and
        equal versions only come from distinct nodes sharing a tag (a node never repeats one)."""
        assert sorted(self.issued) == sorted(reversed(self.issued))
        issuers_of: dict[Version, list[int]] = {}
        for version, node in zip(self.issued, self.issuers):
            issuers_of.setdefault(version, []).append(node)
        for nodes in issuers_of.values():
            assert len(set(nodes)) == len(nodes)
        for a, b in itertools.combinations(self.issued[-6:], 2):
            assert newer(a, b) != newer(b, a) or a == b


ClusterOfClocks.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestClusterOfClocks = ClusterOfClocks.TestCase


def test_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The micro-benchmark docs/benchmarks.md quotes still runs (tiny rounds)."""
    hlc_bench.main(["--rounds", "1", "--number", "10"])
    table = capsys.readouterr().out
    assert "`now(wall_ms)`" in table and "`observe(stamp, wall_ms)`" in table
