"""Benchmark suite: depth scaling, end to end through the pipeline, peers, memory, training, export.

    python benchmarks/run.py [--quick] [--output_dir benchmarks] [--threads 2] [--sections depth_scaling peers ...]

Writes ``results.json`` and ``README.md`` to `--output_dir`. Every ratio is measured side by side in one process
(calls interleaved, median of repetitions after warm-up), because the machine this runs on is shared and noisy;
absolute times are recorded too, with device, threads and torch version. ``--quick`` shrinks inputs and repetitions
so the whole suite runs in about a minute (used by the test); its numbers are only smoke checks.

Sections (keys of results.json):
- environment: device, CPU, threads, torch/transformers versions, settings.
- depth_scaling: reference model (model_cards/prunable-ctc-small-synth), 10 s of audio, per batch size and depth:
  model-only time via ``num_layers=`` and via a pruned copy, ``measured_speedup`` (full depth / depth k),
  ``ideal_speedup`` (FLOPs of the full model / FLOPs at depth k: front end + k layers + head), and
  ``end_to_end_speedup``: audio in, text out, through ``pipeline("automatic-speech-recognition")`` with a pruned
  copy, with our torch feature extractor (and, for comparison, with the stock numpy one).
- peers: our Conformer and Transformer vs ParakeetForCTC and Wav2Vec2ConformerForCTC with the same layers, width,
  heads and FFN size (random weights): inference batch 1 and 8 and one training step;
  ``ratio_peer_over_ours`` > 1 means ours is faster.
- memory: peak RSS of a fresh process transcribing N minutes of audio through ``pipeline(..., chunk_length_s=20)``.
- training: audio seconds per second of a training step (forward, backward, AdamW) for the demo and reference
  configurations, with and without stochastic depth.
- export: latency and file size per depth for eager PyTorch, ONNX Runtime float32 and int8.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # readme_sections, beside this script
from readme_sections import restore_companion_sections  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
CONFIGS = ROOT / "training" / "configs"
TEST_SUBSET = ROOT / "data" / "reference_test_subset" / "test"
SAMPLING_RATE = 16000


# --- timing -----------------------------------------------------------------------------------------------------


# `--clock cpu` times with the calling thread's CPU clock: with one torch thread all the work runs on that thread,
# and on a shared machine it counts the work done, not the time spent waiting for a core.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     calls_per_turn: int = 1, spread: bool = False) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn (A, B, C, A, B, C, ...) so that load changes
    on a shared machine hit all of them alike; seconds of the `--clock` (wall by default).

    With `calls_per_turn` > 1 each turn calls a function that many times in a row and times all but the first: the
    steady cost of calling it again and again (a device transcribing stream after stream at one depth), instead of
    the cost of a call that starts on caches the other functions filled. A function that returns a number returns
    the seconds one part of its work took (the model inside a pipeline call); their median is ``name + ":inner"``.
    With `spread`, the fastest and slowest call of each are ``name + ":min"`` and ``name + ":max"``: the spread a
    median hides."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    inner = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            for call in range(calls_per_turn):
                start = clock()
                part = function()
                if call > 0 or calls_per_turn == 1:
                    times[name].append(clock() - start)
                    if isinstance(part, float):
                        inner[name].append(part)
    medians = {name: statistics.median(values) for name, values in times.items()}
    if spread:
        medians.update({f"{name}:min": min(values) for name, values in times.items()})
        medians.update({f"{name}:max": max(values) for name, values in times.items()})
    medians.update({f"{name}:inner": statistics.median(values) for name, values in inner.items() if values})
    return medians


def time_forward(model: torch.nn.Module) -> Callable[[], float]:
    """Hooks that clock each forward call of `model`; the returned function gives the last call's seconds."""
    last = {}
    model.register_forward_pre_hook(lambda module, args: last.update(start=clock()))
    model.register_forward_hook(lambda module, args, output: last.update(seconds=clock() - last["start"]))
    return lambda: last["seconds"]


def flops(model, features, mask, **kwargs) -> int:
    """Floating-point operations of one forward call, counted by torch's FlopCounterMode (matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(features, attention_mask=mask, **kwargs)
    return int(counter.get_total_flops())


def speech_audio(seconds: float) -> np.ndarray:
    """Real speech for end-to-end timings: the bundled test utterances (`data/reference_test_subset`) joined in order
    and cut to `seconds`. Decoding costs more the more non-blank frames a model emits, and a test tone makes the
    reference model emit far more of them than speech does."""
    import csv

    from hf_prunable_ctc.data.audio import load_audio

    needed, parts = int(seconds * SAMPLING_RATE), []
    for row in csv.DictReader(open(TEST_SUBSET / "metadata.csv")):
        parts.append(load_audio(TEST_SUBSET / row["file_name"]))
        if sum(len(part) for part in parts) >= needed:
            return np.concatenate(parts)[:needed].astype(np.float32)
    raise RuntimeError(f"{TEST_SUBSET} holds less than {seconds} s of speech")


END_TO_END_PATHS = {
    "pipeline": 'pipeline("automatic-speech-recognition")',
    "prunable_pipeline": "hf_prunable_ctc.runtime.asr_pipeline.prunable_asr_pipeline",
    "transcribe": "what `hf-prunable-ctc transcribe` does per file: extractor, model, CTCTextDecoder",
}


def end_to_end_paths(tokenizer, extractor) -> dict[str, Callable]:
    """For each of END_TO_END_PATHS, a builder: given a model, it returns a function that transcribes audio along
    that path and returns the seconds the model's forward took inside that very call (see `time_forward`); the
    text itself is not needed for timing."""
    from transformers import pipeline

    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline
    from hf_prunable_ctc.runtime.ctc_text import CTCTextDecoder

    decode = CTCTextDecoder(tokenizer)

    def timed(model, transcribe):
        forward_seconds = time_forward(model)
        return lambda audio: (transcribe(audio), forward_seconds())[1]

    def like_transcribe(model):
        def transcribe(audio):
            inputs = extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            return decode(model(**inputs).logits[0].argmax(-1))
        return timed(model, transcribe)

    return {
        "pipeline": lambda model: timed(model, pipeline("automatic-speech-recognition", model=model,
                                                        tokenizer=tokenizer, feature_extractor=extractor)),
        "prunable_pipeline": lambda model: timed(model, prunable_asr_pipeline(model, tokenizer=tokenizer,
                                                                              feature_extractor=extractor)),
        "transcribe": like_transcribe,
    }


def end_to_end_rows(times: dict[str, float], path: str, depths: list[int]) -> dict[int, dict]:
    """Per depth: end-to-end seconds and speed-up, the model's seconds and speed-up inside those calls, their ratio,
    and what a call costs beyond the model against the most it may cost for a ratio >= 0.8."""
    full_depth = depths[-1]
    full_model, full_total = times[f"{path}={full_depth}:inner"], times[f"{path}={full_depth}"]
    rows = {}
    for k in depths:
        model_seconds, total = times[f"{path}={k}:inner"], times[f"{path}={k}"]
        model_speedup, speedup = full_model / model_seconds, full_total / total
        # (F + M_full) / (F + M_k) >= 0.8 M_full / M_k  <=>  F <= 0.2 M_full M_k / (0.8 M_full - M_k).
        limit = 0.8 * full_model - model_seconds
        rows[k] = {"seconds_end_to_end": total, "seconds_model_in_pipeline": model_seconds,
                   "model_speedup_in_pipeline": model_speedup, "end_to_end_speedup": speedup,
                   "end_to_end_over_model_speedup": speedup / model_speedup,
                   "seconds_beyond_model": total - model_seconds,
                   "seconds_beyond_model_allowed": 0.2 * full_model * model_seconds / limit if limit > 0 else None}
    return rows


# --- sections ---------------------------------------------------------------------------------------------------


def depth_scaling(args) -> dict:
    from transformers import AutoTokenizer, Speech2TextFeatureExtractor, pipeline

    from hf_prunable_ctc import PrunableCTCFeatureExtractor, PrunableCTCForCTC

    model = PrunableCTCForCTC.from_pretrained(REFERENCE_MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(REFERENCE_MODEL)
    stock = Speech2TextFeatureExtractor.from_pretrained(REFERENCE_MODEL)
    fast = PrunableCTCFeatureExtractor(**{k: v for k, v in stock.to_dict().items() if k != "feature_extractor_type"})
    num_layers = model.config.num_hidden_layers
    depths = [1, num_layers // 2, num_layers] if args.quick else list(range(1, num_layers + 1))
    schedule = model.pruning_schedule()
    pruned = {k: copy.deepcopy(model).prune_to(k) if k < num_layers else model for k in depths}
    audio = speech_audio(args.seconds)
    out = {"model": str(REFERENCE_MODEL.relative_to(ROOT)), "audio_seconds": args.seconds,
           "audio": f"speech: the bundled test utterances ({TEST_SUBSET.relative_to(ROOT)}) joined and cut to "
                    f"{args.seconds:g} s", "batches": {}}

    for batch_size in args.batch_sizes:
        batch = fast([audio] * batch_size, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        features, mask = batch["input_features"], batch["attention_mask"]
        full_flops = flops(model, features, mask)
        rows = {}
        with torch.inference_mode():
            calls = {}
            for k in depths:
                calls[f"num_layers={k}"] = (lambda k=k: model(features, attention_mask=mask, layers=schedule[k]))
                calls[f"pruned={k}"] = (lambda k=k: pruned[k](features, attention_mask=mask))
            times = time_interleaved(calls, args.repeats, args.warmup, args.calls_per_turn, spread=True)
        for k in depths:
            rows[k] = {
                "seconds_num_layers": times[f"num_layers={k}"],
                "seconds_num_layers_min": times[f"num_layers={k}:min"],
                "seconds_num_layers_max": times[f"num_layers={k}:max"],
                "seconds_pruned": times[f"pruned={k}"],
                "measured_speedup": times[f"num_layers={num_layers}"] / times[f"num_layers={k}"],
                "measured_speedup_pruned": times[f"pruned={num_layers}"] / times[f"pruned={k}"],
                "ideal_speedup": full_flops / flops(model, features, mask, layers=schedule[k]),
            }
            rows[k]["measured_over_ideal"] = rows[k]["measured_speedup"] / rows[k]["ideal_speedup"]
        if batch_size == 1:
            # End to end: raw audio in, text out, each depth a pruned copy, along three paths: Transformers'
            # pipeline, our PrunableASRPipeline, and what `transcribe` does per file (extractor, model, decoder).
            # The model's forward is clocked inside the same calls, so what a call costs beyond the model (features,
            # decoding, the pipeline) and the model's own speed-up come from the very calls timed end to end: timing
            # the model alone in other calls put the machine's noise (several ms on this shared one) into the
            # difference.
            calls = {}
            for path, build in end_to_end_paths(tokenizer, fast).items():
                for k in depths:
                    run_audio = build(copy.deepcopy(pruned[k]))
                    calls[f"{path}={k}"] = (lambda run_audio=run_audio: run_audio(audio))
            stock_pipes = {k: pipeline("automatic-speech-recognition", model=pruned[k], tokenizer=tokenizer,
                                       feature_extractor=stock) for k in (depths[0], depths[-1])}
            calls.update({f"e2e_stock={k}": (lambda k=k: stock_pipes[k](audio)) for k in stock_pipes})
            calls["features_torch"] = lambda: fast(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            calls["features_stock"] = lambda: stock(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            with torch.inference_mode():
                times = time_interleaved(calls, args.repeats, args.warmup, args.calls_per_turn)
            out["end_to_end"] = {path: end_to_end_rows(times, path, depths) for path in END_TO_END_PATHS}
            for k in depths:  # the pipeline's numbers in the depth table, as before
                rows[k].update(out["end_to_end"]["pipeline"][k])
            low, high = depths[0], depths[-1]
            out["stock_extractor_end_to_end"] = {
                "seconds": {low: times[f"e2e_stock={low}"], high: times[f"e2e_stock={high}"]},
                f"speedup_{high}_to_{low}": times[f"e2e_stock={high}"] / times[f"e2e_stock={low}"],
            }
            out["feature_extraction_seconds"] = {"torch": times["features_torch"], "stock_numpy": times["features_stock"]}
        out["batches"][batch_size] = rows
    return out


def _peer_models(encoder_type_ours: str, reference: dict, vocab_size: int):
    """Our model and the peers, configured to the same layers, width, heads, FFN size and kernel."""
    from transformers import (ParakeetCTCConfig, ParakeetEncoderConfig, ParakeetForCTC, Wav2Vec2ConformerConfig,
                              Wav2Vec2ConformerForCTC)

    from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC

    size = {k: reference[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    ours = PrunableCTCForCTC(PrunableCTCConfig(**{**reference, "encoder_type": encoder_type_ours,
                                                   "vocab_size": vocab_size}))
    parakeet = ParakeetForCTC(ParakeetCTCConfig(vocab_size=vocab_size, pad_token_id=0, encoder_config=ParakeetEncoderConfig(
        **size, num_key_value_heads=reference["num_attention_heads"], conv_kernel_size=reference["conv_kernel_size"],
        num_mel_bins=reference["num_mel_bins"], subsampling_factor=4,
        subsampling_conv_channels=reference["subsampling_conv_channels"])))
    w2v = Wav2Vec2ConformerForCTC(Wav2Vec2ConformerConfig(
        **size, vocab_size=vocab_size, pad_token_id=0, conv_depthwise_kernel_size=reference["conv_kernel_size"],
        position_embeddings_type="rotary"))
    return ours, parakeet, w2v


def peers(args) -> dict:
    reference = {k: v for k, v in json.loads((REFERENCE_MODEL / "config.json").read_text()).items()
                 if k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                          "conv_kernel_size", "num_mel_bins", "subsampling_conv_channels")}
    vocab_size = 32
    frames = int(args.seconds * 100)
    out = {"audio_seconds": args.seconds, "configuration": reference, "results": {}}
    torch.manual_seed(0)
    for encoder_type in ("conformer", "transformer"):
        ours, parakeet, w2v = _peer_models(encoder_type, reference, vocab_size)
        models = {"ours": ours, "ParakeetForCTC": parakeet, "Wav2Vec2ConformerForCTC": w2v}
        entry = {}
        for batch_size in args.batch_sizes:
            features = torch.randn(batch_size, frames, reference["num_mel_bins"])
            fmask = torch.ones(batch_size, frames, dtype=torch.long)
            waveform = torch.randn(batch_size, int(args.seconds * SAMPLING_RATE))
            inputs = {"ours": dict(input_features=features, attention_mask=fmask),
                      "ParakeetForCTC": dict(input_features=features, attention_mask=fmask),
                      "Wav2Vec2ConformerForCTC": dict(input_values=waveform)}
            for model in models.values():
                model.eval()
            # no_grad, not inference_mode: models cache tables (positions) that the training step below reuses.
            with torch.no_grad():
                times = time_interleaved({n: (lambda n=n: models[n](**inputs[n])) for n in models},
                                         args.repeats, args.warmup)
            entry[f"inference_batch{batch_size}"] = {
                "seconds": times, "ratio_peer_over_ours": {n: times[n] / times["ours"] for n in models if n != "ours"}}
        # One training step (forward, CTC loss, backward) at the largest batch size.
        batch_size = max(args.batch_sizes)
        labels = torch.randint(1, vocab_size, (batch_size, int(args.seconds * 12)))
        features = torch.randn(batch_size, frames, reference["num_mel_bins"])
        fmask = torch.ones(batch_size, frames, dtype=torch.long)
        waveform = torch.randn(batch_size, int(args.seconds * SAMPLING_RATE))
        inputs = {"ours": dict(input_features=features, attention_mask=fmask, labels=labels),
                  "ParakeetForCTC": dict(input_features=features, attention_mask=fmask, labels=labels),
                  "Wav2Vec2ConformerForCTC": dict(input_values=waveform, labels=labels)}

        def step(name):
            models[name].train()
            models[name].zero_grad(set_to_none=True)
            models[name](**inputs[name]).loss.backward()

        times = time_interleaved({n: (lambda n=n: step(n)) for n in models}, args.repeats, args.warmup)
        entry[f"training_step_batch{batch_size}"] = {
            "seconds": times, "ratio_peer_over_ours": {n: times[n] / times["ours"] for n in models if n != "ours"}}
        entry["parameters"] = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
        out["results"][encoder_type] = entry
    out["differences"] = (
        "Same layers, width, heads, FFN size and conv kernel. ParakeetForCTC: Conv2d subsampling x4 on the fbank "
        "(ours: two Conv1d with stride 2), relative positional attention. Wav2Vec2ConformerForCTC: a 7-layer CNN on "
        "the raw waveform (320 samples per frame, 50 frames/s; ours 25 frames/s after subsampling), rotary positions.")
    return out


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, torch
    torch.set_num_threads({threads})
    from transformers import AutoTokenizer, pipeline
    from hf_prunable_ctc import PrunableCTCFeatureExtractor, PrunableCTCForCTC
    model = PrunableCTCForCTC.from_pretrained({model!r}).eval()
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=AutoTokenizer.from_pretrained({model!r}),
                   feature_extractor=PrunableCTCFeatureExtractor())
    minutes = {minutes}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    audio = (0.1 * np.random.default_rng(0).standard_normal(int(minutes * 60 * 16000))).astype(np.float32)
    start = time.perf_counter()
    text = asr(audio, chunk_length_s=20, batch_size=1)["text"]
    print(json.dumps({{"minutes": minutes, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_before_audio_mib": before / 1024, "audio_array_mib": audio.nbytes / 2**20,
                      "seconds": time.perf_counter() - start, "text_chars": len(text)}}))
""")


def memory(args) -> dict:
    results = []
    for minutes in args.memory_minutes:
        script = MEMORY_SCRIPT.format(threads=args.threads, model=str(REFERENCE_MODEL), minutes=minutes)
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
        if run.returncode != 0:
            results.append({"minutes": minutes, "error": run.stderr[-2000:]})
            continue
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    ok = [r for r in results if "error" not in r]
    summary = {"chunk_length_s": 20, "runs": results}
    if len(ok) >= 2:
        # Flat in audio length: the growth of peak RSS beyond the input array itself.
        grow = [r["peak_rss_mib"] - r["audio_array_mib"] for r in ok]
        summary["peak_rss_minus_audio_growth_mib"] = grow[-1] - grow[0]
    return summary


def training(args) -> dict:
    from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC

    reference = json.loads((REFERENCE_MODEL / "config.json").read_text())
    demo = json.loads((CONFIGS / "demo.json").read_text())
    batch_size, seconds = (1, args.seconds) if args.quick else (8, 10.0)
    frames = int(seconds * 100)
    out = {"batch_size": batch_size, "audio_seconds_per_utterance": seconds, "results": {}}
    for name, settings in (("demo", demo), ("reference", reference)):
        keys = set(PrunableCTCConfig().to_dict())
        base = {k: v for k, v in settings.items() if k in keys and k not in ("auto_map", "architectures")}
        base.update(vocab_size=32, pruning_schedule=None, kept_layers=None)
        rate = settings.get("stochastic_depth_rate") or 0.2
        models, optimizers = {}, {}
        for label, sd in (("stochastic_depth_off", 0.0), (f"stochastic_depth_{rate}", rate)):
            torch.manual_seed(0)
            models[label] = PrunableCTCForCTC(PrunableCTCConfig(**{**base, "stochastic_depth_rate": sd})).train()
            optimizers[label] = torch.optim.AdamW(models[label].parameters(), lr=1e-4)
        features = torch.randn(batch_size, frames, base.get("num_mel_bins", 80))
        mask = torch.ones(batch_size, frames, dtype=torch.long)
        labels = torch.randint(1, 32, (batch_size, int(seconds * 12)))

        def step(label):
            optimizers[label].zero_grad(set_to_none=True)
            models[label](features, attention_mask=mask, labels=labels).loss.backward()
            optimizers[label].step()

        times = time_interleaved({label: (lambda label=label: step(label)) for label in models},
                                 args.repeats, args.warmup)
        out["results"][name] = {label: {"seconds_per_step": t, "audio_seconds_per_second": batch_size * seconds / t}
                                for label, t in times.items()}
    return out


def export(args) -> dict:
    try:
        import onnxruntime
    except ImportError:
        return {"skipped": "onnxruntime not installed (pip install onnx onnxruntime onnxscript)"}
    from hf_prunable_ctc import PrunableCTCForCTC
    from hf_prunable_ctc.runtime.export import export_onnx

    num_layers = json.loads((REFERENCE_MODEL / "config.json").read_text())["num_hidden_layers"]
    depths = [1] if args.quick else [1, num_layers // 2, num_layers]
    frames = int(args.seconds * 100)
    features = torch.randn(1, frames, 80)
    mask = torch.ones(1, frames, dtype=torch.int32)  # the feature extractor's dtype, which the graph takes
    rows = {}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            model = PrunableCTCForCTC.from_pretrained(REFERENCE_MODEL).eval()
            if depth < num_layers:
                model.prune_to(depth)
            fp32 = export_onnx(REFERENCE_MODEL, Path(tmp) / f"fp32-{depth}", depth=depth)
            int8 = export_onnx(REFERENCE_MODEL, Path(tmp) / f"int8-{depth}", depth=depth, quantize="int8")
            sessions = {kind: onnxruntime.InferenceSession(result["path"], options, providers=["CPUExecutionProvider"])
                        for kind, result in (("onnx_fp32", fp32), ("onnx_int8", int8))}
            feeds = {"input_features": features.numpy(), "attention_mask": mask.numpy()}
            with torch.inference_mode():
                times = time_interleaved({
                    "eager": lambda: model(features, attention_mask=mask),
                    "onnx_fp32": lambda: sessions["onnx_fp32"].run(["logits"], feeds),
                    "onnx_int8": lambda: sessions["onnx_int8"].run(["logits"], feeds),
                }, args.repeats, args.warmup)
            rows[depth] = {
                "seconds": times,
                "wer_on_test_subset": subset_error_rates({
                    "eager": lambda f, m: model(torch.from_numpy(f), attention_mask=torch.from_numpy(m)).logits,
                    "onnx_fp32": lambda f, m: sessions["onnx_fp32"].run(["logits"], {"input_features": f,
                                                                                     "attention_mask": m})[0],
                    "onnx_int8": lambda f, m: sessions["onnx_int8"].run(["logits"], {"input_features": f,
                                                                                     "attention_mask": m})[0],
                }, limit=8 if args.quick else None),
                "speedup_over_eager": {k: times["eager"] / times[k] for k in ("onnx_fp32", "onnx_int8")},
                "size_bytes": {"onnx_fp32": fp32["size_bytes"], "onnx_int8": int8["size_bytes"]},
                "max_abs_diff_vs_pytorch": {"onnx_fp32": fp32["max_abs_diff"], "onnx_int8": int8["max_abs_diff"]},
            }
    return {"audio_seconds": args.seconds, "batch_size": 1, "depths": rows,
            "onnxruntime": onnxruntime.__version__}


def subset_error_rates(backends: dict[str, Callable], limit: int | None = None) -> dict:
    """WER/CER (percent) of each backend on the reference model's bundled test utterances
    (`data/reference_test_subset`), one utterance at a time; a backend maps numpy ``(features, mask)`` to logits."""
    import csv

    from transformers import AutoFeatureExtractor, AutoTokenizer

    from hf_prunable_ctc.data.audio import load_audio
    from hf_prunable_ctc.evaluation.metrics import character_error_rate, word_error_rate
    from hf_prunable_ctc.data.text import normalize_transcript

    rows = list(csv.DictReader(open(TEST_SUBSET / "metadata.csv")))[:limit]
    extractor = AutoFeatureExtractor.from_pretrained(REFERENCE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(REFERENCE_MODEL)
    references = [normalize_transcript(row["transcription"]) for row in rows]
    inputs = [extractor(load_audio(TEST_SUBSET / row["file_name"]), sampling_rate=SAMPLING_RATE, return_tensors="np")
              for row in rows]
    rates = {"utterances": len(rows), "data": str(TEST_SUBSET.relative_to(ROOT))}
    with torch.inference_mode():
        for name, run in backends.items():
            predictions = [tokenizer.decode(np.asarray(run(x["input_features"], x["attention_mask"]))[0].argmax(-1).tolist())
                           for x in inputs]
            rates[name] = {"wer": 100 * word_error_rate(references, predictions),
                           "cer": 100 * character_error_rate(references, predictions)}
    return rates


SECTIONS = {"depth_scaling": depth_scaling, "peers": peers, "memory": memory, "training": training, "export": export}


# --- report -----------------------------------------------------------------------------------------------------


def environment(args) -> dict:
    from hf_prunable_ctc.runtime.depth_budget import cpu_name

    return {"device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "quick": args.quick, "clock": args.clock, "repeats": args.repeats, "warmup": args.warmup,
            "calls_per_turn": args.calls_per_turn, "load_average_at_start": os.getloadavg()[0], "command": "python benchmarks/run.py " + " ".join(sys.argv[1:])}


def write_markdown(results: dict, path: Path) -> None:
    env = results["environment"]
    lines = ["# Benchmarks", "", f"Command: `{env['command'].strip()}`. Device {env['device']} ({env['cpu']}), "
             f"{env['threads']} torch threads, torch {env['torch']}, transformers {env['transformers']}; median of "
             f"{env['repeats']} interleaved repetitions after {env['warmup']} warm-up; load average at start "
             f"{env['load_average_at_start']:.1f} on {env['cpu_count']} cores (a shared machine: ratios measured side "
             "by side are the numbers to read). Full numbers: `results.json`.", ""]
    ds = results.get("depth_scaling")
    if ds and "error" not in ds:
        section_env = ds.get("environment", env)
        lines += [f"## Depth scaling (reference model, {ds['audio_seconds']:g} s of audio)", "",
                  f"Audio: {ds.get('audio', 'a test tone with noise')}. Measured with "
                  f"`{section_env['command'].strip()}` ({section_env.get('clock', 'wall')} clock, "
                  f"{section_env['threads']} torch threads, load average {section_env['load_average_at_start']:.1f} "
                  f"at start; {section_env.get('calls_per_turn', 1)} calls in a row per depth and turn, "
                  "all but the first timed, i.e. the steady cost at one depth). End to end: audio in, text out, through `pipeline(\"automatic-speech-recognition\")` "
                  "with a pruned copy per depth; the model's forward is clocked inside the same calls (\"model in "
                  "pipeline\"), and \"e2e / model speed-up\" divides the end-to-end speed-up by that model's. "
                  "\"Beyond model\" is what a call costs besides the model (features, decoding, the pipeline) and "
                  "\"allowed\" the most it may cost for end-to-end speed-up >= 0.8 x model-only speed-up at that "
                  "depth.", ""]
        for batch_size, rows in ds["batches"].items():
            lines += [f"Batch {batch_size}:", "",
                      "| depth | model ms (num_layers=) | model ms (pruned) | measured speed-up | ideal (FLOPs) | "
                      "measured/ideal | end-to-end ms | model in pipeline ms | end-to-end speed-up | e2e / model speed-up "
                      "| beyond model ms | allowed ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for depth, r in rows.items():
                allowed = r.get("seconds_beyond_model_allowed")
                in_pipeline = r.get("seconds_model_in_pipeline")
                e2e = (f"{1000 * r['seconds_end_to_end']:.1f} | "
                       f"{'-' if in_pipeline is None else format(1000 * in_pipeline, '.1f')} | "
                       f"{r['end_to_end_speedup']:.2f} | {r['end_to_end_over_model_speedup']:.2f} | "
                       f"{1000 * r['seconds_beyond_model']:.1f} | "
                       f"{'-' if allowed is None else format(1000 * allowed, '.1f')}"
                       ) if "seconds_beyond_model" in r else "- | - | - | - | - | -"
                lines.append(f"| {depth} | {1000 * r['seconds_num_layers']:.1f} | {1000 * r['seconds_pruned']:.1f} | "
                             f"{r['measured_speedup']:.2f} | {r['ideal_speedup']:.2f} | {r['measured_over_ideal']:.2f} "
                             f"| {e2e} |")
            lines.append("")
        if "end_to_end" in ds:
            routes = [route for route in END_TO_END_PATHS if route in ds["end_to_end"]]
            lines += ["End to end at batch 1 along each path (the model clocked inside the same calls): "
                      + "; ".join(f"{route}: {END_TO_END_PATHS[route]}" for route in routes) + ".", "",
                      "| depth | " + " | ".join(f"{route}: ms, e2e / model speed-up, beyond model ms (allowed)"
                                                for route in routes) + " |",
                      "|---|" + "---|" * len(routes)]
            for depth in ds["end_to_end"][routes[0]]:
                cells = []
                for route in routes:
                    r = ds["end_to_end"][route][depth]
                    allowed = r["seconds_beyond_model_allowed"]
                    cells.append(f"{1000 * r['seconds_end_to_end']:.1f}, **{r['end_to_end_over_model_speedup']:.2f}**"
                                 f", {1000 * r['seconds_beyond_model']:.1f} "
                                 f"({'-' if allowed is None else format(1000 * allowed, '.1f')})")
                lines.append(f"| {depth} | " + " | ".join(cells) + " |")
            lines.append("")
        if "feature_extraction_seconds" in ds:
            fe = ds["feature_extraction_seconds"]
            stock = ds["stock_extractor_end_to_end"]
            speedup_key = next(k for k in stock if k.startswith("speedup"))
            lines += [f"Feature extraction of 10 s: torch {1000 * fe['torch']:.1f} ms, stock numpy "
                      f"{1000 * fe['stock_numpy']:.1f} ms. End to end with the stock extractor, {speedup_key}: "
                      f"{stock[speedup_key]:.2f}.", ""]
    peers_result = results.get("peers")
    if peers_result and "error" not in peers_result:
        lines += ["## Peers (random weights, same size)", "", peers_result["differences"], "",
                  "| ours | measurement | ParakeetForCTC / ours | Wav2Vec2ConformerForCTC / ours |", "|---|---|---|---|"]
        for encoder_type, entry in peers_result["results"].items():
            for key, value in entry.items():
                if key.startswith(("inference", "training")):
                    ratio = value["ratio_peer_over_ours"]
                    lines.append(f"| {encoder_type} | {key} | {ratio['ParakeetForCTC']:.2f} | "
                                 f"{ratio['Wav2Vec2ConformerForCTC']:.2f} |")
        lines += ["", "> 1 means ours is faster.", ""]
    mem = results.get("memory")
    if mem and "error" not in mem:
        lines += [f"## Memory (pipeline, chunk_length_s={mem['chunk_length_s']})", "",
                  "| audio minutes | peak RSS MiB | of which the audio array MiB | seconds |", "|---|---|---|---|"]
        for run in mem["runs"]:
            if "error" in run:
                lines.append(f"| {run['minutes']} | error | | |")
            else:
                lines.append(f"| {run['minutes']} | {run['peak_rss_mib']:.0f} | {run['audio_array_mib']:.0f} | "
                             f"{run['seconds']:.1f} |")
        lines.append("")
    tr = results.get("training")
    if tr and "error" not in tr:
        lines += [f"## Training step (batch {tr['batch_size']} x {tr['audio_seconds_per_utterance']} s, AdamW)", "",
                  "| config | stochastic depth | audio s per s |", "|---|---|---|"]
        for name, entry in tr["results"].items():
            for label, value in entry.items():
                lines.append(f"| {name} | {label} | {value['audio_seconds_per_second']:.0f} |")
        lines.append("")
    ex = results.get("export")
    if ex and "depths" in ex:
        lines += ["## Export (batch 1, 10 s)", "", "| depth | eager ms | ONNX fp32 ms | ONNX int8 ms | fp32 MB | "
                  "int8 MB | max abs diff fp32 / int8 | WER % eager / fp32 / int8 |", "|---|---|---|---|---|---|---|---|"]
        for depth, r in ex["depths"].items():
            s, b, d = r["seconds"], r["size_bytes"], r["max_abs_diff_vs_pytorch"]
            w = r.get("wer_on_test_subset")
            wer = " / ".join(f"{w[k]['wer']:.1f}" for k in ("eager", "onnx_fp32", "onnx_int8")) if w else "-"
            lines.append(f"| {depth} | {1000 * s['eager']:.1f} | {1000 * s['onnx_fp32']:.1f} | "
                         f"{1000 * s['onnx_int8']:.1f} | {b['onnx_fp32'] / 1e6:.2f} | {b['onnx_int8'] / 1e6:.2f} | "
                         f"{d['onnx_fp32']:.1e} / {d['onnx_int8']:.1e} | {wer} |")
        first = next((r["wer_on_test_subset"] for r in ex["depths"].values() if "wer_on_test_subset" in r), None)
        if first:
            lines += ["", f"WER on the {first['utterances']} bundled test utterances of the reference model "
                      f"(`{first['data']}`, synthetic speech, voices unseen in training), one utterance at a time."]
        lines.append("")
    for name, value in results.items():
        if isinstance(value, dict) and "error" in value:
            lines += [f"## {name}: failed", "", "```", value["error"][-1500:], "```", ""]
    path.write_text("\n".join(lines))
    restore_companion_sections(path)  # the tables the companion benchmarks measure themselves


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny inputs and few repetitions (smoke test)")
    parser.add_argument("--output_dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: the calling thread's CPU time (with --threads 1 on a shared "
                             "machine: the work done, not the waiting for a core)")
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other sections of an existing results.json in --output_dir")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions per call (median); more steadies ratios of small timings")
    parser.add_argument("--calls_per_turn", type=int, default=3,
                        help="depth_scaling: calls in a row per function and turn, all but the first timed (the "
                             "steady cost of transcribing at one depth); 1 times each call right after another "
                             "depth's (cold caches)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.calls_per_turn < 1:
        parser.error(f"--calls_per_turn must be at least 1, got {args.calls_per_turn}")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' work would not be counted)")
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seconds, args.repeats, args.warmup, args.batch_sizes, args.memory_minutes = 1.0, 1, 1, [1, 2], [0.2, 0.4]
        args.calls_per_turn = 1
    else:
        args.seconds, args.warmup, args.batch_sizes, args.memory_minutes = 10.0, 1, [1, 8], [10, 60]
    results = {"environment": environment(args)}
    previous = args.output_dir / "results.json"
    if args.merge and previous.is_file():
        # Re-measure some sections, keep the others' numbers (each section records its own environment).
        results = {**json.loads(previous.read_text()), **results}
        for name in args.sections:
            results.pop(name, None)
    for name in args.sections:
        start = time.perf_counter()
        try:
            results[name] = SECTIONS[name](args)
            results[name]["environment"] = results["environment"]
        except Exception as error:  # one failing section must not lose the others' numbers
            import traceback

            results[name] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
        results[name]["section_seconds"] = time.perf_counter() - start
        print(f"{name}: {results[name]['section_seconds']:.0f} s", flush=True)
        # Written after every section, so an interrupted run keeps what it measured.
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        write_markdown(results, args.output_dir / "README.md")
    return results


if __name__ == "__main__":
    main()
