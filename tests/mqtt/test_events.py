"""The payload contract: events for what keeps it, quarantine (with the reason) for what does not,
and the code agreeing with the contract's published JSON schema on generated payloads."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import MqttConfig
from appliance.mqtt.events import Refused, parse_event, sample

CONFIG = MqttConfig(max_payload_bytes=1024)
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "mqtt-payload.schema.json").read_text())


def event(topic: str, payload: bytes, config: MqttConfig = CONFIG):  # type: ignore[no-untyped-def]
    return parse_event(topic.encode(), payload, config, 1000.0)


def test_a_json_event_keeps_its_text_device_and_fields() -> None:
    e = event("devices/door-1/events", b'{"id": "m-7", "ts": 1700000000, "type": "door.open", "value": true}')
    assert (e.device, e.kind, e.type, e.ts, e.key) == ("door-1", "event", "door.open", 1700000000.0, "id:m-7")
    assert json.loads(e.text)["value"] is True and e.received_at == 1000.0


def test_state_topics_bare_values_iso_times_and_content_keys() -> None:
    e = event("devices/boiler/state", b"21.5")
    assert (e.kind, e.text) == ("state", "21.5") and e.key.startswith("h:")
    assert event("devices/boiler/state", b"21.5").key == e.key != event("devices/boiler/state", b"21.6").key
    iso = event("devices/boiler/events", b'{"ts": "2026-11-21T10:00:00+01:00"}')
    assert iso.ts == 1795251600.0


@pytest.mark.parametrize(("topic", "payload", "kind", "words"), [
    ("devices/a/events", b"not json at all", "not_json", "not JSON"),
    ("devices/a/events", b"x" * 2000, "too_large", "exceeds mqtt.max_payload_bytes (1024)"),
    ("devices/a/events", b"", "not_json", "not JSON"),
    ("devices/a/events", b"\xff\xfe\xfd", "not_utf8", "not UTF-8"),
    ("devices/a/events", b'"ok\x00evil"', "not_json", "not JSON"),
    ("devices/a/events", b"[" * 20 + b"]" * 20, "too_deep", "levels deep"),
    ("devices/a/events", b'{"a":' * 5000 + b"1" + b"}" * 5000, "too_large", "exceeds"),
    ("devices/a/events", b"null", "schema", "not null"),
    ("devices/a/events", b"[1, 2]", "schema", "not an array"),
    ("devices/a/events", b'{"id": true}', "schema", "id:"),
    ("devices/a/events", b'{"id": "../../etc"}', "schema", "id:"),
    ("devices/a/events", b'{"ts": "yesterday"}', "schema", "ts:"),
    ("devices/a/events", b'{"ts": 1700000000000}', "schema", "not unix seconds"),
    ("devices/a/events", b'{"ts": "2026-11-21T10:00:00"}', "schema", "time zone"),
    ("devices/a/events", b'{"ts": "2026-02-30T10:00:00Z"}', "schema", "ts:"),
    ("devices/a/events", b'{"type": "a b"}', "schema", "type:"),
    ("devices/a/events", b'{"fields": [1]}', "schema", "fields:"),
    ("devices/a/events", b'{"unit": null}', "schema", "unit:"),
    ("devices/../../etc/events", b"1", "topic", "outside mqtt.allowed_topics"),
    ("devices/" + "x" * 300 + "/events", b"1", "device_id", "device id"),
    ("devices/a b/events", b"1", "device_id", "device id"),
    ("devices/a/commands", b"1", "topic", "outside mqtt.allowed_topics"),
])
def test_what_breaks_the_contract_is_refused_with_its_reason(topic: str, payload: bytes, kind: str,
                                                              words: str) -> None:
    with pytest.raises(Refused) as refused:
        event(topic, payload)
    assert refused.value.kind == kind and words in refused.value.reason


def test_deep_json_cannot_overflow_the_stack() -> None:
    config = MqttConfig(max_payload_bytes=16 << 20)
    with pytest.raises(Refused) as refused:
        event("devices/a/events", b"[" * 30_000 + b"]" * 30_000, config)
    assert refused.value.kind == "too_deep"


def test_a_topic_that_is_not_utf8_is_refused_and_sampled_safely() -> None:
    with pytest.raises(Refused) as refused:
        parse_event(b"devices/\xff\xfe/events", b"1", CONFIG, 0.0)
    assert refused.value.kind == "topic"
    assert sample(b"devices/\xff\x1b[2J/events") == "devices/\\\\xff\\x1b[2J/events"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
fields = {"id": st.one_of(st.text(max_size=140), st.integers(-5, 2**64), st.booleans(), st.none()),
          "ts": st.one_of(st.floats(-1, 2e11, allow_nan=False), st.sampled_from(
              ["2026-11-21T10:00:00Z", "2026-11-21T10:00:00", "soon", ""]), st.booleans(), st.none()),
          "type": st.one_of(st.from_regex(r"[A-Za-z0-9._:/-]{1,64}", fullmatch=True), st.text(max_size=70),
                            st.integers()),
          "value": json_values, "fields": st.one_of(json_values, st.dictionaries(st.text(max_size=5), json_values)),
          "unit": st.one_of(st.text(max_size=40), st.none(), st.integers())}
payloads = st.one_of(json_values, st.fixed_dictionaries({}, optional=fields))


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_the_code_agrees_with_the_published_schema(payload: object) -> None:
    data = json.dumps(payload).encode()
    try:
        jsonschema.validate(payload, SCHEMA, format_checker=jsonschema.FormatChecker())
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    try:
        event("devices/dev-1/events", data, MqttConfig(max_payload_bytes=1 << 20))
        code_ok = True
    except Refused as refused:
        assert refused.kind in ("schema", "too_deep", "too_large"), refused.reason
        code_ok = False
    assert code_ok == schema_ok, (payload, schema_ok)
