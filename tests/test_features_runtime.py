"""Inference runtimes: ONNX Runtime and OpenVINO agree with eager torch, are chosen as configured,
and key the cache apart."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import build_backbone
from sinterlab.features.extract import cache_settings, embed_images, patch_spec
from sinterlab.features.runtime import build_runner, onnx_path, resolve_runtime

#: stated agreement: |runtime - torch| <= TOLERANCE * max|torch| per embedding batch (measured
#: 4e-7 to 1.6e-6 for test_convnext, ConvNeXt-T and EfficientNet-Lite0)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("test_convnext", pretrained=False)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtimes_agree_with_torch(backbone, runtime, tmp_path):
    x = torch.randn(6, 3, 32, 32)
    with torch.inference_mode():
        reference = build_runner("torch", backbone, tmp_path, 32)(x)
        out = build_runner(runtime, backbone, tmp_path, 32)(x)
        single = build_runner(runtime, backbone, tmp_path, 32)(x[:1])  # any batch size
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert float((out - reference).abs().max()) <= TOLERANCE * float(reference.abs().max())
    torch.testing.assert_close(single, out[:1])


def test_the_export_is_made_once_per_weights(backbone, tmp_path):
    path = onnx_path(tmp_path, backbone, 32)
    stamp = path.stat().st_mtime_ns
    assert onnx_path(tmp_path, backbone, 32).stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_auto_picks_openvino_on_a_cpu_and_torch_on_a_gpu():
    assert resolve_runtime("auto", "cpu") == "openvino"
    assert resolve_runtime("auto", "gpu") == "torch"
    assert resolve_runtime("torch", "gpu") == "torch"
    with pytest.raises(SinterlabError, match="runs on the CPU"):
        resolve_runtime("openvino", "gpu")
    with pytest.raises(SinterlabError, match="features.runtime='tensorrt' is unknown"):
        resolve_runtime("tensorrt", "cpu")


def test_runtime_keys_the_cache_and_torch_keeps_its_old_key(make_cfg, backbone, tmp_path,
                                                              tiny_descriptor):
    cfg = make_cfg()
    spec = patch_spec(cfg.preprocess, backbone)
    torch_settings = cache_settings(cfg.preprocess, spec, backbone, "torch")
    assert "runtime" not in torch_settings and torch_settings["channels_last"] is False
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    folders = {}
    for runtime in ("torch", "onnxruntime"):
        features = OmegaConf.merge(cfg.features, {"runtime": runtime,
                                                  "cache_dir": str(tmp_path / "cache")})
        embedded = embed_images(images, cfg.preprocess, backbone, features, progress=False)
        assert embedded.stats["runtime"] == runtime and embedded.stats["extracted"] == 2
        folders[runtime] = embedded.cache.folder
        embeddings = [e.embeddings for e in embedded.entries]
    assert folders["torch"] != folders["onnxruntime"]
    assert all(len(e) == cfg.preprocess.patches.per_image for e in embeddings)
