"""Apply a finished run to new micrographs: same preprocessing, backbone and served model.

Every member of the run predicts every patch (under cross-validation: folds x seeds, each
trained without one fold; with ``model=auto``: the selected candidate refitted on all groups).
Any kind of candidate is loaded and served through the same contract
(:class:`~sinterlab.models.candidate.Candidate`, its kind recorded in the manifest); an image
model gives each image its output on the image's mean embedding, and a model that reads the
images' microstructure measures gets them measured with the run's preprocessing and
segmentation settings (cached like the run's).
Classification: each member's patch probabilities are pooled per image and calibrated at that
level (:class:`~sinterlab.models.calibration.ImageCalibration`, fitted on the member's validation
images), then averaged over the members: prediction, confidence = its calibrated probability,
agreement = share of patches voting for it, and which calibration served it (a run folder
without image calibration, and scikit-learn candidates: the mean of their patch probabilities,
named as such). Regression: the members' mean prediction, the patches' standard deviation and
the run's split-conformal interval.

Whether a run is an older one is the manifest's to say: where it records the files predict
reads (schema 2), a missing or changed one (the checkpoint, its image calibration) stops
predict in one line, and nothing is served in its place.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from omegaconf import DictConfig, OmegaConf

from sinterlab.data.descriptor import (
    IMAGE,
    ROW,
    backslash_hint,
    blank,
    extra_input_matrix,
    read_table,
)
from sinterlab.data.groups import group_means
from sinterlab.data.images import image_warnings
from sinterlab.data.metadata import FIELDS, PROBLEM, read_metadata
from sinterlab.data.preprocess import read_and_locate as read_with_crop_box
from sinterlab.errors import SinterlabError
from sinterlab.evaluation.metrics import expected_value
from sinterlab.evaluation.reliability import prediction_sets, set_label
from sinterlab.evaluation.results import SCHEMA as METRICS_SCHEMA
from sinterlab.features.backbone import Backbone, build_backbone
from sinterlab.features.extract import Embedded, embed_images
from sinterlab.features.representation import REPRESENTATION_KEYS, Representation
from sinterlab.manifest import BlendMember, RunManifest, read_manifest
from sinterlab.measures.compute import image_measures
from sinterlab.models.calibration import ImageCalibration, load_image_calibration
from sinterlab.models.candidate import Candidate, raw_members
from sinterlab.models.estimators import UntrustedModel
from sinterlab.models.kinds import load_candidate
from sinterlab.run_config import RunConfig, read_run_config
from sinterlab.runs import failure
from sinterlab.typed import STRICT_IGNORING_REST, from_json

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path) -> tuple[Path, RunConfig, RunManifest]:
    """The finished run's folder, typed configuration and manifest (a run folder without
    manifest.json: the manifest of its metrics.json), every file the manifest records checked
    against its sha256, the metrics' schema one this sinterlab reads."""
    run_dir = Path(run_dir).expanduser().resolve()
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.json"
    reason = failure(run_dir)
    if reason:
        raise SinterlabError(f"{run_dir}: this run failed ({reason}); pass a finished run "
                             "(one with metrics.json)")
    missing = [p.name for p in (config, metrics) if not p.is_file()]
    if missing:
        raise SinterlabError(f"{run_dir}: not a finished sinterlab-train run "
                             f"({' and '.join(missing)} missing); pass "
                             "run=logs/train/runs/<stamp>")
    manifest = read_manifest(run_dir)
    manifest.verify(run_dir)
    check_metrics_schema(metrics)
    return run_dir, read_run_config(config), manifest


@dataclass(frozen=True)
class _MetricsVersion:
    __pydantic_config__ = STRICT_IGNORING_REST
    schema: int = 1


def check_metrics_schema(path: Path) -> None:
    """``metrics.json``'s schema is a version number this sinterlab reads (one line if not)."""
    try:
        text = path.read_bytes()
    except OSError as err:
        raise SinterlabError(f"{path}: unreadable ({err.strerror}); restore it or train "
                             "again") from None
    schema = from_json(_MetricsVersion, text, path, "restore it or train again").schema
    if not 1 <= schema <= METRICS_SCHEMA:
        raise SinterlabError(f"{path}: metrics schema {schema} is not one this sinterlab "
                             f"reads (1 to {METRICS_SCHEMA}); upgrade sinterlab, or pass a run "
                             "it trained")


def load_model(path: Path, kind: str) -> Candidate:
    """The run's model of ``kind`` (a head ensemble, an affine or any scikit-learn model) at
    ``path``; a missing, damaged or untrusted checkpoint is a one-line error."""
    if not path.is_file():
        raise SinterlabError(f"{path}: checkpoint missing; the run did not finish saving it or "
                             "the file was moved; restore it or train again")
    try:  # tensors, arrays and trusted types only: a checkpoint from elsewhere runs no code
        return load_candidate(path, kind)
    except UntrustedModel as err:
        raise SinterlabError(f"{path}: checkpoint refused: {err}, which could run code when "
                             "loaded; use checkpoints written by sinterlab-train, or train "
                             "again") from None
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise SinterlabError(f"{path}: checkpoint unreadable (UnpicklingError); the file is "
                                 "truncated or damaged; restore it or train again") from None
        found = re.search(r"(GLOBAL [\w.]+)|(Unsupported operand \d+)", str(err))
        what = next(g for g in found.groups() if g) if found else "an object of unknown type"
        raise SinterlabError(f"{path}: checkpoint refused: it holds pickled Python objects "
                             f"besides tensors ({what}), which could run code when loaded; "
                             "use checkpoints written by sinterlab-train, or train again"
                             ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split())[:120]
        raise SinterlabError(f"{path}: checkpoint unreadable ({type(err).__name__}: {reason}); "
                             "the file is truncated or damaged; restore it or train "
                             "again") from None


def output_path(out: str | None, default: Path, overwrite: bool) -> Path:
    """Where a command writes: ``out``, or ``default`` (a new stamped name). An ``out`` that
    exists already is refused unless ``overwrite``: an earlier command's results are never
    replaced without a word."""
    if not out:
        return default
    path = Path(out).expanduser()
    if path.exists() and not overwrite:
        raise SinterlabError(f"{path}: exists already (an earlier command's output); give "
                             "another out=, or overwrite=true to replace it")
    return path


def collect_images(images, descriptor, suffixes) -> list[Path]:
    """Paths from a list of files, a folder (its files with an image suffix; subfolders are
    skipped with a note), or a descriptor CSV's `image` column. Paths that name no file are
    kept: :func:`missing_images` gives each its reason, so one typo costs one row."""
    if descriptor:
        csv = Path(descriptor).expanduser().resolve()
        if not csv.is_file():
            raise SinterlabError(f"{csv}: descriptor not found; give descriptor=PATH")
        table = read_table(csv)
        if IMAGE not in table.columns:
            raise SinterlabError(f"{csv}: no 'image' column; list image paths relative to the "
                                 "CSV's folder in a column named image")
        empty = blank(table[IMAGE])
        if empty.any():
            raise SinterlabError(f"{csv}:{int(empty.idxmax()) + 2}: empty 'image' cell; give "
                                 "the image path (relative to the CSV's folder) or remove the "
                                 "row")
        paths = [csv.parent / p for p in table[IMAGE].astype(str)]
    elif isinstance(images, str) and Path(images).expanduser().is_dir():
        folder = Path(images).expanduser()
        entries = sorted(folder.iterdir())
        folders = [p.name for p in entries if p.is_dir()]
        if folders:
            log.warning("%s: %d subfolder(s) skipped (%s); images=FOLDER reads the folder's "
                        "own files only", folder, len(folders), ", ".join(folders[:5]))
        paths = [p for p in entries if p.is_file() and p.suffix.lower() in set(suffixes)]
        if not paths:
            raise SinterlabError(f"{folder}: no images with suffixes {list(suffixes)}")
    elif images:
        paths = [Path(p) for p in ([images] if isinstance(images, str) else images)]
    else:
        raise SinterlabError("nothing to predict: give images=[a.tif,b.tif], images=FOLDER or "
                             "descriptor=CSV")
    return list(dict.fromkeys(p.expanduser().resolve() for p in paths))  # each image once


def missing_images(paths: list[Path]) -> dict[str, str]:
    """{path: reason} for every path that is no readable file (absent, or a folder)."""
    out = {}
    for p in paths:
        if p.is_dir():
            out[str(p)] = "is a folder, not an image; list the images in it (or images=FOLDER)"
        elif not p.is_file():
            out[str(p)] = "image not found; check the path" + backslash_hint(str(p))
    return out


def check_same(name: str, requested, used, free: tuple[str, ...] = ()) -> None:
    """Refuse a requested backbone/preprocessing that differs from what the head was trained
    on (the keys ``free`` may differ: where a file lies on this machine)."""
    if requested is None:
        return
    requested = OmegaConf.to_container(OmegaConf.create(requested), resolve=True)
    requested = {k: v for k, v in requested.items() if k not in ("_target_", *free)}
    used = OmegaConf.to_container(used, resolve=True)
    merged = OmegaConf.to_container(OmegaConf.merge(used, requested))
    if merged != used:
        changed = sorted(k for k in merged if merged[k] != used.get(k))
        raise SinterlabError(f"{name} differs from the run's ({changed}): the head was trained "
                             f"on other features; retrain with these settings or drop {name}=")


@dataclass(frozen=True)
class ServedPart:
    """One model predict serves (of a weighted ensemble, a member): its weight, its ensemble of
    heads or scikit-learn model, and per target its image calibration (None: the run folder
    has none)."""

    weight: float
    head: Candidate
    images: list[ImageCalibration | None] | None
    name: str
    #: the columns of the run's patch embedding it reads (``representation``), and the
    #: embedding's width (columns past it are ``extra_inputs``); None: all of them
    view: np.ndarray | None = None
    embedding_width: int = 0

    def reads(self, x):
        """Its input from patch rows ``x`` (embedding, then any extra inputs; a tensor or an
        array)."""
        if self.view is None:
            return x
        return x[:, np.concatenate([self.view, np.arange(self.embedding_width, x.shape[1])])]


@dataclass
class RunModel:
    """What a finished run applies to new micrographs: its preprocessing, backbone (with the
    weights it was trained on), head ensemble and extraction settings, and its manifest."""

    run_dir: Path
    cfg: DictConfig
    manifest: RunManifest
    backbone: Backbone
    head: Candidate
    features: DictConfig
    #: per target, the image calibration of the members; None: the run folder has none
    images: list[ImageCalibration | None] | None = None
    #: the run's measures settings (cache folder: the run's or predict's ``measures``); None:
    #: the served model reads no measures
    measures: DictConfig | None = None
    #: what is served: the model above alone, or a weighted ensemble's members (``head`` and
    #: ``images`` above are its heaviest member's: maps and Grad-CAM draw that one)
    parts: tuple[ServedPart, ...] = ()

    def __post_init__(self):
        if not self.parts:
            self.parts = (ServedPart(1.0, self.head, self.images, self.manifest.model),)

    @property
    def extra_inputs(self) -> list[str]:
        """The run's ``data.extra_inputs``: descriptor columns the head reads beside the
        embedding."""
        return list(self.manifest.extra_inputs)

    def patch_parts(self, gradients: bool = False) -> list[ServedPart]:
        """The served models that read patches alone (not the images' measures; with
        ``gradients``, only those Grad-CAM can pass through), weights renormalised: what a map
        of a weighted ensemble shows."""
        parts = [p for p in self.parts if not p.head.reads_measures
                 and (p.head.gradients or not gradients)]
        total = sum(p.weight for p in parts)
        return [replace(p, weight=p.weight / total) for p in parts]

    @property
    def representation(self) -> Representation:
        """What the head reads of each patch (the run's ``features.representation``)."""
        return Representation.from_config(self.features)

    @property
    def model_name(self) -> str:
        if len(self.parts) > 1:
            return (f"{self.manifest.model}: weighted mean of {len(self.parts)} models refitted "
                    "on all groups (model=auto)")
        return self.manifest.display_name(self.head.members)


def run_backbone(run_dir: Path, config: RunConfig, requested) -> Backbone:
    """The run's backbone, built from its typed record (a timm model name, the weights source
    sinterlab knows), never from a name the folder gives for Python to import. ``requested``
    (predict's ``backbone``) must equal it, except ``checkpoint_path``: where the weights file
    lies on this machine (its tensors must hash to the run's)."""
    spec = config.backbone
    used = config.block("backbone")
    check_same("backbone", requested, used, free=("checkpoint_path",))
    if not timm.is_model(spec.name):
        raise SinterlabError(f"{run_dir / 'config.yaml'}: backbone.name={spec.name!r} is no "
                             f"timm model this timm {timm.__version__} knows; install the "
                             "timm the run used, or train again")
    checkpoint = (requested or {}).get("checkpoint_path") or spec.checkpoint_path
    # an older run config sets the memory format in features
    channels_last = spec.channels_last if spec.channels_last is not None else bool(
        config.features.channels_last)
    return build_backbone(spec.name, spec.pretrained, checkpoint, spec.package, channels_last,
                          spec.cam_layer)


def load_run_model(cfg: DictConfig, checkpoint: str | None = None) -> RunModel:
    """The run ``cfg.run`` ready to apply; ``cfg.backbone`` / ``cfg.preprocess``, when given,
    must equal the run's. ``checkpoint`` (relative to the run): another of its ensembles.
    Extraction runs with ``cfg.features`` (its caches, devices and batch size: a run folder
    decides nothing of where predict writes), in the run's runtime and precision unless
    ``cfg.features`` names them."""
    run_dir, config, manifest = load_run(cfg.run)
    run_cfg = OmegaConf.create({name: OmegaConf.to_container(config.block(name))
                                for name in ("preprocess", "measures")
                                if getattr(config, name) is not None})
    OmegaConf.set_readonly(run_cfg, True)
    check_same("preprocess", cfg.get("preprocess"), run_cfg.preprocess)
    backbone = run_backbone(run_dir, config, cfg.get("backbone"))
    recorded = manifest.backbone.weights_sha256
    if backbone.weights.sha256 != recorded:
        raise SinterlabError(f"{run_dir}: backbone weights differ from the run's (sha256 "
                             f"{backbone.weights.sha256[:12]} vs {recorded[:12]}); restore the "
                             "weights the run used (backbone.checkpoint_path=FILE) or retrain")
    if not manifest.checkpoint:
        raise SinterlabError(f"{run_dir}: the run saved no checkpoint (no validation ran); "
                             "train with trainer.max_epochs >= trainer.check_val_every_n_epoch")
    members = manifest.members
    if checkpoint:  # one model alone: a member's kind and representation are its own
        member = next((m for m in members if m.checkpoint == checkpoint), members[0])
        members = (replace(member, checkpoint=checkpoint, model=manifest.model, weight=1.0),)
    features = extraction_settings(cfg.get("features"), config, manifest)
    representation = Representation.from_config(features)
    parts = tuple(served_part(run_dir, manifest, representation, backbone, m) for m in members)
    reads_measures = any(part.head.reads_measures for part in parts)
    return RunModel(run_dir, run_cfg, manifest, backbone, parts[0].head, features,
                    parts[0].images,
                    measures_settings(run_dir, config, cfg.get("measures"))
                    if reads_measures else None, parts)


def served_part(run_dir: Path, manifest: RunManifest, representation: Representation,
                backbone: Backbone, member: BlendMember) -> ServedPart:
    """One served model (``member`` of the manifest), checked against the part of the run's
    patch embeddings it reads (its ``representation`` of the extracted one) and its inputs."""
    head = load_model(run_dir / member.checkpoint, member.kind)
    if head.reads_measures and manifest.measures is None:
        raise SinterlabError(f"{run_dir}: the served model reads the images' measures, which "
                             "the manifest does not name; train again")
    extra = list(manifest.extra_inputs)
    total = representation.width(backbone)
    view = None if member.representation is None else representation.view_columns(
        member.representation, backbone)
    width = total if view is None else len(view)
    if head.in_features != width + len(extra):
        raise SinterlabError(f"{run_dir / member.checkpoint}: head expects {head.in_features} "
                             f"features, backbone gives {width}"
                             + (f" and the extra inputs {extra} {len(extra)}" if extra else ""))
    return ServedPart(member.weight, head, load_image_calibration(run_dir / member.checkpoint),
                      member.model, view, total)


def served_outputs(part: ServedPart, x: torch.Tensor, groups: np.ndarray,
                   measures: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per target of one served model: each patch's output (mean over its members) and each
    image's served output (images in order of first appearance; a classification target
    through the image calibration when the run has one)."""
    head, x = part.head, part.reads(x)
    measures = measures if head.reads_measures else None
    members = head.predict_members(x, images=groups, measures=measures)
    raw = raw_members(head, members, x, images=groups, measures=measures) if part.images \
        else None
    out = []
    for i, (target, member) in enumerate(zip(head.targets, members, strict=True)):
        output = member.mean(axis=0)
        _, mean = group_means(output, groups)
        calibration = part.images[i] if part.images else None
        if target["kind"] == "classification" and calibration is not None:
            mean = calibration.apply(raw[i], groups)[1].mean(axis=0)  # same image order
        out.append((output, mean))
    return out


def calibration_words(model: RunModel, i: int) -> str:
    """How target ``i``'s served image probabilities were calibrated (the ``_calibration``
    column)."""
    def words(part: ServedPart) -> str:
        calibration = part.images[i] if part.images else None
        return calibration.describe() if calibration is not None else (
            "patch temperature (older run): mean of temperature-scaled patch probabilities, "
            "not calibrated per image")

    if len(model.parts) == 1:
        return words(model.parts[0])
    return "weighted ensemble, the mean by weight of its members' served image probabilities: " \
        + "; ".join(f"{part.weight:.2f} x {part.name}: {words(part)}" for part in model.parts)


def extraction_settings(requested, config: RunConfig, manifest: RunManifest) -> DictConfig:
    """predict's own extraction settings (``features``: batch size, devices, cache folder),
    in the runtime the run's embeddings came from and the run's precision unless given, and
    always in the run's representation (the head reads nothing else)."""
    own = OmegaConf.to_container(OmegaConf.create(requested or {}), resolve=True)
    if not own.get("cache_dir"):
        raise SinterlabError("features.cache_dir: predict's embedding cache folder is not set; "
                             "give features.cache_dir=FOLDER (a run folder never decides "
                             "where predict writes)")
    run = config.block("features")
    trained = {key: OmegaConf.to_container(run)[key] for key in REPRESENTATION_KEYS}
    asked = {key: own[key] for key in REPRESENTATION_KEYS if own.get(key) is not None}
    if Representation.from_config(trained | asked) != Representation.from_config(trained):
        key = next(k for k in asked if asked[k] != trained[k])
        raise SinterlabError(f"features.{key}={asked[key]} differs from the run's "
                             f"{trained[key]}: the head reads the embeddings it was trained on; "
                             f"drop features.{key} (predict extracts the run's) or retrain")
    return OmegaConf.create(own | trained | {"runtime": own.get("runtime") or manifest.runtime,
                                             "precision": own.get("precision")
                                             or config.features.precision})


def measures_settings(run_dir: Path, config: RunConfig, requested) -> DictConfig:
    """The run's measures settings with predict's cache folder (``measures``: only
    ``cache_dir`` may be given, and must be: a run folder never decides where predict
    writes)."""
    if config.measures is None:
        raise SinterlabError(f"{run_dir / 'config.yaml'}: the served model reads the images' "
                             "measures, but the configuration has no measures block; train "
                             "again")
    requested = {k: v for k, v in OmegaConf.to_container(
        OmegaConf.create(requested or {}), resolve=True).items() if v is not None}
    other = sorted(set(requested) - {"cache_dir"})
    if other:
        raise SinterlabError(f"measures.{other[0]}: the served model reads the measures as the "
                             "run computed them; only measures.cache_dir may be given")
    if not requested.get("cache_dir"):
        raise SinterlabError("measures.cache_dir: predict's measures cache folder is not set; "
                             "give measures.cache_dir=FOLDER")
    return OmegaConf.merge(config.block("measures"), {"cache_dir": requested["cache_dir"]})


def served_measures(model: RunModel, refs, pixel_sizes: list, counts: list[int]) -> np.ndarray:
    """(N, K): each patch row's image's measures, computed (or read from the cache) with the
    run's preprocessing and segmentation, in the columns and unit the served model read."""
    record = model.manifest.measures
    table, warnings = image_measures(refs, pixel_sizes, model.cfg.preprocess, model.measures)
    for warning in warnings:
        log.warning(warning)
    units = sorted(set(table["length_unit"]))
    if units != [record.unit]:
        raise SinterlabError(f"{model.run_dir}: the served model reads measures in "
                             f"{record.unit}; these images measure in {', '.join(units)} (a "
                             "pixel size is unknown for some); predict images whose pixel size "
                             "the instrument recorded, or use a run trained in the same unit")
    return np.repeat(table[list(record.names)].to_numpy(np.float64), counts, axis=0)


def extra_input_values(model: RunModel, descriptor) -> dict[str, np.ndarray]:
    """{resolved image path: its values of the run's extra inputs}, read from the descriptor
    CSV; a run trained with extra inputs refuses images given without one (one line naming
    the columns and the fix), and the columns are checked as in training."""
    names = model.extra_inputs
    fix = (f"the run {model.run_dir.name} was trained with extra inputs {names}: give "
           f"descriptor=CSV with an 'image' column and the column(s) {names}")
    if not names:
        return {}
    if not descriptor:
        raise SinterlabError(f"images given without their extra inputs {names}; {fix}")
    csv = Path(descriptor).expanduser().resolve()
    table = read_table(csv)
    table[ROW] = table.index + 2
    targets = [t["name"] for t in model.head.targets]
    values = extra_input_matrix(table, csv, names, targets, fix=fix)
    paths = [str((csv.parent / p).expanduser().resolve()) for p in table[IMAGE].astype(str)]
    return dict(zip(paths, values, strict=True))


def image_checks(path: Path, preprocess) -> list[str]:
    """What makes a micrograph suspect (blank or constant, mostly saturated, one page of
    several): the checks training applies, for every image predict serves (cached or not)."""
    try:
        image, box = read_with_crop_box(path, preprocess)
    except SinterlabError:
        return []  # its embedding was made: a read problem is named where it arises
    found = image_warnings(path, box.apply(image), preprocess.get("checks"))
    return [w.removeprefix(f"{path}: ") for w in found]


def scale_checks(pixel_size_nm, manifest: RunManifest, tolerance: float) -> list[str]:
    """A pixel size outside the training images' range (widened by ``tolerance``): the
    features then see another scale of the same microstructure, and the prediction says
    so."""
    known = manifest.pixel_size_nm
    if known is None or pixel_size_nm is None or not np.isfinite(float(pixel_size_nm)):
        return []
    size = float(pixel_size_nm)
    low, high = known.low * (1 - tolerance), known.high * (1 + tolerance)
    if low <= size <= high:
        return []
    factor = max(size / known.high, known.low / size)
    return [f"pixel size {size:.3g} nm outside the run's {low:.3g}-{high:.3g} nm (scale "
            f"differs {factor:.1f}x); the model never saw this scale"]


def predict(cfg: DictConfig, model: RunModel | None = None) -> tuple[pd.DataFrame, Path]:
    """One row per image of ``cfg.images`` / ``cfg.descriptor`` (unreadable ones with their
    reason in ``error``), and the run folder; ``model``: the run, when already loaded."""
    model = model or load_run_model(cfg)
    asked = collect_images(cfg.images, cfg.descriptor, cfg.suffixes)
    extra = extra_input_values(model, cfg.descriptor)  # before any backbone time
    found, metadata, missing = readable_images(asked, cfg.strict)
    embedded, bad = embedded_images(model, found, metadata, missing, cfg.strict)
    paths = [Path(ref.path) for ref in embedded.refs]
    x, counts = patch_inputs(embedded, paths, extra)
    groups = np.repeat([str(p) for p in paths], counts)
    measures = None
    if model.measures is not None:
        measures = served_measures(model, embedded.refs,
                                   [metadata[str(p)]["pixel_size_nm"] for p in paths], counts)
    served = [served_outputs(part, x, groups, measures) for part in model.parts]
    table = pd.DataFrame({"image": [str(p) for p in paths]})
    for i, target in enumerate(model.head.targets):
        target_columns(table, cfg, model, i, target, served, groups)
    image_columns(table, cfg, model, counts, metadata)
    return with_failed_rows(table, bad, asked), model.run_dir


def readable_images(asked: list[Path], strict) -> tuple[list[Path], dict[str, dict],
                                                        dict[str, str]]:
    """The images of ``asked`` that are files with readable metadata, that metadata by path,
    and {path: reason} for the others (absent, a folder, an unreadable sidecar); ``strict``:
    the first of them is refused instead."""
    missing = missing_images(asked)
    if missing and strict:
        first = next(iter(missing))
        raise SinterlabError(f"{first}: {missing[first]}; or leave it out (or strict=false to "
                             "predict the others)")
    found = [p for p in asked if str(p) not in missing]
    metadata = {}
    for path in found:  # per image, so one unreadable sidecar costs one row
        try:
            metadata[str(path)] = read_metadata(path)
        except SinterlabError as err:
            if strict:
                raise
            missing[str(path)] = str(err).split(": ", 1)[-1]
    return [p for p in found if str(p) in metadata], metadata, missing


def embedded_images(model: RunModel, found: list[Path], metadata: dict[str, dict],
                    missing: dict[str, str], strict) -> tuple[Embedded, dict[str, str]]:
    """The patch embeddings of ``found`` as the run extracts them (from predict's cache where
    there), and {path: reason} for every image left out (``missing``, then those the
    extraction could not read; ``strict``: such an image is refused instead); no image
    embedded at all is refused."""
    embedded = embed_images(found, model.cfg.preprocess, model.backbone, model.features,
                            fix="leave it out (or strict=false to predict the others)",
                            skip_bad=not strict,
                            pixel_sizes=[metadata[str(p)]["pixel_size_nm"] for p in found],
                            pixel_problems=[metadata[str(p)][PROBLEM] for p in found]
                            ) if found else None
    bad = missing | (embedded.bad if embedded else {})
    if not embedded or not embedded.refs:
        raise SinterlabError(f"{next(iter(bad))}: {next(iter(bad.values()))}"
                             f"; no image could be predicted ({len(bad)} bad)")
    return embedded, bad


def patch_inputs(embedded: Embedded, paths: list[Path],
                 extra: dict[str, np.ndarray]) -> tuple[torch.Tensor, list[int]]:
    """The served models' patch rows (every image's patch embeddings, then on each patch its
    image's raw ``extra`` input values where the run has any: the head standardises them as
    trained), and each image's patch count."""
    entries = embedded.entries
    x = torch.from_numpy(np.concatenate([e.embeddings for e in entries]))
    counts = [len(e.embeddings) for e in entries]
    if extra:
        values = np.stack([extra[str(p)] for p in paths])
        x = torch.cat([x, torch.from_numpy(np.repeat(values, counts, axis=0)).to(x.dtype)], 1)
    return x, counts


def target_columns(table: pd.DataFrame, cfg: DictConfig, model: RunModel, i: int,
                   target: dict, served: list, groups: np.ndarray) -> None:
    """Target ``i``'s columns, added to ``table`` in place from the ``served`` outputs of the
    run's served models, weighted (``groups``: each patch row's image)."""
    output = sum(part.weight * outputs[i][0] for part, outputs in zip(
        model.parts, served, strict=True))
    mean = sum(part.weight * outputs[i][1] for part, outputs in zip(
        model.parts, served, strict=True))
    if target["kind"] == "classification":
        class_columns(table, model, i, target, output, mean, groups)
        if cfg.get("members") and len(model.parts) > 1:  # each member's answer, on request
            member_columns(table, i, target, served)
    else:
        value_columns(table, model, target, output, mean, groups)


def class_columns(table: pd.DataFrame, model: RunModel, i: int, target: dict,
                  output: np.ndarray, mean: np.ndarray, groups: np.ndarray) -> None:
    """A classification target's columns, in place: the class of the highest served image
    probability (``mean``), that probability (confidence), the share of the image's patches
    (``output``) voting for it (agreement), the run's conformal set (first target), the
    expected level (an ordered target with values) and how it was calibrated."""
    name, classes = target["name"], np.asarray(target["classes"])
    choice = mean.argmax(axis=1)
    votes = output.argmax(axis=1)
    table[name] = classes[choice]
    table[f"{name}_confidence"] = mean.max(axis=1).round(4)
    table[f"{name}_agreement"] = [
        float(np.mean(votes[groups == g] == c)) for g, c in zip(
            table["image"], choice, strict=True)]
    sets = model.manifest.sets
    if sets and i == 0:  # the conformal set of the first target
        ordered = bool(target.get("ordered"))
        members = prediction_sets(mean, sets.threshold, ordered)
        table[f"{name}_set"] = [set_label(m, list(classes), target.get("unit") or "",
                                          ordered) for m in members]
        table["set_confidence"] = sets.confidence
    if target.get("ordered") and target.get("values"):
        table[f"{name}_expected"] = expected_value(
            mean, np.asarray(target["values"])).round(2)
    table[f"{name}_calibration"] = calibration_words(model, i)


def member_columns(table: pd.DataFrame, i: int, target: dict, served: list) -> None:
    """A classification target's answer and confidence by each served model of a weighted
    ensemble (``served``: their outputs), in place."""
    name, classes = target["name"], np.asarray(target["classes"])
    for k, outputs in enumerate(served):
        table[f"{name}_member{k}"] = classes[outputs[i][1].argmax(axis=1)]
        table[f"{name}_member{k}_confidence"] = outputs[i][1].max(axis=1).round(4)


def value_columns(table: pd.DataFrame, model: RunModel, target: dict, output: np.ndarray,
                  mean: np.ndarray, groups: np.ndarray) -> None:
    """A regression target's columns, in place: the served image value (``mean``), the
    standard deviation of its patches' values (``output``) and, for the first target, the
    run's split-conformal interval."""
    name = target["name"]
    table[name] = mean.round(4)
    table[f"{name}_patch_sd"] = [float(np.std(output[groups == g])) for g in table["image"]]
    interval = model.manifest.interval
    if interval and name == model.head.targets[0]["name"]:  # the interval of the first target
        table[f"{name}_low"] = (mean - interval.half_width).round(4)
        table[f"{name}_high"] = (mean + interval.half_width).round(4)
        table["interval_confidence"] = interval.confidence


def image_columns(table: pd.DataFrame, cfg: DictConfig, model: RunModel, counts: list[int],
                  metadata: dict[str, dict]) -> None:
    """Each image's own columns, in place: its patches, the served model, the warnings of its
    checks (logged too), what the instrument recorded (as in images.csv) and an empty
    ``error``."""
    table["patches"] = counts
    table["model"] = model.model_name
    table["warning"] = [
        "; ".join(image_checks(Path(p), model.cfg.preprocess)
                  + scale_checks(metadata[p]["pixel_size_nm"], model.manifest,
                                 float(cfg.checks.pixel_size_tolerance)))
        for p in table["image"]]
    for image, warning in zip(table["image"], table["warning"], strict=True):
        if warning:  # on screen too, cached image or not
            log.warning("%s: %s", image, warning)
    for column in (*FIELDS, PROBLEM):
        table[column] = [metadata[p][column] for p in table["image"]]
    table["error"] = ""


def with_failed_rows(table: pd.DataFrame, bad: dict[str, str],
                     asked: list[Path]) -> pd.DataFrame:
    """``table`` with a row for each missing or unreadable image of ``bad`` (its reason in
    ``error``), every row in the order the images were asked."""
    if not bad:
        return table
    failed = pd.DataFrame({"image": list(bad), "error": list(bad.values())})
    order = {str(p): i for i, p in enumerate(asked)}
    table = pd.concat([table, failed], ignore_index=True)
    table = table.sort_values("image", key=lambda c: c.map(order), kind="stable")
    return table.reset_index(drop=True)
