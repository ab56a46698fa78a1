"""The config schema (sinterlab/config_schema.py): every number in conf/ has a rule, every rule
names a key of conf/, and a value outside its rule is one line naming the key and the range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sinterlab.cli import CONF_DIR
from sinterlab.config_schema import SCHEMAS, UNCHECKED, check_config
from sinterlab.errors import SinterlabError

#: the config groups of an entry config whose options may bring their own numbers (extract is
#: train's config plus its shard keys)
GROUPS = {"train": ["backbone", "model", "split", "protocol", "trainer", "experiment", "debug",
                    "hparams_search"],
          "synth": ["synth/preset"]}


def compose_entry(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def variants(name: str) -> list[list[str]]:
    """The entry config as composed by default, and as few compositions as hold every option of
    each of its groups (the k-th composition takes each group's k-th option)."""
    options = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
               for group in GROUPS.get(name, [])}
    rounds = max(map(len, options.values()), default=0)
    return [[], *([f"{group}={names[k]}" for group, names in options.items() if k < len(names)]
                  for k in range(rounds))]


def leaves(node, path=()):
    """(path, value) of every leaf under ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, str(i)))
    else:
        yield path, node


def covers(pattern: str, path: tuple[str, ...]) -> bool:
    """``pattern`` (dotted, ``*`` for any one key) names ``path`` or a node above it."""
    parts = pattern.split(".")
    return len(parts) <= len(path) and all(p in ("*", k) for p, k in zip(parts, path,
                                                                          strict=False))


@pytest.fixture(scope="module")
def composed() -> dict[str, list]:
    """Each entry config in all its variants, resolved (without ``hydra``: the sweeper's and
    launcher's numbers are the plugins' to check)."""
    out = {}
    for name in SCHEMAS:
        out[name] = []
        for overrides in variants(name):
            cfg = compose_entry(name, overrides)
            if "paths" in cfg:  # ${hydra:...} resolves only inside a Hydra app
                cfg.paths.output_dir = "out"
            out[name].append(OmegaConf.to_container(cfg, resolve=True))
    return out


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_number_in_conf_has_a_range(name, composed):
    patterns = [*SCHEMAS[name], *UNCHECKED]
    uncovered = sorted({".".join(path) for cfg in composed[name] for path, value in leaves(cfg)
                        if isinstance(value, int | float) and not isinstance(value, bool)
                        and not any(covers(p, path) for p in patterns)})
    assert uncovered == [], f"add a rule to sinterlab/config_schema.py for {uncovered}"


#: keys that no file in conf/ sets, with the reason they have a rule
OPTIONAL = {"space.parameters.*.levels": "a list of levels in place of low, high and step",
            **{f"model.candidates.*.module.{key}": "the random forest's, when a user adds it to "
               "model=auto (it is not in the default list)"
               for key in ("n_estimators", "min_samples_leaf", "random_state", "n_jobs")}}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_rule_names_a_key_of_conf(name, composed):
    """A renamed key in conf/ leaves no rule behind (a ``*`` may match an empty mapping; predict
    and explain take the training config's groups)."""
    def known(pattern: str) -> bool:
        parts = pattern.split(".")
        for cfg in (cfg for configs in composed.values() for cfg in configs):
            nodes = [cfg]
            for part in parts:
                if part == "*" and nodes and not any(nodes):  # an empty mapping: {}
                    return True
                nodes = [n[k] for n in nodes if isinstance(n, Mapping)
                         for k in (n if part == "*" else [part] if part in n else [])]
            if nodes:
                return True
        return False
    stale = [p for p in SCHEMAS[name] if not known(p) and p not in OPTIONAL]
    assert stale == []


def test_the_defaults_pass_and_a_bad_value_is_one_line():
    for name in SCHEMAS:
        check_config(compose_entry(name, []), SCHEMAS[name])
    cfg = compose_entry("train", ["model=auto", "model.candidates.linear.module.lr=0",
                                  "preprocess.patches.size_um=-0.1"])
    with pytest.raises(SinterlabError) as err:
        check_config(cfg, SCHEMAS["train"])
    assert str(err.value) == ("preprocess.patches.size_um=-0.1: out of range; use null or a "
                              "number > 0")


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("train", ["model=auto", "model.candidates.linear.module.lr=0"],
     "model.candidates.linear.module.lr=0: out of range; use a number > 0"),
    ("train", ["model=auto", "model.candidates.sk_logreg.grid={module.C: [1, -1]}"],
     "model.candidates.sk_logreg.grid.module.C[1]=-1: out of range; use a number > 0"),
    ("train", ["protocol.seeds=[0,1.5]"], "protocol.seeds[1]=1.5: not an integer"),
    ("train", ["protocol.seeds=3"], "protocol.seeds=3: not a list; use a list of values"),
    ("train", ["protocol=holdout", "protocol.folds=5"],
     "protocol.folds=5: out of range; use 1 (protocol=cv for folds)"),
    ("train", ["features.devices=gpu"], "features.devices=gpu: not an integer; use auto or an "
     "integer >= -1 or a list of values, each an integer >= 0"),
    ("train", ["preprocess.read.percentiles=[99,1]"], "not in ascending order"),
    ("train", ["preprocess.patches.rotation=quarter"], "use dihedral or a number in [0, 360]"),
    ("train", ["seed=true"], "seed=true: not an integer"),
    ("train", ["trainer.max_epochs=inf"], "trainer.max_epochs=inf: not a finite number"),
    # the rest of the rules sinterlab-train states before anything runs (tests/test_bad_input.py
    # runs the command itself on one of them, protocol.folds=1)
    ("train", ["evaluation.bootstrap.confidence=95"],
     "evaluation.bootstrap.confidence=95: out of range; use a number in (0, 1)"),
    ("train", ["preprocess.patches.per_image=0"],
     "preprocess.patches.per_image=0: out of range; use an integer >= 1"),
    ("train", ["model.module.dropout=1.0"],
     "model.module.dropout=1.0: out of range; use a number in [0, 1)"),
    ("train", ["split.fractions.test=0.2"],
     "split.fractions={train: 0.8, val: 0.1, test: 0.2}: the shares sum to 1.1"),
    ("predict", ["features.batch_size=0"], "features.batch_size=0: out of range"),
    ("synth", ["+image.pixel_nm_by_slide={2: 0}"], "image.pixel_nm_by_slide.2=0: out of range"),
    ("plan", ["+map.fixed.duty_cycle=x"], "map.fixed.duty_cycle=x: not a number"),
    ("train", ["evaluation.baseline_dtype=float16"],
     "evaluation.baseline_dtype=float16: not allowed; use float32 or float64"),
    ("train", ["model=auto", "model.candidates.sk_logreg.module.dtype=half"],
     "model.candidates.sk_logreg.module.dtype=half: not allowed; use float32 or float64"),
])
def test_values_outside_their_rule(name, overrides, message):
    with pytest.raises(SinterlabError) as err:
        check_config(compose_entry(name, overrides), SCHEMAS[name])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "overrides"), [
    ("train", ["features.devices=[0,1]", "trainer.devices=auto", "library_threads=null"]),
    ("train", ["preprocess.patches.rotation=dihedral", "preprocess.scale.pixel_size_nm=auto"]),
    ("train", ["hparams_search=optuna", "model.module.dropout=0.0"]),
    ("predict", []),  # features, preprocess: null; their keys are absent, so skipped
])
def test_values_within_their_rule(name, overrides):
    check_config(compose_entry(name, overrides), SCHEMAS[name])
