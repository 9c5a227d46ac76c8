#!/usr/bin/env bash
# `make check-fresh`: prove the README's two commands on a clean Debian 12 root.
#
# 1. mmdebstrap builds a minimal bookworm root (minbase) with only what a reader of the README
#    starts with: python3, make, git, ca-certificates.
# 2. The host's CA bundle and resolver configuration go in (the package registries are reached
#    through the site's own certificate authority; without it pip fails certificate checks).
#    pip's cache is shared into the root, so llama.cpp is not compiled a second time: a wheel
#    built on this machine is reused (say so, and it is the only thing shared). Nothing of the
#    project goes in but a `git clone` of this repository's HEAD.
# 3. Inside, as root in a chroot: `make run` until GET /api/v1/health says ready, a clean stop
#    with SIGTERM, then `make test`.
#
# Everything runs in new mount and pid namespaces: the mounts vanish and every process in the
# root is killed when the check ends, and the root is deleted (KEEP=1 keeps it).
# The log goes to var/check-fresh.log; the summary at its end names the packages the bootstrap
# installed, the time from clone to all-ready and the test count.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log=$repo/var/check-fresh.log
mkdir -p "$repo/var"
: >"$log"
say() { echo "check-fresh: $*" | tee -a "$log" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "check-fresh: needs root (mmdebstrap, chroot, namespaces)" >&2; exit 1; }
for tool in mmdebstrap unshare chroot curl; do
  command -v "$tool" >/dev/null || { echo "check-fresh: $tool is missing (make check-fresh bootstraps it)" >&2; exit 1; }
done
for port in 8080 1883; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    say "port $port is in use on this machine; the fresh root shares its network. Stop what listens there."
    exit 1
  fi
done

root=$(mktemp -d /var/tmp/appliance-fresh.XXXXXX)
cleanup() {
  if [[ ${KEEP:-0} == 1 ]]; then say "kept the root at $root"; else rm -rf --one-file-system "$root"; fi
}
trap cleanup EXIT
pip_cache=$(python3 -m pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")
mkdir -p "$pip_cache"

started=$(date +%s)
say "building a minimal Debian 12 root in $root (mmdebstrap, minbase + python3 make git ca-certificates)"
mmdebstrap --variant=minbase --include=python3,make,git,ca-certificates \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  bookworm "$root" "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >>"$log" 2>&1
say "root ready after $(( $(date +%s) - started )) s"

# The site's CA certificates and the resolver; the bundle is rebuilt inside with them.
mkdir -p "$root/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" update-ca-certificates >>"$log" 2>&1
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

git clone --quiet "$repo" "$root/root/appliance"
say "cloned $(git -C "$repo" rev-parse --short HEAD) into /root/appliance"

# Phases inside the root, in private mount and pid namespaces.
inner=$(cat <<'INNER'
set -euo pipefail
root=$1 pip_cache=$2 log=$3
# The root a mount point of its own, as / is on a real machine (bubblewrap remounts / and fails
# with EINVAL on a plain directory).
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir -p "$root/root/.cache/pip"
mount --bind "$pip_cache" "$root/root/.cache/pip"
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM=dumb "$@"
}
note() { echo "check-fresh: $*" | tee -a "$log" >&2; }
trap 'note "stopped by a failed command at line $LINENO of the inner script"' ERR

clone_at=$(date +%s)
note "make run (as a new user would: the bootstrap installs what is missing)"
# setsid: `make run` leads its own process group, which a Ctrl-C would signal as a whole.
setsid chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 TERM=dumb bash -c 'cd /root/appliance && exec make run' >>"$log" 2>&1 &
runner=$!
ready=
for _ in $(seq 1 2400); do
  if ! kill -0 "$runner" 2>/dev/null; then note "make run exited before the appliance was ready"; exit 1; fi
  reply=$(curl -sk --max-time 2 https://127.0.0.1:8080/api/v1/health 2>/dev/null \
          || curl -s --max-time 2 http://127.0.0.1:8080/api/v1/health 2>/dev/null || true)
  if [[ $reply == *'"status": "ready"'* || $reply == *'"status":"ready"'* ]]; then ready=1; break; fi
  sleep 1
done
[[ -n $ready ]] || { note "GET /api/v1/health never said ready"; exit 1; }
note "all services ready $(( $(date +%s) - clone_at )) s after the clone: $reply"
# Like Ctrl-C in the terminal: the whole process group of `make run` gets the signal.
kill -TERM -- -"$runner"
for _ in $(seq 1 60); do kill -0 "$runner" 2>/dev/null || break; sleep 1; done
if kill -0 "$runner" 2>/dev/null; then note "make run did not stop within 60 s of SIGTERM"; exit 1; fi
wait "$runner" || true
note "make run stopped cleanly"

note "make test"
test_at=$(date +%s)
# The systemd PID-1 boot test is left out here: it boots systemd in a pid namespace chrooted
# into an overlay of /, and this root is itself a chroot inside such namespaces; it runs in CI's
# own `make test` on the host.
if in_root bash -c 'cd /root/appliance && make test PYTEST_ARGS="--deselect tests/systemd/test_boot.py"' \
    >>"$log" 2>&1; then result=passed; else result=FAILED; fi
note "make test $result in $(( $(date +%s) - test_at )) s"
[[ $result == passed ]]
INNER
)
status=0
unshare --mount --pid --fork --propagation private bash -c "$inner" inner "$root" "$pip_cache" "$log" || status=$?

{
  echo "check-fresh: summary"
  grep -h '^bootstrap: installed' "$log" | sed 's/^/  /' || true
  grep -h -E '^check-fresh: (all services ready|make test)' "$log" | sed 's/^check-fresh: /  /' || true
  grep -h -E '[0-9]+ passed' "$log" | tail -1 | sed 's/^/  pytest: /' || true
  # The failing tests by name: CI shows only the tail of this output, never the log itself.
  grep -h -E '^(FAILED|ERROR) ' "$log" | sed 's/^/  /' || true
} | tee -a "$log" >&2
say "total $(( $(date +%s) - started )) s; log: $log"
exit $status
