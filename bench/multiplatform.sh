#!/usr/bin/env bash
# Benchmark: two-platform builds (linux/amd64 + linux/arm64, arm64 RUN steps under
# qemu-user-static), kiln vs Buildah in one run on the same machine, plus the cost of
# emulation per RUN step.  Prints every timed run, the medians and ratios, and writes
# the same as key=value lines to bench/results/multiplatform-<UTC date>.txt.
#
# Usage (as root, from anywhere):   nice -n -19 bash bench/multiplatform.sh
#
# Workloads (the base is an index of two busybox images, Debian's busybox-static of
# each architecture, pushed to a loopback registry by kiln before anything is timed):
#   uname   `FROM base` / `RUN uname -m > /arch`: one native and one emulated RUN step.
#   cross   the cross-compilation pattern: `FROM --platform=$BUILDPLATFORM base AS build`,
#           `ARG TARGETPLATFORM`, a RUN doing CPU work natively for each target (sha256
#           of 64 MiB, standing in for a compiler: the busybox base has none) and writing
#           `$TARGETPLATFORM` into its output; `FROM base` / `COPY --from=build`.
#   emul    STEPS (default 10) × `RUN echo step N` built for one platform, once for
#           linux/amd64 (native) and once for linux/arm64 (emulated): the difference per
#           step is the emulated RUN overhead (kiln and Buildah each).
#
# What is timed, per tool (wall clock of the one client command, cold build cache):
#   kiln     `kiln build -q --platform linux/amd64,linux/arm64 -t x CTX` in a fresh
#            KILN_ROOT (the base is pulled from the registry inside the timed build).
#   buildah  `buildah bud --runtime $RUNC --platform linux/amd64,linux/arm64 --manifest x
#            --layers=false -q CTX` with fresh --root/--runroot (pulls the base too).
#   BuildKit is not measured: dockerd 20.10's builder (the docker driver) refuses more
#   than one platform ("multiple platforms feature is currently not supported for docker
#   driver"), and there is no buildx/buildkitd on the machine.
# Both tools use the host network for RUN (Buildah's default netns setup is not what is
# compared here).  Runs are interleaved (kiln, buildah, kiln, ...).
#
# Environment knobs: RUNS=5, WARMUP=1, STEPS=10, IDLE_WAIT=120, IDLE_BUSY=10 (see
# lib.sh), KILN_BIN, RUNC=/usr/sbin/runc, BUSYBOX=/bin/busybox,
# BUSYBOX_ARM64=<repo>/target/kiln-fixtures/busybox-static-arm64/bin/busybox (the
# multi-platform tests cache it there; else `apt-get download busybox-static:arm64`).

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
STEPS=${STEPS:-10}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
REGISTRY=${REGISTRY:-/usr/bin/docker-registry}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
BUSYBOX_ARM64=${BUSYBOX_ARM64:-$REPO/target/kiln-fixtures/busybox-static-arm64/bin/busybox}

BENCH=multiplatform
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "must run as root (RUN sandboxes, Buildah, binfmt_misc need it)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $STEPS =~ ^[1-9][0-9]*$ ]] || die "STEPS must be a positive integer"
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$RUNC" ] || die "runc not found at $RUNC"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
[ -x "$REGISTRY" ] || die "docker-registry not found (apt-get install docker-registry)"
[ -f /usr/share/binfmts/qemu-aarch64 ] || [ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
  die "no arm64 emulation (apt-get install qemu-user-static)"
find_kiln

WORK=$(mktemp -d /tmp/kiln-bench-mp.XXXXXX)
REG_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  stop_registry
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  exit "$rc"
}
trap cleanup EXIT
cd "$WORK"
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ! -x "$BUSYBOX_ARM64" ]; then
  log "downloading busybox-static:arm64"
  (mkdir -p "$WORK/deb" && cd "$WORK/deb" && quiet apt-get download busybox-static:arm64 &&
    quiet dpkg-deb -x ./*.deb tree)
  BUSYBOX_ARM64=$WORK/deb/tree/bin/busybox
fi

# ---------------------------------------------------------------- base and contexts
BASE_CTX=$WORK/base-ctx
for arch in amd64 arm64; do
  root=$BASE_CTX/rootfs-$arch
  mkdir -p "$root"/{bin,etc,tmp}
  if [ $arch = amd64 ]; then cp "$BUSYBOX" "$root/bin/busybox"; else cp "$BUSYBOX_ARM64" "$root/bin/busybox"; fi
  for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
  chmod 1777 "$root/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
done
printf 'FROM scratch\nARG TARGETARCH\nCOPY rootfs-${TARGETARCH}/ /\nCMD ["sh"]\n' >"$BASE_CTX/Dockerfile"

start_registry "$WORK/registry"
BASE=127.0.0.1:$PORT/bb:multi
export KILN_ROOT=$WORK/kiln-setup
# Also registers the arm64 binfmt_misc handler (F flag) if none is: kiln as root does.
quiet "$KILN_BIN" build -q --platform linux/amd64,linux/arm64 --push -t "$BASE" "$BASE_CTX"
printf 'FROM %s\nRUN uname -m > /arch\n' "$BASE" >"$WORK/probe.Dockerfile"
mkdir -p "$WORK/probe" && cp "$WORK/probe.Dockerfile" "$WORK/probe/Dockerfile"
quiet "$KILN_BIN" build -q --platform linux/arm64 "$WORK/probe"
rm -rf --one-file-system "$KILN_ROOT"

mkdir -p "$WORK/uname" "$WORK/cross" "$WORK/emul"
printf 'FROM %s\nRUN uname -m > /arch\n' "$BASE" >"$WORK/uname/Dockerfile"
cat >"$WORK/cross/Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM $BASE AS build
ARG TARGETPLATFORM
RUN head -c 67108864 /dev/zero | sha256sum > /out && echo "\$TARGETPLATFORM" >> /out
FROM $BASE
COPY --from=build /out /out
EOF
{
  echo "FROM $BASE"
  for i in $(seq 1 "$STEPS"); do echo "RUN echo step $i"; done
} >"$WORK/emul/Dockerfile"

# ---------------------------------------------------------------- tools
run_kiln() { # $1: context, $2: platforms
  export KILN_ROOT=$WORK/kiln-root
  fresh_dir "$KILN_ROOT"
  timed "$KILN_BIN" build -q --network host --platform "$2" -t x "$1"
}
BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
run_buildah() { # $1: context, $2: platforms
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  (cd "$1" && timed bh bud --runtime "$RUNC" --tls-verify=false --layers=false --network host \
    --platform "$2" --manifest x -q -f Dockerfile .)
}

KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
QEMU_VERSION=$(dpkg-query -W -f='${Version}' qemu-user-static 2>/dev/null || echo unknown)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# name context platforms
CASES=(
  "uname $WORK/uname linux/amd64,linux/arm64"
  "cross $WORK/cross linux/amd64,linux/arm64"
  "emul-amd64 $WORK/emul linux/amd64"
  "emul-arm64 $WORK/emul linux/arm64"
)
declare -A TIMES
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  for c in "${CASES[@]}"; do
    read -r name ctx plats <<<"$c"
    for tool in kiln buildah; do
      s=$("run_$tool" "$ctx" "$plats")
      if [ "$r" -ge 1 ]; then
        TIMES[$name.$tool]+="$s "
        printf 'run %d %-12s %-8s %8.3f s\n' "$r" "$name" "$tool" "$s"
      else
        log "warm-up $name $tool: ${s}s (discarded)"
      fi
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/multiplatform-$STAMP.txt
{
  echo "benchmark=multiplatform"
  machine_lines
  echo "command=nice -n -19 bash bench/multiplatform.sh (RUNS=$RUNS WARMUP=$WARMUP STEPS=$STEPS)"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "kiln_version=$KILN_VERSION"
  echo "buildah_version=$BUILDAH_VERSION"
  echo "qemu_user_static=$QEMU_VERSION"
  echo "buildkit=not measured (dockerd's docker driver refuses several platforms)"
  for c in "${CASES[@]}"; do
    read -r name _ _ <<<"$c"
    for tool in kiln buildah; do
      echo "$name.$tool.times=${TIMES[$name.$tool]% }"
      echo "$name.$tool.median_s=$(median <<<"${TIMES[$name.$tool]}")"
    done
    echo "ratio.$name.buildah/kiln=$(ratio "$(median <<<"${TIMES[$name.buildah]}")" "$(median <<<"${TIMES[$name.kiln]}")")"
  done
  for tool in kiln buildah; do
    awk -v a="$(median <<<"${TIMES[emul-arm64.$tool]}")" -v b="$(median <<<"${TIMES[emul-amd64.$tool]}")" \
      -v n="$STEPS" -v t="$tool" 'BEGIN { printf "%s.emulated_run_overhead_ms_per_step=%.1f\n", t, (a - b) * 1000 / n }'
  done
} | tee "$OUT"
log "summary written to $OUT"
