#!/usr/bin/env bash
# Bounded fuzzing of the header grammars (src/protocol): builds every
# cargo-fuzz target and runs each for TUSKER_FUZZ_SECONDS (default 8)
# seconds, two at a time, starting from the committed seeds. Any failed
# property or crash fails the script and leaves the input in
# fuzz/artifacts/<target>/ (replay: `RUSTC_BOOTSTRAP=1 cargo fuzz run
# <target> <file>`).
#
# cargo-fuzz passes nightly -Z flags (sanitizer, coverage); only a stable
# toolchain exists here, so RUSTC_BOOTSTRAP=1 unlocks them. cargo-fuzz is
# installed into fuzz/.tools on first use.
set -euo pipefail
cd "$(dirname "$0")"

secs="${TUSKER_FUZZ_SECONDS:-8}"
jobs="${TUSKER_FUZZ_JOBS:-2}"
export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target directory, whatever the caller uses.
unset CARGO_TARGET_DIR

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  if [ ! -x .tools/bin/cargo-fuzz ]; then
    cargo install -q cargo-fuzz --version 0.13.2 --locked --root .tools
  fi
  export PATH="$PWD/.tools/bin:$PATH"
fi

cargo fuzz build
targets=$(cargo fuzz list)
for t in $targets; do mkdir -p "corpus/$t" "logs"; done

# One target: libFuzzer with a time bound; the seeds are read-only input.
run_one() {
  local t="$1"
  if cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" \
    >"logs/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -E '^Done' "logs/$t.log" || echo done)"
  else
    echo "fuzz $t FAILED:"
    grep -A3 -E 'panicked at|Test unit written|SUMMARY|^ERROR' "logs/$t.log" | head -30
    return 1
  fi
}
export -f run_one
export secs
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}'
