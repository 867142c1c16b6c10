"""Where each supported Transformers CTC family keeps its layer list, final norm and CTC head.

`make_prunable` never copies a model's code: it needs only four facts per family, read off the stock modules
(transformers 5.x source, `models/<family>/modeling_<family>.py`):

- **wav2vec2, hubert, wav2vec2-conformer** (`Wav2Vec2ForCTC`, `HubertForCTC`, `Wav2Vec2ConformerForCTC`): the
  backbone is `model.<base_model_prefix>` (`wav2vec2`, `hubert`, `wav2vec2_conformer`), its layers are
  `backbone.encoder.layers` (one `nn.ModuleList`), the head is `model.lm_head` behind `model.dropout`
  (`final_dropout`). Where the encoder's `layer_norm` sits depends on the variant:
  - post-norm (`do_stable_layer_norm=False`, the wav2vec2-base / HuBERT-base layout): `encoder.layer_norm` runs
    *before* the first layer and every layer ends in its own `final_layer_norm`, so a layer's output goes to the
    head as it is;
  - "stable layer norm" (pre-norm, `do_stable_layer_norm=True`, the large / XLS-R layout): `encoder.layer_norm` runs
    *after* the last layer, so an intermediate output goes through it before the head;
  - wav2vec2-conformer: `encoder.layer_norm` always runs after the last layer (its config's `do_stable_layer_norm`
    is not read by the encoder).
  With `add_adapter=True` (wav2vec2 / conformer), `backbone.adapter` (a strided conv stack) runs between the
  encoder and the head, so it runs on intermediate outputs too.
- **parakeet** (`ParakeetForCTC`): layers are `model.encoder.layers`, every block ends in its own `norm_out` and the
  encoder has no final norm, so the head `model.ctc_head` (a 1x1 `Conv1d`) reads a layer's output directly. Its
  layer count lives in `config.encoder_config.num_hidden_layers`.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class CTCFamily:
    """How to reach the parts of one family of stock CTC models (see the module docstring).

    Attributes:
        name: family name shown in messages.
        model_types: `config.model_type` values of the family.
        layers: `model -> nn.ModuleList` of encoder layers, run in order by the stock encoder.
        logits_from_hidden_state: `(model, hidden (batch, frames, hidden)) -> logits (batch, frames', vocab)`:
            what the stock model computes after its last layer (final norm where it has one, adapter, head).
        output_lengths: `(model, input lengths (batch,)) -> valid logit frames (batch,)`, from the unpadded input
            length in samples (wav2vec2 family) or feature frames (parakeet).
        encoder_config: `model -> the config holding num_hidden_layers and layerdrop`.
    """

    name: str
    model_types: Tuple[str, ...]
    layers: Callable[[nn.Module], nn.ModuleList]
    logits_from_hidden_state: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    output_lengths: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    encoder_config: Callable[[nn.Module], object]

    def num_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))


# Named functions rather than lambdas: a family is part of every wrapper, which must pickle.


def _wav2vec2_backbone(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def _wav2vec2_layers(model: nn.Module) -> nn.ModuleList:
    return _wav2vec2_backbone(model).encoder.layers


def _wav2vec2_encoder_config(model: nn.Module):
    return model.config


def _wav2vec2_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    backbone = _wav2vec2_backbone(model)
    norm_after_layers = model.config.model_type == "wav2vec2-conformer" or model.config.do_stable_layer_norm
    if norm_after_layers:
        hidden = backbone.encoder.layer_norm(hidden)
    adapter: Optional[nn.Module] = getattr(backbone, "adapter", None)
    if adapter is not None:
        hidden = adapter(hidden)
    return model.lm_head(model.dropout(hidden))


def _wav2vec2_lengths(model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
    # The same call Wav2Vec2ForCTC.forward makes for its own loss (it accounts for the adapter's strides).
    return model._get_feat_extract_output_lengths(input_lengths).to(torch.long)


def _parakeet_layers(model: nn.Module) -> nn.ModuleList:
    return model.encoder.layers


def _parakeet_encoder_config(model: nn.Module):
    return model.config.encoder_config


def _parakeet_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return model.ctc_head(hidden)


def _parakeet_lengths(model: nn.Module, input_lengths: torch.Tensor) -> torch.Tensor:
    return model._get_subsampling_output_length(input_lengths).to(torch.long)


WAV2VEC2_FAMILY = CTCFamily(
    name="wav2vec2 (Wav2Vec2ForCTC, HubertForCTC, Wav2Vec2ConformerForCTC)",
    model_types=("wav2vec2", "hubert", "wav2vec2-conformer"),
    layers=_wav2vec2_layers,
    logits_from_hidden_state=_wav2vec2_logits,
    output_lengths=_wav2vec2_lengths,
    encoder_config=_wav2vec2_encoder_config,
)

PARAKEET_FAMILY = CTCFamily(
    name="parakeet (ParakeetForCTC)",
    model_types=("parakeet_ctc",),
    layers=_parakeet_layers,
    logits_from_hidden_state=_parakeet_logits,
    output_lengths=_parakeet_lengths,
    encoder_config=_parakeet_encoder_config,
)

FAMILIES = (WAV2VEC2_FAMILY, PARAKEET_FAMILY)
SUPPORTED_CLASSES = ("Wav2Vec2ForCTC", "HubertForCTC", "Wav2Vec2ConformerForCTC", "ParakeetForCTC")


def family_of(model: nn.Module) -> CTCFamily:
    """The family of a stock CTC model; raises `TypeError` naming the supported classes otherwise."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    class_name = type(model).__name__
    if class_name in SUPPORTED_CLASSES:
        for family in FAMILIES:
            if model_type in family.model_types:
                return family
    if model_type == "whisper":
        raise TypeError(
            f"{class_name} has no CTC head to wrap: build a prunable CTC model from its encoder with "
            "hf_prunable_ctc.conversion.prunable_ctc_from_whisper(model, vocab_size=...) or the command "
            "`hf-prunable-ctc from-whisper WHISPER_DIR TOKENIZER_DIR OUT`")
    raise TypeError(
        f"make_prunable supports {', '.join(SUPPORTED_CLASSES)}; got {class_name} (model_type {model_type!r}). "
        "Load the checkpoint with AutoModelForCTC (a CTC head is needed), or train hf_prunable_ctc's own "
        "PrunableCTCForCTC for other architectures."
    )
