"""Waveform augmentation wired into training: `train.py --augmentation_config` augments training batches only (per
waveform and, for a share of batches, long form), writes the settings it used, and refuses cached features."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hf_prunable_ctc.data.augmentation import AugmentationConfig, WaveformAugmentation
from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor, num_feature_frames
from hf_prunable_ctc.data.speech_data import load_split, prepare_split, training_texts
from hf_prunable_ctc.data.vocabulary import build_vocabulary, make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
STANDARD = ROOT / "training" / "configs" / "augmentation" / "standard.json"
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)
from test_training import train_args  # noqa: E402


def standard_config_with_a_small_reverb_bank(tmp_path) -> Path:
    """standard.json with a 2-room bank in `tmp_path`: simulating its 50 rooms would take minutes on first use."""
    values = json.loads(STANDARD.read_text())
    values.update(reverb_rooms=2, reverb_bank_path=str(tmp_path / "rir_bank.npz"))
    path = tmp_path / "standard.json"
    path.write_text(json.dumps(values))
    return path


def demo_waveforms(split="validation", rows=4, num_mel_bins=16):
    """A few demo utterances prepared as waveforms, with their extractor and tokenizer."""
    raw = load_split("audiofolder", split, data_dir=str(DEMO)).select(range(rows))
    extractor = make_feature_extractor(num_mel_bins=num_mel_bins)
    tokenizer = make_tokenizer(build_vocabulary(training_texts(raw, "transcription")))
    prepared, report = prepare_split(raw, extractor, tokenizer, features="waveforms")
    assert report.kept == rows
    return prepared, extractor, tokenizer


def test_two_step_training_with_the_standard_augmentation_writes_its_settings(tmp_path, monkeypatch):
    calls = []
    original = WaveformAugmentation.__call__

    def counting(self, waveform, sampling_rate):
        calls.append(waveform.size)
        return original(self, waveform, sampling_rate)

    monkeypatch.setattr(WaveformAugmentation, "__call__", counting)
    noise = tmp_path / "musan" / "noise"
    noise.mkdir(parents=True)
    sf.write(noise / "hum.wav", (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    config = standard_config_with_a_small_reverb_bank(tmp_path)
    out = tmp_path / "run"
    trainer = train.main(train_args(tmp_path, out, "--max_steps", "2", "--feature_mode", "waveforms",
                                    "--augmentation_config", str(config), "--noise_dir", str(tmp_path / "musan"),
                                    "--max_train_samples", "16"))
    assert trainer.state.global_step == 2
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)
    # 2 batches of 8 training utterances went through the chain (fewer calls when a batch was joined into long
    # form); the validation split's 8 never did (`test_evaluation_batches_never_go_through_the_augmentation`
    # covers evaluation of audio splits).
    assert 4 <= len(calls) <= 16
    written = json.loads((out / "augmentation.json").read_text())
    expected = dict(json.loads(config.read_text()), seed=1, noise_dir=str(tmp_path / "musan"))
    assert written == expected  # the training seed and --noise_dir replace the file's
    assert AugmentationConfig.from_json(out / "augmentation.json").to_dict() == expected  # reusable as is
    assert json.loads((out / "per_depth_metrics.json").read_text())["utterances"] == 8


def test_cached_features_with_augmentation_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(train_args(tmp_path, tmp_path / "run", "--max_steps", "2", "--feature_mode", "cached",
                              "--augmentation_config", str(STANDARD)))
    error = capsys.readouterr().err
    assert "--feature_mode cached" in error and "--feature_mode waveforms" in error
    with pytest.raises(SystemExit):
        train.main(train_args(tmp_path, tmp_path / "run", "--max_steps", "2", "--noise_dir", str(tmp_path)))
    assert "give --augmentation_config" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written

    # The collator itself refuses to hand back a silently unaugmented cached batch.
    extractor, tokenizer = make_feature_extractor(num_mel_bins=16), make_tokenizer()
    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer,
                                         waveform_transform=lambda samples, rate: samples)
    cached = [{"input_features": np.zeros((20, 16), np.float32), "labels": [5]}]
    with pytest.raises(ValueError, match="precomputed 'input_features'"):
        collate(cached)
    assert collate.for_evaluation()(cached)["input_features"].shape == (1, 20, 16)


def test_missing_augmentation_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.json: no such file"):
        train.main(train_args(tmp_path, tmp_path / "run", "--max_steps", "2", "--feature_mode", "waveforms",
                              "--augmentation_config", str(tmp_path / "no_such.json")))


def test_long_form_batches_carry_the_joined_labels_and_are_augmented_after_joining():
    prepared, extractor, tokenizer = demo_waveforms(rows=4)
    join = WaveformAugmentation(AugmentationConfig(long_form_probability=1.0, long_form_utterances=2,
                                                   long_form_pause_s=[0.5, 0.5]), 16000).join_batch
    seen = []
    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer, batch_transform=join,
                                         waveform_transform=lambda samples, rate: seen.append(len(samples)) or samples)
    rows = [prepared[i] for i in range(4)]
    batch = collate(rows)
    # Groups of exactly 2 (pairs 0+1 and 2+3) with 0.5 s between: labels are the pair's, joined by the delimiter.
    delimiter = tokenizer.word_delimiter_token_id
    expected = [list(rows[0]["labels"]) + [delimiter] + list(rows[1]["labels"]),
                list(rows[2]["labels"]) + [delimiter] + list(rows[3]["labels"])]
    labels = [[i for i in row if i != -100] for row in batch["labels"].tolist()]
    assert labels == expected
    assert tokenizer.decode(labels[0], group_tokens=False) == f"{rows[0]['text']} {rows[1]['text']}"
    joined_samples = [len(rows[0]["audio"]) + len(rows[1]["audio"]) + 8000,
                      len(rows[2]["audio"]) + len(rows[3]["audio"]) + 8000]
    assert seen == joined_samples  # the per-waveform chain ran on the joined utterances
    assert batch["attention_mask"].sum(-1).tolist() == [num_feature_frames(n) for n in joined_samples]

    # Evaluation keeps the batch as it is.
    plain = collate.for_evaluation()(rows)
    assert plain["labels"].shape[0] == 4 and len(seen) == 2


def test_evaluation_batches_never_go_through_the_augmentation(tmp_path):
    from transformers import TrainingArguments

    from conftest import tiny_model
    from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer

    prepared, extractor, tokenizer = demo_waveforms(rows=4)

    def refuse(*unused):
        raise AssertionError("augmentation reached an evaluation batch")

    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer, waveform_transform=refuse,
                                         batch_transform=refuse)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                             per_device_eval_batch_size=2, per_device_train_batch_size=2)
    trainer = PerDepthCTCTrainer(model=tiny_model(vocab_size=len(tokenizer)), args=args, train_dataset=prepared,
                                 eval_dataset=prepared, data_collator=collate, tokenizer=tokenizer)
    metrics = trainer.evaluate()  # audio evaluation split: would raise if either transform ran
    assert "eval_wer" in metrics
    trainer.predict(prepared)
    assert trainer.data_collator is collate
    with pytest.raises(AssertionError, match="evaluation batch"):  # the hooks are live for training batches
        next(iter(trainer.get_train_dataloader()))


def test_reference_augmented_recipe_matches_the_reference_model_with_augmentation():
    """The reference model's retraining recipe: the reference model's config, trained on waveforms with standard.json;
    its ablation twin (reference_v2.json) differs only in the augmentation (and so the feature mode), which starts
    from the twin's checkpoint-4500 (the first 4,500 steps are shared)."""
    recipes = ROOT / "training" / "recipes"
    _, (model_args, data_args, args, _) = train.parse_arguments([str(recipes / "reference_augmented.json")])
    reference = json.loads((recipes / "reference.json").read_text())
    assert model_args.model_config == reference["model_config"] and data_args.data_dir == "corpora/synth-6h-v2"
    augmented = json.loads((recipes / "reference_augmented.json").read_text())
    twin = json.loads((recipes / "reference_v2.json").read_text())
    differing = {k for k in augmented.keys() | twin.keys() if augmented.get(k) != twin.get(k)}
    assert differing == {"augmentation_config", "feature_mode", "output_dir", "continue_from_checkpoint"}
    assert args.continue_from_checkpoint == "runs/reference-v2-step4500" and args.average_checkpoints == 5
    assert data_args.feature_mode == "waveforms"
    assert (ROOT / data_args.augmentation_config).resolve() == STANDARD.resolve()  # relative to the repository
    assert args.ddp_find_unused_parameters is False and args.save_total_limit  # resumable, few checkpoints kept
