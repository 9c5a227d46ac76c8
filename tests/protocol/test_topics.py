"""MQTT topic filters, matched as a broker matches them."""

from __future__ import annotations

from appliance.protocol.topics import topic_matches


def test_filter_matching() -> None:
    assert topic_matches("devices/a/events", "devices/+/events")
    assert topic_matches("devices/a/b/c", "devices/#")
    assert not topic_matches("devices/a/b/events", "devices/+/events")
    assert not topic_matches("devices/a", "devices/+/events")


def test_topic_filters_follow_mqtt_wildcards() -> None:
    cases = [("devices/+/events", "devices/a/events", True), ("devices/+/events", "devices//events", True),
             ("devices/#", "devices", True), ("devices/#", "devices/a/b", True), ("#", "anything/at/all", True),
             ("devices/+/events", "devices/a/events/x", False), ("devices/#", "devicesX/a", False),
             ("a.b/+", "aXb/c", False), ("devices/+/events", "devices/a\nb/events", True)]
    for pattern, topic, expected in cases:
        assert topic_matches(topic, pattern) is expected, (pattern, topic)
