#!/usr/bin/env bash
# Counts the sync system calls (fsync, fdatasync, sync_file_range) a tusker
# binary makes for N sequential 64 KiB creation-with-upload requests: a
# repeatable figure on a noisy machine, where timings are not.
#
#   bench/fsync-count.sh path/to/tusker [path/to/other/tusker ...]
#
# Needs strace and a built bench/loadgen (bench/run.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD COUNT=${COUNT:-200} PORT=${PORT:-1192}
LOADGEN=$ROOT/bench/loadgen/target/release/loadgen
mkdir -p "$ROOT/bench/logs" "$ROOT/bench/work"
for bin in "$@"; do
  dir=$ROOT/bench/work/fsync-count out=$ROOT/bench/logs/fsync-count.$$.txt
  rm -rf "$dir"; mkdir -p "$dir"
  strace -f -c -e trace=fsync,fdatasync,sync_file_range -o "$out" \
    env RUST_LOG=warn "$bin" --listen 127.0.0.1:$PORT --data-dir "$dir" >/dev/null 2>&1 &
  tracer=$!
  for _ in $(seq 100); do curl -s -o /dev/null -X OPTIONS "http://127.0.0.1:$PORT/files/" && break; sleep 0.2; done
  "$LOADGEN" small --url "http://127.0.0.1:$PORT/files/" --count "$COUNT" --size 64KiB --concurrency 1 \
    --server fsync-count --scenario fsync-count --out /dev/null >/dev/null
  kill -TERM "$(pgrep -P $tracer)"; wait $tracer || true
  echo "== $bin: $COUNT uploads"
  cat "$out"; rm -f "$out"; rm -rf "$dir"
done
