"""Run an every-depth ONNX folder (`export_onnx(model_dir, out_dir)`) without torch or transformers.

    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    asr = OnnxPrunableCTC("onnx-folder")
    asr.transcribe("speech.flac")                            # {"text": ..., "depth": 8}
    asr.transcribe(samples, sampling_rate=8000, num_layers=4)
    asr.transcribe([a, b], early_exit_threshold=0.9)         # a list in, a list out; "depth": where each stopped
    asr.transcribe("speech.flac", rtf_budget=0.01)           # the deepest depth within 0.01 s per audio second
    asr.transcribe("lecture.flac")                           # over 20 s: overlapping 20-s chunks, as the pipeline
    asr.transcribe("lecture.flac", chunk_length_s=10, stride_length_s=(1, 2))   # or chunk_length_s=0: one pass

Imports numpy, onnxruntime, soundfile and soxr only (and soxr only for audio at another rate): what a device
installs. The front end computes the package's feature extractor's Kaldi fbank and utterance CMVN (or, for
Whisper-initialised models, Whisper's log-mel) in numpy from the window and mel filters the export stored
(``front_end.npz``); the graphs run in sequence, front end, the layers
asked for, head, so one folder serves every depth; decoding is the package's `CTCTextDecoder`, read from the
tokenizer's files. Logits, and so transcripts, equal PyTorch's at every depth and with early exit.

A recording longer than `chunk_length_s` (20 s by default) is cut into overlapping chunks, run one batch of chunks
at a time, with the logits of their stride regions dropped before one CTC decode, exactly as Transformers' ASR
pipeline cuts audio for CTC models: memory is that of a chunk, whatever the length, and the transcript is
`prunable_asr_pipeline`'s with the same `chunk_length_s` and `stride_length_s`.

`rtf_budget` runs the deepest depth of the folder's pruning schedule whose real-time factor (seconds of compute per
audio second) is within it, from the instance's `latency_profile`: given to the constructor, or measured by
`profile_latency` through these graphs on this machine at the first `rtf_budget` call. The timing and the choice are
`depth_budget`'s, as for a PyTorch model (`budget.profile_latency`); the profile is kept on the instance only, not
cached on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.audio import AudioSource, load_audio
from .ctc_text import CTCTextDecoder
from .depth_budget import check_budget, check_timing_options, cpu_name, deepest_depth_within, measure_rtf

# The feature extractor's framing (feature_extraction_prunable_ctc.py, Kaldi's defaults).
WIN_LENGTH, HOP_LENGTH, FFT_LENGTH = 400, 160, 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07
KALDI_SCALE = 2**15
CONSTANT_BIN_STD = 1e-4
# Recordings longer than this are transcribed in overlapping chunks (`OnnxPrunableCTC.transcribe`).
DEFAULT_CHUNK_LENGTH_S = 20.0


class NumpyFrontEnd:
    """`PrunableCTCFeatureExtractor`'s features in numpy: `front_end(waveforms)` -> ``(features (batch, frames,
    bins) float32, attention_mask (batch, frames) int32)``, padded with zeros to the longest utterance."""

    def __init__(self, folder: str | os.PathLike):
        settings = json.loads((Path(folder) / "preprocessor_config.json").read_text())
        tables = np.load(Path(folder) / "front_end.npz", allow_pickle=False)
        self.window = tables["window"].astype(np.float32)
        self.mel_filters = tables["mel_filters"].astype(np.float32)  # (FFT_LENGTH // 2 + 1, bins)
        self.sampling_rate = int(settings["sampling_rate"])
        self.dither = float(settings.get("dither", 0.0))
        self.normalize = bool(settings.get("do_ceptral_normalize", True))
        self.normalize_means = bool(settings.get("normalize_means", True))
        self.normalize_vars = bool(settings.get("normalize_vars", True))
        self.whisper = settings.get("feature_type", "kaldi_fbank") == "whisper_log_mel"
        if self.whisper:
            self.whisper_window = tables["whisper_window"].astype(np.float32)
            self.whisper_mel_filters = tables["whisper_mel_filters"].astype(np.float32)  # (201, bins)

    def whisper_log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """Whisper's log-mel features ``(samples // 160, bins)``, as the torch extractor computes them: the audio
        followed by zeros (Whisper's 30 s padding), reflected in front."""
        waveform = np.asarray(waveform, dtype=np.float32)
        num_frames, size = waveform.shape[0] // HOP_LENGTH, self.whisper_window.shape[0]
        if num_frames == 0:
            return np.zeros((0, self.whisper_mel_filters.shape[1]), dtype=np.float32)
        half = size // 2
        tail = np.zeros(half, dtype=np.float32)
        front = np.concatenate((waveform[1:half + 1], tail))[:half][::-1]
        padded = np.concatenate((front, waveform, tail))
        frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::HOP_LENGTH][:num_frames] * self.whisper_window
        spectrum = np.fft.rfft(frames, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        log_mel = np.log10(np.maximum(power @ self.whisper_mel_filters, np.float32(1e-10)))
        log_mel = np.maximum(log_mel, log_mel.max() - np.float32(8.0))
        return ((log_mel + np.float32(4.0)) / np.float32(4.0)).astype(np.float32)

    def fbank(self, waveform: np.ndarray) -> np.ndarray:
        """Log-mel energies ``(frames, bins)`` of one utterance ``(samples,)`` in [-1, 1], not normalised."""
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.shape[0] < WIN_LENGTH:
            return np.zeros((0, self.mel_filters.shape[1]), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(waveform, WIN_LENGTH)[::HOP_LENGTH]
        if self.dither != 0.0:
            frames = frames + np.float32(self.dither / KALDI_SCALE) * np.random.standard_normal(frames.shape).astype(
                np.float32)
        padded = np.zeros((frames.shape[0], FFT_LENGTH), dtype=np.float32)
        # DC removal, pre-emphasis and window in the torch extractor's order of float32 operations (pre-emphasis
        # first, then (1 - a) times the frame's mean taken out): the lowest mel bins hold little energy, and another
        # order moves their logarithm by up to 0.02.
        mean = frames.mean(axis=1, keepdims=True, dtype=np.float32)
        padded[:, 1:WIN_LENGTH] = frames[:, 1:] - np.float32(PREEMPHASIS) * frames[:, :-1]
        padded[:, :1] = frames[:, :1] * np.float32(1 - PREEMPHASIS)
        padded[:, :WIN_LENGTH] -= np.float32(1 - PREEMPHASIS) * mean
        padded[:, :WIN_LENGTH] *= self.window
        spectrum = np.fft.rfft(padded, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        return np.log(np.maximum(power @ self.mel_filters, MEL_FLOOR)).astype(np.float32)

    def normalize_utterance(self, features: np.ndarray) -> np.ndarray:
        """Utterance CMVN, a constant bin becoming 0 (as the torch extractor does)."""
        if features.shape[0] == 0 or not self.normalize:
            return features
        if self.normalize_means:
            features = features - features.mean(axis=0)
        if self.normalize_vars:
            std = np.sqrt((features**2).mean(axis=0)) if self.normalize_means else features.std(axis=0)
            constant = std < CONSTANT_BIN_STD
            features = np.where(constant, 0.0, features / np.where(constant, 1.0, std))
        return features.astype(np.float32)

    def __call__(self, waveforms: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.whisper:
            features = [self.whisper_log_mel(w) for w in waveforms]
        else:
            features = [self.normalize_utterance(self.fbank(w)) for w in waveforms]
        frames = max((f.shape[0] for f in features), default=0)
        batch = np.zeros((len(features), frames, self.mel_filters.shape[1]), dtype=np.float32)
        mask = np.zeros((len(features), frames), dtype=np.int32)
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = 1
        return batch, mask


def max_posterior_confidence(logits: np.ndarray, lengths: np.ndarray, blank: int) -> np.ndarray:
    """`early_exit.max_posterior_confidence` in numpy: per utterance, the mean largest posterior over its valid
    non-blank frames (all valid frames if none; 1 without valid frames)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    posteriors = np.exp(shifted)
    posteriors /= posteriors.sum(axis=-1, keepdims=True)
    best, labels = posteriors.max(axis=-1), posteriors.argmax(axis=-1)
    valid = np.arange(logits.shape[1])[None, :] < lengths[:, None]
    speech = valid & (labels != blank)
    counted = np.where(speech.any(axis=1, keepdims=True), speech, valid).astype(np.float32)
    total = counted.sum(axis=1)
    mean = (best * counted).sum(axis=1) / np.maximum(total, 1.0)
    return np.where(total > 0, mean, 1.0).astype(np.float32)


def read_runtime_config(folder: Path) -> dict[str, Any]:
    """An every-depth folder's ``runtime.json``; `ValueError` saying how to write one when `folder` has none."""
    runtime_file = folder / "runtime.json"
    if not runtime_file.is_file():
        raise ValueError(f"{folder} is not an every-depth ONNX export (no runtime.json): write one with "
                         "`hf-prunable-ctc export MODEL OUT` (without --depth)")
    return json.loads(runtime_file.read_text())


class OnnxPrunableCTC:
    """An every-depth ONNX folder, run with ONNX Runtime: features, any depth or early exit, greedy CTC text.

    Args:
        folder: written by `export_onnx(model_dir, folder)` (``runtime.json``, the graphs, the tokenizer and
            feature-extractor files).
        threads: ONNX Runtime intra-op threads (default: its own choice).
        latency_profile: a profile as `profile_latency` returns it (at least ``{"rtf": {depth: rtf}}``, depths as
            ints or strings) for `rtf_budget` calls; measured on first use if None.
        lm: a KenLM n-gram LM (ARPA or binary, as `hf-prunable-ctc transcribe --lm` takes it): `transcribe` then
            decodes with pyctcdecode's beam search and this LM, the decoder `PrunableCTCProcessorWithLM` uses
            (pyctcdecode and kenlm are numpy and C++, no torch). None: greedy, unless a call gives `beam_width`.
        lm_alpha, lm_beta: the LM's weight and the bonus per word (pyctcdecode's alpha and beta).
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None,
                 latency_profile: dict[str, Any] | None = None, lm: str | os.PathLike | None = None,
                 lm_alpha: float = 0.5, lm_beta: float = 1.0):
        import onnxruntime

        self.folder = Path(folder)
        self.threads = threads
        self.latency_profile = latency_profile
        self.config = read_runtime_config(self.folder)
        options = onnxruntime.SessionOptions()
        # Without the CPU arena: it keeps the largest buffers every input shape has needed, so a long recording's
        # chunks (and its shorter last one) ratchet memory up to twice that of one chunk, at no gain in speed here.
        options.enable_cpu_mem_arena = False
        if threads is not None:
            options.intra_op_num_threads = threads

        def session(name):
            return onnxruntime.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])

        self.front_end_graph = session(self.config["front_end"])
        self.layer_graphs = [session(name) for name in self.config["layers"]]
        self.head_graph = session(self.config["head"])
        self.conditioning_graph = session(self.config["conditioning"]) if self.config["conditioning"] else None
        self.num_layers = int(self.config["num_layers"])
        self.interctc_layers = [int(i) for i in self.config["interctc_layers"]]
        self.blank_id = int(self.config["blank_id"])
        self.pruning_schedule = {int(k): list(v) for k, v in self.config["pruning_schedule"].items()}
        self.front_end = NumpyFrontEnd(self.folder)
        self.decode = CTCTextDecoder.from_folder(self.folder)
        self.beam_decoder = None if lm is None else self._beam_decoder(lm, lm_alpha, lm_beta)
        self._decoder_without_lm = None  # built by the first call that asks for a beam without an LM

    def _beam_decoder(self, lm: str | os.PathLike | None, alpha: float = 0.5, beta: float = 1.0):
        """pyctcdecode's decoder over this folder's vocabulary, with the KenLM file `lm` (None: no LM)."""
        if lm is not None and not os.path.isfile(lm):
            raise ValueError(f"no language model at {lm}: give a KenLM .arpa or binary file "
                             "(training/build_lm.py writes one)")
        from ..decoding.beam_decoder import build_beam_decoder, labels_for_tokens

        labels = labels_for_tokens(self.decode.tokens, *self.decode.special_tokens)
        return build_beam_decoder(labels, lm, alpha=alpha, beta=beta)

    # --- graphs ----------------------------------------------------------------------------------------------

    def layers_to_run(self, num_layers: int | None = None, layers: Sequence[int] | None = None) -> list[int]:
        """The (1-based) layers a call runs, checked as the PyTorch model checks them."""
        if num_layers is not None and layers is not None:
            raise ValueError("give either num_layers or layers, not both")
        if layers is not None:
            layers = [int(i) for i in layers]
            if not layers or any(not 1 <= i <= self.num_layers for i in layers) or layers != sorted(set(layers)):
                raise ValueError(f"layers must be distinct increasing indices in [1, {self.num_layers}], got {layers}")
            return layers
        if num_layers is None:
            return list(range(1, self.num_layers + 1))
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or not (
                1 <= num_layers <= self.num_layers):
            raise ValueError(f"depth must be in [1, {self.num_layers}] (the model has {self.num_layers} layers), "
                             f"got {num_layers}")
        return list(range(1, int(num_layers) + 1))

    def _layer(self, index: int, hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.layer_graphs[index - 1].run(None, {"hidden": hidden, "output_lengths": lengths})[0]

    def _head(self, hidden: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.head_graph.run(None, {"hidden": hidden, "output_lengths": lengths})[0]

    def _condition(self, hidden: np.ndarray) -> np.ndarray:
        return self.conditioning_graph.run(None, {"hidden": hidden})[0]

    def logits(self, input_features: np.ndarray, attention_mask: np.ndarray, num_layers: int | None = None,
               layers: Sequence[int] | None = None, early_exit_threshold: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CTC logits of a batch of features: ``(logits (batch, frames_out, vocab), output_lengths (batch,),
        depths (batch,))``, with `layers`/`num_layers` or early exit as in `PrunableCTCForCTC.forward`."""
        input_features = np.asarray(input_features, np.float32)
        batch = input_features.shape[0]
        if input_features.shape[1] == 0:
            # No frames (audio shorter than one window): no graph can run on an empty time axis; the text is empty.
            vocab = len(self.decode.group_ids)
            depth = len(self.layers_to_run(num_layers, layers)) if early_exit_threshold is None else self.num_layers
            return np.zeros((batch, 0, vocab), np.float32), np.zeros(batch, np.int64), np.full(batch, depth)
        hidden, lengths = self.front_end_graph.run(None, {"input_features": input_features,
                                                          "attention_mask": np.asarray(attention_mask, np.int32)})
        if early_exit_threshold is not None:
            if num_layers is not None or layers is not None:
                raise ValueError("early_exit_threshold picks the depth per utterance: do not combine it with "
                                 "num_layers or layers")
            return self._early_exit(hidden, lengths, _checked_threshold(early_exit_threshold))
        run = self.layers_to_run(num_layers, layers)
        if hidden.shape[1] == 0:
            return self._head(hidden, lengths), lengths, np.full(batch, len(run))
        for position, index in enumerate(run):
            hidden = self._layer(index, hidden, lengths)
            if self.conditioning_graph is not None and index in self.interctc_layers and position < len(run) - 1:
                hidden = self._condition(hidden)
        return self._head(hidden, lengths), lengths, np.full(batch, len(run))

    def _early_exit(self, hidden, lengths, threshold):
        last = self.num_layers
        exits = sorted({i for i in self.interctc_layers if i < last} | {last})
        logits = self._head(hidden, lengths) if hidden.shape[1] == 0 else None
        depths = np.full(hidden.shape[0], exits[0] if hidden.shape[1] == 0 else last)
        if logits is not None:
            return logits, lengths, depths
        running = np.arange(hidden.shape[0])
        for index in range(1, last + 1):
            hidden = self._layer(index, hidden, lengths[running])
            if index not in exits:
                continue
            exit_logits = self._head(hidden, lengths[running])
            if logits is None:
                logits = np.empty((len(lengths),) + exit_logits.shape[1:], dtype=exit_logits.dtype)
            score = max_posterior_confidence(exit_logits, lengths[running], self.blank_id)
            leaving = score >= threshold if index < last else np.ones(len(running), dtype=bool)
            logits[running[leaving]] = exit_logits[leaving]
            depths[running[leaving]] = index
            running, hidden = running[~leaving], hidden[~leaving]
            if running.size == 0:
                break
            if self.conditioning_graph is not None:
                hidden = self._condition(hidden)
        return logits, lengths, depths

    # --- depth by compute budget -------------------------------------------------------------------------------

    def profile_latency(self, audio_seconds: float = 10.0, repeats: int = 5, warmup: int = 1, retries: int = 2,
                        tolerance: float = 0.1) -> dict[str, Any]:
        """Measure the RTF of each depth of the pruning schedule through these graphs, and keep the profile as
        `self.latency_profile`.

        One call is `logits` on one utterance of `audio_seconds` of random 100-frames-per-second features (the
        graphs' cost is not data dependent; the numpy front end's cost does not depend on the depth and is left
        out), timed by `depth_budget.measure_rtf`: the depths interleaved, `repeats` rounds after `warmup` untimed
        ones, a depth's RTF its fastest round, up to `retries` more sets of rounds while a deeper depth times more
        than `tolerance` (a fraction) cheaper than a shallower one, then made monotone.

        Returns:
            ``{"device": str, "threads": int | None, "onnxruntime": str, "audio_seconds": float, "batch_size": 1,
            "rounds": int, "rtf": {depth: rtf}, "measured_rtf": {depth: rtf}, "adjusted": bool}``, as
            `budget.profile_latency` returns for a PyTorch model; ``rtf[k]`` is seconds per audio second at depth k.
        """
        import onnxruntime

        check_timing_options(audio_seconds, repeats, warmup, retries, tolerance)
        frames = int(round(audio_seconds * 100))  # 10 ms hop
        features = np.random.default_rng(0).standard_normal(
            (1, frames, self.front_end.mel_filters.shape[1])).astype(np.float32)
        mask = np.ones((1, frames), dtype=np.int32)
        timed = measure_rtf(lambda depth: self.logits(features, mask, layers=self.pruning_schedule[depth]),
                            self.pruning_schedule, audio_seconds, repeats=repeats, warmup=warmup, retries=retries,
                            tolerance=tolerance)
        threads = "default" if self.threads is None else self.threads
        self.latency_profile = {"device": f"onnxruntime-cpu:{cpu_name()}|threads={threads}", "threads": self.threads,
                                "onnxruntime": onnxruntime.__version__, "audio_seconds": audio_seconds,
                                "batch_size": 1, **timed}
        return self.latency_profile

    def depth_for_budget(self, rtf: float) -> int:
        """The deepest depth of the pruning schedule whose RTF in `self.latency_profile` (measured now by
        `profile_latency` if there is none) is at most `rtf`; `ValueError` naming the cheapest depth if none is."""
        check_budget(rtf)  # before measuring a profile for a budget that no profile could meet
        if self.latency_profile is None:
            self.profile_latency()
        return deepest_depth_within(rtf, self.latency_profile, self.pruning_schedule,
                                    remeasure="measure it again (profile_latency())")

    # --- audio in, text out ------------------------------------------------------------------------------------

    def transcribe(self, audio: AudioSource | np.ndarray | list, sampling_rate: int | None = None,
                   num_layers: int | None = None, layers: Sequence[int] | None = None,
                   early_exit_threshold: float | None = None, rtf_budget: float | None = None,
                   chunk_length_s: float | None = DEFAULT_CHUNK_LENGTH_S,
                   stride_length_s: float | Sequence[float] | None = None,
                   beam_width: int | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """``{"text": str, "depth": int}`` for one recording, a list of them for a list (run as one batch).

        Args:
            audio: a path, encoded bytes, a dict as `load_audio` takes, or samples (1-D, or 2-D with channels on
                the shorter axis) at `sampling_rate`; or a list of those.
            sampling_rate: rate of sample arrays (default: the model's, 16 kHz); other rates are resampled.
            num_layers, layers, early_exit_threshold: the depth, as in `PrunableCTCForCTC.forward`.
            rtf_budget: seconds of compute per audio second (> 0): run the schedule's depth `depth_for_budget`
                picks. At most one of num_layers, layers, early_exit_threshold and rtf_budget; "depth" in the
                result is the number of layers run (with early exit, the deepest exit layer of its chunks).
            chunk_length_s: a recording longer than this is cut into overlapping chunks of this many seconds, as
                Transformers' ASR pipeline does for CTC models with the same argument: each chunk gets its own
                features (utterance CMVN over the chunk) and runs alone, the logits of its stride regions are
                dropped, and the rest of every chunk is joined and decoded once. So the transcript is the one
                `prunable_asr_pipeline(...)(audio, chunk_length_s=..., stride_length_s=...)` gives, and memory
                stays that of one chunk however long the recording (one pass needs attention memory quadratic in
                the length: 10 minutes do not fit in a device's memory). The default, 20 s, chunks only what is
                longer: a recording of up to 20 s is one chunk, whose transcript is the one-pass transcript. 0 (or
                None, as in the pipeline) runs every recording in one pass.
            stride_length_s: seconds of context on each side of a chunk whose logits are dropped: one number for
                both sides or ``(left, right)``; default ``chunk_length_s / 6``, as in the pipeline. Left plus
                right must be shorter than the chunk, so that each chunk moves the audio on.

            beam_width: beams kept by the beam search (> 0): with the instance's `lm`, or without an LM when it has
                none. None: pyctcdecode's default with an `lm`, else greedy decoding.

        With chunking, the depth options hold for every chunk: with `early_exit_threshold` each chunk stops at its
        own layer, as in the pipeline; the result then also holds ``"exit_depths"``, the exit layer of each chunk
        (one entry for a recording of one chunk), and "depth" is the deepest of them. A list of recordings runs
        as batches of as many chunks as there are recordings.
        """
        given = sorted(name for name, value in (("num_layers", num_layers), ("layers", layers),
                                                ("early_exit_threshold", early_exit_threshold),
                                                ("rtf_budget", rtf_budget)) if value is not None)
        if len(given) > 1:
            raise ValueError(f"give at most one of num_layers, layers, rtf_budget, early_exit_threshold per call, "
                             f"got {given}")
        chunking = self.chunking(chunk_length_s, stride_length_s)  # before any audio is decoded
        if beam_width is not None and (isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer))
                                       or beam_width < 1):
            raise ValueError(f"beam_width must be a whole number >= 1, got {beam_width!r}")
        decoder = self.beam_decoder
        if beam_width is not None and decoder is None:
            if self._decoder_without_lm is None:
                self._decoder_without_lm = self._beam_decoder(None)
            decoder = self._decoder_without_lm
        if rtf_budget is not None:
            layers = self.pruning_schedule[self.depth_for_budget(rtf_budget)]
        single = not isinstance(audio, list)
        waveforms = [self._waveform(item, sampling_rate) for item in ([audio] if single else audio)]
        pieces = [(index, piece) for index, waveform in enumerate(waveforms)
                  for piece in chunk_pieces(len(waveform), chunking)]
        kept, depths = [[] for _ in waveforms], [[] for _ in waveforms]
        # As many chunks at a time as recordings were given: a list runs as one batch while no recording needs
        # chunking, and one long recording runs a chunk at a time, so memory is that of one batch of chunks.
        for start in range(0, len(pieces), len(waveforms)):
            batch = pieces[start:start + len(waveforms)]
            features, mask = self.front_end([waveforms[index][piece.start:piece.end] for index, piece in batch])
            logits, lengths, batch_depths = self.logits(features, mask, num_layers, layers, early_exit_threshold)
            for (index, piece), row, n, depth in zip(batch, logits, lengths, batch_depths):
                kept[index].append(piece.kept(row[:n]))
                depths[index].append(int(depth))
        results = [self._result(np.concatenate(rows), chunk_depths, early_exit_threshold is not None, decoder,
                                beam_width)
                   for rows, chunk_depths in zip(kept, depths)]
        return results[0] if single else results

    def chunking(self, chunk_length_s: float | None, stride_length_s: float | Sequence[float] | None
                 ) -> Chunking | None:
        """The chunk and strides in samples that `transcribe` cuts recordings with, or None for one pass;
        `ValueError` for arguments the pipeline would refuse or that cannot cut audio."""
        if chunk_length_s is None or _checked_seconds("chunk_length_s", chunk_length_s) == 0:
            return None
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        pair = isinstance(stride_length_s, (list, tuple, np.ndarray))
        strides = list(stride_length_s) if pair else [stride_length_s] * 2
        if len(strides) != 2:
            raise ValueError(f"stride_length_s must be one number or (left, right), got {stride_length_s!r}")
        left_s, right_s = (_checked_seconds("stride_length_s", side) for side in strides)
        align_to = self.config.get("inputs_to_logits_ratio")
        if align_to is None:
            raise ValueError(f"{self.folder}/runtime.json has no inputs_to_logits_ratio, which chunking needs: "
                             "export the folder again, or give chunk_length_s=0")
        return Chunking.in_samples(chunk_length_s, left_s, right_s, self.front_end.sampling_rate, int(align_to))

    def _result(self, logits: np.ndarray, depths: list[int], early_exit: bool, decoder, beam_width: int | None
                ) -> dict[str, Any]:
        if decoder is None:
            text = self.decode(logits.argmax(-1))
        else:
            # The best beam of `decode_beams`, as `PrunableCTCProcessorWithLM.decode` and the pipeline take it.
            options = {} if beam_width is None else {"beam_width": int(beam_width)}
            text = decoder.decode_beams(logits, **options)[0][0]
        result = {"text": text, "depth": max(depths)}
        if early_exit:
            result["exit_depths"] = depths
        return result

    def _waveform(self, item, sampling_rate: int | None) -> np.ndarray:
        target = self.front_end.sampling_rate
        if isinstance(item, np.ndarray):
            return load_audio({"array": item, "sampling_rate": sampling_rate or target}, sampling_rate=target)
        return load_audio(item, sampling_rate=target)


# --- long audio in chunks, as Transformers' ASR pipeline cuts it for CTC models --------------------------------------


@dataclass(frozen=True)
class Chunking:
    """Chunk length and the strides dropped on its left and right, in samples, each a whole number of output
    frames (`align_to` samples per logit frame)."""

    length: int
    left: int
    right: int
    align_to: int

    @classmethod
    def in_samples(cls, chunk_length_s: float, left_s: float, right_s: float, sampling_rate: int,
                   align_to: int) -> Chunking:
        # The pipeline's rounding (`AutomaticSpeechRecognitionPipeline.preprocess`), so chunks cut the same audio.
        def samples(seconds):
            return int(round(seconds * sampling_rate / align_to) * align_to)

        chunking = cls(samples(chunk_length_s), samples(left_s), samples(right_s), align_to)
        if chunking.length <= chunking.left + chunking.right:
            raise ValueError(
                f"stride_length_s (left {left_s:g} s + right {right_s:g} s) must be shorter than chunk_length_s "
                f"({chunk_length_s:g} s), rounded to output frames of {align_to / sampling_rate * 1000:g} ms: "
                "each chunk must move the audio on (a stride under half the chunk, e.g. the default chunk / 6)")
        return chunking


@dataclass(frozen=True)
class Piece:
    """One chunk of a recording: its samples ``[start, end)``, the samples of stride on each side whose logits are
    dropped, and the samples per output frame (None: a recording in one pass, whose logits are all kept)."""

    start: int
    end: int
    left: int = 0
    right: int = 0
    align_to: int | None = None

    def kept(self, frames_in: np.ndarray) -> np.ndarray:
        """The rows of this chunk's per-frame `frames_in` (logits or ids) outside its strides, as the pipeline
        keeps them: the chunk counted as ``round(samples / align_to)`` frames and the strides rescaled to them
        (`rescale_stride`)."""
        if self.align_to is None:
            return frames_in
        samples = self.end - self.start
        frames = int(round(samples * (1 / self.align_to)))
        left, right = int(round(self.left / samples * frames)), int(round(self.right / samples * frames))
        return frames_in[left:frames - right]


def chunk_pieces(num_samples: int, chunking: Chunking | None) -> list[Piece]:
    """The chunks `transformers.pipelines.automatic_speech_recognition.chunk_iter` cuts `num_samples` of audio
    into; without chunking, or for empty audio (which the pipeline runs unchunked), the whole recording."""
    if chunking is None or num_samples == 0:
        return [Piece(0, num_samples)]
    pieces, step = [], chunking.length - chunking.left - chunking.right
    for start in range(0, num_samples, step):
        end = min(start + chunking.length, num_samples)
        is_last = start + chunking.length >= num_samples
        left, right = (0 if start == 0 else chunking.left), (0 if is_last else chunking.right)
        if end - start > left:  # a last chunk inside the previous one's right stride adds no frame
            pieces.append(Piece(start, end, left, right, chunking.align_to))
        if is_last:
            break
    return pieces


def _checked_seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            value >= 0) or value == float("inf"):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _checked_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise ValueError(f"early_exit_threshold must be a number (0 exits at the first intermediate-CTC layer, "
                         f"above 1 never exits early), got {threshold!r}")
    return float(threshold)
