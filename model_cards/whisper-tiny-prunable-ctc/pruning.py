"""Pruning schedules: which layers to keep at each depth.

A *pruning schedule* maps every depth k in 1..L to the sorted list of (1-based) layers to keep. A *strategy* is a
function `strategy(model, **kwargs) -> schedule`; `PrunableCTCForCTC.prune_to(k, strategy=name)` looks the name up
in `PRUNING_STRATEGIES` and keeps `schedule[k]`. Data-driven strategies (greedy search, SVCCA) register themselves
here from their own modules, so this file stays free of data code and can travel with the weights as remote code.
"""

from typing import Callable, Dict, List, Optional, Sequence

PruningSchedule = Dict[int, List[int]]
PRUNING_STRATEGIES: Dict[str, Callable[..., PruningSchedule]] = {}


def register_pruning_strategy(name: str):
    """Decorator adding `fn(model, **kwargs) -> PruningSchedule` to `PRUNING_STRATEGIES` under `name`."""

    def register(fn):
        PRUNING_STRATEGIES[name] = fn
        return fn

    return register


def pruned_note(kept_layers: Optional[Sequence[int]]) -> str:
    """Explanation appended to range errors of a pruned model: the weights of the layers it dropped are gone."""
    if kept_layers is None or list(kept_layers) == list(range(1, len(kept_layers) + 1)):
        return ""
    return (f"; this model was pruned: its {len(kept_layers)} layers are layers {list(kept_layers)} of the trained "
            "model and the weights of the other layers are gone (load the unpruned checkpoint to run them)")


def validate_layer_selection(layers: Sequence[int], num_layers: int, kept_layers: Optional[Sequence[int]] = None,
                             require_order: bool = False) -> List[int]:
    """Check a set of 1-based layer indices against a model of `num_layers` layers; return them sorted.

    Raises `ValueError` for an empty selection, non-integers, duplicates or indices outside `[1, num_layers]`, and
    with `require_order` for indices not in increasing order (layers always run in model order, so `[4, 2]` would
    silently mean `[2, 4]`). `kept_layers` (the model's `config.kept_layers`) explains range errors of pruned models.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("at least one layer must be kept (depth 0 is not a model)")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"layer indices must be integers, got {layers}")
    duplicates = sorted({i for i in layers if layers.count(i) > 1})
    if duplicates:
        raise ValueError(f"layer indices {duplicates} are given more than once in {layers}")
    out_of_range = [i for i in layers if not 1 <= i <= num_layers]
    if out_of_range:
        raise ValueError(f"layer indices {out_of_range} are outside [1, {num_layers}] (layers are 1-based)"
                         + pruned_note(kept_layers))
    if require_order and layers != sorted(layers):
        raise ValueError(f"layers must be listed in increasing order, got {layers}: layers always run in model "
                         f"order, so pass {sorted(layers)}")
    return sorted(layers)


def validate_depth(depth: int, num_layers: int, kept_layers: Optional[Sequence[int]] = None) -> int:
    """Check a requested depth against a model of `num_layers` layers (`ValueError` unless 1 <= depth <= L).

    `kept_layers` (the model's `config.kept_layers`) explains the error when a pruned model is asked for more.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an integer, got {depth!r}")
    if not 1 <= depth <= num_layers:
        raise ValueError(f"depth must be in [1, {num_layers}] (the model has {num_layers} layers), got {depth}"
                         + pruned_note(kept_layers))
    return depth


def validate_schedule(schedule: PruningSchedule, num_layers: int) -> PruningSchedule:
    """Check that `schedule[k]` lists k valid layers for each depth it names; return it with int keys."""
    checked = {}
    for depth, layers in schedule.items():
        depth = validate_depth(int(depth), num_layers)
        layers = validate_layer_selection(layers, num_layers)
        if len(layers) != depth:
            raise ValueError(f"pruning schedule entry for depth {depth} lists {len(layers)} layers")
        checked[depth] = layers
    return checked


@register_pruning_strategy("top")
def top_schedule(model) -> PruningSchedule:
    """Keep the first k layers: the outputs of layer k feed the shared CTC head directly (intermediate CTC)."""
    num_layers = model.config.num_hidden_layers
    return {k: list(range(1, k + 1)) for k in range(1, num_layers + 1)}


def default_schedule(config) -> PruningSchedule:
    """The schedule a model uses when no strategy is named: `config.pruning_schedule`, "top" for depths it lacks."""
    num_layers = config.num_hidden_layers
    schedule = {k: list(range(1, k + 1)) for k in range(1, num_layers + 1)}
    schedule.update(validate_schedule(config.pruning_schedule or {}, num_layers))
    return schedule


def evenly_spaced_layers(depth: int, num_layers: int) -> List[int]:
    """k layers spread evenly over 1..L, always ending with the last layer (LayerDrop's "every other" for k=L/2)."""
    validate_depth(depth, num_layers)
    # Layer round(i * L / k) for i = 1..k: for L=8, k=4 gives 2,4,6,8; it is strictly increasing since L >= k.
    return [round(i * num_layers / depth) for i in range(1, depth + 1)]


@register_pruning_strategy("uniform")
def uniform_schedule(model) -> PruningSchedule:
    """Keep k evenly spaced layers, ending with the last one."""
    num_layers = model.config.num_hidden_layers
    return {k: evenly_spaced_layers(k, num_layers) for k in range(1, num_layers + 1)}


PRUNING_STRATEGIES["every_other"] = uniform_schedule


def remap_schedule(schedule: PruningSchedule, keep: Sequence[int]) -> PruningSchedule:
    """Express a schedule in the numbering of a model that kept only `keep` (sorted, 1-based).

    Entries that need a removed layer are dropped; the rest are renumbered 1..len(keep).
    """
    new_index = {old: new for new, old in enumerate(keep, start=1)}
    return {
        int(depth): [new_index[i] for i in layers]
        for depth, layers in schedule.items()
        if int(depth) <= len(keep) and all(i in new_index for i in layers)
    }
