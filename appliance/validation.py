"""One wording for validation failures, used for config files and for every external input."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from appliance.phrases import Phrase

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


# pydantic's error types whose words the phrase catalogues have (validation.<type>), with the
# context values each puts in its text. Others (our own validators' value_error among them) have
# only their English words.
PHRASED_TYPES = {
    "missing": (), "extra_forbidden": (), "string_type": (), "int_type": (), "int_parsing": (),
    "float_type": (), "float_parsing": (), "bool_type": (), "bool_parsing": (), "list_type": (),
    "dict_type": (), "finite_number": (), "int_from_float": (), "json_invalid": (), "model_type": (),
    "string_too_short": ("min_length",), "string_too_long": ("max_length",),
    "too_short": ("min_length",), "too_long": ("max_length",),
    "greater_than": ("gt",), "greater_than_equal": ("ge",), "less_than": ("lt",), "less_than_equal": ("le",),
    "literal_error": ("expected",), "enum": ("expected",), "string_pattern_mismatch": ("pattern",),
}


def problem_phrase(problem: Any) -> Phrase | None:
    """One pydantic problem by code (validation.<type>), where the catalogues have its words."""
    keys = PHRASED_TYPES.get(problem["type"])
    if keys is None:
        return None
    context = problem.get("ctx") or {}
    return Phrase(f"validation.{problem['type']}", **{key: str(context.get(key, "")) for key in keys})


def coded_problems(error: ValidationError) -> list[dict[str, Any]]:
    """Every problem (up to MAX_PROBLEMS) as an error body lists it: the field's dotted path (or None),
    what is wrong with it in English, and its phrase where the catalogues have one."""
    listed: list[dict[str, Any]] = []
    for problem in error.errors()[:MAX_PROBLEMS]:
        entry: dict[str, Any] = {"field": field_path(problem["loc"]) or None,
                                 "message": _what(problem).removeprefix("Value error, ")}
        if (phrase := problem_phrase(problem)) is not None:
            entry["phrase"] = phrase.wire().model_dump()
        listed.append(entry)
    return listed
