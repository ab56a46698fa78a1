"""sinterlab-plan: analytic responses the GP must recover, the three goals, the leave-one-out
check, bad input, the synthetic sheet resistance and a few simulated rounds."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from scipy.stats import spearmanr

from sinterlab.cli import CONF_DIR
from sinterlab.cli.plan import plan
from sinterlab.errors import SinterlabError
from sinterlab.planning.goals import fit_responses, map_table, next_batch, target_table
from sinterlab.planning.measures import descriptor_measures
from sinterlab.planning.responses import load_samples, responses_from_config
from sinterlab.planning.space import space_from_config
from sinterlab.synth.generate import generate_dataset, load_preset
from sinterlab.synth.measurements import sheet_resistance
from tests.conftest import made_once, run


def plan_cfg(*overrides: str):
    """The real conf/plan.yaml with ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="plan", overrides=list(overrides))


#: one parameter x in 0..10 (levels every 0.5), one response y read from the descriptor
LINE = ["~space.parameters.burst_count", "~space.parameters.duty_cycle",
        "+space.parameters.x={low: 0, high: 10, step: 0.5}", "space.cost.expression=x",
        "~responses.sheet_resistance", "+responses.y={column: y}", "target.response=y",
        "next.response=y"]
#: two parameters a, b in 0..10 (integer levels), response y
PLANE = ["~space.parameters.burst_count", "~space.parameters.duty_cycle",
         "+space.parameters.a={low: 0, high: 10, step: 1}",
         "+space.parameters.b={low: 0, high: 10, step: 1}", "space.cost.expression=a",
         "~responses.sheet_resistance", "+responses.y={column: y}", "target.response=y",
         "next.response=y"]


def write_descriptor(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


#: the surrogates fitted so far, by what they were fitted to: tests asking for the same fit share it
FITS: dict[tuple, dict] = {}


def fitted_from(cfg):
    space = space_from_config(cfg.space)
    responses = responses_from_config(cfg.responses)
    samples = load_samples(cfg.data.descriptor, space.names, responses,
                           cfg.data.sample_column, cfg.data.measures)
    key = (samples.to_csv(), repr(space.bounds.tolist()), repr(responses),
           float(cfg.surrogate.interval))
    if key not in FITS:
        FITS[key] = fit_responses(samples, space, responses, float(cfg.surrogate.interval), 3, 0)
    return space, samples, FITS[key]


@pytest.fixture
def monotone(tmp_path):
    """y = 1 + 3 (1 - exp(-x / 3)) + noise (sd 0.05), 12 samples, two images each."""
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(0, 10, 12), 2)
    y = 1 + 3 * (1 - np.exp(-x / 3)) + rng.normal(0, 0.05, len(x))
    sample = np.repeat([f"s{i}" for i in range(12)], 2)
    return write_descriptor(tmp_path / "line.csv", pd.DataFrame(
        {"image": "none.tif", "sample_id": sample, "x": x, "y": y}))


def test_map_recovers_a_monotone_curve_within_its_band(monotone):
    cfg = plan_cfg(*LINE, f"data.descriptor={monotone}")
    space, samples, fitted = fitted_from(cfg)
    assert list(samples["y_n"]) == [2] * 12 and (samples["y_sd"] > 0).all()
    table = map_table(space.grid(), space, fitted, 0.9)
    truth = 1 + 3 * (1 - np.exp(-table["x"] / 3))
    inside = (table["y_lower"] <= truth) & (truth <= table["y_upper"])
    assert inside.all(), table[~inside]
    assert (table["y_upper"] - table["y_lower"]).max() < 0.6  # a band, not the whole axis
    assert np.all(np.diff(table["y_mean"]) > -0.02)  # monotone up to wiggles
    loo = fitted["y"].loo
    assert loo.n == 12 and 0.5 <= loo.coverage <= 1.0 and loo.rmse < 0.2


@pytest.fixture
def plane(tmp_path):
    """y = a + b + noise (sd 0.1) on a 4 x 4 grid of samples."""
    rng = np.random.default_rng(1)
    a, b = (v.ravel() for v in np.meshgrid([0, 3, 7, 10], [0, 3, 7, 10]))
    y = a + b + rng.normal(0, 0.1, len(a))
    return write_descriptor(tmp_path / "plane.csv", pd.DataFrame(
        {"image": "none.tif", "sample_id": [f"s{i}" for i in range(len(a))], "a": a, "b": b,
         "y": y}))


def test_target_returns_the_known_feasible_region_cheapest_first(plane):
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", "target.value=8",
                   "target.probability=0.9")
    space, _, fitted = fitted_from(cfg)
    table = target_table(space.grid(), space, fitted, cfg.target, 0.9)
    meets = table[table["meets"]]
    total = meets["a"] + meets["b"]
    assert (total <= 8).all()  # nothing beyond the true boundary
    clear = table[table["a"] + table["b"] <= 6]  # well inside: all found
    assert clear["meets"].all()
    assert list(meets["cost"]) == sorted(meets["cost"])
    assert not table.loc[table["a"] + table["b"] >= 10, "meets"].any()


@pytest.mark.parametrize("acquisition", ["nei", "ipv"])
def test_next_respects_levels_constraints_and_measured(plane, acquisition):
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", "space.constraints=['a + b <= 12']",
                   "space.parameters.a.step=2", f"next.acquisition={acquisition}", "next.q=3")
    space, samples, fitted = fitted_from(cfg)
    batch, name = next_batch(space.grid(), space, fitted, cfg.next, 0.9)
    assert len(batch) == 3 and {"nei": "Noisy", "ipv": "Integrated"}[acquisition] in name
    assert set(batch["a"]) <= set(range(0, 11, 2)) and set(batch["b"]) <= set(range(11))
    assert (batch["a"] + batch["b"] <= 12).all()
    measured = set(map(tuple, samples[["a", "b"]].to_numpy(float)))
    proposed = list(map(tuple, batch[["a", "b"]].to_numpy(float)))
    assert len(set(proposed)) == 3 and not set(proposed) & measured
    assert all(r.startswith("predicted y") for r in batch["reason"])
    if acquisition == "nei":  # minimising a + b: proposals in the low corner
        assert (batch["a"] + batch["b"]).max() <= 6


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory):
    """The plan preset with one image per sample: 18 samples with a sheet resistance."""
    return made_once(tmp_path_factory, "plan_data", lambda folder: generate_dataset(
        load_preset("plan", design__images_per_sample=1), folder))


@pytest.mark.slow
def test_map_and_cli_next_on_synthetic_sheet_resistance(plan_data, tmp_path):
    cfg = plan_cfg(f"data.descriptor={plan_data}", "goal=map", "map.points=12")
    lines = plan(cfg, tmp_path / "map")
    assert "leave-one-sample-out coverage of the 90% interval" in lines[1]
    text = (tmp_path / "map" / "plan.md").read_text()
    assert "LOO coverage of the 90% interval" in text and (tmp_path / "map" / "plan.html").is_file()
    assert (tmp_path / "map" / "figures" / "sheet_resistance_map.png").is_file()
    assert (tmp_path / "map" / "figures" / "sheet_resistance_curves.png").is_file()
    table = pd.read_csv(tmp_path / "map" / "plan.csv")
    assert len(table) == 12 * 9 and (table["sheet_resistance_lower"] > 0).all()
    assert (table["sheet_resistance_lower"] < table["sheet_resistance_mean"]).all()
    out = tmp_path / "next"
    done = run("sinterlab-plan", f"data.descriptor={plan_data}", "goal=next",
               f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    batch = pd.read_csv(out / "plan.csv")
    assert len(batch) == 3 and batch["burst_count"].isin(range(25, 301, 25)).all()
    assert "next 3 experiments" in done.stdout and "warning" not in done.stdout.lower()
    assert not done.stderr.strip()


def test_every_goal_answers_and_writes_its_own_section(tmp_path):
    """The goals are a registry: each one's table, console lines and plan.md section (on a 3 x
    3 plane: what is checked here is the shape of each answer, not its accuracy)."""
    from sinterlab.planning.answers import GOALS

    a, b = (v.ravel() for v in np.meshgrid([0, 5, 10], [0, 5, 10]))
    small = write_descriptor(tmp_path / "small.csv", pd.DataFrame(
        {"image": "none.tif", "sample_id": [f"s{i}" for i in range(9)], "a": a, "b": b,
         "y": a + b + np.random.default_rng(1).normal(0, 0.1, 9)}))
    assert list(GOALS) == ["map", "target", "next"]
    headings = {"map": "## Response surface", "target": "## Target: y <= 2",
                "next": "## Next batch: 2 experiments"}
    for name, goal in GOALS.items():
        cfg = plan_cfg(*PLANE, f"data.descriptor={small}", f"goal={name}", "map.points=5",
                       "target.op='<='", "target.value=2", "next.q=2")
        lines = plan(cfg, tmp_path / name)
        assert lines[-1].startswith("table: ") and goal.name == name
        assert headings[name] in (tmp_path / name / "plan.md").read_text()


def test_blank_response_cells_leave_those_samples_out(plane, tmp_path):
    frame = pd.read_csv(plane)
    frame.loc[[0, 5], "y"] = np.nan
    path = write_descriptor(tmp_path / "gaps.csv", frame)
    cfg = plan_cfg(*PLANE, f"data.descriptor={path}")
    _, samples, fitted = fitted_from(cfg)
    assert samples["y"].isna().sum() == 2 and list(samples["y_n"][:1]) == [0]
    assert fitted["y"].loo.n == 14


@pytest.mark.slow
def test_image_measures_are_computed_as_a_response(plan_data, tmp_path):
    cfg = plan_cfg(f"data.descriptor={plan_data}", "data.measures=compute",
                   "+responses.porosity={source: measures, column: porosity}",
                   f"measures.cache_dir={tmp_path / 'cache'}", "goal=target",
                   "target.response=porosity", "target.op='<='", "target.value=0.5",
                   "target.probability=0.5")
    lines = plan(cfg, tmp_path / "out")
    assert any(line.startswith("porosity: leave-one-sample-out coverage") for line in lines)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 18  # one entry per image
    table = pd.read_csv(tmp_path / "out" / "plan.csv")
    assert table["meets"].all()  # porosity <= 0.5 everywhere with p >= 0.5
    frame, _ = descriptor_measures(plan_data, "image", "sample_id", cfg.preprocess,
                                   cfg.measures)  # now from the cache
    truth = pd.read_csv(plan_data.parent / "truth.csv")
    assert list(frame["image"]) == list(truth["image"])
    assert spearmanr(frame["porosity"], truth["porosity"]).statistic > 0.5


def test_too_few_samples_is_said_and_exits_cleanly(plane, tmp_path):
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", "surrogate.min_samples=50",
                   "goal=next")
    lines = plan(cfg, tmp_path)
    assert "too few samples to plan" in lines[0] and "16 sample(s)" in lines[0]
    assert "too few samples to plan" in (tmp_path / "plan.md").read_text()
    assert not (tmp_path / "plan.csv").exists()


def bad_text(path, frame):
    frame = frame.astype({"y": object})
    frame.loc[2, "y"] = "n/a?"
    return write_descriptor(path, frame)


def bad_outside(path, frame):
    frame.loc[0, "a"] = 12
    return write_descriptor(path, frame)


def bad_infinite(path, frame):
    frame = frame.astype({"y": object})
    frame.loc[2, "y"] = "inf"
    return write_descriptor(path, frame)


def bad_missing(path, frame):
    frame["y"] = np.nan
    return write_descriptor(path, frame)


@pytest.mark.parametrize(("edit", "overrides", "message"), [
    (bad_text, [], "column 'y' has text ['n/a?'] in CSV row(s) [4]"),
    (bad_outside, [], "has a=12, outside space.parameters.a [0, 10]"),
    (bad_missing, [], "column 'y' (responses.y) has no values"),
    (None, ["+responses.z={column: resistivity}"], "no column 'resistivity' (set by "
     "responses.z.column)"),
    (None, ["space.constraints=['a + b > 30']"], "exclude every setting"),
    (bad_infinite, [], "column 'y' has infinite values ['inf'] in CSV row(s) [4]; write finite"),
    (None, ["goal=target", "target.probability=1.5"],
     "target.probability=1.5: out of range; use a number in (0, 1)"),
    (None, ["space.parameters.a.high=ten"], "space.parameters.a.high=ten: not a number; use a "
     "number"),
    (None, ["goal=optimise"], "goal='optimise' is unknown; use one of ['map', 'target', 'next']"),
    # a step typed too fine: refused with the count before any memory is taken
    (None, ["space.parameters.a.step=1e-6"], "space.parameters.a: step=1e-06 gives 10,000,001 "
     "levels in [0, 10], more than space.max_settings=1,000,000"),
    (None, ["space.parameters.a.step=0.01", "space.parameters.b.step=0.01"],
     "space.parameters: 1001 x 1001 = 1,002,001 settings, more than space.max_settings"),
    (None, ["space.cost.expression='a - 5'"], "space.cost.expression='a - 5' is negative (-5 "
     "at {'a': 0.0, 'b': 0.0})"),
])
def test_bad_input_is_one_line_naming_the_column_or_key(plane, tmp_path, edit, overrides,
                                                        message):
    path = edit(tmp_path / "bad.csv", pd.read_csv(plane)) if edit else plane
    cfg = plan_cfg(*PLANE, f"data.descriptor={path}", *overrides)
    with pytest.raises(SinterlabError) as err:
        plan(cfg, tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["goal=target", "target.response=porosity"], "target.response='porosity' is not a "
     "response; use one of ['y']"),
    (["goal=target", "target.op='<'"], "target.op='<' is unknown; use one of ['<=', '>=']"),
    (["goal=next", "next.acquisition=ei"], "next.acquisition='ei' is unknown; use one of"),
    (["goal=next", "next.direction=down"], "next.direction='down' is unknown; use one of"),
])
def test_a_goals_settings_are_checked_before_anything_is_fitted(plane, tmp_path, monkeypatch,
                                                                 overrides, message):
    from sinterlab.planning import goals

    def fitted(*args, **kwargs):
        raise AssertionError("fitted before the goal's settings were checked")
    monkeypatch.setattr(goals, "fit_responses", fitted)
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", *overrides)
    with pytest.raises(SinterlabError) as err:
        plan(cfg, tmp_path / "out")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_bad_input_exits_2_with_one_line(plane, tmp_path):
    done = run("sinterlab-plan", *PLANE, f"data.descriptor={plane}", "goal=target",
               "target.response=porosity", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sinterlab-plan: error: target.response='porosity' is not a response; use one of "
        "['y'] (or add it under responses)"]


def test_measures_csv_is_a_response_source(plane, tmp_path):
    frame = pd.read_csv(plane)
    measures = pd.DataFrame({"image": "none.tif", "sample_id": np.repeat(frame["sample_id"], 2),
                             "porosity": np.repeat(0.3 - 0.01 * (frame["a"] + frame["b"]), 2)})
    measures.to_csv(tmp_path / "measures.csv", index=False)
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", f"data.measures={tmp_path}/measures.csv",
                   "+responses.porosity={source: measures, column: porosity}")
    space, samples, fitted = fitted_from(cfg)
    assert set(fitted) == {"y", "porosity"} and (samples["porosity_n"] == 2).all()
    np.testing.assert_allclose(samples["porosity"], 0.3 - 0.01 * (samples["a"] + samples["b"]))


@pytest.mark.slow
def test_any_table_with_a_sample_column_is_a_response_source(plane, tmp_path):
    frame = pd.read_csv(plane)  # e.g. a run's oof_samples.csv: sample column "sample"
    oof = pd.DataFrame({"sample": frame["sample_id"], "predicted_mean": 2 * frame["a"]})
    oof.to_csv(tmp_path / "oof_samples.csv", index=False)
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}",
                   f"+responses.oof={{source: table, path: {tmp_path}/oof_samples.csv, "
                   "sample_column: sample, column: predicted_mean}")
    _, samples, fitted = fitted_from(cfg)
    np.testing.assert_allclose(samples["oof"], 2 * samples["a"])
    oof.loc[0, "sample"] = "elsewhere"
    oof.to_csv(tmp_path / "oof_samples.csv", index=False)
    with pytest.raises(SinterlabError, match=r"sample\(s\) \['elsewhere'\] are not in"):
        fitted_from(cfg)


def test_sheet_resistance_law_and_presets():
    law = load_preset("plan").measurements.sheet_resistance
    # dense (no pores: percolation factor 1 when phi_c = 0), full necks, no damage: rho / t
    dense = law.copy()
    dense.solid_threshold, dense.damage_n = 0.0, 60.0
    value = sheet_resistance(0.0, 1.0, 1.0, 1.0, dense)
    assert value == pytest.approx(1.7e-8 / 500e-9)
    assert sheet_resistance(0.3, 0.7, 50, 1, law) > sheet_resistance(0.1, 0.7, 50, 1, law)
    assert sheet_resistance(0.1, 0.7, 90, 1, law) > 2 * sheet_resistance(0.1, 0.7, 50, 1, law)
    assert "measurements" not in load_preset("demo") and "measurements" not in load_preset(
        "paper")


def test_plan_preset_writes_one_sheet_resistance_per_sample(tmp_path):
    data = generate_dataset(load_preset("plan", image__width=32, image__height=24),
                            tmp_path / "plan")
    table = pd.read_csv(data)
    per_sample = table.groupby("sample_id")["sheet_resistance_ohm_sq"]
    assert (per_sample.nunique() == 1).all() and (table["sheet_resistance_ohm_sq"] > 0).all()
    means = table.groupby("burst_count")["sheet_resistance_ohm_sq"].mean()
    assert means[50] > means[250]  # more sintering, lower resistance
    tiny = pd.read_csv(generate_dataset(load_preset("tiny", image__width=32, image__height=24,
                                                    design__burst_counts=[50]),
                                        tmp_path / "tiny"))
    assert "sheet_resistance_ohm_sq" not in tiny.columns


def test_simulated_rounds_get_closer_to_the_optimum():
    path = CONF_DIR.parent / "experiments" / "plan_rounds.py"
    spec = importlib.util.spec_from_file_location("plan_rounds", path)
    rounds = importlib.util.module_from_spec(spec)
    sys.modules["plan_rounds"] = rounds
    spec.loader.exec_module(rounds)
    cfg = plan_cfg()
    space, oracle = space_from_config(cfg.space), rounds.Oracle()
    start = rounds.grid_design(space, [2, 2])  # the four corners: far from the optimum
    history = rounds.run_rounds(space, oracle, start, 2, 2, cfg.next, seed=0)
    assert [h["samples"] for h in history] == [4, 6, 8]
    assert history[-1]["excess_pct"] < history[0]["excess_pct"]
    assert history[-1]["distance"] < history[0]["distance"]


#: the two routes a shared plan config once had to run code (issue 32): a module's globals
#: through pandas' ``@`` names, and the same in the cost
ATTACKS = [
    ("space.constraints=[\"@pd.io.common.os.system('touch {marker}') == 0\"]",
     "space.constraints[0]"),
    ("space.cost.expression=\"@pd.io.common.os.system('touch {marker}')\"",
     "space.cost.expression"),
    ("space.constraints=[\"__import__('os').system('touch {marker}') == 0\"]",
     "space.constraints[0]"),
    ("space.cost.expression=\"a.__class__\"", "space.cost.expression"),
]


@pytest.mark.parametrize(("override", "key"), ATTACKS)
def test_plan_expressions_never_run_code(plane, tmp_path, override, key):
    marker = tmp_path / "PWNED"
    cfg = plan_cfg(*PLANE, f"data.descriptor={plane}", override.format(marker=marker))
    with pytest.raises(SinterlabError) as err:
        plan(cfg, tmp_path / "out")
    message = str(err.value)
    assert not marker.exists()
    assert message.startswith(key) and "\n" not in message
    assert "refused" in message or "not an expression" in message


@pytest.mark.parametrize(("expression", "expected"), [
    ("a + b <= 12", lambda f: f.a + f.b <= 12),
    ("2 <= a < 5 and not b == 3", lambda f: (2 <= f.a) & (f.a < 5) & ~(f.b == 3)),
    ("(a > 8) | (b ** 2 >= 81)", lambda f: (f.a > 8) | (f.b ** 2 >= 81)),
    ("-a * 0.5 + b % 3 // 1 != 1", lambda f: -f.a * 0.5 + f.b % 3 // 1 != 1),
])
def test_plan_expressions_compute_what_pandas_computed(expression, expected):
    from sinterlab.planning.expressions import evaluate

    frame = pd.DataFrame({"a": np.arange(11.0), "b": np.arange(11.0)[::-1]})
    result = evaluate(expression, frame, "space.constraints[0]")
    assert result.dtype == bool
    np.testing.assert_array_equal(result, expected(frame).to_numpy())
    np.testing.assert_allclose(evaluate("a * 0.02 + 1", frame, "space.cost.expression"),
                               frame.a * 0.02 + 1)
