#!/usr/bin/env bash
# Benchmark: three independent stages that each `RUN sleep 2`, and a final stage that
# COPYs from all three, on a busybox base, cold build cache; kiln vs Buildah (stages one
# after another, and with `--jobs 3`) vs BuildKit (dockerd 20.10's builder), all in one
# run on the same machine.  Then the same Dockerfile with stage a failing after 1 s
# (`RUN sleep 1 && exit 3`) while stages b and c `sleep 30`: how long each tool takes to
# exit after that failure, that it exits non-zero, and, for kiln, that no process of the
# build and no mount under KILN_ROOT is left once it has exited.  Prints every timed run,
# the medians and the ratios, and writes the same as key=value lines to
# bench/results/parallel-stages-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/parallel-stages.sh
#
# Environment knobs:
#   RUNS=5            timed cold runs per tool and Dockerfile (medians of these are reported)
#   WARMUP=1          untimed rounds first (page cache, binaries); kiln's leftover check
#                     is made (and counted) on these too
#   IDLE_WAIT=120     before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   LINGER_WAIT=40    after a failing build has exited, wait up to this many seconds
#                     (untimed) for the other stages' processes to go before killing them
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`, then
#                     target/release/kiln)
#   RUNC=/usr/sbin/runc     OCI runtime for Buildah (crun fails on this host's cgroups)
#   BUSYBOX=/bin/busybox    static busybox for the base image (Debian busybox-static)
#   SKIP_BUILDKIT=1   do not start dockerd / measure BuildKit
#   DOCKER_STORAGE_DRIVER=overlay2  graph driver for the private dockerd (vfs also works)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# The Dockerfiles (TAG is unique to this run of the script, so that the processes of
# the failing builds can be told from anything else on the machine):
#   ok:    FROM bb:1 AS a / RUN sleep 2 && echo a > /a      (same for b and c)
#          FROM bb:1 / COPY --from=a /a /a / COPY --from=b /b /b / COPY --from=c /c /c
#   fail:  FROM bb:1 AS a / RUN sleep 1 && exit 3
#          FROM bb:1 AS b / RUN sleep 30 && echo b-TAG > /b   (c likewise)
#          the same final stage
#
# What is timed, per tool (wall clock of the one client command, nothing else):
#   kiln          `kiln build -q -t x CTX` (default --jobs: twice the CPUs) in a fresh
#                 KILN_ROOT into which the busybox base was built (untimed) just before.
#   buildah       `buildah --root R --runroot RR bud --runtime $RUNC --layers=false
#                 --pull=never --network host -q -t x .` with a fresh R/RR into which the
#                 base was pulled from an oci-archive (untimed) just before.
#   buildah-jobs3 the same with `--jobs 3` (stages in parallel).
#   buildkit      `DOCKER_BUILDKIT=1 docker build --network host -q -t x .` against a
#                 private dockerd (started once, base `docker load`ed once); before each
#                 run (untimed) `docker builder prune -af` and `docker rmi -f x`.
#                 dockerd runs with --bridge=none, so `--network host` is needed (the
#                 default bridge network does not exist).
# For the failing Dockerfile the same commands are timed; they must exit non-zero.
# "After the failure" is the total minus the 1 s that stage a sleeps (an upper bound:
# the tool's start-up before stage a's RUN began is in it too).
# Right after each failing kiln build exits (no grace period) the script looks for
# processes of the build (command line containing TAG, and their descendants; and any
# `sleep 30` that was not there before the build) and for mounts under KILN_ROOT in
# /proc/mounts; any hit is reported loudly and makes the script exit 1 (after writing
# the results).  The other tools get the same look, reported but not asserted.
# Runs are interleaved (ok: kiln, buildah, buildah-jobs3, buildkit; then fail: the same;
# next round ...) so slow drifts of the machine hit every tool alike.

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
LINGER_WAIT=${LINGER_WAIT:-40}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SKIP_BUILDKIT=${SKIP_BUILDKIT:-0}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # /usr/local/bin/docker may lack BuildKit

# The goals (issue acceptance).
GOAL_OK_S=2.2   # kiln, three parallel `sleep 2` stages, cold
GOAL_FAIL_S=1.0 # kiln exits within this long after stage a fails
FAIL_AFTER_S=1  # stage a of the failing Dockerfile fails after this long

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}

BENCH=parallel-stages
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
TIMED_SYNC=0 # no `sync` before a timed run (docs/benchmarks.md's numbers were made so)

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah and dockerd need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer"
[[ $IDLE_WAIT =~ ^[0-9]+$ ]] || die "IDLE_WAIT must be a non-negative integer"
[[ $IDLE_BUSY =~ ^[0-9]+$ ]] || die "IDLE_BUSY must be a non-negative integer"
[[ $LINGER_WAIT =~ ^[0-9]+$ ]] || die "LINGER_WAIT must be a non-negative integer"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC (apt-get install runc, or set RUNC)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
"$BUSYBOX" --list >/dev/null || die "$BUSYBOX --list failed"
for t in findmnt umount awk sort mktemp ps; do command -v "$t" >/dev/null || die "$t not found"; done
if [ "$SKIP_BUILDKIT" != 1 ]; then
  command -v dockerd >/dev/null || die "dockerd not found (apt-get install docker.io, or SKIP_BUILDKIT=1)"
  [ -x "$DOCKER_CLI" ] || die "docker CLI not found at $DOCKER_CLI (apt-get install docker.io, or SKIP_BUILDKIT=1)"
fi
find_kiln

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/kiln-bench-par.XXXXXX)
TAG=parbench-${WORK##*.}-$$ # in the failing stages' RUN lines, to find their processes
DOCKER_DIR=$WORK/docker
DOCKERD_PID=

# PIDs of the failing builds' RUN processes: command line containing TAG (or $1, if
# given: kiln's sandbox helpers are `kiln __kiln-sandbox KILN_ROOT/tmp/...`), and all
# their descendants (the `sleep 30` under `sh -c`).  The strings reach awk through the
# environment, so that awk's own command line does not match.
tag_pids() {
  ps -eo pid=,ppid=,args= | PB_TAG=$TAG PB_ALSO=${1:-} awk '
    { pid[NR] = $1; ppid[NR] = $2
      if (index($0, ENVIRON["PB_TAG"]) || (ENVIRON["PB_ALSO"] != "" && index($0, ENVIRON["PB_ALSO"])))
        mark[$1] = 1 }
    END {
      do { more = 0
        for (i = 1; i <= NR; i++) if (!(pid[i] in mark) && (ppid[i] in mark)) { mark[pid[i]] = 1; more = 1 }
      } while (more)
      for (p in mark) print p
    }'
}
# PIDs of every `sleep 30` on the machine (compared before/after a failing build).
sleep30_pids() { ps -eo pid=,args= | awk '$2 ~ /(^|\/)sleep$/ && $3 == "30" && NF == 3 { print $1 }' | sort; }

kill_tag_pids() { # TERM, then KILL, whatever is left of the failing builds; $1 as tag_pids
  local p
  p=$(tag_pids "${1:-}" | tr '\n' ' ')
  [ -n "${p// /}" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $p 2>/dev/null || true
  sleep 0.5
  p=$(tag_pids "${1:-}" | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -z "${p// /}" ] || kill -KILL $p 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  kill_tag_pids # a failing build's `sleep 30` left running by any tool
  stop_dockerd
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
cd "$WORK" # nothing lands in the caller's directory
trap 'exit 130' INT
trap 'exit 143' TERM

# Like timed (bench/lib.sh, here without its `sync`), for a command that must fail:
# prints "<seconds> <exit status>".  Before it starts, the `sleep 30` processes on the
# machine are noted in $WORK/sleep30.before.
timed_fail() {
  local t0 t1 rc=0
  idle_gate
  sleep30_pids >"$WORK/sleep30.before"
  awk '{ print $2 }' /proc/mounts | sort >"$WORK/mounts.before"
  t0=$EPOCHREALTIME
  "$@" >"$WORK/last.log" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  if [ "$rc" = 0 ]; then
    tail -n 30 "$WORK/last.log" >&2
    die "the failing build succeeded: $*"
  fi
  awk -v a="$t0" -v b="$t1" -v rc="$rc" 'BEGIN { printf "%.6f %d\n", b - a, rc }'
}

# What a failing build left behind, right now: "<processes> <mounts>", where processes
# counts the TAG processes (and their descendants), for kiln also any process naming
# KILN_ROOT, and the `sleep 30`s that are new since timed_fail started (each process
# once); mounts counts the /proc/mounts entries at or below the store $2 (for kiln all
# of them, for the others those that are new since timed_fail started: dockerd may keep
# mounts of its own there).  $1: tool.
left_pids() { # $1: tool, $2: store
  local also=
  [ "$1" = kiln ] && also=$2/
  { tag_pids "$also"; sleep30_pids | comm -13 "$WORK/sleep30.before" -; } | sort -u
}
left_mounts() { # $1: tool, $2: store
  awk -v p="$2" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort |
    if [ "$1" = kiln ]; then cat; else comm -13 "$WORK/mounts.before" -; fi
}
leftovers() { echo "$(left_pids "$1" "$2" | wc -l) $(left_mounts "$1" "$2" | wc -l)"; }

# After a failing build: record what it left (immediately), wait (untimed, up to
# LINGER_WAIT s) for its processes to go, kill what is still there.  Appends one line
# "<tool> <processes> <mounts> <linger_s>" to $WORK/leftovers.txt.  $1: tool, $2: store.
after_fail() {
  local tool=$1 store=$2 now p m start=$EPOCHREALTIME linger also=
  [ "$tool" = kiln ] && also=$store/
  now=$(leftovers "$tool" "$store")
  p=${now% *} m=${now#* }
  if [ "$tool" = kiln ] && { [ "$p" != 0 ] || [ "$m" != 0 ]; }; then
    log "FAILED CHECK: kiln left $p process(es) and $m mount(s) under $store after the failing build:"
    [ "$p" = 0 ] || ps -o pid=,ppid=,args= -p "$(left_pids "$tool" "$store" | paste -sd,)" >&2 || true
    left_mounts "$tool" "$store" >&2
    : >"$WORK/kiln-check-failed"
  fi
  while [ -n "$(tag_pids "$also")" ] &&
    awk -v a="$start" -v b="$EPOCHREALTIME" -v w="$LINGER_WAIT" 'BEGIN { exit !(b - a < w) }'; do
    sleep 0.2
  done
  linger=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  [ "$p" != 0 ] || linger=0
  if [ -n "$(tag_pids "$also")" ]; then
    log "$tool: the failing build's processes were still running ${LINGER_WAIT}s after it exited; killing them"
    linger=">$LINGER_WAIT"
    kill_tag_pids "$also"
  fi
  echo "$tool $p $m $linger" >>"$WORK/leftovers.txt"
}

# ---------------------------------------------------------------- contexts
BASE_CTX=$WORK/base-ctx
OK_CTX=$WORK/ok-ctx
FAIL_CTX=$WORK/fail-ctx
make_base_ctx "$BASE_CTX"
mkdir -p "$OK_CTX" "$FAIL_CTX"
FINAL='FROM bb:1
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=c /c /c'
cat >"$OK_CTX/Dockerfile" <<EOF
FROM bb:1 AS a
RUN sleep 2 && echo a > /a
FROM bb:1 AS b
RUN sleep 2 && echo b > /b
FROM bb:1 AS c
RUN sleep 2 && echo c > /c
$FINAL
EOF
cat >"$FAIL_CTX/Dockerfile" <<EOF
FROM bb:1 AS a
RUN sleep $FAIL_AFTER_S && exit 3
FROM bb:1 AS b
RUN sleep 30 && echo b-$TAG > /b
FROM bb:1 AS c
RUN sleep 30 && echo c-$TAG > /c
$FINAL
EOF

# The base once, as archives for Buildah (oci) and dockerd (docker).
export KILN_ROOT=$WORK/kiln-setup
quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
quiet "$KILN_BIN" save --format oci -o "$WORK/bb.oci.tar" bb:1
quiet "$KILN_BIN" save --format docker -o "$WORK/bb.docker.tar" bb:1
rm -rf --one-file-system "$KILN_ROOT"

# ---------------------------------------------------------------- tools
# Each run_* takes the Dockerfile (ok|fail) and prints the time (ok) or "time status" (fail).
run_kiln() { # untimed: fresh root + base; timed: the build
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
  if [ "$1" = ok ]; then
    timed "$KILN_BIN" build -q -t x "$OK_CTX" || exit 1
  else
    timed_fail "$KILN_BIN" build -q -t x "$FAIL_CTX" || exit 1
    cp "$WORK/last.log" "$WORK/kiln-fail.log"
    after_fail kiln "$KILN_ROOT"
  fi
}

BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
run_buildah() { # $1: ok|fail, $2: extra bud options
  local ctx=$OK_CTX tool=buildah extra=()
  [ "$1" = fail ] && ctx=$FAIL_CTX
  [ -n "${2:-}" ] && { read -ra extra <<<"$2"; tool=buildah-jobs3; }
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  quiet bh pull -q "oci-archive:$WORK/bb.oci.tar"
  cd "$ctx" || exit 1 # run_tool runs in its own subshell
  if [ "$1" = ok ]; then
    timed bh bud --runtime "$RUNC" --layers=false --pull=never \
      --network host "${extra[@]}" -q -f Dockerfile -t x . || exit 1
  else
    timed_fail bh bud --runtime "$RUNC" --layers=false --pull=never \
      --network host "${extra[@]}" -q -f Dockerfile -t x . || exit 1
    after_fail "$tool" "$WORK/buildah"
  fi
  cd "$WORK" || exit 1
  bh rm -a >/dev/null 2>&1 || true
  quiet bh rmi -a -f
}

run_buildkit() {
  quiet dk builder prune -af
  dk rmi -f x >/dev/null 2>&1 || true
  if [ "$1" = ok ]; then
    cd "$OK_CTX" || exit 1 # run_tool runs in its own subshell
    DOCKER_BUILDKIT=1 timed dk build --network host -q -t x . || exit 1
  else
    cd "$FAIL_CTX" || exit 1
    DOCKER_BUILDKIT=1 timed_fail dk build --network host -q -t x . || exit 1
    after_fail buildkit "$WORK/docker/data"
  fi
}

# ---------------------------------------------------------------- versions
KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
RUNC_VERSION=$("$RUNC" --version | head -n 1)
TOOLS=(kiln buildah buildah-jobs3)
DOCKER_VERSION="not measured"
if [ "$SKIP_BUILDKIT" != 1 ]; then
  log "starting a private dockerd ($DOCKER_STORAGE_DRIVER)"
  start_dockerd
  quiet dk load -i "$WORK/bb.docker.tar"
  sleep 3 # let dockerd finish its start-up work before anything is timed
  DOCKER_VERSION="dockerd $(dk version --format '{{.Server.Version}}') (BuildKit builder), storage $DOCKER_STORAGE_DRIVER"
  TOOLS+=(buildkit)
fi

run_tool() { # $1: tool, $2: ok|fail; called as $(run_tool ...), so set -e is off in it
  local s
  s=$(case $1 in
    kiln) run_kiln "$2" ;;
    buildah) run_buildah "$2" ;;
    buildah-jobs3) run_buildah "$2" "--jobs 3" ;;
    buildkit) run_buildkit "$2" ;;
  esac) || exit 1
  [[ $s =~ ^[0-9]+\.[0-9]+( [0-9]+)?$ ]] || exit 1
  echo "$s"
}

# ---------------------------------------------------------------- measure
# Other work on the machine skews every number; say so rather than hide it.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
  log "warning: load average is $LOAD_START before the benchmark; other work on this machine will skew the numbers"
fi
: >"$WORK/leftovers.txt"
declare -A TIMES FAIL_TIMES FAIL_RCS
for ((w = 1; w <= WARMUP; w++)); do
  for d in ok fail; do
    for t in "${TOOLS[@]}"; do
      s=$(run_tool "$t" "$d") || die "warm-up $d $t failed"
      log "warm-up $d $t: ${s%% *}s (discarded)"
    done
  done
done
for ((r = 1; r <= RUNS; r++)); do
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t" ok) || die "run $r ok $t failed"
    TIMES[$t]+="$s "
    printf 'run %d ok   %-14s %8.3f s\n' "$r" "$t" "$s"
  done
  for t in "${TOOLS[@]}"; do
    s=$(run_tool "$t" fail) || die "run $r fail $t failed"
    FAIL_TIMES[$t]+="${s% *} "
    FAIL_RCS[$t]+="${s#* } "
    printf 'run %d fail %-14s %8.3f s (exit %s; %s)\n' "$r" "$t" "${s% *}" "${s#* }" \
      "$(tail -n 1 "$WORK/leftovers.txt" | awk '{ printf "left %d process(es), %d mount(s); gone after %s s", $2, $3, $4 }')"
  done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/parallel-stages-$STAMP.txt
GIT_REV=$(git_rev)
{
  echo "benchmark=parallel-stages"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command=bash bench/parallel-stages.sh (RUNS=$RUNS WARMUP=$WARMUP IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY LINGER_WAIT=$LINGER_WAIT)"
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
  echo "runs=$RUNS"
  echo "# ok: three parallel stages, RUN sleep 2 each; final stage COPYs from all three"
  for t in "${TOOLS[@]}"; do
    echo "ok.$t.times=${TIMES[$t]% }"
    echo "ok.$t.median_s=$(median <<<"${TIMES[$t]}")"
    echo "ok.$t.range_s=$(minmax <<<"${TIMES[$t]}")"
  done
  km=$(median <<<"${TIMES[kiln]}")
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] && continue
    m=$(median <<<"${TIMES[$t]}")
    awk -v a="$m" -v b="$km" -v t="$t" 'BEGIN { printf "ok.ratio.%s/kiln=%.2f\n", t, a / b }'
  done
  echo "# fail: stage a fails after ${FAIL_AFTER_S}s (exit 3), b and c sleep 30; after_failure = total - ${FAIL_AFTER_S}s"
  echo "# left_processes/left_mounts (right after exit), processes_gone_after_s: one value per failing build, $WARMUP warm-up(s) first"
  for t in "${TOOLS[@]}"; do
    m=$(median <<<"${FAIL_TIMES[$t]}")
    echo "fail.$t.times=${FAIL_TIMES[$t]% }"
    echo "fail.$t.exit_status=${FAIL_RCS[$t]% }"
    echo "fail.$t.median_s=$m"
    echo "fail.$t.range_s=$(minmax <<<"${FAIL_TIMES[$t]}")"
    awk -v m="$m" -v f="$FAIL_AFTER_S" -v t="$t" 'BEGIN { printf "fail.%s.after_failure_median_s=%.3f\n", t, m - f }'
    awk -v t="$t" '$1 == t { p = p $2 " "; m = m $3 " "; l = l $4 " " }
      END { sub(/ $/, "", p); sub(/ $/, "", m); sub(/ $/, "", l);
            printf "fail.%s.left_processes=%s\nfail.%s.left_mounts=%s\nfail.%s.processes_gone_after_s=%s\n", t, p, t, m, t, l }' \
      "$WORK/leftovers.txt"
  done
  kf=$(median <<<"${FAIL_TIMES[kiln]}")
  for t in "${TOOLS[@]}"; do
    [ "$t" = kiln ] && continue
    m=$(median <<<"${FAIL_TIMES[$t]}")
    awk -v a="$m" -v b="$kf" -v f="$FAIL_AFTER_S" -v t="$t" 'BEGIN {
      printf "fail.ratio.%s/kiln=%.2f (after_failure: %.2f)\n", t, a / b, (b - f > 0 ? (a - f) / (b - f) : 0) }'
  done
  awk -v m="$km" -v g="$GOAL_OK_S" 'BEGIN {
    printf "goal=kiln three parallel stages median <= %.1f s: %s\n", g, (m <= g ? "met" : "NOT met") }'
  nonzero=yes
  for t in "${TOOLS[@]}"; do
    for rc in ${FAIL_RCS[$t]}; do [ "$rc" != 0 ] || nonzero=no; done
  done
  echo "check=every failing build exited non-zero: $nonzero"
  awk -v m="$kf" -v f="$FAIL_AFTER_S" -v g="$GOAL_FAIL_S" 'BEGIN {
    printf "goal=kiln exits within %.1f s of the failure (median total - %d s): %s\n", g, f, (m - f <= g ? "met" : "NOT met") }'
  kn=$(awk '$1 == "kiln"' "$WORK/leftovers.txt" | wc -l)
  kbad=$(awk '$1 == "kiln" && ($2 != 0 || $3 != 0)' "$WORK/leftovers.txt" | wc -l)
  echo "goal=kiln leaves no process and no mount under KILN_ROOT after the failing build ($kn failing builds, warm-up included, checked right after exit): $([ "$kbad" = 0 ] && echo met || echo "NOT met ($kbad with leftovers)")"
  echo "kiln.fail.last_output=$(grep -v '^ *[0-9]* |' "$WORK/kiln-fail.log" | grep -v '^-*$' | tr '\n' ' ' | sed 's/ *$//')"
} | tee "$OUT"
log "summary written to $OUT"
if [ -e "$WORK/kiln-check-failed" ]; then
  die "FAILED: kiln left processes or mounts behind after a failing build (see above)"
fi
