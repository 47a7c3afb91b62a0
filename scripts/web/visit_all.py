"""Visit every run and every tab the workbench offers for it, in headless Chromium; save a
screenshot of each and report JavaScript errors, error cards and how many charts were drawn.

    interplab serve runs/ --port 8765 &
    .venv-test/bin/python scripts/web/visit_all.py http://127.0.0.1:8765 OUT_DIR

Exit status 1 when any page raised a JavaScript error or showed an error card for a run whose
status is not `malformed`. Needs playwright (crates/server/tests/browser/requirements.txt).
"""

import json
import pathlib
import sys
import urllib.request

from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    base, out = sys.argv[1].rstrip("/"), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    runs = json.load(urllib.request.urlopen(base + "/api/runs"))["runs"]
    bad = 0
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        pg = b.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(base + "/#/")
        pg.wait_for_selector("#runs-table tbody tr")
        pg.screenshot(path=str(out / "index.png"))
        for r in runs:
            pg.goto(f"{base}/#/run/{r['id']}")
            pg.wait_for_selector(".tabs a")
            tabs = pg.locator(".tabs a").evaluate_all("as => as.map(a => a.dataset.tab)")
            for tab in tabs:
                errors.clear()
                pg.goto(f"{base}/#/run/{r['id']}/{tab}")
                pg.wait_for_selector(f".tabs a.active[data-tab={tab}]")
                if tab == "attention":
                    pg.wait_for_selector("#att-chart, .card.error", timeout=120_000)
                pg.wait_for_timeout(300)
                charts = pg.evaluate("Object.keys(ilab.charts).length")
                cards = pg.locator(".card.error").all_inner_texts()
                name = f"{r['id'].replace('/', '_')}-{tab}.png"
                pg.screenshot(path=str(out / name))
                problem = errors or (cards and r["status"] != "malformed")
                bad += bool(problem)
                print(f"{'FAIL' if problem else 'ok  '} {r['id']:<34} {tab:<9} charts {charts:>3}"
                      + (f"  errors {errors}" if errors else "") + (f"  card {cards}" if cards else ""))
        b.close()
    print(f"{len(runs)} runs, {bad} problems")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
