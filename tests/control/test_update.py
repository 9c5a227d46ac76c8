"""The update command group: how each command is declared (behaviour: tests/api/test_update.py,
tests/update, and the image's own check in qemu, image/check.py)."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.control.table import default_table
from appliance.control.update import status_of
from tests.helpers import declarations

# Installing reboots the box, which the site feels (actuate), and is never offered to the agent.
DECLARED_UPDATE = {
    'system.update': ('actuate', 'admin', None, None),
    'system.update_status': ('read', 'viewer', None, None),
}


def test_the_update_commands_are_declared_as_decided() -> None:
    assert declarations('update') == DECLARED_UPDATE


def test_only_rest_takes_an_update_since_only_rest_receives_the_bundle_itself() -> None:
    table = {c.name: c for c in default_table()}
    assert table["system.update"].surfaces == frozenset({"rest"})
    assert [r.body_file for r in table["system.update"].http] == ["bundle"]


def test_a_state_file_that_is_not_one_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"state": "exploded", "progress": "most"}))
    status = status_of(tmp_path)
    assert status.state == "failed" and "is not an update state" in status.detail
    (tmp_path / "state.json").write_text("{not json")
    assert status_of(tmp_path).state == "idle"
    (tmp_path / "request.json").write_text("{}")
    assert status_of(tmp_path).state == "requested"
