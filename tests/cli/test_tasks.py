"""`appliance tasks ...` against a real store (no agent running: tasks stay queued)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow


def test_tasks_at_the_console(store_config: Path) -> None:
    config = store_config
    listed = cli(config, "tasks", "list")
    assert json.loads(listed.stdout)["items"] == []
    made = cli(config, "tasks", "create", "--kind", "shell", "--attempts", "2", "--", "python", "check_logs.py")
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert (task["spec"]["argv"], task["max_attempts"], task["created_by"]) == (
        ["python", "check_logs.py"], 2, "local:root")
    search = json.loads(cli(config, "tasks", "create", "--kind", "search", "--query", "doors",
                            "--output-path", "doors.md").stdout)
    shown = json.loads(cli(config, "tasks", "show", str(task["id"])).stdout)
    assert [step["message"] for step in shown["steps"]] == ["queued"]
    assert json.loads(cli(config, "tasks", "cancel", str(search["id"])).stdout)["state"] == "cancelled"
    again = json.loads(cli(config, "tasks", "retry", str(search["id"])).stdout)
    assert again["state"] == "queued" and again["spec"]["query"] == "doors"
    queued = json.loads(cli(config, "tasks", "list", "--state", "queued").stdout)["items"]
    assert [t["id"] for t in queued] == [again["id"], task["id"]]
    for args, words, code in ((["tasks", "create", "--kind", "search"], "query", 2),
                              (["tasks", "create", "--kind", "explode"], "kind", 2),
                              (["tasks", "create", "--kind", "action", "--action", "x", "--args", "[1]"],
                               "JSON object", 2),
                              (["tasks", "show", "999"], "999", 2),
                              (["tasks", "show", "abc"], "ID", 2),
                              (["tasks", "retry", str(task["id"])], "queued", 2),
                              (["tasks", "list", "--limit", "100000"], "limit", 2)):
        refused = cli(config, *args)
        assert refused.returncode == code and words in refused.stderr, (args, refused.returncode, refused.stderr)
