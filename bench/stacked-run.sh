#!/usr/bin/env bash
# Benchmark of stacked snapshots (issue 20 item 0), kiln vs Buildah vs BuildKit (dockerd
# 20.10's builder) in one run on the same machine:
#
#   copy-run      a RUN step after a 20k-file layer: `FROM bb:1`, `ADD files.tar /files/`
#                 (20,000 small files, extracted by every tool), `RUN echo <nonce>`. The
#                 ADD is cached (built untimed before); the timed build runs the RUN only.
#                 Reported: the build's time, the time of the same build fully cached
#                 (`noop`), and their difference (what the RUN step costs).
#   debian-steps  20 trivial steps (`RUN echo step N`) on a Debian bookworm base
#                 (debootstrap --variant=minbase, the tests' fixture), cold build cache;
#                 the base is pulled / loaded / unpacked untimed first.
#
# Usage (as root):  nice -n -19 bash bench/stacked-run.sh
#
# Environment knobs:
#   RUNS=5  WARMUP=1  FILES=20000  STEPS=20
#   DEBIAN_LAYOUT=DIR   OCI layout holding `bookworm` (default: target/kiln-fixtures/
#                       debian-bookworm-oci, made by `cargo test --test it -- debian::`)
#   KILN_BIN=PATH  RUNC=/usr/sbin/runc  BUSYBOX=/bin/busybox  SKIP_BUILDKIT=1
#   IDLE_WAIT=0  IDLE_BUSY=10  (the idle gate of lib.sh; off by default: the machine is shared)
#   RESULTS_DIR=DIR
#
# What is timed (wall clock of the one client command):
#   kiln      `kiln build -q --network host -t x CTX` (debian-steps: `--no-cache`, on a
#             root where the base's snapshot was unpacked by an untimed build)
#   buildah   `buildah bud --runtime $RUNC --network host --pull=never -q -t x .`
#             (copy-run: `--layers`, so the ADD is cached; debian-steps: `--layers=false`)
#   buildkit  `DOCKER_BUILDKIT=1 docker build --network host -q -t x .` against a private
#             dockerd (debian-steps: `docker builder prune -af` before each run)

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
FILES=${FILES:-20000}
STEPS=${STEPS:-20}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
DEBIAN_LAYOUT=${DEBIAN_LAYOUT:-$REPO/target/kiln-fixtures/debian-bookworm-oci}

BENCH=stacked-run
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
TIMED_SYNC=0

[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
[ -f "$DEBIAN_LAYOUT/index.json" ] || die "no Debian OCI layout at $DEBIAN_LAYOUT (run the tests' debian fixture, or set DEBIAN_LAYOUT)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"
[ -x "$RUNC" ] || die "runc not found at $RUNC"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (or SKIP_BUILDKIT=1)"
fi
find_kiln

WORK=$(mktemp -d /tmp/kiln-bench-stacked.XXXXXX)
DOCKER_DIR=$WORK/docker
DOCKERD_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  stop_dockerd
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
cd "$WORK"
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- contexts and bases
BASE_CTX=$WORK/base-ctx
make_base_ctx "$BASE_CTX"
COPY_CTX=$WORK/copy-ctx
mkdir -p "$COPY_CTX/files"
(cd "$COPY_CTX/files" && for d in $(seq 0 99); do
  mkdir "d$d"
  for f in $(seq 1 $((FILES / 100))); do echo "$d $f" >"d$d/f$f"; done
done)
tar -C "$COPY_CTX" -cf "$COPY_CTX/files.tar" files
rm -rf "$COPY_CTX/files"
copy_dockerfile() { printf 'FROM bb:1\nADD files.tar /files/\n%s' "${1:-}" >"$COPY_CTX/Dockerfile"; }
DEB_CTX=$WORK/deb-ctx
mkdir -p "$DEB_CTX"
{
  echo "FROM deb:1"
  for i in $(seq 1 "$STEPS"); do echo "RUN echo step $i"; done
} >"$DEB_CTX/Dockerfile"

export KILN_ROOT=$WORK/kiln-setup
quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
quiet "$KILN_BIN" save --format docker -o "$WORK/bb.docker.tar" bb:1
rm -rf --one-file-system "$KILN_ROOT"
quiet skopeo copy -q "oci:$DEBIAN_LAYOUT:bookworm" "oci-archive:$WORK/deb.oci.tar:deb:1"
quiet skopeo copy -q "oci:$DEBIAN_LAYOUT:bookworm" "docker-archive:$WORK/deb.docker.tar:deb:1"
mkdir -p "$WORK/deb-base-ctx"
printf 'FROM oci-layout://%s:bookworm\nRUN true\n' "$DEBIAN_LAYOUT" >"$WORK/deb-base-ctx/Dockerfile"

# ---------------------------------------------------------------- tools
nonce() { echo "RUN echo run-${EPOCHREALTIME/./}"; } # a new RUN each time (never cached)

kiln_root() { # a fresh root with both bases (the Debian one unpacked)
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  quiet "$KILN_BIN" build -q --network host -t deb:1 "$WORK/deb-base-ctx"
}
kiln_copy_run() { # $1: run|noop
  copy_dockerfile
  quiet "$KILN_BIN" build -q --network host -t x "$COPY_CTX"
  [ "$1" = run ] && copy_dockerfile "$(nonce)"
  timed "$KILN_BIN" build -q --network host -t x "$COPY_CTX"
}
kiln_debian() { timed "$KILN_BIN" build -q --no-cache --network host -t x "$DEB_CTX"; }

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
buildah_root() {
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
  quiet bh pull -q "oci-archive:$WORK/deb.oci.tar"
}
buildah_copy_run() {
  copy_dockerfile
  (cd "$COPY_CTX" && quiet bh bud --runtime "$RUNC" --layers --pull=never --network host -q -t x .)
  [ "$1" = run ] && copy_dockerfile "$(nonce)"
  (cd "$COPY_CTX" && timed bh bud --runtime "$RUNC" --layers --pull=never --network host -q -t x .)
}
buildah_debian() {
  (cd "$DEB_CTX" && timed bh bud --runtime "$RUNC" --layers=false --pull=never --network host -q -t x .)
}

# dockerd 20.10 here fails a RUN now and then on its own (`stat /bin/sh: no such file or
# directory` from runc, also seen by tests/it/cachemount.rs): such a run is repeated, at
# most three times, and only the run that completed is timed.
bk_retry() { # $1: context dir; the rest: the untimed preparation to repeat before each try
  local ctx=$1 a s
  shift
  for a in 1 2 3; do
    "$@"
    if s=$(cd "$ctx" && DOCKER_BUILDKIT=1 timed dk build --network host -q -t x .); then
      echo "$s"
      return 0
    fi
    log "docker build failed (attempt $a), once more"
  done
  return 1
}
bk_prepare_copy() { # $1: run|noop
  copy_dockerfile
  (cd "$COPY_CTX" && DOCKER_BUILDKIT=1 dk build --network host -q -t x . >/dev/null 2>&1) || true
  [ "$1" = run ] && copy_dockerfile "$(nonce)"
  return 0
}
buildkit_copy_run() { bk_retry "$COPY_CTX" bk_prepare_copy "$1"; }
bk_prepare_debian() {
  quiet dk builder prune -af
  dk rmi -f x >/dev/null 2>&1 || true
}
buildkit_debian() { bk_retry "$DEB_CTX" bk_prepare_debian; }

TOOLS=(kiln buildah)
DOCKER_VERSION="not measured"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "starting a private dockerd ($DOCKER_STORAGE_DRIVER)"
  start_dockerd
  quiet dk load -i "$WORK/bb.docker.tar"
  quiet dk load -i "$WORK/deb.docker.tar"
  sleep 3
  DOCKER_VERSION="dockerd $(dk version --format '{{.Server.Version}}') (BuildKit builder), storage $DOCKER_STORAGE_DRIVER"
  TOOLS+=(buildkit)
fi
kiln_root
buildah_root

# ---------------------------------------------------------------- measure
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A T
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  for t in "${TOOLS[@]}"; do
    for s in run noop debian; do
      case $s in
        debian) v=$("${t}_debian") ;;
        *) v=$("${t}_copy_run" "$s") ;;
      esac
      if [ "$r" -ge 1 ]; then
        T[$t.$s]+="$v "
        printf 'run %d %-9s %-7s %8.3f s\n' "$r" "$t" "$s" "$v"
      fi
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/stacked-run-$STAMP.txt
{
  echo "benchmark=stacked-run"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=nice -n -19 bash bench/stacked-run.sh (RUNS=$RUNS WARMUP=$WARMUP FILES=$FILES STEPS=$STEPS)"
  echo "git=$(git_rev)"
  echo "kernel=$(uname -r) cpus=$(nproc)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "kiln_version=$("$KILN_BIN" --version)"
  echo "buildah_version=$(buildah --version)"
  echo "docker_version=$DOCKER_VERSION"
  for t in "${TOOLS[@]}"; do
    for s in run noop debian; do
      echo "$t.$s.times=${T[$t.$s]% }"
      echo "$t.$s.median_s=$(median <<<"${T[$t.$s]}")"
    done
    awk -v a="$(median <<<"${T[$t.run]}")" -v b="$(median <<<"${T[$t.noop]}")" -v t="$t" \
      'BEGIN { printf "%s.run_step_s=%.3f\n", t, a - b }'
  done
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] && continue
    for s in run debian; do
      awk -v a="$(median <<<"${T[$t.$s]}")" -v b="$(median <<<"${T[kiln.$s]}")" -v n="$t/kiln.$s" \
        'BEGIN { printf "ratio.%s=%.2f\n", n, a / b }'
    done
  done
} | tee "$OUT"
log "summary written to $OUT"
