#!/usr/bin/env python
"""Training-data throughput: fetch + collate, cached features vs features computed on the fly.

    python benchmarks/data_loading.py --data_dir data/demo --utterances 256 --workers 0 2 [--as_flac]

For each mode it prepares `--utterances` rows of the training split (timed separately: "cached" decodes everything
and computes features once, "waveforms" decodes once, "on_the_fly" reads file headers only), then iterates a `DataLoader` over them with the
same collator the Trainer uses, in batches of `--batch_size`, for each worker count, and prints utterances/s and
seconds of audio per second. `--as_flac` first re-encodes the rows to FLAC (LibriSpeech's format) in a temporary
folder, since decoding Opus and FLAC cost differently. Compare with a training step: about 7,000 audio-seconds
per second for `training/configs/base.json` in bf16 on one H200, ~160 for the demo model on 2 CPU cores.
"""

import argparse
import csv
import os
import platform
import tempfile
import time

import soundfile as sf
import torch
from torch.utils.data import DataLoader

from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import HOP_LENGTH, SAMPLING_RATE, make_feature_extractor
from hf_prunable_ctc.data.speech_data import load_split, prepare_split
from hf_prunable_ctc.data.vocabulary import make_tokenizer


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


def measure(dataset, collator, batch_size: int, workers: int) -> dict:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator, num_workers=workers)
    start = time.perf_counter()
    utterances = frames = 0
    for batch in loader:
        utterances += batch["input_features"].shape[0]
        frames += int(batch["attention_mask"].sum())
    seconds = time.perf_counter() - start
    audio_seconds = frames * HOP_LENGTH / SAMPLING_RATE
    return {"seconds": seconds, "utterances_per_s": utterances / seconds, "audio_s_per_s": audio_seconds / seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data/demo", help="audiofolder root")
    parser.add_argument("--split", default="train")
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="dataloader worker counts to try")
    parser.add_argument("--as_flac", action="store_true", help="re-encode the rows to FLAC first")
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
        print(f"feature extractor: {type(extractor).__name__}; audio: "
              f"{'FLAC' if args.as_flac else os.path.splitext(raw[0]['audio'])[1]}")
        for mode in ("cached", "waveforms", "on_the_fly"):
            start = time.perf_counter()
            prepared, report = prepare_split(raw, extractor, tokenizer, features=mode, desc=mode)
            prepare_seconds = time.perf_counter() - start
            print(f"{mode}: prepared {report.kept} utterances ({report.hours * 3600:.0f} s of audio) in "
                  f"{prepare_seconds:.1f} s")
            for workers in args.workers:
                result = measure(prepared, collator, args.batch_size, workers)
                print(f"  {mode:10s} workers={workers}: {result['utterances_per_s']:7.1f} utterances/s, "
                      f"{result['audio_s_per_s']:7.0f} audio s/s (fetch + collate, {result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
