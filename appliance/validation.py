"""One wording for validation failures, used for config files and for every external input."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

SECRET_WORDS = ("password", "secret", "token")
MAX_PROBLEMS = 20  # what one error lists field by field (a form shows each next to its field)


def _secret(loc: tuple[int | str, ...]) -> bool:
    """A field whose value must never be repeated back (an error message may end up in a log)."""
    return any(word in str(part).lower() for part in loc for word in SECRET_WORDS)


def _what(problem: Any) -> str:
    """What is wrong with one value, with the value itself unless it is a secret or too long to help."""
    message = str(problem["msg"])
    if problem["type"] == "extra_forbidden":
        return "unknown key"
    if problem["type"] == "value_error" and not problem["loc"]:
        # A rule across keys: its message names them; the whole input would only be noise.
        return message.removeprefix("Value error, ")
    if problem["type"] not in ("missing", "json_invalid") and "input" in problem and not _secret(problem["loc"]):
        shown = repr(problem["input"])
        message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    return message


def field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def describe_validation_error(error: ValidationError) -> str:
    """``key.path: what is wrong (got value)`` for the first problem, and how many more."""
    problems = error.errors()
    first = problems[0]
    more = len(problems) - 1
    suffix = f" [and {more} more]" if more else ""
    if first["type"] == "value_error" and not first["loc"]:
        return _what(first) + suffix
    return f"{field_path(first['loc']) or '(top level)'}: {_what(first)}" + suffix


def validation_problems(error: ValidationError) -> list[tuple[str | None, str]]:
    """Every problem (up to MAX_PROBLEMS) as (the field's dotted path or None, what is wrong with it)."""
    return [(field_path(p["loc"]) or None, _what(p).removeprefix("Value error, "))
            for p in error.errors()[:MAX_PROBLEMS]]
