"""Streaming recognition from an every-depth ONNX folder, without torch or transformers.

    from hf_prunable_ctc.runtime.onnx_streaming import OnnxStreamingRecognizer

    recognizer = OnnxStreamingRecognizer("onnx-folder", chunk_ms=640, left_chunks=4)
    for piece in microphone_pieces():                 # float samples in [-1, 1] at the model's rate
        print(recognizer.accept(piece, num_layers=2))    # the partial transcript so far
    print(recognizer.finalize())                      # the rest of the audio, and the final transcript
    recognizer.reset()                                # ready for the next utterance

The folder is what `export_onnx(model_dir, out_dir)` writes for a model that can stream (chunk-aware attention, a
causal conformer convolution, global CMVN): besides the full-utterance graphs, one chunk graph per layer with its
caches as inputs and outputs, and the front end's convolutions one by one (see `runtime.export`). A stream computes
what `runtime.streaming.StreamingRecognizer` computes on the PyTorch model, step by step and with the same rules
when the depth changes mid-stream (a layer that did not run on the previous chunk starts with empty caches; see
that module), so at a fixed depth its logits are those of the chunk-masked forward on the whole utterance.

What each step keeps between calls, all numpy arrays:

1. features (`NumpyStreamingFeatures`): the samples of the unfinished 25 ms windows; the frames are the numpy
   front end's Kaldi fbank (`onnx_runtime.NumpyFrontEnd`), normalised with the extractor's global CMVN;
2. front end (`OnnxStreamingSubsampling`): per convolution, its input frames not yet consumed;
3. encoder: the frames waiting for a full chunk, and per layer the keys and values of its last `left_chunks`
   chunks and a causal conformer convolution's `conv_kernel_size - 1` last inputs.

The bookkeeping of chunks, caches, depths and the transcript is `runtime.chunked_stream.ChunkedStream`, shared
with the PyTorch recogniser.

Imports numpy and onnxruntime (and, for `rtf_budget` without a given profile, `OnnxPrunableCTC` to time the
full-utterance graphs), as `onnx_runtime` does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from ..pruning import validate_depth
from .chunked_stream import ChunkedStream, chunk_frames
from .ctc_text import CTCTextDecoder
from .depth_budget import check_budget, deepest_depth_within
from .onnx_runtime import (HOP_LENGTH, WIN_LENGTH, NumpyFrontEnd, _checked_threshold, max_posterior_confidence,
                           read_runtime_config)


class NumpyStreamingFeatures:
    """Normalised Kaldi fbank frames of a stream of samples, each frame once its 25 ms window has arrived: the
    numpy counterpart of `runtime.streaming.StreamingFeatures`, read from an exported folder.

    Frame i covers samples `160 i .. 160 i + 399`; the samples after the last complete frame's hop wait for the next
    call. The frames returned over a stream equal `NumpyFrontEnd.fbank` of the whole utterance normalised by the
    global statistics (the normalisation of each frame does not depend on the others).
    """

    def __init__(self, folder: str | os.PathLike):
        settings = json.loads((Path(folder) / "preprocessor_config.json").read_text())
        if settings.get("feature_type", "kaldi_fbank") != "kaldi_fbank":
            raise ValueError("streaming needs Kaldi fbank features: Whisper's log-mel keeps the top 8 log10 units of "
                             "the whole utterance, which a stream cannot know")
        normalize = bool(settings.get("do_ceptral_normalize", True))
        if normalize and settings.get("global_cmvn_mean") is None:
            raise ValueError("this feature extractor normalises each utterance by its own statistics, which a stream "
                             "does not have until it ends: train with global CMVN (python -m "
                             "hf_prunable_ctc.data.global_cmvn) to stream")
        self.front_end = NumpyFrontEnd(folder)
        bins = self.front_end.mel_filters.shape[1]
        self.mean = np.zeros(bins, np.float32)
        self.std = np.ones(bins, np.float32)
        if normalize and settings.get("normalize_means", True):
            self.mean = np.asarray(settings["global_cmvn_mean"], np.float32)
        if normalize and settings.get("normalize_vars", True):
            self.std = np.asarray(settings["global_cmvn_std"], np.float32)
        self.reset()

    @property
    def sampling_rate(self) -> int:
        return self.front_end.sampling_rate

    def reset(self) -> None:
        """Forget the samples of the current stream."""
        self.samples = np.zeros(0, np.float32)

    def accept(self, samples) -> np.ndarray:
        """The frames completed by `samples` (1-D float audio in [-1, 1] at the extractor's rate), `(frames,
        num_mel_bins)` float32, possibly 0 frames. Raises `ValueError` on NaN or Inf samples."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not math.isfinite(float(samples.sum())):
            raise ValueError("audio contains NaN or Inf samples")
        self.samples = np.concatenate((self.samples, samples))
        frames = 0 if len(self.samples) < WIN_LENGTH else 1 + (len(self.samples) - WIN_LENGTH) // HOP_LENGTH
        if frames == 0:
            return np.zeros((0, self.mean.shape[0]), np.float32)
        # Subtract, then divide, in float32: the order of the torch extractor's global CMVN.
        features = (self.front_end.fbank(self.samples[:(frames - 1) * HOP_LENGTH + WIN_LENGTH]) - self.mean) / self.std
        self.samples = self.samples[frames * HOP_LENGTH:].copy()
        return features.astype(np.float32)


class OnnxStreamingSubsampling:
    """The convolutional front end on a stream of feature frames fed in pieces of any size, as
    `ConvSubsampling.forward_chunk` computes it: each stride-s, kernel-3 convolution (padding 1) emits output t once
    its input frames `s t - 1 .. s t + 1` are there, keeping the frames it has not consumed (a zero frame standing
    for the left padding at first); at the end of the stream each reads its right padding (one zero frame).

    Args:
        sessions: one ONNX Runtime session per convolution (``window -> output``, no padding in time), then the
            projection's (``hidden[, start] -> hidden_out``).
        spec: the folder's ``runtime.json["streaming"]`` (strides, frame shapes, absolute positions).
    """

    def __init__(self, sessions: Sequence[Any], spec: dict[str, Any]):
        self.convs, self.projection = list(sessions[:-1]), sessions[-1]
        self.strides = [int(s) for s in spec["strides"]]
        self.frame_shapes = [tuple(shape) for shape in spec["frame_shapes"]]
        self.hidden_size = int(spec["hidden_size"])
        self.max_positions = spec["max_positions"]
        self.reset()

    def reset(self) -> None:
        """Start a new stream: the left padding of every convolution, no frame emitted."""
        self.cache = [self._frames(level, 1) for level in range(len(self.convs))]
        self.emitted = 0

    def _frames(self, level: int, count: int) -> np.ndarray:
        return np.zeros((1,) + self.frame_shapes[level] + (count,), np.float32)

    def accept(self, features: np.ndarray, final: bool = False) -> np.ndarray:
        """The output frames completed by `features` ``(frames, num_mel_bins)`` (0 frames allowed), ``(1, new
        frames, hidden_size)``; with `final`, the last ones too (the stream then ends)."""
        hidden = np.ascontiguousarray(np.asarray(features, np.float32).T[None])  # (1, bins, frames)
        if len(self.frame_shapes[0]) == 2:
            hidden = hidden[:, None]  # conv2d: (1, 1, bins, frames)
        for level, (session, stride) in enumerate(zip(self.convs, self.strides)):
            pending = np.concatenate([self.cache[level], hidden] + ([self._frames(level, 1)] if final else []), -1)
            count = (pending.shape[-1] - 3) // stride + 1 if pending.shape[-1] >= 3 else 0
            if count:
                window = np.ascontiguousarray(pending[..., :stride * (count - 1) + 3])
                hidden = session.run(None, {"window": window})[0]
            else:
                hidden = self._frames(level + 1, 0)
            self.cache[level] = pending[..., stride * count:]
        if hidden.shape[-1] == 0:
            return np.zeros((1, 0, self.hidden_size), np.float32)
        return self._project(hidden)

    def _project(self, hidden: np.ndarray) -> np.ndarray:
        frames = hidden.shape[-1]
        feed = {"hidden": hidden}
        if self.max_positions is not None:
            if self.emitted + frames > self.max_positions:
                raise ValueError(f"the stream is longer than the {self.max_positions} absolute positions this model "
                                 "has: reset the recogniser between utterances")
            feed["start"] = np.array(self.emitted, np.int64)
        self.emitted += frames
        return self.projection.run(None, feed)[0]


class OnnxStreamingRecognizer(ChunkedStream):
    """Greedy CTC transcripts of audio that arrives in pieces, one attention chunk at a time, from an exported
    folder with ONNX Runtime: `runtime.streaming.StreamingRecognizer` without torch or transformers.

    Args:
        folder: an every-depth folder that `export_onnx` wrote with its streaming graphs (``runtime.json`` says
            whether it has them; a model that cannot stream gets none, and this class says why).
        chunk_ms: attention chunk in ms of audio, a multiple of one output frame (`inputs_to_logits_ratio`
            samples: 40 ms for the package's models).
        left_chunks: chunks of left context each chunk attends to (-1: every earlier chunk); default: the
            model's config's `left_chunks`.
        num_layers, rtf_budget, early_exit_threshold: the default depth of every call (at most one), see `accept`.
        latency_profile: for `rtf_budget`: a profile as `OnnxPrunableCTC.profile_latency` returns it (at least
            ``{"rtf": {depth: rtf}}``), measured through the folder's full-utterance graphs at the first call with a
            budget when not given.
        threads: ONNX Runtime intra-op threads (default: its own choice).

    `accept(samples, ...)` returns the partial transcript, `finalize(...)` the final one, `reset()` starts the next
    utterance; `logits` (numpy, ``(1, frames, vocab)``), `chunk_depths` and `transcript` describe the stream so far.
    Only one stream at a time, batch size 1.
    """

    def __init__(self, folder: str | os.PathLike, chunk_ms: int = 640, left_chunks: Optional[int] = None,
                 num_layers: Optional[int] = None, rtf_budget: Optional[float] = None,
                 early_exit_threshold: Optional[float] = None, latency_profile: Optional[dict] = None,
                 threads: Optional[int] = None):
        import onnxruntime

        self.folder, self.threads, self.latency_profile = Path(folder), threads, latency_profile
        config = self._read_config(self.folder)
        spec = config["streaming"]
        self.features = NumpyStreamingFeatures(self.folder)
        self.chunk_frames = chunk_frames(chunk_ms, 1000.0 * config["inputs_to_logits_ratio"] /
                                          self.features.sampling_rate)
        self.chunk_ms = chunk_ms
        self.left_chunks = _checked_left_chunks(spec["left_chunks"] if left_chunks is None else left_chunks)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads

        def session(name):
            return onnxruntime.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])

        self.front_end = OnnxStreamingSubsampling(
            [session(name) for name in spec["front_end_convs"] + [spec["front_end_projection"]]], spec)
        self.layer_graphs = [session(name) for name in spec["layers"]]
        self.head_graph = session(config["head"])
        self.conditioning_graph = session(config["conditioning"]) if config["conditioning"] else None
        self.num_layers = int(config["num_layers"])
        self.kept_layers = config.get("kept_layers")
        self.interctc_layers = [int(i) for i in config["interctc_layers"]]
        self.self_conditioning = self.conditioning_graph is not None
        self.blank_id = int(config["blank_id"])
        self.pruning_schedule = {int(k): list(v) for k, v in config["pruning_schedule"].items()}
        self.spec = spec
        self.decoder = CTCTextDecoder.from_folder(self.folder)
        self.vocab_size = len(self.decoder.group_ids)
        self.depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold)
        self.reset()

    @staticmethod
    def _read_config(folder: Path) -> dict[str, Any]:
        config = read_runtime_config(folder)
        if not config.get("streaming"):
            reason = config.get("streaming_unavailable") or "it was exported before the streaming graphs existed"
            raise ValueError(f"{folder} has no streaming graphs: {reason}")
        return config

    # --- the graphs -----------------------------------------------------------------------------------------------

    def _layer(self, index: int, hidden, positions: int, caches: tuple) -> tuple:
        keys, values, conv = caches
        feed = {"hidden": hidden, "key_cache": keys, "value_cache": values}
        if self.spec["rotary"]:
            feed["start"] = np.array(positions, np.int64)  # the chunk's first position; the graph builds the rest
        if conv is not None:
            feed["conv_cache"] = conv
        outputs = self.layer_graphs[index - 1].run(None, feed)
        return outputs[0], (outputs[1], outputs[2], outputs[3] if conv is not None else None)

    def _empty_caches(self, index: int) -> tuple:
        spec = self.spec
        empty = np.zeros((1, spec["num_attention_heads"], 0, spec["head_dim"]), np.float32)
        frames = spec["conv_cache_frames"]
        conv = np.zeros((1, spec["hidden_size"], frames), np.float32) if frames else None
        return empty, empty, conv

    def _head(self, hidden):
        return self.head_graph.run(None, {"hidden": hidden, "output_lengths": np.array([hidden.shape[1]],
                                                                                         np.int64)})[0]

    def _condition(self, hidden, logits):
        # The graph computes the posteriors from `hidden` itself: the operations that gave `logits`, if any.
        return self.conditioning_graph.run(None, {"hidden": hidden})[0]

    def _confidence(self, logits) -> float:
        return float(max_posterior_confidence(logits, np.array([logits.shape[1]]), self.blank_id)[0])

    def _concat(self, arrays: list):
        return np.concatenate(arrays, axis=1)

    def _empty_logits(self):
        return np.zeros((1, 0, self.vocab_size), np.float32)

    # --- depths ---------------------------------------------------------------------------------------------------

    def _layers_for_depth(self, num_layers: int) -> List[int]:
        if isinstance(num_layers, np.integer):
            num_layers = int(num_layers)
        return list(range(1, validate_depth(num_layers, self.num_layers, self.kept_layers) + 1))

    def _layers_for_budget(self, rtf_budget: float) -> List[int]:
        check_budget(rtf_budget)  # before measuring a profile for a budget that no profile could meet
        if self.latency_profile is None:
            from .onnx_runtime import OnnxPrunableCTC

            self.latency_profile = OnnxPrunableCTC(self.folder, threads=self.threads).profile_latency()
        depth = deepest_depth_within(rtf_budget, self.latency_profile, self.pruning_schedule,
                                     remeasure="measure it again (OnnxPrunableCTC.profile_latency())")
        return self.pruning_schedule[depth]

    def _check_threshold(self, threshold) -> float:
        return _checked_threshold(threshold)


def _checked_left_chunks(left_chunks) -> int:
    if isinstance(left_chunks, np.integer):
        left_chunks = int(left_chunks)
    if not isinstance(left_chunks, int) or isinstance(left_chunks, bool) or left_chunks < -1:
        raise ValueError(f"left_chunks: must be an integer >= -1 (-1: every earlier chunk) (got {left_chunks!r})")
    return left_chunks


__all__ = ["OnnxStreamingRecognizer", "NumpyStreamingFeatures", "OnnxStreamingSubsampling"]
