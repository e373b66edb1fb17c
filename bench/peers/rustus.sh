#!/usr/bin/env bash
# Starts rustus with the benchmark's settings, taking tusker's flags
# (--listen HOST:PORT --data-dir DIR), so bench/run.sh and bench/ab.sh
# start it the same way as a tusker binary. RUSTUS names the binary
# (default: bench/.tools/bin/rustus, installed by run.sh).
#
# fsync on: tusker always fsyncs before acknowledging. rustus 0.5 reads
# each PATCH body whole into memory (actix-web's Bytes extractor) and
# answers 413 past --max-body-size (default 256 KiB) without reading the
# rest: a client that sends the whole body before reading the answer (the
# load generator) blocks on a full TCP window. So the cap is raised above
# the largest PATCH (RUSTUS_MAX_BODY).
set -euo pipefail
RUSTUS=${RUSTUS:-$(dirname "$0")/../.tools/bin/rustus}
LISTEN= DIR=
while [ $# -gt 0 ]; do
  case $1 in
    --listen) LISTEN=$2; shift 2 ;;
    --data-dir) DIR=$2; shift 2 ;;
    *) echo "rustus.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
[ -n "$LISTEN" ] && [ -n "$DIR" ] || { echo "usage: $0 --listen HOST:PORT --data-dir DIR" >&2; exit 2; }
mkdir -p "$DIR/data" "$DIR/info"
RUSTUS_LOG_LEVEL=${RUSTUS_LOG_LEVEL:-ERROR} exec "$RUSTUS" --host "${LISTEN%:*}" --port "${LISTEN##*:}" \
  --data-dir "$DIR/data" --info-dir "$DIR/info" --force-fsync true \
  --max-body-size "${RUSTUS_MAX_BODY:-1100000000}"
