"""Info-bar crop: automatic detection on synthetic and hand-drawn SEM bars, manual margins."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from sinterlab.data.crop import CropBox, crop_box, detect_bar_top
from sinterlab.data.images import read_gray8
from sinterlab.errors import SinterlabError
from sinterlab.synth.generate import design_table, load_preset, render_image

CONF = Path(__file__).resolve().parents[1] / "conf" / "preprocess" / "default.yaml"
#: the shipped auto-detection parameters, so the test checks the defaults users get
AUTO = OmegaConf.to_container(OmegaConf.load(CONF).crop.auto, resolve=True)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TOLERANCE_PX = 2


def micrograph(height: int, width: int, seed: int) -> np.ndarray:
    """Textured, noisy stand-in for an SEM micrograph: smoothed noise, particles, shot noise."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 3)
    base = (base - base.mean()) / base.std() * 35 + 110
    for _ in range(height * width // 900):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.circle(base, (x, y), int(rng.integers(4, 14)), float(rng.uniform(150, 230)), -1,
                   cv2.LINE_AA)
    base += rng.normal(0, 8, (height, width)).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def commercial_sem(height: int, width: int, bar_height: int, background: int, text: int,
                   separator: int, seed: int) -> tuple[np.ndarray, int]:
    """A micrograph with a typical commercial data bar at the bottom; returns (image, bar top).

    The bar is a flat band (light gray or black, with slight noise) holding HV/WD/mag/det/date
    text, a scale-bar rectangle with its label, and a 1-2 px separator line on top.
    """
    rng = np.random.default_rng(seed + 1000)
    image = micrograph(height, width, seed)
    top = height - bar_height
    band = np.full((bar_height, width), background, np.int16)
    band += rng.integers(-2, 3, band.shape).astype(np.int16)  # slight sensor/JPEG noise
    image[top:] = np.clip(band, 0, 255).astype(np.uint8)
    image[top:top + separator] = 255 if background < 128 else 0
    inner = bar_height - separator
    scale = inner / 80
    thick = max(1, int(round(scale * 2)))
    x = 8
    for item in ("HV 5.00 kV", "WD 4.9 mm", "mag 50 000 x", "det ETD", "2024-03-14 10:22"):
        (tw, th), _ = cv2.getTextSize(item, FONT, scale, thick)
        cv2.putText(image, item, (x, top + separator + inner // 2 + th // 2), FONT, scale, text,
                    thick, cv2.LINE_AA)
        x += tw + 20
    bar_h = max(2, inner // 8)
    y1 = height - max(3, inner // 6)
    image[y1 - bar_h:y1, width - 200:width - 20] = text
    cv2.putText(image, "500 nm", (width - 160, y1 - bar_h - 3), FONT, scale * 0.8, text, thick,
                cv2.LINE_AA)
    return image, top


# ----------------------------------------------------------------------------- auto: synth
def test_detects_generated_bars_from_truth_csv(tiny_descriptor):
    truth = pd.read_csv(tiny_descriptor.parent / "truth.csv")
    assert truth["bar_height"].nunique() > 1  # several bar heights are covered
    for row in truth.itertuples():
        image = read_gray8(tiny_descriptor.parent / row.image)
        bar_top = image.shape[0] - row.bar_height
        box = crop_box(image, "auto", auto=AUTO)
        assert abs(box.bottom - bar_top) <= TOLERANCE_PX, (row.image, box, bar_top)
        assert abs(detect_bar_top(image, **AUTO) - bar_top) <= TOLERANCE_PX
        assert (box.top, box.left, box.right) == (0, 0, image.shape[1])


@pytest.mark.parametrize("bar_height", [12, 30, 57, 96])
def test_detects_rendered_bars_of_several_heights(bar_height):
    cfg = load_preset("tiny", image__bar_height=[bar_height, bar_height], image__height=240,
                      image__width=256)
    row = design_table(cfg)[bar_height % 7]
    image, truth = render_image(cfg, row)
    assert truth["bar_height"] == bar_height
    bar_top = image.shape[0] - bar_height
    assert abs(detect_bar_top(image, **AUTO) - bar_top) <= TOLERANCE_PX
    assert abs(crop_box(image, "auto", auto=AUTO).bottom - bar_top) <= TOLERANCE_PX


# ----------------------------------------------------------------------------- auto: drawn
@pytest.mark.parametrize("bar_height", [30, 61, 97])
@pytest.mark.parametrize(("background", "text"), [(200, 0), (0, 255), (170, 255)],
                         ids=["light-gray-black-text", "black-white-text", "gray-white-text"])
@pytest.mark.parametrize("separator", [1, 2])
def test_detects_commercial_style_bar(bar_height, background, text, separator):
    image, bar_top = commercial_sem(768, 1024, bar_height, background, text, separator,
                                    seed=bar_height * 10 + separator)
    detected = detect_bar_top(image, **AUTO)
    assert abs(detected - bar_top) <= TOLERANCE_PX, (detected, bar_top)
    box = crop_box(image, "auto", auto=AUTO)
    assert abs(box.bottom - bar_top) <= TOLERANCE_PX
    kept = box.apply(image)
    # what is kept is micrograph: the bar's flat background is gone (at most 2 rows remain)
    flat_rows = [r for r in range(kept.shape[0])
                 if np.mean(np.abs(kept[r].astype(int) - background) <= 3) > 0.5]
    assert len(flat_rows) <= TOLERANCE_PX


def test_no_bar_means_no_crop():
    for seed in range(3):
        image = micrograph(768, 1024, seed)
        assert detect_bar_top(image, **AUTO) == image.shape[0]
        assert crop_box(image, "auto", auto=AUTO) == CropBox(0, 768, 0, 1024)


def test_mode_none_keeps_everything():
    image, _ = commercial_sem(300, 400, 40, 200, 0, 1, seed=3)
    assert crop_box(image, "none", bottom=50, auto=AUTO) == CropBox(0, 300, 0, 400)


# ----------------------------------------------------------------------------- manual
def test_manual_crop_in_pixels():
    image = np.zeros((200, 300), np.uint8)
    box = crop_box(image, "manual", top=5, bottom=64, left=10, right=20)
    assert box == CropBox(5, 136, 10, 280)
    assert box.apply(image).shape == (131, 270)
    assert (box.height, box.width) == (131, 270)


def test_manual_crop_in_fractions():
    image = np.zeros((200, 300), np.uint8)
    box = crop_box(image, "manual", top=0.1, bottom=0.08, left=0.05, right=0.5)
    assert box == CropBox(20, 184, 15, 150)


def test_manual_bottom_and_auto_take_the_larger_cut():
    image, bar_top = commercial_sem(400, 512, 40, 200, 0, 1, seed=7)
    assert crop_box(image, "auto", bottom=100, auto=AUTO).bottom == 300
    assert abs(crop_box(image, "auto", bottom=5, auto=AUTO).bottom - bar_top) <= TOLERANCE_PX


def test_as_columns():
    box = CropBox(np.int64(1), 2, 3, 4)
    columns = box.as_columns()
    assert columns == {"crop_top": 1, "crop_bottom": 2, "crop_left": 3, "crop_right": 4}
    assert all(type(v) is int for v in columns.values())


@pytest.mark.parametrize("key", ["top", "bottom", "left", "right"])
def test_negative_margin_is_an_error(key):
    with pytest.raises(SinterlabError, match=f"preprocess.crop.{key}"):
        crop_box(np.zeros((50, 60), np.uint8), "manual", **{key: -3})


def test_margins_that_leave_nothing_and_unknown_mode():
    image = np.zeros((50, 60), np.uint8)
    with pytest.raises(SinterlabError, match="leave nothing"):
        crop_box(image, "manual", top=30, bottom=30)
    with pytest.raises(SinterlabError, match="preprocess.crop.mode"):
        crop_box(image, "sideways")
