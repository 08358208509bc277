"""The app's endpoints driven with gradio_client against the app launched locally on tiny local models, and the
tabs' examples for the bundled model run through the tab functions."""

import re

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.core import images
from pipelines.asyrp.interval import asyrp_interval
from training.shapes import measure
from runners import guidance, ilvr
from ui.cycle_tab import class_dropdowns

UNSUPERVISED, LEARNED, FROM_FILE = "principal", "learned", "file"


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app.url, verbose=False), live_app.model_dir


def read(item) -> bytes:
    return open(item["image"], "rb").read()


def test_ilvr_endpoint_returns_reference_low_pass_and_samples(client):
    c, model_dir = client
    gallery, process = c.predict(
        handle_file("assets/astronaut.png"), model_dir, 4, 0, 10, 2, 7, True, api_name="/ilvr"
    )
    captions = [item["caption"] for item in gallery]
    assert captions == ["reference y", "φ_N(y), N=4", "sample 1", "sample 2"]
    assert len(process) == 12 + 4  # 6 snapshots of x_t and predicted x0, then the frequency split of one step
    assert process[-1]["caption"].startswith("step 9, t=100: x_t-1")  # step 50 asked for, capped at 9 of 10

def test_ilvr_endpoint_streams_its_predictions_before_the_result(client):
    c, model_dir = client
    job = c.submit(handle_file("assets/astronaut.png"), model_dir, 4, 0, 30, 2, 7, False, api_name="/ilvr")
    final_gallery, _ = job.result()
    outputs = job.outputs()
    previews = [out[0] for out in outputs[:-1]]
    assert len(previews) >= 2  # the gallery changed at least twice before the end
    assert all(item["caption"].endswith("of 30: predicted x0") for gallery in previews for item in gallery)
    assert [item["caption"] for item in final_gallery] == ["reference y", "φ_N(y), N=4", "sample 1", "sample 2"]


def test_ilvr_endpoint_is_reproducible_by_seed(client):
    c, model_dir = client
    args = (handle_file("assets/chelsea.png"), model_dir, 8, 0, 10, 1, 3, False)
    first, _ = c.predict(*args, api_name="/ilvr")
    second, _ = c.predict(*args, api_name="/ilvr")
    assert read(first[-1]) == read(second[-1])


def test_bad_input_gives_a_clear_error_and_the_server_keeps_serving(client, tmp_path):
    c, model_dir = client
    with pytest.raises(Exception, match="use one of 2, 4, 8, 16"):
        c.predict(handle_file("assets/astronaut.png"), model_dir, 64, 0, 10, 1, 0, False, api_name="/ilvr")
    text = tmp_path / "fake.png"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        c.predict(handle_file(str(text)), model_dir, 4, 0, 10, 1, 0, False, api_name="/ilvr")
    gallery, _ = c.predict(handle_file("assets/astronaut.png"), model_dir, 4, 0, 5, 1, 0, False, api_name="/ilvr")
    assert len(gallery) == 3


def psnr_rows(metrics: str) -> dict[str, float]:
    """The PSNR column of the CycleDiffusion tab's metrics table, by row name."""
    return {name: float(value) for name, value in
            re.findall(r"\| (reconstruction|result|SDEdit baseline \(fresh noise\)) \| ([\d.]+) \|", metrics)}


SDEDIT = "SDEdit baseline: the same x_t0, fresh noise instead of the encoded ε"


def test_guidance_endpoint_labels_every_sample_with_p_target_and_sweeps_by_seed(client):
    c, model_dir = client
    prompts = "a photo of a cat\na photo of a dog"
    args = [prompts, "a photo of a dog", model_dir, 10, "ddim", "fixed_eps", 0, 10, 2, 0]
    gallery, plot, maps = c.predict(*args, False, "", api_name="/guidance")
    captions = [item["caption"] for item in gallery]
    # the guided run, then the unguided one from the same seed to compare (on by default)
    assert [caption.split(":")[0] for caption in captions] == [
        "s=10, sample 1", "s=10, sample 2", "s=0, sample 1", "s=0, sample 2"]
    assert all(0 <= float(caption.rsplit("= ", 1)[1]) <= 1 for caption in captions)  # a probability
    rows = plotted(plot)
    assert {row["run"] for row in rows} == {"s=10, sample 1", "s=10, sample 2", "s=0, sample 1", "s=0, sample 2"}
    assert len(rows) == 4 * 10 and all(0 <= row["p(target | x_t)"] <= 1 for row in rows)  # every step of every run
    assert [item["caption"].split(":")[0] for item in maps] == [
        "s=10, step 1 (t=900)", "s=10, step 4 (t=600)", "s=10, step 7 (t=300)", "s=10, step 10 (t=0)"]
    sweep, _, _ = c.predict(*args[:8], 1, 0, True, "0, 10", api_name="/guidance")
    assert [item["caption"].split(":")[0] for item in sweep] == ["s=0, sample 1", "s=10, sample 1"]
    assert read(sweep[1]) == read(gallery[0])  # the sweep's s=10 is the single run's first sample: same seed
    assert read(sweep[0]) == read(gallery[2])  # and its s=0 the comparison's


def plotted(plot) -> list[dict]:
    """The rows of a gr.LinePlot as the API returns it."""
    value = plot.get("value", plot)
    return [dict(zip(value["columns"], row)) for row in value["data"]]


def test_cycle_endpoint_reconstructs_translates_and_edits(client, live_app):
    c, model_dir = client
    image = handle_file("assets/astronaut.png")
    common = dict(strength=0.5, eta=1.0, steps=6, guidance_scale=10, exact_gradient=False, pnp_steps=0,
                  step_size=1e-3, seed=0)

    def cycle(mode, target_id=None, target_prompt=""):
        return c.predict(image, mode, model_dir, target_id, target_prompt, "", *common.values(), api_name="/cycle")

    gallery, metrics, latent = cycle("reconstruct")
    assert [item["caption"] for item in gallery] == ["input", "reconstruction G1(z) (same model)", SDEDIT]
    assert psnr_rows(metrics)["reconstruction"] > 40  # the DPM-Encoder's latent decodes to the input exactly
    # the same x_t0 with fresh noise (SDEdit) is another image: the encoded noise is what brings the input back
    assert psnr_rows(metrics)["SDEdit baseline (fresh noise)"] < psnr_rows(metrics)["reconstruction"] - 20
    assert [item["caption"] for item in latent] == ["x_t0, t0 = 333", "ε at t = 333", "ε at t = 167",
                                                    "ε at t = 1"]  # the chain of 0.5 x 6 steps
    # another model of the same size: the tab offers registry models only, the API takes a local directory
    gallery, metrics, _ = cycle("translate", target_id=live_app.other_model_id)
    assert gallery[2]["caption"] == f"translate: {live_app.other_model_id}"
    assert psnr_rows(metrics)["result"] < psnr_rows(metrics)["reconstruction"]  # the other model changed it
    gallery, metrics, _ = cycle("text", target_prompt="a cat")
    assert gallery[2]["caption"] == "text edit: “a cat”"
    assert "CLIP similarity to “a cat”" in metrics


def measured(item):
    """What a gallery image shows (training.shapes.measure): its 16x16 pixels, enlarged by nearest neighbour, read back."""
    picture = Image.open(item["image"]).convert("RGB").resize((16, 16), Image.Resampling.NEAREST)
    return measure(images.pil_to_tensor(picture)[0])


def test_cycle_endpoint_translates_between_the_bundled_models_classes(client, bundled):
    c, model_dir = client

    def cycle(source_id, source_class, target_class):
        return c.predict(handle_file("assets/shapes/red-circle.png"), "class", source_id, None, "", "",
                         0.5, 1.0, 50, 10, False, 0, 1e-3, 0, source_class, target_class, api_name="/cycle")

    gallery, metrics, _ = cycle("shapes-16", "circle", "square")
    assert [item["caption"] for item in gallery] == [
        "input", "reconstruction G(z | circle) (same class)", "class translation: circle → square", SDEDIT]
    shown, result = measured(gallery[0]), measured(gallery[2])
    assert (shown.name, result.name) == ("circle", "square")
    # same latent: the colour stays (measured RGB distance 0.04; another red would still be < 0.2)
    assert sum((a - b) ** 2 for a, b in zip(shown.color, result.color)) ** 0.5 < 0.2
    assert psnr_rows(metrics)["reconstruction"] > 40
    with pytest.raises(Exception, match="has no classes, so it cannot translate between them"):
        cycle(model_dir, "circle", "square")
    with pytest.raises(Exception, match="Pick the target class from shapes-16's classes: circle, square, triangle"):
        cycle("shapes-16", "circle", "hexagon")


def test_cycle_class_dropdowns_follow_the_source_model():
    source, target = class_dropdowns("shapes-16", None, "triangle")
    assert [name for name, _ in source.choices] == ["circle", "square", "triangle"]
    assert (source.value, target.value) == ("circle", "triangle")  # a choice that still applies is kept
    source, target = class_dropdowns("google/ddpm-cat-256", "circle", "square")
    assert source.choices == [] and (source.value, target.value) == (None, None)


def test_asyrp_endpoints_edit_with_a_strip_and_with_a_learned_direction_file(client):
    c, model_dir = client
    image = handle_file("assets/chelsea.png")
    gallery, info, norms = c.predict(image, model_dir, UNSUPERVISED, 1, None, 1.0, True, False, 500, 200, 4, 0,
                                     api_name="/asyrp")
    assert [item["caption"] for item in gallery] == [
        "input", "reconstruction (scale 0)", "scale -2", "scale -1", "scale +1", "scale +2"]
    assert "principal direction 1" in info
    assert read(gallery[2]) != read(gallery[5])  # -2s and +2s move h in opposite directions
    rows = plotted(norms)  # |s delta_h_t| at the edited steps t = 750, 500 (>= t_edit) for each of the four scales
    assert sorted({row["t"] for row in rows}) == [500, 750] and len(rows) == 2 * 4
    by_run = {(row["run"], row["t"]): row["|s Δh_t|"] for row in rows}
    assert by_run[("scale -2", 500)] == pytest.approx(2 * by_run[("scale -1", 500)], rel=1e-4)  # linear in s
    path, message = c.predict(image, model_dir, "a cat", "a dog", "global", 1, 500, 4, api_name="/asyrp_learn")
    assert path.endswith(".safetensors") and "Learned “a cat” → “a dog”" in message
    gallery, info, _ = c.predict(image, model_dir, FROM_FILE, 1, handle_file(path), -1.0, False, False, 500, 200, 4,
                                 0, api_name="/asyrp")
    assert [item["caption"] for item in gallery] == ["input", "reconstruction (scale 0)", "scale -1"]
    assert "a cat → a dog" in info


def shown_image(path: str, size: int = 16) -> torch.Tensor:
    """A gallery image back at the model's size: display() enlarged it by an integer factor with nearest neighbour,
    so nearest-neighbour shrinking recovers it exactly. (3,size,size) in [0,1]."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def no_progress(*args, **kwargs):
    pass


def test_ilvr_examples_on_the_bundled_model_keep_the_reference_colour(bundled):
    from training.shapes import measure
    from ui import ilvr_tab

    rows = [row for row in ilvr_tab.EXAMPLES if row[1] == "shapes-16"]
    assert {row[2] for row in rows} == {4, 8}
    references = torch.tensor([measure(shown_image(row[0])).color for row in rows])  # (R,3)
    for k, row in enumerate(rows):
        gallery, _ = ilvr_tab.run_ilvr(row[0], *row[1:], progress=no_progress)
        samples = [shown_image(path) for path, _ in gallery[2:]]
        assert len(samples) == row[5]
        for sample in samples:
            # phi_N(x_0) ~= phi_N(y) carries the colour: every sample's colour is nearest its own reference's
            # among the examples' references (red, blue, green, yellow); no tolerance to choose
            distances = (references - torch.tensor(measure(sample).color)).norm(dim=1)
            assert int(distances.argmin()) == k, (row, distances)


def test_guidance_examples_on_the_bundled_model_draw_the_target(bundled):
    from training.shapes import CLASSES, measure
    from ui import guidance_tab

    rows = [row for row in guidance_tab.EXAMPLES if row[1] == "shapes-16"]
    assert {row[5] for row in rows} == {"ddim", "ddpm"} and any(row[9] for row in rows)  # both samplers, a sweep
    for kind, model_id, prompts, target, scale, sampler, steps, samples, seed, sweep, sweep_scales in rows:
        gallery, _, _ = guidance_tab.run_guidance(prompts, target, model_id, scale, sampler, "fixed_eps", 0.0, steps,
                                                  samples, seed, sweep, sweep_scales, kind, False, progress=no_progress)
        scales = guidance.parse_scales(sweep_scales) if sweep else [scale]
        assert len(gallery) == len(scales) * samples
        strongest = gallery[-samples:]  # the largest scale comes last
        assert all(caption.startswith(f"s={max(scales):g}") for _, caption in strongest)
        judged = [CLASSES[measure(shown_image(path)).label] for path, _ in strongest]
        # the examples are chosen at scales that steer: most of the strongest-scale samples are the target
        assert judged.count(target) > samples / 2, (target, judged)


def test_asyrp_examples_on_the_bundled_model_reconstruct_at_scale_0_and_resize_along_the_size_direction(bundled):
    from training.shapes import measure
    from ui import asyrp_tab

    rows = [row for row in asyrp_tab.EXAMPLES if row[1] == "shapes-16"]
    assert any(row[4] == asyrp_tab.SIZE_DIRECTION for row in rows)
    for image, model_id, source, k, direction_file, scale, strip, steps, seed, _released in rows:
        t_edit, t_boost = asyrp_interval(model_id)
        gallery, info, _ = asyrp_tab.run_asyrp(image, model_id, source, k, None, direction_file, scale, strip, False, t_edit,
                                              t_boost, steps, seed, progress=no_progress)
        assert len(gallery) == 2 + 4  # input, reconstruction, the strip of four
        given, rebuilt = measure(shown_image(gallery[0][0])), measure(shown_image(gallery[1][0]))
        # scale 0 is DDIM inversion and back (exact when P_t is not clipped) plus the stochastic steps below t_boost:
        # the same shape of the same colour within a few hundredths, where a clipped P_t drifts by tenths
        assert rebuilt.label == given.label and rebuilt.well_formed
        assert max(abs(a - b) for a, b in zip(rebuilt.color, given.color)) < 0.1, (image, rebuilt.color, given.color)
        if direction_file:
            assert "a smaller shape → a bigger shape" in info
            edits = [measure(shown_image(item[0])) for item in gallery[2:]]  # scales -2s, -s, s, 2s
            sizes = [m.size for m in edits[:2] + [rebuilt] + edits[2:]]
            assert all(a < b for a, b in zip(sizes, sizes[1:])), (image, sizes)
            assert all(m.label == given.label for m in edits), (image, [m.label for m in edits])
        else:
            assert f"principal direction {k}" in info

def test_the_asyrp_timeline_draws_each_stage_as_wide_as_its_range_of_t():
    from ui.asyrp_tab import timeline

    assert re.findall(r"flex:(\d+)", timeline(516, 200, 1000)) == ["484", "316", "200"]  # edit, DDIM, boosting
    assert re.findall(r"flex:(\d+)", timeline(500, 0, 1000)) == ["500", "500"]  # no boosting below t_boost = 0
    assert "1000 → 516" in timeline(516, 200, 1000) and "200 → 0" in timeline(516, 200, 1000)
    assert "2000 → 516" in timeline(516, 200, 2000)  # T is the model's own


def test_the_ilvr_grid_runs_every_factor_and_range_from_one_seed(bundled):
    from training.shapes import measure
    from ui import ilvr_tab

    gallery = ilvr_tab.run_ilvr_grid("assets/shapes/red-circle.png", "shapes-16", 20, 0, progress=no_progress)
    factors = ilvr.grid_factors(16)
    assert factors == [2, 4, 8]  # 16 px: N = 16 would leave the reference one pixel
    assert [caption for _, caption in gallery] == [f"N={n}, condition while t > {r}" for n in factors
                                                   for r in ilvr.GRID_RANGES]
    given = measure(shown_image("assets/shapes/red-circle.png"))
    tight = measure(shown_image(gallery[0][0]))  # N = 2, conditioned at every step: the reference's colour
    assert max(abs(a - b) for a, b in zip(tight.color, given.color)) < 0.15, (tight.color, given.color)
