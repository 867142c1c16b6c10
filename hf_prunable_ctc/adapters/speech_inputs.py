"""Training inputs for stock CTC models: raw audio + labels per row, the stock feature extractor per batch.

Our own model trains on precomputed fbank rows (`data.speech_data.prepare_split`); stock models each bring their own
feature extractor (`Wav2Vec2FeatureExtractor`: normalised waveform `input_values`; `ParakeetFeatureExtractor`:
log-mel `input_features`). Keeping the waveform in the dataset and calling that extractor in the collator gives
the model exactly what the ASR pipeline will give it, whatever the family.
"""

from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from ..data.audio import AudioDecodingError, load_audio
from ..data.collator import LABEL_PAD_ID
from ..data.speech_data import PreparationReport
from ..data.text import normalize_transcript
from ..data.vocabulary import count_out_of_vocabulary


def prepare_audio_split(dataset, tokenizer, sampling_rate: int, audio_column: str = "audio",
                        text_column: str = "transcription", chars_to_ignore: Optional[str] = None,
                        uppercase: bool = True, min_duration_s: float = 0.0, max_duration_s: float = float("inf"),
                        num_proc: Optional[int] = None, desc: str = "preparing"):
    """Raw rows -> `audio` (float32 samples at `sampling_rate`), `labels` (token ids), `input_length` (samples).

    Rows with unreadable audio, empty transcripts or a duration outside the limits are dropped and counted.
    Returns `(dataset, PreparationReport)`.
    """
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset (columns: {dataset.column_names})")
    normalize_kwargs: Dict[str, Any] = {"uppercase": uppercase}
    if chars_to_ignore is not None:
        normalize_kwargs["chars_to_ignore"] = chars_to_ignore

    def prepare(batch):
        out = {"audio": [], "labels": [], "input_length": [], "text": [], "drop_reason": []}
        for source, raw_text in zip(batch[audio_column], batch[text_column]):
            text = normalize_transcript(raw_text or "", **normalize_kwargs)
            reason, audio = "", np.zeros(0, dtype=np.float32)
            if not text:
                reason = "empty transcripts"
            else:
                try:
                    audio = load_audio(source, sampling_rate=sampling_rate).astype(np.float32)
                    if len(audio) == 0:
                        reason = "too short or silent audio"  # a transcript no frame can carry
                    elif not min_duration_s <= len(audio) / sampling_rate <= max_duration_s:
                        reason = "outside the duration limits"
                except AudioDecodingError:
                    reason = "unreadable audio"
            out["audio"].append(audio if not reason else np.zeros(0, dtype=np.float32))
            out["labels"].append(tokenizer(text).input_ids if not reason else [])
            out["input_length"].append(len(audio) if not reason else 0)
            out["text"].append(text)
            out["drop_reason"].append(reason)
        return out

    prepared = dataset.map(prepare, batched=True, batch_size=64, remove_columns=dataset.column_names,
                           num_proc=num_proc, desc=desc)
    report = PreparationReport(dropped=Counter(r for r in prepared["drop_reason"] if r))
    kept = prepared.filter(lambda reasons: [not r for r in reasons], input_columns="drop_reason", batched=True)
    kept = kept.remove_columns("drop_reason")
    report.kept = len(kept)
    report.unknown_characters = count_out_of_vocabulary(kept["text"], tokenizer.get_vocab())
    report.hours = sum(kept["input_length"]) / sampling_rate / 3600
    return kept, report


@dataclass
class StockCTCCollator:
    """Batch rows of `prepare_audio_split` for a stock model: the stock feature extractor on the waveforms, labels
    padded with -100.

    Returns:
        `{input_name: (B, ...) float32, "attention_mask": (B, input length) int64, "labels": (B, U_max) int64}`,
        `input_name` being the model's `main_input_name` (`input_values` (B, samples) for the wav2vec2 family,
        `input_features` (B, frames, mel bins) for Parakeet).
    """

    feature_extractor: Any
    tokenizer: Any
    input_name: str

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        audio = [np.asarray(example["audio"], dtype=np.float32) for example in examples]
        features = self.feature_extractor(audio, sampling_rate=self.feature_extractor.sampling_rate, padding=True,
                                          return_attention_mask=True, return_tensors="pt")
        if self.input_name not in features:
            raise ValueError(f"the feature extractor returns {list(features)}, the model reads {self.input_name!r}: "
                             "use the feature extractor saved with the model")
        batch = {self.input_name: features[self.input_name].to(torch.float32),
                 "attention_mask": features["attention_mask"].to(torch.long)}
        if all("labels" in example for example in examples):
            labels = self.tokenizer.pad({"input_ids": [list(e["labels"]) for e in examples]}, padding=True,
                                        padding_side="right", return_attention_mask=True, return_tensors="pt")
            batch["labels"] = labels["input_ids"].to(torch.long).masked_fill(labels["attention_mask"].ne(1),
                                                                             LABEL_PAD_ID)
        return batch
