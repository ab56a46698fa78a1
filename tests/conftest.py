"""Fixtures: tiny generated SEM data and the real root config composed on CPU in tmp_path.

``make test`` runs the suite in two pytest-xdist workers. What the session shares (the tiny
data, the embedding cache, the trained runs) is made once for both (:func:`made_once`); each
worker trains one of the shared runs before its first test, so neither waits for the other;
Hydra's config files are parsed once per worker (:func:`parse_config_files_once`); the
controller, which only hands out tests, imports none of the training stack."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigResult
from omegaconf import DictConfig, OmegaConf, open_dict

from sinterlab.cli import CONF_DIR
from sinterlab.synth.generate import generate_dataset, load_preset

#: overrides every test run gets: tiny random backbone, few patches and epochs, CPU
FAST = ["backbone=random_tiny", "debug=fast", "trainer.accelerator=cpu",
        "evaluation.contrast.train_head=false"]


def pytest_configure(config):
    """In each process that runs tests (not in pytest-xdist's controller, which only hands tests
    out and would pay 7 s of imports before starting its workers): the training stack imported
    before any test runs (imported first inside a test, it let Lightning's import-time warnings
    past the ini's filterwarnings), and Hydra's config files parsed once.

    absl's logging handler (TensorBoard imports absl) keeps the stderr it saw when imported and
    closes it when Hydra's logging set-up shuts every handler: imported here, outside pytest's
    capture, it keeps the real stderr and never closes one of pytest's capture files."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", default=None):
        with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            import absl.logging  # noqa: F401

            import sinterlab.study.training  # noqa: F401
        parse_config_files_once()


def parse_config_files_once() -> None:
    """Hydra reads and parses every YAML file of a composition again at each one (PyYAML in
    Python: a third of its time); the suite composes about 340 times. Each file's parsed config
    is kept by path and modification time and handed out as a deep copy, so the composition
    itself (defaults lists, overrides, interpolation) runs in full every time;
    ``test_configs.py`` checks that a composition is the same with and without this."""
    Plugins.instance()  # Hydra's first plugin scan executes its config sources' modules again
    for source in map(SourcesRegistry.instance().resolve, ("file", "pkg")):
        if not hasattr(source.load_config, "parsed"):
            source.load_config = parsed_once(source.load_config)


def parsed_once(load: Callable) -> Callable:
    parsed: dict[tuple, ConfigResult] = {}

    def load_config(self, config_path: str) -> ConfigResult:
        file = Path(self.path.removeprefix("file://"), self._normalize_file_name(config_path))
        key = (self.path, config_path, file.stat().st_mtime_ns if file.exists() else None)
        if key not in parsed:
            parsed[key] = load(self, config_path)
        return copy.deepcopy(parsed[key])

    load_config.parsed, load_config.unparsed = parsed, load
    return load_config


@pytest.fixture(autouse=True)
def root_log_handlers():
    """A test that runs a command leaves the root logger as it found it: Hydra's job logging
    adds handlers bound to the test's captured streams, which a later test would write to after
    pytest closed them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def made_once(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """``make(folder)`` run once per test session, shared by pytest-xdist's workers: the first
    worker to ask makes it under a file lock in the session's common temporary folder, the
    others wait and read its answer (a path). Without xdist: once, in this process."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # not a worker: nothing to share
        return make(tmp_path_factory.mktemp(name))
    common = tmp_path_factory.getbasetemp().parent
    folder, answer = common / name, common / f"{name}.made"
    with FileLock(f"{folder}.lock"):
        if not answer.exists():  # first, or after a worker that failed to make it
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            answer.write_text(str(make(folder)))
    return Path(answer.read_text())


@pytest.fixture(scope="session")
def tiny_descriptor(tmp_path_factory) -> Path:
    """The synthetic generator's `tiny` preset: 3 burst counts x 2 slides x 2 sets x 2 images."""
    return made_once(tmp_path_factory, "tiny_data",
                     lambda folder: generate_dataset(load_preset("tiny"), folder))


@pytest.fixture(scope="session")
def design_descriptor(tmp_path_factory) -> Path:
    """Tiny images in the paper's five burst counts crossed with two duty cycles, so every
    experiment config (binary pairs, five classes, regression, multi-target) has its data."""
    cfg = load_preset("tiny", design__burst_counts=[50, 100, 150, 200, 250],
                      design__duty_cycles=[30, 70], design__images_per_sample=1)
    return made_once(tmp_path_factory, "design_data",
                     lambda folder: generate_dataset(cfg, folder))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One embedding cache for the whole session, as the runs of a sweep share one (and as
    they may, its writers are several processes: pytest-xdist's workers)."""
    return made_once(tmp_path_factory, "cache", lambda folder: folder)


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """The real `conf/train.yaml` with `overrides`, outputs in `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir / "logs")
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig().set_config(cfg)
    return cfg


def predict_config(run_dir: Path, **values) -> DictConfig:
    """conf/predict.yaml as a user runs it on their own run ``run_dir`` (``values`` set on
    top): predict's caches are the user's, here the ones that run's training used."""
    cfg = OmegaConf.load(CONF_DIR / "predict.yaml")
    cfg.pop("hydra")
    trained = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    cfg.features.cache_dir = trained["features"]["cache_dir"]
    cfg.measures.cache_dir = trained["measures"]["cache_dir"]
    return OmegaConf.merge(cfg, {"run": str(run_dir)}, values)


@pytest.fixture
def make_cfg(tmp_path, tiny_descriptor, shared_cache):
    """``make_cfg(*overrides)``: a fast run config on the tiny data, writing into tmp_path."""

    def make(*overrides: str) -> DictConfig:
        base = FAST + [f"data.descriptor={tiny_descriptor}", f"features.cache_dir={shared_cache}"]
        return compose_train(base + list(overrides), tmp_path)

    return make


def refit_scale(members: dict) -> list[float]:
    """The image scale a refit without validation rows (model=auto's final model) takes from
    its CV members' calibration record: the median of the kept maps where most members kept
    theirs, else 1 (the raw probabilities)."""
    kept = np.asarray(members["kept"])
    scales = np.asarray(members["scale"])
    if 2 * kept.sum() > len(kept):
        return np.median(scales[kept], axis=0).tolist()
    return [1.0] * scales.shape[1]


BIN = Path(sys.executable).parent


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A console script as a user runs it, in its own process."""
    return subprocess.run([str(BIN / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


#: the run of `trained_run`: 3 folds, one seed, no gallery and no TensorBoard images or
#: projector (the tests of those have runs of their own)
#: model=auto's candidates as conf/model/auto.yaml ships them (test_selection checks the file)
SHIPPED_CANDIDATES = frozenset({
    "mlp", "linear", "mlp_small", "sk_logreg", "sk_pca_logreg", "sk_logreg_image", "sk_svm",
    "sk_measures", "corn", "level_value", "mlp_image", "level_value_image"})


def only_candidates(*keep: str) -> list[str]:
    """The overrides that leave model=auto with the shipped candidates ``keep`` alone."""
    return [f"~model.candidates.{name}" for name in sorted(SHIPPED_CANDIDATES - set(keep))]


TRAINED = ["protocol.folds=3", "protocol.seeds=[0]", "evaluation.gallery.enabled=false",
           "evaluation.tensorboard.figures=false", "evaluation.tensorboard.projector_patches=0"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_descriptor, shared_cache) -> Path:
    """One finished `sinterlab-train debug=fast` run on the tiny data (its metrics.json, report,
    figures, checkpoint and manifest), shared by the tests of the report, the console and
    predict, in every worker; trained in this process (a console script's own start-up costs
    seconds a process; `make test-slow` runs whole runs as a user types them)."""
    from sinterlab.study.training import run_experiment

    def train(run_dir: Path) -> Path:
        cfg = compose_train([*FAST, *TRAINED, f"data.descriptor={tiny_descriptor}",
                             f"features.cache_dir={shared_cache}",
                             # its own measures cache (make exports PROJECT_ROOT, its anchor)
                             f"measures.cache_dir={run_dir / 'cache' / 'measures'}"], run_dir)
        run_experiment(cfg, run_dir)
        GlobalHydra.instance().clear()
        return run_dir

    return made_once(tmp_path_factory, "run", train)


#: the run of `marked_run`: the marker beside the image embedding, one seed
EXTRA = ["data.extra_inputs=[marker]", "protocol.seeds=[0]", "evaluation.tensorboard.figures=false"]


@pytest.fixture(scope="session")
def marked(design_descriptor, tmp_path_factory) -> Path:
    """The design data with a `marker` column that carries the burst count (plus noise), while
    the tiny random backbone's image features carry little (tests/test_extra_inputs.py)."""

    def write(folder: Path) -> Path:
        import pandas as pd  # not in pytest-xdist's controller, which imports this module

        table = pd.read_csv(design_descriptor)
        table["image"] = [str(design_descriptor.parent / p) for p in table["image"]]
        rng = np.random.default_rng(0)
        table["marker"] = 10 + table["burst_count"] / 50 + rng.normal(0, 0.2, len(table))
        table.to_csv(folder / "marked.csv", index=False)
        return folder / "marked.csv"

    return made_once(tmp_path_factory, "marked", write)


@pytest.fixture(scope="session")
def marked_run(marked, shared_cache, tmp_path_factory) -> Path:
    """A finished run on `marked` with the marker as an extra input."""
    from sinterlab.study.training import run_experiment

    def train(run_dir: Path) -> Path:
        run_experiment(compose_train([*FAST, f"data.descriptor={marked}",
                                      f"features.cache_dir={shared_cache}", *EXTRA], run_dir),
                       run_dir)
        return run_dir

    return made_once(tmp_path_factory, "extra_run", train)


#: the shared runs each pytest-xdist worker trains before its first test, side by side, when its
#: session has tests that read them: a worker that first asked for one in mid-session would
#: wait, one core idle, for the other to finish training it
TRAINED_FIRST = {"gw0": "trained_run", "gw1": "marked_run"}


@pytest.fixture(scope="session", autouse=True)
def shared_runs_trained_first(request):
    name = TRAINED_FIRST.get(os.environ.get("PYTEST_XDIST_WORKER", ""))
    if name and any(name in item.fixturenames or (name == "trained_run" and
                                                  item.path.name == "test_bad_input.py")
                    for item in request.session.items):
        request.getfixturevalue(name)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """A pytest-xdist worker, its results sent, leaves at once: tearing down an interpreter that
    holds torch, Lightning and timm (5,000 modules) takes 1.5 s, which the controller waits."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
