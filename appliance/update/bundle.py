"""The update bundle: one file per version, signed, checked whole before anything is written.

A bundle is an uncompressed tar (readable with `tar tvf`), its members in this order:

    manifest.json      what the bundle is: format, version, build, arch, the payloads' sizes and sha256
    manifest.sig       Ed25519 signature of manifest.json's exact bytes (64 bytes)
    rootfs.ext4.zst    the root filesystem for a slot, zstd-compressed
    vmlinuz, initrd    the slot's kernel and initrd (they go to the ESP)

The signature covers the manifest, the manifest covers every payload by sha256, so one signature
check plus a hash of each payload proves the whole file. `inspect` refuses, before anything is
written and with the reason, a bundle that is:

1. not a tar, or with members missing, extra, out of order, oversized (manifest) or truncated
   (a member shorter than its header says, or the file ending before the last member);
2. signed by no key the box trusts, or not signed at all;
3. of another format or architecture;
4. not newer than the running version (unless downgrades are allowed);
5. larger, uncompressed, than the slot it would be written to.

The payload hashes are checked again while the slot is written (appliance/update/slots.py): a file
changed between the check and the write leaves the slot unbootable, never half-trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT = 1
MEMBERS = ("manifest.json", "manifest.sig", "rootfs.ext4.zst", "vmlinuz", "initrd")
PAYLOADS = MEMBERS[2:]
MANIFEST_MAX_BYTES = 64 * 1024
CHUNK = 1024 * 1024
VERSION = re.compile(r"^(\d{1,6})\.(\d{1,6})\.(\d{1,6})$")


class BundleError(Exception):
    """A bundle refused; the message says what was wrong and where."""


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(ge=0, description="bytes in the bundle")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    raw_size: int | None = Field(None, ge=0, description="bytes once decompressed (rootfs only)")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int
    version: str = Field(pattern=VERSION.pattern)
    build: str = Field(max_length=100)
    arch: str = Field(max_length=32)
    created: str = Field(max_length=40)
    payloads: dict[str, Payload]


def version_key(version: str) -> tuple[int, int, int]:
    match = VERSION.match(version)
    if match is None:
        raise BundleError(f"version {version[:40]!r} is not MAJOR.MINOR.PATCH")
    return int(match[1]), int(match[2]), int(match[3])


@dataclass(frozen=True)
class Checked:
    """A bundle that passed every check of the module docstring; where each payload starts in the file."""

    path: Path
    manifest: Manifest
    offsets: dict[str, int]
    key_name: str


def load_public_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """The keys the box trusts: every *.pub (PEM) in `folder`, by file name."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            keys[path.name] = key
    return keys


def inspect(path: Path, *, trusted: dict[str, Ed25519PublicKey], running_version: str, arch: str,
            slot_bytes: int, allow_downgrade: bool = False) -> Checked:
    """Check the bundle at `path` (module docstring, 1-5); reads the payloads once to hash them."""
    if not trusted:
        raise BundleError("the box trusts no update key (/usr/share/appliance/update-keys is empty)")
    size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        what = "truncated" if "unexpected end" in str(exc) else "not a bundle"
        raise BundleError(f"{what} (tar: {exc})") from None
    names = [m.name for m in members]
    if tuple(names) != MEMBERS:
        raise BundleError(f"members are {names[:8]}, a bundle has exactly {list(MEMBERS)} in that order")
    by_name = {m.name: m for m in members}
    for member in members:
        if not member.isfile():
            raise BundleError(f"{member.name}: not a regular file")
        if member.offset_data + member.size > size:
            raise BundleError(f"truncated: {member.name} needs {member.offset_data + member.size:,} bytes, "
                              f"the file has {size:,}")
    if by_name["manifest.json"].size > MANIFEST_MAX_BYTES:
        raise BundleError(f"manifest.json is {by_name['manifest.json'].size:,} bytes (most: {MANIFEST_MAX_BYTES:,})")
    with path.open("rb") as file:
        raw_manifest = _read(file, by_name["manifest.json"].offset_data, by_name["manifest.json"].size)
        signature = _read(file, by_name["manifest.sig"].offset_data, min(by_name["manifest.sig"].size, 256))
        key_name = _verify(raw_manifest, signature, trusted)
        manifest = _parse(raw_manifest)
        _check_manifest(manifest, running_version=running_version, arch=arch, slot_bytes=slot_bytes,
                        allow_downgrade=allow_downgrade)
        for name in PAYLOADS:
            member, want = by_name[name], manifest.payloads[name]
            if member.size != want.size:
                raise BundleError(f"{name}: {member.size:,} bytes in the file, the manifest says {want.size:,}")
            digest = hashlib.sha256()
            for chunk in read_range(file, member.offset_data, member.size):
                digest.update(chunk)
            if digest.hexdigest() != want.sha256:
                raise BundleError(f"{name}: sha256 {digest.hexdigest()} is not the manifest's {want.sha256} "
                                  "(the file was altered after signing)")
    return Checked(path=path, manifest=manifest, offsets={n: by_name[n].offset_data for n in PAYLOADS},
                   key_name=key_name)


def _read(file: BinaryIO, offset: int, size: int) -> bytes:
    return b"".join(read_range(file, offset, size))


def read_range(file: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    file.seek(offset)
    left = size
    while left:
        chunk = file.read(min(CHUNK, left))
        if not chunk:
            raise BundleError(f"truncated: the file ended {left:,} bytes early")
        left -= len(chunk)
        yield chunk


def _verify(manifest: bytes, signature: bytes, trusted: dict[str, Ed25519PublicKey]) -> str:
    if len(signature) != 64:
        raise BundleError(f"manifest.sig is {len(signature)} bytes, an Ed25519 signature is 64")
    for name, key in trusted.items():
        try:
            key.verify(signature, manifest)
            return name
        except InvalidSignature:
            continue
    raise BundleError(f"bad signature: manifest.sig verifies with none of the box's {len(trusted)} update key(s)")


def _parse(raw: bytes) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first["loc"]) or "manifest.json"
        raise BundleError(f"manifest.json: {where}: {first['msg']}") from None


def _check_manifest(manifest: Manifest, *, running_version: str, arch: str, slot_bytes: int,
                    allow_downgrade: bool) -> None:
    if manifest.format != FORMAT:
        raise BundleError(f"bundle format {manifest.format}; this box reads format {FORMAT}")
    if manifest.arch != arch:
        raise BundleError(f"the bundle is for {manifest.arch!r}, this box is {arch!r}")
    if set(manifest.payloads) != set(PAYLOADS):
        raise BundleError(f"manifest.json: payloads are {sorted(manifest.payloads)}, expected {list(PAYLOADS)}")
    if version_key(manifest.version) <= version_key(running_version) and not allow_downgrade:
        raise BundleError(f"version {manifest.version} is not newer than the running {running_version} "
                          "(--allow-downgrade installs it anyway)")
    raw = manifest.payloads["rootfs.ext4.zst"].raw_size
    if raw is None:
        raise BundleError("manifest.json: payloads.rootfs.ext4.zst.raw_size: missing")
    if raw > slot_bytes:
        raise BundleError(f"the root filesystem is {raw:,} bytes, the slot holds {slot_bytes:,}")


# --- making bundles (the vendor's side: image/bundle.py) ------------------------------------------

def write_bundle(out: Path, *, version: str, build: str, arch: str, created: str, rootfs_zst: Path,
                 rootfs_raw_size: int, kernel: Path, initrd: Path, key: Ed25519PrivateKey) -> Manifest:
    files = {"rootfs.ext4.zst": rootfs_zst, "vmlinuz": kernel, "initrd": initrd}
    payloads = {name: Payload(size=p.stat().st_size, sha256=_sha256(p),
                              raw_size=rootfs_raw_size if name == "rootfs.ext4.zst" else None)
                for name, p in files.items()}
    manifest = Manifest(format=FORMAT, version=version, build=build, arch=arch, created=created, payloads=payloads)
    raw = json.dumps(manifest.model_dump(), indent=2).encode()
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", raw), ("manifest.sig", key.sign(raw))):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, source in files.items():
            tar.add(source, arcname=name, recursive=False, filter=_plain)
    partial.rename(out)
    return manifest


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o644
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

