"""Import rules, checked on the source: no circles; no service package imports another; the
transport (ipc/) and the vocabulary (protocol/) import no domain code; no test module imports
another test module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = {"store", "engine", "mqtt", "api", "agent"}
# What ipc/ and protocol/ may import from the appliance: each other, the config model, validation wording.
# appliance.phrases: the words by code that errors and details carry (a leaf: it imports no appliance code).
TRANSPORT_MAY_IMPORT = {"appliance.ipc", "appliance.protocol", "appliance.config", "appliance.validation",
                        "appliance.phrases"}


def modules(folder: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in folder.rglob("*.py"):
        name = ".".join((package, *path.relative_to(folder).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n in known}
    return found


APP = modules(ROOT / "appliance", "appliance")
GRAPH = {name: imports(path, APP) - {name} for name, path in APP.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_circles() -> None:
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        for target in GRAPH[module]:
            # A package importing its own submodules (its __init__) is not a circle of ownership.
            if target in trail and not target.startswith(module + ".") and not module.startswith(target + "."):
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in seen:
                seen.add(target)
                visit(target, [*trail, target])

    for start in GRAPH:
        seen = {start}
        visit(start, [start])
    assert not circles, "\n".join(sorted(set(circles))[:20])


def test_no_service_package_imports_another() -> None:
    wrong = [f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
             if package_of(a) in SERVICE_PACKAGES and package_of(b) in SERVICE_PACKAGES
             and package_of(a) != package_of(b)]
    assert not wrong, "\n".join(wrong)


def test_transport_and_vocabulary_import_no_domain_code() -> None:
    wrong = [f"{a} imports {b}" for a, targets in GRAPH.items() if package_of(a) in ("ipc", "protocol")
             for b in targets if not any(b == ok or b.startswith(ok + ".") for ok in TRANSPORT_MAY_IMPORT)]
    assert not wrong, "\n".join(wrong)


def test_no_test_module_imports_another() -> None:
    tests = modules(ROOT / "tests", "tests")
    wrong = [f"{name} imports {target}" for name, path in tests.items()
             for target in imports(path, tests) if target.rpartition(".")[2].startswith("test_")]
    assert not wrong, "\n".join(wrong)
