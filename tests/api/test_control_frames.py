"""The published JSON schemas of /control's frames (docs/control-frames.schema.json) are the ones the
code declares; regenerate with UPDATE_GOLDEN=1 after a deliberate change, and read the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

from appliance.api.control_frames import frame_schemas

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "control-frames.schema.json"


def test_the_published_schemas_are_the_declared_ones() -> None:
    schemas = frame_schemas()
    if os.environ.get("UPDATE_GOLDEN"):
        PUBLISHED.write_text(json.dumps(schemas, indent=1, ensure_ascii=False) + "\n")
    assert json.loads(PUBLISHED.read_text()) == schemas
    assert set(schemas["client"]) == {"AuthFrame", "PingFrame", "CommandFrame", "TaskFrame", "ResumeFrame",
                                      "SubscribeFrame"}
