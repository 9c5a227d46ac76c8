"""Home Assistant's templates, as far as a box should run them: value templates over a payload
(``value``, ``value_json``) and command templates over a value, in a sandboxed Jinja environment.

What a discovery config may carry is checked once, before it is ever rendered (``check``): no
loops, macros, blocks, imports or assignments, only calls to a short list of harmless functions,
only attribute and item access that the sandbox allows, at most MAX_TEMPLATE_CHARS; and at render
time repetition of strings and lists and exponents are capped and the output is cut at
MAX_OUTPUT_CHARS. A template is therefore a bounded expression: no device can make the bridge
loop, call into Python, or run the box out of memory. Nothing is ever ``eval``'d.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_CHARS = 2048
MAX_OUTPUT_CHARS = 4096
MAX_REPEAT = 10_000  # "x" * n and [..] * n: at most this long
ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.CondExpr, nodes.Name,
                 nodes.Const, nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.Filter, nodes.Test, nodes.Compare,
                 nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.BinExpr, nodes.Concat,
                 nodes.Tuple, nodes.List, nodes.Dict, nodes.Pair, nodes.Call, nodes.Keyword)
SAFE_FILTERS = ("abs", "capitalize", "default", "d", "first", "join", "last", "length", "count", "lower", "upper",
                "max", "min", "replace", "string", "sum", "trim", "title", "truncate")
SAFE_TESTS = ("defined", "undefined", "none", "number", "string", "mapping", "sequence", "true", "false", "in",
              "eq", "ne", "lt", "le", "gt", "ge", "boolean", "integer", "float")
FUNCTIONS = frozenset({"float", "int", "bool", "min", "max", "round", "abs", "iif", "is_number", "str"})


class TemplateProblem(ValueError):
    """A template this box will not run, or one that failed on a payload; the message says why."""


def _number(value: Any, default: Any = None) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        if default is not None:
            return float(default)
        raise TemplateProblem(f"{str(value)[:40]!r} is not a number") from None
    if not math.isfinite(result):
        raise TemplateProblem(f"{value!r} is not a finite number")
    return result


def _integer(value: Any, default: Any = None) -> int:
    return int(_number(value, default))


def _bool(value: Any, default: Any = None) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "on", "yes", "1", "enable"):
        return True
    if text in ("false", "off", "no", "0", "disable", "none"):
        return False
    if default is not None:
        return bool(default)
    raise TemplateProblem(f"{str(value)[:40]!r} is not a boolean")


def _round(value: Any, digits: int = 0, method: str = "common") -> float:
    number = _number(value)
    if method == "floor":
        return float(math.floor(number * 10**digits) / 10**digits)
    if method == "ceil":
        return float(math.ceil(number * 10**digits) / 10**digits)
    return round(number, int(digits))


def _iif(condition: Any, if_true: Any = True, if_false: Any = False, if_none: Any = False) -> Any:
    if condition is None:
        return if_none
    return if_true if condition else if_false


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _from_json(value: Any) -> Any:
    try:
        return json.loads(str(value)[:MAX_OUTPUT_CHARS * 4])
    except ValueError:
        raise TemplateProblem("from_json: not JSON") from None


def _capped(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def run(left: Any, right: Any) -> Any:
        for sized, count in ((left, right), (right, left)):
            if isinstance(sized, str | list | tuple) and isinstance(count, int) and count * len(sized) > MAX_REPEAT:
                raise TemplateProblem(f"repeats a value past {MAX_REPEAT} characters")
        return op(left, right)

    return run


def _power(left: Any, right: Any) -> Any:
    if isinstance(right, int | float) and abs(right) > 64:
        raise TemplateProblem("an exponent above 64")
    return left**right


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            return _capped(operator.mul)(left, right)
        if operator_name == "**":
            return _power(left, right)
        return super().call_binop(context, operator_name, left, right)


def _environment() -> _Environment:
    env = _Environment(autoescape=False)
    functions: dict[str, Callable[..., Any]] = {"float": _number, "int": _integer, "bool": _bool, "round": _round,
                                                "iif": _iif, "is_number": _is_number}
    # Jinja's own filters that only transform values; none that reaches attributes (attr, map) or formats.
    env.filters = {name: env.filters[name] for name in SAFE_FILTERS}
    env.filters.update(functions)
    env.filters.update({"from_json": _from_json, "to_json": json.dumps, "tojson": json.dumps,
                        "multiply": lambda value, by: _number(value) * _number(by)})
    env.tests = {name: env.tests[name] for name in SAFE_TESTS}
    env.globals = {**functions, "min": min, "max": max, "abs": abs, "str": str}
    env.tests["number"] = _is_number
    return env


ENV = _environment()


def _check_node(node: nodes.Node) -> None:
    if not isinstance(node, ALLOWED_NODES):
        raise TemplateProblem(f"{type(node).__name__.lower()} is not allowed in a template here "
                              "(expressions and if only)")
    if isinstance(node, nodes.Call):
        if not isinstance(node.node, nodes.Name) or node.node.name not in FUNCTIONS:
            raise TemplateProblem(f"calls only {', '.join(sorted(FUNCTIONS))}")
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise TemplateProblem("no *args or **kwargs")
    if isinstance(node, nodes.Filter | nodes.Test) and node.name not in (ENV.filters if isinstance(node, nodes.Filter)
                                                                         else ENV.tests):
        raise TemplateProblem(f"no filter or test named {node.name!r}")
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        raise TemplateProblem(f"no attribute {node.attr!r}")
    for child in node.iter_child_nodes():
        _check_node(child)


@lru_cache(maxsize=4096)
def compiled(text: str) -> Any:
    """The template, checked and compiled (cached: a thousand entities share a few dozen templates)."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(f"longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        tree = ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"not a template: {exc.message}") from None
    _check_node(tree)
    return ENV.from_string(text)


def check(text: str) -> str | None:
    """Why this template will not run here; None when it will."""
    try:
        compiled(text)
    except TemplateProblem as exc:
        return str(exc)
    return None


def render(text: str, **variables: Any) -> str:
    """The template's output (stripped, as Home Assistant strips it); TemplateProblem when it fails."""
    try:
        output = compiled(text).render(**variables)
    except TemplateProblem:
        raise
    except (TemplateError, UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError, KeyError,
            IndexError, AttributeError, RecursionError) as exc:
        raise TemplateProblem(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if len(output) > MAX_OUTPUT_CHARS:
        raise TemplateProblem(f"renders more than {MAX_OUTPUT_CHARS} characters")
    return str(output).strip()


def payload_variables(payload: bytes) -> dict[str, Any]:
    """``value`` (the payload as text) and ``value_json`` (parsed, when it is JSON), as Home Assistant gives them."""
    text = payload.decode("utf-8", "replace")
    variables: dict[str, Any] = {"value": text}
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null") or _is_number(stripped):
        with contextlib.suppress(ValueError):
            variables["value_json"] = json.loads(stripped)
    return variables
