"""The layering the code is built on (STYLE.md): imports point one way, and no module imports itself
round a circle, counting imports inside functions and those only for type checking.

  core < media, config < storage < delivery < control < front ends < daemon < cli

``hal`` sits beside ``core``; only ``daemon`` and ``cli`` import it. A front end gets the control
API and nothing else: it imports neither the daemon nor storage nor delivery.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each module of firmware/ by its layer; a module may import only from its own layer or below.
LAYERS = [
    ("core", ["firmware.core"]),
    (
        "base",
        [
            "firmware.findings",
            "firmware.media",
            "firmware.config",
            "firmware.destinations",
            "firmware.dialects",
            "firmware.provision",
        ],
    ),
    ("storage", ["firmware.spool", "firmware.catalog", "firmware.cloudevents", "firmware.journal"]),
    ("delivery", ["firmware.delivery"]),
    ("control", ["firmware.control"]),
    ("update", ["firmware.update"]),
    ("front ends", ["firmware.frontends"]),
    ("daemon", ["firmware.daemon"]),
    ("cli", ["firmware.cli"]),
]
FRONT_END_MAY_USE = (
    "firmware.control",
    "firmware.core",
    "firmware.config",
    "firmware.destinations",
    "firmware.media",
    "firmware.dialects",
)


def modules() -> dict[str, Path]:
    found = {}
    for package in ("firmware", "hal"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``name`` imports, anywhere in it (functions and TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # "pkg.mod.Name" -> "pkg.mod"
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def layer(name: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer():
    """A new package is placed in LAYERS when it is made, so its imports are checked from the start."""
    assert [name for name in GRAPH if name.startswith("firmware.") and layer(name) is None] == []


def test_no_module_imports_itself_round_a_circle():
    circles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_imports_point_down_the_layers():
    upward = [
        f"{name} ({LAYERS[layer(name)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
        for name, targets in GRAPH.items()
        if layer(name) is not None
        for target in targets
        if layer(target) is not None and layer(target) > layer(name)
    ]
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.startswith("firmware.core")))
def test_the_core_imports_numpy_and_the_standard_library_only(name):
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    outside = {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    } | {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    import sys

    assert outside <= {"numpy", "__future__"} | set(sys.stdlib_module_names), outside


def test_hal_is_imported_by_the_daemon_and_the_cli_only():
    users = sorted(
        name
        for name, targets in GRAPH.items()
        if not name.startswith(("hal", "firmware.daemon", "firmware.cli")) and any(t.startswith("hal") for t in targets)
    )
    assert users == []


def test_a_front_end_gets_the_control_api_and_nothing_else():
    reach = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("firmware.frontends")
        for target in targets
        if target.startswith("firmware")
        and not target.startswith("firmware.frontends")
        and not any(target == p or target.startswith(p + ".") for p in FRONT_END_MAY_USE)
    )
    assert reach == []


def test_the_catalog_module_is_the_only_one_that_writes_sql():
    writers = sorted(
        name
        for name, path in modules().items()
        if name != "firmware.catalog"
        and any(
            word in path.read_text(encoding="utf-8") for word in ("INSERT INTO", "UPDATE recordings", "DELETE FROM")
        )
    )
    assert writers == []
