"""Graceful leave, process side (issue 10): the ``leave`` command and native op, the
``gossipcache leave`` command line, and the server leaving on a request or a signal: it exits
once the core's leave is finished, or after ``leave_timeout_s`` with a warning, and a second
signal cuts the leave short. The real-process checks are in tests/test_faults_processes.py.
"""

from __future__ import annotations

import logging
import os
import random
import signal

import msgpack
import pytest
import trio

from gossipcache.cli import leave as leave_cli
from gossipcache.cli.main import build_parser
from gossipcache.client.client import Client
from gossipcache.clock import ManualClock
from gossipcache.drivers.server import NodeServer, run_node
from gossipcache.errors import ServerError, ServiceUnavailable
from gossipcache.membership import Keyring
from gossipcache.node import commands as c
from gossipcache.node.config import NodeConfig
from gossipcache.node.core import LEAVE_REPLY, NodeCore
from gossipcache.wire.native import (
    OP_LEAVE,
    BadRequest,
    Request,
    decode_request,
    encode_request,
)

# -- the command, the op and the core -----------------------------------------------------------


def test_leave_op_has_no_arguments() -> None:
    frame = encode_request(Request(7, OP_LEAVE, ()))
    assert decode_request(frame[5:]) == Request(7, OP_LEAVE, ())  # past length and version
    with pytest.raises(ValueError):
        encode_request(Request(7, OP_LEAVE, (b"extra",)))
    with pytest.raises(BadRequest):
        decode_request(msgpack.packb([7, OP_LEAVE, b"extra"]))


def _clustered_core() -> NodeCore:
    config = NodeConfig(port=7000, seeds=("127.0.0.1:7001",), membership_profile="local")
    return NodeCore(
        config,
        ManualClock(),
        address="127.0.0.1:7000",
        rng=random.Random(1),
        keyring=Keyring(b"k" * 32),
    )


def test_leave_command_begins_the_leave_once_and_answers_leaving() -> None:
    core = _clustered_core()
    assert not core.leave_finished
    assert core.execute(c.Leave(), 0) == LEAVE_REPLY == "leaving"
    assert core.membership.has_left and core.leave_finished
    core.take_outbox()
    # Again (a second request, or a signal after it): nothing new is sent.
    assert core.execute(c.Leave(), 0) == LEAVE_REPLY
    core.begin_leave(0)
    assert core.take_outbox() == []


def test_a_node_alone_refuses_to_leave() -> None:
    core = NodeCore(NodeConfig(membership_enabled=False), ManualClock())
    with pytest.raises(ServiceUnavailable, match="membership is not running"):
        core.execute(c.Leave(), 0)
    assert not core.leave_finished


# -- the command line -----------------------------------------------------------------------------


def test_leave_cli_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["leave", "--node", "10.0.0.1:7000"])
    assert args.run is leave_cli.run_leave and args.timeout_s == 120.0 and args.node
    assert parser.parse_args(["leave", "--node", "h:1", "--timeout-s", "2.5"]).timeout_s == 2.5
    for bad in (["leave"], ["leave", "--node", "h:1", "--timeout-s", "0"],
                ["leave", "--node", "h:1", "--timeout-s", "inf"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert parser.parse_args(["node"]).leave_timeout_s == 60.0
    with pytest.raises(ValueError, match="leave_timeout_s"):
        NodeConfig(leave_timeout_s=0)


def test_leave_cli_says_what_a_witness_saw() -> None:
    outcome = leave_cli.LeaveOutcome()
    assert not outcome.gone  # nothing seen yet
    outcome.node_answers = False
    assert not outcome.gone  # nobody confirmed
    outcome.seen_state = "alive"
    assert not outcome.gone
    outcome.seen_state = "left"
    assert outcome.gone
    members = [
        {"address": "a:1", "state": "dead"},  # an earlier process at the same address
        {"address": "a:1", "state": "alive"},
        {"address": "b:1", "state": "left"},
    ]
    assert leave_cli._state_of(members, "a:1") == "alive"
    assert leave_cli._state_of(members, "b:1") == "left"
    assert leave_cli._state_of(members, "c:1") == "absent"
    alone = leave_cli.LeaveOutcome(witnesses=0)  # a cluster of one: nobody to confirm
    assert not alone.gone
    alone.node_answers = False
    assert alone.gone


# -- the server -------------------------------------------------------------------------------------


def _config(**overrides) -> NodeConfig:
    settings = dict(port=0, resp_port=None, metrics_port=None, membership_profile="local")
    return NodeConfig(**(settings | overrides))


def _address(server: NodeServer) -> str:
    return f"127.0.0.1:{server.ports['native']}"


async def test_a_leave_request_takes_the_node_out_and_run_node_returns() -> None:
    async with trio.open_nursery() as nursery:
        other = NodeServer(_config())
        await nursery.start(other.serve)
        results = []

        async def run_leaver(task_status=trio.TASK_STATUS_IGNORED):
            results.append(
                await run_node(_config(seeds=(_address(other),)), task_status=task_status)
            )

        leaver = await nursery.start(run_leaver)
        async with Client(_address(leaver)) as client:
            assert await client.leave() == "leaving"
        with trio.fail_after(10):
            while not results:
                await trio.sleep(0.01)  # run_node returns once the leave is done
        assert results == [True] and leaver.core.membership.has_left
        nursery.cancel_scope.cancel()


async def test_leave_and_wait_sees_the_node_gone_and_a_witness_list_it_as_left() -> None:
    async with trio.open_nursery() as nursery:
        other = NodeServer(_config())
        await nursery.start(other.serve)
        leaver = await nursery.start(run_node, _config(seeds=(_address(other),)))
        with trio.fail_after(10):
            while len(other.core.membership.members()) < 2:
                await trio.sleep(0.01)  # until the witness knows the leaver
            outcome, elapsed_s = await leave_cli.leave_and_wait(_address(leaver), 10.0, None)
        assert outcome.gone and not outcome.node_answers
        assert (outcome.witness, outcome.seen_state) == (_address(other), "left")
        assert elapsed_s < 10
        nursery.cancel_scope.cancel()


async def test_leave_and_wait_gives_up_on_a_node_that_keeps_answering(monkeypatch) -> None:
    monkeypatch.setattr(NodeCore, "leave_finished", property(lambda core: False))
    async with trio.open_nursery() as nursery:
        leaver = await nursery.start(run_node, _config(leave_timeout_s=60.0))
        outcome, elapsed_s = await leave_cli.leave_and_wait(_address(leaver), 0.5, None)
        assert not outcome.gone and outcome.node_answers
        assert 0.5 <= elapsed_s < 5
        nursery.cancel_scope.cancel()


async def test_a_node_alone_answers_the_leave_request_with_an_error_and_keeps_serving() -> None:
    async with trio.open_nursery() as nursery:
        server = NodeServer(_config(membership_enabled=False))
        await nursery.start(server.serve)
        async with Client(_address(server)) as client:
            with pytest.raises(ServerError, match="membership is not running"):
                await client.leave()
            await client.put("k", "v")  # still serving
        assert not server.leave_requested.is_set()
        nursery.cancel_scope.cancel()


async def test_leave_needs_auth_on_a_node_with_a_client_password() -> None:
    async with trio.open_nursery() as nursery:
        server = NodeServer(_config(client_password=b"secret"))
        await nursery.start(server.serve)
        async with Client(_address(server)) as client:
            with pytest.raises(ServerError) as refused:
                await client.leave()
            assert refused.value.code == "noauth"
        assert not server.leave_requested.is_set() and not server.core.membership.has_left
        nursery.cancel_scope.cancel()


async def test_a_leave_that_does_not_finish_is_announced_after_the_timeout(
    monkeypatch, caplog
) -> None:
    monkeypatch.setattr(NodeCore, "leave_finished", property(lambda core: False))
    async with trio.open_nursery() as nursery:
        server = NodeServer(_config())
        await nursery.start(server.serve)
        with caplog.at_level(logging.WARNING, "gossipcache.server"):
            started = trio.current_time()
            assert await server.leave_cluster(timeout_s=0.2) is False
            assert 0.2 <= trio.current_time() - started < 5
        assert server.core.membership.has_left  # announced anyway
        assert "did not finish within 0.2 s" in caplog.text
        nursery.cancel_scope.cancel()


async def test_a_second_signal_cuts_the_leave_short(monkeypatch) -> None:
    monkeypatch.setattr(NodeCore, "leave_finished", property(lambda core: False))
    with trio.fail_after(10):  # far below the leave timeout: only the second signal ends it
        async with trio.open_nursery() as nursery:
            results = []

            async def run(task_status=trio.TASK_STATUS_IGNORED):
                config = _config(leave_timeout_s=60.0)
                results.append(await run_node(config, task_status=task_status))

            server = await nursery.start(run)
            os.kill(os.getpid(), signal.SIGTERM)
            await server.leave_requested.wait()
            os.kill(os.getpid(), signal.SIGTERM)
    assert results == [False]
