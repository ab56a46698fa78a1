"""What ``sinterlab-predict`` and ``sinterlab-explain`` read of a finished run's ``config.yaml``:
the preprocessing, the backbone, the extraction's precision and the measures' segmentation, as
typed records of names and numbers.

A run folder is data. Its configuration is read with a YAML loader that builds plain values
only (no tags, no interpolation is ever resolved), every field it holds in those blocks is of
its type (unknown ones refused by name) and within the range a command line would allow
(:mod:`sinterlab.config_schema`), and the backbone is built from a closed table: a timm model
name, the offline weights packages sinterlab knows, a weights file that the run's recorded
sha256 must match. Nothing is instantiated, imported or unpickled from what the folder says;
the places predict writes to (its caches) are the user's configuration's, never the run's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import yaml
from omegaconf import DictConfig, OmegaConf

from sinterlab.config_schema import MEASURES, PREPROCESS, check_config
from sinterlab.data.crop import MODES
from sinterlab.data.equalize import METHODS as EQUALIZE_METHODS
from sinterlab.data.patches import DIHEDRAL
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import TARGET
from sinterlab.features.representation import ALL_STAGES, KINDS, STATISTICS
from sinterlab.features.runtime import RUNTIMES
from sinterlab.features.weights import PACKAGES
from sinterlab.measures.microstructure import MEASURES as MEASURE_SWITCHES
from sinterlab.measures.microstructure import METHODS as SEGMENTATION_METHODS
from sinterlab.typed import STRICT, from_data


def plain_text(text: str) -> str:
    """Text that OmegaConf would read as itself: no ``${...}`` interpolation."""
    if "${" in text:
        raise ValueError("plain text (no ${...} interpolation)")
    return text


#: a number as written (an integer stays one: the embedding cache keys on the settings' text)
Number = int | float
#: free text of a run's configuration
Text = Annotated[str, pydantic.AfterValidator(plain_text)]
#: a timm model name (with its pretrained tag), or a layer's dotted name
DottedName = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9_][\w.\-]*$")]


@dataclass(frozen=True)
class BackboneSpec:
    """``backbone``: what :func:`sinterlab.features.backbone.build_backbone` takes."""

    __pydantic_config__ = STRICT
    name: DottedName
    pretrained: bool
    checkpoint_path: Text | None = None
    package: Literal[tuple(PACKAGES)] | None = None  # type: ignore[valid-type]
    channels_last: bool | None = None
    cam_layer: DottedName | None = None


@dataclass(frozen=True)
class ReadSpec:
    __pydantic_config__ = STRICT
    percentiles: tuple[Number, Number] = (0.0, 100.0)


@dataclass(frozen=True)
class AutoCropSpec:
    __pydantic_config__ = STRICT
    search_fraction: Number
    flat_fraction: Number
    tolerance: Number
    min_height: int


@dataclass(frozen=True)
class CropSpec:
    __pydantic_config__ = STRICT
    mode: Literal[MODES]  # type: ignore[valid-type]
    top: Number
    bottom: Number
    left: Number
    right: Number
    auto: AutoCropSpec


@dataclass(frozen=True)
class EqualizeSpec:
    __pydantic_config__ = STRICT
    method: Literal[EQUALIZE_METHODS]  # type: ignore[valid-type]
    clahe_clip_limit: Number
    clahe_tile_grid: tuple[int, int]


@dataclass(frozen=True)
class PatchesSpec:
    __pydantic_config__ = STRICT
    per_image: int
    size: int
    output_size: int | None
    hflip: bool
    rotation: Number | Literal[DIHEDRAL]  # type: ignore[valid-type]
    seed: int
    size_um: Number | None = None


@dataclass(frozen=True)
class ChecksSpec:
    __pydantic_config__ = STRICT
    blank_range: Number
    saturated_fraction: Number


@dataclass(frozen=True)
class ScaleSpec:
    __pydantic_config__ = STRICT
    pixel_size_nm: Number | None = None
    outlier_factor: Number | None = None


@dataclass(frozen=True)
class PreprocessSpec:
    """``preprocess``: how the run cut its micrographs into patches."""

    __pydantic_config__ = STRICT
    crop: CropSpec
    equalize: EqualizeSpec
    patches: PatchesSpec
    read: ReadSpec = ReadSpec()
    checks: ChecksSpec | None = None
    scale: ScaleSpec = ScaleSpec()


@dataclass(frozen=True)
class FeaturesSpec:
    """``features``: of the run's extraction settings, predict takes those that change the
    embeddings (``precision``, the representation, and ``channels_last`` of older runs); batch
    size, devices and the cache folder are the user's (predict's own ``features``). A run from
    before representations existed read the final embedding."""

    __pydantic_config__ = STRICT
    precision: int | Text
    runtime: Literal[RUNTIMES]  # type: ignore[valid-type]
    batch_size: int | None = None
    num_workers: int | None = None
    cache_dir: Text | None = None
    accelerator: Text | None = None
    devices: int | Text | list[int] | None = None
    strategy: Text | None = None
    wait_poll_s: Number | None = None
    channels_last: bool | None = None
    representation: Literal[KINDS] = "final"  # type: ignore[valid-type]
    stages: Literal[ALL_STAGES] | tuple[int, ...] = ALL_STAGES  # type: ignore[valid-type]
    statistics: tuple[Literal[tuple(STATISTICS)], ...] = ("mean", "std")  # type: ignore


@dataclass(frozen=True)
class SegmentationSpec:
    __pydantic_config__ = STRICT
    method: Literal[SEGMENTATION_METHODS]  # type: ignore[valid-type]
    classes: int
    equalized: bool
    block_size: int
    smooth_sigma: Number
    min_size: int


@dataclass(frozen=True)
class MeasuresSpec:
    """``measures``: how the run segmented its micrographs (the cache folder is the user's)."""

    __pydantic_config__ = STRICT
    enabled: bool
    segmentation: SegmentationSpec
    measures: tuple[Literal[tuple(MEASURE_SWITCHES)], ...]  # type: ignore[valid-type]
    cache_dir: Text | None = None
    overlays: int = 0
    baseline_c: Number = 1.0


@dataclass(frozen=True)
class RunConfig:
    """The blocks of a run's ``config.yaml`` that predict and explain read."""

    __pydantic_config__ = STRICT
    backbone: BackboneSpec
    preprocess: PreprocessSpec
    features: FeaturesSpec
    measures: MeasuresSpec | None = None

    def block(self, name: str) -> DictConfig:
        """One block as a read-only DictConfig of plain values, for the code that reads
        configs (it holds no interpolation: :func:`plain_text`)."""
        value = getattr(self, name)
        cfg = OmegaConf.create(asdict(value) if value is not None else {})
        OmegaConf.set_readonly(cfg, True)
        return cfg


#: the top-level blocks of config.yaml that :class:`RunConfig` reads (the rest are not read)
BLOCKS = ("backbone", "preprocess", "features", "measures")


def read_run_config(path: Path) -> RunConfig:
    """``path`` (a run's config.yaml) as a :class:`RunConfig`; the first wrong field is one line
    naming the file, the field and the fix."""
    fix = "restore the run folder from a copy, or train again"
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader
                         if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())[:120]
        raise SinterlabError(f"{path}: unreadable ({type(err).__name__}: {reason}); "
                             f"{fix}") from None
    if not isinstance(data, dict):
        raise SinterlabError(f"{path}: not a mapping of settings; {fix}")
    blocks = {name: data.get(name) for name in BLOCKS if data.get(name) is not None}
    backbone = blocks.get("backbone")
    if isinstance(backbone, dict):
        target = backbone.get("_target_", TARGET)
        if target != TARGET:
            raise SinterlabError(f"{path}: field 'backbone._target_' is {str(target)[:60]!r}, "
                                 f"not {TARGET}: a finished run's backbone is a timm model "
                                 f"built by sinterlab, never an object the file names; {fix}")
        blocks["backbone"] = {k: v for k, v in backbone.items() if k != "_target_"}
    config = from_data(RunConfig, blocks, path, fix)
    try:  # the ranges a command line would be held to
        check_config(OmegaConf.create({"preprocess": asdict(config.preprocess)}), PREPROCESS)
        if config.measures is not None:
            check_config(OmegaConf.create({"measures": asdict(config.measures)}), MEASURES)
    except SinterlabError as err:
        raise SinterlabError(f"{path}: {err}") from None
    return config
