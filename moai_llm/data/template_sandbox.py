"""The sandbox a chat template renders in: what it may touch, and how much work it may do.

A chat template is code that came with a tokenizer folder or a hub model. jinja2's immutable
sandbox (what transformers' `apply_chat_template` uses) blocks unsafe attributes and
mutation, but not work: two nested `range(100000)` loops never end, and `"x" * 10**10` fills
the memory. Here every render is bounded:

- time: `RENDER_SECONDS` per conversation (`MOAI_TEMPLATE_SECONDS` sets another), checked at
  each loop step over a `range`, each call the template makes and each piece of output;
- size: `RENDER_CHARS` characters of output per conversation, and no `*`, `+`, `**` or call
  argument that would build a value larger than that;

and every way a template can fail (a syntax error, a forbidden attribute, `raise_exception`,
a Python error inside it, too deep a recursion, a limit) is a MoaiInputError (exit 2) naming
the template's folder, in one line.

    >>> template = compile_template("{% for m in messages %}{{ m.content }}{% endfor %}", "tok")
    >>> render_bounded(template, "tok", messages=[{"content": "hi"}])
    'hi'
    >>> hang = compile_template("{% for i in range(100000) %}{% for j in range(100000) %}"
    ...                         "{% endfor %}{% endfor %}", "tok")
    >>> render_bounded(hang, "tok", seconds=0.2)
    Traceback (most recent call last):
    ...
    moai_llm.errors.MoaiInputError: tok: the chat template ran longer than 0.2 s rendering one conversation
"""

from __future__ import annotations

import json
import time
from typing import Any

from moai_llm.errors import MoaiInputError

RENDER_SECONDS = 10.0       # one conversation; a real template renders 1,000 turns in well under 1 s
RENDER_CHARS = 16 * 2**20   # characters of output (and of any value built) per conversation
_CHECK_EVERY = 256          # loop steps and calls between clock reads


class _Limit(Exception):
    """A render went over a limit (raised inside the template, turned into MoaiInputError)."""


def _sandbox_class():
    from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "**"})
        deadline = float("inf")
        seconds = RENDER_SECONDS
        steps = 0

        def tick(self) -> None:
            self.steps += 1
            if self.steps % _CHECK_EVERY == 0 and time.perf_counter() > self.deadline:
                raise _Limit(f"ran longer than {self.seconds:g} s")

        def call(__self, __context, __obj, *args, **kwargs):  # jinja passes these positionally
            __self.tick()
            for value in (*args, *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool) and abs(value) > RENDER_CHARS:
                    raise _Limit(f"called a function with {value:,} (more than {RENDER_CHARS:,})")
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context, operator, left, right):
            self.tick()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > RENDER_CHARS:
                        raise _Limit(f"built a value of {len(seq) * n:,} items (more than {RENDER_CHARS:,})")
            elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > RENDER_CHARS:
                    raise _Limit(f"built a value of more than {RENDER_CHARS:,} items")
            elif operator == "**" and isinstance(right, int) and isinstance(left, int) and abs(left) > 1 \
                    and right > 4096:
                raise _Limit(f"computed {left} ** {right}")
            return super().call_binop(context, operator, left, right)

    def bounded_range(env: BoundedSandbox):
        def range_(*args: int):
            items = safe_range(*args)  # jinja's own cap: 100,000 items per range

            class Ticking:
                def __len__(self) -> int:
                    return len(items)

                def __iter__(self):
                    for item in items:
                        env.tick()
                        yield item
            return Ticking()
        return range_

    return BoundedSandbox, bounded_range


def environment():
    """A bounded immutable sandbox with what transformers gives chat templates: trim_blocks,
    lstrip_blocks, loop controls, `raise_exception`, `tojson`, `{% generation %}` blocks."""
    import jinja2
    from jinja2.ext import Extension

    sandbox, bounded_range = _sandbox_class()

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask markers) renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = sandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", GenerationBlock])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    env.globals["range"] = bounded_range(env)
    env.globals["strftime_now"] = lambda fmt: time.strftime(str(fmt))  # transformers gives it (Llama 3.1)
    return env


def render_seconds() -> float:
    """The time limit of one render: MOAI_TEMPLATE_SECONDS when set to a positive number, else
    RENDER_SECONDS."""
    import math
    import os

    try:
        value = float(os.environ.get("MOAI_TEMPLATE_SECONDS") or RENDER_SECONDS)
    except ValueError:
        return RENDER_SECONDS
    return value if math.isfinite(value) and value > 0 else RENDER_SECONDS


def compile_template(source: str, name: str) -> Any:
    """The compiled template, or a MoaiInputError naming `name` and the line of a syntax error."""
    import jinja2

    if not isinstance(source, str):
        raise MoaiInputError(f"{name}: the chat template is not text ({type(source).__name__})")
    try:
        return environment().from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise MoaiInputError(f"{name}: the chat template has a syntax error on its line {exc.lineno}: {exc.message}",
                             hint="fix chat_template in tokenizer_config.json (or chat_template.jinja)") from None


def render_bounded(template: Any, name: str, seconds: float | None = None, **context: Any) -> str:
    """`template` rendered with `context` within the time and size limits (module docstring)."""
    import jinja2

    env = template.environment
    env.seconds = seconds or render_seconds()
    env.deadline, env.steps = time.perf_counter() + env.seconds, 0
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(**context):
            size += len(piece)
            if size > RENDER_CHARS:
                raise _Limit(f"wrote more than {RENDER_CHARS:,} characters")
            pieces.append(piece)
            env.tick()
    except _Limit as exc:
        raise MoaiInputError(f"{name}: the chat template {exc} rendering one conversation",
                             hint="the template is broken or hostile; use a tokenizer with a plain chat template") from None
    except jinja2.exceptions.SecurityError as exc:
        raise MoaiInputError(f"{name}: the chat template tried something the sandbox forbids ({exc})",
                             hint="templates may not reach Python internals; use a trusted template") from None
    except jinja2.exceptions.TemplateError as exc:
        raise MoaiInputError(f"{name}: the chat template refused the conversation: {exc}") from None
    except RecursionError:
        raise MoaiInputError(f"{name}: the chat template recursed too deeply") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        raise MoaiInputError(f"{name}: the chat template failed ({type(exc).__name__}: {exc})") from None
    return "".join(pieces)
