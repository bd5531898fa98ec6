#!/usr/bin/env bash
# Build and run `tollgate serve` on the embedded memory store (or pass flags: --store, --config...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --locked -q -p tollgate-server --bin tollgate -- serve "$@"
