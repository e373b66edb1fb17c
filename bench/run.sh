#!/usr/bin/env bash
# tusker vs @tus/server vs rustus vs this machine's limit, on loopback.
#
#   bench/run.sh            the issue's sizes (1 GiB, 2,000 × 64 KiB, 100 × 64 MiB)
#   bench/run.sh --quick    small sizes, a couple of minutes
#
# Flags: --size N --chunk N --small-count N --small-size N --concurrency N
#        --many N --many-size N --servers tusker,tus-node,rustus
#        --slow N --slow-size N --slow-rate N
#        --scenarios 1,2,3,4,6,7,8 --no-peers-install
# Env:   TUSKER_BASELINE_BIN=path  also measures that tusker binary as
#        "tusker-baseline" (before/after comparisons in the same run).
#        TUSKER_VARIANT_BIN=path  one more, as "tusker-variant" (e.g. a
#        build with one change reverted).
#        TUSKER_BIN=path  measure that tusker binary instead of building one.
#        BENCH_NO_S3=1  skip bench/s3.sh at the end.
#        BENCH_REVERSE=1  run the servers in reverse order.
#        BENCH_WARMUP=0  measure each server right after whatever ran
#        before it, without the unrecorded warm-up run (default 1).
#        bench/median.py bench/results/A.jsonl B.jsonl ...  medians of runs.
#
# Scenario 6 (the limit) runs right before the servers of scenarios 1, 2
# and 4, with the same bytes, so every figure is a fraction of it.
#
# Writes bench/results/<stamp>.jsonl (raw, one JSON object per measurement)
# and its tables (bench/results/<stamp>.md); bench/results/ is not tracked.
# bench/README.md keeps the method and the latest figures.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

SIZE=1GiB CHUNK=5MiB SMALL_COUNT=2000 SMALL_SIZE=64KiB CONC=32 MANY=100 MANY_SIZE=64MiB
SLOW=8000 SLOW_SIZE=16KiB SLOW_RATE=1KiB
SERVERS=tusker,tus-node,rustus SCENARIOS=1,2,3,4,6,7,8 INSTALL_PEERS=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) SIZE=256MiB SMALL_COUNT=400 MANY=20 MANY_SIZE=16MiB SLOW=1000; shift ;;
    --slow) SLOW=$2; shift 2 ;;
    --slow-size) SLOW_SIZE=$2; shift 2 ;;
    --slow-rate) SLOW_RATE=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --chunk) CHUNK=$2; shift 2 ;;
    --small-count) SMALL_COUNT=$2; shift 2 ;;
    --small-size) SMALL_SIZE=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --many) MANY=$2; shift 2 ;;
    --many-size) MANY_SIZE=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --no-peers-install) INSTALL_PEERS=0; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
if [ -n "${TUSKER_BASELINE_BIN:-}" ]; then SERVERS="$SERVERS,tusker-baseline"; fi
if [ -n "${TUSKER_VARIANT_BIN:-}" ]; then SERVERS="$SERVERS,tusker-variant"; fi
# The servers run one after another in this order; BENCH_REVERSE=1 reverses
# it (the first server of a scenario may find the disk quieter: alternate
# the order between runs).
if [ -n "${BENCH_REVERSE:-}" ]; then
  SERVERS=$(tr ',' '\n' <<<"$SERVERS" | grep -v '^$' | tac | paste -sd, -)
fi

LOGS=$ROOT/bench/logs WORK=$ROOT/bench/work RESULTS=$ROOT/bench/results
mkdir -p "$LOGS" "$WORK" "$RESULTS"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS/$STAMP.jsonl
TOOLS=$ROOT/bench/.tools
RUSTUS=$TOOLS/bin/rustus
say() { printf '\n== %s\n' "$*" >&2; }

# rustus is a big build: start it first, in the background, and never block on it.
RUSTUS_PID=
if [[ ,$SERVERS, == *,rustus,* ]] && [ ! -x "$RUSTUS" ] && [ "$INSTALL_PEERS" = 1 ]; then
  say "installing rustus from crates.io in the background (log: bench/logs/rustus-install.log)"
  # Its own target dir: it must not wait for tusker's build lock.
  (CARGO_TARGET_DIR=$TOOLS/target nice -n 10 cargo install rustus --locked --root "$TOOLS" \
     >"$LOGS/rustus-install.log" 2>&1 || true) &
  RUSTUS_PID=$!
fi

if [ -n "${TUSKER_BIN:-}" ]; then
  TUSKER=$TUSKER_BIN   # an already built tusker (repeated runs)
else
  say "building tusker (release) and the load generator"
  cargo build --release --bin tusker
  TUSKER=$CARGO_TARGET_DIR/release/tusker
fi
(cd bench/loadgen && CARGO_TARGET_DIR=$ROOT/bench/loadgen/target cargo build --release --locked)
LOADGEN=$ROOT/bench/loadgen/target/release/loadgen
# shellcheck source=bench/lib.sh
. bench/lib.sh

if [[ ,$SERVERS, == *,tus-node,* ]] && [ "$INSTALL_PEERS" = 1 ]; then
  say "installing @tus/server from npm (bench/peers/tus-node)"
  (cd bench/peers/tus-node && npm ci --no-audit --no-fund >"$LOGS/npm.log" 2>&1) \
    || { echo "npm ci failed; see bench/logs/npm.log" >&2; SERVERS=${SERVERS//tus-node/}; }
fi

if [ -n "$RUSTUS_PID" ]; then
  say "waiting for the rustus install (started first; up to 15 minutes more)"
  for _ in $(seq 900); do kill -0 "$RUSTUS_PID" 2>/dev/null || break; sleep 1; done
fi
if [[ ,$SERVERS, == *,rustus,* ]] && [ ! -x "$RUSTUS" ]; then
  echo "rustus unavailable (see bench/logs/rustus-install.log); measuring without it" >&2
  echo "{\"server\":\"rustus\",\"scenario\":\"unavailable\",\"reason\":\"cargo install rustus failed or did not finish; see bench/logs/rustus-install.log\"}" >>"$OUT"
  SERVERS=${SERVERS//rustus/}
fi

PORT_tusker=1080 PORT_rustus=1081 PORT_tus_node=1082 PORT_tusker_baseline=1083 PORT_tusker_variant=1084 PORT_limit=1090
SERVER_PID=
start() { # name dir
  local name=$1 dir=$2 port var
  var=PORT_${name//-/_}; port=${!var}
  rm -rf "$dir"; mkdir -p "$dir"
  case $name in
    tusker) RUST_LOG=warn "$TUSKER" --listen 127.0.0.1:$port --data-dir "$dir" --max-creations-per-client 0 >"$LOGS/$name.log" 2>&1 & ;;
    tusker-baseline) RUST_LOG=warn "$TUSKER_BASELINE_BIN" --listen 127.0.0.1:$port --data-dir "$dir" --max-creations-per-client 0 >"$LOGS/$name.log" 2>&1 & ;;
    tusker-variant) RUST_LOG=warn "$TUSKER_VARIANT_BIN" --listen 127.0.0.1:$port --data-dir "$dir" --max-creations-per-client 0 >"$LOGS/$name.log" 2>&1 & ;;
    tus-node) node bench/peers/tus-node/server.mjs $port "$dir" >"$LOGS/$name.log" 2>&1 & ;;
    # fsync on, body cap raised: see bench/peers/rustus.sh.
    rustus) RUSTUS=$RUSTUS bench/peers/rustus.sh --listen 127.0.0.1:$port --data-dir "$dir" \
              >"$LOGS/$name.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 200); do
    if curl -s -o /dev/null -X OPTIONS "http://127.0.0.1:$port/files/"; then return 0; fi
    kill -0 $SERVER_PID 2>/dev/null || { echo "$name died; see bench/logs/$name.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$name did not come up" >&2; return 1
}
stop() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi; SERVER_PID=; }
trap 'stop; [ -n "${SINK_PID:-}" ] && kill $SINK_PID 2>/dev/null; true' EXIT

# The limit, measured right before the servers of a scenario (same bytes,
# same moment of this noisy machine): a raw receiver that writes the
# stream(s) to files and fsyncs, once through the page cache ("limit") and
# once with RWF_DONTCACHE ("limit-dontcache"). The report divides by the
# faster of the two: the best this machine did at that moment.
limit_for() { # key streams size
  local key=$1 streams=$2 size=$3 name
  for name in limit limit-dontcache; do
    say "$key on the $name (loopback → file → fsync)"
    measure_limit "$name" "$name" $PORT_limit "$WORK/limit" "$size" "$streams" "$key" "$OUT" "$LOGS/sink.log" || true
  done
}

# Drives the load generator against the started server NAME; its JSON
# line goes to OUT.
load() { # name key out loadgen-args...
  local name=$1 key=$2 out=$3 var=PORT_${1//-/_}
  shift 3
  timeout "${LOADGEN_TIMEOUT:-900}" "$LOADGEN" "$@" --url "http://127.0.0.1:${!var}/files/" --pid "$SERVER_PID" \
    --server "$name" --scenario "$key" --out "$out"
}

run_scenario() { # key loadgen-args...
  local key=$1; shift
  MANY_FILES=0; [ "$key" = 3-small ] && MANY_FILES=1
  if has 6; then
    case $key in
      1-single|2-chunked) limit_for "$key" 1 "$SIZE" ;;
      4-many) limit_for "$key" "$MANY" "$MANY_SIZE" ;;
    esac
  fi
  for name in ${SERVERS//,/ }; do
    [ -n "$name" ] || continue
    if [ "${BENCH_WARMUP:-1}" = 1 ]; then
      # A throwaway run of the same scenario on the same server first: the
      # measured run then follows its own kind, not the previous server.
      # Without it, in (4) the first server after @tus/server (which never
      # fsyncs) paid 1.7x the CPU of a second run.
      say "$key on $name (warm-up, not recorded)"
      if start "$name" "$WORK/$name"; then
        load "$name" "$key" /dev/null "$@" >/dev/null || true
        stop
      fi
      discard "$WORK/$name" "$MANY_FILES"
    fi
    say "$key on $name"
    start "$name" "$WORK/$name" || { echo "{\"server\":\"$name\",\"scenario\":\"$key\",\"error\":\"did not start\"}" >>"$OUT"; continue; }
    sync
    load "$name" "$key" "$OUT" "$@" \
      || echo "{\"server\":\"$name\",\"scenario\":\"$key\",\"error\":\"load generator failed\"}" >>"$OUT"
    stop
    discard "$WORK/$name" "$MANY_FILES"
  done
}

has() { [[ ,$SCENARIOS, == *,$1,* ]]; }
has 1 && run_scenario 1-single single --size "$SIZE"
has 2 && run_scenario 2-chunked single --size "$SIZE" --chunk "$CHUNK"
has 3 && run_scenario 3-small small --count "$SMALL_COUNT" --size "$SMALL_SIZE" --concurrency "$CONC"
has 4 && run_scenario 4-many many --uploads "$MANY" --size "$MANY_SIZE"
# (7) is not one of the issue's scenarios: GET of a finished upload, one
# stream, the same file four times (from the page cache after the first).
has 7 && run_scenario 7-download download --size "$SIZE" --reps 4
# (8): many phones on bad links; each connection and upload holds
# descriptors on both sides, so raise the limit to the hard one.
if has 8; then
  ulimit -n "$(ulimit -Hn)"
  run_scenario 8-slow slow --uploads "$SLOW" --size "$SLOW_SIZE" --rate "$SLOW_RATE"
fi

trash_notice

MACHINE="Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), \
$(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(df -h "$WORK" | awk 'NR==2{print $1}') filesystem; \
run $STAMP (UTC); sizes: single $SIZE (chunked $CHUNK), small $SMALL_COUNT × $SMALL_SIZE by $CONC clients, \
many $MANY × $MANY_SIZE. Shared, noisy machine: compare ratios within this run, not absolute numbers."
"$LOADGEN" report --in "$OUT" --out "$RESULTS/$STAMP.md" --machine "$MACHINE"
say "results: bench/results/$STAMP.jsonl and bench/results/$STAMP.md"
cat "$RESULTS/$STAMP.md"

if [ -z "${BENCH_NO_S3:-}" ] && [ -f bench/s3.sh ]; then
  say "S3 scenario (bench/s3.sh)"
  bash bench/s3.sh || echo "bench/s3.sh failed" >&2
fi
