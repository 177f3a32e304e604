"""The sans-IO layers never reach for clocks, sockets, Trio or global randomness.

Time and randomness are passed in (``now_ms``, ``random.Random`` instances, seeds), so the
simulator can drive the same code with virtual time and replay any run from a seed. This reads
the source of every such module and fails on a forbidden import or a call of a global ``random``
function (``random.Random`` itself, the type, is allowed).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SANS_IO_FILES = sorted(
    [
        *ROOT.glob("sim/*.py"),
        *ROOT.glob("gossipcache/membership/*.py"),
        *ROOT.glob("gossipcache/eviction/*.py"),
        *(
            ROOT / "gossipcache" / name
            for name in (
                "store.py",
                "keyslot.py",
                "histogram.py",
                "sansio.py",
                "protocol.py",
                "resp.py",
            )
        ),
    ]
)
FORBIDDEN_MODULES = {"trio", "time", "socket", "asyncio", "datetime", "secrets", "select"}


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sans_io_module(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported = {(node.module or "").split(".")[0]} if node.level == 0 else set()
            if node.module == "random" and node.level == 0:
                assert {alias.name for alias in node.names} <= {"Random"}, path.name
        else:
            imported = set()
        assert not imported & FORBIDDEN_MODULES, f"{path.name} imports {imported}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("random", "_random")
        ):
            assert node.attr == "Random", f"{path.name} uses random.{node.attr}"


def test_the_list_is_not_empty() -> None:
    assert len(SANS_IO_FILES) > 20
