#!/usr/bin/env bash
# Benchmark: no-op rebuild of a large build context (default 20,000 small files + 100 MB
# of binaries, ~270 MB) with `COPY . /app` and one RUN, warm build cache, kiln vs Buildah
# vs BuildKit (dockerd 20.10's builder), all in one run on the same machine.  Also times
# a rebuild after one small file changed, and checks from kiln's progress output that
# such a rebuild reads only that file.  Prints every timed run, the medians per tool, the
# ratios, and writes the same as key=value lines to
# bench/results/noop-rebuild-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/noop-rebuild.sh
#
# Environment knobs:
#   RUNS=5            timed rounds (median of these is reported)
#   WARMUP=1          untimed rounds first (page cache, binaries)
#   DIRS=200          directories of small files in the context
#   FILES_PER_DIR=100 small files per directory
#   SMALL_BYTES=8500  size of each small file (base64 text)
#   BINS=10           binary files (random bytes) in the context
#   BIN_BYTES=10000000  size of each binary file
#   GOAL_S=0.15       goal for kiln's median no-op rebuild (seconds)
#   RSS_RUNS=1        extra kiln no-op rebuilds under /usr/bin/time -v for peak RSS
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
# The context (made once per script run in the work dir): DIRS x FILES_PER_DIR small
# files d000/f000.txt ..., BINS binaries bin/blob00.bin ..., and the Dockerfile
#   FROM bb:1 / COPY . /app / RUN ls /app | wc -l
# where bb:1 is a busybox base made exactly as in bench/run-steps.sh.
#
# Set-up per tool (untimed, once): a fresh store holding the base, then one full build
# of the context (fills the tool's build cache).  What is timed, per tool (wall clock of
# the one client command, nothing else):
#   kiln      `kiln build -q -t x CTX` (KILN_ROOT = the tool's root)
#   kiln-oci  `kiln build -q -o type=oci,dest=OUT CTX` (a second kiln root of its own)
#   buildah   `buildah --root R --runroot RR bud --layers --runtime $RUNC --pull=never
#             --network host -q -t x .` in CTX (`--layers`: use the build cache)
#   buildkit  `DOCKER_BUILDKIT=1 docker build --network host -q -t x .` in CTX against a
#             private dockerd (started once, base `docker load`ed once, never pruned).
#             dockerd runs with --bridge=none, so `--network host` is needed.
# Each round: append a line to one small file (a different file every round), then per
# tool a timed "one-file change" rebuild, then per tool a timed no-op rebuild of the
# unchanged context.  So every tool's change rebuild sees exactly one file changed since
# its previous build, and every no-op rebuild sees none.  Tools are interleaved (kiln,
# buildah, buildkit) within each half of a round so slow drifts hit every tool alike.
# Before each timed run: `sync` (so the previous build's writeback does not land in it)
# and the idle gate.
#
# Evidence (untimed, kiln): right after kiln's full build, `kiln build --progress=plain`
# of the unchanged context (the line `#N <n> files checked, <m> read` of its vertex
# "[internal] load build context", called "[internal] checksum build context" before
# commit 0274c18, should say `0 read`), then one file changed and the same again: the
# line must say `1 read`, or the script stops.  The same check is repeated after the
# timed rounds.  The incremental COPY's line (`N files shared with the previous result`)
# of the same builds is reported too.

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
DIRS=${DIRS:-200}
FILES_PER_DIR=${FILES_PER_DIR:-100}
SMALL_BYTES=${SMALL_BYTES:-8500}
BINS=${BINS:-10}
BIN_BYTES=${BIN_BYTES:-10000000}
GOAL_S=${GOAL_S:-0.15}
RSS_RUNS=${RSS_RUNS:-1}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # /usr/local/bin/docker may lack BuildKit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}

BENCH=noop-rebuild
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[[ $DIRS =~ ^[1-9][0-9]*$ && $DIRS -le 1000 ]] || die "DIRS must be 1..1000"
[[ $FILES_PER_DIR =~ ^[1-9][0-9]*$ && $FILES_PER_DIR -le 1000 ]] ||
  die "FILES_PER_DIR must be 1..1000"
[[ $SMALL_BYTES =~ ^[1-9][0-9]*$ ]] || die "SMALL_BYTES must be a positive integer"
[[ $BINS =~ ^[0-9]+$ && $BINS -le 100 ]] || die "BINS must be 0..100"
[[ $BIN_BYTES =~ ^[1-9][0-9]*$ ]] || die "BIN_BYTES must be a positive integer"
[[ $GOAL_S =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "GOAL_S must be a number of seconds"
[[ $RSS_RUNS =~ ^[0-9]+$ ]] || die "RSS_RUNS must be a non-negative integer"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a non-negative integer"
[[ $IDLE_BUSY =~ ^[0-9]+$ ]] || die "IDLE_BUSY must be a non-negative integer"
# Every round (and the two evidence checks) changes a different file.
[ $((WARMUP + RUNS + 2)) -le "$DIRS" ] || die "WARMUP + RUNS + 2 must be <= DIRS"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
"$BUSYBOX" --list >/dev/null || die "$BUSYBOX --list failed"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
for t in findmnt umount awk sort mktemp split base64 head truncate du find sync; do
  command -v "$t" >/dev/null || die "$t not found"
done
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io, or SKIP_BUILDKIT=1)"
  [ -x "$DOCKER_CLI" ] || die "docker CLI not found at $DOCKER_CLI (apt-get install docker.io, or SKIP_BUILDKIT=1)"
fi
find_kiln

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/kiln-bench-noop.XXXXXX)
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
CTX=$WORK/ctx
make_base_ctx "$BASE_CTX"

log "making the context ($DIRS x $FILES_PER_DIR small files of $SMALL_BYTES bytes, $BINS x $BIN_BYTES bytes of binaries)"
make_big_ctx "$CTX"
CTX_FILES=$(find "$CTX" -type f | wc -l)
CTX_BYTES=$(du -sb "$CTX" | cut -f1)
CTX_APPARENT=$(find "$CTX" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }')
[ "$CTX_FILES" -eq $((DIRS * FILES_PER_DIR + BINS + 1)) ] ||
  die "context has $CTX_FILES files, expected $((DIRS * FILES_PER_DIR + BINS + 1))"
log "context: $CTX_FILES files, $CTX_APPARENT bytes of file contents ($CTX_BYTES bytes on disk)"

# Change one small file (the n-th change of this run; a different file every time):
# append a line, so its contents, size, mtime and ctime all change.
CHANGES=0
CHANGED_FILES=()
change_one_file() {
  local n=$CHANGES f
  CHANGES=$((CHANGES + 1))
  # 37 is coprime to any DIRS that is not a multiple of 37, so successive changes hit
  # different directories; the check below covers the rest.
  f=$CTX/$(printf 'd%03d/f%03d.txt' $(((n * 37 + 11) % DIRS)) $(((n * 13 + 5) % FILES_PER_DIR)))
  [ -f "$f" ] || die "no file $f to change"
  local seen
  for seen in "${CHANGED_FILES[@]}"; do [ "$seen" != "$f" ] || die "file $f would be changed twice"; done
  CHANGED_FILES+=("$f")
  echo "changed by noop-rebuild, change $n" >>"$f"
}

# The base once, as archives for Buildah (oci) and dockerd (docker).
export KILN_ROOT=$WORK/kiln-setup
quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
quiet "$KILN_BIN" save --format docker -o "$WORK/bb.docker.tar" bb:1
rm -rf --one-file-system "$KILN_ROOT"

# ---------------------------------------------------------------- tools
export KILN_ROOT=$WORK/kiln-root
kiln_build() { "$KILN_BIN" build -q -t x "$CTX"; }
# kiln-oci: the same build into an OCI archive instead of the store, in a root of its
# own (so its rebuilds see the same one-file changes as kiln's).
KILN_OCI_ROOT=$WORK/kiln-oci-root
kiln_oci_build() { KILN_ROOT=$KILN_OCI_ROOT "$KILN_BIN" build -q -o "type=oci,dest=$WORK/out.oci.tar" "$CTX"; }
setup_kiln_oci() {
  fresh_dir "$KILN_OCI_ROOT"
  KILN_ROOT=$KILN_OCI_ROOT quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  local t0=$EPOCHREALTIME
  quiet kiln_oci_build
  FULL[kiln-oci]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
}
# The files-checked line of a --progress=plain build (vertex "[internal] load build
# context", formerly "[internal] checksum build context"), e.g. "#5 20011 files checked, 1 read".
kiln_checksum_line() {
  "$KILN_BIN" build --progress=plain -t x "$CTX" >"$WORK/plain.log" 2>&1 || {
    tail -n 30 "$WORK/plain.log" >&2
    die "kiln build --progress=plain failed"
  }
  grep -E '^#[0-9]+ [0-9]+ files checked, [0-9]+ read$' "$WORK/plain.log" | tail -n 1 || true
  # The incremental COPY's line (issue 20 item 1), e.g. "#4 0.167 20010 files shared
  # with the previous result", kept for the report.
  SHARED_LINE=$(grep -E 'files shared with the previous result$' "$WORK/plain.log" | tail -n 1 || true)
}
setup_kiln() {
  fresh_dir "$KILN_ROOT"
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  local t0=$EPOCHREALTIME
  quiet kiln_build
  FULL[kiln]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
}

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
buildah_build() {
  (cd "$CTX" && bh bud --layers --runtime "$RUNC" --pull=never --network host -q -t x .)
}
setup_buildah() {
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
  local t0=$EPOCHREALTIME
  quiet buildah_build
  FULL[buildah]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
}

buildkit_build() {
  (cd "$CTX" && DOCKER_BUILDKIT=1 dk build --network host -q -t x .)
}
setup_buildkit() {
  local t0=$EPOCHREALTIME
  quiet buildkit_build
  FULL[buildkit]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
}

# ---------------------------------------------------------------- versions
KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
RUNC_VERSION=$("$RUNC" --version | head -n 1)
TOOLS=(kiln kiln-oci buildah)
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
    kiln) timed kiln_build ;;
    kiln-oci) timed kiln_oci_build ;;
    buildah) timed buildah_build ;;
    buildkit) timed buildkit_build ;;
  esac
}

# ---------------------------------------------------------------- set-up and evidence
# kiln first, with its evidence runs, so that the other tools' full builds see the
# context as it is after them: every tool then starts the rounds in step.
declare -A FULL
log "kiln: fresh root, base, full build (untimed)"
setup_kiln
EVIDENCE_NOOP=$(kiln_checksum_line)
log "kiln no-op rebuild, --progress=plain: ${EVIDENCE_NOOP:-no checksum line}"
change_one_file
kiln_checksum_line >/dev/null
EVIDENCE_CHANGE=$(grep -E '^#[0-9]+ [0-9]+ files checked, [0-9]+ read$' "$WORK/plain.log" | tail -n 1 || true)
EVIDENCE_SHARED=$SHARED_LINE
log "kiln one-file-change rebuild, --progress=plain: ${EVIDENCE_CHANGE:-no checksum line}"
if [[ ! $EVIDENCE_CHANGE =~ ^#[0-9]+\ [0-9]+\ files\ checked,\ 1\ read$ ]]; then
  die "FAIL: after changing one file kiln's rebuild should read exactly 1 file; its progress said: '${EVIDENCE_CHANGE:-no checksum line}' (full output: see above)"
fi
[[ $EVIDENCE_CHANGE =~ \ $CTX_FILES\ files\ checked ]] ||
  log "warning: kiln checked a different number of files than the context's $CTX_FILES"
log "kiln-oci: fresh root, base, full build (untimed)"
setup_kiln_oci
log "buildah: fresh root, base, full build (untimed)"
setup_buildah
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "buildkit: full build (untimed)"
  setup_buildkit
fi

# ---------------------------------------------------------------- measure
# Other work on the machine skews every number; say so rather than hide it.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD_START before the benchmark; other work on this machine will skew the numbers"
fi
declare -A NOOP CHANGE
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  change_one_file
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t")
    if [ "$r" -le 0 ]; then
      log "warm-up $t one-file change: ${s}s (discarded)"
    else
      CHANGE[$t]+="$s "
      printf 'run %d %-9s one-file change %8.3f s\n' "$r" "$t" "$s"
    fi
  done
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t")
    if [ "$r" -le 0 ]; then
      log "warm-up $t no-op: ${s}s (discarded)"
    else
      NOOP[$t]+="$s "
      printf 'run %d %-9s no-op           %8.3f s\n' "$r" "$t" "$s"
    fi
  done
done

# The same evidence once more, after all the timed rebuilds.
EVIDENCE_NOOP_AFTER=$(kiln_checksum_line)
change_one_file
kiln_checksum_line >/dev/null
EVIDENCE_CHANGE_AFTER=$(grep -E '^#[0-9]+ [0-9]+ files checked, [0-9]+ read$' "$WORK/plain.log" | tail -n 1 || true)
EVIDENCE_SHARED_AFTER=$SHARED_LINE
log "after the timed rounds: no-op '${EVIDENCE_NOOP_AFTER:-no checksum line}', one-file change '${EVIDENCE_CHANGE_AFTER:-no checksum line}'"

# Peak RSS of a kiln no-op rebuild.
RSS_KB=()
for ((r = 1; r <= RSS_RUNS; r++)); do
  quiet /usr/bin/time -v -o "$WORK/time-v.txt" "$KILN_BIN" build -q -t x "$CTX"
  RSS_KB+=("$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time-v.txt")")
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/noop-rebuild-$STAMP.txt
GIT_REV=$(git_rev)
one_read() { [[ $1 =~ ^#[0-9]+\ [0-9]+\ files\ checked,\ 1\ read$ ]]; }
{
  echo "benchmark=noop-rebuild"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=bash bench/noop-rebuild.sh (RUNS=$RUNS WARMUP=$WARMUP DIRS=$DIRS FILES_PER_DIR=$FILES_PER_DIR SMALL_BYTES=$SMALL_BYTES BINS=$BINS BIN_BYTES=$BIN_BYTES IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
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
  echo "context.files=$CTX_FILES"
  echo "context.content_bytes=$CTX_APPARENT"
  echo "context.disk_bytes=$CTX_BYTES"
  echo "runs=$RUNS"
  for t in "${TOOLS[@]}"; do
    echo "$t.full_build_s=${FULL[$t]} (untimed set-up, one sample, no idle gate)"
    echo "$t.noop.times=${NOOP[$t]% }"
    echo "$t.noop.median_s=$(median <<<"${NOOP[$t]}")"
    echo "$t.noop.range_s=$(minmax <<<"${NOOP[$t]}")"
    echo "$t.change.times=${CHANGE[$t]% }"
    echo "$t.change.median_s=$(median <<<"${CHANGE[$t]}")"
    echo "$t.change.range_s=$(minmax <<<"${CHANGE[$t]}")"
  done
  kn=$(median <<<"${NOOP[kiln]}")
  kc=$(median <<<"${CHANGE[kiln]}")
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] && continue
    awk -v a="$(median <<<"${NOOP[$t]}")" -v b="$kn" -v t="$t" 'BEGIN { printf "ratio.noop.%s/kiln=%.1f\n", t, a / b }'
    awk -v a="$(median <<<"${CHANGE[$t]}")" -v b="$kc" -v t="$t" 'BEGIN { printf "ratio.change.%s/kiln=%.2f\n", t, a / b }'
  done
  awk -v m="$kn" -v lim="$GOAL_S" 'BEGIN {
    printf "goal=kiln no-op median <= %.3f s: %s\n", lim, (m <= lim ? "met" : "NOT met") }'
  echo "kiln.evidence.noop=$EVIDENCE_NOOP"
  echo "kiln.evidence.one_file_change=$EVIDENCE_CHANGE"
  echo "kiln.evidence.noop_after_rounds=$EVIDENCE_NOOP_AFTER"
  echo "kiln.evidence.one_file_change_after_rounds=$EVIDENCE_CHANGE_AFTER"
  echo "kiln.evidence.shared=${EVIDENCE_SHARED:-none}"
  echo "kiln.evidence.shared_after_rounds=${EVIDENCE_SHARED_AFTER:-none}"
  if one_read "$EVIDENCE_CHANGE" && one_read "$EVIDENCE_CHANGE_AFTER"; then
    echo "goal=one-file change re-hashes only that file: met"
  else
    echo "goal=one-file change re-hashes only that file: NOT met"
  fi
  echo "kiln.noop.max_rss_kb=${RSS_KB[*]:-not measured}"
} | tee "$OUT"
log "summary written to $OUT"
one_read "$EVIDENCE_CHANGE_AFTER" ||
  die "FAIL: after the timed rounds, a one-file change made kiln read more or less than 1 file: '${EVIDENCE_CHANGE_AFTER:-no checksum line}'"
