"""Issue 8, item 6: a keyed node joins a cluster while an attacker without the cluster key keeps
opening peer streams to its seed, more at once than the seed has peer slots (1,024).

Real nodes (``NodeServer`` in-process, real loopback sockets, real time, the real constants),
one key file. The attacker sends what the issue's attack sent (the preamble and an address
frame), forged and replayed handshakes, one captured for another node, and handshakes trickled
a byte per 100 ms; from 127.0.0.1, the address the joining node connects from too. Waiting is
bounded polling.
"""

from __future__ import annotations

import itertools
import os

import trio

from gossipcache.drivers import reactor as reactor_module
from gossipcache.drivers.server import NodeServer
from gossipcache.node.config import NodeConfig
from gossipcache.wire.framing import frame
from gossipcache.wire.peer import PREAMBLE, PeerAuthenticator

#: Attacker connections open at once: more than the seed's peer slots.
ATTACK_OPEN_MAX = reactor_module.PEER_INCOMING_MAX + 76
#: The joining node starts once the attacker has opened this many connections.
ATTACK_OPENED_BEFORE_JOIN = reactor_module.PEER_INCOMING_MAX + 6
#: A trickling attacker sends one byte this often (the old idle timeout was 120 s).
TRICKLE_INTERVAL_S = 0.1
#: The join, under attack, must complete within this long (unloaded it takes ~0.1 s).
JOIN_S_MAX = 10.0
POLL_S = 0.02


async def wait_until(predicate, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(POLL_S)


async def start_keyed(nursery, key_file: str, seeds: tuple[str, ...] = ()) -> NodeServer:
    config = NodeConfig(
        port=0,
        resp_port=None,
        metrics_port=None,
        seeds=seeds,
        membership_profile="local",
        cluster_key_file=key_file,
    )
    server = NodeServer(config)
    await nursery.start(server.serve)
    return server


def address_of(server: NodeServer) -> str:
    return f"127.0.0.1:{server.ports['native']}"


def alive(server: NodeServer) -> set[str]:
    return {m.address for m in server.core.membership.members() if str(m.state) == "alive"}


class Attacker:
    """Keeps up to ``ATTACK_OPEN_MAX`` connections open to ``port``, each sending the next of
    ``openings`` (``None``: trickle a handshake a byte at a time) and holding on until the node
    closes it."""

    def __init__(self, port: int, openings: list[bytes | None]) -> None:
        self.port = port
        self.openings = itertools.cycle(openings)
        self.open = 0
        self.opened = 0
        self._closed = trio.Event()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                if self.open >= ATTACK_OPEN_MAX:
                    self._closed = trio.Event()
                    await self._closed.wait()
                    continue
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                self.open += 1
                self.opened += 1
                nursery.start_soon(self._hold, stream, next(self.openings))

    async def _hold(self, stream: trio.SocketStream, opening: bytes | None) -> None:
        try:
            if opening is None:
                await self._trickle(stream)
            else:
                await stream.send_all(opening)
                while await stream.receive_some(1024):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()
            self.open -= 1
            self._closed.set()

    async def _trickle(self, stream: trio.SocketStream) -> None:
        # A plausible handshake header, then filler: never complete within the timeout.
        data = PREAMBLE + (200).to_bytes(4, "big") + b"\x01" + b"a" * 199
        for byte in itertools.cycle(data):
            await stream.send_all(bytes((byte,)))
            with trio.move_on_after(TRICKLE_INTERVAL_S):
                if await stream.receive_some(1) == b"":
                    return


async def test_a_keyed_node_joins_while_unauthenticated_peer_streams_flood_its_seed(
    nursery, tmp_path
) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "cluster.keys"
    key_file.write_text(key.hex() + "\n")
    seed = await start_keyed(nursery, str(key_file))
    seed_address = address_of(seed)
    stats = seed.core.membership_transport_stats
    wall_ms = seed.clock.wall_ms()
    # A genuine handshake the attacker captured: it opened one stream, its replays must not.
    captured = PeerAuthenticator("127.0.0.1:6001", [key]).opening(
        seed_address, wall_ms, os.urandom(16)
    )
    first = await trio.open_tcp_stream("127.0.0.1", seed.ports["native"])
    await first.send_all(captured)
    await wait_until(lambda: stats.get("peer_incoming_authenticated") == 1, JOIN_S_MAX)
    openings = [
        PREAMBLE + frame(b"127.0.0.1:6002"),  # the attack: preamble + address frame
        PeerAuthenticator("127.0.0.1:6003", [os.urandom(32)]).opening(
            seed_address, wall_ms, os.urandom(16)
        ),  # forged: signed without the cluster key
        captured,  # replayed
        PeerAuthenticator("127.0.0.1:6004", [key]).opening(
            "127.0.0.1:1", wall_ms, os.urandom(16)
        ),  # captured on its way to another node
        None,  # trickled
    ]
    attacker = Attacker(seed.ports["native"], openings)
    nursery.start_soon(attacker.run)
    attack_started_s = trio.current_time()
    await wait_until(lambda: attacker.opened >= ATTACK_OPENED_BEFORE_JOIN, JOIN_S_MAX)

    joiner = await start_keyed(nursery, str(key_file), seeds=(seed_address,))
    join_started_s = trio.current_time()
    both = {seed_address, address_of(joiner)}
    await wait_until(lambda: alive(seed) == both and alive(joiner) == both, JOIN_S_MAX)
    join_s = trio.current_time() - join_started_s
    # Trickled handshakes held a handshaking slot until the timeout, however slowly they came.
    await wait_until(lambda: stats.get("peer_dropped_handshake_timeout"), JOIN_S_MAX)
    opened = attacker.opened
    attack_s = trio.current_time() - attack_started_s
    nursery.cancel_scope.cancel()
    # The figures docs/design.md quotes (shown with pytest -s).
    print(
        f"joined in {join_s * 1000:.0f} ms under attack; attacker opened {opened} connections "
        f"in {attack_s:.2f} s; seed dropped:",
        {name: count for name, count in sorted(stats.items()) if name.startswith("peer_dropped")},
    )

    assert opened > reactor_module.PEER_INCOMING_MAX
    for reason in (
        "bad_handshake",
        "bad_mac",
        "replay",
        "wrong_receiver",
        "source_handshakes_full",
        "handshake_timeout",
    ):
        assert stats.get(f"peer_dropped_{reason}", 0) > 0, reason
    # Only the captured original and the joiner's own streams were ever authenticated.
    joiner_links = joiner.core.membership_transport_stats["peer_connections_opened"]
    assert stats["peer_incoming_authenticated"] == 1 + joiner_links
    assert seed.reactor.peer_connections <= 2 + reactor_module.PEER_HANDSHAKING_PER_SOURCE_MAX
