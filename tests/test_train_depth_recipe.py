"""How the depths are trained is a recipe setting: the shallow-end options (exit weights, sandwich sampling,
self-distillation) come from the config file or from flags, on a new model and on a saved one, and the saved
config states them."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)

TINY_MODEL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  subsampling_conv_channels=32, interctc_layers=[1, 2], interctc_weight=0.5)


def run_args(output_dir, *model):
    return [*model, "--dataset_name", "audiofolder", "--data_dir", str(DEMO), "--output_dir", str(output_dir),
            "--do_train", "--max_train_samples", "8", "--max_eval_samples", "4", "--per_device_train_batch_size", "4",
            "--report_to", "none", "--seed", "3", "--use_cpu", "--max_steps", "2", "--save_strategy", "no",
            "--feature_mode", "cached", "--eval_strategy", "no"]


def saved_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_MODEL))
    return path


def test_flags_set_the_shallow_end_recipe_and_the_saved_config_states_it(tmp_path, tiny_config):
    out = tmp_path / "new"
    train.main(run_args(out, "--model_config", str(tiny_config), "--interctc_weights", "inverse_depth",
                        "--depth_sampling", "sandwich", "--sandwich_weight", "2", "--distillation_weight", "0.1"))
    config = saved_config(out)
    assert config["interctc_weights"] == [1.0, 0.5]
    assert (config["depth_sampling"], config["sandwich_random_depths"], config["sandwich_weight"]) == ("sandwich", 1, 2.0)
    assert config["distillation_weight"] == 0.1

    # A saved model continues under another recipe: the flags replace what its config says.
    again = tmp_path / "continued"
    train.main(run_args(again, "--model_name_or_path", str(out), "--interctc_weights", "0.3,0.7",
                        "--depth_sampling", "none", "--distillation_weight", "0"))
    config = saved_config(again)
    assert config["interctc_weights"] == [0.3, 0.7]
    assert (config["depth_sampling"], config["distillation_weight"]) == ("none", 0.0)
    assert config["sandwich_weight"] == 2.0  # not given: kept from the saved model


def test_new_models_recipes_train_the_shallow_end(tmp_path):
    """The configs new models start from use sandwich sampling with shallow exit weights, the recipe that brought
    every pruned depth closest to a model trained at that depth (results/shallow_end)."""
    for name in ("demo", "demo_transformer", "small", "small_transformer", "base", "base_transformer"):
        settings = json.loads((ROOT / "training" / "configs" / f"{name}.json").read_text())
        assert (settings["depth_sampling"], settings["interctc_weights"], settings["sandwich_weight"]) == (
            "sandwich", "inverse_depth", 2.0), name
    out = tmp_path / "demo"
    train.main(run_args(out, "--model_config", str(ROOT / "training" / "configs" / "demo.json")))
    config = saved_config(out)
    assert config["depth_sampling"] == "sandwich"
    assert config["interctc_weights"] == [0.5, 0.25]  # resolved against interctc_layers [2, 4]


def test_recipes_of_published_results_keep_the_paper_recipe():
    for name in ("reference", "reference_v2", "reference_augmented"):
        recipe = json.loads((ROOT / "training" / "recipes" / f"{name}.json").read_text())
        assert (recipe["depth_sampling"], recipe["interctc_weights"]) == ("none", "uniform"), name


@pytest.mark.parametrize("weights, message", [
    ("fast", r"--interctc_weights 'fast': give one of \['inverse_depth', 'uniform'\]"),
    ("1,2,3", r"interctc_weights.*one weight per interctc_layers"),
])
def test_bad_exit_weights_are_refused_with_the_reason(tmp_path, tiny_config, weights, message):
    with pytest.raises(ValueError, match=message):
        train.main(run_args(tmp_path / "bad", "--model_config", str(tiny_config), "--interctc_weights", weights))
    assert not (tmp_path / "bad" / "model.safetensors").exists()
