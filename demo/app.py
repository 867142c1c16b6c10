"""A browser demo of a prunable CTC model: the same model transcribing at every depth, with the time each took.

    python demo/app.py                                   # model_cards/prunable-ctc-small-synth on 127.0.0.1:7860
    python demo/app.py --model path/or/hub-id --port 8000
    python demo/app.py --check                           # no browser: every depth on one bundled clip, then exit

The model-calling logic lives in small functions (`load_demo_model`, `featurize`, `run_depth`, `transcribe`,
`compare_depths`, `depth_results_table`, and `stream_piece`/`finish_stream` for the microphone stream) that tests
call without a browser; `build_ui` only wires them to Gradio, which is imported there and nowhere else, so this
module imports without Gradio installed.

The same file runs as a Hugging Face Space (see demo/README.md): there the Space sets GRADIO_SERVER_NAME/PORT, and
the model comes from the PRUNABLE_CTC_MODEL variable, a `model/` folder next to this file, or the repository's
model card folder, in that order.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

# Gradio reports usage to its servers unless told not to; the demo must run offline (tests, air-gapped devices).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import torch

APP_DIR = Path(__file__).resolve().parent
CLIPS_DIR = APP_DIR / "clips"
MODEL_ENV = "PRUNABLE_CTC_MODEL"
# Where the model comes from when no --model is given: a Space keeps it in model/ beside app.py, a checkout in
# model_cards/.
DEFAULT_MODEL_FOLDERS = (APP_DIR / "model", APP_DIR.parent / "model_cards" / "prunable-ctc-small-synth")

try:
    import hf_prunable_ctc  # registers the model with the Auto classes; in a Space, the copy next to app.py
except ImportError:  # a checkout that did not install the package
    sys.path.insert(0, str(APP_DIR.parent))
    import hf_prunable_ctc  # noqa: F401
from hf_prunable_ctc.data.audio import load_audio  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# Model and results
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class DemoModel:
    """A loaded model with everything the page needs.

    `schedule` maps each depth 1..L to the (1-based) layers it runs (`model.pruning_schedule()`); `results` is
    `hf_prunable_ctc.hub.model_card.depth_results` of the folder (WER/CER per depth, RTF when a depth report exists)
    or None when the folder has neither depth_report.json nor per_depth_metrics.json.
    """

    name: str
    folder: str
    model: Any
    feature_extractor: Any
    tokenizer: Any
    schedule: dict[int, list[int]]
    results: Optional[dict]
    # Seconds per audio second at each depth on this machine (hf_prunable_ctc.runtime.budget.profile_latency),
    # measured on the first RTF-budget request.
    latency_profile: Optional[dict] = None

    @property
    def max_depth(self) -> int:
        return max(self.schedule)


@dataclass
class Transcription:
    """One transcription at one depth. Times in milliseconds; RTFs are processing seconds per audio second.

    `feature_ms` is the log-mel front end, `model_ms` the forward pass (median of the repeats), `total_ms`
    features + model + greedy decoding, i.e. decoded samples in, text out (file decoding is not counted: it
    depends on the container, not on the model).
    """

    depth: int
    layers: list[int]
    text: str
    audio_seconds: float
    feature_ms: float
    model_ms: float
    total_ms: float

    @property
    def rtf(self) -> float:
        """End-to-end real-time factor (features + model + decoding)."""
        return self.total_ms / 1000.0 / self.audio_seconds

    @property
    def model_rtf(self) -> float:
        """Model-only real-time factor, the number the model card's RTF chart shows."""
        return self.model_ms / 1000.0 / self.audio_seconds


def default_model() -> str:
    """The model to load without --model: $PRUNABLE_CTC_MODEL, else the first existing default folder."""
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    for folder in DEFAULT_MODEL_FOLDERS:
        if folder.is_dir():
            return str(folder)
    raise FileNotFoundError(
        f"no model given and none of {[str(f) for f in DEFAULT_MODEL_FOLDERS]} exists: pass --model FOLDER_OR_HUB_ID "
        f"or set {MODEL_ENV}")


def resolve_model_folder(name: str) -> str:
    """A local folder for `name`: the folder itself, or a Hub model id downloaded (or read from the cache)."""
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise ValueError(f"--model {name!r} is a file; give the folder that holds config.json and the weights")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name)
    except Exception as error:  # the Hub raises several types (bad id, offline, missing repo); one message here
        raise ValueError(f"--model {name!r} is neither a folder nor a Hub model id that could be downloaded "
                         f"({type(error).__name__}: {error})") from error


def load_demo_model(name: str, warm_up: bool = True) -> DemoModel:
    """Load model, feature extractor, tokenizer, pruning schedule and per-depth results from a folder or Hub id.

    `warm_up` runs one second of noise through the full model so that the first timing shown is not the
    allocator's. Raises ValueError when `name` cannot be found or is not a prunable CTC model.
    """
    from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

    folder = resolve_model_folder(name)
    model = AutoModelForCTC.from_pretrained(folder).eval()
    if not hasattr(model, "pruning_schedule"):
        raise ValueError(f"{name} holds a {type(model).__name__}, not a prunable CTC model (no pruning_schedule)")
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    schedule = {int(depth): list(layers) for depth, layers in model.pruning_schedule().items()}
    demo = DemoModel(name=name, folder=folder, model=model, feature_extractor=feature_extractor, tokenizer=tokenizer,
                     schedule=schedule, results=read_depth_results(folder, schedule))
    if warm_up:
        noise = np.random.default_rng(0).normal(0.0, 0.1, feature_extractor.sampling_rate).astype(np.float32)
        transcribe(demo, noise, demo.max_depth)
    return demo


def read_depth_results(folder: str, schedule: dict[int, list[int]]) -> Optional[dict]:
    """The model card's per-depth results for `schedule` (depth_report.json, else per_depth_metrics.json), or None.

    Returns {"split", "dataset", "hardware", "rows": [{"depth", "layers", "wer", "cer", "parameters", "rtf"?}]}.
    """
    from hf_prunable_ctc.hub.model_card import depth_results

    try:
        results = depth_results(folder, schedule)
    except FileNotFoundError:
        return None
    return results if results["rows"] else None


def depth_results_table(demo: DemoModel):
    """The chart's data as a pandas DataFrame: one row per depth with `depth`, `WER %` and, from a depth report,
    `RTF` (model only, batch 1, on the hardware the report names). None without results. `depth` is a string
    column ("1", "2", ...), in depth order."""
    import pandas as pd

    if demo.results is None:
        return None
    # Depth as text: the chart then labels whole depths only (a numeric axis would add 1.5, 2.5, ...).
    rows = [{"depth": str(row["depth"]), "WER %": row["wer"], **({"RTF": row["rtf"]} if "rtf" in row else {})}
            for row in demo.results["rows"]]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Transcription
# ----------------------------------------------------------------------------------------------------------------

def load_clip(audio: Any, demo: DemoModel) -> np.ndarray:
    """Decode `audio` (a path, bytes, or {"array", "sampling_rate"}) to mono float32 at the extractor's rate."""
    return load_audio(audio, sampling_rate=demo.feature_extractor.sampling_rate)


def featurize(demo: DemoModel, samples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Log-mel features of `samples` (num_samples,) with the model folder's extractor.

    Returns `input_features` (1, frames, mel bins), `attention_mask` (1, frames) and the milliseconds it took.
    """
    extractor = demo.feature_extractor
    start = time.perf_counter()
    with np.errstate(divide="ignore", invalid="ignore"):  # silent audio: reported below as one clear error
        inputs = extractor(samples, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if not torch.isfinite(inputs["input_features"]).all():
        raise ValueError("the features of this audio are not finite: it is too short or silent; record or upload "
                         "at least a second of speech")
    return inputs["input_features"], inputs["attention_mask"], elapsed_ms


def check_depth(demo: DemoModel, depth: int) -> int:
    """`depth` as an int after checking it is one of the schedule's depths; ValueError naming the range if not."""
    if isinstance(depth, float) and depth.is_integer():
        depth = int(depth)  # Gradio sliders deliver floats
    if not isinstance(depth, int) or depth not in demo.schedule:
        raise ValueError(f"depth must be a whole number from 1 to {demo.max_depth}, got {depth!r}")
    return depth


def run_depth(demo: DemoModel, features: torch.Tensor, attention_mask: torch.Tensor, depth: int,
              repeats: int = 3) -> tuple[list[int], int, float]:
    """Greedy CTC ids of one utterance at `depth` (the schedule's layers for it).

    Returns (token ids over output frames, depth used, median forward milliseconds over `repeats` runs after a
    warm-up). The median, because the machine running a demo is rarely idle and one run is noisy.
    """
    depth = check_depth(demo, depth)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    layers = demo.schedule[depth]
    output, model_ms = timed_forward(lambda: demo.model(features, attention_mask, layers=layers), repeats)
    return output.logits.argmax(-1)[0].tolist(), depth, model_ms


def timed_forward(forward, repeats: int):
    """`forward()`'s output and its median milliseconds over `repeats` calls, after one untimed call: the first call
    at a depth pays for memory the others reuse, and would make that depth look slower than the deeper ones."""
    with torch.inference_mode():
        forward()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            output = forward()
            times.append((time.perf_counter() - start) * 1000.0)
    return output, statistics.median(times)


def check_threshold(threshold: Any) -> float:
    """`threshold` as a float in [0, 1.01] (above 1 = never exit early); ValueError naming the range if not."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1.01:
        raise ValueError(f"early-exit threshold must be a number from 0 to 1 (above 1: full depth), got {threshold!r}")
    return float(threshold)


def run_early_exit(demo: DemoModel, features: torch.Tensor, attention_mask: torch.Tensor, threshold: float,
                   repeats: int = 3) -> tuple[list[int], int, float]:
    """Greedy CTC ids of one utterance with early exit at `threshold` (see `PrunableCTCForCTC.forward`).

    Returns (token ids over output frames, depth the utterance stopped at, median forward milliseconds).
    """
    threshold = check_threshold(threshold)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    output, model_ms = timed_forward(lambda: demo.model(features, attention_mask, early_exit_threshold=threshold),
                                     repeats)
    return output.logits.argmax(-1)[0].tolist(), int(output.exit_depths[0]), model_ms


def depth_for_rtf_budget(demo: DemoModel, rtf: float) -> int:
    """The deepest depth whose model-only RTF on this machine is within `rtf` (seconds per audio second).

    The latency profile is measured once (a few seconds), kept on `demo` and cached in the user's cache folder
    (`hf_prunable_ctc.runtime.budget`; never in the model folder); a budget below the cheapest depth raises
    ValueError naming that depth and its RTF.
    """
    from hf_prunable_ctc.runtime.budget import depth_for_budget, profile_latency

    if demo.latency_profile is None:
        demo.latency_profile = profile_latency(demo.model)
    return depth_for_budget(demo.model, rtf=rtf, profile=demo.latency_profile)


def transcribe(demo: DemoModel, audio: Any, depth: int, repeats: int = 3,
               early_exit_threshold: Optional[float] = None) -> Transcription:
    """Transcribe `audio` (samples at the extractor's rate, a path, bytes or {"array", "sampling_rate"}) at `depth`,
    or, with `early_exit_threshold`, at the depth where the model is confident enough (`depth` is then ignored and
    the result's `depth` is the one used).

    Raises ValueError for a depth outside the schedule or audio too short/silent for features, and
    `hf_prunable_ctc.data.audio.AudioDecodingError` (a ValueError) for a file that cannot be decoded.
    """
    if early_exit_threshold is None:
        depth = check_depth(demo, depth)
    else:
        check_threshold(early_exit_threshold)
    samples = audio if isinstance(audio, np.ndarray) else load_clip(audio, demo)
    features, attention_mask, feature_ms = featurize(demo, samples)
    return _transcribe_features(demo, features, attention_mask, feature_ms, len(samples), depth, repeats,
                                early_exit_threshold)


def _transcribe_features(demo, features, attention_mask, feature_ms, num_samples, depth, repeats,
                         early_exit_threshold=None) -> Transcription:
    if early_exit_threshold is None:
        ids, depth, model_ms = run_depth(demo, features, attention_mask, depth, repeats)
    else:
        ids, depth, model_ms = run_early_exit(demo, features, attention_mask, early_exit_threshold, repeats)
    start = time.perf_counter()
    text = demo.tokenizer.decode(ids)
    decode_ms = (time.perf_counter() - start) * 1000.0
    return Transcription(depth=depth, layers=demo.schedule[depth], text=text,
                         audio_seconds=num_samples / demo.feature_extractor.sampling_rate,
                         feature_ms=feature_ms, model_ms=model_ms, total_ms=feature_ms + model_ms + decode_ms)


def compare_depths(demo: DemoModel, audio: Any, depths: Optional[Sequence[int]] = None,
                   repeats: int = 3) -> list[Transcription]:
    """Transcribe one clip at every depth of the schedule (or at `depths`), shallowest first.

    The features are computed once and their time is counted in every depth's end-to-end time, as if each depth
    had been asked for alone.
    """
    samples = audio if isinstance(audio, np.ndarray) else load_clip(audio, demo)
    depths = sorted(demo.schedule) if depths is None else sorted(check_depth(demo, d) for d in depths)
    features, attention_mask, feature_ms = featurize(demo, samples)
    return [_transcribe_features(demo, features, attention_mask, feature_ms, len(samples), depth, repeats)
            for depth in depths]


def comparison_table(results: Sequence[Transcription], reference: Optional[str] = None):
    """Rows for the "compare all depths" table as a pandas DataFrame (one per depth), with each depth's WER
    against `reference` when one is given."""
    import pandas as pd

    rows = []
    for result in results:
        row = {"depth": result.depth, "layers": format_layers(result.layers), "transcript": result.text}
        if reference:
            from hf_prunable_ctc.evaluation.metrics import word_error_rate

            row["WER %"] = round(100.0 * word_error_rate([reference], [result.text]), 1)
        row |= {"model ms": round(result.model_ms, 1), "end-to-end ms": round(result.total_ms, 1),
                "RTF": round(result.rtf, 4)}
        rows.append(row)
    return pd.DataFrame(rows)


def format_layers(layers: Sequence[int]) -> str:
    """`[1, 2, 3, 5]` -> "1-3, 5": the layers a depth runs, short enough for a table cell."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(parts)


def format_timing(result: Transcription, max_depth: int) -> str:
    """One line for the page: depth used, its layers, the times and both real-time factors."""
    return (f"depth {result.depth} of {max_depth} (layers {format_layers(result.layers)}) · "
            f"model {result.model_ms:.1f} ms · features {result.feature_ms:.1f} ms · "
            f"end to end {result.total_ms:.1f} ms for {result.audio_seconds:.2f} s of audio · "
            f"RTF {result.rtf:.4f} (model only {result.model_rtf:.4f}) · CPU, {torch.get_num_threads()} threads")


# ----------------------------------------------------------------------------------------------------------------
# Streaming from the microphone
# ----------------------------------------------------------------------------------------------------------------

# How often the browser sends the audio recorded since its last send, and the longest a stream may run (each one
# holds the page's single worker while it records).
STREAM_EVERY_S = 0.25
STREAM_TIME_LIMIT_S = 120


@dataclass
class StreamSession:
    """One visitor's microphone stream: the recogniser with its caches, and a resampler from the browser's rate
    (which is rarely the model's) that keeps its own state across pieces."""

    recognizer: Any
    sampling_rate: int
    resampler: Any
    last_piece_ms: float = 0.0


def streaming_problems(demo: DemoModel) -> list[str]:
    """Why the loaded model cannot stream (empty when it can), as `hf-prunable-ctc transcribe --stream` says it."""
    from hf_prunable_ctc.runtime.chunked_stream import streaming_problems as problems

    return problems(demo.model.config, demo.feature_extractor)


def new_stream_session(demo: DemoModel, sampling_rate: int) -> StreamSession:
    """A stream at the model's default chunk (`hf-prunable-ctc transcribe --stream`'s), for audio at `sampling_rate`."""
    import soxr

    from hf_prunable_ctc.cli import default_stream_chunk_ms
    from hf_prunable_ctc.runtime.streaming import StreamingRecognizer

    problems = streaming_problems(demo)
    if problems:
        raise ValueError(f"this model cannot stream: {'; '.join(problems)}")
    chunk_ms = default_stream_chunk_ms(demo.model.config, demo.feature_extractor)
    recognizer = StreamingRecognizer(demo.model, (demo.feature_extractor, demo.tokenizer), chunk_ms=chunk_ms)
    rate = demo.feature_extractor.sampling_rate
    resampler = None if sampling_rate == rate else soxr.ResampleStream(sampling_rate, rate, 1, dtype="float32")
    return StreamSession(recognizer=recognizer, sampling_rate=sampling_rate, resampler=resampler)


def stream_samples(session: StreamSession, audio: tuple[int, np.ndarray], last: bool = False) -> np.ndarray:
    """One piece from the browser, `(rate, samples)` with int16 (or float) samples, 1-D or (samples, channels), as
    mono float32 at the model's rate."""
    rate, samples = audio
    if rate != session.sampling_rate:
        raise ValueError(f"the microphone's rate changed from {session.sampling_rate} to {rate} Hz mid-stream")
    samples = load_audio({"array": np.asarray(samples), "sampling_rate": rate}, sampling_rate=rate)
    if session.resampler is None:
        return samples
    return session.resampler.resample_chunk(samples, last=last)


def stream_piece(demo: DemoModel, session: Optional[StreamSession], audio: Optional[tuple[int, np.ndarray]],
                 depth: int) -> tuple[Optional[StreamSession], str, str]:
    """Decode the next microphone piece at `depth` (the slider's value now, so moving it changes the depth from the
    next chunk on). Returns the session (a new one at the start of a recording), the partial transcript and the
    status line."""
    depth = check_depth(demo, depth)
    if audio is None:
        return session, stream_text(session), stream_status(demo, session)
    if session is not None and session.recognizer.finished:
        # A piece that arrives after the recording was finalised: its transcript is already final.
        return session, session.recognizer.transcript, stream_status(demo, session)
    session = new_stream_session(demo, audio[0]) if session is None else session
    samples = stream_samples(session, audio)
    start = time.perf_counter()
    text = session.recognizer.accept(samples, num_layers=depth)
    session.last_piece_ms = (time.perf_counter() - start) * 1000.0
    return session, text, stream_status(demo, session)


def finish_stream(demo: DemoModel, session: Optional[StreamSession], depth: int
                  ) -> tuple[Optional[StreamSession], str, str]:
    """End the recording: decode what is left (the last, shorter chunk) at `depth`; returns the final transcript."""
    depth = check_depth(demo, depth)
    if session is None or session.recognizer.finished:
        return session, stream_text(session), stream_status(demo, session)
    tail = (np.zeros(0, dtype=np.float32) if session.resampler is None
            else session.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    start = time.perf_counter()
    session.recognizer.accept(tail, num_layers=depth)
    text = session.recognizer.finalize(num_layers=depth)
    session.last_piece_ms = (time.perf_counter() - start) * 1000.0
    return session, text, stream_status(demo, session)


def stream_text(session: Optional[StreamSession]) -> str:
    return "" if session is None else session.recognizer.transcript


def stream_status(demo: DemoModel, session: Optional[StreamSession]) -> str:
    """The depth of the last chunk, the depths of all chunks so far in runs ("8×3, 2×5"), and the time taken."""
    if session is None or not session.recognizer.chunk_layers:
        return "waiting for the first chunk"
    recognizer = session.recognizer
    depths, runs = recognizer.chunk_depths, []
    for depth in depths:
        if runs and runs[-1][0] == depth:
            runs[-1][1] += 1
        else:
            runs.append([depth, 1])
    heard = recognizer.position * demo.model.config.inputs_to_logits_ratio / demo.feature_extractor.sampling_rate
    state = "final" if recognizer.finished else "streaming"
    return (f"{state} · last chunk: depth {depths[-1]} of {demo.max_depth} "
            f"(layers {format_layers(recognizer.chunk_layers[-1])}) · {len(depths)} chunks of "
            f"{recognizer.chunk_ms} ms, {heard:.2f} s decoded · depth per chunk: "
            f"{', '.join(f'{depth}×{count}' for depth, count in runs)} · "
            f"{session.last_piece_ms:.1f} ms for the last piece")


# ----------------------------------------------------------------------------------------------------------------
# Bundled clips
# ----------------------------------------------------------------------------------------------------------------

def bundled_clips(clips_dir: Path = CLIPS_DIR) -> dict[str, dict[str, str]]:
    """Bundled clips from `clips_dir/metadata.csv`: {file name: {"path", "transcription", "speaker"}}."""
    metadata = clips_dir / "metadata.csv"
    if not metadata.exists():
        return {}
    with open(metadata, newline="") as f:
        return {row["file_name"]: {"path": str(clips_dir / row["file_name"]), "transcription": row["transcription"],
                                   "speaker": row["speaker"]} for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------

def build_ui(demo: DemoModel):
    """The Gradio page for `demo` (a `gr.Blocks`; call `.launch()` on it)."""
    import gradio as gr

    clips = bundled_clips()
    table = depth_results_table(demo)

    def on_clip(name):
        if not name:
            return gr.update(), gr.update()
        return clips[name]["path"], clips[name]["transcription"]

    def on_transcribe(audio_path, depth, early_exit, threshold):
        if not audio_path:
            return "", ""
        try:
            result = transcribe(demo, audio_path, depth, early_exit_threshold=threshold if early_exit else None)
        except ValueError as error:  # undecodable file, too short, silent: say so on the page
            raise gr.Error(str(error)) from error
        prefix = f"early exit at confidence {threshold:g}: " if early_exit else ""
        return result.text, prefix + format_timing(result, demo.max_depth)

    def on_budget(rtf):
        try:
            return depth_for_rtf_budget(demo, rtf)
        except ValueError as error:  # below the cheapest depth: say which depth is cheapest
            raise gr.Error(str(error)) from error

    def on_compare(audio_path, reference):
        if not audio_path:
            raise gr.Error("upload, record or pick a clip first")
        try:
            results = compare_depths(demo, audio_path)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        return comparison_table(results, reference.strip() or None)

    with gr.Blocks(title="Prunable CTC: one model, every depth") as page:
        gr.Markdown(
            f"# One speech recognizer, every depth\n"
            f"`{display_name(demo.name)}` keeps working when its encoder is cut to fewer layers. Pick a depth and "
            f"hear the trade-off between accuracy and time; **Compare all depths** runs one clip through all "
            f"{demo.max_depth} depths of the model's pruning schedule, and, for a chunk-aware model, **Stream from "
            f"the microphone** transcribes as you speak, at the depth the slider holds on each chunk.")
        with gr.Tab("Transcribe a clip", id="clip-tab", elem_id="clip-tab"):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                                     elem_id="audio")
                    clip = gr.Dropdown(choices=list(clips), value=None, label="…or a bundled clip (unseen voices)",
                                       elem_id="clip")
                    reference = gr.Textbox(label="Reference transcript (bundled clips; optional)", elem_id="reference")
                    depth = gr.Slider(1, demo.max_depth, value=demo.max_depth, step=1, label="Depth (encoder layers)",
                                      elem_id="depth")
                    # The budget sets the depth slider; its change event then transcribes.
                    budget = gr.Slider(0.0005, 0.02, value=0.02, step=0.0005, elem_id="rtf-budget",
                                       label="…or an RTF budget (model seconds per audio second, this machine)")
                    with gr.Row():
                        early_exit = gr.Checkbox(value=False, label="Early exit (stop when confident; ignores depth)",
                                                 elem_id="early-exit")
                        threshold = gr.Slider(0.0, 1.01, value=0.9, step=0.01, label="Confidence threshold",
                                              elem_id="early-exit-threshold")
                    with gr.Row():
                        transcribe_button = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
                        compare_button = gr.Button("Compare all depths", elem_id="compare")
                with gr.Column():
                    transcript = gr.Textbox(label="Transcript", lines=2, interactive=False, elem_id="transcript")
                    timing = gr.Textbox(label="Depth used and time", lines=2, interactive=False, elem_id="timing")
                    if table is None:
                        gr.Markdown("No per-depth results in the model folder (depth_report.json or "
                                    "per_depth_metrics.json), so no chart.")
                    else:
                        # The corpus by its own name, not the folder it had on the machine that evaluated it.
                        where = f"{Path(demo.results['dataset']).name}, {demo.results['split']} split"
                        order = list(table["depth"])
                        gr.LinePlot(table, x="depth", y="WER %", title=f"WER per depth ({where})", height=220,
                                    sort=order, elem_id="wer-chart")
                        if "RTF" in table:
                            gr.LinePlot(table, x="depth", y="RTF", height=220, sort=order, elem_id="rtf-chart",
                                        title=f"RTF per depth (model card: model only, batch 1, "
                                              f"{demo.results['hardware']})")
            comparison = gr.Dataframe(label="All depths", wrap=True, interactive=False, elem_id="comparison")
        with gr.Tab("Stream from the microphone", id="stream-tab", elem_id="stream-tab"):
            build_stream_tab(gr, demo)

        clip.change(on_clip, inputs=clip, outputs=[audio, reference])
        # Own uploads and recordings have no reference transcript.
        audio.upload(lambda: (None, ""), outputs=[clip, reference])
        audio.stop_recording(lambda: (None, ""), outputs=[clip, reference])
        budget.release(on_budget, inputs=budget, outputs=depth)
        for event in (audio.change, depth.change, transcribe_button.click, early_exit.change, threshold.release):
            event(on_transcribe, inputs=[audio, depth, early_exit, threshold], outputs=[transcript, timing])
        compare_button.click(on_compare, inputs=[audio, reference], outputs=comparison)
    # One request at a time: requests running side by side would share the CPU and spoil each other's timings.
    page.queue(default_concurrency_limit=1)
    return page


def build_stream_tab(gr, demo: DemoModel) -> None:
    """The microphone tab: a live partial transcript at the depth the slider holds on each chunk, or, for a model
    that cannot stream, why the tab has no microphone."""
    problems = streaming_problems(demo)
    if problems:
        gr.Markdown(f"Streaming needs a chunk-aware model (trained for chunked attention, with a causal convolution "
                    f"and global CMVN: see docs/streaming.md), and `{display_name(demo.name)}` cannot stream: "
                    f"{'; '.join(problems)}.", elem_id="stream-unavailable")
        return
    from hf_prunable_ctc.cli import default_stream_chunk_ms

    chunk_ms = default_stream_chunk_ms(demo.model.config, demo.feature_extractor)
    gr.Markdown(f"Speak: the transcript grows one {chunk_ms} ms chunk at a time. The depth slider is read on every "
                f"chunk, so moving it while you speak changes the depth of the chunks that follow.")
    with gr.Row():
        with gr.Column():
            microphone = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                                  elem_id="microphone")
            depth = gr.Slider(1, demo.max_depth, value=demo.max_depth, step=1, label="Depth (encoder layers)",
                              elem_id="stream-depth")
        with gr.Column():
            transcript = gr.Textbox(label="Partial transcript", lines=3, interactive=False,
                                    elem_id="stream-transcript")
            status = gr.Textbox(label="Depth used", lines=2, interactive=False, elem_id="stream-status")
    session = gr.State(None)  # one StreamSession per visitor, replaced at each new recording

    def on_piece(audio, session, depth):
        try:
            return stream_piece(demo, session, audio, depth)
        except ValueError as error:  # NaN samples, a rate change mid-stream: say so on the page
            raise gr.Error(str(error)) from error

    def on_stop(session, depth):
        return finish_stream(demo, session, depth)

    microphone.start_recording(lambda: (None, "", ""), outputs=[session, transcript, status])
    microphone.stream(on_piece, inputs=[microphone, session, depth], outputs=[session, transcript, status],
                      stream_every=STREAM_EVERY_S, time_limit=STREAM_TIME_LIMIT_S)
    microphone.stop_recording(on_stop, inputs=[session, depth], outputs=[session, transcript, status])


def display_name(name: str) -> str:
    """What the page calls the model: a folder's own name (not the path on this machine), or the Hub id."""
    return Path(name).name if os.path.isdir(name) else name


def launch(page, host: str, port: int, block: bool = True):
    """Serve `page` on `host`:`port` with the demo's settings: no share link, no server-side rendering (needs
    Node), system fonts, the bundled clips servable. `block=False` returns at once (tests)."""
    page.launch(server_name=host, server_port=port, share=False, ssr_mode=False, theme=page_theme(),
                allowed_paths=[str(CLIPS_DIR)], footer_links=[], prevent_thread_lock=not block, quiet=not block)


def page_theme():
    """Gradio's default look with system fonts only, so the page fetches nothing from font servers."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help=f"model folder or Hub id (default: ${MODEL_ENV}, else demo/model/, else "
                             "model_cards/prunable-ctc-small-synth)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    parser.add_argument("--check", action="store_true",
                        help="load the model, transcribe the first bundled clip at every depth, print and exit "
                             "(needs no Gradio)")
    return parser


def check(demo: DemoModel) -> int:
    """Print every depth's transcript and timing of the first bundled clip; exit status 0 if all depths ran."""
    clips = bundled_clips()
    if not clips:
        print(f"no bundled clips in {CLIPS_DIR}", file=sys.stderr)
        return 1
    name, clip = next(iter(clips.items()))
    print(f"{demo.name}: {name}, reference {clip['transcription']!r}")
    table = comparison_table(compare_depths(demo, clip["path"]), clip["transcription"])
    print(table.to_string(index=False))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        demo = load_demo_model(args.model or default_model())
    except (ValueError, FileNotFoundError) as error:  # a wrong --model: one line, not a traceback
        parser.error(str(error))
    if args.check:
        return check(demo)
    launch(build_ui(demo), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
