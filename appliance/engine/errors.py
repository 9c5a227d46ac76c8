"""The engine's own errors: the domain code raises these, and engine/service.py maps them to
IPC errors in one place (as the store does with StoreError)."""

from __future__ import annotations


class EngineError(Exception):
    """llama.cpp failed to do what it was asked (a decode error); the message says what."""


class RequestRefused(EngineError):
    """The request cannot be served as given (too long, bad schema, no chat template, a reply
    that breaks its schema); the message names the field when there is one."""


class EngineBusy(EngineError):
    """Every slot is taken and the queue is full; try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
