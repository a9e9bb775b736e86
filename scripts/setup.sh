#!/usr/bin/env bash
# Installs what Doppel needs on a fresh machine of this kind, idempotently.
#   scripts/setup.sh          engine prerequisites: apt packages, the plugin worker venv,
#                             the CPython 2.7 runtime for PYTHON27 plugins (.venv/python27),
#                             the web UI built into ui/dist (npm ci, then Vite), which
#                             cargo embeds in the binary
#   scripts/setup.sh --test   also what the test suite needs: the Delphix SDK venvs
#                             (dvp 5.2.0 in .venv/dvp, dvp 3.1.0 on 2.7 in .venv/dvp27),
#                             headless Chromium and its WebDriver for the browser test
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

say() { printf '[setup] %s\n' "$*" >&2; }

apt_pkgs=(btrfs-progs xfsprogs openssh-server openssh-client openssl sshfs rsync expect fuse3 iproute2 util-linux e2fsprogs bubblewrap jq)
# The PostgreSQL plugin's tests run real clusters on the fake hosts.
[ $with_test = 1 ] && apt_pkgs+=(openjdk-17-jre-headless postgresql-15)
# The web UI's browser test drives Debian's Chromium through its WebDriver.
[ $with_test = 1 ] && apt_pkgs+=(chromium chromium-driver)
# Node.js builds the web UI; any 18+ works (Vite 6), so one from elsewhere is kept.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
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

# The web UI: npm packages from the committed lock file (again only when it
# changed), then a build when ui/dist is missing or older than its sources.
# cargo embeds ui/dist; a binary built without it serves a page saying so.
node_ok=$(node -e 'process.stdout.write(String(+process.versions.node.split(".")[0] >= 18))' 2>/dev/null || true)
if [ "$node_ok" != true ]; then
  say "the web UI needs Node.js 18 or newer with npm (found: $(node --version 2>/dev/null || echo none)); install it (Debian: apt-get install nodejs npm) and run this again"
  exit 1
fi
lock_sum=$(sha256sum ui/package-lock.json | cut -d' ' -f1)
if [ "$(cat ui/node_modules/.doppel-lock 2>/dev/null)" != "$lock_sum" ]; then
  say "installing the web UI's npm packages (npm ci)"
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s' "$lock_sum" > ui/node_modules/.doppel-lock
fi
if [ ! -f ui/dist/index.html ] || [ -n "$(find ui/src ui/index.html ui/vite.config.js ui/package-lock.json -newer ui/dist/index.html -print -quit)" ]; then
  say "building the web UI (ui/dist)"
  (cd ui && npm run --silent build >/dev/null)
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

# CPython 2.7.18 for PYTHON27 plugins (dvp 2.x/3.x). Debian dropped it after
# bullseye, so its packages are fetched from bullseye with an apt
# configuration of our own (sources, lists and cache under .venv/python27/apt;
# the system's apt setup is only read, never changed) and unpacked with
# `dpkg -x` into .venv/python27/root. bin/python is the interpreter with
# LD_LIBRARY_PATH pointing at the unpacked libraries (libffi7, libssl1.1).
py27_debs=(python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libffi7 libssl1.1)
py27=$root/.venv/python27
if [ "$(cat "$py27/.doppel-packages" 2>/dev/null)" != "${py27_debs[*]}" ] || ! "$py27/bin/python" -c 'import ssl, ctypes' 2>/dev/null; then
  say "installing CPython 2.7 into .venv/python27 (Debian bullseye packages)"
  rm -rf "$py27"
  mkdir -p "$py27/apt/lists/partial" "$py27/apt/cache/archives/partial" "$py27/bin"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf '%s\n' \
    "deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main" \
    "deb [signed-by=$keyring] http://deb.debian.org/debian-security bullseye-security main" \
    > "$py27/apt/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$py27/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
            -o "Dir::State::Lists=$py27/apt/lists" -o "Dir::Cache=$py27/apt/cache"
            -o Dir::State::Status=/var/lib/dpkg/status -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$py27/apt/cache/archives" && apt-get "${apt_opts[@]}" download -qq "${py27_debs[@]}")
  for deb in "$py27"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$py27/root"; done
  rm -rf "$py27/apt"
  cat > "$py27/bin/python" <<'EOS'
#!/bin/sh
# CPython 2.7 unpacked from Debian packages: its libraries are not where the
# system looks for them. Paths are found from this file's place, so the
# prefix can be reached through a link or moved.
top=$(cd -P "${0%/*}/.." && pwd)
LD_LIBRARY_PATH=$top/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec "$top/root/usr/bin/python2.7" "$@"
EOS
  chmod 0755 "$py27/bin/python"
  "$py27/bin/python" -c 'import ssl, ctypes, json, zlib'
  printf '%s' "${py27_debs[*]}" > "$py27/.doppel-packages"
fi

# dvp 3.1.0 (the PYTHON27 SDK) builds the 2.7 test plugins. virtualenv before
# 20.22 still creates 2.7 environments, with a pip of their own.
if [ $with_test = 1 ]; then
  dvp27=$root/.venv/dvp27 want='dvp==3.1.0'
  if ! [ -x "$dvp27/bin/dvp" ] || [ "$(cat "$dvp27/.doppel-packages" 2>/dev/null)" != "$want" ]; then
    say "creating the Python 2.7 venv .venv/dvp27 ($want)"
    rm -rf "$dvp27" "$root/.venv/virtualenv"
    "$python" -m venv "$root/.venv/virtualenv"
    "$root/.venv/virtualenv/bin/pip" install -q --disable-pip-version-check 'virtualenv<20.22'
    "$root/.venv/virtualenv/bin/virtualenv" -q -p "$py27/bin/python" "$dvp27"
    rm -rf "$root/.venv/virtualenv"
    # The venv's interpreter is a copy of the unpacked one and needs the same
    # library path (the tests' dvp 3.1.0 builder sets it too).
    LD_LIBRARY_PATH=$py27/root/usr/lib/x86_64-linux-gnu "$dvp27/bin/pip" install -q \
      --disable-pip-version-check --no-python-version-warning "$want"
    printf '%s' "$want" > "$dvp27/.doppel-packages"
  fi
fi
exit 0
