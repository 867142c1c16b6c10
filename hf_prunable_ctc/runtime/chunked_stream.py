"""The bookkeeping of a chunked CTC stream, shared by the PyTorch and the ONNX streaming recognisers.

`runtime.streaming.StreamingRecognizer` runs the layers with torch, `runtime.onnx_streaming.OnnxStreamingRecognizer`
with ONNX Runtime; both cut the front end's output into attention chunks, keep each layer's caches, apply the same
rules when the depth changes mid-stream and decode greedily, here. Imports numpy only, so that the ONNX path stays
free of torch.
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np


class ChunkedStream:
    """The bookkeeping of a chunked CTC stream, whatever runs the model: chunking, caches, depths, transcript.

    The hidden states of the front end are cut into attention chunks of `chunk_frames` frames counted from the
    start of the stream (the last one, at `finalize`, may be shorter); each chunk runs the layers its depth names,
    each layer with its caches, and the CTC head. The rules (those of `runtime.streaming`): every layer that runs on
    a chunk keeps its caches from the chunks it ran on, trimmed to `left_chunks` chunks; a layer that did not run
    on the previous chunk starts with empty caches; early exit stops a chunk at the first exit layer whose
    confidence reaches the threshold; a self-conditioned model adds the intermediate-CTC layers' posteriors back.

    A subclass sets `features` (``accept(samples) -> frames``, ``reset()``), `front_end` (``accept(frames, final)
    -> (1, n, hidden)``, ``reset()``), `chunk_frames`, `left_chunks`, `num_layers`, `interctc_layers`,
    `self_conditioning`, `vocab_size`, `decoder` (ids -> text) and `depth` (the default of `_checked_depth`), and
    runs the model in the hooks below; arrays only need ``shape``, slicing, ``argmax`` and ``tolist``.
    """

    # --- hooks --------------------------------------------------------------------------------------------------

    def _positions(self, frames: int, start: int):
        """What every layer needs to know of where a chunk of `frames` frames starting at `start` lies, computed
        once per chunk (the rotary tables, for instance); by default `start` itself."""
        return start

    def _layer(self, index: int, hidden, positions, caches: tuple) -> tuple:
        """Layer `index` (1-based) on one chunk at `positions` (`_positions`), with `caches` ``(keys, values,
        conv)``; returns ``(hidden, (keys, values, conv))``, the keys and values extended by the chunk (untrimmed)."""
        raise NotImplementedError

    def _empty_caches(self, index: int) -> tuple:
        """Layer `index`'s caches at the start of a stream: no keys or values, a zero convolution state."""
        raise NotImplementedError

    def _head(self, hidden):
        """Final norm + CTC head: ``(1, frames, hidden) -> (1, frames, vocab)``."""
        raise NotImplementedError

    def _condition(self, hidden, logits):
        """Self-conditioning: `hidden` plus the projection of its CTC posteriors; `logits` are its logits when the
        chunk already computed them (at an exit layer), else None."""
        raise NotImplementedError

    def _confidence(self, logits) -> float:
        """`early_exit.max_posterior_confidence` of one chunk's logits."""
        raise NotImplementedError

    def _concat(self, arrays: list):
        """`arrays` end to end along the time axis (1)."""
        raise NotImplementedError

    def _empty_logits(self):
        """Logits of no frames, ``(1, 0, vocab_size)``."""
        raise NotImplementedError

    def _layers_for_depth(self, num_layers: int) -> List[int]:
        """The layers of `num_layers=` (checked)."""
        raise NotImplementedError

    def _layers_for_budget(self, rtf_budget: float) -> List[int]:
        """The layers of the deepest depth of the schedule within `rtf_budget` (checked)."""
        raise NotImplementedError

    def _check_threshold(self, threshold) -> float:
        raise NotImplementedError

    # --- the stream ---------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream: forget the audio, the caches and the transcript."""
        self.features.reset()
        self.front_end.reset()
        self.pending = None  # front-end frames not yet in a chunk, (1, frames, hidden)
        self.position = 0  # front-end frames put into chunks so far
        self.caches: List[Any] = [None] * self.num_layers
        self.ran_last_chunk = [False] * self.num_layers
        self.chunk_logits: List[Any] = []
        self.chunk_layers: List[List[int]] = []
        self.ids: List[int] = []
        self.finished = False

    @property
    def logits(self):
        """The CTC logits of every chunk decoded so far, end to end: `(1, frames, vocab_size)`."""
        return self._concat(self.chunk_logits) if self.chunk_logits else self._empty_logits()

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
        """Feed the next samples (1-D float audio in [-1, 1] at the model's rate, any length) and decode every
        chunk they complete; returns the partial transcript.

        Args:
            num_layers: run the first `num_layers` layers on these chunks.
            rtf_budget: run the deepest depth whose full-utterance RTF (seconds of compute per second of audio, in
                the latency profile) fits, with the layers the pruning schedule keeps at that depth.
            early_exit_threshold: run the layers up to the first exit layer (intermediate CTC, or the last) where
                the chunk's confidence reaches this value.

        At most one of them; none: the recogniser's default. The depth may change from one call to the next, with
        the rules of the class docstring.
        """
        self._check_running()
        depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold) or self.depth
        self._feed(self.features.accept(samples), final=False, depth=depth)
        return self.transcript

    def finalize(self, num_layers: Optional[int] = None, rtf_budget: Optional[float] = None,
                 early_exit_threshold: Optional[float] = None) -> str:
        """End the stream: decode the frames left (the last chunk may be shorter) and return the final transcript.
        The depth options are those of `accept`. Call `reset()` before the next stream."""
        self._check_running()
        depth = self._checked_depth(num_layers, rtf_budget, early_exit_threshold) or self.depth
        self._feed(self.features.accept(np.zeros(0, dtype=np.float32)), final=True, depth=depth)
        self.finished = True
        return self.transcript

    def _check_running(self) -> None:
        if self.finished:
            raise RuntimeError("the stream was finalized: call reset() to start a new one")

    def _checked_depth(self, num_layers, rtf_budget, early_exit_threshold) -> Optional[dict]:
        """The depth options of a call as `{"layers": [...]}` or `{"threshold": t}`, or None when none is given."""
        given = [name for name, value in (("num_layers", num_layers), ("rtf_budget", rtf_budget),
                                          ("early_exit_threshold", early_exit_threshold)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of num_layers, rtf_budget, early_exit_threshold, got {given}")
        if early_exit_threshold is not None:
            return {"threshold": self._check_threshold(early_exit_threshold)}
        if rtf_budget is not None:
            return {"layers": self._layers_for_budget(rtf_budget)}
        if num_layers is not None:
            return {"layers": self._layers_for_depth(num_layers)}
        return None

    def _feed(self, features, final: bool, depth: Optional[dict]) -> None:
        hidden = self.front_end.accept(features, final)
        self.pending = hidden if self.pending is None else self._concat([self.pending, hidden])
        while self.pending.shape[1] >= self.chunk_frames or (final and self.pending.shape[1] > 0):
            chunk, self.pending = self.pending[:, :self.chunk_frames], self.pending[:, self.chunk_frames:]
            self._decode_chunk(chunk, depth or {"layers": list(range(1, self.num_layers + 1))})

    def _exit_layers(self) -> List[int]:
        last = self.num_layers
        return sorted({layer for layer in self.interctc_layers if layer < last} | {last})

    def _decode_chunk(self, hidden, depth: dict) -> None:
        """Run one chunk through the layers `depth` names (or up to its early exit), update the caches and append
        its logits and greedy ids."""
        threshold = depth.get("threshold")
        run = depth["layers"] if threshold is None else list(range(1, self.num_layers + 1))
        exits = set(self._exit_layers()) if threshold is not None else set()
        ran, logits = [], None
        positions = self._positions(hidden.shape[1], self.position)
        for position, index in enumerate(run):
            hidden, logits = self._run_layer(index, hidden, positions), None
            ran.append(index)
            if position == len(run) - 1:
                break
            if index in exits:
                logits = self._head(hidden)
                if self._confidence(logits) >= threshold:
                    break
            if self.self_conditioning and index in self.interctc_layers:
                # As the full forward does: intermediate-CTC layers feed their posteriors to the next layer.
                hidden, logits = self._condition(hidden, logits), None
        if logits is None:
            logits = self._head(hidden)
        self.ran_last_chunk = [index in ran for index in range(1, self.num_layers + 1)]
        self.position += hidden.shape[1]
        self.chunk_logits.append(logits)
        self.chunk_layers.append(ran)
        self.ids += logits[0].argmax(-1).tolist()

    def _run_layer(self, index: int, hidden, positions):
        """One layer on one chunk, with its caches (emptied first when it did not run on the previous chunk)."""
        caches = self.caches[index - 1]
        if not self.ran_last_chunk[index - 1] or caches is None:
            caches = self._empty_caches(index)
        hidden, (keys, values, conv) = self._layer(index, hidden, positions, caches)
        if self.left_chunks >= 0:
            keep = self.left_chunks * self.chunk_frames
            keys, values = (x[:, :, x.shape[2] - keep:] if keep else x[:, :, :0] for x in (keys, values))
        self.caches[index - 1] = (keys, values, conv)
        return hidden


def chunk_frames(chunk_ms, frame_ms: float) -> int:
    """`chunk_ms` in output frames; `ValueError` unless it is a positive multiple of `frame_ms`."""
    frames = chunk_ms / frame_ms if isinstance(chunk_ms, (int, float)) and not isinstance(chunk_ms, bool) else 0
    if not frames > 0 or abs(frames - round(frames)) > 1e-9:
        raise ValueError(f"chunk_ms must be a positive multiple of one output frame ({frame_ms:g} ms), "
                         f"got {chunk_ms!r}")
    return int(round(frames))


def streaming_problems(config, feature_extractor) -> List[str]:
    """Why a model cannot stream, one phrase per reason (empty when it can): a stream needs attention trained for
    chunks, a causal convolution in a conformer and features that do not depend on the rest of the utterance."""
    problems = []
    if not (getattr(config, "dynamic_chunk_training", False) or getattr(config, "chunk_size", 0) > 0):
        problems.append("not trained for chunked attention (config.json: chunk_size 0 and "
                        "dynamic_chunk_training false)")
    if getattr(config, "encoder_type", None) == "conformer" and not getattr(config, "causal_conv", False):
        problems.append("the conformer convolution is centred (config.json: causal_conv false), so it reads frames "
                        "of the next chunk")
    if getattr(feature_extractor, "feature_type", "kaldi_fbank") != "kaldi_fbank":
        problems.append("the features are Whisper's log-mel, scaled by the loudest bin of the whole utterance")
    elif (getattr(feature_extractor, "do_ceptral_normalize", False)
          and getattr(feature_extractor, "global_cmvn_mean", None) is None):
        problems.append("the feature extractor normalises each utterance by its own statistics (no global CMVN in "
                        "preprocessor_config.json)")
    return problems


__all__ = ["ChunkedStream", "chunk_frames", "streaming_problems"]
