"""hardware/ is facts and planning only: it imports nothing from training/, at module level or
inside a function, and names no training module as a string (e.g. to start it by name)."""

from __future__ import annotations

import ast
from pathlib import Path

HARDWARE = Path(__file__).resolve().parents[2] / "moai_llm" / "hardware"


def imported_names(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import anywhere in `source`: `from a import b` gives a.b."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def module_strings(source: str) -> list[tuple[int, str]]:
    """String constants that are not docstrings (a module started by name would be one)."""
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_the_scan_sees_imports_inside_functions_and_names_as_strings():
    source = 'def f():\n    from moai_llm import training\n    return "moai_llm.training.worker"\n'
    assert imported_names(source) == [(2, "moai_llm.training")]
    assert module_strings(source) == [(3, "moai_llm.training.worker")]


def test_hardware_imports_nothing_from_training():
    files = sorted(HARDWARE.glob("*.py"))
    assert {"planner.py", "plan.py", "memory.py", "probe.py"} <= {p.name for p in files}
    offending = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        offending += [f"{path.name}:{line} imports {name}" for line, name in imported_names(source)
                      if name.startswith(("moai_llm.training", "..training"))]
        offending += [f"{path.name}:{line} names {text!r}" for line, text in module_strings(source)
                      if "moai_llm.training" in text]
    assert offending == []
