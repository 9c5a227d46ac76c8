"""Which tools a goal is offered: from the caller's capabilities, at most MAX_TOOLS, chosen by words.

A tool is a command's tool face the caller may call on the agent surface (control/capabilities.py):
its name, one line, its argument schema (derived from the request model) and its effect. The goal's
words (English or Chinese) pick the families it needs; a family's tools come in the order below; the
entity tools come first whenever the goal names something on the site. Deterministic: the same goal
and role always get the same tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_TOOLS = 8
# Families of tools, each with the words (lower-case, English and Chinese) that ask for it.
FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("get_entity", "set_entity", "list_entities"),
     ("turn", "switch", "light", "lamp", "fan", "lock", "unlock", "door", "window", "blind", "cover", "open",
      "close", "temperature", "thermostat", "heat", "cool", "freezer", "fridge", "sensor", "humid", "on", "off",
      "set", "start", "stop", "level", "valve", "pump", "plug", "relay", "mode", "degree", "°", "开", "关",
      "灯", "风扇", "锁", "门", "窗", "温度", "湿度", "冰箱", "冷柜", "空调", "暖", "阀", "泵", "插座", "设置", "启动",
      "停止", "传感器", "状态", "模式", "度")),
    (("search_memory", "remember"),
     ("remember", "note", "know", "said", "told", "where", "when", "what", "who", "which", "manual", "procedure",
      "last", "history", "记", "哪", "什么", "谁", "何时", "手册", "说明", "上次")),
    (("notify",), ("tell", "notify", "alert", "message", "send", "warn", "inform", "let", "staff", "通知", "告诉",
                   "提醒", "报警", "发送", "告知")),
    (("create_schedule", "list_schedules"), ("every", "daily", "each", "schedule", "tomorrow", "weekday",
                                             "morning", "evening", "night", "hour", "minute", "cron", "每", "定时",
                                             "明天", "早上", "晚上", "计划", "小时", "分钟")),
    (("list_devices", "get_device", "send_device_command"), ("device", "online", "offline", "设备", "在线",
                                                             "离线")),
    (("box_health",), ("health", "running", "service", "box", "ok", "健康", "服务", "运行")),
    (("list_tasks", "get_task"), ("task", "job", "任务")),
)
DEFAULT = ("get_entity", "set_entity", "search_memory", "notify")


@dataclass(frozen=True)
class OfferedTool:
    name: str
    command: str
    description: str
    parameters: dict[str, Any]
    effect: str


def offered(capabilities: dict[str, Any]) -> dict[str, OfferedTool]:
    """Every tool the caller may call, by tool name (from a capabilities reply, as JSON)."""
    found = {}
    for face in capabilities.get("commands", []):
        tool = face.get("tool")
        if tool is not None:
            found[tool["name"]] = OfferedTool(tool["name"], face["name"], tool["description"], tool["parameters"],
                                              face["effect"])
    return found


def choose(goal: str, available: dict[str, OfferedTool]) -> list[OfferedTool]:
    """At most MAX_TOOLS of ``available`` for ``goal``: the families its words ask for, then the defaults."""
    text = goal.lower()
    words = set(re.findall(r"[a-z°]+", text))
    wanted: list[str] = []
    for names, cues in FAMILIES:
        if any((cue in words) if cue.isascii() and cue.isalpha() else (cue in text) for cue in cues):
            wanted += names
    wanted += DEFAULT
    chosen: list[OfferedTool] = []
    for name in wanted:
        if name in available and all(tool.name != name for tool in chosen):
            chosen.append(available[name])
        if len(chosen) == MAX_TOOLS:
            break
    return chosen
