"""Which entity a person means: names as people type them, in English and Chinese.

- ``norm``: case, width, spaces, dashes and underscores do not matter ("Hall Fan" is "hall_fan").
- ``slug``: a name as an entity id's object part (ASCII; a Chinese name has none, and the id then
  comes from the config's unique_id or topic).
- ``match``: an exact name, id or alias (site.names) first; else the entities whose words cover the
  query's, most alike first (the action only breaks ties: a worse fit is never acted on because a
  better one does not take the action); one when it is clear, several for the caller to list.
"""

from __future__ import annotations

import re
import unicodedata

from appliance.protocol.site import EntityRow


def slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", folded)).strip("_")[:128]


def norm(text: str) -> str:
    """A name as people type it: case, width, spaces, dashes and underscores do not matter."""
    return re.sub(r"[\s_\-.·]+", "", unicodedata.normalize("NFKC", text).casefold())


STOPWORDS = frozenset({"the", "a", "an", "my", "our", "please", "of", "in", "on", "at", "to", "is", "now"})
CJK_STOP = "的把请将给"  # particles a name never needs ("一" is kept: 一号泵 is pump 1)
READ_FIRST = ("sensor", "binary_sensor", "climate", "event")  # a name read, not commanded, means these first
# What people call each kind of entity, besides its component's name (English and Chinese).
COMPONENT_WORDS = {
    "climate": "thermostat heating heater trv radiator hvac 温控 温控器 空调 暖气",
    "cover": "blind curtain shade shutter 窗帘",
    "lock": "door 锁 门锁", "light": "lamp 灯", "fan": "ventilator 风扇", "switch": "plug relay socket 开关 插座",
    "sensor": "reading 传感器", "binary_sensor": "contact 门磁", "button": "按钮", "device": "设备",
}


def _tokens(text: str) -> set[str]:
    """Words of Latin text; single characters and pairs of Han text (a Chinese name has no spaces)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = {w for w in re.findall(r"[a-z0-9]+", folded) if w not in STOPWORDS}
    han = "".join(ch for ch in folded if "\u4e00" <= ch <= "\u9fff" and ch not in CJK_STOP)
    words |= set(han) | {han[i:i + 2] for i in range(len(han) - 1)}
    return words


def _names_of(row: EntityRow, aliases: list[str]) -> list[str]:
    return [row.entity_id, row.entity_id.split(".", 1)[1], row.name, *aliases]


def match(query: str, rows: list[EntityRow], aliases: dict[str, list[str]], action: str | None = None) -> list[
        EntityRow]:
    """The entities ``query`` most likely means, best first (one when it is clear): an exact name, id or
    alias (one such is meant even if it does not take ``action``: its own refusal then says what it
    takes); else the rows whose words cover the query's, most alike first; among equally good fits
    those that take the action, or for a read the sensors. Several left: the caller lists them."""
    wanted = norm("".join(ch for ch in query if ch not in CJK_STOP))
    exact = [row for row in rows if wanted in {norm(n) for n in _names_of(row, aliases.get(row.entity_id, []))}]
    if len(exact) == 1:
        return exact
    if action is not None:  # several of that name: those that take the action, else all of them to list
        exact = [row for row in exact if action in row.actions] or exact
    if exact:
        return exact
    asked = _tokens(query)
    if not asked:
        return []
    scored: list[tuple[float, int, int, float, EntityRow]] = []
    for row in rows:
        named: set[str] = set()
        for name in _names_of(row, aliases.get(row.entity_id, [])):
            named |= _tokens(name.replace("_", " "))
        kind = _tokens(" ".join([row.component.replace("_", " "), COMPONENT_WORDS.get(row.component, ""),
                                 str(row.config.get("device_class") or "")]))
        have = named | kind | _tokens(row.area or "")
        covered = len(asked & have)
        if covered * 2 < len(asked) or covered == 0:
            continue
        # The name decides; the action (or, for a read, being a sensor) only breaks a tie. An entity
        # that fits better but does not take the action is still the one meant: its refusal says
        # what it takes, where a worse fit would act on the wrong device.
        preferred = int(action in row.actions if action is not None else row.component in READ_FIRST)
        # Words of its own names count before words of its kind or area ("plug" names the plug, not
        # every switch; "living room blind" names the blind, not the living room's relay).
        scored.append((covered / len(asked), len(asked & named), preferred, covered / len(asked | have), row))
    if not scored:
        return []
    scored.sort(key=lambda item: item[:4], reverse=True)
    top = [item for item in scored if item[:3] == scored[0][:3]]
    # Clearly the closest (its words barely go beyond the query's), or several that fit as well.
    if len(top) == 1 or top[0][3] >= 1.5 * top[1][3]:
        return [top[0][4]]
    return [item[4] for item in top]
