"""A log-linear latency histogram in the spirit of HdrHistogram.

Values (nanoseconds, or any non-negative int) below 128 get a bin each; above, every power of
two is split into 64 equal bins, so a reported percentile is within 1/64 (1.6 %) of the true
value. Recording is a few integer operations and one list increment; the bin array has a fixed
size (``BIN_COUNT``), so memory is bounded whatever is recorded, and reading a percentile walks
those bins, never the recorded values.
"""

from __future__ import annotations

from collections.abc import Iterable

_SUB_BITS = 7  # 2**7 = 128 linear bins, then 64 per power of two
_HALF = 1 << (_SUB_BITS - 1)
#: Largest value recorded exactly enough: 2**48 ns is over three days; larger values are clamped.
VALUE_MAX = (1 << 48) - 1
BIN_COUNT = ((VALUE_MAX.bit_length() - _SUB_BITS) << (_SUB_BITS - 1)) + (1 << _SUB_BITS)


def bin_index(value: int) -> int:
    """The bin ``value`` falls in."""
    if value < (1 << _SUB_BITS):
        return value if value > 0 else 0
    if value > VALUE_MAX:
        value = VALUE_MAX
    shift = value.bit_length() - _SUB_BITS
    return (shift << (_SUB_BITS - 1)) + (value >> shift)


def bin_lowest(index: int) -> int:
    """The smallest value in bin ``index``."""
    if index < (1 << _SUB_BITS):
        return index
    shift = (index >> (_SUB_BITS - 1)) - 1
    return (index - (shift << (_SUB_BITS - 1))) << shift


def bin_highest(index: int) -> int:
    """The largest value in bin ``index``."""
    return bin_lowest(index + 1) - 1


class Histogram:
    """Counts of values by log-linear bin, plus exact count, sum, min and max."""

    __slots__ = ("counts", "count", "total", "_min", "max")

    def __init__(self) -> None:
        self.counts = [0] * BIN_COUNT
        self.count = 0
        self.total = 0
        self._min = VALUE_MAX + 1  # above anything recordable: no "empty" branch per record
        self.max = 0

    @property
    def min(self) -> int:
        return self._min if self.count else 0

    def record(self, value: int) -> None:
        # On the data path once per command: kept to a few integer operations.
        if value >= 128:
            if value > VALUE_MAX:
                value = VALUE_MAX
            shift = value.bit_length() - _SUB_BITS
            self.counts[(shift << (_SUB_BITS - 1)) + (value >> shift)] += 1
        else:
            self.counts[value if value > 0 else 0] += 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        if value < self._min:
            self._min = value

    def record_n(self, value: int, count: int) -> None:
        """Record ``value`` ``count`` times (one call for a run of equal values)."""
        if count <= 0:
            return
        if value >= 128:
            if value > VALUE_MAX:
                value = VALUE_MAX
            shift = value.bit_length() - _SUB_BITS
            self.counts[(shift << (_SUB_BITS - 1)) + (value >> shift)] += count
        else:
            self.counts[value if value > 0 else 0] += count
        self.count += count
        self.total += value * count
        if value > self.max:
            self.max = value
        if value < self._min:
            self._min = value

    def merge(self, other: Histogram) -> None:
        counts = self.counts
        for index, n in enumerate(other.counts):
            if n:
                counts[index] += n
        self._min = min(self._min, other._min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, fraction: float) -> int:
        """The value at ``fraction`` (0..1) of the recorded values: the highest value of the
        bin holding that rank, clamped to the exact max. 0 when empty."""
        if self.count == 0:
            return 0
        rank = max(1, round(fraction * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(bin_highest(index), self.max)
        return self.max

    def cumulative_counts(self, bounds: Iterable[int]) -> list[int]:
        """For each bound (ascending), how many values are <= it (Prometheus ``le`` buckets).
        A bin straddling a bound counts below it only if its highest value is <= the bound.

        One C-level ``sum`` over a slice per bound: a scrape renders many of these, and it runs
        on the node's loop, so it must stay in the microseconds."""
        counts = self.counts
        result = []
        seen = 0
        start = 0
        for bound in bounds:
            index = bin_index(bound)
            if bin_highest(index) > bound:  # the bound falls inside that bin
                index -= 1
            stop = min(index + 1, BIN_COUNT)
            if stop > start:
                seen += sum(counts[start:stop])
                start = stop
            result.append(seen)
        return result

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
