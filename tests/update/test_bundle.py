"""The update bundle and its installation into a slot, on files: a file stands for the slot's
partition and a folder for the ESP (the same code writes /dev/disk/by-partlabel/... on the box;
image/check.py runs it there, in qemu)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.update.bundle import BundleError, Checked, inspect
from appliance.update.slots import Layout, entry_text, install
from tests.helpers import bundle_parts, make_bundle

SLOT_BYTES = 256 * 1024
KEY = Ed25519PrivateKey.generate()


def trusted(key: Ed25519PrivateKey = KEY) -> dict[str, Ed25519PublicKey]:
    return {"update.pub": key.public_key()}


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Path]:
    return bundle_parts(tmp_path)


def make(parts: dict[str, Path], out: Path, *, key: Ed25519PrivateKey = KEY, **options: Any) -> Path:
    return make_bundle(parts, out, key, **options)


def check(path: Path, **overrides: object) -> Checked:
    options: dict[str, object] = {"trusted": trusted(), "running_version": "0.1.0", "arch": "x86_64",
                                  "slot_bytes": SLOT_BYTES}
    options.update(overrides)
    return inspect(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def box(tmp_path: Path) -> Layout:
    esp = tmp_path / "esp"
    (esp / "loader" / "entries").mkdir(parents=True)
    (esp / "loader" / "entries" / "appliance-a.conf").write_text(entry_text("a", "0.1.0"))
    devices = {}
    for slot in "ab":
        devices[slot] = tmp_path / f"root-{slot}"
        devices[slot].write_bytes(b"\xee" * SLOT_BYTES)
    return Layout(esp=esp, devices=devices, running="a")


def test_a_good_bundle_is_checked_then_written_to_the_other_slot_with_a_counted_entry(
        parts: dict[str, Path], tmp_path: Path, box: Layout) -> None:
    checked = check(make(parts, tmp_path / "good.bundle"))
    assert checked.manifest.version == "0.2.0" and checked.key_name == "update.pub"
    seen: list[int] = []
    entry = install(checked, box, lambda done, total, what: seen.append(done))
    assert entry.name == "appliance-b+3.conf"
    assert "version 0.2.0" in entry.read_text() and "appliance.slot=b" in entry.read_text()
    root = parts["rootfs.ext4"].read_bytes()
    assert box.devices["b"].read_bytes()[:len(root)] == root
    assert (box.esp / "b" / "vmlinuz").read_bytes() == parts["vmlinuz"].read_bytes()
    assert (box.esp / "b" / "initrd").read_bytes() == parts["initrd"].read_bytes()
    assert seen and seen[-1] == len(root)
    assert box.entries() == {"a": (box.esp / "loader/entries/appliance-a.conf", None), "b": (entry, 3)}
    assert box.devices["a"].read_bytes() == b"\xee" * SLOT_BYTES  # the running slot untouched


def data_offset(path: Path, member: str) -> int:
    with tarfile.open(path) as tar:
        return tar.getmember(member).offset_data


def tamper(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("case", "expected"), [
    ("another key", "bad signature"),
    ("unsigned", "bad signature"),
    ("payload altered", "sha256"),
    ("truncated", "truncated"),
    ("another arch", "for 'aarch64'"),
    ("older", "not newer than the running 0.1.0"),
    ("same version", "not newer"),
    ("larger than the slot", "the slot holds"),
    ("not a tar", "not a bundle"),
    ("members reordered", "in that order"),
    ("manifest not json", "manifest.json"),
    ("manifest with an unknown field", "manifest.json: surprise"),
    ("no trusted key", "trusts no update key"),
])
def test_a_bad_bundle_is_refused_before_anything_is_written(
        case: str, expected: str, parts: dict[str, Path], tmp_path: Path, box: Layout) -> None:
    path = tmp_path / "bad.bundle"
    options: dict[str, object] = {}
    if case == "another key":
        make(parts, path, key=Ed25519PrivateKey.generate())
    elif case == "unsigned":
        make(parts, path)
        rewrite(path, {"manifest.sig": b"\0" * 64})
    elif case == "payload altered":
        tamper(make(parts, path), data_offset(path, "initrd") + 10)
    elif case == "truncated":
        make(parts, path)
        path.write_bytes(path.read_bytes()[:data_offset(path, "initrd") + 100])
    elif case == "another arch":
        make(parts, path, arch="aarch64")
    elif case == "older":
        make(parts, path, version="0.0.9")
    elif case == "same version":
        make(parts, path, version="0.1.0")
    elif case == "larger than the slot":
        make(parts, path, raw_size=SLOT_BYTES + 1)
    elif case == "not a tar":
        path.write_bytes(os.urandom(20000))
    elif case == "members reordered":
        make(parts, path)
        with tarfile.open(path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        with tarfile.open(path, "w:") as tar:
            for member, data in [members[0], members[1], members[3], members[2], members[4]]:
                tar.addfile(member, io.BytesIO(data))
    elif case == "manifest not json":
        make(parts, path)
        resign(path, b"{not json")
    elif case == "manifest with an unknown field":
        make(parts, path)
        with tarfile.open(path) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        resign(path, json.dumps({**manifest, "surprise": 1}).encode())
    elif case == "no trusted key":
        make(parts, path)
        options["trusted"] = {}
    before = {p: p.read_bytes() for p in box.devices.values()}
    with pytest.raises(BundleError, match=expected):
        install(check(path, **options), box)
    assert {p: p.read_bytes() for p in box.devices.values()} == before
    assert sorted(p.name for p in (box.esp / "loader" / "entries").iterdir()) == ["appliance-a.conf"]


def test_an_older_bundle_installs_when_downgrades_are_allowed(parts: dict[str, Path], tmp_path: Path,
                                                               box: Layout) -> None:
    checked = check(make(parts, tmp_path / "old.bundle", version="0.0.9"), allow_downgrade=True)
    assert install(checked, box).name == "appliance-b+3.conf"


def rewrite(path: Path, replace: dict[str, bytes]) -> None:
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            data = replace.get(member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def resign(path: Path, manifest: bytes) -> None:
    """A manifest the attacker controls, signed with the trusted key: the parser must refuse it."""
    rewrite(path, {"manifest.json": manifest, "manifest.sig": KEY.sign(manifest)})


def test_a_payload_changed_after_the_check_wipes_the_slot_and_offers_nothing(
        parts: dict[str, Path], tmp_path: Path, box: Layout) -> None:
    path = make(parts, tmp_path / "swapped.bundle")
    checked = check(path)
    tamper(path, data_offset(path, "rootfs.ext4.zst") + 100)  # between the check and the write
    (box.esp / "loader" / "entries" / "appliance-b.conf").write_text(entry_text("b", "0.0.5"))
    with pytest.raises(BundleError, match=r"wiped|changed"):
        install(checked, box)
    assert box.devices["b"].read_bytes() == b"\0" * SLOT_BYTES  # no filesystem left to mount
    # The slot's old entry went first, so the loader is never offered a half-written slot.
    assert sorted(p.name for p in (box.esp / "loader" / "entries").iterdir()) == ["appliance-a.conf"]


def test_a_slot_on_trial_does_not_install_over_the_last_good_one(parts: dict[str, Path], tmp_path: Path,
                                                                 box: Layout) -> None:
    entries = box.esp / "loader" / "entries"
    (entries / "appliance-a.conf").rename(entries / "appliance-a+2-1.conf")
    (entries / "appliance-b.conf").write_text(entry_text("b", "0.0.5"))
    with pytest.raises(BundleError, match="on trial"):
        install(check(make(parts, tmp_path / "good.bundle")), box)
    assert (entries / "appliance-b.conf").exists()
