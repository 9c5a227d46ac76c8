#!/usr/bin/env bash
# `make image`: the appliance as a raw GPT disk for x86_64 UEFI mini PCs (var/image/appliance.img).
#
# Layout (image/README.md says why):
#   1 ESP    256 MiB  vfat: systemd-boot, one kernel+initrd per slot, one loader entry per slot (/efi)
#   2 root-a 2 GiB    ext4, read-only at run time: Debian 12, the appliance in /opt/appliance
#   3 root-b 2 GiB    empty until the first update writes it
#   4 data   512 MiB  ext4: /etc/appliance, /var/lib/appliance (models, the memory file, keys),
#                     mosquitto's queue, the journal; the first boot grows it to fill the disk
#
# Steps: a wheelhouse of the project and its dependencies (llama-cpp-python from pip's cache, so
# compiled once per build machine), a Debian root made by mmdebstrap, the root filesystem and the
# data filesystem made by mke2fs from folders (no loop devices, no mounts), the ESP by mtools, the
# partition table by sfdisk. The root filesystem image is kept (var/image/rootfs.ext4) for
# `make bundle`. Needs root (mmdebstrap's chroot) and the packages of [image] in
# scripts/debian-packages.txt.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/var/image
py=${PY:-$repo/.venv/bin/python}
work=$out/work
log=$out/build.log
mkdir -p "$out"
: >"$log"
say() { echo "image: $*" | tee -a "$log" >&2; }
[[ $(id -u) -eq 0 ]] || { echo "image: needs root (mmdebstrap's chroot, file ownership)" >&2; exit 1; }
for tool in mmdebstrap mke2fs mkfs.vfat mcopy sfdisk zstd; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing (scripts/debian-packages.txt [image])" >&2; exit 1; }
done

# Partition sizes in MiB; the slot size is part of the bundle format (a bundle larger is refused).
ESP_MIB=256 SLOT_MIB=2048 DATA_MIB=512
# Fixed partition UUIDs: the loader entries name their root by PARTUUID (appliance/update/slots.py).
read -r ROOT_A_UUID ROOT_B_UUID < <("$py" -c 'from appliance.update.slots import PARTUUID; print(PARTUUID["a"], PARTUUID["b"])')
ESP_UUID=6a1e0b5e-0000-4000-8000-0000000000e5
DATA_UUID=6a1e0b5e-0000-4000-8000-00000000da7a
version=$("$py" -c 'import appliance; print(appliance.__version__)')
build_id=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
started=$(date +%s)

rm -rf "$work"
mkdir -p "$work/wheels" "$work/esp" "$work/data"

# llama.cpp for the boxes' CPUs, not the build machine's: pip's cached wheel is compiled with
# -march=native (AVX-512 here, an illegal instruction on an Intel N100). x86-64-v3 (AVX2, FMA, F16C,
# BMI2) is what x86 mini PCs of the last decade have; compiled once per llama-cpp-python version and
# kept in ~/.cache/appliance/image/ (not in pip's cache, which keys a build by its source, not its
# flags; outside the checkout, so a fresh clone on the same machine finds it too).
llama_version=$("$py" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')
llama_dir=${XDG_CACHE_HOME:-$HOME/.cache}/appliance/image/llama-$llama_version-x86-64-v3
if ! compgen -G "$llama_dir/llama_cpp_python-*.whl" >/dev/null; then
  say "llama-cpp-python $llama_version for x86-64-v3: compiling (about 8 minutes on 2 cores, once)"
  rm -rf "$llama_dir.partial"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip wheel -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$llama_dir.partial" "llama-cpp-python==$llama_version" >>"$log" 2>&1
  mkdir -p "$(dirname "$llama_dir")" && mv "$llama_dir.partial" "$llama_dir"
fi
llama_wheel=$(compgen -G "$llama_dir/llama_cpp_python-*.whl")

say "wheelhouse: the appliance $version ($build_id) and its dependencies"
"$py" -m pip wheel -q -w "$work/wheels" --find-links "$llama_dir" "$repo" >>"$log" 2>&1
# pip prefers a wheel to building the source, but say it if the portable one was not taken.
cmp -s "$llama_wheel" "$work/wheels/$(basename "$llama_wheel")" \
  || { say "the wheelhouse's llama-cpp-python is not the x86-64-v3 build"; exit 1; }
"$py" -m pip download -q --no-deps -d "$work/wheels" pip >>"$log" 2>&1

# The update signing key: made once on this machine; its public half goes into the image.
"$py" "$repo/image/bundle.py" key

say "root: Debian 12 by mmdebstrap (image/packages.txt)"
packages=$(grep -o '^[a-z0-9][a-z0-9.+-]*' "$repo/image/packages.txt" | paste -sd, -)
rootfs=$work/rootfs
mmdebstrap --variant=minbase --include="$packages" \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="$repo/image/customize.sh \"\$1\" $work $version $build_id $SLOT_MIB" \
  bookworm "$rootfs" "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >>"$log" 2>&1
say "root ready after $(( $(date +%s) - started )) s: $(du -sh --apparent-size "$rootfs" | cut -f1)"

# The kernel and initrd go to the ESP (the slot's folder); the root keeps them too, for bundles.
kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)

# The data partition's first contents: the folders bind-mounted over the read-only root, owned by
# the appliance user (its ids are fixed by sysusers at build time), and the default config.
uid=$(awk -F: '$1=="appliance"{print $3}' "$rootfs/etc/passwd")
gid=$(awk -F: '$1=="appliance"{print $3}' "$rootfs/etc/group")
mosq=$(awk -F: '$1=="mosquitto"{print $3":"$4}' "$rootfs/etc/passwd")
mkdir -p "$work/data/etc" "$work/data/lib/models" "$work/data/mosquitto" "$work/data/journal" "$work/data/update" \
  "$work/data/systemd"
cp -a "$rootfs/var/lib/systemd/." "$work/data/systemd/"
cp "$repo/config/agent.yaml" "$work/data/etc/agent.yaml"
chmod 0755 "$work/data/etc"; chmod 0644 "$work/data/etc/agent.yaml"
chown -R "$uid:$gid" "$work/data/lib"; chmod 0700 "$work/data/lib"
chown -R "$mosq" "$work/data/mosquitto"
echo "appliance $version ($build_id) data partition, created $(date -u +%FT%TZ)" >"$work/data/.appliance-data"

say "filesystems: root ext4 (${SLOT_MIB} MiB), data ext4 (${DATA_MIB} MiB), ESP vfat (${ESP_MIB} MiB)"
rm -f "$out/rootfs.ext4" "$work/data.ext4" "$work/esp.vfat"
mke2fs -q -t ext4 -L appliance-root -d "$rootfs" \
  -E root_owner=0:0 "$out/rootfs.ext4" "${SLOT_MIB}M" >>"$log" 2>&1
mke2fs -q -t ext4 -L appliance-data -d "$work/data" "$work/data.ext4" "${DATA_MIB}M" >>"$log" 2>&1

esp=$work/esp.vfat
mkfs.vfat -C -n ESP -F 32 "$esp" $(( ESP_MIB * 1024 )) >>"$log" 2>&1
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/a ::/b
mcopy -i "$esp" "$rootfs/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$rootfs/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$esp" "$kernel" ::/a/vmlinuz
mcopy -i "$esp" "$initrd" ::/a/initrd
printf 'timeout 3\nconsole-mode keep\neditor no\n' >"$work/loader.conf"
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
"$py" -c 'import sys; from appliance.update.slots import entry_text; sys.stdout.write(entry_text("a", sys.argv[1]))' \
  "$version" >"$work/entry-a.conf"
# The factory slot is known good: no boot counter.
mcopy -i "$esp" "$work/entry-a.conf" "::/loader/entries/appliance-a.conf"

say "disk: GPT with ESP, root-a, root-b, data"
img=$out/appliance.img
rm -f "$img"
total_mib=$(( 1 + ESP_MIB + 2 * SLOT_MIB + DATA_MIB + 1 ))
truncate -s "${total_mib}M" "$img"
sfdisk -q "$img" >>"$log" 2>&1 <<EOF
label: gpt
first-lba: 2048
start=1MiB, size=${ESP_MIB}MiB, type=uefi, uuid=$ESP_UUID, name=esp
size=${SLOT_MIB}MiB, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$ROOT_A_UUID, name=appliance-root-a
size=${SLOT_MIB}MiB, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=$ROOT_B_UUID, name=appliance-root-b
size=${DATA_MIB}MiB, type=0fc63daf-8483-4772-8e79-3d69d8477de4, uuid=$DATA_UUID, name=appliance-data
EOF
place() {  # place FILE START_MIB: copy a filesystem into the disk at its partition's offset, sparsely
  dd if="$1" of="$img" bs=1M seek="$2" conv=notrunc,sparse status=none
}
place "$esp" 1
place "$out/rootfs.ext4" $(( 1 + ESP_MIB ))
place "$work/data.ext4" $(( 1 + ESP_MIB + 2 * SLOT_MIB ))

cp "$kernel" "$out/vmlinuz"; cp "$initrd" "$out/initrd"
cp "$rootfs/usr/share/appliance/image.json" "$out/image.json"
rm -rf "$work"
elapsed=$(( $(date +%s) - started ))
say "built $img in $elapsed s: $(du -h --apparent-size "$img" | cut -f1) disk," \
    "$(du -h "$img" | cut -f1) allocated; root filesystem $(du -h "$out/rootfs.ext4" | cut -f1) used"
