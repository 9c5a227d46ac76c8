"""One error vocabulary for every surface: code, message, field, retry_after, problems.

`CommandError.of` maps anything a handler can raise (validation errors, IPC errors, its own
refusals) to this vocabulary; it is the only place that mapping is written. Each surface then
renders the same error its own way: an HTTP status and JSON body, an error frame, an exit code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from appliance.ipc.errors import Busy, IpcError
from appliance.phrases import Phrase, PhraseWire, words
from appliance.validation import coded_problems, describe_validation_error, field_path

ErrorCode = Literal[
    "bad_request", "unauthorized", "forbidden", "approval_required", "not_found", "method_not_allowed", "conflict",
    "too_large", "busy", "rate_limited", "unavailable", "service_down", "timeout", "internal",
]
STATUS: dict[str, int] = {
    "bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404, "method_not_allowed": 405,
    # Refused until a person approves this exact call (a task that read untrusted data wants to act).
    "approval_required": 403,
    "conflict": 409,
    "too_large": 413, "busy": 429, "rate_limited": 429, "unavailable": 503,
    # A process behind the api that is down is the api being unable to serve for now: 503.
    "service_down": 503, "timeout": 504, "internal": 500,
}


class CommandError(Exception):
    """A refused or failed command. ``field`` names the request field at fault, when one is; an
    invalid request also lists every field at fault in ``problems`` (field, message, phrase), so a
    form can mark each one, not only the first. A message given as a Phrase is sent with its code
    (``phrase``) besides its English text, so the page can say it in the reader's language."""

    def __init__(self, code: ErrorCode, message: str | Phrase, *, field: str | None = None,
                 retry_after: float | None = None, problems: list[dict[str, Any]] | None = None,
                 phrase: PhraseWire | None = None) -> None:
        text, own = words(message)
        super().__init__(text)
        self.code: ErrorCode = code
        self.message = text
        self.phrase = own or phrase
        self.field = field
        self.retry_after = retry_after
        self.problems = problems

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.problems:
            body["problems"] = self.problems
        if self.phrase is not None:
            body["phrase"] = self.phrase.model_dump()
        return body

    @classmethod
    def of(cls, exc: BaseException, *, where: str = "") -> CommandError:
        """Any failure as a CommandError; ``where`` prefixes validation messages ("body", "query")."""
        if isinstance(exc, CommandError):
            return exc
        if isinstance(exc, ValidationError):
            field = field_path(exc.errors()[0]["loc"]) or None
            message = describe_validation_error(exc)
            return cls("bad_request", f"{where}: {message}" if where else message, field=field,
                       problems=coded_problems(exc))
        if isinstance(exc, Busy):
            return cls("busy", str(exc), retry_after=exc.retry_after_s, phrase=exc.phrase)
        if isinstance(exc, IpcError):
            code = exc.code if exc.code in STATUS else "internal"
            return cls(code, str(exc), phrase=exc.phrase)  # type: ignore[arg-type]
        return cls("internal", Phrase("error.internal"))
