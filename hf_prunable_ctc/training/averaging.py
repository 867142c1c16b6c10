"""Checkpoint averaging: keep the weights of the N best evaluations of a run and average them after training.

ESPnet (`--keep_nbest_models` + `average_nbest_models`), icefall (`--avg`) and NeMo (`checkpoint_averaging.py`)
all ship a model whose weights are the mean of several of its last or best checkpoints: it usually beats every
single one of them by a few percent relative WER, at no training cost. The `Trainer` keeps whole checkpoints
(weights, optimizer, scheduler: ~3x the weights) only as many as `save_total_limit` allows, so
`KeepBestWeightsCallback` keeps its own weights-only snapshots, `<output_dir>/averaging/step-<N>.safetensors`,
of the N best evaluations by `metric_for_best_model`, with an index that survives a resumed run.
`average_state_dicts` then averages them. `train.py --average_checkpoints N` does both and keeps the average only
when it scores better on the evaluation split than the model it would replace.
"""

import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from ..json_files import write_json

logger = logging.getLogger(__name__)

SNAPSHOT_FOLDER = "averaging"
INDEX_FILE = "index.json"


def metric_key(metric_for_best_model: Optional[str]) -> str:
    """The key of the evaluation metric in the `Trainer`'s metrics, as `load_best_model_at_end` reads it."""
    name = metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


class KeepBestWeightsCallback(TrainerCallback):
    """Keep weights-only snapshots of the `keep` best evaluations (by `metric`) in `<output_dir>/averaging/`.

    Each snapshot is written to a temporary file and renamed, then the index (`index.json`: step, metric value and
    file of each kept snapshot) is rewritten the same way, so a run killed at any moment leaves a readable index
    whose files all exist. Only the main process writes. Evaluations of other splits (metrics without `metric`,
    e.g. `test_wer`) and non-finite values are ignored.

    Args:
        output_dir: the run's output folder.
        keep: how many snapshots to keep (N >= 1).
        metric: key in the evaluation metrics, e.g. "eval_wer" (see `metric_key`).
        greater_is_better: whether a higher value is better (False for WER and loss).
    """

    def __init__(self, output_dir: str, keep: int, metric: str = "eval_wer", greater_is_better: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = os.path.join(output_dir, SNAPSHOT_FOLDER)
        self.keep = keep
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.entries = read_index(self.folder)

    def forget_after(self, step: int) -> None:
        """Drop snapshots taken after `step`: a run resumed from `checkpoint-<step>` retrains those steps (and a
        fresh run, `step=0`, starts with none)."""
        dropped = [e for e in self.entries if e["step"] > step]
        if dropped:
            self.entries = [e for e in self.entries if e["step"] <= step]
            self._write_index()
            self._delete(dropped)
            logger.info("checkpoint averaging: dropped %d snapshot(s) after step %d", len(dropped), step)

    def ranked(self, entries: Sequence[dict]) -> List[dict]:
        """Best first; among equal values, the later step first."""
        sign = -1.0 if self.greater_is_better else 1.0
        return sorted(entries, key=lambda e: (sign * e["metric"], -e["step"]))

    def on_evaluate(self, args, state, control, metrics=None, model=None, **unused):
        if not state.is_world_process_zero or not metrics or model is None:
            return
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        step = int(state.global_step)
        candidate = {"step": step, "metric": float(value), "file": f"step-{step}.safetensors"}
        others = [e for e in self.entries if e["step"] != step]
        kept = self.ranked(others + [candidate])[: self.keep]
        if candidate not in kept:
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, candidate["file"])
        # Clones: tied or shared tensors would make safetensors refuse the dict.
        weights = {name: tensor.detach().to("cpu", copy=True).contiguous()
                   for name, tensor in unwrap(model).state_dict().items()}
        save_file(weights, path + ".tmp", metadata={"step": str(step), self.metric: repr(float(value))})
        os.replace(path + ".tmp", path)
        dropped = [e for e in others if e not in kept]
        self.entries = sorted(kept, key=lambda e: e["step"])
        self._write_index()
        self._delete(dropped)

    def paths(self) -> List[str]:
        """The kept snapshots' files, best first."""
        return [os.path.join(self.folder, e["file"]) for e in self.ranked(self.entries)]

    def _write_index(self) -> None:
        write_json(os.path.join(self.folder, INDEX_FILE),
                   {"metric": self.metric, "greater_is_better": self.greater_is_better, "snapshots": self.entries},
                   indent=2)

    def _delete(self, entries: Sequence[dict]) -> None:
        for entry in entries:
            path = os.path.join(self.folder, entry["file"])
            if os.path.exists(path):
                os.remove(path)


def read_index(folder: str) -> List[dict]:
    """The snapshots listed in `folder/index.json` whose files exist (none when there is no index)."""
    path = os.path.join(folder, INDEX_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        entries = json.load(f)["snapshots"]
    missing = [e["file"] for e in entries if not os.path.isfile(os.path.join(folder, e["file"]))]
    if missing:
        logger.warning("checkpoint averaging: %s lists missing snapshots %s; ignoring them", path, missing)
    return [e for e in entries if e["file"] not in missing]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP/FSDP-style wrappers (`.module`), whose state-dict keys the saved model has."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def average_state_dicts(state_dicts: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (accumulated in float64, returned in each tensor's dtype);
    integer tensors (e.g. BatchNorm's `num_batches_tracked`) are taken from the first state dict.

    Raises:
        ValueError: no state dicts, or they differ in keys or shapes.
    """
    if not state_dicts:
        raise ValueError("nothing to average: no state dicts")
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=1):
        if other.keys() != first.keys():
            raise ValueError(f"state dict {index} has other keys than the first: "
                             f"{sorted(set(other) ^ set(first))[:5]}")
        shapes = [k for k in first if other[k].shape != first[k].shape]
        if shapes:
            raise ValueError(f"state dict {index} differs in shape from the first at {shapes[:5]}")
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            total = torch.zeros(tensor.shape, dtype=torch.float64)
            for state in state_dicts:
                total += state[name].to(torch.float64)
            averaged[name] = (total / len(state_dicts)).to(tensor.dtype)
        else:
            averaged[name] = tensor.clone()
    return averaged


def average_snapshots(paths: Sequence[str]) -> Dict[str, torch.Tensor]:
    """`average_state_dicts` of safetensors files (the first one's integer tensors are kept)."""
    return average_state_dicts([load_file(path) for path in paths])


def adopt_average_if_better(trainer, callback: KeepBestWeightsCallback) -> dict:
    """After `trainer.train()`: average the snapshots `callback` kept and keep the average in `trainer.model` only if
    it scores better than the model there now (the best checkpoint with `load_best_model_at_end`, else the last
    one) on the trainer's evaluation split. Writes and returns `<output_dir>/averaging/result.json`.

    Every process runs this (evaluation is collective) and reads the snapshots from `output_dir`.
    """
    trainer.accelerator.wait_for_everyone()  # the main process may still be writing the last snapshot
    callback.entries = read_index(callback.folder)  # other processes kept no list of their own
    entries = callback.ranked(callback.entries)
    suffix = callback.metric[len("eval_"):]
    result = {"metric": callback.metric, "snapshots": entries}
    if len(entries) < 2:
        result.update(adopted=False, reason=f"{len(entries)} snapshot(s) kept: nothing to average")
        logger.warning("checkpoint averaging: %s", result["reason"])
    else:
        model = unwrap(trainer.model)
        state = trainer.state
        if trainer.args.load_best_model_at_end and state.best_metric is not None:
            # The best checkpoint is what `train()` left in the model; evaluation is deterministic, so its logged
            # value is what a new evaluation would give.
            before = float(state.best_metric)
        else:
            before = trainer.evaluate(metric_key_prefix="before_averaging")[f"before_averaging_{suffix}"]
        current = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(average_snapshots(callback.paths()))
        metrics = trainer.evaluate(metric_key_prefix="averaged")
        after = metrics[f"averaged_{suffix}"]
        better = after > before if callback.greater_is_better else after < before
        if not better:
            model.load_state_dict(current)
        result.update(adopted=bool(better), metric_before=before, metric_averaged=after,
                      averaged_metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        logger.info("checkpoint averaging of steps %s: %s %.4f -> %.4f: %s", [e["step"] for e in entries],
                    callback.metric, before, after, "averaged weights kept" if better else "kept the single model")
    if trainer.is_world_process_zero():
        os.makedirs(callback.folder, exist_ok=True)
        write_json(os.path.join(callback.folder, "result.json"), result, indent=2)
    return result
