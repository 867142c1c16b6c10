"""training/experiments/augmentation_ablation.py: both models' reports side by side, the differences, the condition
costs and the accuracy and robustness targets at full depth, from the files evaluate_depths.py writes."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("augmentation_ablation",
                                                  ROOT / "training" / "experiments" / "augmentation_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_reports(folder: Path, wers: dict, conditions: dict | None):
    """wers: {split: {depth: wer}}; conditions: {depth: {condition: wer}}, written with the per-depth costs as
    evaluate_conditions returns them."""
    folder.mkdir()
    for split, rows in wers.items():
        records = [{"strategy": strategy, "depth": depth, "layers": list(range(1, depth + 1)), "wer": wer + offset,
                    "cer": wer / 2, "parameters": 1} for depth, wer in rows.items()
                   for strategy, offset in (("top", 0.0), ("uniform", 5.0))]
        name = "depth_report.json" if split == "test" else f"depth_report_{split}.json"
        (folder / name).write_text(json.dumps({"dataset": "d", "split": split, "utterances": 10, "records": records}))
    if conditions:
        records = [{"condition": c, "depth": d, "wer": w, "cer": w / 2} for d, row in conditions.items()
                   for c, w in row.items()]
        cost = {str(d): {c: w - row["clean"] for c, w in row.items() if c != "clean"} for d, row in conditions.items()}
        (folder / "conditions.json").write_text(json.dumps({"settings": {}, "utterances": 10, "records": records,
                                                            "cost": cost}))


def test_differences_costs_and_targets(tmp_path):
    module = _load()
    _write_reports(tmp_path / "aug", {"test": {8: 18.0, 4: 30.0}, "test_unseen_engine": {8: 39.0, 4: 50.0},
                                      "test_unseen_text": {8: 45.0, 4: 60.0}},
                   {8: {"clean": 18.0, "silence": 19.5, "long_form": 21.0}, 4: {"clean": 30.0, "silence": 30.0}})
    _write_reports(tmp_path / "plain", {"test": {8: 21.0, 4: 33.0}, "test_unseen_engine": {8: 90.0, 4: 95.0},
                                        "test_unseen_text": {8: 50.0, 4: 66.0}},
                   {8: {"clean": 21.0, "silence": 60.0, "long_form": 35.0}})
    out = tmp_path / "out"
    result = module.main(["--augmented", str(tmp_path / "aug"), "--plain", str(tmp_path / "plain"),
                          "--output_dir", str(out)])
    assert set(result["splits"]) == {"test", "test_unseen_engine", "test_unseen_text"}
    assert result["splits"]["test_unseen_engine"]["depths"][8]["wer_difference"] == pytest.approx(-51.0)
    assert result["conditions"]["augmented"]["cost"][8] == pytest.approx({"silence": 1.5, "long_form": 3.0})
    aug, plain = result["targets"]["augmented"], result["targets"]["plain"]
    assert aug["test WER <= 20%"]["met"] and aug["test_unseen_engine WER <= 40%"]["met"]
    assert not aug["test_unseen_text WER <= 40%"]["met"] and not aug["long_form adds <= 2 WER points"]["met"]
    assert aug["silence adds <= 2 WER points"]["met"] and not plain["silence adds <= 2 WER points"]["met"]
    assert not plain["test WER <= 20%"]["met"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["splits"]["test"]["depths"]["8"]["augmented"]["wer"] == 18.0  # the `top` rows, not `uniform`
    markdown = (out / "README.md").read_text()
    assert "| 8 | 39.0 (19.5) | 90.0 (45.0) | -51.0 |" in markdown
    assert "| test_unseen_text WER <= 40% | 45.0 (not met) | 50.0 (not met) |" in markdown


def test_missing_report_and_unknown_strategy_are_clear_errors(tmp_path, capsys):
    module = _load()
    _write_reports(tmp_path / "aug", {"test": {8: 18.0}}, None)
    with pytest.raises(SystemExit):
        module.main(["--augmented", str(tmp_path / "aug"), "--plain", str(tmp_path / "nothing")])
    assert "has no depth_report.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--augmented", str(tmp_path / "aug"), "--plain", str(tmp_path / "aug"), "--strategy", "greedy"])
    assert "no records of strategy 'greedy' (it has top, uniform)" in capsys.readouterr().err


def test_training_curves_and_averaging_outcome(tmp_path):
    module = _load()
    _write_reports(tmp_path / "aug", {"test": {8: 18.0}}, None)
    _write_reports(tmp_path / "plain", {"test": {8: 21.0}}, None)
    history = lambda wers: {"log_history": [{"step": s, "eval_wer": w} for s, w in wers] + [{"step": 3000, "loss": 1}]}
    (tmp_path / "aug" / "trainer_state.json").write_text(json.dumps(history([(1000, 0.9), (2000, 0.5), (2500, 0.45)])))
    checkpoint = tmp_path / "plain" / "checkpoint-2000"  # an unfinished run: its last checkpoint's state
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps(history([(1000, 0.8), (2000, 0.4)])))
    (tmp_path / "plain" / "checkpoint-500").mkdir()
    (tmp_path / "plain" / "checkpoint-500" / "trainer_state.json").write_text(json.dumps(history([(500, 1.0)])))
    for folder in ("checkpoint-2000", "checkpoint-500"):  # complete checkpoints have weights
        (tmp_path / "plain" / folder / "model.safetensors").write_bytes(b"")
    (tmp_path / "aug" / "averaging").mkdir()
    (tmp_path / "aug" / "averaging" / "result.json").write_text(json.dumps(
        {"metric": "eval_wer", "snapshots": [{"step": 2500}, {"step": 2000}], "adopted": True,
         "metric_before": 0.45, "metric_averaged": 0.43}))
    out = tmp_path / "out"
    result = module.main(["--augmented", str(tmp_path / "aug"), "--plain", str(tmp_path / "plain"),
                          "--output_dir", str(out), "--curves", f"scratch={tmp_path / 'nothing'}"])
    assert result["curves"] == {"augmented": [(1000, 90.0), (2000, 50.0), (2500, 45.0)],
                                "plain": [(1000, 80.0), (2000, 40.0)]}
    assert (out / "training_curves.png").stat().st_size > 0
    markdown = (out / "README.md").read_text()
    assert "| 2,000 | 50.0 | 40.0 |" in markdown and "| 1,000 | 90.0 | 80.0 |" in markdown
    assert "| augmented | 2000, 2500 | 0.4500 | 0.4300 | the average |" in markdown
    with pytest.raises(SystemExit):
        module.main(["--augmented", str(tmp_path / "aug"), "--plain", str(tmp_path / "plain"), "--curves", "x"])
