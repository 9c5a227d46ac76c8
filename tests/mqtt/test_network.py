"""Network awareness and the outbox, in network namespaces made by the test.

Two namespaces joined by a veth pair: ``box`` (10.77.0.1, default route via 10.77.0.2) where the
mqtt service and the site's broker run, and ``upstream`` (10.77.0.2) with the upstream broker and
a subscriber standing for whoever reads what the box sends. Pulling the box's link is the cable
unplugged; the store runs outside both (it needs no network: IPC is a Unix socket).
Needs root (network namespaces); CI runs as root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config import load_config
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.errors import IpcError
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, SAMPLES
from tests.helpers import (
    eventually,
    eventually_async,
    in_netns,
    issue_certificates,
    serve,
    start_mosquitto,
    wait_ready,
    write_config,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")]

AGENT = Caller("agent", Role.OPERATOR, "agent")


class Namespaces:
    """``box`` and ``upstream`` with a veth pair between them; removed (with the pair) at the end.

    pyroute2's synchronous API runs its own event loop: async tests call these in a thread."""

    def __init__(self) -> None:
        from pyroute2 import NetNS, netns

        suffix = uuid.uuid4().hex[:6]
        self.box, self.upstream = f"box-{suffix}", f"up-{suffix}"
        netns.create(self.box)
        netns.create(self.upstream)
        with NetNS(self.box) as ns:
            ns.link("add", ifname="veth-box", kind="veth", peer={"ifname": "veth-up", "net_ns_fd": self.upstream})
        self._configure(self.upstream, "veth-up", "10.77.0.2")
        self._configure(self.box, "veth-box", "10.77.0.1")
        self.add_default_route()

    @staticmethod
    def _configure(name: str, interface: str, address: str) -> None:
        from pyroute2 import NetNS

        with NetNS(name) as ns:
            index = ns.link_lookup(ifname=interface)[0]
            ns.addr("add", index=index, address=address, prefixlen=24)
            ns.link("set", index=index, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def set_box_link(self, up: bool) -> None:
        from pyroute2 import NetNS

        with NetNS(self.box) as ns:
            ns.link("set", index=ns.link_lookup(ifname="veth-box")[0], state="up" if up else "down")

    def add_default_route(self) -> None:
        """What a DHCP client does once the link is back (a link going down takes its routes with it)."""
        from pyroute2 import NetNS

        with NetNS(self.box) as ns:
            ns.route("add", dst="0.0.0.0/0", gateway="10.77.0.2")

    def remove(self) -> None:
        from pyroute2 import netns

        for name in (self.box, self.upstream):
            netns.remove(name)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    yield made
    made.remove()


class Subscriber:
    """mosquitto_sub in the upstream namespace, writing each message it gets to a file."""

    def __init__(self, namespace: str, port: int, topic: str, out: Path) -> None:
        tool = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        self.out = out
        self.process = subprocess.Popen([*in_netns(namespace), tool, "-h", "10.77.0.2", "-p", str(port), "-q", "1",
                                         "-t", topic, "-i", "reader", "-c", "-F", "%p"], stdout=out.open("wb"))

    def payloads(self) -> list[Any]:
        return [json.loads(line)["payload"] for line in self.out.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


async def enqueue(dispatcher: Dispatcher, n: int) -> None:
    await dispatcher.call("outbox.enqueue", {"target": "mqtt", "topic": "alerts", "payload": {"n": n}}, AGENT)


async def health_detail(peers: Peers) -> str:
    try:
        return (await peers.mqtt.call(HEALTH, timeout_s=1.0)).detail
    except IpcError:
        return ""


async def outbox_gauge(peers: Peers) -> float:
    families = (await peers.mqtt.call(SAMPLES)).families
    return next(f.samples[0].value for f in families if f.name == "appliance_mqtt_outbox_pending")


@pytest.fixture
def upstream(namespaces: Namespaces, tmp_path: Path, config_file: Path) -> Iterator[Subscriber]:
    """The site's broker in the box, the upstream broker beyond the veth, the config pointing at
    both, and a reader of what arrives upstream."""
    site, site_port = start_mosquitto(tmp_path / "site", netns=namespaces.box)
    broker, port = start_mosquitto(tmp_path / "upstream", host="10.77.0.2", netns=namespaces.upstream)
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"].update(port=site_port, home_assistant={"enabled": True, "node_id": "netbox", "state_interval_s": 1},
                        uplink={"mqtt": {"host": "10.77.0.2", "port": port, "tls": {"enabled": False},
                                         "topic_prefix": "site-7"}, "retry_min_s": 0.2, "retry_max_s": 1})
    write_config(config_file, data)
    reader = Subscriber(namespaces.upstream, port, "site-7/#", tmp_path / "upstream.out")
    yield reader
    reader.close()
    for process in (site, broker):
        process.terminate()
        process.wait(5)


async def test_the_outbox_holds_while_offline_and_flushes_in_order_across_a_restart(
        config_file: Path, tmp_path: Path, namespaces: Namespaces, upstream: Subscriber,
        services: Callable[..., Awaitable[Peers]], capsys: pytest.CaptureFixture[str]) -> None:
    reader = upstream
    peers = await services("store")
    log = tmp_path / "mqtt.log"
    bridge = serve(config_file, "mqtt", log=log, netns=namespaces.box)
    dispatcher = Dispatcher(default_table(), peers, load_config(config_file), logging.getLogger("test"))
    try:
        await wait_ready(peers.mqtt)
        for n in range(3):
            await enqueue(dispatcher, n)
        eventually(lambda: len(reader.payloads()) == 3, 20, "the first three items upstream")

        await asyncio.to_thread(namespaces.set_box_link, up=False)  # the cable is pulled
        await eventually_async(lambda: _says(peers, "network down"), 10, "the bridge to notice")
        for n in range(3, 10):
            await enqueue(dispatcher, n)
        await eventually_async(lambda: _says(peers, "outbox 7 waiting"), 10, "seven items held")
        assert await outbox_gauge(peers) == 7 and len(reader.payloads()) == 3
        held = await health_detail(peers)

        bridge.send_signal(signal.SIGTERM)  # restarted while offline: nothing is lost
        bridge.wait(10)
        bridge = serve(config_file, "mqtt", log=log, netns=namespaces.box)
        await wait_ready(peers.mqtt)
        await enqueue(dispatcher, 10)
        await eventually_async(lambda: _says(peers, "network down"), 10, "still offline after the restart")
        await eventually_async(lambda: _says(peers, "outbox 8 waiting"), 10, "eight items held")
        assert len(reader.payloads()) == 3

        await asyncio.to_thread(namespaces.set_box_link, up=True)  # the cable is back,
        await asyncio.to_thread(namespaces.add_default_route)  # and DHCP gives the route back
        eventually(lambda: len(reader.payloads()) >= 11, 30, "everything flushed upstream")
        assert reader.payloads() == [{"n": n} for n in range(11)]  # in order, each once
        await eventually_async(lambda: _says(peers, "outbox 0 waiting"), 10, "an empty outbox")
        with capsys.disabled():
            print(f"\nnetns test: 3 delivered online; link down -> 7 held (health: {held!r}); "
                  f"restart while offline, 1 more queued; link up -> upstream got {len(reader.payloads())} "
                  "items in order 0..10, none twice")
    finally:
        if bridge.poll() is None:
            bridge.terminate()
            bridge.wait(10)


async def _says(peers: Peers, words: str) -> bool:
    return words in await health_detail(peers)


def test_the_network_watch_follows_the_link_and_the_route(namespaces: Namespaces, tmp_path: Path) -> None:
    """NetworkWatch itself, in the box namespace: each change is an event, seen at once."""
    script = tmp_path / "watch.py"
    script.write_text(
        "import asyncio, logging, sys\n"
        "from appliance.mqtt.network import NetworkWatch\n"
        "async def main():\n"
        "    watch = NetworkWatch(logging.getLogger('w'), lambda online, why: print(online, why, flush=True))\n"
        "    await watch.run()\n"
        "asyncio.run(main())\n")
    out = tmp_path / "watch.out"
    process = subprocess.Popen([*in_netns(namespaces.box), sys.executable, str(script)], stdout=out.open("wb"),
                               cwd=Path(__file__).parents[2])
    try:
        eventually(lambda: _last_line(out).startswith("True"), 10, "online (a veth is up once both ends are)")
        namespaces.set_box_link(up=False)
        eventually(lambda: _last_line(out).startswith("False"), 10, "offline when the link goes down")
        namespaces.set_box_link(up=True)
        eventually(lambda: "no default route" in _last_line(out), 10, "a link without its route is not online")
        namespaces.add_default_route()
        eventually(lambda: _last_line(out).startswith("True"), 10, "online with the route back")
    finally:
        process.terminate()
        process.wait(5)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _last_line(path: Path) -> str:
    lines = _lines(path)
    return lines[-1] if lines else ""


WEBHOOK = """
import json, ssl, sys
from aiohttp import web
out, cert, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seen = {"n": 0}
async def take(request):
    seen["n"] += 1
    if seen["n"] <= 2:  # the first two tries are refused: the item must be retried, and nothing overtakes it
        return web.Response(status=503)
    if request.headers.get("Authorization") != "Bearer hook-secret":
        return web.Response(status=401)
    with open(out, "a") as f:
        f.write(json.dumps(await request.json()) + "\\n")
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/hook", take)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
web.run_app(app, host="10.77.0.2", port=port, ssl_context=context, print=lambda *_: print("running", flush=True))
"""


@pytest.fixture
def webhook(namespaces: Namespaces, tmp_path: Path, config_file: Path) -> Iterator[Path]:
    """An HTTPS webhook in the upstream namespace that refuses its first two requests."""
    certs = issue_certificates(tmp_path / "pki", "hook", address="10.77.0.2")
    site, site_port = start_mosquitto(tmp_path / "site", netns=namespaces.box)
    script, out, started = tmp_path / "hook.py", tmp_path / "hook.out", tmp_path / "hook.log"
    script.write_text(WEBHOOK)
    out.touch()
    server = subprocess.Popen([*in_netns(namespaces.upstream), sys.executable, str(script), str(out),
                               str(certs["hook.crt"]), str(certs["hook.key"]), "8443"], stdout=started.open("wb"))
    eventually(lambda: b"running" in started.read_bytes(), 20, "the webhook server")
    data = yaml.safe_load(config_file.read_text())
    data["mqtt"].update(port=site_port, uplink={
        "webhook": {"url": "https://10.77.0.2:8443/hook", "ca_file": str(certs["ca"]),
                    "headers": {"Authorization": "Bearer hook-secret"}}, "retry_min_s": 0.2, "retry_max_s": 1})
    write_config(config_file, data)
    yield out
    for process in (server, site):
        process.terminate()
        process.wait(5)


async def test_the_webhook_gets_every_item_in_order_through_refusals(
        config_file: Path, tmp_path: Path, namespaces: Namespaces, webhook: Path,
        services: Callable[..., Awaitable[Peers]]) -> None:
    peers = await services("store")
    bridge = serve(config_file, "mqtt", log=tmp_path / "mqtt.log", netns=namespaces.box)
    dispatcher = Dispatcher(default_table(), peers, load_config(config_file), logging.getLogger("test"))
    try:
        await wait_ready(peers.mqtt)
        for n in range(5):
            await dispatcher.call("outbox.enqueue", {"target": "webhook", "topic": "door", "payload": {"n": n}},
                                  AGENT)
        eventually(lambda: len(_lines(webhook)) >= 5, 30, "five items at the webhook")
        bodies = [json.loads(line) for line in _lines(webhook)]
        assert [b["payload"] for b in bodies] == [{"n": n} for n in range(5)]
        assert all(b["topic"] == "door" and b["created_at"] > 0 for b in bodies)
        await eventually_async(lambda: _says(peers, "outbox 0 waiting"), 10, "an empty outbox")
        log = "\n".join(_lines(tmp_path / "mqtt.log"))
        assert log.count("not delivered (DeliveryRefused: the webhook answered HTTP 503)") == 2
    finally:
        bridge.terminate()
        bridge.wait(10)
