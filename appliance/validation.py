"""One wording for validation failures, used for config files and for every external input."""

from __future__ import annotations

from pydantic import ValidationError

SECRET_WORDS = ("password", "secret", "token")


def _secret(loc: tuple[int | str, ...]) -> bool:
    """A field whose value must never be repeated back (an error message may end up in a log)."""
    return any(word in str(part).lower() for part in loc for word in SECRET_WORDS)


def describe_validation_error(error: ValidationError) -> str:
    """``key.path: what is wrong (got value)`` for the first problem, and how many more."""
    problems = error.errors()
    first = problems[0]
    path = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "value_error" and not first["loc"]:
        # A rule across keys: its message names them; the whole input would only be noise.
        message = message.removeprefix("Value error, ")
        more = len(problems) - 1
        return message + (f" [and {more} more]" if more else "")
    elif first["type"] not in ("missing", "json_invalid") and "input" in first and not _secret(first["loc"]):
        shown = repr(first["input"])
        message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    more = len(problems) - 1
    return f"{path}: {message}" + (f" [and {more} more]" if more else "")
