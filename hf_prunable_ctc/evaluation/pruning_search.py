"""Data-driven pruning strategies: greedy search on a dev set, and SVCCA (no labels needed).

Both remove one layer at a time from the full model and record what is left at every depth, so one search gives
the whole schedule (depths 1..L), nested by construction: `schedule[k - 1]` is `schedule[k]` minus one layer.
Importing this module registers them as `prune_to(k, strategy="greedy" | "svcca", batches=...)`.
"""

from typing import Dict, Iterable, List, Mapping, Optional

import torch

from ..modeling_prunable_ctc import ctc_loss
from ..pruning import PruningSchedule, register_pruning_strategy
from .depth_evaluation import batch_to_device, model_device, subnetwork_error_rates
from .svcca import collect_layer_outputs, svcca_similarity

Batch = Mapping[str, torch.Tensor]


def take_utterances(batches: Iterable[Batch], max_utterances: Optional[int]) -> List[Batch]:
    """The first batches holding up to `max_utterances` utterances (the last one cut to fit), as a list.

    The search runs every batch many times: move them once to the model's device with `batch_to_device`."""
    taken, count = [], 0
    for batch in batches:
        if max_utterances is not None and count >= max_utterances:
            break
        size = batch["input_features"].shape[0]
        if max_utterances is not None and count + size > max_utterances:
            batch = {k: v[: max_utterances - count] for k, v in batch.items()}
            size = max_utterances - count
        taken.append(batch)
        count += size
    if not taken:
        raise ValueError("the pruning search needs at least one batch of dev data")
    return taken


@torch.no_grad()
def subnetwork_score(model, batches: List[Batch], layers: List[int], criterion: str = "loss",
                     tokenizer=None) -> float:
    """Dev-set score of the sub-network running `layers` (lower is better).

    criterion "loss": mean final CTC loss per utterance (needs `labels`); "wer": greedy WER (needs `tokenizer`).
    """
    if criterion == "wer":
        return subnetwork_error_rates(model, batches, tokenizer, layers)["wer"]
    total, count = 0.0, 0
    device = model_device(model)
    for batch in batches:
        batch = batch_to_device(batch, device)  # a no-op for batches already there
        out = model(batch["input_features"], batch.get("attention_mask"), layers=layers)
        total += float(ctc_loss(out.logits, out.output_lengths, batch["labels"], model.config.pad_token_id, "sum",
                                True))
        count += batch["labels"].shape[0]
    return total / count


@register_pruning_strategy("greedy")
def greedy_schedule(model, batches: Iterable[Batch] = None, max_utterances: Optional[int] = 200,
                    criterion: str = "loss", tokenizer=None, progress: bool = False) -> PruningSchedule:
    """Remove, one at a time, the layer whose removal hurts the dev set least (Simple-Top-k style greedy search).

    Args:
        batches: dev batches with `input_features`, `attention_mask`, `labels` (e.g. a DataLoader over a
            collated dev split); only the first `max_utterances` utterances are used.
        criterion: "loss" (final CTC loss) or "wer" (needs `tokenizer`).

    Cost: L(L+1)/2 - 1 forward passes over the dev subset for the whole schedule.
    """
    if batches is None:
        raise ValueError("the greedy strategy needs dev data: prune_to(k, strategy='greedy', batches=loader)")
    if criterion not in ("loss", "wer"):
        raise ValueError(f"criterion must be 'loss' or 'wer', got {criterion!r}")
    if criterion == "wer" and tokenizer is None:
        raise ValueError("criterion='wer' needs a tokenizer")
    device = model_device(model)
    dev = [batch_to_device(batch, device) for batch in take_utterances(batches, max_utterances)]

    def removal_costs(current):
        return {layer: subnetwork_score(model, dev, [i for i in current if i != layer], criterion, tokenizer)
                for layer in current}

    return remove_layers_one_at_a_time(model, removal_costs, f"greedy (dev {criterion})", progress)


@register_pruning_strategy("svcca")
def svcca_schedule(model, batches: Iterable[Batch] = None, max_utterances: Optional[int] = 100,
                   max_frames: Optional[int] = 20000, progress: bool = False) -> PruningSchedule:
    """Remove, one at a time, the layer whose output is most similar (SVCCA) to its input: it changes least.

    Needs no labels. After each removal the similarities are measured again on the smaller network, since the
    layers after the removed one now see different inputs. Cost: L - 1 forward passes over the dev subset.
    """
    if batches is None:
        raise ValueError("the svcca strategy needs dev data: prune_to(k, strategy='svcca', batches=loader)")
    dev = take_utterances(batches, max_utterances)

    def removal_costs(current):
        outputs = collect_layer_outputs(SubNetwork(model, current), dev, max_frames=max_frames)
        return {layer: 1.0 - svcca_similarity(outputs[position], outputs[position + 1])
                for position, layer in enumerate(current)}

    return remove_layers_one_at_a_time(model, removal_costs, "svcca (1 - similarity to input)", progress)


def remove_layers_one_at_a_time(model, removal_costs, name: str, progress: bool = False) -> PruningSchedule:
    """From the full model, repeatedly drop the layer with the lowest cost; record what is left at every depth.

    `removal_costs(current_layers) -> {layer: cost}` is measured again after every removal.
    """
    was_training = model.training
    model.eval()
    current = list(range(1, model.config.num_hidden_layers + 1))
    schedule = {len(current): list(current)}
    while len(current) > 1:
        costs = removal_costs(current)
        removed = min(costs, key=costs.get)
        current.remove(removed)
        schedule[len(current)] = list(current)
        if progress:
            print(f"{name}: removed layer {removed} (cost {costs[removed]:.4f}), kept {current}")
    model.train(was_training)
    return schedule


class SubNetwork(torch.nn.Module):
    """A view of `model` that runs only `layers` (for code that calls `model(**batch)`)."""

    def __init__(self, model, layers: List[int]):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, **kwargs):
        return self.model(**kwargs, layers=self.layers)


def store_schedule(model, schedule: Dict[int, List[int]]) -> None:
    """Save a schedule in the model's config, so `prune_to(k)` uses it and it travels with the checkpoint."""
    model.config.pruning_schedule = {str(k): list(v) for k, v in sorted(schedule.items())}
    model.config.check_values()
