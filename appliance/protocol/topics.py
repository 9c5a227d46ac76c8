"""MQTT topic filters, matched the broker's way: shared by the mqtt service (which topics are whose)
and the agent (which device events fire an mqtt: trigger)."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=64)
def topic_filter(filters: tuple[str, ...]) -> re.Pattern[str]:
    """MQTT topic filters as one compiled pattern for fullmatch: ``+`` one level, ``#`` the level
    before it and everything below (checked for every message, so compiled once)."""
    def level(part: str) -> str:
        return "[^/]*" if part == "+" else re.escape(part)

    alternatives = []
    for pattern in filters:
        levels = pattern.split("/")
        if levels[-1] == "#":
            head = "/".join(level(part) for part in levels[:-1])
            alternatives.append(f"{head}(?:/.*)?" if head else ".*")
        else:
            alternatives.append("/".join(level(part) for part in levels))
    return re.compile("|".join(f"(?:{a})" for a in alternatives) or "(?!)", re.DOTALL)


def topic_matches(topic: str, pattern: str) -> bool:
    return topic_filter((pattern,)).fullmatch(topic) is not None
