"""CPU instructions per quorum write, summed over three in-process nodes (issue 9).

Three whole nodes (``NodeCore``) join in the simulator (membership profile ``local``, R = 3);
then node 0 coordinates ``--ops`` plain SETs at the default level (quorum), 100 per batch, and
the script carries every replication payload by hand: the writes to the two other owners,
their acknowledgements back. No sockets, no reactor, no client: what is left is the
replication path itself (coordinator, replicas, codec, store).

Run it twice under callgrind and take the difference, so the start-up cancels out::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m benchmarks.write_path_cost --ops 2000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m benchmarks.write_path_cost --ops 6000
    # instructions per write = (Collected(6000) - Collected(2000)) / 4000

Instruction counts do not depend on the machine's load, unlike times (docs/benchmarks.md,
"Cluster (issue 9)").
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from gossipcache.node import commands as c
from gossipcache.sansio import Channel
from sim.node import SIM_NODE_CONFIG, node_factory
from sim.simulation import Simulation, node_addresses

BATCH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="writes (a multiple of 100)")
    args = parser.parse_args()
    config = replace(
        SIM_NODE_CONFIG,
        membership_enabled=True,
        membership_profile="local",
        replicas=3,
        size_bytes_max=256 << 20,
    )
    sim = Simulation(1, check_invariants=False)
    addresses = node_addresses(3)
    factory = node_factory(sim, config, seeds=lambda address: addresses[:1])
    for address in addresses:
        sim.add_node(address, factory)
    sim.run_until(6000)
    cores = [sim.core(address).core for address in addresses]
    for core in cores:
        core.take_outbox()
    put = cores[0].handler_of(c.Put)[0]
    wall_ms = cores[0].clock.wall_ms()
    for batch in range(args.ops // BATCH):
        for index in range(BATCH):
            put([b"SET", b"key:%d" % (batch * BATCH + index), b"x" * 100], wall_ms)
        for out in cores[0].take_outbox():
            if out.payload[:1] == b"R":
                owner = cores[addresses.index(out.destination)]
                owner.handle(addresses[0], Channel.STREAM, out.payload, sim.now_ms)
        for index in (1, 2):
            for out in cores[index].take_outbox():
                if out.payload[:1] == b"R":
                    cores[0].handle(addresses[index], Channel.STREAM, out.payload, sim.now_ms)
        cores[0].take_completed()
    print(f"{args.ops} quorum writes done")


if __name__ == "__main__":
    main()
