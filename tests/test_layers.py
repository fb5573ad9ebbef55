"""Imports run one way: transports -> application core -> pipeline -> runtime, and no module of
`service/` imports itself in a circle. Read from the source, so a new module is held to it."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parent.parent / "service"

# Higher imports lower, never the reverse. Modules not named sit beside every layer (settings,
# errors, metrics, logs) and import only each other.
LAYERS = {
    "clients": 5, "cli": 5, "gateway": 5,
    "http": 4, "grpc": 4,
    "app": 3,
    "pipeline": 2, "model_build": 2, "triton_local": 2,
    "runtime": 1,
}
BASE = {"config", "errors", "metrics", "logs", "data", "endpoints", "wire", "__init__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SERVICE.rglob("*.py"):
        if path.name.startswith("facepose_pb2"):
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module_name(path)] = {n for n in names if n.split(".")[0] == "service"}
    return found


def layer_of(module: str) -> int | None:
    """None for the base modules (and the package itself)."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return None
    return LAYERS[parts[1]]


def test_every_package_has_a_layer() -> None:
    for module in imports():
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in BASE or parts[1] in LAYERS, module


def test_imports_only_run_down_the_layers() -> None:
    upward = []
    for module, targets in imports().items():
        for target in targets:
            own, theirs = layer_of(module), layer_of(target)
            if theirs is None:
                continue
            if own is None or theirs > own:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_base_modules_import_no_layer() -> None:
    for module, targets in imports().items():
        if layer_of(module) is None:
            assert all(layer_of(t) is None for t in targets), (module, targets)


def test_no_import_cycle() -> None:
    found = imports()
    graph = {m: {t for t in targets if t in found} for m, targets in found.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target] if target in path
                              else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles



def test_the_clients_load_none_of_the_server() -> None:
    """A client decodes answers with the generated messages and ``service.wire``: importing it
    loads no module of the core, the pipeline or the runtimes (nor their models' libraries)."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, service.clients, service.clients.batch; "
         "print(' '.join(sorted(m for m in sys.modules if m.startswith('service.'))))"],
        cwd=SERVICE.parent, capture_output=True, text=True, check=True).stdout.split()
    server = [m for m in loaded if m.split(".")[1] in {"app", "pipeline", "runtime", "http"}]
    assert not server, server
