"""Bad input as users make it, one row each: how it is made, the exit status, and the words the
message must hold. The console scripts run in this process as typed (``sys.argv``), so a row
costs a config composition, not an interpreter start.

Every row that stops a training run (status 2 or 130) must also leave the reason in the run
folder (``error.txt`` and ``train.log``), no ``metrics.json``, and, for status 2, no extracted
embedding: everything that depends on the descriptor and the config is checked before the
backbone runs. Adding a case is one ``Case(...)`` line (and a maker when none fits).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from hydra.core.global_hydra import GlobalHydra

from sinterlab.cli.explain import main as explain_main
from sinterlab.cli.extract import main as extract_main
from sinterlab.cli.predict import main as predict_main
from sinterlab.cli.report import main as report_main
from sinterlab.cli.train import main as train_main
from sinterlab.features.cache import EmbeddingCache
from sinterlab.manifest import MANIFEST, RunManifest
from sinterlab.models.calibration import calibration_path
from tests.conftest import FAST
from tests.test_evaluation_report import dead_pid

SCRIPTS = {"train": train_main, "predict": predict_main, "explain": explain_main,
           "extract": extract_main, "report": report_main}


@dataclass
class World:
    """What a maker may use: a fresh folder, the tiny data, a finished run and the cache it
    filled (trained when a maker first asks), pytest's patcher."""

    tmp: Path
    descriptor: Path
    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch
    cache: Path = field(init=False)

    def __post_init__(self):
        self.cache = self.tmp / "cache"

    @property
    def trained_run(self) -> Path:
        return self.request.getfixturevalue("trained_run")

    @property
    def filled_cache(self) -> Path:
        self.request.getfixturevalue("trained_run")
        return self.request.getfixturevalue("shared_cache")

    def table(self) -> pd.DataFrame:
        """The tiny descriptor with absolute image paths, ready to be spoilt and saved."""
        table = pd.read_csv(self.descriptor)
        table["image"] = [str(self.descriptor.parent / p) for p in table["image"]]
        return table

    def save(self, table: pd.DataFrame, name: str = "descriptor.csv", **kwargs) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False, **kwargs)
        return path

    def images(self, n: int = 3) -> list[Path]:
        return sorted((self.descriptor.parent / "images").glob("*.tif"))[:n]

    def run_copy(self) -> Path:
        """A copy of the finished run, to damage."""
        return Path(shutil.copytree(self.trained_run, self.tmp / "run_copy"))


# -- makers: each spoils one thing and returns the command line's arguments -------------------
def with_table(edit: Callable[[pd.DataFrame], object], **save) -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        table = w.table()
        table = edit(table) if edit(table) is not None else table
        return [f"data.descriptor={w.save(table, **save)}"]
    return make


def cell(row: int, column: str, value) -> Callable[[pd.DataFrame], None]:
    def edit(table: pd.DataFrame) -> None:
        table[column] = table[column].astype(object) if column in table else np.nan
        table[column] = table[column].astype(object)
        table.loc[row, column] = value
    return edit


def descriptor_text(text: str, name: str = "descriptor.csv") -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        path = w.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        return [f"data.descriptor='{path}'"]  # quoted: the path may hold spaces
    return make


def overrides(*args: str) -> Callable[[World], list[str]]:
    return lambda w: [f"data.descriptor={w.descriptor}", *args]


def extract_args(*args: str) -> Callable[[World], list[str]]:
    return lambda w: [f"data.descriptor={w.descriptor}", f"features.cache_dir={w.cache}",
                      f"hydra.run.dir={w.tmp / 'extract'}", *args]


def held_folder(w: World) -> list[str]:
    run_dir = w.tmp / "run"
    run_dir.mkdir()
    (run_dir / ".sinterlab-run").write_text('{"pid": 4242, "host": "lab-pc", "started": "t"}')
    return [f"data.descriptor={w.descriptor}"]


def cache_under_a_file(w: World) -> list[str]:
    (w.tmp / "not_a_folder").write_text("")
    return [f"data.descriptor={w.descriptor}",
            f"features.cache_dir={w.tmp / 'not_a_folder' / 'cache'}"]


def interrupted_after_two_images(w: World) -> list[str]:
    save, calls = EmbeddingCache.save, []

    def save_then_ctrl_c(self, sha, entry):
        save(self, sha, entry)
        calls.append(sha)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C
    w.monkeypatch.setattr(EmbeddingCache, "save", save_then_ctrl_c)
    return [f"data.descriptor={w.descriptor}"]


def predict_args(w: World, run: Path, images: list[Path]) -> list[str]:
    return [f"run={run}", f"images=[{','.join(str(p) for p in images)}]",
            f"out={w.tmp / 'predictions.csv'}", f"hydra.run.dir={w.tmp / 'hydra'}",
            *own_caches(w)]


def own_caches(w: World) -> list[str]:
    """predict's caches: the user's (here the test's folder), never the run folder's."""
    return [f"features.cache_dir={w.filled_cache}", f"measures.cache_dir={w.cache / 'measures'}"]


def one_unreadable_image(*extra: str) -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        bad = w.tmp / "broken.tif"
        bad.write_bytes(b"II*\x00 cut short by a full disk")
        return predict_args(w, w.trained_run, [*w.images(2), bad]) + list(extra)
    return make


def one_tiny_image(w: World) -> list[str]:
    small = w.tmp / "thumbnail.png"
    cv2.imwrite(str(small), np.full((30, 40), 128, np.uint8))
    return predict_args(w, w.trained_run, [*w.images(2), small]) + ["strict=true"]


def zero_byte_descriptor(w: World) -> list[str]:
    (w.tmp / "empty.csv").write_bytes(b"")
    return [f"run={w.trained_run}", f"descriptor={w.tmp / 'empty.csv'}",
            f"hydra.run.dir={w.tmp / 'hydra'}"]


def served_checkpoint(run: Path) -> Path:
    return run / json.loads((run / "metrics.json").read_text())["training"]["checkpoint"]


def damaged_checkpoint(how: str) -> Callable[[World], list[str]]:
    def make(w: World) -> list[str]:
        run = w.run_copy()
        checkpoint = served_checkpoint(run)
        if how == "missing":
            checkpoint.unlink()
        else:
            checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
        return predict_args(w, run, w.images(2))
    return make


def damaged_calibration(how: str) -> Callable[[World], list[str]]:
    """The image calibration of the served model deleted, or cut short."""
    def make(w: World) -> list[str]:
        run = w.run_copy()
        path = calibration_path(served_checkpoint(run))
        if how == "missing":
            path.unlink()
        else:
            path.write_text(path.read_text()[:200])
        return predict_args(w, run, w.images(2))
    return make


def replaced_checkpoint(w: World) -> list[str]:
    """A checkpoint that loads, but is not the one the run saved (another run's, or edited)."""
    run = w.run_copy()
    checkpoint = served_checkpoint(run)
    state = torch.load(checkpoint, weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] += 1.0
    torch.save(state, checkpoint)
    return predict_args(w, run, w.images(2))


def disk_full_at_the_checkpoint(w: World) -> list[str]:
    """The disk fills up as the heads' checkpoint is written."""
    def full(obj, filepath, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    w.monkeypatch.setattr(torch, "save", full)
    return [f"data.descriptor={w.descriptor}"]


def sweep_with_a_run_stopped_by_a_full_disk(w: World) -> list[str]:
    """A sweep folder: a finished run (0) and one stopped by a full disk (1)."""
    sweep = w.tmp / "sweep"
    shutil.copytree(w.trained_run, sweep / "0")
    args = [*FAST, f"features.cache_dir={w.filled_cache}", *disk_full_at_the_checkpoint(w),
            f"hydra.run.dir={sweep / '1'}", f"paths.log_dir={w.tmp / 'logs'}"]
    GlobalHydra.instance().clear()
    w.monkeypatch.setattr(sys, "argv", ["sinterlab-train", *args])
    try:
        train_main()
    except (SystemExit, OSError):  # OSError: how it ended before
        pass
    return [str(sweep)]


def identical_images_in_two_samples(w: World) -> list[str]:
    table = w.table()
    copy = w.tmp / "copy_of_first.tif"
    shutil.copy(table.loc[0, "image"], copy)
    other = table.index[table["burst_count"] != table.loc[0, "burst_count"]][0]
    table.loc[other, "image"] = str(copy)  # the first image's bytes, filed as another sample
    return [f"data.descriptor={w.save(table)}"]


def one_corrupt_cache_entry(w: World) -> list[str]:
    """The finished run's cache, one of its entries cut short (a full disk, a broken copy)."""
    shutil.copytree(w.filled_cache, w.cache)
    used = json.loads((w.trained_run / "metrics.json").read_text())["cache"]["folder"]
    entry = sorted((w.cache / Path(used).relative_to(w.filled_cache)).glob("*.npz"))[0]
    entry.write_bytes(entry.read_bytes()[:100])
    return [f"data.descriptor={w.descriptor}"]


def grades(edit: Callable[[pd.DataFrame], None]) -> Callable[[World], list[str]]:
    """The burst counts as named grades (low/mid/high) in a `grade` column, then ``edit``."""
    def make(w: World) -> list[str]:
        table = w.table()
        table["grade"] = table["burst_count"].map({50: "low", 150: "mid", 250: "high"})
        edit(table)
        return [f"data.descriptor={w.save(table)}", "data.target=grade"]
    return make


def respell(grade: str, spelling: str) -> Callable[[pd.DataFrame], None]:
    """One image's grade written another way."""
    def edit(table: pd.DataFrame) -> None:
        table.loc[table.index[table["grade"] == grade][1], "grade"] = spelling
    return edit


def one_sample_under_two_labels(table: pd.DataFrame) -> None:
    first = table["sample_id"] == table.loc[0, "sample_id"]
    other = table.loc[table["burst_count"] != table.loc[0, "burst_count"], "burst_count"]
    table.loc[first.idxmax(), "burst_count"] = other.iloc[0]  # one of its images relabelled


def one_sample_of_250(table: pd.DataFrame) -> pd.DataFrame:
    lone = table.loc[table["burst_count"] == 250, "sample_id"].iloc[0]
    return table[(table["burst_count"] != 250) | (table["sample_id"] == lone)]


def dead_claim(w: World) -> list[str]:
    """The folder of a run killed with -9: its claim names a pid that is gone."""
    run_dir = w.tmp / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("the killed run's log\n")
    (run_dir / ".sinterlab-run").write_text(json.dumps(
        {"pid": dead_pid(), "host": socket.gethostname(), "started": "t"}))
    return [f"data.descriptor={w.descriptor}"]


def finished_folder(w: World) -> list[str]:
    shutil.copytree(w.trained_run, w.tmp / "run")
    return [f"data.descriptor={w.descriptor}"]


def missing_and_folder_in_predict(w: World) -> list[str]:
    (w.tmp / "a_folder").mkdir()
    return predict_args(w, w.trained_run, [*w.images(2), w.tmp / "typo.tif",
                                           w.tmp / "a_folder"])


def folder_with_subfolder(w: World) -> list[str]:
    folder = w.tmp / "scans"
    (folder / "old").mkdir(parents=True)
    for image in w.images(2):
        shutil.copy(image, folder / image.name)
    return [f"run={w.trained_run}", f"images={folder}", f"out={w.tmp / 'predictions.csv'}",
            f"hydra.run.dir={w.tmp / 'hydra'}", *own_caches(w)]


def suspect_images(w: World) -> list[str]:
    """A black frame and a two-page TIFF (two detectors saved together) among good images."""
    black, stack = w.tmp / "black.png", w.tmp / "two_detectors.tif"
    cv2.imwrite(str(black), np.zeros((160, 200), np.uint8))
    page = cv2.imread(str(w.images(1)[0]), cv2.IMREAD_GRAYSCALE)
    tifffile.imwrite(stack, np.stack([page, 255 - page]))
    return predict_args(w, w.trained_run, [*w.images(1), black, stack])


def backslash_path(table: pd.DataFrame) -> None:
    table.loc[1, "image"] = "images\\" + Path(table.loc[1, "image"]).name


def explain_tiny_image(w: World) -> list[str]:
    small = w.tmp / "thumbnail.png"
    cv2.imwrite(str(small), np.full((30, 40), 128, np.uint8))
    return [f"run={w.trained_run}", f"images=[{small}]", f"out={w.tmp / 'explained'}",
            f"hydra.run.dir={w.tmp / 'hydra'}"]


def without_metrics(w: World) -> list[str]:
    run = w.run_copy()
    (run / "metrics.json").unlink()
    return predict_args(w, run, w.images(1))


def pickled_code_in_checkpoint(w: World) -> list[str]:
    """A checkpoint someone sent: besides tensors it pickles a reference to a function (and
    the manifest they sent records its sha256)."""
    run = w.run_copy()
    checkpoint = served_checkpoint(run)
    state = torch.load(checkpoint, weights_only=True)
    state["callbacks"] = {"on_load": os.getcwd}  # harmless here; os.system would not be
    torch.save(state, checkpoint)
    manifest = RunManifest.read(run / MANIFEST)
    files = {f.path: f.holds for f in manifest.files}
    manifest.with_files(run, files).write(run / MANIFEST)
    return predict_args(w, run, w.images(1))


def image_without_metadata(sidecar: str | None = None) -> Callable[[World], list[str]]:
    """One image saved as PNG (no instrument tag), optionally with a sidecar text beside it."""
    def make(w: World) -> list[str]:
        table = w.table()
        png = w.tmp / "no_tag.png"
        cv2.imwrite(str(png), cv2.imread(table.loc[0, "image"], cv2.IMREAD_GRAYSCALE))
        if sidecar is not None:
            png.with_suffix(".txt").write_text(sidecar)
        table.loc[0, "image"] = str(png)
        return [f"data.descriptor={w.save(table)}", "preprocess.scale.pixel_size_nm=auto"]
    return make


def one_black_image(w: World) -> list[str]:
    """A black frame (detector off) in place of one micrograph, data bar and all."""
    table = w.table()
    black = w.tmp / "black.tif"
    shape = cv2.imread(table.loc[0, "image"], cv2.IMREAD_GRAYSCALE).shape
    cv2.imwrite(str(black), np.zeros(shape, np.uint8))
    table.loc[0, "image"] = str(black)
    return [f"data.descriptor={w.save(table)}"]


def untagged_images(count: int, *extra: str) -> Callable[[World], list[str]]:
    """The first ``count`` images saved as PNG (no instrument tag) among tagged TIFFs."""
    def make(w: World) -> list[str]:
        table = w.table()
        for i in range(count):
            png = w.tmp / f"no_tag_{i}.png"
            cv2.imwrite(str(png), cv2.imread(table.loc[i, "image"], cv2.IMREAD_GRAYSCALE))
            table.loc[i, "image"] = str(png)
        return [f"data.descriptor={w.save(table)}", *extra]
    return make


def retagged(pixel_width: str, *extra: str) -> Callable[[World], list[str]]:
    """The first image's pixels in a TIFF whose FEI tag says ``PixelWidth=pixel_width`` (m)."""
    def make(w: World) -> list[str]:
        table = w.table()
        path = w.tmp / "mistagged.tif"
        tag = f"[System]\r\nSystemType=Quanta\r\n[Scan]\r\nPixelWidth={pixel_width}\r\n"
        tifffile.imwrite(path, tifffile.imread(table.loc[0, "image"]),
                         extratags=[(34682, "s", 0, tag, True)])
        table.loc[0, "image"] = str(path)
        return [f"data.descriptor={w.save(table)}", *extra]
    return make


def one_white_image(w: World) -> list[str]:
    """A saturated frame (white, data bar and all) in place of one micrograph."""
    table = w.table()
    white = w.tmp / "white.tif"
    shape = cv2.imread(table.loc[0, "image"], cv2.IMREAD_GRAYSCALE).shape
    cv2.imwrite(str(white), np.full(shape, 255, np.uint8))
    table.loc[0, "image"] = str(white)
    return [f"data.descriptor={w.save(table)}"]


def one_wrong_cache_entry(how: str) -> Callable[[World], list[str]]:
    """The finished run's cache, one entry readable but wrong: one embedding column short
    (another backbone's width) or a NaN among its values."""
    def make(w: World) -> list[str]:
        shutil.copytree(w.filled_cache, w.cache)
        used = json.loads((w.trained_run / "metrics.json").read_text())["cache"]["folder"]
        entry = sorted((w.cache / Path(used).relative_to(w.filled_cache)).glob("*.npz"))[0]
        with np.load(entry) as data:
            arrays = dict(data)
        if how == "width":
            arrays["embeddings"] = arrays["embeddings"][:, :-1]
        else:
            arrays["embeddings"][1, 2] = np.nan
        with open(entry, "wb") as handle:
            np.savez(handle, **arrays)
        return [f"data.descriptor={w.descriptor}"]
    return make


def one_wrong_measures_entry(w: World) -> list[str]:
    """The finished run's measures cache, one entry readable JSON but not measures."""
    measures = w.tmp / "measures"
    shutil.copytree(w.trained_run / "cache" / "measures", measures)
    entry = sorted(measures.rglob("*.json"))[0]
    entry.write_text('{"porosity": "0.3 (by eye)"}')
    return [f"data.descriptor={w.descriptor}", f"measures.cache_dir={measures}"]


def measures_in_px(run_dir: Path) -> None:
    measures = pd.read_csv(run_dir / "measures.csv")
    assert (measures["length_unit"] == "px").all()
    assert "lengths in px" in (run_dir / "report.md").read_text()


def blank_measures_are_nan(run_dir: Path) -> None:
    measures = pd.read_csv(run_dir / "measures.csv").set_index("image")
    white = measures.loc[measures.index.str.endswith("white.tif")].iloc[0]
    assert white[["porosity", "pore_diameter", "solid_size"]].isna().all()
    assert white["one_phase"] == "solid"


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    make: Callable[[World], list[str]]
    code: int
    words: tuple[str, ...]
    absent: tuple[str, ...] = ()
    leaves_error_txt: bool = True  # False: the folder is another run's, nothing is written
    #: further checks on the run folder after the run
    then: Callable[[Path], None] | None = None


def took_over_the_folder(run_dir: Path) -> None:
    assert (run_dir / "metrics.json").is_file()
    assert (run_dir / "tensorboard").is_dir()  # TensorBoard logs in the run's own folder
    assert "the killed run's log" in (run_dir / "train.log").read_text()  # appended to


CASES = [
    # 1. a stray unit among numbers: not a fourth class
    Case("stray unit in numeric target", "train", with_table(cell(2, "burst_count", "150 BC")),
         2, ("'150 BC'", "not numbers", "data.units", ":4")),
    # 2. a folder another run holds
    Case("run folder already held", "train", held_folder, 2,
         ("already holds another run", "4242", "hydra.run.dir"), leaves_error_txt=False),
    # 3. empty sample cells; identical bytes under two samples
    Case("empty sample_id", "train", with_table(cell(3, "sample_id", np.nan)), 2,
         ("empty 'sample_id' cell", ":5")),
    Case("identical images in two samples", "train", identical_images_in_two_samples, 0,
         ("byte-identical", "copy_of_first.tif")),
    # 4. tracebacks before
    Case("empty image cell", "train", with_table(cell(1, "image", np.nan)), 2,
         ("empty 'image' cell", ":3")),
    Case("header-only descriptor, regression", "train",
         lambda w: descriptor_text("image,sample_id,burst_count\n")(w) + ["task=regression"],
         2, ("no image rows",)),
    Case("zero-byte descriptor to predict", "predict", zero_byte_descriptor, 2,
         ("empty.csv", "not a readable CSV")),
    Case("checkpoint missing", "predict", damaged_checkpoint("missing"), 2,
         ("the served model's checkpoint is missing", ".ckpt")),
    Case("checkpoint truncated", "predict", damaged_checkpoint("truncated"), 2,
         ("the served model's checkpoint is truncated (2000 of", ".ckpt")),
    # 5. cache faults
    Case("cache folder not writable", "train", cache_under_a_file, 2,
         ("cannot be written", "features.cache_dir")),
    Case("one corrupt cache entry", "train", one_corrupt_cache_entry, 0,
         ("unreadable cache entry", "BadZipFile", "moved to", "/corrupt/")),
    # 6. delimiter
    Case("semicolon delimiter", "train", with_table(lambda t: None, sep=";"), 2,
         ("separated by semicolons", "comma-separated"), ("data.target",)),
    # 7. checks before the backbone
    Case("split=slide without a slide column", "train",
         lambda w: with_table(lambda t: t.drop(columns="slide"))(w) + ["split=slide"], 2,
         ("split=slide needs a 'slide' column",)),
    Case("typo in split.kind", "train", overrides("split.kind=sampel"), 2,
         ("split.kind='sampel' is unknown",)),
    Case("too few samples for the folds", "train", overrides("protocol.folds=50"), 2,
         ("too few sample groups", "50 folds", "protocol.folds")),
    Case("images too small for the patches", "train",
         overrides("preprocess.patches.size=150", "preprocess.patches.rotation=0"), 2,
         ("too small for 150px patches", ".tif", "23 more", "remove its row from")),
    Case("image too small in predict", "predict", one_tiny_image, 2,
         ("thumbnail.png", "too small", "leave it out")),
    # 9. Ctrl-C during extraction
    Case("Ctrl-C during extraction", "train", interrupted_after_two_images, 130,
         ("interrupted: 2 of 24 images have cached embeddings", "same command")),
    # 10. one unreadable image among good ones
    Case("unreadable image in predict", "predict", one_unreadable_image(), 1,
         ("not predicted", "broken.tif", "cannot decode", "1 of 3 images"), ("descriptor",)),
    Case("unreadable image in predict, strict", "predict", one_unreadable_image("strict=true"),
         2, ("broken.tif", "cannot decode"), ("descriptor",)),
    # 13. a path with spaces and non-ASCII characters reaches the loader whole
    Case("path with spaces and non-ASCII", "train",
         descriptor_text("image;burst_count\n", "my scans/Probe µ-SLS é/descriptor.csv"), 2,
         ("my scans/Probe µ-SLS é/descriptor.csv", "semicolons")),
    # 15. labels, samples and classes, before the backbone (issue: reliability, third round)
    Case("sample under two burst counts", "train", with_table(one_sample_under_two_labels),
         2, ("has 'burst_count' values", "a sample has one value", ":2,")),
    Case("labels differing only by case", "train", grades(respell("low", "Low")), 2,
         ("differ only by case", "['Low', 'low']", "descriptor.csv:3:")),
    Case("labels with trailing spaces", "train", grades(respell("low", "low ")), 0,
         ("spaces trimmed", "'low '", "descriptor.csv:3:")),
    Case("infinite value in a numeric target", "train",
         with_table(cell(2, "burst_count", "inf")), 2, ("['inf']", "infinite", ":4")),
    Case("infinite value in a regression target", "train",
         lambda w: with_table(cell(2, "burst_count", "1e999"))(w) + ["task=regression"], 2,
         ("infinite", ":4")),
    Case("NaN spelled as Excel does", "train", with_table(cell(2, "burst_count", "#N/A")), 2,
         ("no value in target column 'burst_count'", ":4")),
    Case("a class with one sample", "train", with_table(one_sample_of_250), 2,
         ("'250' (1 sample)", "split.min_class_groups=2", "split.allow_small_classes=true")),
    Case("image path with backslashes", "train", with_table(backslash_path), 2,
         ("not found", "forward slashes")),
    Case("CORN head on two classes", "train",
         overrides("model=corn", "data.classes=[50,250]"), 2,
         ("model.module.loss=corn needs at least three levels", "use model=mlp")),
    Case("CORN head on unordered names", "train",
         lambda w: grades(lambda t: None)(w) + ["model=corn"], 2,
         ("needs an ordered classification target", "data.order.grade")),
    Case("level-value head on unordered names", "train",
         lambda w: grades(lambda t: None)(w) + ["model=level_value"], 2,
         ("model.module.loss=level_value needs an ordered classification target",
          "data.order.grade")),
    Case("order that misses a class", "train",
         lambda w: grades(lambda t: None)(w) + ["+data.order.grade=[low,high]"], 2,
         ("data.order.grade ['low', 'high'] does not match", "missing ['mid']")),
    Case("order for a regression target", "train",
         overrides("task=regression", "+data.order.burst_count=[50,150,250]"), 2,
         ("data.order is for classification targets",)),
    # extra inputs (data.extra_inputs): checked before the backbone
    Case("extra input column missing", "train", overrides("data.extra_inputs=[thickness_nm]"),
         2, ("data.extra_inputs column(s) ['thickness_nm'] not found", "power_w")),
    Case("extra input with text", "train", lambda w: with_table(cell(2, "power_w", "high"))(w)
         + ["data.extra_inputs=[power_w]"], 2, ("'power_w' holds text ['high']", ":4")),
    Case("extra input cell empty", "train", lambda w: with_table(cell(3, "power_w", np.nan))(w)
         + ["data.extra_inputs=[power_w]"], 2, ("no value in extra input column 'power_w'",
                                                ":5")),
    Case("extra input is the target", "train", overrides("data.extra_inputs=[burst_count]"), 2,
         ("is the target itself", "give the answer away")),
    # 19. a blank micrograph: warned about, its measures NaN (never a silent 0 or a crash)
    Case("black image in training", "train", one_black_image, 0,
         ("black.tif: blank", "black.tif: segmentation found only", "measures are NaN")),
    # 18. physical scale: pixel sizes needed, given wrong, or unreadable
    Case("pixel size unknown", "train", image_without_metadata(), 2,
         ("no_tag.png: pixel size unknown", "pixel_size_nm column", "pixel_size_nm=null")),
    Case("pixel size zero in the descriptor", "train",
         lambda w: with_table(cell(1, "pixel_size_nm", 0))(w)
         + ["preprocess.scale.pixel_size_nm=auto"], 2,
         ("descriptor.csv:3: pixel_size_nm 0", "not a positive number")),
    Case("negative pixel size in the descriptor", "train",
         with_table(cell(1, "pixel_size_nm", -4.0)), 2,
         ("descriptor.csv:3: pixel_size_nm -4.0", "not a positive number")),
    Case("sidecar that does not parse", "train",
         image_without_metadata("notes from the microscope session\n"), 2,
         ("no_tag.txt: instrument sidecar not understood", "pixel_size_nm column")),
    Case("patch size in µm without a scale", "train",
         overrides("preprocess.patches.size_um=0.2"), 2,
         ("preprocess.patches.size_um needs a physical scale",)),
    # issue 32: one unit per run; a mis-tagged or impossible pixel size named, never used
    Case("some images without a pixel size, at one scale", "train",
         untagged_images(2, "preprocess.scale.pixel_size_nm=auto"), 2,
         ("no_tag_0.png: pixel size unknown", "2 of 24 images have no usable pixel size",
          "no_tag_1.png", "pixel_size_nm column")),
    Case("some images without a pixel size, pixels as read", "train", untagged_images(1), 0,
         ("no_tag_0.png: pixel size unknown", "1 of 24 images have no usable pixel size",
          "measures are in px"), then=measures_in_px),
    Case("one image tagged 1 mm per pixel", "train",
         retagged("1e-3", "preprocess.scale.pixel_size_nm=auto"), 2,
         ("mistagged.tif 1e+06 nm (FEI/Thermo tag)", "median 4 nm", "outlier_factor=3",
          "pixel_size_nm column")),
    Case("negative pixel size in a file", "train",
         retagged("-4e-09", "preprocess.scale.pixel_size_nm=auto"), 2,
         ("mistagged.tif: pixel size -4 nm in its FEI/Thermo tag is not a positive",),
         ("no instrument metadata",)),
    Case("zero pixel size in a file", "train",
         retagged("0", "preprocess.scale.pixel_size_nm=auto"), 2,
         ("mistagged.tif: pixel size 0 nm in its FEI/Thermo tag is not a positive",),
         ("no instrument metadata",)),
    Case("infinite pixel size in a file", "train",
         retagged("inf", "preprocess.scale.pixel_size_nm=auto"), 2,
         ("mistagged.tif: pixel size inf nm in its FEI/Thermo tag is not a positive",)),
    Case("NaN pixel size in a file", "train",
         retagged("nan", "preprocess.scale.pixel_size_nm=auto"), 2,
         ("mistagged.tif: pixel size nan nm in its FEI/Thermo tag is not a positive",)),
    # issue 32: a blank image's measures are NaN, as its warning says
    Case("white image in training", "train", one_white_image, 0,
         ("white.tif: segmentation found only solid", "measures are NaN"),
         then=blank_measures_are_nan),
    # issue 32: a readable but wrong cache entry is set aside like a corrupt one
    Case("cache entry of another width", "train", one_wrong_cache_entry("width"), 0,
         ("wrong cache entry", "the backbone's are", "moved to", "/corrupt/")),
    Case("cache entry with a NaN", "train", one_wrong_cache_entry("nan"), 0,
         ("wrong cache entry", "1 NaN or infinite embeddings values", "moved to", "/corrupt/")),
    Case("measures cache entry that is not measures", "train", one_wrong_measures_entry, 0,
         ("wrong measures cache entry", "moved to", "/corrupt/")),
    # 16. run folders: a killed run's folder is taken over, a finished one refused
    Case("folder of a killed run", "train", dead_claim, 0, ("no longer running",),
         then=took_over_the_folder),
    Case("folder of a finished run", "train", finished_folder, 2,
         ("holds a finished run", "hydra.run.dir"), leaves_error_txt=False),
    # 17. predict and explain, per image
    Case("missing path and folder in predict", "predict", missing_and_folder_in_predict, 1,
         ("typo.tif: image not found", "a_folder: is a folder", "2 of 4 images")),
    Case("subfolder in images=FOLDER", "predict", folder_with_subfolder, 0,
         ("1 subfolder(s) skipped (old)",)),
    Case("blank and multi-page images in predict", "predict", suspect_images, 0,
         ("black.png: blank", "two_detectors.tif: a TIFF of 2 full-size pages")),
    Case("image too small to explain", "explain", explain_tiny_image, 1,
         ("thumbnail.png", "the run's", "px patches"), ("preprocess.patches.size",)),
    Case("run without metrics.json", "predict", without_metrics, 2,
         ("(metrics.json missing)",), ("config.yaml and",)),
    Case("checkpoint with pickled code", "predict", pickled_code_in_checkpoint, 2,
         ("checkpoint refused", "GLOBAL posix.getcwd"), ("truncated",)),
    # 20. numbers typed on the command line, checked against conf's schema before anything runs
    # (issue 32; the plan's target.probability is in tests/test_plan.py)
    Case("shard that is not a number", "extract", extract_args("shard=abc"), 2,
         ("shard=abc: not an integer; use an integer in [0, 1) (shards=1)",)),
    Case("shard beyond the shards", "extract", extract_args("shard=5", "shards=2"), 2,
         ("shard=5: out of range; use an integer in [0, 2) (shards=2)",)),
    Case("one fold", "train", overrides("protocol.folds=1"), 2,
         ("protocol.folds=1: out of range; use an integer >= 2 (protocol=holdout",)),
    # 21. files predict needs are checked against the manifest, never replaced by a fallback
    Case("image calibration deleted", "predict", damaged_calibration("missing"), 2,
         ("sample-ensemble.calibration.json", "the image calibration of the served model",
          "is missing"), ("older run",)),
    Case("image calibration damaged", "predict", damaged_calibration("truncated"), 2,
         ("sample-ensemble.calibration.json", "the image calibration of the served model",
          "truncated"), ("JSONDecodeError",)),
    Case("checkpoint replaced", "predict", replaced_checkpoint, 2,
         ("sample-ensemble.ckpt", "the served model's checkpoint", "sha256", "differs")),
    # 22. a write that fails (disk full, quota, size limit): named, and not called a bug
    Case("disk full at the checkpoint", "train", disk_full_at_the_checkpoint, 74,
         ("stopped: could not write", "checkpoints/sample-ensemble.ckpt", "disk full",
          "free space")),
    Case("report on a run stopped by a full disk", "report",
         sweep_with_a_run_stopped_by_a_full_disk, 0,
         ("skipped run 1: stopped: could not write", "sample-ensemble.ckpt", "disk full"),
         ("crashed",)),
]


def run_script(script: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``sinterlab-<script> ARGS`` in this process: (exit status, stdout, stderr)."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [f"sinterlab-{script}", *args])
    try:
        SCRIPTS[script]()
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


def marked(case: Case):
    """A case whose training run completes trains end to end: `make test-slow`."""
    slow = case.script == "train" and case.code == 0
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case", [marked(c) for c in CASES])
def test_bad_input(case, tmp_path, tiny_descriptor, request, monkeypatch, capsys):
    world = World(tmp_path, tiny_descriptor, request, monkeypatch)
    args = case.make(world)
    run_dir = tmp_path / "run"
    if case.script == "train":
        args = [*FAST, f"features.cache_dir={world.cache}", *args, f"hydra.run.dir={run_dir}",
                f"paths.log_dir={tmp_path / 'logs'}"]
    code, out, err = run_script(case.script, args, monkeypatch, capsys)
    said = err + out
    if case.script == "train" and code == 0:
        said += (run_dir / "train.log").read_text() + (run_dir / "report.md").read_text()
    assert code == case.code, said[-3000:]
    for words in case.words:
        assert words in said, f"{words!r} not in: {said[-3000:]}"
    for words in case.absent:
        assert words not in err, f"{words!r} in: {err[-3000:]}"
    if case.script == "train" and code:
        error = [line for line in err.splitlines() if line.startswith("sinterlab-train:")]
        assert len(error) == 1, err
        assert not (run_dir / "metrics.json").exists() or not case.leaves_error_txt
        if case.leaves_error_txt:
            message = error[0].removeprefix("sinterlab-train: ")
            assert (run_dir / "error.txt").read_text().strip() == message
            assert message in (run_dir / "train.log").read_text()
        else:
            assert not (run_dir / "error.txt").exists()
        if code == 2:
            assert not list(world.cache.rglob("*.npz")), "extraction ran before the check"
    if case.then:
        case.then(run_dir)
