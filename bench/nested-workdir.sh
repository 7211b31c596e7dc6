#!/usr/bin/env bash
# Benchmark: STEPS nested `WORKDIR d` steps (default 1,000) on a busybox base, each one
# directory deeper than the last (issue 18 item 15), cold build cache.  What matters is
# whether a step's cost grows with its depth: the script reports the median time of the
# first WINDOW steps and of the last WINDOW steps, their ratio, and the total, for one or
# two kiln binaries and for Buildah, all in one run on the same machine.  Writes the same
# as key=value lines to bench/results/nested-workdir-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/nested-workdir.sh
#
# Environment knobs:
#   STEPS=1000        WORKDIR steps in the benchmark Dockerfile
#   WINDOW=50         steps in the "start" (1..WINDOW) and "end" (last WINDOW) medians
#   IDLE_WAIT=120     before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   KILN_BIN=PATH     kiln binary to measure (default: `cargo build --release`, then
#                     target/release/kiln)
#   KILN_BASELINE=PATH  a second kiln binary measured the same way (e.g. main's build);
#                     reported as kiln-baseline
#   SKIP_BUILDAH=1    do not measure Buildah
#   RUNC=/usr/sbin/runc     OCI runtime for Buildah
#   BUSYBOX=/bin/busybox    static busybox for the base image (Debian busybox-static)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# What is timed:
#   kiln      `kiln build --progress rawjson -t x CTX` in a fresh KILN_ROOT into which the
#             busybox base was built (untimed) just before; a step's time is the
#             `elapsed` of its vertex (µs resolution), the total is the command's wall clock.
#   buildah   `buildah --root R --runroot RR bud --runtime $RUNC --layers=false
#             --pull=never -f Dockerfile -t x .` with a fresh R/RR into which the base
#             was pulled from an oci-archive (untimed); a step's time is the time between
#             its `STEP k/N:` line and the next line Buildah prints (each output line is
#             stamped as it arrives), the total is the command's wall clock.
# One run per tool (a 1,000-step build of the old code takes minutes).

set -euo pipefail

STEPS=${STEPS:-1000}
WINDOW=${WINDOW:-50}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDAH=${SKIP_BUILDAH:-0}
KILN_BASELINE=${KILN_BASELINE:-}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}

BENCH=nested-workdir
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (Buildah needs it)"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "STEPS must be a positive integer"
[[ $WINDOW =~ ^[1-9][0-9]*$ ]] || die "WINDOW must be a positive integer"
[ $((2 * WINDOW)) -le "$STEPS" ] || die "WINDOW must be at most STEPS/2"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a non-negative integer"
[[ $IDLE_BUSY =~ ^[0-9]+$ ]] || die "IDLE_BUSY must be a non-negative integer"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
if [ "$SKIP_BUILDAH" != 1 ]; then
  command -v buildah >/dev/null || die "buildah not found (apt-get install buildah, or SKIP_BUILDAH=1)"
  [ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
fi
for t in findmnt umount awk sort mktemp; do command -v "$t" >/dev/null || die "$t not found"; done
find_kiln
if [ -n "$KILN_BASELINE" ]; then
  [ -x "$KILN_BASELINE" ] || die "KILN_BASELINE is not an executable: $KILN_BASELINE"
  KILN_BASELINE=$(realpath "$KILN_BASELINE")
fi

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/kiln-bench-nested.XXXXXX)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
cd "$WORK"
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- contexts
BASE_CTX=$WORK/base-ctx
CTX=$WORK/ctx
make_base_ctx "$BASE_CTX"
mkdir -p "$CTX"
{
  echo 'FROM bb:1'
  for ((i = 0; i < STEPS; i++)); do echo 'WORKDIR d'; done
} >"$CTX/Dockerfile"

# ---------------------------------------------------------------- per-step times
# From a file of per-step seconds (one a line, in step order): start median, end
# median, their ratio.
window_stats() {
  local f=$1 start end
  start=$(head -n "$WINDOW" "$f" | median)
  end=$(tail -n "$WINDOW" "$f" | median)
  echo "$start $end $(awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f\n", (b > 0 ? a / b : 0) }')"
}

run_kiln() { # $1: binary, $2: file for the per-step times; prints the total seconds
  local bin=$1 steps=$2 total
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  quiet "$bin" build -q -t bb:1 "$BASE_CTX"
  timed_into total "$bin" build --progress rawjson -t x "$CTX"
  # The WORKDIR vertices' `elapsed`, in the order they finished (= step order).
  awk '/"event":"started"/ && /WORKDIR d/ { match($0, /"vertex":[0-9]+/); w[substr($0, RSTART + 9, RLENGTH - 9)] = 1 }
       /"event":"done"/ { match($0, /"vertex":[0-9]+/); v = substr($0, RSTART + 9, RLENGTH - 9)
         if (v in w) { match($0, /"elapsed":[0-9.e-]+/); print substr($0, RSTART + 10, RLENGTH - 10) } }' \
    "$WORK/last.log" >"$steps"
  [ "$(wc -l <"$steps")" = "$STEPS" ] || die "expected $STEPS WORKDIR timings from $bin, got $(wc -l <"$steps")"
  echo "$total"
}

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
stamp_lines() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
run_buildah() { # $1: file for the per-step times; prints the total seconds
  local steps=$1 total
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
  # shellcheck disable=SC2016 # the inner shell expands these
  timed_into total bash -c 'cd "$1" && set -o pipefail && buildah --root "$2" --runroot "$3" bud \
      --runtime "$4" --layers=false --pull=never -f Dockerfile -t x . 2>&1 | "$5"' \
    _ "$CTX" "$BH_ROOT" "$BH_RUNROOT" "$RUNC" "$WORK/stamp.sh"
  # A step lasts from its STEP line to the next line (the next STEP, or the commit's).
  awk 'prev != "" { printf "%.6f\n", $1 - prev; prev = "" } / STEP [0-9]+\/[0-9]+: WORKDIR d/ { prev = $1 }' \
    "$WORK/last.log" >"$steps"
  [ "$(wc -l <"$steps")" = "$STEPS" ] || die "expected $STEPS WORKDIR timings from Buildah, got $(wc -l <"$steps")"
  quiet bh rmi -a -f
  echo "$total"
}
{
  echo '#!/usr/bin/env bash'
  declare -f stamp_lines
  echo 'stamp_lines'
} >"$WORK/stamp.sh"
chmod +x "$WORK/stamp.sh"

# ---------------------------------------------------------------- measure
TOOLS=(kiln)
[ -n "$KILN_BASELINE" ] && TOOLS+=(kiln-baseline)
if [ "$SKIP_BUILDAH" != 1 ]; then
  export KILN_ROOT=$WORK/kiln-setup
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
  rm -rf --one-file-system "$KILN_ROOT"
  TOOLS+=(buildah)
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A TOTAL STATS
for t in "${TOOLS[@]}"; do
  case $t in
    kiln) timed_total=$(run_kiln "$KILN_BIN" "$WORK/steps-$t") ;;
    kiln-baseline) timed_total=$(run_kiln "$KILN_BASELINE" "$WORK/steps-$t") ;;
    buildah) timed_total=$(run_buildah "$WORK/steps-$t") ;;
  esac
  TOTAL[$t]=$timed_total
  STATS[$t]=$(window_stats "$WORK/steps-$t")
  read -r s e r <<<"${STATS[$t]}"
  printf '%-14s total %9.3f s   steps 1-%d median %.4f s   last %d median %.4f s   end/start %s\n' \
    "$t" "$timed_total" "$WINDOW" "$s" "$WINDOW" "$e" "$r"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/nested-workdir-$STAMP.txt
{
  echo "benchmark=nested-workdir"
  echo "command=bash bench/nested-workdir.sh (STEPS=$STEPS WINDOW=$WINDOW IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  machine_lines
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "kiln_bin=$KILN_BIN"
  [ -n "$KILN_BASELINE" ] && echo "kiln_baseline_bin=$KILN_BASELINE"
  [ "$SKIP_BUILDAH" != 1 ] && echo "buildah_version=$(buildah --version)"
  echo "steps=$STEPS"
  for t in "${TOOLS[@]}"; do
    read -r s e r <<<"${STATS[$t]}"
    echo "$t.total_s=${TOTAL[$t]}"
    echo "$t.first${WINDOW}_median_s=$s"
    echo "$t.last${WINDOW}_median_s=$e"
    echo "$t.end_over_start=$r"
  done
} | tee "$OUT"
log "summary written to $OUT"
