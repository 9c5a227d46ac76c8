"""The site from Home Assistant discovery, end to end: a real mosquitto, the simulated bridges
(tests/sitesim.py: Zigbee2MQTT, Tasmota and ESPHome shapes), the real store, mqtt and api processes.
Entities are discovered, their states read, commands published as Home Assistant would and confirmed
by the device's new state; hostile configs are quarantined and the rest of the site is unaffected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from appliance.config import load_config
from appliance.control.caller import Role
from appliance.ipc.peers import Peers
from appliance.protocol.devices import STORE_QUARANTINE, QuarantineQuery
from tests.helpers import (
    Publisher,
    api_client,
    bearer,
    cli,
    eventually_async,
    update_config,
    write_config,
)
from tests.sitesim import SimulatedSite, every_bridge, zigbee2mqtt

pytestmark = pytest.mark.slow
StartServices = Callable[..., Awaitable[Peers]]


def set_site(config_file: Path, **keys: Any) -> None:
    data = yaml.safe_load(config_file.read_text())
    data.setdefault("site", {}).update(keys)
    write_config(config_file, data)


async def entities_of(client: Any, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    reply = await client.get("/api/v1/entities", headers=headers, params=params)
    assert reply.status == 200, await reply.text()
    return {row["entity_id"]: row for row in (await reply.json())["items"]}


async def test_the_site_is_discovered_read_and_commanded(config_file: Path, broker: int,
                                                          services: StartServices) -> None:
    site = SimulatedSite(broker, every_bridge())
    peers = await services("store", "mqtt")
    try:
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            admin, operator = bearer(dispatcher, Role.ADMIN, "ada"), bearer(dispatcher, Role.OPERATOR, "otto")
            viewer = bearer(dispatcher, Role.VIEWER, "vera")

            async def discovered() -> dict[str, Any] | None:
                found = await entities_of(client, viewer)
                return found if len(found) == 10 and all(row["state"] is not None for row in found.values()
                                                         if row["component"] != "button") else None

            found = await eventually_async(discovered, 60, "every entity discovered with its state")
            assert {k: v["state"] for k, v in found.items()} == {
                "switch.hall_fan": "off", "light.kitchen_light": "off", "cover.living_blind": "closed",
                "lock.front_door": "locked", "climate.office_trv": "heat", "sensor.office_sensor_temperature": "21.5",
                "binary_sensor.front_door_contact": "off", "switch.workshop_plug_tasmota": "off",
                "switch.livingroom_relay": "off", "sensor.livingroom_temperature": "21.50"}
            assert found["climate.office_trv"]["attributes"] == {"temperature": 20, "current_temperature": 19.5}
            assert found["switch.hall_fan"]["available"] is True and found["switch.livingroom_relay"]["area"] == \
                "Living room"

            async def command(name: str, action: str, who: dict[str, str], **args: Any) -> tuple[int, Any]:
                reply = await client.post(f"/api/v1/entities/{name}/set", headers=who,
                                          json={"action": action, "args": args, "wait_s": 10})
                return reply.status, await reply.json()

            status, done = await command("hall_fan", "turn_on", operator)  # by name, forgivingly
            assert status == 200 and done["outcome"] == "confirmed" and done["state"] == "on", done
            assert site.device("hall_fan").received[-1] == ("zigbee2mqtt/hall_fan/set", b"ON")
            status, done = await command("Office TRV", "set_temperature", operator, temperature=21.5)
            assert done["outcome"] == "confirmed" and done["attributes"]["temperature"] == 21.5, done
            status, done = await command("light.kitchen_light", "turn_on", operator, brightness=128)
            assert done["outcome"] == "confirmed" and json.loads(site.device("kitchen_light").received[-1][1]) == {
                "state": "ON", "brightness": 127}, done
            status, done = await command("cover.living_blind", "set_value", operator, value=40)
            assert done["outcome"] == "confirmed" and done["attributes"]["position"] == 40.0, done
            status, done = await command("workshop plug tasmota", "turn_on", operator)
            assert done["outcome"] == "confirmed", done
            status, done = await command("livingroom relay", "turn_on", operator)
            assert done["outcome"] == "confirmed", done

            # Locks need an admin (site.rules' default).
            status, refused = await command("front_door", "unlock", operator)
            assert status == 403 and "needs the admin role" in refused["error"]["message"], refused
            status, done = await command("front_door", "unlock", admin)
            assert done["outcome"] == "confirmed" and done["state"] == "unlocked", done

            # Refused before anything is published: out of range, not declared, offline.
            sent = len(site.device("office_trv").received)
            status, done = await command("climate.office_trv", "set_temperature", operator, temperature=45)
            assert (status, done["outcome"]) == (200, "refused") and "outside 5..30" in done["reason"], done
            status, done = await command("sensor.office_sensor_temperature", "turn_on", operator)
            assert done["outcome"] == "refused" and "read-only" in done["reason"], done
            assert len(site.device("office_trv").received) == sent
            site.publish("zigbee2mqtt/bridge/state", '{"state": "offline"}', retain=True)

            async def offline() -> bool:
                return (await entities_of(client, viewer))["switch.hall_fan"]["available"] is False

            await eventually_async(offline, 30, "the bridge's availability to reach the entity")
            sent = len(site.device("hall_fan").received)
            status, done = await command("switch.hall_fan", "turn_off", operator)
            assert done["outcome"] == "refused" and "offline" in done["reason"], done
            assert len(site.device("hall_fan").received) == sent
            site.publish("zigbee2mqtt/bridge/state", '{"state": "online"}', retain=True)
            await eventually_async(lambda: _available(client, viewer), 30, "the entity back online")

            # A device that takes the command but never reports: unconfirmed, saying so.
            site.device("hall_fan").silent = True
            status, done = await command("switch.hall_fan", "turn_off", operator)
            assert done["outcome"] == "unconfirmed" and "within" in done["reason"], done

            # Names: an unknown one is 404, one two entities share is 400 listing them.
            status, missing = await command("the moon", "turn_on", operator)
            assert status == 404 and missing["error"]["field"] == "entity_id"
            twin = zigbee2mqtt()[0]
            twin.config_topic = "homeassistant/switch/0xfeedface/switch/config"
            twin.config = {**twin.config, "unique_id": "twin", "object_id": "hall_fan_twin"}
            site.announce(twin)
            await eventually_async(lambda: _has(client, viewer, "switch.hall_fan_twin"), 30, "the twin")
            status, ambiguous = await command("hall_fan", "turn_on", operator)
            assert status == 400 and "switch.hall_fan_twin" in ambiguous["error"]["message"], ambiguous

            # History and memory: the change is there, said in words.
            detail = await (await client.get("/api/v1/entities/switch.hall_fan", headers=viewer,
                                             params={"history": "10"})).json()
            assert [h["state"] for h in detail["history"]["items"]][-2:] == ["on", "off"]
            recalled = await (await client.get("/api/v1/memory/search", headers=viewer, params={
                "q": "hall_fan turned on", "mode": "text", "source": "switch.hall_fan"})).json()
            assert any(hit["record"]["text"] == "hall_fan turned on" for hit in recalled["hits"]), recalled

            # Withdrawn (an empty config): the entity is gone, its history kept.
            site.publish(twin.config_topic, b"", retain=True)
            await eventually_async(lambda: _gone(client, viewer, "switch.hall_fan_twin"), 30, "the twin removed")
    finally:
        site.close()


async def _available(client: Any, headers: dict[str, str]) -> bool:
    return bool((await entities_of(client, headers))["switch.hall_fan"]["available"])


async def _has(client: Any, headers: dict[str, str], entity_id: str) -> bool:
    return entity_id in await entities_of(client, headers)


async def _gone(client: Any, headers: dict[str, str], entity_id: str) -> bool:
    return entity_id not in await entities_of(client, headers)


async def test_hostile_discovery_is_quarantined_and_capped(config_file: Path, broker: int,
                                                           services: StartServices) -> None:
    await asyncio.to_thread(set_site, config_file, max_per_source=50)
    site = SimulatedSite(broker, zigbee2mqtt()[:1])
    flood = Publisher(broker, "flooding-bridge")
    peers = await services("store", "mqtt")
    try:
        hostile = {
            "homeassistant/switch/a/config": b"{not json",
            "homeassistant/switch/b/config": json.dumps({"command_topic": "zigbee2mqtt/#"}).encode(),
            "homeassistant/switch/c/config": json.dumps({"command_topic": "appliance/box/ask"}).encode(),
            "homeassistant/switch/d/config": json.dumps({"command_topic": "x/set", "p": "y" * 100_000}).encode(),
            "homeassistant/sensor/e/config": json.dumps({"name": "no state topic"}).encode(),
        }
        for topic, payload in hostile.items():
            flood.publish(topic, payload, retain=True)
        for n in range(120):  # one bridge announcing far more than its share
            flood.publish(f"homeassistant/sensor/flood{n}/config", json.dumps({
                "state_topic": f"flooder/s{n}", "unique_id": f"flood{n}", "origin": {"name": "flooder"}}).encode())
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            viewer = bearer(dispatcher, Role.VIEWER)

            async def settled() -> Any:
                page = await peers.store.call(STORE_QUARANTINE, QuarantineQuery(kind="discovery", limit=500))
                return page if len(page.items) >= len(hostile) + 70 else None

            page = await eventually_async(settled, 60, "every refused config in the quarantine")
            reasons = " | ".join(item.reason for item in page.items)
            for words in ("not UTF-8 JSON", "wildcard", "own topics", "at most 16384", "state_topic: required",
                          "at most 50 (site.max_per_source)"):
                assert words in reasons, words
            found = await entities_of(client, viewer)
            assert sum(entity_id.startswith("sensor.flood") for entity_id in found) == 50
            assert "switch.hall_fan" in found  # the rest of the site is unaffected
            reply = await client.post("/api/v1/entities/switch.hall_fan/set", headers=bearer(
                dispatcher, Role.OPERATOR), json={"action": "turn_on", "wait_s": 10})
            assert (await reply.json())["outcome"] == "confirmed"
    finally:
        flood.close()
        site.close()


async def test_a_device_of_our_own_describes_itself_and_is_commanded_by_name(config_file: Path, broker: int,
                                                                             services: StartServices) -> None:
    from tests.helpers import Valve

    peers = await services("store", "mqtt")
    device = Publisher(broker, "pump-firmware")
    valve = Valve(broker, "pump-1")
    try:
        device.publish("devices/pump-1/meta", json.dumps({
            "name": "Cellar pump", "area": "Cellar", "description": "drains the cellar",
            "commands": {"set": {"description": "valve position", "args_schema": {
                "type": "object", "properties": {"position": {"type": "integer", "minimum": 0, "maximum": 100}},
                "required": ["position"], "additionalProperties": False}}}}), retain=True)
        async with api_client(load_config(config_file), peers) as (client, dispatcher):
            operator = bearer(dispatcher, Role.OPERATOR)
            await eventually_async(lambda: _has(client, operator, "device.pump_1"), 30, "the pump's entity")
            reply = await client.post("/api/v1/entities/Cellar pump/set", headers=operator,
                                      json={"action": "set", "args": {"position": 40}})
            done = await reply.json()
            assert done["outcome"] == "confirmed" and valve.commands[-1]["args"] == {"position": 40}, done
            reply = await client.post("/api/v1/entities/device.pump_1/set", headers=operator,
                                      json={"action": "set", "args": {"position": 400}})
            refused = await reply.json()
            assert refused["outcome"] == "refused" and "args.position" in refused["reason"], refused
    finally:
        device.close()
        valve.close()


async def test_the_console_and_the_live_topic(config_file: Path, broker: int, services: StartServices) -> None:
    """`appliance entities set hall_fan turn_on` confirmed by the device; /control's entities topic sends
    the list, then each change as it is committed; the box's own discovery message is not a device."""
    config = await asyncio.to_thread(update_config, config_file,
                                     mqtt={"home_assistant": {"enabled": True, "node_id": "box_1"}})
    site = SimulatedSite(broker, zigbee2mqtt()[:1])
    peers = await services("store", "mqtt", "api")
    try:
        async with api_client(config, peers) as (client, dispatcher):
            viewer = bearer(dispatcher, Role.VIEWER)
            await eventually_async(lambda: _has(client, viewer, "switch.hall_fan"), 30, "the fan")
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    f"http://127.0.0.1:{config.api.port}/control", headers=viewer) as ws:
                assert json.loads((await ws.receive()).data)["type"] == "ready"
                await ws.send_json({"id": 1, "type": "subscribe", "topics": ["entities"]})
                frames = [json.loads((await ws.receive(timeout=30)).data) for _ in range(2)]
                snapshot = next(f for f in frames if f["type"] == "event")
                assert snapshot["snapshot"] and [r["entity_id"] for r in snapshot["content"]["items"]] == [
                    "switch.hall_fan"]  # the box's own entities (box_1) are not read back as devices
                done = await asyncio.to_thread(cli, config_file, "entities", "set", "hall_fan", "turn_on")
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout)["outcome"] == "confirmed"
                while True:
                    frame = json.loads((await ws.receive(timeout=30)).data)
                    if frame.get("type") == "event" and frame["content"]["items"][0]["state"] == "on":
                        break
        shown = await asyncio.to_thread(cli, config_file, "entities", "show", "switch.hall_fan")
        assert shown.returncode == 0 and json.loads(shown.stdout)["entity"]["state"] == "on"
        refused = await asyncio.to_thread(cli, config_file, "entities", "set", "hall_fan", "unlock")
        assert refused.returncode == 3 and "takes turn_on" in refused.stderr
    finally:
        site.close()
