"""`make_prunable`: intermediate CTC, stochastic depth and depth on demand for stock Transformers CTC models.

The stock model is wrapped, not rewritten. Each encoder layer takes its place in the stock layer list inside a
`PrunableLayer`, a module that owns it and (1) returns its input unchanged for layers beyond the depth asked for in
this call, (2) applies stochastic depth, (3) records the layer's output. The stock encoder loop, attention masks,
positional embeddings and head all run as written. A `PrunableLayer` gives the stock layer's tensors their stock
names in state dicts, so the config, class and checkpoint format stay the stock ones: `save_pretrained` writes a
checkpoint that `AutoModelForCTC.from_pretrained` and the ASR pipeline load with no remote code, and the wrapper's
`load_state_dict` takes such a checkpoint (what the Trainer resumes from). Where each family keeps its layers,
final norm and head: see `families.py`.

Stochastic depth is our own model's (`modeling_prunable_ctc.stochastic_depth`): a kept layer's whole update
``layer(x) - x`` is rescaled by ``1 / (1 - p)``, so the expected training output is the inference output
``layer(x)``. It needs only the layer's input and output, so it applies to stock layers without copying their code,
post-norm ones included (wav2vec2-base, Conformers ending in a LayerNorm).
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..configuration_prunable_ctc import check_stochastic_depth
from ..modeling_prunable_ctc import PrunableCTCOutput, ctc_loss, layer_skip_probability, stochastic_depth
from .families import CTCFamily, family_of

logger = logging.getLogger(__name__)

CONFIG_KEY = "prunable_ctc"
"""Key of the stock config under which the intermediate-CTC and stochastic-depth settings are saved."""


def check_settings(num_layers: int, interctc_layers: Sequence[int], interctc_weight: float,
                   stochastic_depth_rate: float, stochastic_depth_schedule: str) -> List[int]:
    """Validate the settings against a model of `num_layers` layers; returns the sorted intermediate layers."""
    layers = sorted(set(int(i) for i in interctc_layers))
    bad = [i for i in layers if not 1 <= i < num_layers]
    if bad:
        raise ValueError(f"interctc_layers must lie in [1, {num_layers - 1}] (the last layer already feeds the "
                         f"final CTC loss) for this {num_layers}-layer model, got {bad}")
    if not 0.0 <= interctc_weight < 1.0:
        raise ValueError(f"interctc_weight must lie in [0, 1), got {interctc_weight}")
    if interctc_weight > 0 and not layers:
        raise ValueError("interctc_weight > 0 needs at least one layer in interctc_layers")
    check_stochastic_depth(stochastic_depth_rate, stochastic_depth_schedule)  # the same rule as PrunableCTCConfig
    return layers


def default_interctc_layers(num_layers: int) -> List[int]:
    """Every other layer below the last (2, 4, ... for 8 layers: 2, 4, 6), the paper's spacing."""
    return list(range(2, num_layers, 2)) or ([1] if num_layers > 1 else [])


def _stock_names_in_state_dict(module, state_dict, prefix, local_metadata) -> None:
    # `layers.3.layer.attention...` -> `layers.3.attention...`. This module's keys are the last ones added, so
    # popping and re-adding them keeps the state dict's order.
    inner = prefix + "layer."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


def _wrapped_names_on_load(module, state_dict, prefix, *unused) -> None:
    # The reverse, before the stock layer loads its tensors; names already wrapped are left as they are.
    inner = prefix + "layer."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


class PrunableLayer(nn.Module):
    """One stock encoder layer as its wrapper runs it: an identity beyond the call's depth, stochastic depth in
    training, its output recorded for intermediate CTC.

    It owns the stock layer (`.layer`), so `copy.deepcopy` and pickling copy the weights that run. In state dicts
    (and so in `save_pretrained` and `load_state_dict`) the stock layer's tensors keep their stock names.

    Args:
        layer: the stock layer; called as the stock encoder calls it, and returning its hidden states.
        index: its 1-based position in the encoder.
        wrapper: the `PrunableStockCTC` whose per-call depth and settings apply.
    """

    def __init__(self, layer: nn.Module, index: int, wrapper: "PrunableStockCTC"):
        super().__init__()
        self.layer = layer
        self.index = index
        # A plain attribute, not a submodule: the wrapper contains this module, not the other way round.
        self.__dict__["wrapper"] = wrapper
        self.register_state_dict_post_hook(_stock_names_in_state_dict)
        self.register_load_state_dict_pre_hook(_wrapped_names_on_load)
        self.train(layer.training)

    def forward(self, hidden_states, *args, **kwargs):
        wrapper = self.wrapper
        if wrapper._call_depth is not None and self.index > wrapper._call_depth:
            # The stock loop still visits the layers beyond this call's depth; as identities they cost nothing and
            # the stock code after the loop (final norm, head) sees exactly what a pruned model would give it.
            return hidden_states
        recorded = wrapper._recorded
        if recorded is not None and self.index == 1:
            recorded[0] = hidden_states
        skip = wrapper.skip_probability(self.index) if self.training else 0.0
        output, _ = stochastic_depth(hidden_states, lambda: (self.layer(hidden_states, *args, **kwargs), None), skip)
        if recorded is not None:
            recorded[self.index] = output
        return output


def _stock_names_on_load(module, state_dict, prefix, *unused) -> None:
    # A stock checkpoint's names (`wav2vec2.encoder...`) are the wrapper's without its `model.` prefix.
    inner = prefix + "model."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


class PrunableStockCTC(nn.Module):
    """A stock CTC model with intermediate CTC, stochastic depth and per-call depth. Build it with `make_prunable`.

    Attributes:
        model: the stock model (its class, config and weights are what `save_pretrained` writes).
        family: where its layers and head are (`families.CTCFamily`).
        interctc_layers, interctc_weight, stochastic_depth_rate, stochastic_depth_schedule: the settings.

    `load_state_dict` also takes the stock model's own state dict (the checkpoints `save_pretrained` writes, which
    the Trainer resumes from and loads as the best model).
    """

    # What `PreTrainedModel` declares and the Trainer reads after loading a checkpoint: no tensor of the stock
    # model is left out of its checkpoints.
    _keys_to_ignore_on_save = None

    def __init__(self, model: nn.Module, family: CTCFamily, interctc_layers: Sequence[int], interctc_weight: float,
                 stochastic_depth_rate: float, stochastic_depth_schedule: str):
        super().__init__()
        self.model = model
        self.family = family
        self.interctc_layers = check_settings(family.num_layers(model), interctc_layers, interctc_weight,
                                              stochastic_depth_rate, stochastic_depth_schedule)
        self.interctc_weight = float(interctc_weight)
        self.stochastic_depth_rate = float(stochastic_depth_rate)
        self.stochastic_depth_schedule = stochastic_depth_schedule
        # Per-call state read by the `PrunableLayer`s: how deep this call goes and where outputs are recorded.
        self._call_depth: Optional[int] = None
        self._recorded: Optional[Dict[int, torch.Tensor]] = None
        self._disable_layerdrop()
        layers = family.layers(model)
        for index, layer in enumerate(list(layers), start=1):
            layers[index - 1] = PrunableLayer(layer, index, self)
        self.register_load_state_dict_pre_hook(_stock_names_on_load)
        self.record_settings()
        self.train(model.training)

    def _disable_layerdrop(self) -> None:
        # The stock LayerDrop skips layers without rescaling and without telling us which, so intermediate outputs
        # could not be attributed to a layer; stochastic depth replaces it (the old value is kept in the config).
        encoder_config = self.family.encoder_config(self.model)
        # A checkpoint saved by a wrapper has LayerDrop 0 already; keep the value it replaced back then.
        saved = (getattr(self.model.config, CONFIG_KEY, None) or {}).get("replaced_layerdrop", 0.0)
        self._replaced_layerdrop = float(getattr(encoder_config, "layerdrop", 0.0) or saved or 0.0)
        if self._replaced_layerdrop > 0:
            logger.warning("make_prunable: the model's LayerDrop (%s) is turned off; stochastic_depth_rate replaces it",
                           self._replaced_layerdrop)
            encoder_config.layerdrop = 0.0
            encoder = self.family.layers(self.model)
            for module in self.model.modules():  # Parakeet's encoder copies the value at construction
                if getattr(module, "layers", None) is encoder and hasattr(module, "layerdrop"):
                    module.layerdrop = 0.0

    # -- properties -------------------------------------------------------------------------------------------------

    @property
    def config(self):
        """The stock model's config (the settings are recorded in it under `prunable_ctc`)."""
        return self.model.config

    @property
    def main_input_name(self) -> str:
        return self.model.main_input_name

    @property
    def num_hidden_layers(self) -> int:
        return self.family.num_layers(self.model)

    def skip_probability(self, layer: int) -> float:
        """Stochastic-depth probability of skipping (1-based) `layer` in training: `rate * layer / L` (linear) or
        `rate` (uniform)."""
        return layer_skip_probability(layer, self.num_hidden_layers, self.stochastic_depth_rate,
                                      self.stochastic_depth_schedule)

    def record_settings(self) -> None:
        """Write the settings into the stock config, so a saved full-depth model keeps them for a later `prune_to`."""
        previous = getattr(self.model.config, CONFIG_KEY, None) or {}
        settings = {
            "interctc_layers": list(self.interctc_layers),
            "interctc_weight": self.interctc_weight,
            "stochastic_depth_rate": self.stochastic_depth_rate,
            "stochastic_depth_schedule": self.stochastic_depth_schedule,
            "replaced_layerdrop": self._replaced_layerdrop,
        }
        if "pruned_from" in previous:  # the original depth survives re-wrapping a pruned checkpoint
            settings["pruned_from"] = previous["pruned_from"]
        setattr(self.model.config, CONFIG_KEY, settings)

    # -- forward ----------------------------------------------------------------------------------------------------

    def logits_from_hidden_state(self, hidden: torch.Tensor) -> torch.Tensor:
        """CTC logits `(batch, frames, vocab)` from a raw layer output `(batch, frames, hidden)`: the stock final
        norm (where the family has one after its layers), adapter and head."""
        return self.family.logits_from_hidden_state(self.model, hidden)

    def forward(
        self,
        input_values: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        num_layers: Optional[int] = None,
        output_hidden_states: bool = False,
        output_intermediate_logits: bool = False,
        input_features: Optional[torch.Tensor] = None,
    ) -> PrunableCTCOutput:
        r"""
        input_values (`torch.FloatTensor`): the stock model's main input, `(batch, samples)` audio for the wav2vec2
            family; also accepted by keyword as `input_features` (`(batch, frames, mel bins)` for Parakeet).
        attention_mask (`torch.LongTensor` of shape `(batch, input length)`, *optional*): 1 on valid input.
        labels (`torch.LongTensor` of shape `(batch, max_label_length)`, *optional*): token ids padded with -100.
        num_layers (`int`, *optional*): run only the first `num_layers` layers, for this call only.
        output_hidden_states (`bool`): return the input of layer 1 and the raw output of each layer that ran.
        output_intermediate_logits (`bool`): return the logits of the intermediate-CTC layers that ran.

        Returns a `PrunableCTCOutput` (loss = `(1 - w) * ctc_loss + w * intermediate_losses.mean()`).
        """
        if (input_values is None) == (input_features is None):
            raise ValueError(f"give the audio input once, as {self.main_input_name}= (or positionally)")
        inputs = input_values if input_values is not None else input_features
        total = self.num_hidden_layers
        depth = total if num_layers is None else int(num_layers)
        if not 1 <= depth <= total:
            raise ValueError(f"num_layers must lie in [1, {total}], got {num_layers}")
        if labels is not None and labels.max() >= self.config.vocab_size:
            raise ValueError(f"labels hold ids >= vocab_size ({self.config.vocab_size})")

        intermediate = [i for i in self.interctc_layers if i < depth]
        need_intermediate = bool(intermediate) and (labels is not None or output_intermediate_logits)
        self._call_depth = depth
        self._recorded = {} if (need_intermediate or output_hidden_states) else None
        try:
            stock = self.model(**{self.main_input_name: inputs, "attention_mask": attention_mask})
            recorded = self._recorded
        finally:
            self._call_depth, self._recorded = None, None
        logits = stock.logits

        if attention_mask is not None:
            output_lengths = self.family.output_lengths(self.model, attention_mask.sum(-1))
        else:
            output_lengths = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
        intermediate_logits = [self.logits_from_hidden_state(recorded[i]) for i in intermediate] \
            if need_intermediate else []

        loss = final_loss = intermediate_losses = None
        if labels is not None:
            config = self.config
            loss_args = (output_lengths, labels, config.pad_token_id, config.ctc_loss_reduction,
                         config.ctc_zero_infinity)
            final_loss = loss = ctc_loss(logits, *loss_args)
            if intermediate_logits:
                intermediate_losses = torch.stack([ctc_loss(x, *loss_args) for x in intermediate_logits])
                if self.interctc_weight > 0:
                    loss = (1.0 - self.interctc_weight) * final_loss + self.interctc_weight * intermediate_losses.mean()

        return PrunableCTCOutput(
            loss=loss,
            logits=logits,
            output_lengths=output_lengths,
            hidden_states=tuple(recorded[i] for i in range(depth + 1)) if output_hidden_states else None,
            intermediate_logits=tuple(intermediate_logits) if output_intermediate_logits else None,
            intermediate_layers=torch.tensor(intermediate if need_intermediate else [], dtype=torch.long)
            if output_intermediate_logits else None,
            ctc_loss=final_loss,
            intermediate_losses=intermediate_losses,
        )

    # -- pruning and saving -----------------------------------------------------------------------------------------

    def pruning_schedule(self) -> Dict[int, List[int]]:
        """Layers kept at every depth 1..L: the first k (the only schedule for stock models)."""
        return {depth: list(range(1, depth + 1)) for depth in range(1, self.num_hidden_layers + 1)}

    def default_eval_depths(self) -> List[int]:
        """Every intermediate-CTC layer plus the full depth."""
        return sorted(set(self.interctc_layers) | {self.num_hidden_layers})

    def count_parameters(self, num_layers: Optional[int] = None, layers: Optional[Sequence[int]] = None) -> int:
        """Parameters of the sub-network running the first `num_layers` layers (or `layers`, which must be the
        first k): everything but the layers that do not run."""
        keep = num_layers if num_layers is not None else (len(layers) if layers is not None else None)
        if layers is not None and list(layers) != list(range(1, len(layers) + 1)):
            raise ValueError(f"stock models keep the first k layers; got layers={list(layers)}")
        total = sum(p.numel() for p in self.model.parameters())
        if keep is None:
            return total
        dropped = self.family.layers(self.model)[keep:]
        return total - sum(p.numel() for p in dropped.parameters())

    def prune_to(self, depth: int) -> "PrunableStockCTC":
        """Permanently keep the first `depth` layers: free the others, update the config's layer count and the
        recorded settings; returns self. The pruned model computes what `forward(..., num_layers=depth)` did."""
        total = self.num_hidden_layers
        if not 1 <= int(depth) <= total:
            raise ValueError(f"prune_to depth must lie in [1, {total}], got {depth}")
        depth = int(depth)
        layers = self.family.layers(self.model)
        del layers[depth:]  # in place: the stock encoder keeps its own reference to this ModuleList
        self.family.encoder_config(self.model).num_hidden_layers = depth
        self.interctc_layers = [i for i in self.interctc_layers if i < depth]
        if not self.interctc_layers:
            self.interctc_weight = 0.0
        pruned_from = (getattr(self.model.config, CONFIG_KEY, None) or {}).get("pruned_from", total)
        self.record_settings()
        getattr(self.model.config, CONFIG_KEY)["pruned_from"] = pruned_from  # the original depth, however many prunings
        return self

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Save the stock model (class, weights, config with the settings under `prunable_ctc`).

        Keyword arguments go to the stock `save_pretrained` (e.g. `safe_serialization`, `state_dict` from the
        Trainer).
        """
        self.record_settings_if_missing()
        state_dict = kwargs.pop("state_dict", None)
        if state_dict is not None:
            # The Trainer hands the wrapper's state dict ("model." prefixed); the stock model wants its own names.
            state_dict = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
            kwargs["state_dict"] = state_dict
        self.model.save_pretrained(save_directory, **kwargs)

    def record_settings_if_missing(self) -> None:
        if not isinstance(getattr(self.model.config, CONFIG_KEY, None), dict):
            self.record_settings()


def make_prunable(
    model: nn.Module,
    interctc_layers: Optional[Sequence[int]] = None,
    interctc_weight: Optional[float] = None,
    stochastic_depth_rate: Optional[float] = None,
    stochastic_depth_schedule: Optional[str] = None,
) -> PrunableStockCTC:
    """Wrap a stock CTC model (`Wav2Vec2ForCTC`, `HubertForCTC`, `Wav2Vec2ConformerForCTC`, `ParakeetForCTC`) with
    intermediate CTC through its own final norm and head, stochastic depth and per-call depth.

    Settings left as None come from the model's config when it was saved by a `PrunableStockCTC`
    (`config.prunable_ctc`), else: intermediate CTC at every other layer (2, 4, ...), weight 0.5, stochastic depth
    0.2 with the linear schedule.

    Args:
        model: the stock model; it is modified in place (each layer inside a `PrunableLayer`, LayerDrop turned
            off) and kept as `.model` of the returned wrapper.
        interctc_layers: 1-based layers whose output gets an intermediate CTC loss, each below the last layer.
        interctc_weight: w in `(1 - w) * final CTC + w * mean(intermediate CTC)`, in [0, 1).
        stochastic_depth_rate: skip probability of the last layer in training (linear schedule: `rate * l / L`).
        stochastic_depth_schedule: "linear" or "uniform".

    Raises:
        TypeError: the model is not one of the supported classes (the message names them).
        ValueError: a setting is out of range (the message names it and the range).
    """
    family = family_of(model)
    if any(isinstance(layer, PrunableLayer) for layer in family.layers(model)):
        raise ValueError("this model is already wrapped by make_prunable; use the wrapper it returned")
    saved = getattr(model.config, CONFIG_KEY, None) or {}
    num_layers = family.num_layers(model)
    wrapper = PrunableStockCTC(
        model,
        family,
        interctc_layers=interctc_layers if interctc_layers is not None
        else saved.get("interctc_layers", default_interctc_layers(num_layers)),
        interctc_weight=interctc_weight if interctc_weight is not None else saved.get("interctc_weight", 0.5),
        stochastic_depth_rate=stochastic_depth_rate if stochastic_depth_rate is not None
        else saved.get("stochastic_depth_rate", 0.2),
        stochastic_depth_schedule=stochastic_depth_schedule or saved.get("stochastic_depth_schedule", "linear"),
    )
    return wrapper
