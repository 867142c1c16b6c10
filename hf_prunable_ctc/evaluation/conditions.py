"""Listening conditions a test split does not cover: silence around speech and minute-long recordings.

A corpus that trims silence to a tenth of a second never shows the model a pause, and per-utterance test sets never
send it a long file. These conditions rebuild the test split's audio the way a user's recordings look and transcribe
it through the ASR pipeline a user runs, at every depth, so the per-depth report can state the cost of each:

- ``clean``: the utterances as they are (through the pipeline, so the other conditions have a like-for-like baseline);
- ``silence``: `silence_seconds` of quiet room noise (default 1 s at -65 dBFS) before and after each utterance;
- ``long_form``: consecutive utterances joined with pauses into recordings of about `long_form_seconds` (default
  60 s), transcribed with ``chunk_length_s`` chunking and scored against the joined references.

The pauses are low-level Gaussian noise rather than digital zeros: recordings are never exactly silent, and
zeros would test the log floor of the features instead of the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .metrics import character_error_rate, word_error_rate

CONDITIONS = ("clean", "silence", "long_form")


@dataclass(frozen=True)
class ConditionSettings:
    """How the conditions are built (recorded with the results, so a rerun builds the same audio).

    Attributes:
        silence_seconds: pause added before and after each utterance in ``silence``.
        pause_seconds: (min, max) of the uniform random pause between utterances in ``long_form``.
        long_form_seconds: target length of a ``long_form`` recording; a recording ends with the first utterance
            that reaches it (the last one may be shorter, never empty).
        chunk_length_s, stride_length_s: the pipeline's chunking for ``long_form`` (stride None: the pipeline's
            default, chunk_length_s / 6 on each side).
        noise_dbfs: RMS level of the pauses, in dB relative to full scale (-65: a quiet room).
        seed: seed of the pauses' noise and lengths.
    """

    silence_seconds: float = 1.0
    pause_seconds: tuple[float, float] = (0.3, 1.0)
    long_form_seconds: float = 60.0
    chunk_length_s: float = 10.0
    stride_length_s: float | None = None
    noise_dbfs: float = -65.0
    seed: int = 0

    def __post_init__(self):
        low, high = self.pause_seconds
        if self.silence_seconds < 0 or low < 0 or high < low:
            raise ValueError(f"silence_seconds and pause_seconds must be >= 0 with min <= max, got "
                             f"{self.silence_seconds} and {self.pause_seconds}")
        if self.long_form_seconds <= 0 or self.chunk_length_s <= 0:
            raise ValueError("long_form_seconds and chunk_length_s must be > 0")


def quiet_noise(num_samples: int, noise_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """``(num_samples,)`` float32 Gaussian noise whose RMS is `noise_dbfs` dB below full scale (1.0)."""
    return (10.0 ** (noise_dbfs / 20.0) * rng.standard_normal(num_samples)).astype(np.float32)


def with_silence(audio: np.ndarray, sampling_rate: int, before_s: float, after_s: float, noise_dbfs: float = -65.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """`audio` ``(samples,)`` with `before_s` / `after_s` seconds of quiet noise around it (float32)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    before = quiet_noise(round(before_s * sampling_rate), noise_dbfs, rng)
    after = quiet_noise(round(after_s * sampling_rate), noise_dbfs, rng)
    return np.concatenate([before, np.asarray(audio, dtype=np.float32), after])


def long_form_recordings(audios: Sequence[np.ndarray], references: Sequence[str], sampling_rate: int,
                         settings: ConditionSettings) -> list[tuple[np.ndarray, str]]:
    """Join consecutive utterances, with random pauses of quiet noise between them, into recordings of about
    `settings.long_form_seconds`; returns ``[(audio, joined reference), ...]`` covering every utterance once."""
    if len(audios) != len(references):
        raise ValueError(f"{len(audios)} audios but {len(references)} references")
    rng = np.random.default_rng(settings.seed)
    target = settings.long_form_seconds * sampling_rate
    recordings, pieces, words = [], [], []
    for audio, reference in zip(audios, references):
        if pieces:
            pause = rng.uniform(*settings.pause_seconds)
            pieces.append(quiet_noise(round(pause * sampling_rate), settings.noise_dbfs, rng))
        pieces.append(np.asarray(audio, dtype=np.float32))
        words.append(reference)
        if sum(len(piece) for piece in pieces) >= target:
            recordings.append((np.concatenate(pieces), " ".join(" ".join(words).split())))
            pieces, words = [], []
    if pieces:
        recordings.append((np.concatenate(pieces), " ".join(" ".join(words).split())))
    return recordings


def evaluate_conditions(asr, audios: Sequence[np.ndarray], references: Sequence[str], depths: Sequence[int],
                        sampling_rate: int = 16000, settings: ConditionSettings | None = None,
                        conditions: Sequence[str] = CONDITIONS, batch_size: int = 8) -> dict:
    """WER and CER of each condition at each depth, transcribed through `asr`.

    Args:
        asr: a `PrunableASRPipeline` (`hf_prunable_ctc.runtime.asr_pipeline.prunable_asr_pipeline`); each depth
            runs its first layers of the model's pruning schedule (``num_layers=k``), with no reload.
        audios: the test utterances, mono float32 at `sampling_rate`.
        references: their normalised transcripts (as the model's tokenizer spells them).
        depths: depths to evaluate.
        settings: how the conditions are built; `ConditionSettings()` if None.
        conditions: a subset of `CONDITIONS`.

    Returns:
        ``{"settings": {...}, "utterances": n, "long_form_recordings": m, "long_form_minutes": x,
        "records": [{"condition", "depth", "wer", "cer"}, ...]}`` with rates in percent, and
        ``"cost"``: per depth and condition, the WER points it adds over ``clean``.
    """
    settings = settings if settings is not None else ConditionSettings()
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {list(CONDITIONS)}")
    if not audios:
        raise ValueError("no test utterances")
    rng = np.random.default_rng(settings.seed)
    inputs = {
        "clean": ([np.asarray(a, dtype=np.float32) for a in audios], list(references), {}),
        "silence": ([with_silence(a, sampling_rate, settings.silence_seconds, settings.silence_seconds,
                                  settings.noise_dbfs, rng) for a in audios], list(references), {}),
    }
    recordings = long_form_recordings(audios, references, sampling_rate, settings)
    inputs["long_form"] = ([audio for audio, _ in recordings], [text for _, text in recordings],
                           {"chunk_length_s": settings.chunk_length_s, "stride_length_s": settings.stride_length_s})
    records = []
    for depth in depths:
        for condition in conditions:
            condition_audios, condition_references, call = inputs[condition]
            call = {key: value for key, value in call.items() if value is not None}
            outputs = asr([{"raw": audio, "sampling_rate": sampling_rate} for audio in condition_audios],
                          num_layers=depth, batch_size=batch_size, **call)
            predictions = [output["text"] for output in outputs]
            records.append({"condition": condition, "depth": int(depth),
                            "wer": 100 * word_error_rate(condition_references, predictions),
                            "cer": 100 * character_error_rate(condition_references, predictions)})
    clean = {r["depth"]: r["wer"] for r in records if r["condition"] == "clean"}
    cost = {str(r["depth"]): {} for r in records}
    for r in records:
        if r["condition"] != "clean" and r["depth"] in clean:
            cost[str(r["depth"])][r["condition"]] = r["wer"] - clean[r["depth"]]
    return {"settings": asdict(settings), "utterances": len(audios), "long_form_recordings": len(recordings),
            "long_form_minutes": sum(len(audio) for audio, _ in recordings) / sampling_rate / 60,
            "records": records, "cost": cost}


def format_conditions_table(result: dict) -> str:
    """Markdown table: one row per depth, WER (CER) per condition and the WER points each condition adds."""
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in result["records"])]
    depths = sorted({r["depth"] for r in result["records"]}, reverse=True)
    by_key = {(r["depth"], r["condition"]): r for r in result["records"]}
    extra = [c for c in conditions if c != "clean"] if "clean" in conditions else []
    header = ["depth", *[f"{c} WER (CER) %" for c in conditions], *[f"{c} cost (WER points)" for c in extra]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for depth in depths:
        cells = [str(depth)]
        for condition in conditions:
            r = by_key.get((depth, condition))
            cells.append(f"{r['wer']:.1f} ({r['cer']:.1f})" if r else "-")
        for condition in extra:
            cost = result["cost"].get(str(depth), {}).get(condition)
            cells.append(f"{cost:+.1f}" if cost is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_audio_and_references(dataset, audio_column: str, text_column: str, sampling_rate: int,
                               max_samples: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Decoded audio (mono float32 at `sampling_rate`) and normalised references of a split from
    `hf_prunable_ctc.data.speech_data.load_split`, in order, the first `max_samples` rows (all if None)."""
    from ..data.audio import load_audio
    from ..data.text import normalize_transcript

    rows = dataset if max_samples is None else dataset.select(range(min(max_samples, len(dataset))))
    return ([load_audio(row[audio_column], sampling_rate) for row in rows],
            [normalize_transcript(row[text_column]) for row in rows])


def write_conditions(result: dict, output_dir: str) -> list[str]:
    """Write `conditions.json` and `conditions.md` (the table of `format_conditions_table`) into `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    json_path, md_path = os.path.join(output_dir, "conditions.json"), os.path.join(output_dir, "conditions.md")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    settings = result["settings"]
    where = f" of `{result['split']}`" if result.get("split") else ""
    with open(md_path, "w") as f:
        f.write(f"# Listening conditions\n\n{result['utterances']} utterances{where}; `silence`: "
                f"{settings['silence_seconds']:g} s of noise at {settings['noise_dbfs']:g} dBFS before and after each; "
                f"`long_form`: {result['long_form_recordings']} recordings of about "
                f"{settings['long_form_seconds']:g} s ({result['long_form_minutes']:.1f} min in all) with pauses of "
                f"{settings['pause_seconds'][0]:g}-{settings['pause_seconds'][1]:g} s, through the pipeline with "
                f"`chunk_length_s={settings['chunk_length_s']:g}`. Greedy CTC, the model's pruning schedule.\n\n"
                + format_conditions_table(result) + "\n")
    return [json_path, md_path]
