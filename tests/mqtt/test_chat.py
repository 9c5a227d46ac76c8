"""The MQTT chat gateway against a real broker, a real mqtt service and the real chat behind it
(the tiny random model: the answer's words are noise, its shape and routing are what is tested)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.ipc.peers import Peers
from tests.helpers import Publisher, eventually, serve, start_mosquitto, update_config, wait_ready

pytestmark = pytest.mark.slow


def replies(client: Publisher) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in client.received if m.topic == "appliance/chat/out"]


async def test_lines_in_are_answered_out_and_bad_ones_say_why(config_file: Path, tmp_path: Path,
                                                              services: Callable[..., Awaitable[Peers]]) -> None:
    process, port = start_mosquitto(tmp_path / "broker")
    update_config(config_file, mqtt={"port": port, "chat": {"enabled": True, "max_chars": 200}})
    peers = await services("store", "engine")
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
    staff = None
    try:
        await wait_ready(peers.mqtt)
        staff = Publisher(port, f"staff-{tmp_path.name}"[:64])
        staff.subscribe("appliance/chat/out")
        started = time.time()
        staff.publish("appliance/chat/in", json.dumps({"conversation": "night-shift", "from": "guard-2",
                                                       "text": "Is the north gate shut?"}))
        try:
            [answer] = eventually(lambda: replies(staff), 120, "an answer on appliance/chat/out")
        except AssertionError:  # say what the bridge saw
            raise AssertionError((tmp_path / "mqtt.log").read_text()[-4000:]) from None
        assert answer["conversation"] == "night-shift" and isinstance(answer["text"], str)
        assert answer["at"] >= started

        staff.publish("appliance/chat/in", "plain text works too")
        eventually(lambda: len(replies(staff)) >= 2, 120, "the plain-text answer")
        assert replies(staff)[1]["conversation"] == "mqtt"
        for bad, words in ((b"\xff\xfe", "not UTF-8"), (b'{"text": ', "not JSON"), (b'{"from": "x"}', "no text"),
                           (json.dumps({"text": "x" * 201}).encode(), "longer than 200")):
            before = len(replies(staff))
            staff.publish("appliance/chat/in", bad)
            eventually(lambda before=before: len(replies(staff)) > before, 30, f"an error for {bad[:20]!r}")
            assert words in replies(staff)[-1]["error"], replies(staff)[-1]
    finally:
        if staff is not None:
            staff.close()
        bridge.terminate()
        bridge.wait(10)
        process.terminate()
        process.wait(5)
