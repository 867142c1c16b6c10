"""Command line: `hf-prunable-ctc <command>` or `python -m hf_prunable_ctc <command>`.

    summary     per-depth parameters and output shapes of a saved model (or a random one from a config)
    transcribe  transcribe audio files at a chosen depth
    prune       prune a saved model to a depth and save it (weights shrink in proportion)
    publish     write a Hub repo folder (weights, code, processor, model card with per-depth results) and upload
                it when a token and the network are there (--dry_run: write and describe only)
"""

import argparse
import json
import os
import sys
from typing import List, Optional

import torch


def load_model(path: str):
    from . import PrunableCTCForCTC

    return PrunableCTCForCTC.from_pretrained(path).eval()


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


def transcribe(args) -> None:
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from .audio import load_audio

    model = load_model(args.model)
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    layers = model.pruning_schedule(args.strategy)[args.depth] if args.depth else None
    for path in args.audio:
        audio = load_audio(path, sampling_rate=extractor.sampling_rate)
        inputs = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            ids = model(inputs["input_features"], inputs["attention_mask"], layers=layers).logits.argmax(-1)[0]
        print(f"{path}\t{tokenizer.decode(ids.tolist())}")


def prune(args) -> None:
    import shutil

    model = load_model(args.model)
    before = model.config.num_hidden_layers
    model.prune_to(args.depth, strategy=args.strategy)
    model.save_pretrained(args.output_dir)
    for name in os.listdir(args.model):  # tokenizer, feature extractor, card: everything but the model itself
        if name.endswith((".json", ".txt", ".md", ".png")) and name not in ("config.json",) and \
                not os.path.exists(os.path.join(args.output_dir, name)):
            shutil.copy(os.path.join(args.model, name), args.output_dir)
    print(f"pruned {before} -> {args.depth} layers (kept original layers {model.config.kept_layers}); "
          f"saved to {args.output_dir}")


def publish(args) -> None:
    from .publish import outcome, publish as publish_folder

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
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("summary", help="per-depth parameters and output shapes")
    p.add_argument("--model", help="saved model folder; default: a random model")
    p.add_argument("--config", help="JSON of PrunableCTCConfig fields for the random model")
    p.add_argument("--strategy", help="pruning strategy (default: the model's schedule, else top)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the random input, seconds")
    p.set_defaults(run=summary)

    p = commands.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("model")
    p.add_argument("audio", nargs="+")
    p.add_argument("--depth", type=int, help="number of layers to run (default: all)")
    p.add_argument("--strategy", help="which layers a depth keeps (default: the model's schedule, else top)")
    p.set_defaults(run=transcribe)

    p = commands.add_parser("prune", help="prune a saved model and save the smaller one")
    p.add_argument("model")
    p.add_argument("output_dir")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--strategy")
    p.set_defaults(run=prune)

    p = commands.add_parser("publish", help="write (and upload) a Hub repo folder with a model card")
    p.add_argument("model", help="trained model folder (with depth_report.json or per_depth_metrics.json)")
    p.add_argument("output_dir")
    p.add_argument("--repo_id", required=True)
    p.add_argument("--card_info", required=True, help="JSON: model_name, dataset_name, dataset_type, "
                   "training_command, and optionally summary, training, limitations, datasets, license")
    p.add_argument("--depth", type=int, help="publish a variant pruned to this depth")
    p.add_argument("--strategy", help="strategy choosing the layers of --depth (default: the stored schedule)")
    p.add_argument("--dry_run", action="store_true")
    p.set_defaults(run=publish)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
