#!/usr/bin/env bash
# The workbench's browser tests on a bare machine: installs Debian's chromium when absent,
# a venv (.venv-test) with Playwright and pytest, then runs them against the interplab binary
# `cargo test --workspace` built (INTERPLAB_BIN to use another). Screenshots go to
# target/browser-screenshots/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../../../.." && pwd)"
cd "$repo"
if ! command -v chromium >/dev/null; then
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q -r crates/server/tests/browser/requirements.txt
export INTERPLAB_BIN="${INTERPLAB_BIN:-$repo/target/debug/interplab}"
[ -x "$INTERPLAB_BIN" ] || cargo build -p interplab-cli
.venv-test/bin/python -m pytest -q crates/server/tests/browser
