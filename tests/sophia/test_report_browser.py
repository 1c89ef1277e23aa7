"""The SOPHIA report (wow_jax/sophia/report.py) rendered by a real headless browser: Debian's
chromium driven by playwright's Python API (.ci/run installs both; skipped where either is
missing). Every round's media must load (no broken image) and the scores must show."""

import shutil

import pytest

from tests.sophia import fake_world
from wow_jax.sophia import refine, report

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable (apt chromium)")


def test_the_report_renders_every_rounds_media_and_the_scores_in_chromium(tmp_path):
    # issue 19: the page a person opens first renders in a real browser: every candidate's gif
    # of every round and the score plot load, and the scores are shown.
    config = fake_world.refine_config(**{"sophia.episodes_per_task": 2})
    results = refine.refine(config, str(tmp_path), fake_world.imagine_fn(9), fake_world.read,
                            {"world_model": "fake", "idm": "fake"},
                            make_task=fake_world.make_task)  # fmt: skip
    page_path = tmp_path / refine.REFINE_DIR / report.HTML_FILE
    candidates = [c for case in results["cases"] for r in case["rounds"] for c in r["candidates"]]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "[...document.images].map(i => ({src: i.getAttribute('src'), "
                "ok: i.complete && i.naturalWidth > 0}))"
            )
            shown = page.eval_on_selector_all("span.score", "nodes => nodes.map(n => n.innerText)")
            figures = page.eval_on_selector_all("figure", "nodes => nodes.length")
            table = page.inner_text("table")
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"
    sources = [i["src"] for i in images]
    assert report.PLOT_FILE in sources
    assert len(sources) == len(candidates) + 1 and figures == len(candidates)
    assert shown == [f"{c['report']['score']:.3f}" for c in candidates]
    summary = results["summary"]
    for case in results["cases"]:
        assert f"{case['best']['score']:.3f}" in table
    assert summary["final_best"] > summary["round_0_best"]
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(screenshot) > 10_000
