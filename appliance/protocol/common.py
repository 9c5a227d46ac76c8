"""What every endpoint shares: the message base, the typed `Endpoint`, and health.

An `Endpoint` names one method of one service together with its request and response types,
so a server's handler and a client's call are checked against the same declaration. The
service is a type parameter too: an `IpcClient[Store]` accepts only `Endpoint[Store, ...]`,
so sending a store endpoint to the engine is a type error (mypy), not a run-time not_found.
HEALTH is served by every service: it is declared for all of them, and because the service
parameter is contravariant it fits a client of any one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from appliance.phrases import Phrase, PhraseWire

ServiceName = Literal["store", "engine", "mqtt", "agent", "api"]
Store = Literal["store"]
Engine = Literal["engine"]
Mqtt = Literal["mqtt"]
Agent = Literal["agent"]
Api = Literal["api"]

MAX_TEXT_CHARS = 64 * 1024
MAX_PROMPT_CHARS = 256 * 1024


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Svc = TypeVar("Svc", bound=ServiceName, contravariant=True)


@dataclass(frozen=True)
class Endpoint(Generic[Svc, Req, Resp]):
    """One IPC method: served at ``/v1/<method>`` on the socket of ``service`` ("*": every one)."""

    service: ServiceName | Literal["*"]
    method: str
    request: type[Req]
    response: type[Resp]
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/v1/{self.method}"


class Empty(Message):
    pass


class Changed(Message):
    """How many things a write changed."""

    changed: int


class ServiceState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    DOWN = "down"  # reported by a peer that cannot reach the service at all


class ServiceHealth(Message):
    name: ServiceName
    state: ServiceState
    version: str
    uptime_s: float
    pid: int | None = None
    detail: str = ""
    # The detail's parts by code, for the page to say in its reader's language; None when a part
    # has only English words (the page then shows ``detail``).
    detail_phrases: list[PhraseWire] | None = None

    def extended(self, *parts: str | Phrase) -> ServiceHealth:
        """This health with more parts of the detail after the ones it has ("; " between them)."""
        parts = tuple(part for part in parts if str(part))
        if not parts:
            return self
        phrased = self.detail_phrases is not None and all(isinstance(part, Phrase) for part in parts)
        return self.model_copy(update={
            "detail": "; ".join([*([self.detail] if self.detail else []), *map(str, parts)]),
            "detail_phrases": [*(self.detail_phrases or []), *(part.wire() for part in parts
                                                                if isinstance(part, Phrase))] if phrased else None})


def _finite(vector: list[float]) -> list[float]:
    for i, value in enumerate(vector):
        if not math.isfinite(value):
            raise ValueError(f"element {i} is {value}: vectors must be finite")
    return vector


Vector = Annotated[list[float], Field(min_length=1, max_length=4096), AfterValidator(_finite)]
# One text in a list: errors name its index ("texts.3: String should have at most ...").
BoundedText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]

# Tags and conversation ids end up in SQL parameters, topics and logs: keep them plain words.
# A pattern in the schema (not only a check in code), so clients see the rule in the spec.
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,63}$"
Tag = Annotated[str, Field(pattern=PLAIN_NAME, description="1-64 letters, digits and ._:/@-")]
ConversationId = Annotated[str, Field(pattern=PLAIN_NAME, description="1-64 letters, digits and ._:/@-")]

MetricKind = Literal["counter", "gauge", "histogram"]


class MetricSample(Message):
    suffix: str = Field("", description="_bucket, _sum or _count for a histogram's series")
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class MetricFamily(Message):
    name: str
    kind: MetricKind
    help: str
    samples: list[MetricSample]


class MetricFamilies(Message):
    families: list[MetricFamily]


HEALTH: Endpoint[ServiceName, Empty, ServiceHealth] = Endpoint("*", "health", Empty, ServiceHealth)
SAMPLES: Endpoint[ServiceName, Empty, MetricFamilies] = Endpoint("*", "samples", Empty, MetricFamilies)

S = TypeVar("S", bound=ServiceName)


def endpoint(service: S, method: str, request: type[Req], response: type[Resp], *,
             streaming: bool = False) -> Endpoint[S, Req, Resp]:
    """An endpoint of ``service``, typed so only a client of that service can call it."""
    return Endpoint(service, method, request, response, streaming)
