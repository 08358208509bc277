"""One edit, every method (runners.compare): each cell is the image its own tab gives for the settings its row names,
the input reads as the input, a method near the identity keeps everything, and the measurement over faces counts
what the cells say."""

import numpy as np
import pytest

from runners import METHODS, compare
from training.captions import read_attributes
from pipelines.core.images import pil_to_tensor

FROWNING = "assets/faces/frowning.png"


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def smile():
    return compare.run(compare.Settings(FROWNING, "smile", strength=0.6, seed=0))


def test_every_method_has_its_cell_and_each_is_its_own_tabs_image_bit_for_bit(smile):
    assert [cell.method for cell in smile.cells] == list(compare.METHODS)
    assert [caption for _, caption in smile.gallery[1:]] == list(compare.METHODS)
    for cell in smile.cells:
        runner = METHODS[cell.tab]
        again = runner.run(runner.Settings(**cell.settings))
        assert np.array_equal(pixels(again.gallery[cell.index][0]), pixels(cell.image)), cell.method


def test_the_input_reads_as_the_input_and_each_row_as_its_image(smile):
    read = read_attributes(pil_to_tensor(smile.gallery[0][0])[0])
    assert read["mouth"] == "frowning" and read["glasses"] == "no glasses"
    assert smile.gallery[0][1] == f"input: {', '.join(read.values())}"
    for cell, row in zip(smile.cells, smile.rows):
        reached = cell.read["mouth"] == "smiling"
        kept = sum(cell.read[k] == read[k] for k in ("glasses", "hair", "skin", "background"))
        assert row["goal reached"] == ("yes" if reached else "no") and row["kept"] == f"{kept} of 4", row
        assert row["U-Net evaluations"] > 0 and row["seconds"] >= 0
    # the faces-32 model turns this frown into a smile by its classes: CycleDiffusion and DDIB keep the rest
    assert {r["method"]: r["goal reached"] for r in smile.rows}["CycleDiffusion"] == "yes"


def test_methods_that_start_near_the_input_keep_it_at_a_small_strength():
    """At strength 0.05 the chains start a few steps from the input: the face comes back as it was."""
    near = compare.run(compare.Settings(FROWNING, "smile", strength=0.05, seed=0))
    rows = {row["method"]: row for row in near.rows}
    for method in ("SDEdit", "DDIB", "CycleDiffusion", "classifier guidance", "classifier-free guidance"):
        assert rows[method]["goal reached"] == "no" and rows[method]["kept"] == "4 of 4", rows[method]
        assert rows[method]["PSNR (dB)"] > 25, rows[method]


def test_measuring_on_faces_counts_what_each_face_says():
    measured = compare.measure(compare.MeasureSettings("glasses", faces=2, strength=0.6, seed=1))
    assert measured.faces == 2 and [row["method"] for row in measured.table] == list(compare.METHODS)
    for row in measured.table:
        k, n = (int(x) for x in row["goal reached"].split(" = ")[0].split("/"))
        assert n == 2 and 0 <= k <= 2
    missed = sum(int(row["goal reached"].split("/")[0]) for row in measured.table)
    assert len(measured.failures) == 2 * (2 * len(compare.METHODS) - missed)  # a face and its output per miss
    assert measured.figure.size == (32 * (1 + len(compare.METHODS)), 32 * 2)


@pytest.mark.parametrize("k, n, low, high", [(0, 10, 0.0, 0.278), (10, 10, 0.722, 1.0), (16, 32, 0.336, 0.664)])
def test_the_wilson_interval(k, n, low, high):
    assert compare.wilson(k, n) == pytest.approx((low, high), abs=1e-3)


def test_a_bad_goal_or_strength_is_refused_before_any_model_work():
    with pytest.raises(ValueError, match="Pick a goal: smile or glasses"):
        compare.run(compare.Settings(FROWNING, "frown"))
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        compare.run(compare.Settings(FROWNING, strength=0))
    with pytest.raises(ValueError, match="Compare on 1 to 32 faces"):
        compare.measure(compare.MeasureSettings(faces=40))
