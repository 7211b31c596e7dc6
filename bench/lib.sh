# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run).  Before sourcing, set
#   BENCH=name        prefix of log and error lines
# and before using the helpers
#   WORK=DIR          scratch directory of this run (quiet's log goes there)
#   IDLE_WAIT, IDLE_BUSY   the idle gate's limits (see idle_gate)
# and, if dockerd is used, DOCKER_CLI, DOCKER_STORAGE_DRIVER and DOCKER_DIR (its data,
# exec root and socket go there; DOCKERD_PID is set by start_dockerd).  After sourcing,
# TIMED_SYNC=0 makes timed_into / timed skip their `sync` (see timed_into).
#
# Every benchmark script in bench/ sources it; none keeps a copy of these helpers.

die() { echo "$BENCH: $*" >&2; exit 1; }
log() { echo "$BENCH: $*" >&2; }

unmount_under() { # unmount everything mounted at or below $1, deepest first
  local m
  findmnt -rn -o TARGET | awk -v p="$1" 'index($0, p) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

fresh_dir() { unmount_under "$1"; rm -rf --one-file-system "$1"; mkdir -p "$1"; }

# Run a command with its output in $WORK/last.log; on failure show the log and stop.
quiet() {
  if ! "$@" >"$WORK/last.log" 2>&1; then
    echo "$BENCH: command failed: $*" >&2
    tail -n 30 "$WORK/last.log" >&2
    exit 1
  fi
}

# CPU busy percent of the whole machine over one second (from /proc/stat).
busy_pct() {
  local a b
  a=$(awk '/^cpu / { print $2+$3+$4+$6+$7+$8+$9, $5+$6 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / { print $2+$3+$4+$6+$7+$8+$9, $5+$6 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    d = (y[1] - x[1]) + (y[2] - x[2]); printf "%d\n", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

# On a shared machine, wait (up to IDLE_WAIT s) until it is quiet before a timed run.
# Counts the runs that were timed anyway in IDLE_MISSES.
IDLE_MISSES=0
idle_gate() {
  [ "$IDLE_WAIT" -gt 0 ] || return 0
  local start=$SECONDS b
  while b=$(busy_pct); [ "$b" -ge "$IDLE_BUSY" ]; do
    if [ $((SECONDS - start)) -ge "$IDLE_WAIT" ]; then
      log "warning: machine still ${b}% busy after ${IDLE_WAIT}s; timing anyway"
      IDLE_MISSES=$((IDLE_MISSES + 1))
      return 0
    fi
  done
}

# Wall-clock seconds of one command (output to $WORK/last.log); sets e.g. 0.212345.
# Earlier dirty pages are written back first (unless TIMED_SYNC=0, which run-steps.sh
# and parallel-stages.sh set: they were measured without it) and the machine must be
# idle (both untimed).  Call it directly, not in $( ), when IDLE_MISSES should count.
TIMED_SYNC=1
timed_into() { # $1: variable to set (any name but these locals'), then the command
  local _ti_var=$1 _ti_t0 _ti_t1
  shift
  [ "$TIMED_SYNC" = 0 ] || sync
  idle_gate
  _ti_t0=$EPOCHREALTIME
  quiet "$@"
  _ti_t1=$EPOCHREALTIME
  printf -v "$_ti_var" '%s' "$(awk -v a="$_ti_t0" -v b="$_ti_t1" 'BEGIN { printf "%.6f\n", b - a }')"
}
# The same, printing the seconds (for $(...); its idle gate misses are not counted).
timed() { local _secs; timed_into _secs "$@"; echo "$_secs"; }

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END {
  if (NR % 2) printf "%.6f\n", v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minmax() { tr ' ' '\n' | awk 'NF' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f..%.3f\n", lo, hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'; }

# The busybox base's build context in $1: Debian's static busybox with one symlink per
# applet, /etc/passwd, /etc/group; Dockerfile `FROM scratch` / `COPY rootfs/ /`.
make_base_ctx() {
  local dir=$1 a
  mkdir -p "$dir/rootfs"/{bin,etc,proc,dev,sys,tmp,root,home}
  cp "$BUSYBOX" "$dir/rootfs/bin/busybox"
  for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -s busybox "$dir/rootfs/bin/$a"
  done
  chmod 1777 "$dir/rootfs/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/rootfs/etc/passwd"
  echo 'root:x:0:' >"$dir/rootfs/etc/group"
  printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n' >"$dir/Dockerfile"
}

# The large context in $1 (as bench/noop-rebuild.sh makes it): DIRS x FILES_PER_DIR
# files of SMALL_BYTES base64 text (d000/f000.txt ...), BINS files of BIN_BYTES random
# bytes (bin/blob00.bin ...), and a Dockerfile `FROM bb:1` / `COPY . /app` / RUN.
make_big_ctx() {
  local ctx=$1 d b dir
  mkdir -p "$ctx"
  for ((d = 0; d < DIRS; d++)); do
    dir=$ctx/$(printf 'd%03d' "$d")
    mkdir -p "$dir"
    head -c $((FILES_PER_DIR * SMALL_BYTES * 3 / 4 + 3)) /dev/urandom | base64 -w 76 >"$WORK/chunk"
    truncate -s $((FILES_PER_DIR * SMALL_BYTES)) "$WORK/chunk"
    split -b "$SMALL_BYTES" -d -a 3 --additional-suffix=.txt "$WORK/chunk" "$dir/f"
  done
  mkdir -p "$ctx/bin"
  for ((b = 0; b < BINS; b++)); do
    head -c "$BIN_BYTES" /dev/urandom >"$ctx/bin/$(printf 'blob%02d.bin' "$b")"
  done
  printf 'FROM bb:1\nCOPY . /app\nRUN ls /app | wc -l\n' >"$ctx/Dockerfile"
  rm -f "$WORK/chunk"
}

dk() { "$DOCKER_CLI" -H "unix://$DOCKER_DIR/docker.sock" "$@"; }

start_dockerd() {
  mkdir -p "$DOCKER_DIR/data" "$DOCKER_DIR/exec"
  dockerd --iptables=false --bridge=none --storage-driver="$DOCKER_STORAGE_DRIVER" \
    --host "unix://$DOCKER_DIR/docker.sock" --data-root "$DOCKER_DIR/data" \
    --exec-root "$DOCKER_DIR/exec" --pidfile "$DOCKER_DIR/dockerd.pid" \
    >"$DOCKER_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 150); do
    dk version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 20 "$DOCKER_DIR/dockerd.log" >&2
  die "private dockerd did not come up"
}

stop_dockerd() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  local ctr_pid=
  [ -f "$DOCKER_DIR/exec/containerd/containerd.pid" ] &&
    ctr_pid=$(cat "$DOCKER_DIR/exec/containerd/containerd.pid" 2>/dev/null || true)
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  # dockerd's managed containerd normally exits with it; make sure ours did.
  if [ -n "$ctr_pid" ] && kill -0 "$ctr_pid" 2>/dev/null &&
     grep -q "$DOCKER_DIR" "/proc/$ctr_pid/cmdline" 2>/dev/null; then
    kill -TERM "$ctr_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$ctr_pid" 2>/dev/null || true
  fi
  DOCKERD_PID=
}

# A docker-registry ($REGISTRY) with its config, log and storage in $1, on a free
# loopback port; sets PORT and REG_PID.  stop_registry stops it.
start_registry() {
  local dir=$1
  mkdir -p "$dir/storage"
  for _ in $(seq 20); do
    PORT=$((20000 + RANDOM % 20000))
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
    "$REGISTRY" serve "$dir/config.yml" >"$dir/log.txt" 2>&1 &
    REG_PID=$!
    for _ in $(seq 100); do
      if curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1; then return 0; fi
      kill -0 "$REG_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_registry
  done
  tail -n 20 "$dir/log.txt" >&2
  die "the registry did not come up"
}

stop_registry() {
  [ -n "${REG_PID:-}" ] || return 0
  kill -TERM "$REG_PID" 2>/dev/null || true
  wait "$REG_PID" 2>/dev/null || true
  REG_PID=
}

# Builds kiln unless KILN_BIN is set; sets KILN_BIN to an absolute path.
find_kiln() {
  if [ -z "${KILN_BIN:-}" ]; then
    command -v cargo >/dev/null || die "cargo not found; build kiln or set KILN_BIN"
    log "building kiln (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet)
    KILN_BIN=$REPO/target/release/kiln
  fi
  [ -x "$KILN_BIN" ] || die "kiln binary not found at $KILN_BIN"
  KILN_BIN=$(realpath "$KILN_BIN")
}

# The short commit of the tree holding the scripts, with "+dirty" if it has changes.
git_rev() {
  local rev
  rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then rev="$rev+dirty"; fi
  echo "$rev"
}

# key=value lines the result files start with (run-steps.sh, noop-rebuild.sh and
# parallel-stages.sh write these keys themselves, in their own order and without the
# last two, as their earlier results have them).
machine_lines() {
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git=$GIT_REV (of the tree holding this script)"
  echo "kernel=$(uname -r)"
  echo "cpus=$(nproc)"
  echo "cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "mem_total_kb=$(awk '/MemTotal/ { print $2 }' /proc/meminfo)"
  echo "fs=$(findmnt -n -o FSTYPE,OPTIONS --target "$WORK" | head -n 1)"
}

# Taken when the script starts, before its own result file makes the tree dirty.
GIT_REV=$(git_rev)
