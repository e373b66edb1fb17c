#!/usr/bin/env bash
# Interleaved A/B runs of tusker builds on one load-generator scenario.
#
#   bench/ab.sh REPS OUT.jsonl NAME=BINARY... -- LOADGEN-ARGS...
#
#   bench/ab.sh 5 /tmp/ab.jsonl old=/tmp/tusker-old new=target/release/tusker \
#       -- single --size 1GiB
#   bench/ab.sh 4 /tmp/ab.jsonl old=... new=... -- many --uploads 100 --size 64MiB
#
# Each repetition runs every binary once, in the order given, each started
# fresh on an empty data directory, so slow phases of a shared machine hit
# all of them alike. A BINARY may be a script that execs tusker with extra
# flags or environment (`exec tusker --checkpoint-size 256MiB "$@"`).
# The BINARY `@sink` measures this machine's limit instead (`loadgen sink`
# and `loadgen limit` with the scenario's streams and size; `single` and
# `many` only), and `@sink-dontcache` the same receiver writing with
# RWF_DONTCACHE:   bench/ab.sh 6 /tmp/ab.jsonl limit=@sink t=target/release/tusker -- single --size 1GiB
# Prints the median and every run of each figure; raw lines go to OUT.
# Needs bench/loadgen built (`cd bench/loadgen && cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 4 ]; then sed -n '2,19p' "$0"; exit 2; fi
REPS=$1 OUT=$2
shift 2
SPECS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do SPECS+=("$1"); shift; done
[ $# -gt 0 ] && shift
LOADGEN=bench/loadgen/target/release/loadgen
# shellcheck source=bench/lib.sh
. bench/lib.sh
[ -x "$LOADGEN" ] || { echo "build bench/loadgen first" >&2; exit 2; }
WORK=$(mktemp -d)
PID=
SINK_PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; [ -n "$SINK_PID" ] && kill $SINK_PID 2>/dev/null; rm -rf "$WORK"' EXIT

# What the limit receives for the scenario's arguments: the streams and
# the bytes of each.
STREAMS=1 SIZE=
args=("$@")
# `small` leaves thousands of files (bench/lib.sh, `discard`).
MANY_FILES=0; [ "${args[0]:-}" = small ] && MANY_FILES=1
for i in "${!args[@]}"; do
  case ${args[$i]} in
    --uploads) STREAMS=${args[$((i + 1))]} ;;
    --size) SIZE=${args[$((i + 1))]} ;;
  esac
done

sink() { # receiver name port
  case ${args[0]} in single|many) ;; *) echo "@sink: only single and many" >&2; exit 2 ;; esac
  measure_limit "$1" "$2" "$3" "$WORK/$2" "${SIZE:-1GiB}" "$STREAMS" ab "$OUT" "$WORK/$2.log" >/dev/null \
    || echo "$2: limit failed (see $WORK/$2.log)" >&2
}

for _ in $(seq "$REPS"); do
  port=1190
  for spec in "${SPECS[@]}"; do
    name=${spec%%=*} bin=${spec#*=}
    port=$((port + 1))
    mkdir -p "$WORK/$name"
    case $bin in
      @sink) sink limit "$name" $port; continue ;;
      @sink-dontcache) sink limit-dontcache "$name" $port; continue ;;
    esac
    RUST_LOG=warn "$bin" --listen 127.0.0.1:$port --data-dir "$WORK/$name" --max-creations-per-client 0 >"$WORK/$name.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
      curl -s -o /dev/null -X OPTIONS "http://127.0.0.1:$port/files/" && break
      sleep 0.1
    done
    sync
    timeout 900 "$LOADGEN" "$@" --url "http://127.0.0.1:$port/files/" --pid $PID \
      --server "$name" --scenario ab --out "$OUT" >/dev/null \
      || echo "$name: load generator failed (see $WORK/$name.log)" >&2
    kill $PID; wait $PID 2>/dev/null || true
    PID=
    discard "${WORK:?}/$name" "$MANY_FILES"
  done
done
trash_notice

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r.get("server") for r in rows))
for name in names:
    mine = [r for r in rows if r.get("server") == name]
    for key in ("mb_per_s", "uploads_per_s", "p99_ms", "cpu_s_per_gib", "peak_rss_mib"):
        v = [r[key] for r in mine if r.get(key) is not None]
        if v:
            print(f"{name:<12} {key:<14} median {statistics.median(v):9.3f}   all "
                  + " ".join(f"{x:.2f}" for x in v))
PY
