"""The site section: reading the site's devices from Home Assistant MQTT discovery (docs/site.md)."""

from __future__ import annotations

import fnmatch

from pydantic import Field, field_validator

from appliance.config.agent import RoleName
from appliance.config.base import Section


class EntityRule(Section):
    """Who may change entities whose id matches ``match`` (shell-style: ``lock.*``), or that nobody
    may through the box. The first rule that matches decides."""

    match: str = Field(min_length=1, max_length=200, pattern=r"^[a-z_*?\[\]]+\.[a-z0-9_*?\[\]]+$")
    role: RoleName = Field("operator", description="the least role that may use entities.set on them")
    read_only: bool = Field(False, description="the box never commands them (they are still read)")


class SiteConfig(Section):
    enabled: bool = Field(True, description="read Home Assistant MQTT discovery from the site's broker")
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    meta_topic: str = Field("devices/+/meta", min_length=1, max_length=256,
                            description="where devices of the box's own convention describe themselves (retained)")
    areas: dict[str, str] = Field(default_factory=dict, max_length=10_000,
                                  description="an entity's area, by entity id (wins over the device's suggested area)")
    names: dict[str, list[str]] = Field(default_factory=dict, max_length=10_000,
                                        description="more names staff use for an entity, by entity id "
                                                    "(e.g. its name in Chinese)")
    rules: list[EntityRule] = Field(default_factory=lambda: [EntityRule(match="lock.*", role="admin")],
                                    max_length=256, description="who may command what (default: locks need an admin)")
    confirm_s: float = Field(5.0, ge=0, le=60, description="how long entities.set waits for the new state")
    history_days: float = Field(30.0, gt=0, le=3650, description="entity state history kept this long")
    max_entities: int = Field(20_000, ge=1, le=200_000, description="entities the box keeps in all")
    max_per_source: int = Field(5_000, ge=1, le=200_000,
                                description="entities one bridge (its origin, else its topics' first level) "
                                            "may announce")

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for entity_id, names in value.items():
            if "." not in entity_id or len(names) > 16 or not all(0 < len(name) <= 128 for name in names):
                raise ValueError(f"{entity_id!r}: an entity id and at most 16 names of 1-128 characters")
        return value

    @field_validator("areas")
    @classmethod
    def _areas(cls, value: dict[str, str]) -> dict[str, str]:
        for entity_id, area in value.items():
            if "." not in entity_id or not 0 < len(area) <= 128:
                raise ValueError(f"{entity_id!r}: an entity id (component.object_id) and an area of 1-128 characters")
        return value

    def rule_for(self, entity_id: str) -> EntityRule | None:
        return next((rule for rule in self.rules if fnmatch.fnmatchcase(entity_id, rule.match)), None)
