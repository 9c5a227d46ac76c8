"""The schedules file: the reference form loads; every mistake names the schedule and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, parse_config
from appliance.schedules.model import load_schedules
from appliance.taskkinds.action import action_names

REFERENCE = """
tasks:
  - name: "log_monitor"
    trigger: "cron:*/5 * * * *"
    action: "python check_logs.py"
    fallback: "send_alert"
"""


def test_the_reference_form_loads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(REFERENCE)
    [schedule] = load_schedules(path)
    actions = action_names(parse_config(""))
    task = schedule.task(actions)
    assert task.kind == "shell" and task.fields() == {"argv": ["python", "check_logs.py"]}  # split without a shell
    fallback = schedule.task(actions, what=schedule.fallback, given={"error": "exit 1"})
    assert fallback.kind == "action" and fallback.fields() == {"action": "send_alert", "args": {}}
    assert fallback.input == {"error": "exit 1"}
    assert (schedule.concurrency, schedule.missed, schedule.priority) == ("skip", "once", "scheduled")


@pytest.mark.parametrize(("text", "words"), [
    ("tasks:\n  - {name: a, trigger: 'cron:* *', action: x}", "tasks[a].trigger: Value error, cron needs five fields"),
    ("tasks:\n  - {name: b, trigger: 'interval:5m', action: x, timezone: Mars/Base}", "tasks[b].timezone"),
    ("tasks:\n  - {name: c, trigger: 'interval:5m', action: x, concurrency: many}", "tasks[c].concurrency"),
    ("tasks:\n  - {name: d, trigger: 'interval:5m'}", "tasks[d].action: Field required"),
    ("tasks:\n  - {name: e, trigger: 'interval:5m', action: x, colour: red}", "tasks[e].colour"),
    ("tasks:\n  - {name: 'a b', trigger: 'interval:5m', action: x}", "tasks[a b].name"),
    ("tasks:\n  - {name: f, trigger: 'interval:5m', action: x}\n  - {name: f, trigger: 'interval:1h', action: y}",
     "duplicate schedule name 'f'"),
    ("tasks: [1]", "tasks[0]"),
    ("tasks: {", "not YAML"),
    ("- just a list", "Input should be a valid dictionary"),
])
def test_mistakes_name_the_schedule_and_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_schedules(path)
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_oversized_or_binary_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_schedules(path)
    path.write_bytes(b"\xff\xfe\x00tasks")
    with pytest.raises(ConfigError, match="not YAML"):
        load_schedules(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_schedules(tmp_path / "missing.yaml")


def test_an_agent_goal_is_a_schedules_action() -> None:
    from appliance.schedules.model import Schedule

    schedule = Schedule.model_validate({"name": "freezer_watch", "trigger": "entity:sensor.freezer_temperature",
                                        "action": {"agent": "If the freezer is above -15 °C, start its defrost"}})
    spec = schedule.task(set(), given={"state": "-12"})
    assert (spec.kind, spec.fields(), spec.input) == (
        "agent", {"goal": "If the freezer is above -15 °C, start its defrost"}, {"state": "-12"})
    for bad in ({"agent": ""}, {"agent": "x", "extra": 1}, {"agnt": "x"}, {"agent": "y" * 2001}):
        with pytest.raises(ValueError):
            Schedule.model_validate({"name": "s", "trigger": "interval:1h", "action": bad})
