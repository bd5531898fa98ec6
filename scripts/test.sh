#!/usr/bin/env bash
# The whole test suite: set-up, then every crate's tests (unit, conformance, real Redis, HTTP, gRPC).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-features --locked "$@"
