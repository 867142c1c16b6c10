"""float32 vs dynamic int8 vs static int8 ONNX: WER and speed of the every-depth folder, side by side.

    OMP_NUM_THREADS=1 nice python benchmarks/int8.py [--model model_cards/prunable-ctc-small-synth] \
        [--data corpora/synth-6h-v2/test] [--calibration_data corpora/synth-6h-v2/validation] [--limit N]

Exports the model three times (`export_onnx` without `depth`: float32, ``quantize="int8"``, ``"int8-static"``
calibrated on `--calibration_data`), then runs every utterance of `--data` alone (batch 1) through each folder with
`OnnxPrunableCTC(threads=1)` at `--depths`, the three folders interleaved per utterance in a rotating order (the
machine is shared: each ratio compares calls made at the same moment, on the same features). Features are computed
once per utterance by the runtime's numpy front end and left out of the times, which are the graphs' only.
`speed` is float32 seconds / that variant's seconds over all utterances; WER uses the transcripts of the same calls.

Writes ``int8.json`` and replaces its section of ``benchmarks/README.md`` with the table rendered from it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # readme_sections, beside this script

from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.evaluation.metrics import word_error_rate  # noqa: E402
from hf_prunable_ctc.runtime.depth_budget import cpu_name  # noqa: E402
from hf_prunable_ctc.runtime.export import export_onnx  # noqa: E402
from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC  # noqa: E402
from hf_prunable_ctc.runtime.quantization import CALIBRATION_UTTERANCES, STATIC_SETTINGS  # noqa: E402
from readme_sections import replace_section  # noqa: E402

SECTION_TITLE = "## int8 ONNX: dynamic vs static (every-depth folder, batch 1, one thread)"
VARIANTS = {"float32": None, "int8 dynamic": "int8", "int8 static": "int8-static"}
GOALS = {"wer_cost_points": 1.0, "speed": 1.5}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="model_cards/prunable-ctc-small-synth")
    parser.add_argument("--data", default="corpora/synth-6h-v2/test", help="audiofolder split to measure on")
    parser.add_argument("--calibration_data", default="corpora/synth-6h-v2/validation")
    parser.add_argument("--calibration_utterances", type=int, default=CALIBRATION_UTTERANCES)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--limit", type=int, help="first N utterances only (smoke runs)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "int8.json"))
    parser.add_argument("--readme", default=str(ROOT / "benchmarks" / "README.md"))
    return parser.parse_args(argv)


def measure(args) -> dict:
    rows = list(csv.DictReader(open(Path(args.data) / "metadata.csv", newline="")))[: args.limit]
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        exports, runtimes = {}, {}
        for name, quantize in VARIANTS.items():
            calibration = {"calibration_data": args.calibration_data,
                           "calibration_utterances": args.calibration_utterances} if quantize == "int8-static" else {}
            started = time.perf_counter()
            exports[name] = export_onnx(args.model, Path(tmp) / quantize_name(quantize), quantize=quantize,
                                        **calibration)
            exports[name]["export_seconds"] = time.perf_counter() - started
            runtimes[name] = OnnxPrunableCTC(exports[name]["path"], threads=1)
        names = list(VARIANTS)
        seconds = {name: {depth: 0.0 for depth in args.depths} for name in names}
        texts = {name: {depth: [] for depth in args.depths} for name in names}
        audio_seconds = 0.0
        for i, row in enumerate(rows):
            waveform = load_audio(Path(args.data) / row["file_name"])
            audio_seconds += len(waveform) / 16000
            features, mask = runtimes["float32"].front_end([waveform])
            for name in names[i % len(names):] + names[: i % len(names)]:
                runtime = runtimes[name]
                for depth in args.depths:
                    started = time.perf_counter()
                    logits, lengths, _ = runtime.logits(features, mask, num_layers=depth)
                    seconds[name][depth] += time.perf_counter() - started
                    texts[name][depth].append(runtime.decode(logits[0, : lengths[0]].argmax(-1)))
    references = [row["transcription"] for row in rows]
    variants = {}
    for name in names:
        variants[name] = {
            "size_bytes": exports[name]["size_bytes"], "max_abs_diff_vs_pytorch": exports[name]["max_abs_diff"],
            "export_seconds": round(exports[name]["export_seconds"], 1),
            "depths": {str(depth): {"wer": 100 * word_error_rate(references, texts[name][depth]),
                                    "seconds": seconds[name][depth],
                                    "speed_vs_float32": seconds["float32"][depth] / seconds[name][depth]}
                       for depth in args.depths}}
    import onnxruntime

    return {
        "command": "python benchmarks/int8.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "onnxruntime": onnxruntime.__version__, "threads": 1, "batch_size": 1,
        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()[0],
        "model": args.model, "data": args.data, "utterances": len(rows), "audio_seconds": audio_seconds,
        "calibration_data": args.calibration_data, "calibration_utterances": args.calibration_utterances,
        "static_settings": STATIC_SETTINGS, "goals": GOALS, "variants": variants,
    }


def quantize_name(quantize) -> str:
    return quantize or "float32"


def markdown_section(results: dict) -> list[str]:
    """The int8 table of `benchmarks/README.md`, from the JSON `measure` returns."""
    depths = list(results["variants"]["float32"]["depths"])
    base = results["variants"]["float32"]["depths"]
    lines = [SECTION_TITLE, "", f"Command: `OMP_NUM_THREADS=1 nice {results['command']}`. {results['cpu']} "
             f"({results['cpu_count']} cores, shared; load average {results['load_average_at_start']:.1f} at start, "
             f"{results['load_average_at_end']:.1f} at end), ONNX Runtime {results['onnxruntime']}, one intra-op "
             f"thread; {results['utterances']} utterances ({results['audio_seconds'] / 3600:.2f} h) of "
             f"`{results['data']}`, each alone, the three folders interleaved per utterance; graphs only (features "
             f"computed once beforehand). Static scales calibrated on {results['calibration_utterances']} utterances "
             f"of `{results['calibration_data']}`. Goals: WER cost <= +{results['goals']['wer_cost_points']:g} "
             f"point, speed >= {results['goals']['speed']:g}x float32 ONNX. Full numbers: `int8.json`.", "",
             "| variant | MB | " + " | ".join(f"WER % ({d} layers) | cost | speed ({d} layers)" for d in depths)
             + " |", "|---|---|" + "---|---|---|" * len(depths)]
    for name, variant in results["variants"].items():
        cells = [f"{variant['depths'][d]['wer']:.1f} | {variant['depths'][d]['wer'] - base[d]['wer']:+.1f} | "
                 f"{variant['depths'][d]['speed_vs_float32']:.2f}x" for d in depths]
        lines.append(f"| {name} | {variant['size_bytes'] / 1e6:.1f} | " + " | ".join(cells) + " |")
    return lines + [""]


def update_readme(results: dict, readme: Path) -> None:
    """Replace (or add) the int8 table in `readme`, leaving every other section as it is."""
    replace_section(readme, SECTION_TITLE, markdown_section(results))


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = measure(args)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    update_readme(results, Path(args.readme))
    print("\n".join(markdown_section(results)))
    return results


if __name__ == "__main__":
    main()
