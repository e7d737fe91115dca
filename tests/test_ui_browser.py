"""The Dagster UI in a real browser: Debian's Chromium, headless, driven by Playwright's Python package."""

import re
from pathlib import Path

import pytest

from tests.support import service_missing

CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root in a container, with nothing to fetch from the internet
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECKS = ["schema_and_types", "unique_symbol_ts", "ohlc_consistency", "calendar_gaps", "freshness"]
SCHEDULES = ["daily_bars_ingest", "weekly_trailing_backfill", "evolution_weekly_schedule"]
# what Dagster's UI shows when a GraphQL query or a page fails
ERRORS = re.compile(r"\bError\b|Something went wrong|PythonError|Unexpected GraphQL error|Could not load|"
                    r"Unable to load|Failed to fetch|An error occurred|Traceback|Empty graph|No \w+ found|"
                    r"does not exist")


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        service_missing("chromium (/usr/bin/chromium; apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        service_missing("the playwright package (dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
            context.close()
        finally:
            browser.close()


def visit(page, url: str, shot: Path, texts: list[str], graphql: list, gone: tuple[str, ...] = ()) -> None:
    """Open url, wait until every text is visible (and every `gone` text has left), save a screenshot,
    then look for error signs: an alert, an error text, a dialog, a failed GraphQL reply."""
    from playwright.sync_api import expect

    graphql.clear()
    page.goto(url)
    page.wait_for_load_state("networkidle")
    try:
        for text in texts:
            expect(page.get_by_text(text, exact=True).first).to_be_visible(timeout=60_000)
    finally:
        page.screenshot(path=str(shot.with_name(f"{shot.stem}_last_seen.png")))  # what was there, on a failure too
    for text in gone:
        expect(page.get_by_text(text)).to_have_count(0, timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    # no new-user modal (nux: enabled: false in the instance settings), no dialog at all
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
    expect(page.get_by_role("dialog")).to_have_count(0)
    # no error banner, toast or error state on the page
    alerts = [a.inner_text() for a in page.get_by_role("alert").all() if a.is_visible()]
    assert not [a for a in alerts if a.strip()], f"{url}: alert shown: {alerts}"
    body = page.inner_text("body")
    assert not ERRORS.search(body), f"{url}: error text on the page: {ERRORS.search(body).group(0)!r}"
    # and no GraphQL reply behind the page carried an error
    assert graphql, f"{url}: the page made no GraphQL request"
    for response in graphql:
        assert response.ok, f"{url}: {response.url} -> HTTP {response.status}"
        reply = response.text()
        assert '"errors"' not in reply and '"PythonError"' not in reply, f"{url}: GraphQL error: {reply[:2000]}"


@pytest.mark.slow
def test_asset_graph_checks_and_automation_render(webserver, page, tmp_path):
    page_errors: list[str] = []
    graphql: list = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("response", lambda r: graphql.append(r) if "/graphql" in r.url and r.request.method == "POST" else None)

    # the global asset graph (Lineage): the groups, with their statuses fetched
    visit(page, f"{webserver}/asset-groups", tmp_path / "1_asset_graph.png",
          ["Global asset lineage", "market_data", "sensory", "evolution", "trading"], graphql,
          gone=("fetching statuses",))
    # one group's graph: the asset nodes with their check summaries
    # (the group's graph now runs past the first screen, as the trading group reads bars_1d: universe and
    # treasury_curve are below it, and the catalogue shows them; intents is the downstream link to trading)
    visit(page, f"{webserver}/locations/emp_predator/asset-groups/market_data/lineage",
          tmp_path / "2_market_data_graph.png", ["bars_1d", "bars_1h", "intents"], graphql)
    # the check summaries of bars_1d and bars_1h: they arrive in a later GraphQL reply than the nodes, so wait
    # for them (a CI run counted them the moment the node names showed and found none)
    from playwright.sync_api import expect
    expect(page.get_by_text("5 / 5 Passed")).to_have_count(2, timeout=60_000)
    # the catalogue: the asset keys of every group
    visit(page, f"{webserver}/assets?view=flat", tmp_path / "3_catalog.png",
          ["market / bars_1d", "market / universe", "macro / treasury_curve", "macro / series",
           "evolution / champion"], graphql)  # (sorted by key: sensory and trading are below the first screen)
    # one asset's checks
    visit(page, f"{webserver}/assets/market/bars_1d?view=checks", tmp_path / "4_bars_1d_checks.png",
          ["Checks (5)", *CHECKS, "Passed"], graphql)
    # the Automation page: the three schedules
    visit(page, f"{webserver}/automation", tmp_path / "5_automation.png", SCHEDULES, graphql)

    assert not page_errors, page_errors
    print(f"screenshots in {tmp_path}")
