"""mqtt/link.py against a real mosquitto: what the link holds unacknowledged stays bounded in bytes."""

from __future__ import annotations

import asyncio

import pytest

from appliance.mqtt.link import Incoming, MqttLink, Settings
from tests.helpers import Publisher, eventually_async

pytestmark = pytest.mark.slow

PAYLOAD = 60_000
BUDGET = 1 << 20  # the smallest mqtt.receive_max_bytes allows


async def test_unacknowledged_payload_bytes_stop_the_reading_until_acks_free_room(broker: int) -> None:
    """100 payloads of 60 KB (6 MB) for a link allowed 1 MiB: it holds 17 or 18 of them (the budget,
    plus the one whose read crossed it) until it acknowledges, then gets the rest."""
    link = MqttLink(Settings(host="127.0.0.1", port=broker, client_id="held-bytes", session_expiry_s=300,
                             receive_maximum=10_000, receive_max_bytes=BUDGET))
    await link.connect()
    await link.subscribe(["devices/+/events"])
    device = Publisher(broker)
    held: list[Incoming] = []

    async def received_at_least(n: int) -> bool:
        with_more = asyncio.ensure_future(link.take())
        done, _ = await asyncio.wait({with_more}, timeout=0.2)
        if done:
            held.extend(with_more.result())
        else:
            with_more.cancel()
        return len(held) >= n

    try:
        for i in range(100):
            device.client.publish("devices/cam/events", bytes([i]) * PAYLOAD, qos=1)
        await eventually_async(lambda: received_at_least(BUDGET // PAYLOAD), 30, "the link to fill its budget")
        await received_at_least(100)  # a moment more: nothing past the budget may come in meanwhile
        await received_at_least(100)
        assert BUDGET // PAYLOAD <= len(held) <= BUDGET // PAYLOAD + 1, len(held)
        acked = 0
        while len(held) < 100:
            for message in held[acked:]:
                message.ack()
            acked = len(held)
            await eventually_async(lambda n=acked + 1: received_at_least(n), 30, "more after the acks")
        assert [m.payload[0] for m in held] == list(range(100))
    finally:
        device.close()
        await link.close()
