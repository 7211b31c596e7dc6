#!/usr/bin/env bash
# Benchmark: real-world builds (issue 20, item 4), kiln vs Buildah vs BuildKit (dockerd's
# builder) in one run on the same machine.  Four projects under bench/real-world/:
#   apt  `apt-get install` of a few packages (curl, jq, procps, gcc, libc6-dev) on a
#        Debian base, then a small C program compiled
#   pip  `pip install -r requirements.txt` (21 pinned packages from PyPI) into a venv
#   npm  `npm ci` of a 155-package lockfile (express, axios, winston, yargs, ...)
#   go   a two-stage Go build (Debian's golang-go; stdlib only), binary copied onto the
#        Debian base
# each built three ways per tool:
#   cold   no build cache (the base images are present)
#   warm   the same context again, everything cached
#   touch  one source file changed (a comment line appended; a different line each
#          round) after the dependency step, so only the steps after it rerun
# Prints every timed run, the medians and the ratios, and writes them as key=value lines
# to bench/results/real-world-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/real-world.sh
#
# Environment knobs:
#   RUNS=3            rounds (each: cold, warm, touch for every project and tool)
#   WARMUP=1          untimed cold builds of every project by every tool first (they fill
#                     the page cache and any caching proxy between this machine and the
#                     package mirrors, so that the first tool timed does not pay for it)
#   PROJECTS="apt pip npm go"   which projects
#   IDLE_WAIT=120     before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`)
#   DEBIAN_ROOT=DIR   a Debian bookworm minbase root (default
#                     target/kiln-fixtures/debian-bookworm-minbase-rootfs, made by
#                     debootstrap when missing)
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   copied into the pip and npm bases: this
#                     machine reaches PyPI and npm through a TLS-intercepting proxy whose
#                     CA only the host trusts (harmless elsewhere)
#   NODE_BIN=/usr/bin/node, NPM_DIR=/usr/lib/node_modules/npm   the host's Node.js, copied
#                     into the npm base (Debian bookworm's npm package pulls ~400 packages)
#   RUNC=/usr/sbin/runc, SKIP_BUILDKIT=1, DOCKER_STORAGE_DRIVER=overlay2, RESULTS_DIR=DIR
#                     as in the other scripts
#
# Base images (untimed, made once per script run by kiln from DEBIAN_ROOT, then saved and
# loaded into Buildah and dockerd): deb:1 (the root as is), py:1 (deb:1 + python3,
# python3-venv, ca-certificates), node:1 (deb:1 + the host's node and npm), gobase:1
# (deb:1 + golang-go).  RUN steps of every tool use the host network (`--network host`;
# dockerd runs with --bridge=none) and fetch from Debian's mirror, PyPI and npm: those
# downloads are part of every cold build, for every tool alike.
#
# What is timed: the wall clock of one client command,
#   kiln      `kiln build -q --network host -t x CTX`
#   buildah   `buildah bud --layers --runtime $RUNC --pull=never --network host -q -t x .`
#   buildkit  `DOCKER_BUILDKIT=1 docker build --network host -q -t x .`
# Cold set-up (untimed): kiln: a fresh KILN_ROOT, the bases pulled from a loopback
# registry and unpacked (a `FROM base` + `RUN true` build each); Buildah: a fresh root, the bases pulled from their oci-archives; BuildKit:
# `docker builder prune -af` and `docker rmi x`.  Tools are interleaved per scenario, the
# first tool of each round rotating (kiln, Buildah, BuildKit first in rounds 1, 2, 3, ...).

set -euo pipefail

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
PROJECTS=${PROJECTS:-apt pip npm go}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
REGISTRY=${REGISTRY:-docker-registry}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
NODE_BIN=${NODE_BIN:-/usr/bin/node}
NPM_DIR=${NPM_DIR:-/usr/lib/node_modules/npm}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
DEBIAN_ROOT=${DEBIAN_ROOT:-$REPO/target/kiln-fixtures/debian-bookworm-minbase-rootfs}

BENCH=real-world
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a non-negative integer"
[[ $IDLE_BUSY =~ ^[0-9]+$ ]] || die "IDLE_BUSY must be a non-negative integer"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
for p in $PROJECTS; do [ -f "$REPO/bench/real-world/$p/Dockerfile" ] || die "unknown project $p"; done
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
command -v "$REGISTRY" >/dev/null || die "$REGISTRY not found (apt-get install docker-registry)"
[ -f "$CA_BUNDLE" ] || die "CA bundle not found at $CA_BUNDLE"
[ -x "$NODE_BIN" ] || die "node not found at $NODE_BIN (set NODE_BIN)"
[ -f "$NPM_DIR/bin/npm-cli.js" ] || die "npm not found in $NPM_DIR (set NPM_DIR)"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io, or SKIP_BUILDKIT=1)"
  [ -x "$DOCKER_CLI" ] || die "docker CLI not found at $DOCKER_CLI"
fi
find_kiln

if [ ! -f "$DEBIAN_ROOT/var/lib/dpkg/status" ]; then
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  log "making the Debian root (debootstrap --variant=minbase, a few minutes)"
  mkdir -p "$(dirname "$DEBIAN_ROOT")"
  tmp=$(mktemp -d "$(dirname "$DEBIAN_ROOT")/debian-minbase-XXXXXX")
  debootstrap --variant=minbase bookworm "$tmp/rootfs" http://deb.debian.org/debian >"$tmp/log" 2>&1 ||
    { tail -n 20 "$tmp/log" >&2; die "debootstrap failed"; }
  mv "$tmp/rootfs" "$DEBIAN_ROOT"
  rm -rf "$tmp"
fi

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /var/tmp/kiln-bench-real.XXXXXX)
DOCKER_DIR=$WORK/docker
DOCKERD_PID=
REG_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  stop_dockerd
  stop_registry
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
cd "$WORK"
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- bases
log "making the base images (untimed)"
start_registry "$WORK/registry"
REG=127.0.0.1:$PORT
export KILN_ROOT=$WORK/kiln-setup
mkdir -p "$WORK/bases/deb" "$WORK/bases/py" "$WORK/bases/node/npm" "$WORK/bases/gobase"
# The Debian root without its apt lists and caches (as Debian's own images ship it).
tar -C "$DEBIAN_ROOT" --exclude=./var/cache/apt/archives/partial -cf - . |
  (mkdir -p "$WORK/bases/deb/rootfs" && tar -C "$WORK/bases/deb/rootfs" -xf -)
rm -rf "$WORK/bases/deb/rootfs/var/lib/apt/lists/"* "$WORK/bases/deb/rootfs/var/cache/apt/"*.bin
printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["bash"]\n' >"$WORK/bases/deb/Dockerfile"
cp "$CA_BUNDLE" "$WORK/bases/py/ca.crt"
cat >"$WORK/bases/py/Dockerfile" <<'EOF'
FROM deb:1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY ca.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1
EOF
cp "$CA_BUNDLE" "$WORK/bases/node/ca.crt"
cp "$NODE_BIN" "$WORK/bases/node/node"
cp -a "$NPM_DIR/." "$WORK/bases/node/npm/"
cat >"$WORK/bases/node/Dockerfile" <<'EOF'
FROM deb:1
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY ca.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
EOF
cat >"$WORK/bases/gobase/Dockerfile" <<'EOF'
FROM deb:1
RUN apt-get update && apt-get install -y --no-install-recommends golang-go ca-certificates \
 && rm -rf /var/lib/apt/lists/*
EOF
BASES=(deb py node gobase)
for b in "${BASES[@]}"; do
  quiet "$KILN_BIN" build -q --network host -t "$b:1" "$WORK/bases/$b"
  quiet "$KILN_BIN" save --format oci -o "$WORK/$b.oci.tar" "$b:1"
  quiet "$KILN_BIN" save --format docker -o "$WORK/$b.docker.tar" "$b:1"
  quiet "$KILN_BIN" push "$b:1" "$REG/$b:1"
done
rm -rf --one-file-system "$KILN_ROOT"

# The projects' contexts, copied so that touching a file leaves the repository alone.
for p in $PROJECTS; do cp -a "$REPO/bench/real-world/$p" "$WORK/ctx-$p"; done
touched_file() {
  case $1 in
    apt) echo app.sh ;; pip) echo app.py ;; npm) echo index.js ;; go) echo main.go ;;
  esac
}
TOUCHES=0
touch_one_file() { # $1: project; a comment line the file did not have before
  local f
  f=$WORK/ctx-$1/$(touched_file "$1")
  TOUCHES=$((TOUCHES + 1))
  case $1 in
    apt | pip) echo "# touched by real-world.sh, change $TOUCHES" >>"$f" ;;
    *) echo "// touched by real-world.sh, change $TOUCHES" >>"$f" ;;
  esac
}

# ---------------------------------------------------------------- tools
kiln_cold() {
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  local b
  for b in "${BASES[@]}"; do
    quiet "$KILN_BIN" pull -q "$REG/$b:1"
    quiet "$KILN_BIN" tag "$REG/$b:1" "$b:1"
    # `kiln pull` stores blobs; a base is unpacked when a build first needs it. Buildah's
    # pull and `docker load` unpack at once, so unpack kiln's here too (untimed).
    mkdir -p "$WORK/unpack-$b"
    printf 'FROM %s:1\nRUN true\n' "$b" >"$WORK/unpack-$b/Dockerfile"
    quiet "$KILN_BIN" build -q --network host "$WORK/unpack-$b"
  done
}
kiln_build() { # $1: project, $2: variable for the seconds
  export KILN_ROOT=$WORK/kiln-root
  timed_into "$2" "$KILN_BIN" build -q --network host -t x "$WORK/ctx-$1"
}

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
buildah_cold() {
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  local b
  for b in "${BASES[@]}"; do quiet bh pull -q "oci-archive:$WORK/$b.oci.tar"; done
}
buildah_build() {
  cd "$WORK/ctx-$1"
  timed_into "$2" bh bud --runtime "$RUNC" --layers --pull=never --network host -q -t x .
  cd "$WORK"
}

buildkit_cold() {
  quiet dk builder prune -af
  dk rmi -f x >/dev/null 2>&1 || true
}
buildkit_build() {
  cd "$WORK/ctx-$1"
  DOCKER_BUILDKIT=1 timed_into "$2" dk build --network host -q -t x .
  cd "$WORK"
}

KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
TOOLS=(kiln buildah)
DOCKER_VERSION="not measured"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "starting a private dockerd ($DOCKER_STORAGE_DRIVER)"
  start_dockerd
  for b in "${BASES[@]}"; do quiet dk load -i "$WORK/$b.docker.tar"; done
  sleep 3
  DOCKER_VERSION="dockerd $(dk version --format '{{.Server.Version}}') (BuildKit builder), storage $DOCKER_STORAGE_DRIVER"
  TOOLS+=(buildkit)
fi

# ---------------------------------------------------------------- measure
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD_START before the benchmark; other work on this machine will skew the numbers"
fi
for ((w = 1; w <= WARMUP; w++)); do
  for p in $PROJECTS; do
    for t in "${TOOLS[@]}"; do
      "${t}_cold"
      "${t}_build" "$p" s
      log "warm-up $p $t cold: ${s}s (discarded)"
    done
  done
done
declare -A TIMES
ALL_TOOLS=("${TOOLS[@]}")
for ((r = 1; r <= RUNS; r++)); do
  # Rotate who goes first.
  k=$(((r - 1) % ${#ALL_TOOLS[@]}))
  TOOLS=("${ALL_TOOLS[@]:k}" "${ALL_TOOLS[@]:0:k}")
  for p in $PROJECTS; do
    for t in "${TOOLS[@]}"; do "${t}_cold"; done
    for t in "${TOOLS[@]}"; do
      "${t}_build" "$p" s
      TIMES[$p.$t.cold]+="$s "
      printf 'run %d %-4s %-9s cold  %8.3f s\n' "$r" "$p" "$t" "$s"
    done
    for t in "${TOOLS[@]}"; do
      "${t}_build" "$p" s
      TIMES[$p.$t.warm]+="$s "
      printf 'run %d %-4s %-9s warm  %8.3f s\n' "$r" "$p" "$t" "$s"
    done
    touch_one_file "$p"
    for t in "${TOOLS[@]}"; do
      "${t}_build" "$p" s
      TIMES[$p.$t.touch]+="$s "
      printf 'run %d %-4s %-9s touch %8.3f s\n' "$r" "$p" "$t" "$s"
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
TOOLS=("${ALL_TOOLS[@]}")

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/real-world-$STAMP.txt
{
  echo "benchmark=real-world"
  machine_lines
  echo "command=bash bench/real-world.sh (RUNS=$RUNS WARMUP=$WARMUP PROJECTS=\"$PROJECTS\" IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "idle_gate_misses=$IDLE_MISSES"
  echo "kiln_bin=$KILN_BIN"
  echo "kiln_version=$KILN_VERSION"
  echo "buildah_version=$BUILDAH_VERSION"
  echo "docker_version=$DOCKER_VERSION"
  for p in $PROJECTS; do
    for s in cold warm touch; do
      for t in "${TOOLS[@]}"; do
        echo "$p.$s.$t.times=${TIMES[$p.$t.$s]% }"
        echo "$p.$s.$t.median_s=$(median <<<"${TIMES[$p.$t.$s]}")"
      done
      k=$(median <<<"${TIMES[$p.kiln.$s]}")
      for t in "${TOOLS[@]}"; do
        [ "$t" = kiln ] && continue
        echo "ratio.$p.$s.kiln/$t=$(ratio "$k" "$(median <<<"${TIMES[$p.$t.$s]}")")"
      done
    done
  done
} | tee "$OUT"
log "summary written to $OUT"
