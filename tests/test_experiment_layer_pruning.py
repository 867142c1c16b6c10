"""The layer-pruning experiment (training/experiments/layer_pruning.py): the plan, the results format, and resumable stages.

The slow tests run the whole pipeline with --quick (tiny model, 30 steps, a subset of data/demo) once, then check
that a re-run skips every finished stage and that a stage stopped after its first checkpoint resumes from it.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "experiments" / "layer_pruning.py"
sys.path.insert(0, str(SCRIPT.parent))

import layer_pruning  # noqa: E402  (training/experiments/layer_pruning.py)
import layer_pruning_bootstrap  # noqa: E402
from layer_pruning_report import bootstrap_table, claim_table, relative  # noqa: E402

QUICK_RECIPE = json.loads((SCRIPT.parent / "layer_pruning_quick.json").read_text())
PRUNED = ["A_baseline", "B_interctc", "C_stochastic_depth", "D_interctc_sd"]
STRATEGIES = {"top", "uniform", "greedy", "svcca"}


def run_quick(results, runs, *extra, timeout=1500):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(results),
                           "--runs_dir", str(runs), *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, time.perf_counter() - start


def processes_mentioning(text):
    """Ids of running processes whose command line contains `text` (empty where /proc does not exist)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # the process ended while we looked
            pass
    return found


# ------------------------------------------------------------------------------------------------ fast: the plan


def test_full_recipe_plans_the_issue_models_from_one_shared_recipe():
    recipe = layer_pruning.load_recipe(layer_pruning.FULL_RECIPE)
    stages = {s.name: s for s in layer_pruning.plan_stages(recipe)}
    assert list(stages) == ["D_interctc_sd", "E_dedicated_d2", "E_dedicated_d4", "E_dedicated_d6", "A_baseline",
                            "B_interctc", "C_stochastic_depth"]
    d = stages["D_interctc_sd"].model_config
    assert d["num_hidden_layers"] == 8 and d["hidden_size"] == 144  # the reference model's size
    assert d["interctc_layers"] == [2, 4, 6] and d["stochastic_depth_rate"] > 0
    assert stages["A_baseline"].model_config["interctc_layers"] == []
    assert stages["A_baseline"].model_config["stochastic_depth_rate"] == 0.0
    assert stages["B_interctc"].model_config["interctc_layers"] == [2, 4, 6]
    assert stages["B_interctc"].model_config["stochastic_depth_rate"] == 0.0
    assert stages["C_stochastic_depth"].model_config["interctc_layers"] == []
    assert stages["C_stochastic_depth"].model_config["stochastic_depth_rate"] == d["stochastic_depth_rate"]
    for k in (2, 4, 6):
        e = stages[f"E_dedicated_d{k}"]
        assert (e.model, e.trained_depth, e.strategies) == ("E_dedicated", k, [])
        assert e.model_config["num_hidden_layers"] == k and e.model_config["interctc_layers"] == []
        assert e.model_config["stochastic_depth_rate"] == 0.0
    # Everything but the switches under test is shared: SpecAugment, dropout, width.
    for stage in stages.values():
        for key in ("hidden_size", "spec_augment_freq_masks", "spec_augment_time_masks_per_second",
                    "hidden_dropout", "intermediate_size"):
            assert stage.model_config[key] == d[key]


def test_optional_models_behind_flags():
    recipe = layer_pruning.load_recipe(layer_pruning.FULL_RECIPE)
    stages = {s.name: s for s in layer_pruning.plan_stages(recipe, with_dedicated_interctc=True,
                                                           with_selfcond=True, with_every_layer_interctc=True)}
    assert stages["F_selfcond_sd"].model_config["self_conditioning"] is True
    every = stages["G_interctc_every_sd"].model_config
    assert every["interctc_layers"] == [1, 2, 3, 4, 5, 6, 7]
    assert every["stochastic_depth_rate"] == 0.2 and every["interctc_weight"] == 0.5
    assert stages["E_dedicated_interctc_d2"].model_config["interctc_layers"] == [1]
    assert stages["E_dedicated_interctc_d6"].model_config["interctc_layers"] == [2, 4]
    assert stages["E_dedicated_interctc_d4"].model == "E_dedicated_interctc"


@pytest.mark.parametrize("change, message", [
    (lambda r: r["training"].pop("max_steps"), "max_steps"),
    (lambda r: r["training"].update(output_dir="x"), "output_dir"),
    (lambda r: r.update(dedicated_depths=[2, 8]), "dedicated_depths [8]"),
    (lambda r: r.update(extra=1), "unknown keys ['extra']"),
])
def test_bad_recipes_are_refused_with_the_reason(tmp_path, change, message):
    recipe = json.loads(layer_pruning.FULL_RECIPE.read_text())
    change(recipe)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises(layer_pruning.ExperimentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        layer_pruning.load_recipe(path)


def test_demo_corpus_is_described_with_hours_voices_seed_and_manifest_hash():
    corpus = layer_pruning.describe_corpus(layer_pruning.DEMO_CORPUS, ["train", "validation", "test"],
                                           layer_pruning.corpus_seed(layer_pruning.DEMO_CORPUS, None), {})
    assert corpus["name"] == "data/demo" and corpus["seed"] == 0
    assert corpus["splits"]["test"] == {"utterances": 42, "hours": pytest.approx(1.0 / 60, abs=0.002),
                                        "voices": 42}
    assert corpus["splits"]["train"]["utterances"] == 1456
    assert 0.5 < corpus["hours"] < 0.7
    assert len(corpus["manifest_sha256"]) == 64


def test_stages_from_another_recipe_are_not_mixed_in(tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # --quick sets them; restore them after the test
        monkeypatch.setenv(name, os.environ.get(name, "2"))
    stages = tmp_path / "results" / "stages"
    stages.mkdir(parents=True)
    (stages / "D_interctc_sd.json").write_text(json.dumps({"stage": "D_interctc_sd", "fingerprint": "other"}))
    with pytest.raises(layer_pruning.ExperimentError, match="another corpus or recipe"):
        layer_pruning.main(["--quick", "--output_dir", str(tmp_path / "results"),
                            "--runs_dir", str(tmp_path / "runs")])


def test_unknown_model_name_is_refused():
    recipe = layer_pruning.load_recipe(layer_pruning.FULL_RECIPE)
    with pytest.raises(layer_pruning.ExperimentError, match="F_selfcond_sd needs --with_selfcond"):
        layer_pruning.select_stages(layer_pruning.plan_stages(recipe), "F_selfcond_sd")


def test_claim_table_states_d_against_e_as_relative_wer_difference():
    records = [
        {"model": "E_dedicated", "trained_depth": 4, "depth": 4, "strategy": "none", "split": "test", "wer": 40.0},
        {"model": "D_interctc_sd", "trained_depth": 8, "depth": 4, "strategy": "top", "split": "test", "wer": 44.0},
        {"model": "D_interctc_sd", "trained_depth": 8, "depth": 4, "strategy": "greedy", "split": "test",
         "wer": 38.0},
        {"model": "A_baseline", "trained_depth": 8, "depth": 4, "strategy": "top", "split": "test", "wer": 100.0},
    ]
    row = claim_table(records, "test")[2]
    assert row == "| 4 | 40.0 | 44.0 (+10%) | 38.0 (greedy, -5%) | 100.0 (+150%) |"
    assert relative(30.0, 0.0) == "n/a"


def test_bootstrap_table_states_each_difference_with_its_interval():
    comparison = {"split": "test", "depth": 4, "a": {"model": "D_interctc_sd", "strategy": "top"},
                  "b": {"model": "E_dedicated"}, "wer_a": 33.0, "wer_b": 30.0, "difference": 3.0,
                  "difference_ci": [-1.5, 7.25], "relative": 10.0, "relative_ci": [-5.0, 26.0], "share_a_better": 0.1,
                  "utterances": 42, "confidence": 0.95}
    lines = bootstrap_table({"resamples": 10000, "comparisons": [comparison]}, "test")
    assert "42 utterances" in lines[0] and "10,000 resamples" in lines[0] and "95% intervals" in lines[0]
    assert lines[4] == "| 4 | D interCTC + SD (top) | 33.0 | 30.0 | +3.0 (-1.5 to +7.2) | +10% (-5% to +26%) | 0.10 |"
    assert bootstrap_table({"resamples": 10, "comparisons": [comparison]}, "test_unseen_text") == []


# ------------------------------------------------------------------------------------------------ slow: --quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("layer_pruning")
    stdout, seconds = run_quick(root / "results", root / "runs")
    return root, stdout, seconds


@pytest.mark.slow
def test_quick_run_writes_results_in_the_issue_format(quick_run):
    root, _, _ = quick_run
    results = json.loads((root / "results" / "results.json").read_text())
    corpus = results["corpus"]
    assert {"name", "hours", "voices", "splits", "seed", "manifest_sha256"} <= set(corpus)
    assert corpus["subset"] == {"max_train_samples": 48, "max_eval_samples": 12}
    assert results["recipe"]["training"]["max_steps"] == 30 and results["package_version"]
    records = results["records"]
    full_depth = QUICK_RECIPE["model_config"]["num_hidden_layers"]
    for model in PRUNED:
        got = {(r["depth"], r["strategy"]) for r in records if r["model"] == model}
        assert got == {(d, s) for d in range(1, full_depth + 1) for s in STRATEGIES}, model
    dedicated = [r for r in records if r["model"] == "E_dedicated"]
    assert sorted(r["depth"] for r in dedicated) == QUICK_RECIPE["dedicated_depths"]
    for r in dedicated:
        assert r["strategy"] == "none" and r["depth"] == r["trained_depth"]
    for r in records:
        assert {"model", "trained_depth", "depth", "strategy", "split", "wer", "cer", "params"} <= set(r)
        assert r["split"] == "test" and isinstance(r["params"], int)
        assert r["wer"] >= 0 and r["cer"] >= 0
    assert max(r["wer"] for r in records) > 5  # percent, not fractions (a 30-step model gets most words wrong)
    d_top = {r["depth"]: r["params"] for r in records if r["model"] == "D_interctc_sd" and r["strategy"] == "top"}
    assert d_top[1] < d_top[2] < d_top[full_depth]
    e_by_depth = {r["depth"]: r["params"] for r in dedicated}
    assert e_by_depth[2] == d_top[2]  # the same architecture cut at 2 layers, or trained at 2
    for stage in results["stages"].values():
        assert stage["train_wall_s"] > 0 and stage["trained_on"] and stage["train_steps"] == 30
    assert len(results["svcca_matrix"]["A_baseline"]["test"]) == full_depth + 1
    readme = (root / "results" / "README.md").read_text()
    assert "## Does pruning on demand work?" in readme and "E trained there" in readme
    assert "Stages finished: 6 of 6." in readme
    for png in ("wer_vs_depth_test.png", "svcca_A_vs_D_test.png"):
        assert (root / "results" / png).stat().st_size > 10_000


@pytest.mark.slow
def test_rerun_skips_finished_stages(quick_run):
    root, _, first_seconds = quick_run
    stage_files = sorted((root / "results" / "stages").glob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in stage_files}
    stdout, seconds = run_quick(root / "results", root / "runs")
    assert stdout.count("finished earlier, skipped") == 6
    assert {p: p.stat().st_mtime_ns for p in stage_files} == before
    assert seconds < 60 and seconds < first_seconds / 4


@pytest.mark.slow
def test_bootstrap_gives_intervals_for_every_dedicated_depth_and_the_readme_shows_them(quick_run):
    root, _, _ = quick_run
    out = layer_pruning_bootstrap.main(["--output_dir", str(root / "results"), "--runs_dir", str(root / "runs"),
                                        "--resamples", "200"])
    compared = {(c["depth"], c["a"]["model"], c["a"]["strategy"]) for c in out["comparisons"]}
    for depth in QUICK_RECIPE["dedicated_depths"]:
        assert (depth, "D_interctc_sd", "top") in compared and (depth, "A_baseline", "top") in compared
    results = json.loads((root / "results" / "results.json").read_text())
    for c in out["comparisons"]:
        # The recomputed WERs are the stages' records (the script also refuses to go on otherwise).
        recorded = [r["wer"] for r in results["records"] if r["model"] == c["a"]["model"] and
                    r["depth"] == c["depth"] and r["strategy"] == c["a"]["strategy"] and r["split"] == c["split"]]
        assert abs(recorded[0] - c["wer_a"]) < 0.05
        low, high = c["difference_ci"]
        assert low <= c["difference"] <= high and c["utterances"] == QUICK_RECIPE["data"]["max_eval_samples"]
    assert json.loads((root / "results" / "paired_bootstrap.json").read_text()) == out
    run_quick(root / "results", root / "runs", "--rebuild_only")
    assert "Uncertainty on `test`" in (root / "results" / "README.md").read_text()


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_checkpoint(quick_run):
    root, _, _ = quick_run
    run = root / "runs" / "B_interctc"
    assert (run / "checkpoint-15").is_dir()
    # The state a stop between the two checkpoints of a stage leaves: checkpoint-15, no final model, no result.
    for name in ("train_results.json", "all_results.json", "model.safetensors", "trainer_state.json"):
        (run / name).unlink()
    shutil.rmtree(run / "checkpoint-30")
    shutil.rmtree(run / "report_test")
    (root / "results" / "stages" / "B_interctc.json").unlink()

    stdout, _ = run_quick(root / "results", root / "runs", "--models", "B_interctc")
    assert "[B_interctc] training (resuming from the last checkpoint)" in stdout
    assert "resuming from" in (run / "train.log").read_text().split("=====")[-1]
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 30
    result = json.loads((root / "results" / "stages" / "B_interctc.json").read_text())
    assert [a["activity"] for a in result["attempts"]] == ["train", "evaluate", "train", "evaluate"]
    results = json.loads((root / "results" / "results.json").read_text())
    assert len([r for r in results["records"] if r["model"] == "B_interctc"]) == 4 * 4


@pytest.mark.slow
def test_sigterm_stops_the_training_child_and_records_the_stopped_attempt(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    driver = subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--output_dir", str(tmp_path / "results"),
                               "--runs_dir", str(tmp_path / "runs"), "--models", "E_dedicated_d1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "runs" / "E_dedicated_d1" / "train.log"
    deadline = time.monotonic() + 300
    while not log.is_file() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert log.is_file(), "training never started"
    time.sleep(2)
    driver.terminate()  # SIGTERM to the driver only, as a scheduler or `kill PID` sends it
    driver.wait(timeout=120)
    assert driver.returncode != 0
    attempts = json.loads((tmp_path / "runs" / "E_dedicated_d1" / "attempts.json").read_text())
    assert [(a["activity"], a["outcome"]) for a in attempts] == [("train", "stopped")]
    assert attempts[0]["wall_s"] > 0 and attempts[0]["device"]
    assert processes_mentioning(str(tmp_path)) == []  # the train.py child was stopped with the driver
    assert not (tmp_path / "results" / "stages" / "E_dedicated_d1.json").exists()


def test_a_running_attempt_is_on_disk_so_a_hard_kill_keeps_its_time(tmp_path, monkeypatch):
    # SIGKILL or a session's end gives the driver no chance to record anything: the attempt must already be in
    # attempts.json, with its wall time kept up to date, while the child runs.
    monkeypatch.setattr(layer_pruning, "HEARTBEAT_S", 0.2)
    where = {"host": "test", "device": "CPU"}
    command = [sys.executable, "-c", "import time; time.sleep(2.5)"]
    runner = threading.Thread(target=layer_pruning.run_logged, args=(command, tmp_path, "train", where, "sleep"))
    runner.start()
    path = tmp_path / "attempts.json"
    deadline = time.monotonic() + 30
    seen = []
    while runner.is_alive() and time.monotonic() < deadline:
        if path.is_file():
            seen = json.loads(path.read_text())
        time.sleep(0.1)
        if seen and seen[0]["outcome"] == "running" and seen[0]["wall_s"] >= 0.8:
            break
    assert seen and seen[0]["outcome"] == "running" and seen[0]["wall_s"] >= 0.8, seen
    runner.join(timeout=30)
    attempts = json.loads(path.read_text())
    assert [(a["activity"], a["outcome"]) for a in attempts] == [("train", "finished")]
    assert attempts[0]["wall_s"] >= 2.5
