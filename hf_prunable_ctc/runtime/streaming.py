"""Streaming recognition, chunk by chunk, with a depth that may change from one call to the next.

    recognizer = StreamingRecognizer("runs/streaming/model", chunk_ms=640, left_chunks=4)
    for piece in microphone_pieces():                # float samples in [-1, 1] at the extractor's rate
        print(recognizer.accept(piece, num_layers=2))   # the partial transcript so far
    print(recognizer.finalize())                     # the rest of the audio, and the final transcript
    recognizer.reset()                               # ready for the next utterance

What a stream computes, in order, each step keeping only the state the next needs:

1. features (`StreamingFeatures`): Kaldi fbank frames as soon as their 25 ms window has arrived (the samples of the
   unfinished windows wait), normalised with the extractor's global CMVN statistics;
2. the convolutional front end (`ConvSubsampling.forward_chunk`): output frames as soon as the feature frames they
   read have arrived;
3. the encoder, one attention chunk of `chunk_ms` at a time (the last one shorter): every layer attends to the
   chunk and to its cached keys and values of the `left_chunks` chunks before it, and a causal conformer
   convolution reads its cached `conv_kernel_size - 1` earlier frames; then the shared final norm and CTC head.

A stream fed at a fixed depth therefore gives the logits of `model(features, chunk_size=..., left_chunks=...)` on
the whole utterance, whatever the sizes of the pieces handed to `accept`.

When the depth changes: every layer that runs on a chunk keeps its caches from the chunks it ran on, so the
shallower layers of a stream are always those of a stream at that depth. A layer that did not run on the previous
chunk (the depth went up, or early exit stopped below it) starts that chunk with empty caches, as at the start of
a stream: its cache would otherwise have a gap, and filling it means running that layer (and those under it with
their own gaps) on chunks already decoded, the cost the lower depth was chosen to save. The layer still sees the
same positions (rotary positions are relative), only no left context, and regains its full left context after
`left_chunks` chunks. Going down costs nothing: the layers left out simply stop.
"""

from __future__ import annotations

import math
import os
from typing import List, Optional

import numpy as np
import torch
from transformers import AutoProcessor

from ..configuration_prunable_ctc import check_attention_chunk
from ..early_exit import check_threshold, max_posterior_confidence
from ..feature_extraction_prunable_ctc import HOP_LENGTH, WIN_LENGTH
from ..modeling_prunable_ctc import PrunableCTCForCTC
from .budget import depth_for_budget, profile_latency
from .chunked_stream import ChunkedStream, chunk_frames
from .ctc_text import CTCTextDecoder


class StreamingFeatures:
    """Normalised log-mel frames of a stream of samples, each frame once its window has arrived.

    Frame i covers samples `160 i .. 160 i + 399` (25 ms windows every 10 ms): the samples after the last complete
    frame's hop wait for the next call. The frames returned over a stream equal those the extractor computes for the
    whole utterance, which needs statistics that do not depend on the utterance: global CMVN (or none).

    Args:
        feature_extractor: a `PrunableCTCFeatureExtractor` with `feature_type="kaldi_fbank"` and global CMVN
            statistics (`hf_prunable_ctc.data.global_cmvn`), or with CMVN turned off (`do_ceptral_normalize=False`).
    """

    def __init__(self, feature_extractor):
        if getattr(feature_extractor, "feature_type", "kaldi_fbank") != "kaldi_fbank":
            raise ValueError("streaming needs Kaldi fbank features: Whisper's log-mel keeps the top 8 log10 units of "
                             "the whole utterance, which a stream cannot know")
        if feature_extractor.do_ceptral_normalize and feature_extractor.global_cmvn_mean is None:
            raise ValueError("this feature extractor normalises each utterance by its own statistics, which a stream "
                             "does not have until it ends: train with global CMVN (python -m "
                             "hf_prunable_ctc.data.global_cmvn) to stream")
        self.extractor = feature_extractor
        self.window, self.hop = WIN_LENGTH, HOP_LENGTH
        self.reset()

    def reset(self) -> None:
        """Forget the samples of the current stream."""
        self.samples = torch.zeros(0, dtype=torch.float32)

    def accept(self, samples) -> torch.Tensor:
        """The frames completed by `samples` (1-D float audio in [-1, 1] at the extractor's rate), `(frames,
        num_mel_bins)` float32, possibly 0 frames. Raises `ValueError` on NaN or Inf samples."""
        samples = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1)
        if not math.isfinite(float(samples.sum())):
            raise ValueError("audio contains NaN or Inf samples")
        self.samples = torch.cat((self.samples, samples))
        frames = self.extractor.num_frames(self.samples.shape[0])
        if frames == 0:
            return self.samples.new_zeros((0, self.extractor.num_mel_bins))
        features = self.extractor.normalize(self.extractor.fbank(self.samples[:(frames - 1) * self.hop + self.window]))
        self.samples = self.samples[frames * self.hop:].clone()
        return features.to(torch.float32)


class StreamingSubsampling:
    """The model's convolutional front end on a stream (`ConvSubsampling.forward_chunk`): output frames as soon as
    the feature frames they read have arrived."""

    def __init__(self, model):
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.cache, self.emitted = None, 0

    def accept(self, features: torch.Tensor, final: bool = False) -> torch.Tensor:
        encoder = self.model.model
        features = features.to(encoder.final_norm.weight.dtype)[None]
        hidden, self.cache = encoder.subsampling.forward_chunk(features, self.cache, final, self.emitted)
        self.emitted += hidden.shape[1]
        return hidden


class StreamingRecognizer(ChunkedStream):
    """Greedy CTC transcripts of audio that arrives in pieces, one attention chunk at a time.

    Args:
        model: a `PrunableCTCForCTC` (with `processor`) or the folder of a saved model and its processor. A
            conformer must have `causal_conv=True` (a centred convolution reads frames of the next chunk). The model
            should be trained for chunks (`dynamic_chunk_training=True`) and with global CMVN.
        processor: a `Wav2Vec2Processor` (feature extractor + tokenizer), or `(feature_extractor, tokenizer)`; read
            from `model` when it is a folder.
        chunk_ms: attention chunk in ms of audio, a multiple of one output frame (`inputs_to_logits_ratio`
            samples: 40 ms for the package's models).
        left_chunks: chunks of left context each chunk attends to (-1: every earlier chunk); default: the
            config's `left_chunks`.
        num_layers, rtf_budget, early_exit_threshold: the default depth of every call (at most one), see `accept`.
        latency_profile: for `rtf_budget`: a profile from `hf_prunable_ctc.runtime.budget.profile_latency`,
            measured (and cached) at the first call with a budget when not given.

    `accept(samples, ...)` returns the partial transcript, `finalize(...)` the final one, `reset()` starts the next
    utterance; `logits` (``(1, frames, vocab)``), `chunk_depths` and `transcript` describe the stream so far. Only
    one stream at a time, batch size 1.
    """

    def __init__(self, model, processor=None, chunk_ms: int = 640, left_chunks: Optional[int] = None,
                 num_layers: Optional[int] = None, rtf_budget: Optional[float] = None,
                 early_exit_threshold: Optional[float] = None, latency_profile: Optional[dict] = None):
        if isinstance(model, (str, os.PathLike)):
            processor = AutoProcessor.from_pretrained(model) if processor is None else processor
            model = PrunableCTCForCTC.from_pretrained(model)
        if processor is None:
            raise ValueError("give the model's processor (or (feature_extractor, tokenizer)) with a model object")
        extractor, tokenizer = (processor if isinstance(processor, (tuple, list))
                                else (processor.feature_extractor, processor.tokenizer))
        config = model.config
        if config.encoder_type == "conformer" and not config.causal_conv:
            raise ValueError("this conformer's convolution is centred (causal_conv=False): it reads frames of the "
                             "next chunk, so it cannot stream; train with causal_conv=True")
        frames = chunk_frames(chunk_ms, 1000.0 * config.inputs_to_logits_ratio / extractor.sampling_rate)
        left_chunks = config.left_chunks if left_chunks is None else left_chunks
        check_attention_chunk(frames, left_chunks)
        self.model = model.eval()
        self.chunk_frames, self.left_chunks, self.chunk_ms = frames, left_chunks, chunk_ms
        self.features = StreamingFeatures(extractor)
        self.front_end = StreamingSubsampling(self.model)
        self.num_layers = len(self.model.model.layers)
        self.interctc_layers = list(config.interctc_layers)
        self.self_conditioning = bool(config.self_conditioning)
        self.vocab_size = config.vocab_size
        self.decoder = CTCTextDecoder(tokenizer)
        self.latency_profile = latency_profile
        self.depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold)
        self.reset()

    def _feed(self, features, final: bool, depth: Optional[dict]) -> None:
        with torch.inference_mode():
            super()._feed(features, final, depth)

    # --- the model ------------------------------------------------------------------------------------------------

    def _positions(self, frames: int, start: int):
        weight = self.model.model.final_norm.weight
        return self.model.model.rotary(frames, weight.dtype, weight.device, start=start)

    def _layer(self, index: int, hidden, positions, caches: tuple) -> tuple:
        keys, values, conv = caches
        hidden, (keys, values), conv = self.model.model.layers[index - 1].forward_chunk(hidden, positions,
                                                                                        (keys, values), conv)
        return hidden, (keys, values, conv)

    def _empty_caches(self, index: int) -> tuple:
        config, weight = self.model.config, self.model.model.final_norm.weight
        heads = config.num_attention_heads
        empty = weight.new_zeros(1, heads, 0, config.hidden_size // heads)
        conv = getattr(self.model.model.layers[index - 1], "conv", None)
        conv_cache = None if conv is None else weight.new_zeros(1, config.hidden_size, conv.left_padding)
        return empty, empty, conv_cache

    def _head(self, hidden):
        return self.model.logits_from_hidden_state(hidden)

    def _condition(self, hidden, logits):
        logits = self.model.logits_from_hidden_state(hidden) if logits is None else logits
        return hidden + self.model.model.conditioning_projection(logits.softmax(dim=-1))

    def _confidence(self, logits) -> float:
        lengths = torch.tensor([logits.shape[1]], device=logits.device)
        return float(max_posterior_confidence(logits, lengths, self.model.config.pad_token_id)[0])

    def _concat(self, arrays: list):
        return torch.cat(arrays, dim=1)

    def _empty_logits(self):
        return torch.zeros(1, 0, self.vocab_size)

    # --- depths ---------------------------------------------------------------------------------------------------

    def _layers_for_depth(self, num_layers: int) -> List[int]:
        return self.model.model.layers_to_run(num_layers=num_layers)

    def _layers_for_budget(self, rtf_budget: float) -> List[int]:
        if self.latency_profile is None:
            self.latency_profile = profile_latency(self.model)
        depth = depth_for_budget(self.model, rtf=rtf_budget, profile=self.latency_profile)
        return self.model.pruning_schedule()[depth]

    def _check_threshold(self, threshold) -> float:
        return check_threshold(threshold)


__all__ = ["StreamingRecognizer", "StreamingFeatures", "StreamingSubsampling"]
