"""The shallow-end experiment (training/experiments/shallow_end.py): its plan, the goal verdict, the paired bootstrap
from stored utterance errors, and a --quick run of some stages (partial results render and say what is missing)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "experiments" / "shallow_end.py"
sys.path.insert(0, str(SCRIPT.parent))

import shallow_end  # noqa: E402  (training/experiments/shallow_end.py)
from hf_prunable_ctc.evaluation.significance import paired_bootstrap  # noqa: E402

QUICK = json.loads(shallow_end.QUICK_RECIPE.read_text())


def test_full_recipe_runs_the_informative_stages_first_and_changes_only_the_overrides():
    recipe = shallow_end.load_recipe(shallow_end.FULL_RECIPE)
    stages = shallow_end.plan_stages(recipe)
    assert [s.name for s in stages][:6] == ["D_interctc_sd", "E_dedicated_d2", "E_dedicated_d1", "H_shallow_combined",
                                            "E_dedicated_d4", "E_dedicated_d6"]
    by_name = {s.name: s for s in stages}
    d = by_name["D_interctc_sd"].model_config
    assert d["num_hidden_layers"] == 8 and d["interctc_layers"] == [2, 4, 6]
    for variant in recipe["variants"]:
        stage = by_name[variant["name"]]
        assert stage.model_config == {**d, **variant["overrides"]}
        assert stage.trained_depth == 8 and stage.strategies == ["top"]
    assert by_name["S_sandwich"].model_config["depth_sampling"] == "sandwich"
    assert by_name["K_distillation"].model_config["distillation_weight"] > 0
    for k in recipe["dedicated_depths"]:
        e = by_name[f"E_dedicated_d{k}"].model_config
        assert e["num_hidden_layers"] == k and e["interctc_layers"] == [] and e["stochastic_depth_rate"] == 0.0
    shallow_end.check_configs(stages)  # every config is one the model accepts


def test_quick_recipe_has_every_variant_of_the_full_one():
    full = shallow_end.load_recipe(shallow_end.FULL_RECIPE)
    quick = shallow_end.load_recipe(shallow_end.QUICK_RECIPE)
    assert [v["name"] for v in quick["variants"]] == [v["name"] for v in full["variants"]]
    shallow_end.check_configs(shallow_end.plan_stages(quick))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["stage_order"].append("Z_unknown"), "Z_unknown"),
    (lambda r: r["variants"][0].pop("label"), "name, label and overrides"),
    (lambda r: r["variants"].append(dict(r["variants"][1])), "repeat"),
])
def test_bad_recipes_are_refused_with_the_reason(tmp_path, change, message):
    recipe = json.loads(shallow_end.QUICK_RECIPE.read_text())
    change(recipe)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises(shallow_end.lp.ExperimentError, match=message):
        shallow_end.load_recipe(path)


def test_a_bad_override_is_refused_before_anything_trains():
    recipe = json.loads(shallow_end.QUICK_RECIPE.read_text())
    recipe["variants"][1]["overrides"] = {"interctc_weights": [1.0, 2.0, 3.0]}  # three weights for one exit
    with pytest.raises(shallow_end.lp.ExperimentError, match="W_exit_weights.*interctc_weights"):
        shallow_end.check_configs(shallow_end.plan_stages(recipe))


def test_a_finished_stage_trained_with_other_overrides_is_not_mixed_in(tmp_path):
    recipe = shallow_end.load_recipe(shallow_end.QUICK_RECIPE)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "S_sandwich.json").write_text(json.dumps({"stage": "S_sandwich", "model_config": {}}))
    with pytest.raises(shallow_end.lp.ExperimentError, match="another model config"):
        shallow_end.check_stage_configs(tmp_path, shallow_end.plan_stages(recipe))


def comparison(model, depth, reference, upper):
    return {"model": model, "depth": depth, "reference": reference, "relative_ci": [upper - 10, upper]}


def test_goal_needs_every_dedicated_depth_within_5_percent_and_full_depth_within_2_of_d():
    rows = [comparison("H", 1, "E_dedicated", 4.9), comparison("H", 2, "E_dedicated", 5.0),
            comparison("H", 8, "D_interctc_sd", 1.9)]
    assert shallow_end.goal_verdict("H", rows, [1, 2], 8) == "yes"
    assert shallow_end.goal_verdict("H", rows, [1, 2, 4], 8) == "not yet known (missing: 4 layers vs E)"
    rows[1] = comparison("H", 2, "E_dedicated", 5.1)
    rows[2] = comparison("H", 8, "D_interctc_sd", 2.1)
    assert shallow_end.goal_verdict("H", rows, [1, 2], 8) == "no: 2 layers, 8 layers"
    # D is the reference at full depth, so only the dedicated depths judge it.
    assert shallow_end.goal_verdict("D_interctc_sd", [comparison("D_interctc_sd", 2, "E_dedicated", 3.0)],
                                    [2], 8) == "yes"


def test_comparisons_are_the_package_bootstrap_of_the_stored_utterance_errors():
    rng = np.random.default_rng(0)
    words = rng.integers(3, 9, size=50).tolist()

    def errors():
        return {"test": {str(depth): {"errors": rng.integers(0, 4, size=50).tolist(), "words": words}
                         for depth in (1, 2, 3)}}

    stages = [{"stage": "D_interctc_sd", "model": "D_interctc_sd", "trained_depth": 3},
              {"stage": "E_dedicated_d1", "model": "E_dedicated", "trained_depth": 1},
              {"stage": "H", "model": "H", "trained_depth": 3}]
    stored = {name: errors() for name in ("D_interctc_sd", "E_dedicated_d1", "H")}
    rows = shallow_end.comparisons(stages, stored, "test", 3, resamples=300)
    assert [(r["model"], r["depth"], r["reference"]) for r in rows] == [
        ("D_interctc_sd", 1, "E_dedicated"), ("H", 1, "E_dedicated"), ("H", 3, "D_interctc_sd")]
    expected = paired_bootstrap(stored["H"]["test"]["3"]["errors"], stored["D_interctc_sd"]["test"]["3"]["errors"],
                                words, 300)
    assert {k: rows[2][k] for k in expected} == expected


# ------------------------------------------------------------------------------------------------ slow: --quick

SOME = ["D_interctc_sd", "E_dedicated_d1", "H_shallow_combined"]


def run_quick(results, runs, *extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(results), "--runs_dir",
                           str(runs), *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, time.perf_counter() - start


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shallow_end")
    stdout, seconds = run_quick(root / "results", root / "runs", "--models", ",".join(SOME))
    return root, stdout, seconds


@pytest.mark.slow
def test_quick_run_of_some_stages_writes_records_errors_intervals_and_says_what_is_missing(partial_run):
    root, _, _ = partial_run
    results = json.loads((root / "results" / "results.json").read_text())
    full_depth = QUICK["model_config"]["num_hidden_layers"]
    assert set(results["stages"]) == set(SOME)
    assert results["command"] == f"python training/experiments/shallow_end.py --quick --output_dir " \
                                 f"{root / 'results'} --runs_dir {root / 'runs'} --models {','.join(SOME)}"
    for model in ("D_interctc_sd", "H_shallow_combined"):
        got = sorted((r["depth"], r["strategy"]) for r in results["records"] if r["model"] == model)
        assert got == [(d, "top") for d in range(1, full_depth + 1)]
    [e] = [r for r in results["records"] if r["model"] == "E_dedicated"]
    assert (e["depth"], e["strategy"]) == (1, "none")
    errors = json.loads((root / "results" / "utterance_errors" / "H_shallow_combined.json").read_text())
    assert sorted(errors["test"], key=int) == [str(d) for d in range(1, full_depth + 1)]
    assert len(errors["test"]["1"]["errors"]) == QUICK["data"]["max_eval_samples"]
    compared = {(c["model"], c["depth"], c["reference"]) for c in results["paired_bootstrap"]["comparisons"]["test"]}
    assert compared == {("D_interctc_sd", 1, "E_dedicated"), ("H_shallow_combined", 1, "E_dedicated"),
                        ("H_shallow_combined", full_depth, "D_interctc_sd")}
    readme = (root / "results" / "README.md").read_text()
    assert ("Stages finished: 3 of 12; still to run: E_dedicated_d2, W_exit_weights, S_sandwich, K_distillation, "
            "SW_sandwich_exit_weights, S2_sandwich_two_random, SW2_sandwich_weight_2, SW3_sandwich_weight_3, "
            "SW4_sandwich_weight_4.") in readme
    assert "not yet known (missing: 2 layers vs E)" in readme and "seconds per step" in readme
    assert (root / "results" / "wer_vs_depth_test.png").stat().st_size > 10_000


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_keeps_their_errors(partial_run):
    root, _, first_seconds = partial_run
    kept = {p: p.stat().st_mtime_ns for p in (root / "results").glob("*/*.json")}
    stdout, seconds = run_quick(root / "results", root / "runs", "--models", ",".join(SOME))
    assert stdout.count("finished earlier, skipped") == len(SOME)
    assert {p: p.stat().st_mtime_ns for p in (root / "results").glob("*/*.json")} == kept
    assert seconds < first_seconds / 2
