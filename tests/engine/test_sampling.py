"""Tokens to text: whole UTF-8 characters only, and stop sequences that never leak."""

from __future__ import annotations

from appliance.engine.sampling import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> list[str]:
    return [stream.push(p) for p in pieces]


def test_multibyte_characters_are_sent_whole() -> None:
    stream = TextStream([])
    euro = "€".encode()
    assert feed(stream, [euro[:1], euro[1:2], euro[2:], b"!"]) == ["", "", "€", "!"]


def test_stop_sequence_split_across_tokens_is_not_sent() -> None:
    stream = TextStream(["</done>"])
    out = feed(stream, [b"ok </", b"do", b"ne> tail"])
    assert "".join(out) == "ok " and stream.stopped
    assert out[0] == "ok "  # "</" was held back: it could have been the start of the stop


def test_held_text_is_released_when_it_cannot_be_a_stop() -> None:
    stream = TextStream(["STOP"])
    assert feed(stream, [b"ST", b"ART"]) == ["", "START"]
    assert stream.finish() == "" and not stream.stopped


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["\n\n", "User:"])
    assert "".join(feed(stream, [b"answer User: x\n\n"])) == "answer "


def test_finish_flushes_a_held_tail_and_a_broken_character() -> None:
    stream = TextStream(["xyz"])
    assert feed(stream, [b"abx"]) == ["ab"]
    assert stream.finish() == "x"
    broken = TextStream([])
    assert broken.push(b"\xe2\x82") == "" and broken.finish() == "\ufffd"
