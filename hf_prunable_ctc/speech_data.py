"""Speech datasets for training: load a split, decode audio without torchcodec, make features and labels.

Sources, as `run_speech_recognition_ctc.py` names them:
- `dataset_name="audiofolder"` with `data_dir`: `<data_dir>/<split>/metadata.csv` (`file_name` relative to it), the
  layout `training/make_corpus.py` writes. The CSV is read as a plain table, so no audio library beyond soundfile
  is needed.
- a folder written by `DatasetDict.save_to_disk`.
- a Hub dataset id (LibriSpeech: `openslr/librispeech_asr`, config `clean`): the audio column is cast to
  `Audio(decode=False)`, which yields `{"bytes", "path"}` without torchcodec/FFmpeg, and decoded with soundfile.

Bad rows never stop a run: unreadable audio, transcripts empty after normalisation and utterances outside the
duration limits are dropped and counted; characters outside the vocabulary become `<unk>` and are counted.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .audio import AudioDecodingError, load_audio
from .features import HOP_LENGTH, extract_features
from .text import normalize_transcript
from .vocabulary import count_out_of_vocabulary


def load_split(dataset_name: str, split: str, dataset_config_name: Optional[str] = None,
               data_dir: Optional[str] = None, audio_column: str = "audio", cache_dir: Optional[str] = None):
    """Load one split as a `datasets.Dataset` whose `audio_column` holds something `load_audio` decodes."""
    import datasets

    if dataset_name == "audiofolder":
        if not data_dir:
            raise ValueError("dataset_name='audiofolder' needs --data_dir")
        split_dir = os.path.join(data_dir, split)
        metadata = os.path.join(split_dir, "metadata.csv")
        if not os.path.isfile(metadata):
            raise FileNotFoundError(f"no {metadata}: expected <data_dir>/<split>/metadata.csv (audiofolder layout)")
        table = datasets.load_dataset("csv", data_files=metadata, split="train", cache_dir=cache_dir)
        if "file_name" not in table.column_names:
            raise ValueError(f"{metadata} has no 'file_name' column (columns: {table.column_names})")
        return table.map(lambda row: {audio_column: os.path.join(split_dir, row["file_name"])})
    if os.path.isdir(dataset_name):
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {dataset_name} (splits: {list(loaded)})")
            loaded = loaded[split]
    else:
        loaded = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    if audio_column not in loaded.column_names:
        raise ValueError(f"audio column {audio_column!r} not in the dataset (columns: {loaded.column_names}); "
                         "set --audio_column_name")
    if isinstance(loaded.features[audio_column], datasets.Audio):
        loaded = loaded.cast_column(audio_column, datasets.Audio(decode=False))
    return loaded


@dataclass
class PreparationReport:
    """What data preparation dropped or changed, per reason."""

    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    unknown_characters: Counter = field(default_factory=Counter)
    hours: float = 0.0

    def summary(self, name: str) -> str:
        text = f"{name}: kept {self.kept} utterances ({self.hours:.2f} h)"
        if self.dropped:
            text += ", dropped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
        if self.unknown_characters:
            text += f", mapped to <unk>: {dict(self.unknown_characters.most_common(10))}"
        return text


def prepare_split(dataset, feature_extractor, tokenizer, audio_column: str = "audio",
                  text_column: str = "transcription", chars_to_ignore: Optional[str] = None,
                  uppercase: bool = True, min_duration_s: float = 0.0, max_duration_s: float = float("inf"),
                  num_proc: Optional[int] = None, desc: str = "preparing"):
    """Turn raw rows into `input_features` (frames, bins), `labels` (token ids) and `input_length` (frames).

    Returns `(dataset, PreparationReport)`; dropped rows are gone from the dataset.
    """
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset (columns: {dataset.column_names})")
    sampling_rate = feature_extractor.sampling_rate
    normalize_kwargs = {"uppercase": uppercase}
    if chars_to_ignore is not None:
        normalize_kwargs["chars_to_ignore"] = chars_to_ignore

    # Dropped rows still need a value of the same type until they are filtered out.
    no_features = np.zeros((0, feature_extractor.feature_size), dtype=np.float32)

    def prepare(batch):
        out = {"input_features": [], "labels": [], "input_length": [], "text": [], "drop_reason": []}
        for source, raw_text in zip(batch[audio_column], batch[text_column]):
            text = normalize_transcript(raw_text or "", **normalize_kwargs)
            reason, features, labels = "", [], []
            if not text:
                reason = "empty transcripts"
            else:
                try:
                    audio = load_audio(source, sampling_rate=sampling_rate)
                    duration = len(audio) / sampling_rate
                    if not min_duration_s <= duration <= max_duration_s:
                        reason = "outside the duration limits"
                    else:
                        features = extract_features(feature_extractor, audio)
                        labels = tokenizer(text).input_ids
                except AudioDecodingError:
                    reason = "unreadable audio"
                except ValueError:  # too short for one frame, or silent: features would be NaN
                    reason = "too short or silent audio"
            out["input_features"].append(features if not reason else no_features)
            out["labels"].append(labels if not reason else [])
            out["input_length"].append(len(features) if not reason else 0)
            out["text"].append(text)
            out["drop_reason"].append(reason)
        return out

    prepared = dataset.map(prepare, batched=True, batch_size=64, remove_columns=dataset.column_names,
                           num_proc=num_proc, desc=desc)
    report = PreparationReport()
    report.dropped.update(r for r in prepared["drop_reason"] if r)
    kept = prepared.filter(lambda reasons: [not r for r in reasons], input_columns="drop_reason", batched=True)
    kept = kept.remove_columns("drop_reason")
    report.kept = len(kept)
    report.unknown_characters = count_out_of_vocabulary(kept["text"], tokenizer.get_vocab())
    report.hours = sum(kept["input_length"]) * HOP_LENGTH / sampling_rate / 3600
    return kept, report


def training_texts(dataset, text_column: str, chars_to_ignore: Optional[str] = None, uppercase: bool = True):
    """Normalised transcripts of a raw split, for building the vocabulary."""
    kwargs: Dict = {"uppercase": uppercase}
    if chars_to_ignore is not None:
        kwargs["chars_to_ignore"] = chars_to_ignore
    return [t for t in (normalize_transcript(x or "", **kwargs) for x in dataset[text_column]) if t]


def collated_batches(dataset, feature_extractor, tokenizer, batch_size: int = 16) -> List[dict]:
    """A prepared split as a list of padded batches (`input_features`, `attention_mask`, `labels`), in order."""
    from .collator import DataCollatorCTCWithPadding

    collate = DataCollatorCTCWithPadding(feature_extractor=feature_extractor, tokenizer=tokenizer)
    rows = dataset.select_columns(["input_features", "labels"])
    return [collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            for start in range(0, len(rows), batch_size)]


def load_prepared_split(dataset_name: str, split: str, feature_extractor, tokenizer, data_dir: Optional[str] = None,
                        dataset_config_name: Optional[str] = None, audio_column: str = "audio",
                        max_samples: Optional[int] = None, **prepare_kwargs):
    """`load_split` + optional truncation to `max_samples` + `prepare_split`: returns (dataset, report)."""
    raw = load_split(dataset_name, split, dataset_config_name=dataset_config_name, data_dir=data_dir,
                     audio_column=audio_column)
    if max_samples:
        raw = raw.select(range(min(max_samples, len(raw))))
    return prepare_split(raw, feature_extractor, tokenizer, audio_column=audio_column, desc=f"{split} features",
                         **prepare_kwargs)
