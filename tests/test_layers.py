"""The package's layers (docs/architecture.md, "Layers and modules"): imports go down only.

Every import of every module is read from its source (module-level and the lazy
ones inside functions alike), so a rule broken by a lazy import fails too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "xlmt_sklearn"

#: Top-level modules every layer may use: errors, environment, process state, the
#: machine, file locks, digests, kept folders, and the model's identity.
FOUNDATION = {
    "_digests",
    "_errors",
    "_env",
    "_filelock",
    "_kept_folders",
    "_state",
    "_version",
    "_machine",
    "_model",
}
LAYERS = ("store", "backends", "flow", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (names below ``xlmt_sklearn``)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = [p for p in package if p]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").startswith("xlmt_sklearn"):
                    target = node.module[len("xlmt_sklearn") :].lstrip(".")
                else:
                    continue
                full = [f"{target}.{a.name}".lstrip(".") for a in node.names]
                hits = [m for m in full if m in modules]
                graph[name].update(hits or [target])
    return graph


def _layer(module: str) -> str:
    head = module.split(".")[0]
    if head in LAYERS:
        return head
    return "foundation" if head in FOUNDATION else "estimators"


def _crossings(layer: str) -> dict[str, set[str]]:
    """Modules of other layers that ``layer`` imports, by importer."""
    out: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        if _layer(module) == layer:
            for t in targets:
                if _layer(t) not in (layer, "foundation"):
                    out[module].add(t)
    return dict(out)


def test_the_graph_is_read():
    graph = _imports()
    assert "flow._pipeline" in graph["_vectorizer"]
    assert "backends._encoders" in graph["flow._pipeline"]


def test_foundation_imports_no_layer():
    bad = {
        m: {t for t in ts if _layer(t) != "foundation"}
        for m, ts in _imports().items()
        if _layer(m) == "foundation"
    }
    assert not {m: t for m, t in bad.items() if t}


def test_store_imports_no_other_layer():
    assert _crossings("store") == {}


def test_backends_use_flow_math_only():
    """A backend pools and budgets tokens with flow's pure functions, nothing else."""
    allowed = {"flow._pooling", "flow._batching"}
    crossing = _crossings("backends")
    assert {t for ts in crossing.values() for t in ts} <= allowed, crossing


def test_flow_uses_the_interfaces_only():
    """The flow knows the Encoder and CacheBase interfaces, no backend and no store."""
    allowed = {"backends._encoders", "store._base"}
    crossing = _crossings("flow")
    assert {t for ts in crossing.values() for t in ts} <= allowed, crossing


def test_nothing_below_imports_the_estimators_or_the_cli():
    for module, targets in _imports().items():
        if _layer(module) in ("foundation", "store", "backends", "flow"):
            above = {t for t in targets if _layer(t) in ("estimators", "cli")}
            assert not above, (module, above)


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
