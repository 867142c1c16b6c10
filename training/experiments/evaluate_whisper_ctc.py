#!/usr/bin/env python
"""Per-depth WER of a Whisper-encoder CTC model on real and synthetic speech, and its latency against Whisper's own
greedy decoding, measured side by side.

    python training/experiments/evaluate_whisper_ctc.py --model runs/whisper-tiny-ctc \
        --whisper /tmp/whisper-tiny.en --debian_root /tmp/debian-speech

Sets: the Debian recordings (real human speech; see `hf_prunable_ctc.data.debian_recordings`) and the first
`--max_utterances` of each synthetic test split of `--data_dir`. Every depth of the model's schedule (top layers)
decodes greedily through the package's ASR pipeline, one utterance at a time, and Whisper itself greedily
(Transformers `generate`) on the same sets. Latency: the same 10 s of LibriVox
speech through the pipeline at every depth and through Whisper's `generate` (greedy, features included), all
interleaved over `--rounds` rounds after one untimed call each; the fastest round is the figure (other load on a
shared machine only adds time). Writes `whisper_ctc.json` and `whisper_ctc.md` (rendered from it) to --output_dir,
and the same JSON as `whisper_comparison.json` into the model folder, where the model card reads it.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("test", "test_unseen_engine", "test_unseen_text")
LATENCY_RECORDINGS = ("librivox/sense_and_sensibility_01_austen_64kb-0870",
                      "librivox/sense_and_sensibility_01_austen_64kb-0880")
THREADS = 2
REAL_SPEECH_SOURCE = ("recordings of human speakers from Debian's pocketsphinx-testdata (LibriVox readings of Sense "
                      "and Sensibility, public domain; pocketsphinx test utterances, BSD-2) and alsa-utils (channel "
                      "names, GPL-2), read from the installed packages, not copied")


def split_recordings(data_dir: Path, split: str, limit: int):
    from hf_prunable_ctc.data.audio import load_audio

    folder = data_dir / split
    with open(folder / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    return [(row["file_name"], load_audio(str(folder / row["file_name"])), row["transcription"]) for row in rows]


def render(result: dict) -> str:
    from hf_prunable_ctc.evaluation.whisper_comparison import latency_note, latency_table, wer_table

    return "\n".join([
        "# Whisper tiny.en's encoder as a prunable CTC model", "",
        f"Rendered from `whisper_ctc.json`, written by `{result['command']}`.", "",
        f"Model: `{result['model']}`, {result['training']}. Greedy CTC decoding through the package's pipeline, "
        "one utterance at a time; WER after the package's `normalize_transcript` on both sides (Whisper's own "
        "normaliser, which also writes numbers as digits, gives Whisper "
        + ", ".join(f"{100 * v:.1f}% on {k}" for k, v in result["whisper_wer_whisper_normalizer"].items())
        + ").", "",
        wer_table(result), "", latency_note(result), "", latency_table(result), "",
        f"Real speech: {result['real_speech_source']}. Synthetic splits: `{result['data_dir']}` (synthetic speech "
        "from Debian's synthesisers).", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--whisper", required=True, help="Transformers Whisper folder (convert-ct2-whisper)")
    parser.add_argument("--data_dir", default="corpora/synth-6h-v2")
    parser.add_argument("--max_utterances", type=int, default=200, help="per synthetic split")
    parser.add_argument("--debian_root", default="/")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--training", default="fine-tuned with training/recipes/whisper_tiny_ctc.json")
    parser.add_argument("--output_dir", default=str(ROOT / "results" / "real_speech"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as transformers_logging

    from hf_prunable_ctc.conversion.whisper_agreement import (log_mel_features, timed, transformers_greedy,
                                                              word_error_rates)
    from hf_prunable_ctc.data.debian_recordings import debian_recordings
    from hf_prunable_ctc.evaluation.whisper_comparison import COMPARISON_FILE
    from hf_prunable_ctc.json_files import write_json
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    torch.set_num_threads(THREADS)
    transformers_logging.set_verbosity_error()
    asr = prunable_asr_pipeline(args.model)
    depths = list(range(1, asr.model.config.num_hidden_layers + 1))
    whisper = WhisperForConditionalGeneration.from_pretrained(args.whisper).eval()
    processor = WhisperProcessor.from_pretrained(args.whisper)

    real = [(r.name, r.samples(), r.transcript) for r in debian_recordings(args.debian_root)]
    sets = {"real speech (Debian)": real}
    for split in SPLITS:
        sets[f"synthetic {split}"] = split_recordings(Path(args.data_dir), split, args.max_utterances)
    wer, whisper_wer, whisper_wer_own = {}, {}, {}
    for name, recordings in sets.items():
        references = [text for _, _, text in recordings]
        per_depth, transcripts = {}, {}
        for depth in depths:
            predictions = [asr(audio, num_layers=depth)["text"] for _, audio, _ in recordings]
            per_depth[str(depth)] = word_error_rates(references, predictions)["normalized"]
            transcripts[str(depth)] = predictions
        wer[name] = {"utterances": len(recordings), "per_depth": per_depth,
                     "examples": [{"name": n, "reference": ref, **{d: transcripts[d][i] for d in transcripts}}
                                  for i, (n, _, ref) in enumerate(recordings[:5])]}
        predictions = [processor.batch_decode([ids], skip_special_tokens=True)[0] for ids in (
            transformers_greedy(whisper, log_mel_features(processor.feature_extractor, [audio]), 200)[0]
            for _, audio, _ in recordings)]
        scores = word_error_rates(references, predictions)
        whisper_wer[name], whisper_wer_own[name] = scores["normalized"], scores["whisper_normalized"]
        print(name, {d: round(100 * v, 1) for d, v in per_depth.items()}, whisper_wer.get(name), flush=True)

    samples = {name: audio for name, audio, _ in real}
    probe = np.concatenate([samples[name] for name in LATENCY_RECORDINGS])[:160000]
    runs = {f"CTC {d} layers": (lambda d=d: asr(probe, num_layers=d)) for d in depths}
    runs["whisper_greedy"] = lambda: transformers_greedy(
        whisper, log_mel_features(processor.feature_extractor, [probe]), 200)
    for run in runs.values():
        run()
    seconds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            seconds[name].append(timed(run)[1])
    latency = {"audio_seconds": round(len(probe) / 16000, 3), "rounds": args.rounds,
               "recordings": list(LATENCY_RECORDINGS)}
    for name, values in seconds.items():
        latency[name] = {"min_s": round(min(values), 4), "median_s": round(float(np.median(values)), 4),
                         "all_s": [round(v, 4) for v in values]}
    command = ("python training/experiments/evaluate_whisper_ctc.py --model " + args.model + " --whisper "
               + args.whisper + f" --max_utterances {args.max_utterances} --debian_root {args.debian_root}")
    result = {"command": command, "model": args.model, "training": args.training, "data_dir": args.data_dir,
              "depths": depths, "wer": wer, "whisper_wer": whisper_wer,
              "whisper_wer_whisper_normalizer": whisper_wer_own, "latency_10s": latency,
              "whisper_name": "Whisper " + Path(args.whisper).name.removeprefix("whisper-"),
              "real_speech_source": f"{len(real)} {REAL_SPEECH_SOURCE}",
              "machine": {"threads": THREADS, "processor": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}}
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "whisper_ctc.json", result, indent=1)
    (output / "whisper_ctc.md").write_text(render(result))
    write_json(Path(args.model) / COMPARISON_FILE, result, indent=1)  # the model card's comparison section
    print(render(result))


if __name__ == "__main__":
    main()
