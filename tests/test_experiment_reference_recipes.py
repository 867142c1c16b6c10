"""The reference model's recipe comparison (training/experiments/reference_recipes.py): both models at every
depth on the same utterances, paired intervals, a README with a row per depth, and a rerun that resumes from the
stored word errors instead of transcribing again."""

import json
import sys
from pathlib import Path

import pytest

from conftest import save_model_folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training" / "experiments"))

import layer_pruning_bootstrap  # noqa: E402
import reference_recipes  # noqa: E402

SUBSET = ROOT / "data" / "reference_test_subset"


def args(tmp_path, paper, sandwich):
    return ["--paper", str(paper), "--sandwich", str(sandwich), "--data_dir", str(SUBSET), "--splits", "test",
            "--max_samples", "6", "--output_dir", str(tmp_path / "out")]


def test_both_models_at_every_depth_with_intervals_and_a_resumed_rebuild(tmp_path, monkeypatch):
    save_model_folder(tmp_path / "paper", seed=1, num_hidden_layers=3, interctc_layers=[1, 2])
    save_model_folder(tmp_path / "sandwich", seed=2, num_hidden_layers=3, interctc_layers=[1, 2],
                      interctc_weights="inverse_depth", depth_sampling="sandwich", sandwich_weight=2.0)
    results = reference_recipes.main(args(tmp_path, tmp_path / "paper", tmp_path / "sandwich"))

    assert sorted((r["model"], r["depth"]) for r in results["records"]) == [
        (m, d) for m in ("paper", "sandwich") for d in (1, 2, 3)]
    assert all(r["utterances"] == 6 for r in results["records"])
    wer = {(r["model"], r["depth"]): r["wer"] for r in results["records"]}
    for c in results["comparisons"]:
        assert c["wer_a"] == pytest.approx(wer["sandwich", c["depth"]], abs=0.01)
        assert c["wer_b"] == pytest.approx(wer["paper", c["depth"]], abs=0.01)
        low, high = c["difference_ci"]
        assert low <= c["difference"] <= high
    assert results["models"]["sandwich"]["config"]["depth_sampling"] == "sandwich"
    assert results["models"]["paper"]["config"]["depth_sampling"] == "none"
    readme = (tmp_path / "out" / "README.md").read_text()
    assert sum(line.startswith("| ") and line.split("|")[1].strip() in "123" for line in readme.splitlines()) == 3
    assert (tmp_path / "out" / "wer_by_depth.png").stat().st_size > 0

    # A rerun finds every split's word errors stored and transcribes nothing.
    def no_transcribing(*_, **__):
        raise AssertionError("the rerun transcribed again")

    monkeypatch.setattr(layer_pruning_bootstrap, "StageModel", no_transcribing)
    again = reference_recipes.main(args(tmp_path, tmp_path / "paper", tmp_path / "sandwich"))
    assert again["comparisons"] == results["comparisons"]


def test_models_of_different_depths_are_refused(tmp_path):
    save_model_folder(tmp_path / "paper", num_hidden_layers=3, interctc_layers=[1])
    save_model_folder(tmp_path / "sandwich", num_hidden_layers=2, interctc_layers=[1])
    with pytest.raises(SystemExit, match="same number of layers"):
        reference_recipes.main(args(tmp_path, tmp_path / "paper", tmp_path / "sandwich"))
    assert not (tmp_path / "out").exists()
