"""Checkpoint averaging (`train.py --average_checkpoints N`): the N best evaluations' weights are kept across a
resumed run, averaged after training, and the average replaces the final model only when it scores better."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_model
from hf_prunable_ctc.training.averaging import (KeepBestWeightsCallback, average_snapshots, average_state_dicts,
                                                read_index)
from hf_prunable_ctc.training.trainer import PrunableCTCTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)
from test_train_resume import run_args  # noqa: E402


def evaluate(callback, model, step, value, key="eval_wer"):
    state = SimpleNamespace(is_world_process_zero=True, global_step=step)
    callback.on_evaluate(None, state, None, metrics={key: value}, model=model)


def test_keeps_the_best_evaluations_weights_and_a_consistent_index(tmp_path):
    callback = KeepBestWeightsCallback(str(tmp_path), keep=2, metric="eval_wer", greater_is_better=False)
    models = {step: tiny_model(seed=step) for step in (10, 20, 30, 40)}
    for step, wer in [(10, 0.5), (20, 0.3), (30, 0.4), (40, 0.35)]:
        evaluate(callback, models[step], step, wer)
    evaluate(callback, models[40], 50, float("nan"))  # ignored
    evaluate(callback, models[40], 60, 0.1, key="test_wer")  # another split: ignored
    folder = tmp_path / "averaging"
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "step-20.safetensors", "step-40.safetensors"]
    assert [e["step"] for e in read_index(str(folder))] == [20, 40]
    assert callback.paths() == [str(folder / "step-20.safetensors"), str(folder / "step-40.safetensors")]
    saved = load_file(folder / "step-40.safetensors")
    for name, tensor in models[40].state_dict().items():
        torch.testing.assert_close(saved[name], tensor, msg=name)

    # A resumed run reads the index back, and forgets what came after the checkpoint it resumes from.
    again = KeepBestWeightsCallback(str(tmp_path), keep=2)
    assert [e["step"] for e in again.entries] == [20, 40]
    again.forget_after(30)
    assert [e["step"] for e in read_index(str(folder))] == [20]
    assert not (folder / "step-40.safetensors").exists()


def test_greater_is_better_and_other_processes_do_not_write(tmp_path):
    callback = KeepBestWeightsCallback(str(tmp_path), keep=1, metric="eval_accuracy", greater_is_better=True)
    evaluate(callback, tiny_model(), 1, 0.6, key="eval_accuracy")
    evaluate(callback, tiny_model(), 2, 0.9, key="eval_accuracy")
    evaluate(callback, tiny_model(), 3, 0.7, key="eval_accuracy")
    assert [e["step"] for e in read_index(str(tmp_path / "averaging"))] == [2]
    other = KeepBestWeightsCallback(str(tmp_path / "rank1"), keep=2)
    other.on_evaluate(None, SimpleNamespace(is_world_process_zero=False, global_step=1), None,
                      metrics={"eval_wer": 0.1}, model=tiny_model())
    assert not (tmp_path / "rank1").exists()


def test_average_state_dicts():
    a = {"w": torch.tensor([1.0, 2.0]), "half": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "half": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(9)}
    mean = average_state_dicts([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert mean["half"].dtype == torch.float16 and float(mean["half"]) == 1.5
    assert int(mean["n"]) == 3
    with pytest.raises(ValueError, match="other keys"):
        average_state_dicts([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match="differs in shape"):
        average_state_dicts([a, dict(b, w=torch.zeros(3))])
    with pytest.raises(ValueError, match="nothing to average"):
        average_state_dicts([])


@pytest.mark.parametrize("settings, message", [(dict(average_checkpoints=1, eval_strategy="steps"), ">= 2"),
                                               (dict(average_checkpoints=3), "--eval_strategy")])
def test_bad_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        PrunableCTCTrainingArguments(output_dir=str(tmp_path), **settings)


@pytest.mark.parametrize("average_scores_better", [False, True])
def test_training_with_checkpoint_averaging(tmp_path, monkeypatch, average_scores_better):
    if average_scores_better:
        # Make the average's evaluation look better, to check that its weights are then what the run saves.
        evaluate = train.PerDepthCTCTrainer.evaluate

        def flattering(self, *args, metric_key_prefix="eval", **kwargs):
            metrics = evaluate(self, *args, metric_key_prefix=metric_key_prefix, **kwargs)
            if metric_key_prefix == "averaged":
                metrics["averaged_loss"] -= 100.0
            return metrics

        monkeypatch.setattr(train.PerDepthCTCTrainer, "evaluate", flattering)
    output = tmp_path / "run"
    trainer = train.main(run_args(tmp_path, output, "--eval_strategy", "steps", "--eval_steps", "2",
                                  "--load_best_model_at_end", "true", "--metric_for_best_model", "loss",
                                  "--average_checkpoints", "2"))
    folder = output / "averaging"
    result = json.loads((folder / "result.json").read_text())
    steps = [e["step"] for e in result["snapshots"]]
    assert len(steps) == 2 and set(steps) <= {2, 4, 6}
    assert result["metric"] == "eval_loss" and result["metric_before"] == pytest.approx(trainer.state.best_metric)
    assert result["adopted"] == (result["metric_averaged"] < result["metric_before"])
    if average_scores_better:
        assert result["adopted"]
    final = load_file(output / "model.safetensors")
    if result["adopted"]:
        expected = average_snapshots([str(folder / e["file"]) for e in result["snapshots"]])
    else:
        expected = load_file(Path(trainer.state.best_model_checkpoint) / "model.safetensors")
    for name, tensor in final.items():
        torch.testing.assert_close(tensor, expected[name], msg=name)
