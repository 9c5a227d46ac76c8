"""The soak's load processes (bench/soak.py starts them; each its own process, so their CPU is theirs).

``devices PORT OUT --devices 50 --rate 1000``: 50 paho-mqtt clients (persistent sessions, QoS 1),
each publishing ``devices/soak-NN/events`` with a JSON payload ``{"id": "soak-NN-SEQ", ...}`` at
rate/devices per second, and every BURST_EVERY_S one device flushing BURST events at once (what a
device does after an outage). paho resends what the broker did not acknowledge when it reconnects
(the broker is restarted during the soak). On SIGTERM it stops publishing, waits up to 60 s for
the acknowledgements still due, and writes OUT: the ids the broker acknowledged, the ids sent, and
acknowledgements per second.

``sockets URL TOKEN OUT --clients 50``: 50 WebSocket /control clients subscribed to the devices,
tasks and metrics topics, reconnecting when the api goes away (it is killed during the soak). On SIGTERM it
writes OUT: frames per second, reconnects, and the delivery latency of event frames (receive time
minus the frame's ``at``) per minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BURST = 500
BURST_EVERY_S = 20.0


def acknowledged(info: Any) -> bool:
    """Whether the broker acknowledged the message. Not ``is_published()``: it raises for a message
    published while disconnected (rc NO_CONN), though paho keeps that message, sends it on the next
    connection and marks it published when its PUBACK comes."""
    with info._condition:
        return bool(info._published)


def devices(port: int, out: Path, count: int, rate: float) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()
    sent: list[str] = []
    waiting: list[tuple[str, Any]] = []  # published, not yet acknowledged (pruned as acks come)
    acked: list[str] = []
    acked_at: Counter[int] = Counter()
    clients = []
    for n in range(count):
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-device-{n:02d}", clean_session=False)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(0.2, 2.0)

        def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _props: Any) -> None:
            with lock:
                acked_at[int(time.time())] += 1

        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        clients.append(client)

    def publish(n: int, seq: int) -> None:
        ident = f"soak-{n:02d}-{seq}"
        payload = json.dumps({"id": ident, "type": "reading", "value": seq % 97, "unit": "W"})
        info = clients[n].publish(f"devices/soak-{n:02d}/events", payload, qos=1)
        with lock:
            sent.append(ident)
            waiting.append((ident, info))

    seqs = [0] * count
    interval = count / rate  # each device publishes once per interval
    started = time.monotonic()
    next_burst = started + BURST_EVERY_S
    tick = 0
    while not stop.is_set():
        due = started + tick * interval / count
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        n = tick % count
        publish(n, seqs[n])
        seqs[n] += 1
        tick += 1
        if tick % 1000 == 0:
            with lock:
                acked.extend(ident for ident, info in waiting if acknowledged(info))
                waiting[:] = [(ident, info) for ident, info in waiting if not acknowledged(info)]
        if time.monotonic() >= next_burst:
            bursting = random.randrange(count)
            for _ in range(BURST):
                publish(bursting, seqs[bursting])
                seqs[bursting] += 1
            next_burst += BURST_EVERY_S
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(acknowledged(info) for _, info in waiting):
        time.sleep(0.5)
    acked.extend(ident for ident, info in waiting if acknowledged(info))
    for client in clients:
        client.loop_stop()
        client.disconnect()
    out.write_text(json.dumps({"sent": sent, "acked": acked, "acked_per_s": sorted(acked_at.items())}))


async def sockets(url: str, token: str, count: int) -> dict[str, Any]:
    import aiohttp

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    frames: Counter[int] = Counter()
    latency: dict[int, list[float]] = defaultdict(list)
    reconnects = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal reconnects
        while not stop.is_set():
            try:
                async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"},
                                              heartbeat=None) as ws:
                    await ws.send_json({"type": "subscribe", "topics": ["devices", "tasks", "metrics"]})
                    async for message in ws:
                        if stop.is_set() or message.type != aiohttp.WSMsgType.TEXT:
                            break
                        now = time.time()
                        frames[int(now)] += 1
                        frame = json.loads(message.data)
                        if frame.get("type") == "event" and isinstance(frame.get("at"), (int, float)):
                            latency[int(now // 60)].append((now - frame["at"]) * 1000)
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            if not stop.is_set():
                reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5 + random.random())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"frames_per_s": sorted(frames.items()), "reconnects": reconnects,
            "latency_by_minute": {str(k): v for k, v in sorted(latency.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    dev = roles.add_parser("devices")
    dev.add_argument("port", type=int)
    dev.add_argument("out", type=Path)
    dev.add_argument("--devices", type=int, default=50)
    dev.add_argument("--rate", type=float, default=1000.0)
    ws = roles.add_parser("sockets")
    ws.add_argument("url")
    ws.add_argument("token")
    ws.add_argument("out", type=Path)
    ws.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    if args.role == "devices":
        devices(args.port, args.out, args.devices, args.rate)
    else:
        args.out.write_text(json.dumps(asyncio.run(sockets(args.url, args.token, args.clients))))


if __name__ == "__main__":
    main()
