"""Speech datasets for training: load a split, decode audio without torchcodec, make labels and (optionally) features.

Sources, as `run_speech_recognition_ctc.py` names them:
- `dataset_name="audiofolder"` with `data_dir`: `<data_dir>/<split>/metadata.csv` (`file_name` relative to it), the
  layout `training/make_corpus.py` writes. The CSV is read as a plain table, so no audio library beyond soundfile
  is needed.
- a folder written by `DatasetDict.save_to_disk`.
- a Hub dataset id (LibriSpeech: `openslr/librispeech_asr`, config `clean`), or a local folder in the Hub's layout
  (parquet shards, e.g. `data/train-00000-of-00001.parquet`), both read by `datasets.load_dataset`: an `Audio`
  column is cast to `Audio(decode=False)`, which yields `{"bytes", "path"}` without torchcodec/FFmpeg, and decoded
  with soundfile.

Three ways to feed the model (`FEATURE_MODES`):
- ``"on_the_fly"`` (the default for training, and the one for large corpora): preparation reads only file headers
  (`soundfile.info`: frame count and rate, no decoding) for the duration limits and `input_length`; the collator
  decodes the encoded audio and computes log-mel features per batch, in the dataloader workers. Storage stays the
  compressed audio, and `group_by_length` needs no pass that decodes the corpus.
- ``"waveforms"``: every utterance is decoded once and its samples stored (float32 at the extractor's rate, read
  back as numpy); the collator computes features per batch. Decoding is paid once, and a training-time
  `waveform_transform` (augmentation) still sees waveforms; storage is 64 KB per second of audio.
- ``"cached"``: every utterance is decoded once and its features stored in Arrow as fixed-width float32 arrays,
  read back as numpy (32 KB per second of audio with 80 bins); the fastest to read, but nothing can be done to
  the waveform any more. Evaluation splits are always prepared this way, so every utterance left out of a score is
  known (and counted) before scoring.

Bad rows never stop a run: unreadable audio, transcripts empty after normalisation and (training split only)
utterances outside the duration limits are dropped and counted; characters outside the vocabulary become `<unk>`
and are counted. In on-the-fly mode, audio whose header reads but whose samples do not is skipped by the collator
(and counted there, with a warning).
"""

import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile

from .audio import AudioDecodingError, load_audio
from .features import HOP_LENGTH, extract_features, num_feature_frames
from .text import normalize_transcript
from .vocabulary import count_out_of_vocabulary

FEATURE_MODES = ("on_the_fly", "waveforms", "cached")
AUDIO_COLUMN = "audio"  # where a prepared on-the-fly split keeps each utterance's encoded audio


def load_split(dataset_name: str, split: str, dataset_config_name: Optional[str] = None,
               data_dir: Optional[str] = None, audio_column: str = "audio", cache_dir: Optional[str] = None):
    """Load one split as a `datasets.Dataset` whose `audio_column` holds something `load_audio` decodes.

    `dataset_name` is "audiofolder" (with `data_dir`), a `save_to_disk` folder, a local folder in the Hub's layout
    (parquet/csv/json shards, read by `datasets.load_dataset(folder)` exactly as a Hub id is) or a Hub id.
    """
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
    if is_saved_dataset(dataset_name):
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in {dataset_name} (splits: {list(loaded)})")
            loaded = loaded[split]
    else:
        # A Hub id, or a local folder of shards: the same `load_dataset` code path.
        splits = available_splits(dataset_name, dataset_config_name, data_dir)
        if splits is not None and split not in splits:
            raise ValueError(f"split {split!r} not in {dataset_name} (splits: {sorted(splits)})")
        loaded = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    if audio_column not in loaded.column_names:
        raise ValueError(f"audio column {audio_column!r} not in the dataset (columns: {loaded.column_names}); "
                         "set --audio_column_name")
    if isinstance(loaded.features[audio_column], datasets.Audio):
        loaded = loaded.cast_column(audio_column, datasets.Audio(decode=False))
    return loaded


def is_saved_dataset(path: str) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(
        os.path.join(path, "state.json"))


def available_splits(dataset_name: str, dataset_config_name: Optional[str] = None,
                     data_dir: Optional[str] = None) -> Optional[List[str]]:
    """Names of the splits a source has, found without loading any data; None when they cannot be listed.

    "audiofolder": the sub-folders of `data_dir` holding a `metadata.csv`; a `save_to_disk` folder: its splits; a
    local folder of shards or a Hub id: what `datasets.get_dataset_split_names` reports (None when offline).
    """
    if dataset_name == "audiofolder":
        if not data_dir or not os.path.isdir(data_dir):
            raise FileNotFoundError(f"no data folder {data_dir!r}: give --data_dir with <split>/metadata.csv inside")
        return sorted(name for name in os.listdir(data_dir)
                      if os.path.isfile(os.path.join(data_dir, name, "metadata.csv")))
    if is_saved_dataset(dataset_name):
        dict_file = os.path.join(dataset_name, "dataset_dict.json")
        if os.path.isfile(dict_file):
            import json

            with open(dict_file) as f:
                return list(json.load(f)["splits"])
        return None  # a single saved Dataset has no split names: any split name loads it
    import datasets

    try:
        return datasets.get_dataset_split_names(dataset_name, dataset_config_name)
    except Exception:  # offline, gated or unknown: let load_dataset report it with its own message
        return None


def audio_num_samples(source, sampling_rate: int) -> int:
    """Samples `source` will have once decoded and resampled to `sampling_rate`, read from the file header only.

    `source` is anything `load_audio` takes. Compressed formats whose header holds no frame count are estimated
    by libsndfile; the result only sorts batches and applies duration limits.

    Raises:
        AudioDecodingError: missing file or unreadable header.
    """
    if isinstance(source, dict) and ("array" in source or "raw" in source):
        array = np.asarray(source["array"] if "array" in source else source["raw"])
        frames, rate = max(array.shape) if array.ndim else 0, int(source["sampling_rate"])
    else:
        if isinstance(source, dict):
            data, path = source.get("bytes"), source.get("path")
            file, name = (io.BytesIO(bytes(data)), str(path)) if data is not None else (path, str(path))
        elif isinstance(source, (bytes, bytearray, memoryview)):
            file, name = io.BytesIO(bytes(source)), "<bytes>"
        else:
            file, name = source, str(source)
        if file is None:
            raise AudioDecodingError("<dict>", "both 'bytes' and 'path' are None")
        if isinstance(file, (str, os.PathLike)) and not os.path.isfile(file):
            raise AudioDecodingError(name, "no such file")
        try:
            info = soundfile.info(file)
        except (soundfile.SoundFileError, RuntimeError, EOFError) as error:
            raise AudioDecodingError(name, str(error)) from error
        frames, rate = info.frames, info.samplerate
    return int(round(frames * sampling_rate / rate)) if rate else 0


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

    def scoring_record(self) -> dict:
        """What a score covers: ``{"utterances_scored": n, "utterances_left_out": n, "left_out": {reason: n}}``."""
        return {"utterances_scored": self.kept, "utterances_left_out": sum(self.dropped.values()),
                "left_out": dict(sorted(self.dropped.items()))}


def prepare_split(dataset, feature_extractor, tokenizer, audio_column: str = "audio",
                  text_column: str = "transcription", chars_to_ignore: Optional[str] = None,
                  uppercase: bool = True, min_duration_s: float = 0.0, max_duration_s: float = float("inf"),
                  features: str = "cached", num_proc: Optional[int] = None, desc: str = "preparing"):
    """Turn raw rows into `labels` (token ids), `input_length` (feature frames) and the model's input.

    Args:
        features: "cached" stores `input_features` (frames, bins) float32, decoded and computed here;
            "waveforms" stores the decoded samples (num_samples,) float32 in column `AUDIO_COLUMN`;
            "on_the_fly" keeps the encoded audio there for `DataCollatorCTCWithPadding` to decode, reading only
            file headers here (see the module docstring).
        min_duration_s, max_duration_s: duration limits in seconds; give them for the training split only, so that
            evaluation scores every utterance.

    Returns:
        `(dataset, PreparationReport)`; dropped rows are gone from the dataset. Columns: `labels`, `input_length`,
        `text`, and `input_features` (cached) or `AUDIO_COLUMN` (waveforms, on the fly).
    """
    import datasets

    if features not in FEATURE_MODES:
        raise ValueError(f"features must be one of {FEATURE_MODES}, got {features!r}")
    for column in (audio_column, text_column):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not in the dataset (columns: {dataset.column_names})")
    sampling_rate = feature_extractor.sampling_rate
    normalize_kwargs = {"uppercase": uppercase}
    if chars_to_ignore is not None:
        normalize_kwargs["chars_to_ignore"] = chars_to_ignore
    cached, decoded = features == "cached", features == "waveforms"
    # Dropped rows still need a value of the same type until they are filtered out.
    no_features = np.zeros((0, feature_extractor.feature_size), dtype=np.float32)
    no_samples = np.zeros(0, dtype=np.float32)

    def prepare(batch):
        out = {"labels": [], "input_length": [], "text": [], "drop_reason": []}
        out["input_features" if cached else AUDIO_COLUMN] = []
        for source, raw_text in zip(batch[audio_column], batch[text_column]):
            text = normalize_transcript(raw_text or "", **normalize_kwargs)
            reason, inputs, frames = "", (no_features if cached else no_samples if decoded else source), 0
            if not text:
                reason = "empty transcripts"
            else:
                try:
                    # Headers first: rows outside the limits are never decoded.
                    num_samples = audio_num_samples(source, sampling_rate)
                    frames = num_feature_frames(num_samples)
                    if not min_duration_s <= num_samples / sampling_rate <= max_duration_s:
                        reason = "outside the duration limits"
                    elif frames < 2:
                        reason = "too short or silent audio"
                    elif cached:
                        inputs = extract_features(feature_extractor, load_audio(source, sampling_rate=sampling_rate))
                        frames = len(inputs)
                    elif decoded:
                        inputs = load_audio(source, sampling_rate=sampling_rate)
                        frames = num_feature_frames(len(inputs))
                except AudioDecodingError:
                    reason = "unreadable audio"
                except ValueError:  # silent: the features would not be finite
                    reason = "too short or silent audio"
            out["input_features" if cached else AUDIO_COLUMN].append(
                inputs if not reason else no_features if cached else no_samples if decoded else source)
            out["labels"].append(tokenizer(text).input_ids if not reason else [])
            out["input_length"].append(frames if not reason else 0)
            out["text"].append(text)
            out["drop_reason"].append(reason)
        return out

    output_features = None
    if decoded:
        output_features = datasets.Features({
            AUDIO_COLUMN: datasets.List(datasets.Value("float32")),
            "labels": datasets.List(datasets.Value("int64")), "input_length": datasets.Value("int64"),
            "text": datasets.Value("string"), "drop_reason": datasets.Value("string")})
    if cached:
        # Fixed-width float32 rows come back from Arrow as numpy ~10x faster than nested float lists.
        output_features = datasets.Features({
            "input_features": datasets.Array2D(shape=(None, feature_extractor.feature_size), dtype="float32"),
            "labels": datasets.List(datasets.Value("int64")), "input_length": datasets.Value("int64"),
            "text": datasets.Value("string"), "drop_reason": datasets.Value("string")})
    prepared = dataset.map(prepare, batched=True, batch_size=64, remove_columns=dataset.column_names,
                           num_proc=num_proc, desc=desc, features=output_features)
    report = PreparationReport()
    report.dropped.update(r for r in prepared["drop_reason"] if r)
    kept = prepared.filter(lambda reasons: [not r for r in reasons], input_columns="drop_reason", batched=True)
    kept = kept.remove_columns("drop_reason")
    if cached or decoded:
        kept = kept.with_format("numpy", columns=["input_features" if cached else AUDIO_COLUMN],
                                output_all_columns=True)
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
