"""The embedding cache: miss, hit, resume after a crash, exact invalidation, identical features,
wrong entries set aside."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from sinterlab.data.patches import PatchSampler
from sinterlab.data.preprocess import preprocess_image
from sinterlab.features import extract
from sinterlab.features.cache import CacheEntry, EmbeddingCache, file_sha256
from sinterlab.features.extract import (
    ImageRef,
    cache_settings,
    embed_images,
    extract_to_cache,
    patch_spec,
)
from sinterlab.features.runtime import build_runner


@pytest.fixture
def setup(make_cfg, tiny_descriptor, tmp_path):
    cfg = make_cfg(f"features.cache_dir={tmp_path / 'cache'}")
    backbone = instantiate(cfg.backbone)
    folder = tiny_descriptor.parent
    images = sorted(folder.glob("images/*.tif"))[:3]
    return cfg, backbone, images


def run(cfg, backbone, images, progress=False):
    spec = patch_spec(cfg.preprocess, backbone)
    cache = EmbeddingCache(cfg.features.cache_dir, backbone.name, backbone.weights.sha256,
                           cache_settings(cfg.preprocess, spec, backbone))
    refs = [ImageRef(str(p), file_sha256(p)) for p in images]
    runner = build_runner("torch", backbone, cache.folder.parent, spec.output_size)
    stats = extract_to_cache(refs, cache, runner, PatchSampler(spec, backbone.mean,
                                                               backbone.std),
                             cfg.preprocess, cfg.features, progress=progress)
    return stats, cache, refs


def test_miss_then_hit(setup):
    cfg, backbone, images = setup
    first, cache, refs = run(cfg, backbone, images)
    second, _, _ = run(cfg, backbone, images)
    assert (first["extracted"], first["from_cache"]) == (3, 0)
    assert (second["extracted"], second["from_cache"]) == (0, 3)
    assert not list(cache.folder.glob(".*"))  # no temp files left behind


@pytest.mark.parametrize("terminal", [False, True])
def test_a_progress_bar_only_on_a_terminal(setup, capsys, monkeypatch, terminal):
    """A log file or a pipe would keep every frame of the bar: there, extraction draws none."""
    cfg, backbone, images = setup
    monkeypatch.setattr(extract, "on_terminal", lambda: terminal)
    capsys.readouterr()
    run(cfg, backbone, images[:1], progress=True)
    drawn = capsys.readouterr()
    assert ("Predicting" in drawn.out + drawn.err) == terminal


def test_killed_extraction_resumes_with_done_images(setup, monkeypatch):
    cfg, backbone, images = setup
    original = EmbeddingCache.save
    calls = []

    def crash_on_second(self, sha, entry):
        calls.append(sha)
        if len(calls) == 2:
            raise RuntimeError("simulated kill")
        return original(self, sha, entry)

    monkeypatch.setattr(EmbeddingCache, "save", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(cfg, backbone, images)
    monkeypatch.setattr(EmbeddingCache, "save", original)
    resumed, cache, refs = run(cfg, backbone, images)
    assert (resumed["from_cache"], resumed["extracted"]) == (1, 2)
    assert all(cache.has(r.sha) for r in refs)


def test_changed_setting_invalidates_exactly_what_it_affects(setup, tmp_path):
    cfg, backbone, images = setup
    run(cfg, backbone, images)
    # a setting that changes patches: every entry misses
    clahe = cfg.copy()
    with open_dict(clahe):
        clahe.preprocess.equalize.method = "clahe"
    assert run(clahe, backbone, images)[0]["extracted"] == 3
    # settings that do not touch the embeddings (training seed, split, head): all hit
    other = cfg.copy()
    with open_dict(other):
        other.seed, other.split.kind, other.model.module.lr = 7, "image", 0.5
    assert run(other, backbone, images)[0]["from_cache"] == 3
    # one image file changed: only that one misses
    edited = [tmp_path / p.name for p in images]
    for src, dst in zip(images, edited, strict=True):
        shutil.copy(src, dst)
    import cv2

    pixels = cv2.imread(str(edited[0]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(edited[0]), 255 - pixels)
    stats = run(cfg, backbone, edited)[0]
    assert (stats["extracted"], stats["from_cache"]) == (1, 2)


def test_cached_features_equal_fresh_features(setup):
    cfg, backbone, images = setup
    _, cache, refs = run(cfg, backbone, images)
    spec = patch_spec(cfg.preprocess, backbone)
    sampler = PatchSampler(spec, backbone.mean, backbone.std)
    image, box = preprocess_image(images[0], cfg.preprocess)
    params = sampler.params(*image.shape, refs[0].sha)
    fmt = torch.channels_last if backbone.channels_last else torch.contiguous_format
    model = backbone.model.to(memory_format=fmt)
    with torch.inference_mode():
        fresh = torch.cat([model(c.contiguous(memory_format=fmt)) for c in
                           sampler.cut(image, params).split(cfg.features.batch_size)])
    entry = cache.load(refs[0].sha)
    np.testing.assert_array_equal(entry.params, params)
    np.testing.assert_allclose(entry.embeddings, fresh.numpy(), rtol=0, atol=1e-6)
    assert list(entry.crop) == [box.top, box.bottom, box.left, box.right]


def test_sweep_runs_share_the_cache(make_cfg, tmp_path):
    """Two experiments on the same images: the second extracts nothing."""
    from sinterlab.study.datamodule import SEMDataModule

    cache_dir = tmp_path / "sweep_cache"
    first = SEMDataModule(make_cfg(f"features.cache_dir={cache_dir}", "data.classes=[50,250]"))
    first.setup()
    second = SEMDataModule(make_cfg(f"features.cache_dir={cache_dir}", "seed=3",
                                    "split=image"))
    second.setup()
    table = pd.DataFrame([first.cache_stats, second.cache_stats])
    assert table["extracted"].tolist() == [first.cache_stats.images,
                                           second.cache_stats.images -
                                           first.cache_stats.images]


@pytest.mark.parametrize("spoil, said", [
    (lambda a: a | {"embeddings": a["embeddings"][:, :-1]}, "the backbone's are"),
    (lambda a: a | {"embeddings": np.where(np.eye(*a["embeddings"].shape, dtype=bool), np.nan,
                                           a["embeddings"])}, "NaN or infinite embeddings"),
    (lambda a: a | {"params": np.full_like(a["params"], np.inf)}, "NaN or infinite params")])
def test_a_readable_but_wrong_entry_is_moved_aside_and_extracted_again(setup, caplog, spoil,
                                                                        said):
    """Another backbone's width, NaN or infinite values: not used (they would end in a
    concatenate or scikit-learn traceback), set aside like an unreadable entry, extracted."""
    cfg, backbone, images = setup
    first = embed_images(images[:2], cfg.preprocess, backbone, cfg.features, progress=False)
    entry = first.cache.path(first.refs[0].key)
    with np.load(entry) as data:
        arrays = spoil(dict(data))
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)
    again = embed_images(images[:2], cfg.preprocess, backbone, cfg.features, progress=False)
    assert (again.stats["extracted"], again.stats["from_cache"]) == (1, 1)
    np.testing.assert_array_equal(again.entries[0].embeddings, first.entries[0].embeddings)
    assert len(list((first.cache.folder / "corrupt").glob("*.npz"))) == 1
    assert "wrong cache entry" in caplog.text and said in caplog.text


def test_what_makes_an_embedding_entry_wrong(tmp_path):
    cache = EmbeddingCache(tmp_path, "m", "0" * 64, {"x": 1}, embedding_dim=8)
    right = CacheEntry(np.zeros((4, 8), np.float32), np.zeros((4, 5)), np.zeros(4, int))
    assert cache.entry_problem(right) is None
    assert "8" in cache.entry_problem(CacheEntry(np.zeros((4, 7), np.float32), right.params,
                                                 right.crop))
    assert "shapes" in cache.entry_problem(CacheEntry(right.embeddings, np.zeros((3, 5)),
                                                      right.crop))
    assert "shapes" in cache.entry_problem(CacheEntry(right.embeddings, right.params,
                                                      np.zeros(3)))
    assert "dtype" in cache.entry_problem(CacheEntry(right.embeddings.astype(str), right.params,
                                                     right.crop))
