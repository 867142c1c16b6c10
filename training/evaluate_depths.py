#!/usr/bin/env python
"""Per-depth report of a trained checkpoint: WER, CER, parameters and RTF for every strategy and depth, plus plots.

    python training/evaluate_depths.py --model runs/demo --dataset_name audiofolder --data_dir data/demo \
        --split test --search_split validation --output_dir runs/demo/report

Data-driven strategies (greedy, svcca) search on `--search_split` (never the split being reported, unless
`--allow_search_on_test`) and the resulting schedules are written next to the report; when the dataset has no such
split, only the data-free strategies (top, uniform) run. `--store_schedule greedy` also saves one into the model's
config so `prune_to(k)` uses it by default. `--conditions silence,long_form` also transcribes the split through the
ASR pipeline with silence around each utterance and joined into minute-long recordings (chunked), at every depth,
and writes `conditions.json`/`conditions.md` (which `publish` puts in the card); `--extra_splits` measures further
splits (e.g. the held-out engine and text splits of `make_corpus.py`) with the same schedules. Splits are checked
before anything is loaded; the model runs on `--device` for the search and the report alike.
"""

import argparse
import json
import os

import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.speech_data import available_splits, collated_batches, load_prepared_split, load_split
from hf_prunable_ctc.evaluation.conditions import (CONDITIONS, ConditionSettings, evaluate_conditions,
                                                   format_conditions_table, split_audio_and_references,
                                                   write_conditions)
from hf_prunable_ctc.evaluation.depth_report import (build_depth_report, svcca_of_layers, write_depth_report,
                                                      write_split_report)
from hf_prunable_ctc.evaluation.pruning_search import store_schedule
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

DATA_DRIVEN = ("greedy", "svcca")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved model folder (with tokenizer and feature extractor)")
    parser.add_argument("--dataset_name", default="audiofolder")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--data_dir")
    parser.add_argument("--split", default="test", help="split the report measures")
    parser.add_argument("--extra_splits", default="",
                        help="further splits to measure with the same schedules (comma-separated, e.g. "
                             "test_unseen_engine,test_unseen_text): depth_report_<split>.json/.md each, WER/CER only; "
                             "`publish` puts every split in the card")
    parser.add_argument("--search_split", default="validation",
                        help="dev split for greedy / svcca; must differ from --split")
    parser.add_argument("--allow_search_on_test", action="store_true",
                        help="allow --search_split to equal --split (the report then flatters the searched schedules)")
    parser.add_argument("--audio_column_name", default="audio")
    parser.add_argument("--text_column_name", default="transcription")
    parser.add_argument("--strategies", default="top,uniform,greedy,svcca")
    parser.add_argument("--max_eval_samples", type=int)
    parser.add_argument("--max_search_samples", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rtf_utterances", type=int, default=20,
                        help="utterances whose model-forward RTF is timed per depth; 0 skips the speed measurement "
                             "(no RTF columns or plot)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per depth (the median is reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--greedy_criterion", choices=("loss", "wer"), default="loss",
                        help="what greedy search minimises on --search_split: final CTC loss or greedy WER")
    parser.add_argument("--store_schedule", choices=DATA_DRIVEN + ("top", "uniform"),
                        help="save this strategy's schedule into the model's config (in --model)")
    parser.add_argument("--conditions", default="",
                        help="also transcribe --split through the ASR pipeline under these listening conditions "
                             "(comma-separated: silence, long_form; see hf_prunable_ctc.evaluation.conditions) at "
                             "every depth of the model's pruning schedule; writes conditions.json/.md")
    parser.add_argument("--max_condition_samples", type=int,
                        help="utterances of --split the listening conditions use (the first N; default: as many as "
                             "--max_eval_samples). Each is transcribed through the pipeline at every depth and under "
                             "every condition, one at a time, so this part costs most")
    parser.add_argument("--silence_seconds", type=float, default=1.0, help="silence condition: seconds before/after")
    parser.add_argument("--long_form_seconds", type=float, default=60.0,
                        help="long_form condition: length of the joined recordings in seconds")
    parser.add_argument("--chunk_length_s", type=float, default=10.0, help="long_form condition: pipeline chunking")
    parser.add_argument("--output_dir", required=True)
    return parser.parse_args(argv)


def plan_strategies(strategies, split, search_split, splits, allow_search_on_test=False):
    """The strategies to run and the search split to use (None: no data-driven strategy runs).

    `splits` are the dataset's split names (None when they cannot be listed). Raises ValueError when `split` is
    missing or `search_split` equals `split` without `allow_search_on_test`; drops data-driven strategies, saying so,
    when `search_split` is missing.
    """
    if splits is not None and split not in splits:
        raise ValueError(f"--split {split!r} is not in the dataset (splits: {', '.join(splits) or 'none'})")
    data_driven = [s for s in strategies if s in DATA_DRIVEN]
    if not data_driven:
        return strategies, None
    if search_split == split and not allow_search_on_test:
        raise ValueError(f"--search_split equals --split ({split!r}): the searched schedules would be tuned on the "
                         "data they are scored on. Give another --search_split, or --allow_search_on_test to do it "
                         "anyway")
    if splits is not None and search_split not in splits:
        kept = [s for s in strategies if s not in DATA_DRIVEN]
        print(f"no {search_split!r} split to search on (splits: {', '.join(splits)}): running only the data-free "
              f"strategies {', '.join(kept) or '(none)'}, not {', '.join(data_driven)}; give --search_split to "
              "search")
        if not kept:
            raise ValueError("no strategy left to run: add top or uniform to --strategies, or give --search_split")
        return kept, None
    return strategies, search_split


def main(argv=None):
    args = parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in DATA_DRIVEN + ("top", "uniform")]
    if unknown:
        raise SystemExit(f"evaluate_depths.py: error: unknown strategies {unknown}: choose from top, uniform, "
                         "greedy, svcca")
    if args.max_condition_samples is not None and args.max_condition_samples < 1:
        raise SystemExit(f"evaluate_depths.py: error: --max_condition_samples must be >= 1; "
                         f"got {args.max_condition_samples}")
    if args.rtf_utterances < 0 or args.repeats < 1:
        raise SystemExit("evaluate_depths.py: error: --rtf_utterances must be >= 0 (0 skips the speed measurement) "
                         f"and --repeats >= 1; got {args.rtf_utterances} and {args.repeats}")
    # Checked before loading anything: a missing split should not cost a model load and a test-set pass.
    try:
        splits = available_splits(args.dataset_name, args.dataset_config_name, args.data_dir)
        strategies, search_split = plan_strategies(strategies, args.split, args.search_split, splits,
                                                   args.allow_search_on_test)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"evaluate_depths.py: error: {error}") from None
    extra_splits = [x.strip() for x in args.extra_splits.split(",") if x.strip()]
    try:
        for extra in extra_splits:
            if extra in (args.split, search_split):
                raise ValueError(f"--extra_splits {extra!r} is the reported or the search split")
            plan_strategies(["top"], extra, search_split, splits)  # checks that it exists
    except ValueError as error:
        raise SystemExit(f"evaluate_depths.py: error: {error}") from None
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise SystemExit(f"evaluate_depths.py: error: unknown --conditions {unknown}: choose from silence, long_form")
    if args.store_schedule and args.store_schedule not in strategies:
        raise SystemExit("evaluate_depths.py: error: "
                         f"--store_schedule {args.store_schedule}: that strategy does not run "
                         f"(running: {', '.join(strategies)})")
    device = torch.device(args.device)
    # On the device before the search: greedy and SVCCA run many forward passes.
    model = PrunableCTCForCTC.from_pretrained(args.model).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    extractor = AutoFeatureExtractor.from_pretrained(args.model)
    data = dict(data_dir=args.data_dir, dataset_config_name=args.dataset_config_name,
                audio_column=args.audio_column_name, text_column=args.text_column_name)

    dataset, report = load_prepared_split(args.dataset_name, args.split, extractor, tokenizer,
                                          max_samples=args.max_eval_samples, **data)
    print(report.summary(args.split))
    batches = collated_batches(dataset, extractor, tokenizer, args.batch_size)

    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    search_batches = None
    if search_split is not None:
        search_set, search_report = load_prepared_split(args.dataset_name, search_split, extractor, tokenizer,
                                                        max_samples=args.max_search_samples, **data)
        print(search_report.summary(search_split))
        search_batches = [{k: v.to(device) for k, v in b.items()}
                          for b in collated_batches(search_set, extractor, tokenizer, args.batch_size)]
    schedules = {}
    for strategy in strategies:
        kwargs = {"batches": search_batches, "progress": True} if strategy in DATA_DRIVEN else {}
        if strategy == "greedy":
            kwargs.update(criterion=args.greedy_criterion, tokenizer=tokenizer)
        schedules[strategy] = model.pruning_schedule(strategy, **kwargs)

    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "pruning_schedules.json"), "w") as f:
        json.dump({s: {str(k): v for k, v in sched.items()} for s, sched in schedules.items()}, f, indent=2)

    dataset_label = args.data_dir if args.dataset_name == "audiofolder" else args.dataset_name
    report = build_depth_report(model, batches, tokenizer, schedules, dataset=dataset_label, split=args.split,
                                rtf_utterances=args.rtf_utterances, repeats=args.repeats,
                                measure_speed=args.rtf_utterances > 0)
    similarity = svcca_of_layers(model, batches)
    for path in write_depth_report(report, similarity, args.output_dir):
        print("wrote", path)
    with open(os.path.join(args.output_dir, "depth_report.md")) as f:
        print(f.read())

    for extra in extra_splits:
        extra_set, extra_report = load_prepared_split(args.dataset_name, extra, extractor, tokenizer,
                                                      max_samples=args.max_eval_samples, **data)
        print(extra_report.summary(extra))
        extra_batches = [{k: v.to(device) for k, v in b.items()}
                         for b in collated_batches(extra_set, extractor, tokenizer, args.batch_size)]
        split_report = build_depth_report(model, extra_batches, tokenizer, schedules, dataset=dataset_label,
                                          split=extra, measure_speed=False)
        for path in write_split_report(split_report, args.output_dir):
            print("wrote", path)

    if conditions:
        write_condition_report(args, model, tokenizer, extractor, conditions)

    if args.store_schedule:
        store_schedule(model, schedules[args.store_schedule])
        model.to("cpu").save_pretrained(args.model)
        print(f"stored the {args.store_schedule} schedule in {args.model}/config.json")


def write_condition_report(args, model, tokenizer, extractor, conditions):
    """Transcribe --split under `conditions` (and as it is) at every scheduled depth; write conditions.json/.md."""
    rows = load_split(args.dataset_name, args.split, args.dataset_config_name, args.data_dir, args.audio_column_name)
    audios, references = split_audio_and_references(rows, args.audio_column_name, args.text_column_name,
                                                     extractor.sampling_rate,
                                                     args.max_condition_samples or args.max_eval_samples)
    asr = prunable_asr_pipeline(model=model, tokenizer=tokenizer, feature_extractor=extractor, device=model.device)
    settings = ConditionSettings(silence_seconds=args.silence_seconds, long_form_seconds=args.long_form_seconds,
                                 chunk_length_s=args.chunk_length_s)
    result = evaluate_conditions(asr, audios, references, depths=sorted(model.pruning_schedule(), reverse=True),
                                 sampling_rate=extractor.sampling_rate, settings=settings,
                                 conditions=["clean", *[c for c in conditions if c != "clean"]],
                                 batch_size=args.batch_size)
    result.update(split=args.split, dataset=args.data_dir if args.dataset_name == "audiofolder" else args.dataset_name)
    for path in write_conditions(result, args.output_dir):
        print("wrote", path)
    print(format_conditions_table(result))


if __name__ == "__main__":
    main()
