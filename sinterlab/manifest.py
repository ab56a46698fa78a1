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
from pathlib import Path

from sinterlab.atomic import write_json
from sinterlab.errors import SinterlabError

#: the manifest version this code writes (and the newest it reads); 2: ``files``; 3: ``kind``
#: and ``measures``
SCHEMA = 3
#: the manifest's file name in a run folder
MANIFEST = "manifest.json"
#: feature runtime of a metrics.json that records none
DEFAULT_RUNTIME = "torch"
#: head model of a metrics.json that records none
DEFAULT_MODEL = "mlp"


@dataclass(frozen=True)
class BackboneRecord:
    """The backbone the embeddings came from, and the weights (by their tensors' sha256)."""

    name: str
    weights_source: str
    weights_sha256: str


@dataclass(frozen=True)
class PredictionSets:
    """Split-conformal prediction sets of the first target (classification)."""

    threshold: float
    confidence: float


@dataclass(frozen=True)
class Interval:
    """Split-conformal interval of the first target (regression): prediction +- half_width."""

    half_width: float
    confidence: float


@dataclass(frozen=True)
class MeasuresRecord:
    """The microstructure measures a served model reads, as the run computed them."""

    #: measure columns, in the order the model reads them
    names: tuple[str, ...]
    #: their length unit (µm or px): new images must be measured in the same
    unit: str


@dataclass(frozen=True)
class RunFile:
    """A file of the run folder that predict reads, as training left it."""

    #: relative to the run folder
    path: str
    #: what it holds, for the refusal ("the image calibration of the served model")
    holds: str
    sha256: str
    size: int


@dataclass(frozen=True)
class RunManifest:
    backbone: BackboneRecord
    #: the served ensemble, relative to the run folder; None: the run saved none
    checkpoint: str | None
    #: the served model's name (a selected point under model=auto, else the head model)
    model: str
    #: True: the model=auto winner refitted on all groups; False: the cross-validation members
    refitted: bool
    #: feature runtime the run's embeddings came from
    runtime: str
    #: the crop/equalize/patch settings that keyed the embeddings (None: not recorded)
    preprocess: dict | None
    #: descriptor columns the head reads beside the embedding (``data.extra_inputs``)
    extra_inputs: tuple[str, ...]
    #: the run's targets as recorded in metrics.json
    targets: tuple[dict, ...]
    sets: PredictionSets | None = None
    interval: Interval | None = None
    #: the kind of candidate the checkpoint holds (:data:`sinterlab.models.kinds.KINDS`)
    kind: str = "head"
    #: the measures the served model reads; None: it reads none
    measures: MeasuresRecord | None = None
    #: the files predict reads, with their sha256; () for a run of schema 1 or without manifest
    files: tuple[RunFile, ...] = ()
    schema: int = field(default=SCHEMA)

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
    def from_dict(cls, data: dict, source: Path) -> RunManifest:
        """The manifest in ``data`` (read from ``source``, named in errors)."""
        fix = (f"restore {source.name}, or delete it to serve the run from its metrics.json, "
               "or train again")
        get = _Getter(data, source, fix)
        schema = get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise SinterlabError(f"{source}: manifest schema {schema!r} is not a version "
                                 f"number; {fix}")
        if schema > SCHEMA:
            raise SinterlabError(f"{source}: manifest schema {schema} is newer than this "
                                 f"sinterlab reads ({SCHEMA}); upgrade sinterlab "
                                 "(pip install -U sinterlab) to serve this run")
        sets, interval = get("sets"), get("interval")
        files = get("files") if schema >= 2 else []
        measures = get("measures") if schema >= 3 else None
        if not isinstance(files, list):
            raise SinterlabError(f"{source}: 'files' is not a list; {fix}")
        return cls(
            schema=schema,
            files=tuple(RunFile(get(f"files.{i}.path"), get(f"files.{i}.holds"),
                                get(f"files.{i}.sha256"), get(f"files.{i}.size"))
                        for i in range(len(files))),
            backbone=BackboneRecord(get("backbone.name"), get("backbone.weights_source"),
                                    get("backbone.weights_sha256")),
            checkpoint=get("checkpoint"), model=get("model"), refitted=bool(get("refitted")),
            runtime=get("runtime"), preprocess=get("preprocess"),
            extra_inputs=tuple(get("extra_inputs")), targets=tuple(get("targets")),
            sets=PredictionSets(get("sets.threshold"), get("sets.confidence")) if sets else None,
            interval=Interval(get("interval.half_width"),
                              get("interval.confidence")) if interval else None,
            kind=get("kind") if schema >= 3 else legacy_kind(get("checkpoint")),
            measures=MeasuresRecord(tuple(get("measures.names")),
                                    get("measures.unit")) if measures else None)

    @classmethod
    def from_metrics(cls, metrics: dict, source: Path) -> RunManifest:
        """The manifest of a run from its ``metrics.json`` (``source``, named in errors): how
        training writes it, and how a run folder without manifest.json is served. Under model=auto
        the selected candidate refitted on all groups is served; otherwise the CV heads."""
        get = _Getter(metrics, source, "the file is from another tool or was edited; restore "
                                       "it or train again")
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
        measures = None
        if "measures" in inputs.split("+"):
            measures = MeasuresRecord(tuple(get("measures.measures")), get("measures.unit"))
        sets = get("calibration.sets", None)
        conformal = get("calibration.conformal", None)
        return cls(
            backbone=BackboneRecord(get("backbone.name"), get("backbone.weights.source"),
                                    get("backbone.weights.sha256")),
            checkpoint=checkpoint, model=model,
            refitted=bool(final),
            runtime=get("cache.runtime", DEFAULT_RUNTIME),
            preprocess=get("preprocess", None),
            extra_inputs=tuple(get("inputs.extra", [])),
            targets=tuple(get("targets")),
            sets=PredictionSets(get("calibration.sets.threshold"),
                                get("calibration.sets.confidence")) if sets else None,
            interval=Interval(get("calibration.conformal.half_width"),
                              get("calibration.conformal.confidence")) if conformal else None,
            kind=get(f"{served}.kind", None) or legacy_kind(checkpoint), measures=measures)


def legacy_kind(checkpoint: str | None) -> str:
    """The kind of a run from before schema 3, which knew two: an affine scikit-learn model
    (``.npz``) or a head."""
    return "affine" if checkpoint and checkpoint.endswith(".npz") else "head"


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
