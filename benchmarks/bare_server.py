"""A reference point for benchmarks, not part of the product: the least a Trio RESP server can do.

    python -m benchmarks.bare_server --port 6400

GET and SET on a plain dict, one task per connection over raw ``trio.socket`` (``recv``, parse
every complete command with gossipcache's RESP parser, one ``send``), and nothing else: no
limits, expiry, eviction, statistics or histograms. ``benchmarks.compare`` measures it in the
same run as Redis and a full node, so the report can say how much of the node's cost is Trio's
and Python's floor and how much is the node's own work.
"""

from __future__ import annotations

import argparse
import contextlib
import socket

import trio

from gossipcache.wire.resp import OK, RespParser, encode_bulk, encode_error


async def _serve_connection(sock: trio.socket.SocketType, data: dict[bytes, bytes]) -> None:
    parser = RespParser()
    with sock:
        while True:
            received = await sock.recv(65536)
            if not received:
                return
            out = []
            for args in parser.parse(received):
                name = args[0].upper()
                if name == b"GET":
                    out.append(encode_bulk(data.get(args[1])))
                elif name == b"SET":
                    data[args[1]] = args[2]
                    out.append(OK)
                elif name == b"PING":
                    out.append(b"+PONG\r\n")
                elif name == b"CONFIG":  # redis-benchmark asks for save/appendonly
                    out.append(b"*0\r\n")
                else:
                    out.append(encode_error("ERR unknown command"))
            reply = memoryview(b"".join(out))
            while reply:
                reply = reply[await sock.send(reply) :]


async def serve(host: str, port: int) -> None:
    data: dict[bytes, bytes] = {}
    listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(1024)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(_serve_connection, sock, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6400)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
