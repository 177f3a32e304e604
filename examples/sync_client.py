"""The blocking client, for code that never touches Trio: `python examples/sync_client.py`."""

import sys

from gossipcache import SyncClient

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7000"
with SyncClient(address) as cache:
    cache.put("session:42", b"\x00binary ok", ttl_s=30)
    print(cache.get("session:42"))
    print(cache.delete("session:42"), cache.get("session:42"))
