#!/usr/bin/env bash
# mmdebstrap's customize hook (image/build.sh): the appliance into the Debian root at $1.
# customize.sh ROOT WORK VERSION BUILD SLOT_MIB
set -euo pipefail
root=$1 work=$2 version=$3 build_id=$4 slot_mib=$5
repo=$(cd "$(dirname "$0")/.." && pwd)
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# The application: a venv of the system Python, filled from the wheelhouse (no index, no compiler).
# pip stays in it: `appliance model fetch` downloads model wheels with it.
mkdir -p "$root/tmp/wheels"
cp "$work"/wheels/*.whl "$root/tmp/wheels/"
in_root python3 -m venv --without-pip /opt/appliance
pip_wheel=$(cd "$root/tmp/wheels" && ls pip-*.whl)
in_root /opt/appliance/bin/python "/tmp/wheels/$pip_wheel/pip" install -q --no-index --no-warn-script-location \
  --find-links /tmp/wheels pip appliance
rm -rf "$root/tmp/wheels"
install -m 0644 "$repo/README.md" "$root/opt/appliance/README.md"

# Units, the user (made now: the root is read-only at run time), the image's own files.
install -m 0644 "$repo"/systemd/*.service "$repo"/systemd/*.socket "$repo"/systemd/*.target "$root/usr/lib/systemd/system/"
install -m 0644 "$repo/systemd/sysusers.d/appliance.conf" "$root/usr/lib/sysusers.d/appliance.conf"
cp -r "$repo"/image/rootfs/. "$root/"
in_root systemd-sysusers
install -d -m 0755 "$root/etc/mosquitto/conf.d"
install -m 0644 "$repo/config/mosquitto/appliance.conf" "$root/etc/mosquitto/conf.d/appliance.conf"

# Bundles signed with this key are accepted (appliance update install; image/bundle.py).
install -d "$root/usr/share/appliance/update-keys"
install -m 0644 "$repo/var/image/keys/update.pub" "$root/usr/share/appliance/update-keys/update.pub"

# The read-only root: what must be written lives on the data partition (fstab) or in /run.
install -d "$root/data" "$root/etc/appliance" "$root/var/lib/appliance" "$root/efi"
ln -sfn ../proc/self/mounts "$root/etc/mtab"
ln -sfn /etc/machine-id "$root/var/lib/dbus/machine-id"
: >"$root/etc/machine-id"   # empty: systemd makes one per boot in /run (and knows it is a first boot)
echo appliance >"$root/etc/hostname"

printf '{"version": "%s", "build": "%s", "slot_mib": %d, "arch": "x86_64"}\n' "$version" "$build_id" "$slot_mib" \
  >"$root/usr/share/appliance/image.json"
cat >"$root/etc/appliance-release" <<REL
VERSION=$version
BUILD=$build_id
ARCH=x86_64
REL

in_root systemctl enable appliance.target appliance-provision.service appliance-data-grow.service \
  appliance-healthy.service appliance-update.path appliance-update-recover.service systemd-networkd.service >/dev/null 2>&1
in_root systemctl set-default multi-user.target >/dev/null
# No login on the box: the admin page and the API are the interface (a console shell is one
# `systemctl unmask` away for a technician with the disk).
in_root systemctl mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1 || true
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
