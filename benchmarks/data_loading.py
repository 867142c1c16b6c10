#!/usr/bin/env python
"""Training-data throughput: fetch + collate, cached features vs features computed on the fly vs waveform batches.

    python benchmarks/data_loading.py --data_dir data/demo --utterances 256 --workers 0 2 [--as_flac]

For each mode it prepares `--utterances` rows of the training split (timed separately: "cached" decodes everything
and computes features once, "waveforms" decodes once, "on_the_fly" reads file headers only), then iterates a `DataLoader` over them with the
same collator the Trainer uses, in batches of `--batch_size`, for each worker count, and prints utterances/s and
seconds of audio per second. `--as_flac` first re-encodes the rows to FLAC (LibriSpeech's format) in a temporary
folder, since decoding Opus and FLAC cost differently. Compare with a training step: about 7,000 audio-seconds
per second for `training/configs/base.json` in bf16 on one H200, ~160 for the demo model on 2 CPU cores.

"waveform batch" rows are what the workers do with `--feature_device model`: decode, pad and return waveforms
(`return_waveforms=True`); their features are then computed in the training step, whose cost on this CPU
(`WaveformFeatures`, one thread, per batch) is measured too. The numbers go to `--output_json` and the loader table
of `benchmarks/README.md` is rendered from it (`run.py` keeps that table when it rewrites the file).
"""

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
from torch.utils.data import DataLoader

from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.device_features import WAVEFORM_LENGTHS_KEY, WAVEFORMS_KEY, WaveformFeatures
from hf_prunable_ctc.data.features import HOP_LENGTH, SAMPLING_RATE, make_feature_extractor
from hf_prunable_ctc.data.speech_data import load_split, prepare_split
from hf_prunable_ctc.data.vocabulary import make_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_sections, beside this script
from readme_sections import replace_section  # noqa: E402


def as_flac(data_dir: str, split: str, count: int, folder: str) -> str:
    """Copy the first `count` rows of `split` to `folder/<split>` as FLAC; returns `folder` (an audiofolder root)."""
    target = os.path.join(folder, split)
    os.makedirs(target)
    with open(os.path.join(data_dir, split, "metadata.csv")) as f:
        rows = list(csv.DictReader(f))[:count]
    with open(os.path.join(target, "metadata.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            audio, rate = sf.read(os.path.join(data_dir, split, row["file_name"]), dtype="float32")
            row["file_name"] = os.path.splitext(row["file_name"])[0] + ".flac"
            sf.write(os.path.join(target, row["file_name"]), audio, rate)
            writer.writerow(row)
    return folder


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
GPU_CHECK = ROOT / "reports" / "gpu_feature_check" / "result.json"  # written by gpu_feature_check.py
SECTION_TITLE = "## Data loading (fetch + collate per dataloader)"
# (row label, speech_data.prepare_split mode, the collator returns waveforms)
MODES = (("cached", "cached", False), ("waveforms", "waveforms", False), ("on_the_fly", "on_the_fly", False),
         ("waveforms, waveform batch", "waveforms", True), ("on_the_fly, waveform batch", "on_the_fly", True))


def batch_audio_seconds(batch) -> float:
    """Seconds of audio in a batch of features or of waveforms (padding excluded)."""
    if WAVEFORMS_KEY in batch:
        return float(batch[WAVEFORM_LENGTHS_KEY].sum()) / SAMPLING_RATE
    return float(batch["attention_mask"].sum()) * HOP_LENGTH / SAMPLING_RATE


def measure(dataset, collator, batch_size: int, workers: int) -> dict:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator, num_workers=workers)
    start = time.perf_counter()
    utterances, audio_seconds = 0, 0.0
    for batch in loader:
        utterances += batch["labels"].shape[0]
        audio_seconds += batch_audio_seconds(batch)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "utterances_per_s": utterances / seconds, "audio_s_per_s": audio_seconds / seconds}


def measure_device_features(dataset, collator, extractor, batch_size: int) -> dict:
    """The in-step feature cost of waveform batches on this machine's CPU: median ms per batch, audio s/s."""
    compute = WaveformFeatures(extractor)
    batches = list(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator))
    compute(batches[0][WAVEFORMS_KEY], batches[0][WAVEFORM_LENGTHS_KEY])  # warm-up
    times, audio_seconds = [], 0.0
    for batch in batches:
        start = time.perf_counter()
        compute(batch[WAVEFORMS_KEY], batch[WAVEFORM_LENGTHS_KEY])
        times.append(time.perf_counter() - start)
        audio_seconds += batch_audio_seconds(batch)
    return {"batches": len(batches), "ms_per_batch": 1000 * statistics.median(times),
            "audio_s_per_batch": audio_seconds / len(batches), "audio_s_per_s": audio_seconds / sum(times)}


def markdown_section(results: dict, gpu_check: Path = GPU_CHECK) -> list:
    """The loader table of `benchmarks/README.md`, from the JSON `main` writes, and the GPU check's line from the
    JSON `gpu_feature_check.py` writes (or that it awaits a GPU)."""
    env = results["environment"]
    workers = sorted({row["workers"] for row in results["rows"]})
    lines = [SECTION_TITLE, "", f"Command: `{env['command']}`. {env['cpu']}, {env['cpu_count']} CPUs visible, one "
             f"torch thread per loader process, load average {env['load_average_at_start']:.1f} at start; "
             f"{env['utterances']} utterances of {env['data']} ({env['audio']}), batches of {env['batch_size']}. "
             "Audio seconds per second, fetch + collate (\"waveform batch\": decode and pad only, as the workers "
             "do with `--feature_device model`). Full numbers: `data_loading.json`.", "",
             "| mode | " + " | ".join(f"workers={w}" for w in workers) + " |", "|---|" + "---|" * len(workers)]
    for label, _, _ in MODES:
        cells = {row["workers"]: row["audio_s_per_s"] for row in results["rows"] if row["mode"] == label}
        if cells:
            lines.append(f"| {label} | " + " | ".join(f"{cells[w]:.0f}" if w in cells else "-" for w in workers)
                         + " |")
    device = results.get("device_features")
    if device:
        lines += ["", f"Features of a waveform batch computed in the step (`WaveformFeatures`) on this CPU, one "
                      f"thread: {device['ms_per_batch']:.1f} ms per batch of {device['audio_s_per_batch']:.0f} s of "
                      f"audio (median of {device['batches']}), {device['audio_s_per_s']:.0f} audio s/s."]
    if not gpu_check.is_file():
        lines += ["", "On a GPU (`benchmarks/gpu_feature_check.py`: steps with features on the GPU vs precomputed, and the "
                      "loader with N workers): awaits a GPU machine; not run yet."]
    else:
        gpu = json.loads(gpu_check.read_text())
        loader = ", ".join(f"{w}: {r['waveform_batches_audio_s_per_s']:.0f}" for w, r in gpu["loader"].items())
        lines += ["", f"On a GPU ({gpu['device']}, {gpu['precision']}, batches of {gpu['batch']}, "
                      f"`{gpu['command']}`): a step with features on the GPU takes "
                      f"{gpu['step_ratio_on_device_to_precomputed']:.2f}x the step on precomputed features "
                      f"({1000 * gpu['steps']['features_on_device']['median_s']:.0f} vs "
                      f"{1000 * gpu['steps']['precomputed_features']['median_s']:.0f} ms, "
                      f"{gpu['steps']['features_on_device']['audio_s_per_s']:.0f} audio s/s); the features "
                      f"{gpu['features_on_device_ms_per_batch']:.1f} ms per batch; waveform loader audio s/s by "
                      f"workers: {loader}. Full numbers: `{gpu_check.name}` under `reports/`."]
    return lines + [""]


def update_readme(results: dict, readme: Path = README) -> None:
    """Replace (or add) the loader table in `readme`, leaving every other section as it is."""
    replace_section(readme, SECTION_TITLE, markdown_section(results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/demo", help="audiofolder root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="dataloader worker counts to try")
    parser.add_argument("--as_flac", action="store_true", help="re-encode the rows to FLAC first")
    parser.add_argument("--output_json", type=Path, default=Path(__file__).resolve().parent / "data_loading.json",
                        help="where the numbers go; the README's loader table is rendered from them")
    parser.add_argument("--readme", type=Path, default=README, help="the file whose loader table is updated")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # one core per loader process, as in a dataloader worker
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads 1; "
          f"{args.utterances} utterances of {args.data_dir}/{args.split}, batches of {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = as_flac(args.data_dir, args.split, args.utterances, tmp) if args.as_flac else args.data_dir
        raw = load_split("audiofolder", args.split, data_dir=data_dir)
        raw = raw.select(range(min(args.utterances, len(raw))))
        extractor, tokenizer = make_feature_extractor(), make_tokenizer()
        collator = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer)
        audio = "FLAC" if args.as_flac else os.path.splitext(raw[0]["audio"])[1].lstrip(".")
        print(f"feature extractor: {type(extractor).__name__}; audio: {audio}")
        results = {"environment": {
            "command": " ".join(["python", "benchmarks/data_loading.py", *(sys.argv[1:] if argv is None else argv)]),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0], "torch": torch.__version__, "data": args.data_dir,
            "split": args.split, "audio": audio, "utterances": len(raw), "batch_size": args.batch_size},
            "rows": []}
        waveform_collator = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer,
                                                       return_waveforms=True)
        prepared_splits = {}
        for label, mode, waveform_batches in MODES:
            if mode not in prepared_splits:
                start = time.perf_counter()
                prepared_splits[mode], report = prepare_split(raw, extractor, tokenizer, features=mode, desc=mode)
                print(f"{mode}: prepared {report.kept} utterances ({report.hours * 3600:.0f} s of audio) in "
                      f"{time.perf_counter() - start:.1f} s")
            for workers in args.workers:
                result = measure(prepared_splits[mode], waveform_collator if waveform_batches else collator,
                                 args.batch_size, workers)
                results["rows"].append({"mode": label, "workers": workers, **result})
                print(f"  {label:26s} workers={workers}: {result['utterances_per_s']:7.1f} utterances/s, "
                      f"{result['audio_s_per_s']:7.0f} audio s/s (fetch + collate, {result['seconds']:.1f} s)")
        results["device_features"] = measure_device_features(prepared_splits["waveforms"], waveform_collator,
                                                             extractor, args.batch_size)
        print(f"  features in the step (WaveformFeatures, this CPU): "
              f"{results['device_features']['ms_per_batch']:.1f} ms per batch")
    args.output_json.write_text(json.dumps(results, indent=2) + "\n")
    update_readme(results, args.readme)


if __name__ == "__main__":
    main()
