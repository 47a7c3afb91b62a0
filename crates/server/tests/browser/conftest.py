"""Fixtures of the workbench's browser tests: real runs made by the `interplab` binary on the
default model, one `interplab serve` over them, and Debian's Chromium driven by Playwright.

Environment: INTERPLAB_BIN (default <repo>/target/debug/interplab), CHROMIUM (default
/usr/bin/chromium), SCREENSHOTS (default <repo>/target/browser-screenshots): every test saves
the screenshots it takes there, as test artefacts.
"""

import json
import os
import pathlib
import re
import subprocess
import threading

import pytest
from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[4]
BIN = os.environ.get("INTERPLAB_BIN", str(REPO / "target" / "debug" / "interplab"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = pathlib.Path(os.environ.get("SCREENSHOTS", REPO / "target" / "browser-screenshots"))

# The runs the views are tested on (each a few seconds on two cores).
RUNS = {
    "heads-a": ["heads", "smollm2-135m", "--text",
                "The cat sat on the mat. The cat sat on the mat. The dog ran."],
    "heads-b": ["heads", "smollm2-135m"],
    "eval": ["eval", "smollm2-135m", "--task", "bbq", "--limit", "12", "--num-fewshot", "0,1"],
    "cached": ["run", "smollm2-135m", "--prompt", "The cat sat on the mat because the cat",
               "--cache", "blocks.*.attn.hook_pattern"],
}
# Quick presets of the tour: patching's heat maps, a toy model's training curve, the quick
# SAE's feature cards (the SAE ships with the binary).
TOUR = ["patch", "toy-superposition", "sae-features"]


def interplab(*args, **kw):
    out = subprocess.run([BIN, *args], capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"interplab {' '.join(args)} failed:\n{out.stderr}")
    return out


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, args in RUNS.items():
        interplab(*args, "--out", str(root / name))
    interplab("tour", *TOUR, "--quick", "--out", str(root / "tour"))
    # A malformed run and a running one (this test process is its live pid).
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text('{"experiment": ')
    (root / "live").mkdir()
    write_progress(root / "live", done=3)
    return root


def write_progress(d, done):
    state = {"pid": os.getpid(), "experiment": "sae-train", "models": ["smollm2-135m"],
             "started_utc": "2099-01-01T00:00:00Z", "updated_utc": "2099-01-01T00:00:01Z",
             "phase": "train", "done": done, "total": 10, "unit": "steps",
             "message": f"loss {1.0 / (done + 1):.3f}", "notes": []}
    tmp = d / "progress.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(d / "progress.json")


@pytest.fixture(scope="session")
def server(runs_dir):
    proc = subprocess.Popen([BIN, "serve", str(runs_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line!r} {proc.stderr.read()}")
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    yield m.group(1)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def shot(page, request):
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(name, full_page=False):
        path = SHOTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path
    return take
