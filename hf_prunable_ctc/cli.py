"""Command line: `hf-prunable-ctc <command>` or `python -m hf_prunable_ctc <command>`.

examples:
  hf-prunable-ctc summary --model model_cards/prunable-ctc-small-synth
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --depth 4
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth speech.flac --json
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --rtf_budget 0.002 --json
  hf-prunable-ctc transcribe model_cards/prunable-ctc-small-synth data/demo/test --early_exit_threshold 0.9 --json
  hf-prunable-ctc export model_cards/prunable-ctc-small-synth onnx-4 --depth 4 --quantize int8
  hf-prunable-ctc prune model_cards/prunable-ctc-small-synth pruned-4 --depth 4
  hf-prunable-ctc publish runs/my-model runs/my-model-hub --repo_id you/my-model \\
      --card_info training/cards/reference.json --dry_run
"""

import argparse
import json
import os
import sys
from typing import Iterator, List, Optional

import torch

# Strategies that need no data; "greedy" and "svcca" search on labelled dev data: run
# training/evaluate_depths.py --store_schedule <strategy>, and the stored schedule becomes the model's default.
DATA_FREE_STRATEGIES = ("top", "uniform", "every_other")
STRATEGY_HELP = ("which layers a depth keeps: top (first k), uniform/every_other (evenly spaced); default: the "
                 "schedule stored in the model's config, else top. greedy and svcca need data: store their schedule "
                 "with training/evaluate_depths.py --store_schedule")
# What load_audio (libsndfile) decodes; other files in a folder (metadata.csv, README) are skipped.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


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


def transcribe_options(model, args) -> dict:
    """The model's keyword arguments for --depth/--strategy, --rtf_budget or --early_exit_threshold (at most one)."""
    chosen = [name for name in ("depth", "rtf_budget", "early_exit_threshold") if getattr(args, name) is not None]
    if len(chosen) > 1:
        raise CommandError(f"give at most one of --depth, --rtf_budget, --early_exit_threshold, got "
                           f"{', '.join('--' + name for name in chosen)}")
    if args.rtf_budget is not None:
        if args.strategy is not None:
            raise CommandError("--rtf_budget picks a depth of the model's stored schedule: drop --strategy")
        from .runtime.budget import depth_for_budget, profile_latency

        # Measured on this machine once, then cached next to a model folder (latency_profile.json).
        depth = depth_for_budget(model, rtf=args.rtf_budget, profile=profile_latency(model))
        print(f"--rtf_budget {args.rtf_budget:g}: depth {depth}", file=sys.stderr)
        return {"layers": model.pruning_schedule()[depth]}
    if args.early_exit_threshold is not None:
        if args.strategy is not None:
            raise CommandError("--early_exit_threshold exits at the model's intermediate-CTC layers: drop --strategy")
        return {"early_exit_threshold": args.early_exit_threshold}
    return {"layers": layers_for_depth(model, args.depth, args.strategy)}


def transcribe(args) -> int:
    from transformers import AutoFeatureExtractor, AutoTokenizer
    from tqdm.auto import tqdm

    from .data.audio import load_audio
    from .runtime.ctc_text import CTCTextDecoder

    model = load_model(args.model)
    source = resolve_model(args.model)
    extractor = AutoFeatureExtractor.from_pretrained(source)
    decode = CTCTextDecoder(AutoTokenizer.from_pretrained(source))  # the tokenizer's text, ~30x faster
    options = transcribe_options(model, args)
    fixed_depth = len(options["layers"]) if options.get("layers") else model.config.num_hidden_layers
    files = list(audio_files(args.audio))
    # Audio shorter than one output frame cannot yield a token: its transcript is empty, whatever the front end.
    min_samples = model.config.inputs_to_logits_ratio
    failed = 0
    for path in tqdm(files, desc="transcribing", unit="file", file=sys.stderr, disable=len(files) < 10):
        try:
            audio = load_audio(path, sampling_rate=extractor.sampling_rate)
            depth = fixed_depth
            if len(audio) < min_samples:
                text = ""
            else:
                inputs = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")
                with torch.no_grad():
                    out = model(inputs["input_features"], inputs["attention_mask"], **options)
                text = decode(out.logits[0].argmax(-1))
                if out.exit_depths is not None:
                    depth = int(out.exit_depths[0])
        except (ValueError, OSError, RuntimeError) as error:
            failed += 1
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": str(error)}), flush=True)
            continue
        print(json.dumps({"path": path, "text": text, "depth": depth}) if args.json else f"{path}\t{text}",
              flush=True)
    if failed:
        print(f"error: {failed} of {len(files)} files could not be transcribed", file=sys.stderr)
        return 2
    return 0


def export(args) -> None:
    from .runtime.export import export_onnx

    result = export_onnx(resolve_model(args.model), args.output_dir, depth=args.depth, quantize=args.quantize)
    difference = result["max_abs_diff"]
    print(f"wrote {result['path']} ({result['size_bytes']:,d} bytes, depth {result['depth']}, "
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
                            strategy=args.strategy, dry_run=args.dry_run)
    for name, size in result["files"].items():
        print(f"{size:>12,d}  {name}")
    print(outcome(result))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-prunable-ctc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
                                        "--json). Files that fail get an error line on stderr; the exit code is 2 "
                                        "if any failed.\nexample: hf-prunable-ctc transcribe "
                                        "model_cards/prunable-ctc-small-synth data/demo/test --depth 4",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="saved model folder or Hub id")
    p.add_argument("audio", nargs="+", help="audio files, or folders searched recursively for audio files")
    p.add_argument("--depth", type=int, help="number of layers to run (default: all)")
    p.add_argument("--strategy", choices=DATA_FREE_STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--rtf_budget", type=float, help="seconds of compute per audio second: run the deepest depth "
                   "within it (profiled on this machine once, cached in the model folder as latency_profile.json)")
    p.add_argument("--early_exit_threshold", type=float, help="stop each file at the first intermediate-CTC layer "
                   "whose confidence (mean max posterior over non-blank frames, 0..1) reaches this; 0 = first "
                   "intermediate layer, above 1 = full depth")
    p.add_argument("--json", action="store_true", help='print JSON lines {"path", "text", "depth"} (depth: layers '
                   'run for that file) or {"path", "error"}')
    p.set_defaults(run=transcribe)

    p = commands.add_parser("export", help="export a model at a depth to ONNX (optionally int8), checked against "
                                           "PyTorch",
                            description="Write OUT_DIR/model.onnx (inputs input_features, attention_mask; output "
                                        "logits; dynamic batch and time) with the tokenizer and feature-extractor "
                                        "files beside it, and print the largest difference from PyTorch on a padded "
                                        "batch. Needs onnx, onnxscript and onnxruntime.\nexample: hf-prunable-ctc "
                                        "export model_cards/prunable-ctc-small-synth onnx-4 --depth 4 --quantize int8",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="saved model folder")
    p.add_argument("output_dir", help="folder to write model.onnx and the processor files to (created if missing)")
    p.add_argument("--depth", type=int, help="layers to keep, by the model's pruning schedule (default: all)")
    p.add_argument("--quantize", choices=["int8"], help="int8 dynamic quantisation of the weights")
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
    p.set_defaults(run=publish)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
