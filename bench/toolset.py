"""The fixed tool-call set of bench/model.py: 5 tools, 10 requests each (50), with what a right call holds.

Each request is (what a person asks, the tool that should be called, argument values that must
appear in the call: compared case-insensitively as substrings, booleans exactly).
"""

from __future__ import annotations

from typing import Any

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "set_light", "description": "Switch the light in a room on or off.",
                                      "parameters": {"type": "object", "properties": {
                                          "room": {"type": "string"}, "on": {"type": "boolean"}},
                                          "required": ["room", "on"]}}},
    {"type": "function", "function": {"name": "send_alert", "description": "Alert the site staff with a message.",
                                      "parameters": {"type": "object", "properties": {
                                          "message": {"type": "string"},
                                          "level": {"type": "string", "enum": ["info", "warning", "critical"]}},
                                          "required": ["message", "level"]}}},
    {"type": "function", "function": {"name": "read_sensor", "description": "Read a sensor's latest value.",
                                      "parameters": {"type": "object", "properties": {
                                          "sensor": {"type": "string"},
                                          "metric": {"type": "string", "enum": ["temperature", "humidity"]}},
                                          "required": ["sensor", "metric"]}}},
    {"type": "function", "function": {"name": "search_memory", "description": "Search what the box remembers.",
                                      "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                     "required": ["query"]}}},
]

REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("What's the weather in Paris right now?", "get_weather", {"city": "paris"}),
    ("Is it raining in London?", "get_weather", {"city": "london"}),
    ("How hot is it in Madrid today?", "get_weather", {"city": "madrid"}),
    ("Tell me the current weather for Tokyo.", "get_weather", {"city": "tokyo"}),
    ("Weather in Berlin please.", "get_weather", {"city": "berlin"}),
    ("Do I need a coat in Oslo right now?", "get_weather", {"city": "oslo"}),
    ("北京现在天气怎么样？", "get_weather", {"city": "北京"}),  # noqa: RUF001 - Chinese punctuation
    ("What are the weather conditions in Sydney?", "get_weather", {"city": "sydney"}),
    ("Check the weather in Rome.", "get_weather", {"city": "rome"}),
    ("Is it sunny in Lisbon?", "get_weather", {"city": "lisbon"}),
    ("Turn on the light in the kitchen.", "set_light", {"room": "kitchen", "on": True}),
    ("Switch off the lights in the garage.", "set_light", {"room": "garage", "on": False}),
    ("Please turn the office light on.", "set_light", {"room": "office", "on": True}),
    ("Lights off in the warehouse.", "set_light", {"room": "warehouse", "on": False}),
    ("Can you switch on the hallway light?", "set_light", {"room": "hallway", "on": True}),
    ("Turn off the light in the server room.", "set_light", {"room": "server", "on": False}),
    ("打开客厅的灯。", "set_light", {"room": "客厅", "on": True}),
    ("Switch the lobby light on.", "set_light", {"room": "lobby", "on": True}),
    ("Make the basement dark, turn its light off.", "set_light", {"room": "basement", "on": False}),
    ("Turn on the light in the loading dock.", "set_light", {"room": "dock", "on": True}),
    ("Alert the staff that the north gate is open, it is critical.", "send_alert", {"level": "critical"}),
    ("Send a warning to staff: the freezer door was left open.", "send_alert", {"level": "warning"}),
    ("Let everyone know, just for info, that the delivery arrived.", "send_alert", {"level": "info"}),
    ("Critical alert: smoke detected in the boiler room!", "send_alert", {"level": "critical"}),
    ("Warn the team that the water tank is nearly empty.", "send_alert", {"level": "warning"}),
    ("Send an info alert saying the backup finished.", "send_alert", {"level": "info"}),
    ("Raise a critical alert: the server rack is overheating.", "send_alert", {"level": "critical"}),
    ("Tell staff with a warning that the roof hatch is unlocked.", "send_alert", {"level": "warning"}),
    ("Inform the staff (info) that the parking barrier was serviced.", "send_alert", {"level": "info"}),
    ("Send a critical alert that the main power failed.", "send_alert", {"level": "critical"}),
    ("What's the temperature of sensor cold-room-1?", "read_sensor", {"sensor": "cold-room-1",
                                                                      "metric": "temperature"}),
    ("Read the humidity from sensor greenhouse-2.", "read_sensor", {"sensor": "greenhouse-2", "metric": "humidity"}),
    ("How humid is it at sensor basement-3?", "read_sensor", {"sensor": "basement-3", "metric": "humidity"}),
    ("Give me the temperature reading of boiler-1.", "read_sensor", {"sensor": "boiler-1", "metric": "temperature"}),
    ("Check sensor rack-7's temperature.", "read_sensor", {"sensor": "rack-7", "metric": "temperature"}),
    ("What humidity does sensor attic-4 report?", "read_sensor", {"sensor": "attic-4", "metric": "humidity"}),
    ("Temperature at sensor freezer-2?", "read_sensor", {"sensor": "freezer-2", "metric": "temperature"}),
    ("Read humidity on sensor lab-5.", "read_sensor", {"sensor": "lab-5", "metric": "humidity"}),
    ("What is the current temperature of sensor dock-9?", "read_sensor", {"sensor": "dock-9",
                                                                          "metric": "temperature"}),
    ("Show the humidity for sensor office-6.", "read_sensor", {"sensor": "office-6", "metric": "humidity"}),
    ("Search your memory for door events last night.", "search_memory", {"query": "door"}),
    ("Do you remember anything about the boiler?", "search_memory", {"query": "boiler"}),
    ("Find what you remember about the delivery schedule.", "search_memory", {"query": "delivery"}),
    ("Look up past notes on the north gate.", "search_memory", {"query": "gate"}),
    ("What do you remember about the freezer alarm?", "search_memory", {"query": "freezer"}),
    ("Search memory for visitors this week.", "search_memory", {"query": "visitor"}),
    ("Recall anything stored about the parking barrier.", "search_memory", {"query": "parking"}),
    ("Search what you know about the water tank.", "search_memory", {"query": "water"}),
    ("Find memories mentioning the roof hatch.", "search_memory", {"query": "roof"}),
    ("Look in your memory for the server rack temperature history.", "search_memory", {"query": "server"}),
]
