"""A run folder is data, never code (issue 41): every route by which an edited run folder made
predict run code or write where it said is replayed here, and creates no file; every field of
the manifest, the configuration and a checkpoint's metadata is typed; a run from another
machine's path layout is still served."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sinterlab.errors import SinterlabError
from sinterlab.manifest import MANIFEST, file_sha256, read_manifest
from sinterlab.models.estimators import EstimatorEnsemble, UntrustedModel
from sinterlab.models.head import HeadEnsemble
from sinterlab.predict import load_model, load_run, load_run_model, output_path, predict
from tests.conftest import predict_config
from tests.payloads import hydra_payloads, skops_reduce_payload


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard", "figures"))
    return run


def rehash(run: Path) -> None:
    """What whoever edits a run folder does: the manifest's hashes recomputed."""
    manifest = json.loads((run / MANIFEST).read_text())
    for record in manifest["files"]:
        path = run / record["path"]
        record["sha256"], record["size"] = file_sha256(path), path.stat().st_size
    (run / MANIFEST).write_text(json.dumps(manifest))


def edit_config(run: Path, change) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    change(config)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rehash(run)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


PAYLOADS = sorted(hydra_payloads(Path("m"), Path(".")))


@pytest.mark.parametrize("name", PAYLOADS)
@pytest.mark.parametrize("where", ["backbone", "backbone.checkpoint_path", "backbone.extra"])
def test_an_instantiable_config_runs_nothing(trained_run, tmp_path, name, where):
    """Route 1: config.yaml's backbone (or a value in it) naming a callable with _target_."""
    run = copy_run(trained_run, tmp_path)
    marker = tmp_path / "marker"
    payload = hydra_payloads(marker, tmp_path)[name]

    def plant(config):
        if where == "backbone":
            config["backbone"] = {**config["backbone"], **payload}
        else:
            config["backbone"][where.split(".")[1]] = payload

    edit_config(run, plant)
    with pytest.raises(SinterlabError) as err:
        load_run_model(predict_config(run))
    message = one_line(err)
    assert str(run / "config.yaml") in message and "field 'backbone" in message
    assert not marker.exists()


def test_a_run_config_without_target_or_with_sinterlabs_own_is_served(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    edit_config(run, lambda c: c["backbone"].pop("_target_"))
    assert load_run_model(predict_config(run)).backbone.name == "test_convnext"


def test_a_skops_node_that_calls_numpy_load_is_refused_before_loading(tmp_path):
    """Route 2: a .skops file whose node is numpy.load(pickle, None, True): a prefix check
    trusted it as a NumPy type and skops called it."""
    marker = tmp_path / "marker"
    path = skops_reduce_payload(tmp_path / "final.skops", marker, tmp_path)
    with pytest.raises(UntrustedModel, match="numpy.load"):
        EstimatorEnsemble.load(path)
    with pytest.raises(SinterlabError) as err:
        load_model(path, "sklearn")
    assert "checkpoint refused" in one_line(err) and "numpy.load" in str(err.value)
    assert not marker.exists()


def test_a_checkpoints_optimizer_is_never_imported(trained_run, tmp_path):
    """Route 3: hyper_parameters.optimizer = "this.Zen" imported the module (the Zen printed)
    before a refusal that blamed a damaged file."""
    source = trained_run / "checkpoints" / "sample-ensemble.ckpt"
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["optimizer"] = "this.Zen"
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    sys.modules.pop("this", None)
    with pytest.raises(SinterlabError) as err:
        load_model(path, "head")
    message = one_line(err)
    assert "field 'optimizer'" in message and "damaged" not in message
    assert "this" not in sys.modules


@pytest.mark.parametrize(("field", "value", "words"), [
    ("hidden", "512", "field 'hidden'"),
    ("dropout", "0.3", "field 'dropout'"),
    ("targets", [{"name": "x", "kind": "classification", "num_classes": 3,
                  "_target_": "os.system"}], "field 'targets.0._target_' is not one"),
    ("seeds", [0, True], "field 'seeds.1'"),
])
def test_a_checkpoints_hyper_parameters_are_typed(trained_run, tmp_path, field, value, words):
    checkpoint = torch.load(trained_run / "checkpoints" / "sample-ensemble.ckpt",
                            weights_only=True)
    checkpoint["hyper_parameters"][field] = value
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(SinterlabError) as err:
        HeadEnsemble.load(path)
    assert words in one_line(err)


def test_predict_writes_its_caches_where_its_own_config_says(trained_run, tmp_path,
                                                             tiny_descriptor):
    """Route 4: the run's features.cache_dir / measures.cache_dir decided where predict
    wrote (ONNX, OpenVINO blobs, npz, json appeared in the folder the edit named)."""
    run = copy_run(trained_run, tmp_path)
    elsewhere = tmp_path / "chosen_by_the_run_folder"

    def redirect(config):
        config["features"]["cache_dir"] = str(elsewhere / "embeddings")
        config["measures"]["cache_dir"] = str(elsewhere / "measures")

    edit_config(run, redirect)
    own = tmp_path / "mine"
    image = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[0]
    cfg = predict_config(run, images=[str(image)], features={"cache_dir": str(own)})
    table, _ = predict(cfg)
    assert table["error"].eq("").all()
    assert not elsewhere.exists()
    assert list(own.rglob("*.npz"))


def test_a_run_from_another_machines_layout_is_served(trained_run, tmp_path, tiny_descriptor):
    """Every absolute path in config.yaml names another machine's folders: nothing of them
    is read or written, and predict serves the run."""
    run = copy_run(trained_run, tmp_path)

    def elsewhere(config):
        for block, key in (("features", "cache_dir"), ("measures", "cache_dir"),
                           ("data", "descriptor"), ("paths", "root_dir"),
                           ("paths", "output_dir"), ("paths", "log_dir")):
            config[block][key] = f"/home/alice/sinterlab/{block}_{key}"
        config["features"]["devices"] = [3]
        config["features"]["accelerator"] = "gpu"

    edit_config(run, elsewhere)
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    table, _ = predict(predict_config(run, images=[str(p) for p in images],
                                      features={"cache_dir": str(tmp_path / "cache")}))
    assert len(table) == 2 and table["error"].eq("").all()
    assert not Path("/home/alice").exists()


@pytest.mark.parametrize(("change", "words"), [
    (lambda m: m.update(checkpoint=5), "field 'checkpoint'"),
    (lambda m: m.update(refitted="no"), "field 'refitted'"),
    (lambda m: m["sets"].update(threshold="high"), "field 'sets.threshold'"),
    (lambda m: m.update(measures={"names": "porosity", "unit": "µm"}), "field 'measures.names'"),
    (lambda m: m.update(checkpoint="../../elsewhere.ckpt"), "field 'checkpoint'"),
    (lambda m: m.update(checkpoint="/etc/passwd"), "field 'checkpoint'"),
    (lambda m: m["files"][0].update(path="../config.yaml"), "field 'files.0.path'"),
    (lambda m: m.update(runtime="tensorrt"), "field 'runtime'"),
    (lambda m: m.update(kind="builtins.eval"), "field 'kind'"),
    (lambda m: m.update(surprise=1), "field 'surprise' is not one this sinterlab knows"),
    (lambda m: m["backbone"].update(weights_sha256=None), "field 'backbone.weights_sha256'"),
])
def test_every_manifest_field_is_typed(trained_run, tmp_path, change, words):
    run = copy_run(trained_run, tmp_path)
    manifest = json.loads((run / MANIFEST).read_text())
    change(manifest)
    (run / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SinterlabError) as err:
        read_manifest(run)
    message = one_line(err)
    assert str(run / MANIFEST) in message and words in message


@pytest.mark.parametrize(("schema", "words"), [
    ("two", "field 'schema'"), (99, "metrics schema 99 is not one"),
    (0, "metrics schema 0 is not one"),
])
def test_predict_checks_the_metrics_schema(trained_run, tmp_path, schema, words):
    run = copy_run(trained_run, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics | {"schema": schema}))
    with pytest.raises(SinterlabError) as err:
        load_run(run)
    assert words in one_line(err)


@pytest.mark.parametrize(("block", "key", "value", "words"), [
    ("preprocess", "patches", {"size": "big"}, "field 'preprocess.patches"),
    ("preprocess", "crop", {"mode": "sideways"}, "field 'preprocess.crop.mode'"),
    ("preprocess", "patches", {"per_image": -4}, "preprocess.patches.per_image=-4"),
    ("backbone", "name", "hf-hub:someone/model", "field 'backbone.name'"),
    ("backbone", "name", "not_a_timm_model", "no timm model"),
    ("backbone", "package", "os", "field 'backbone.package'"),
    ("backbone", "cam_layer", "${oc.env:HOME}", "field 'backbone.cam_layer'"),
    ("measures", "segmentation", {"method": "__import__"}, "field 'measures.segmentation"),
])
def test_the_run_configs_blocks_are_typed_and_ranged(trained_run, tmp_path, block, key,
                                                     value, words):
    run = copy_run(trained_run, tmp_path)

    def change(config):
        old = config[block][key]
        config[block][key] = {**old, **value} if isinstance(value, dict) else value

    edit_config(run, change)
    with pytest.raises(SinterlabError) as err:
        load_run_model(predict_config(run))
    assert words in one_line(err)


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "predictions.csv"
    assert output_path(None, tmp_path / "stamped.csv", False) == tmp_path / "stamped.csv"
    assert output_path(str(out), tmp_path / "stamped.csv", False) == out
    out.write_text("image\n")
    with pytest.raises(SinterlabError, match="exists already.*overwrite=true"):
        output_path(str(out), tmp_path / "stamped.csv", False)
    assert output_path(str(out), tmp_path / "stamped.csv", True) == out


# -- predict names what it cannot vouch for -------------------------------------------------
def test_a_constant_image_is_predicted_with_a_warning(trained_run, tmp_path, tiny_descriptor):
    """A blank micrograph still gets a class (the model cannot refuse), but its row says it
    is blank instead of an empty error column beside a confident answer."""
    import numpy as np
    import tifffile

    shape = tifffile.imread(sorted((tiny_descriptor.parent / "images").glob("*.tif"))[0]).shape
    gray = tmp_path / "gray.tif"
    tifffile.imwrite(gray, np.full(shape, 128, np.uint8))
    good = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[0]
    table, _ = predict(predict_config(trained_run, images=[str(gray), str(good)]))
    rows = dict(zip(table["image"], table["warning"], strict=True))
    assert rows[str(gray)].startswith("blank (grey levels 128-128 only)")
    assert rows[str(good.resolve())] == ""


def test_the_manifest_records_the_training_pixel_sizes(trained_run):
    recorded = read_manifest(trained_run).pixel_size_nm
    assert recorded is not None and recorded.low == recorded.high == 4.0


@pytest.mark.parametrize(("size", "words"), [
    (4.0, None), (4.3, None),
    (12.0, "pixel size 12 nm outside the run's 3.6-4.4 nm (scale differs 3.0x)"),
    (4.0 / 3, "pixel size 1.33 nm outside the run's 3.6-4.4 nm (scale differs 3.0x)"),
    (None, None),
])
def test_a_pixel_size_outside_the_runs_range_is_named(trained_run, size, words):
    from sinterlab.predict import scale_checks

    found = scale_checks(size, read_manifest(trained_run), 0.1)
    assert found == ([] if words is None else [words + "; the model never saw this scale"])


@pytest.mark.parametrize(("change", "words"), [
    (lambda c: c["targets"][0].update(pooling="__import__"), "field 'targets.0.pooling'"),
    (lambda c: c["targets"][0].update(scale="1.0"), "field 'targets.0.scale'"),
    (lambda c: c["targets"][0].update(_target_="os.system"), "field 'targets.0._target_' is "
     "not one"),
])
def test_the_image_calibration_is_typed(trained_run, tmp_path, change, words):
    from sinterlab.models.calibration import calibration_path, load_image_calibration

    run = copy_run(trained_run, tmp_path)
    checkpoint = run / "checkpoints" / "sample-ensemble.ckpt"
    path = calibration_path(checkpoint)
    saved = json.loads(path.read_text())
    change(saved)
    path.write_text(json.dumps(saved))
    with pytest.raises(SinterlabError) as err:
        load_image_calibration(checkpoint)
    assert words in one_line(err)
