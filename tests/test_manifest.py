"""The run manifest: round trip, versioned, one clear line for a missing field; a run without
manifest.json (an earlier sinterlab) is served from its metrics.json."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sinterlab.errors import SinterlabError
from sinterlab.manifest import (
    MANIFEST,
    SCHEMA,
    BackboneRecord,
    Interval,
    PredictionSets,
    RunFile,
    RunManifest,
    read_manifest,
)
from sinterlab.predict import predict
from tests.conftest import predict_config

#: the parts of a metrics.json the manifest is built from (a CV run, classification)
METRICS = {
    "backbone": {"name": "resnet18", "weights": {"source": "hub", "sha256": "ab" * 32}},
    "training": {"model": "mlp", "checkpoint": "checkpoints/sample-ensemble.ckpt"},
    "selection": None,
    "cache": {"runtime": "onnxruntime"},
    "preprocess": {"patch": {"size": 224}},
    "inputs": {"extra": ["duty_cycle"]},
    "targets": [{"name": "burst_count", "kind": "classification", "classes": ["50", "150"]}],
    "calibration": {"sets": {"threshold": 0.2, "confidence": 0.9, "coverage": 0.93}},
}


def manifest() -> RunManifest:
    return RunManifest.from_metrics(METRICS, Path("run/metrics.json"))


def test_from_metrics_takes_what_the_server_needs():
    m = manifest()
    assert m.schema == SCHEMA
    assert m.backbone == BackboneRecord("resnet18", "hub", "ab" * 32)
    assert (m.checkpoint, m.model, m.refitted) == (
        "checkpoints/sample-ensemble.ckpt", "mlp", False)
    assert (m.runtime, m.extra_inputs) == ("onnxruntime", ("duty_cycle",))
    assert m.sets == PredictionSets(0.2, 0.9) and m.interval is None
    assert m.display_name(15) == "mlp: mean of 15 cross-validation heads"


def test_model_auto_serves_the_refitted_winner_under_its_point_name():
    metrics = copy.deepcopy(METRICS) | {"selection": {"final": {
        "model": "mlp", "point": "mlp[lr=0.01]", "checkpoint": "checkpoints/final.npz"}}}
    metrics["calibration"] = {"conformal": {"half_width": 12.5, "confidence": 0.9}}
    m = RunManifest.from_metrics(metrics, Path("run/metrics.json"))
    assert (m.checkpoint, m.model, m.refitted) == ("checkpoints/final.npz", "mlp[lr=0.01]", True)
    assert m.display_name(5) == "mlp[lr=0.01]: mean of 5 refitted on all groups (model=auto)"
    assert m.interval == Interval(12.5, 0.9) and m.sets is None


def test_a_run_from_before_runtimes_and_inputs_gets_their_defaults():
    metrics = {k: v for k, v in METRICS.items() if k not in ("inputs", "preprocess")}
    metrics["cache"] = {}
    m = RunManifest.from_metrics(metrics, Path("run/metrics.json"))
    assert (m.runtime, m.extra_inputs, m.preprocess) == ("torch", (), None)


def test_round_trip(tmp_path):
    m = manifest()
    path = m.write(tmp_path / MANIFEST)
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert RunManifest.read(path) == m
    assert read_manifest(tmp_path) == m  # manifest.json first, metrics.json not needed


def recorded_run(tmp_path: Path) -> tuple[RunManifest, Path]:
    """A run folder of two files and the manifest that records them."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "a.ckpt").write_bytes(b"weights" * 100)
    (tmp_path / "checkpoints" / "a.calibration.json").write_text('{"targets": [null]}')
    return manifest().with_files(tmp_path, {
        "checkpoints/a.ckpt": "the served model's checkpoint",
        "checkpoints/a.calibration.json": "the image calibration of the served model"}), tmp_path


def test_files_round_trip_with_their_sha256(tmp_path):
    m, run = recorded_run(tmp_path)
    assert m.files[0] == RunFile("checkpoints/a.ckpt", "the served model's checkpoint",
                                 hashlib.sha256(b"weights" * 100).hexdigest(), 700)
    assert m.recorded("checkpoints/a.calibration.json") and not m.recorded("config.yaml")
    assert RunManifest.read(m.write(run / MANIFEST)) == m
    m.verify(run)


@pytest.mark.parametrize(("damage", "words"), [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_text('{"targ'), "is truncated (6 of 19 bytes)"),
    (lambda p: p.write_text('{"targets": [1.0]}  '), "differs from the one the run saved"),
])
def test_a_missing_or_changed_file_is_one_line_naming_it_and_what_it_held(tmp_path, damage,
                                                                           words):
    m, run = recorded_run(tmp_path)
    path = run / "checkpoints" / "a.calibration.json"
    damage(path)
    with pytest.raises(SinterlabError) as err:
        m.verify(run)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: the image calibration of the "
                                                      f"served model {words}")


def test_a_schema_1_manifest_still_loads_and_records_no_files(tmp_path):
    """Runs trained before the manifest recorded files are served as before."""
    data = manifest().to_dict() | {"schema": 1}
    del data["files"]
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(data))
    old = RunManifest.read(path)
    assert old.schema == 1 and old.files == () and old == replace(manifest(), schema=1)
    old.verify(tmp_path)  # nothing to check


def test_a_schema_2_manifest_without_a_files_field_is_one_line(tmp_path):
    m, run = recorded_run(tmp_path)
    data = m.to_dict()
    data["files"][1].pop("sha256")
    (run / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(SinterlabError, match=r"field 'files\.1\.sha256' missing"):
        RunManifest.read(run / MANIFEST)


def test_a_newer_schema_is_refused_with_the_fix(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(manifest().to_dict() | {"schema": SCHEMA + 1}))
    with pytest.raises(SinterlabError) as err:
        RunManifest.read(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"schema {SCHEMA + 1}" in message and "upgrade sinterlab" in message


@pytest.mark.parametrize("drop", ["checkpoint", "schema", "backbone.weights_sha256",
                                  "sets.threshold"])
def test_a_manifest_missing_a_field_is_one_line_naming_it(tmp_path, drop):
    data = manifest().to_dict()
    *parents, key = drop.split(".")
    node = data
    for parent in parents:
        node = node[parent]
    del node[key]
    path = tmp_path / MANIFEST
    path.write_text(json.dumps(data))
    with pytest.raises(SinterlabError) as err:
        RunManifest.read(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"'{drop}' missing" in message


def test_a_damaged_manifest_is_one_line(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text('{"schema": 1, "backbone"')
    with pytest.raises(SinterlabError, match=r"manifest\.json: unreadable \(JSONDecodeError"):
        RunManifest.read(path)


@pytest.mark.parametrize("drop", ["backbone", "targets", "training"])
def test_metrics_missing_a_key_is_one_line_not_a_key_error(tmp_path, drop):
    (tmp_path / "metrics.json").write_text(json.dumps(
        {k: v for k, v in METRICS.items() if k != drop}))
    with pytest.raises(SinterlabError) as err:
        read_manifest(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "metrics.json") in message
    assert f"'{drop}" in message


# -- a trained run ---------------------------------------------------------------------------
def predict_cfg(run: Path, descriptor: Path):
    return predict_config(run, descriptor=str(descriptor))


def test_training_writes_the_manifest_of_its_metrics(trained_run):
    written = RunManifest.read(trained_run / MANIFEST)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert replace(written, files=(), pixel_size_nm=None) == RunManifest.from_metrics(
        metrics, trained_run / "metrics.json")
    assert (written.pixel_size_nm.low, written.pixel_size_nm.high) == (4.0, 4.0)
    checkpoint = metrics["training"]["checkpoint"]
    assert [f.path for f in written.files] == [
        "config.yaml", checkpoint, checkpoint.replace(".ckpt", ".calibration.json")]
    for record in written.files:
        data = (trained_run / record.path).read_bytes()
        assert record.sha256 == hashlib.sha256(data).hexdigest() and record.size == len(data)
    written.verify(trained_run)
    assert written.backbone.weights_sha256 == metrics["backbone"]["weights"]["sha256"]
    assert (trained_run / written.checkpoint).is_file()
    assert written.preprocess == metrics["preprocess"]


def test_a_run_without_manifest_is_still_predicted(trained_run, tiny_descriptor, tmp_path):
    """A run folder made before manifest.json existed: served from its metrics.json, with the
    same predictions and model name."""
    old = shutil.copytree(trained_run, tmp_path / "old_run")
    (old / MANIFEST).unlink()
    table, _ = predict(predict_cfg(old, tiny_descriptor))
    served, _ = predict(predict_cfg(trained_run, tiny_descriptor))
    assert len(table) == 24 and (table["error"] == "").all()
    assert table["model"].iloc[0].startswith("mlp: mean of ")
    pd_equal = table.drop(columns="model").equals(served.drop(columns="model"))
    assert pd_equal and table["model"].tolist() == served["model"].tolist()
