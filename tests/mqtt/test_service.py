"""The bridge with a real mosquitto, a real store and the real mqtt service process.

Each test has its own broker, so the bridge's persistent session is the test's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config import ApplianceConfig, load_config
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, SAMPLES
from appliance.protocol.devices import (
    MQTT_PUBLISH,
    STORE_DEVICES,
    STORE_QUARANTINE,
    DeviceQuery,
    Publish,
    QuarantineQuery,
)
from appliance.protocol.store import STORE_STATS
from tests.helpers import Publisher, eventually_async, serve, start_mosquitto, wait_ready, write_config

pytestmark = pytest.mark.slow


def bridged(config_file: Path, port: int, **mqtt: Any) -> ApplianceConfig:
    """The test config pointed at the test's broker (with these mqtt.* settings)."""
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"] = {"host": "127.0.0.1", "port": port, "client_id": "appliance-test",
                    "home_assistant": {"enabled": False}, **mqtt}
    write_config(config_file, data)
    return load_config(config_file)


def _set(config_file: Path, section: str, values: dict[str, Any]) -> None:
    data = yaml.safe_load(config_file.read_text())
    data[section] = values
    write_config(config_file, data)


async def memories(peers: Peers) -> int:
    return (await peers.store.call(STORE_STATS)).memories


async def _session_left_waiting(config_file: Path, peers: Peers, log: Path) -> None:
    """The bridge connects once (its persistent session and subscriptions now exist at the broker),
    then stops cleanly: the broker keeps the session and queues for it while the bridge is away."""
    bridge = serve(config_file, "mqtt", log=log)
    await wait_ready(peers.mqtt)
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(10)


async def test_events_quarantine_and_availability(config_file: Path, broker: int,
                                                  services: Callable[..., Awaitable[Peers]]) -> None:
    bridged(config_file, broker)
    peers = await services("store", "mqtt")
    device = Publisher(broker)
    try:
        device.publish("devices/door-1/availability", "online", retain=True)
        for i in range(3):
            device.publish("devices/door-1/events", json.dumps({"id": f"d1-{i}", "type": "door.open", "value": i}))
        device.publish("devices/boiler/state", "21.5")
        device.publish("devices/boiler/events", "not json at all")
        device.publish("devices/boiler/events", bytes(range(256)))
        device.publish("devices/boiler/events", b"[" * 50 + b"]" * 50)
        device.publish("devices/door-1/events", json.dumps({"id": "d1-0", "type": "door.open", "value": 0}))  # again
        await eventually_async(lambda: _quarantined(peers, 3), 15, "three messages quarantined")
        assert await memories(peers) == 4  # three door events (one redelivered id stored once) and one state
        page = await peers.store.call(STORE_DEVICES, DeviceQuery())
        rows = {d.device_id: d for d in page.items}
        assert rows["door-1"].online is True and rows["door-1"].event_count == 3
        assert rows["boiler"].online is None and rows["boiler"].last_payload == "21.5"
        quarantine = await peers.store.call(STORE_QUARANTINE, QuarantineQuery())
        assert {q.kind for q in quarantine.items} == {"not_json", "not_utf8", "too_deep"}
        assert "not json at all" in next(q.sample for q in quarantine.items if q.kind == "not_json")
        device.publish("devices/door-1/availability", "offline", retain=True)
        await eventually_async(lambda: _online(peers, "door-1", False), 10, "door-1 offline")
        health = await peers.mqtt.call(HEALTH)
        assert "4 stored, 1 duplicates, 3 quarantined, 0 dropped as configured" in health.detail, health.detail
        assert "broker dropped nothing" in health.detail or "no $SYS counter yet" in health.detail
        device.subscribe("site/alerts")
        await peers.mqtt.call(MQTT_PUBLISH, Publish(topic="site/alerts", payload={"text": "冷库报警"}))
        await eventually_async(lambda: _true(device.received), 10, "the published alert")
        assert device.received[0].payload == '{"text": "冷库报警"}'.encode()  # UTF-8, no \u escapes
    finally:
        device.close()


async def _true(value: object) -> bool:
    return bool(value)


async def _quarantined(peers: Peers, count: int) -> bool:
    return sum((await peers.store.call(STORE_QUARANTINE, QuarantineQuery())).counts.values()) >= count


async def _online(peers: Peers, device: str, online: bool) -> bool:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(prefix=device))
    return bool(page.items) and page.items[0].online is online


async def test_events_sent_while_the_bridge_is_away_arrive_when_it_returns(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    bridged(config_file, broker)
    peers = await services("store")
    await _session_left_waiting(config_file, peers, tmp_path / "mqtt.log")
    device = Publisher(broker)
    try:
        for i in range(100):
            device.publish("devices/meter-7/events", json.dumps({"id": i, "value": i * 1.5}))
    finally:
        device.close()
    assert await memories(peers) == 0
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
    try:
        await eventually_async(lambda: _count_is(peers, 100), 30, "the 100 queued events")
    finally:
        bridge.terminate()
        bridge.wait(10)


async def _count_is(peers: Peers, count: int) -> bool:
    return await memories(peers) == count


async def test_nothing_is_acknowledged_while_the_store_is_down(config_file: Path, broker: int, tmp_path: Path,
                                                              services: Callable[..., Awaitable[Peers]]) -> None:
    config = bridged(config_file, broker)
    peers = Peers(config)
    store = serve(config_file, "store", log=tmp_path / "store.log")
    await wait_ready(peers.store)
    await services("mqtt")
    store.terminate()
    store.wait(10)
    device = Publisher(broker)
    try:
        for i in range(50):
            device.publish("devices/pump-2/events", json.dumps({"id": i}))
    finally:
        device.close()
    await eventually_async(lambda: _degraded(peers, "store unavailable"), 15, "the bridge to say the store is down")
    store = serve(config_file, "store", log=tmp_path / "store.log")
    try:
        await wait_ready(peers.store)
        await eventually_async(lambda: _count_is(peers, 50), 30, "all 50 events once the store is back")
    finally:
        store.terminate()
        store.wait(10)
        await peers.close()


async def _degraded(peers: Peers, words: str) -> bool:
    health = await peers.mqtt.call(HEALTH)
    return health.state.value == "degraded" and words in health.detail


async def test_acknowledged_events_sent_while_the_bridge_is_down_are_all_stored(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """Issue 26's reproduction on the shipped broker settings: 30 devices publish 1,500 QoS 1 events, each
    acknowledged by the broker, while the bridge is stopped. mosquitto's default queue (1,000 messages
    a client) dropped 500 of them; config/mosquitto/appliance.conf limits the queue by bytes instead."""
    bridged(config_file, broker)
    peers = await services("store")
    await _session_left_waiting(config_file, peers, tmp_path / "mqtt.log")
    devices = [Publisher(broker, f"meter-{n}") for n in range(30)]
    try:
        sent = [devices[i % 30].client.publish(f"devices/meter-{i % 30}/events", json.dumps({"id": i, "kwh": i}),
                                               qos=1) for i in range(1500)]
        for info in sent:
            info.wait_for_publish(timeout=30)
        assert all(info.is_published() for info in sent)  # every one acknowledged by the broker
    finally:
        for device in devices:
            device.close()
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
    try:
        await eventually_async(lambda: _count_at_least(peers, 1500), 60, "all 1,500 acknowledged events stored")
        await asyncio.sleep(1)
        assert await memories(peers) == 1500
        health = await peers.mqtt.call(HEALTH)
        assert "warning" not in health.detail, health.detail
    finally:
        bridge.terminate()
        bridge.wait(10)


async def test_a_backlog_past_the_receive_window_is_drained_after_a_reconnect(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """Found by make soak: with more acknowledged events queued for the bridge than its receive window,
    the broker sent the backlog first and the SUBACK behind it; the link had stopped reading at the
    window, the subscribe timed out, and every reconnect met the same backlog, so nothing was stored
    again. Here a window of 100 (mqtt.batch_max 5) and 1,500 events queued while the bridge is away."""
    bridged(config_file, broker, batch_max=5)
    peers = await services("store")
    log = await _backlog_then_bridge(config_file, broker, peers, tmp_path / "mqtt.log", [
        ("devices/meter-1/events", json.dumps({"id": i, "kwh": i})) for i in range(1500)])
    assert "within 10 s" not in log


async def _backlog_then_bridge(config_file: Path, broker: int, peers: Peers, log: Path,
                               messages: list[tuple[str, str]]) -> str:
    """``messages`` published (QoS 1, all acknowledged) while the bridge is away, then the bridge
    started: returns its log once every one of them is stored."""
    await _session_left_waiting(config_file, peers, log)
    device = Publisher(broker, "backlog-device")
    try:
        sent = [device.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in sent:
            info.wait_for_publish(timeout=30)
    finally:
        device.close()
    bridge = serve(config_file, "mqtt", log=log)
    try:
        await eventually_async(lambda: _count_at_least(peers, len(messages)), 60,
                               f"the {len(messages):,} queued events stored")
        return await asyncio.to_thread(log.read_text)
    finally:
        bridge.terminate()
        bridge.wait(10)


async def test_a_burst_from_one_device_is_stored_marked_flood_and_the_others_are_not_slowed(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """2,000 QoS 1 events in about a second from one device (a backlog flushed after an outage), on the
    default rate (50/s, burst 200): all stored, those past the rate marked flood and counted."""
    config = bridged(config_file, broker)
    peers = await services("store", "mqtt")
    flood, neighbour = Publisher(broker, "flood"), Publisher(broker, "neighbour")
    try:
        sent = [flood.client.publish("devices/backlog/events", json.dumps({"id": i, "t": i}), qos=1)
                for i in range(2000)]
        for i in range(5):
            neighbour.publish("devices/calm/events", json.dumps({"id": i}))
        for info in sent:
            info.wait_for_publish(timeout=30)
        await eventually_async(lambda: _count_at_least(peers, 2005), 60, "all 2,005 events stored")
        page = await peers.store.call(STORE_DEVICES, DeviceQuery())
        counts = {d.device_id: d.event_count for d in page.items}
        assert counts == {"backlog": 2000, "calm": 5}
        flooded = await asyncio.to_thread(_flood_marked, config.memory_dir / "memory.db")
        assert flooded == {"backlog": flooded["backlog"]} and 1000 <= flooded["backlog"] <= 1800, flooded
        health = await peers.mqtt.call(HEALTH)
        assert f"{flooded['backlog']} past a device's rate stored as flood (most: backlog" in health.detail
        assert "0 dropped as configured" in health.detail
    finally:
        flood.close()
        neighbour.close()


def _flood_marked(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT source, count(*) FROM memories WHERE json_extract(metadata, '$.flood') "
                               "GROUP BY source").fetchall())


async def test_a_device_configured_to_drop_its_flood_is_dropped_and_counted(
        config_file: Path, broker: int, services: Callable[..., Awaitable[Peers]]) -> None:
    bridged(config_file, broker, device_rate_per_s=5, device_burst=10, drop_flood_devices=["noisy"])
    peers = await services("store", "mqtt")
    flood, neighbour = Publisher(broker, "flood"), Publisher(broker, "neighbour")
    try:
        for i in range(300):
            flood.client.publish("devices/noisy/events", json.dumps({"id": i}), qos=1)
        for i in range(300):
            neighbour.client.publish("devices/eager/events", json.dumps({"id": i}), qos=1)
        await eventually_async(lambda: _throttled(peers, 280), 20, "the flood counted")
        await eventually_async(lambda: _count_at_least(peers, 300 + 10), 20, "the other device's events")
        page = await peers.store.call(STORE_DEVICES, DeviceQuery())
        counts = {d.device_id: d.event_count for d in page.items}
        assert counts["eager"] == 300 and 10 <= counts["noisy"] <= 20  # eager is over its rate too: stored
    finally:
        flood.close()
        neighbour.close()


async def _throttled(peers: Peers, at_least: int) -> bool:
    counts = (await peers.store.call(STORE_QUARANTINE, QuarantineQuery())).counts
    return counts.get("rate_limited", 0) >= at_least


async def test_health_warns_when_the_broker_drops_what_it_acknowledged(
        config_file: Path, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """A foreign broker with mosquitto's default-sized queue (here 10, to be quick): its $SYS counter
    of dropped messages shows in the bridge's health as a warning."""
    process, port = start_mosquitto(tmp_path / "small-broker", "max_queued_messages 10", "sys_interval 1")
    try:
        bridged(config_file, port)
        peers = await services("store")
        await _session_left_waiting(config_file, peers, tmp_path / "mqtt.log")
        device = Publisher(port)
        try:
            for i in range(50):
                device.publish("devices/meter-1/events", json.dumps({"id": i}))
        finally:
            device.close()
        bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log")
        try:
            await wait_ready(peers.mqtt)
            await eventually_async(lambda: _health_says(peers, "warning: the broker dropped"), 20,
                                   "the broker's drops in health")
            assert await memories(peers) < 50
        finally:
            bridge.terminate()
            bridge.wait(10)
    finally:
        process.terminate()
        process.wait(5)


async def _health_says(peers: Peers, words: str) -> bool:
    return words in (await peers.mqtt.call(HEALTH)).detail


async def test_fuzzed_messages_are_quarantined_and_the_bridge_stays_up(
        config_file: Path, broker: int, services: Callable[..., Awaitable[Peers]]) -> None:
    import random

    bridged(config_file, broker, max_payload_bytes=4096, allowed_topics=["devices/+/events"],
            topics=["devices/#"])
    peers = await services("store", "mqtt")
    rng = random.Random(7)
    device = Publisher(broker)
    hostile = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(60)]
    hostile += [b"x" * 5000, b'{"a":' * 100 + b"1" + b"}" * 100, b'{"ts": {"$gt": ""}}', b'{"id": [1]}',
                b'"\\ud800"', b"\xed\xa0\x80", b"1e999", b'{"type": "<script>"}']
    try:
        for payload in hostile:
            device.publish("devices/fuzz/events", payload)
        for topic in ("devices/fuzz/events/extra", "devices/bad id/events", "devices/x/commands", "devices/x"):
            device.publish(topic, b"{}")
        device.publish("devices/fuzz/events", b'{"id": "after", "value": 1}')
        await eventually_async(lambda: _stored_text(peers, '"after"'), 20, "a good event after the fuzz")
        health = await peers.mqtt.call(HEALTH)
        assert health.state.value == "ready"
        counts = (await peers.store.call(STORE_QUARANTINE, QuarantineQuery())).counts
        assert sum(counts.values()) >= 60 and {"topic", "too_large", "too_deep"} <= set(counts)
    finally:
        device.close()


async def _stored_text(peers: Peers, words: str) -> bool:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(prefix="fuzz"))
    return bool(page.items) and words in page.items[0].last_payload


async def test_ten_thousand_events_across_several_kills_are_all_stored_once(
        config_file: Path, broker: int, tmp_path: Path, config: ApplianceConfig,
        services: Callable[..., Awaitable[Peers]], capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL while the bridge works through a backlog: the broker redelivers what was not
    acknowledged, and the store's dedupe keys drop what was committed but not yet acknowledged."""
    bridged(config_file, broker, device_rate_per_s=100_000, device_burst=1_000_000)
    peers = await services("store")
    log = tmp_path / "mqtt.log"
    bridge = serve(config_file, "mqtt", log=log)
    await wait_ready(peers.mqtt)
    device = Publisher(broker)
    kills = 0
    try:
        for i in range(10_000):
            # Half carry their own id, half are told apart by their content only.
            body = {"id": f"m{i}", "value": i} if i % 2 else {"seq": i, "value": i}
            device.client.publish(f"devices/sensor-{i % 20}/events", json.dumps(body), qos=1)
        for stored_at_least in (1500, 3500, 5500, 7500, 9000):
            await eventually_async(lambda n=stored_at_least: _count_at_least(peers, n), 120,  # type: ignore[misc]
                                   f"{stored_at_least} events stored")
            bridge.send_signal(signal.SIGKILL)
            bridge.wait(10)
            kills += 1
            bridge = serve(config_file, "mqtt", log=log)
            await wait_ready(peers.mqtt)
        await eventually_async(lambda: _count_at_least(peers, 10_000), 120, "all 10,000 events", every_s=0.5)
        await asyncio.sleep(2)  # anything still redelivered now must be recognised as a duplicate
        stats = await peers.store.call(STORE_STATS)
        distinct = await asyncio.to_thread(_distinct_and_total, config.memory_dir / "memory.db")
        assert stats.memories == 10_000 and distinct == (10_000, 10_000), distinct
        outcomes = await _event_outcomes(peers)
        assert outcomes["stored"] == 10_000
        with capsys.disabled():
            print(f"\nkill test: 10,000 QoS 1 events published, bridge SIGKILLed {kills} times mid-backlog; "
                  f"{stats.memories} stored, {distinct[0]} distinct; {outcomes['duplicate']:.0f} redeliveries "
                  "of committed events recognised as duplicates")
    finally:
        device.close()
        bridge.terminate()
        bridge.wait(10)


async def _event_outcomes(peers: Peers) -> dict[str, float]:
    families = (await peers.store.call(SAMPLES)).families
    samples = next(f.samples for f in families if f.name == "appliance_store_device_events_total")
    return {s.labels["outcome"]: s.value for s in samples}


async def _count_at_least(peers: Peers, count: int) -> bool:
    return await memories(peers) >= count


def _distinct_and_total(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        distinct, total = db.execute("select count(distinct text), count(*) from memories").fetchone()
    return int(distinct), int(total)


async def test_a_backlog_of_64_kb_payloads_is_stored_in_requests_the_store_takes(
        config_file: Path, broker: int, tmp_path: Path, services: Callable[..., Awaitable[Peers]]) -> None:
    """200 payloads of nearly 64 KB (the most mqtt.max_payload_bytes takes) queued while the bridge is
    away reach it at once: 12 MB, more than one store request may carry (4 MB). Before the batch was
    split by bytes, the store refused it as one frame and every device's ingest stopped behind it."""
    bridged(config_file, broker)
    peers = await services("store")
    log = await _backlog_then_bridge(config_file, broker, peers, tmp_path / "mqtt.log", [
        ("devices/camera-3/events", json.dumps({"id": i, "type": "blob", "data": "x" * 65_000})) for i in range(200)])
    assert "exceeds" not in log


async def test_an_event_larger_than_a_store_request_is_quarantined_not_retried_for_ever(
        config_file: Path, broker: int, services: Callable[..., Awaitable[Peers]]) -> None:
    """With ipc.max_frame_bytes at 64 KB, a 64 KB payload cannot reach the store in any request: it is
    quarantined as too_large (and acknowledged), and the events after it are stored."""
    bridged(config_file, broker)
    _set(config_file, "ipc", {"max_frame_bytes": 65_536})
    peers = await services("store", "mqtt")
    device = Publisher(broker)
    try:
        device.publish("devices/camera-4/events", json.dumps({"id": "big", "data": "x" * 65_400}))
        for i in range(3):
            device.publish("devices/camera-4/events", json.dumps({"id": i, "value": i}))
        await eventually_async(lambda: _count_is(peers, 3), 30, "the three small events after the large one")
        page = await peers.store.call(STORE_QUARANTINE, QuarantineQuery())
        assert [item.kind for item in page.items] == ["too_large"], page
        assert "ipc.max_frame_bytes" in page.items[0].reason and page.items[0].device == "camera-4"
    finally:
        device.close()
