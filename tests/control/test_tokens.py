"""Remembered tokens (control/tokens.py's rules): the next use of a token that passed skips its
signature, and never past what the rules allow. Real keys, real signatures; only the clock the
memory is judged by is moved by hand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.control import tokens
from appliance.control.caller import Role
from appliance.control.keys import SigningKeys
from appliance.control.tokens import VERIFIED_FOR_S, TokenAuthority, TokenError


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def authority(tmp_path: Path) -> tuple[TokenAuthority, Clock]:
    clock = Clock()
    return TokenAuthority(SigningKeys(tmp_path / "jwt", tmp_path), clock=clock), clock


def counting(authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    real = authority._checked
    monkeypatch.setattr(authority, "_checked", lambda token: checked.append(token) or real(token))
    return checked


def test_a_token_that_passed_skips_its_signature_next_time(authority: tuple[TokenAuthority, Clock],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    keys, _ = authority
    checked = counting(keys, monkeypatch)
    token = keys.issue("access", "ada", Role.OPERATOR, 600).token
    assert [keys.verify(token).sub for _ in range(5)] == ["ada"] * 5
    assert len(checked) == 1


def test_the_accepted_type_is_checked_on_every_use(authority: tuple[TokenAuthority, Clock]) -> None:
    keys, _ = authority
    refresh = keys.issue("refresh", "ada", Role.OPERATOR, 600, family="f").token
    assert keys.verify(refresh, accept=("refresh",)).typ == "refresh"
    with pytest.raises(TokenError, match="a refresh token cannot be used here"):
        keys.verify(refresh)  # remembered now, and still refused as a bearer


def test_a_retired_key_stops_its_remembered_tokens_at_once(authority: tuple[TokenAuthority, Clock]) -> None:
    keys, _ = authority
    token = keys.issue("app", "door-panel", Role.VIEWER, 86_400).token
    keys.verify(token)
    assert isinstance(keys.keys, SigningKeys)
    keys.keys.rotate(retire_old_at=time.time() - 1)  # the old key is no longer accepted
    with pytest.raises(TokenError, match="no longer accepts"):
        keys.verify(token)


def test_a_remembered_token_is_checked_again_after_the_window(authority: tuple[TokenAuthority, Clock],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    keys, clock = authority
    checked = counting(keys, monkeypatch)
    token = keys.issue("access", "ada", Role.VIEWER, 600).token
    keys.verify(token)
    clock.now += VERIFIED_FOR_S - 1
    keys.verify(token)
    clock.now += 2
    keys.verify(token)
    assert len(checked) == 2


def test_an_expired_token_is_checked_again_and_refused(authority: tuple[TokenAuthority, Clock]) -> None:
    keys, clock = authority
    token = keys.issue("access", "ada", Role.VIEWER, 1).token
    keys.verify(token)
    time.sleep(1.1)  # past its exp by the real clock, which the signature check uses
    clock.now = time.time()
    with pytest.raises(TokenError, match="expired"):
        keys.verify(token)


def test_what_is_remembered_is_bounded_and_only_what_passed(authority: tuple[TokenAuthority, Clock],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    keys, _ = authority
    monkeypatch.setattr(tokens, "VERIFIED_MAX", 3)
    issued = [keys.issue("access", f"user{i}", Role.VIEWER, 600).token for i in range(5)]
    for token in issued:
        keys.verify(token)
    assert list(keys._verified) == issued[2:]  # the oldest went first
    forged = issued[0][:-4] + ("AAAA" if not issued[0].endswith("AAAA") else "BBBB")
    with pytest.raises(TokenError):
        keys.verify(forged)
    assert forged not in keys._verified
