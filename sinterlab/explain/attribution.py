"""Grad-CAM inside a patch, through the frozen backbone and the head (captum's LayerGradCam).

captum (BSD, maintained with PyTorch) over pytorch-grad-cam (which pulls opencv-python beside
our opencv-python-headless, two cv2 in one environment) and torchcam (fewer users): it takes any
module as the layer and any differentiable function as the model, so the head ensemble and its
temperatures sit in the same graph as the backbone. The layer is named per backbone
(``backbone.cam_layer``: ConvNeXt's last stage, EfficientNet's last 1x1 convolution block).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from sinterlab.data.patches import GridSampler  # noqa: E402
from sinterlab.errors import SinterlabError  # noqa: E402
from sinterlab.evaluation.figures import save_figure  # noqa: E402
from sinterlab.explain.maps import ImageMap  # noqa: E402
from sinterlab.features.extract import patch_spec  # noqa: E402
from sinterlab.predict import RunModel  # noqa: E402


class PatchOutput(nn.Module):
    """Patch tensors -> the model's output: mean temperature-scaled class probabilities of the
    chosen members (N, C), or their mean (standardised for heads) value (N, 1), through the
    network of the run's representation (final embedding or stage statistics)."""

    def __init__(self, model: RunModel, members: slice = slice(None)):
        super().__init__()
        self.backbone = model.representation.network(model.backbone)
        self.members, self.parts = members, model.patch_parts(gradients=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return sum(part.weight * part.head.member_outputs(part.reads(features))[
            self.members].mean(dim=0) for part in self.parts)


def cam_layer_name(model: RunModel) -> str | None:
    """``backbone.cam_layer``, or for runs without it the last feature block of the common
    timm families (ConvNeXt/ResNet-like stages, EfficientNet's bn2, ResNet's layer4). A head
    on stage statistics alone reads no layer past its deepest stage (they are not run): there,
    that stage's module (its ``feature_info``)."""
    net, representation = model.backbone.model, model.representation
    if representation.kind == "stages":
        return net.feature_info[representation.stage_indices(model.backbone)[-1]]["module"]
    if model.backbone.cam_layer:
        return model.backbone.cam_layer
    if hasattr(net, "stages"):
        return f"stages.{len(net.stages) - 1}"
    return next((name for name in ("bn2", "layer4") if hasattr(net, name)), None)


def cam_layer(model: RunModel) -> nn.Module:
    name = cam_layer_name(model)
    try:
        return model.backbone.model.get_submodule(name)
    except (AttributeError, TypeError) as err:
        raise SinterlabError(f"backbone.cam_layer={name!r} is not a module of "
                             f"{model.backbone.name}; name one of its layers (e.g. "
                             "stages.3 for ConvNeXt, bn2 for EfficientNet)") from err


def grad_cam(model: RunModel, patches: torch.Tensor, targets: list[int],
             members: slice = slice(None)) -> np.ndarray:
    """(N, H, W) Grad-CAM of each patch for its target class (index 0 for regression),
    upsampled to the patch and scaled to [0, 1] per patch. captum is imported here: a run
    imports this module for its gallery, which draws no Grad-CAM."""
    from captum.attr import LayerAttribution, LayerGradCam

    net = PatchOutput(model, members).eval()
    with torch.enable_grad():
        x = patches.clone().requires_grad_(True)
        attribution = LayerGradCam(net, cam_layer(model)).attribute(
            x, target=targets, relu_attributions=True)
    maps = LayerAttribution.interpolate(attribution.detach(), tuple(x.shape[-2:]),
                                        interpolate_mode="bilinear")[:, 0].numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1), 0.0)


def strongest_patches(m: ImageMap, target: dict, count: int) -> tuple[np.ndarray, list[int]]:
    """Indices of the ``count`` grid patches that speak most for the image's prediction (the
    highest probability of its class; for regression, the highest values) and their targets."""
    if target["kind"] == "classification":
        choice = int(m.outputs.mean(axis=0).argmax())
        order = np.argsort(-m.outputs[:, choice])[:count]
        return order, [choice] * len(order)
    order = np.argsort(-m.outputs)[:count]
    return order, [0] * len(order)


def draw_cam(model: RunModel, m: ImageMap, target: dict, count: int, path,
             members: slice = slice(None), dpi: int = 110) -> Path:
    """Grad-CAM of the ``count`` strongest patches of a map: each patch, and its CAM over it."""
    chosen, targets = strongest_patches(m, target, count)
    spec = patch_spec(model.cfg.preprocess, model.backbone, grid_stride=int(m.params[0, 2]))
    sampler = GridSampler(spec, model.backbone.mean, model.backbone.std)
    patches = sampler.cut(m.micrograph, m.params[chosen])
    cams = grad_cam(model, patches, targets, members)
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.3 * len(chosen), 4.8), dpi=dpi,
                             squeeze=False)
    for j, index in enumerate(chosen):
        x0, y0, side = (int(v) for v in m.params[index, :3])
        crop = m.micrograph[y0:y0 + side, x0:x0 + side]
        value = (f"p={m.outputs[index, targets[j]]:.2f}" if target["kind"] == "classification"
                 else f"{m.outputs[index]:.3g}")
        axes[0, j].imshow(crop, cmap="gray", vmin=0, vmax=255)
        axes[0, j].set_title(f"({x0}, {y0}) {value}", fontsize=8)
        axes[1, j].imshow(crop, cmap="gray", vmin=0, vmax=255,
                          extent=(0, cams.shape[2], cams.shape[1], 0))
        axes[1, j].imshow(cams[j], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for ax in axes[:, j]:
            ax.set_axis_off()
    what = (target["class_names"][targets[0]] if target["kind"] == "classification"
            else target["name"])
    fig.suptitle(f"{Path(m.path).name}: Grad-CAM for {what} (layer {cam_layer_name(model)})",
                 fontsize=9)
    return save_figure(fig, path, dpi)
