"""The ``gossipcache`` command line.

Client commands exit 0 when the key was found / the write applied, 1 when the key is missing,
2 on an error (unreachable node, refused request, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time

from ..errors import GossipCacheError
from ..store.eviction import POLICY_NAMES
from . import bench, cluster, leave, status, tracesim

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_ERROR = 2

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}  # fmt: skip


def parse_size_bytes(text: str) -> int:
    """``"256MiB"`` -> 268435456. Units: B, KB/MB/GB (powers of 1000), KiB/MiB/GiB (1024)."""
    stripped = text.strip().lower()
    digits = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(digits) :].strip()
    try:
        number = float(digits)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB)") from None
    if unit not in _SIZE_UNITS or not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256MiB)")
    return int(number * _SIZE_UNITS[unit])


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


# -- node --------------------------------------------------------------------------------------


def _run_node(args: argparse.Namespace) -> int:
    import trio

    from ..drivers.allocator import tune_allocator
    from ..drivers.cluster_keys import load_cluster_keyring
    from ..drivers.server import run_node
    from ..node.config import development_key_refusal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tune_allocator()  # before any value is stored: large values must leave memory when freed
    if args.cluster_key_file is not None:
        try:  # fail before binding anything, with a clear message
            load_cluster_keyring(args.cluster_key_file)
        except (OSError, ValueError) as error:
            print(f"error: cluster key file {args.cluster_key_file}: {error}", file=sys.stderr)
            return EXIT_ERROR
    refusal = development_key_refusal(
        args.host,
        not args.no_membership,
        args.cluster_key_file,
        args.allow_development_key_on_network,
    )
    if refusal is not None:  # before binding anything
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_ERROR
    try:
        client_password = read_password_file(args.client_password_file)
    except (OSError, ValueError) as error:
        print(f"error: client password file {args.client_password_file}: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        config = _node_config(args, client_password)
    except ValueError as error:  # a setting out of range: say which, before binding anything
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    left_cleanly = trio.run(run_node, config)
    return EXIT_OK if left_cleanly else EXIT_ERROR


def _node_config(args: argparse.Namespace, client_password: bytes | None):
    from ..node.config import NodeConfig

    return NodeConfig(
        client_password=client_password,
        host=args.host,
        port=args.port,
        resp_port=args.resp_port,
        metrics_port=args.metrics_port,
        size_bytes_max=args.max_memory,
        eviction=args.eviction,
        connections_max=args.connections_max,
        membership_enabled=not args.no_membership,
        seeds=tuple(args.seed),
        cluster_key_file=args.cluster_key_file,
        membership_profile=args.membership_profile,
        replicas=args.replicas,
        read_consistency=args.read_consistency,
        write_consistency=args.write_consistency,
        replica_timeout_ms=args.replica_timeout_ms,
        max_clock_offset_ms=args.max_clock_offset_ms,
        tombstone_grace_ms=int(args.tombstone_grace_s * 1000),
        hint_window_ms=int(args.hint_window_s * 1000),
        read_repair_chance=args.read_repair_chance,
        antientropy_interval_ms=args.antientropy_interval_ms,
        antientropy_bytes_per_round_max=args.antientropy_bytes_per_round,
        antientropy_rounds_per_s_max=args.antientropy_rounds_per_s,
        host_id=args.host_id,
        zone=args.zone,
        allow_development_key_on_network=args.allow_development_key_on_network,
        leave_timeout_s=args.leave_timeout_s,
    )


def _register_node(sub) -> None:
    parser = sub.add_parser("node", help="run a cache node in the foreground")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=7000, help="native protocol TCP port")
    parser.add_argument("--resp-port", type=_port, default=None, help="Redis protocol port")
    parser.add_argument("--metrics-port", type=_port, default=None, help="HTTP /metrics port")
    parser.add_argument("--max-memory", type=parse_size_bytes, default="256MiB",
                        help="memory limit for entries, e.g. 256MiB (default)")  # fmt: skip
    parser.add_argument("--eviction", choices=POLICY_NAMES, default="sieve")
    parser.add_argument("--connections-max", type=int, default=10_000)
    parser.add_argument("--seed", action="append", type=_address, default=[],
                        help="HOST:PORT of a member to join through (repeatable)")  # fmt: skip
    parser.add_argument("--cluster-key-file", default=None,
                        help="file of hex cluster keys, one per line, first is primary "
                             "(default: a public development key, with a warning)")  # fmt: skip
    parser.add_argument("--membership-profile", choices=("lan", "local"), default="lan",
                        help="membership timers: lan (default) or local (one host, faster)")  # fmt: skip
    parser.add_argument("--no-membership", action="store_true",
                        help="serve alone: no membership sockets or timers")  # fmt: skip
    parser.add_argument("--replicas", type=int, default=3,
                        help="copies of each key, R (default 3)")  # fmt: skip
    parser.add_argument("--read-consistency", choices=LEVELS, default="one",
                        help="level of reads that name none (default one)")  # fmt: skip
    parser.add_argument("--write-consistency", choices=LEVELS, default="quorum",
                        help="level of writes that name none (default quorum)")  # fmt: skip
    parser.add_argument("--replica-timeout-ms", type=int, default=1000,
                        help="how long a coordinator waits for a key's owners (default 1000)")  # fmt: skip
    parser.add_argument("--max-clock-offset-ms", type=int, default=500,
                        help="refuse versions this far ahead of the local clock (default 500)")  # fmt: skip
    parser.add_argument("--tombstone-grace-s", type=float, default=3600.0,
                        help="how long deletes are remembered (default 3600)")  # fmt: skip
    parser.add_argument("--hint-window-s", type=float, default=600.0,
                        help="hints older than this are dropped (default 600)")  # fmt: skip
    parser.add_argument("--read-repair-chance", type=float, default=0.0,
                        help="chance a read at one repairs the key's owners (default 0)")  # fmt: skip
    parser.add_argument("--antientropy-interval-ms", type=int, default=1000,
                        help="a summary exchange with one co-owner this often; 0: off"
                             " (default 1000)")  # fmt: skip
    parser.add_argument("--antientropy-bytes-per-round", type=int, default=8 * 1024 * 1024,
                        help="bytes of entries repaired per round at most (default 8 MiB)")  # fmt: skip
    parser.add_argument("--antientropy-rounds-per-s", type=int, default=50,
                        help="rounds per second at most while repairs remain (default 50)")  # fmt: skip
    parser.add_argument("--host-id", default=None,
                        help="the host this node runs on, for placing replicas on distinct"
                             " hosts (default: the machine's name)")  # fmt: skip
    parser.add_argument("--zone", default=None,
                        help="the zone (rack, availability zone) of this node; optional")  # fmt: skip
    parser.add_argument("--allow-development-key-on-network", action="store_true",
                        help="without --cluster-key-file, bind a non-loopback --host anyway "
                             "(anyone who reaches the node can then forge membership)")  # fmt: skip
    parser.add_argument("--client-password-file", default=None,
                        help="file whose first line is the password clients must send (AUTH)"
                             " before any command (default: none required)")  # fmt: skip
    parser.add_argument("--leave-timeout-s", type=float, default=60.0,
                        help="on SIGTERM or a leave request, exit after handing off the data,"
                             " or after this many seconds at most (default 60)")  # fmt: skip
    parser.set_defaults(run=_run_node)


LEVELS = ("one", "quorum", "all")


def read_password_file(path: str | None) -> bytes | None:
    """The password in the first line of ``path`` (its line ending stripped); None for no
    file. ValueError when the line is empty."""
    if path is None:
        return None
    with open(path, "rb") as file:
        password = file.readline().rstrip(b"\r\n")
    if not password:
        raise ValueError("the first line is empty")
    return password


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return text


# -- client commands -------------------------------------------------------------------------


def _client_call(args: argparse.Namespace) -> int:
    from ..client.client import SyncClient

    try:
        password = read_password_file(args.password_file)
    except (OSError, ValueError) as error:
        print(f"error: password file {args.password_file}: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with SyncClient(args.node, timeout_s=args.timeout_s, password=password) as client:
            return _client_command(client, args)
    except GossipCacheError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _client_command(client, args: argparse.Namespace) -> int:
    command = args.command
    if command == "get":
        value = client.get(args.key)
        if value is None:
            return EXIT_MISSING
        sys.stdout.buffer.write(value + b"\n")
        return EXIT_OK
    if command == "put":
        client.put(args.key, args.value, args.ttl_s)
        return EXIT_OK
    if command == "del":
        return EXIT_OK if client.delete(args.key) else EXIT_MISSING
    if command == "expire":
        return EXIT_OK if client.expire(args.key, args.ttl_s) else EXIT_MISSING
    if command == "ttl":
        ttl_s = client.ttl(args.key)
        if ttl_s is None:
            return EXIT_MISSING
        print("none" if math.isinf(ttl_s) else f"{ttl_s:.3f}")
        return EXIT_OK
    if command == "stats":
        stats = client.stats()
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        else:
            for name in sorted(stats):
                print(f"{name}: {stats[name]}")
        return EXIT_OK
    if command == "members":
        _print_members(client.members(), args.json)
        return EXIT_OK
    raise AssertionError(command)


def _print_members(members: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(members, indent=2, sort_keys=True))
        return
    now_ms = time.time_ns() // 1_000_000
    rows = [("ID", "ADDRESS", "HOST", "STATE", "INCARNATION", "SINCE")]
    for member in members:
        age_s = max(0, now_ms - member["since_ms"]) / 1000
        host = member.get("host_id", "")  # absent from nodes before host ids
        if member.get("zone"):
            host = f"{host} ({member['zone']})"
        rows.append(
            (
                member["id"],
                member["address"],
                host,
                member["state"],
                str(member["incarnation"]),
                f"{age_s:.1f} s ago",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _register_client_commands(sub) -> None:
    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--node", default="127.0.0.1:7000", help="HOST:PORT of a node")
        parser.add_argument("--timeout-s", type=float, default=5.0)
        parser.add_argument("--password-file", default=None,
                            help="file whose first line is the node's client password")  # fmt: skip
        parser.set_defaults(run=_client_call)
        return parser

    add("get", "print a key's value (exit 1 when missing)").add_argument("key")
    parser = add("put", "write a key")
    parser.add_argument("key")
    parser.add_argument("value")
    parser.add_argument("--ttl-s", type=float, default=None, help="expire after this many seconds")
    add("del", "delete a key (exit 1 when missing)").add_argument("key")
    parser = add("expire", "set (or with --clear, remove) a key's TTL")
    parser.add_argument("key")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ttl-s", type=float)
    group.add_argument("--clear", dest="ttl_s", action="store_const", const=None)
    add("ttl", "print seconds until a key expires ('none' without a TTL)").add_argument("key")
    add("stats", "print the node's counters").add_argument("--json", action="store_true")
    add("members", "print the node's view of the cluster").add_argument(
        "--json", action="store_true"
    )


def _run_keygen(args: argparse.Namespace) -> int:
    import secrets

    print(secrets.token_hex(32))
    return EXIT_OK


def _register_keygen(sub) -> None:
    parser = sub.add_parser(
        "keygen",
        help="print a new random cluster key (hex); put it in the file --cluster-key-file reads",
    )
    parser.set_defaults(run=_run_keygen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gossipcache",
        description="gossipcache: a peer-to-peer distributed in-memory cache.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_node(sub)
    _register_keygen(sub)
    _register_client_commands(sub)
    cluster.register(sub)
    status.register(sub)
    leave.register(sub)
    tracesim.register(sub)
    bench.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
