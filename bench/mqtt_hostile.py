"""make bench-mqtt (second part): hostile publishers at full scale, on the box's default limits.

One mosquitto with the shipped settings (config/mosquitto/appliance.conf), the real store and mqtt
service on their defaults (50 events/s per device, burst 200, 64 KB payloads at most). For
HOSTILE_S seconds one publisher misbehaves (each on a fresh broker and box, one after the other):

- flood: one device sends 100,000 QoS 1 events in the minute (1,667/s; mosquitto_pub -l, paced);
- big: one device sends payloads of BIG_BYTES (just under mqtt.max_payload_bytes) as fast as its
  PUBACKs come back (paho-mqtt, QoS 1);
- deaf: one client sends QoS 1 PUBLISH packets on a raw socket and never reads a byte (its PUBACKs
  pile up at the broker until its socket buffers fill).

A calm probe device publishes one event every PROBE_EVERY_S throughout (bench/mqtt.py's probes:
publish -> found by a text search in the store), first for QUIET_S seconds with nothing else, then
during the hostile minute: its latency and its lost events in the two phases are the "none starving
the others" measure. Afterwards: how long until everything acknowledged is stored, and what the
bridge's health says (the broker's dropped messages among them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH
from appliance.protocol.devices import STORE_DEVICES, DeviceQuery
from bench.mqtt import LOST_AFTER_S, PROBE_EVERY_S, free_port, probes, ready, store_and_bridge, summary
from bench.soak import start_broker

HERE = Path(__file__).parent
HOSTILE_S = 60.0
QUIET_S = 20.0
FLOOD_EVENTS = 100_000
BIG_BYTES = 64 * 1024 - 200  # the JSON around it stays under mqtt.max_payload_bytes (65,536)
DRAIN_LIMIT_S = 240.0
STALL_S = 30.0


class Big(threading.Thread):
    """A device sending BIG_BYTES payloads at QoS 1 as fast as the broker acknowledges them."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="big", protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop, self.sent, self.acked = stop, 0, 0

    def run(self) -> None:
        blob = "x" * BIG_BYTES
        while not self.stop.is_set():
            info = self.client.publish("devices/big/events", f'{{"id": {self.sent}, "type": "blob", "data": "{blob}"}}',
                                       qos=1)
            self.sent += 1
            info.wait_for_publish(timeout=60)
            self.acked += info.is_published()
        self.client.loop_stop()
        self.client.disconnect()


def _packet(kind: int, body: bytes) -> bytes:
    """An MQTT 3.1.1 control packet: fixed header (type and flags, remaining length), then the body."""
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([kind]) + encoded + body


def _string(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def deaf(port: int, stop: threading.Event, result: dict[str, Any]) -> None:
    """CONNECT, then QoS 1 PUBLISHes until told to stop, never reading: how many went out, and whether
    the broker closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_packet(0x10, _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _string("deaf")))
    sock.settimeout(1.0)
    sent, blocked_at = 0, None
    try:
        while not stop.is_set():
            payload = f'{{"id": {sent}, "type": "deaf", "value": 1}}'.encode()
            packet_id = sent % 65535 + 1
            try:
                sock.sendall(_packet(0x32, _string("devices/deaf/events") + struct.pack(">H", packet_id) + payload))
                sent += 1
            except TimeoutError:
                blocked_at = blocked_at or time.monotonic()
    except OSError as exc:
        result["closed"] = f"{type(exc).__name__} after {sent:,} publishes"
    finally:
        sock.close()
    result["sent"] = sent
    result["blocked"] = blocked_at is not None


def flood(port: int, events: int, seconds: float) -> subprocess.Popen[bytes]:
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    process = subprocess.Popen([tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-M", "1000", "-l", "-i", "flood",
                                "-t", "devices/flood/events"], stdin=subprocess.PIPE)

    def feed() -> None:
        assert process.stdin is not None
        started, sent = time.monotonic(), 0
        while sent < events:
            due = min(events, int(events * (time.monotonic() - started) / seconds) + 1)
            process.stdin.write(b"".join(b'{"id": "f-%d", "type": "reading", "value": %d}\n' % (i, i % 97)
                                         for i in range(sent, due)))
            process.stdin.flush()
            sent = due
            time.sleep(0.01)
        process.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    return process


async def counts(peers: Peers) -> dict[str, int]:
    page = await peers.store.call(STORE_DEVICES, DeviceQuery(limit=100))
    return {d.device_id: d.event_count for d in page.items}


async def measure(config_file: Path, port: int, hostile: str) -> dict[str, Any]:
    peers = Peers(load_config(config_file))
    try:
        for name in ("store", "mqtt"):
            await ready(peers, name)
        quiet_stop, quiet_lost = asyncio.Event(), list[str]()
        quiet = asyncio.create_task(probes(port, quiet_stop, peers, quiet_lost))
        await asyncio.sleep(QUIET_S)
        quiet_stop.set()
        quiet_ms = await quiet

        stop, hostile_stop, hostile_lost = threading.Event(), asyncio.Event(), list[str]()
        deaf_result: dict[str, Any] = {}
        big = Big(port, stop) if hostile == "big" else None
        started = time.monotonic()
        flooding = flood(port, FLOOD_EVENTS, HOSTILE_S) if hostile == "flood" else None
        if big is not None:
            big.start()
        if hostile == "deaf":
            threading.Thread(target=deaf, args=(port, stop, deaf_result), daemon=True).start()
        probing = asyncio.create_task(probes(port, hostile_stop, peers, hostile_lost))
        await asyncio.sleep(HOSTILE_S)
        stop.set()
        hostile_stop.set()
        if flooding is not None:
            await asyncio.to_thread(flooding.wait, 300)
        if big is not None:
            await asyncio.to_thread(big.join, 120)
        hostile_ms = await probing
        want = {"flood": FLOOD_EVENTS if flooding is not None and flooding.returncode == 0 else 0,
                "big": big.acked if big is not None else 0}
        # Until all that was acknowledged is stored, or nothing more arrives for STALL_S (the broker
        # dropped the rest: its health says how many), or DRAIN_LIMIT_S.
        now, grew_at = await counts(peers), time.monotonic()
        while any(now.get(d, 0) < n for d, n in want.items()) and time.monotonic() - started < DRAIN_LIMIT_S \
                and time.monotonic() - grew_at < STALL_S:
            await asyncio.sleep(0.5)
            before, now = now, await counts(peers)
            if now != before:
                grew_at = time.monotonic()
        return {"hostile": hostile, "quiet": summary(1, 1, quiet_ms), "quiet_lost": len(quiet_lost),
                "loud": summary(1, 1, hostile_ms), "loud_lost": len(hostile_lost), "counts": now,
                "drained_s": time.monotonic() - started, "big_sent": big.sent if big else 0,
                "big_acked": big.acked if big else 0, "deaf": deaf_result,
                "mqtt": (await peers.mqtt.call(HEALTH)).detail}
    finally:
        await peers.close()


def run(hostile: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    port = free_port()
    broker = start_broker(folder / "broker", port)
    time.sleep(0.5)
    try:
        with store_and_bridge(folder, port, "error") as config_file:  # the box's default limits
            return asyncio.run(measure(config_file, port, hostile))
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


WHAT = {"flood": f"{FLOOD_EVENTS:,} events in {HOSTILE_S:.0f} s from one device",
        "big": f"{BIG_BYTES:,}-byte payloads as fast as their PUBACKs return",
        "deaf": "QoS 1 publishes on a raw socket that never reads"}


def write(results: list[dict[str, Any]]) -> None:
    lines = [f"# Hostile MQTT publishers at full scale ({time.strftime('%Y-%m-%d')})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, Python "
             f"{platform.python_version()}; broker, publishers, box on the same machine. Command: `make bench-mqtt` "
             "(bench/mqtt_hostile.py), one run. The shipped broker settings (config/mosquitto/appliance.conf) and the "
             "box's default limits (50 events/s per device, burst 200, payloads up to 64 KB). Each hostile publisher "
             f"runs alone for {HOSTILE_S:.0f} s on a fresh broker and box, after {QUIET_S:.0f} s with nothing else. A "
             f"calm device publishes an event every {PROBE_EVERY_S * 1000:.0f} ms throughout: latency is publish -> "
             f"found by a text search in the store; lost = not searchable {LOST_AFTER_S:.0f} s after it was sent.", "",
             "| hostile publisher | calm device, quiet: p50 / p95 / max ms, lost | calm device, hostile: p50 / p95 / "
             "max ms, lost | hostile sent / acknowledged / stored | storing ended after |",
             "|---|---|---|---|---:|"]
    for r in results:
        q, h, c = r["quiet"], r["loud"], r["counts"]
        if r["hostile"] == "flood":
            volume = f"{FLOOD_EVENTS:,} / {FLOOD_EVENTS:,} / {c.get('flood', 0):,}"
        elif r["hostile"] == "big":
            volume = f"{r['big_sent']:,} / {r['big_acked']:,} / {c.get('big', 0):,}"
        else:
            volume = (f"{r['deaf'].get('sent', 0):,} written / never read / {c.get('deaf', 0):,}"
                      + (" (socket blocked)" if r["deaf"].get("blocked") else ""))
        lines.append(f"| {WHAT[r['hostile']]} | {q['p50']:.0f} / {q['p95']:.0f} / {q['max']:.0f}, {r['quiet_lost']} | "
                     f"{h['p50']:.0f} / {h['p95']:.0f} / {h['max']:.0f}, {r['loud_lost']} | {volume} | "
                     f"{r['drained_s']:.0f} s |")
    lines += ["", "How to read it: every device's events reach the box through one subscription queue at the broker, "
              "in the order they came, and mosquitto acknowledges a publisher on receipt, not when the box has the "
              "event. A device that floods at a rate the box can store (the first row) delays no one: flood marking "
              "keeps its events cheap. One that publishes faster than the box can store queues its backlog ahead of "
              "everyone's events: the calm device's wait grows to the length of that backlog (latencies here are cut "
              f"at {LOST_AFTER_S:.0f} s, where a probe counts as lost), and once the queue passes max_queued_bytes "
              "(512 MiB shipped) the broker drops acknowledged messages of every device, which the bridge's health "
              "reports. mosquitto 2.0 has no per-client limit on incoming publishes; the box bounds its own memory "
              "(mqtt.receive_max_bytes) and its requests, not the broker's queue.", ""]
    lines += [f"After {r['hostile']}, the bridge's health: {r['mqtt']}" for r in results] + [""]
    out = HERE / "results" / "mqtt-hostile-vm.md"
    out.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(WHAT), action="append", help="run this hostile publisher only")
    chosen = parser.parse_args().only or ["flood", "big", "deaf"]
    write([run(hostile) for hostile in chosen])
