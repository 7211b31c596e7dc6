#!/usr/bin/env bash
# kiln inside `docker run` (its own image, the repository's Dockerfile) against kiln on
# the host, in one run: (1) the capability matrix of docs/ci.md — for each container
# set-up, what a COPY-only build and a COPY+RUN build do (the isolation `auto` chose, or
# the first line of the error); (2) timings of the 20-RUN build and the apt-get build
# under each isolation level, on the host (forced with --isolation) and in the
# container (where `auto` picks it).  Same static kiln binary on both sides.
#
# Usage (as root):   bash bench/in-container.sh
#
# Environment knobs:
#   RUNS=2            timed runs of the 20-RUN build per configuration (median reported)
#   APT_RUNS=1        timed runs of the apt-get build per configuration
#   STEPS=20          RUN steps in the first build
#   SKIP_MATRIX=1 / SKIP_TIMES=1   leave out one part
#   KILN_BIN=PATH     the static kiln (default: .ci/static-kiln builds or finds it)
#   DEBIAN_LAYOUT=DIR the Debian base as an OCI layout (default: the tests' fixture,
#                     target/kiln-fixtures/debian-bookworm-oci; `cargo test --test it
#                     debian::` makes it)
#   IDLE_WAIT=0 IDLE_BUSY=10   the idle gate before each timed run (bench/lib.sh)
#
# Every build starts from an empty KILN_ROOT (a fresh `docker run --rm` volume in the
# container), pulls its base from a loopback registry and uses `--network host`, so the
# numbers differ only by where kiln runs and the isolation of its RUN steps.  In the
# container the build is timed by the container's own shell (no `docker run` start-up).
set -euo pipefail

BENCH=in-container
RUNS=${RUNS:-2}
APT_RUNS=${APT_RUNS:-1}
STEPS=${STEPS:-20}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_BUSY=${IDLE_BUSY:-10}
SKIP_MATRIX=${SKIP_MATRIX:-0}
SKIP_TIMES=${SKIP_TIMES:-0}
BUSYBOX=${BUSYBOX:-/bin/busybox}
REGISTRY=${REGISTRY:-docker-registry}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}
DOCKER_STORAGE_DRIVER=${DOCKER_STORAGE_DRIVER:-overlay2}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
DEBIAN_LAYOUT=${DEBIAN_LAYOUT:-$REPO/target/kiln-fixtures/debian-bookworm-oci}
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (dockerd)"
[ -f "$DEBIAN_LAYOUT/index.json" ] || die "no Debian layout at $DEBIAN_LAYOUT (run the debian tests once)"
KILN_BIN=${KILN_BIN:-$("$REPO/.ci/static-kiln")}
WORK=$(mktemp -d /var/tmp/kiln-in-container.XXXXXX)
DOCKER_DIR=$WORK/docker
cleanup() { stop_dockerd; stop_registry; unmount_under "$WORK"; rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

start_registry "$WORK/reg"
R=127.0.0.1:$PORT
start_dockerd
export DOCKER_HOST=unix://$DOCKER_DIR/docker.sock
k() { KILN_ROOT=$WORK/host-root "$KILN_BIN" "$@"; }

log "bases into $R, the kiln image into the private dockerd"
make_base_ctx "$WORK/bb"
quiet k build -q --push -t "$R/bb:1" "$WORK/bb"
quiet skopeo copy -q --dest-tls-verify=false "oci:$DEBIAN_LAYOUT:bookworm" "docker://$R/debian:bookworm"
quiet k build -q --load -t kiln:bench --build-arg "BASE=$R/debian:bookworm" "$REPO"

C=$WORK/ctx
mkdir -p "$C/copy" "$C/run" "$C/steps" "$C/apt"
echo data >"$C/copy/f"
printf 'FROM %s/bb:1\nCOPY f /f\n' "$R" >"$C/copy/Dockerfile"
cp "$C/copy/f" "$C/run/f"
printf 'FROM %s/bb:1\nCOPY f /f\nRUN cat /f > /g\n' "$R" >"$C/run/Dockerfile"
{ echo "FROM $R/bb:1"; for ((i = 1; i <= STEPS; i++)); do echo "RUN echo step $i > /s$i"; done; } >"$C/steps/Dockerfile"
printf 'FROM %s/debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends jq\n' "$R" >"$C/apt/Dockerfile"
chmod -R a+rX "$C"

# ctr USER "DOCKER OPTIONS" SCRIPT: one container of the kiln image.
ctr() {
  local user=$1 opts=$2 script=$3
  # shellcheck disable=SC2086
  dk run --rm --network host --user "$user" $opts -v "$C:/ctx:ro" kiln:bench sh -c "$script"
}

# What a build's stderr says: the isolation chosen, or the error's first line.
verdict() {
  local rc=$1 err=$2 note
  if [ "$rc" = 0 ]; then
    note=$(grep -o 'RUN steps use isolation `[a-z-]*`' "$err" | head -n 1 | sed 's/.*`\(.*\)`/\1/' || true)
    echo "works (${note:-namespaces})"
  else
    echo "fails: $(grep -E 'ERROR' "$err" | tail -n 1 | sed 's/^#[0-9]* //; s/|/\\|/g' | cut -c1-220)"
  fi
}

if [ "$SKIP_MATRIX" != 1 ]; then
  MATRIX=$WORK/matrix.md
  echo "| container (\`docker run\` …) | user | kiln flags | COPY-only build | COPY + RUN build |" >"$MATRIX"
  echo "| --- | --- | --- | --- | --- |" >>"$MATRIX"
  UNC="--security-opt seccomp=unconfined --security-opt apparmor=unconfined"
  row=0
  while IFS='|' read -r name user opts flags; do
    row=$((row + 1))
    set +e
    ctr "$user" "$opts" "kiln build --progress=plain $flags /ctx/copy" >/dev/null 2>"$WORK/copy-$row.err"
    rc1=$?
    ctr "$user" "$opts" "kiln build --progress=plain $flags /ctx/run" >/dev/null 2>"$WORK/run-$row.err"
    rc2=$?
    set -e
    v1=$(verdict $rc1 "$WORK/copy-$row.err"); v1=${v1% (*}
    v2=$(verdict $rc2 "$WORK/run-$row.err")
    log "$name / $user / $flags: $v1 / $v2"
    [ "$rc1$rc2" = 00 ] || { tail -n 5 "$WORK/copy-$row.err" "$WORK/run-$row.err" >&2; }
    echo "| $name | $user | ${flags:-} | $v1 | $v2 |" >>"$MATRIX"
  done <<EOF
default|root|
default|kiln|
seccomp and AppArmor unconfined|root|$UNC
seccomp and AppArmor unconfined|kiln|$UNC
same, with --device /dev/net/tun|kiln|$UNC --device /dev/net/tun
same, with --security-opt no-new-privileges|kiln|$UNC --device /dev/net/tun --security-opt no-new-privileges
same, with --cap-drop ALL --cap-add SETUID --cap-add SETGID|kiln|$UNC --device /dev/net/tun --cap-drop ALL --cap-add SETUID --cap-add SETGID
same, with --cap-drop ALL|kiln|$UNC --device /dev/net/tun --cap-drop ALL
--cap-drop ALL (default seccomp)|root|--cap-drop ALL
--cap-add SYS_ADMIN (default seccomp)|root|--cap-add SYS_ADMIN
--cap-add SYS_ADMIN (default seccomp)|root|--cap-add SYS_ADMIN|--network=host
--cap-add SYS_ADMIN, seccomp unconfined|root|--cap-add SYS_ADMIN --security-opt seccomp=unconfined
--cap-add SYS_ADMIN, seccomp unconfined, --device /dev/net/tun|root|--cap-add SYS_ADMIN --security-opt seccomp=unconfined --device /dev/net/tun
--cap-add SYS_ADMIN, --device /dev/net/tun (default seccomp)|root|--cap-add SYS_ADMIN --device /dev/net/tun
--cap-add SYS_ADMIN, seccomp and AppArmor unconfined|root|--cap-add SYS_ADMIN $UNC
--cap-add SYS_ADMIN, seccomp and AppArmor unconfined|root|--cap-add SYS_ADMIN $UNC|--network=host
seccomp and AppArmor unconfined|kiln|$UNC|--network=host
--privileged|root|--privileged
--privileged|kiln|--privileged
EOF
fi

if [ "$SKIP_TIMES" != 1 ]; then
  TIMES=$WORK/times.txt
  : >"$TIMES"
  # host ISOLATION CTX: one cold build on the host.
  host_once() {
    rm -rf --one-file-system "$WORK/host-root"
    timed_into T k build -q --network host --isolation "$1" "$C/$2"
  }
  # in_ctr USER "OPTS" CTX: one cold build in a fresh container, timed inside.
  ctr_once() {
    local out
    idle_gate
    if ! out=$(ctr "$1" "$2" "s=\$(date +%s.%N); kiln build -q --network host /ctx/$3 >/dev/null 2>/tmp/err || { cat /tmp/err >&2; exit 1; }; e=\$(date +%s.%N); echo \"\$s \$e\""); then
      T=nan
      return 0
    fi
    T=$(echo "$out" | awk '{ printf "%.6f\n", $2 - $1 }')
  }
  UNC="--security-opt seccomp=unconfined --security-opt apparmor=unconfined"
  for ctx in steps apt; do
    n=$RUNS; [ "$ctx" = apt ] && n=$APT_RUNS
    while IFS='|' read -r label kind a b; do
      ts=""
      for ((r = 0; r < n; r++)); do
        if [ "$kind" = host ]; then host_once "$a" "$ctx"; else ctr_once "$a" "$b" "$ctx"; fi
        ts="$ts $T"
      done
      med=$(echo "$ts" | median)
      log "$ctx $label: $ts (median $med)"
      echo "$ctx|$label|$med|$(echo "$ts" | minmax)" >>"$TIMES"
    done <<EOF
host, namespaces|host|namespaces|
host, nosandbox-pid|host|nosandbox-pid|
host, chroot|host|chroot|
container root default seccomp (auto: chroot)|ctr|root|
container kiln unconfined (auto: nosandbox-pid)|ctr|kiln|$UNC
container kiln --privileged (auto: namespaces)|ctr|kiln|--privileged
EOF
  done
fi

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/in-container-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  machine_lines
  echo "load_note=other helpers' builds ran on the same 2 cores during this run"
  echo "kiln=$KILN_BIN (static)"
  [ -n "${MATRIX:-}" ] && { echo "# capability matrix"; cat "$MATRIX"; }
  if [ -n "${TIMES:-}" ]; then
    echo "# times: build|configuration|median seconds|min..max"
    cat "$TIMES"
  fi
} | tee "$OUT"
log "wrote $OUT"
