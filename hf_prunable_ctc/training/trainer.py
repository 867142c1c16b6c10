"""`Trainer` that evaluates every requested depth in one pass over the eval set.

Metrics are logged as `eval_wer_d{k}` / `eval_cer_d{k}` (fractions), plus `eval_wer` / `eval_cer` for the full
depth so `metric_for_best_model="wer"` works as with any CTC model. Predictions are gathered across processes by
the stock evaluation loop, so the same code runs under torchrun / accelerate.

Two data settings are fixed here rather than left to the user:
- `remove_unused_columns` is turned off: the Trainer would otherwise drop `audio` (on-the-fly features) and
  `input_length` (the column `group_by_length` sorts by, whose absence makes the sampler fetch every example to
  measure it) because the model's `forward` does not name them. The collator picks the keys it needs.
- evaluation uses the collator's `for_evaluation()` copy, so the training-time `waveform_transform` and
  `batch_transform` (augmentation and long form, `train.py --augmentation_config`) never touch evaluation audio.

With `--feature_device model` the collator returns padded waveforms and every training and evaluation step first
computes their features on the model's device (`data.device_features.WaveformFeatures`, float32 outside autocast);
the model then applies SpecAugment there as usual. Nothing else changes: samplers, gradient accumulation, resuming
and DDP see the same batches, with waveforms where features were.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..evaluation.depth_evaluation import (check_eval_depths, default_eval_depths, per_depth_error_rates,
                                           per_depth_greedy_ids)
from ..data.device_features import WAVEFORMS_KEY, WaveformFeatures
from ..json_files import write_json

logger = logging.getLogger(__name__)

FEATURE_DEVICES = ("loader", "model")


@dataclass
class PrunableCTCTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus checkpoint averaging (see `hf_prunable_ctc.training.averaging`) and continuing another
    run's checkpoint under new settings (`adopt_checkpoint`)."""

    average_checkpoints: int = field(default=0, metadata={
        "help": "Keep the weights of the N best evaluations (by --metric_for_best_model) in <output_dir>/averaging/ "
                "and, after training, average them (ESPnet's keep_nbest_models, icefall's --avg); the average "
                "becomes the final model only if it scores better on the evaluation split. 0: off. Needs "
                "evaluations during training; with several nodes, a shared output_dir (as load_best_model_at_end)."})

    continue_from_checkpoint: Optional[str] = field(default=None, metadata={
        "help": "Start from another run's checkpoint (weights, optimizer, learning-rate schedule, step) and go on "
                "under this run's settings, e.g. with augmentation switched on: the checkpoint is copied into "
                "output_dir, without its best-model record. Used only while output_dir has no checkpoint of its own "
                "(later launches resume from those)."})

    encoder_learning_rate: Optional[float] = field(default=None, metadata={
        "help": "Peak learning rate of the encoder (front end and layers), on the same schedule, while the final norm, "
                "CTC head and self-conditioning projection take --learning_rate: fine-tuning a pretrained encoder "
                "under a new head (hf-prunable-ctc from-whisper) moves the pretrained layers less than the new ones. "
                "Default: --learning_rate for every parameter."})

    freeze_layers: int = field(default=0, metadata={
        "help": "Freeze the front end and the first N encoder layers (no gradient, no update; backward stops above "
                "them): keeps a pretrained encoder's lower layers as pretrained. Exits at or below layer N then "
                "train only through the shared final norm and head. 0: nothing frozen."})

    feature_device: str = field(default="loader", metadata={
        "help": "Where log-mel features of audio batches are computed: 'loader' (by the collator, in the dataloader "
                "workers; right for CPU training) or 'model' (the workers decode, augment and pad waveforms only; "
                "the features, then SpecAugment, are computed in each training and evaluation step on the model's "
                "device, as one batched operation, so a GPU is not held up by CPU feature extraction). Applies to "
                "splits of audio (train.py --feature_mode on_the_fly or waveforms); cached features stay as they are."})

    cpu_threads: int = field(default=0, metadata={
        "help": "Threads torch uses for operations on the CPU (torch.set_num_threads). A matrix product splits its "
                "sums by thread, so the thread count changes the order of float additions, and a small model "
                "trained from scratch turns those last-bit differences into different weights: a fixed count makes "
                "a CPU run repeat the same numbers on machines with different numbers of cores. 0: torch's default "
                "(one per core)."})

    def __post_init__(self):
        super().__post_init__()
        if self.cpu_threads < 0:
            raise ValueError(f"--cpu_threads must be >= 0 (0: torch's default), got {self.cpu_threads}")
        if self.feature_device not in FEATURE_DEVICES:
            raise ValueError(f"--feature_device must be one of {', '.join(FEATURE_DEVICES)}, got "
                             f"{self.feature_device!r}")
        if self.encoder_learning_rate is not None and self.encoder_learning_rate < 0:
            raise ValueError(f"--encoder_learning_rate must be >= 0, got {self.encoder_learning_rate}")
        if self.freeze_layers < 0:
            raise ValueError(f"--freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.continue_from_checkpoint and self.resume_from_checkpoint:
            raise ValueError("give --continue_from_checkpoint (another run's checkpoint, copied) or "
                             "--resume_from_checkpoint (this run's), not both")
        if self.average_checkpoints < 0 or self.average_checkpoints == 1:
            raise ValueError(f"--average_checkpoints must be 0 (off) or >= 2, got {self.average_checkpoints}")
        if self.average_checkpoints and self.eval_strategy == "no":
            raise ValueError("--average_checkpoints keeps the best evaluations' weights: set --eval_strategy "
                             "steps or epoch")


class PerDepthCTCTrainer(Trainer):
    """`Trainer` with per-depth evaluation (`eval_wer_d{k}`), evaluation without augmentation, all data columns
    kept for the collator, and steps with non-finite gradients skipped (`SkipNonFiniteGradientsCallback`).

    Args (beyond the `Trainer`'s):
        tokenizer: the CTC tokenizer that decodes predictions and labels for WER/CER.
        eval_depths: depths to evaluate; default every intermediate-CTC layer and the full depth.
    """

    # Computes the features of waveform batches in each step; set by __init__ for --feature_device model (a class
    # default, so subclasses with their own __init__ keep the loader's features).
    waveform_features: Optional[WaveformFeatures] = None

    def __init__(self, *args, tokenizer, eval_depths: Optional[Sequence[int]] = None, **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None:
            training_args.remove_unused_columns = False  # see the module docstring
            train_dataset = kwargs.get("train_dataset")
            columns = getattr(train_dataset, "column_names", None) or []
            if (getattr(training_args, "train_sampling_strategy", None) == "group_by_length"
                    and training_args.length_column_name not in columns and "input_length" in columns):
                # Without its length column the sampler would fetch (and, on the fly, decode) every example.
                logger.info("group_by_length: sorting by the 'input_length' column (no %r column)",
                            training_args.length_column_name)
                training_args.length_column_name = "input_length"
        super().__init__(*args, **kwargs)
        self.nonfinite_gradients = SkipNonFiniteGradientsCallback()
        if not self.args.fp16:  # fp16's gradient scaler skips such steps itself
            self.add_callback(self.nonfinite_gradients)
        config = self.model.config
        self.ctc_tokenizer = tokenizer
        self.eval_depths = check_eval_depths(eval_depths or default_eval_depths(config), config.num_hidden_layers)
        self.compute_metrics = self.per_depth_metrics
        freeze_lower_layers(self.model, getattr(self.args, "freeze_layers", 0))
        if getattr(self.args, "feature_device", "loader") == "model":
            collator = self.data_collator
            if not hasattr(collator, "return_waveforms"):
                raise ValueError("--feature_device model needs a DataCollatorCTCWithPadding (it returns the padded "
                                 f"waveforms whose features the step computes), got {type(collator).__name__}")
            # The same collator object's settings and skip counts, stopping before the features.
            self.data_collator = dataclasses.replace(collator, return_waveforms=True)
            self.waveform_features = WaveformFeatures(collator.feature_extractor)

    def with_features(self, inputs: dict) -> dict:
        """`inputs` (on the model's device) with waveforms replaced by their features and attention mask, when
        `--feature_device model` made the collator return waveforms; otherwise `inputs` as they are."""
        if self.waveform_features is None or WAVEFORMS_KEY not in inputs:
            return inputs
        return self.waveform_features.batch_inputs(inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, self.with_features(inputs), return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def create_optimizer(self, model=None):
        """The stock optimizer, with the encoder's parameters in groups of their own at `--encoder_learning_rate`
        (the schedule scales every group's learning rate alike)."""
        encoder_lr = getattr(self.args, "encoder_learning_rate", None)
        if encoder_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = {}
        for name, parameter in opt_model.named_parameters():
            if parameter.requires_grad:
                lr = self.args.learning_rate if is_head_parameter(name) else encoder_lr
                weight_decay = self.args.weight_decay if name in decay else 0.0
                groups.setdefault((lr, weight_decay), []).append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls([{"params": params, "lr": lr, "weight_decay": weight_decay}
                                        for (lr, weight_decay), params in groups.items()], **optimizer_kwargs)
        return self.optimizer

    @contextlib.contextmanager
    def _evaluation_collator(self):
        training_collator = self.data_collator
        if hasattr(training_collator, "for_evaluation"):
            self.data_collator = training_collator.for_evaluation()
        try:
            yield
        finally:
            self.data_collator = training_collator

    def planned_steps(self) -> int:
        """The global step `train()` trains to: `max_steps`, else the epochs times the optimizer steps per epoch,
        counted as the `Trainer` counts them (a last, shorter accumulation still makes a step)."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        steps_per_epoch = max(math.ceil(len(self.get_train_dataloader()) / self.args.gradient_accumulation_steps), 1)
        return math.ceil(self.args.num_train_epochs * steps_per_epoch)

    def get_eval_dataloader(self, eval_dataset=None):
        with self._evaluation_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._evaluation_collator():
            return super().get_test_dataloader(test_dataset)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self.with_features(self._prepare_inputs(inputs))
        model = self.accelerator.unwrap_model(model)
        labels = inputs.get("labels")
        with torch.no_grad():
            ids, loss = per_depth_greedy_ids(
                model, inputs["input_features"], inputs.get("attention_mask"), self.eval_depths,
                model.pruning_schedule(), labels=labels,
            )
        if prediction_loss_only:
            return loss, None, None
        # (batch, frames, depths): the evaluation loop pads the frame axis across batches with -100.
        return (loss.detach() if loss is not None else None), ids, labels

    def per_depth_metrics(self, eval_prediction):
        rates = per_depth_error_rates(eval_prediction.predictions, eval_prediction.label_ids, self.ctc_tokenizer,
                                      self.eval_depths)
        metrics = {}
        for depth, r in rates.items():
            metrics[f"wer_d{depth}"] = r["wer"]
            metrics[f"cer_d{depth}"] = r["cer"]
        full = rates[max(self.eval_depths)]
        metrics["wer"], metrics["cer"] = full["wer"], full["cer"]
        return metrics


AUGMENTATION_STATE = "augmentation_state-{rank}.json"


HEAD_PARAMETERS = re.compile(r"^(lm_head|model\.final_norm|model\.conditioning_projection)\.")


def is_head_parameter(name: str) -> bool:
    """Whether `name` (of `PrunableCTCForCTC.named_parameters()`) belongs to the output side that a conversion
    builds new (final norm, CTC head, self-conditioning projection) rather than to the encoder."""
    return HEAD_PARAMETERS.match(name) is not None


def freeze_lower_layers(model, num_layers: int) -> None:
    """Freeze the front end and encoder layers 1..`num_layers` of a `PrunableCTCForCTC` (0: nothing)."""
    if not num_layers:
        return
    encoder = getattr(model, "model", None)
    if encoder is None or not hasattr(encoder, "subsampling") or not hasattr(encoder, "layers"):
        raise ValueError(f"--freeze_layers works on PrunableCTCForCTC models, not {type(model).__name__}")
    if num_layers > len(encoder.layers):
        raise ValueError(f"--freeze_layers {num_layers}: the model has {len(encoder.layers)} layers")
    for module in [encoder.subsampling, *encoder.layers[:num_layers]]:
        module.requires_grad_(False)


class AugmentationStateCallback(TrainerCallback):
    """Save the waveform augmentation's random state into every checkpoint, so a resumed run draws what an
    uninterrupted one would have (the `Trainer` restores torch's, numpy's and Python's own generators, but the
    augmentation has its own). Exact with `dataloader_num_workers=0`, where the collator augments in this process
    right before each step; with workers, each worker reseeds itself from torch's worker seed instead (see
    `WaveformAugmentation`), and this state is not what they draw from. `restore` reads it back."""

    def __init__(self, augmentation, rank: int = 0):
        self.augmentation = augmentation
        self.name = AUGMENTATION_STATE.format(rank=rank)

    def on_save(self, args, state, control, **unused):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            write_json(os.path.join(folder, self.name), self.augmentation.state_dict())

    def restore(self, checkpoint: str) -> bool:
        """Load the state saved in `checkpoint`; False (and a warning) when it has none (an older checkpoint)."""
        path = os.path.join(checkpoint, self.name)
        if not os.path.isfile(path):
            logger.warning("%s has no %s: the augmentation restarts from its seed", checkpoint, self.name)
            return False
        with open(path) as f:
            self.augmentation.load_state_dict(json.load(f))
        return True


class SkipNonFiniteGradientsCallback(TrainerCallback):
    """Skip an optimizer step whose gradients hold NaN or inf, instead of writing NaN into every weight.

    In fp16 the `Trainer`'s gradient scaler already does this (and this callback stays out of its way); in fp32 and
    bf16 nothing does: one bad batch (an overflow, a corrupt feature) would make `clip_grad_norm_` scale every
    gradient by NaN and AdamW write NaN into the weights and its moments. Dropping the gradients (`grad = None`)
    makes the optimizer leave every parameter and its state as they were; the learning-rate schedule still
    advances, as it does when the scaler skips a step. Under DDP the gradients are already all-reduced, so every
    rank skips the same steps. Skipped steps are counted in `skipped_steps` and logged as warnings.
    """

    def __init__(self):
        self.skipped_steps = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **unused):
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        if not gradients:
            return
        # One reduction and one host sync per step, as the Trainer's own gradient-norm logging does.
        norms = torch.stack([g.detach().float().norm() for g in gradients])
        if bool(torch.isfinite(norms).all()):
            return
        for parameter in model.parameters():
            parameter.grad = None
        self.skipped_steps += 1
        logger.warning("step %d: non-finite gradients, optimizer step skipped (%d skipped so far)",
                       state.global_step + 1, self.skipped_steps)


def is_complete_checkpoint(folder: str) -> bool:
    """Whether a `checkpoint-N` folder was written to the end: it has model weights and a readable
    `trainer_state.json`, which the `Trainer` writes after the weights, optimizer, scheduler and RNG states."""
    state = os.path.join(folder, "trainer_state.json")
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not os.path.isfile(state) or not any(os.path.isfile(os.path.join(folder, w)) for w in weights):
        return False
    try:
        with open(state) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def checkpoint_step(folder: str) -> int:
    """The global step a checkpoint folder was saved at (from its `trainer_state.json`)."""
    with open(os.path.join(folder, "trainer_state.json")) as f:
        return int(json.load(f)["global_step"])


def adopt_checkpoint(source: str, output_dir: str) -> str:
    """Copy another run's complete checkpoint into `output_dir` as `checkpoint-<step>` and return its path.

    The copy's `trainer_state.json` loses its best-model record (the source run's best metric and folder): this run
    keeps its own best, and `load_best_model_at_end` never loads a model of the other run. Augmentation states are
    left out (this run's augmentation starts from its seed). The copy is made under a temporary name and renamed,
    so an interrupted copy is never resumed from; the source is not modified.
    """
    if not is_complete_checkpoint(source):
        raise ValueError(f"--continue_from_checkpoint {source}: not a complete checkpoint folder (model weights and "
                         "trainer_state.json)")
    target = os.path.join(output_dir, f"checkpoint-{checkpoint_step(source)}")
    if os.path.exists(target):
        raise ValueError(f"{target} exists already: resume this run from it instead")
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(AUGMENTATION_STATE.format(rank="*")))
    state_path = os.path.join(partial, "trainer_state.json")
    with open(state_path) as f:
        state = json.load(f)
    state.update(best_metric=None, best_model_checkpoint=None, best_global_step=None)
    with open(state_path, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(partial, target)
    return target


def last_complete_checkpoint(output_dir: str) -> Optional[str]:
    """The highest-numbered complete `checkpoint-N` in `output_dir` (see `is_complete_checkpoint`), or None.

    A run killed while saving leaves a half-written `checkpoint-N` (the `Trainer` writes in place), which
    `transformers.trainer_utils.get_last_checkpoint` would pick; it is skipped here, with a warning, in favour of
    the previous complete one. Nothing is deleted.
    """
    if not os.path.isdir(output_dir):
        return None
    numbered = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            numbered.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, folder in sorted(numbered, reverse=True):
        if is_complete_checkpoint(folder):
            return folder
        logger.warning("%s is incomplete (a run stopped while saving it?): not resuming from it", folder)
    return None


class FinishedRunError(ValueError):
    """The output folder holds a run that already reached the step this one would train to."""


def finished_step(output_dir: str) -> Optional[int]:
    """The global step of the finished run in `output_dir`, or None: train.py saves the final weights and then the
    run's `trainer_state.json` at the top of the folder, as in a complete checkpoint (see `is_complete_checkpoint`)."""
    return checkpoint_step(output_dir) if is_complete_checkpoint(output_dir) else None


def check_run_unfinished(trainer: "PerDepthCTCTrainer", checkpoint: Optional[str]) -> None:
    """Raise `FinishedRunError` when `trainer.train(resume_from_checkpoint=checkpoint)` would train nothing.

    That is when the finished run in the output folder got as far as `trainer.planned_steps()` already, or the
    checkpoint is past it: the `Trainer` would resume, run no step, report a training loss of 0.0, save the
    checkpoint's weights as the final model and print the old results again. The message says how to start afresh
    (a new `--output_dir`) or train further (a larger `--max_steps`, resumed from `checkpoint`).
    """
    output_dir = trainer.args.output_dir
    finished = finished_step(output_dir) if os.path.isdir(output_dir) else None
    resumed = checkpoint_step(checkpoint) if checkpoint else None
    if finished is None and resumed is None:
        return
    planned = trainer.planned_steps()
    if finished is not None and planned <= finished:
        reached = finished
    elif resumed is not None and planned < resumed:
        reached = resumed
    else:
        return
    further = (f"give a --max_steps above {reached} to train it further from {checkpoint}" if checkpoint else
               "it has no checkpoint to train further from")
    raise FinishedRunError(
        f"{output_dir} holds a complete run, trained to step {reached}; this run would stop at step {planned}, "
        f"so it would train nothing. To train from scratch, give a new --output_dir; {further}.")


def recipe_arguments(argv: Sequence[str]) -> List[str]:
    """Command-line arguments for `HfArgumentParser` from ``[RECIPE.json, --flag, value, ...]``.

    The recipe's fields become ``--key value`` flags (lists as several values, booleans as true/false, dicts as
    JSON) placed before the command line's own, so a flag given on the command line overrides the file
    (argparse keeps the last occurrence). Without a leading ``.json`` argument, `argv` is returned as is.
    """
    argv = list(argv)
    if not argv or not argv[0].endswith(".json"):
        return argv
    path, overrides = argv[0], argv[1:]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no recipe file {path!r}: give a JSON file of training arguments "
                                "(training/recipes/*.json)")
    with open(path) as f:
        try:
            recipe = json.load(f)
        except ValueError as error:
            raise ValueError(f"recipe {path} is not valid JSON: {error}") from error
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe {path} must hold a JSON object of argument names and values")
    tokens = []
    for key, value in recipe.items():
        if isinstance(value, list):
            tokens += [f"--{key}", *map(str, value)]
        elif isinstance(value, bool):
            tokens += [f"--{key}", str(value).lower()]
        elif isinstance(value, dict):
            tokens += [f"--{key}", json.dumps(value)]
        elif value is not None:
            tokens += [f"--{key}", str(value)]
    return tokens + overrides
