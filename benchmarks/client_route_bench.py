"""The smart client's routing costs (issue 9): building the placement table from a topology of N
members, and one key's owners from it: ``python -m benchmarks.client_route_bench``. With
``--node HOST:PORT``: the client's CPU per ``get`` against that node instead (50 Trio tasks x 400
gets through one ``Client``); run it with ``PYTHONPATH`` set to another checkout to compare."""

from __future__ import annotations

import sys
import time
import timeit

import trio

from gossipcache.client.client import build_route


def topology(count: int) -> dict:
    members = [
        {
            "id": f"127.0.0.1:{7000 + index}#{index:08x}",
            "address": f"127.0.0.1:{7000 + index}",
            "host_id": f"host-{index}",
            "zone": None,
            "capacity_bytes": 256 << 20,
        }
        for index in range(count)
    ]
    return {"epoch": None, "replicas": 3, "self": members[0]["id"], "members": members}


def main() -> None:
    print("| members | table build (ms) | owners(key) (us) |")
    print("|---|---|---|")
    for count in (3, 10, 100):
        started = time.perf_counter()
        route = trio.run(build_route, topology(count), "127.0.0.1:7000")
        build_ms = (time.perf_counter() - started) * 1000
        calls = 200_000
        owners_us = (
            timeit.timeit(lambda r=route: r.owners(b"user:12345"), number=calls) / calls * 1e6
        )
        print(f"| {count} | {build_ms:.0f} | {owners_us:.2f} |")


async def client_cpu(address: str, tasks: int = 50, gets_per_task: int = 400) -> None:
    from gossipcache import Client

    async with Client(address) as client:
        await client.put("k", b"v" * 32)

        async def worker() -> None:
            for _ in range(gets_per_task):
                await client.get("k")

        cpu = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker)
        cpu = time.process_time() - cpu
    print(f"client CPU {cpu / (tasks * gets_per_task) * 1e6:.1f} us per get")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--node":
        trio.run(client_cpu, sys.argv[2])
    else:
        main()
