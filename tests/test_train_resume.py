"""Training never loses work: a run killed between checkpoints resumes to the same weights as an uninterrupted one,
a half-written checkpoint is never the one resumed from, resuming reads the tokenizer from the checkpoint, and a
finished run is not trained again by mistake."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)
from hf_prunable_ctc.training.trainer import (  # noqa: E402
    PerDepthCTCTrainer, is_complete_checkpoint, last_complete_checkpoint)

# Dropout, stochastic depth and SpecAugment on: the resumed run must also restore the random state.
TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  subsampling_conv_channels=32, interctc_layers=[1], interctc_weight=0.5, stochastic_depth_rate=0.2,
                  hidden_dropout=0.1, spec_augment_freq_masks=1, spec_augment_time_masks_per_second=1.0)


def run_args(tmp_path, output_dir, *extra):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MODEL))
    return ["--model_config", str(config), "--dataset_name", "audiofolder", "--data_dir", str(DEMO),
            "--output_dir", str(output_dir), "--do_train", "--max_train_samples", "16", "--max_eval_samples", "4",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--report_to", "none",
            "--learning_rate", "1e-3", "--seed", "3", "--use_cpu", "--max_steps", "6", "--save_steps", "2",
            "--logging_steps", "1", "--feature_mode", "cached", "--eval_strategy", "no", *extra]


class Killed(Exception):
    """Stands for the process dying (SIGKILL, preemption) in the middle of training."""


def run_killed_at_step_5(tmp_path, monkeypatch, output_dir, *extra):
    """Train as `run_args` does, dying at the start of step 6 (checkpoints 2 and 4 are complete)."""
    original_step = PerDepthCTCTrainer.training_step

    def dying_step(self, *args, **kwargs):
        if self.state.global_step == 5:
            raise Killed()
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(PerDepthCTCTrainer, "training_step", dying_step)
    with pytest.raises(Killed):
        train.main(run_args(tmp_path, output_dir, *extra))
    monkeypatch.setattr(PerDepthCTCTrainer, "training_step", original_step)


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """Kill after step 5 (checkpoint-4 complete, checkpoint-6 half-written by an earlier
    kill during a save), resume: same final weights and losses as a run that was never stopped."""
    straight = tmp_path / "straight"
    reference = train.main(run_args(tmp_path, straight))
    expected = load_file(straight / "model.safetensors")

    interrupted = tmp_path / "interrupted"
    run_killed_at_step_5(tmp_path, monkeypatch, interrupted)
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # A kill in the middle of writing checkpoint-6 leaves weights but no trainer_state.json.
    partial = interrupted / "checkpoint-6"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes((interrupted / "checkpoint-4" / "model.safetensors").read_bytes())
    assert last_complete_checkpoint(str(interrupted)) == str(interrupted / "checkpoint-4")

    resumed = train.main(run_args(tmp_path, interrupted))  # picks up checkpoint-4 by itself
    assert resumed.state.global_step == 6
    got = load_file(interrupted / "model.safetensors")
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    losses = lambda trainer: [e["loss"] for e in trainer.state.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed) == pytest.approx(losses(reference), rel=1e-5)


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path):
    """A checkpoint without trainer_state.json, with a truncated one, or without weights is
    skipped in favour of the previous complete one; an explicit incomplete one is refused with a clear error."""
    complete = tmp_path / "checkpoint-10"
    complete.mkdir()
    (complete / "model.safetensors").write_bytes(b"x")
    (complete / "trainer_state.json").write_text("{}")
    for step, files in ((20, {"model.safetensors": "x"}), (30, {"model.safetensors": "x", "trainer_state.json": "{"}),
                        (40, {"trainer_state.json": "{}"})):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
    assert is_complete_checkpoint(str(complete)) and not is_complete_checkpoint(str(tmp_path / "checkpoint-40"))
    assert last_complete_checkpoint(str(tmp_path)) == str(complete)
    assert last_complete_checkpoint(str(tmp_path / "nowhere")) is None
    with pytest.raises(SystemExit):
        train.main(run_args(tmp_path, tmp_path / "out", "--resume_from_checkpoint", str(tmp_path / "checkpoint-30")))


def test_resuming_reads_the_tokenizer_from_the_checkpoint(tmp_path):
    """Without --model_name_or_path, a resumed run uses the checkpoint's tokenizer, not one rebuilt
    from (possibly different) training text, whose vocabulary would not fit the checkpoint's weights."""
    from transformers import AutoTokenizer

    out = tmp_path / "run"
    train.main(run_args(tmp_path, out, "--max_steps", "2"))
    saved = AutoTokenizer.from_pretrained(out / "checkpoint-2").get_vocab()
    # Three utterances hold fewer characters than sixteen: a rebuilt vocabulary would be smaller.
    trainer = train.main(run_args(tmp_path, out, "--max_steps", "4", "--max_train_samples", "3",
                                  "--per_device_train_batch_size", "1"))
    assert trainer.state.global_step == 4
    assert trainer.ctc_tokenizer.get_vocab() == saved
    assert trainer.model.config.vocab_size == len(saved)


def test_resumed_augmented_run_continues_the_augmentation_draws(tmp_path, monkeypatch):
    """Waveform augmentation has its own generator, which the Trainer does not checkpoint: a resumed run must
    continue its draws (the same noise, speed and pauses as an uninterrupted run), not restart them from the seed."""
    config = tmp_path / "augmentation.json"
    config.write_text(json.dumps({"speed_probability": 1.0, "noise_probability": 1.0, "noise_colors": ["white"],
                                  "silence_probability": 0.5, "long_form_probability": 0.5}))
    extra = ("--feature_mode", "waveforms", "--augmentation_config", str(config))
    straight = tmp_path / "straight"
    reference = train.main(run_args(tmp_path, straight, *extra))
    expected = load_file(straight / "model.safetensors")

    interrupted = tmp_path / "interrupted"
    run_killed_at_step_5(tmp_path, monkeypatch, interrupted, *extra)
    assert (interrupted / "checkpoint-4" / "augmentation_state-0.json").is_file()

    resumed = train.main(run_args(tmp_path, interrupted, *extra))
    losses = lambda trainer: [e["loss"] for e in trainer.state.log_history if "loss" in e]  # noqa: E731
    assert losses(resumed) == pytest.approx(losses(reference), rel=1e-5)
    got = load_file(interrupted / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_run_continues_another_runs_checkpoint_under_its_own_settings(tmp_path, monkeypatch):
    """--continue_from_checkpoint: the other run's step, optimizer and schedule go on in a new folder (here with
    the same settings, so to the same weights as the other run would reach), without its best-model record; a
    relaunch resumes from the new folder's own checkpoints."""
    first = tmp_path / "first"
    train.main(run_args(tmp_path, first))
    expected = load_file(first / "model.safetensors")
    source_state = (first / "checkpoint-4" / "trainer_state.json").read_text()

    second = tmp_path / "second"
    run_killed_at_step_5(tmp_path, monkeypatch, second, "--continue_from_checkpoint", str(first / "checkpoint-4"))
    copied = json.loads((second / "checkpoint-4" / "trainer_state.json").read_text())
    assert copied["global_step"] == 4 and copied["best_metric"] is None and copied["best_model_checkpoint"] is None
    assert (first / "checkpoint-4" / "trainer_state.json").read_text() == source_state  # the source is untouched

    # Relaunched with the same command: its own checkpoint-4 is resumed (no second copy, no error).
    resumed = train.main(run_args(tmp_path, second, "--continue_from_checkpoint", str(first / "checkpoint-4")))
    assert resumed.state.global_step == 6
    got = load_file(second / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_continue_from_checkpoint_refuses_bad_sources(tmp_path):
    with pytest.raises(SystemExit):
        train.main(run_args(tmp_path, tmp_path / "out", "--continue_from_checkpoint", str(tmp_path / "missing")))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("checkpoint-*"))
    with pytest.raises(ValueError, match="not both"):
        train.main(run_args(tmp_path, tmp_path / "out", "--continue_from_checkpoint", str(tmp_path / "a"),
                            "--resume_from_checkpoint", str(tmp_path / "b")))


def test_a_finished_run_is_not_trained_again_and_a_larger_max_steps_extends_it(tmp_path, capsys):
    """Training into the folder of a finished run up to a step it has reached would train nothing, report a loss
    of 0.0 and print the old results: it is refused with what to do instead. A larger --max_steps goes on."""
    out = tmp_path / "run"
    train.main(run_args(tmp_path, out, "--max_steps", "4"))
    final = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    for max_steps in ("2", "4"):
        with pytest.raises(SystemExit):
            train.main(run_args(tmp_path, out, "--max_steps", max_steps))
        error = capsys.readouterr().err
        assert f"holds a complete run, trained to step 4; this run would stop at step {max_steps}" in error
        assert "give a new --output_dir" in error and f"--max_steps above 4 to train it further from {out}" in error
    assert (out / "model.safetensors").read_bytes() == final  # the refused runs left the folder as it was

    trainer = train.main(run_args(tmp_path, out, "--max_steps", "6"))
    assert trainer.state.global_step == 6
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0  # steps 5 and 6 were trained


def test_a_finished_run_without_checkpoints_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    train.main(run_args(tmp_path, out, "--max_steps", "2", "--save_strategy", "no"))
    assert not list(out.glob("checkpoint-*"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(run_args(tmp_path, out, "--max_steps", "2", "--save_strategy", "no"))
    error = capsys.readouterr().err
    assert "holds a complete run, trained to step 2" in error and "no checkpoint to train further from" in error


def test_a_finished_epoch_based_run_is_refused_too(tmp_path, capsys):
    """The demo recipe counts epochs, not steps: the step a run would stop at is counted as the Trainer does."""
    out = tmp_path / "run"
    epochs = [arg for arg in run_args(tmp_path, out) if arg != "--max_steps" and arg != "6"]
    epochs += ["--num_train_epochs", "1"]  # 16 samples in batches of 4: 4 steps
    first = train.main(epochs)
    assert first.state.global_step == 4 and first.planned_steps() == 4
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main(epochs)
    assert "trained to step 4; this run would stop at step 4" in capsys.readouterr().err
