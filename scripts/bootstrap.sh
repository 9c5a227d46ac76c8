#!/usr/bin/env bash
# The first step of `make run` and `make test`: install the Debian packages that are missing.
#
#   scripts/bootstrap.sh run     the [run] packages of scripts/debian-packages.txt
#   scripts/bootstrap.sh test    the [run] and [test] packages
#   scripts/bootstrap.sh check   those and [check] (`make check-fresh`)
#   scripts/bootstrap.sh bench   [run] and [bench] (`make bench-*`)
#   scripts/bootstrap.sh image   [run] and [image] (`make image`, `make check-image`)
#
# Each package is checked with dpkg-query; when none is missing this takes a few milliseconds
# and never touches apt. Missing ones are installed with apt-get, as root directly or through
# sudo otherwise. There is no stamp file: every run checks again, so an interrupted or failed
# install is simply retried, never skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list=${BOOTSTRAP_PACKAGES:-$here/debian-packages.txt}  # another list: for its tests
what=${1:-run}

case $what in
  run) sections=" run " ;;
  test) sections=" run test " ;;
  check) sections=" run test check " ;;
  bench) sections=" run bench " ;;
  image) sections=" run image " ;;
  *) echo "usage: $0 run|test|check|bench|image" >&2; exit 2 ;;
esac

wanted=()
section=
while read -r line; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [[ -z $line ]] && continue
  if [[ $line == \[*\] ]]; then section=${line:1:-1}; continue; fi
  [[ $sections == *" $section "* ]] && wanted+=("$line")
done <"$list"

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "bootstrap: this is not a Debian-like system (no dpkg-query), so nothing can be installed for you." >&2
  echo "bootstrap: install these packages (or your system's equivalents) by hand, then run make again:" >&2
  echo "  ${wanted[*]}" >&2
  exit 1
fi

# One dpkg-query for all of them: "name status" for every package dpkg knows.
declare -A installed=()
while read -r name status; do
  [[ $status == ii* ]] && installed[${name%%:*}]=1
done < <(dpkg-query -W -f='${binary:Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null || true)
missing=()
for pkg in "${wanted[@]}"; do
  [[ -n ${installed[$pkg]:-} ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && { [[ -t 0 ]] || sudo -n true 2>/dev/null; }; then
  as_root=(sudo)
else
  echo "bootstrap: these Debian packages are missing: ${missing[*]}" >&2
  echo "bootstrap: this user is not root and cannot use sudo; as root, run:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "bootstrap: installing ${#missing[@]} Debian package(s) with apt-get: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get update -q; then
  echo "bootstrap: apt-get update failed (see above); nothing was installed" >&2
  exit 1
fi
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  echo "bootstrap: apt-get install failed (see above): ${missing[*]} are still missing" >&2
  exit 1
fi
echo "bootstrap: installed ${missing[*]}" >&2
