"""The workbench in a real browser: every view on real runs, values checked against the run's
own files (results.json, figures.json) and the server's attention answer."""

import json
import math
import urllib.request

from conftest import RUNS, TOUR, write_progress


def api(server, path, body=None):
    req = urllib.request.Request(server + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def fmt(v):
    """app.js's fmt: integers as is, else four significant digits."""
    if float(v).is_integer():
        return str(int(v))
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e6):
        return f"{v:.3e}"
    return repr(float(f"{v:.4g}")).removesuffix(".0")


def hover_cell(page, chart_id, x, y):
    """Move the mouse onto heat-map cell (x, y) of an ECharts chart; return the tooltip text."""
    px = page.evaluate(f"ilab.charts['{chart_id}'].convertToPixel({{seriesIndex: 0}}, [{x}, {y}])")
    box = page.locator(f"#{chart_id}").bounding_box()
    page.mouse.move(box["x"] + px[0], box["y"] + px[1])
    tip = page.locator(f"#{chart_id} .ilab-tip")
    page.wait_for_function(f"(() => {{ const t = document.querySelector('#{chart_id} .ilab-tip'); "
                           f"return t && getComputedStyle(t).display !== 'none' && t.textContent.length > 0 }})()")
    return tip.inner_text()


def test_index_lists_every_run(page, server, runs_dir, shot):
    page.goto(server + "/#/")
    rows = page.locator("#runs-table tbody tr")
    rows.first.wait_for()
    # (Runs started from the page by test_start_an_experiment_from_the_page do not count.)
    ids = sorted(x for x in (rows.nth(i).get_attribute("data-id") for i in range(rows.count()))
                 if not x.startswith("toy-superposition-2"))
    expected = sorted([*RUNS, *[f"tour/{t}" for t in TOUR], "broken", "live"])
    assert ids == expected
    assert "malformed" in page.locator("tr[data-id=broken]").inner_text()
    assert "running" in page.locator("tr[data-id=live]").inner_text()
    shot("index")
    page.fill("#filter", "heads")
    page.wait_for_function("document.querySelectorAll('#runs-table tbody tr').length === 2")
    assert page.locator("#count").inner_text().startswith("2 of ")


def test_heatmap_hover_shows_the_cell_value(page, server, shot):
    run = api(server, "/api/run?id=heads-a")
    fig = next(f["figure"] for f in run["figures"] if f["name"] == "induction_head")
    # The largest induction score: its layer and head, and its value, must show on hover.
    vals = fig["values"]
    y, x = max(((r, c) for r in range(len(vals)) for c in range(len(vals[r]))), key=lambda rc: vals[rc[0]][rc[1]])
    page.goto(server + "/#/run/heads-a/report")
    page.wait_for_function("Object.keys(ilab.charts).length >= 3")
    # Charts are mounted in report order; find the one whose title is the induction figure.
    chart_id = page.evaluate(
        f"Object.entries(ilab.charts).find(([k, c]) => c.getOption().title[0].text === {json.dumps(fig['title'])})[0]")
    page.locator(f"#{chart_id}").scroll_into_view_if_needed()
    tip = hover_cell(page, chart_id, x, y)
    assert f"{fig['y_label']} {fig['y_ticks'][y]}" in tip, tip
    assert f"{fig['x_label']} {fig['x_ticks'][x]}" in tip, tip
    assert fmt(vals[y][x]) in tip, (tip, vals[y][x])
    shot("hover")
    # A different cell shows a different value.
    tip2 = hover_cell(page, chart_id, 0, 0)
    assert fmt(vals[0][0]) in tip2 and f"{fig['y_ticks'][0]}" in tip2


def test_patching_heatmap_hover_names_position_and_token(page, server):
    run = api(server, "/api/run?id=tour/patch")
    fig = next(f["figure"] for f in run["figures"])
    page.goto(server + "/#/run/tour/patch/report")
    page.wait_for_function("Object.keys(ilab.charts).length >= 1")
    chart_id = page.evaluate("Object.keys(ilab.charts)[0]")
    x, y = len(fig["x_ticks"]) - 1, len(fig["y_ticks"]) // 2
    page.locator(f"#{chart_id}").scroll_into_view_if_needed()
    tip = hover_cell(page, chart_id, x, y)
    assert fig["x_ticks"][x] in tip and fig["y_ticks"][y] in tip, tip
    assert f"(#{x})" in tip, "the position of a token tick is named"
    v = fig["values"][y][x]
    assert (fmt(v) if v is not None else "masked") in tip, (tip, v)


def test_attention_view_follows_the_head_chosen(page, server, shot):
    prompt = "When Mary and John went to the store, John gave a drink to"
    want = api(server, "/api/attention", {"model": "smollm2-135m", "prompt": prompt})
    page.goto(server + "/#/attention")
    page.wait_for_selector("#att-chart", timeout=120_000)
    assert page.locator("#att-prompt").input_value() == prompt

    def shown():
        data = page.evaluate("ilab.charts['att-chart'].getOption().series[0].data")
        n = len(want["tokens"])
        grid = [[None] * n for _ in range(n)]
        for k, q, v in data:
            grid[q][k] = v
        return grid

    for layer, head in [(0, 0), (5, 3), (5, 4)]:
        page.select_option("#att-layer", str(layer))
        page.select_option("#att-head", str(head))
        page.wait_for_function(f"document.querySelector('#att-title').textContent === 'Layer {layer}, head {head}'")
        got = shown()
        assert got == want["patterns"][layer][head], (layer, head)
    assert want["patterns"][5][3] != want["patterns"][5][4], "two heads differ, so the check can fail"
    # Hovering a token shades the others by its attention row.
    q = 9
    page.locator(f"#att-tokens span[data-pos='{q}']").hover()
    shades = [float(page.locator(f"#att-tokens span[data-pos='{k}']").get_attribute("data-att")) for k in range(q + 1)]
    assert shades == want["patterns"][5][4][q][:q + 1]
    shot("head")
    page.check("#att-grid")
    page.wait_for_selector("#att-grid-8")
    assert page.locator(".multiples .chart").count() == want["n_heads"]
    shot("grid")


def test_feature_card_highlights_the_right_tokens(page, server, shot):
    results = api(server, "/api/run?id=tour/sae-features")["results"]
    card = results["cards"][0]
    page.goto(server + "/#/run/tour/sae-features/features")
    el = page.locator(f".feature[data-latent='{card['latent']}']")
    el.wait_for()
    ex = card["top"][0]
    spans = el.locator(".tokens").first.locator("span.tok")
    assert spans.count() == len(ex["tokens"])
    acts = [float(spans.nth(i).get_attribute("data-act")) for i in range(spans.count())]
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(acts, ex["acts"]))
    shaded = [i for i in range(spans.count()) if "rgba(255, 140, 0, 0)" not in spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor")]
    assert shaded == [i for i, a in enumerate(ex["acts"]) if a / card["max_activation"] >= 0.0005]
    focus = el.locator(".tokens").first.locator("span.tok.focus")
    assert focus.count() == 1
    assert focus.get_attribute("data-act") is not None
    assert math.isclose(float(focus.get_attribute("data-act")), ex["value"], rel_tol=1e-6)
    shot("card")
    # Search by token: only cards whose contexts or logit effects contain it remain.
    token = card["top_logits"][0][0].strip() or card["top_logits"][0][0]
    page.fill("#feature-search", token)
    want = [c["latent"] for c in results["cards"]
            if any(token.lower() in t.lower() for e in c["top"] for t in e["tokens"])
            or any(token.lower() in t.lower() for t, _ in c["top_logits"])]
    page.wait_for_function(f"document.querySelectorAll('#feature-list .feature').length === {len(want)}")
    got = [int(x) for x in page.locator("#feature-list .feature").evaluate_all("es => es.map(e => e.dataset.latent)")]
    assert got == want


def test_eval_samples_filter_and_flips(page, server, shot):
    results = api(server, "/api/run?id=eval")["results"]
    a, b = results["variants"][0]["items"], results["variants"][1]["items"]
    page.goto(server + "/#/run/eval/samples")
    page.wait_for_selector("#samples tbody tr")
    assert page.locator("#samples tbody tr").count() == len(a)
    first = page.locator("#samples tbody tr").first
    assert a[0]["choices"][a[0]["gold"][0]] in first.inner_text()
    assert a[0]["context"].strip().split("\n")[0] in first.inner_text()
    page.select_option("#sample-filter", "wrong")
    wrong = [x["doc"] for x in a if x["acc"] == 0]
    page.wait_for_function(f"document.querySelectorAll('#samples tbody tr').length === {len(wrong)}")
    page.select_option("#sample-filter", "flips")
    flips = [x["doc"] for x, y in zip(a, b) if x["acc"] != y["acc"]]
    page.wait_for_function(f"document.querySelector('#sample-count').textContent === '{len(flips)} items'")
    got = [int(d) for d in page.locator("#samples tbody tr").evaluate_all("es => es.map(e => e.dataset.doc)")]
    assert got == flips
    shot("samples", full_page=False)


def test_compare_two_runs(page, server, shot):
    page.goto(server + "/#/")
    page.locator("tr[data-id=heads-a] input[type=checkbox]").check()
    page.locator("tr[data-id=heads-b] input[type=checkbox]").check()
    page.click("#compare")
    page.wait_for_selector("#compare-results")
    text = page.locator("main").inner_text()
    assert "heads-a" in text and "heads-b" in text
    # The configs differ in their text; the figures are lined up by name.
    assert "text" in page.locator("main table").first.inner_text()
    page.wait_for_function("Object.keys(ilab.charts).length === 6")
    shot("compare")


def test_training_curve_zooms(page, server, shot):
    page.goto(server + "/#/run/tour/toy-superposition/report")
    page.wait_for_function("Object.keys(ilab.charts).length >= 1")
    chart_id = page.evaluate("Object.entries(ilab.charts).find(([k, c]) => c.getOption().series[0].type === 'line')[0]")
    page.evaluate(f"ilab.charts['{chart_id}'].dispatchAction({{type: 'dataZoom', start: 50, end: 100}})")
    zoom = page.evaluate(f"ilab.charts['{chart_id}'].getOption().dataZoom[0]")
    assert zoom["start"] == 50 and zoom["end"] == 100
    page.locator(f"#{chart_id}").scroll_into_view_if_needed()
    shot("zoomed")


def test_live_progress_and_error_card(page, server, runs_dir, shot):
    page.goto(server + "/#/run/live")
    page.wait_for_selector("#progress")
    assert "3 / 10 steps" in page.locator("#progress").inner_text()
    write_progress(runs_dir / "live", done=7)
    page.wait_for_function("document.querySelector('#progress').innerText.includes('7 / 10 steps')", timeout=10_000)
    shot("progress")
    page.goto(server + "/#/run/broken")
    page.wait_for_selector(".card.error")
    assert "manifest.json" in page.locator(".card.error").inner_text()
    shot("error")


def test_attention_cached_by_a_run(page, server, shot):
    prompt = "The cat sat on the mat because the cat"
    want = api(server, "/api/attention", {"model": "smollm2-135m", "prompt": prompt})
    page.goto(server + "/#/run/cached/attention")
    page.wait_for_selector("#att-cached")
    page.wait_for_selector("#att-chart")
    assert page.locator("#att-layer option").count() == want["n_layers"]
    page.select_option("#att-layer", "7")
    page.select_option("#att-head", "2")
    page.wait_for_function("document.querySelector('#att-title').textContent === 'Layer 7, head 2'")
    labels = page.evaluate("ilab.charts['att-chart'].getOption().xAxis[0].data")
    assert [x.split(":", 1)[1] for x in labels] == [t.replace("\n", "↵") for t in want["tokens"]]
    data = page.evaluate("ilab.charts['att-chart'].getOption().series[0].data")
    for k, q, v in data:
        assert abs(v - want["patterns"][7][2][q][k]) <= 2e-4, (q, k, v)
    shot("cached")


def test_start_an_experiment_from_the_page(page, server, runs_dir, shot):
    page.goto(server + "/#/new")
    page.select_option("#new-experiment", "toy-superposition")
    config = json.loads(page.locator("#new-config").input_value())
    assert config["experiment"] == "toy-superposition"
    # A config the experiment refuses: the server's one-line message, nothing started.
    page.fill("#new-config", json.dumps({**config, "batch": 0}))
    page.click("#new-start")
    page.wait_for_selector("#new-status .card.error")
    assert "batch" in page.locator("#new-status").inner_text()
    shot("refused")
    page.fill("#new-config", json.dumps(config))
    page.click("#new-start")
    page.wait_for_function("location.hash.startsWith('#/run/toy-superposition-')")
    run_id = page.evaluate("decodeURIComponent(location.hash.slice('#/run/'.length))")
    for _ in range(120):
        page.wait_for_selector("#run-status")
        if page.locator("#run-status").inner_text() == "complete":
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator("#run-status").inner_text() == "complete"
    assert (runs_dir / run_id / "manifest.json").is_file()
    page.wait_for_function("Object.keys(ilab.charts).length >= 1")
    shot("started")
