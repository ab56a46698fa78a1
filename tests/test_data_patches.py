"""Random patches: reproducible per patch, inside the micrograph, rotated without black corners."""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest
import torch

from sinterlab.data.patches import PARAM_COLUMNS, PatchSampler, PatchSpec, patch_side
from sinterlab.errors import SinterlabError

KEY = hashlib.sha256(b"image-1").hexdigest()
OTHER_KEY = hashlib.sha256(b"image-2").hexdigest()
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def sampler(per_image=8, size=32, output_size=24, hflip=True, rotation=180.0, seed=0,
            mean=MEAN, std=STD) -> PatchSampler:
    return PatchSampler(PatchSpec(per_image, size, output_size, hflip, rotation, seed), mean, std)


def texture(height=120, width=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


# ----------------------------------------------------------------------------- determinism
def test_same_key_index_seed_gives_identical_params_and_tensors():
    image = texture()
    a, b = sampler(), sampler()
    pa, pb = a.params(*image.shape, KEY), b.params(*image.shape, KEY)
    assert pa.shape == (8, len(PARAM_COLUMNS))
    np.testing.assert_array_equal(pa, pb)
    assert torch.equal(a.cut(image, pa), b.cut(image, pb))


def test_patch_i_does_not_depend_on_per_image():
    image = texture()
    five = sampler(per_image=5).params(*image.shape, KEY)
    ten = sampler(per_image=10).params(*image.shape, KEY)
    np.testing.assert_array_equal(five, ten[:5])
    big = sampler(per_image=10)
    assert torch.equal(sampler(per_image=5).cut(image, five), big.cut(image, ten)[:5])


def test_other_seed_or_image_gives_other_params():
    shape = (120, 160)
    base = sampler(seed=0).params(*shape, KEY)
    assert not np.array_equal(base, sampler(seed=1).params(*shape, KEY))
    assert not np.array_equal(base, sampler(seed=0).params(*shape, OTHER_KEY))
    # and the patches of one image are not all alike
    assert len({tuple(row) for row in base}) == len(base)


def test_flip_and_angle_switches():
    shape = (120, 160)
    still = sampler(per_image=30, hflip=False, rotation=0).params(*shape, KEY)
    assert np.all(still[:, 3] == 0) and np.all(still[:, 4] == 0) and np.all(still[:, 2] == 32)
    moving = sampler(per_image=30).params(*shape, KEY)
    assert set(moving[:, 3]) == {0.0, 1.0}
    assert np.all(np.abs(moving[:, 4]) <= 180) and moving[:, 4].std() > 30


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(("height", "width"), [(120, 160), (60, 300), (46, 46)])
def test_rotated_boxes_lie_inside_the_image(height, width):
    s = sampler(per_image=300, size=32)
    params = s.params(height, width, KEY)
    x0, y0, side, _, angle = params.T
    assert np.all(x0 >= 0) and np.all(y0 >= 0)
    assert np.all(x0 + side <= width) and np.all(y0 + side <= height)
    assert np.all(side == [patch_side(32, a) for a in angle])
    # the rotated patch (centred in its box) has all four corners inside the box and the image
    for x, y, sd, a in zip(x0, y0, side, angle, strict=True):
        corners = cv2.boxPoints(((x + sd / 2, y + sd / 2), (32, 32), a))
        assert corners.min() >= min(x, y) - 1e-3
        assert np.all(corners[:, 0] <= x + sd + 1e-3) and np.all(corners[:, 1] <= y + sd + 1e-3)
        assert np.all(corners[:, 0] <= width) and np.all(corners[:, 1] <= height)


@pytest.mark.parametrize("angle", [0, 7.5, 30, 45, 60, 90, 135, -20, -89.9, 180])
def test_patch_side_holds_the_rotated_square(angle):
    size = 224
    side = patch_side(size, angle)
    corners = cv2.boxPoints(((0.0, 0.0), (size, size), angle))
    extent = float(corners[:, 0].max() - corners[:, 0].min())
    assert extent <= side + 1e-3 and extent >= side - 1.01  # holds it, and tightly
    a = math.radians(angle)
    assert side == math.ceil(size * (abs(math.cos(a)) + abs(math.sin(a))) - 1e-9)
    assert size <= side <= math.ceil(size * math.sqrt(2))


def test_no_black_corners_after_rotation():
    image = np.full((200, 200), 255, np.uint8)
    s = sampler(per_image=40, size=64, output_size=48, mean=(0, 0, 0), std=(1, 1, 1))
    params = s.params(*image.shape, KEY)
    assert np.any(np.abs(np.abs(params[:, 4]) % 90 - 45) < 30)  # some angles far from 0/90
    out = s.cut(image, params)
    assert out.shape == (40, 3, 48, 48) and out.dtype == torch.float32
    assert torch.all(out == 1.0)


def test_right_angles_are_exact_rotations_without_shift():
    image = texture()
    s = sampler(size=16, output_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    crop = image[7:23, 5:21].astype(np.float32) / 255
    for angle, flip, turns in [(0, 0, 0), (90, 0, 1), (180, 0, 2), (-90, 0, 3), (0, 1, None)]:
        params = np.array([[5, 7, patch_side(16, angle), flip, angle]], float)
        out = s.cut(image, params)[0, 0].numpy()
        expected = crop[:, ::-1] if turns is None else np.rot90(crop, turns)
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_output_shape_normalization_and_channels():
    image = texture(100, 140, seed=3)
    s = sampler(per_image=6, size=40, output_size=20)
    out = s.cut(image, s.params(*image.shape, KEY))
    assert out.shape == (6, 3, 20, 20)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6  # (x/255 - 0.5) / 0.5


def test_too_small_image_is_an_error():
    s = sampler(size=64, rotation=45)
    with pytest.raises(SinterlabError, match=r"preprocess\.patches\.size") as info:
        s.params(80, 400, KEY)
    assert "80" in str(info.value) and "\n" not in str(info.value)
    sampler(size=64, rotation=0).params(64, 64, KEY)  # an exact fit is fine unrotated


def albumentations_reference(image, params, size, output_size, mean, std) -> torch.Tensor:
    """The per-patch albumentations pipeline the vectorised cutter replaces: cut the square,
    flip, rotate about its centre, centre-crop, area-resize, gray -> RGB, normalize."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    finish = A.Compose([A.CenterCrop(size, size),
                        A.Resize(output_size, output_size, interpolation=cv2.INTER_AREA),
                        A.ToRGB(num_output_channels=3),
                        A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()])
    out = []
    for x0, y0, side, flip, angle in params:
        x0, y0, side = int(x0), int(y0), int(side)
        orient = A.Compose([A.HorizontalFlip(p=float(flip)),
                            A.Rotate(limit=(angle, angle), p=1.0,
                                     border_mode=cv2.BORDER_REFLECT_101)])
        patch = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
        out.append(finish(image=orient(image=patch)["image"])["image"])
    return torch.stack(out)


@pytest.mark.parametrize("size,output_size,rotation", [(32, 24, 180.0), (32, 32, 30.0),
                                                       (40, 24, 0.0)])
def test_patches_are_bit_identical_to_the_albumentations_pipeline(size, output_size, rotation):
    """So the embedding cache written by the per-patch pipeline stays valid."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    s = sampler(per_image=40, size=size, output_size=output_size, rotation=rotation, mean=mean,
                std=std)
    image = cv2.GaussianBlur(texture(), (5, 5), 1.5)
    params = s.params(*image.shape, KEY)
    assert torch.equal(s.cut(image, params),
                       albumentations_reference(image, params, size, output_size, mean, std))


def test_dihedral_draws_quarter_turns_that_are_exact():
    image = texture(120, 120, seed=5)
    s = sampler(per_image=64, size=32, output_size=32, rotation="dihedral", mean=(0, 0, 0),
                std=(1, 1, 1))
    params = s.params(*image.shape, KEY)
    assert set(params[:, 4]) == {-90.0, 0.0, 90.0, 180.0} and set(params[:, 3]) == {0.0, 1.0}
    assert (params[:, 2] == 32).all()  # no larger crop needed
    out = s.cut(image, params)[:, 0].numpy()
    for (x0, y0, _, flip, angle), patch in zip(params, out, strict=True):
        crop = image[int(y0):int(y0) + 32, int(x0):int(x0) + 32].astype(np.float32) / 255
        crop = crop[:, ::-1] if flip else crop
        np.testing.assert_allclose(patch, np.rot90(crop, int(angle) // 90 % 4), atol=1e-6)


def test_dihedral_has_its_own_cache_key(tmp_path):
    from omegaconf import OmegaConf

    from sinterlab.features.cache import settings_sha256
    from sinterlab.features.extract import cache_settings, patch_spec

    class Backbone:
        input_size, mean, std, channels_last = 32, (0.5,), (0.5,), False

    keys = {}
    for rotation in (180, "dihedral", 0, "180"):
        cfg = OmegaConf.create({"patches": {"per_image": 4, "size": 32, "output_size": None,
                                            "hflip": True, "rotation": rotation, "seed": 0}})
        keys[rotation] = settings_sha256(cache_settings(cfg, patch_spec(cfg, Backbone()),
                                                        Backbone()))
    assert len({keys[180], keys["dihedral"], keys[0]}) == 3
    assert keys["180"] == keys[180]  # the same patches, whichever way the YAML spelt it
    with pytest.raises(SinterlabError, match="dihedral"):
        patch_spec(OmegaConf.create({"patches": {"per_image": 4, "size": 32, "output_size": None,
                                                 "hflip": True, "rotation": "d4", "seed": 0}}),
                   Backbone())
