"""Rich reads `[word]` as a style tag and drops it, so `pip install 'moai[eval]'` printed through
Rich markup came out as `pip install 'moai'`. Every message moai prints must reach the person as
written: error lines and hints are escaped (a test prints them), and every literal text that goes
through Rich markup (`info`, `console.print`, `console.rule`) is scanned here for a bracket that
is not one of Rich's own style tags."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from rich.markup import RE_TAGS
from rich.style import Style

ROOT = Path(__file__).resolve().parents[2]
MARKUP_CALLS = {"info", "say", "print", "rule", "log"}  # print/rule: rich Console methods


def _literal_parts(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.BinOp):
        return _literal_parts(node.left) + _literal_parts(node.right)
    if isinstance(node, ast.IfExp):
        return _literal_parts(node.body) + _literal_parts(node.orelse)
    return []


def _is_style(tag: str) -> bool:
    name = tag.strip()
    if name.startswith("/"):
        return True
    try:
        Style.parse(name)
    except Exception:
        return False
    return True


def _swallowed(text: str) -> list[str]:
    """The bracketed pieces of `text` Rich would take as tags but that are no style (dropped)."""
    return [m.group(0) for m in RE_TAGS.finditer(text)
            if len(m.group(2)) % 2 == 0 and not _is_style(m.group(3))]  # \[ is an escaped bracket


def _assigned(scope: ast.AST) -> dict[str, list[str]]:
    """Literal text assigned to each name in a function (`message = "..."; info(message)`)."""
    names: dict[str, list[str]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, []).extend(_literal_parts(node.value))
    return names


def _markup_texts() -> list[tuple[str, int, str]]:
    found = []
    for path in [*ROOT.glob("moai_cli/*.py"), *ROOT.glob("moai_llm/**/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope in scopes:
            found += _calls(path, scope, _assigned(scope))
    return found


def _calls(path: Path, scope: ast.AST, names: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    found = []
    for node in ast.walk(scope):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in MARKUP_CALLS:
            continue
        if isinstance(func, ast.Attribute) and "console" not in ast.unparse(func.value):
            continue  # print/rule/log of something other than a rich Console
        if any(k.arg == "markup" and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in node.keywords):
            continue
        arg = node.args[0]
        parts = names.get(arg.id, []) if isinstance(arg, ast.Name) else _literal_parts(arg)
        found += [(str(path.relative_to(ROOT)), node.lineno, part) for part in parts]
    return found


def test_the_scanner_finds_what_rich_swallows():
    assert _swallowed("pip install 'moai[eval]'") == ["[eval]"]
    assert _swallowed("[bold red]error:[/] [dim]hint[/]") == []
    assert _swallowed("rows [300, 32] and \\[eval]") == []


def test_no_literal_text_printed_through_rich_markup_loses_a_bracket():
    texts = _markup_texts()
    assert len(texts) > 50  # the scan reaches moai's printing code
    bad = [f"{file}:{line}: {text!r} loses {_swallowed(text)}" for file, line, text in texts if _swallowed(text)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("message,hint", [
    ("lm-evaluation-harness is not installed", "pip install -e '.[eval]'"),
    ("--lora-rank 8: LoRA needs peft", "pip install 'moai[lora]'"),
    ("a [bold]tag[/] in a path", None),
])
def test_error_lines_and_hints_print_as_written(capsys, message, hint):
    import typer

    from moai_cli.ui import fail

    with pytest.raises(typer.Exit):
        fail(message, hint)
    err = capsys.readouterr().err
    assert f"error: {message}" in err
    if hint:
        assert f"hint: {hint}" in err


def test_warnings_print_as_written(capsys):
    from moai_llm.progress import warn

    warn("install it with pip install 'moai[lora]'")
    assert "pip install 'moai[lora]'" in capsys.readouterr().err
