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
#   cc      the same pattern with a real compiler: `FROM --platform=$BUILDPLATFORM
#           toolchain AS build` (Debian bookworm with gcc, libc6-dev,
#           gcc-aarch64-linux-gnu and libc6-dev-arm64-cross), `ARG TARGETARCH`, a RUN
#           compiling a small C program statically for the target (`gcc -static` for
#           amd64, `aarch64-linux-gnu-gcc -static` for arm64), `FROM base` / `COPY
#           --from=build`.  The apt-get step is not timed: the toolchain image is built
#           once by kiln before anything is timed (Debian's mirror, --network host) and
#           pushed to the loopback registry, which both tools then pull inside each timed
#           build, like the busybox base.  Before the timed runs kiln builds the workload
#           once with `-o type=local` and the script checks that linux_arm64/hello is a
#           static aarch64 ELF (`file`) that prints "aarch64 111" under
#           qemu-aarch64-static (and linux_amd64/hello an x86-64 one printing "x86_64 111").  Needs DEBIAN_LAYOUT;
#           left out, with a message, when there is none.
#   emul    STEPS (default 10) × `RUN echo step N` built for one platform, once for
#           linux/amd64 (native) and once for linux/arm64 (emulated): the difference per
#           step is the emulated RUN overhead (kiln and Buildah each).
#
# What is timed, per tool (wall clock of the one client command, cold build cache):
#   kiln     `kiln build -q --platform linux/amd64,linux/arm64 -t x CTX` in a fresh
#            KILN_ROOT (the base is pulled from the registry inside the timed build).
#   buildah  `buildah bud --runtime $RUNC --platform linux/amd64,linux/arm64 --manifest x
#            --layers=false --build-arg BUILDPLATFORM=linux/amd64 -q CTX` with fresh
#            --root/--runroot (pulls the base too).  The build-arg: Buildah 1.28 leaves
#            `FROM --platform=$BUILDPLATFORM` unexpanded, so without it the cross and cc
#            build stages would be the target's (arm64 under QEMU; for cc, no such image).
#   BuildKit is not measured: dockerd 20.10's builder (the docker driver) refuses more
#   than one platform ("multiple platforms feature is currently not supported for docker
#   driver"), and there is no buildx/buildkitd/buildctl on the machine, nor in Debian
#   bookworm or bookworm-backports (checked 2026-12-02: no docker-buildx, buildkit or
#   golang-github-moby-buildkit-dev package); the result file names any found on PATH.
# Both tools use the host network for RUN (Buildah's default netns setup is not what is
# compared here).  Runs are interleaved (kiln, buildah, kiln, ...).
#
# Environment knobs: RUNS=5, WARMUP=1, STEPS=10, IDLE_WAIT=120, IDLE_BUSY=10 (see
# lib.sh), WORKLOADS (default all: "uname cross emul cc"; a subset times only those),
# KILN_BIN, RUNC=/usr/sbin/runc, BUSYBOX=/bin/busybox,
# BUSYBOX_ARM64=<repo>/target/kiln-fixtures/busybox-static-arm64/bin/busybox (the
# multi-platform tests cache it there; else `apt-get download busybox-static:arm64`),
# DEBIAN_LAYOUT=<repo>/target/kiln-fixtures/debian-bookworm-oci (the Debian bookworm
# base of the cc workload as an OCI layout, the tests' fixture: `cargo test --test it
# debian::` makes it; pushed with skopeo), DEBIAN_TAG (default: the layout's only
# org.opencontainers.image.ref.name).

set -euo pipefail

RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
STEPS=${STEPS:-10}
WORKLOADS=${WORKLOADS:-}
IDLE_WAIT=${IDLE_WAIT:-120}
IDLE_BUSY=${IDLE_BUSY:-10}
RUNC=${RUNC:-/usr/sbin/runc}
BUSYBOX=${BUSYBOX:-/bin/busybox}
REGISTRY=${REGISTRY:-/usr/bin/docker-registry}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
BUSYBOX_ARM64=${BUSYBOX_ARM64:-$REPO/target/kiln-fixtures/busybox-static-arm64/bin/busybox}
DEBIAN_LAYOUT=${DEBIAN_LAYOUT:-$REPO/target/kiln-fixtures/debian-bookworm-oci}

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

# The cc workload needs the Debian base; without it the other workloads still run.
CC_WORKLOAD=1
if [ ! -f "$DEBIAN_LAYOUT/index.json" ]; then
  log "no Debian OCI layout at $DEBIAN_LAYOUT: the cc workload (real cross-compilation) is left out" \
    "(set DEBIAN_LAYOUT, or make the tests' fixture with \`cargo test --test it debian::\`)"
  CC_WORKLOAD=0
else
  command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo), needed for the cc workload"
  command -v file >/dev/null || die "file not found (apt-get install file), needed for the cc workload"
  if [ -z "${DEBIAN_TAG:-}" ]; then
    tags=$(grep -o '"org.opencontainers.image.ref.name":"[^"]*"' "$DEBIAN_LAYOUT/index.json" | cut -d'"' -f4 || true)
    [ "$(printf '%s\n' "$tags" | grep -c .)" = 1 ] ||
      die "$DEBIAN_LAYOUT/index.json has not exactly one tagged image ($(echo $tags)); set DEBIAN_TAG"
    DEBIAN_TAG=$tags
  fi
fi

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

# The cc workload's toolchain image: Debian bookworm + native and aarch64 cross gcc,
# built once here (apt-get from Debian's mirror) so that no timed build runs apt-get.
if [ "$CC_WORKLOAD" = 1 ]; then
  log "pushing $DEBIAN_LAYOUT:$DEBIAN_TAG and building the cc toolchain image (apt-get, untimed)"
  quiet skopeo copy -q --dest-tls-verify=false "oci:$DEBIAN_LAYOUT:$DEBIAN_TAG" \
    "docker://127.0.0.1:$PORT/debian:$DEBIAN_TAG"
  TOOLCHAIN=127.0.0.1:$PORT/toolchain:bookworm
  mkdir -p "$WORK/toolchain"
  cat >"$WORK/toolchain/Dockerfile" <<EOF
FROM 127.0.0.1:$PORT/debian:$DEBIAN_TAG
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross && \\
    apt-get clean && rm -rf /var/lib/apt/lists/*
EOF
  t0=$EPOCHREALTIME
  quiet "$KILN_BIN" build -q --network host --platform linux/amd64 --push -t "$TOOLCHAIN" "$WORK/toolchain"
  TOOLCHAIN_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", b - a }')
  log "toolchain image built and pushed in ${TOOLCHAIN_S}s"

  mkdir -p "$WORK/cc"
  cat >"$WORK/cc/hello.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>

/* A small program whose output names the architecture it was compiled for. */
static unsigned long collatz_steps(unsigned long n) {
  unsigned long steps = 0;
  while (n != 1) {
    n = (n % 2) ? 3 * n + 1 : n / 2;
    steps++;
  }
  return steps;
}

int main(int argc, char **argv) {
#if defined(__aarch64__)
  const char *arch = "aarch64";
#elif defined(__x86_64__)
  const char *arch = "x86_64";
#else
  const char *arch = "unknown";
#endif
  if (argc > 1) {
    unsigned long n = strtoul(argv[1], NULL, 10);
    printf("%s %lu\n", arch, n ? collatz_steps(n) : 0);
  } else {
    printf("%s\n", arch);
  }
  return 0;
}
EOF
  cat >"$WORK/cc/Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM $TOOLCHAIN AS build
COPY hello.c /src/hello.c
ARG TARGETARCH
RUN case "\$TARGETARCH" in amd64) cc=gcc ;; arm64) cc=aarch64-linux-gnu-gcc ;; \\
      *) echo "no compiler for \$TARGETARCH" >&2; exit 1 ;; esac && \\
    mkdir -p /out && "\$cc" -static -O2 -o /out/hello /src/hello.c
FROM $BASE
COPY --from=build /out/hello /hello
EOF
  # The one check that the arm64 image holds a real aarch64 binary (and amd64 an x86-64 one).
  quiet "$KILN_BIN" build -q --network host --platform linux/amd64,linux/arm64 \
    -o "type=local,dest=$WORK/cc-out" "$WORK/cc"
  CC_FILE_ARM64=$(file -b "$WORK/cc-out/linux_arm64/hello")
  CC_FILE_AMD64=$(file -b "$WORK/cc-out/linux_amd64/hello")
  [[ $CC_FILE_ARM64 == *"ARM aarch64"* && $CC_FILE_ARM64 == *"statically linked"* ]] ||
    die "linux_arm64/hello is not a static aarch64 binary: $CC_FILE_ARM64"
  [[ $CC_FILE_AMD64 == *"x86-64"* && $CC_FILE_AMD64 == *"statically linked"* ]] ||
    die "linux_amd64/hello is not a static x86-64 binary: $CC_FILE_AMD64"
  if command -v qemu-aarch64-static >/dev/null; then
    CC_RUN_ARM64=$(qemu-aarch64-static "$WORK/cc-out/linux_arm64/hello" 27)
  else
    CC_RUN_ARM64=$("$WORK/cc-out/linux_arm64/hello" 27) # through binfmt_misc
  fi
  CC_RUN_AMD64=$("$WORK/cc-out/linux_amd64/hello" 27)
  [ "$CC_RUN_ARM64" = "aarch64 111" ] || die "linux_arm64/hello under QEMU printed '$CC_RUN_ARM64'"
  [ "$CC_RUN_AMD64" = "x86_64 111" ] || die "linux_amd64/hello printed '$CC_RUN_AMD64'"
  log "cc check: linux_arm64/hello: $CC_FILE_ARM64; under QEMU: $CC_RUN_ARM64"
fi
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
# Buildah 1.28 does not expand $BUILDPLATFORM in `FROM --platform=`: without a value
# for it the build stage is pulled and run for the target platform, under QEMU for arm64
# (and the cc workload's amd64-only toolchain image is not found for arm64).  Passing the
# value it should have gives it the pattern's meaning; BuildKit and kiln define it.
HOST_PLATFORM=linux/$(dpkg --print-architecture)
BH_ROOT=$WORK/buildah/root
BH_RUNROOT=$WORK/buildah/runroot
bh() { buildah --root "$BH_ROOT" --runroot "$BH_RUNROOT" "$@"; }
run_buildah() { # $1: context, $2: platforms
  fresh_dir "$WORK/buildah"
  mkdir -p "$BH_ROOT" "$BH_RUNROOT"
  (cd "$1" && timed bh bud --runtime "$RUNC" --tls-verify=false --layers=false --network host \
    --build-arg "BUILDPLATFORM=$HOST_PLATFORM" --platform "$2" --manifest x -q -f Dockerfile .)
}

KILN_VERSION=$("$KILN_BIN" --version)
BUILDAH_VERSION=$(buildah --version)
QEMU_VERSION=$(dpkg-query -W -f='${Version}' qemu-user-static 2>/dev/null || echo unknown)
BUILDKIT_TOOLS=$(for t in buildkitd buildctl docker-buildx; do command -v "$t" || true; done | xargs)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# name context platforms
CASES=(
  "uname $WORK/uname linux/amd64,linux/arm64"
  "cross $WORK/cross linux/amd64,linux/arm64"
  "emul-amd64 $WORK/emul linux/amd64"
  "emul-arm64 $WORK/emul linux/arm64"
)
[ "$CC_WORKLOAD" = 0 ] || CASES+=("cc $WORK/cc linux/amd64,linux/arm64")
if [ -n "$WORKLOADS" ]; then
  kept=()
  for c in "${CASES[@]}"; do
    read -r name _ <<<"$c"
    [[ " $WORKLOADS " == *" ${name%-*} "* ]] && kept+=("$c")
  done
  CASES=("${kept[@]}")
  [ "${#CASES[@]}" -gt 0 ] || die "WORKLOADS='$WORKLOADS' selects none of uname cross emul cc"
fi
declare -A TIMES
LOADS= # the 1-minute load average after each timed run
for ((r = 1 - WARMUP; r <= RUNS; r++)); do
  for c in "${CASES[@]}"; do
    read -r name ctx plats <<<"$c"
    for tool in kiln buildah; do
      s=$("run_$tool" "$ctx" "$plats")
      LOADS+="$(cut -d' ' -f1 /proc/loadavg) "
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
  echo "command=nice -n -19 bash bench/multiplatform.sh (RUNS=$RUNS WARMUP=$WARMUP STEPS=$STEPS IDLE_WAIT=$IDLE_WAIT${WORKLOADS:+ WORKLOADS=\"$WORKLOADS\"})"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "loadavg_1min_after_each_run=$(minmax <<<"$LOADS") (min..max; median $(median <<<"$LOADS"))"
  echo "kiln_version=$KILN_VERSION"
  echo "buildah_version=$BUILDAH_VERSION"
  echo "qemu_user_static=$QEMU_VERSION"
  echo "buildkit=not measured (dockerd 20.10's docker driver refuses several platforms;" \
    "buildkitd/buildctl/docker-buildx on PATH: ${BUILDKIT_TOOLS:-none}; Debian bookworm and" \
    "bookworm-backports package none of them)"
  if [ "$CC_WORKLOAD" = 1 ]; then
    echo "cc.debian_layout=$DEBIAN_LAYOUT:$DEBIAN_TAG"
    echo "cc.toolchain_image_build_s=$TOOLCHAIN_S (kiln, once, untimed: apt-get install gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
    echo "cc.check.linux_arm64=$CC_FILE_ARM64; runs under QEMU: $CC_RUN_ARM64"
    echo "cc.check.linux_amd64=$CC_FILE_AMD64; runs: $CC_RUN_AMD64"
  else
    echo "cc=left out (no Debian OCI layout at $DEBIAN_LAYOUT)"
  fi
  for c in "${CASES[@]}"; do
    read -r name _ _ <<<"$c"
    for tool in kiln buildah; do
      echo "$name.$tool.times=${TIMES[$name.$tool]% }"
      echo "$name.$tool.median_s=$(median <<<"${TIMES[$name.$tool]}")"
    done
    echo "ratio.$name.buildah/kiln=$(ratio "$(median <<<"${TIMES[$name.buildah]}")" "$(median <<<"${TIMES[$name.kiln]}")")"
  done
  for tool in kiln buildah; do
    [ -n "${TIMES[emul-arm64.$tool]:-}" ] || continue
    awk -v a="$(median <<<"${TIMES[emul-arm64.$tool]}")" -v b="$(median <<<"${TIMES[emul-amd64.$tool]}")" \
      -v n="$STEPS" -v t="$tool" 'BEGIN { printf "%s.emulated_run_overhead_ms_per_step=%.1f\n", t, (a - b) * 1000 / n }'
  done
} | tee "$OUT"
log "summary written to $OUT"
