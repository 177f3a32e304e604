"""The ``gossipcache`` command line."""

from __future__ import annotations

import argparse
import sys

from . import tracesim


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gossipcache",
        description="gossipcache: a peer-to-peer distributed in-memory cache.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tracesim.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
