from __future__ import annotations

import logging
import os
import sys

import pytest

from appliance.runtime.logs import FieldsFormatter, stderr_is_journal


def test_journal_detection_follows_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert not stderr_is_journal()
    st = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not stderr_is_journal()


def test_formatter_appends_upper_case_fields() -> None:
    record = logging.makeLogRecord({"name": "appliance.mqtt", "msg": "rejected", "levelno": 30,
                                    "levelname": "WARNING", "MQTT_TOPIC": "devices/x/events", "lower": 1})
    line = FieldsFormatter().format(record)
    assert line.endswith("appliance.mqtt: rejected MQTT_TOPIC=devices/x/events")
