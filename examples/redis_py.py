"""Any Redis client works against the RESP port: `python examples/redis_py.py [PORT]`."""

import sys

import redis

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
r = redis.Redis(port=port)
r.set("counter-page", "home", ex=120)
print(r.get("counter-page"), r.ttl("counter-page"))
print({k: v for k, v in r.info().items() if k.startswith("keyspace_")})
