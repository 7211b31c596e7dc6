#!/usr/bin/env bash
# Benchmark: pushing the image of bench/cold-build.sh (busybox base + a ~270 MB COPY
# layer) to a registry on the loopback interface, `kiln push` from kiln's store vs
# `skopeo copy` from the oci-archive kiln exported of the same image, in one run.
# Every timed push goes to a registry with fresh, empty storage, so no blob is skipped.
# Prints every timed push, the medians, the ratio, and writes the same as key=value
# lines to bench/results/push-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/push.sh
#
# Environment knobs:
#   RUNS=5            timed rounds (median of these is reported)
#   WARMUP=1          untimed rounds first
#   DIRS=200 FILES_PER_DIR=100 SMALL_BYTES=8500 BINS=10 BIN_BYTES=10000000
#                     the context, as in bench/cold-build.sh
#   GOAL_RATIO=1.5    goal: kiln's median at most this times skopeo's
#   IDLE_WAIT=120     before each timed push, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables)
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`, then
#                     target/release/kiln)
#   REGISTRY=docker-registry   the registry binary (Debian's docker-registry, run as
#                     `docker-registry serve CONFIG`)
#   BUSYBOX=/bin/busybox    static busybox for the base image (Debian busybox-static)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# Set-up (untimed, once): the context and base as in cold-build.sh; `kiln build -q -t
# x:1 -o type=oci,dest=OUT CTX`, then `kiln build -q -t x:1 CTX` (a cache hit) so the
# image is also in kiln's store.  Per timed push (untimed around it): a registry with
# a new storage directory is started on 127.0.0.1:PORT (http.addr; access log off)
# and stopped after the push; its storage is then removed.  What is timed:
#   kiln      `kiln push x:1 127.0.0.1:PORT/x:1` (loopback registries are plain HTTP)
#   skopeo    `skopeo copy --dest-tls-verify=false oci-archive:OUT docker://127.0.0.1:PORT/x:1`
# Rounds alternate kiln, skopeo.  Evidence (untimed): after the first timed round, the
# manifest each tool pushed is fetched back and its layer digests must equal the
# image's; kiln's output must say every layer was pushed.

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
DIRS=${DIRS:-200}
FILES_PER_DIR=${FILES_PER_DIR:-100}
SMALL_BYTES=${SMALL_BYTES:-8500}
BINS=${BINS:-10}
BIN_BYTES=${BIN_BYTES:-10000000}
GOAL_RATIO=${GOAL_RATIO:-1.5}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
REGISTRY=${REGISTRY:-docker-registry}
BUSYBOX=${BUSYBOX:-/bin/busybox}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
BENCH=push
WORK=$(mktemp -d /tmp/kiln-bench-push.XXXXXX)
REG_PID=
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  stop_registry
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (kiln's RUN sandbox needs it for the set-up build)"
for v in RUNS DIRS FILES_PER_DIR SMALL_BYTES BIN_BYTES; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
for v in WARMUP BINS IDLE_WAIT IDLE_BUSY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
[[ $GOAL_RATIO =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "GOAL_RATIO must be a number"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v "$REGISTRY" >/dev/null || die "$REGISTRY not found (apt-get install docker-registry)"
command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"
command -v curl >/dev/null || die "curl not found"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
find_kiln

# ---------------------------------------------------------------- set-up
BASE_CTX=$WORK/base-ctx
CTX=$WORK/ctx
OUT_TAR=$WORK/out.tar
make_base_ctx "$BASE_CTX"
log "making the context ($DIRS x $FILES_PER_DIR files of $SMALL_BYTES bytes, $BINS x $BIN_BYTES bytes of binaries)"
make_big_ctx "$CTX"
export KILN_ROOT=$WORK/kiln-root
quiet "$KILN_BIN" build -q -t bb:1 "$BASE_CTX"
quiet "$KILN_BIN" build -q -t x:1 -o "type=oci,dest=$OUT_TAR" "$CTX"
quiet "$KILN_BIN" build -q -t x:1 "$CTX"
IMAGE_BYTES=$(stat -c %s "$OUT_TAR")
# The image's layer digests, from the archive's manifest.
manifest_of_archive() {
  local idx m
  idx=$(tar -xOf "$OUT_TAR" index.json)
  m=$(grep -o '"digest":"sha256:[0-9a-f]*"' <<<"$idx" | head -n 1 | sed 's/.*sha256:\([0-9a-f]*\)"/\1/')
  tar -xOf "$OUT_TAR" "blobs/sha256/$m"
}
layer_digests() { # manifest JSON on stdin -> the layers' digests, one a line
  python3 -c 'import json,sys; print("\n".join(l["digest"] for l in json.load(sys.stdin)["layers"]))'
}
command -v python3 >/dev/null || die "python3 not found"
WANT_LAYERS=$(manifest_of_archive | layer_digests)
N_LAYERS=$(wc -l <<<"$WANT_LAYERS")

PORT=
finish_registry() { stop_registry; rm -rf --one-file-system "$WORK/reg-$1"; }

push_kiln() { "$KILN_BIN" push "x:1" "127.0.0.1:$PORT/x:1"; }
push_skopeo() {
  skopeo copy -q --dest-tls-verify=false "oci-archive:$OUT_TAR" "docker://127.0.0.1:$PORT/x:1"
}
pushed_layers() { # the layers of the manifest now in the registry
  curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$PORT/v2/x/manifests/1" | layer_digests
}

# ---------------------------------------------------------------- measure
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TOOLS=(kiln skopeo)
declare -A TIMES EVIDENCE
n=0
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  for t in "${TOOLS[@]}"; do
    n=$((n + 1))
    start_registry "$WORK/reg-$n" # empty storage, a free loopback port
    timed_into s "push_$t"
    if [ "$r" = 1 ]; then
      got=$(pushed_layers)
      [ "$got" = "$WANT_LAYERS" ] || die "FAIL: $t pushed layers '$got', the image has '$WANT_LAYERS'"
      EVIDENCE[$t]="manifest fetched back: $N_LAYERS layers, digests as in the image"
      if [ "$t" = kiln ]; then
        pushed=$(grep -c ': Pushed$' "$WORK/last.log" || true)
        [ "$pushed" -ge "$N_LAYERS" ] || die "FAIL: kiln pushed $pushed blobs, expected at least $N_LAYERS layers (output: $(tr '\n' ' ' <"$WORK/last.log"))"
        EVIDENCE[$t]+="; kiln said Pushed for $pushed blobs"
      fi
    fi
    finish_registry "$n"
    if [ "$r" -le 0 ]; then
      log "warm-up $t: ${s}s (discarded)"
    else
      TIMES[$t]+="$s "
      printf 'run %d %-7s %8.3f s\n' "$r" "$t" "$s"
    fi
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/push-$STAMP.txt
{
  echo "benchmark=push"
  echo "command=bash bench/push.sh (RUNS=$RUNS WARMUP=$WARMUP DIRS=$DIRS FILES_PER_DIR=$FILES_PER_DIR SMALL_BYTES=$SMALL_BYTES BINS=$BINS BIN_BYTES=$BIN_BYTES IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  machine_lines
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "idle_gate_timeouts=$IDLE_MISSES"
  echo "kiln_bin=$KILN_BIN"
  echo "kiln_version=$("$KILN_BIN" --version)"
  echo "skopeo_version=$(skopeo --version)"
  echo "registry=$(dpkg-query -W -f '${Package} ${Version}' docker-registry 2>/dev/null || echo "$REGISTRY")"
  echo "image.archive_bytes=$IMAGE_BYTES"
  echo "image.layers=$N_LAYERS"
  echo "runs=$RUNS"
  for t in "${TOOLS[@]}"; do
    echo "$t.times=${TIMES[$t]% }"
    echo "$t.median_s=$(median <<<"${TIMES[$t]}")"
    echo "$t.range_s=$(minmax <<<"${TIMES[$t]}")"
    echo "$t.evidence=${EVIDENCE[$t]}"
  done
  km=$(median <<<"${TIMES[kiln]}")
  sm=$(median <<<"${TIMES[skopeo]}")
  echo "ratio.kiln/skopeo=$(ratio "$km" "$sm")"
  awk -v k="$km" -v s="$sm" -v g="$GOAL_RATIO" 'BEGIN {
    printf "goal=kiln median <= %s x skopeo median: %s\n", g, (k <= g * s ? "met" : "NOT met") }'
} | tee "$OUT"
log "summary written to $OUT"
