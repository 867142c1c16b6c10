#!/usr/bin/env python
"""Fine-tune a stock Transformers CTC model (Wav2Vec2ForCTC, HubertForCTC, Wav2Vec2ConformerForCTC, ParakeetForCTC)
with intermediate CTC and stochastic depth, so that its first k layers work alone; evaluate every depth before and
after; optionally prune and save the stock class with k layers.

A sibling of `train.py` (same data arguments, same `per_depth_metrics.json`); the logic lives in
`hf_prunable_ctc.adapters` (`make_prunable`, the data collator, the per-depth trainer).

    python training/finetune_prunable.py --model_name_or_path <stock CTC folder or Hub id> \
        --dataset_name audiofolder --data_dir data/demo --output_dir runs/prunable \
        --interctc_layers 2 4 --stochastic_depth_rate 0.2 --do_train --num_train_epochs 5 --prune_to 4

`--init_config <json>` starts from random weights instead (`{"model_type": "wav2vec2", ...config fields}`), the
vocabulary built from the training text; with `--interctc_weight 0 --stochastic_depth_rate 0` that is plain CTC
training of a stock model, the first step of the README's worked example.
"""

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    HfArgumentParser,
    ParakeetFeatureExtractor,
    TrainingArguments,
    Wav2Vec2FeatureExtractor,
    set_seed,
)

from hf_prunable_ctc.adapters import make_prunable
from hf_prunable_ctc.adapters.model_card import build_stock_model_card, depth_comparison_table
from hf_prunable_ctc.adapters.speech_inputs import StockCTCCollator, prepare_audio_split
from hf_prunable_ctc.adapters.trainer import StockPerDepthCTCTrainer
from hf_prunable_ctc.data.speech_data import load_split, training_texts
from hf_prunable_ctc.data.vocabulary import build_vocabulary, make_tokenizer
from hf_prunable_ctc.evaluation.depth_evaluation import format_depth_table, write_per_depth_metrics

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Stock CTC checkpoint (folder or Hub id) with its tokenizer and feature "
                                        "extractor."})
    init_config: Optional[str] = field(
        default=None, metadata={"help": "Instead: JSON of a stock config ({'model_type': 'wav2vec2', ...}) to start "
                                        "from random weights, vocabulary from the training text."})
    interctc_layers: Optional[List[int]] = field(
        default=None, metadata={"help": "Intermediate CTC layers (default: the checkpoint's recorded ones, else "
                                        "every other layer)."})
    interctc_weight: Optional[float] = field(default=None, metadata={"help": "lambda of intermediate CTC (0.5)."})
    stochastic_depth_rate: Optional[float] = field(default=None, metadata={"help": "p_max of stochastic depth (0.2)."})
    stochastic_depth_schedule: Optional[str] = field(default=None, metadata={"help": "linear | uniform."})
    freeze_feature_encoder: bool = field(default=False, metadata={"help": "wav2vec2 family: freeze the conv encoder."})
    prune_to: Optional[int] = field(
        default=None, metadata={"help": "After training, save the stock class with this many layers to "
                                        "<output_dir>/pruned-<k>, reload it and evaluate it."})


@dataclass
class DataArguments:
    dataset_name: str = field(
        metadata={"help": "'audiofolder' (with --data_dir), a saved dataset folder, or a Hub id."})
    dataset_config_name: Optional[str] = field(default=None)
    data_dir: Optional[str] = field(default=None, metadata={"help": "audiofolder root with <split>/metadata.csv."})
    train_split_name: str = field(default="train")
    eval_split_name: str = field(default="validation")
    test_split_name: Optional[str] = field(default=None, metadata={"help": "Also evaluate on this split (headline)."})
    audio_column_name: str = field(default="audio")
    text_column_name: str = field(default="transcription")
    chars_to_ignore: Optional[str] = field(default=None)
    uppercase: bool = field(default=True)
    min_duration_in_seconds: float = field(default=0.0)
    max_duration_in_seconds: float = field(default=20.0)
    max_train_samples: Optional[int] = field(default=None)
    max_eval_samples: Optional[int] = field(default=None)
    preprocessing_num_workers: Optional[int] = field(default=None)
    eval_depths: Optional[List[int]] = field(
        default=None, metadata={"help": "Depths to evaluate; default: every intermediate CTC layer and the full."})


@dataclass
class ReportArguments:
    report_dir: Optional[str] = field(
        default=None, metadata={"help": "Also write per-depth WER before/after as JSON + markdown here."})
    report_name: str = field(default="finetune_prunable", metadata={"help": "File name stem in --report_dir."})
    card_note: Optional[str] = field(default=None, metadata={"help": "A sentence for the model card's results."})


def load_or_init_model(model_args: ModelArguments, raw_train, data_args: DataArguments):
    """(stock model, tokenizer, feature extractor, base model name) from a checkpoint or an --init_config."""
    if bool(model_args.model_name_or_path) == bool(model_args.init_config):
        raise ValueError("give exactly one of --model_name_or_path (a stock CTC checkpoint) and --init_config")
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        model = AutoModelForCTC.from_pretrained(source)
        return model, AutoTokenizer.from_pretrained(source), AutoFeatureExtractor.from_pretrained(source), source
    with open(model_args.init_config) as f:
        settings = json.load(f)
    if "model_type" not in settings:
        raise ValueError(f"{model_args.init_config} needs a 'model_type' (e.g. 'wav2vec2', 'parakeet_ctc')")
    texts = training_texts(raw_train, data_args.text_column_name, data_args.chars_to_ignore, data_args.uppercase)
    if not texts:
        raise ValueError(f"no usable transcripts in column {data_args.text_column_name!r} of the training split")
    tokenizer = make_tokenizer(build_vocabulary(texts))
    config = AutoConfig.for_model(settings.pop("model_type"), **settings, vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCTC.from_config(config)
    if config.model_type == "parakeet_ctc":
        extractor = ParakeetFeatureExtractor(feature_size=config.encoder_config.num_mel_bins)
    else:
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                             do_normalize=True, return_attention_mask=True)
    return model, tokenizer, extractor, f"random init ({os.path.basename(model_args.init_config)})"


def rates_from_metrics(metrics: Dict[str, float], prefix: str, depths: List[int]) -> Dict[int, Dict[str, float]]:
    return {d: {"wer": metrics[f"{prefix}_wer_d{d}"], "cer": metrics[f"{prefix}_cer_d{d}"]} for d in depths}


def percent(rates):
    return {d: {k: round(100 * v, 2) for k, v in r.items()} for d, r in rates.items()}


def main(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, ReportArguments))
    model_args, data_args, training_args, report_args = parser.parse_args_into_dataclasses(args=argv)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # published once, with our card
    # Rows hold the waveform under "audio", which the collator turns into the model's input: the Trainer must not
    # drop it for not being a forward() argument.
    training_args.remove_unused_columns = False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    command = " ".join(["python", "training/finetune_prunable.py", *map(shlex.quote, argv or sys.argv[1:])])
    set_seed(training_args.seed)

    raw_train = load_split(data_args.dataset_name, data_args.train_split_name,
                           dataset_config_name=data_args.dataset_config_name, data_dir=data_args.data_dir,
                           audio_column=data_args.audio_column_name)
    if data_args.max_train_samples:
        raw_train = raw_train.select(range(min(data_args.max_train_samples, len(raw_train))))
    model, tokenizer, feature_extractor, base_model = load_or_init_model(model_args, raw_train, data_args)
    if model_args.freeze_feature_encoder:
        if not hasattr(model, "freeze_feature_encoder"):
            raise ValueError(f"--freeze_feature_encoder: {type(model).__name__} has no conv feature encoder")
        model.freeze_feature_encoder()
    wrapped = make_prunable(model, interctc_layers=model_args.interctc_layers,
                            interctc_weight=model_args.interctc_weight,
                            stochastic_depth_rate=model_args.stochastic_depth_rate,
                            stochastic_depth_schedule=model_args.stochastic_depth_schedule)

    prepare = dict(sampling_rate=feature_extractor.sampling_rate, audio_column=data_args.audio_column_name,
                   text_column=data_args.text_column_name, chars_to_ignore=data_args.chars_to_ignore,
                   uppercase=data_args.uppercase, min_duration_s=data_args.min_duration_in_seconds,
                   max_duration_s=data_args.max_duration_in_seconds, num_proc=data_args.preprocessing_num_workers)

    def load_prepared(split, max_samples):
        raw = load_split(data_args.dataset_name, split, dataset_config_name=data_args.dataset_config_name,
                         data_dir=data_args.data_dir, audio_column=data_args.audio_column_name)
        if max_samples:
            raw = raw.select(range(min(max_samples, len(raw))))
        dataset, report = prepare_audio_split(raw, tokenizer, desc=f"{split} audio", **prepare)
        logger.info(report.summary(split))
        return dataset

    with training_args.main_process_first(desc="data preparation"):
        train_set, train_report = prepare_audio_split(raw_train, tokenizer, desc="train audio", **prepare)
        splits = [(data_args.eval_split_name, load_prepared(data_args.eval_split_name, data_args.max_eval_samples))]
        if data_args.test_split_name:
            splits.append((data_args.test_split_name, load_prepared(data_args.test_split_name, None)))
    logger.info(train_report.summary("train"))
    if train_report.kept == 0:
        raise ValueError("no training utterance survived preparation: " + train_report.summary("train"))

    trainer = StockPerDepthCTCTrainer(
        model=wrapped, args=training_args, train_dataset=train_set, eval_dataset=splits[0][1],
        data_collator=StockCTCCollator(feature_extractor, tokenizer, model.main_input_name),
        processing_class=feature_extractor, tokenizer=tokenizer, eval_depths=data_args.eval_depths,
    )
    depths = trainer.eval_depths
    logger.info("%s from %s, %s parameters, settings %s", type(model).__name__, base_model,
                f"{wrapped.count_parameters():,d}", model.config.prunable_ctc)

    # "Before": the same model cut to its first k layers, without (more) prunable fine-tuning.
    before = {name: rates_from_metrics(trainer.evaluate(ds, metric_key_prefix=f"before_{name}"), f"before_{name}",
                                       depths) for name, ds in splits}
    train_seconds = None
    if training_args.do_train:
        start = time.time()
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        train_seconds = round(time.time() - start, 1)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    after = {name: rates_from_metrics(trainer.evaluate(ds, metric_key_prefix=name), name, depths)
             for name, ds in splits}
    if not trainer.is_world_process_zero():
        return trainer

    headline, headline_set = splits[-1]
    schedule = wrapped.pruning_schedule()
    parameters = {d: wrapped.count_parameters(num_layers=d) for d in depths}
    # write_per_depth_metrics reads `config.pruning_schedule` and `count_parameters`: stock configs have no schedule
    # (always the first k layers), so the wrapper is shown through that interface.
    view = SimpleNamespace(config=SimpleNamespace(pruning_schedule=None), count_parameters=wrapped.count_parameters)
    record = write_per_depth_metrics(
        os.path.join(training_args.output_dir, "per_depth_metrics.json"), view, after[headline], headline, schedule,
        extra={"utterances": len(headline_set), "base_model": base_model, "model_class": type(model).__name__,
               "prunable_ctc": model.config.prunable_ctc, "train_hours": round(train_report.hours, 3),
               "train_seconds": train_seconds,
               "before": {s: {str(d): v for d, v in percent(r).items()} for s, r in before.items()},
               "all_splits": {s: {str(d): v for d, v in percent(r).items()} for s, r in after.items()}})
    print(format_depth_table(record))

    settings = dict(model.config.prunable_ctc)  # as trained: prune_to below rewrites them for the pruned copy
    pruned = None
    if model_args.prune_to:
        pruned = prune_and_check(wrapped, model_args.prune_to, tokenizer, feature_extractor, training_args,
                                 data_args, splits, record)

    card = build_stock_model_card(
        model_name=os.path.basename(os.path.normpath(training_args.output_dir)), base_model=base_model,
        model_class=type(model).__name__, settings=settings, before=percent(before[headline]),
        after=percent(after[headline]), parameters=parameters,
        dataset_name=data_args.dataset_name + (f" ({data_args.data_dir})" if data_args.data_dir else ""),
        dataset_type=data_args.dataset_name, split=headline, training_command=command, note=report_args.card_note)
    card.save(os.path.join(training_args.output_dir, "README.md"))
    if report_args.report_dir:
        write_report(report_args, command, base_model, type(model).__name__, settings, before, after, parameters,
                     headline, len(headline_set), train_report.hours, train_seconds, pruned)
    if push_to_hub:
        push(training_args)
    return trainer


def prune_and_check(wrapped, depth, tokenizer, feature_extractor, training_args, data_args, splits, record):
    """Save the stock class with `depth` layers, reload it with plain AutoModelForCTC and evaluate it."""
    if depth > wrapped.num_hidden_layers:
        raise ValueError(f"--prune_to {depth}: the model has {wrapped.num_hidden_layers} layers")
    folder = os.path.join(training_args.output_dir, f"pruned-{depth}")
    wrapped.prune_to(depth).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)
    reloaded = AutoModelForCTC.from_pretrained(folder)
    check = StockPerDepthCTCTrainer(
        model=make_prunable(reloaded), args=training_args,
        data_collator=StockCTCCollator(feature_extractor, tokenizer, reloaded.main_input_name),
        processing_class=feature_extractor, tokenizer=tokenizer, eval_depths=[depth])
    name, dataset = splits[-1]
    metrics = check.evaluate(dataset, metric_key_prefix=f"pruned_{name}")
    result = {"folder": folder, "class": type(reloaded).__name__, "num_layers": depth,
              "parameters": sum(p.numel() for p in reloaded.parameters()),
              "split": name, "wer": round(100 * metrics[f"pruned_{name}_wer"], 2),
              "cer": round(100 * metrics[f"pruned_{name}_cer"], 2)}
    print(f"pruned to {depth} layers, reloaded as {result['class']} from {folder}: "
          f"WER {result['wer']:.2f}% (at depth {depth} before pruning: {record['depths'][str(depth)]['wer']:.2f}%)")
    return result


def write_report(report_args, command, base_model, model_class, settings, before, after, parameters, headline,
                 utterances, train_hours, train_seconds, pruned) -> None:
    os.makedirs(report_args.report_dir, exist_ok=True)
    stem = os.path.join(report_args.report_dir, report_args.report_name)
    data = {"command": command, "base_model": base_model, "model_class": model_class, "prunable_ctc": settings,
            "headline_split": headline, "utterances": utterances, "train_hours": round(train_hours, 3),
            "train_seconds": train_seconds, "parameters": {str(d): n for d, n in parameters.items()},
            "before": {s: {str(d): v for d, v in percent(r).items()} for s, r in before.items()},
            "after": {s: {str(d): v for d, v in percent(r).items()} for s, r in after.items()},
            "pruned_and_reloaded": pruned}
    with open(f"{stem}.json", "w") as f:
        json.dump(data, f, indent=2)
    lines = [f"# {model_class} from {base_model}: per-depth WER before and after", "",
             f"Settings: {json.dumps(settings)}; {train_hours:.2f} h of training audio"
             + (f", {train_seconds:.0f} s of training" if train_seconds else ", no training") + ".", ""]
    for split in after:
        lines += [f"## {split}", "", depth_comparison_table(percent(before[split]), percent(after[split]), parameters),
                  ""]
    if pruned:
        lines += [f"Pruned to {pruned['num_layers']} layers and reloaded with `AutoModelForCTC` as "
                  f"`{pruned['class']}` ({pruned['parameters']:,d} parameters): WER {pruned['wer']:.2f}%, "
                  f"CER {pruned['cer']:.2f}% on {pruned['split']}.", ""]
    lines += ["Command:", "", "```", command, "```", ""]
    with open(f"{stem}.md", "w") as f:
        f.write("\n".join(lines))


def push(training_args) -> None:
    """Upload the output folder (stock checkpoint, tokenizer, feature extractor, card) when a token is there."""
    from huggingface_hub import HfApi

    from hf_prunable_ctc.hub.publish import can_upload

    repo_id = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    if not can_upload(training_args.hub_token):
        print(f"not uploaded to {repo_id}: no Hugging Face token or no network; the folder is "
              f"{training_args.output_dir}")
        return
    api = HfApi(token=training_args.hub_token)
    api.create_repo(repo_id, private=bool(training_args.hub_private_repo), exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=training_args.output_dir,
                      ignore_patterns=["checkpoint-*", "runs/*", "pruned-*", "*.bin"])
    print(f"uploaded to https://huggingface.co/{repo_id}")


if __name__ == "__main__":
    main()
