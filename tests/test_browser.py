"""The app in a real browser (Debian's Chromium driven by Playwright): fill inputs, run, watch progress, see errors.

Skipped where /usr/bin/chromium or playwright is missing; .ci/run installs both. Screenshots go to
docs/screenshots/, which the README shows.
"""

import shutil
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def app_url(live_app):
    return live_app.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 1100},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_text("Steering a pretrained diffusion model").wait_for()
    yield page
    page.close()


def open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()
    return page.locator(".tabitem:visible").first


def test_ilvr_tab_runs_shows_progress_and_images(page):
    tab = open_tab(page, "ILVR")
    tab.locator("input[type=file]").first.set_input_files("assets/astronaut.png")
    tab.get_by_text("Advanced").click()
    steps = tab.get_by_label("number input for Sampling steps")
    steps.fill("1000")  # long enough on the tiny model to watch the bar move
    steps.press("Enter")
    tab.get_by_role("button", name="Run ILVR").click()
    progress = page.locator(".progress-text, .progress-level-inner").first
    progress.wait_for(timeout=30_000)
    first = progress.inner_text()
    page.wait_for_function(
        "prev => { const el = document.querySelector('.progress-text, .progress-level-inner');"
        " return el === null || el.innerText !== prev; }", arg=first, timeout=30_000)
    gallery_images = tab.locator(".gallery img, [data-testid='gallery'] img, button.thumbnail-item img")
    gallery_images.nth(3).wait_for(timeout=120_000)  # reference, phi_N(y), two samples
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "ilvr.png"), full_page=True)


def test_ilvr_tab_shows_an_error_for_a_bad_factor(page):
    tab = open_tab(page, "ILVR")
    tab.locator("input[type=file]").first.set_input_files("assets/chelsea.png")
    tab.get_by_label("Downsampling factor N").click()
    page.get_by_role("option", name="64", exact=True).click()
    tab.get_by_role("button", name="Run ILVR").click()
    page.get_by_text("use one of 2, 4, 8, 16").first.wait_for(timeout=30_000)
