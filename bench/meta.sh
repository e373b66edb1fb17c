#!/usr/bin/env bash
# Meta-store benchmark: sled vs PostgreSQL (creations/s, PATCH latency).
# Usage: bench/meta.sh [postgres://postgres@127.0.0.1:5432/postgres]
# Figures go to stdout as a Markdown table; see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q --bench meta -- "${1:-postgres://postgres@127.0.0.1:5432/postgres}"
