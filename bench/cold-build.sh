#!/usr/bin/env bash
# Benchmark: cold build of a large context (default 20,000 small files + 100 MB of
# binaries, ~270 MB) with `COPY . /app` and one RUN, exported to an oci-archive,
# kiln vs Buildah vs BuildKit (dockerd 20.10's builder), all in one run on the same
# machine.  Prints every timed run, the medians per tool, the ratios and kiln's peak
# RSS, and writes the same as key=value lines to bench/results/cold-build-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/cold-build.sh
#
# Environment knobs:
#   RUNS=5            timed rounds (median of these is reported)
#   WARMUP=1          untimed rounds first (page cache, binaries)
#   DIRS=200 FILES_PER_DIR=100 SMALL_BYTES=8500 BINS=10 BIN_BYTES=10000000
#                     the context, as in bench/noop-rebuild.sh
#   GOAL_S=4          goal for kiln's median (seconds); GOAL_RSS_MB=64 for its peak RSS
#   SETTLE=65         seconds to wait after each round's clean-up before timing (see below)
#   IDLE_WAIT=120     before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`, then
#                     target/release/kiln)
#   RUNC=/usr/sbin/runc     OCI runtime for Buildah (crun fails on this host's cgroups)
#   BUSYBOX=/bin/busybox    static busybox for the base image (Debian busybox-static)
#   SKIP_BUILDKIT=1   do not start dockerd / measure BuildKit
#   DOCKER_STORAGE_DRIVER=overlay2  graph driver for the private dockerd
#   DOCKER_CLI=/usr/bin/docker      docker CLI with BuildKit support
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# What is timed, per tool (wall clock of the client command(s), nothing else), each
# with its state made fresh before the round (untimed):
#   kiln      `/usr/bin/time -v kiln build -q -o type=oci,dest=OUT CTX` with a fresh
#             KILN_ROOT holding only the busybox base (bb:1, built into a template root
#             once and copied).  time -v gives the peak RSS of every run.
#   buildah   `buildah --root R --runroot RR bud --runtime $RUNC --pull=never
#             --network host -q -t x .` in CTX, then `buildah push x oci-archive:OUT`;
#             fresh R/RR into which the base was pulled from an oci-archive.
#   buildkit  `DOCKER_BUILDKIT=1 docker build --network host -o type=oci,dest=OUT .`
#             in CTX against a private dockerd (--iptables=false --bridge=none, started
#             once, base `docker load`ed once), after `docker builder prune -af`.  If
#             that docker cannot export an oci tarball, `docker build -q -t x .` +
#             `docker save -o OUT x` is timed instead, and the results say so.
# Rounds are interleaved (kiln, buildah, buildkit) so that slow drifts hit every tool.
#
# Clean-up and SETTLE: each round first removes the previous round's state of every
# tool (roots, archives, BuildKit's cache), runs `sync`, and waits SETTLE seconds before
# anything is timed.  On ext4 without a journal (as here) the inode allocator skips
# inodes freed less than a minute ago (longer while their table block is dirty), so
# creating 20,000 files right after deleting as many costs seconds more, for any tool;
# the wait keeps one tool's clean-up out of the next one's time.

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
DIRS=${DIRS:-200}
FILES_PER_DIR=${FILES_PER_DIR:-100}
SMALL_BYTES=${SMALL_BYTES:-8500}
BINS=${BINS:-10}
BIN_BYTES=${BIN_BYTES:-10000000}
GOAL_S=${GOAL_S:-4}
GOAL_RSS_MB=${GOAL_RSS_MB:-64}
SETTLE=${SETTLE:-65}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # /usr/local/bin/docker may lack BuildKit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
BENCH=cold-build
WORK=$(mktemp -d /tmp/kiln-bench-cold.XXXXXX)
DOCKER_DIR=$WORK/docker
DOCKERD_PID=
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

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
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK" # nothing lands in the caller's directory

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
for v in RUNS DIRS FILES_PER_DIR SMALL_BYTES BIN_BYTES; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
for v in WARMUP BINS SETTLE IDLE_WAIT IDLE_BUSY GOAL_RSS_MB; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
[[ $GOAL_S =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "GOAL_S must be a number of seconds"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
for t in findmnt umount awk sort split base64 head truncate find sync tar gzip; do
  command -v "$t" >/dev/null || die "$t not found"
done
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io, or SKIP_BUILDKIT=1)"
  [ -x "$DOCKER_CLI" ] || die "docker CLI not found at $DOCKER_CLI (or SKIP_BUILDKIT=1)"
fi
find_kiln

# ---------------------------------------------------------------- inputs
BASE_CTX=$WORK/base-ctx
CTX=$WORK/ctx
make_base_ctx "$BASE_CTX"
log "making the context ($DIRS x $FILES_PER_DIR files of $SMALL_BYTES bytes, $BINS x $BIN_BYTES bytes of binaries)"
make_big_ctx "$CTX"
CTX_FILES=$(find "$CTX" -type f | wc -l)
CTX_APPARENT=$(find "$CTX" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }')
log "context: $CTX_FILES files, $CTX_APPARENT bytes"

# The base, once: a kiln root to copy for every kiln run, archives for the others.
TEMPLATE=$WORK/kiln-template
KILN_ROOT=$TEMPLATE quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
KILN_ROOT=$TEMPLATE quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
KILN_ROOT=$TEMPLATE quiet "$KILN_BIN" save --format docker -o "$WORK/bb.docker.tar" bb:1

# ---------------------------------------------------------------- tools
# Every tool's state for round r lives in $WORK/r$r/<tool>; OUT is its archive.
state() { echo "$WORK/r$1/$2"; }

prepare_kiln() { # $1: round
  local s
  s=$(state "$1" kiln)
  mkdir -p "$s"
  cp -a "$TEMPLATE" "$s/root"
}
run_kiln() { # $1: round
  local s
  s=$(state "$1" kiln)
  KILN_ROOT=$s/root /usr/bin/time -v -o "$s/time-v.txt" \
    "$KILN_BIN" build -q -o "type=oci,dest=$s/out.tar" "$CTX"
}

bh() { buildah --root "$BH_S/root" --runroot "$BH_S/runroot" "$@"; }
prepare_buildah() {
  BH_S=$(state "$1" buildah)
  mkdir -p "$BH_S/root" "$BH_S/runroot"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
}
run_buildah() {
  BH_S=$(state "$1" buildah)
  (cd "$CTX" && bh bud --runtime "$RUNC" --pull=never --network host -q -t x . &&
    bh push -q x "oci-archive:$BH_S/out.tar:x")
}

BUILDKIT_MODE="not measured"
run_buildkit() {
  local s
  s=$(state "$1" buildkit)
  mkdir -p "$s"
  if [ "$BUILDKIT_MODE" = oci ]; then
    (cd "$CTX" && DOCKER_BUILDKIT=1 dk build --network host -q -o "type=oci,dest=$s/out.tar" .)
  else
    (cd "$CTX" && DOCKER_BUILDKIT=1 dk build --network host -q -t x . && dk save -o "$s/out.tar" x)
  fi
}
prepare_buildkit() {
  quiet dk builder prune -af
  dk rmi -f x >/dev/null 2>&1 || true
}

KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
TOOLS=(kiln buildah)
DOCKER_VERSION="not measured"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "starting a private dockerd ($DOCKER_STORAGE_DRIVER)"
  start_dockerd
  quiet dk load -i "$WORK/bb.docker.tar"
  DOCKER_VERSION="dockerd $(dk version --format '{{.Server.Version}}') (BuildKit builder), storage $DOCKER_STORAGE_DRIVER"
  # Can this docker write an oci tarball?  Try on a two-line build.
  mkdir -p "$WORK/probe"
  printf 'FROM bb:1\nRUN true\n' >"$WORK/probe/Dockerfile"
  if (cd "$WORK/probe" && DOCKER_BUILDKIT=1 dk build --network host -q -o "type=oci,dest=$WORK/probe.tar" .) \
    >"$WORK/probe.log" 2>&1 && tar -tf "$WORK/probe.tar" | grep -q '^index.json$'; then
    BUILDKIT_MODE=oci
  else
    BUILDKIT_MODE=save
    log "this docker cannot write -o type=oci ($(tail -n 1 "$WORK/probe.log")); timing docker build + docker save"
  fi
  TOOLS+=(buildkit)
fi

# ---------------------------------------------------------------- measure
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A TIMES
RSS_KB=()
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  # Clean-up of the previous round, then the wait (see the header), then fresh state.
  unmount_under "$WORK/r$((r - 1))"
  rm -rf --one-file-system "$WORK/r$((r - 1))"
  [ "$SKIP_BUILDKIT" = 1 ] || prepare_buildkit
  sync
  if [ "$SETTLE" -gt 0 ]; then
    log "round $r: settling for ${SETTLE}s after the clean-up"
    sleep "$SETTLE"
  fi
  prepare_kiln "$r"
  prepare_buildah "$r"
  for t in "${TOOLS[@]}"; do
    timed_into s "run_$t" "$r"
    if [ "$t" = kiln ]; then
      rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$(state "$r" kiln)/time-v.txt")
    fi
    if [ "$r" -le 0 ]; then
      log "warm-up $t: ${s}s (discarded)"
    else
      TIMES[$t]+="$s "
      if [ "$t" = kiln ]; then
        RSS_KB+=("$rss")
        printf 'run %d %-9s %8.3f s  (peak RSS %d KiB)\n' "$r" "$t" "$s" "$rss"
      else
        printf 'run %d %-9s %8.3f s\n' "$r" "$t" "$s"
      fi
    fi
  done
  LAST=$r
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Evidence: kiln's last archive holds valid gzip layers (gzip -t on each).
KOUT=$(state "$LAST" kiln)/out.tar
LAYERS_OK=0
for b in $(tar -tf "$KOUT" | grep '^blobs/sha256/.'); do
  magic=$( (tar -xOf "$KOUT" "$b" || true) | head -c 2 | od -An -tx1 | tr -d ' \n')
  if [ "$magic" = 1f8b ]; then
    tar -xOf "$KOUT" "$b" | gzip -t || die "FAIL: $b in kiln's archive is not valid gzip"
    LAYERS_OK=$((LAYERS_OK + 1))
  fi
done
[ "$LAYERS_OK" -ge 2 ] || die "FAIL: kiln's archive has $LAYERS_OK gzip layers, expected 2 or more"
KILN_OUT_BYTES=$(stat -c %s "$KOUT")

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/cold-build-$STAMP.txt
RSS_MAX=$(printf '%s\n' "${RSS_KB[@]}" | sort -n | tail -n 1)
{
  echo "benchmark=cold-build"
  echo "command=bash bench/cold-build.sh (RUNS=$RUNS WARMUP=$WARMUP DIRS=$DIRS FILES_PER_DIR=$FILES_PER_DIR SMALL_BYTES=$SMALL_BYTES BINS=$BINS BIN_BYTES=$BIN_BYTES SETTLE=$SETTLE IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  machine_lines
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "idle_gate_timeouts=$IDLE_MISSES"
  echo "kiln_bin=$KILN_BIN"
  echo "kiln_version=$KILN_VERSION"
  echo "buildah_version=$BUILDAH_VERSION"
  echo "runc_version=$("$RUNC" --version | head -n 1)"
  echo "docker_version=$DOCKER_VERSION"
  case $BUILDKIT_MODE in
    oci) echo "buildkit.timed=docker build --network host -q -o type=oci,dest=OUT ." ;;
    save) echo "buildkit.timed=docker build --network host -q -t x . && docker save -o OUT x (this docker has no oci exporter)" ;;
    *) echo "buildkit.timed=$BUILDKIT_MODE" ;;
  esac
  echo "context.files=$CTX_FILES"
  echo "context.content_bytes=$CTX_APPARENT"
  echo "kiln.archive_bytes=$KILN_OUT_BYTES"
  echo "kiln.archive_gzip_layers_checked=$LAYERS_OK"
  echo "runs=$RUNS"
  for t in "${TOOLS[@]}"; do
    echo "$t.times=${TIMES[$t]% }"
    echo "$t.median_s=$(median <<<"${TIMES[$t]}")"
    echo "$t.range_s=$(minmax <<<"${TIMES[$t]}")"
  done
  km=$(median <<<"${TIMES[kiln]}")
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] || echo "ratio.$t/kiln=$(ratio "$(median <<<"${TIMES[$t]}")" "$km")"
  done
  echo "kiln.max_rss_kb=${RSS_KB[*]}"
  awk -v m="$km" -v lim="$GOAL_S" 'BEGIN {
    printf "goal=kiln median <= %s s: %s\n", lim, (m <= lim ? "met" : "NOT met") }'
  awk -v m="$RSS_MAX" -v lim="$GOAL_RSS_MB" 'BEGIN {
    printf "goal=kiln peak RSS <= %s MB: %s (max %.1f MiB)\n", lim, (m <= lim * 1024 ? "met" : "NOT met"), m / 1024 }'
} | tee "$OUT"
log "summary written to $OUT"
