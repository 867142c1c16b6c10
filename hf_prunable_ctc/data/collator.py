"""Batching for CTC training: pad features and labels separately, as in `run_speech_recognition_ctc.py`.

Features and labels have unrelated lengths (frames vs characters), so each is padded to its own batch maximum.
Padded label positions become -100, which the CTC loss ignores (`Wav2Vec2ForCTC` convention).

Examples carry either precomputed ``input_features`` (a "cached" split) or encoded/decoded ``audio`` (an
"on_the_fly" split, see `speech_data`): then the collator decodes the audio with soundfile, applies the optional
training-time `batch_transform` (long form: several utterances joined into one) and `waveform_transform`
(per-utterance augmentation), and computes the batch's log-mel features with the model's feature extractor,
called the standard Hugging Face way. This runs in the dataloader's worker processes
(`--dataloader_num_workers`), so feature computation overlaps the GPU's step. With `return_waveforms` the workers
stop before the features and return the padded waveforms, whose features `device_features.WaveformFeatures`
computes on the model's device (`--feature_device model`): CPU workers alone cannot keep up with a GPU.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from transformers import SequenceFeatureExtractor, Wav2Vec2CTCTokenizer

from .audio import AudioDecodingError, load_audio
from .device_features import WAVEFORM_LENGTHS_KEY, WAVEFORMS_KEY
from .features import HOP_LENGTH, WIN_LENGTH, num_feature_frames

LABEL_PAD_ID = -100
AUDIO_KEY = "audio"

logger = logging.getLogger(__name__)


@dataclass
class DataCollatorCTCWithPadding:
    """Pad a list of examples into a batch of tensors.

    Each example is ``{"input_features": (T_i, F) float array or nested list, "labels": list[int]}`` or
    ``{"audio": source, "labels": list[int]}`` with `source` anything `load_audio` takes (a path, encoded bytes,
    ``{"bytes", "path"}``, ``{"array", "sampling_rate"}``) or a float32 ``np.ndarray`` of samples already at the
    extractor's rate; other keys (e.g. ``input_length``, ``text``) are ignored. Examples without ``"labels"``
    (inference) give a batch without labels. A batch must not mix the two kinds, nor labelled and unlabelled.

    Audio that cannot be decoded, has fewer than two feature frames or gives non-finite features is left out of
    the batch with a warning and counted in `skipped` (per reason, in the process that collated it: each
    dataloader worker keeps its own count). A batch in which no example is usable raises `ValueError`.

    Returns:
        ``{"input_features": (B, T_max, F) float32, "attention_mask": (B, T_max) int64 (1 = real frame),
        "labels": (B, U_max) int64 padded with -100}`` as torch tensors. With `pad_to_multiple_of`, ``T_max`` is
        rounded up to a multiple of it; with `pad_to_multiple_of_labels`, so is ``U_max``. With
        `return_waveforms`, audio examples give ``{"waveforms": (B, N_max) float32 padded with 0,
        "waveform_lengths": (B,) int64 samples, "labels"}`` instead, ``N_max`` long enough for the frames
        `pad_to_multiple_of` asks for; examples with precomputed features still give features.

    Attributes:
        feature_extractor: pads features with its ``padding_value`` (0 = the mean after normalisation), and makes
            them from audio.
        tokenizer: pads label ids (its pad positions are then replaced by -100).
        pad_to_multiple_of: optional multiple for the frame axis (e.g. the model's time subsampling).
        pad_to_multiple_of_labels: optional multiple for the label axis.
        waveform_transform: ``f(samples (N,) float32, sampling_rate) -> samples (N',) float32`` applied to each
            training waveform before its features (augmentation, e.g. `augmentation.WaveformAugmentation`).
        batch_transform: ``f(waveforms, transcripts) -> (waveforms, transcripts)`` applied to the batch's decoded
            waveforms and their ``"text"`` before `waveform_transform`; it may return fewer, longer utterances
            (long form, e.g. `WaveformAugmentation.join_batch`), whose labels are then tokenised from the returned
            transcripts. Needs examples with ``"text"`` (`speech_data.prepare_split` keeps it) and ``"labels"``.
        return_waveforms: stop after decoding, transforms and the length check, and return the padded waveforms
            for `device_features.WaveformFeatures` (`PerDepthCTCTrainer` sets it for ``--feature_device model``).

        Both transforms need audio examples: a batch of precomputed ``input_features`` with a transform set is an
        error rather than a silently unaugmented batch. `for_evaluation()` returns a copy without either, which
        `PerDepthCTCTrainer` uses for every evaluation.
    """

    feature_extractor: SequenceFeatureExtractor
    tokenizer: Wav2Vec2CTCTokenizer
    pad_to_multiple_of: int | None = None
    pad_to_multiple_of_labels: int | None = None
    waveform_transform: Optional[Callable[[np.ndarray, int], np.ndarray]] = None
    batch_transform: Optional[Callable[[list[np.ndarray], list[str]], tuple[list[np.ndarray], list[str]]]] = None
    return_waveforms: bool = False
    skipped: Counter = field(default_factory=Counter, compare=False)

    def for_evaluation(self) -> "DataCollatorCTCWithPadding":
        """The same collator without `waveform_transform` and `batch_transform` (augmentation is for training
        only)."""
        return dataclasses.replace(self, waveform_transform=None, batch_transform=None, skipped=Counter())

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        from_audio = [AUDIO_KEY in example and "input_features" not in example for example in examples]
        if any(from_audio) and not all(from_audio):
            raise ValueError("some examples have 'audio' and some 'input_features': prepare the split one way")
        if all(from_audio):
            batch, examples = self._features_from_audio(examples)
        elif self.waveform_transform is not None or self.batch_transform is not None:
            raise ValueError("this collator augments waveforms, but the examples hold precomputed 'input_features' "
                             "(a cached split): prepare the training split with features='waveforms' or "
                             "'on_the_fly' (train.py: --feature_mode waveforms), or drop the augmentation")
        else:
            batch = self._pad_features(examples)
        with_labels = ["labels" in example for example in examples]
        if any(with_labels) and not all(with_labels):
            raise ValueError("some examples have 'labels' and some do not")
        if all(with_labels):
            batch["labels"] = self._pad_labels(examples)
        return batch

    def _pad_features(self, examples):
        features = self.feature_extractor.pad(
            [{"input_features": example["input_features"]} for example in examples],
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_features": features["input_features"].to(torch.float32),
            "attention_mask": features["attention_mask"].to(torch.long),
        }

    def _features_from_audio(self, examples):
        """Decode, transform and featurise; returns the batch and the examples it holds (usable ones only)."""
        rate = self.feature_extractor.sampling_rate
        decoded, waveforms, kept = [], [], []  # decoded: [(samples, example)]
        for example in examples:
            source = example[AUDIO_KEY]
            try:
                samples = load_audio(source, sampling_rate=rate) if not isinstance(source, np.ndarray) else \
                    source if source.flags.writeable else source.copy()
            except AudioDecodingError as error:
                self._skip("unreadable audio", error)
                continue
            decoded.append((samples, example))
        if self.batch_transform is not None and decoded:
            decoded = self._transform_batch(decoded)
        for samples, example in decoded:
            source = example[AUDIO_KEY]
            if self.waveform_transform is not None:
                samples = np.asarray(self.waveform_transform(samples, rate), dtype=np.float32)
            if num_feature_frames(len(samples)) < 2:  # nothing to learn from, and some extractors fail on it
                self._skip("too short audio", describe(source))
                continue
            samples = np.asarray(samples, dtype=np.float32)
            # Rows read from Arrow are read-only views; torch warns on them and a transform may write in place.
            waveforms.append(samples if samples.flags.writeable else samples.copy())
            kept.append(example)
        if self.return_waveforms and kept:
            return self._pad_waveforms(waveforms), kept
        if waveforms:
            with np.errstate(divide="ignore", invalid="ignore"):  # non-finite rows are found and skipped below
                features = self.feature_extractor(waveforms, sampling_rate=rate, return_tensors="pt", padding=True,
                                                  pad_to_multiple_of=self.pad_to_multiple_of,
                                                  return_attention_mask=True)
            values, mask = features["input_features"].to(torch.float32), features["attention_mask"].to(torch.long)
            # The stock extractor returns NaN for a mel bin constant over the utterance (digital silence).
            usable = [bool(torch.isfinite(values[i][mask[i].bool()]).all()) for i in range(len(kept))]
            for i in (i for i, ok in enumerate(usable) if not ok):
                self._skip("non-finite features (silent audio?)", describe(kept[i][AUDIO_KEY]))
            if not all(usable):
                index = torch.tensor([i for i, ok in enumerate(usable) if ok], dtype=torch.long)
                kept = [example for example, ok in zip(kept, usable) if ok]
                values, mask = values[index], mask[index]  # padding may now be wider than needed: harmless
        if not kept:
            raise ValueError(f"none of the {len(examples)} utterances of this batch could be used "
                             f"(skipped so far: {dict(self.skipped)}); check the audio files")
        return {"input_features": values, "attention_mask": mask}, kept

    def _pad_waveforms(self, waveforms):
        lengths = [len(samples) for samples in waveforms]
        frames = num_feature_frames(max(lengths))
        if self.pad_to_multiple_of and frames % self.pad_to_multiple_of:
            frames += self.pad_to_multiple_of - frames % self.pad_to_multiple_of
        # The shortest waveform that gives `frames` frames; the longest utterance may already be longer.
        width = max(max(lengths), WIN_LENGTH + (frames - 1) * HOP_LENGTH)
        padded = np.zeros((len(waveforms), width), dtype=np.float32)
        for i, samples in enumerate(waveforms):
            padded[i, : len(samples)] = samples
        return {WAVEFORMS_KEY: torch.from_numpy(padded), WAVEFORM_LENGTHS_KEY: torch.tensor(lengths, dtype=torch.long)}

    def _transform_batch(self, decoded):
        """Apply `batch_transform` to ``[(samples, example)]``; returns the same shape, with new examples
        ``{"audio": samples, "text": transcript, "labels": ids}`` where utterances were joined."""
        missing = [key for key in ("text", "labels") if any(key not in example for _, example in decoded)]
        if missing:
            raise ValueError(f"batch_transform (long form) needs each example's {' and '.join(map(repr, missing))}: "
                             "prepare the split with speech_data.prepare_split, which keeps the normalised "
                             "transcript in 'text'")
        waveforms, texts = self.batch_transform([samples for samples, _ in decoded],
                                                [example["text"] for _, example in decoded])
        if len(waveforms) != len(texts):
            raise ValueError(f"batch_transform returned {len(waveforms)} waveforms but {len(texts)} transcripts")
        if list(texts) == [example["text"] for _, example in decoded]:
            return list(zip(waveforms, (example for _, example in decoded)))
        # Labels of joined utterances are tokenised from the joined transcript, as `prepare_split` made the
        # originals (`tokenizer(text).input_ids`). Joining the label id lists with the word delimiter between them
        # gives the same ids, but `join_batch` chooses its groups at random and returns only the joined waveforms
        # and transcripts, so the transcript is the one record of which utterances went together.
        joined = []
        for samples, text in zip(waveforms, texts):
            samples = np.asarray(samples, dtype=np.float32)
            joined.append((samples, {AUDIO_KEY: samples, "text": text, "labels": self.tokenizer(text).input_ids}))
        return joined

    def _pad_labels(self, examples):
        labels = self.tokenizer.pad(
            {"input_ids": [list(example["labels"]) for example in examples]},
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of_labels,
            padding_side="right",
            return_attention_mask=True,
            return_tensors="pt",
        )
        # Mask from the attention mask rather than `== pad_token_id`, so that only padding becomes -100.
        return labels["input_ids"].to(torch.long).masked_fill(labels["attention_mask"].ne(1), LABEL_PAD_ID)

    def _skip(self, reason: str, detail) -> None:
        self.skipped[reason] += 1
        logger.warning("skipped an utterance (%s): %s", reason, detail)


def describe(source) -> str:
    """A short name of an audio source for messages: its path, or its kind."""
    if isinstance(source, Mapping):
        return str(source.get("path") or "<audio dict>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return f"<array of {source.shape[0]} samples>"
    return str(source)
