#!/usr/bin/env bash
# Installs what Doppel needs on a fresh machine of this kind, idempotently.
#   scripts/setup.sh          engine prerequisites: apt packages, the plugin worker venv
#   scripts/setup.sh --test   also what the test suite needs: the Delphix SDK (dvp) venv
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

say() { printf '[setup] %s\n' "$*" >&2; }

apt_pkgs=(btrfs-progs xfsprogs openssh-server openssh-client openssl sshfs rsync expect fuse3 iproute2 util-linux e2fsprogs bubblewrap)
# The PostgreSQL plugin's tests run real clusters on the fake hosts.
[ $with_test = 1 ] && apt_pkgs+=(openjdk-17-jre-headless postgresql-15)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Java may come from elsewhere than Debian's package; dvp build only needs a working `java`.
if [ $with_test = 1 ] && command -v java >/dev/null 2>&1; then
  missing=("${missing[@]/openjdk-17-jre-headless}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then say "need root to install packages"; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${DOPPEL_BOOTSTRAP_PYTHON:-python3.11}
command -v "$python" >/dev/null || { say "CPython 3.11 ($python) is required: plugins ship 3.11 bytecode"; exit 1; }

# venv NAME STAMP PACKAGES...: (re)creates .venv/NAME when its package list changed.
venv() {
  local name=$1; shift
  local dir="$root/.venv/$name" want="$*"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.doppel-packages" 2>/dev/null)" = "$want" ]; then return; fi
  say "creating Python venv .venv/$name ($want)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  printf '%s' "$want" > "$dir/.doppel-packages"
}

# The plugin worker gets protobuf and six only: plugins bring their own SDK wrappers.
venv worker 'protobuf>=6.31.1,<7' 'six==1.17.0'
[ $with_test = 1 ] && venv dvp 'dvp==5.2.0'
exit 0
