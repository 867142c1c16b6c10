#!/usr/bin/env python
"""GPU check of `--feature_device model`: training steps with features computed on the GPU vs precomputed features,
and what dataloader workers deliver when they only pad waveforms.

Two steps, so that the GPU machine needs only torch, transformers and this package (no soundfile, datasets):

    python benchmarks/gpu_feature_check.py prepare --out runs/gpu_check      # here: demo utterances -> .npy
    python benchmarks/gpu_feature_check.py run --data runs/gpu_check \
        --output reports/gpu_feature_check/result.json                       # on the GPU machine

`run` joins the carried utterances at random (seeded) into ~15 s utterances, batches of 32, and for
`training/configs/base.json` in bf16 autocast times (median over `--steps`, after warm-up, CUDA-synchronised)
a full training step (host-to-device copy, forward, backward, AdamW) fed (a) features computed beforehand and
(b) waveforms whose features `WaveformFeatures` computes in the step. It also checks those features against the
CPU extractor's on the same batch and measures the loader (collate of in-memory waveforms, as
`--feature_mode waveforms` does; the decode cost of FLAC is in `data_loading.py`'s table) with each
`--workers` count, for waveform batches and for feature batches. Goal: (b) within 10% of (a), and the waveform
loader at or above the step rate with the workers of a typical 8-16-core machine.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 16000


def prepare(args) -> None:
    """Write the first `--utterances` demo training utterances as int16 samples and their label ids (.npy)."""
    import soundfile as sf

    from hf_prunable_ctc.data.text import normalize_transcript
    from hf_prunable_ctc.data.vocabulary import make_tokenizer

    import csv

    tokenizer = make_tokenizer()
    folder = ROOT / "data" / "demo" / "train"
    with open(folder / "metadata.csv") as f:
        rows = list(csv.DictReader(f))[:args.utterances]
    samples, labels = [], []
    for row in rows:
        audio, rate = sf.read(folder / row["file_name"], dtype="int16")
        assert rate == RATE, row["file_name"]
        samples.append(audio)
        labels.append(np.asarray(tokenizer(normalize_transcript(row["transcription"])).input_ids, dtype=np.int16))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, parts in (("samples", samples), ("labels", labels)):
        np.save(args.out / f"{name}.npy", np.concatenate(parts))
        np.save(args.out / f"{name}_lengths.npy", np.asarray([len(p) for p in parts], dtype=np.int64))
    size = sum((args.out / f"{n}.npy").stat().st_size for n in ("samples", "labels")) / 2**20
    print(f"{len(rows)} utterances, {sum(map(len, samples)) / RATE:.0f} s of audio, {size:.1f} MiB in {args.out}")


def load_utterances(folder: Path):
    """[(float32 samples, label ids)] of the carried utterances."""
    out = {}
    for name in ("samples", "labels"):
        flat, lengths = np.load(folder / f"{name}.npy"), np.load(folder / f"{name}_lengths.npy")
        out[name] = np.split(flat, np.cumsum(lengths)[:-1])
    return [(s.astype(np.float32) / 32768.0, l.astype(np.int64).tolist()) for s, l in zip(out["samples"],
                                                                                         out["labels"])]


def long_utterances(utterances, count: int, seconds: float, delimiter: int, seed: int):
    """`count` examples of about `seconds` each, random carried utterances joined (labels with a word delimiter)."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        parts, total = [], 0
        while total < seconds * RATE:
            parts.append(utterances[int(rng.integers(len(utterances)))])
            total += len(parts[-1][0])
        labels = []
        for _, ids in parts:
            labels += ([delimiter] if labels else []) + ids
        examples.append({"audio": np.concatenate([s for s, _ in parts]), "labels": labels})
    return examples


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, optimizer, batches, make_inputs, device, dtype, warmup: int) -> list:
    """Seconds per training step (copy to device, inputs, forward, backward, optimizer step), after `warmup`."""
    times = []
    for i, batch in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        inputs = make_inputs({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def loader_rate(examples, collator, batch_size: int, workers: int) -> float:
    """Audio seconds per second the DataLoader delivers once its workers run (timed from the first batch on)."""
    from torch.utils.data import DataLoader

    loader = iter(DataLoader(examples, batch_size=batch_size, collate_fn=collator, num_workers=workers,
                             pin_memory=torch.cuda.is_available()))
    next(loader)
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += int(batch["attention_mask"].sum()) * 160 if "attention_mask" in batch else \
            int(batch["waveform_lengths"].sum())
    return samples / RATE / (time.perf_counter() - start)


def run(args) -> None:
    try:
        import soundfile  # noqa: F401
    except ImportError:
        # The collator imports the audio decoder at module level; in-memory waveforms never reach it. Transformers
        # checks for soundfile first (and finds none), then the package sees an empty stand-in.
        import importlib.machinery
        import types

        import transformers.audio_utils  # noqa: F401

        stand_in = types.ModuleType("soundfile")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("soundfile", None)
        sys.modules["soundfile"] = stand_in
    from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC
    from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
    from hf_prunable_ctc.data.device_features import WAVEFORM_LENGTHS_KEY, WAVEFORMS_KEY, WaveformFeatures
    from hf_prunable_ctc.data.features import make_feature_extractor
    from hf_prunable_ctc.data.vocabulary import make_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    tokenizer, extractor = make_tokenizer(), make_feature_extractor()
    delimiter = tokenizer.convert_tokens_to_ids(tokenizer.word_delimiter_token)
    examples = long_utterances(load_utterances(args.data), args.batch_size * (args.steps + args.warmup),
                               args.seconds, delimiter, args.seed)
    on_cpu = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer)
    on_model = DataCollatorCTCWithPadding(feature_extractor=extractor, tokenizer=tokenizer, return_waveforms=True)
    chunks = [examples[i:i + args.batch_size] for i in range(0, len(examples), args.batch_size)]
    feature_batches, waveform_batches = [on_cpu(c) for c in chunks], [on_model(c) for c in chunks]
    if device.type == "cuda":
        feature_batches = [{k: v.pin_memory() for k, v in b.items()} for b in feature_batches]
        waveform_batches = [{k: v.pin_memory() for k, v in b.items()} for b in waveform_batches]
    compute = WaveformFeatures(extractor)
    first = waveform_batches[0]
    features, mask = compute(first[WAVEFORMS_KEY].to(device), first[WAVEFORM_LENGTHS_KEY].to(device))
    reference = feature_batches[0]
    check = {"max_abs_diff_vs_cpu_extractor": float((features.cpu() - reference["input_features"]).abs().max()),
             "masks_equal": bool(torch.equal(mask.cpu(), reference["attention_mask"]))}

    settings = json.loads((ROOT / "training" / "configs" / "base.json").read_text())
    settings.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    steps = {}
    for name, batches, make_inputs in (("precomputed_features", feature_batches, lambda b: b),
                                       ("features_on_device", waveform_batches, compute.batch_inputs)):
        torch.manual_seed(args.seed)
        model = PrunableCTCForCTC(PrunableCTCConfig(**settings)).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = time_steps(model, optimizer, batches, make_inputs, device, dtype, args.warmup)
        steps[name] = {"median_s": statistics.median(times), "min_s": min(times), "steps": len(times)}
        del model, optimizer
    audio_per_batch = statistics.mean(sum(len(e["audio"]) for e in c) / RATE for c in chunks)
    for result in steps.values():
        result["audio_s_per_s"] = audio_per_batch / result["median_s"]
    feature_cost = []
    for batch in waveform_batches[args.warmup:]:
        waveforms, lengths = batch[WAVEFORMS_KEY].to(device), batch[WAVEFORM_LENGTHS_KEY].to(device)
        synchronize(device)
        start = time.perf_counter()
        compute(waveforms, lengths)
        synchronize(device)
        feature_cost.append(time.perf_counter() - start)

    torch.set_num_threads(1)  # as in a dataloader worker
    loader = {f"workers={w}": {"waveform_batches_audio_s_per_s": loader_rate(examples, on_model, args.batch_size, w),
                               "feature_batches_audio_s_per_s": loader_rate(examples, on_cpu, args.batch_size, w)}
              for w in args.workers}
    result = {
        "command": " ".join(["python", "benchmarks/gpu_feature_check.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "precision": args.precision,
        "batch": f"{args.batch_size} x {audio_per_batch / args.batch_size:.1f} s", "audio_s_per_batch": audio_per_batch,
        "feature_check": check, "steps": steps,
        "step_ratio_on_device_to_precomputed": steps["features_on_device"]["median_s"]
        / steps["precomputed_features"]["median_s"],
        "features_on_device_ms_per_batch": 1000 * statistics.median(feature_cost),
        "loader": loader,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="write the carried waveforms (needs soundfile)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    p.add_argument("--utterances", type=int, default=600)
    r = commands.add_parser("run", help="time steps and the loader (torch + transformers only)")
    r.add_argument("--data", type=Path, default=ROOT / "runs" / "gpu_check")
    r.add_argument("--output", type=Path, default=ROOT / "reports" / "gpu_feature_check" / "result.json")
    r.add_argument("--batch_size", type=int, default=32)
    r.add_argument("--seconds", type=float, default=15.0, help="length of the joined utterances")
    r.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8, 12])
    r.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    r.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
