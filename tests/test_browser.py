"""The app in a real browser (Debian's Chromium driven by Playwright): fill inputs, run, watch progress, see errors.

Skipped where /usr/bin/chromium or playwright is missing; .ci/run installs both. Screenshots go to
docs/screenshots/, which the README shows.
"""

import functools
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from ui import asyrp_tab

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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The app samples in this process while Chromium renders on the same two cores: with two intra-op threads,
    OpenMP's spin-waiting against the browser makes each U-Net call tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def set_slider(tab, label: str, value: int):
    """Type the value into the slider's number box until the slider itself shows it: a box filled while the
    accordion around it is still mounting can be reset by that mount."""
    number, slider = tab.get_by_label(f"number input for {label}"), tab.get_by_role("slider", name=label)
    for _ in range(3):
        number.fill(str(value))
        number.press("Enter")
        try:
            playwright_api.expect(slider).to_have_value(str(value), timeout=2_000)
            return
        except AssertionError:
            continue
    playwright_api.expect(slider).to_have_value(str(value))


WATCH_PROGRESS = """() => {
    // every sampler count "k/N steps" a progress bar shows, with the bar's description, in the order seen;
    // the queue's "queue: 1/1" and the timer are not the sampler's progress
    window.progressSeen = [];
    new MutationObserver(() => document.querySelectorAll('.progress-text').forEach(el => {
        const m = el.innerText.match(/(\\d+)\\/(\\d+) steps/);
        const bar = el.parentElement.querySelector('[role=progressbar]');
        if (m) window.progressSeen.push([bar ? bar.getAttribute('aria-label') : null, +m[1], +m[2]]);
    })).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def run_and_watch(page, tab, button: str, images: int, screenshot: str, total: int) -> set[str]:
    """Press Run, wait for `images` images in the gallery, save a screenshot, and check that the progress bar
    counted the sampler's `total` steps and moved forward through at least two of them; returns its descriptions."""
    page.evaluate(WATCH_PROGRESS)
    tab.get_by_role("button", name=button).click()
    tab.locator(".gallery img, [data-testid='gallery'] img, button.thumbnail-item img").nth(images - 1).wait_for(
        timeout=120_000)
    seen = page.evaluate("() => window.progressSeen")
    assert seen, "no sampler progress was shown"
    assert {n for _, _, n in seen} == {total}, seen
    for desc in {desc for desc, _, _ in seen}:  # each run's bar (two runs of one request share a total)
        counts = list(dict.fromkeys(k for d, k, _ in seen if d == desc))  # in the order first shown
        assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] <= total, (desc, counts)
    page.mouse.move(0, 0)  # no hover highlight in the screenshot
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{screenshot}.png"), full_page=True)
    return {desc for desc, _, _ in seen}


def choose(page, tab, label: str, option: str):
    """Pick the dropdown option whose text starts with `option`."""
    tab.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=re.compile("^" + re.escape(option))).click()


def ilvr_tab_on_the_bundled_model(page, steps: int):
    """The ILVR tab with a shape as the reference, the bundled model and `steps` sampling steps."""
    tab = open_tab(page, "ILVR")
    tab.locator("input[type=file]").first.set_input_files("assets/shapes/red-circle.png")
    choose(page, tab, "Model", "shapes-16")
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps", steps)
    return tab


def test_ilvr_tab_runs_shows_progress_images_and_the_frequency_split(page):
    tab = ilvr_tab_on_the_bundled_model(page, 200)
    tab.get_by_label("Show the process (x_t and predicted x0 at a few steps, and the frequency split of one step)").check()
    # y, phi_N(y), 2 samples; the process view: 6 x (x_t, x0_hat) and the split's 4 pictures
    descriptions = run_and_watch(page, tab, "Run ILVR", images=4 + 12 + 4, screenshot="ilvr", total=200)
    assert descriptions == {"ILVR sampling"}
    for caption in ("the model's low frequencies (replaced)", "the noised reference's (put in), N=4",
                    "the model's high frequencies (kept)"):
        assert tab.get_by_text(re.compile(r"step 50, t=\d+: .*" + re.escape(caption))).count() >= 1, caption


def test_ilvr_tab_streams_the_forming_image_stops_on_request_and_runs_again_at_once(page):
    tab = ilvr_tab_on_the_bundled_model(page, 1000)
    tab.get_by_role("button", name="Run ILVR").click()
    for step in (100, 200):  # the gallery shows the predicted x0 every 100 steps, so it changes at least twice
        tab.get_by_text(f"step {step} of 1000: predicted x0").first.wait_for(timeout=120_000)
    tab.get_by_role("button", name="Stop").click()
    tab.get_by_text(re.compile(r"stopped at step \d+ of 1000: predicted x0")).first.wait_for(timeout=60_000)
    set_slider(tab, "Sampling steps", 20)
    tab.get_by_role("button", name="Run ILVR").click()  # the slot is free: the next run starts and ends at once
    tab.get_by_text("sample 2").first.wait_for(timeout=60_000)


def test_ilvr_tab_shows_an_error_for_a_bad_factor(page):
    tab = open_tab(page, "ILVR")
    tab.locator("input[type=file]").first.set_input_files("assets/chelsea.png")
    choose(page, tab, "Downsampling factor N (larger = looser)", "64")
    tab.get_by_role("button", name="Run ILVR").click()
    page.get_by_text("use one of 2, 4, 8, 16").first.wait_for(timeout=30_000)


def test_an_unexpected_failure_shows_an_internal_error_with_the_id_the_log_holds(page, monkeypatch, caplog):
    """A sampler that raises what no check foresaw: the page says it was an internal error and gives its id; the log
    holds the same id beside the traceback and the request's settings; the next request is served."""
    from pipelines import ILVRPipeline

    def broken(self, *args, **kwargs):
        raise RuntimeError("a failure no check foresaw")

    tab = ilvr_tab_on_the_bundled_model(page, 10)
    with monkeypatch.context() as patch:
        patch.setattr(ILVRPipeline, "__call__", broken)
        tab.get_by_role("button", name="Run ILVR").click()
        shown = page.get_by_text(re.compile(r"Something went wrong inside the Space.*\(error [0-9a-f]{8}\)")).first
        shown.wait_for(timeout=60_000)
    error_id = re.search(r"error ([0-9a-f]{8})", shown.inner_text())[1]
    logged = [r for r in caplog.records if r.name == "ui.handler" and error_id in r.getMessage()]
    assert logged and "RuntimeError: a failure no check foresaw" in logged[0].getMessage()
    assert "model_id='shapes-16'" in logged[0].getMessage() and logged[0].exc_info is not None
    tab.locator("a[href$='ilvr-settings.json']").first.wait_for(timeout=30_000)  # the settings to report it with
    tab.get_by_role("button", name="Run ILVR").click()
    tab.get_by_text("sample 2").first.wait_for(timeout=60_000)


SHAPE_PROMPTS = "a red circle\na blue square\na green triangle"


def test_guidance_tab_runs_shows_progress_and_images(page):
    tab = open_tab(page, "Classifier guidance")
    tab.get_by_label("Label prompts, one per line (CLIP's classes)").fill(SHAPE_PROMPTS)
    choose(page, tab, "Model", "shapes-16")
    # the model's change fills the classifier, then the target: let that chain finish before setting the rest
    playwright_api.expect(tab.get_by_label("Target class y")).to_have_value("circle", timeout=30_000)
    tab.get_by_role("radio", name="DDPM (Algorithm 1: shift the mean)").check()  # the bundled model's clean sampler
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps", 30)
    # 2 guided samples and the 2 unguided ones from the same seed, then the gradient maps at 4 steps; one bar counts
    # the request's 2 x 30 steps, each run under its own description
    descriptions = run_and_watch(page, tab, "Run classifier guidance", images=2 + 2 + 4, screenshot="guidance", total=60)
    assert descriptions == {"guided sampling, s = 10", "guided sampling, s = 0"}
    tab.get_by_text("s=10, sample 2: p(target) =").first.wait_for(timeout=30_000)  # each sample's caption
    tab.get_by_text("s=0, sample 2: p(target) =").first.wait_for(timeout=30_000)  # the unguided comparison
    assert tab.get_by_text(re.compile(r"s=10, step 30 \(t=0\): \|∇ log p\(y\|x_t\)\|")).count() >= 1
    assert tab.locator(".vega-embed svg, .vega-embed canvas").count() >= 1  # the plot of p(target | x_t)


def test_guidance_tab_shows_an_error_for_empty_prompts(page):
    tab = open_tab(page, "Classifier guidance")
    tab.get_by_label("Label prompts, one per line (CLIP's classes)").fill("")
    tab.get_by_role("button", name="Run classifier guidance").click()
    page.get_by_text("Write the label prompts").first.wait_for(timeout=30_000)


def cycle_tab_translating_a_shape(page, steps: int, ddib: bool = False):
    """The CycleDiffusion tab set to translate the red circle's class on shapes-16 in `steps` steps."""
    tab = open_tab(page, "CycleDiffusion")
    tab.locator("input[type=file]").first.set_input_files("assets/shapes/red-circle.png")
    tab.get_by_role("radio", name="class translation").check()
    choose(page, tab, "Source model (encodes the input)", "shapes-16")
    if ddib:
        tab.get_by_label("Also decode the DDIB baseline: deterministic DDIM inversion to t0").check()
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps", steps)
    return tab


def test_cycle_tab_runs_a_class_translation_shows_progress_and_images(page):
    tab = cycle_tab_translating_a_shape(page, 30)
    # input, reconstruction, translation, SDEdit baseline, then x_t0 and 4 noise maps; encode, reconstruct, translate
    # and the baseline take strength 0.6 x 30 steps each
    descriptions = run_and_watch(page, tab, "Run CycleDiffusion", images=4 + 5, screenshot="cycle", total=72)
    assert descriptions == {"CycleDiffusion: class translation"}
    page.get_by_text("Chain started at").first.wait_for(timeout=30_000)
    assert tab.get_by_text("class translation: circle → square").count() >= 1  # the model's first two classes
    assert tab.get_by_text("SDEdit baseline: the same x_t0, fresh noise").count() >= 1
    assert tab.get_by_text(re.compile(r"x_t0, t0 = \d+")).count() >= 1 and tab.get_by_text("ε at t = 1").count() >= 1


def test_cycle_tab_shows_an_error_for_an_empty_target_text(page):
    tab = open_tab(page, "CycleDiffusion")
    tab.locator("input[type=file]").first.set_input_files("assets/chelsea.png")
    tab.get_by_role("radio", name="text edit").check()
    tab.get_by_role("button", name="Run CycleDiffusion").click()
    page.get_by_text("Write the target text").first.wait_for(timeout=30_000)


def test_asyrp_tab_runs_a_scale_strip_shows_progress_and_images(page):
    tab = open_tab(page, "Asyrp")
    tab.locator("input[type=file]").first.set_input_files("assets/shapes/green-triangle.png")
    choose(page, tab, "Model", "shapes-16")
    tab.get_by_role("radio", name="load a direction file").check()
    tab.locator("input[type=file]").nth(1).set_input_files(asyrp_tab.SIZE_DIRECTION)  # the bundled size direction
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Steps (inversion and sampling; the paper uses 40)", 20)
    # input, reconstruction, -2s, -s, s, 2s; the inversion's 20 steps, then the edit's 20
    descriptions = run_and_watch(page, tab, "Edit", images=6, screenshot="asyrp", total=40)
    assert descriptions == {"Asyrp: DDIM inversion, then editing"}
    page.get_by_text("Direction: a smaller shape → a bigger shape").first.wait_for(timeout=30_000)
    tab.locator(".vega-embed svg, .vega-embed canvas").first.wait_for(timeout=30_000)  # the plot of |s Δh_t|


def test_asyrp_tab_shows_an_error_for_a_missing_direction_file(page):
    tab = open_tab(page, "Asyrp")
    tab.locator("input[type=file]").first.set_input_files("assets/astronaut.png")
    tab.get_by_role("radio", name="load a direction file").check()
    tab.get_by_role("button", name="Edit").click()
    page.get_by_text("Upload a .safetensors direction file first").first.wait_for(timeout=30_000)


def test_the_same_seed_gives_the_same_image_in_the_browser_and_through_the_api(page, app_url):
    tab = open_tab(page, "ILVR")
    tab.locator("input[type=file]").first.set_input_files("assets/shapes/yellow-circle.png")
    choose(page, tab, "Model", "shapes-16")
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps", 30)
    tab.get_by_label("Seed (same seed + settings = same image)").fill("7")
    tab.get_by_role("button", name="Run ILVR").click()
    shown = tab.locator(".gallery img, [data-testid='gallery'] img, button.thumbnail-item img")
    shown.nth(3).wait_for(timeout=120_000)
    sources = list(dict.fromkeys(shown.evaluate_all("images => images.map(image => image.src)")))
    assert len(sources) == 4, sources  # y, phi_N(y), two samples
    in_browser = [decode(page.request.get(src).body()) for src in sources[2:4]]  # the two samples
    client = Client(app_url, verbose=False)
    request = (handle_file("assets/shapes/yellow-circle.png"), "shapes-16", 4, 0, 30, 2)
    again, _ = client.predict(*request, 7, False, api_name="/ilvr")
    other_seed, _ = client.predict(*request, 8, False, api_name="/ilvr")
    for item, image in zip(again[2:], in_browser):
        np.testing.assert_array_equal(decode(open(item["image"], "rb").read()), image)  # bit for bit: same device
    assert not np.array_equal(decode(open(other_seed[2]["image"], "rb").read()), in_browser[0])


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


PREVIEWS_EVERY = "Preview every k steps (0 = about 10 times a run)"
PREVIEWS = {  # tab: (its Run button, model, input, (steps slider, steps), preview every k, its first two previews)
    "Classifier guidance": ("Run classifier guidance", "shapes-16", None,
                            ("Sampling steps (DDPM wants more than DDIM)", 1000), 0,
                            ("step 200 of 2000", "step 400 of 2000")),  # guided, then unguided: 2 x 1000 steps
    "CycleDiffusion": ("Run CycleDiffusion", "shapes-16", "assets/shapes/red-circle.png",
                       ("Sampling steps", 999), 0,  # encode, reconstruct, translate, SDEdit: 4 x 599 steps
                       ("step 239 of 2396", "step 478 of 2396")),
    # shapes-16 inverts 200 steps in about a second, too fast to watch: faces-32, with a preview every 100 steps
    "Asyrp": ("Edit", "faces-32", "assets/faces/frowning.png", ("Steps (inversion and sampling; the paper uses 40)", 200),
              100, ("step 100 of 400", "step 200 of 400")),
}


@pytest.mark.parametrize("name", list(PREVIEWS))
def test_every_other_tab_streams_the_forming_image_and_stops_on_request(page, name):
    button, model_id, image, (steps_label, steps), every, previews = PREVIEWS[name]
    tab = open_tab(page, name)
    if image:
        tab.locator("input[type=file]").first.set_input_files(image)
    model = "Source model (encodes the input)" if name == "CycleDiffusion" else "Model"
    choose(page, tab, model, model_id)
    if name == "CycleDiffusion":
        tab.get_by_role("radio", name="class translation").check()
    tab.get_by_text("Advanced").click()
    set_slider(tab, steps_label, steps)
    set_slider(tab, PREVIEWS_EVERY, every)
    tab.get_by_role("button", name=button).click()
    for preview in previews:  # the gallery shows the predicted x0 every tenth of the run, or every k steps
        tab.get_by_text(re.compile(re.escape(preview) + ": predicted x0")).first.wait_for(timeout=180_000)
    tab.get_by_role("button", name="Stop").click()
    tab.get_by_text(re.compile(r"stopped at step \d+ of \d+: predicted x0")).first.wait_for(timeout=60_000)


def test_a_stroke_drawn_on_the_ilvr_canvas_becomes_the_reference_and_drives_ilvr(page):
    tab = open_tab(page, "ILVR")
    tab.get_by_text("Draw the reference").click()
    tab.get_by_role("button", name="Brush").click()
    box = tab.locator("canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2 - 40
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(x + 6 * i, y + 4 * i)
    page.mouse.up()
    tab.get_by_role("button", name="Use the drawing as the reference").click()
    reference = tab.locator("img[src*='composite']").first
    reference.wait_for(timeout=30_000)
    drawn = decode(page.request.get(reference.get_attribute("src")).body())
    dark = drawn.max(axis=2) < 80  # the brush's first colour on a transparent (white) canvas
    assert 0.01 < dark.mean() < 0.3, dark.mean()  # a stroke, not an empty or a filled canvas
    rows, cols = np.nonzero(dark)
    assert np.corrcoef(rows, cols)[0, 1] > 0.8  # drawn from the upper left to the lower right
    choose(page, tab, "Model", "shapes-16")
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps", 20)
    tab.get_by_role("button", name="Run ILVR").click()
    tab.get_by_text("sample 2").first.wait_for(timeout=60_000)


def test_a_result_goes_home_and_its_settings_load_back(page, tmp_path):
    tab = ilvr_tab_on_the_bundled_model(page, 20)
    seed = tab.get_by_label("Seed (same seed + settings = same image)")
    seed.fill("7")
    tab.get_by_role("button", name="Run ILVR").click()
    settings = tab.locator("a[href$='ilvr-settings.json']").first
    settings.wait_for(timeout=60_000)
    assert tab.locator("a[href$='ilvr-result.png']").count() >= 1  # the PNG strip beside it
    path = tmp_path / "ilvr-settings.json"
    path.write_bytes(page.request.get(settings.get_attribute("href")).body())
    seed.fill("3")
    set_slider(tab, "Sampling steps", 50)
    with page.expect_file_chooser() as chooser:
        tab.get_by_role("button", name="Load settings (.json) to reproduce a result").click()
    chooser.value.set_files(str(path))
    playwright_api.expect(seed).to_have_value("7", timeout=30_000)
    playwright_api.expect(tab.get_by_role("slider", name="Sampling steps")).to_have_value("20")


BUNDLED = ("faces-32", "shapes-16")


def example_rows(tab_module, model_column: int, table: int = 0):
    """(table, row index, row) of every example of a tab on a bundled model."""
    return [(table, i, row) for i, row in enumerate(tab_module.EXAMPLES) if row[model_column] in BUNDLED]


def number(tab, label: str):
    return tab.get_by_label(f"number input for {label}")


def example_checks(name: str, row) -> list[tuple[str, str, object]]:
    """What an example must leave in the tab: (how to find the input, its label, the value it shows)."""
    if name == "ILVR":
        reference, model, n, range_t, steps, samples, seed, show = row
        return [("label", "Model", re.compile("^" + re.escape(model) + " ")),
                ("label", "Downsampling factor N (larger = looser)", str(n)),
                ("number", "Number of samples", str(samples))]
    if name == "Classifier guidance":
        kind, model, prompts, target, scale, sampler, steps, samples, seed, sweep, scales = row
        return [("label", "Model", re.compile("^" + re.escape(model) + " ")), ("label", "Target class y", target),
                ("number", "Guidance scale s (0 = no guidance)", f"{scale:g}"),
                ("number", "Number of samples", str(samples)),
                ("label", "Sweep scales (comma-separated)", scales)]
    if name == "CycleDiffusion":
        image, mode, source, target_id, target_prompt, source_prompt, strength, eta, steps, seed, src, dst = row
        return [("label", "Source model (encodes the input)", re.compile("^" + re.escape(source) + " ")),
                ("label", "Source class", src),
                ("label", "Target class", dst)]
    image, model, source, k, direction, scale, strip, steps, seed, released = row
    return [("label", "Model", re.compile("^" + re.escape(model) + " ")),
            ("number", "Scale s (negative reverses the edit)", f"{scale:g}")]


def examples_of_every_tab():
    from ui import asyrp_tab as asyrp, cycle_tab, guidance_tab, ilvr_tab

    return ([("ILVR", *r) for r in example_rows(ilvr_tab, 1)]
            + [("Classifier guidance", *r) for r in example_rows(guidance_tab, 1)]
            + [("CycleDiffusion", *r) for r in example_rows(cycle_tab, 2)]
            + [("Asyrp", *r) for r in example_rows(asyrp, 1)])


CLOSED = {"Classifier guidance": "Sweep the scale, compare with unguided sampling"}


@pytest.mark.parametrize("attempt", [0, 1])
def test_every_bundled_example_fills_its_tab_as_written_on_a_fresh_page(browser, app_url, attempt):
    """The menus an example fills (a model and the classes of that model) race their change handlers on some page
    loads and not others: every example, on fresh pages, twice over, must leave each input as the row says."""
    cases = examples_of_every_tab()
    assert len(cases) >= 16
    for name, table, index, row in cases[attempt::2] + cases[1 - attempt::2]:
        page = browser.new_page()
        try:
            page.goto(app_url)
            page.get_by_text("Steering a pretrained diffusion model").wait_for()
            tab = open_tab(page, name)
            tab.locator("table[role=grid]").nth(table).locator("tr.tr-body").nth(index).click()
            if name in CLOSED:  # an accordion the example fills but leaves closed
                tab.get_by_text(CLOSED[name]).click()
            for _ in range(2):  # as filled, and still so once every handler has run
                for how, label, value in example_checks(name, row):
                    field = number(tab, label) if how == "number" else tab.get_by_label(label, exact=True)
                    playwright_api.expect(field).to_have_value(value, timeout=15_000)
                page.wait_for_timeout(500)
        finally:
            page.close()


def test_a_clicked_example_runs_with_its_values(page):
    """The first faces-32 example of the guidance tab: its target, samples and scale reach the run."""
    from ui import guidance_tab

    row = guidance_tab.EXAMPLES[0]
    assert row[1] == "faces-32" and row[3] == "smiling"
    tab = open_tab(page, "Classifier guidance")
    tab.locator("table[role=grid]").first.locator("tr.tr-body").first.click()
    playwright_api.expect(tab.get_by_label("Target class y", exact=True)).to_have_value("smiling", timeout=15_000)
    tab.get_by_text("Advanced").click()
    set_slider(tab, "Sampling steps (DDPM wants more than DDIM)", 10)
    tab.get_by_role("button", name="Run classifier guidance").click()
    captions = tab.get_by_text(re.compile(r"^s=40, sample \d: p\(target\) = "))
    playwright_api.expect(captions).to_have_count(4, timeout=120_000)  # the example's 4 samples at its scale 40


def test_the_text_edit_tab_makes_the_bundled_face_smile_and_shows_where_the_word_attends(page):
    """Its first example on a fresh page: faces-text-32, "frowning" -> "smiling" under replace control, with both
    baselines, each word's attention map and the attributes read back from the pixels."""
    from ui.cycle_text import EXAMPLES

    image, model, source, target, strength, steps = EXAMPLES[0][:6]
    tab = open_tab(page, "Text edit (Stable Diffusion)")
    tab.locator("table[role=grid]").first.locator("tr.tr-body").first.click()
    playwright_api.expect(tab.get_by_label("Target prompt (what the edit should show)")).to_have_value(target)
    playwright_api.expect(tab.get_by_label("Text-to-image model", exact=True)).to_have_value(model)
    tab.get_by_label("Also decode the DDIB baseline: deterministic DDIM inversion to t0").check()
    words = len(source.replace(",", " ,").split())
    K = int(strength * steps)  # the edit, the SDEdit baseline, then DDIB's inversion and decoding: K steps each
    run_and_watch(page, tab, "Edit with text", images=4 + 2 * words + 4, screenshot="text-edit", total=4 * K)
    assert tab.get_by_text(f"edit: “{target}”").count() >= 1 and tab.get_by_text("target: “smiling”").count() >= 1
    page.get_by_text("DDIB baseline (deterministic)").first.wait_for(timeout=30_000)
    page.get_by_text("Read back from the pixels by the faces' own measurement").first.wait_for(timeout=30_000)


@pytest.mark.parametrize("view, button, pictures", [
    ("homogeneity", "Homogeneity", 4 * 4),  # 4 example faces: input, reconstruction, Δh, Δε
    ("robustness", "Robustness", 4 * 7),  # reconstruction, then h and ε noise at three norms
    ("linear_combination", "Linear combination", 3 * 3),  # (s1, s2) on a 3 x 3 grid
    ("consistency", "Consistency across timesteps", 1 + 4),  # the cosine heat map, then the four edits
])
def test_the_h_space_panel_shows_each_claim_with_its_numbers(page, view, button, pictures):
    tab = open_tab(page, "Asyrp")
    choose(page, tab, "Model", "faces-32")
    tab.get_by_text("h-space properties: the paper's claims").click()
    tab.get_by_role("button", name=re.compile("^" + button + ":")).click()
    tab.locator("button.thumbnail-item img, .gallery img").nth(pictures - 1).wait_for(timeout=180_000)
    playwright_api.expect(tab.get_by_text("measured", exact=True).first).to_be_visible(timeout=30_000)


def test_the_ddib_baseline_sits_beside_sdedit_in_the_cycle_tab(page):
    tab = cycle_tab_translating_a_shape(page, 20, ddib=True)
    tab.get_by_role("button", name="Run CycleDiffusion").click()
    tab.get_by_text("DDIB baseline: deterministic DDIM inversion to t0, then decoding").first.wait_for(timeout=120_000)
    page.get_by_text("DDIB baseline (deterministic)").first.wait_for(timeout=30_000)  # its PSNR / SSIM row


def test_the_compare_tab_sets_every_method_side_by_side_with_its_table(page):
    """Its first example on a fresh page: the frowning face made to smile by every method, the grid of outputs and
    the table of what each reached, kept and cost."""
    from runners import compare

    tab = open_tab(page, "Compare")
    tab.locator("table[role=grid]").first.locator("tr.tr-body").first.click()
    playwright_api.expect(tab.get_by_role("radio", name="make it smile (frowning → smiling)")).to_be_checked()
    tab.get_by_role("button", name="Compare every method").click()
    tab.locator("button.thumbnail-item img, .gallery img").nth(len(compare.METHODS)).wait_for(timeout=300_000)
    for method in compare.METHODS:
        playwright_api.expect(tab.get_by_role("cell", name=method, exact=True)).to_be_visible(timeout=30_000)
    assert tab.get_by_role("columnheader", name="goal reached").count() == 1
    page.mouse.move(0, 0)
    page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)


def test_a_deep_link_reopens_a_result_on_a_fresh_page(browser, app_url):
    """Run ILVR, copy the result's link, open it on a fresh page: the same settings and the same images."""
    page = browser.new_page()
    page.goto(app_url)
    page.get_by_text("Steering a pretrained diffusion model").wait_for()
    tab = ilvr_tab_on_the_bundled_model(page, 20)
    tab.get_by_label("Seed (same seed + settings = same image)").fill("5")
    tab.get_by_role("button", name="Run ILVR").click()
    tab.get_by_text("sample 2").first.wait_for(timeout=60_000)
    shown = [decode(page.request.get(img.get_attribute("src")).body())
             for img in tab.locator("button.thumbnail-item img").all()]
    browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url.rstrip("/"))
    tab.get_by_role("button", name="Copy a link to this result").click()
    for _ in range(60):  # the button fetches the link, then copies it
        link = page.evaluate("async () => await navigator.clipboard.readText()")
        if "deep_link=" in link:
            break
        page.wait_for_timeout(500)
    page.close()
    fresh = browser.new_page()
    try:
        fresh.goto(link)
        fresh.get_by_text("Steering a pretrained diffusion model").wait_for()
        tab = open_tab(fresh, "ILVR")
        tab.get_by_text("Advanced").click()
        playwright_api.expect(tab.get_by_label("Seed (same seed + settings = same image)")).to_have_value("5",
                                                                                                    timeout=30_000)
        playwright_api.expect(tab.get_by_role("slider", name="Sampling steps")).to_have_value("20")
        tab.get_by_text("sample 2").first.wait_for(timeout=30_000)
        again = [decode(fresh.request.get(img.get_attribute("src")).body())
                 for img in tab.locator("button.thumbnail-item img").all()]
        assert len(again) == len(shown) >= 4 and all(np.array_equal(a, b) for a, b in zip(shown, again))
    finally:
        fresh.close()


PROJECTOR = {"width": 1280, "height": 720}
RUN_BUTTONS = {"ILVR": "Run ILVR", "Classifier guidance": "Run classifier guidance",
               "CycleDiffusion": "Run CycleDiffusion", "Text edit (Stable Diffusion)": "Edit with text",
               "Asyrp": "Edit", "Compare": "Compare every method"}


def inside(box: dict, viewport: dict) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] and (
        box["y"] + box["height"] <= viewport["height"])


@pytest.mark.parametrize("viewport", [PROJECTOR, {"width": 1920, "height": 1080}], ids=["projector", "wide"])
def test_every_tab_shows_its_rule_input_controls_run_and_result_on_the_first_screen(browser, app_url, viewport):
    """At a projector's 1280x720, and on a wide 1920x1080 screen: for every tab, without scrolling, the method's rule,
    its input, the Run button and the result's gallery; the longer story one click away, kept while switching."""
    page = browser.new_page()
    try:
        page.set_viewport_size(viewport)
        page.goto(app_url)
        page.get_by_text("Steering a pretrained diffusion model").wait_for()
        for name, button in RUN_BUTTONS.items():
            tab = open_tab(page, name)
            page.evaluate("window.scrollTo(0, 0)")
            run = tab.get_by_role("button", name=button, exact=True)
            for shown in (tab.locator(".tab-rule").first, tab.locator(".tab-input").first, run,
                          tab.locator(".tab-result").first):
                assert inside(shown.bounding_box(), viewport), (name, shown, shown.bounding_box())
            if viewport is PROJECTOR:
                page.mouse.move(0, 0)
                page.screenshot(path=str(SCREENSHOTS / f"projector-{name.split()[0].lower()}.png"))
        open_tab(page, "ILVR").get_by_text("How it works").click()
        story = open_tab(page, "ILVR").get_by_text("toward a reference image y without any training")
        playwright_api.expect(story).to_be_visible()
        open_tab(page, "Asyrp")
        playwright_api.expect(open_tab(page, "ILVR").get_by_text("toward a reference image y without any training")
                              ).to_be_visible()  # still open after a visit to another tab
    finally:
        page.close()


def test_a_kept_example_runs_once_and_the_next_visitor_sees_its_result_at_once(browser, tmp_path, monkeypatch):
    """Examples cached lazily, as the hub models' are on GPU hardware (here the bundled model's, forced into the
    cache): the first visitor's pick runs it and keeps its result in a folder keyed by the code and models; a fresh
    page's pick shows the same images without running again."""
    import gradio as gr

    from ui import examples, ilvr_tab

    monkeypatch.setenv("STEER_CACHE_EXAMPLES", "1")
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    monkeypatch.setattr(examples.common, "bundled", lambda model_id: False)  # every row into the kept table
    runs = []
    run_ilvr = ilvr_tab.run_ilvr
    monkeypatch.setattr(ilvr_tab, "run_ilvr", functools.wraps(run_ilvr)(
        lambda *args, **kwargs: runs.append(kwargs) or run_ilvr(*args, **kwargs)))
    with gr.Blocks() as demo:
        ilvr_tab.build_tab()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    row = 3  # blue-square.png on shapes-16, 50 steps, 4 samples
    assert ilvr_tab.EXAMPLES[row][1] == "shapes-16"
    try:
        shown = []
        for _ in range(2):  # two visitors, each on a fresh page
            page = browser.new_page()
            try:
                page.goto(url)
                page.locator("table[role=grid]").first.locator("tr.tr-body").nth(row).click()
                page.locator(".tab-result").get_by_text("sample 4").first.wait_for(timeout=120_000)
                shown.append([decode(page.request.get(img.get_attribute("src")).body())
                              for img in page.locator(".tab-result button.thumbnail-item img").all()])
            finally:
                page.close()
        assert [run["seed"] for run in runs] == [ilvr_tab.EXAMPLES[row][6]]  # run once, with the example's settings
        assert len(shown[0]) == 6 and all(np.array_equal(a, b) for a, b in zip(*shown))  # y, phi_N(y), 4 samples
        kept = [folder for folder in tmp_path.glob("*/*") if (folder / "log.csv").exists()]
        assert [folder.parent.name for folder in kept] == [examples.digest()]
    finally:
        demo.close()
