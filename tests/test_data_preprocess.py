"""Reading images as 8-bit gray, histogram equalization, and the whole per-image preprocessing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from omegaconf import OmegaConf

from sinterlab.data.equalize import equalize
from sinterlab.data.images import read_gray8
from sinterlab.data.preprocess import preprocess_image
from sinterlab.errors import SinterlabError
from sinterlab.synth.generate import CONF_DIR


def gray(seed: int = 0, shape=(48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------- read_gray8
def test_8bit_tiff(tmp_path):
    image = gray()
    tifffile.imwrite(tmp_path / "a.tif", image)
    out = read_gray8(tmp_path / "a.tif")
    assert out.dtype == np.uint8 and out.ndim == 2
    np.testing.assert_array_equal(out, image)


def test_16bit_tiff_is_scaled_to_full_range_keeping_order(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(1000, 4096, (40, 50)).astype(np.uint16)  # a 12-bit detector
    tifffile.imwrite(tmp_path / "a16.tif", image)
    out = read_gray8(str(tmp_path / "a16.tif"))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out.min() == 0 and out.max() == 255
    assert out[image == image.min()].max() == 0 and out[image == image.max()].min() == 255
    # relative order preserved: sorting by the source never makes the output go down
    order = np.argsort(image, axis=None, kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)
    # and linear: the middle of the source range lands in the middle of 0..255
    expected = (image.astype(float) - image.min()) * 255 / (image.max() - image.min())
    assert np.abs(out - expected).max() <= 0.5 + 1e-9


def test_16bit_constant_image_is_black(tmp_path):
    tifffile.imwrite(tmp_path / "c16.tif", np.full((10, 12), 777, np.uint16))
    out = read_gray8(tmp_path / "c16.tif")
    assert out.dtype == np.uint8 and out.shape == (10, 12) and not out.any()


def test_float_tiff(tmp_path):
    image = np.linspace(-1.0, 3.0, 30 * 40, dtype=np.float32).reshape(30, 40)
    tifffile.imwrite(tmp_path / "f.tif", image)
    out = read_gray8(tmp_path / "f.tif")
    assert out.dtype == np.uint8 and (out.min(), out.max()) == (0, 255)
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)


def test_png_and_jpeg(tmp_path):
    image = cv2.GaussianBlur(gray(2, (64, 80)), (0, 0), 2)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "a.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    np.testing.assert_array_equal(read_gray8(tmp_path / "a.png"), image)
    jpeg = read_gray8(tmp_path / "a.jpg")
    assert jpeg.dtype == np.uint8 and jpeg.shape == image.shape
    assert np.abs(jpeg.astype(int) - image).mean() < 3  # lossy, but the same picture


def test_rgb_png_becomes_gray(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50  # B, G, R in OpenCV order
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    out = read_gray8(tmp_path / "rgb.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8
    luma = 0.299 * 50 + 0.587 * 100 + 0.114 * 200
    assert np.all(np.abs(out.astype(float) - luma) <= 1)


def test_rgba_png_becomes_gray(tmp_path):
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., :3] = 120
    bgra[..., 3] = np.arange(30, dtype=np.uint8) * 8  # varying alpha is ignored
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    out = read_gray8(tmp_path / "rgba.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8
    assert np.all(out == 120)


def test_rgb_16bit_tiff(tmp_path):
    rgb = np.stack([np.arange(600, dtype=np.uint16).reshape(20, 30) * 100] * 3, axis=-1)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    out = read_gray8(tmp_path / "rgb16.tif")
    assert out.shape == (20, 30) and (out.min(), out.max()) == (0, 255)


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "broken_scan.tif"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SinterlabError, match="broken_scan.tif") as info:
        read_gray8(bad)
    assert "\n" not in str(info.value)


def test_truncated_tiff_names_the_file(tmp_path):
    good = tmp_path / "whole.tif"
    tifffile.imwrite(good, gray(3, (200, 200)))
    cut = tmp_path / "truncated.tif"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(SinterlabError, match="truncated.tif"):
        read_gray8(cut)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(SinterlabError, match="empty.png"):
        read_gray8(tmp_path / "empty.png")
    with pytest.raises(SinterlabError, match="nowhere.tif.*not found"):
        read_gray8(tmp_path / "nowhere.tif")


# ----------------------------------------------------------------------------- equalize
def low_contrast(shape=(256, 256), seed: int = 0) -> np.ndarray:
    """A smooth image squeezed into grey levels 100..139."""
    noise = np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    ranks = smooth.ravel().argsort().argsort().reshape(shape) / smooth.size
    return (100 + np.floor(ranks * 40)).astype(np.uint8)


def test_global_equalization_flattens_the_histogram():
    image = low_contrast()
    assert int(image.max()) - int(image.min()) < 40
    out = equalize(image, "global")
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out.min() <= 5 and out.max() == 255
    levels = np.arange(256)
    cdf = np.searchsorted(np.sort(out.ravel()), levels, side="right") / out.size
    # with 40 source levels the CDF is a staircase: within one step (1/40) of the diagonal
    assert np.abs(cdf - (levels + 1) / 256).max() < 0.05
    for q in (0.25, 0.5, 0.75):
        assert abs(np.mean(out <= q * 255) - q) < 0.03


def test_clahe_changes_image_keeps_dtype_and_shape():
    image = low_contrast((200, 300), seed=1)
    out = equalize(image, "clahe", clahe_clip_limit=2.0, clahe_tile_grid=(4, 4))
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)
    assert out.std() > image.std()  # contrast went up
    assert not np.array_equal(out, equalize(image, "global"))


def test_none_returns_the_input():
    image = low_contrast((32, 32))
    assert equalize(image, "none") is image


def test_unknown_method():
    with pytest.raises(SinterlabError, match="preprocess.equalize.method='histmatch'"):
        equalize(low_contrast((8, 8)), "histmatch")


# ----------------------------------------------------------------------------- pipeline
def test_preprocess_image_crops_and_equalizes(tmp_path):
    cfg = OmegaConf.load(CONF_DIR / "preprocess" / "default.yaml")
    image = low_contrast((120, 160))
    image[100:] = 10  # a flat dark bar of 20 rows
    cv2.putText(image, "HV 5 kV", (4, 114), cv2.FONT_HERSHEY_SIMPLEX, 0.3, 240, 1)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    out, box = preprocess_image(tmp_path / "x.png", cfg)
    assert abs(box.bottom - 100) <= 2 and out.shape == (box.height, 160)
    np.testing.assert_array_equal(out, cv2.equalizeHist(np.ascontiguousarray(image[:box.bottom])))
