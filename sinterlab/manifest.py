"""The run manifest (``manifest.json``): what ``sinterlab-predict`` needs to serve a finished run.

``metrics.json`` holds a run's results; the manifest is the small typed contract for applying
the run to new micrographs: which checkpoint, under which name, on which backbone weights and
feature runtime, with which inputs, targets and calibration. It carries a schema version: a
manifest newer than this code is refused with the fix, and a missing field is one line naming
the file and the field. A run folder without a manifest is served from its metrics.json through
:meth:`RunManifest.from_metrics`.

Schema 2 adds ``files``: every file of the run folder that predict reads (the configuration,
the served checkpoint, its image calibration), each with what it holds and its sha256. A missing,
cut short or changed one is refused in one line naming the file and what it held
(:meth:`RunManifest.verify`), never served around. Runs of schema 1, and run folders without a
manifest, record no files: they are served as before (an absent image calibration is an older
run's, and named so in the predictions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import pydantic
from typing_extensions import Required, TypedDict

from sinterlab.atomic import write_json
from sinterlab.errors import SinterlabError
from sinterlab.typed import STRICT, from_data

#: the manifest version this code writes (and the newest it reads); 2: ``files``; 3: ``kind``
#: and ``measures``; 4: ``pixel_size_nm``; 5: ``blend``; 6: ``representation``
SCHEMA = 6
#: the manifest's file name in a run folder
MANIFEST = "manifest.json"
#: feature runtime of a metrics.json that records none
DEFAULT_RUNTIME = "torch"
#: head model of a metrics.json that records none
DEFAULT_MODEL = "mlp"
#: the feature runtimes a run may record (features.runtime, resolved)
RUNTIMES = ("torch", "onnxruntime", "openvino")
#: the name of a kind of candidate a run records (:data:`sinterlab.models.kinds.KINDS`): a name
#: only, looked up among the kinds registered in code (an unknown one is refused in one line by
#: :func:`~sinterlab.models.kinds.load_candidate`), so a new kind needs no edit here
KindName = Annotated[str, pydantic.Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
#: the parts of a patch's embedding a model may read (``features.representation``, and each
#: candidate's under ``model.selection.representations``)
REPRESENTATIONS = ("final", "stages", "both")


def inside_run(path: str) -> str:
    """A path relative to the run folder that stays inside it (no absolute path, no ``..``):
    a run folder names its own files, never another place on the reader's disk."""
    parts = PurePosixPath(path.replace("\\", "/"))
    if not path or parts.is_absolute() or ".." in parts.parts or ":" in path:
        raise ValueError("a path inside the run folder (relative, without '..')")
    return path


#: a file of the run folder, relative to it
RunPath = Annotated[str, pydantic.AfterValidator(inside_run)]


@pydantic.with_config(STRICT)
class TargetRecord(TypedDict, total=False):
    """A target as the run recorded it (:meth:`sinterlab.data.descriptor.Target.as_dict`)."""

    name: Required[str]
    kind: Required[Literal["classification", "regression"]]
    unit: str | None
    classes: list[str]
    class_names: list[str]
    ordered: bool
    values: list[float]
    error_unit: str | None


@dataclass(frozen=True)
class BackboneRecord:
    """The backbone the embeddings came from, and the weights (by their tensors' sha256)."""

    __pydantic_config__ = STRICT

    name: str
    weights_source: str
    weights_sha256: str


@dataclass(frozen=True)
class PredictionSets:
    """Split-conformal prediction sets of the first target (classification)."""

    __pydantic_config__ = STRICT

    threshold: float
    confidence: float


@dataclass(frozen=True)
class Interval:
    """Split-conformal interval of the first target (regression): prediction +- half_width."""

    __pydantic_config__ = STRICT

    half_width: float
    confidence: float


@dataclass(frozen=True)
class MeasuresRecord:
    """The microstructure measures a served model reads, as the run computed them."""

    __pydantic_config__ = STRICT

    #: measure columns, in the order the model reads them
    names: tuple[str, ...]
    #: their length unit (µm or px): new images must be measured in the same
    unit: str


@dataclass(frozen=True)
class PixelSizes:
    """The pixel sizes (nm) of the training images whose instrument recorded one."""

    __pydantic_config__ = STRICT
    low: float
    high: float
    #: the run resampled every image to this pixel size (``preprocess.scale.pixel_size_nm``)
    resampled_to: float | None = None


@dataclass(frozen=True)
class RunFile:
    """A file of the run folder that predict reads, as training left it."""

    __pydantic_config__ = STRICT

    #: relative to the run folder
    path: RunPath
    #: what it holds, for the refusal ("the image calibration of the served model")
    holds: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BlendMember:
    """One member of a served weighted ensemble: its checkpoint, kind, name and weight."""

    __pydantic_config__ = STRICT
    checkpoint: RunPath
    kind: KindName
    model: str
    weight: Annotated[float, pydantic.Field(gt=0, le=1)]
    #: the part of the run's patch embedding it reads; None: all of it
    representation: Literal[REPRESENTATIONS] | None = None


@dataclass(frozen=True)
class RunManifest:
    """What predict serves; every field typed and checked on reading (:meth:`from_dict`)."""

    __pydantic_config__ = STRICT
    backbone: BackboneRecord
    #: the served ensemble, relative to the run folder; None: the run saved none
    checkpoint: RunPath | None
    #: the served model's name (a selected point under model=auto, else the head model)
    model: str
    #: True: the model=auto winner refitted on all groups; False: the cross-validation members
    refitted: bool
    #: feature runtime the run's embeddings came from
    runtime: Literal[RUNTIMES]
    #: the crop/equalize/patch settings that keyed the embeddings (None: not recorded)
    preprocess: dict[str, pydantic.JsonValue] | None
    #: descriptor columns the head reads beside the embedding (``data.extra_inputs``)
    extra_inputs: tuple[str, ...]
    #: the run's targets as recorded in metrics.json
    targets: tuple[TargetRecord, ...]
    sets: PredictionSets | None = None
    interval: Interval | None = None
    #: the kind of candidate the checkpoint holds (:data:`sinterlab.models.kinds.KINDS`)
    kind: KindName = "head"
    #: the measures the served model reads; None: it reads none
    measures: MeasuresRecord | None = None
    #: the files predict reads, with their sha256; () for a run of schema 1 or without manifest
    files: tuple[RunFile, ...] = ()
    #: the training images' pixel sizes; None: none known (or a run before schema 4)
    pixel_size_nm: PixelSizes | None = None
    #: a served weighted ensemble's members, heaviest first (the first is ``checkpoint``);
    #: (): one model
    blend: tuple[BlendMember, ...] = ()
    #: the part of the run's patch embedding the served model reads; None: all of it
    representation: Literal[REPRESENTATIONS] | None = None
    schema: int = field(default=SCHEMA)

    @property
    def members(self) -> tuple[BlendMember, ...]:
        """What predict serves: the ensemble's members, or the one model with weight 1."""
        return self.blend or (BlendMember(self.checkpoint, self.kind, self.model, 1.0,
                                          self.representation),)

    def display_name(self, members: int) -> str:
        """The name predictions carry in their ``model`` column."""
        how = "refitted on all groups (model=auto)" if self.refitted else "cross-validation heads"
        return f"{self.model}: mean of {members} {how}"

    def with_files(self, run_dir: Path, holds: dict[str, str]) -> RunManifest:
        """This manifest recording the files ``holds`` names (paths relative to ``run_dir``,
        each with what it holds) as they are now."""
        return replace(self, files=tuple(
            RunFile(path, what, file_sha256(run_dir / path), (run_dir / path).stat().st_size)
            for path, what in holds.items()))

    def recorded(self, path: str | Path) -> bool:
        """Whether the manifest records ``path`` (relative to the run folder)."""
        return any(Path(f.path) == Path(path) for f in self.files)

    def verify(self, run_dir: Path) -> None:
        """Every recorded file is in ``run_dir`` as training left it; else one line naming the
        file and what it held."""
        fix = ("restore the run folder from a copy, or train again; a run is served whole or "
               "not at all")
        for record in self.files:
            path = run_dir / record.path
            if not path.is_file():
                raise SinterlabError(f"{path}: {record.holds} is missing; {fix}")
            size = path.stat().st_size
            found = file_sha256(path)
            if found != record.sha256 and size < record.size:  # cut short, or another file
                raise SinterlabError(f"{path}: {record.holds} is truncated ({size} of "
                                     f"{record.size} bytes) or replaced: its sha256 "
                                     f"{found[:12]} differs from the saved one's "
                                     f"{record.sha256[:12]}; {fix}")
            if found != record.sha256:
                raise SinterlabError(f"{path}: {record.holds} differs from the one the run "
                                     f"saved (sha256 {found[:12]} vs {record.sha256[:12]}): "
                                     f"changed or replaced since; {fix}")

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunManifest:
        path = Path(path)
        return cls.from_dict(_read_json(path), path)

    @classmethod
    def from_dict(cls, data, source: Path, fix: str | None = None) -> RunManifest:
        """The manifest in ``data`` (read from ``source``, named in errors with ``fix``):
        every field of its type, none unknown; an older schema's absent fields take that
        schema's meaning."""
        fix = fix or (f"restore {source.name}, or delete it to serve the run from its "
                      "metrics.json, or train again")
        if not isinstance(data, dict):
            raise SinterlabError(f"{source}: not a JSON object; {fix}")
        if "schema" not in data:
            raise SinterlabError(f"{source}: field 'schema' missing; {fix}")
        schema = data["schema"]
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise SinterlabError(f"{source}: manifest schema {schema!r} is not a version "
                                 f"number; {fix}")
        if schema > SCHEMA:
            raise SinterlabError(f"{source}: manifest schema {schema} is newer than this "
                                 f"sinterlab reads ({SCHEMA}); upgrade sinterlab "
                                 "(pip install -U sinterlab) to serve this run")
        data = dict(data)
        if schema < 2:  # schema 1 recorded no files
            data.setdefault("files", [])
        if schema < 3:  # nor the kind of model (a suffix told it) or the measures read
            checkpoint = data.get("checkpoint")
            data.setdefault("kind", legacy_kind(checkpoint if isinstance(checkpoint, str)
                                                else None))
            data.setdefault("measures", None)
        return from_data(cls, data, source, fix)

    @classmethod
    def from_metrics(cls, metrics: dict, source: Path) -> RunManifest:
        """The manifest of a run from its ``metrics.json`` (``source``, named in errors): how
        training writes it, and how a run folder without manifest.json is served. Under model=auto
        the selected candidate refitted on all groups is served; otherwise the CV heads."""
        fix = "the file is from another tool or was edited; restore it or train again"
        get = _Getter(metrics, source, fix)
        final = get("selection.final", None)
        served = "selection.final" if final else "training"
        get(served)
        if final:  # model=auto: the selected candidate refitted on all groups
            checkpoint = get("selection.final.checkpoint")
            model = get("selection.final.point", None) or get("selection.final.model")
        else:
            checkpoint = get("training.checkpoint", None)
            model = get("training.model", DEFAULT_MODEL)
        inputs = get(f"{served}.inputs", None) or "patch"
        measures = "measures" in str(inputs).split("+")
        sets = get("calibration.sets", None)
        conformal = get("calibration.conformal", None)
        return cls.from_dict({
            "schema": SCHEMA,
            "backbone": {"name": get("backbone.name"),
                         "weights_source": get("backbone.weights.source"),
                         "weights_sha256": get("backbone.weights.sha256")},
            "checkpoint": checkpoint, "model": model, "refitted": bool(final),
            "runtime": get("cache.runtime", DEFAULT_RUNTIME),
            "preprocess": get("preprocess", None),
            "extra_inputs": get("inputs.extra", []),
            "targets": get("targets"),
            "sets": {"threshold": get("calibration.sets.threshold"),
                     "confidence": get("calibration.sets.confidence")} if sets else None,
            "interval": {"half_width": get("calibration.conformal.half_width"),
                         "confidence": get("calibration.conformal.confidence")}
            if conformal else None,
            "kind": get(f"{served}.kind", None) or legacy_kind(checkpoint),
            "measures": {"names": get("measures.measures"), "unit": get("measures.unit")}
            if measures or any("measures" in str(m["model"].get("inputs")).split("+")
                               for m in get(f"{served}.blend", None) or []) else None,
            "blend": [{"checkpoint": m["model"]["checkpoint"], "kind": m["model"]["kind"],
                       "model": m["model"]["point"], "weight": m["weight"],
                       "representation": m["model"].get("representation")}
                      for m in get(f"{served}.blend", None) or []],
            "representation": get(f"{served}.representation", None),
            "files": []}, source, fix)


def legacy_kind(checkpoint: str | None) -> str:
    """The kind of a run from before schema 3, which knew two: an affine scikit-learn model
    (``.npz``) or a head."""
    return "affine" if isinstance(checkpoint, str) and checkpoint.endswith(".npz") else "head"


_REQUIRED = object()


class _Getter:
    """``get("a.b.c")``: the nested value (a number indexes a list), or one-line error naming
    the file and the field (a ``default`` is returned instead when any part of the path is
    absent or null)."""

    def __init__(self, data, source: Path, fix: str):
        self.data, self.source, self.fix = data, source, fix

    def __call__(self, dotted: str, default=_REQUIRED):
        value = self.data
        for depth, key in enumerate(dotted.split(".")):
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]  # "files.0.path": the first file's path
                continue
            if not isinstance(value, dict):
                where = ".".join(dotted.split(".")[:depth]) or "the top level"
                if value is None and default is not _REQUIRED:
                    return default
                raise SinterlabError(f"{self.source}: '{where}' is not a mapping (field "
                                     f"'{dotted}' unreadable); {self.fix}")
            if key not in value:
                if default is not _REQUIRED:
                    return default
                raise SinterlabError(f"{self.source}: field '{dotted}' missing; {self.fix}")
            value = value[key]
        return value


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = " ".join(str(err).split())[:120]
        raise SinterlabError(f"{path}: unreadable ({type(err).__name__}: {reason}); restore "
                             "it or train again") from None


def read_manifest(run_dir: Path) -> RunManifest:
    """The run's manifest.json, or in a run folder without one, the manifest of its
    metrics.json."""
    path = run_dir / MANIFEST
    if path.is_file():
        return RunManifest.read(path)
    metrics = run_dir / "metrics.json"
    return RunManifest.from_metrics(_read_json(metrics), metrics)
