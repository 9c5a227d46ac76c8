"""`appliance devices ...` and `appliance outbox ...` against a real store (no mqtt service running)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

pytestmark = pytest.mark.slow


def test_devices_and_outbox_at_the_console(store_config: Path) -> None:
    config = store_config
    listed = cli(config, "devices", "list")
    assert json.loads(listed.stdout)["items"] == []
    queued = cli(config, "outbox", "enqueue", "webhook", "door-opened", '{"door": "D-2", "n": 1}')
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["payload"] == {"door": "D-2", "n": 1}
    status = json.loads(cli(config, "outbox", "status").stdout)
    assert status["pending"] == 1, status
    assert json.loads(cli(config, "devices", "quarantine").stdout)["items"] == []
    for args, words, code in ((["outbox", "enqueue", "mqtt", "a/#", "1"], "topic", 2),
                              (["outbox", "enqueue", "mqtt", "a/b", "{nope"], "not JSON", 2),
                              (["devices", "show", "nobody"], "nobody", 2),
                              (["devices", "quarantine", "--kind", "bogus"], "kind", 2),
                              (["devices", "list", "--limit", "100000"], "limit", 2),
                              (["devices", "command", "door-1", "open"], "mqtt", 1)):
        refused = cli(config, *args)
        assert refused.returncode == code and words in refused.stderr, (args, refused.returncode, refused.stderr)
