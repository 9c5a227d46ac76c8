"""A simulated site for tests, benchmarks and the agent's evaluation: devices that announce themselves by
Home Assistant MQTT discovery (retained), publish their states, and answer commands by publishing their
new state, the way the real bridges do, on a real mosquitto.

This is a fake of the bridges, said here as the guide asks. The shapes are written from the bridges'
public documentation, not captured from them:

- Zigbee2MQTT: its "Home Assistant integration" guide (zigbee2mqtt.io/guide/usage/integrations/
  home_assistant.html) and the discovery payloads its homeassistant extension documents: topic
  ``homeassistant/<component>/<ieee address>/<property>/config``, full key names, ``object_id`` the
  friendly name, ``name`` null for the device's main entity, availability through the bridge's state
  topic with a value template, states as one JSON object on ``zigbee2mqtt/<name>``, commands on
  ``zigbee2mqtt/<name>/set`` (plain ON/OFF, or JSON), json-schema lights, covers with a position
  template, locks answering LOCK/UNLOCK, thermostats with system_mode and current_heating_setpoint,
  contact sensors with boolean payloads (payload_on false: closed).
- Tasmota: its "Home Assistant" documentation for SetOption19 discovery: abbreviated keys, ``~`` base
  topic with FullTopic %topic%/%prefix%/, POWER answered on ``stat/RESULT``, LWT Online/Offline.
- ESPHome: its MQTT client component documentation: ``homeassistant/<component>/<node>/<object>/config``,
  abbreviated keys, ``~`` as ``<node>/<component>/<object>``, plain ON/OFF and number payloads,
  availability on ``<node>/status`` (online/offline).

The Home Assistant side (what each key means, the defaults) follows Home Assistant's MQTT integration
documentation per platform.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.protocol.site import EntityRow
from appliance.site import discovery, entities

Answer = Callable[["SimDevice", str, bytes], None]


@dataclass
class SimDevice:
    """One entity's device: its discovery config, its state (a JSON object, or text) and how it answers."""

    name: str
    config_topic: str
    config: dict[str, Any]
    state_topic: str
    state: Any
    commands: list[str]
    answer: Answer
    received: list[tuple[str, bytes]] = field(default_factory=list)
    silent: bool = False  # takes commands but never reports (to see "unconfirmed")

    def payload(self) -> bytes:
        return (json.dumps(self.state) if isinstance(self.state, dict) else str(self.state)).encode()


def _z2m_device(name: str, ieee: str, model: str) -> dict[str, Any]:
    return {"identifiers": [f"zigbee2mqtt_{ieee}"], "manufacturer": "IKEA", "model": model, "name": name,
            "via_device": "zigbee2mqtt_bridge_0x00124b0022df1b4c"}


Z2M_ORIGIN = {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"}
Z2M_AVAILABILITY = [{"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}]


def _z2m_json(device: SimDevice, topic: str, payload: bytes) -> None:
    """Zigbee2MQTT takes JSON (or a plain ON/OFF for state) on <name>/set and publishes the new state."""
    text = payload.decode()
    try:
        body = json.loads(text)
    except ValueError:
        body = {"state": text}
    if not isinstance(body, dict):
        body = {"state": text}
    device.state.update(body)
    if "position" in body:
        device.state["state"] = "OPEN" if body["position"] > 0 else "CLOSE"
    if body.get("state") == "OPEN":
        device.state["position"] = 100
    if body.get("state") == "CLOSE":
        device.state["position"] = 0
    if body.get("state") == "STOP":
        device.state["state"] = "STOP"


def _z2m_set_topic(device: SimDevice, topic: str, payload: bytes) -> None:
    """A thermostat's setters: <name>/set/<property> with the bare value."""
    prop = topic.rsplit("/", 1)[1]
    text = payload.decode()
    try:
        device.state[prop] = json.loads(text)
    except ValueError:
        device.state[prop] = text


def make(component: str, name: str, ieee: str, model: str, prop: str, extra: dict[str, Any], state: dict[str, Any],
         answer: Answer = _z2m_json, commands: list[str] | None = None, object_id: str | None = None) -> SimDevice:
    """One Zigbee2MQTT entity: its discovery config, its state on zigbee2mqtt/<name>, its set topic."""
    config = {"availability": Z2M_AVAILABILITY, "device": _z2m_device(name, ieee, model), "name": None
              if object_id is None else prop, "object_id": object_id or name, "origin": Z2M_ORIGIN,
              "unique_id": f"{ieee}_{prop}_zigbee2mqtt", "state_topic": f"zigbee2mqtt/{name}", **extra}
    return SimDevice(name, f"homeassistant/{component}/{ieee}/{prop}/config", config, f"zigbee2mqtt/{name}",
                     state, commands if commands is not None else [f"zigbee2mqtt/{name}/set"], answer)


def z2m_switch(name: str, ieee: str, on: bool = False) -> SimDevice:
    """A Zigbee2MQTT smart plug or relay (its main entity: a switch named like the device)."""
    return make("switch", name, ieee, "ZBMINI", "switch",
                {"command_topic": f"zigbee2mqtt/{name}/set", "payload_on": "ON", "payload_off": "OFF",
                 "value_template": "{{ value_json.state }}"}, {"state": "ON" if on else "OFF"})


def z2m_sensor(name: str, ieee: str, prop: str, value: Any, unit: str, device_class: str) -> SimDevice:
    """A Zigbee2MQTT sensor entity (``<name>_<prop>``) reading ``value`` from its state's ``prop``."""
    return make("sensor", name, ieee, "SNZB-02", prop,
                {"device_class": device_class, "state_class": "measurement", "unit_of_measurement": unit,
                 "value_template": f"{{{{ value_json.{prop} }}}}"}, {prop: value}, commands=[],
                object_id=f"{name}_{prop}")


def z2m_contact(name: str, ieee: str, closed: bool = True) -> SimDevice:
    return make("binary_sensor", name, ieee, "SNZB-04", "contact",
                {"device_class": "door", "payload_on": False, "payload_off": True,
                 "value_template": "{{ value_json.contact }}"}, {"contact": closed}, commands=[], object_id=name)


def zigbee2mqtt() -> list[SimDevice]:
    """A Zigbee2MQTT site: a switch (hall_fan), a json light, a cover, a lock, a thermostat, a temperature
    sensor and a door contact."""

    return [
        make("switch", "hall_fan", "0x00158d0001a2b3c4", "E1603", "switch",
             {"command_topic": "zigbee2mqtt/hall_fan/set", "payload_on": "ON", "payload_off": "OFF",
              "state_on": "ON", "state_off": "OFF", "value_template": "{{ value_json.state }}"},
             {"state": "OFF", "linkquality": 120}),
        make("light", "kitchen_light", "0x000b57fffec6a5b2", "LED1545G12", "light",
             {"command_topic": "zigbee2mqtt/kitchen_light/set", "schema": "json", "brightness": True,
              "brightness_scale": 254, "supported_color_modes": ["color_temp"], "min_mireds": 250,
              "max_mireds": 454}, {"state": "OFF", "brightness": 0, "color_temp": 370, "color_mode": "color_temp"}),
        make("cover", "living_blind", "0x680ae2fffe3f3f51", "E1757", "cover",
             {"command_topic": "zigbee2mqtt/living_blind/set", "position_topic": "zigbee2mqtt/living_blind",
              "set_position_topic": "zigbee2mqtt/living_blind/set",
              "set_position_template": '{ "position": {{ position }} }', "position_template":
              "{{ value_json.position }}", "value_template": "{{ value_json.state }}", "state_open": "OPEN",
              "state_closed": "CLOSE", "state_stopped": "STOP"}, {"state": "CLOSE", "position": 0}),
        make("lock", "front_door", "0x0017880104e45517", "YRD226HA2619", "lock",
             {"command_topic": "zigbee2mqtt/front_door/set", "payload_lock": "LOCK", "payload_unlock": "UNLOCK",
              "state_locked": "LOCK", "state_unlocked": "UNLOCK", "value_template": "{{ value_json.state }}"},
             {"state": "LOCK", "battery": 80}),
        make("climate", "office_trv", "0x8cf681fffe0a7b12", "SPZB0001", "climate",
             {"current_temperature_template": "{{ value_json.local_temperature }}",
              "current_temperature_topic": "zigbee2mqtt/office_trv", "max_temp": "30", "min_temp": "5",
              "mode_command_topic": "zigbee2mqtt/office_trv/set/system_mode",
              "mode_state_template": "{{ value_json.system_mode }}", "mode_state_topic": "zigbee2mqtt/office_trv",
              "modes": ["off", "auto", "heat"], "temp_step": 0.5,
              "temperature_command_topic": "zigbee2mqtt/office_trv/set/current_heating_setpoint",
              "temperature_state_template": "{{ value_json.current_heating_setpoint }}",
              "temperature_state_topic": "zigbee2mqtt/office_trv", "temperature_unit": "C"},
             {"system_mode": "heat", "current_heating_setpoint": 20, "local_temperature": 19.5},
             _z2m_set_topic, ["zigbee2mqtt/office_trv/set/system_mode",
                              "zigbee2mqtt/office_trv/set/current_heating_setpoint"]),
        make("sensor", "office_sensor", "0x00158d00045c1e2f", "WSDCGQ11LM", "temperature",
             {"device_class": "temperature", "state_class": "measurement", "unit_of_measurement": "°C",
              "value_template": "{{ value_json.temperature }}"}, {"temperature": 21.5, "humidity": 40.2},
             commands=[], object_id="office_sensor_temperature"),
        make("binary_sensor", "front_door_contact", "0x00158d000512f3a0", "MCCGQ11LM", "contact",
             {"device_class": "door", "payload_on": False, "payload_off": True,
              "value_template": "{{ value_json.contact }}"}, {"contact": True, "battery": 91},
             commands=[], object_id="front_door_contact"),
    ]


def _plain(device: SimDevice, topic: str, payload: bytes) -> None:
    device.state = payload.decode()


def _tasmota_power(device: SimDevice, topic: str, payload: bytes) -> None:
    device.state = {"POWER": payload.decode().upper()}


def tasmota() -> list[SimDevice]:
    """A Tasmota plug announced with SetOption19 (FullTopic %topic%/%prefix%/)."""
    config = {"name": "Tasmota", "cmd_t": "~cmnd/POWER", "stat_t": "~stat/RESULT", "val_tpl": "{{value_json.POWER}}",
              "pl_off": "OFF", "pl_on": "ON", "avty_t": "~tele/LWT", "pl_avail": "Online", "pl_not_avail": "Offline",
              "uniq_id": "6E7F1A_RL_1", "dev": {"ids": ["6E7F1A"], "name": "Workshop plug", "mdl": "Sonoff Basic",
                                                 "sw": "9.5.0", "mf": "Tasmota"}, "~": "tasmota_6E7F1A/"}
    return [SimDevice("tasmota_6E7F1A", "homeassistant/switch/6E7F1A_RL_1/config", config,
                      "tasmota_6E7F1A/stat/RESULT", {"POWER": "OFF"}, ["tasmota_6E7F1A/cmnd/POWER"], _tasmota_power)]


def esphome() -> list[SimDevice]:
    """An ESPHome node (livingroom) with a relay and a temperature sensor."""
    device = {"ids": "a4cf12345678", "name": "livingroom", "sw": "esphome v2024.6.0", "mdl": "esp32dev",
              "mf": "espressif", "sa": "Living room"}
    relay = {"name": "Relay", "stat_t": "~/state", "cmd_t": "~/command", "avty_t": "livingroom/status",
             "uniq_id": "ESPswitchrelay", "dev": device, "~": "livingroom/switch/relay"}
    sensor = {"unit_of_meas": "°C", "dev_cla": "temperature", "stat_cla": "measurement", "name": "Temperature",
              "stat_t": "~/state", "avty_t": "livingroom/status", "uniq_id": "ESPsensortemperature", "dev": device,
              "~": "livingroom/sensor/temperature"}
    return [SimDevice("livingroom_relay", "homeassistant/switch/livingroom/relay/config", relay,
                      "livingroom/switch/relay/state", "OFF", ["livingroom/switch/relay/command"], _plain),
            SimDevice("livingroom_temperature", "homeassistant/sensor/livingroom/temperature/config", sensor,
                      "livingroom/sensor/temperature/state", "21.50", [], _plain)]


AVAILABILITY = [("zigbee2mqtt/bridge/state", '{"state": "online"}'), ("tasmota_6E7F1A/tele/LWT", "Online"),
                ("livingroom/status", "online")]


class SimulatedSite:
    """The devices on a real broker: their configs and states retained, commands answered with new states."""

    def __init__(self, port: int, devices: list[SimDevice], *, client_id: str = "simulated-site",
                 prefix: str = "homeassistant") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.devices = devices
        self.prefix = prefix
        self.by_topic = {topic: device for device in devices for topic in device.commands}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in self.by_topic:
            self._subscribed.clear()
            self.client.subscribe(topic, qos=1)
            if not self._subscribed.wait(10):
                raise AssertionError(f"no SUBACK for {topic}")
        for topic, payload in AVAILABILITY:
            self.publish(topic, payload, retain=True)
        for device in devices:
            self.announce(device)
            self.report(device)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def announce(self, device: SimDevice) -> None:
        self.publish(device.config_topic.replace("homeassistant", self.prefix, 1), json.dumps(device.config),
                     retain=True)

    def report(self, device: SimDevice) -> None:
        self.publish(device.state_topic, device.payload(), retain=True)

    def device(self, name: str) -> SimDevice:
        return next(device for device in self.devices if device.name == name)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        device = self.by_topic.get(message.topic)
        if device is None:
            return
        device.received.append((message.topic, bytes(message.payload)))
        if device.silent:
            return
        device.answer(device, message.topic, bytes(message.payload))
        self.client.publish(device.state_topic, device.payload(), qos=1, retain=True)

    def clear(self) -> None:
        """Withdraw every config and retained state (so the next test's broker starts clean)."""
        for device in self.devices:
            self.publish(device.config_topic.replace("homeassistant", self.prefix, 1), b"", retain=True)
            self.publish(device.state_topic, b"", retain=True)
        for topic, _ in AVAILABILITY:
            self.publish(topic, b"", retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def every_bridge() -> list[SimDevice]:
    return [*zigbee2mqtt(), *tasmota(), *esphome()]


def entity_row(name: str, **state: Any) -> EntityRow:
    """The entity the box registers for one of every_bridge()'s devices, with ``state`` set (a device
    with several entities gives its first)."""
    device = next(device for device in every_bridge() if device.name == name)
    announced = discovery.parse("homeassistant", device.config_topic, json.dumps(device.config).encode()).entities[0]
    made = entities.register(announced, lambda _id: None, {})
    return EntityRow(**made.model_dump(), updated_at=0.0, **state)
