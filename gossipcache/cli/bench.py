"""The load generator: ``gossipcache bench``, for a gossipcache node or (``--protocol resp``) Redis.

``gossipcache bench --node HOST:PORT --protocol native|resp --duration-s 10 --connections 50
--pipeline 16 --keys 100000 --key-distribution zipf:0.99 --read-ratio 0.9 --value-size 100``

Each connection keeps ``pipeline`` requests in flight: it sends a batch, reads every reply, sends
the next. A request's latency runs from the send of its batch to the arrival of the read that
completed its reply. Hits and misses are counted from the parsed GET replies; every key is written
once before measuring (``--preload``, on by default) so the hit ratio means something.

The generator is Python and can saturate before the server does, so it does as little per
request as it can: the whole request stream -- keys drawn from a seeded sample, batches encoded
and joined -- is precomputed, and the measuring loop only sends ready bytes, parses replies (one
``recv`` parses many) and counts them. ``--processes K`` runs K generator processes whose
histograms merge; the report gives the generator's own CPU use, so a reader can tell who was the
bottleneck (a generator process near 100 % of a core is).

Cluster mode (``--seeds HOST:PORT,...``): bench learns the topology from a seed as the smart
client does, opens one socket per node for each connection, and splits every batch by each
key's primary, so each request takes one hop. ``--consistency one|quorum|all`` adds the native
protocol's level argument to every GET and SET (without it, the requests are byte for byte
what they were). ``--server-pid`` may be repeated: the report sums the processes' CPU.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import queue
import random
import socket as _stdlib_socket
import sys
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import GossipCacheError, ProtocolError
from ..metrics.histogram import Histogram, bin_index
from ..placement import BUCKET_COUNT, bucket_of
from ..wire.framing import FrameDecoder
from ..wire.native import (
    CONSISTENCY_LEVELS,
    OP_GET,
    OP_PUT,
    STATUS_ERROR,
    STATUS_NOT_FOUND,
    STATUS_OK,
    Request,
    decode_response,
    encode_request,
)
from ..wire.resp import RespReplyParser, encode_command
from .tracesim import _positive_int

PROTOCOLS = ("native", "resp")
#: Keys look like redis-benchmark's (``key:%012d``), so both tools touch same-sized keys.
KEY_FORMAT = b"key:%012d"
#: Requests precomputed per generator process: ``SAMPLE_REQUESTS_PER_KEY`` per key within
#: these bounds. Connections cycle through them from different offsets. 2**18 draws reproduce
#: a Zipf(0.99) distribution over 100k keys closely and take about a second to encode.
SAMPLE_SIZE_REQUESTS_MIN = 1 << 14
SAMPLE_SIZE_REQUESTS_MAX = 1 << 18
SAMPLE_REQUESTS_PER_KEY = 16
#: Bytes read per ``recv``: many pipelined replies at once.
RECEIVE_SIZE_BYTES = 256 * 1024
PIPELINE_MAX = 4096
CONNECTIONS_MAX = 10_000
PROCESSES_MAX = 64
KEYS_MAX = 100_000_000
VALUE_SIZE_BYTES_MAX = 1024 * 1024
#: Preloading writes every key once over this many connections, this many SETs per batch.
PRELOAD_CONNECTIONS_MAX = 8
PRELOAD_PIPELINE = 256
PROGRESS_INTERVAL_S = 1.0
#: Distinct error messages kept for the report (the count covers all of them).
ERROR_MESSAGES_MAX = 5
#: A generator process whose CPU use reaches this fraction of a core was probably the bottleneck.
GENERATOR_SATURATED_FRACTION = 0.9
#: A child process that reports nothing for this long past its expected end is presumed hung.
CHILD_GRACE_S = 120.0

KIND_GET = ord("G")
KIND_SET = ord("S")

Address = tuple[str, int]


# -- key distribution ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyDistribution:
    """Which keys requests touch: ``uniform`` or ``zipf`` with ``exponent`` (rank r has weight
    ``1 / r**exponent``; rank 1 is key 0)."""

    name: str
    exponent: float = 0.0

    def __str__(self) -> str:
        return "uniform" if self.name == "uniform" else f"zipf:{self.exponent:g}"


def parse_key_distribution(text: str) -> KeyDistribution:
    """``"uniform"`` or ``"zipf:S"`` (S > 0; ``"zipf"`` alone means S = 0.99)."""
    name, _, exponent_text = text.strip().lower().partition(":")
    if name == "uniform" and not exponent_text:
        return KeyDistribution("uniform")
    if name == "zipf":
        try:
            exponent = float(exponent_text) if exponent_text else 0.99
        except ValueError:
            exponent = math.nan
        if math.isfinite(exponent) and 0 < exponent <= 10:
            return KeyDistribution("zipf", exponent)
    raise argparse.ArgumentTypeError(f"not a key distribution: {text!r} (uniform or zipf:0.99)")


def zipf_cdf(keys: int, exponent: float) -> list[float]:
    """Cumulative (unnormalised) Zipf weights of ranks 1..keys: the table inverse-CDF sampling
    bisects."""
    return list(itertools.accumulate(rank**-exponent for rank in range(1, keys + 1)))


def sample_key_indices(
    distribution: KeyDistribution, keys: int, count: int, rng: random.Random
) -> list[int]:
    """``count`` key indices in ``[0, keys)`` drawn from ``distribution`` with ``rng``."""
    draw = rng.random
    if distribution.name == "uniform":
        return [int(draw() * keys) for _ in range(count)]
    cdf = zipf_cdf(keys, distribution.exponent)
    total = cdf[-1]
    last = keys - 1
    position = bisect.bisect_right
    # min(): draw() * total can round up to total itself.
    return [min(position(cdf, draw() * total), last) for _ in range(count)]


def key_name(index: int) -> bytes:
    return KEY_FORMAT % index


# -- request stream --------------------------------------------------------------------------


class Batch(NamedTuple):
    """One pipeline's worth of requests: the bytes to send and one kind byte per request
    (``KIND_GET`` / ``KIND_SET``), in reply order. Native request ids are the positions 0..n-1."""

    payload: bytes
    kinds: bytes


def encode_one(
    protocol: str,
    kind: int,
    key: bytes,
    value: bytes,
    request_id: int,
    consistency: str | None = None,
) -> bytes:
    """The bytes of one GET or SET in ``protocol``; native requests carry ``consistency``
    (the op's optional last argument) when it is given."""
    if protocol == "resp":
        return (
            encode_command(b"GET", key) if kind == KIND_GET else encode_command(b"SET", key, value)
        )
    level = () if consistency is None else (consistency,)
    if kind == KIND_GET:
        return encode_request(Request(request_id, OP_GET, (key, *level)))
    return encode_request(Request(request_id, OP_PUT, (key, value, None, *level)))


def encode_batch(
    protocol: str,
    kinds: bytes,
    keys: Sequence[bytes],
    value: bytes,
    consistency: str | None = None,
) -> Batch:
    return Batch(
        b"".join(
            encode_one(protocol, kind, key, value, position, consistency)
            for position, (kind, key) in enumerate(zip(kinds, keys))
        ),
        kinds,
    )


class ClusterRoute(NamedTuple):
    """Where a smart client sends each key: the nodes' native addresses, and for each of the
    16384 buckets the index (into ``addresses``) of its primary owner. Small and picklable, so
    generator processes get it with their config."""

    addresses: tuple[Address, ...]
    primary_of_bucket: Sequence[int]

    def node_of(self, key: bytes) -> int:
        return self.primary_of_bucket[bucket_of(key)]


#: A smart client's pipeline batch: the requests of one ``Batch``-sized draw split by the node
#: they go to, ``(node index, part)`` per node, each part with its own request ids 0..n-1.
RoutedBatch = tuple[tuple[int, Batch], ...]


def route_batch(
    route: ClusterRoute,
    kinds: bytes,
    keys: Sequence[bytes],
    value: bytes,
    consistency: str | None = None,
) -> RoutedBatch:
    """Split one batch of native requests by each key's primary."""
    by_node: dict[int, tuple[bytearray, list[bytes]]] = {}
    for kind, key in zip(kinds, keys):
        part_kinds, part_keys = by_node.setdefault(route.node_of(key), (bytearray(), []))
        part_kinds.append(kind)
        part_keys.append(key)
    return tuple(
        (node, encode_batch("native", bytes(part_kinds), part_keys, value, consistency))
        for node, (part_kinds, part_keys) in sorted(by_node.items())
    )


def build_batches(
    protocol: str,
    distribution: KeyDistribution,
    keys: int,
    read_ratio: float,
    value_size_bytes: int,
    pipeline: int,
    seed: int,
    sample_size_requests: int | None = None,
    consistency: str | None = None,
    route: ClusterRoute | None = None,
) -> list[Batch] | list[RoutedBatch]:
    """The precomputed request stream: ``sample_size_requests`` (default: in proportion to
    ``keys``, rounded up to whole batches) seeded draws of a key and of GET (with probability
    ``read_ratio``) or SET. With ``route``, each batch is split by node (``RoutedBatch``); the
    draws are the same either way."""
    if sample_size_requests is None:
        sample_size_requests = min(
            SAMPLE_SIZE_REQUESTS_MAX,
            max(SAMPLE_SIZE_REQUESTS_MIN, keys * SAMPLE_REQUESTS_PER_KEY),
        )
    rng = random.Random(seed)
    batch_count = max(1, -(-sample_size_requests // pipeline))
    indices = sample_key_indices(distribution, keys, batch_count * pipeline, rng)
    draw = rng.random
    kinds = bytes(KIND_GET if draw() < read_ratio else KIND_SET for _ in indices)
    value = b"v" * value_size_bytes
    names: dict[int, bytes] = {}  # keys repeat a lot under Zipf: format each once
    batches = []
    for start in range(0, len(indices), pipeline):
        batch_keys = [
            names.get(index) or names.setdefault(index, key_name(index))
            for index in indices[start : start + pipeline]
        ]
        batch_kinds = kinds[start : start + pipeline]
        if route is None:
            batches.append(encode_batch(protocol, batch_kinds, batch_keys, value, consistency))
        else:
            batches.append(route_batch(route, batch_kinds, batch_keys, value, consistency))
    return batches


def preload_batches(
    protocol: str, keys: int, value_size_bytes: int, route: ClusterRoute | None = None
) -> list[Batch] | list[RoutedBatch]:
    """SETs of every key once, ``PRELOAD_PIPELINE`` per batch (at the node's default
    consistency level), split by node with ``route``."""
    value = b"v" * value_size_bytes
    batches = []
    for start in range(0, keys, PRELOAD_PIPELINE):
        names = [key_name(index) for index in range(start, min(keys, start + PRELOAD_PIPELINE))]
        kinds = bytes([KIND_SET]) * len(names)
        if route is None:
            batches.append(encode_batch(protocol, kinds, names, value))
        else:
            batches.append(route_batch(route, kinds, names, value))
    return batches


# -- reply accounting ------------------------------------------------------------------------


class Tally:
    """Outcomes counted from parsed replies."""

    __slots__ = ("gets", "sets", "hits", "misses", "errors", "error_messages")

    def __init__(self) -> None:
        self.gets = 0
        self.sets = 0
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.error_messages: list[str] = []

    @property
    def ops(self) -> int:
        """Replies received (errors included)."""
        return self.gets + self.sets

    def error(self, message: str) -> None:
        """Count one error; keep its message if it is new and there is room."""
        self.errors += 1
        self._note(message)

    def _note(self, message: str) -> None:
        if len(self.error_messages) < ERROR_MESSAGES_MAX and message not in self.error_messages:
            self.error_messages.append(message)

    def add_resp(self, replies: list, kinds: bytes, first: int) -> None:
        """Count RESP replies to the requests ``kinds[first:]``: a GET's bulk string is a hit,
        its null a miss; a SET must answer ``OK``."""
        for position, reply in enumerate(replies, first):
            if kinds[position] == KIND_GET:
                self.gets += 1
                if type(reply) is bytes:
                    self.hits += 1
                elif reply is None:
                    self.misses += 1
                else:
                    self.error(f"GET answered {reply!r:.120}")
            else:
                self.sets += 1
                if type(reply) is not str or reply != "OK":
                    self.error(f"SET answered {reply!r:.120}")

    def add_native(
        self, bodies: list[bytes], kinds: bytes, first: int, answered: bytearray | None = None
    ) -> None:
        """Count native response bodies to the requests of ``kinds`` (request id = position
        in the batch). Replies may come in any order (a request that waits for replicas is
        answered after later ones), so each is matched by its id; ``answered`` marks the ids
        answered so far in this batch (None: a fresh batch). A reply with an id out of range
        or answered twice is an error, counted at its arrival position ``first + n``."""
        if answered is None:
            answered = bytearray(len(kinds))
        for position, body in enumerate(bodies, first):
            try:
                request_id, status, payload = decode_response(body)
            except ProtocolError as error:
                request_id, status, payload = None, None, None
                message = f"malformed response: {error}"
            else:
                message = None
                if not 0 <= request_id < len(kinds) or answered[request_id]:
                    message = f"response id {request_id} was not expected (batch of {len(kinds)})"
            if message is not None:
                self.gets += kinds[position] == KIND_GET
                self.sets += kinds[position] != KIND_GET
                self.error(message)
                continue
            answered[request_id] = 1
            is_get = kinds[request_id] == KIND_GET
            if is_get:
                self.gets += 1
            else:
                self.sets += 1
            if status == STATUS_OK:
                if is_get:
                    self.hits += 1
            elif status == STATUS_NOT_FOUND and is_get:
                self.misses += 1
            elif status == STATUS_ERROR:
                self.error(f"{payload[0]}: {payload[1]:.120}")
            else:
                self.error("PUT answered NOT_FOUND")

    def merge(self, other: Tally) -> None:
        self.gets += other.gets
        self.sets += other.sets
        self.hits += other.hits
        self.misses += other.misses
        self.errors += other.errors
        for message in other.error_messages:
            self._note(message)


#: Feeds received bytes, counts the complete replies into a ``Tally``; returns how many.
ReplyReader = Callable[[bytes, bytes, int, Tally], int]


def make_reply_reader(protocol: str) -> ReplyReader:
    """A reply reader with its own stream buffer (one per connection)."""
    if protocol == "resp":
        parser = RespReplyParser()
        feed, pop = parser.feed, parser.pop_replies

        def read(data: bytes, kinds: bytes, first: int, tally: Tally) -> int:
            feed(data)
            replies = pop()
            if first + len(replies) > len(kinds):
                raise ProtocolError(f"{first + len(replies)} replies to a batch of {len(kinds)}")
            tally.add_resp(replies, kinds, first)
            return len(replies)

        return read
    decoder = FrameDecoder()
    answered = bytearray()  # the ids of the current batch answered so far

    def read_native(data: bytes, kinds: bytes, first: int, tally: Tally) -> int:
        nonlocal answered
        decoder.feed(data)
        bodies = decoder.pop_frames()
        if first + len(bodies) > len(kinds):
            raise ProtocolError(f"{first + len(bodies)} replies to a batch of {len(kinds)}")
        if first == 0:  # a new batch
            answered = bytearray(len(kinds))
        tally.add_native(bodies, kinds, first, answered)
        return len(bodies)

    return read_native


def record_many(histogram: Histogram, value: int, count: int) -> None:
    """``histogram.record(value)`` ``count`` times, in constant time (the replies one ``recv``
    completes share one latency)."""
    total_before = histogram.total
    histogram.record(value)
    if count > 1:
        # The total grew by the value as recorded (clamped to the histogram's range).
        histogram.total += (histogram.total - total_before) * (count - 1)
        histogram.counts[bin_index(value)] += count - 1
        histogram.count += count - 1


# -- one generator process (Trio) -------------------------------------------------------------


class ConnectionLost(Exception):
    """The server closed a connection while replies were outstanding."""


async def _connect(address: Address):
    import trio

    sock = trio.socket.socket(_stdlib_socket.AF_INET, _stdlib_socket.SOCK_STREAM)
    sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
    try:
        await sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _send_all(sock, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[await sock.send(view) :]


async def _receive(sock, kinds: bytes, read: ReplyReader, tally: Tally, histogram, sent_ns: int):
    """Read the replies to the requests ``kinds`` sent at ``sent_ns``; record each latency."""
    clock_ns = time.perf_counter_ns
    expected = len(kinds)
    received = 0
    while received < expected:
        data = await sock.recv(RECEIVE_SIZE_BYTES)
        arrived_ns = clock_ns()
        if not data:
            raise ConnectionLost(f"server closed the connection with {expected - received}"
                                 " replies outstanding")  # fmt: skip
        count = read(data, kinds, received, tally)
        if count:
            record_many(histogram, arrived_ns - sent_ns, count)
            received += count


async def _exchange(sock, batch: Batch, read: ReplyReader, tally: Tally, histogram) -> None:
    """Send one batch, read all its replies, record each reply's latency."""
    payload, kinds = batch
    sent_ns = time.perf_counter_ns()
    await _send_all(sock, payload)
    await _receive(sock, kinds, read, tally, histogram, sent_ns)


async def _exchange_routed(
    sockets: list, batch: RoutedBatch, readers: list[ReplyReader], tally: Tally, histogram
) -> None:
    """A smart client's batch: send each node its part, then read each node's replies (the
    latency of every request runs from the first send)."""
    sent_ns = time.perf_counter_ns()
    for node, part in batch:
        await _send_all(sockets[node], part.payload)
    for node, part in batch:
        await _receive(sockets[node], part.kinds, readers[node], tally, histogram, sent_ns)


#: Sends one batch over one logical connection and counts its replies into a tally and a
#: histogram (``_exchanger`` builds one per connection).
Exchange = Callable[[object, Tally, Histogram], Awaitable[None]]


async def _open_connection(config: BenchConfig) -> list:
    """One logical connection's sockets: one to the node, or (a smart client) one to each
    node of the cluster."""
    addresses = (config.address,) if config.route is None else config.route.addresses
    sockets = []
    try:
        for address in addresses:
            sockets.append(await _connect(address))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _exchanger(config: BenchConfig, sockets: list) -> Exchange:
    """The ``Exchange`` of one logical connection over ``sockets`` (each with its own reply
    stream buffer)."""
    if config.route is None:
        sock, read = sockets[0], make_reply_reader(config.protocol)

        def exchange(batch, tally, histogram):
            return _exchange(sock, batch, read, tally, histogram)

        return exchange
    readers = [make_reply_reader(config.protocol) for _ in sockets]

    def exchange_routed(batch, tally, histogram):
        return _exchange_routed(sockets, batch, readers, tally, histogram)

    return exchange_routed


@dataclass
class _Window:
    """Where the connections of one process record; replaced when measuring starts, so a batch
    sent during warm-up records into the discarded warm-up window."""

    tally: Tally = field(default_factory=Tally)
    histogram: Histogram = field(default_factory=Histogram)
    connection_errors: int = 0


class ProcessResult(NamedTuple):
    """What one generator process measured (picklable: crosses process boundaries)."""

    tally: Tally
    histogram: Histogram
    connection_errors: int
    elapsed_s: float
    cpu_s: float
    #: CPU seconds of each ``server_pids`` process over the measured window.
    server_cpu_s: tuple[float, ...] | None


def read_process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, from /proc/PID/stat (Linux)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # After "pid (comm)": field 3 (state) is fields[0], so utime (14) and stime (15) are 11, 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(exchange: Exchange, batches: list, start: int, window_of) -> None:
    """Send batches from ``start`` on, cycling, until cancelled."""
    count = len(batches)
    index = start % count
    while True:
        window = window_of()
        try:
            await exchange(batches[index], window.tally, window.histogram)
        except (OSError, ProtocolError, ConnectionLost) as error:
            window.connection_errors += 1
            window.tally.error(f"connection: {type(error).__name__}: {error}")
            return
        index += 1
        if index == count:
            index = 0


async def _generate(
    config: BenchConfig,
    connections: int,
    process_index: int,
    ready: Callable[[], None],
    progress: Callable[[float, Histogram, int], None],
) -> ProcessResult:
    """Run one process's connections: warm up, measure, return what was measured."""
    import trio

    batches = build_batches(
        config.protocol, config.key_distribution, config.keys, config.read_ratio,
        config.value_size_bytes, config.pipeline, config.seed * 1_000_003 + process_index,
        consistency=config.consistency, route=config.route,
    )  # fmt: skip
    rng = random.Random(config.seed + process_index)
    links: list[list] = []
    window = _Window()
    try:
        for _ in range(connections):
            links.append(await _open_connection(config))
        await trio.to_thread.run_sync(ready)
        async with trio.open_nursery() as nursery:
            for sockets in links:
                start = rng.randrange(len(batches))
                exchange = _exchanger(config, sockets)
                nursery.start_soon(_drive, exchange, batches, start, lambda: window)
            await trio.sleep(config.warmup_s)
            window = _Window()
            server_cpu_start_s = _server_cpu_s(config)
            cpu_start_s = time.process_time()
            start_s = time.perf_counter()
            end_s = start_s + config.duration_s
            while (now_s := time.perf_counter()) < end_s:
                await trio.sleep(min(PROGRESS_INTERVAL_S, end_s - now_s))
                progress(time.perf_counter() - start_s, window.histogram, window.tally.errors)
            measured = window
            window = _Window()  # the last in-flight replies record nowhere measured
            elapsed_s = time.perf_counter() - start_s
            cpu_s = time.process_time() - cpu_start_s
            server_cpu_end_s = _server_cpu_s(config)
            nursery.cancel_scope.cancel()
    finally:
        for sockets in links:
            for sock in sockets:
                sock.close()
    server_cpu_s = None
    if server_cpu_start_s is not None and server_cpu_end_s is not None:
        server_cpu_s = tuple(
            end - start for start, end in zip(server_cpu_start_s, server_cpu_end_s)
        )
    return ProcessResult(
        measured.tally, measured.histogram, measured.connection_errors, elapsed_s, cpu_s,
        server_cpu_s,
    )  # fmt: skip


def _server_cpu_s(config: BenchConfig) -> tuple[float, ...] | None:
    """CPU seconds so far of each ``config.server_pids`` process (None: none given, or one
    could not be read)."""
    if not config.server_pids:
        return None
    try:
        return tuple(read_process_cpu_s(pid) for pid in config.server_pids)
    except (OSError, ValueError, IndexError):
        return None


async def _preload(config: BenchConfig) -> Tally:
    """Write every key once; returns the tally of those writes."""
    import trio

    batches = preload_batches(config.protocol, config.keys, config.value_size_bytes, config.route)
    connections = min(PRELOAD_CONNECTIONS_MAX, config.connections, len(batches))
    tally = Tally()
    histogram = Histogram()

    async def write(share: list) -> None:
        try:
            sockets = await _open_connection(config)
            try:
                exchange = _exchanger(config, sockets)
                for batch in share:
                    await exchange(batch, tally, histogram)
            finally:
                for sock in sockets:
                    sock.close()
        except (OSError, ProtocolError, ConnectionLost) as error:
            tally.error(f"preload connection: {type(error).__name__}: {error}")

    async with trio.open_nursery() as nursery:
        for first in range(connections):
            nursery.start_soon(write, batches[first::connections])
    return tally


# -- orchestration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. CLI flags map onto these."""

    host: str = "127.0.0.1"
    port: int = 7000
    protocol: str = "native"
    duration_s: float = 10.0
    warmup_s: float = 1.0
    connections: int = 50
    pipeline: int = 16
    keys: int = 100_000
    key_distribution: KeyDistribution = KeyDistribution("zipf", 0.99)
    read_ratio: float = 0.9
    value_size_bytes: int = 100
    seed: int = 1
    preload: bool = True
    processes: int = 1
    #: The report includes these processes' CPU time during the measured window (summed).
    server_pids: tuple[int, ...] = ()
    #: Cluster mode: native addresses (``"host:port"``) of nodes to learn the topology from;
    #: each request then goes to its key's primary (``route``, resolved by ``run_bench``).
    seeds: tuple[str, ...] = ()
    #: The native consistency level every GET and SET carries (None: the node's default).
    consistency: str | None = None
    route: ClusterRoute | None = None

    def __post_init__(self) -> None:
        checks = (
            (self.protocol in PROTOCOLS, f"protocol must be one of {PROTOCOLS}"),
            (self.duration_s > 0 and self.warmup_s >= 0, "duration must be > 0, warm-up >= 0"),
            (1 <= self.processes <= PROCESSES_MAX, f"processes must be in 1..{PROCESSES_MAX}"),
            (self.processes <= self.connections <= CONNECTIONS_MAX,
             f"connections must be in processes..{CONNECTIONS_MAX}"),
            (1 <= self.pipeline <= PIPELINE_MAX, f"pipeline must be in 1..{PIPELINE_MAX}"),
            (1 <= self.keys <= KEYS_MAX, f"keys must be in 1..{KEYS_MAX}"),
            (0 <= self.read_ratio <= 1, "read ratio must be in [0, 1]"),
            (0 <= self.value_size_bytes <= VALUE_SIZE_BYTES_MAX,
             f"value size must be in 0..{VALUE_SIZE_BYTES_MAX}"),
            (self.consistency is None or self.consistency in CONSISTENCY_LEVELS,
             f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}"),
            (self.protocol == "native" or (self.consistency is None and not self.seeds
                                           and self.route is None),
             "--consistency and --seeds need the native protocol"),
        )  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def address(self) -> Address:
        return (self.host, self.port)


def _connections_of(config: BenchConfig, process_index: int) -> int:
    base, extra = divmod(config.connections, config.processes)
    return base + (process_index < extra)


class _ProgressPrinter:
    """The once-a-second line on stderr: ops/s over the last second, p99 so far."""

    def __init__(self) -> None:
        self.last_ops = 0
        self.last_s = 0.0

    def show(self, elapsed_s: float, ops: int, p99_ns: int, errors: int) -> None:
        rate = (ops - self.last_ops) / max(elapsed_s - self.last_s, 1e-9)
        self.last_ops, self.last_s = ops, elapsed_s
        print(f"[bench] {elapsed_s:5.1f}s  {rate:12,.0f} ops/s  p99 {p99_ns / 1000:9.1f} us  "
              f"errors {errors}", file=sys.stderr, flush=True)  # fmt: skip


def _run_in_process(config: BenchConfig) -> list[ProcessResult]:
    import trio

    printer = _ProgressPrinter()

    def progress(elapsed_s: float, histogram: Histogram, errors: int) -> None:
        printer.show(elapsed_s, histogram.count, histogram.percentile(0.99), errors)

    return [trio.run(_generate, config, config.connections, 0, lambda: None, progress)]


def _child_main(config: BenchConfig, process_index: int, barrier, messages) -> None:
    """Entry point of one generator process: reports progress and its result on ``messages``."""
    import trio

    def progress(elapsed_s: float, histogram: Histogram, errors: int) -> None:
        messages.put(("progress", process_index, (elapsed_s, histogram.count,
                                                  histogram.percentile(0.99), errors)))  # fmt: skip

    try:
        connections = _connections_of(config, process_index)
        result = trio.run(_generate, config, connections, process_index, barrier.wait, progress)
        messages.put(("result", process_index, result))
    except BaseException:
        messages.put(("error", process_index, traceback.format_exc()))
        barrier.abort()


def _run_processes(config: BenchConfig) -> list[ProcessResult]:
    """K spawned generator processes start measuring together (a barrier) and merge afterwards."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(config.processes)
    messages = context.Queue()
    children = [
        context.Process(target=_child_main, args=(config, index, barrier, messages), daemon=True)
        for index in range(config.processes)
    ]
    for child in children:
        child.start()
    printer = _ProgressPrinter()
    latest: dict[int, tuple[float, int, int, int]] = {}
    results: dict[int, ProcessResult] = {}
    deadline_s = time.monotonic() + config.warmup_s + config.duration_s + CHILD_GRACE_S
    try:
        while len(results) < config.processes:
            try:
                kind, index, payload = messages.get(timeout=max(0.0, deadline_s - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("a generator process did not finish in time") from None
            if kind == "error":
                raise RuntimeError(f"generator process {index} failed:\n{payload}")
            if kind == "result":
                results[index] = payload
            else:
                latest[index] = payload
                if index == 0:  # one line per interval, summed over processes
                    printer.show(payload[0], sum(p[1] for p in latest.values()),
                                 max(p[2] for p in latest.values()),
                                 sum(p[3] for p in latest.values()))  # fmt: skip
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
    return [results[index] for index in range(config.processes)]


def fetch_cluster_route(seeds: Sequence[str]) -> ClusterRoute:
    """Learn the cluster's topology from the first seed that answers (as the smart client
    does) and tabulate each bucket's primary. A node without a table (standalone) gets every
    key."""
    import trio

    from ..client.client import Client, parse_address

    async def fetch():
        async with Client(list(seeds)) as client:
            return client.route

    route = trio.run(fetch)
    if route.placement is None:
        return ClusterRoute((parse_address(route.home),), array("H", bytes(2 * BUCKET_COUNT)))
    names = sorted(set(route.addresses.values()))
    index_of = {name: index for index, name in enumerate(names)}
    primaries = array("H", (
        index_of[route.addresses[route.placement.owners_of_bucket(bucket)[0]]]
        for bucket in range(BUCKET_COUNT)
    ))  # fmt: skip
    return ClusterRoute(tuple(parse_address(name) for name in names), primaries)


def run_bench(config: BenchConfig) -> dict:
    """Preload, run the generator process(es), return the report (see ``report``). With
    seeds, first learn the cluster's topology."""
    if config.seeds and config.route is None:
        config = dataclasses.replace(config, route=fetch_cluster_route(config.seeds))
    preload_s = None
    preload_errors = 0
    if config.preload:
        import trio

        start_s = time.perf_counter()
        preload_tally = trio.run(_preload, config)
        preload_s = time.perf_counter() - start_s
        preload_errors = preload_tally.errors
    results = _run_in_process(config) if config.processes == 1 else _run_processes(config)
    return report(config, results, preload_s, preload_errors)


def report(
    config: BenchConfig,
    results: Sequence[ProcessResult],
    preload_s: float | None = None,
    preload_errors: int = 0,
) -> dict:
    """Merge per-process results into the JSON report."""
    tally = Tally()
    histogram = Histogram()
    for result in results:
        tally.merge(result.tally)
        histogram.merge(result.histogram)
    connection_errors = sum(result.connection_errors for result in results)
    elapsed_s = max(result.elapsed_s for result in results)
    ops_per_s = sum(result.tally.ops / result.elapsed_s for result in results if result.elapsed_s)
    cpu_fractions = [result.cpu_s / result.elapsed_s for result in results if result.elapsed_s]
    cpu_s = sum(result.cpu_s for result in results)
    server_cpu_by_pid = results[0].server_cpu_s
    server_cpu_s = None if server_cpu_by_pid is None else sum(server_cpu_by_pid)

    def us(ns: int) -> float:
        return round(ns / 1000, 1)

    summary = {
        "node": f"{config.host}:{config.port}" if config.route is None else None,
        "cluster_nodes": (
            None if config.route is None else [f"{h}:{p}" for h, p in config.route.addresses]
        ),
        "consistency": config.consistency,
        "protocol": config.protocol,
        "connections": config.connections,
        "pipeline": config.pipeline,
        "processes": config.processes,
        "keys": config.keys,
        "key_distribution": str(config.key_distribution),
        "read_ratio": config.read_ratio,
        "value_size_bytes": config.value_size_bytes,
        "duration_s": round(elapsed_s, 3),
        "warmup_s": config.warmup_s,
        "seed": config.seed,
        "preload_s": None if preload_s is None else round(preload_s, 3),
        "preload_errors": preload_errors,
        "ops": tally.ops,
        "ops_per_s": round(ops_per_s, 1),
        "gets": tally.gets,
        "sets": tally.sets,
        "hits": tally.hits,
        "misses": tally.misses,
        "hit_ratio": round(tally.hits / tally.gets, 5) if tally.gets else None,
        "errors": tally.errors,
        "connection_errors": connection_errors,
        "error_messages": tally.error_messages,
        "latency_us_p50": us(histogram.percentile(0.50)),
        "latency_us_p90": us(histogram.percentile(0.90)),
        "latency_us_p99": us(histogram.percentile(0.99)),
        "latency_us_p999": us(histogram.percentile(0.999)),
        "latency_us_max": us(histogram.max),
        "latency_us_mean": round(histogram.mean / 1000, 1),
        "generator_cpu_s": round(cpu_s, 3),
        "generator_cpu_us_per_op": round(cpu_s * 1e6 / tally.ops, 2) if tally.ops else None,
        "generator_cpu_percent_max_process": round(100 * max(cpu_fractions, default=0), 1),
        "generator_saturated": max(cpu_fractions, default=0) >= GENERATOR_SATURATED_FRACTION,
        "server_pids": list(config.server_pids),
        "server_cpu_s": None if server_cpu_s is None else round(server_cpu_s, 3),
        "server_cpu_s_by_pid": (
            None if server_cpu_by_pid is None else [round(cpu, 3) for cpu in server_cpu_by_pid]
        ),
        "server_cpu_us_per_op": (
            round(server_cpu_s * 1e6 / tally.ops, 2)
            if server_cpu_s is not None and tally.ops
            else None
        ),
    }
    return summary


def format_report(summary: dict) -> str:
    """The human-readable report."""
    target = summary["node"]
    if summary["cluster_nodes"] is not None:
        target = f"{len(summary['cluster_nodes'])} nodes, each key to its primary"
    level = f", consistency {summary['consistency']}" if summary["consistency"] else ""
    lines = [
        f"{summary['protocol']} @ {target}{level}: {summary['connections']} connections x "
        f"pipeline {summary['pipeline']}, {summary['processes']} generator process(es), "
        f"{summary['keys']} keys {summary['key_distribution']}, read ratio {summary['read_ratio']}",
        f"throughput  {summary['ops_per_s']:,.0f} ops/s ({summary['ops']:,} ops in "
        f"{summary['duration_s']} s)",
        "latency us  p50 {latency_us_p50}  p90 {latency_us_p90}  p99 {latency_us_p99}  "
        "p99.9 {latency_us_p999}  max {latency_us_max}".format(**summary),
        f"hit ratio   {summary['hit_ratio']}  ({summary['hits']:,} hits, "
        f"{summary['misses']:,} misses, {summary['sets']:,} sets)",
        f"errors      {summary['errors']}" + "".join(f"\n  {m}" for m in summary["error_messages"]),
        f"generator   {summary['generator_cpu_s']} CPU s, busiest process at "
        f"{summary['generator_cpu_percent_max_process']} % of a core"
        + (
            "  (SATURATED: the generator may be the bottleneck)"
            if summary["generator_saturated"]
            else ""
        ),  # fmt: skip
    ]
    if summary["server_cpu_us_per_op"] is not None:
        lines.append(
            f"server      {summary['server_cpu_s']} CPU s, "
            f"{summary['server_cpu_us_per_op']} us CPU per op"
        )
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    try:
        port_number = int(port)
    except ValueError:
        port_number = -1
    if not host or not 0 < port_number <= 65535:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host, port_number


def _seed_list(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]``."""
    seeds = [seed.strip() for seed in text.split(",") if seed.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError(f"no HOST:PORT in {text!r}")
    return [f"{host}:{port}" for host, port in map(_address, seeds)]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the ``gossipcache`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="load-test a node (or Redis, with --protocol resp)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--node", type=_address, default=("127.0.0.1", 7000), metavar="HOST:PORT")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="native")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--connections", type=_positive_int, default=50)
    parser.add_argument("--pipeline", type=_positive_int, default=16,
                        help="requests in flight per connection")  # fmt: skip
    parser.add_argument("--keys", type=_positive_int, default=100_000)
    parser.add_argument("--key-distribution", type=parse_key_distribution,
                        default=KeyDistribution("zipf", 0.99), help="uniform or zipf:S")  # fmt: skip
    parser.add_argument("--read-ratio", type=float, default=0.9, help="fraction of GETs")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per SET value")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--preload", action=argparse.BooleanOptionalAction, default=True,
                        help="write every key once before measuring (default on)")  # fmt: skip
    parser.add_argument("--processes", type=_positive_int, default=1,
                        help="generator processes; their histograms merge")  # fmt: skip
    parser.add_argument("--server-pid", type=_positive_int, action="append", default=[],
                        help="also report this process's CPU per op (Linux /proc); repeat it"
                             " for a cluster: the report sums them")  # fmt: skip
    parser.add_argument("--seeds", type=_seed_list, action="append", default=[],
                        metavar="HOST:PORT[,HOST:PORT...]",
                        help="cluster mode: learn the topology from these nodes and send each"
                             " request straight to its key's primary (native protocol)")  # fmt: skip
    parser.add_argument("--consistency", choices=CONSISTENCY_LEVELS, default=None,
                        help="the level every GET and SET carries (native protocol; default:"
                             " none, the node's default)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``bench``: exit 0, 1 when any request failed, 2 when the run could not happen."""
    try:
        config = BenchConfig(
            host=args.node[0], port=args.node[1], protocol=args.protocol,
            duration_s=args.duration_s, warmup_s=args.warmup_s, connections=args.connections,
            pipeline=args.pipeline, keys=args.keys, key_distribution=args.key_distribution,
            read_ratio=args.read_ratio, value_size_bytes=args.value_size, seed=args.seed,
            preload=args.preload, processes=args.processes,
            server_pids=tuple(args.server_pid),
            seeds=tuple(seed for group in args.seeds for seed in group),
            consistency=args.consistency,
        )  # fmt: skip
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_bench(config)
    except (OSError, RuntimeError, GossipCacheError, ConnectionLost) as error:
        print(f"bench: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_report(summary))
    return 1 if summary["errors"] or summary["preload_errors"] else 0
