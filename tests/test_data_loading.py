"""Data loading that can feed a GPU, evaluation scored whole, bad rows.

On-the-fly mode: preparation reads only file headers, the collator decodes and computes features per batch (with the
training-only `waveform_transform` hook), and `group_by_length` sorts by the header-derived `input_length` without
decoding anything.
"""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hf_prunable_ctc.data.collator as collator_module
import hf_prunable_ctc.data.speech_data as speech_data
from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor, num_feature_frames
from hf_prunable_ctc.data.speech_data import audio_num_samples, load_split, prepare_split
from hf_prunable_ctc.data.vocabulary import make_tokenizer

RATE = 16000


def speech(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def write_split(root: Path, split: str, rows):
    """An audiofolder split: rows of (file name, transcript, samples | bytes | None)."""
    folder = root / split
    folder.mkdir(parents=True)
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription"])
        for name, text, audio in rows:
            if isinstance(audio, bytes):
                (folder / name).write_bytes(audio)
            elif audio is not None:
                sf.write(folder / name, audio, RATE)
            writer.writerow([name, text])
    return root


@pytest.fixture()
def decode_counter(monkeypatch):
    """Counts every audio decode made by data preparation and by the collator."""
    calls = []
    for module in (speech_data, collator_module):
        original = module.load_audio

        def counting(source, *args, _original=original, **kwargs):
            calls.append(source)
            return _original(source, *args, **kwargs)

        monkeypatch.setattr(module, "load_audio", counting)
    return calls


def test_on_the_fly_preparation_reads_headers_only_and_the_collator_decodes(tmp_path, decode_counter):
    """Lengths and duration limits come from file headers; no audio is decoded until collation."""
    root = write_split(tmp_path, "train", [("a.wav", "HELLO", speech(1.0)), ("b.flac", "WORLD", speech(2.5, 1)),
                                          ("long.wav", "TOO LONG", speech(4.0, 2))])
    raw = load_split("audiofolder", "train", data_dir=str(root))
    extractor = make_feature_extractor()
    prepared, report = prepare_split(raw, extractor, make_tokenizer(), features="on_the_fly", max_duration_s=3.0)
    assert decode_counter == []
    assert report.kept == 2 and report.dropped == {"outside the duration limits": 1}
    assert prepared["input_length"] == [num_feature_frames(16000), num_feature_frames(40000)]
    assert "input_features" not in prepared.column_names

    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=make_tokenizer())
    batch = collate([prepared[0], prepared[1]])
    assert len(decode_counter) == 2
    assert batch["input_features"].shape == (2, prepared[1]["input_length"], 80)
    assert batch["attention_mask"].sum(-1).tolist() == prepared["input_length"]
    # The same features as the cached path computes.
    cached, _ = prepare_split(raw.select([0, 1]), extractor, make_tokenizer(), features="cached")
    np.testing.assert_allclose(batch["input_features"][0, :98].numpy(), cached[0]["input_features"], atol=1e-4)
    assert batch["labels"].tolist()[0][:5] == cached[0]["labels"]


def test_waveforms_mode_decodes_once_and_the_collator_only_computes_features(tmp_path, decode_counter):
    """Decoded float32 samples are stored (read back as numpy), so batches cost features only and
    a waveform augmentation still applies."""
    root = write_split(tmp_path, "train", [("a.wav", "HELLO", speech(1.0)), ("b.wav", "WORLD", speech(1.5, 1))])
    extractor = make_feature_extractor()
    prepared, report = prepare_split(load_split("audiofolder", "train", data_dir=str(root)), extractor,
                                     make_tokenizer(), features="waveforms")
    assert len(decode_counter) == 2 and report.kept == 2
    row = prepared[1]
    assert isinstance(row["audio"], np.ndarray) and row["audio"].dtype == np.float32 and row["audio"].shape == (24000,)
    seen = []
    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=make_tokenizer(),
                                         waveform_transform=lambda samples, rate: seen.append(rate) or samples)
    batch = collate([prepared[0], prepared[1]])
    assert len(decode_counter) == 2 and seen == [RATE, RATE]
    assert batch["attention_mask"].sum(-1).tolist() == prepared["input_length"]


def test_collator_takes_paths_bytes_dicts_and_arrays():
    """Every form a prepared split can hold (path, Hub {"bytes","path"}, decoded array)."""
    audio = speech(1.2)
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, format="FLAC")
    collate = DataCollatorCTCWithPadding(feature_extractor=make_feature_extractor(), tokenizer=make_tokenizer())
    batch = collate([{"audio": {"bytes": buffer.getvalue(), "path": "x.flac"}, "labels": [5]},
                     {"audio": audio, "labels": [6, 7]},
                     {"audio": {"array": audio, "sampling_rate": RATE}, "labels": [8]}])
    assert batch["input_features"].shape[0] == 3
    np.testing.assert_allclose(batch["input_features"][0], batch["input_features"][1], atol=1e-2)  # FLAC is 16-bit
    assert batch["labels"].tolist() == [[5, -100], [6, 7], [8, -100]]


def test_waveform_transform_applies_to_training_batches_only(tmp_path):
    """The augmentation hook sees each training waveform (samples, rate) before features, and the
    Trainer's evaluation and test dataloaders never call it."""
    from transformers import TrainingArguments

    from conftest import tiny_model
    from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer

    seen = []

    def halve(samples, rate):
        seen.append((samples.shape[0], rate))
        return samples[: len(samples) // 2]

    root = write_split(tmp_path, "train", [("a.wav", "HI", speech(1.0)), ("b.wav", "HO", speech(2.0, 1))])
    extractor = make_feature_extractor(num_mel_bins=16)
    prepared, _ = prepare_split(load_split("audiofolder", "train", data_dir=str(root)), extractor, make_tokenizer(),
                                features="on_the_fly")
    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=make_tokenizer(),
                                         waveform_transform=halve)
    batch = collate([prepared[0], prepared[1]])
    assert seen == [(16000, RATE), (32000, RATE)]
    assert batch["attention_mask"].sum(-1).tolist() == [num_feature_frames(8000), num_feature_frames(16000)]

    model = tiny_model(vocab_size=len(make_tokenizer()))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                             per_device_eval_batch_size=2)
    trainer = PerDepthCTCTrainer(model=model, args=args, train_dataset=prepared, eval_dataset=prepared,
                                 data_collator=collate, tokenizer=make_tokenizer())
    seen.clear()
    for loader in (trainer.get_eval_dataloader(), trainer.get_test_dataloader(prepared)):
        eval_batch = next(iter(loader))
        assert eval_batch["attention_mask"].sum(-1).tolist() == prepared["input_length"]
    assert seen == []
    assert trainer.data_collator is collate  # the training collator is back in place
    next(iter(trainer.get_train_dataloader()))
    assert len(seen) == 2


def test_group_by_length_sorts_by_header_lengths_without_decoding(tmp_path, decode_counter):
    """The length-grouped sampler reads `input_length`; no pass decodes (or fetches) the corpus."""
    from transformers import TrainingArguments

    from conftest import tiny_model
    from hf_prunable_ctc.training.trainer import PerDepthCTCTrainer

    rows = [(f"{i}.wav", "HI", speech(0.5 + 0.25 * i, i)) for i in range(6)]
    root = write_split(tmp_path, "train", rows)
    extractor = make_feature_extractor(num_mel_bins=16)
    prepared, _ = prepare_split(load_split("audiofolder", "train", data_dir=str(root)), extractor, make_tokenizer(),
                                features="on_the_fly")
    # No length_column_name: the default ("length") is not a column, so the trainer falls back to input_length.
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                             per_device_train_batch_size=2, train_sampling_strategy="group_by_length")
    trainer = PerDepthCTCTrainer(model=tiny_model(vocab_size=len(make_tokenizer())), args=args,
                                 train_dataset=prepared,
                                 data_collator=DataCollatorCTCWithPadding(extractor, make_tokenizer()),
                                 tokenizer=make_tokenizer())
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(prepared))
    assert list(sampler.lengths) == prepared["input_length"]
    assert decode_counter == []
    # Batches are formed from neighbours in length: the longest utterance comes first (the sampler's convention).
    assert next(iter(sampler)) == int(np.argmax(prepared["input_length"]))


def test_corrupt_short_or_silent_audio_is_skipped_and_counted_by_the_collator(tmp_path, caplog):
    """Audio whose header reads but whose samples do not, audio too short for two frames and
    (with the stock extractor, which returns NaN for it) silence leave the batch with a warning and a count; a batch
    with nothing usable says so."""
    from transformers import Speech2TextFeatureExtractor

    buffer = io.BytesIO()
    sf.write(buffer, speech(1.0, 3), RATE, format="FLAC")
    truncated = buffer.getvalue()[:200]  # header intact, frames gone
    root = write_split(tmp_path, "train", [("good.wav", "HI", speech(1.0)), ("cut.flac", "HO", truncated),
                                          ("nothing.wav", "NO", b"not audio")])
    extractor = make_feature_extractor()
    prepared, report = prepare_split(load_split("audiofolder", "train", data_dir=str(root)), extractor,
                                     make_tokenizer(), features="on_the_fly")
    assert report.dropped == {"unreadable audio": 1}  # the header of "nothing.wav" does not read
    collate = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=make_tokenizer())
    rows = {Path(r["audio"]).name: r for r in prepared}
    with caplog.at_level("WARNING"):
        batch = collate([rows["good.wav"], rows["cut.flac"], {"audio": speech(0.02), "labels": [5]}])
    assert batch["input_features"].shape[0] == 1 and batch["labels"].shape[0] == 1
    assert collate.skipped == {"unreadable audio": 1, "too short audio": 1}
    assert "cut.flac" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 utterances"):
        collate([rows["cut.flac"]])

    stock = Speech2TextFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=0.0,
                                        return_attention_mask=True)
    collate = DataCollatorCTCWithPadding(feature_extractor=stock, tokenizer=make_tokenizer())
    batch = collate([rows["good.wav"], {"audio": np.zeros(RATE, dtype=np.float32), "labels": [5]}])
    assert batch["input_features"].shape[0] == 1 and torch.isfinite(batch["input_features"]).all()
    assert collate.skipped == {"non-finite features (silent audio?)": 1}


def test_evaluation_splits_are_scored_whole_and_left_outs_are_counted(tmp_path):
    """Duration limits are for the training split; an evaluation split keeps its long utterances,
    and what it cannot score is counted by reason."""
    rows = [("short.wav", "A", speech(0.5)), ("long.wav", "B", speech(3.0, 1)), ("empty.wav", "  ", speech(1.0, 2)),
            ("bad.wav", "C", b"junk")]
    root = write_split(tmp_path, "test", rows)
    raw = load_split("audiofolder", "test", data_dir=str(root))
    extractor = make_feature_extractor()
    whole, report = prepare_split(raw, extractor, make_tokenizer())
    assert whole["text"] == ["A", "B"]
    assert report.scoring_record() == {"utterances_scored": 2, "utterances_left_out": 2,
                                       "left_out": {"empty transcripts": 1, "unreadable audio": 1}}
    limited, _ = prepare_split(raw, extractor, make_tokenizer(), max_duration_s=2.0)
    assert limited["text"] == ["A"]


def test_cached_features_come_back_as_float32_arrays(tmp_path):
    """Cached features are stored fixed-width and read as numpy, not nested Python lists."""
    root = write_split(tmp_path, "train", [("a.wav", "HI", speech(1.0))])
    prepared, _ = prepare_split(load_split("audiofolder", "train", data_dir=str(root)), make_feature_extractor(),
                                make_tokenizer())
    row = prepared[0]
    assert isinstance(row["input_features"], np.ndarray) and row["input_features"].dtype == np.float32
    assert row["input_features"].shape == (98, 80)


def test_header_lengths_match_decoded_lengths(tmp_path):
    """`audio_num_samples` (header only) agrees with decoding, including resampling from 8 kHz."""
    sf.write(tmp_path / "a.wav", speech(1.0)[:8000], 8000)
    assert audio_num_samples(str(tmp_path / "a.wav"), RATE) == 16000
    with open(tmp_path / "a.wav", "rb") as f:
        assert audio_num_samples({"bytes": f.read(), "path": "a.wav"}, RATE) == 16000
    assert audio_num_samples({"array": np.zeros(4000), "sampling_rate": 8000}, RATE) == 8000
