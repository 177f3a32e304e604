"""``gossipcache status --node HOST:PORT [--json]``: the whole cluster at a glance.

Asks the given node for its member list and topology, then every live member (alive or suspect)
for its own counters (``stats``) on its native port, a bounded number at once, each call bounded
by ``--timeout-s``. Shows per node: state, address, host, buckets owned (and as primary), keys,
bytes used, hit ratio and hints held, and the same summed over the cluster. A member that does
not answer is shown as unreachable; it never fails the command. Exit 0 when the given node
answered, 2 when it did not.
"""

from __future__ import annotations

import argparse
import json
import sys

#: Members asked for their counters at once (each holds one connection of the status client).
STATS_CONCURRENT_MAX = 16
#: The stats key of the hints a node holds for others (replication, issue 9); 0 when absent.
HINTS_HELD_STAT = "replication_hints_held"
#: Member states whose node should answer.
LIVE_STATES = ("alive", "suspect")

EXIT_OK = 0
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", help="members, buckets, keys, bytes, hit ratio and hints of every node"
    )
    parser.add_argument("--node", default="127.0.0.1:7000", help="HOST:PORT of any node")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout-s", type=float, default=2.0,
                        help="bound on each call to a node (default 2)")  # fmt: skip
    parser.add_argument("--password-file", default=None,
                        help="file whose first line is the nodes' client password")  # fmt: skip
    parser.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    import trio

    from ..errors import GossipCacheError
    from .main import read_password_file

    try:
        password = read_password_file(args.password_file)
    except (OSError, ValueError) as error:
        print(f"error: password file {args.password_file}: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        status = trio.run(collect_status, args.node, args.timeout_s, password)
    except GossipCacheError as error:
        print(f"error: {args.node}: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print_status(status)
    return EXIT_OK


async def collect_status(node: str, timeout_s: float, password: bytes | None) -> dict:
    """The cluster as ``node`` sees it, each live member's counters added (see the module)."""
    import trio

    from ..client.client import Client
    from ..errors import GossipCacheError, ServerError

    async with Client(
        node, timeout_s=timeout_s, password=password, node_connections_max=STATS_CONCURRENT_MAX
    ) as client:
        topology = await client.topology(node=node)
        try:
            records = await client.members(node=node)
        except ServerError as error:
            if error.code != "unavailable":
                raise
            # Membership is off: the node is alone, and reachable where we reached it.
            records = [dict(topology["members"][0], state="alive", address=node)]
        by_id = {member["id"]: member for member in topology["members"]}
        rows = []
        for record in sorted(records, key=lambda r: r["address"]):
            row = {
                "id": record["id"],
                "address": record["address"],
                "host_id": record.get("host_id"),
                "zone": record.get("zone"),
                "state": record["state"],
                "placed": record["id"] in by_id,  # in the table the epoch names
                "reachable": False,
            }
            rows.append(row)
        limiter = trio.CapacityLimiter(STATS_CONCURRENT_MAX)

        async def fetch(row: dict) -> None:
            async with limiter:
                try:
                    stats = await client.stats(node=row["address"])
                except GossipCacheError as error:
                    row["error"] = str(error)
                    return
            row.update(_node_figures(stats), reachable=True)

        async with trio.open_nursery() as nursery:
            for row in rows:
                if row["state"] in LIVE_STATES:
                    nursery.start_soon(fetch, row)
    return {
        "node": node,
        "epoch": topology["epoch"],
        "replicas": topology["replicas"],
        "members": rows,
        "total": _totals(rows),
    }


def _node_figures(stats: dict) -> dict:
    hits, misses = stats.get("hits", 0), stats.get("misses", 0)
    return {
        "buckets_owned": stats.get("buckets_owned", 0),
        "buckets_primary": stats.get("buckets_primary", 0),
        "keys": stats.get("keys", 0),
        "used_bytes": stats.get("used_bytes", 0),
        "size_bytes_max": stats.get("size_bytes_max", 0),
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
        "hints_held": stats.get(HINTS_HELD_STAT, 0),
        "placement_epoch": stats.get("placement_epoch"),
    }


def _totals(rows: list[dict]) -> dict:
    answered = [row for row in rows if row["reachable"]]
    total = {
        "members": len(rows),
        "live": sum(row["state"] in LIVE_STATES for row in rows),
        "reachable": len(answered),
    }
    for name in ("buckets_owned", "buckets_primary", "keys", "used_bytes", "size_bytes_max",
                 "hits", "misses", "hints_held"):  # fmt: skip
        total[name] = sum(row[name] for row in answered)
    lookups = total["hits"] + total["misses"]
    total["hit_ratio"] = total["hits"] / lookups if lookups else 0.0
    return total


def _size(size_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def print_status(status: dict) -> None:
    total = status["total"]
    epoch = status["epoch"]
    print(
        f"cluster seen from {status['node']}: {total['members']} members, {total['live']} live,"
        f" {total['reachable']} answered; replicas {status['replicas']};"
        f" epoch {'none yet' if epoch is None else f'{epoch:016x}'}"
    )
    header = ("NODE", "STATE", "HOST", "BUCKETS", "PRIMARY", "KEYS", "USED", "HIT%", "HINTS")
    rows = [header]
    for row in status["members"]:
        host = row["host_id"] or ""
        if row.get("zone"):
            host = f"{host} ({row['zone']})"
        state = row["state"]
        if row["state"] in LIVE_STATES and not row["reachable"]:
            state += ", unreachable"
        elif row["reachable"] and row["placement_epoch"] != epoch:
            state += ", other epoch"  # its table differs from the asked node's (settling)
        if row["reachable"]:
            figures = (
                str(row["buckets_owned"]),
                str(row["buckets_primary"]),
                str(row["keys"]),
                _size(row["used_bytes"]),
                f"{100 * row['hit_ratio']:.1f}",
                str(row["hints_held"]),
            )
        else:
            figures = ("-",) * 6
        rows.append((row["address"], state, host, *figures))
    rows.append(
        (
            "total", f"{total['reachable']}/{total['members']} answered", "",
            str(total["buckets_owned"]), str(total["buckets_primary"]), str(total["keys"]),
            _size(total["used_bytes"]), f"{100 * total['hit_ratio']:.1f}",
            str(total["hints_held"]),
        )
    )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("keys and bytes count every copy: with R replicas a key is held R times")
