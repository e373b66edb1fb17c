#!/usr/bin/env bash
# S3 throughput of tusker against object_store's own WriteMultipart, on a
# local S3 server: s3s-fs 0.14.1 (installed into bench/.tools on first use)
# or, with S3_SERVER=moto, a moto_server (MOTO=path to the executable).
#
#   bench/s3.sh                      # 1 GiB, s3s-fs
#   BYTES=268435456 bench/s3.sh      # 256 MiB
#   S3_SERVER=moto MOTO=/tmp/motovenv/bin/moto_server bench/s3.sh
#   CHUNKS=0,50,5,1 TUSKER_ARGS="--s3-tail-staging bucket" bench/s3.sh
# CHUNKS: PATCH sizes in MiB (0 = one PATCH); TUSKER_ARGS: extra tusker
# flags; TUSKER_BIN: measure that tusker binary instead of the built one.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8014}
BYTES=${BYTES:-1073741824}
S3_SERVER=${S3_SERVER:-s3s-fs}
TOOLS=bench/.tools
export AWS_ACCESS_KEY_ID=tuskerbench
export AWS_SECRET_ACCESS_KEY=tuskerbenchsecret
export AWS_REGION=us-east-1

ROOT=$(mktemp -d)
cleanup() {
    if [ -n "${SERVER_PID:-}" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$ROOT"
}
trap cleanup EXIT

case "$S3_SERVER" in
s3s-fs)
    if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
        cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$TOOLS"
    fi
    mkdir "$ROOT/bench" # s3s-fs: a bucket is a directory under its root
    "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$PORT" \
        --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
        "$ROOT" >"$ROOT.log" 2>&1 &
    SERVER_PID=$!
    ;;
moto)
    "${MOTO:-moto_server}" -H 127.0.0.1 -p "$PORT" >"$ROOT.log" 2>&1 &
    SERVER_PID=$!
    ;;
*)
    echo "S3_SERVER must be s3s-fs or moto" >&2
    exit 2
    ;;
esac

for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then break; fi
    sleep 0.1
done
if [ "$S3_SERVER" = moto ]; then
    curl -sf -X PUT "http://127.0.0.1:$PORT/bench" >/dev/null
fi

TUSKER_BENCH_S3_ENDPOINT="http://127.0.0.1:$PORT" \
TUSKER_BENCH_BUCKET=bench \
TUSKER_BENCH_BYTES="$BYTES" \
TUSKER_BENCH_CHUNKS="${CHUNKS:-0,50,5,1}" \
TUSKER_BENCH_ARGS="${TUSKER_ARGS:-}" \
TUSKER_BENCH_BIN="${TUSKER_BIN:-}" \
    cargo bench --bench s3
