"""A CTC speech encoder whose depth can be cut at run time (Lee, Kang & Watanabe, Interspeech 2021).

log-mel features -> convolutional subsampling -> L encoder layers (pre-LN Transformer or Conformer) -> final
LayerNorm -> linear CTC head. The final LayerNorm and the head are shared by the last layer and every intermediate
CTC layer, so the output of any layer is a valid input to the head: that is what lets a model keep only some of its
layers without fine-tuning. Stochastic depth in training makes the remaining layers robust to the missing ones.

This file is copied next to the weights by `save_pretrained` (remote code): it imports only torch, transformers and
its sibling modules.
"""

import math
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_prunable_ctc import PrunableCTCConfig, check_attention_chunk
from .early_exit import early_exit_forward
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
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`): attention
            probabilities `(batch, heads, frames, frames)` of every layer that ran, in order.
        intermediate_logits (`tuple(torch.FloatTensor)`, *optional*): CTC logits `(batch, frames, vocab_size)` of the
            intermediate-CTC layers that ran (the last layer that ran excluded), in order.
        intermediate_layers (`torch.LongTensor` of shape `(num_intermediate,)`, *optional*): the (1-based) layers
            `intermediate_logits` come from.
        sub_network_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `sub_network_depths`): the
            raw output `(batch, frames, hidden_size)` of each requested sub-network, in the order requested.
    """

    last_hidden_state: Optional[torch.FloatTensor] = None
    output_lengths: Optional[torch.LongTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_layers: Optional[torch.LongTensor] = None
    sub_network_hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None


@dataclass
class PrunableCTCOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `(1 - interctc_weight) * ctc_loss + interctc_weight * sum_k w_k * intermediate_losses[k] / sum_k w_k`
            over the intermediate layers that ran (w: `config.interctc_weights`), plus `sandwich_weight *
            sub_network_losses.mean()` and `distillation_weight * distillation_loss` when those are on.
        logits (`torch.FloatTensor` of shape `(batch, frames, vocab_size)`): CTC logits of the last layer that ran;
            frames beyond `output_lengths` (padding) are certain blanks, so greedy decoding reads nothing there.
        output_lengths (`torch.LongTensor` of shape `(batch,)`): valid output frames per utterance.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): see [`PrunableCTCEncoderOutput`].
        attentions (`tuple(torch.FloatTensor)`, *optional*): see [`PrunableCTCEncoderOutput`].
        intermediate_logits (`tuple(torch.FloatTensor)`, *optional*): see [`PrunableCTCEncoderOutput`].
        intermediate_layers (`torch.LongTensor`, *optional*): see [`PrunableCTCEncoderOutput`].
        ctc_loss (`torch.FloatTensor` of shape `()`, *optional*): CTC loss of the last layer that ran.
        intermediate_losses (`torch.FloatTensor` of shape `(num_intermediate,)`, *optional*): CTC loss of each
            intermediate layer, in the order of `intermediate_layers`.
        exit_depths (`torch.LongTensor` of shape `(batch,)`, *optional*, returned with `early_exit_threshold`): the
            (1-based) layer each utterance stopped at; its logits equal those of `num_layers=exit_depth`.
        exit_confidences (`torch.FloatTensor` of shape `(batch,)`, *optional*, with `early_exit_threshold`): each
            utterance's confidence at its exit layer (mean max posterior over non-blank frames).
        sub_network_depths (`torch.LongTensor` of shape `(num_sub_networks,)`, *optional*, in training with labels
            and `depth_sampling="sandwich"`): the depths sampled for this step, in increasing order.
        sub_network_losses (`torch.FloatTensor` of shape `(num_sub_networks,)`, *optional*): CTC loss of each
            sampled sub-network, in the order of `sub_network_depths`.
        distillation_loss (`torch.FloatTensor` of shape `()`, *optional*, with labels and `distillation_weight >
            0`): the self-distillation term before `distillation_weight` (see `PrunableCTCConfig`).
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    output_lengths: Optional[torch.LongTensor] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    intermediate_layers: Optional[torch.LongTensor] = None
    ctc_loss: Optional[torch.FloatTensor] = None
    intermediate_losses: Optional[torch.FloatTensor] = None
    exit_depths: Optional[torch.LongTensor] = None
    exit_confidences: Optional[torch.FloatTensor] = None
    sub_network_depths: Optional[torch.LongTensor] = None
    sub_network_losses: Optional[torch.FloatTensor] = None
    distillation_loss: Optional[torch.FloatTensor] = None


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch,) lengths -> (batch, max_length) bool mask, True on valid frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def chunk_attention_mask(frames: int, chunk_size: int, left_chunks: int,
                         device: Optional[torch.device] = None) -> torch.Tensor:
    """(frames, frames) bool, True where query frame i may read key frame j: j lies in i's chunk (of `chunk_size`
    frames, counted from frame 0) or in one of the `left_chunks` chunks before it (-1: any earlier chunk). The mask
    of WeNet's `subsequent_chunk_mask`: a streamed chunk sees exactly this."""
    chunk = torch.arange(frames, device=device) // chunk_size
    behind = chunk[:, None] - chunk[None, :]  # how many chunks key j lies before query i
    allowed = behind >= 0
    if left_chunks >= 0:
        allowed &= behind <= left_chunks
    return allowed


def attention_key_mask(frame_mask: torch.Tensor, chunk_size: int, left_chunks: int) -> torch.Tensor:
    """Boolean attention mask from a (batch, frames) valid-frame mask: (batch, 1, 1, frames), valid keys only, for
    full context (`chunk_size` 0); with chunks, (batch, 1, frames, frames), the chunk mask of valid keys.

    Padded queries read their chunk whatever is valid there, so no query row is all masked (the SDPA kernel would
    return NaN for it, and NaN times the convolution's zero mask stays NaN); valid frames never read padded ones.
    """
    keys = frame_mask[:, None, None, :]
    if chunk_size == 0:
        return keys
    chunks = chunk_attention_mask(frame_mask.shape[1], chunk_size, left_chunks, frame_mask.device)
    return chunks[None, None] & (keys | ~frame_mask[:, None, :, None])


def sample_chunk_size(config: PrunableCTCConfig) -> int:
    """Attention chunk for one dynamic-chunk training batch (see `PrunableCTCConfig.dynamic_chunk_training`): 0
    (full context) with probability `dynamic_chunk_full_context_probability`, else uniform in 1 ..
    `dynamic_chunk_max_size`, from torch's generator."""
    if float(torch.rand(())) < config.dynamic_chunk_full_context_probability:
        return 0
    return int(torch.randint(1, config.dynamic_chunk_max_size + 1, ()))


def blank_padded_frames(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> torch.Tensor:
    """(batch, frames, vocab) logits whose frames beyond `lengths` are certain blanks: 0 for `blank`, the dtype's
    lowest value elsewhere. Greedy CTC decoding reads every frame it is given (the ASR pipeline, `argmax` then
    `decode`), so a padded frame with raw logits can add a letter to an utterance batched with a longer one; a
    blank there decodes to nothing, and the softmax and log-softmax of these frames stay finite."""
    vocab = torch.arange(logits.shape[-1], device=logits.device)
    blank_frame = torch.where(vocab == blank, 0.0, torch.finfo(logits.dtype).min).to(logits.dtype)
    return torch.where(lengths_to_mask(lengths, logits.shape[1])[..., None], logits, blank_frame)


def feature_lengths(input_features: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(batch,) valid frames of (batch, frames, bins) features: the mask's sums, or every frame without a mask."""
    if attention_mask is None:
        return torch.full((input_features.shape[0],), input_features.shape[1], dtype=torch.long,
                          device=input_features.device)
    return attention_mask.sum(-1).long()


def random_integers(high: torch.Tensor) -> torch.Tensor:
    """Independent uniform integers in `[0, high]` (inclusive), one per element of the integer tensor `high`."""
    draws = torch.rand(high.shape, device=high.device) * (high + 1).to(torch.float32)
    return torch.minimum(draws.long(), high)


def span_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """(batch, spans) starts and widths -> (batch, size) bool, True inside any span `[start, start + width)`."""
    positions = torch.arange(size, device=starts.device)[None, None, :]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, config: PrunableCTCConfig) -> torch.Tensor:
    """SpecAugment-style masking (Park et al. 2019) of (batch, frames, bins) features, training only.

    Each utterance gets `spec_augment_freq_masks` frequency bands and `spec_augment_time_masks_per_second` time
    spans per second of its own audio set to zero (the normalised mean), so long and short utterances are masked
    alike. Widths are drawn in `[0, max width]` and starts in `[0, size - width]`, both ends included, so the last
    bin and the last valid frame can be masked; time masks stay inside each utterance's valid frames. The whole
    batch is masked in a few tensor operations (no loop over utterances), on the features' device. Time warping is
    left out: it costs CPU time for little gain on small models.
    """
    batch, frames, bins = features.shape
    masked = torch.zeros(batch, frames, bins, dtype=torch.bool, device=features.device)
    if config.spec_augment_freq_masks:
        shape = (batch, config.spec_augment_freq_masks)
        widths = random_integers(torch.full(shape, min(config.spec_augment_freq_width, bins), device=features.device))
        starts = random_integers(bins - widths)
        masked |= span_mask(starts, widths, bins)[:, None, :]
    lengths = lengths.to(features.device)
    num_time_masks = (config.spec_augment_time_masks_per_second * lengths / 100).long()  # per utterance
    most = int(num_time_masks.max()) if batch else 0
    if most:
        max_widths = torch.clamp(lengths // 5, max=config.spec_augment_time_width)[:, None].expand(batch, most)
        widths = random_integers(max_widths)
        starts = random_integers(lengths[:, None] - widths)
        # Utterances with fewer masks than the longest one get zero-width spans for the rest.
        widths = widths * (torch.arange(most, device=features.device)[None, :] < num_time_masks[:, None])
        masked |= span_mask(starts, widths, frames)[:, :, None]
    return features.masked_fill(masked, 0.0)


class ConvSubsampling(nn.Module):
    """Stride-2 convolutions over time: (batch, frames, mel) -> (batch, frames / factor, hidden).

    `conv1d` treats the mel bins as channels. `conv2d` is ESPnet's front end, convolving over time and frequency:
    at hidden sizes around 144 it costs about 25x more CPU time than the encoder layers it feeds (measured on 2 CPU
    cores), which is why `conv1d` is the default for on-device models.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.two_dimensional = config.subsampling_type == "conv2d"
        channels = config.subsampling_conv_channels
        conv = nn.Conv2d if self.two_dimensional else nn.Conv1d
        first_in = 1 if self.two_dimensional else config.num_mel_bins
        if config.subsampling_type == "whisper":
            # Whisper's conv1 / conv2: the first keeps the frame rate, so only the second halves it.
            channels = config.hidden_size
            self.strides = (1, 2)
        else:
            self.strides = (2,) * int(math.log2(config.subsampling_factor))
        self.convs = nn.ModuleList(
            conv(first_in if i == 0 else channels, channels, kernel_size=3, stride=stride, padding=1)
            for i, stride in enumerate(self.strides)
        )
        out_features = channels
        if self.two_dimensional:
            freq = config.num_mel_bins
            for _ in self.strides:
                freq = (freq + 1) // 2
            out_features = channels * freq
        self.projection = (nn.Identity() if config.subsampling_type == "whisper"
                           else nn.Linear(out_features, config.hidden_size))
        self.hidden_size = config.hidden_size
        # Absolute positions belong to the front end: every depth, early exit and the exported front-end graph
        # then see the same embedded frames.
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                                    if config.position_embedding_type == "absolute" else None)

    @staticmethod
    def output_lengths(lengths: torch.Tensor, num_convs: int) -> torch.Tensor:
        # kernel 3, stride 2, padding 1: out = floor((n - 1) / 2) + 1 = ceil(n / 2)
        for _ in range(num_convs):
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if features.shape[1] == 0:
            # No frames at all (empty audio): convolutions cannot run on an empty axis; an empty output gives an
            # empty transcript.
            return features.new_zeros(features.shape[0], 0, self.hidden_size), torch.zeros_like(lengths)
        hidden = features.transpose(1, 2)  # (batch, mel, frames)
        if self.two_dimensional:
            hidden = hidden.unsqueeze(1)  # (batch, 1, mel, frames)
        for conv, stride in zip(self.convs, self.strides):
            # Zero padded frames before each convolution so a padded batch gives the same valid outputs as each
            # utterance alone (the convolution's own padding is zeros too).
            mask = lengths_to_mask(lengths, hidden.shape[-1]).to(hidden.dtype)
            hidden = hidden * (mask[:, None, None, :] if self.two_dimensional else mask[:, None, :])
            hidden = F.gelu(conv(hidden))
            if stride == 2:
                lengths = self.output_lengths(lengths, 1)
        if self.two_dimensional:
            batch, channels, freq, frames = hidden.shape
            hidden = hidden.reshape(batch, channels * freq, frames)
        hidden = self.projection(hidden.transpose(1, 2))
        if self.position_embeddings is not None:
            frames, table = hidden.shape[1], self.position_embeddings.weight
            if frames > table.shape[0]:
                most = table.shape[0] * 2 ** self.strides.count(2)
                raise ValueError(
                    f"the input gives {frames} frames after subsampling, more than the {table.shape[0]} absolute "
                    f"positions this model has ({most} feature frames at most); split long audio into chunks (the "
                    "ASR pipeline's chunk_length_s)")
            # Sliced to the input: a short clip costs what it lasts, with the positions a 30 s window gives it.
            hidden = hidden + table[:frames]
        return hidden, lengths

    def forward_chunk(self, features: torch.Tensor, cache: Optional[Tuple[torch.Tensor, ...]] = None,
                      final: bool = False, start: int = 0) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """The front end on a stream of feature frames, fed in pieces of any size: the frames it returns, put end
        to end, equal `forward` on all the frames of the stream (one utterance, no padding).

        Args:
            features: the next feature frames of the stream, `(batch, frames, num_mel_bins)`, possibly 0 frames.
            cache: per convolution, its input frames not yet consumed (`(batch, channels, frames)`, or `(batch,
                channels, freq, frames)` for conv2d); None at the start of a stream.
            final: the stream ends with these frames: every convolution reads its right zero padding and emits
                its last frames.
            start: output frames already returned for this stream (the absolute positions continue there).

        Returns:
            The output frames now complete, `(batch, new frames, hidden_size)`, and the new cache.

        A kernel-3 convolution with padding 1 reads frames `stride * t - 1 .. stride * t + 1` for output t, so
        each one is computed, without padding in time, once those frames are there; the pending frames (a zero
        frame standing for the left padding at first) are the cache.
        """
        hidden = features.transpose(1, 2)
        if self.two_dimensional:
            hidden = hidden.unsqueeze(1)
        new_cache = []
        for index, (conv, stride) in enumerate(zip(self.convs, self.strides)):
            pad = hidden.new_zeros(hidden.shape[:-1] + (1,))
            pending = torch.cat((pad if cache is None else cache[index], hidden) + ((pad,) if final else ()), -1)
            count = (pending.shape[-1] - 3) // stride + 1 if pending.shape[-1] >= 3 else 0
            if self.two_dimensional:
                out = F.conv2d(pending[..., :stride * (count - 1) + 3], conv.weight, conv.bias, stride=conv.stride,
                               padding=(conv.padding[0], 0)) if count else None
            else:
                out = F.conv1d(pending[..., :stride * (count - 1) + 3], conv.weight, conv.bias,
                               stride=conv.stride) if count else None
            if out is None:
                shape = (hidden.shape[0], conv.out_channels) + (
                    ((hidden.shape[2] + 1) // 2,) if self.two_dimensional else ()) + (0,)
                out = hidden.new_zeros(shape)
            new_cache.append(pending[..., stride * count:])
            hidden = F.gelu(out)
        if self.two_dimensional:
            batch, channels, freq, frames = hidden.shape
            hidden = hidden.reshape(batch, channels * freq, frames)
        hidden = self.projection(hidden.transpose(1, 2))
        if self.position_embeddings is not None:
            table = self.position_embeddings.weight
            if start + hidden.shape[1] > table.shape[0]:
                raise ValueError(f"the stream is longer than the {table.shape[0]} absolute positions this model has: "
                                 "reset the recogniser between utterances")
            hidden = hidden + table[start:start + hidden.shape[1]]
        return hidden, tuple(new_cache)


class RotaryEmbedding(nn.Module):
    """Rotary position tables (cos, sin) of shape (frames, head_dim), shared by all layers of one forward pass.

    Rotary positions are relative and applied inside each attention layer, so any subset of layers still sees
    where each frame is. The angles are computed in float32 on every call and only the tables are cast to the
    model's dtype: a bfloat16 frequency buffer (what `model.to(torch.bfloat16)` makes of one) is off by more than a
    radian at 750 frames. There is no buffer, so nothing is stored in checkpoints.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.theta = config.rope_theta
        self.enabled = config.position_embedding_type == "rotary"

    def forward(self, num_frames: int, dtype: torch.dtype, device: Optional[torch.device] = None, start: int = 0
                ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Tables for positions `start .. start + num_frames - 1` (a streamed chunk starts where the last ended)."""
        if not self.enabled:
            return None  # absolute positions, added by the front end
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        inv_freq = 1.0 / (self.theta ** exponents)
        positions = torch.arange(start, start + num_frames, device=device, dtype=torch.float32)
        angles = positions[:, None] * inv_freq[None, :]  # elementwise: autocast leaves it in float32
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (batch, heads, frames, head_dim) queries or keys by their positions."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **unused):
    """Attention written out, for `output_attentions=True` and `attn_implementation="eager"`.

    query, key, value: (batch, heads, frames, head_dim); attention_mask: bool (batch, 1, 1, frames), True on valid
    keys. Returns the output (batch, frames, heads, head_dim) and the probabilities (batch, heads, frames, frames),
    the same layout as Transformers' other attention functions. `**unused` takes the keyword arguments that
    Transformers' attention interface passes to every implementation.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        # The dtype's lowest value rather than -inf: an utterance without valid frames gets uniform weights, not NaN.
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions.

    The kernel is the one `config._attn_implementation` names through Transformers' attention interface ("sdpa" by
    default, `scaled_dot_product_attention`); `output_attentions=True` uses the eager path, the only one that
    computes the probabilities.
    """

    is_causal = False  # read by Transformers' attention functions

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden, key_mask, rotary, output_attentions=False):
        """hidden (batch, frames, hidden); key_mask bool, broadcastable to (batch, 1, frames, frames), True where a
        query may read a key. Returns the output (batch, frames, hidden) and the probabilities or None."""
        query, key, value = self.project(hidden, rotary)
        return self.attend(query, key, value, key_mask, output_attentions)

    def forward_chunk(self, hidden, rotary, cache: Tuple[torch.Tensor, torch.Tensor]):
        """One streamed chunk: its frames attend to the cached keys and values of earlier frames and to the whole
        chunk. cache: rotated keys and values (batch, heads, cached frames, head_dim), possibly 0 frames. Returns
        the output (batch, frames, hidden) and the keys and values of cache + chunk (the caller trims them)."""
        query, key, value = self.project(hidden, rotary)
        key, value = torch.cat((cache[0], key), dim=2), torch.cat((cache[1], value), dim=2)
        attended, _ = self.attend(query, key, value, None, False)
        return attended, (key, value)

    def project(self, hidden, rotary):
        """Queries, keys and values (batch, heads, frames, head_dim), rotated to their positions."""
        batch, frames, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, frames, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, frames, head_dim)
        if rotary is not None:
            cos, sin = rotary
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        return query, key, value

    def attend(self, query, key, value, key_mask, output_attentions):
        batch, _, frames, _ = query.shape
        attend = eager_attention_forward
        if not output_attentions:
            attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        attended, weights = attend(self, query, key, value, key_mask, scaling=self.scaling,
                                   dropout=self.dropout if self.training else 0.0)
        return self.out(attended.reshape(batch, frames, -1)), weights


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

    With `config.causal_conv` the depthwise kernel reads the frame and the `kernel - 1` before it (zeros before the
    first frame), so a streamed chunk needs only those frames of the previous chunk as its state.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        width = config.hidden_size
        self.pointwise_in = nn.Conv1d(width, 2 * width, kernel_size=1)
        self.left_padding = config.conv_kernel_size - 1 if config.causal_conv else 0
        self.depthwise = nn.Conv1d(
            width, width, kernel_size=config.conv_kernel_size,
            padding=0 if config.causal_conv else config.conv_kernel_size // 2, groups=width
        )
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.pointwise_out = nn.Conv1d(width, width, kernel_size=1)

    def forward(self, hidden, frame_mask):
        # Padded frames must not leak into valid ones through the depthwise kernel.
        gated = self.gate(hidden) * frame_mask[:, None, :]
        return self.finish(self.depthwise(F.pad(gated, (self.left_padding, 0))))

    def forward_chunk(self, hidden, cache: torch.Tensor):
        """One streamed chunk of a causal module. cache: the gated inputs (batch, hidden, kernel - 1) of the frames
        before the chunk (zeros at the start of a stream). Returns the output (batch, frames, hidden) and the new
        cache."""
        gated = torch.cat((cache, self.gate(hidden)), dim=2)
        return self.finish(self.depthwise(gated)), gated[:, :, gated.shape[2] - self.left_padding:]

    def gate(self, hidden):
        """(batch, frames, hidden) -> pointwise + GLU, (batch, hidden, frames)."""
        return F.glu(self.pointwise_in(hidden.transpose(1, 2)), dim=1)

    def finish(self, hidden):
        hidden = F.silu(self.norm(hidden.transpose(1, 2)))
        return self.pointwise_out(hidden.transpose(1, 2)).transpose(1, 2)


class TransformerLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm Transformer layer (the paper's model).

    A `GradientCheckpointingLayer`, as every Transformers layer: `model.gradient_checkpointing_enable()` makes it
    recompute its activations in the backward pass instead of storing them.
    """

    def __init__(self, config: PrunableCTCConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SelfAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config, F.gelu)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden, key_mask, frame_mask, rotary, output_attentions=False):
        return self.blocks(hidden, partial(self.attention, key_mask=key_mask, rotary=rotary,
                                           output_attentions=output_attentions), None)[:2]

    def forward_chunk(self, hidden, rotary, attention_cache, conv_cache):
        """One streamed chunk (see `ConformerLayer.forward_chunk`); the convolution cache passes through."""
        hidden, attention_cache, _ = self.blocks(
            hidden, partial(self.attention.forward_chunk, rotary=rotary, cache=attention_cache), None)
        return hidden, attention_cache, conv_cache

    def blocks(self, hidden, attend, convolve):
        """The layer on `hidden`, its attention computed by `attend(x) -> (output, extra)`; returns `(hidden,
        extra, None)` (`convolve` is unused: this layer has no convolution)."""
        attended, extra = attend(self.attention_norm(hidden))
        hidden = hidden + self.dropout(attended)
        return hidden + self.dropout(self.feed_forward(self.feed_forward_norm(hidden))), extra, None


class ConformerLayer(GradientCheckpointingLayer):
    """Conformer layer: half feed-forward, self-attention, convolution, half feed-forward, LayerNorm.

    A `GradientCheckpointingLayer`, like `TransformerLayer`.
    """

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

    def forward(self, hidden, key_mask, frame_mask, rotary, output_attentions=False):
        attend = partial(self.attention, key_mask=key_mask, rotary=rotary, output_attentions=output_attentions)
        return self.blocks(hidden, attend, lambda x: (self.conv(x, frame_mask), None))[:2]

    def forward_chunk(self, hidden, rotary, attention_cache, conv_cache):
        """One streamed chunk (batch, frames, hidden) at positions given by `rotary`: attention over the cached keys
        and values and the chunk, causal convolution over the cached frames and the chunk (`config.causal_conv`).
        Returns `(hidden, attention_cache, conv_cache)`, the caches extended by the chunk (the attention cache
        untrimmed). Caches are plain tensors in and out; see `SelfAttention.forward_chunk` and
        `ConvolutionModule.forward_chunk` for their shapes."""
        return self.blocks(hidden, partial(self.attention.forward_chunk, rotary=rotary, cache=attention_cache),
                           partial(self.conv.forward_chunk, cache=conv_cache))

    def blocks(self, hidden, attend, convolve):
        """The layer on `hidden`, its attention and convolution computed by `attend(x)` and `convolve(x)`, each
        returning `(output, extra)`: the full-utterance and the streamed forward differ only there. Returns
        `(hidden, attention extra, convolution extra)`."""
        hidden = hidden + 0.5 * self.dropout(self.feed_forward_in(self.feed_forward_in_norm(hidden)))
        attended, attention_extra = attend(self.attention_norm(hidden))
        hidden = hidden + self.dropout(attended)
        convolved, conv_extra = convolve(self.conv_norm(hidden))
        hidden = hidden + self.dropout(convolved)
        hidden = hidden + 0.5 * self.dropout(self.feed_forward_out(self.feed_forward_out_norm(hidden)))
        return self.out_norm(hidden), attention_extra, conv_extra


def distributed_world_size() -> int:
    """Number of processes training together: 1 without torch.distributed, and also under `torchrun
    --nproc_per_node 1`, where a process group exists but no gradients are exchanged."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def layer_skip_probability(layer: int, num_layers: int, rate: float, schedule: str) -> float:
    """Stochastic-depth probability of skipping (1-based) `layer` of `num_layers` in training: `rate * layer /
    num_layers` for the "linear" schedule (deeper layers are skipped more often), `rate` for "uniform"."""
    if schedule == "uniform":
        return rate
    return rate * layer / num_layers


def stochastic_depth(hidden: torch.Tensor, run_layer: Callable[[], Tuple[torch.Tensor, object]],
                     skip_probability: float) -> Tuple[torch.Tensor, object]:
    """One layer under stochastic depth: skipped with probability `skip_probability`, else its update rescaled.

    Args:
        hidden: the layer's input x, `(batch, frames, hidden)`.
        run_layer: computes the layer on `hidden` and returns `(layer(x), extra)`; `extra` (attention weights,
            say) is passed through.
        skip_probability: p in [0, 1); 0 at inference, where `run_layer()` is returned as it is.

    Returns:
        `(x + (layer(x) - x) / (1 - p), extra)` when the layer is kept, `(x, None)` when it is skipped.

    The whole update `layer(x) - x` is rescaled (NeMo's form), not each residual branch inside the layer
    (ESPnet's): only then is the expected training output, `x + (1 - p) * (layer(x) - x) / (1 - p)`, the inference
    output `layer(x)` for any layer. With scaled branches it is not, because the branches are not simply added
    up: a Conformer layer ends in a LayerNorm, and in every layer the feed-forward reads the attention's (scaled)
    output.

    Under DDP (world size > 1) every parameter must take part in every step (or DDP needs
    `find_unused_parameters=True`, a slower extra graph traversal): a skipped layer is computed and its update
    multiplied by zero, which also works with gradient checkpointing. A single process does not compute a skipped
    layer, which is where stochastic depth saves time.
    """
    if skip_probability == 0.0:
        return run_layer()
    if torch.rand(()) >= skip_probability:
        output, extra = run_layer()
        return hidden + (output - hidden) / (1.0 - skip_probability), extra
    if distributed_world_size() > 1:
        output, extra = run_layer()
        return hidden + 0.0 * (output - hidden), extra
    return hidden, None


def describe_tensors(names: Sequence[str]) -> str:
    """Tensor names summarised: encoder layers by their (1-based) index, other tensors by name (10 at most)."""
    layer_indices = sorted({int(m.group(1)) + 1 for m in map(re.compile(r"layers\.(\d+)\.").search, names) if m})
    others = sorted(n for n in names if not re.search(r"layers\.\d+\.", n))
    parts = [f"tensors of encoder layers {layer_indices} (1-based)"] if layer_indices else []
    if others:
        parts.append(", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else ""))
    return "; ".join(parts)


def check_loaded_tensors(loading_info: dict) -> None:
    """Raise `ValueError` naming encoder tensors a checkpoint lacks, or encoder layers it has beyond its config."""
    missing = [k for k in loading_info.get("missing_keys", ()) if not k.startswith("lm_head.")]
    extra = [k for k in loading_info.get("unexpected_keys", ()) if "layers." in k]
    if missing or extra:
        problems = ([f"missing: {describe_tensors(missing)}"] if missing else []) + (
            [f"extra: {describe_tensors(extra)}"] if extra else [])
        raise ValueError(f"the checkpoint does not match its config ({'; '.join(problems)}): the weights were "
                         "probably saved from a model with other layers; save the model again with `save_pretrained` "
                         "after pruning, or use the config that was saved with these weights")


class PrunableCTCPreTrainedModel(PreTrainedModel):
    config_class = PrunableCTCConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerLayer", "ConformerLayer"]
    # Attention goes through Transformers' attention interface (see `SelfAttention`) with a boolean key mask,
    # which the eager and SDPA kernels take; flash and flex attention would need other masks.
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    # The loss is already right for gradient accumulation and DDP: the Trainer must divide it by the accumulation
    # steps and let DDP average gradients, not pass `num_items_in_batch` and rescale. With "mean" reduction, CTC
    # divides each utterance's loss by its own target length and averages over utterances, so micro-batches of
    # equal size averaged over the accumulation steps equal one large batch; dividing by `num_items_in_batch` (the
    # label tokens of the whole accumulated batch) would weight utterances by length instead, a different loss. With
    # "sum" reduction the loss is a plain sum and the Trainer's division keeps it proportional to the same sum.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, *args, num_hidden_layers: Optional[int] = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing checkpoints whose encoder tensors do not match their config.

        Transformers initialises missing tensors at random and only logs it: for a model whose checkpoints are
        pruned copies, a config naming layers the weights lack (or the reverse) would transcribe garbage. Missing
        or extra encoder tensors raise `ValueError` naming them; a missing or extra CTC head (loading the encoder
        alone, or an encoder checkpoint under a new head) is left to Transformers' usual report. A caller who asks
        for `output_loading_info=True` gets the report instead of the error, to inspect it themselves.

        `num_hidden_layers=k` loads the whole checkpoint and prunes it to k layers by its pruning schedule
        (`prune_to(k)`), which also renumbers `interctc_layers`, `kept_layers` and `pruning_schedule`; passed on
        to the config as an override it would describe layers the weights do not hold.
        """
        report = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if not report:
            check_loaded_tensors(info)
        if num_hidden_layers is not None:
            model.prune_to(num_hidden_layers)
        return (model, info) if report else model

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
        """Permanently keep `depth` layers chosen by `strategy` (see `pruning_schedule`); returns the model.

        A pruned model can be pruned again (to fewer layers); the layers it dropped are gone for good.
        """
        validate_depth(depth, self.config.num_hidden_layers, self.config.kept_layers)
        return self.prune_layers(self.pruning_schedule(strategy, **strategy_kwargs)[depth])

    def prune_layers(self, keep: Sequence[int]):
        """Permanently keep only the (1-based) layers `keep`, free the others and update the config; returns the model.

        The pruned model computes exactly what `forward(..., layers=keep)` computes on the unpruned one.
        """
        config = self.config
        keep = validate_layer_selection(keep, config.num_hidden_layers, config.kept_layers, require_order=True)
        self.encoder.layers = nn.ModuleList(self.encoder.layers[i - 1] for i in keep)
        if config.pruning_schedule:
            config.pruning_schedule = {str(k): v for k, v in remap_schedule(
                validate_schedule(config.pruning_schedule, config.num_hidden_layers), keep).items()} or None
        new_index = {old: new for new, old in enumerate(keep, start=1)}
        # The last kept layer feeds the final CTC loss, so it leaves the intermediate list; each remaining exit keeps
        # its own weight.
        remaining = [i for i in config.interctc_layers if i in new_index and i != keep[-1]]
        if config.interctc_weights is not None:
            weight_of = dict(zip(config.interctc_layers, config.interctc_weights))
            config.interctc_weights = [weight_of[i] for i in remaining]
            if not sum(config.interctc_weights) > 0:
                # The exits left all weigh 0: their term is gone, as in a pass that runs only those exits.
                config.interctc_weight = 0.0
                config.interctc_weights = None
        config.interctc_layers = [new_index[i] for i in remaining]
        if not config.interctc_layers:
            config.interctc_weight = 0.0
            config.interctc_weights = None
            config.self_conditioning = False
            if config.depth_sampling == "none":
                # Without exits or sub-networks nothing is left to distil into.
                config.distillation_weight = 0.0
        if not config.self_conditioning and hasattr(self.encoder, "conditioning_projection"):
            # A model built from the new config has no such layer: keeping it would leave unexpected tensors in
            # the checkpoint.
            del self.encoder.conditioning_projection
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

    def checked_inputs(self, input_features: torch.Tensor, attention_mask: Optional[torch.Tensor]
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Validate (batch, frames, num_mel_bins) features (shape, NaN/Inf) and return them in the model's dtype with
        their (batch,) valid lengths; the one entry check of every forward path (full, per depth, early exit)."""
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(f"input_features must be (batch, frames, {self.config.num_mel_bins}), "
                             f"got {tuple(input_features.shape)}")
        check_finite(input_features)
        lengths = feature_lengths(input_features, attention_mask)
        # Features come as float32 from the feature extractor; a bf16/fp16 model needs them in its own dtype.
        return input_features.to(self.final_norm.weight.dtype), lengths

    def layers_to_run(self, num_layers: Optional[int] = None, layers: Optional[Sequence[int]] = None) -> List[int]:
        """The (1-based) layers a forward pass with `num_layers=` or `layers=` runs; all of them by default."""
        total, kept = len(self.layers), self.config.kept_layers
        if num_layers is not None and layers is not None:
            raise ValueError("give either num_layers or layers, not both")
        if layers is not None:
            return validate_layer_selection(layers, total, kept, require_order=True)
        if num_layers is not None:
            return list(range(1, validate_depth(num_layers, total, kept) + 1))
        return list(range(1, total + 1))

    def attention_chunk(self, chunk_size: Optional[int] = None, left_chunks: Optional[int] = None
                        ) -> Tuple[int, int]:
        """`(chunk_size, left_chunks)` of a forward pass: the call's values where given, else a chunk drawn per batch
        in dynamic chunk training, else the config's (see `PrunableCTCConfig.chunk_size`)."""
        config = self.config
        if chunk_size is None:
            chunk_size = (sample_chunk_size(config) if self.training and config.dynamic_chunk_training
                          else config.chunk_size)
        left_chunks = config.left_chunks if left_chunks is None else left_chunks
        check_attention_chunk(chunk_size, left_chunks)
        return chunk_size, left_chunks

    def skip_probability(self, layer: int) -> float:
        """Stochastic-depth probability of skipping (1-based) `layer` in training (see `layer_skip_probability`)."""
        config = self.config
        return layer_skip_probability(layer, len(self.layers), config.stochastic_depth_rate,
                                      config.stochastic_depth_schedule)

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        num_layers: Optional[int] = None,
        layers: Optional[Sequence[int]] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        ctc_head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        sub_network_depths: Sequence[int] = (),
        chunk_size: Optional[int] = None,
        left_chunks: Optional[int] = None,
    ) -> Union[PrunableCTCEncoderOutput, Tuple]:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel features; cast to the
            model's dtype. NaN or Inf values raise `ValueError`. Zero frames give zero output frames.
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on valid frames, 0 on padding.
        num_layers (`int`, *optional*): run only the first `num_layers` layers (depth on demand, one call).
        layers (`list[int]`, *optional*): run only these (1-based) layers, listed in increasing order.
        output_hidden_states, output_attentions (`bool`, *optional*): also return every layer's output / attention
            probabilities (defaults: the config's).
        return_dict (`bool`, *optional*): a `PrunableCTCEncoderOutput` (default: `config.return_dict`) or a tuple.
        ctc_head (`callable`, *optional*): maps a raw layer output to CTC logits; when given, intermediate logits
            are computed (and fed back when `config.self_conditioning`).
        sub_network_depths (`list[int]`, *optional*): depths k (at most the number of layers this pass runs) whose
            sub-networks, the first k of those layers without stochastic depth, also run on the same front-end
            output (the sandwich rule, see `PrunableCTCConfig.depth_sampling`); their raw outputs come back in
            `sub_network_hidden_states`.
        chunk_size, left_chunks (`int`, *optional*): attention chunk (output frames, 0: full context) and chunks of
            left context for this call; `config.chunk_size` / `config.left_chunks` (or a dynamic draw in training)
            when not given. A streamed model gives these logits chunk by chunk.
        """
        config = self.config
        input_features, lengths = self.checked_inputs(input_features, attention_mask)
        requested_layers = run_layers = self.layers_to_run(num_layers, layers)
        if config.self_conditioning and ctc_head is None:
            raise ValueError("this encoder is self-conditioned on its CTC head: use PrunableCTCForCTC")
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        if self.training and (config.spec_augment_freq_masks or config.spec_augment_time_masks_per_second):
            input_features = spec_augment(input_features, lengths, config)
        hidden, lengths = self.subsampling(input_features, lengths)
        hidden = self.dropout(hidden)
        frame_mask = lengths_to_mask(lengths, hidden.shape[1])
        key_mask = attention_key_mask(frame_mask, *self.attention_chunk(chunk_size, left_chunks))
        rotary = self.rotary(hidden.shape[1], hidden.dtype, hidden.device)
        if hidden.shape[1] == 0:
            run_layers = []  # nothing to encode: depthwise convolutions cannot run on an empty time axis

        embedded = hidden
        hidden, all_hidden, all_attentions, intermediate_logits, intermediate_layers = self.run_layers(
            embedded, run_layers, key_mask, frame_mask, rotary, ctc_head, stochastic=self.training,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        sub_network_states = None
        if sub_network_depths:
            if max(sub_network_depths) > len(requested_layers) or min(sub_network_depths) < 1:
                raise ValueError(f"sub_network_depths {list(sub_network_depths)} must lie in [1, the depth this "
                                 "pass runs]")
            # One pass up to the deepest sub-network, on the main pass's front-end output (same SpecAugment mask
            # and dropout draw) but without stochastic depth; with self-conditioning its intermediate layers
            # condition on their posteriors as in `forward(num_layers=k)`, and each depth's raw output is read
            # before its own conditioning, as `forward(num_layers=k)` ends there.
            _, states, _, _, _ = self.run_layers(
                embedded, run_layers[:max(sub_network_depths)], key_mask, frame_mask, rotary,
                ctc_head if config.self_conditioning else None, stochastic=False, output_hidden_states=True)
            # Without frames no layer runs (see above): every sub-network's output is the empty front-end output.
            sub_network_states = tuple(states[min(depth, len(states) - 1)] for depth in sub_network_depths)

        output = PrunableCTCEncoderOutput(
            last_hidden_state=self.final_norm(hidden),
            output_lengths=lengths,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            intermediate_logits=tuple(intermediate_logits) if ctc_head is not None else None,
            intermediate_layers=torch.tensor(intermediate_layers, dtype=torch.long, device=hidden.device)
            if ctc_head is not None else None,
            sub_network_hidden_states=sub_network_states,
        )
        return output if return_dict else output.to_tuple()

    def run_layers(self, hidden, run_layers, key_mask, frame_mask, rotary, ctc_head=None, stochastic=False,
                   output_hidden_states=False, output_attentions=False):
        """Run the (1-based) layers `run_layers` in order on the front-end output `hidden` (batch, frames, hidden).

        With `stochastic`, each layer is skipped with its stochastic-depth probability; with `ctc_head`, the
        intermediate-CTC layers other than the last one emit logits (fed back when `config.self_conditioning`).
        Returns `(hidden, all_hidden, all_attentions, intermediate_logits, intermediate_layers)`: the last raw
        output, the input and every raw layer output (a list, or None without `output_hidden_states`), the
        attention probabilities (a list, or None without `output_attentions`), and the intermediate logits and
        their layers (lists, empty without `ctc_head`).
        """
        config = self.config
        all_hidden = [hidden] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        intermediate_logits, intermediate_layers = [], []
        for position, index in enumerate(run_layers):
            layer = self.layers[index - 1]
            skip = self.skip_probability(index) if stochastic else 0.0
            hidden, weights = stochastic_depth(
                hidden, partial(layer, hidden, key_mask, frame_mask, rotary, output_attentions), skip)
            if output_hidden_states:
                all_hidden.append(hidden)
            if output_attentions:
                all_attentions.append(weights)
            is_last = position == len(run_layers) - 1
            if ctc_head is not None and index in config.interctc_layers and not is_last:
                logits = ctc_head(hidden)
                intermediate_logits.append(logits)
                intermediate_layers.append(index)
                if config.self_conditioning:
                    hidden = hidden + self.conditioning_projection(logits.softmax(dim=-1))
        return hidden, all_hidden, all_attentions, intermediate_logits, intermediate_layers


def check_finite(input_features: torch.Tensor) -> None:
    """Raise `ValueError` if the features hold NaN or Inf: the model would turn them into a confident-looking
    transcript of garbage, so every entry point (forward, pipeline, CLI) refuses them here."""
    finite = torch.isfinite(input_features)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"input_features hold {bad} NaN or Inf values (of {input_features.numel()}): the audio or "
                         "its features are not finite; check the audio for NaN/Inf samples and decode it again")


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


def weighted_intermediate_loss(intermediate_losses: torch.Tensor, layers: Sequence[int],
                               config: PrunableCTCConfig) -> Optional[torch.Tensor]:
    """`sum_k w_k * CTC_k / sum_k w_k` over the intermediate layers that ran (`layers`, 1-based, in the order of
    `intermediate_losses`), w from `config.interctc_weights` (1 each when not given). A pass that runs only some
    layers normalises over the exits it has, so its loss stays a weighted mean; None when those all weigh 0."""
    weights = config.interctc_weights
    if weights is None:
        return intermediate_losses.mean()
    weight_of = dict(zip(config.interctc_layers, weights))
    w = torch.tensor([float(weight_of[i]) for i in layers], dtype=intermediate_losses.dtype,
                     device=intermediate_losses.device)
    if not float(w.sum()) > 0:
        return None
    return (w * intermediate_losses).sum() / w.sum()


def sample_sandwich_depths(num_layers: int, num_random: int) -> List[int]:
    """Sub-network depths for one sandwich step of a pass running `num_layers` layers, in increasing order: 1 and
    `num_random` depths drawn uniformly without replacement (torch's generator, so `torch.manual_seed` makes runs
    repeatable) from 2 .. num_layers - 1. Empty below 2 layers, where depth 1 is the full depth (the main pass)."""
    if num_layers < 2:
        return []
    between = num_layers - 2
    drawn = (torch.randperm(between)[:min(num_random, between)] + 2).tolist() if between else []
    return [1] + sorted(drawn)


def self_distillation_loss(teacher: torch.Tensor, students: Sequence[torch.Tensor], lengths: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """`mean_s [sum over valid frames of KL(softmax(teacher / T) || softmax(student_s / T)) / valid frames] * T^2`.

    `teacher` and each student are (batch, frames, vocab) logits; the teacher is detached here, so only the students
    learn from it. Padded frames (beyond `lengths`) are left out: their logits are forced blanks on both sides and
    would only dilute the average, and they are selected away rather than masked because the dtype's lowest value
    divided by T < 1 overflows to -inf, and 0 * inf there would turn the loss into NaN. The T^2 factor keeps the
    gradient's scale independent of T (Hinton et al.). Computed in float32, as the CTC loss is. 0 without valid
    frames.
    """
    valid = lengths_to_mask(lengths, teacher.shape[1])
    target = F.log_softmax(teacher.detach()[valid].float() / temperature, dim=-1)
    frames = max(int(valid.sum()), 1)
    terms = [F.kl_div(F.log_softmax(student[valid].float() / temperature, dim=-1), target, log_target=True,
                      reduction="sum") / frames for student in students]
    return torch.stack(terms).mean() * temperature ** 2


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
        output_attentions: Optional[bool] = None,
        output_intermediate_logits: bool = False,
        return_dict: Optional[bool] = None,
        early_exit_threshold: Optional[float] = None,
        chunk_size: Optional[int] = None,
        left_chunks: Optional[int] = None,
    ) -> Union[PrunableCTCOutput, Tuple]:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel features.
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on valid frames.
        labels (`torch.LongTensor` of shape `(batch, max_label_length)`, *optional*): token ids padded with -100.
        num_layers (`int`, *optional*): run only the first `num_layers` layers, for this call only.
        layers (`list[int]`, *optional*): run only these (1-based) layers, in increasing order, for this call only.
        output_hidden_states, output_attentions (`bool`, *optional*): see [`PrunableCTCModel.forward`].
        output_intermediate_logits (`bool`): also return the logits of the intermediate-CTC layers that ran.
        return_dict (`bool`, *optional*): a `PrunableCTCOutput` (default: `config.return_dict`) or a tuple.
        early_exit_threshold (`float`, *optional*): inference only: stop each utterance at the first intermediate-CTC
            layer (or the last layer) where its confidence (mean max posterior over non-blank frames, in [0, 1])
            reaches this value; 0 exits at the first intermediate-CTC layer, above 1 runs the full depth. The output
            then carries `exit_depths` and `exit_confidences`. Cannot be combined with `num_layers`/`layers` (prune
            the model first to exit within fewer layers), `labels`, hidden states, attentions or intermediate logits.
        chunk_size, left_chunks (`int`, *optional*): attention chunk and left context for this call, see
            [`PrunableCTCModel.forward`].

        With `labels` the loss is that of `PrunableCTCOutput.loss`. Its sandwich term (training only, with
        `depth_sampling="sandwich"`) costs one extra encoder pass up to the deepest sampled depth; its
        self-distillation term (`distillation_weight > 0`) takes this pass's final logits as the teacher, so it
        costs no extra pass, only the softmaxes of teacher and students.

        There is no `**kwargs`: a misspelt argument (`num_layer=4`) raises `TypeError` instead of silently running
        the full model. The `Trainer` passes only the batch's keys (`accepts_loss_kwargs` is False) and the ASR
        pipeline passes `input_features` and `attention_mask`.
        """
        config = self.config
        return_dict = config.return_dict if return_dict is None else return_dict
        if early_exit_threshold is not None:
            return self._early_exit(input_features, attention_mask, early_exit_threshold, return_dict, num_layers,
                                    layers, labels, output_hidden_states, output_attentions,
                                    output_intermediate_logits, chunk_size, left_chunks)
        need_intermediate = labels is not None or output_intermediate_logits or config.self_conditioning
        # Sub-networks are a training objective: evaluation (and inference) measures the model as it will run.
        sub_network_depths = []
        if self.training and labels is not None and config.depth_sampling == "sandwich":
            sub_network_depths = sample_sandwich_depths(len(self.model.layers_to_run(num_layers, layers)),
                                                        config.sandwich_random_depths)
        encoded = self.model(
            input_features,
            attention_mask=attention_mask,
            num_layers=num_layers,
            layers=layers,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            ctc_head=self.logits_from_hidden_state if need_intermediate and config.interctc_layers else None,
            sub_network_depths=sub_network_depths,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
        )
        lengths = encoded.output_lengths
        logits = blank_padded_frames(self.lm_head(encoded.last_hidden_state), lengths, config.pad_token_id)
        intermediate_logits = tuple(blank_padded_frames(x, lengths, config.pad_token_id)
                                    for x in encoded.intermediate_logits or ())

        loss = final_loss = intermediate_losses = sub_network_losses = distillation_loss = None
        if labels is not None:
            if labels.max() >= config.vocab_size:
                raise ValueError(f"labels hold ids >= vocab_size ({config.vocab_size})")
            loss_args = (encoded.output_lengths, labels, config.pad_token_id, config.ctc_loss_reduction,
                         config.ctc_zero_infinity)
            final_loss = ctc_loss(logits, *loss_args)
            loss = final_loss
            if intermediate_logits:
                intermediate_losses = torch.stack([ctc_loss(x, *loss_args) for x in intermediate_logits])
                # Weighted by the layers that ran: a pass over some layers (num_layers/layers) has fewer exits.
                intermediate_term = weighted_intermediate_loss(
                    intermediate_losses, encoded.intermediate_layers.tolist(), config)
                if config.interctc_weight > 0 and intermediate_term is not None:
                    weight = config.interctc_weight
                    loss = (1.0 - weight) * final_loss + weight * intermediate_term
            # Each sub-network is read like an exit: shared final norm and head, padded frames blank.
            sub_network_logits = tuple(
                blank_padded_frames(self.logits_from_hidden_state(state), lengths, config.pad_token_id)
                for state in encoded.sub_network_hidden_states or ())
            if sub_network_logits:
                sub_network_losses = torch.stack([ctc_loss(x, *loss_args) for x in sub_network_logits])
                loss = loss + config.sandwich_weight * sub_network_losses.mean()
            students = intermediate_logits + sub_network_logits
            if config.distillation_weight > 0 and students:
                distillation_loss = self_distillation_loss(logits, students, lengths,
                                                           config.distillation_temperature)
                loss = loss + config.distillation_weight * distillation_loss

        output = PrunableCTCOutput(
            loss=loss,
            logits=logits,
            output_lengths=encoded.output_lengths,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            intermediate_logits=intermediate_logits if output_intermediate_logits else None,
            intermediate_layers=encoded.intermediate_layers if output_intermediate_logits else None,
            ctc_loss=final_loss,
            intermediate_losses=intermediate_losses,
            sub_network_depths=torch.tensor(sub_network_depths, dtype=torch.long, device=lengths.device)
            if sub_network_depths else None,
            sub_network_losses=sub_network_losses,
            distillation_loss=distillation_loss,
        )
        return output if return_dict else output.to_tuple()

    def _early_exit(self, input_features, attention_mask, threshold, return_dict, num_layers, layers, labels,
                    output_hidden_states, output_attentions, output_intermediate_logits, chunk_size, left_chunks):
        """`forward(..., early_exit_threshold=...)`: checks the options, then `early_exit.early_exit_forward`."""
        if num_layers is not None or layers is not None:
            raise ValueError("early_exit_threshold picks the depth per utterance: do not combine it with num_layers "
                             "or layers; to exit within fewer layers, prune the model first (model.prune_to(k)), "
                             "it then exits at its remaining intermediate-CTC layers")
        if labels is not None:
            raise ValueError("early_exit_threshold is for inference: compute the loss without it (labels given)")
        if output_hidden_states or output_attentions or output_intermediate_logits:
            raise ValueError("early_exit_threshold cannot return hidden states, attentions or intermediate logits "
                             "(utterances stop at different layers): call without it to inspect layers")
        if self.training:
            raise ValueError("early_exit_threshold is for inference: call model.eval() first (stochastic depth and "
                             "dropout would make exits random)")
        logits, lengths, exit_depths, confidences = early_exit_forward(self, input_features, attention_mask,
                                                                       threshold, chunk_size, left_chunks)
        output = PrunableCTCOutput(logits=logits, output_lengths=lengths, exit_depths=exit_depths,
                                   exit_confidences=confidences)
        return output if return_dict else output.to_tuple()


# save_pretrained copies the defining files only for classes registered with an auto class.
PrunableCTCModel.register_for_auto_class("AutoModel")
PrunableCTCForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = ["PrunableCTCPreTrainedModel", "PrunableCTCModel", "PrunableCTCForCTC", "PrunableCTCOutput",
           "PrunableCTCEncoderOutput"]
