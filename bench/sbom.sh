#!/usr/bin/env bash
# Benchmark: SPDX SBOM generation by kiln-sbom (the library, through its `scan` example)
# for a Debian bookworm root with jq (debootstrap --variant=minbase --include=jq, the
# crates/sbom integration test's cached fixture) and for a synthetic root holding
# PY_PKGS Python distributions (*.dist-info/METADATA) and NPM_PKGS npm packages
# (node_modules/*/package.json) beside a few hundred other files.  Warm page cache.
# Prints every timed run (scan time as the library measures it, the process's wall
# clock and its CPU time, user + system, from /usr/bin/time) and the medians, and writes the same as key=value lines to
# bench/results/sbom-<UTC date>.txt.
#
# No other scanner is timed: syft (BuildKit's default scanner, run from the
# docker/buildkit-syft-scanner image) is neither in Debian bookworm nor reachable here.
#
# Usage (from anywhere; root only to build the Debian fixture if it is missing):
#   bash bench/sbom.sh
#
# Environment knobs:
#   RUNS=9            timed runs per tree (median reported)
#   PY_PKGS=1000      Python distributions in the synthetic tree
#   NPM_PKGS=1000     npm packages in the synthetic tree
#   GOAL_S=0.5        goal for each median (seconds)
#   DEBIAN_ROOT=DIR   the Debian root (default target/kiln-fixtures/debian-bookworm-jq-rootfs;
#                     made by debootstrap when missing)
#   RESULTS_DIR=DIR   where the summary goes (default: bench/results in the repo)
set -euo pipefail
BENCH=sbom
REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
RUNS=${RUNS:-9}
PY_PKGS=${PY_PKGS:-1000}
NPM_PKGS=${NPM_PKGS:-1000}
GOAL_S=${GOAL_S:-0.5}
DEBIAN_ROOT=${DEBIAN_ROOT:-$REPO/target/kiln-fixtures/debian-bookworm-jq-rootfs}
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-bench-sbom.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "building the scan example (release)"
(cd "$REPO" && quiet cargo build --release -p kiln-sbom --example scan)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
SCAN=$TARGET/release/examples/scan
[ -x "$SCAN" ] || die "no $SCAN"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install time)"

if [ ! -f "$DEBIAN_ROOT/var/lib/dpkg/status" ]; then
  log "making the Debian root (debootstrap, a few minutes)"
  tmp=$(mktemp -d "$(dirname "$DEBIAN_ROOT")/debian-jq-XXXXXX")
  quiet debootstrap --variant=minbase --include=jq bookworm "$tmp/rootfs" http://deb.debian.org/debian
  mv "$tmp/rootfs" "$DEBIAN_ROOT"; rmdir "$tmp"
fi

log "making the synthetic tree ($PY_PKGS Python + $NPM_PKGS npm packages)"
SYN=$WORK/synthetic
site=$SYN/usr/lib/python3/dist-packages
mods=$SYN/srv/app/node_modules
mkdir -p "$site" "$mods" "$SYN/usr/bin"
for i in $(seq 1 "$PY_PKGS"); do
  d=$site/pkg_$i-1.$i.0.dist-info
  mkdir -p "$d" "$site/pkg_$i"
  printf 'Metadata-Version: 2.1\nName: pkg_%d\nVersion: 1.%d.0\nLicense: MIT\nSummary: synthetic\n\nlong description\n' "$i" "$i" >"$d/METADATA"
  printf 'pkg_%d/__init__.py,,\n' "$i" >"$d/RECORD"
  : >"$site/pkg_$i/__init__.py"
done
for i in $(seq 1 "$NPM_PKGS"); do
  d=$mods/npm-pkg-$i
  mkdir -p "$d/lib"
  printf '{"name":"npm-pkg-%d","version":"2.%d.0","license":"ISC","main":"lib/index.js"}\n' "$i" "$i" >"$d/package.json"
  echo "module.exports = $i;" >"$d/lib/index.js"
done
for i in $(seq 1 200); do printf '#!/bin/sh\necho %d\n' "$i" >"$SYN/usr/bin/tool$i"; chmod +x "$SYN/usr/bin/tool$i"; done

declare -A TIMES WALL CPU PKGS
for tree in debian synthetic; do
  root=$DEBIAN_ROOT; [ "$tree" = synthetic ] && root=$SYN
  "$SCAN" "$root" "$WORK/$tree.json" 2>"$WORK/last.log" || { cat "$WORK/last.log" >&2; die "scan of $tree failed"; }
  for r in $(seq 1 "$RUNS"); do
    start=$(date +%s.%N)
    /usr/bin/time -f "cpu=%U %S" -o "$WORK/cpu.log" "$SCAN" "$root" "$WORK/$tree.json" 2>"$WORK/last.log"
    end=$(date +%s.%N)
    cpu=$(awk '/^cpu=/ { sub("cpu=", ""); printf "%.2f\n", $1 + $2 }' "$WORK/cpu.log")
    secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$WORK/last.log")
    PKGS[$tree]=$(sed -n 's/.*packages=\([0-9]*\).*/\1/p' "$WORK/last.log")
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.6f\n", b - a }')
    log "$tree run $r: scan ${secs} s, process ${wall} s (CPU ${cpu} s), ${PKGS[$tree]} SPDX packages"
    TIMES[$tree]+="$secs "
    WALL[$tree]+="$wall "
    CPU[$tree]+="$cpu "
  done
done

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/sbom-$STAMP.txt
{
  echo "commit=$(git -C "$REPO" rev-parse --short HEAD)"
  echo "runs=$RUNS"
  echo "nproc=$(nproc)"
  for tree in debian synthetic; do
    echo "$tree.spdx_packages=${PKGS[$tree]}"
    echo "$tree.scan_median_s=$(median <<<"${TIMES[$tree]}")"
    echo "$tree.scan_range_s=$(minmax <<<"${TIMES[$tree]}")"
    echo "$tree.process_median_s=$(median <<<"${WALL[$tree]}")"
    echo "$tree.process_cpu_median_s=$(median <<<"${CPU[$tree]}")"
    awk -v m="$(median <<<"${WALL[$tree]}")" -v lim="$GOAL_S" -v t="$tree" \
      'BEGIN { printf "%s.goal=process median <= %.3f s: %s\n", t, lim, (m <= lim ? "met" : "NOT met") }'
  done
  echo "scanner_compared=none (syft is not in Debian bookworm and no registry is reachable)"
} | tee "$OUT"
