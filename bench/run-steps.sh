#!/usr/bin/env bash
# Benchmark: N trivial RUN steps (default 20 x `RUN echo step N`) on a busybox base,
# cold build cache, kiln vs Buildah vs BuildKit (dockerd 20.10's builder), all in one
# run on the same machine.  Prints every timed run, the median per tool, the ratios,
# kiln's peak RSS, and writes the same as key=value lines to
# bench/results/run-steps-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/run-steps.sh
#
# Environment knobs:
#   RUNS=5            timed cold runs per tool (median of these is reported)
#   WARMUP=1          untimed runs per tool first (page cache, binaries)
#   STEPS=20          RUN steps in the benchmark Dockerfile
#   RSS_RUNS=3        extra kiln runs under /usr/bin/time -v for peak RSS
#   IDLE_WAIT=120     before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`, then
#                     target/release/kiln)
#   RUNC=/usr/sbin/runc     OCI runtime for Buildah (crun fails on this host's cgroups)
#   BUSYBOX=/bin/busybox    static busybox for the base image (Debian busybox-static)
#   SKIP_BUILDKIT=1   do not start dockerd / measure BuildKit
#   DOCKER_STORAGE_DRIVER=overlay2  graph driver for the private dockerd (vfs also works)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# What is timed, per tool (wall clock of the one client command, nothing else):
#   kiln      `kiln build -q --network host -t x CTX` in a fresh KILN_ROOT into which the
#             busybox base was built (untimed) just before.  Measured twice, as Buildah:
#             `kiln` with `--network host`, `kiln-default` with kiln's default network
#             (a private netns + slirp4netns per RUN).  Both run under kiln's seccomp
#             filter, which is always on.
#   buildah   `buildah --root R --runroot RR bud --runtime $RUNC --layers=false
#             --pull=never [--network host] -q -t x CTX` with a fresh R/RR into which the
#             base was pulled from an oci-archive (untimed) just before.  Measured twice:
#             with `--network host` (same network setup as the others) and with Buildah's
#             default network (a private netns per RUN).
#   buildkit  `DOCKER_BUILDKIT=1 docker build --network host -q -t x CTX` against a private
#             dockerd (started once, base `docker load`ed once); before each run
#             (untimed) `docker builder prune -af` and `docker rmi -f x`.
#             dockerd runs with --bridge=none, so `--network host` is needed (the default
#             bridge network does not exist).
# Runs are interleaved (kiln, buildah-host, buildah-default, buildkit, kiln, ...) so slow
# drifts of the machine hit every tool alike.

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
STEPS=${STEPS:-20}
RSS_RUNS=${RSS_RUNS:-3}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # /usr/local/bin/docker may lack BuildKit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}

BENCH=run-steps
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
TIMED_SYNC=0 # no `sync` before a timed run (docs/benchmarks.md's numbers were made so)

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "STEPS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[[ $RSS_RUNS =~ ^[0-9]+$ ]] || die "RSS_RUNS must be a non-negative integer"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a non-negative integer"
[[ $IDLE_BUSY =~ ^[0-9]+$ ]] || die "IDLE_BUSY must be a non-negative integer"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
"$BUSYBOX" --list >/dev/null || die "$BUSYBOX --list failed"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
for t in findmnt umount awk sort mktemp; do command -v "$t" >/dev/null || die "$t not found"; done
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io, or SKIP_BUILDKIT=1)"
  [ -x "$DOCKER_CLI" ] || die "docker CLI not found at $DOCKER_CLI (apt-get install docker.io, or SKIP_BUILDKIT=1)"
fi
find_kiln

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/kiln-bench-steps.XXXXXX)
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
cd "$WORK" # nothing lands in the caller's directory
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- contexts
BASE_CTX=$WORK/base-ctx
STEPS_CTX=$WORK/steps-ctx
make_base_ctx "$BASE_CTX"
mkdir -p "$STEPS_CTX"
{
  echo 'FROM bb:1'
  for i in $(seq 1 "$STEPS"); do echo "RUN echo step $i"; done
} >"$STEPS_CTX/Dockerfile"

# The base once, as archives for Buildah (oci) and dockerd (docker).
export KILN_ROOT=$WORK/kiln-setup
quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
quiet "$KILN_BIN" save --format docker -o "$WORK/bb.docker.tar" bb:1
rm -rf --one-file-system "$KILN_ROOT"

# ---------------------------------------------------------------- tools
run_kiln() { # $1: host|default. untimed: fresh root + base; timed: the STEPS-RUN build
  local net=()
  [ "$1" = host ] && net=(--network host)
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  timed "$KILN_BIN" build -q "${net[@]}" -t x "$STEPS_CTX"
}

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
run_buildah() { # $1: host|default
  local net=()
  [ "$1" = host ] && net=(--network host)
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
  (cd "$STEPS_CTX" && timed bh bud --runtime "$RUNC" --layers=false --pull=never \
    "${net[@]}" -q -f Dockerfile -t x .)
  quiet bh rmi -a -f
}

run_buildkit() {
  quiet dk builder prune -af
  dk rmi -f x >/dev/null 2>&1 || true
  (cd "$STEPS_CTX" && DOCKER_BUILDKIT=1 timed dk build --network host -q -t x .)
}

# ---------------------------------------------------------------- versions
KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
RUNC_VERSION=$("$RUNC" --version | head -n 1)
TOOLS=(kiln kiln-default buildah-host buildah-default)
DOCKER_VERSION="not measured"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "starting a private dockerd ($DOCKER_STORAGE_DRIVER)"
  start_dockerd
  quiet dk load -i "$WORK/bb.docker.tar"
  sleep 3 # let dockerd finish its start-up work before anything is timed
  DOCKER_VERSION="dockerd $(dk version --format '{{.Server.Version}}') (BuildKit builder), storage $DOCKER_STORAGE_DRIVER"
  TOOLS+=(buildkit)
fi

run_tool() {
  case $1 in
    kiln) run_kiln host ;;
    kiln-default) run_kiln default ;;
    buildah-host) run_buildah host ;;
    buildah-default) run_buildah default ;;
    buildkit) run_buildkit ;;
  esac
}

# ---------------------------------------------------------------- measure
# Other work on the machine skews every number; say so rather than hide it.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD_START before the benchmark; other work on this machine will skew the numbers"
fi
declare -A TIMES
for ((w = 1; w <= WARMUP; w++)); do
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t")
    log "warm-up $t: ${s}s (discarded)"
  done
done
for ((r = 1; r <= RUNS; r++)); do
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t")
    TIMES[$t]+="$s "
    printf 'run %d %-16s %8.3f s\n' "$r" "$t" "$s"
  done
done

# Peak RSS of the kiln build (the process and the children it waited for).
RSS_KB=()
for ((r = 1; r <= RSS_RUNS; r++)); do
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  quiet /usr/bin/time -v -o "$WORK/time-v.txt" "$KILN_BIN" build -q --network host -t x "$STEPS_CTX"
  RSS_KB+=("$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time-v.txt")")
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/run-steps-$STAMP.txt
GIT_REV=$(git_rev)
{
  echo "benchmark=run-steps"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=bash bench/run-steps.sh (RUNS=$RUNS WARMUP=$WARMUP STEPS=$STEPS IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  echo "git=$GIT_REV (of the tree holding this script)"
  echo "kernel=$(uname -r)"
  echo "cpus=$(nproc)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kiln_bin=$KILN_BIN"
  echo "kiln_version=$KILN_VERSION"
  echo "buildah_version=$BUILDAH_VERSION"
  echo "runc_version=$RUNC_VERSION"
  echo "docker_version=$DOCKER_VERSION"
  echo "steps=$STEPS"
  echo "runs=$RUNS"
  for t in "${TOOLS[@]}"; do
    m=$(median <<<"${TIMES[$t]}")
    echo "$t.times=${TIMES[$t]% }"
    echo "$t.median_s=$m"
    echo "$t.range_s=$(minmax <<<"${TIMES[$t]}")"
    awk -v m="$m" -v n="$STEPS" -v t="$t" 'BEGIN { printf "%s.per_step_ms=%.1f\n", t, m * 1000 / n }'
  done
  km=$(median <<<"${TIMES[kiln]}")
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] && continue
    m=$(median <<<"${TIMES[$t]}")
    awk -v a="$m" -v b="$km" -v t="$t" 'BEGIN { printf "ratio.%s/kiln=%.1f\n", t, a / b }'
  done
  if [ -n "${TIMES[kiln-default]:-}" ] && [ -n "${TIMES[buildah-default]:-}" ]; then
    awk -v a="$(median <<<"${TIMES[buildah-default]}")" -v b="$(median <<<"${TIMES[kiln-default]}")" \
      'BEGIN { printf "ratio.buildah-default/kiln-default=%.1f\n", a / b }'
  fi
  awk -v m="$km" -v n="$STEPS" 'BEGIN { lim = 0.3 * n / 20;
    printf "goal=kiln median <= %.3f s: %s\n", lim, (m <= lim ? "met" : "NOT met") }'
  echo "kiln.max_rss_kb=${RSS_KB[*]:-not measured}"
} | tee "$OUT"
log "summary written to $OUT"
