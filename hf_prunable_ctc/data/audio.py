"""Audio decoding without torchcodec/FFmpeg.

`datasets` 5.x decodes (and even encodes) its `Audio` feature through torchcodec, which needs FFmpeg shared
libraries matching the torch build. We sidestep it: metadata is read as a plain table, a Hub `Audio` column is
cast to `Audio(decode=False)` (which yields `{"bytes": ..., "path": ...}`), and this module decodes those with
libsndfile (`soundfile`: WAV, FLAC, OGG, MP3 with libsndfile >= 1.1) and resamples with `soxr`.

Every failure caused by the *data* (missing file, unknown format, NaN samples) raises `AudioDecodingError`, so
data preparation can catch that one type, skip the example and count it; wrong argument types stay `TypeError`
because they are bugs in the caller, not bad data. A file or array with no samples is not a failure: it decodes to
an empty array, which the feature extractor turns into zero frames and the model into an empty transcript, as it
does any audio shorter than one 25 ms window.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | Mapping[str, Any]


class AudioDecodingError(ValueError):
    """Audio that cannot be turned into samples: unreadable, unknown format, or empty.

    `source` names what was being decoded (a path, or ``"<bytes>"``) and the message names it once; `reason` is the
    message without it. The underlying error, if any, is chained as ``__cause__``.
    """

    def __init__(self, source: str, reason: str):
        super().__init__(f"cannot decode audio {source}: {reason}")
        self.source = source
        self.reason = reason


def load_audio(source: AudioSource, sampling_rate: int = 16000) -> np.ndarray:
    """Decode `source` to mono float32 samples at `sampling_rate`.

    Args:
        source: one of
            - a file path (``str`` or ``os.PathLike``);
            - encoded file contents (``bytes``, ``bytearray``, ``memoryview``);
            - ``{"bytes": bytes | None, "path": str | None}``, what ``datasets`` yields for ``Audio(decode=False)``:
              the bytes are used when present, else the path;
            - ``{"array": array_like, "sampling_rate": int}`` (``"raw"`` is accepted for ``"array"``, as in the ASR
              pipeline), i.e. already decoded samples: 1-D, or 2-D with channels on the shorter axis; integer
              PCM is scaled to [-1, 1).
        sampling_rate: target rate in Hz; audio at another rate is resampled with soxr ("HQ").

    Returns:
        ``np.ndarray`` of dtype float32 and shape ``(num_samples,)``, nominally in [-1, 1], channels averaged;
        ``(0,)`` for a file or array without samples.

    Raises:
        AudioDecodingError: the file is missing or unreadable, the bytes are not a known format, or some samples
            are NaN or Inf.
        TypeError: `source` is none of the accepted types.
    """
    if isinstance(source, (str, os.PathLike)):
        samples, rate = _read_with_soundfile(source, name=str(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        samples, rate = _read_with_soundfile(io.BytesIO(bytes(source)), name="<bytes>")
    elif isinstance(source, Mapping):
        samples, rate = _read_mapping(source)
    else:
        raise TypeError(
            "load_audio expects a path, bytes, {'bytes', 'path'} or {'array', 'sampling_rate'}; "
            f"got {type(source).__name__}"
        )
    if not np.isfinite(samples).all():
        # A float WAV or array can hold NaN/Inf: features and transcript would be garbage, and silently so.
        raise AudioDecodingError(_source_name(source), f"{int((~np.isfinite(samples)).sum())} NaN or Inf samples")
    return resample(samples, rate, sampling_rate)


def _source_name(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Mapping) and source.get("path"):
        return str(source["path"])
    return "<array>" if isinstance(source, Mapping) and ("array" in source or "raw" in source) else "<bytes>"


def resample(samples: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resample mono `samples` (shape ``(num_samples,)``) from `orig_sampling_rate` to `target_sampling_rate` Hz.

    Returns float32 of shape ``(round(num_samples * target / orig),)``; the input itself when the rates match.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if int(orig_sampling_rate) == int(target_sampling_rate):
        return samples
    try:
        import soxr  # only needed when rates differ: keeps decoding 16 kHz audio free of the dependency
    except ImportError as error:
        raise ImportError(
            f"resampling {orig_sampling_rate} Hz audio to {target_sampling_rate} Hz needs soxr: pip install soxr"
        ) from error
    return soxr.resample(samples, orig_sampling_rate, target_sampling_rate, quality="HQ").astype(np.float32, copy=False)


def _read_mapping(source: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    if "array" in source or "raw" in source:
        array = source["array"] if "array" in source else source["raw"]
        if source.get("sampling_rate") is None:
            raise TypeError("an {'array': ...} audio dict needs its 'sampling_rate'")
        return _array_to_mono(array), int(source["sampling_rate"])
    if "bytes" in source or "path" in source:
        data, path = source.get("bytes"), source.get("path")
        if data is not None:
            return _read_with_soundfile(io.BytesIO(bytes(data)), name=str(path) if path else "<bytes>")
        if path is not None:
            return _read_with_soundfile(path, name=str(path))
        raise AudioDecodingError("<dict>", "both 'bytes' and 'path' are None")
    raise TypeError(f"audio dict needs 'array'+'sampling_rate' or 'bytes'/'path' keys; got {sorted(source)}")


def _read_with_soundfile(file: str | os.PathLike | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    if isinstance(file, (str, os.PathLike)) and not Path(file).is_file():
        # libsndfile only says "System error" for a missing file; say what is wrong.
        raise AudioDecodingError(name, "no such file")
    try:
        # always_2d gives (num_samples, channels) for mono and multi-channel alike.
        samples, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, EOFError) as error:
        # libsndfile's message repeats the path ("Error opening 'x.wav': ..."); its `error_string` is the reason.
        raise AudioDecodingError(name, getattr(error, "error_string", None) or str(error)) from error
    # Mono as a view of the one column rather than a mean's copy: long recordings would briefly need twice the memory.
    return (samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)), int(rate)


def _array_to_mono(array: Any) -> np.ndarray:
    samples = np.asarray(array)
    if np.issubdtype(samples.dtype, np.unsignedinteger):
        # Unsigned PCM (8-bit WAV) is offset binary: silence is the middle code (128), not 0.
        middle = (float(np.iinfo(samples.dtype).max) + 1.0) / 2.0
        samples = (samples.astype(np.float64) - middle) / middle
    elif np.issubdtype(samples.dtype, np.integer):
        # integer PCM (e.g. int16 from a WAV read elsewhere): the feature extractor expects [-1, 1] floats.
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2 and samples.size == 0:
        samples = np.zeros(0, dtype=np.float32)  # no samples (or no channels): nothing to average
    elif samples.ndim == 2:
        # soundfile lays audio out as (samples, channels), torchcodec/torchaudio as (channels, samples); a clip has
        # far more samples than channels, so the shorter axis is the channel axis either way.
        samples = samples.mean(axis=int(np.argmin(samples.shape)), dtype=np.float32)
    elif samples.ndim != 1:
        raise TypeError(f"audio array must be 1-D or 2-D, got shape {samples.shape}")
    return samples
