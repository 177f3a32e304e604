"""The public surface is what we intend: names re-exported from the package, nothing else."""

import gossipcache


def test_public_names() -> None:
    assert sorted(gossipcache.__all__) == sorted(
        [
            "POLICY_NAMES",
            "CacheTimeout",
            "CacheUnavailable",
            "Client",
            "EntryTooLarge",
            "EvictionPolicy",
            "GossipCacheError",
            "InvalidRequest",
            "KeyTooLarge",
            "ProtocolError",
            "ServerError",
            "Store",
            "StoreStats",
            "SyncClient",
            "ValueTooLarge",
            "make_policy",
        ]
    )
    for name in gossipcache.__all__:
        assert getattr(gossipcache, name) is not None


def test_every_error_derives_from_the_base() -> None:
    for name in gossipcache.__all__:
        obj = getattr(gossipcache, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, gossipcache.GossipCacheError)
