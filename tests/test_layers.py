"""The package's layers, checked from the source: nothing imports upward, and the sans-IO layers
never reach for clocks, sockets, Trio or global randomness.

Layers are whole folders (or base modules); a module of the package that belongs to no layer
fails the test, so a new folder has to be placed before it can land. Time and randomness are
passed in (a clock object, ``now_ms``, ``random.Random`` instances, seeds), which is what lets the
simulator drive the same code with virtual time and replay any run from a seed.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gossipcache"

#: Bottom to top. A module may import its own layer and the ones below, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("errors.py", "limits.py", "sansio.py", "clock.py", "hlc.py")),
    ("structures", ("store", "placement", "wire", "metrics")),
    ("cores", ("membership", "replication", "antientropy")),
    ("node", ("node",)),
    ("drivers", ("drivers",)),
    ("surfaces", ("client", "cli")),
)
LAYER_RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
#: Layers that must stay sans-IO, and the simulator, which drives the node layer directly.
SANS_IO_LAYERS = ("base", "structures", "cores", "node")
#: The package's own entry points sit above every layer.
ENTRY_POINTS = ("__init__.py", "__main__.py")
FORBIDDEN_MODULES = {"trio", "time", "socket", "asyncio", "datetime", "secrets", "select"}
#: The package's sans-IO layers do not touch the process either (the simulator's CLI may).
FORBIDDEN_MODULES_IN_PACKAGE = FORBIDDEN_MODULES | {"os"}


def _layer_of_path(path: pathlib.Path) -> str | None:
    relative = path.relative_to(PACKAGE)
    for name, members in LAYERS:
        if relative.parts[0] in members:
            return name
    return None


def _module_path(module: str) -> pathlib.Path | None:
    """The file or folder of ``gossipcache.x.y`` (the longest existing prefix)."""
    parts = module.split(".")[1:]
    while parts:
        candidate = PACKAGE.joinpath(*parts)
        if candidate.is_dir() or candidate.with_suffix(".py").is_file():
            return candidate if candidate.is_dir() else candidate.with_suffix(".py")
        parts.pop()
    return None


def _imports(path: pathlib.Path, tree: ast.AST) -> list[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    root = PACKAGE if path.is_relative_to(PACKAGE) else path.parent
    package_parts = [root.name, *path.relative_to(root).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names += [module] + [f"{module}.{alias.name}" for alias in node.names]
            else:
                names.append(node.module or "")
    return names


PACKAGE_MODULES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.relative_to(PACKAGE).as_posix() not in ENTRY_POINTS
)
SIM_MODULES = sorted((ROOT / "sim").glob("*.py"))


def test_every_module_has_a_layer() -> None:
    unplaced = [str(p.relative_to(ROOT)) for p in PACKAGE_MODULES if _layer_of_path(p) is None]
    assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


@pytest.mark.parametrize("path", PACKAGE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path: pathlib.Path) -> None:
    layer = _layer_of_path(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for module in _imports(path, tree):
        if not module.startswith("gossipcache"):
            continue
        target = _module_path(module)
        if target is None or target == PACKAGE:
            continue
        target_layer = _layer_of_path(target)
        assert target_layer is not None, f"{path.name} imports {module}, which has no layer"
        assert LAYER_RANK[target_layer] <= LAYER_RANK[layer], (
            f"{path.relative_to(ROOT)} ({layer}) imports {module} ({target_layer}): upward"
        )


def _sans_io_modules() -> list[pathlib.Path]:
    return [p for p in PACKAGE_MODULES if _layer_of_path(p) in SANS_IO_LAYERS] + SIM_MODULES


@pytest.mark.parametrize("path", _sans_io_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_sans_io_module(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    forbidden = FORBIDDEN_MODULES_IN_PACKAGE if path.is_relative_to(PACKAGE) else FORBIDDEN_MODULES
    for module in _imports(path, tree):
        top = module.split(".")[0]
        assert top not in forbidden, f"{path.name} imports {module}"
        if module.startswith("gossipcache"):
            target = _module_path(module)
            if target is not None and target != PACKAGE:
                assert _layer_of_path(target) in SANS_IO_LAYERS, f"{path.name} imports {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random" and node.level == 0:
            assert {alias.name for alias in node.names} <= {"Random"}, path.name
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("random", "_random")
        ):
            assert node.attr == "Random", f"{path.name} uses random.{node.attr}"


def test_the_checks_see_every_layer() -> None:
    seen = {_layer_of_path(p) for p in PACKAGE_MODULES}
    assert seen == set(LAYER_RANK)
    assert len(_sans_io_modules()) > 30
