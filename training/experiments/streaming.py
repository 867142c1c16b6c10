#!/usr/bin/env python
"""Streaming recognition at several depths: train a chunk-aware model on the demo corpus, then measure it.

    OMP_NUM_THREADS=1 nice python training/experiments/streaming.py               # every stage, resumable
    OMP_NUM_THREADS=1 nice python training/experiments/streaming.py --stop_after train
    python training/experiments/streaming.py --render_only                       # README.md from results.json

Stages, each skipped when its output exists (so a killed run continues where it stopped):

1. `prepare`: the training split's character vocabulary, global CMVN statistics over its audio
   (`hf_prunable_ctc.data.global_cmvn`) and a freshly initialised model with the demo config plus the streaming
   fields (`causal_conv`, `dynamic_chunk_training`), saved with its processor to `<run_dir>/init`.
2. `train`: the demo recipe (`training/train.py training/recipes/demo.json`) continuing from that folder, so the
   global-CMVN feature extractor is the one training uses, written to `<run_dir>/model`.
3. `measure`: on the test split, per exit depth: WER with full context, WER streamed by `StreamingRecognizer` at
   each chunk size, the latency from the end of the audio to the final transcript and from the start to the first
   partial, the compute per chunk (RTF), and what switching depth in the middle of each utterance costs.
4. `render`: `<output_dir>/README.md` from `<output_dir>/results.json`; no number in it is typed by hand.

Trained models stay under `runs/` (git-ignored); only `results.json` and `README.md` go to `results/streaming`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.global_cmvn import compute_global_cmvn, with_global_cmvn
from hf_prunable_ctc.data.speech_data import load_split, training_texts
from hf_prunable_ctc.data.text import normalize_transcript
from hf_prunable_ctc.data.vocabulary import make_ctc_tokenizer
from hf_prunable_ctc.evaluation.metrics import word_error_rate
from hf_prunable_ctc.json_files import write_json

REPO = Path(__file__).resolve().parents[2]
RECIPE = "training/recipes/demo.json"
MODEL_CONFIG = "training/configs/demo.json"
# What makes the demo model streamable; everything else is the demo config.
STREAMING_FIELDS = {"causal_conv": True, "dynamic_chunk_training": True, "dynamic_chunk_max_size": 32,
                    "dynamic_chunk_full_context_probability": 0.5, "left_chunks": -1}
CHUNKS_MS = (320, 640, 1280)
LEFT_CHUNKS = 4
# The streaming results measure chunking on the paper's recipe (uniform exit weights, no sandwich sampling), so
# that the streaming gap is not mixed with the shallow-end recipe's gains.
PAPER_RECIPE = {"interctc_weights": "uniform", "depth_sampling": "none"}
# The targets: streaming WER within this relative margin of full context at 640 ms chunks, and the final
# transcript this many ms after the end of the audio, beyond the wait for the chunk.
WER_MARGIN = 0.10
TARGET_CHUNK_MS = 640
FINAL_LATENCY_TARGET_MS = 100.0


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", default="runs/streaming", help="where the models are trained (git-ignored)")
    parser.add_argument("--output_dir", default="results/streaming", help="results.json and README.md")
    parser.add_argument("--num_train_epochs", type=float, default=12,
                        help="epochs of the demo recipe (its own schedule is 24; fewer fit a shared CPU)")
    parser.add_argument("--latency_threads", type=int, default=1,
                        help="torch threads while measuring (on a CPU shared with other jobs, a second thread mostly "
                             "waits for a core)")
    parser.add_argument("--piece_ms", type=int, default=100, help="audio handed to accept() per call, in ms")
    parser.add_argument("--stop_after", choices=("prepare", "train", "measure"), help="stop after this stage")
    parser.add_argument("--render_only", action="store_true", help="only write README.md from results.json")
    return parser.parse_args(argv)


def prepare(run_dir: Path) -> Path:
    """`<run_dir>/init`: an untrained streaming model, its vocabulary and the global-CMVN feature extractor."""
    folder = run_dir / "init"
    if (folder / "config.json").is_file():
        return folder
    train = load_split("audiofolder", "train", data_dir="data/demo")
    tokenizer = make_ctc_tokenizer(training_texts(train, "transcription"))
    extractor = make_feature_extractor()
    mean, std = compute_global_cmvn(extractor, (load_audio(path, extractor.sampling_rate) for path in train["audio"]))
    extractor = with_global_cmvn(extractor, mean, std)
    settings = json.loads((REPO / MODEL_CONFIG).read_text())
    settings.update(PAPER_RECIPE, STREAMING_FIELDS, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(42)
    model = PrunableCTCForCTC(PrunableCTCConfig(**settings))
    staging = folder.with_name(folder.name + ".partial")
    model.save_pretrained(staging)
    save_processor(extractor, tokenizer, staging)
    os.replace(staging, folder)
    return folder


def train(run_dir: Path, init: Path, epochs: float) -> Path:
    """`<run_dir>/model`, trained by the demo recipe from `init` (train.py resumes a stopped run itself)."""
    folder = run_dir / "model"
    if (folder / "per_depth_metrics.json").is_file():
        return folder
    command = training_command(init, folder, epochs)
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)
    return folder


def training_command(init: Path, folder: Path, epochs: float) -> list:
    return [sys.executable, "training/train.py", RECIPE, "--model_name_or_path", str(init), "--output_dir",
            str(folder), "--num_train_epochs", f"{epochs:g}"]


def test_utterances() -> list:
    """`(audio, reference)` of every test utterance of the demo corpus, references normalised as in training."""
    split = load_split("audiofolder", "test", data_dir="data/demo")
    return [(load_audio(path, 16000), normalize_transcript(text or ""))
            for path, text in zip(split["audio"], split["transcription"])]


def full_context(model, processor, utterances, depth: int) -> dict:
    """WER (percent) of the whole-utterance forward at `depth`, full attention context."""
    hypotheses = []
    with torch.inference_mode():
        for audio, _ in utterances:
            features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
            ids = model(features, num_layers=depth).logits[0].argmax(dim=-1)
            hypotheses.append(processor.tokenizer.decode(ids.tolist()))
    return {"wer": 100 * word_error_rate([r for _, r in utterances], hypotheses)}


def streamed(model, processor, utterances, chunk_ms: int, piece_ms: int, depths) -> dict:
    """Stream every utterance in pieces of `piece_ms` at the depth `depths(position, samples)` gives each piece
    (`position`: its first sample), timing every call.

    Returns WER (percent) and, averaged over utterances unless named otherwise: `first_partial_ms` (from the start
    of the audio to the first decoded chunk: the audio it waited for plus the compute of that call, the audio
    arriving in real time), `final_ms` / `final_ms_max` (compute of `finalize()`, i.e. from the end of the audio to
    the final transcript), `rtf` (compute of every call over the audio's duration, all utterances together) and
    `chunk_ms_compute` (compute per decoded chunk)."""
    from hf_prunable_ctc.runtime.streaming import StreamingRecognizer

    recognizer = StreamingRecognizer(model, processor, chunk_ms=chunk_ms, left_chunks=LEFT_CHUNKS)
    piece = 16 * piece_ms
    hypotheses, first, final, compute, chunks, seconds, switch_extra = [], [], [], 0.0, 0, 0.0, []
    for audio, _ in utterances:
        recognizer.reset()
        first_partial, chunk_times = None, []
        for position in range(0, len(audio), piece):
            depth = depths(position, len(audio))
            before = len(recognizer.chunk_depths)
            start = time.perf_counter()
            recognizer.accept(audio[position:position + piece], num_layers=depth)
            took = time.perf_counter() - start
            compute += took
            if len(recognizer.chunk_depths) > before:
                chunk_times.append((took / (len(recognizer.chunk_depths) - before), depth, position))
                if first_partial is None:
                    first_partial = 1000 * min(position + piece, len(audio)) / 16000 + 1000 * took
        start = time.perf_counter()
        hypotheses.append(recognizer.finalize(num_layers=depths(len(audio), len(audio))))
        took = time.perf_counter() - start
        compute += took
        final.append(1000 * took)
        if first_partial is None:  # shorter than one chunk: the first transcript is the final one
            first_partial = 1000 * len(audio) / 16000 + 1000 * took
        first.append(first_partial)
        chunks += len(recognizer.chunk_depths)
        seconds += len(audio) / 16000
        # The first chunk decoded at a new depth, against the other chunks decoded at that depth.
        for (seconds_first, depth, _), (_, previous, _) in zip(chunk_times[1:], chunk_times):
            steady = [t for t, d, _ in chunk_times if d == depth]
            if depth != previous and len(steady) > 1:
                switch_extra.append(1000 * (seconds_first - (sum(steady) - seconds_first) / (len(steady) - 1)))
    result = {"wer": 100 * word_error_rate([r for _, r in utterances], hypotheses),
              "first_partial_ms": float(np.mean(first)), "final_ms": float(np.mean(final)),
              "final_ms_max": float(np.max(final)), "rtf": compute / seconds,
              "chunk_ms_compute": 1000 * compute / max(chunks, 1)}
    if switch_extra:
        result["switch_extra_ms"] = float(np.mean(switch_extra))
    return result


def measure(model_dir: Path, output_dir: Path, args) -> dict:
    """Fill `<output_dir>/results.json`, one entry at a time (each written as soon as it is measured)."""
    from transformers import AutoProcessor

    path = output_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    model = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    from hf_prunable_ctc.early_exit import exit_layers

    depths = exit_layers(model.config)
    utterances = test_utterances()
    trained = json.loads((model_dir / "per_depth_metrics.json").read_text())
    results.update(settings={
        "run_dir": args.run_dir, "chunks_ms": list(CHUNKS_MS), "left_chunks": LEFT_CHUNKS, "piece_ms": args.piece_ms,
        "threads": args.latency_threads, "depths": depths, "test_utterances": len(utterances),
        "test_seconds": sum(len(a) for a, _ in utterances) / 16000, "num_train_epochs": args.num_train_epochs,
        "recipe": RECIPE, "recipe_epochs": json.loads((REPO / RECIPE).read_text())["num_train_epochs"],
        "streaming_fields": STREAMING_FIELDS, "training_command": " ".join(
            ["python"] + training_command(Path(args.run_dir) / "init", model_dir, args.num_train_epochs)[1:]),
        "cpu": _cpu_name(), "torch": torch.__version__},
        trained_per_depth=trained.get("depths"))
    entries = results.setdefault("entries", {})

    def entry(key, compute):
        if key not in entries:
            entries[key] = compute()
            print(key, json.dumps(entries[key]), flush=True)
            output_dir.mkdir(parents=True, exist_ok=True)
            write_json(path, results, indent=2)

    torch.set_num_threads(args.latency_threads)
    for depth in depths:
        entry(f"full/{depth}", lambda: full_context(model, processor, utterances, depth))
        for chunk in CHUNKS_MS:
            entry(f"stream/{depth}/{chunk}", lambda: streamed(model, processor, utterances, chunk, args.piece_ms,
                                                              lambda position, samples: depth))
    low, high = depths[0], depths[-1]
    for name, first, second in (("up", low, high), ("down", high, low)):
        entry(f"switch/{name}/{TARGET_CHUNK_MS}", lambda: streamed(
            model, processor, utterances, TARGET_CHUNK_MS, args.piece_ms,
            lambda position, samples: first if position < samples // 2 else second))
    write_json(path, results, indent=2)
    return results


def _cpu_name() -> str:
    from hf_prunable_ctc.runtime.depth_budget import cpu_name

    return cpu_name()


def render(output_dir: Path) -> None:
    """`<output_dir>/README.md` from `<output_dir>/results.json`."""
    results = json.loads((output_dir / "results.json").read_text())
    settings, entries = results["settings"], results["entries"]
    depths, chunks = settings["depths"], settings["chunks_ms"]
    fields = ", ".join(f"`{key}={json.dumps(value)}`" for key, value in settings["streaming_fields"].items())
    epochs, recipe_epochs = settings["num_train_epochs"], settings["recipe_epochs"]
    schedule = (f"its own {epochs:g} epochs" if epochs == recipe_epochs else
                f"{epochs:g} epochs (the recipe's schedule is {recipe_epochs:g}: shortened to fit a shared CPU)")
    lines = [
        "# Streaming recognition at several depths",
        "",
        "Rendered by `training/experiments/streaming.py` from `results.json`; do not edit by hand.",
        "",
        f"A chunk-aware conformer (the demo config plus {fields}, global CMVN over the training split) trained on "
        f"the synthetic demo corpus with the demo recipe for {schedule}, measured on its "
        f"{settings['test_utterances']} test utterances ({settings['test_seconds']:.1f} s). Streams use "
        f"`StreamingRecognizer` with {settings['left_chunks']} chunks of left context, audio handed over in "
        f"{settings['piece_ms']} ms pieces, {settings['threads']} torch thread(s) ({settings['cpu']}, torch "
        f"{settings['torch']}, a 2-core machine shared with other jobs: timings are upper bounds).",
        "",
        "## WER (%) per depth",
        "",
        "| depth | full context | " + " | ".join(f"stream {c} ms" for c in chunks)
        + f" | {TARGET_CHUNK_MS} ms vs full |",
        "|---:|---:|" + "---:|" * len(chunks) + "---|",
    ]
    for depth in depths:
        full = entries[f"full/{depth}"]["wer"]
        cells = [f"{entries[f'stream/{depth}/{c}']['wer']:.1f}" for c in chunks]
        target = entries[f"stream/{depth}/{TARGET_CHUNK_MS}"]["wer"]
        relative = (target - full) / full if full else float("inf") if target else 0.0
        verdict = "within" if relative <= WER_MARGIN else "outside"
        lines.append(f"| {depth} | {full:.1f} | " + " | ".join(cells) +
                     f" | {100 * relative:+.1f}% relative: {verdict} the {100 * WER_MARGIN:.0f}% target |")
    lines += [
        "",
        "## Latency and compute per depth",
        "",
        "First partial: from the start of the audio to the first decoded chunk (the audio it waits for, arriving in "
        "real time, plus the compute). Final: from the end of the audio to the final transcript (the compute of "
        "`finalize()`, which decodes the last, shorter chunk at once), mean and worst utterance. RTF: compute over "
        "audio duration.",
        "",
        "| depth | chunk (ms) | first partial (ms) | final, mean (ms) | final, worst (ms) | compute per chunk (ms) "
        "| RTF |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for depth in depths:
        for chunk in chunks:
            e = entries[f"stream/{depth}/{chunk}"]
            lines.append(f"| {depth} | {chunk} | {e['first_partial_ms']:.0f} | {e['final_ms']:.1f} | "
                         f"{e['final_ms_max']:.1f} | {e['chunk_ms_compute']:.1f} | {e['rtf']:.4f} |")
    worst = max(entries[f"stream/{d}/{c}"]["final_ms_max"] for d in depths for c in chunks)
    lines += ["", f"Final-transcript target ({FINAL_LATENCY_TARGET_MS:.0f} ms after the end of the audio, beyond the "
                  f"chunk): worst utterance over every depth and chunk {worst:.1f} ms, "
                  f"{'met' if worst < FINAL_LATENCY_TARGET_MS else 'missed'}."]
    low, high = depths[0], depths[-1]
    up, down = entries[f"switch/up/{TARGET_CHUNK_MS}"], entries[f"switch/down/{TARGET_CHUNK_MS}"]
    lines += [
        "",
        f"## Switching depth mid-stream ({TARGET_CHUNK_MS} ms chunks)",
        "",
        "Each utterance streamed at one depth for its first half and at another for the rest. Going up, the "
        "deeper layers start the chunk after the switch with empty caches (docs/streaming.md), so a switch "
        "recomputes nothing; its cost is the left context those layers lack for a few chunks. Extra compute: the "
        "first chunk at the new depth against the other chunks at that depth in the same utterance.",
        "",
        "| stream | WER (%) | WER at the first depth only | WER at the second depth only | extra compute of the "
        "first chunk after the switch (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, e, first, second in (("up", up, low, high), ("down", down, high, low)):
        lines.append(f"| {first} -> {second} layers | {e['wer']:.1f} | "
                     f"{entries[f'stream/{first}/{TARGET_CHUNK_MS}']['wer']:.1f} | "
                     f"{entries[f'stream/{second}/{TARGET_CHUNK_MS}']['wer']:.1f} | "
                     f"{e.get('switch_extra_ms', float('nan')):.1f} |")
    trained = results.get("trained_per_depth") or {}
    if trained:
        reported = ", ".join(f"depth {depth}: {trained[depth]['wer']:.1f}%" for depth in sorted(trained, key=int))
        lines += ["", f"The training run's own test WER (full context, batched; `per_depth_metrics.json`): {reported}."]
    lines += [
        "",
        "## Commands",
        "",
        "```",
        "OMP_NUM_THREADS=1 nice python training/experiments/streaming.py "
        f"--run_dir {settings.get('run_dir', 'runs/streaming')} --num_train_epochs {settings['num_train_epochs']:g} --latency_threads {settings['threads']} "
        f"--piece_ms {settings['piece_ms']}",
        "# which ran, for the training stage:",
        settings["training_command"],
        "# and renders this page again with:",
        "python training/experiments/streaming.py --render_only",
        "```",
        "",
    ]
    (output_dir / "README.md").write_text("\n".join(lines))


def main(argv=None):
    args = parse_arguments(argv)
    os.chdir(REPO)
    run_dir, output_dir = Path(args.run_dir), Path(args.output_dir)
    print(json.dumps(vars(args)), flush=True)
    if args.render_only:
        return render(output_dir)
    init = prepare(run_dir)
    if args.stop_after == "prepare":
        return
    train(run_dir, init, args.num_train_epochs)
    if args.stop_after == "train":
        return
    measure(run_dir / "model", output_dir, args)
    if args.stop_after == "measure":
        return
    render(output_dir)


if __name__ == "__main__":
    main()
