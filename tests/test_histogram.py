from hypothesis import given
from hypothesis import strategies as st

from gossipcache.metrics.histogram import (
    BIN_COUNT,
    VALUE_MAX,
    Histogram,
    bin_highest,
    bin_index,
    bin_lowest,
)


@given(st.integers(min_value=0, max_value=VALUE_MAX))
def test_value_lies_in_its_bucket_and_error_is_bounded(value: int) -> None:
    index = bin_index(value)
    assert 0 <= index < BIN_COUNT
    assert bin_lowest(index) <= value <= bin_highest(index)
    assert bin_highest(index) - bin_lowest(index) <= max(1, value // 64)


def test_buckets_tile_the_range() -> None:
    for index in range(BIN_COUNT - 1):
        assert bin_highest(index) + 1 == bin_lowest(index + 1)


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300))
def test_percentiles_within_relative_error(values: list[int]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    assert histogram.count == len(values) and histogram.total == sum(values)
    assert (histogram.min, histogram.max) == (ordered[0], ordered[-1])
    for fraction in (0.5, 0.9, 0.99, 1.0):
        exact = ordered[max(1, round(fraction * len(values))) - 1]
        got = histogram.percentile(fraction)
        assert exact <= got <= exact + max(1, exact // 64)


@given(st.lists(st.integers(min_value=0, max_value=10**7), max_size=100))
def test_cumulative_counts_match_a_direct_count_on_bucket_edges(values: list[int]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    bounds = [bin_highest(bin_index(b)) for b in (10, 1_000, 100_000, 10**7)]
    assert histogram.cumulative_counts(bounds) == [sum(v <= b for v in values) for b in bounds]


def test_merge_adds_up() -> None:
    a, b = Histogram(), Histogram()
    for v in (5, 500, 50_000):
        a.record(v)
    b.record(7)
    a.merge(b)
    assert (a.count, a.min, a.max, a.total) == (4, 5, 50_000, 50_512)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=50))
def test_record_n_equals_n_records(value: int, count: int) -> None:
    one_by_one, at_once = Histogram(), Histogram()
    for _ in range(count):
        one_by_one.record(value)
    at_once.record_n(value, count)
    assert at_once.counts == one_by_one.counts
    assert (at_once.count, at_once.total, at_once.min, at_once.max) == (
        one_by_one.count,
        one_by_one.total,
        one_by_one.min,
        one_by_one.max,
    )
