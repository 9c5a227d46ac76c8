"""The two root slots and the loader entries that choose between them (systemd-boot, boot counting).

The image (image/build.sh) has partitions named appliance-root-a and appliance-root-b with the fixed
PARTUUIDs below, and an ESP with one folder per slot (/a, /b: vmlinuz, initrd) and one loader entry
per slot. Entries sort by version, newest first, and systemd-boot demotes an entry whose tries ran
out; so the newest slot that still boots is the default and a failed update falls back by itself.

Installing a checked bundle (bundle.py) into the slot that is not running, in order, each step only
after the one before succeeded:

1. the box must itself be on a good slot: a slot still on trial (its entry has a counter) refuses,
   or a failed update could overwrite the last good one;
2. the other slot's loader entry is removed first: a slot being written is never offered to the loader;
3. rootfs.ext4.zst is decompressed onto the slot's partition and its sha256 checked as it streams;
   a mismatch, a decompression error or a root larger than the slot wipes the slot's first MiB (no
   filesystem left to mount) and stops;
4. the kernel and initrd go to the ESP's slot folder under temporary names, checked, then renamed;
5. the entry appliance-<slot>+3.conf is written last (three tries): only now can the loader pick it.

A power cut anywhere before 5 leaves no entry for the slot, so the box boots the running slot again.
The slot is marked good by systemd-bless-boot when boot-complete.target is reached, which requires
the appliance's own self-check (image/rootfs/usr/lib/appliance/self-check).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from appliance.update.bundle import BundleError, Checked, read_range

SLOTS = ("a", "b")
PARTUUID = {"a": "6a1e0b5e-0000-4000-8000-00000000000a", "b": "6a1e0b5e-0000-4000-8000-00000000000b"}
TRIES = 3
WIPE_BYTES = 1024 * 1024
ENTRY = re.compile(r"^appliance-(?P<slot>[ab])(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$")
Progress = Callable[[int, int, str], None]


def entry_text(slot: str, version: str) -> str:
    """The loader entry (Boot Loader Specification type 1) of one slot."""
    return (f"title Appliance {version} (slot {slot})\n"
            "sort-key appliance\n"
            f"version {version}\n"
            f"linux /{slot}/vmlinuz\n"
            f"initrd /{slot}/initrd\n"
            f"options root=PARTUUID={PARTUUID[slot]} ro rootwait appliance.slot={slot} "
            # Every service's environment names the slot: the api may not read /proc/cmdline (ProcSubset=pid).
            f"systemd.setenv=APPLIANCE_SLOT={slot} "
            "console=tty0 console=ttyS0,115200 systemd.show_status=auto\n")


def running_slot(cmdline: Path = Path("/proc/cmdline")) -> str | None:
    """The slot this system booted from, or None off the image. The loader entry names it twice: in
    APPLIANCE_SLOT for every service (the api may not read /proc/cmdline: ProcSubset=pid) and on the
    kernel command line for the rest."""
    if os.environ.get("APPLIANCE_SLOT") in SLOTS:
        return os.environ["APPLIANCE_SLOT"]
    try:
        match = re.search(r"\bappliance\.slot=([ab])\b", cmdline.read_text())
    except OSError:
        return None
    return match[1] if match else None


@dataclass(frozen=True)
class Layout:
    """Where the slots are: the mounted ESP, each slot's block device, the slot running now."""

    esp: Path
    devices: dict[str, Path]
    running: str

    @classmethod
    def of_box(cls, esp: Path = Path("/efi"), cmdline: Path = Path("/proc/cmdline")) -> Layout:
        slot = running_slot(cmdline)
        if slot is None:
            raise BundleError("this system was not booted from an appliance slot (no appliance.slot= on the "
                              "kernel command line): updates install only on the image")
        if not (esp / "loader" / "entries").is_dir():
            raise BundleError(f"the ESP is not mounted at {esp}")
        return cls(esp=esp, devices={s: Path(f"/dev/disk/by-partlabel/appliance-root-{s}") for s in SLOTS},
                   running=slot)

    @property
    def other(self) -> str:
        return "b" if self.running == "a" else "a"

    def slot_bytes(self, slot: str) -> int:
        with self.devices[slot].open("rb") as device:
            return device.seek(0, os.SEEK_END)

    def entries(self) -> dict[str, tuple[Path, int | None]]:
        """Each slot's loader entry and its tries left (None: no counter, a good slot)."""
        found: dict[str, tuple[Path, int | None]] = {}
        for path in sorted((self.esp / "loader" / "entries").iterdir()):
            if match := ENTRY.match(path.name):
                found[match["slot"]] = (path, int(match["left"]) if match["left"] is not None else None)
        return found


def install(checked: Checked, layout: Layout, progress: Progress | None = None) -> Path:
    """Steps 1-5 of the module docstring; the new loader entry."""
    entries = layout.entries()
    running = entries.get(layout.running)
    if running is not None and running[1] is not None:
        raise BundleError(f"the running slot {layout.running} is itself on trial ({running[0].name}): "
                          "wait until it is marked good, or reboot into the other slot")
    slot = layout.other
    if (old := entries.get(slot)) is not None:
        old[0].unlink()
        _sync_folder(old[0].parent)
    _write_root(checked, layout, slot, progress)
    folder = layout.esp / slot
    folder.mkdir(exist_ok=True)
    with checked.path.open("rb") as bundle:
        for name in ("vmlinuz", "initrd"):
            _copy_checked(bundle, checked, name, folder / name)
    entry = layout.esp / "loader" / "entries" / f"appliance-{slot}+{TRIES}.conf"
    partial = entry.with_name(entry.name + ".partial")
    partial.write_text(entry_text(slot, checked.manifest.version))
    _fsync(partial)
    partial.rename(entry)
    _sync_folder(entry.parent)
    return entry


def _write_root(checked: Checked, layout: Layout, slot: str, progress: Progress | None) -> None:
    payload = checked.manifest.payloads["rootfs.ext4.zst"]
    capacity = layout.slot_bytes(slot)
    digest, written = hashlib.sha256(), 0
    device = layout.devices[slot]
    try:
        with checked.path.open("rb") as bundle, device.open("r+b") as out:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            for chunk in read_range(bundle, checked.offsets["rootfs.ext4.zst"], payload.size):
                digest.update(chunk)
                data = decompressor.decompress(chunk)
                if written + len(data) > capacity:
                    raise BundleError(f"the root filesystem outgrew slot {slot} ({capacity:,} bytes)")
                out.write(data)
                written += len(data)
                if progress is not None:
                    progress(written, payload.raw_size or written, f"writing slot {slot}")
            if digest.hexdigest() != payload.sha256:
                raise BundleError("rootfs.ext4.zst changed after it was checked (sha256 differs); slot wiped")
            if written != payload.raw_size:
                raise BundleError(f"rootfs.ext4.zst decompressed to {written:,} bytes, the manifest says "
                                  f"{payload.raw_size:,}; slot wiped")
            out.flush()
            os.fsync(out.fileno())
    except (BundleError, zstandard.ZstdError, OSError) as exc:
        _wipe(device)
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"writing slot {slot} failed: {exc}; slot wiped") from None


def _copy_checked(bundle: BinaryIO, checked: Checked, name: str, target: Path) -> None:
    payload = checked.manifest.payloads[name]
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in read_range(bundle, checked.offsets[name], payload.size):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != payload.sha256:
        partial.unlink()
        raise BundleError(f"{name} changed after it was checked (sha256 differs)")
    partial.rename(target)


def _wipe(device: Path) -> None:
    try:
        with device.open("r+b") as out:
            size = out.seek(0, os.SEEK_END)
            out.seek(0)
            out.write(b"\0" * min(WIPE_BYTES, size))
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        pass


def _fsync(path: Path) -> None:
    with path.open("rb") as file:
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # vfat may refuse fsync on a directory; the file's own fsync is what counts there
        pass
    finally:
        os.close(fd)

