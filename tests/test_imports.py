"""The import graph of the installed package: one way, no cycles, not even inside functions.

Every `import` statement counts, module level or deferred inside a function: a deferred
import that closes a cycle only hides it until someone moves it to the top.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import networkx as nx
import pytest

import ctxzip

SUBPACKAGES = ["compressors", "middleware", "retrievers", "proxy", "evals", "plugins", "mcp_proxy"]

# layer -> the layers it may import (besides itself). `core` is ctxzip's own modules.
ALLOWED = {
    "core": {"plugins"},
    "plugins": {"core"},
    "compressors": {"core", "plugins"},
    "retrievers": {"core", "plugins"},
    "middleware": {"core", "plugins", "compressors", "retrievers"},
    "proxy": {"core", "plugins", "compressors", "retrievers", "middleware"},
    "evals": {"core", "plugins", "compressors", "retrievers", "middleware"},
    "mcp_proxy": {"core", "plugins", "compressors", "retrievers", "middleware"},
}


def _modules() -> dict[str, Path]:
    """Every module of the installed `ctxzip` package, by dotted name."""
    found: dict[str, Path] = {}
    roots = {"ctxzip": Path(ctxzip.__file__).parent}
    for sub in SUBPACKAGES:
        spec = importlib.util.find_spec(f"ctxzip.{sub}")
        assert spec and spec.submodule_search_locations, sub
        roots[f"ctxzip.{sub}"] = Path(next(iter(spec.submodule_search_locations)))
    for name, root in roots.items():
        recurse = name != "ctxzip"  # the core folder's subpackages are mapped elsewhere
        files = root.rglob("*.py") if recurse else root.glob("*.py")
        for file in files:
            parts = list(file.relative_to(root).with_suffix("").parts)
            if not all(p.isidentifier() for p in parts):
                continue  # e.g. plugins/example: its own distribution
            if recurse and not _in_package(root, file):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = file
    return found


def _in_package(root: Path, file: Path) -> bool:
    folder = file.parent
    while folder != root:
        if not (folder / "__init__.py").exists():
            return False
        folder = folder.parent
    return True


def _imports(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """ctxzip modules that `file` imports anywhere in its body."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in modules else base)
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a missing leaf
                target = target.rpartition(".")[0]
            if target.startswith("ctxzip") and target != name:
                out.add(target)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else "core"


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    for name, file in modules.items():
        g.add_node(name)
        for target in _imports(name, file, modules):
            g.add_edge(name, target)
    return g


def test_graph_sees_every_family(graph):
    for name in [
        "ctxzip.compressors.extractive",
        "ctxzip.compressors.token_classification.compressor",
        "ctxzip.compressors.vision.merge",
        "ctxzip.compressors.xrag.train",
        "ctxzip.proxy.routes",
        "ctxzip.evals.sweep",
    ]:
        assert name in graph, name
    assert graph.number_of_edges() > 200


def test_no_import_cycles(graph):
    cycles = [c for c in nx.simple_cycles(graph) if len(c) > 1]
    shown = "\n".join(" -> ".join([*c, c[0]]) for c in cycles[:10])
    assert not cycles, f"{len(cycles)} import cycles, e.g.:\n{shown}"


def test_layers_import_one_way(graph):
    wrong = [
        f"{a} -> {b}"
        for a, b in graph.edges
        if _layer(b) != _layer(a) and _layer(b) not in ALLOWED[_layer(a)]
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_runtime_never_imports_training(graph):
    wrong = [
        f"{a} -> {b}"
        for a, b in graph.edges
        if b.rpartition(".")[2] == "train"
        and a.rpartition(".")[2] != "train"
        and not a.endswith(("train_cli",))
    ]
    assert not wrong, "runtime code imports a trainer:\n" + "\n".join(wrong)
