"""Imports in moai_llm go one way: no module imports itself back through others, and the rooms
below training (data, tokenizer, hardware, modeling, inference, eval, alignment, export) never
import training. Imports inside functions count: a tie hidden in a function is still a tie.

An edge `a -> b` is an import of `b` anywhere in `a`'s source (module level or in a function;
`from p import x` is an import of `p.x` when that is a module, else of `p`). Importing a
module runs its package's `__init__` first, so `a -> p.q` is an edge to `p` too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "moai_llm"
BELOW_TRAINING = ("data", "tokenizer", "hardware", "modeling", "inference", "eval", "alignment", "export")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The dotted name a relative import (`from ..x import y`) means inside `module`."""
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source (with their packages)."""
    targets = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c runs a/__init__ and a/b/__init__ first
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != module and prefix != PACKAGE:
                    targets.add(prefix)
    return targets


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None. A package importing its own modules
    (its face) is not a cycle by itself; a module importing its package back is."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue  # importing `p.q` from inside p runs p's __init__ already running
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from moai_llm.training import runner\n    from . import b\n")
    modules = {"moai_llm.x.m", "moai_llm.x", "moai_llm.x.b", "moai_llm.training", "moai_llm.training.runner"}
    assert imports_of("moai_llm.x.m", path, modules) == {
        "moai_llm.training", "moai_llm.training.runner", "moai_llm.x", "moai_llm.x.b"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_below_training_imports_training():
    graph = import_graph()
    offending = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       if m.split(".")[1] in BELOW_TRAINING and t.startswith(f"{PACKAGE}.training"))
    assert offending == []


def test_nothing_below_the_workflow_imports_the_quickstart():
    graph = import_graph()
    offending = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       if t == f"{PACKAGE}.quickstart")
    assert offending == []
