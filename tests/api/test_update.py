"""POST /api/v1/system/update and GET /api/v1/system/update, in-process against a real store.

Off the image there is no slot: the api refuses with 409. The image's files (its release file, its
slot size and its trusted keys) are pointed at test copies to check the api's side as the box runs
it: the role is checked before a byte is stored, a bad bundle is refused with the reason and
deleted, a good one is handed over to the root installer (request.json). The installer itself, and
the reboot, run in qemu (image/check.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.config import ApplianceConfig
from appliance.control import update
from appliance.control.caller import Caller, Role
from appliance.control.dispatcher import Dispatcher
from appliance.control.errors import CommandError
from appliance.ipc.peers import Peers
from tests.helpers import api_client, bearer, bundle_parts, make_bundle

pytestmark = pytest.mark.slow
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
async def api(config: ApplianceConfig, services: Callable[..., Awaitable[Peers]]
              ) -> AsyncIterator[tuple[TestClient, Dispatcher]]:  # type: ignore[type-arg]
    peers = await services("store")
    async with api_client(config, peers) as pair:
        yield pair


@pytest.fixture
def on_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    image = tmp_path / "image"
    (image / "keys").mkdir(parents=True)
    (image / "appliance-release").write_text("VERSION=0.1.0\n")
    (image / "image.json").write_text(json.dumps({"slot_mib": 1}))
    (image / "keys" / "update.pub").write_bytes(KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setattr(update, "RELEASE", image / "appliance-release")
    monkeypatch.setattr(update, "IMAGE_INFO", image / "image.json")
    monkeypatch.setattr(update, "KEYS", image / "keys")
    return image


def uploads(config: ApplianceConfig) -> list[Path]:
    folder = update.uploads_folder(config.paths.state_dir)
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_only_an_admin_may_upload_and_nothing_is_stored_for_anyone_else(
        api: tuple[TestClient, Dispatcher], config: ApplianceConfig, tmp_path: Path) -> None:  # type: ignore[type-arg]
    client, dispatcher = api
    body = make_bundle(bundle_parts(tmp_path), tmp_path / "b.bundle", KEY).read_bytes()
    anonymous = await client.post("/api/v1/system/update", data=body)
    assert anonymous.status == 401
    operator = await client.post("/api/v1/system/update", data=body, headers=bearer(dispatcher, Role.OPERATOR))
    assert operator.status == 403
    assert uploads(config) == []
    status = await client.get("/api/v1/system/update", headers=bearer(dispatcher, Role.VIEWER))
    assert status.status == 200 and (await status.json())["state"] == "idle"


async def test_off_the_image_an_update_is_refused_and_its_upload_deleted(
        api: tuple[TestClient, Dispatcher], config: ApplianceConfig, tmp_path: Path) -> None:  # type: ignore[type-arg]
    client, dispatcher = api
    body = make_bundle(bundle_parts(tmp_path), tmp_path / "b.bundle", KEY).read_bytes()
    reply = await client.post("/api/v1/system/update", data=body, headers=bearer(dispatcher, Role.ADMIN))
    assert reply.status == 409 and "only on the appliance image" in (await reply.json())["error"]["message"]
    assert uploads(config) == []


async def test_a_bad_bundle_is_refused_with_its_reason_and_a_good_one_handed_to_the_installer(
        api: tuple[TestClient, Dispatcher], config: ApplianceConfig, tmp_path: Path,
        on_the_image: Path) -> None:  # type: ignore[type-arg]
    client, dispatcher = api
    admin = bearer(dispatcher, Role.ADMIN, "ada")
    parts = bundle_parts(tmp_path)
    cases = [
        (make_bundle(parts, tmp_path / "other-key.bundle", Ed25519PrivateKey.generate()), "bad signature"),
        (make_bundle(parts, tmp_path / "arm.bundle", KEY, arch="aarch64"), "for 'aarch64'"),
        (make_bundle(parts, tmp_path / "old.bundle", KEY, version="0.0.1"), "not newer"),
        (make_bundle(parts, tmp_path / "big.bundle", KEY, raw_size=2 * 2**20), "the slot holds"),
    ]
    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(make_bundle(parts, tmp_path / "whole.bundle", KEY).read_bytes()[:4000])
    cases.append((truncated, "truncated"))
    for path, reason in cases:
        reply = await client.post("/api/v1/system/update", data=path.read_bytes(), headers=admin)
        error = (await reply.json())["error"]
        assert reply.status == 400 and reason in error["message"] and error["field"] == "bundle", (path.name, error)
        assert uploads(config) == []
    good = await client.post("/api/v1/system/update", data=make_bundle(parts, tmp_path / "good.bundle", KEY)
                             .read_bytes(), headers=admin)
    assert good.status == 202, await good.text()
    assert (await good.json())["state"] == "requested"
    request = json.loads((update.update_folder(config.paths.state_dir) / "request.json").read_text())
    assert request["version"] == "0.2.0" and request["requested_by"] == "ada"
    assert [Path(request["bundle"])] == uploads(config)
    again = await client.post("/api/v1/system/update", data=b"anything", headers=admin)
    assert again.status == 409 and "already" in (await again.json())["error"]["message"]
    # Only REST offers the command, and only with what it received itself: no surface names a file.
    with pytest.raises(CommandError) as refused:
        await dispatcher.call("system.update", {"bundle": "/etc/passwd"}, Caller("ada", Role.ADMIN, "websocket"))
    assert refused.value.code == "not_found"
    assert (await dispatcher.call("system.update_status", {}, Caller("ada", Role.ADMIN, "cli"))).state == "requested"


async def test_health_reports_the_update_state_on_the_image_only(
        api: tuple[TestClient, Dispatcher], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    client, dispatcher = api
    viewer = bearer(dispatcher, Role.VIEWER)
    off = await (await client.get("/api/v1/health", headers=viewer)).json()
    assert off["update"] is None
    monkeypatch.setenv("APPLIANCE_SLOT", "b")  # what the image's loader entry sets for every service
    on = await (await client.get("/api/v1/health", headers=viewer)).json()
    assert on["update"]["running_slot"] == "b" and on["update"]["state"] == "idle"
    anonymous = await (await client.get("/api/v1/health")).json()
    assert "update" not in anonymous
