"""Representations of a patch: the stage statistics are timm's own stage feature maps pooled
per channel, under torch and the default runtime; every representation keys its own cache
entries (the final embedding keeps its key); a run trained on stage statistics is predicted
and explained on the same."""

from __future__ import annotations

import pytest
import timm
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sinterlab.config_schema import FEATURES, TRAIN, check_config
from sinterlab.errors import SinterlabError
from sinterlab.features.backbone import build_backbone
from sinterlab.features.extract import cache_settings, embed_images, patch_spec
from sinterlab.features.representation import FINAL, KINDS, STATISTICS, Representation
from sinterlab.features.runtime import build_runner, resolve_runtime
from sinterlab.predict import load_run_model, predict
from tests.conftest import FAST, TRAINED, compose_train, only_candidates, predict_config

#: |runtime - torch| <= TOLERANCE * max|value| of each part of the vector (as
#: test_features_runtime states for the final embedding)
TOLERANCE = 1e-4
#: the tiny patch the statistics are checked on (every stage's map at least 2 x 2)
SIZE = 64


def by_hand(name: str, backbone, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """timm's own stage feature maps (a ``features_only`` model holding the backbone's
    tensors), pooled per channel by torch's reductions; and the final pooled embedding."""
    stages = timm.create_model(name, pretrained=False, features_only=True).eval()
    own = backbone.model.state_dict()
    # FeatureListNet names a top-level module ``stages_0`` where the model says ``stages.0``
    state = {key: own[key] if key in own else own[key.replace("_", ".", 1)]
             for key in stages.state_dict()}
    stages.load_state_dict(state)
    with torch.inference_mode():
        maps = stages(x)
        return {"final": backbone.model(x),
                **{f"{i}.mean": m.mean(dim=(2, 3)) for i, m in enumerate(maps)},
                **{f"{i}.std": m.std(dim=(2, 3), correction=0) for i, m in enumerate(maps)},
                **{f"{i}.max": m.amax(dim=(2, 3)) for i, m in enumerate(maps)}}


def parts(vector: torch.Tensor, representation: Representation, backbone) -> dict:
    """The vector cut by its documented column names into {``final``, ``<stage>.<stat>``}."""
    names = representation.columns(backbone)
    assert len(names) == vector.shape[1] == representation.width(backbone)
    groups: dict[str, list[int]] = {}
    for column, name in enumerate(names):
        head, *rest = name.split(".")
        key = "final" if head == "final" else f"{head.removeprefix('stage')}.{rest[0]}"
        groups.setdefault(key, []).append(column)
    return {key: vector[:, columns] for key, columns in groups.items()}


@pytest.mark.parametrize("runtime", ["torch", "auto"])
@pytest.mark.parametrize("name", ["convnext_atto", "tf_efficientnet_lite0"])
def test_stage_statistics_are_timms_feature_maps_pooled_by_hand(name, runtime, tmp_path):
    backbone = build_backbone(name, pretrained=False)
    resolved = resolve_runtime(runtime, "cpu")
    assert resolved == ("openvino" if runtime == "auto" else "torch")
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    expected = by_hand(name, backbone, x)
    both = Representation("both", None, ("mean", "std", "max"))
    with torch.inference_mode():
        got = parts(build_runner(resolved, backbone, tmp_path, SIZE, both)(x), both, backbone)
    assert set(got) == set(expected)  # every stage of feature_info, each statistic, the final
    for key, want in expected.items():
        scale = float(want.abs().max())
        assert float((got[key] - want).abs().max()) <= TOLERANCE * scale, key
    # stages alone: the chosen ones (negative from the end), ascending, the statistics in the
    # configured order, no final embedding
    chosen = Representation("stages", (-1, 1), ("std", "mean"))
    with torch.inference_mode():
        vector = build_runner(resolved, backbone, tmp_path, SIZE, chosen)(x)
    last = len(backbone.model.feature_info) - 1
    order = ["1.std", "1.mean", f"{last}.std", f"{last}.mean"]
    want = torch.cat([expected[key] for key in order], dim=1)
    assert float((vector - want).abs().max()) <= TOLERANCE * float(want.abs().max())


def test_the_final_representation_is_the_backbone_itself(tmp_path):
    backbone = build_backbone("test_convnext", pretrained=False)
    assert FINAL.network(backbone) is backbone.model
    assert FINAL.width(backbone) == backbone.embedding_dim
    assert Representation.from_config(OmegaConf.create({"runtime": "torch"})) == FINAL


def test_each_representation_keys_its_own_cache_and_final_keeps_its_key(
        make_cfg, tiny_descriptor, tmp_path):
    cfg = make_cfg(f"features.cache_dir={tmp_path / 'cache'}", "features.runtime=torch")
    backbone = build_backbone("test_convnext", pretrained=False)
    spec = patch_spec(cfg.preprocess, backbone)
    assert cache_settings(cfg.preprocess, spec, backbone, "torch", FINAL) == \
        cache_settings(cfg.preprocess, spec, backbone, "torch")  # the key before representations
    images = sorted((tiny_descriptor.parent / "images").glob("*.tif"))[:2]
    folders, widths = {}, {}
    for setting in ({"representation": "final"}, {"representation": "stages"},
                    {"representation": "stages", "stages": [0, 1, 2, 3]},  # = all
                    {"representation": "stages", "statistics": ["mean"]},
                    {"representation": "both"}):
        features = OmegaConf.merge(cfg.features, setting)
        embedded = embed_images(images, cfg.preprocess, backbone, features, progress=False)
        name = ",".join(f"{k}={v}" for k, v in setting.items())
        folders[name], widths[name] = embedded.cache.folder, embedded.entries[0].embeddings.shape
        assert embedded.representation == Representation.from_config(features)
    assert len(set(folders.values())) == 4  # all stages named or not: the same entries
    assert folders["representation=stages"] == folders["representation=stages,stages=[0, 1, 2, 3]"]
    plain = embed_images(images, cfg.preprocess, backbone, cfg.features, progress=False)
    assert plain.cache.folder == folders["representation=final"]
    assert plain.stats["from_cache"] == 2
    channels = sum(stage["num_chs"] for stage in backbone.model.feature_info)
    assert widths["representation=stages"][1] == 2 * channels
    assert widths["representation=stages,statistics=['mean']"][1] == channels
    assert widths["representation=both"][1] == backbone.embedding_dim + 2 * channels


def test_stages_a_backbone_lacks_and_unknown_statistics_are_one_line(make_cfg, tiny_descriptor):
    backbone = build_backbone("test_convnext", pretrained=False)
    with pytest.raises(SinterlabError, match=r"features.stages=\[4\]: test_convnext has 4 "
                                             r"stages; use all or distinct indices in 0..3"):
        Representation("stages", (4,)).width(backbone)
    with pytest.raises(SinterlabError, match="a stage named twice"):
        Representation("stages", (3, -1)).width(backbone)
    cfg = make_cfg("features.representation=stages", "features.statistics=[mean,median]")
    with pytest.raises(SinterlabError, match=r"features.statistics\[1\]=median: not allowed; "
                                             "use mean, std or max"):
        check_config(cfg, TRAIN)
    with pytest.raises(SinterlabError, match="features.stages=last: not allowed"):
        check_config(make_cfg("features.stages=last"), TRAIN)


def test_the_schema_allows_exactly_the_representations_and_statistics():
    assert FEATURES["features.representation"].words == KINDS
    assert FEATURES["features.statistics"].rule.words == tuple(STATISTICS)


@pytest.mark.slow
def test_a_stages_run_is_predicted_and_explained_on_stage_statistics(tmp_path_factory,
                                                                     tiny_descriptor, request):
    from sinterlab.explain.attribution import cam_layer_name, grad_cam
    from sinterlab.study.training import run_experiment

    run_dir = tmp_path_factory.mktemp("stages_run")
    cache = run_dir / "cache"
    cfg = compose_train([*FAST, *TRAINED, f"data.descriptor={tiny_descriptor}",
                         f"features.cache_dir={cache / 'embeddings'}",
                         f"measures.cache_dir={cache / 'measures'}",
                         "features.representation=stages", "features.stages=[1,2]"], run_dir)
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        run_experiment(cfg, run_dir)
    GlobalHydra.instance().clear()
    assert "embedding: stages 1, 2 (mean, std)" in (run_dir / "report.md").read_text()
    model = load_run_model(predict_config(run_dir))
    assert model.representation == Representation("stages", (1, 2), ("mean", "std"))
    assert model.head.in_features == 2 * (32 + 48)  # test_convnext's stages 1 and 2
    table, _ = predict(predict_config(run_dir, descriptor=str(tiny_descriptor)), model)
    assert len(table) == 24 and (table["error"].fillna("") == "").all()
    # the run's own entries: predict extracted nothing (same representation, same key)
    assert sorted((cache / "embeddings").rglob("*.onnx")) and len(
        {p.parent for p in (cache / "embeddings").rglob("*.npz")}) == 1
    # Grad-CAM on the deepest stage the head reads (stages.3 is not even run)
    assert cam_layer_name(model) == "stages.2"
    patches = torch.randn(2, 3, 32, 32)
    cams = grad_cam(model, patches, [0, 1])
    assert cams.shape == (2, 32, 32) and torch.isfinite(torch.from_numpy(cams)).all()
    with pytest.raises(SinterlabError, match="features.representation=final differs from the "
                                             "run's stages"):
        load_run_model(predict_config(run_dir, features={"representation": "final"}))


#: model=auto on two cheap candidates, each tried on the final embedding and on the stage
#: statistics of one extraction of both; the rule prefers the ensemble (members of either)
CHOOSE_REPRESENTATION = [
    "model=auto", *TRAINED, "model.selection.inner_folds=2", "model.selection.rule=one_se",
    "model.selection.ensemble.complexity=0", "features.representation=both",
    "features.stages=[1,2]", "model.selection.representations=[final,stages]",
    *only_candidates("sk_logreg_image", "mlp_image")]


def test_representations_expand_the_candidates_and_need_one_extraction_of_both(make_cfg):
    from sinterlab.study.fit import expand_representations

    cfg = make_cfg(*CHOOSE_REPRESENTATION)
    expand_representations(cfg)
    assert list(cfg.model.candidates) == [
        "sk_logreg_image@final", "sk_logreg_image@stages", "mlp_image@final",
        "mlp_image@stages"]
    assert cfg.model.candidates["mlp_image@stages"].representation == "stages"
    expand_representations(cfg)  # the run's own config read again: unchanged
    assert len(cfg.model.candidates) == 4
    with pytest.raises(SinterlabError, match="needs features.representation=both"):
        expand_representations(make_cfg(*CHOOSE_REPRESENTATION, "features.representation=final"))
    with pytest.raises(SinterlabError, match="texture is not one of final, stages, both"):
        expand_representations(make_cfg(*CHOOSE_REPRESENTATION,
                                        "model.selection.representations=[final,texture]"))
    with pytest.raises(SinterlabError, match="representations"):
        check_config(make_cfg(*CHOOSE_REPRESENTATION, "model.selection.representations=[x]"),
                     TRAIN)


@pytest.mark.slow
def test_model_auto_chooses_among_representations_and_predict_serves_each_members_part(
        make_cfg, tiny_descriptor, tmp_path):
    import json

    from sinterlab.manifest import RunManifest
    from sinterlab.study.training import run_experiment

    run_dir = tmp_path / "run"
    run_experiment(make_cfg(*CHOOSE_REPRESENTATION), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    selection = metrics["selection"]
    assert set(selection["candidates"]) >= {"sk_logreg_image@final", "mlp_image@stages"}
    assert list(selection["representations"]) == ["final", "stages"]
    assert all(label.split(" ")[0].endswith("@" + view)
               for view, labels in selection["representations"].items() for label in labels)
    pooled = metrics["sample"]["cv"]["pooled"] if "sample" in metrics else metrics["cv"]["pooled"]
    assert {"auto@final", "auto@stages"} <= set(pooled)
    report = (run_dir / "report.md").read_text()
    assert "What each outer fold chose: fold 0: " in report
    manifest = RunManifest.read(run_dir / "manifest.json")
    model = load_run_model(predict_config(run_dir))
    widths = {"final": model.backbone.embedding_dim, "stages": 2 * (32 + 48)}
    for member, part in zip(manifest.members, model.parts, strict=True):
        assert member.representation in widths
        assert part.head.in_features == widths[member.representation]
    table, _ = predict(predict_config(run_dir, descriptor=str(tiny_descriptor)), model)
    assert len(table) == 24 and (table["error"].fillna("") == "").all()
