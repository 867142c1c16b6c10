#!/usr/bin/env python
"""Per-depth report of a trained checkpoint: WER, CER, parameters and RTF for every strategy and depth, plus plots.

    python training/evaluate_depths.py --model runs/demo --dataset_name audiofolder --data_dir data/demo \
        --split test --search_split validation --output_dir runs/demo/report

Data-driven strategies (greedy, svcca) search on `--search_split` (never the split being reported) and the
resulting schedules are written next to the report; `--store_schedule greedy` also saves one into the model's
config so `prune_to(k)` uses it by default.
"""

import argparse
import json
import os

import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.depth_report import build_depth_report, svcca_of_layers, write_depth_report
from hf_prunable_ctc.pruning_search import store_schedule
from hf_prunable_ctc.speech_data import collated_batches, load_prepared_split

DATA_DRIVEN = ("greedy", "svcca")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved model folder (with tokenizer and feature extractor)")
    parser.add_argument("--dataset_name", default="audiofolder")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--data_dir")
    parser.add_argument("--split", default="test", help="split the report measures")
    parser.add_argument("--search_split", default="validation", help="dev split for greedy / svcca")
    parser.add_argument("--audio_column_name", default="audio")
    parser.add_argument("--text_column_name", default="transcription")
    parser.add_argument("--strategies", default="top,uniform,greedy,svcca")
    parser.add_argument("--max_eval_samples", type=int)
    parser.add_argument("--max_search_samples", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rtf_utterances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--greedy_criterion", choices=("loss", "wer"), default="loss",
                        help="what greedy search minimises on --search_split: final CTC loss or greedy WER")
    parser.add_argument("--store_schedule", choices=DATA_DRIVEN + ("top", "uniform"),
                        help="save this strategy's schedule into the model's config (in --model)")
    parser.add_argument("--output_dir", required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = PrunableCTCForCTC.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    data = dict(data_dir=args.data_dir, dataset_config_name=args.dataset_config_name,
                audio_column=args.audio_column_name, text_column=args.text_column_name)

    dataset, report = load_prepared_split(args.dataset_name, args.split, extractor, tokenizer,
                                          max_samples=args.max_eval_samples, **data)
    print(report.summary(args.split))
    batches = collated_batches(dataset, extractor, tokenizer, args.batch_size)

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    search_batches = None
    if any(s in DATA_DRIVEN for s in strategies):
        search_set, search_report = load_prepared_split(args.dataset_name, args.search_split, extractor, tokenizer,
                                                        max_samples=args.max_search_samples, **data)
        print(search_report.summary(args.search_split))
        search_batches = collated_batches(search_set, extractor, tokenizer, args.batch_size)
    schedules = {}
    for strategy in strategies:
        kwargs = {"batches": search_batches, "progress": True} if strategy in DATA_DRIVEN else {}
        if strategy == "greedy":
            kwargs.update(criterion=args.greedy_criterion, tokenizer=tokenizer)
        schedules[strategy] = model.pruning_schedule(strategy, **kwargs)

    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "pruning_schedules.json"), "w") as f:
        json.dump({s: {str(k): v for k, v in sched.items()} for s, sched in schedules.items()}, f, indent=2)

    device = torch.device(args.device)
    model.to(device)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    dataset_label = args.data_dir if args.dataset_name == "audiofolder" else args.dataset_name
    report = build_depth_report(model, batches, tokenizer, schedules, dataset=dataset_label, split=args.split,
                                rtf_utterances=args.rtf_utterances, repeats=args.repeats)
    similarity = svcca_of_layers(model, batches)
    for path in write_depth_report(report, similarity, args.output_dir):
        print("wrote", path)
    with open(os.path.join(args.output_dir, "depth_report.md")) as f:
        print(f.read())

    if args.store_schedule:
        store_schedule(model, schedules[args.store_schedule])
        model.to("cpu").save_pretrained(args.model)
        print(f"stored the {args.store_schedule} schedule in {args.model}/config.json")


if __name__ == "__main__":
    main()
