"""Training with `--feature_device model`: the collator returns waveforms, each step computes their features, and a
run is the CPU path's run: the same loss curve on the same seed (with waveform augmentation, SpecAugment, dropout,
stochastic depth, `group_by_length` and gradient accumulation), the same per-depth evaluation and transcripts, the
same weights after a resume, and float32 features under bf16 autocast."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_prunable_ctc.data.device_features import WaveformFeatures

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)
from test_train_augmentation import demo_waveforms  # noqa: E402
from test_train_resume import run_args, run_killed_at_step_5  # noqa: E402

# Waveform augmentation in the (here: in-process) loader, then everything that draws random numbers in the step.
AUGMENTED = ("--feature_mode", "waveforms", "--train_sampling_strategy", "group_by_length",
             "--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "2")
# Features differ from the CPU path's by ~2e-6 (test_device_features); six steps keep that at float rounding.
LOSS_RTOL = 1e-4


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture()
def feature_calls(monkeypatch):
    """Counts the batches whose features `WaveformFeatures` computed, with the dtype it returned."""
    calls = []
    original = WaveformFeatures.__call__

    def counting(self, waveforms, lengths):
        features, mask = original(self, waveforms, lengths)
        calls.append(features.dtype)
        return features, mask

    monkeypatch.setattr(WaveformFeatures, "__call__", counting)
    return calls


def augmentation_config(tmp_path):
    path = tmp_path / "augmentation.json"
    path.write_text('{"speed_probability": 1.0, "noise_probability": 1.0, "noise_colors": ["white"]}')
    return str(path)


def test_a_run_with_features_on_the_model_device_follows_the_cpu_paths_loss_curve(tmp_path, feature_calls):
    extra = (*AUGMENTED, "--augmentation_config", augmentation_config(tmp_path), "--save_strategy", "no")
    cpu = train.main(run_args(tmp_path, tmp_path / "cpu", *extra))
    assert feature_calls == []
    device = train.main(run_args(tmp_path, tmp_path / "device", *extra, "--feature_device", "model"))
    # 6 optimizer steps of 2 micro-batches each, every one featurised in the step.
    assert len(feature_calls) == 12 and set(feature_calls) == {torch.float32}
    assert len(losses(cpu)) == 6
    assert losses(device) == pytest.approx(losses(cpu), rel=LOSS_RTOL)
    expected, got = load_file(tmp_path / "cpu" / "model.safetensors"), load_file(tmp_path / "device" /
                                                                                   "model.safetensors")
    # Adam divides each gradient by its own running scale, so feature rounding of ~2e-6 reaches the weights as
    # ~1.5e-5 (measured) of the ~6e-3 that six steps at a learning rate of 1e-3 move them.
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=5e-5, msg=name)
    metrics = [{k: v for k, v in run.state.log_history[-1].items() if k.startswith("validation_")}
               for run in (cpu, device)]
    assert metrics[1]["validation_loss"] == pytest.approx(metrics[0]["validation_loss"], rel=LOSS_RTOL)


def test_a_resumed_run_with_features_on_the_model_device_reaches_the_uninterrupted_weights(tmp_path, monkeypatch):
    extra = ("--feature_mode", "waveforms", "--feature_device", "model")
    straight = train.main(run_args(tmp_path, tmp_path / "straight", *extra))
    interrupted = tmp_path / "interrupted"
    run_killed_at_step_5(tmp_path, monkeypatch, interrupted, *extra)
    resumed = train.main(run_args(tmp_path, interrupted, *extra))
    assert resumed.state.global_step == 6
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
    expected, got = load_file(tmp_path / "straight" / "model.safetensors"), load_file(interrupted /
                                                                                      "model.safetensors")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_per_depth_evaluation_of_waveform_batches_gives_the_cpu_paths_transcripts(tmp_path, feature_calls):
    from conftest import tiny_model
    from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
    from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer, PrunableCTCTrainingArguments

    prepared, extractor, tokenizer = demo_waveforms(rows=6)
    results = {}
    for device in ("loader", "model"):
        args = PrunableCTCTrainingArguments(output_dir=str(tmp_path / device), report_to="none", use_cpu=True,
                                            per_device_eval_batch_size=4, feature_device=device)
        trainer = PerDepthCTCTrainer(model=tiny_model(vocab_size=len(tokenizer)), args=args, eval_dataset=prepared,
                                     data_collator=DataCollatorCTCWithPadding(extractor, tokenizer),
                                     tokenizer=tokenizer, eval_depths=[1, 2, 3, 4])
        results[device] = trainer.predict(prepared)
    assert len(feature_calls) == 2  # two evaluation batches, featurised in the prediction step
    loader, model = results["loader"], results["model"]
    # (utterances, frames, depths) greedy ids at every evaluated depth: the same transcripts at every depth.
    assert model.predictions.shape == loader.predictions.shape and model.predictions.shape[-1] == 4
    assert (model.predictions == loader.predictions).all()
    assert {k: v for k, v in model.metrics.items() if "_wer" in k or "_cer" in k} == pytest.approx(
        {k: v for k, v in loader.metrics.items() if "_wer" in k or "_cer" in k})
    assert model.metrics["test_loss"] == pytest.approx(loader.metrics["test_loss"], rel=1e-5)


def test_bf16_autocast_steps_get_float32_features(tmp_path, feature_calls, monkeypatch):
    from hf_prunable_ctc import PrunableCTCForCTC

    seen = []  # (features dtype, autocast on) as the model's forward receives them
    original = PrunableCTCForCTC.forward

    def spying(self, input_features, *args, **kwargs):
        seen.append((input_features.dtype, torch.is_autocast_enabled("cpu")))
        return original(self, input_features, *args, **kwargs)

    monkeypatch.setattr(PrunableCTCForCTC, "forward", spying)
    trainer = train.main(run_args(tmp_path, tmp_path / "bf16", "--feature_mode", "waveforms", "--feature_device",
                                  "model", "--bf16", "--max_steps", "2", "--save_strategy", "no"))
    assert trainer.args.bf16 and len(feature_calls) == 2 and set(feature_calls) == {torch.float32}
    assert seen[:2] == [(torch.float32, True)] * 2  # the two training steps, under autocast
    assert all(torch.isfinite(torch.tensor(losses(trainer))))


def test_cached_training_features_and_an_unknown_device_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        train.main(run_args(tmp_path, tmp_path / "out", "--feature_device", "model"))  # run_args: cached
    with pytest.raises(ValueError, match="--feature_device must be one of loader, model"):
        train.main(run_args(tmp_path, tmp_path / "out", "--feature_mode", "waveforms", "--feature_device", "gpu"))
