"""Batching for CTC training: pad features and labels separately, as in `run_speech_recognition_ctc.py`.

Features and labels have unrelated lengths (frames vs characters), so each is padded to its own batch maximum.
Padded label positions become -100, which the CTC loss ignores (`Wav2Vec2ForCTC` convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import SequenceFeatureExtractor, Wav2Vec2CTCTokenizer

LABEL_PAD_ID = -100


@dataclass
class DataCollatorCTCWithPadding:
    """Pad a list of examples into a batch of tensors.

    Each example is ``{"input_features": (T_i, F) float array or nested list, "labels": list[int]}``; other keys
    (e.g. ``input_length``) are ignored. Examples without ``"labels"`` (inference) give a batch without labels; a
    batch must not mix the two.

    Returns:
        ``{"input_features": (B, T_max, F) float32, "attention_mask": (B, T_max) int64 (1 = real frame),
        "labels": (B, U_max) int64 padded with -100}`` as torch tensors. With `pad_to_multiple_of`, ``T_max`` is
        rounded up to a multiple of it; with `pad_to_multiple_of_labels`, so is ``U_max``.

    Attributes:
        feature_extractor: pads features with its ``padding_value`` (0 = the mean after normalisation).
        tokenizer: pads label ids (its pad positions are then replaced by -100).
        pad_to_multiple_of: optional multiple for the frame axis (e.g. the model's time subsampling).
        pad_to_multiple_of_labels: optional multiple for the label axis.
    """

    feature_extractor: SequenceFeatureExtractor
    tokenizer: Wav2Vec2CTCTokenizer
    pad_to_multiple_of: int | None = None
    pad_to_multiple_of_labels: int | None = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        with_labels = ["labels" in example for example in examples]
        if any(with_labels) and not all(with_labels):
            raise ValueError("some examples have 'labels' and some do not")

        features = self.feature_extractor.pad(
            [{"input_features": example["input_features"]} for example in examples],
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch = {
            "input_features": features["input_features"].to(torch.float32),
            "attention_mask": features["attention_mask"].to(torch.long),
        }
        if all(with_labels):
            labels = self.tokenizer.pad(
                {"input_ids": [list(example["labels"]) for example in examples]},
                padding=True,
                pad_to_multiple_of=self.pad_to_multiple_of_labels,
                padding_side="right",
                return_attention_mask=True,
                return_tensors="pt",
            )
            # Mask from the attention mask rather than `== pad_token_id`, so that only padding becomes -100.
            batch["labels"] = labels["input_ids"].to(torch.long).masked_fill(labels["attention_mask"].ne(1), LABEL_PAD_ID)
        return batch
