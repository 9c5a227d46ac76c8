"""`appliance schedules ...` against a real store (no agent running: it would read them when it starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow


def test_schedules_at_the_console(store_config: Path) -> None:
    config = store_config
    assert json.loads(cli(config, "schedules", "list").stdout)["items"] == []
    made = cli(config, "schedules", "add", "log_monitor", "--trigger", "cron:*/5 * * * *", "--action",
               "python check_logs.py", "--fallback", "send_alert",
               "--with", '{"retries": 2, "timezone": "Asia/Shanghai"}')
    assert made.returncode == 0, made.stderr
    view = json.loads(made.stdout)
    assert (view["schedule"]["retries"], view["schedule"]["run_as"], view["source"]) == (2, "admin", "saved")
    replaced = cli(config, "schedules", "replace", "log_monitor", "--trigger", "interval:1h", "--action", "heartbeat")
    assert json.loads(replaced.stdout)["schedule"]["retries"] == 0  # a replacement is the whole schedule
    shown = json.loads(cli(config, "schedules", "show", "log_monitor").stdout)
    assert shown["schedule"]["trigger"] == "interval:1h" and shown["next_fire"] is not None
    for args, words in ((["schedules", "add", "x", "--trigger", "cron:* *", "--action", "heartbeat"], "five fields"),
                        (["schedules", "add", "x", "--trigger", "interval:5m", "--action", "heartbeat",
                          "--with", '{"colour": "red"}'], "colour"),
                        (["schedules", "add", "log_monitor", "--trigger", "interval:5m", "--action", "heartbeat"],
                         "exists already"),
                        (["schedules", "show", "nothing"], "no schedule"),
                        (["schedules", "delete", "nothing"], "no schedule")):
        refused = cli(config, *args)
        assert refused.returncode == 2 and words in refused.stderr, (args, refused.stderr)
    assert cli(config, "schedules", "delete", "log_monitor").returncode == 0
    assert json.loads(cli(config, "schedules", "list").stdout)["items"] == []
