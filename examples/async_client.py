"""The async (Trio) client: `python examples/async_client.py [HOST:PORT]` against a running node."""

import sys

import trio

from gossipcache import Client


async def main(address: str) -> None:
    async with Client(address) as cache:
        await cache.put("greeting", "hello", ttl_s=60)
        print("greeting =", await cache.get("greeting"))
        print("expires in", await cache.ttl("greeting"), "s")

        # Many tasks share one pipelined connection.
        async def writer(i: int) -> None:
            await cache.put(f"user:{i}", f"profile {i}")

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(writer, i)
        stats = await cache.stats()
        print(f"keys={stats['keys']} hit_ratio={stats['hit_ratio']:.2f}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7000")
