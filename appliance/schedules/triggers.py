"""Triggers in the reference form, and when they fire: pure functions of a trigger and a time.

    cron:*/5 * * * *        five cron fields, in the schedule's timezone (cronsim: Debian cron's
                            DST rules: a daily 02:30 runs once when clocks go back, and at 03:00
                            on the night 02:30 does not exist)
    interval:90 | 5m | 1h   every so long, counted from the last fire
    at:2026-12-24T18:00     once (an ISO time; without an offset, in the schedule's timezone)
    mqtt:devices/+/events   device events matching the filter (fired by the event, not the clock)

Nothing here reads the clock: callers pass ``now``, so tests drive schedules through DST changes
and downtime without waiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from cronsim import CronSim, CronSimError

_INTERVAL = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, None: 1}
MIN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Cron:
    expression: str


@dataclass(frozen=True)
class Interval:
    seconds: float


@dataclass(frozen=True)
class At:
    when: datetime


@dataclass(frozen=True)
class MqttTrigger:
    topic_filter: str


@dataclass(frozen=True)
class EntityTrigger:
    """``entity:<entity id pattern>[=<state>]``: a change of an entity's state (to that state)."""

    pattern: str
    state: str | None = None


Trigger = Cron | Interval | At | MqttTrigger | EntityTrigger
EVENT_TRIGGERS = (MqttTrigger, EntityTrigger)  # fired by what happens on the site, not by the clock


def parse_trigger(text: str, tz: tzinfo) -> Trigger:
    """The trigger, or ValueError saying what is wrong with it."""
    kind, _, rest = text.partition(":")
    rest = rest.strip()
    if kind == "cron":
        if len(rest.split()) != 5:
            raise ValueError(f"cron needs five fields (minute hour day month weekday), got {rest!r}")
        try:
            CronSim(rest, datetime(2000, 1, 1, tzinfo=tz))
        except CronSimError as exc:
            raise ValueError(f"cron {rest!r}: {exc}") from None
        return Cron(rest)
    if kind == "interval":
        match = _INTERVAL.match(rest)
        if not match:
            raise ValueError(f"interval {rest!r}: seconds, or a number with s, m, h or d (e.g. 90, 5m, 1h)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds < MIN_INTERVAL_S:
            raise ValueError(f"interval {rest!r}: at least {MIN_INTERVAL_S:g} s")
        return Interval(seconds)
    if kind == "at":
        try:
            when = datetime.fromisoformat(rest)
        except ValueError:
            raise ValueError(f"at {rest!r}: not an ISO time (e.g. 2026-12-24T18:00)") from None
        return At(when if when.tzinfo else when.replace(tzinfo=tz))
    if kind == "mqtt":
        if not rest or len(rest) > 256 or "\x00" in rest:
            raise ValueError("mqtt needs a topic filter, e.g. mqtt:devices/+/events")
        levels = rest.split("/")
        if any(("#" in part and (part != "#" or i != len(levels) - 1)) or ("+" in part and part != "+")
               for i, part in enumerate(levels)):
            raise ValueError(f"mqtt {rest!r}: '+' must be a whole level and '#' the last level")
        return MqttTrigger(rest)
    if kind == "entity":
        pattern, _, state = rest.partition("=")
        if not re.fullmatch(r"[a-z_*?]+\.[a-z0-9_*?]{1,128}", pattern) or len(state) > 64 or "\x00" in state:
            raise ValueError(f"entity {rest[:60]!r}: an entity id or pattern (sensor.freezer_*), optionally =state")
        return EntityTrigger(pattern, state or None)
    raise ValueError(f"{text[:60]!r}: a trigger is cron:, interval:, at:, mqtt: or entity:")


def next_fire(trigger: Trigger, after: datetime, tz: tzinfo, last: datetime | None = None) -> datetime | None:
    """The first fire strictly after ``after``; None when it never fires again (or fires on events)."""
    if isinstance(trigger, Cron):
        return next(CronSim(trigger.expression, after.astimezone(tz)))
    if isinstance(trigger, Interval):
        step = timedelta(seconds=trigger.seconds)
        if last is None:
            return after + step
        behind = (after - last) // step  # whole intervals already past: keep the phase, skip the backlog
        return last + step * (max(behind, 0) + 1)
    if isinstance(trigger, At):
        return trigger.when if trigger.when > after else None
    return None


def missed_fires(trigger: Trigger, last: datetime, now: datetime, tz: tzinfo, limit: int) -> list[datetime]:
    """Fires due after ``last`` and up to ``now`` (the box was off or the agent stopped): at most
    ``limit``, the most recent ones."""
    fires: list[datetime] = []
    if isinstance(trigger, Interval):
        step = timedelta(seconds=trigger.seconds)
        count = int((now - last) // step)
        return [last + step * n for n in range(max(1, count - limit + 1), count + 1)]
    at = last
    while (at_next := next_fire(trigger, at, tz)) is not None and at_next <= now:
        fires.append(at_next)
        fires = fires[-limit:]
        at = at_next
    return fires
