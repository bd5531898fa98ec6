#!/usr/bin/env bash
# Installs what building and testing tollgate needs on a fresh Debian machine: idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The deploy/ checks: promtool (alert rules) and a Python for the tools' virtualenv below.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
# The dashboard test renders the page in a real headless browser.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { echo "setup: apt-get install ${need[*]} failed" >&2; exit 1; }
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }

# The deploy/ checks' Python tools (kubectl + kustomize, schemas, OpenAPI and PromQL checkers),
# pinned in a virtualenv of their own; reinstalled only when the pinned list changes.
tools="${TOLLGATE_TOOLS_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/tools}"
requirements=crates/tollgate-server/tests/deploy/requirements.txt
if ! cmp -s "$requirements" "$tools/venv/requirements.txt"; then
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" \
    || { echo "setup: pip install -r $requirements failed" >&2; exit 1; }
  cp "$requirements" "$tools/venv/requirements.txt"
fi
