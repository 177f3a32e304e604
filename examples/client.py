"""Put, get, TTL and delete from Python against the local cluster of `make run`.

    make run                      # one terminal: three nodes on 127.0.0.1:7000-7002
    python examples/client.py     # another: this script

Pass other seed addresses as arguments (`python examples/client.py 127.0.0.1:7000 ...`). The
client learns the cluster from any seed and sends each key straight to a node that owns it;
the script prints which nodes those are.
"""

import sys
import time

from gossipcache import SyncClient

seeds = sys.argv[1:] or ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]

with SyncClient(seeds) as cache:
    topology = cache.topology()
    members = topology["members"]
    copies = min(topology["replicas"], len(members))  # R, capped by the nodes there are
    print(f"cluster: {len(members)} nodes, each key on {copies} of them (from {cache.address})")
    for member in members:
        print(f"  node {member['address']}  host {member['host_id']}  id {member['id']}")

    # Writes and reads go to a key's owners, the primary (listed first) when it is up.
    for key in ("user:1", "user:2", "session:42"):
        cache.put(key, f"profile of {key}")
        print(f"{key}: owned by {', '.join(cache.owners(key))} -> {cache.get(key)!r}")

    # A TTL: the key expires on its own.
    cache.put("flash", "gone soon", ttl_s=0.5)
    print(f"flash: {cache.get('flash')!r}, expires in {cache.ttl('flash'):.2f} s")
    time.sleep(0.6)
    print(f"flash after 0.6 s: {cache.get('flash')!r}")

    # Delete.
    print(f"delete user:2 -> {cache.delete('user:2')}; get -> {cache.get('user:2')!r}")
