"""The torch-free device runtime (`OnnxPrunableCTC` on an every-depth folder) against the PyTorch pipeline and
against single-depth ONNX files, side by side in one run.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/device_runtime.py [--model model_cards/prunable-ctc-small-synth] \
        [--data data/reference_test_subset/test] [--repeats 5] [--latency_repeats 30] [--quick]

Exports the model once as an every-depth folder (`export_onnx(model, out)`) and once per depth as a single file
(`export_onnx(model, out, depth=k)`), then measures three things, with one thread everywhere:

1. **Start-up and memory**: a fresh Python process per call imports the runtime, loads the model and transcribes one
   file (10 s of audio, and `--long_seconds` of audio: the bundled utterances joined), and reports its import time,
   load time, transcription time and peak resident memory (`VmHWM` after transcribing). The ONNX side is
   ``OnnxPrunableCTC(folder, threads=1).transcribe(path, chunk_length_s=...)``; the PyTorch side is the
   documented pipeline, ``prunable_asr_pipeline(model=...)(path, chunk_length_s=...)``: both cut long audio into
   the same overlapping chunks (`--chunk_length_s`, stride a sixth of it), and their long transcripts are compared.
   The four (runtime, length) processes are interleaved per repeat in a rotating order; the ONNX runtime's one pass
   over the long recording (``chunk_length_s=0``), whose attention memory grows with the square of its length,
   runs once under an address-space cap, to show what chunking saves.
2. **Latency per depth**: `logits` of the every-depth folder at ``num_layers=k`` (front-end graph, k layer graphs,
   head) against ``session.run`` of the depth-k file, on the same precomputed features of 10 s of audio, batch 1;
   the two alternate per repeat and depth. The ratio is folder / single file.
3. **Early exit on the device**: each bundled utterance alone through the folder at fixed depths and at early-exit
   thresholds, interleaved per utterance; WER, mean depth and the sum over utterances of each one's fastest call.

Features are computed once by the runtime's numpy front end and left out of the times of 2 and 3. The machine may be
shared: load average at start and end is recorded, and every ratio comes with its spread over repeats.

Writes ``device_runtime.json`` and replaces its section of ``benchmarks/README.md`` with tables rendered from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # readme_sections, beside this script

SECTION_TITLE = "## Device runtime: ONNX folder vs PyTorch pipeline and single-depth files (one thread)"
GOALS = {"import_load_seconds": 1.0, "peak_rss_mb_10s": 150.0, "latency_ratio": 1.10}
SAMPLING_RATE = 16000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="model_cards/prunable-ctc-small-synth")
    parser.add_argument("--data", default="data/reference_test_subset/test", help="audiofolder split (metadata.csv)")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per (runtime, audio length)")
    parser.add_argument("--latency_repeats", type=int, default=30, help="timed calls per depth and variant")
    parser.add_argument("--utterance_repeats", type=int, default=2, help="calls per utterance and early-exit run")
    parser.add_argument("--long_seconds", type=float, default=600.0, help="length of the long recording")
    parser.add_argument("--chunk_length_s", type=float, default=20.0,
                        help="chunk length of both runtimes (0 in a child: one pass)")
    parser.add_argument("--depths", type=int, nargs="+", help="depths to time (default: all)")
    parser.add_argument("--fixed_depths", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9])
    parser.add_argument("--limit", type=int, help="first N utterances only for early exit")
    parser.add_argument("--quick", action="store_true", help="tiny repeats and lengths (a smoke run for tests)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "device_runtime.json"))
    parser.add_argument("--readme", default=str(ROOT / "benchmarks" / "README.md"))
    parser.add_argument("--child", choices=["onnx", "pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--memory_cap_gb", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--one_pass_memory_cap_gb", type=float, default=8.0,
                        help="address-space limit of the ONNX runtime's one-pass run of the long recording")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.repeats, args.latency_repeats, args.utterance_repeats = 1, 2, 1
        args.long_seconds, args.limit = 30.0, args.limit or 4
        args.depths = args.depths or [1, 8]
    return args


# --- 1. a fresh process: import, load, transcribe ---------------------------------------------------------------


def child(args) -> None:
    """Runs in its own process, before anything heavy is imported: prints one JSON line of times and memory."""
    import resource

    if args.memory_cap_gb:
        # The one-pass run of long audio needs memory quadratic in its length: cap it so that it fails here
        # instead of pushing a shared machine into swap or the OOM killer.
        cap = int(args.memory_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    started = time.perf_counter()
    if args.child == "onnx":
        from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

        imported = time.perf_counter()
        asr = OnnxPrunableCTC(args.target, threads=1)
        loaded = time.perf_counter()
        rss_loaded = peak_rss_mb()
        text = asr.transcribe(args.audio, chunk_length_s=args.chunk_length_s)["text"]
    else:
        from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline
        import torch

        torch.set_num_threads(1)
        imported = time.perf_counter()
        asr = prunable_asr_pipeline(model=args.target)
        loaded = time.perf_counter()
        rss_loaded = peak_rss_mb()
        text = asr(args.audio, chunk_length_s=args.chunk_length_s)["text"]
    transcribed = time.perf_counter()
    import json

    # ru_maxrss is in KiB on Linux.
    print(json.dumps({"import_seconds": imported - started, "load_seconds": loaded - imported,
                      "transcribe_seconds": transcribed - loaded, "peak_rss_mb_loaded": rss_loaded,
                      "peak_rss_mb": peak_rss_mb(), "vm_hwm_mb": vm_hwm_mb(),
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch_imported": "torch" in sys.modules, "text": text}))


def vm_hwm_mb() -> float | None:
    """This process image's peak resident memory from /proc: reset at exec, unlike `ru_maxrss`, which is kept
    across exec and so reports the parent's peak whenever that is higher (a benchmark started from pytest)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process image in MiB: `VmHWM` where /proc has it, else `ru_maxrss`."""
    hwm = vm_hwm_mb()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(runtime: str, target: str, audio: str, chunk_length_s: float, memory_cap_gb: float = 0.0) -> dict:
    import json
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", runtime, "--target", target, "--audio", audio,
                           "--chunk_length_s", str(chunk_length_s), "--memory_cap_gb", str(memory_cap_gb)],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return {"failed": last[-300:], "process_seconds": time.perf_counter() - started}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - started}


def joined_audio(rows, data: Path, seconds: float):
    """The utterances of `rows` joined in order (and again from the start) and cut to `seconds`."""
    import numpy as np

    from hf_prunable_ctc.data.audio import load_audio

    pieces, total, target = [], 0, int(round(seconds * SAMPLING_RATE))
    while total < target:
        for row in rows:
            pieces.append(load_audio(data / row["file_name"]))
            total += len(pieces[-1])
            if total >= target:
                break
    return np.concatenate(pieces)[:target]


def measure_startup(args, folder: str, audio_files: dict[str, str]) -> dict:
    """Fresh processes per (runtime, audio), interleaved per repeat, both runtimes chunking as `--chunk_length_s`
    asks; the ONNX runtime's one pass over the long recording runs once, under `--one_pass_memory_cap_gb`."""
    short, long = audio_files
    # (row name, runtime, audio)
    variants = [("onnx 10 s", "onnx", short), ("pytorch 10 s", "pytorch", short), (f"onnx {long}", "onnx", long),
                (f"pytorch {long}", "pytorch", long)]
    calls = {name: [] for name, *_ in variants}
    for repeat in range(args.repeats):
        shift = repeat % len(variants)
        for name, runtime, length in variants[shift:] + variants[:shift]:
            target = folder if runtime == "onnx" else args.model
            calls[name].append(run_child(runtime, target, audio_files[length], args.chunk_length_s))
            print(f"  {name} repeat {repeat}: {calls[name][-1]}"[:240], flush=True)
    one_pass = f"onnx {long}, one pass"
    calls[one_pass] = [run_child("onnx", folder, audio_files[long], 0.0, memory_cap_gb=args.one_pass_memory_cap_gb)]
    print(f"  {one_pass}: {calls[one_pass][-1]}"[:400], flush=True)
    summary = {name: startup_entry(calls[name], runtime, length, args.chunk_length_s)
               for name, runtime, length in variants}
    summary[one_pass] = startup_entry(calls[one_pass], "onnx", long, 0.0, args.one_pass_memory_cap_gb)
    ratios = {}
    for onnx_name, torch_name, length in ((variants[0][0], variants[1][0], short), (variants[2][0], variants[3][0], long)):
        pairs = [(a, b) for a, b in zip(calls[onnx_name], calls[torch_name]) if "failed" not in a and "failed" not in b]
        if pairs:
            ratios[length] = {
                "onnx": onnx_name, "pytorch": torch_name,
                "import_load": spread([(a["import_seconds"] + a["load_seconds"])
                                       / (b["import_seconds"] + b["load_seconds"]) for a, b in pairs]),
                "peak_rss": spread([a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in pairs]),
                "transcribe": spread([a["transcribe_seconds"] / b["transcribe_seconds"] for a, b in pairs])}
    return {"variants": summary, "onnx_over_pytorch": ratios,
            "same_text_10s": same_text(summary[variants[0][0]], summary[variants[1][0]]),
            "same_text_long": same_text(summary[variants[2][0]], summary[variants[3][0]])}


def startup_entry(runs: list[dict], runtime: str, length: str, chunk_length_s: float,
                  memory_cap_gb: float | None = None) -> dict:
    """One row of part 1: the runs as measured (without their text) and the spread of each measurement."""
    good = [run for run in runs if "failed" not in run]
    entry = {"runtime": runtime, "audio": length, "chunk_length_s": chunk_length_s,
             "runs": [{k: v for k, v in run.items() if k != "text"} for run in runs]}
    if memory_cap_gb is not None:
        entry["memory_cap_gb"] = memory_cap_gb
    if good:
        for key in ("import_seconds", "load_seconds", "transcribe_seconds", "peak_rss_mb", "peak_rss_mb_loaded",
                    "vm_hwm_mb", "ru_maxrss_mb", "process_seconds"):
            entry[key] = spread([run[key] for run in good])
        entry["import_load_seconds"] = spread([run["import_seconds"] + run["load_seconds"] for run in good])
        entry["torch_imported"] = any(run["torch_imported"] for run in good)
        entry["text"] = good[0]["text"]
    return entry


def same_text(onnx: dict, pytorch: dict) -> bool:
    return onnx.get("text") is not None and onnx.get("text") == pytorch.get("text")


# --- 2. latency per depth: every-depth folder vs single-depth file --------------------------------------------


def measure_latency(args, runtime, single_files: dict[int, str], features, mask) -> dict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {depth: onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                for depth, path in single_files.items()}
    feeds = {"input_features": features, "attention_mask": mask}

    def folder_call(depth):
        return runtime.logits(features, mask, num_layers=depth)[0]

    def file_call(depth):
        return sessions[depth].run(None, feeds)[0]

    import numpy as np

    max_diff = {depth: float(np.abs(folder_call(depth) - file_call(depth)).max()) for depth in sessions}
    seconds = {depth: {"folder": [], "file": []} for depth in sessions}
    for repeat in range(-1, args.latency_repeats):  # the first round warms up
        for depth in sessions:
            order = [("folder", folder_call), ("file", file_call)]
            for name, call in order if (repeat + depth) % 2 else order[::-1]:
                started = time.perf_counter()
                call(depth)
                if repeat >= 0:
                    seconds[depth][name].append(time.perf_counter() - started)
    return {str(depth): {"folder_ms": spread([1000 * s for s in times["folder"]]),
                         "file_ms": spread([1000 * s for s in times["file"]]),
                         "ratio": spread([a / b for a, b in zip(times["folder"], times["file"])]),
                         "ratio_of_fastest": min(times["folder"]) / min(times["file"]),
                         "max_abs_diff_logits": max_diff[depth]}
            for depth, times in seconds.items()}


# --- 3. early exit on the device -------------------------------------------------------------------------------


def measure_early_exit(args, runtime, rows, data: Path) -> dict:
    from hf_prunable_ctc.data.audio import load_audio
    from hf_prunable_ctc.evaluation.metrics import word_error_rate

    configs = [("depth", k) for k in args.fixed_depths] + [("threshold", t) for t in args.thresholds]
    names = [f"{kind} {value:g}" for kind, value in configs]
    seconds = {name: 0.0 for name in names}
    texts = {name: [] for name in names}
    depths = {name: [] for name in names}
    audio_seconds = 0.0
    for i, row in enumerate(rows):
        waveform = load_audio(data / row["file_name"])
        audio_seconds += len(waveform) / SAMPLING_RATE
        features, mask = runtime.front_end([waveform])
        shift = i % len(configs)
        for (kind, value), name in list(zip(configs, names))[shift:] + list(zip(configs, names))[:shift]:
            call = {"num_layers": value} if kind == "depth" else {"early_exit_threshold": value}
            fastest = float("inf")
            for _ in range(args.utterance_repeats):
                started = time.perf_counter()
                logits, lengths, exit_depths = runtime.logits(features, mask, **call)
                fastest = min(fastest, time.perf_counter() - started)
            seconds[name] += fastest
            texts[name].append(runtime.decode(logits[0, : lengths[0]].argmax(-1)))
            depths[name].append(int(exit_depths[0]))
    references = [row["transcription"] for row in rows]
    full = f"depth {max(args.fixed_depths)}"
    return {"utterances": len(rows), "audio_seconds": audio_seconds, "runs": {
        name: {"kind": kind, "value": value, "wer": 100 * word_error_rate(references, texts[name]),
               "mean_depth": sum(depths[name]) / len(rows), "seconds": seconds[name],
               "speedup_vs_full": seconds[full] / seconds[name],
               "exits": {str(d): depths[name].count(d) for d in sorted(set(depths[name]))}}
        for (kind, value), name in zip(configs, names)}}


# --- the run -------------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    """Median, min and max of `values`, and how many there were."""
    import statistics

    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def measure(args) -> dict:
    import csv
    import platform
    import resource
    import subprocess
    import tempfile

    import soundfile as sf

    data = Path(args.data)
    rows = list(csv.DictReader(open(data / "metadata.csv", newline="")))
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The fresh processes of part 1 start from this one; their peak is read from VmHWM, but their `ru_maxrss`
        # (kept for comparison) counts this one's peak too: so this one stays small (no torch, no model) until they
        # have run, and the every-depth folder is written by the CLI in a process of its own.
        folder = str(tmp / "every-depth")
        subprocess.run(["hf-prunable-ctc", "export", args.model, folder], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        lengths = {"10 s": 10.0, f"{args.long_seconds / 60:g} min": args.long_seconds}
        audio_files = {}
        for name, seconds in lengths.items():
            audio_files[name] = str(tmp / f"{seconds:g}s.wav")
            sf.write(audio_files[name], joined_audio(rows, data, seconds), SAMPLING_RATE, subtype="PCM_16")
        parent_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        startup = measure_startup(args, folder, audio_files)
        startup["parent_peak_rss_mb"] = parent_rss_mb
        print(f"startup done at {time.perf_counter() - started:.0f} s", flush=True)

        import onnxruntime
        import torch

        from hf_prunable_ctc.runtime.depth_budget import cpu_name
        from hf_prunable_ctc.runtime.export import export_onnx
        from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

        runtime = OnnxPrunableCTC(folder, threads=1)
        depths = args.depths or list(range(1, runtime.num_layers + 1))
        single_files = {depth: export_onnx(args.model, tmp / f"depth-{depth}", depth=depth)["path"]
                        for depth in depths}
        folder_bytes = sum(f.stat().st_size for f in Path(folder).glob("*.onnx"))
        print(f"exported at {time.perf_counter() - started:.0f} s", flush=True)
        features, mask = runtime.front_end([joined_audio(rows, data, 10.0)])
        latency = measure_latency(args, runtime, single_files, features, mask)
        print(f"latency done at {time.perf_counter() - started:.0f} s", flush=True)
        early_exit = measure_early_exit(args, runtime, rows[: args.limit], data)

    shown, skip = [], False
    for arg in args.argv:  # where this run wrote its files is no part of the command to reproduce it
        if skip or arg.startswith(("--output", "--readme")):
            skip = not skip and "=" not in arg
            continue
        shown.append(arg)
    return {
        "command": " ".join(["python benchmarks/device_runtime.py"] + shown), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
        "threads": 1, "batch_size": 1, "quick": args.quick,
        "load_average_at_start": list(load_at_start), "load_average_at_end": list(os.getloadavg()),
        "seconds": time.perf_counter() - started,
        "model": args.model, "data": args.data, "repeats": args.repeats, "latency_repeats": args.latency_repeats,
        "utterance_repeats": args.utterance_repeats, "chunk_length_s": args.chunk_length_s,
        "folder_onnx_bytes": folder_bytes, "goals": GOALS,
        "startup": startup, "latency_per_depth": latency, "early_exit": early_exit,
    }


# --- rendering -----------------------------------------------------------------------------------------------------


def _range(entry: dict, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return (f"{entry['median'] * scale:.{digits}f}{unit} ({entry['min'] * scale:.{digits}f}-"
            f"{entry['max'] * scale:.{digits}f})")


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _equal(same: bool) -> str:
    return "equal" if same else "different"


def markdown_section(results: dict) -> list[str]:
    """The device-runtime section of `benchmarks/README.md`, from the JSON `measure` returns."""
    goals, startup = results["goals"], results["startup"]
    load_start, load_end = results["load_average_at_start"][0], results["load_average_at_end"][0]
    lines = [SECTION_TITLE, "",
             f"Command: `OMP_NUM_THREADS=1 nice -n 5 {results['command']}`. {results['cpu']} "
             f"({results['cpu_count']} cores, shared; load average {load_start:.1f} at start, {load_end:.1f} at end), "
             f"ONNX Runtime {results['onnxruntime']}, torch {results['torch']}, one thread; model `{results['model']}`. "
             "Each cell is the median over repeats with the range (min-max) in brackets; ratios are taken per "
             "repeat, between calls made side by side. Full numbers: `device_runtime.json`.", "",
             f"**Start-up and memory**, a fresh process per call ({results['repeats']} per row, the rows interleaved): "
             "import, load (`OnnxPrunableCTC(folder, threads=1)` / `prunable_asr_pipeline(model=...)`), transcribe one "
             "WAV file, peak RSS (`VmHWM`, the process's own peak) after transcribing. Both runtimes cut long audio "
             f"the same way, `chunk_length_s={results['chunk_length_s']:g}` (the ONNX runtime's default, the "
             "pipeline's documented way; stride a sixth of it): overlapping chunks, each with its own features, the "
             "strides' logits dropped, one CTC decode over the rest, so memory is that of one chunk. The ONNX "
             "runtime's one pass over the long recording (`chunk_length_s=0`), whose attention memory grows with the "
             "square of its length, is run once under an address-space cap. Goals: import "
             f"+ load <= {goals['import_load_seconds']:g} s, peak RSS <= {goals['peak_rss_mb_10s']:g} MB for 10 s of "
             "audio.", "",
             "| runtime | audio | import s | load s | import + load s | transcribe s | peak RSS MB | torch imported |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in startup["variants"].values():
        name = "ONNX folder" if entry["runtime"] == "onnx" else "PyTorch pipeline"
        if "memory_cap_gb" in entry:
            name += f", one pass (cap {entry['memory_cap_gb']:g} GiB)"
        if "import_seconds" not in entry:
            reason = entry["runs"][0].get("failed", "")
            reason = "out of memory" if "memory" in reason.lower() else reason[-120:]
            lines.append(f"| {name} | {entry['audio']} | did not finish: {reason} | | | | | |")
            continue
        lines.append(f"| {name} | {entry['audio']} | {_range(entry['import_seconds'])} | "
                     f"{_range(entry['load_seconds'])} | {_range(entry['import_load_seconds'])} | "
                     f"{_range(entry['transcribe_seconds'])} | {_range(entry['peak_rss_mb'], digits=0)} | "
                     f"{'yes' if entry['torch_imported'] else 'no'} |")
    lines += ["", "| audio | ONNX / PyTorch: import + load | peak RSS | transcribe |", "|---|---|---|---|"]
    for length, ratio in startup["onnx_over_pytorch"].items():
        lines.append(f"| {length} | {_range(ratio['import_load'])} | {_range(ratio['peak_rss'])} | "
                     f"{_range(ratio['transcribe'])} |")
    onnx_10s = next((e for e in startup["variants"].values() if e["runtime"] == "onnx" and e["audio"] == "10 s"), {})
    long = next(e["audio"] for e in startup["variants"].values() if e["audio"] != "10 s")
    if "import_seconds" in onnx_10s:
        import_load, rss = onnx_10s["import_load_seconds"]["median"], onnx_10s["peak_rss_mb"]["median"]
        lines += ["", f"ONNX folder, 10 s: import + load {import_load:.2f} s (goal <= {goals['import_load_seconds']:g} "
                  f"s: {_verdict(import_load <= goals['import_load_seconds'])}), peak RSS {rss:.0f} MB (goal <= "
                  f"{goals['peak_rss_mb_10s']:g} MB: {_verdict(rss <= goals['peak_rss_mb_10s'])}). The transcripts "
                  f"of the two runtimes are {_equal(startup['same_text_10s'])} for 10 s and "
                  f"{_equal(startup.get('same_text_long', False))} for {long}, chunked."]
    latency = results["latency_per_depth"]
    worst = max(entry["ratio"]["median"] for entry in latency.values())
    lines += ["", f"**Latency per depth**, 10 s of audio, batch 1, graphs only: the every-depth folder at "
              "`num_layers=k` (front-end graph, k layer graphs, head, run in sequence) against the single file "
              f"`export_onnx(model, out, depth=k)`, alternating per call, {results['latency_repeats']} timed calls "
              f"each. Goal: folder within {100 * (goals['latency_ratio'] - 1):g}% of the file at every depth "
              f"({_verdict(worst <= goals['latency_ratio'])}: worst median ratio {worst:.2f}).", "",
              "| depth | folder ms | single file ms | folder / file | ratio of fastest calls | max abs diff logits |",
              "|---|---|---|---|---|---|"]
    for depth, entry in latency.items():
        lines.append(f"| {depth} | {_range(entry['folder_ms'], digits=1)} | {_range(entry['file_ms'], digits=1)} | "
                     f"{_range(entry['ratio'])} | {entry['ratio_of_fastest']:.2f} | "
                     f"{entry['max_abs_diff_logits']:.1e} |")
    early = results["early_exit"]
    lines += ["", f"**Early exit on the device**: {early['utterances']} utterances "
              f"({early['audio_seconds']:.1f} s) of `{results['data']}`, each alone through the folder, the runs "
              f"interleaved per utterance; seconds are the sum of each utterance's fastest of "
              f"{results['utterance_repeats']} calls (graphs only).", "",
              "| run | WER % | mean depth | seconds | speed-up vs full depth | exits per layer |", "|---|---|---|---|---|---|"]
    for name, run in early["runs"].items():
        exits = " ".join(f"{d}:{n}" for d, n in run["exits"].items()) if run["kind"] == "threshold" else ""
        lines.append(f"| {name} | {run['wer']:.1f} | {run['mean_depth']:.2f} | {run['seconds']:.3f} | "
                     f"{run['speedup_vs_full']:.2f}x | {exits} |")
    return lines + [""]


def update_readme(results: dict, readme: Path) -> None:
    """Replace (or add) the device-runtime section in `readme`, leaving every other section as it is."""
    from readme_sections import replace_section

    replace_section(readme, SECTION_TITLE, markdown_section(results))


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.child:
        return child(args)
    from hf_prunable_ctc.json_files import write_json

    results = measure(args)
    write_json(args.output, results, indent=1)
    update_readme(results, Path(args.readme))
    print("\n".join(markdown_section(results)))
    return results


if __name__ == "__main__":
    main()
