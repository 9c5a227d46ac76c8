"""Triggers against a controllable clock: cron (both DST changes), interval, at, missed runs after downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from appliance.schedules.triggers import At, Cron, Interval, MqttTrigger, missed_fires, next_fire, parse_trigger

BERLIN = ZoneInfo("Europe/Berlin")


def fires(trigger: str, start: datetime, count: int, tz: ZoneInfo = BERLIN) -> list[str]:
    parsed, out, at = parse_trigger(trigger, tz), [], start
    for _ in range(count):
        at = next_fire(parsed, at, tz)  # type: ignore[assignment]
        out.append(at.astimezone(tz).isoformat())
    return out


def test_a_daily_job_runs_once_when_clocks_go_back() -> None:
    """25 Oct 2026, 03:00 CEST becomes 02:00 CET: 02:30 happens twice on the wall, the job runs once."""
    assert fires("cron:30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_a_daily_job_runs_at_three_when_its_time_does_not_exist() -> None:
    """29 Mar 2026, 02:00 CET becomes 03:00 CEST: there is no 02:30; Debian cron runs it at 03:00."""
    assert fires("cron:30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_a_frequent_job_keeps_real_time_through_the_repeated_hour() -> None:
    got = fires("cron:*/30 * * * *", datetime(2026, 10, 25, 1, 40, tzinfo=BERLIN), 4)
    assert got == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
                   "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00"]


def test_interval_keeps_its_phase_and_skips_the_backlog() -> None:
    trigger = parse_trigger("interval:5m", BERLIN)
    assert trigger == Interval(300)
    last = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert next_fire(trigger, last + timedelta(seconds=10), BERLIN, last) == last + timedelta(minutes=5)
    assert next_fire(trigger, last + timedelta(minutes=17), BERLIN, last) == last + timedelta(minutes=20)


def test_at_fires_once() -> None:
    trigger = parse_trigger("at:2026-12-24T18:00", BERLIN)
    assert isinstance(trigger, At) and trigger.when.tzinfo is BERLIN
    before = datetime(2026, 12, 24, 16, tzinfo=UTC)
    assert next_fire(trigger, before, BERLIN) == datetime(2026, 12, 24, 18, tzinfo=BERLIN)
    assert next_fire(trigger, before + timedelta(hours=2), BERLIN) is None


def test_missed_runs_after_downtime_are_counted_and_capped() -> None:
    last = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    now = last + timedelta(hours=3, minutes=2)  # off for three hours
    hourly = parse_trigger("cron:0 * * * *", UTC)
    assert [f.hour for f in missed_fires(hourly, last, now, UTC, 10)] == [9, 10, 11]
    assert [f.hour for f in missed_fires(hourly, last, now, UTC, 1)] == [11]
    every_10 = parse_trigger("interval:600", UTC)
    assert len(missed_fires(every_10, last, now, UTC, 100)) == 18
    assert missed_fires(every_10, last, now, UTC, 2)[-1] == last + timedelta(minutes=180)
    assert missed_fires(hourly, last, last + timedelta(minutes=30), UTC, 10) == []


@pytest.mark.parametrize(("text", "words"), [
    ("cron:* * *", "five fields"), ("cron:61 * * * *", "cron"), ("interval:0", "at least"),
    ("interval:5x", "5m"), ("at:tomorrow", "ISO"), ("mqtt:", "topic filter"), ("mqtt:a/#/b", "'#'"),
    ("every:5m", "cron:, interval:"), ("", "trigger"), ("cron:" + "* " * 5000, "five fields"),
])
def test_bad_triggers_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_trigger(text, UTC)


def test_the_reference_forms_parse() -> None:
    assert parse_trigger("cron:*/5 * * * *", UTC) == Cron("*/5 * * * *")
    assert parse_trigger("mqtt:devices/+/events", UTC) == MqttTrigger("devices/+/events")


def test_entity_triggers_name_an_entity_pattern_and_a_state() -> None:
    from appliance.schedules.triggers import EntityTrigger

    assert parse_trigger("entity:sensor.freezer_*", UTC) == EntityTrigger("sensor.freezer_*", None)
    assert parse_trigger("entity:binary_sensor.dock_door=on", UTC) == EntityTrigger("binary_sensor.dock_door", "on")
    for bad in ("entity:", "entity:freezer", "entity:Sensor.X", "entity:sensor.x=" + "y" * 65):
        with pytest.raises(ValueError, match="entity"):
            parse_trigger(bad, UTC)
