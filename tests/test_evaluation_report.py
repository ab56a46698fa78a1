"""Run report (Markdown, and HTML rendered from it), sweep summary and the sinterlab-report CLI,
on the metrics of a real cross-validated run on tiny data."""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from sinterlab.cli.report import main as report_main
from sinterlab.evaluation.display import interval, long_name, reported_model, short_name
from sinterlab.evaluation.report import LEAK_WARNING, RANDOM_INIT_WARNING, write_report
from sinterlab.evaluation.results import Cell
from sinterlab.evaluation.summary import summarize_runs, write_summary


def metrics_of(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_report_leads_with_the_grouped_cv_number_and_its_interval(trained_run):
    md = (trained_run / "report.md").read_text()
    metrics = metrics_of(trained_run)
    cell = metrics["cv"]["pooled"]["head"]["image"]["accuracy"]
    headline = md.split("## Headline", 1)[1]
    assert headline.lstrip().startswith(
        f"**MLP head, image-level accuracy: {cell['value']:.3f} [{cell['low']:.3f}, "
        f"{cell['high']:.3f}]** (3-fold CV by sample")
    assert RANDOM_INIT_WARNING in md and LEAK_WARNING not in md.split("## Headline")[0]
    # every model on the same folds, the leaky contrast labelled, per-fold and per-sample tables
    for text in ("| MLP head |", "| linear probe |", "| PCA + logistic/ridge |",
                 "## Leak contrast: 3-fold CV by patch (LEAKY)", "## Per fold", "## Per sample",
                 "Against chance: p = "):
        assert text in md, text
    assert md.index("## Headline") < md.index("## Leak contrast")


def test_every_stage_of_the_run_is_timed_in_metrics_and_report(trained_run):
    stages = metrics_of(trained_run)["stages"]
    names = [s["stage"] for s in stages]
    for name in ("descriptor checks and embeddings", "sample split: baselines",
                 "sample split: head training", "sample split: bootstrap intervals",
                 "leak contrast (patch split)", "patch split: baselines", "figures"):
        assert name in names, name
    contrast = names.index("leak contrast (patch split)")
    assert stages[contrast]["depth"] == 0 and stages[contrast + 1]["depth"] == 1
    # a parent stage lasts at least as long as the stages inside it
    inside = [s["wall_s"] for s in stages[contrast + 1:] if s["depth"] == 1]
    assert stages[contrast]["wall_s"] >= sum(inside) - 0.05
    assert all(s["wall_s"] is not None and s["wall_s"] >= 0 for s in stages)
    section = (trained_run / "report.md").read_text().split("## Where the time went", 1)[1]
    total = sum(s["wall_s"] or 0 for s in stages if s["depth"] == 0)
    assert f"{total:.1f} s in the stages below" in section
    assert "| descriptor checks and embeddings |" in section


def test_the_verdict_says_plainly_when_the_head_does_not_beat_a_baseline(trained_run,
                                                                           tmp_path):
    metrics = metrics_of(trained_run)
    verdict = metrics["cv"]["verdict"]
    verdict |= {"best_model": "linear_probe", "best_baseline": "linear_probe",
                "primary_margin": -0.1, "primary_interval_width": 0.3,
                "primary_beats_by_more_than_interval": False}
    md, _ = write_report(tmp_path, metrics)
    assert "**The MLP head does not beat the linear probe**" in md.read_text()
    verdict |= {"best_model": "head", "primary_margin": 0.05}
    md, _ = write_report(tmp_path, metrics)
    assert "no clear gain over the linear probe" in md.read_text()
    verdict |= {"primary_margin": 0.4, "primary_beats_by_more_than_interval": True}
    md, _ = write_report(tmp_path, metrics)
    assert "beats the best baseline (linear probe) by 0.400" in md.read_text()


def test_a_block_without_a_model_of_its_own_reports_the_linear_probe():
    assert reported_model(None) == "linear_probe"
    assert reported_model("auto") == "auto"


def test_one_table_names_each_model_for_the_report_and_the_console():
    assert (long_name("auto"), short_name("auto")) == ("auto-selected model (nested CV)",
                                                       "auto (nested)")
    assert long_name("new_model") == short_name("new_model") == "new_model"
    # every model a config ships has its names (a candidate's row, the console's lines)
    from sinterlab.cli import CONF_DIR
    from sinterlab.evaluation.display import MODEL_NAMES

    assert {p.stem for p in (CONF_DIR / "model").glob("*.yaml")} - {"auto"} <= set(MODEL_NAMES)
    assert interval(Cell(0.8123, 0.7, 0.9)) == "0.812 [0.700, 0.900]"
    assert interval(Cell(0.5, None, None)) == "0.500"
    assert interval(None) == "—" and interval(None, missing="n/a") == "n/a"


def test_the_calibration_section_says_per_fold_whether_the_map_or_the_raw_is_served(
        trained_run, tmp_path):
    """The run's calibration record beside each checkpoint and in metrics.json holds, per
    member, whether its fitted map beat the raw probabilities held out; the report shows the
    served ECE with the raw beside it and each fold's choice with the held-out scores that made
    it (the ranked probability score of the ordered levels)."""
    from sinterlab.models.calibration import load_image_calibration

    metrics = metrics_of(trained_run)
    [image] = metrics["training"]["image_calibration"]
    saved = load_image_calibration(trained_run / metrics["training"]["checkpoint"])[0]
    assert saved.kept.tolist() == image["kept"] and len(image["kept"]) == 3  # 3 folds x 1 seed
    assert image["heldout_score"] == "rps"  # evaluation.calibration.check.score.ordered
    for kept, raw, fitted, error in zip(image["kept"], image["heldout_score_raw"],
                                        image["heldout_score_map"],
                                        image["heldout_gain_error"], strict=True):
        assert kept == (raw - fitted > 0.0 + 1.0 * error)  # evaluation.calibration.check
    assert metrics["calibration"]["served"] == saved.describe()
    md = (trained_run / "report.md").read_text()
    section = md.split("## How far to trust a probability", 1)[1].split("\n## ", 1)[0]
    cal = metrics["calibration"]["image"]
    # a random-init backbone on 24 images: no fold's map beats the raw probabilities, so the
    # served image probabilities are the raw ones
    assert not any(image["kept"]) and cal["ece_calibrated"] == pytest.approx(cal["ece_raw"])
    assert f"ECE {cal['ece_calibrated']:.3f} [" in section
    assert f"raw {cal['ece_raw']:.3f} [" in section
    for fold, (kept, raw, fitted, error) in enumerate(zip(
            image["kept"], image["heldout_score_raw"], image["heldout_score_map"],
            image["heldout_gain_error"], strict=True)):
        choice = "its map" if kept else "raw"
        assert (f"fold {fold}: {choice} ({fitted:.3f} vs {raw:.3f}, gain {raw - fitted:.3f} "
                f"± {error:.3f})") in section
    # the same record with every map rejected, then every map kept
    for kept, choice in ((False, "raw"), (True, "its map")):
        edited = copy.deepcopy(metrics)
        edited["training"]["image_calibration"][0]["kept"] = [kept] * 3
        md, _ = write_report(tmp_path, edited)
        section = md.read_text().split("## How far to trust a probability", 1)[1]
        assert all(f"fold {fold}: {choice} (" in section for fold in range(3))


def test_html_is_rendered_from_the_markdown_with_figures_embedded(trained_run):
    page = (trained_run / "report.html").read_text()
    assert "<table>" in page and "<h2>Headline</h2>" in page
    assert page.count("data:image/png;base64,") == len(list((trained_run / "figures")
                                                           .rglob("*.png")))
    assert "<blockquote>" in page  # the random-weights warning


def test_leaky_main_split_is_warned_and_input_not_mutated(trained_run, tmp_path):
    metrics = metrics_of(trained_run)
    metrics["split"]["leaky"] = True
    before = copy.deepcopy(metrics)
    md, _ = write_report(tmp_path, metrics)
    assert LEAK_WARNING in md.read_text()
    assert metrics == before


def test_summary_of_a_multirun_gives_value_and_interval_per_model(trained_run, tmp_path):
    for job in ("0", "1"):
        shutil.copytree(trained_run, tmp_path / "multirun" / job)
    frame = summarize_runs(tmp_path / "multirun")
    assert len(frame) == 4  # two runs x (own split, leak contrast)
    assert set(frame["split_kind"]) == {"sample", "patch"}
    md_path, csv_path = write_summary(tmp_path / "multirun")
    md = md_path.read_text()
    value = metrics_of(trained_run)["cv"]["pooled"]["head"]["image"]["accuracy"]["value"]
    data = data_cells(trained_run)
    assert f"| custom | {data} | sample | cv (3 folds) | 2 | image accuracy | {value:.3f} ± 0.000" \
        in md
    assert "| — | — | — |" in md  # no model=auto candidates in a plain run
    assert f"| custom | {data} | patch (leaky) |" in md
    assert len(pd.read_csv(csv_path)) == 4
    single = write_summary(tmp_path / "multirun" / "0")[0].read_text()
    low = metrics_of(trained_run)["cv"]["pooled"]["head"]["image"]["accuracy"]["low"]
    assert f"{value:.3f} [{low:.3f}," in single


def test_report_cli_writes_and_prints_the_summary(trained_run, tmp_path, capsys):
    shutil.copytree(trained_run, tmp_path / "multirun" / "0")
    assert report_main([str(tmp_path / "multirun"), "--out", str(tmp_path / "out" / "s")]) == 0
    assert (tmp_path / "out" / "s.md").is_file() and (tmp_path / "out" / "s.csv").is_file()
    assert f"| custom | {data_cells(trained_run)} | sample | cv (3 folds) |" in \
        capsys.readouterr().out


@pytest.mark.parametrize(("change", "words"), [
    ({"schema": "two"}, "metrics schema 'two' is not a version number"),
    ({"schema": 99}, "metrics schema 99 is newer"),
    ({"targets": "burst_count"}, "targets"),
    # a misspelled field is refused by name, never read as a missing optional one
    ({"skiped": {"gallery": "off"}}, "field 'skiped' is not one this sinterlab knows"),
])
def test_report_names_each_unreadable_metrics_file_and_why(trained_run, tmp_path, capsys,
                                                           change, words):
    """A metrics.json of a wrong schema or field: skipped in one line naming it and why, then
    'no readable metrics.json' (not 'none found'), exit 2; never a traceback."""
    run = tmp_path / "multirun" / "0"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("tensorboard", "figures"))
    metrics = metrics_of(run) | change
    (run / "metrics.json").write_text(json.dumps(metrics))
    with pytest.warns(UserWarning, match=words), pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "multirun")])
    assert stop.value.code == 2
    assert "no readable metrics.json under" in capsys.readouterr().err


def data_cells(run: Path) -> str:
    """The data, classes and inputs cells of a run's rows in the sweep summary."""
    metrics = metrics_of(run)
    target = metrics["targets"][0]
    return (f"{'/'.join(Path(metrics['data']['descriptor']).parts[-2:])} | "
            f"{target['name']}: {', '.join(target['classes'])} | image")


def test_summary_keeps_runs_on_other_data_apart_and_lists_failed_runs(trained_run, tmp_path):
    for job in ("0", "1", "2", "3"):
        shutil.copytree(trained_run, tmp_path / "multirun" / job)
    other = tmp_path / "multirun" / "1" / "metrics.json"
    metrics = json.loads(other.read_text())
    metrics["data"]["descriptor"] = "/elsewhere/lab_b/descriptor.csv"
    other.write_text(json.dumps(metrics))
    failed = tmp_path / "multirun" / "2"
    (failed / "metrics.json").unlink()
    (failed / "error.txt").write_text("error: too few sample groups (2) for 5 folds\n")
    killed = tmp_path / "multirun" / "3"  # kill -9: its claim stays, its pid is gone
    (killed / "metrics.json").unlink()
    (killed / ".sinterlab-run").write_text(json.dumps(
        {"pid": dead_pid(), "host": socket.gethostname(), "started": "t"}))
    md = write_summary(tmp_path / "multirun")[0].read_text()
    rows = [line for line in md.splitlines() if "| sample | cv" in line]
    assert len(rows) == 2 and all("| 1 | image accuracy" in row for row in rows)
    assert "lab_b/descriptor.csv" in md
    assert "## Failed or incomplete runs, not summarised (2)" in md
    assert "`2`: error: too few sample" in md and "`3`: died without a result" in md


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


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
