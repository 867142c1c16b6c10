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
from typing import Any, List, Optional

import numpy as np
import torch
from transformers import AutoProcessor

from ..configuration_prunable_ctc import check_attention_chunk
from ..early_exit import check_threshold, exit_layers, max_posterior_confidence
from ..feature_extraction_prunable_ctc import HOP_LENGTH, WIN_LENGTH
from ..modeling_prunable_ctc import PrunableCTCForCTC
from .budget import depth_for_budget, profile_latency
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


class StreamingRecognizer:
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

    Only one stream at a time, batch size 1; `reset()` between utterances.
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
        frame_ms = 1000.0 * config.inputs_to_logits_ratio / extractor.sampling_rate
        frames = chunk_ms / frame_ms
        if isinstance(chunk_ms, bool) or not chunk_ms > 0 or abs(frames - round(frames)) > 1e-9:
            raise ValueError(f"chunk_ms must be a positive multiple of one output frame ({frame_ms:g} ms), "
                             f"got {chunk_ms!r}")
        left_chunks = config.left_chunks if left_chunks is None else left_chunks
        check_attention_chunk(int(round(frames)), left_chunks)
        self.model = model.eval()
        self.chunk_frames, self.left_chunks, self.chunk_ms = int(round(frames)), left_chunks, chunk_ms
        self.features = StreamingFeatures(extractor)
        self.decoder = CTCTextDecoder(tokenizer)
        self.latency_profile = latency_profile
        self.depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: forget the audio, the caches and the transcript."""
        layers = len(self.model.model.layers)
        self.features.reset()
        self.front_end_cache = None
        self.pending = None  # front-end frames not yet in a chunk, (1, frames, hidden)
        self.position = 0  # front-end frames put into chunks so far
        self.emitted = 0  # front-end frames emitted so far
        self.attention_caches: List[Any] = [None] * layers
        self.conv_caches: List[Any] = [None] * layers
        self.ran_last_chunk = [False] * layers
        self.chunk_logits: List[torch.Tensor] = []
        self.chunk_layers: List[List[int]] = []
        self.ids: List[int] = []
        self.finished = False

    @property
    def logits(self) -> torch.Tensor:
        """The CTC logits of every chunk decoded so far, end to end: `(1, frames, vocab_size)`."""
        vocab = self.model.config.vocab_size
        return torch.cat(self.chunk_logits, dim=1) if self.chunk_logits else torch.zeros(1, 0, vocab)

    @property
    def chunk_depths(self) -> List[int]:
        """The number of layers each chunk decoded so far ran (early exit: where it stopped)."""
        return [len(layers) for layers in self.chunk_layers]

    @property
    def transcript(self) -> str:
        """The greedy transcript of the chunks decoded so far."""
        return self.decoder(np.asarray(self.ids, dtype=np.int64))

    def accept(self, samples, num_layers: Optional[int] = None, rtf_budget: Optional[float] = None,
               early_exit_threshold: Optional[float] = None) -> str:
        """Feed the next samples (1-D float audio in [-1, 1] at the extractor's rate, any length) and decode every
        chunk they complete; returns the partial transcript.

        Args:
            num_layers: run the first `num_layers` layers on these chunks.
            rtf_budget: run the deepest depth whose full-utterance RTF (seconds of compute per second of audio, in
                the latency profile) fits, with the layers the pruning schedule keeps at that depth.
            early_exit_threshold: run the layers up to the first exit layer (intermediate CTC, or the last) where
                the chunk's confidence reaches this value (see `hf_prunable_ctc.early_exit`).

        At most one of them; none: the recogniser's default. Changing the depth between calls is allowed; see the
        module docstring for what the layers then see.
        """
        if self.finished:
            raise RuntimeError("the stream was finalized: call reset() to start a new one")
        depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold) or self.depth
        with torch.inference_mode():
            self._feed(self.features.accept(samples), final=False, depth=depth)
        return self.transcript

    def finalize(self, num_layers: Optional[int] = None, rtf_budget: Optional[float] = None,
                 early_exit_threshold: Optional[float] = None) -> str:
        """End the stream: decode the frames left (the last chunk may be shorter) and return the final transcript.
        The depth options are those of `accept`. Call `reset()` before the next stream."""
        if self.finished:
            raise RuntimeError("the stream was finalized: call reset() to start a new one")
        depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold) or self.depth
        with torch.inference_mode():
            self._feed(self.features.accept(np.zeros(0, dtype=np.float32)), final=True, depth=depth)
        self.finished = True
        return self.transcript

    def _checked_depth(self, num_layers, rtf_budget, early_exit_threshold) -> Optional[dict]:
        """The depth options of a call as `{"layers": [...]}` or `{"threshold": t}`, or None when none is given."""
        given = [name for name, value in (("num_layers", num_layers), ("rtf_budget", rtf_budget),
                                          ("early_exit_threshold", early_exit_threshold)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of num_layers, rtf_budget, early_exit_threshold, got {given}")
        if early_exit_threshold is not None:
            return {"threshold": check_threshold(early_exit_threshold)}
        if rtf_budget is not None:
            if self.latency_profile is None:
                self.latency_profile = profile_latency(self.model)
            depth = depth_for_budget(self.model, rtf=rtf_budget, profile=self.latency_profile)
            return {"layers": self.model.pruning_schedule()[depth]}
        if num_layers is not None:
            return {"layers": self.model.model.layers_to_run(num_layers=num_layers)}
        return None

    def _feed(self, features: torch.Tensor, final: bool, depth: Optional[dict]) -> None:
        encoder = self.model.model
        features = features.to(encoder.final_norm.weight.dtype)[None]
        hidden, self.front_end_cache = encoder.subsampling.forward_chunk(features, self.front_end_cache, final,
                                                                         self.emitted)
        self.emitted += hidden.shape[1]
        self.pending = hidden if self.pending is None else torch.cat((self.pending, hidden), dim=1)
        while self.pending.shape[1] >= self.chunk_frames or (final and self.pending.shape[1] > 0):
            chunk, self.pending = self.pending[:, :self.chunk_frames], self.pending[:, self.chunk_frames:]
            self._decode_chunk(chunk, depth or {"layers": list(range(1, len(encoder.layers) + 1))})

    def _decode_chunk(self, hidden: torch.Tensor, depth: dict) -> None:
        """Run one chunk `(1, frames, hidden)` through the layers `depth` names (or up to its early exit), update
        the caches and append its logits and greedy ids."""
        model, encoder, config = self.model, self.model.model, self.model.config
        threshold = depth.get("threshold")
        run = depth["layers"] if threshold is None else list(range(1, len(encoder.layers) + 1))
        exits = set(exit_layers(config)) if threshold is not None else set()
        rotary = encoder.rotary(hidden.shape[1], hidden.dtype, hidden.device, start=self.position)
        ran, logits = [], None
        for position, index in enumerate(run):
            hidden, logits = self._run_layer(index, hidden, rotary), None
            ran.append(index)
            if position == len(run) - 1:
                break
            if index in exits:
                logits = model.logits_from_hidden_state(hidden)
                lengths = torch.tensor([hidden.shape[1]], device=hidden.device)
                if float(max_posterior_confidence(logits, lengths, config.pad_token_id)[0]) >= threshold:
                    break
            if config.self_conditioning and index in config.interctc_layers:
                # As the full forward does: intermediate-CTC layers feed their posteriors to the next layer.
                logits = model.logits_from_hidden_state(hidden) if logits is None else logits
                hidden = hidden + encoder.conditioning_projection(logits.softmax(dim=-1))
                logits = None
        if logits is None:
            logits = model.logits_from_hidden_state(hidden)
        for index in range(1, len(encoder.layers) + 1):
            self.ran_last_chunk[index - 1] = index in ran
        self.position += hidden.shape[1]
        self.chunk_logits.append(logits)
        self.chunk_layers.append(ran)
        self.ids += logits[0].argmax(dim=-1).tolist()

    def _run_layer(self, index: int, hidden: torch.Tensor, rotary) -> torch.Tensor:
        """One layer on one chunk, with its caches (emptied first when it did not run on the previous chunk)."""
        layer = self.model.model.layers[index - 1]
        attention_cache, conv_cache = self.attention_caches[index - 1], self.conv_caches[index - 1]
        if not self.ran_last_chunk[index - 1] or attention_cache is None:
            attention_cache, conv_cache = self._empty_caches(layer, hidden)
        hidden, attention_cache, conv_cache = layer.forward_chunk(hidden, rotary, attention_cache, conv_cache)
        if self.left_chunks >= 0:
            keep = self.left_chunks * self.chunk_frames
            attention_cache = tuple(x[:, :, x.shape[2] - keep:] if keep else x[:, :, :0] for x in attention_cache)
        self.attention_caches[index - 1], self.conv_caches[index - 1] = attention_cache, conv_cache
        return hidden

    def _empty_caches(self, layer, hidden: torch.Tensor):
        config = self.model.config
        heads = config.num_attention_heads
        empty = hidden.new_zeros(hidden.shape[0], heads, 0, config.hidden_size // heads)
        conv = getattr(layer, "conv", None)
        conv_cache = None if conv is None else hidden.new_zeros(hidden.shape[0], config.hidden_size,
                                                                conv.left_padding)
        return (empty, empty), conv_cache


__all__ = ["StreamingRecognizer", "StreamingFeatures"]
