"""The outbox's courier: what must go upstream leaves the box, in order, whenever the network is up.

Items wait in the store's outbox table (they survive restarts of this service and of the box).
For each configured target (mqtt.uplink.mqtt: a broker upstream; mqtt.uplink.webhook: an HTTPS
endpoint), the courier takes the oldest undelivered item, delivers it, and only then the next:
order is kept even across failures. A failure is retried after an exponential backoff with
jitter (uplink.retry_min_s doubling up to retry_max_s). While the network watch says the box is
offline, nothing is attempted; when the default route comes back, delivery resumes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from typing import Literal

import aiohttp

from appliance.config import UplinkConfig
from appliance.ipc.client import IpcClient
from appliance.ipc.errors import IpcError, NotFound
from appliance.mqtt.link import LinkDown, MqttLink, Settings
from appliance.mqtt.network import NetworkWatch
from appliance.phrases import Phrase
from appliance.protocol.common import Store
from appliance.protocol.devices import (
    STORE_OUTBOX_DONE,
    STORE_OUTBOX_NEXT,
    OutboxItem,
    OutboxNext,
    OutboxResult,
)

IDLE_S = 1.0  # how often an idle courier looks for new items (while online)
Target = Literal["mqtt", "webhook"]


class Courier:
    def __init__(self, config: UplinkConfig, store: IpcClient[Store], network: NetworkWatch, client_id: str,
                 log: logging.Logger) -> None:
        self.config = config
        self.store = store
        self.network = network
        self.client_id = client_id
        self.log = log
        self.delivered = 0
        self.problem: Phrase | None = None
        self._link: MqttLink | None = None

    @property
    def targets(self) -> list[Target]:
        targets: list[Target] = []
        if self.config.mqtt is not None:
            targets.append("mqtt")
        if self.config.webhook is not None:
            targets.append("webhook")
        return targets

    async def run(self) -> None:
        if not self.targets:
            return
        await asyncio.gather(*(self._deliver_forever(t) for t in self.targets))

    async def _deliver_forever(self, target: Target) -> None:
        await self.network.looked.wait()
        while True:
            if not self.network.online:
                # Offline is not a failure of the uplink (health says the network is down); a
                # connection made before is dropped, so the first try online starts afresh.
                self.problem = None
                if self._link is not None:
                    await self._link.close()
                    self._link = None
                await self._until_network_changes()
                continue
            try:
                item = await self.store.call(STORE_OUTBOX_NEXT, OutboxNext(target=target))
            except NotFound:
                await self._until_network_changes(IDLE_S)
                continue
            except IpcError as exc:
                self.problem = Phrase("mqtt.outbox_store_unavailable", why=str(exc))
                await asyncio.sleep(IDLE_S)
                continue
            await self._attempt(target, item)

    async def _until_network_changes(self, timeout_s: float | None = None) -> None:
        self.network.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.network.changed.wait()

    async def _attempt(self, target: Target, item: OutboxItem) -> None:
        try:
            if target == "mqtt":
                await self._to_broker(item)
            else:
                await self._to_webhook(item)
        except (LinkDown, aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError, DeliveryRefused) as exc:
            delay = min(self.config.retry_max_s, self.config.retry_min_s * 2 ** min(item.attempts, 20))
            delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
            error = f"{exc.__class__.__name__}: {exc}"[:500]
            self.problem = Phrase("mqtt.uplink_problem", target=target, why=error)
            self.log.warning("outbox item %d to %s not delivered (%s); next try in %.0f s", item.id, target, error,
                             delay, extra={"OUTBOX_ID": item.id})
            await self._done(OutboxResult(id=item.id, delivered=False, error=error, retry_at=time.time() + delay))
            return
        self.delivered += 1
        self.problem = None
        await self._done(OutboxResult(id=item.id, delivered=True))

    async def _done(self, result: OutboxResult) -> None:
        while True:
            try:
                await self.store.call(STORE_OUTBOX_DONE, result)
                return
            except IpcError as exc:  # delivered but not yet recorded: record it before anything else
                self.problem = Phrase("mqtt.outbox_store_unavailable", why=str(exc))
                await asyncio.sleep(IDLE_S)

    async def _to_broker(self, item: OutboxItem) -> None:
        upstream = self.config.mqtt
        assert upstream is not None
        if self._link is None or self._link.lost.is_set():
            self._link = MqttLink(Settings(
                host=upstream.host, port=upstream.port, client_id=upstream.client_id or f"{self.client_id}-uplink",
                username=upstream.username, tls=upstream.tls,
                password=upstream.password.get_secret_value() if upstream.password else None, manual_ack=False))
            await self._link.connect()
        body = json.dumps({"id": item.id, "created_at": item.created_at, "payload": item.payload}).encode()
        await self._link.publish(f"{upstream.topic_prefix}/{item.topic}", body, qos=1)

    async def _to_webhook(self, item: OutboxItem) -> None:
        hook = self.config.webhook
        assert hook is not None
        context = ssl.create_default_context(cafile=str(hook.ca_file) if hook.ca_file else None)
        headers = {name: value.get_secret_value() for name, value in hook.headers.items()}
        body = {"id": item.id, "topic": item.topic, "created_at": item.created_at, "payload": item.payload}
        timeout = aiohttp.ClientTimeout(total=hook.timeout_s)
        async with (aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(hook.url, json=body, headers=headers,
                                 ssl=context if hook.url.startswith("https") else True) as reply):
            if not 200 <= reply.status < 300:
                raise DeliveryRefused(f"the webhook answered HTTP {reply.status}")

    async def close(self) -> None:
        if self._link is not None:
            await self._link.close()


class DeliveryRefused(Exception):
    """The target answered, but did not take the item."""
