"""Hostile and malformed MQTT messages become clear rejections, good ones become memories."""

from __future__ import annotations

import pytest

from appliance.mqtt.events import EventRejected, parse_event


def test_json_event_keeps_payload_and_device() -> None:
    event = parse_event("devices/door-1/events", b'{"open": true}', 1024)
    assert event.source == "door-1"
    assert event.metadata == {"topic": "devices/door-1/events", "payload": {"open": True}}


def test_plain_text_event() -> None:
    event = parse_event("site/alarm", "température 21°C".encode(), 1024)
    assert event.text == "température 21°C" and event.source == "site/alarm"


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("devices/a/events", b"x" * 2000, "exceeds mqtt.max_payload_bytes (1024)"),
    ("devices/a/events", b"", "empty payload"),
    ("devices/a/events", b"   \n", "empty payload"),
    ("devices/a/events", b"\xff\xfe\xfd", "not UTF-8"),
    ("devices/a/events", b"ok\x00evil", "control character"),
    ("devices/a/events", b"\x1b[2Jclear screen", "control character"),
    ("devices/../../etc/events", b"1", "device id"),
    ("devices/" + "x" * 300 + "/events", b"1", "device id"),
    ("devices/a b/events", b"1", "device id"),
    ("devices/a/events", b"[" * 1000 + b"]" * 1000, None),
])
def test_rejections_say_why(topic: str, payload: bytes, reason: str | None) -> None:
    if reason is None:  # deep but within the size cap: parsed or refused, never a crash
        try:
            parse_event(topic, payload, 4096)
        except EventRejected as exc:
            assert "nested too deeply" in str(exc)
        return
    with pytest.raises(EventRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_event(topic, payload, 1024)


def test_very_deep_json_is_refused() -> None:
    with pytest.raises(EventRejected, match="nested too deeply"):
        parse_event("devices/a/events", b"[" * 30_000 + b"]" * 30_000, 1 << 20)
