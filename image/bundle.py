"""`make bundle`: the signed update bundle of the image just built (appliance/update/bundle.py).

    python image/bundle.py key                     make the signing key pair once (var/image/keys/)
    python image/bundle.py [--version V] [--rootfs FILE] [--out FILE]

The bundle takes var/image/rootfs.ext4, vmlinuz and initrd from `make image`. The private key stays
on the build machine (var/image/keys/update.key, mode 0600; a vendor keeps it offline or in an HSM);
the public key goes into every image built after it (/usr/share/appliance/update-keys/), so a box
accepts bundles signed by the key its own image was built with.

--version and --rootfs exist for the update tests (image/check.py): the same root with another
release file, or a root whose engine is broken on purpose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update.bundle import write_bundle

OUT = Path(__file__).resolve().parent.parent / "var" / "image"
KEYS = OUT / "keys"


def make_key() -> None:
    KEYS.mkdir(parents=True, exist_ok=True)
    private = KEYS / "update.key"
    if private.exists():
        return
    key = Ed25519PrivateKey.generate()
    private.touch(mode=0o600)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    (KEYS / "update.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    sys.stderr.write(f"bundle: made the update signing key {private} (keep it; images trust its public half)\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="image/bundle.py")
    parser.add_argument("what", nargs="?", choices=["bundle", "key"], default="bundle")
    parser.add_argument("--version", help="the bundle's version (default: the image's)")
    parser.add_argument("--rootfs", type=Path, default=OUT / "rootfs.ext4")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "key":
        make_key()
        return 0
    image = json.loads((OUT / "image.json").read_text())
    version = args.version or image["version"]
    out = args.out or OUT / f"appliance-{version}.bundle"
    key = serialization.load_pem_private_key((KEYS / "update.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    started = time.monotonic()
    compressed = out.with_name(out.name + ".rootfs.zst")
    subprocess.run(["zstd", "-q", "-f", "-T0", "-6", "--sparse", str(args.rootfs), "-o", str(compressed)], check=True)
    try:
        manifest = write_bundle(out, version=version, build=image["build"], arch=image["arch"],
                                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), rootfs_zst=compressed,
                                rootfs_raw_size=args.rootfs.stat().st_size, kernel=OUT / "vmlinuz",
                                initrd=OUT / "initrd", key=key)
    finally:
        compressed.unlink(missing_ok=True)
    sys.stderr.write(f"bundle: {out} ({manifest.version}, {out.stat().st_size / 2**20:.0f} MiB) in "
                     f"{time.monotonic() - started:.0f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
