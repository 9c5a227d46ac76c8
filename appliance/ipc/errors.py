"""Errors of IPC calls, the same on both ends: a server raises them, a client gets them back."""

from __future__ import annotations

from typing import ClassVar

from appliance.phrases import Phrase, PhraseWire, words


class IpcError(Exception):
    """Base of every IPC failure. ``code`` travels on the wire; ``status`` is its HTTP status. A
    message given as a Phrase travels with its code too (``phrase``), for the page to translate."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str | Phrase = "", *, phrase: PhraseWire | None = None) -> None:
        text, own = words(message)
        super().__init__(text)
        self.phrase = own or phrase


class BadRequest(IpcError):
    code = "bad_request"
    status = 400


class NotFound(IpcError):
    code = "not_found"
    status = 404


class Conflict(IpcError):
    """The request clashes with what exists: a name already taken, a state that forbids it."""

    code = "conflict"
    status = 409


class TooLarge(IpcError):
    code = "too_large"
    status = 413


class Unavailable(IpcError):
    """The service is up but cannot do this now (no model loaded, dependency down)."""

    code = "unavailable"
    status = 503


class Busy(IpcError):
    """The service is at capacity (its queue is full); try again after ``retry_after_s``."""

    code = "busy"
    status = 429

    def __init__(self, message: str | Phrase, retry_after_s: float = 1.0, *, phrase: PhraseWire | None = None) -> None:
        super().__init__(message, phrase=phrase)
        self.retry_after_s = retry_after_s


class ServiceDown(IpcError):
    """The peer cannot be reached at all: no socket, nobody listening, connection dropped."""

    code = "service_down"
    status = 502


class IpcTimeout(IpcError):
    code = "timeout"
    status = 504


class DeadlinePassed(IpcError):
    """The caller had stopped waiting before the work began, so it was not done (ipc/deadline.py)."""

    code = "deadline_passed"
    status = 504


_BY_CODE: dict[str, type[IpcError]] = {
    cls.code: cls
    for cls in (IpcError, BadRequest, NotFound, Conflict, TooLarge, Unavailable, ServiceDown, IpcTimeout,
                DeadlinePassed)
}


def error_from_wire(code: str, message: str, retry_after_s: float | None = None,
                    phrase: PhraseWire | None = None) -> IpcError:
    if code == Busy.code:
        return Busy(message, retry_after_s if retry_after_s is not None else 1.0, phrase=phrase)
    return _BY_CODE.get(code, IpcError)(message, phrase=phrase)
