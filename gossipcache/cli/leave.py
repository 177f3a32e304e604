"""``gossipcache leave --node HOST:PORT [--timeout-s 120]``: take one node out of the cluster.

Asks the node for its member list (to know whom to ask afterwards), sends it the ``leave`` op
(the node hands its buckets to their new owners, announces the leave and exits: docs/design.md,
"Graceful leave: process side"), then polls every ``POLL_INTERVAL_S`` until both hold: the node
no longer answers, and the other members that answer list it as gone (left, or dead if they
missed the announcement). Everything is bounded by ``--timeout-s``. Exit 0 when the node is
gone, 2 on an error (unreachable node, refused request, no membership), 3 on a timeout.
"""

from __future__ import annotations

import argparse
import sys

#: How often the node and the other members are asked whether the node is gone.
POLL_INTERVAL_S = 0.5
#: Bound on each call before the leave (the member list, the ``leave`` op itself).
CALL_TIMEOUT_S = 5.0
#: Bound on each call while polling (a node that is going away may not answer at all).
POLL_CALL_TIMEOUT_S = 1.0
#: Other members asked in each poll, at most (the first that answers is enough).
WITNESSES_PER_POLL_MAX = 3
#: Member states of a node that is still in the cluster.
LIVE_STATES = ("alive", "suspect")

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_TIMEOUT = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leave", help="take a node out of the cluster gracefully and wait until it is gone"
    )
    parser.add_argument("--node", required=True, help="HOST:PORT (native) of the node to remove")
    parser.add_argument("--timeout-s", type=_positive_s, default=120.0,
                        help="give up waiting after this many seconds (default 120)")  # fmt: skip
    parser.add_argument("--password-file", default=None,
                        help="file whose first line is the nodes' client password")  # fmt: skip
    parser.set_defaults(run=run_leave)


def _positive_s(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text!r}")
    return seconds


class LeaveOutcome:
    """What the wait saw: whether the node stopped answering, and how the others list it."""

    def __init__(self, witnesses: int = 1) -> None:
        #: Other live members before the leave: with none (a cluster of one), nobody is left
        #: to confirm, and the node's silence is the whole answer.
        self.witnesses = witnesses
        self.node_answers = True
        #: The state the last answering witness gave the node ("left", "dead", "absent"), and
        #: that witness; None until one answered.
        self.seen_state: str | None = None
        self.witness: str | None = None

    @property
    def gone(self) -> bool:
        if self.node_answers:
            return False
        return self.witnesses == 0 or self.seen_state not in (None, *LIVE_STATES)


def run_leave(args: argparse.Namespace) -> int:
    import trio

    from ..errors import GossipCacheError
    from .main import _address, read_password_file

    try:
        _address(args.node)
        password = read_password_file(args.password_file)
    except (argparse.ArgumentTypeError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    try:
        outcome, elapsed_s = trio.run(leave_and_wait, args.node, args.timeout_s, password)
    except GossipCacheError as error:
        print(f"error: {args.node}: {error}", file=sys.stderr)
        return EXIT_ERROR
    if outcome.gone:
        confirmed = (
            f"{outcome.witness} lists it as {outcome.seen_state}"
            if outcome.witness is not None
            else "it was the only member"
        )
        print(
            f"{args.node} left the cluster in {elapsed_s:.1f} s: its process no longer answers"
            f" and {confirmed}"
        )
        return EXIT_OK
    if outcome.node_answers:
        why = "its process still answers"
    elif outcome.seen_state is None:
        why = "its process no longer answers, but no other member answered to confirm"
    else:
        why = (
            f"its process no longer answers, but {outcome.witness} still lists it as "
            f"{outcome.seen_state}"
        )
    print(
        f"error: {args.node} did not leave within {args.timeout_s:.1f} s: {why} (the node "
        "keeps leaving by itself; see its log, or wait and check `gossipcache members`)",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT


async def leave_and_wait(
    node: str, timeout_s: float, password: bytes | None
) -> tuple[LeaveOutcome, float]:
    """Send ``leave`` to ``node``, then poll until it is gone or ``timeout_s`` passed. Returns
    what was seen and the seconds it took. Raises ``GossipCacheError`` when the node cannot be
    asked or refuses."""
    import trio

    from ..client.client import Client

    started = trio.current_time()
    async with Client(node, timeout_s=CALL_TIMEOUT_S, password=password) as client:
        members = await client.members(node=node)
        witnesses = [
            member["address"]
            for member in members
            if member["address"] != node and member["state"] in LIVE_STATES
        ]
        outcome = LeaveOutcome(len(witnesses))
        await client.leave(node=node)
        with trio.move_on_after(max(0.0, timeout_s - (trio.current_time() - started))):
            while True:
                await _poll(client, node, witnesses, outcome)
                if outcome.gone:
                    break
                await trio.sleep(POLL_INTERVAL_S)
    return outcome, trio.current_time() - started


async def _poll(client, node: str, witnesses: list[str], outcome: LeaveOutcome) -> None:
    """One round: does ``node`` answer a ping, and how does the first witness that answers
    list it? Witnesses are asked only once the node stopped answering (it exits last)."""
    import trio

    from ..errors import CacheUnavailable, ServerError

    outcome.node_answers = False  # unless the ping below is answered in time
    with trio.move_on_after(POLL_CALL_TIMEOUT_S):
        try:
            await client.ping(node=node)
            outcome.node_answers = True
        except ServerError:  # it answers, if only to refuse
            outcome.node_answers = True
        except CacheUnavailable:  # refused or broken: the process is gone
            pass
    if outcome.node_answers:
        return
    for witness in witnesses[:WITNESSES_PER_POLL_MAX]:
        with trio.move_on_after(POLL_CALL_TIMEOUT_S):
            try:
                members = await client.members(node=witness)
            except (CacheUnavailable, ServerError):
                continue
            outcome.seen_state = _state_of(members, node)
            outcome.witness = witness
            return


def _state_of(members: list[dict], address: str) -> str:
    """The state a member list gives ``address``: a live record wins over the tombstones an
    earlier process at the same address left; "absent" when there is none."""
    states = [member["state"] for member in members if member["address"] == address]
    for state in states:
        if state in LIVE_STATES:
            return state
    return states[0] if states else "absent"
