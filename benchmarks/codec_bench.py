"""Micro-benchmark of the wire codecs' hot paths: ns per command parsed or encoded.

Run: ``.venv/bin/python -m benchmarks.codec_bench``. Reports the median of several rounds,
each feeding pipelined batches the way a server receives them (one ``feed`` and one
``pop_*`` per batch of 16, redis-benchmark's ``-P 16``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from gossipcache.wire.framing import FrameDecoder
from gossipcache.wire.native import (
    STATUS_OK,
    Request,
    Response,
    decode_request,
    encode_request,
    encode_response,
)
from gossipcache.wire.resp import RespParser, RespReplyParser, encode_bulk, encode_command

#: redis-benchmark's SET / GET commands: 16-byte keys (``key:%012d``), 3-byte values.
PIPELINE_DEPTH = 16
KEY = b"key:000000000042"
VALUE = b"xxx"


def _time_ns_per_item(run_batch: Callable[[], int], batches: int, rounds: int) -> float:
    """Median over ``rounds`` of the ns per item of ``batches`` calls to ``run_batch``."""
    results = []
    for _ in range(rounds):
        items = 0
        start_ns = time.perf_counter_ns()
        for _ in range(batches):
            items += run_batch()
        results.append((time.perf_counter_ns() - start_ns) / items)
    return statistics.median(results)


def _resp_parse(command: bytes) -> Callable[[], int]:
    parser = RespParser()
    batch = command * PIPELINE_DEPTH

    def run_batch() -> int:
        parser.feed(batch)
        return len(parser.pop_commands())

    return run_batch


def _resp_parse_split(command: bytes) -> Callable[[], int]:
    """The same pipeline arriving in two reads cut inside a command."""
    parser = RespParser()
    batch = command * PIPELINE_DEPTH
    cut = len(batch) // 2 + 3

    def run_batch() -> int:
        parser.feed(batch[:cut])
        count = len(parser.pop_commands())
        parser.feed(batch[cut:])
        return count + len(parser.pop_commands())

    return run_batch


def _resp_parse_general_only(command: bytes) -> Callable[[], int]:
    """Reference: the general parser alone, as if the fast path did not exist."""
    parser = RespParser()
    batch = command * PIPELINE_DEPTH

    def run_batch() -> int:
        commands, _ = parser._parse(batch, 0, [])
        return len(commands)

    return run_batch


def _split_floor(command: bytes) -> Callable[[], int]:
    """Reference: one ``bytes.split`` of the batch, the least any tokenising parse costs."""
    batch = command * PIPELINE_DEPTH

    def run_batch() -> int:
        batch.split(b"\r\n")
        return PIPELINE_DEPTH

    return run_batch


def _resp_reply_parse() -> Callable[[], int]:
    parser = RespReplyParser()
    batch = encode_bulk(VALUE) * PIPELINE_DEPTH

    def run_batch() -> int:
        parser.feed(batch)
        return len(parser.pop_replies())

    return run_batch


def _native_decode() -> Callable[[], int]:
    decoder = FrameDecoder()
    batch = encode_request(Request(42, "put", (KEY, VALUE, None))) * PIPELINE_DEPTH

    def run_batch() -> int:
        decoder.feed(batch)
        requests = [decode_request(body) for body in decoder.pop_frames()]
        return len(requests)

    return run_batch


def _native_encode() -> Callable[[], int]:
    response = Response(42, STATUS_OK, VALUE)

    def run_batch() -> int:
        for _ in range(PIPELINE_DEPTH):
            encode_response(response)
        return PIPELINE_DEPTH

    return run_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cases = {
        "resp parse SET (redis-benchmark, -P 16)": _resp_parse(encode_command(b"SET", KEY, VALUE)),
        "resp parse GET (-P 16)": _resp_parse(encode_command(b"GET", KEY)),
        "resp parse SET, pipeline split in 2 reads": _resp_parse_split(
            encode_command(b"SET", KEY, VALUE)
        ),
        "  reference: general path only": _resp_parse_general_only(
            encode_command(b"SET", KEY, VALUE)
        ),
        "  reference: bytes.split floor": _split_floor(encode_command(b"SET", KEY, VALUE)),
        "resp parse inline PING (-P 16)": _resp_parse(b"PING\r\n"),
        "resp reply parse bulk (client, -P 16)": _resp_reply_parse(),
        "native FrameDecoder + decode_request put": _native_decode(),
        "native encode_response OK bytes": _native_encode(),
    }
    for name, run_batch in cases.items():
        ns = _time_ns_per_item(run_batch, args.batches, args.rounds)
        print(f"{name:45s} {ns:8.0f} ns/command")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
