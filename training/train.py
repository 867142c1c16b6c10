#!/usr/bin/env python
"""Train a prunable CTC model with intermediate CTC and stochastic depth, evaluated at several depths.

Modelled on Transformers' `run_speech_recognition_ctc.py`; the logic lives in `hf_prunable_ctc` (data preparation,
per-depth evaluation) so the CLI, this script and the tests share it. Runs as is under `torchrun` or
`accelerate launch` for several GPUs/nodes.

    python training/train.py --model_config training/configs/demo.json --dataset_name audiofolder \
        --data_dir data/demo --output_dir runs/demo --do_train --num_train_epochs 24
    python training/train.py training/recipes/demo.json --max_steps 20   # a recipe, flags override it
    python training/train.py training/recipes/demo.json --vocabulary bpe:256   # subword CTC (or unigram:N)
    python training/train.py training/recipes/demo.json --feature_mode waveforms \
        --augmentation_config training/configs/augmentation/standard.json   # waveform augmentation (training only)
    python training/train.py training/recipes/reference.json --feature_mode on_the_fly --feature_device model \
        --dataloader_num_workers 8 --bf16   # on a GPU: workers pad waveforms, features are computed on the GPU
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from transformers import HfArgumentParser, Wav2Vec2Processor, set_seed

from hf_prunable_ctc import PrunableCTCConfig, PrunableCTCForCTC
from hf_prunable_ctc.configuration_prunable_ctc import INTERCTC_WEIGHT_RECIPES
from hf_prunable_ctc.data.augmentation import AugmentationConfig, WaveformAugmentation
from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor
from hf_prunable_ctc.data.speech_data import (FEATURE_MODES, load_prepared_split, load_split, prepare_split,
                                              training_texts)
from hf_prunable_ctc.data.vocabulary import make_ctc_tokenizer, parse_vocabulary_option
from hf_prunable_ctc.evaluation.depth_evaluation import format_depth_table, write_per_depth_metrics
from hf_prunable_ctc.hub.publish import outcome, publish
from hf_prunable_ctc.training.averaging import KeepBestWeightsCallback, adopt_average_if_better, metric_key
from hf_prunable_ctc.training.trainer import (AugmentationStateCallback, FinishedRunError, PerDepthCTCTrainer,
                                              PrunableCTCTrainingArguments, adopt_checkpoint, check_run_unfinished,
                                              checkpoint_step, is_complete_checkpoint, last_complete_checkpoint,
                                              recipe_arguments)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_config: Optional[str] = field(
        default=None, metadata={"help": "JSON file of PrunableCTCConfig fields (training/configs/*.json)."})
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Continue from a saved model (its tokenizer and features come with it)."})
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Folder with a CTC tokenizer (Wav2Vec2CTCTokenizer or SubwordCTCTokenizer); "
                                        "default: built from the training text, see --vocabulary."})
    vocabulary: str = field(
        default="characters", metadata={"help": "Vocabulary built from the training split's transcripts: "
                                                "'characters' (Wav2Vec2CTCTokenizer), 'bpe:N' or 'unigram:N' (a "
                                                "subword vocabulary of at most N tokens, SubwordCTCTokenizer). "
                                                "Saved with the model; the config's vocab_size follows it."})
    interctc_layers: Optional[List[int]] = field(default=None, metadata={"help": "Intermediate CTC layers."})
    interctc_weight: Optional[float] = field(default=None, metadata={"help": "lambda of intermediate CTC."})
    self_conditioning: Optional[bool] = field(default=None, metadata={"help": "Self-conditioned CTC."})
    stochastic_depth_rate: Optional[float] = field(default=None, metadata={"help": "p_max of stochastic depth."})
    stochastic_depth_schedule: Optional[str] = field(default=None, metadata={"help": "linear | uniform."})
    interctc_weights: Optional[str] = field(
        default=None, metadata={"help": "Exit weights, one per intermediate CTC layer: a named schedule "
                                        "('inverse_depth', 'uniform') or comma-separated numbers."})
    depth_sampling: Optional[str] = field(
        default=None, metadata={"help": "'sandwich' also trains the smallest depth and random depths every step; "
                                        "'none' turns off the config's."})
    sandwich_random_depths: Optional[int] = field(default=None, metadata={"help": "Random depths per step."})
    sandwich_weight: Optional[float] = field(default=None, metadata={"help": "Weight of the sandwich loss."})
    distillation_weight: Optional[float] = field(
        default=None, metadata={"help": "In-place self-distillation from the full depth into the exits (0: off)."})
    distillation_temperature: Optional[float] = field(default=None, metadata={"help": "Its temperature."})
    spec_augment: Optional[bool] = field(
        default=None, metadata={"help": "SpecAugment masking (2 frequency masks <= 15 bins, 1 time mask per second of "
                                        "audio, each <= 40 frames); --spec_augment false turns off the config's."})


@dataclass
class DataArguments:
    dataset_name: str = field(metadata={"help": "'audiofolder' (with --data_dir), a saved dataset folder, or a Hub "
                                                "id such as openslr/librispeech_asr."})
    dataset_config_name: Optional[str] = field(default=None)
    data_dir: Optional[str] = field(default=None, metadata={"help": "audiofolder root with <split>/metadata.csv."})
    train_split_name: str = field(default="train")
    eval_split_name: str = field(default="validation")
    test_split_name: Optional[str] = field(
        default=None, metadata={"help": "Also evaluate per depth on this split at the end (e.g. test)."})
    audio_column_name: str = field(default="audio")
    text_column_name: str = field(default="transcription")
    chars_to_ignore: Optional[str] = field(
        default=None, metadata={"help": "Characters removed from transcripts; default: text.py's punctuation."})
    uppercase: bool = field(default=True, metadata={"help": "Upper-case transcripts."})
    min_duration_in_seconds: float = field(default=0.0, metadata={"help": "Training split only."})
    max_duration_in_seconds: float = field(
        default=20.0, metadata={"help": "Training split only: evaluation and test splits are scored whole."})
    feature_mode: str = field(
        default="on_the_fly", metadata={"help": "Training features: 'on_the_fly' (decoded and computed per batch in "
                                                "the dataloader workers; for large corpora), 'waveforms' (decoded "
                                                "once, features per batch: augmentation on a small corpus) or "
                                                "'cached' (computed once and stored; small corpora, many epochs on "
                                                "CPU). Evaluation splits are always cached."})
    max_train_samples: Optional[int] = field(default=None)
    max_eval_samples: Optional[int] = field(default=None)
    preprocessing_num_workers: Optional[int] = field(default=None)
    eval_depths: Optional[List[int]] = field(
        default=None, metadata={"help": "Depths to evaluate; default: every intermediate CTC layer and the full."})
    augmentation_config: Optional[str] = field(
        default=None, metadata={"help": "JSON of AugmentationConfig fields (training/configs/augmentation/*.json): "
                                        "waveform augmentation and long form for training batches only. Its seed "
                                        "is replaced by --seed; needs --feature_mode waveforms or on_the_fly. The "
                                        "settings used are written to <output_dir>/augmentation.json."})
    noise_dir: Optional[str] = field(
        default=None, metadata={"help": "With --augmentation_config: folder of noise recordings (MUSAN: "
                                        "openslr.org/17), replacing the config's noise_dir."})


@dataclass
class PublishArguments:
    card_info: Optional[str] = field(
        default=None, metadata={"help": "With --push_to_hub: JSON of model card fields (training/cards/*.json); "
                                        "default: a card naming the dataset and this command."})
    publish_dir: Optional[str] = field(
        default=None, metadata={"help": "With --push_to_hub: where the repo folder is written before upload; "
                                        "default: <output_dir>/hub_repo."})


# Config fields a recipe or flag may set on top of --model_config or a saved model: how the depths are trained.
TRAINING_FIELDS = ("interctc_layers", "interctc_weight", "self_conditioning", "stochastic_depth_rate",
                   "stochastic_depth_schedule", "depth_sampling", "sandwich_random_depths", "sandwich_weight",
                   "distillation_weight", "distillation_temperature")


def parse_interctc_weights(value: str):
    """`--interctc_weights`: a named schedule of `PrunableCTCConfig` or comma-separated numbers."""
    if value in INTERCTC_WEIGHT_RECIPES:
        return value
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise ValueError(f"--interctc_weights {value!r}: give one of {sorted(INTERCTC_WEIGHT_RECIPES)} or "
                         f"comma-separated numbers, one per intermediate CTC layer") from None


def build_model(model_args: ModelArguments, vocab_size: int, pad_token_id: int) -> PrunableCTCForCTC:
    overrides = {k: getattr(model_args, k) for k in TRAINING_FIELDS if getattr(model_args, k) is not None}
    if model_args.interctc_weights is not None:
        overrides["interctc_weights"] = parse_interctc_weights(model_args.interctc_weights)
    if model_args.spec_augment is not None:
        overrides.update(spec_augment_freq_masks=2 if model_args.spec_augment else 0,
                         spec_augment_time_masks_per_second=1.0 if model_args.spec_augment else 0.0)
    if model_args.model_name_or_path:
        model = PrunableCTCForCTC.from_pretrained(model_args.model_name_or_path)
        if overrides:
            # The constructor resolves named weight schedules against the layers; the model keeps its config
            # object (its modules hold it), so the resolved fields are copied onto it.
            resolved = PrunableCTCConfig(**{**model.config.to_dict(), **overrides})
            for key in {*overrides, "interctc_layers", "interctc_weights"}:
                setattr(model.config, key, getattr(resolved, key))
        model.config.check_values()
        return model
    settings = {}
    if model_args.model_config:
        with open(model_args.model_config) as f:
            settings = json.load(f)
    settings.update(overrides, vocab_size=vocab_size, pad_token_id=pad_token_id)
    return PrunableCTCForCTC(PrunableCTCConfig(**settings))


def parse_arguments(argv: List[str]):
    """`(parser, (model_args, data_args, training_args, publish_args))` from `[RECIPE.json] [--flag value ...]`:
    the command line's flags override the recipe's."""
    parser = HfArgumentParser((ModelArguments, DataArguments, PrunableCTCTrainingArguments, PublishArguments))
    parsed = parser.parse_args_into_dataclasses(args=recipe_arguments(argv))
    if parsed[1].feature_mode not in FEATURE_MODES:
        parser.error(f"--feature_mode must be one of {', '.join(FEATURE_MODES)}, got {parsed[1].feature_mode!r}")
    data_args = parsed[1]
    try:
        vocabulary = parse_vocabulary_option(parsed[0].vocabulary)
    except ValueError as error:
        parser.error(str(error))
    if vocabulary.kind != "characters" and (parsed[0].tokenizer_name_or_path or parsed[0].model_name_or_path):
        parser.error(f"--vocabulary {vocabulary} trains a new vocabulary, but --tokenizer_name_or_path / "
                     "--model_name_or_path bring their own tokenizer: give one or the other")
    if data_args.noise_dir and not data_args.augmentation_config:
        parser.error("--noise_dir is used by the augmentation: give --augmentation_config too (e.g. "
                     "training/configs/augmentation/standard.json)")
    if data_args.augmentation_config and data_args.feature_mode == "cached":
        # Cached features were computed from the clean waveform once: there is nothing left to augment.
        parser.error("--augmentation_config needs the waveforms at training time, but --feature_mode cached stores "
                     "features computed once: use --feature_mode waveforms (decoded once, features per batch) or "
                     "on_the_fly")
    if parsed[2].feature_device == "model" and data_args.feature_mode == "cached":
        parser.error("--feature_device model computes the training features in each step, but --feature_mode cached "
                     "stores them computed once: use --feature_mode on_the_fly or waveforms")
    return parser, parsed


def load_augmentation_config(path: str, seed: int, noise_dir: Optional[str] = None) -> AugmentationConfig:
    """The checked `AugmentationConfig` of JSON file `path`, with `seed` (the training seed, so one `--seed`
    repeats a whole run) and, when given, `noise_dir` in place of the file's."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--augmentation_config {path}: no such file (see training/configs/augmentation/)")
    config = AugmentationConfig.from_json(path)
    config.seed = seed
    if noise_dir is not None:
        if not os.path.isdir(noise_dir):
            raise FileNotFoundError(f"--noise_dir {noise_dir}: no such folder (point it at the MUSAN folder or "
                                    "another folder of .wav/.flac/.ogg noise recordings)")
        config.noise_dir = noise_dir
    config.check_values()
    return config


def main(argv=None):
    parser, (model_args, data_args, training_args, publish_args) = parse_arguments(
        sys.argv[1:] if argv is None else argv)
    # The Trainer's own push would upload its generic card at every save; the run is instead published once,
    # at the end, with the per-depth model card (the same path as `hf-prunable-ctc publish`).
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    if not (model_args.model_config or model_args.model_name_or_path):
        parser.error("give --model_config (train from scratch) or --model_name_or_path (continue)")
    if training_args.cpu_threads:
        torch.set_num_threads(training_args.cpu_threads)
    set_seed(training_args.seed)

    last_checkpoint = None
    if os.path.isdir(training_args.output_dir) and training_args.do_train and not training_args.resume_from_checkpoint:
        last_checkpoint = last_complete_checkpoint(training_args.output_dir)
        if last_checkpoint:
            logger.info("resuming from %s (pass a new --output_dir to start over)", last_checkpoint)
    if training_args.continue_from_checkpoint and training_args.do_train and not last_checkpoint:
        source = training_args.continue_from_checkpoint
        if not is_complete_checkpoint(source):
            parser.error(f"--continue_from_checkpoint {source}: not a complete checkpoint folder (model weights and "
                         "trainer_state.json)")
        last_checkpoint = os.path.join(training_args.output_dir, f"checkpoint-{checkpoint_step(source)}")
        with training_args.main_process_first(desc="copying the checkpoint to continue from"):
            if training_args.should_save:
                os.makedirs(training_args.output_dir, exist_ok=True)
                adopt_checkpoint(source, training_args.output_dir)
        logger.info("continuing %s as %s under this run's settings", source, last_checkpoint)

    raw_train = load_split(data_args.dataset_name, data_args.train_split_name,
                           dataset_config_name=data_args.dataset_config_name, data_dir=data_args.data_dir,
                           audio_column=data_args.audio_column_name)
    if data_args.max_train_samples:
        raw_train = raw_train.select(range(min(data_args.max_train_samples, len(raw_train))))

    # Tokenizer and features: from a given tokenizer or model, the checkpoint being resumed (whose model was
    # trained with it: rebuilding it from the text could change the vocabulary), or built from the training text.
    resumed = training_args.resume_from_checkpoint or last_checkpoint
    if resumed and not is_complete_checkpoint(str(resumed)):
        parser.error(f"--resume_from_checkpoint {resumed}: not a complete checkpoint folder (no such folder, or no "
                     "trainer_state.json / model weights: a run stopped while saving it?); give an earlier one")
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path or resumed
    if source:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        texts = training_texts(raw_train, data_args.text_column_name, data_args.chars_to_ignore, data_args.uppercase)
        if not texts:
            raise ValueError(f"no usable transcripts in column {data_args.text_column_name!r} of the training split")
        # Training transcripts only: evaluation text must not shape the vocabulary the model is scored with.
        tokenizer = make_ctc_tokenizer(texts, model_args.vocabulary)
        logger.info("vocabulary %s: %d tokens", model_args.vocabulary, len(tokenizer))
    model = build_model(model_args, len(tokenizer), tokenizer.pad_token_id)
    # A model folder brings its own front end (Whisper-initialised models compute Whisper's log-mel features);
    # new models get the package's Kaldi fbank.
    if model_args.model_name_or_path:
        feature_extractor = PrunableCTCFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    else:
        feature_extractor = make_feature_extractor(num_mel_bins=model.config.num_mel_bins)

    prepare = dict(audio_column=data_args.audio_column_name, text_column=data_args.text_column_name,
                   chars_to_ignore=data_args.chars_to_ignore, uppercase=data_args.uppercase,
                   num_proc=data_args.preprocessing_num_workers)
    # Evaluation splits: no duration limits (a test set is scored whole) and cached features, so every utterance
    # left out of a score is known and counted before scoring.
    load = dict(dataset_config_name=data_args.dataset_config_name, data_dir=data_args.data_dir,
                max_samples=data_args.max_eval_samples, features="cached", **prepare)
    with training_args.main_process_first(desc="data preparation"):
        train_set, train_report = prepare_split(
            raw_train, feature_extractor, tokenizer, desc="train features", features=data_args.feature_mode,
            min_duration_s=data_args.min_duration_in_seconds, max_duration_s=data_args.max_duration_in_seconds,
            **prepare)
        eval_set, eval_report = load_prepared_split(data_args.dataset_name, data_args.eval_split_name,
                                                    feature_extractor, tokenizer, **load)
    logger.info(train_report.summary("train"))
    logger.info(eval_report.summary("eval"))
    if train_report.kept == 0:
        raise ValueError("no training utterance survived preparation: " + train_report.summary("train"))

    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    augmentation = None
    if data_args.augmentation_config:
        augmentation_config = load_augmentation_config(data_args.augmentation_config, training_args.seed,
                                                       data_args.noise_dir)
        augmentation = WaveformAugmentation(augmentation_config, feature_extractor.sampling_rate,
                                            log=logger.info)
        if training_args.world_size > 1:
            # Every process would otherwise draw the same augmentations (for different utterances, but in lockstep).
            augmentation.reseed([augmentation_config.seed, training_args.process_index])
        logger.info("augmentation (training batches only): %s", json.dumps(augmentation_config.to_dict()))
    # The training collator alone augments: PerDepthCTCTrainer evaluates with its `for_evaluation()` copy.
    collator = DataCollatorCTCWithPadding(
        feature_extractor=feature_extractor, tokenizer=tokenizer,
        waveform_transform=augmentation if augmentation is not None and augmentation.config.enabled else None,
        # join_batch also draws the per-batch speed and silences when length_draws is "batch".
        batch_transform=(augmentation.join_batch if augmentation is not None
                         and (augmentation.config.long_form_probability > 0
                              or augmentation.config.length_draws == "batch") else None))
    trainer = PerDepthCTCTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=processor,  # checkpoints then hold the tokenizer and features too
        tokenizer=tokenizer,
        eval_depths=data_args.eval_depths,
    )
    if training_args.do_train:
        try:
            check_run_unfinished(trainer, resumed)
        except FinishedRunError as error:
            parser.error(str(error))
    # Written once the run is known to train: a refused run leaves its folder as it was.
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        save_processor(feature_extractor, tokenizer, training_args.output_dir)
        if augmentation is not None:
            with open(os.path.join(training_args.output_dir, "augmentation.json"), "w", encoding="utf-8") as f:
                json.dump(augmentation.config.to_dict(), f, indent=2)
    logger.info("model: %s, %s parameters", model.config.encoder_type, f"{model.num_parameters():,d}")
    if augmentation is not None:
        augmentation_state = AugmentationStateCallback(augmentation, rank=training_args.process_index)
        trainer.add_callback(augmentation_state)
        if resumed:
            augmentation_state.restore(str(resumed))

    averaging = None
    if training_args.average_checkpoints and training_args.do_train:
        metric = metric_key(training_args.metric_for_best_model)
        greater = (training_args.greater_is_better if training_args.greater_is_better is not None
                   else not metric.endswith("loss"))
        averaging = KeepBestWeightsCallback(training_args.output_dir, training_args.average_checkpoints, metric,
                                            greater)
        if training_args.should_save:
            # Snapshots after the checkpoint resumed from belong to steps this run trains again.
            averaging.forget_after(checkpoint_step(str(resumed)) if resumed else 0)
        trainer.add_callback(averaging)

    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint or last_checkpoint)
        if averaging is not None:
            adopt_average_if_better(trainer, averaging)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        if collator.skipped:  # counted here only without dataloader workers; workers log each skip
            logger.warning("training batches left out %s", dict(collator.skipped))

    splits = [(data_args.eval_split_name, eval_set, eval_report)]
    if data_args.test_split_name:
        with training_args.main_process_first(desc="test preparation"):
            # The test split is always measured whole: --max_eval_samples only bounds evaluation during training.
            test_set, test_report = load_prepared_split(data_args.dataset_name, data_args.test_split_name,
                                                        feature_extractor, tokenizer, **dict(load, max_samples=None))
        logger.info(test_report.summary("test"))
        splits.append((data_args.test_split_name, test_set, test_report))

    records = {}
    for split_name, dataset, _ in splits:
        metrics = trainer.evaluate(dataset, metric_key_prefix=split_name)
        trainer.log_metrics(split_name, metrics)
        rates = {d: {"wer": metrics[f"{split_name}_wer_d{d}"], "cer": metrics[f"{split_name}_cer_d{d}"]}
                 for d in trainer.eval_depths}
        records[split_name] = rates
    if trainer.is_world_process_zero():
        model = trainer.model
        schedule = model.pruning_schedule()
        # The last split given (test when there is one) is the headline; all splits are kept in the file.
        headline_split, headline_set, headline_report = splits[-1]
        record = write_per_depth_metrics(
            os.path.join(training_args.output_dir, "per_depth_metrics.json"), model, records[headline_split],
            headline_split, schedule,
            extra={"utterances": len(headline_set), **headline_report.scoring_record(),
                   "all_splits": {s: {str(d): {k: round(100 * v, 2) for k, v in r.items()} for d, r in rates.items()}
                                  for s, rates in records.items()},
                   "scoring": {s: report.scoring_record() for s, _, report in splits},
                   "train_hours": round(train_report.hours, 3)})
        print(format_depth_table(record))
        best = best_wer_per_depth(trainer.state.log_history, trainer.eval_depths)
        if best:
            print("best validation WER per depth during training: "
                  + ", ".join(f"d{d}={100 * w:.1f}%" for d, w in best.items()))
        if push_to_hub:
            push_run(training_args, data_args, publish_args, argv)
    return trainer


def push_run(training_args: PrunableCTCTrainingArguments, data_args: DataArguments,
             publish_args: PublishArguments,
             argv: Optional[List[str]]) -> dict:
    """Publish the trained model with its per-depth card; uploads when a token and the network are there."""
    output_dir = training_args.output_dir
    repo_id = training_args.hub_model_id or os.path.basename(os.path.normpath(output_dir))
    if publish_args.card_info:
        with open(publish_args.card_info) as f:
            card_kwargs = json.load(f)
    else:
        dataset = data_args.dataset_name + (f" ({data_args.data_dir})" if data_args.data_dir else "")
        card_kwargs = dict(model_name=repo_id.split("/")[-1], dataset_name=dataset,
                           dataset_type=data_args.dataset_name,
                           training_command=" ".join(["python", "training/train.py", *(argv or sys.argv[1:])]))
    result = publish(output_dir, publish_args.publish_dir or os.path.join(output_dir, "hub_repo"), repo_id,
                     card_kwargs, private=bool(training_args.hub_private_repo), token=training_args.hub_token)
    print(outcome(result))
    return result


def best_wer_per_depth(log_history, depths):
    """Lowest `eval_wer_d{k}` seen in the training log, per depth."""
    best = {}
    for entry in log_history:
        for depth in depths:
            value = entry.get(f"eval_wer_d{depth}")
            if value is not None:
                best[depth] = min(best.get(depth, value), value)
    return best


if __name__ == "__main__":
    main()
