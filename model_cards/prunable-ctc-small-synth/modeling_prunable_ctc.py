"""A CTC speech encoder whose depth can be cut at run time (Lee, Kang & Watanabe, Interspeech 2021).

log-mel features -> convolutional subsampling -> L encoder layers (pre-LN Transformer or Conformer) -> final
LayerNorm -> linear CTC head. The final LayerNorm and the head are shared by the last layer and every intermediate
CTC layer, so the output of any layer is a valid input to the head: that is what lets a model keep only some of its
layers without fine-tuning. Stochastic depth in training makes the remaining layers robust to the missing ones.

This file is copied next to the weights by `save_pretrained` (remote code): it imports only torch, transformers and
its sibling modules.
"""

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_prunable_ctc import PrunableCTCConfig
from .pruning import (
    PRUNING_STRATEGIES,
    PruningSchedule,
    default_schedule,
    remap_schedule,
    validate_depth,
    validate_layer_selection,
    validate_schedule,
)


@dataclass
class PrunableCTCEncoderOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, frames, hidden_size)`): output of the last layer
            that ran, after the final LayerNorm.
        output_lengths (`torch.LongTensor` of shape `(batch,)`): valid (non-padded) output frames per utterance.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): input of the first layer that ran, then the output of
            every layer that ran, each `(batch, frames, hidden_size)`, before the final LayerNorm and before
            self-conditioning (the state the CTC head reads if the model stops there).
        intermediate_logits (`tuple(torch.FloatTensor)`, *optional*): CTC logits `(batch, frames, vocab_size)` of the
            intermediate-CTC layers that ran (the last layer that ran excluded), in order.
        intermediate_layers (`torch.LongTensor` of shape `(num_intermediate,)`, *optional*): the (1-based) layers
            `intermediate_logits` come from.
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    output_lengths: Optional[torch.LongTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_layers: Optional[torch.LongTensor] = None


@dataclass
class PrunableCTCOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `(1 - interctc_weight) * ctc_loss + interctc_weight * intermediate_losses.mean()`.
        logits (`torch.FloatTensor` of shape `(batch, frames, vocab_size)`): CTC logits of the last layer that ran.
        output_lengths (`torch.LongTensor` of shape `(batch,)`): valid output frames per utterance.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): see [`PrunableCTCEncoderOutput`].
        intermediate_logits (`tuple(torch.FloatTensor)`, *optional*): see [`PrunableCTCEncoderOutput`].
        intermediate_layers (`torch.LongTensor`, *optional*): see [`PrunableCTCEncoderOutput`].
        ctc_loss (`torch.FloatTensor` of shape `()`, *optional*): CTC loss of the last layer that ran.
        intermediate_losses (`torch.FloatTensor` of shape `(num_intermediate,)`, *optional*): CTC loss of each
            intermediate layer, in the order of `intermediate_layers`.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    output_lengths: Optional[torch.LongTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_layers: Optional[torch.LongTensor] = None
    ctc_loss: Optional[torch.FloatTensor] = None
    intermediate_losses: Optional[torch.FloatTensor] = None


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_length) bool mask, True on valid frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, config: PrunableCTCConfig) -> torch.Tensor:
    """SpecAugment-style masking (Park et al. 2019) of (batch, frames, bins) features, training only.

    Each utterance gets `spec_augment_freq_masks` frequency bands and `spec_augment_time_masks_per_second` time
    spans per second of its own audio set to zero (the normalised mean), so long and short utterances are masked
    alike. Time warping is left out: it costs CPU time for little gain on small models.
    """
    features = features.clone()
    batch, _, bins = features.shape
    for i in range(batch):
        for _ in range(config.spec_augment_freq_masks):
            width = int(torch.randint(0, config.spec_augment_freq_width + 1, ()))
            start = int(torch.randint(0, max(1, bins - width), ()))
            features[i, :, start : start + width] = 0.0
        length = int(lengths[i])
        num_time_masks = int(config.spec_augment_time_masks_per_second * length / 100)
        for _ in range(num_time_masks):
            width = int(torch.randint(0, min(config.spec_augment_time_width, length // 5) + 1, ()))
            start = int(torch.randint(0, max(1, length - width), ()))
            features[i, start : start + width] = 0.0
    return features


class ConvSubsampling(nn.Module):
    """Stride-2 convolutions over time: (batch, frames, mel) -> (batch, frames / factor, hidden).

    `conv1d` treats the mel bins as channels. `conv2d` is ESPnet's front end, convolving over time and frequency:
    at hidden sizes around 144 it costs about 25x more CPU time than the encoder layers it feeds (measured on 2 CPU
    cores), which is why `conv1d` is the default for on-device models.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.two_dimensional = config.subsampling_type == "conv2d"
        num_convs = int(math.log2(config.subsampling_factor))
        channels = config.subsampling_conv_channels
        conv = nn.Conv2d if self.two_dimensional else nn.Conv1d
        first_in = 1 if self.two_dimensional else config.num_mel_bins
        self.convs = nn.ModuleList(
            conv(first_in if i == 0 else channels, channels, kernel_size=3, stride=2, padding=1)
            for i in range(num_convs)
        )
        out_features = channels
        if self.two_dimensional:
            freq = config.num_mel_bins
            for _ in range(num_convs):
                freq = (freq + 1) // 2
            out_features = channels * freq
        self.projection = nn.Linear(out_features, config.hidden_size)

    @staticmethod
    def output_lengths(lengths: torch.Tensor, num_convs: int) -> torch.Tensor:
        # kernel 3, stride 2, padding 1: out = floor((n - 1) / 2) + 1 = ceil(n / 2)
        for _ in range(num_convs):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden = features.transpose(1, 2)  # (batch, mel, frames)
        if self.two_dimensional:
            hidden = hidden.unsqueeze(1)  # (batch, 1, mel, frames)
        for conv in self.convs:
            # Zero padded frames before each convolution so a padded batch gives the same valid outputs as each
            # utterance alone (the convolution's own padding is zeros too).
            mask = lengths_to_mask(lengths, hidden.shape[-1]).to(hidden.dtype)
            hidden = hidden * (mask[:, None, None, :] if self.two_dimensional else mask[:, None, :])
            hidden = F.gelu(conv(hidden))
            lengths = self.output_lengths(lengths, 1)
        if self.two_dimensional:
            batch, channels, freq, frames = hidden.shape
            hidden = hidden.reshape(batch, channels * freq, frames)
        return self.projection(hidden.transpose(1, 2)), lengths


class RotaryEmbedding(nn.Module):
    """Rotary position tables (cos, sin) of shape (frames, head_dim), shared by all layers of one forward pass.

    Rotary positions are relative and applied inside each attention layer, so any subset of layers still sees
    where each frame is.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.theta = config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def forward(self, num_frames: int, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(num_frames, device=self.inv_freq.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (batch, heads, frames, head_dim) queries or keys by their positions."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions, through `scaled_dot_product_attention`."""

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden, key_mask, rotary):
        batch, frames, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, frames, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, frames, head_dim)
        cos, sin = rotary
        query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, frames, width))


class FeedForward(nn.Module):
    def __init__(self, config: PrunableCTCConfig, activation: Callable):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = activation
        self.dropout = nn.Dropout(config.activation_dropout)

    def forward(self, hidden):
        return self.down(self.dropout(self.activation(self.up(hidden))))


class ConvolutionModule(nn.Module):
    """Conformer convolution: pointwise + GLU, depthwise over time, norm, SiLU, pointwise.

    LayerNorm replaces the original BatchNorm: it does not depend on the other utterances of the batch nor on
    padded frames, so results are the same in any batch and at batch size 1 on a device.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        width = config.hidden_size
        self.pointwise_in = nn.Conv1d(width, 2 * width, kernel_size=1)
        self.depthwise = nn.Conv1d(
            width, width, kernel_size=config.conv_kernel_size, padding=config.conv_kernel_size // 2, groups=width
        )
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.pointwise_out = nn.Conv1d(width, width, kernel_size=1)

    def forward(self, hidden, frame_mask):
        hidden = F.glu(self.pointwise_in(hidden.transpose(1, 2)), dim=1)
        # Padded frames must not leak into valid ones through the depthwise kernel.
        hidden = self.depthwise(hidden * frame_mask[:, None, :])
        hidden = F.silu(self.norm(hidden.transpose(1, 2)))
        return self.pointwise_out(hidden.transpose(1, 2)).transpose(1, 2)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm Transformer layer (the paper's model)."""

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SelfAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config, F.gelu)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden, key_mask, frame_mask, rotary, residual_scale=1.0):
        hidden = hidden + residual_scale * self.dropout(self.attention(self.attention_norm(hidden), key_mask, rotary))
        return hidden + residual_scale * self.dropout(self.feed_forward(self.feed_forward_norm(hidden)))


class ConformerLayer(nn.Module):
    """Conformer layer: half feed-forward, self-attention, convolution, half feed-forward, LayerNorm."""

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.feed_forward_in_norm = nn.LayerNorm(width, eps=eps)
        self.feed_forward_in = FeedForward(config, F.silu)
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.attention = SelfAttention(config)
        self.conv_norm = nn.LayerNorm(width, eps=eps)
        self.conv = ConvolutionModule(config)
        self.feed_forward_out_norm = nn.LayerNorm(width, eps=eps)
        self.feed_forward_out = FeedForward(config, F.silu)
        self.out_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden, key_mask, frame_mask, rotary, residual_scale=1.0):
        hidden = hidden + 0.5 * residual_scale * self.dropout(self.feed_forward_in(self.feed_forward_in_norm(hidden)))
        hidden = hidden + residual_scale * self.dropout(self.attention(self.attention_norm(hidden), key_mask, rotary))
        hidden = hidden + residual_scale * self.dropout(self.conv(self.conv_norm(hidden), frame_mask))
        hidden = hidden + 0.5 * residual_scale * self.dropout(
            self.feed_forward_out(self.feed_forward_out_norm(hidden))
        )
        return self.out_norm(hidden)


class PrunableCTCPreTrainedModel(PreTrainedModel):
    config_class = PrunableCTCConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = False
    _no_split_modules = ["TransformerLayer", "ConformerLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, RotaryEmbedding):
            # Non-persistent buffers are not in the checkpoint; transformers re-creates them through here.
            with torch.no_grad():
                module.inv_freq.copy_(module.compute_inv_freq())

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus this file and its siblings next to the weights (remote code).

        `auto_map` names both model classes so that `AutoModel` and `AutoModelForCTC` (and the ASR pipeline) load
        the folder with `trust_remote_code=True` where this package is not installed.
        """
        module = type(self).__module__.split(".")[-1]
        self.config.auto_map = {
            "AutoConfig": f"{type(self.config).__module__.split('.')[-1]}.{type(self.config).__name__}",
            "AutoModel": f"{module}.PrunableCTCModel",
            "AutoModelForCTC": f"{module}.PrunableCTCForCTC",
        }
        kwargs.setdefault("safe_serialization", True)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def encoder(self) -> "PrunableCTCModel":
        return self if isinstance(self, PrunableCTCModel) else self.model

    def pruning_schedule(self, strategy: Optional[str] = None, **strategy_kwargs) -> PruningSchedule:
        """Layers to keep for every depth 1..L, as `{depth: [layers]}` (1-based, sorted).

        With no `strategy`, the schedule stored in `config.pruning_schedule` (depths it lacks fall back to "top"),
        else the named strategy from `PRUNING_STRATEGIES` ("top", "uniform"/"every_other", and those registered by
        other modules), called as `strategy(self, **strategy_kwargs)`.
        """
        if strategy is None:
            return default_schedule(self.config)
        if strategy not in PRUNING_STRATEGIES:
            raise ValueError(f"unknown pruning strategy {strategy!r}; known: {sorted(PRUNING_STRATEGIES)}")
        return validate_schedule(PRUNING_STRATEGIES[strategy](self, **strategy_kwargs), self.config.num_hidden_layers)

    def prune_to(self, depth: int, strategy: Optional[str] = None, **strategy_kwargs):
        """Permanently keep `depth` layers chosen by `strategy` (see `pruning_schedule`); returns the model."""
        validate_depth(depth, self.config.num_hidden_layers)
        return self.prune_layers(self.pruning_schedule(strategy, **strategy_kwargs)[depth])

    def prune_layers(self, keep: Sequence[int]):
        """Permanently keep only the (1-based) layers `keep`, free the others and update the config; returns the model.

        The pruned model computes exactly what `forward(..., layers=keep)` computes on the unpruned one.
        """
        config = self.config
        keep = validate_layer_selection(keep, config.num_hidden_layers)
        self.encoder.layers = nn.ModuleList(self.encoder.layers[i - 1] for i in keep)
        if config.pruning_schedule:
            config.pruning_schedule = {str(k): v for k, v in remap_schedule(
                validate_schedule(config.pruning_schedule, config.num_hidden_layers), keep).items()} or None
        new_index = {old: new for new, old in enumerate(keep, start=1)}
        # The last kept layer feeds the final CTC loss, so it leaves the intermediate list.
        config.interctc_layers = [new_index[i] for i in config.interctc_layers if i in new_index and i != keep[-1]]
        if not config.interctc_layers:
            config.interctc_weight = 0.0
            config.self_conditioning = False
        config.kept_layers = [config.kept_layers[i - 1] for i in keep]
        config.num_hidden_layers = len(keep)
        config.check_values()
        return self

    def count_parameters(self, num_layers: Optional[int] = None, layers: Optional[Sequence[int]] = None) -> int:
        """Parameters of the sub-network running these layers (front end, those layers, final norm and head)."""
        run = set(self.encoder.layers_to_run(num_layers, layers))
        dropped = sum(p.numel() for i, layer in enumerate(self.encoder.layers, start=1) if i not in run
                      for p in layer.parameters())
        return sum(p.numel() for p in self.parameters()) - dropped


class PrunableCTCModel(PrunableCTCPreTrainedModel):
    """Encoder only: features -> subsampling -> layers -> final LayerNorm. See [`PrunableCTCForCTC`] for the head."""

    def __init__(self, config: PrunableCTCConfig):
        super().__init__(config)
        self.subsampling = ConvSubsampling(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rotary = RotaryEmbedding(config)
        layer_class = ConformerLayer if config.encoder_type == "conformer" else TransformerLayer
        self.layers = nn.ModuleList(layer_class(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.self_conditioning:
            self.conditioning_projection = nn.Linear(config.vocab_size, config.hidden_size)
        self.post_init()

    def layers_to_run(self, num_layers: Optional[int] = None, layers: Optional[Sequence[int]] = None) -> List[int]:
        """The (1-based) layers a forward pass with `num_layers=` or `layers=` runs; all of them by default."""
        total = len(self.layers)
        if num_layers is not None and layers is not None:
            raise ValueError("give either num_layers or layers, not both")
        if layers is not None:
            return validate_layer_selection(layers, total)
        if num_layers is not None:
            return list(range(1, validate_depth(num_layers, total) + 1))
        return list(range(1, total + 1))

    def skip_probability(self, layer: int) -> float:
        """Stochastic-depth probability of skipping (1-based) `layer` in training."""
        rate = self.config.stochastic_depth_rate
        if self.config.stochastic_depth_schedule == "uniform":
            return rate
        return rate * layer / len(self.layers)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        num_layers: Optional[int] = None,
        layers: Optional[Sequence[int]] = None,
        output_hidden_states: Optional[bool] = None,
        ctc_head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> PrunableCTCEncoderOutput:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel features.
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on valid frames, 0 on padding.
        num_layers (`int`, *optional*): run only the first `num_layers` layers (depth on demand, one call).
        layers (`list[int]`, *optional*): run only these (1-based) layers, in increasing order.
        ctc_head (`callable`, *optional*): maps a raw layer output to CTC logits; when given, intermediate logits
            are computed (and fed back when `config.self_conditioning`).
        """
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(f"input_features must be (batch, frames, {self.config.num_mel_bins}), "
                             f"got {tuple(input_features.shape)}")
        run_layers = self.layers_to_run(num_layers, layers)
        if self.config.self_conditioning and ctc_head is None:
            raise ValueError("this encoder is self-conditioned on its CTC head: use PrunableCTCForCTC")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else \
            self.config.output_hidden_states

        batch, frames, _ = input_features.shape
        if attention_mask is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=input_features.device)
        else:
            lengths = attention_mask.sum(-1).long()
        if self.training and (self.config.spec_augment_freq_masks or self.config.spec_augment_time_masks_per_second):
            input_features = spec_augment(input_features, lengths, self.config)
        hidden, lengths = self.subsampling(input_features, lengths)
        hidden = self.dropout(hidden)
        frame_mask = lengths_to_mask(lengths, hidden.shape[1])
        key_mask = frame_mask[:, None, None, :]
        rotary = self.rotary(hidden.shape[1], hidden.dtype)

        all_hidden = [hidden] if output_hidden_states else None
        intermediate_logits, intermediate_layers = [], []
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for position, index in enumerate(run_layers):
            layer = self.layers[index - 1]
            skip = self.skip_probability(index) if self.training else 0.0
            if skip > 0 and torch.rand(()) < skip:
                if distributed:
                    # DDP needs every parameter in the graph: run the layer and add it times zero (NeMo's way).
                    # Single-process training skips the computation, which is where stochastic depth saves time.
                    hidden = hidden + 0.0 * layer(hidden, key_mask, frame_mask, rotary)
            else:
                # Kept layers scale their residual branches by 1 / (1 - p) so expectations match inference.
                hidden = layer(hidden, key_mask, frame_mask, rotary, 1.0 / (1.0 - skip))
            if output_hidden_states:
                all_hidden.append(hidden)
            is_last = position == len(run_layers) - 1
            if ctc_head is not None and index in self.config.interctc_layers and not is_last:
                logits = ctc_head(hidden)
                intermediate_logits.append(logits)
                intermediate_layers.append(index)
                if self.config.self_conditioning:
                    hidden = hidden + self.conditioning_projection(logits.softmax(dim=-1))

        return PrunableCTCEncoderOutput(
            last_hidden_state=self.final_norm(hidden),
            output_lengths=lengths,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            intermediate_logits=tuple(intermediate_logits) if ctc_head is not None else None,
            intermediate_layers=torch.tensor(intermediate_layers, dtype=torch.long) if ctc_head is not None else None,
        )


def ctc_loss(logits, output_lengths, labels, blank, reduction, zero_infinity):
    """CTC loss in float32. labels: (batch, max_label_length), padded with -100 (the blank is masked too)."""
    labels_mask = (labels >= 0) & (labels != blank)
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(
            log_probs,
            labels.masked_select(labels_mask),
            output_lengths,
            labels_mask.sum(-1),
            blank=blank,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )


class PrunableCTCForCTC(PrunableCTCPreTrainedModel):
    """Encoder + one CTC head shared by the final and all intermediate layers."""

    def __init__(self, config: PrunableCTCConfig):
        super().__init__(config)
        self.model = PrunableCTCModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def logits_from_hidden_state(self, hidden: torch.Tensor) -> torch.Tensor:
        """CTC logits (batch, frames, vocab) from a raw layer output (batch, frames, hidden): final norm + head."""
        return self.lm_head(self.model.final_norm(hidden))

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        num_layers: Optional[int] = None,
        layers: Optional[Sequence[int]] = None,
        output_hidden_states: Optional[bool] = None,
        output_intermediate_logits: bool = False,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> PrunableCTCOutput:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel features.
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on valid frames.
        labels (`torch.LongTensor` of shape `(batch, max_label_length)`, *optional*): token ids padded with -100.
        num_layers (`int`, *optional*): run only the first `num_layers` layers, for this call only.
        layers (`list[int]`, *optional*): run only these (1-based) layers, for this call only.
        output_intermediate_logits (`bool`): also return the logits of the intermediate-CTC layers that ran.
        """
        config = self.config
        need_intermediate = labels is not None or output_intermediate_logits or config.self_conditioning
        encoded = self.model(
            input_features,
            attention_mask=attention_mask,
            num_layers=num_layers,
            layers=layers,
            output_hidden_states=output_hidden_states,
            ctc_head=self.logits_from_hidden_state if need_intermediate and config.interctc_layers else None,
        )
        logits = self.lm_head(encoded.last_hidden_state)
        intermediate_logits = encoded.intermediate_logits or ()

        loss = final_loss = intermediate_losses = None
        if labels is not None:
            if labels.max() >= config.vocab_size:
                raise ValueError(f"labels hold ids >= vocab_size ({config.vocab_size})")
            loss_args = (encoded.output_lengths, labels, config.pad_token_id, config.ctc_loss_reduction,
                         config.ctc_zero_infinity)
            final_loss = ctc_loss(logits, *loss_args)
            loss = final_loss
            if intermediate_logits:
                intermediate_losses = torch.stack([ctc_loss(x, *loss_args) for x in intermediate_logits])
                if config.interctc_weight > 0:
                    weight = config.interctc_weight
                    loss = (1.0 - weight) * final_loss + weight * intermediate_losses.mean()

        return PrunableCTCOutput(
            loss=loss,
            logits=logits,
            output_lengths=encoded.output_lengths,
            hidden_states=encoded.hidden_states,
            intermediate_logits=intermediate_logits if output_intermediate_logits else None,
            intermediate_layers=encoded.intermediate_layers if output_intermediate_logits else None,
            ctc_loss=final_loss,
            intermediate_losses=intermediate_losses,
        )


# save_pretrained copies the defining files only for classes registered with an auto class.
PrunableCTCModel.register_for_auto_class("AutoModel")
PrunableCTCForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = ["PrunableCTCPreTrainedModel", "PrunableCTCModel", "PrunableCTCForCTC", "PrunableCTCOutput",
           "PrunableCTCEncoderOutput"]
