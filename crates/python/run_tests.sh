#!/usr/bin/env bash
# The Python bindings' tests: build the wheel with `pip install ./crates/python` into the
# virtual environment .venv-test (made if missing), then run pytest on crates/python/tests.
# The tests compare the bindings with the `interplab` CLI: $INTERPLAB_BIN, by default
# target/debug/interplab (built by `cargo test --workspace`; built here if absent).
#
# Run after `cargo test --workspace` (as CI does) the wheel build compiles only pyo3, numpy
# and the bindings crate: the dev profile is made equal to the test profile and the
# dependencies' features equal to the workspace's (crates/python/pyproject.toml, Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-test
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    # Without the venv module (Debian's python3 lacks it unless python3-venv is installed),
    # virtualenv from PyPI does the same.
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        python3 -m pip install --quiet --user virtualenv
        python3 -m virtualenv --quiet "$VENV"
    fi
fi
# maturin's build backend runs the `maturin` executable of the environment.
export PATH="$PWD/$VENV/bin:$PATH"
"$PY" -m pip install --quiet --disable-pip-version-check -r crates/python/requirements-test.txt

# Warn when a dependency would be built with other features than `cargo test --workspace`
# gives it (the wheel build would then recompile it and everything above it).
python3 - <<'PY' || true
import subprocess
def features(args):
    out = subprocess.run(["cargo", "tree", "--prefix", "none", "-f", "{p} {f}", *args],
                         capture_output=True, text=True).stdout
    d = {}
    for line in out.splitlines():
        parts = line.replace("(*)", "").split()
        if len(parts) >= 2:
            d.setdefault(" ".join(parts[:2]), set()).add(" ".join(parts[2:]))
    return d
ws = features(["--workspace"])
py = features(["-p", "interplab-python", "-e", "normal,build"])
diff = sorted(k for k in py if k in ws and py[k] != ws[k])
if diff:
    print("note: the Python wheel resolves these dependencies with other features than the "
          "workspace (add them to crates/python/Cargo.toml to keep the wheel build incremental): "
          + ", ".join(diff))
PY

BIN="${INTERPLAB_BIN:-target/debug/interplab}"
if [ ! -x "$BIN" ]; then
    echo "building the interplab CLI ($BIN is missing)"
    cargo build -p interplab-cli \
        --config 'profile.dev.package.interplab-core.opt-level=3' \
        --config 'profile.dev.package.interplab-eval.opt-level=3'
fi
export INTERPLAB_BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

start=$(date +%s)
"$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
    --force-reinstall --no-deps ./crates/python
echo "built and installed the interplab wheel in $(( $(date +%s) - start )) s"

"$PY" -m pytest -q -p no:cacheprovider crates/python/tests "$@"
