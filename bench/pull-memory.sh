#!/usr/bin/env bash
# Benchmark: peak memory (and wall time) while pulling an image whose base has one ~1 GB
# layer from a registry on the loopback interface: `kiln pull`, and `kiln build` of
# `FROM <that image>` + `RUN true` (which also unpacks the layer into a snapshot) with
# the overlay and the copy snapshotter, side by side with `skopeo copy` (to an OCI
# layout: download only, like `kiln pull`) and `buildah pull` (download and unpack,
# like the build) in one run.  Peak RSS is GNU time's "Maximum resident set size" of
# the command (the largest of its process and its waited-for children).
# Prints every timed run and writes key=value lines (per tool: peak RSS of each run,
# max, median, times; ratios; `goal_met=yes|no`) to bench/results/pull-memory-<UTC date>.txt.
#
# Usage (as root, from anywhere):   bash bench/pull-memory.sh
#
# Environment knobs:
#   RUNS=3            timed runs per tool and variant (medians and maxima are reported)
#   LAYER_MB=1024     size of the big layer's contents (MiB), split over FILES=8 files
#   VARIANTS="random text"   which big layers: `random` = bytes from /dev/urandom
#                     (incompressible; the gzip blob is as large as the files), `text` =
#                     `seq` output (decimal numbers, one a line; gzip -1 makes it ~4.6x
#                     smaller, so the decompressor emits far more than it reads)
#   TOOLS="kiln-pull kiln-build-overlay kiln-build-copy skopeo buildah"   rows to measure
#   GOAL_RSS_KB=65536 goal: every kiln run's peak RSS at most this (64 MiB)
#   IDLE_WAIT=30      before each timed run, wait up to this many seconds for the machine
#                     to be under IDLE_BUSY=10 % CPU busy (1 s sample; 0 disables).  The
#                     goal is about memory, which load does not change; wall times taken
#                     while the gate timed out are flagged in the results.
#   KILN_BIN=PATH     kiln binary to use (default: `cargo build --release`, then
#                     target/release/kiln)
#   FIXTURES=DIR      where the images are made once and kept (default:
#                     target/bench-fixtures in the repo); delete it to remake them
#   REGISTRY=docker-registry   the registry binary (Debian's docker-registry, run as
#                     `docker-registry serve CONFIG`)
#   BUSYBOX=/bin/busybox    static busybox for the base layer (Debian busybox-static)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
#
# Set-up.  Once per variant (cached in FIXTURES/pull-memory-VARIANT-LAYER_MBm-FILESf):
# an OCI layout, tag `1`, made with plain tools rather than kiln: layer 1 = the busybox
# tree of bench/lib.sh's make_base_ctx, layer 2 = big/f00 ... big/NN; each a GNU tar
# (sorted, numeric owner 0, mtime 0) compressed with `gzip -1 -n` (one gzip member, as
# Docker and Go tools write them); config with both diff ids, OCI manifest, index.json.
# Per run of this script: one registry (127.0.0.1:PORT, plain HTTP, storage under the
# scratch dir, access log off) into which `skopeo copy oci:FIXTURE:1
# docker://127.0.0.1:PORT/big:VARIANT` uploads each variant (untimed).
#
# What is timed (wall clock of the command, under `/usr/bin/time -v -o FILE`), each with
# fresh state that is deleted after the run (untimed):
#   kiln-pull           `KILN_ROOT=NEW kiln pull -q 127.0.0.1:PORT/big:V`
#   kiln-build-overlay  `KILN_ROOT=NEW kiln build -q --snapshotter overlay CTX`, CTX's
#                       Dockerfile `FROM 127.0.0.1:PORT/big:V` / `RUN true`
#   kiln-build-copy     the same with `--snapshotter copy`
#   skopeo              `skopeo copy -q --src-tls-verify=false docker://127.0.0.1:PORT/big:V oci:NEW:1`
#   buildah             `buildah --root NEW --runroot NEW pull -q --tls-verify=false
#                       docker://127.0.0.1:PORT/big:V` (buildah's default graph driver,
#                       reported in the results)
# Runs are interleaved: for each run, each variant, each tool.  Evidence, after every
# run: kiln-pull's and skopeo's stores hold the big layer's blob under its digest with
# its size; kiln-build's snapshot of the layer chain (snapshots-v1/<chain id>) holds
# every big file with its size; buildah lists one image.
#
# Everything started (the registry) and made (scratch dir, mounts under it, a
# half-made fixture) is removed on exit, also on failure or interrupt.

set -euo pipefail

RUNS=${RUNS:-3}
LAYER_MB=${LAYER_MB:-1024}
FILES=${FILES:-8}
VARIANTS=${VARIANTS:-random text}
TOOLS=${TOOLS:-kiln-pull kiln-build-overlay kiln-build-copy skopeo buildah}
GOAL_RSS_KB=${GOAL_RSS_KB:-65536}
IDLE_WAIT=${IDLE_WAIT:-30}
IDLE_BUSY=${IDLE_BUSY:-10}
REGISTRY=${REGISTRY:-docker-registry}
BUSYBOX=${BUSYBOX:-/bin/busybox}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
FIXTURES=${FIXTURES:-$REPO/target/bench-fixtures}
BENCH=pull-memory
WORK=$(mktemp -d /tmp/kiln-bench-pullmem.XXXXXX)
REG_PID=
FIX_TMP=
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cd /
  stop_registry
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK" 2>/dev/null || log "could not remove all of $WORK"
  [ -z "$FIX_TMP" ] || rm -rf --one-file-system "$FIX_TMP" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK" # nothing lands in the caller's directory

# ---------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "must run as root (kiln's RUN sandbox, overlay mounts and buildah need it)"
for v in RUNS LAYER_MB FILES GOAL_RSS_KB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
for v in IDLE_WAIT IDLE_BUSY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
read -r -a VARIANT_LIST <<<"$VARIANTS"
read -r -a TOOL_LIST <<<"$TOOLS"
[ "${#VARIANT_LIST[@]}" -gt 0 ] || die "VARIANTS is empty"
[ "${#TOOL_LIST[@]}" -gt 0 ] || die "TOOLS is empty"
for v in "${VARIANT_LIST[@]}"; do
  case $v in random | text) ;; *) die "unknown variant \`$v' in VARIANTS (expected random, text)" ;; esac
done
NEED_KILN=0
for t in "${TOOL_LIST[@]}"; do
  case $t in
    kiln-pull | kiln-build-overlay | kiln-build-copy) NEED_KILN=1 ;;
    skopeo | buildah) ;;
    *) die "unknown tool \`$t' in TOOLS (expected kiln-pull, kiln-build-overlay, kiln-build-copy, skopeo, buildah)" ;;
  esac
done
[ -n "${EPOCHREALTIME:-}" ] || die "bash >= 5 needed (EPOCHREALTIME)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"
command -v "$REGISTRY" >/dev/null || die "$REGISTRY not found (apt-get install docker-registry)"
command -v skopeo >/dev/null || die "skopeo not found (apt-get install skopeo)"
[[ " ${TOOL_LIST[*]} " != *" buildah "* ]] || command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
[ -x "$BUSYBOX" ] || die "busybox not found at $BUSYBOX (apt-get install busybox-static)"
for t in curl tar gzip sha256sum seq head findmnt umount awk sort stat; do
  command -v "$t" >/dev/null || die "$t not found"
done
[ "$NEED_KILN" = 0 ] || find_kiln

# ---------------------------------------------------------------- fixtures
case $(uname -m) in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) ARCH=$(uname -m) ;;
esac

# Moves file $1 into OCI layout $2 as a blob; prints "sha256:HEX SIZE".
add_blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$2/blobs/sha256/$hex"
  echo "sha256:$hex $size"
}

# A tar of the entries under $1 (sorted, numeric owner 0, mtime 0), gzip -1 -n, to $2;
# prints the tar's diff id.
tar_gz() {
  local dir=$1 out=$2
  (cd "$dir" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort |
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu -cf - -T -) |
    gzip -1 -n >"$out"
  echo "sha256:$(gzip -dc "$out" | sha256sum | cut -d' ' -f1)"
}

# Makes (once) the OCI layout of variant $1; sets FIX to its directory.
make_fixture() {
  local v=$1 t per i l1 l2 d1 d2 cfg man
  FIX=$FIXTURES/pull-memory-$v-${LAYER_MB}m-${FILES}f
  if [ -f "$FIX/meta" ]; then
    log "fixture $v: using $FIX"
    return 0
  fi
  mkdir -p "$FIXTURES"
  rm -rf --one-file-system "$FIX"
  FIX_TMP=$(mktemp -d "$FIXTURES/.pull-memory-$v.XXXXXX")
  t=$FIX_TMP
  log "fixture $v: making a $LAYER_MB MiB layer of $FILES files (once; kept in $FIX)"
  mkdir -p "$t/layout/blobs/sha256" "$t/big/big"
  make_base_ctx "$t/base"
  d1=$(tar_gz "$t/base/rootfs" "$t/l1.gz")
  per=$((LAYER_MB * 1048576 / FILES))
  for ((i = 0; i < FILES; i++)); do
    case $v in
      random) head -c "$per" /dev/urandom ;;
      # Numbers from a different start per file, so no two files are alike.
      # (seq dies of SIGPIPE when head has enough.)
      text) { seq $((i * 1000000000 + 1)) 99999999999 || true; } | head -c "$per" ;;
    esac >"$t/big/big/$(printf 'f%02d' "$i")"
  done
  d2=$(tar_gz "$t/big" "$t/l2.gz")
  rm -rf "$t/big" "$t/base"
  l1=$(add_blob "$t/l1.gz" "$t/layout")
  l2=$(add_blob "$t/l2.gz" "$t/layout")
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
    "$ARCH" "$d1" "$d2" >"$t/config.json"
  cfg=$(add_blob "$t/config.json" "$t/layout")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "${cfg% *}" "${cfg#* }" "${l1% *}" "${l1#* }" "${l2% *}" "${l2#* }" >"$t/manifest.json"
  man=$(add_blob "$t/manifest.json" "$t/layout")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
    "${man% *}" "${man#* }" >"$t/layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$t/layout/oci-layout"
  # What the evidence checks need.  Chain id of the two layers, as the OCI spec defines it.
  {
    echo "big_digest=${l2% *}"
    echo "big_size=${l2#* }"
    echo "big_diff_id=$d2"
    echo "big_file_bytes=$per"
    echo "chain_id=sha256:$(printf '%s %s' "$d1" "$d2" | sha256sum | cut -d' ' -f1)"
    echo "base_size=${l1#* }"
  } >"$t/layout/meta"
  mv "$t/layout" "$FIX"
  rm -rf --one-file-system "$t"
  FIX_TMP=
}

declare -A META
for v in "${VARIANT_LIST[@]}"; do
  make_fixture "$v"
  while IFS='=' read -r k val; do META[$v.$k]=$val; done <"$FIX/meta"
  META[$v.dir]=$FIX
done

# ---------------------------------------------------------------- the registry
PORT=
REG_DIR=$WORK/registry
start_registry "$REG_DIR"
for v in "${VARIANT_LIST[@]}"; do
  log "uploading fixture $v to 127.0.0.1:$PORT/big:$v"
  quiet skopeo copy -q --dest-tls-verify=false "oci:${META[$v.dir]}:1" "docker://127.0.0.1:$PORT/big:$v"
  mkdir -p "$WORK/ctx-$v"
  printf 'FROM 127.0.0.1:%s/big:%s\nRUN true\n' "$PORT" "$v" >"$WORK/ctx-$v/Dockerfile"
done

# ---------------------------------------------------------------- tools
S=$WORK/state # the running tool's state; made fresh before and removed after each run
TIME_V=$WORK/time-v.txt
tv() { /usr/bin/time -v -o "$TIME_V" "$@"; }

run_kiln-pull() { KILN_ROOT=$S/root tv "$KILN_BIN" pull -q "127.0.0.1:$PORT/big:$1"; }
run_kiln-build-overlay() { KILN_ROOT=$S/root tv "$KILN_BIN" build -q --snapshotter overlay "$WORK/ctx-$1"; }
run_kiln-build-copy() { KILN_ROOT=$S/root tv "$KILN_BIN" build -q --snapshotter copy "$WORK/ctx-$1"; }
run_skopeo() { tv skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/big:$1" "oci:$S/oci:1"; }
bh() { buildah --root "$S/root" --runroot "$S/runroot" "$@"; }
run_buildah() { tv buildah --root "$S/root" --runroot "$S/runroot" pull -q --tls-verify=false "docker://127.0.0.1:$PORT/big:$1"; }

# Checks what tool $1 left for variant $2; prints one line of evidence or fails.
has_blob() { # $1: blobs/sha256 dir, $2: variant
  local f=$1/${META[$2.big_digest]#sha256:}
  [ -f "$f" ] && [ "$(stat -c %s "$f")" = "${META[$2.big_size]}" ]
}
evidence() {
  local t=$1 v=$2 snap n f
  case $t in
    kiln-pull)
      has_blob "$S/root/content-v1/blobs/sha256" "$v" ||
        die "FAIL: kiln pull left no blob ${META[$v.big_digest]} of ${META[$v.big_size]} bytes"
      echo "the big layer's blob is in the content store under its digest, ${META[$v.big_size]} bytes"
      ;;
    kiln-build-*)
      snap=$S/root/snapshots-v1/${META[$v.chain_id]#sha256:}
      [ -d "$snap/big" ] || die "FAIL: $t left no snapshot of the layer chain at $snap"
      n=0
      for f in "$snap"/big/f*; do
        [ "$(stat -c %s "$f")" = "${META[$v.big_file_bytes]}" ] || die "FAIL: $f has the wrong size"
        n=$((n + 1))
      done
      [ "$n" = "$FILES" ] || die "FAIL: $snap/big holds $n files, expected $FILES"
      echo "snapshot of the chain holds big/f00..: $n files of ${META[$v.big_file_bytes]} bytes"
      ;;
    skopeo)
      has_blob "$S/oci/blobs/sha256" "$v" || die "FAIL: skopeo left no blob ${META[$v.big_digest]}"
      echo "the big layer's blob is in the OCI layout under its digest, ${META[$v.big_size]} bytes"
      ;;
    buildah)
      n=$(bh images -q | wc -l)
      [ "$n" = 1 ] || die "FAIL: buildah lists $n images after the pull"
      echo "buildah lists the image"
      ;;
  esac
}

# ---------------------------------------------------------------- measure
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A TIMES RSS EVIDENCE BUSY_RUNS
for ((r = 1; r <= RUNS; r++)); do
  for v in "${VARIANT_LIST[@]}"; do
    for t in "${TOOL_LIST[@]}"; do
      fresh_dir "$S"
      misses=$IDLE_MISSES
      timed_into s "run_$t" "$v"
      rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$TIME_V")
      [[ $rss =~ ^[0-9]+$ ]] || die "no peak RSS in $TIME_V"
      EVIDENCE[$v.$t]=$(evidence "$t" "$v")
      [ "$IDLE_MISSES" = "$misses" ] || BUSY_RUNS[$v.$t]=$((${BUSY_RUNS[$v.$t]:-0} + 1))
      fresh_dir "$S"
      TIMES[$v.$t]+="$s "
      RSS[$v.$t]+="$rss "
      printf 'run %d %-6s %-18s %8.3f s  peak RSS %8d KiB\n' "$r" "$v" "$t" "$s" "$rss"
    done
  done
done
rm -rf --one-file-system "$S"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
imedian() { median | awk '{ printf "%d\n", $1 }'; }
imax() { tr ' ' '\n' | awk 'NF' | sort -n | tail -n 1; }
has_tool() { [[ " ${TOOL_LIST[*]} " == *" $1 "* ]]; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/pull-memory-$STAMP.txt
KILN_MAX=0
{
  echo "benchmark=pull-memory"
  echo "command=bash bench/pull-memory.sh (RUNS=$RUNS LAYER_MB=$LAYER_MB FILES=$FILES VARIANTS=\"$VARIANTS\" TOOLS=\"$TOOLS\" IDLE_WAIT=$IDLE_WAIT IDLE_BUSY=$IDLE_BUSY)"
  machine_lines
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$LOAD_END"
  echo "idle_gate_timeouts=$IDLE_MISSES"
  if [ "$IDLE_MISSES" -gt 0 ]; then
    echo "note=wall times of $IDLE_MISSES of the timed runs were taken on a busy machine (the idle gate timed out); peak RSS does not depend on load"
  fi
  [ "$NEED_KILN" = 0 ] || echo "kiln_bin=$KILN_BIN"
  [ "$NEED_KILN" = 0 ] || echo "kiln_version=$("$KILN_BIN" --version)"
  echo "skopeo_version=$(skopeo --version)"
  if has_tool buildah; then
    echo "buildah_version=$(buildah --version)"
    mkdir -p "$S"
    echo "buildah_graph_driver=$(bh info --format '{{.store.GraphDriverName}}' 2>/dev/null || echo unknown)"
    fresh_dir "$S"
  fi
  echo "registry=$(dpkg-query -W -f '${Package} ${Version}' docker-registry 2>/dev/null || echo "$REGISTRY")"
  echo "goal_rss_kb=$GOAL_RSS_KB"
  echo "runs=$RUNS"
  for v in "${VARIANT_LIST[@]}"; do
    echo "$v.layer_content_bytes=$((${META[$v.big_file_bytes]} * FILES)) ($FILES files)"
    echo "$v.layer_blob_bytes=${META[$v.big_size]}"
    echo "$v.layer_digest=${META[$v.big_digest]}"
    echo "$v.base_layer_blob_bytes=${META[$v.base_size]}"
    for t in "${TOOL_LIST[@]}"; do
      k=$v.$t
      mx=$(imax <<<"${RSS[$k]}")
      echo "$k.rss_kb=${RSS[$k]% }"
      echo "$k.rss_max_kb=$mx"
      echo "$k.rss_median_kb=$(imedian <<<"${RSS[$k]}")"
      echo "$k.times=${TIMES[$k]% }"
      echo "$k.median_s=$(median <<<"${TIMES[$k]}")"
      echo "$k.range_s=$(minmax <<<"${TIMES[$k]}")"
      [ -z "${BUSY_RUNS[$k]:-}" ] || echo "$k.runs_timed_busy=${BUSY_RUNS[$k]}"
      echo "$k.evidence=${EVIDENCE[$k]}"
      if [[ $t == kiln-* ]] && [ "$mx" -gt "$KILN_MAX" ]; then KILN_MAX=$mx; fi
    done
    # The like-for-like pairs: download only, and download + unpack.
    for pair in skopeo:kiln-pull buildah:kiln-build-overlay buildah:kiln-build-copy; do
      a=${pair%%:*} b=${pair#*:}
      has_tool "$a" && has_tool "$b" || continue
      echo "$v.rss_ratio.$a/$b=$(ratio "$(imedian <<<"${RSS[$v.$a]}")" "$(imedian <<<"${RSS[$v.$b]}")")"
      echo "$v.time_ratio.$a/$b=$(ratio "$(median <<<"${TIMES[$v.$a]}")" "$(median <<<"${TIMES[$v.$b]}")")"
    done
  done
  if [ "$NEED_KILN" = 1 ]; then
    echo "kiln.rss_max_kb=$KILN_MAX"
    awk -v m="$KILN_MAX" -v lim="$GOAL_RSS_KB" 'BEGIN {
      printf "goal=every kiln run peak RSS <= %d KB: %s (max %.1f MiB)\n", lim, (m <= lim ? "met" : "NOT met"), m / 1024
      printf "goal_met=%s\n", (m <= lim ? "yes" : "no") }'
  fi
} | tee "$OUT"
log "summary written to $OUT"
