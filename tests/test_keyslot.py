from hypothesis import given
from hypothesis import strategies as st

from gossipcache.placement import BUCKET_COUNT, bucket_of, hash_tag


def test_matches_redis_cluster_reference_slots() -> None:
    # Slots published in the Redis Cluster specification and reported by CLUSTER KEYSLOT.
    assert bucket_of(b"123456789") == 0x31C3 & (BUCKET_COUNT - 1)
    assert bucket_of(b"foo") == 12182
    assert bucket_of(b"bar") == 5061
    assert bucket_of(b"{user1000}.following") == bucket_of(b"{user1000}.followers")


def test_hash_tag_rules() -> None:
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"  # empty first tag: whole key
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag(b"foo{bar}{zap}") == b"bar"
    assert hash_tag(b"{") == b"{"


@given(st.binary(max_size=64))
def test_bucket_in_range(key: bytes) -> None:
    assert 0 <= bucket_of(key) < BUCKET_COUNT
