"""Waveform augmentation for training: speed, pitch/vocal tract, reverberation, noise, silence and long form.

Everything here is optional and configured by plain data (`AugmentationConfig`, e.g. a JSON file under
``training/configs/augmentation/``). `WaveformAugmentation(config)` is one callable ``(waveform, sampling_rate) ->
waveform`` with its own seeded random generator, meant for the training side of the data collator only (the
collator's ``waveform_transform``): evaluation never goes through it.

The parts, in the order the chain applies them (the order of Kaldi/ESPnet recipes: change the speaker, then the
room, then the recording):

1. speed perturbation (`speed_perturb`): Kaldi/ESPnet style 0.9/1.0/1.1 resampling with soxr, which changes tempo
   and pitch together; a factor of 1.1 makes the clip 1/1.1 as long.
2. vocal-tract/pitch perturbation (`transpose`): a spectral transposition with the tempo kept (Signalsmith Stretch,
   the engine of audiomentations' `PitchShift`), so pitch *and* formants move by the same factor: a shorter or
   longer vocal tract, which a synthetic corpus with few voices lacks most.
3. reverberation (`reverberate`) with room impulse responses simulated by pyroomacoustics (image source method,
   shoebox rooms of random size and RT60), a bank simulated once and cached in a ``.npz`` file
   (`load_or_simulate_rir_bank`).
4. leading and trailing silence (`pad_silence`) holding low-level noise (a quiet room, not digital zero), so the
   model hears pauses it must stay blank in.
5. additive noise at a random SNR (`add_noise`, 5-30 dB by default): white, pink or brown noise generated on the
   fly (`colored_noise`), or excerpts of noise files from a folder (`NoiseFiles`). On a real setup point
   `noise_dir` at MUSAN (openslr.org/17: ``musan/noise`` and ``musan/music``; ``musan/speech`` makes babble), the
   noise set of Kaldi, ESPnet and icefall recipes. The SNR is measured against the speech, not against the added
   silence.

Long form (`concatenate_utterances`) works on several utterances at once, so it is not part of the per-waveform
chain: `WaveformAugmentation.join_batch` concatenates a batch's utterances with pauses for a share of the batches.

Cost: ``python -m hf_prunable_ctc.data.augmentation --config training/configs/augmentation/standard.json`` prints the
milliseconds per audio second of each part and of the chain (`benchmark`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NOISE_COLORS = ("white", "pink", "brown")
LENGTH_DRAWS = ("utterance", "batch")  # AugmentationConfig.length_draws
# Spectral slope of each colour: power ~ 1 / f**exponent.
NOISE_COLOR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
NOISE_FILE_SUFFIXES = (".wav", ".flac", ".ogg")
# Where `load_or_simulate_rir_bank` caches banks when the config names no file.
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hf_prunable_ctc"
# Bump when the simulation changes, so a cached bank of an older simulation is never reused.
RIR_BANK_VERSION = 1


@dataclass
class AugmentationConfig:
    r"""
    Settings of `WaveformAugmentation`. Every part is off when its probability is 0 (the default), so the default
    config changes nothing.

    Args:
        seed (`int`, defaults to 0): seed of the augmentation's random generator. In a DataLoader worker the
            generator is reseeded from `(seed, worker seed)` (see `WaveformAugmentation`). It does not change the
            reverb bank, which is always simulated with seed 0.
        speed_probability (`float`, defaults to 0.0): probability of drawing a speed factor for an utterance; in
            `[0, 1]`.
        speed_factors (`list[float]`, defaults to `[0.9, 1.0, 1.1]`): factors drawn uniformly (Kaldi/ESPnet
            3-way speed perturbation); each in `[0.5, 2.0]`. Factor f resamples so the clip lasts 1/f as long, with
            tempo and pitch both times f.
        pitch_probability (`float`, defaults to 0.0): probability of a vocal-tract/pitch transposition; in `[0, 1]`.
        pitch_semitones (`list[float]`, defaults to `[-2.0, 2.0]`): range `[low, high]` of the transposition in
            semitones, drawn uniformly; within `[-12, 12]`. 2 semitones is a factor of 1.12, the range of
            vocal-tract-length perturbation (0.9-1.1).
        reverb_probability (`float`, defaults to 0.0): probability of convolving with a simulated room impulse
            response; in `[0, 1]`.
        reverb_rooms (`int`, defaults to 50): room impulse responses in the bank; at least 1.
        reverb_rt60_s (`list[float]`, defaults to `[0.2, 0.7]`): range of the rooms' reverberation time RT60 in
            seconds; within `[0.05, 1.5]`. Simulation time grows with RT60 (about 2 s per room at 0.6 s).
        reverb_room_size_m (`list[float]`, defaults to `[3.0, 10.0]`): range of the rooms' length and width in
            metres (height is 2.5-4 m); within `[2, 30]`.
        reverb_bank_path (`str`, *optional*): `.npz` file of the bank; simulated and written there when missing.
            Default: a file under `~/.cache/hf_prunable_ctc` named by a digest of the reverb settings.
        noise_probability (`float`, defaults to 0.0): probability of adding noise; in `[0, 1]`.
        noise_snr_db (`list[float]`, defaults to `[5.0, 30.0]`): range of the signal-to-noise ratio in dB, drawn
            uniformly; within `[-10, 60]`.
        noise_colors (`list[str]`, defaults to `["white", "pink", "brown"]`): generated noise colours to draw from;
            a subset of `NOISE_COLORS`.
        noise_dir (`str`, *optional*): folder searched recursively for noise files (.wav, .flac, .ogg), e.g. the
            MUSAN folder. None: generated noise only.
        noise_file_share (`float`, defaults to 0.5): with `noise_dir`, the share of noise draws taken from files
            rather than generated; in `[0, 1]`.
        silence_probability (`float`, defaults to 0.0): probability of adding silence before and after; in
            `[0, 1]`.
        silence_s (`list[float]`, defaults to `[0.0, 1.0]`): range of each of the leading and trailing silences, in
            seconds, drawn independently; within `[0, 10]`.
        silence_noise_dbfs (`list[float]`, defaults to `[-70.0, -50.0]`): range of the RMS level of the noise in
            the added silence, in dB relative to full scale (the corpus speech peaks at -12 dBFS); within
            `[-120, 0]`.
        long_form_probability (`float`, defaults to 0.0): share of training batches whose utterances are joined
            into longer ones by `join_batch`; in `[0, 1]`.
        long_form_utterances (`int`, defaults to 4): most utterances joined into one; at least 2.
        long_form_pause_s (`list[float]`, defaults to `[0.3, 1.5]`): range of the pause between joined utterances,
            in seconds; within `[0, 10]`.
        length_draws (`str`, defaults to `"utterance"`): `"utterance"` draws the speed factor and the silences for
            each utterance; `"batch"` draws them once per batch (in `join_batch`, which the training collator then
            calls for every batch), so utterances grouped by length (`group_by_length`) stay equally long. Per
            utterance, batches of the 6-hour synthetic corpus were padded to 1.50x their frames, per batch 1.003x.
    """

    seed: int = 0
    speed_probability: float = 0.0
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    pitch_probability: float = 0.0
    pitch_semitones: list[float] = field(default_factory=lambda: [-2.0, 2.0])
    reverb_probability: float = 0.0
    reverb_rooms: int = 50
    reverb_rt60_s: list[float] = field(default_factory=lambda: [0.2, 0.7])
    reverb_room_size_m: list[float] = field(default_factory=lambda: [3.0, 10.0])
    reverb_bank_path: str | None = None
    noise_probability: float = 0.0
    noise_snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])
    noise_colors: list[str] = field(default_factory=lambda: list(NOISE_COLORS))
    noise_dir: str | None = None
    noise_file_share: float = 0.5
    silence_probability: float = 0.0
    silence_s: list[float] = field(default_factory=lambda: [0.0, 1.0])
    silence_noise_dbfs: list[float] = field(default_factory=lambda: [-70.0, -50.0])
    long_form_probability: float = 0.0
    long_form_utterances: int = 4
    long_form_pause_s: list[float] = field(default_factory=lambda: [0.3, 1.5])
    length_draws: str = "utterance"

    @classmethod
    def from_dict(cls, values: dict) -> AugmentationConfig:
        """A checked config from a dict (e.g. parsed JSON); an unknown key is an error, so a typo is never
        silently ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"AugmentationConfig: unknown fields {unknown}; known fields: {sorted(names)}")
        config = cls(**values)
        config.check_values()
        return config

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> AugmentationConfig:
        """A checked config from a JSON file of its fields (``training/configs/augmentation/*.json``)."""
        with open(path, encoding="utf-8") as file:
            values = json.load(file)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of AugmentationConfig fields")
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def enabled(self) -> bool:
        """Whether any per-waveform part can change a waveform."""
        return any(p > 0 for p in (self.speed_probability, self.pitch_probability, self.reverb_probability,
                                   self.noise_probability, self.silence_probability))

    def check_values(self) -> None:
        """Raise `ValueError` naming the field and its allowed range for any bad setting."""

        def fail(name, message):
            raise ValueError(f"AugmentationConfig.{name}: {message} (got {getattr(self, name)!r})")

        def check_range(name, low, high):
            value = getattr(self, name)
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                fail(name, "must be a list [low, high] of two numbers")
            if not low <= value[0] <= value[1] <= high:
                fail(name, f"must satisfy {low} <= low <= high <= {high}")

        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            fail("seed", "must be a non-negative integer")
        for name in ("speed_probability", "pitch_probability", "reverb_probability", "noise_probability",
                     "noise_file_share", "silence_probability", "long_form_probability"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                fail(name, "must be a number in [0, 1]")
        if (not isinstance(self.speed_factors, (list, tuple)) or not self.speed_factors
                or not all(isinstance(f, (int, float)) and 0.5 <= f <= 2.0 for f in self.speed_factors)):
            fail("speed_factors", "must be a non-empty list of factors in [0.5, 2.0]")
        check_range("pitch_semitones", -12.0, 12.0)
        for name in ("reverb_rooms", "long_form_utterances"):
            value = getattr(self, name)
            minimum = 1 if name == "reverb_rooms" else 2
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                fail(name, f"must be an integer >= {minimum}")
        check_range("reverb_rt60_s", 0.05, 1.5)
        check_range("reverb_room_size_m", 2.0, 30.0)
        check_range("noise_snr_db", -10.0, 60.0)
        check_range("silence_s", 0.0, 10.0)
        check_range("silence_noise_dbfs", -120.0, 0.0)
        check_range("long_form_pause_s", 0.0, 10.0)
        if self.length_draws not in LENGTH_DRAWS:
            fail("length_draws", f"must be one of {LENGTH_DRAWS}")
        if (not isinstance(self.noise_colors, (list, tuple))
                or not all(color in NOISE_COLORS for color in self.noise_colors)):
            fail("noise_colors", f"must be a list of colours from {NOISE_COLORS}")
        if self.noise_probability > 0 and not self.noise_colors and self.noise_dir is None:
            fail("noise_colors", "is empty and no noise_dir is given: nothing to draw noise from")
        if self.noise_dir is not None and not os.path.isdir(self.noise_dir):
            fail("noise_dir", "is not a folder: give the MUSAN (or other noise) folder, or null for generated noise")


# ------------------------------------------------------------------------------------------------------ the parts


def _require(module: str, package: str):
    """Import an optional dependency, or say which package installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this augmentation needs {package}: pip install {package} (or pip install "
                          "'hf-prunable-ctc[augment]')") from error


def _as_waveform(waveform: np.ndarray, name: str = "waveform") -> np.ndarray:
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"{name} must be mono, shape (num_samples,); got shape {waveform.shape} (average the "
                         "channels first)")
    return waveform.astype(np.float32, copy=False)


def _check_rate(sampling_rate: int) -> None:
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer in Hz, got {sampling_rate!r}")


def speed_perturb(waveform: np.ndarray, sampling_rate: int, factor: float) -> np.ndarray:
    """Kaldi/ESPnet speed perturbation: play `waveform` `factor` times faster (tempo and pitch both times `factor`).

    Args:
        waveform: (num_samples,) float mono audio.
        sampling_rate: Hz (the output has the same rate).
        factor: e.g. 0.9 or 1.1.

    Returns:
        (round(num_samples / factor),) float32: soxr resampling from `sampling_rate * factor` to `sampling_rate`.
    """
    import soxr

    waveform = _as_waveform(waveform)
    _check_rate(sampling_rate)
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0 or waveform.size == 0:
        return waveform.copy()
    return soxr.resample(waveform, sampling_rate * factor, sampling_rate, quality="HQ").astype(np.float32)


def transpose(waveform: np.ndarray, sampling_rate: int, semitones: float) -> np.ndarray:
    """Shift pitch and formants together by `semitones` with the duration kept (vocal-tract/pitch perturbation).

    Signalsmith Stretch (python-stretch, the default engine of audiomentations' `PitchShift`) transposes the
    whole spectrum, so formants move with the pitch, as with a shorter (up) or longer (down) vocal tract.

    Args:
        waveform: (num_samples,) float mono audio.
        sampling_rate: Hz.
        semitones: the shift; +2 multiplies frequencies by 2 ** (2 / 12) = 1.12.

    Returns:
        (num_samples,) float32, time-aligned with the input.
    """
    python_stretch = _require("python_stretch", "python-stretch")
    waveform = _as_waveform(waveform)
    _check_rate(sampling_rate)
    if semitones == 0.0 or waveform.size == 0:
        return waveform.copy()
    stretch = python_stretch.Signalsmith.Stretch()
    stretch.preset(1, sampling_rate)
    stretch.setTransposeSemitones(float(semitones))
    return stretch.process(np.ascontiguousarray(waveform[np.newaxis, :]))[0].astype(np.float32, copy=False)


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of a colour: white (flat), pink (power ~ 1/f) or brown (power ~ 1/f^2).

    Pink and brown are drawn in the frequency domain (a complex Gaussian spectrum shaped by 1/f^(exponent/2), the
    method of audiomentations' `AddColorNoise`) and brought back with one inverse FFT of a fast length; the result
    has no DC offset and is scaled to unit RMS.

    Returns:
        (num_samples,) float32 with RMS 1 (zeros when num_samples < 2 leaves nothing to shape).
    """
    scipy_fft = _require("scipy.fft", "scipy")
    if color not in NOISE_COLORS:
        raise ValueError(f"noise colour {color!r}: choose one of {NOISE_COLORS}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    exponent = NOISE_COLOR_EXPONENTS[color]
    if exponent == 0 or num_samples < 2:
        noise = rng.standard_normal(num_samples, dtype=np.float32)
    else:
        n_fft = scipy_fft.next_fast_len(num_samples, real=True)
        bins = n_fft // 2 + 1
        spectrum = (rng.standard_normal(bins, dtype=np.float32)
                    + 1j * rng.standard_normal(bins, dtype=np.float32)).astype(np.complex64)
        gain = np.arange(bins, dtype=np.float32)
        gain[0] = 1.0
        spectrum /= gain ** np.float32(exponent / 2)
        spectrum[0] = 0.0  # no DC: brown noise would otherwise drift far from zero
        noise = scipy_fft.irfft(spectrum, n=n_fft)[:num_samples]
        noise -= noise.mean()
    rms = math.sqrt(float(np.mean(np.square(noise, dtype=np.float64)))) if num_samples else 0.0
    return (noise / rms).astype(np.float32) if rms > 0 else np.zeros(num_samples, np.float32)


def add_noise(waveform: np.ndarray, noise: np.ndarray, snr_db: float,
              reference: slice | None = None) -> np.ndarray:
    """Add `noise` scaled so that the power of `waveform[reference]` over the noise power is `snr_db`.

    Args:
        waveform: (num_samples,) float mono audio.
        noise: (num_samples,) noise of any level (its mean power over the whole clip is what is matched).
        snr_db: the signal-to-noise ratio in dB.
        reference: the part of `waveform` that is speech (default: all of it), so added silence does not lower the
            measured speech power.

    Returns:
        (num_samples,) float32. Unchanged when the reference part is silent or empty (no SNR is defined), or when
        the noise is silent.
    """
    waveform = _as_waveform(waveform)
    noise = _as_waveform(noise, "noise")
    if noise.shape != waveform.shape:
        raise ValueError(f"noise has {noise.size} samples but the waveform has {waveform.size}")
    speech = waveform[reference] if reference is not None else waveform
    signal_power = float(np.mean(speech.astype(np.float64) ** 2)) if speech.size else 0.0
    noise_power = float(np.mean(noise.astype(np.float64) ** 2)) if noise.size else 0.0
    if signal_power == 0.0 or noise_power == 0.0:
        return waveform.copy()
    gain = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (waveform + gain * noise).astype(np.float32)


class NoiseFiles:
    """Noise excerpts from the audio files under a folder (searched recursively; MUSAN's layout works as is).

    Files are read (and resampled with soxr) when first drawn and kept in memory, so a DataLoader worker reads each
    file at most once.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.paths = sorted(path for path in self.directory.rglob("*")
                            if path.suffix.lower() in NOISE_FILE_SUFFIXES and path.is_file())
        if not self.paths:
            raise ValueError(f"no noise files ({', '.join(NOISE_FILE_SUFFIXES)}) under {self.directory}: point "
                             "noise_dir at the MUSAN folder or another folder of noise recordings")
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, sampling_rate: int) -> np.ndarray:
        """File `index` as (num_samples,) float32 mono at `sampling_rate`."""
        import soundfile
        import soxr

        key = (index, sampling_rate)
        if key not in self._cache:
            samples, rate = soundfile.read(str(self.paths[index]), dtype="float32", always_2d=True)
            samples = samples.mean(axis=1)
            if rate != sampling_rate and samples.size:
                samples = soxr.resample(samples, rate, sampling_rate, quality="HQ").astype(np.float32)
            self._cache[key] = samples
        return self._cache[key]

    def excerpt(self, num_samples: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
        """A random excerpt of `num_samples` from a random file, looped when the file is shorter.

        Returns:
            (num_samples,) float32.
        """
        samples = self.load(int(rng.integers(len(self.paths))), sampling_rate)
        if samples.size == 0 or num_samples == 0:
            return np.zeros(num_samples, np.float32)
        if samples.size < num_samples:
            samples = np.tile(samples, math.ceil(num_samples / samples.size) + 1)
        start = int(rng.integers(samples.size - num_samples + 1))
        return samples[start:start + num_samples]


def simulate_rir_bank(num_rooms: int, sampling_rate: int, rt60_range_s: Sequence[float] = (0.2, 0.7),
                      room_size_range_m: Sequence[float] = (3.0, 10.0), seed: int = 0) -> list[np.ndarray]:
    """Simulate room impulse responses of random shoebox rooms with pyroomacoustics' image source method.

    Each room has a length and width drawn from `room_size_range_m`, a height of 2.5-4 m, an RT60 from
    `rt60_range_s` (wall absorption from Sabine's formula), and a source and microphone at random places at least
    0.5 m from the walls and each other.

    Returns:
        `num_rooms` float32 impulse responses, each (length,), starting at the direct path (the propagation delay
        removed, so reverberation does not shift the speech against its frames) and scaled to unit peak.
    """
    pyroomacoustics = _require("pyroomacoustics", "pyroomacoustics")
    rng = np.random.default_rng(seed)
    bank = []
    while len(bank) < num_rooms:
        dims = np.array([rng.uniform(*room_size_range_m), rng.uniform(*room_size_range_m), rng.uniform(2.5, 4.0)])
        rt60 = rng.uniform(*rt60_range_s)
        try:
            absorption, max_order = pyroomacoustics.inverse_sabine(rt60, dims)
        except ValueError:  # RT60 impossible for this room (too short for its size): draw another room
            continue
        room = pyroomacoustics.ShoeBox(dims, fs=sampling_rate, materials=pyroomacoustics.Material(absorption),
                                       max_order=max_order)
        source, microphone = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        if np.linalg.norm(source - microphone) < 0.5:
            continue
        room.add_source(source)
        room.add_microphone(microphone)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[int(np.argmax(np.abs(rir))):]
        bank.append((rir / np.max(np.abs(rir))).astype(np.float32))
    return bank


def load_or_simulate_rir_bank(path: str | os.PathLike, num_rooms: int, sampling_rate: int,
                              rt60_range_s: Sequence[float] = (0.2, 0.7),
                              room_size_range_m: Sequence[float] = (3.0, 10.0), seed: int = 0,
                              log=None) -> list[np.ndarray]:
    """The bank cached at `path` (``.npz``), simulated with `simulate_rir_bank` and written there when missing.

    A file simulated with other settings is an error, not silently reused: the settings are stored with the bank.

    Returns:
        The impulse responses, as `simulate_rir_bank`.
    """
    path = Path(path)
    settings = dict(num_rooms=num_rooms, sampling_rate=sampling_rate, rt60_range_s=list(map(float, rt60_range_s)),
                    room_size_range_m=list(map(float, room_size_range_m)), seed=seed, version=RIR_BANK_VERSION)
    if path.exists():
        with np.load(path) as data:
            stored = json.loads(str(data["settings"]))
            if stored != settings:
                raise ValueError(f"the RIR bank {path} was simulated with {stored}, not {settings}: give another "
                                 "reverb_bank_path or delete that file")
            return [data[f"rir_{i}"] for i in range(num_rooms)]
    if log is not None:
        log(f"simulating {num_rooms} room impulse responses into {path} (once)")
    bank = simulate_rir_bank(num_rooms, sampling_rate, rt60_range_s, room_size_range_m, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")  # np.savez adds .npz to names without it
    np.savez(partial, settings=json.dumps(settings), **{f"rir_{i}": rir for i, rir in enumerate(bank)})
    os.replace(partial, path)
    return bank


def reverberate(waveform: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve `waveform` with the impulse response `rir` (direct path first), keeping length and RMS level.

    Returns:
        (num_samples,) float32: the first num_samples of the reverberant signal (the tail past the end is cut, as
        the transcript ends there), scaled to the input's RMS.
    """
    fftconvolve = _require("scipy.signal", "scipy").fftconvolve
    waveform = _as_waveform(waveform)
    rir = _as_waveform(rir, "rir")
    if waveform.size == 0 or rir.size == 0:
        return waveform.copy()
    wet = fftconvolve(waveform.astype(np.float64), rir.astype(np.float64))[:waveform.size]
    dry_rms = math.sqrt(float(np.mean(waveform.astype(np.float64) ** 2)))
    wet_rms = math.sqrt(float(np.mean(wet ** 2)))
    if wet_rms == 0.0:
        return waveform.copy()
    return (wet * (dry_rms / wet_rms)).astype(np.float32)


def pad_silence(waveform: np.ndarray, sampling_rate: int, leading_s: float, trailing_s: float,
                noise_dbfs: float | None, rng: np.random.Generator) -> np.ndarray:
    """Add `leading_s` and `trailing_s` seconds of near-silence before and after `waveform`.

    The silence holds pink noise at an RMS of `noise_dbfs` dB full scale (a quiet room); None adds digital zeros.

    Returns:
        (round(leading_s * sampling_rate) + num_samples + round(trailing_s * sampling_rate),) float32.
    """
    waveform = _as_waveform(waveform)
    _check_rate(sampling_rate)
    if leading_s < 0 or trailing_s < 0:
        raise ValueError(f"silence must be >= 0 s, got leading {leading_s} and trailing {trailing_s}")
    lead, trail = round(leading_s * sampling_rate), round(trailing_s * sampling_rate)
    padded = np.zeros(lead + waveform.size + trail, np.float32)
    padded[lead:lead + waveform.size] = waveform
    if noise_dbfs is not None:
        level = 10 ** (noise_dbfs / 20)
        padded[:lead] = level * colored_noise(lead, "pink", rng)
        padded[lead + waveform.size:] = level * colored_noise(trail, "pink", rng)
    return padded


def concatenate_utterances(waveforms: Sequence[np.ndarray], transcripts: Sequence[str], sampling_rate: int,
                           pauses_s: Sequence[float], noise_dbfs: float | None = None,
                           rng: np.random.Generator | None = None) -> tuple[np.ndarray, str]:
    """Join utterances into one long-form utterance, with a pause between each two.

    Args:
        waveforms: N (num_samples_i,) mono clips at `sampling_rate`.
        transcripts: their N transcripts.
        pauses_s: N - 1 pause lengths in seconds.
        noise_dbfs: RMS level of pink noise in the pauses (dB full scale); None: digital zeros.
        rng: generator for that noise (required with `noise_dbfs`).

    Returns:
        ``(waveform, transcript)``: (sum num_samples_i + sum pause samples,) float32, and the transcripts joined by
        single spaces (empty ones left out).
    """
    _check_rate(sampling_rate)
    if len(waveforms) != len(transcripts) or not waveforms:
        raise ValueError(f"need as many transcripts as waveforms (at least one); got {len(waveforms)} waveforms "
                         f"and {len(transcripts)} transcripts")
    if len(pauses_s) != len(waveforms) - 1:
        raise ValueError(f"{len(waveforms)} utterances need {len(waveforms) - 1} pauses, got {len(pauses_s)}")
    if noise_dbfs is not None and rng is None:
        raise ValueError("noise_dbfs needs an rng for the pause noise")
    pieces = [_as_waveform(waveforms[0], "waveforms[0]")]
    for index, (pause, waveform) in enumerate(zip(pauses_s, waveforms[1:]), start=1):
        if pause < 0:
            raise ValueError(f"pauses_s[{index - 1}] is {pause}; pauses must be >= 0 s")
        samples = round(pause * sampling_rate)
        gap = (10 ** (noise_dbfs / 20) * colored_noise(samples, "pink", rng) if noise_dbfs is not None
               else np.zeros(samples, np.float32))
        pieces += [gap.astype(np.float32), _as_waveform(waveform, f"waveforms[{index}]")]
    transcript = " ".join(text.strip() for text in transcripts if text.strip())
    return np.concatenate(pieces).astype(np.float32, copy=False), transcript


# ---------------------------------------------------------------------------------------------------- the chain


class WaveformAugmentation:
    """The configured chain as one callable: ``augment(waveform, sampling_rate) -> waveform`` (float32 mono).

    Random draws come from the instance's own `numpy.random.Generator`, seeded with `config.seed`: the same seed
    and the same calls give the same outputs. In a PyTorch DataLoader worker (where every worker holds a copy of
    the same generator state, which would repeat the same augmentations in every worker) the generator is
    reseeded on its first use in that worker from `(config.seed, torch's per-worker seed)`; torch draws that seed
    from the main process's generator each epoch, so workers differ from each other and epochs differ from each
    other, and a run seeded the same way (the Trainer's `seed`) repeats. `reseed` sets the seed by hand.

    The reverb bank is loaded (or simulated and cached) when the instance is made; noise files are read when first
    drawn.
    """

    def __init__(self, config: AugmentationConfig, sampling_rate: int = 16000, log=None):
        config.check_values()
        _check_rate(sampling_rate)
        self.config = config
        self.sampling_rate = sampling_rate
        self.rng = np.random.default_rng(config.seed)
        self._worker_id: int | None = None
        self._batch_lengths: dict | None = None  # with length_draws="batch": the current batch's speed and silences
        self.noise_files = NoiseFiles(config.noise_dir) if config.noise_dir is not None else None
        self.rir_bank: list[np.ndarray] = []
        if config.reverb_probability > 0:
            path = config.reverb_bank_path or DEFAULT_CACHE_DIR / f"rir_bank-{self._reverb_digest()}.npz"
            # The bank is a fixed set of rooms (seed 0), like a downloaded RIR set: `seed` changes which room each
            # utterance gets, not the rooms, so trying another seed does not simulate a new bank.
            self.rir_bank = load_or_simulate_rir_bank(path, config.reverb_rooms, sampling_rate, config.reverb_rt60_s,
                                                      config.reverb_room_size_m, seed=0, log=log)

    def _reverb_digest(self) -> str:
        c = self.config
        key = json.dumps([c.reverb_rooms, list(map(float, c.reverb_rt60_s)), list(map(float, c.reverb_room_size_m)),
                          self.sampling_rate, RIR_BANK_VERSION])
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Restart the generator from `seed` (an int or a sequence of ints, as `numpy.random.default_rng`)."""
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        """The generator's state (JSON-serialisable), so a resumed training continues the same draws."""
        return {"bit_generator": self.rng.bit_generator.state, "worker_id": self._worker_id}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; raises ValueError for a state of another kind of generator."""
        try:
            self.rng.bit_generator.state = state["bit_generator"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a WaveformAugmentation state ({error}); expected the output of state_dict()") \
                from None
        self._worker_id = state.get("worker_id")

    def _follow_worker(self) -> None:
        torch = sys.modules.get("torch")  # no torch imported: no DataLoader worker either
        if torch is None:
            return
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._worker_id:
            self._worker_id = info.id
            self.reseed([self.config.seed, info.seed % 2 ** 32, info.seed // 2 ** 32])

    def _draw(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability

    def __call__(self, waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Augment one training utterance.

        Args:
            waveform: (num_samples,) float mono audio (any float dtype; 0 or 1 samples and silence are fine).
            sampling_rate: Hz; must equal the rate the instance was made for (the reverb bank's rate).

        Returns:
            (num_samples',) float32, finite; num_samples' differs when speed or silence are applied.
        """
        waveform = _as_waveform(waveform)
        if sampling_rate != self.sampling_rate:
            raise ValueError(f"this augmentation was set up for {self.sampling_rate} Hz audio, got {sampling_rate} "
                             "Hz: resample first, or make WaveformAugmentation(config, sampling_rate=...)")
        self._follow_worker()
        config, rng = self.config, self.rng
        if not np.all(np.isfinite(waveform)):
            raise ValueError("waveform holds NaN or infinite samples")
        # Per batch (join_batch sets them when length_draws is "batch") or per utterance, in the order the
        # per-utterance draws have always had.
        batch = self._batch_lengths
        speed = batch["speed"] if batch else self._draw_speed()
        if speed is not None:
            waveform = speed_perturb(waveform, sampling_rate, speed)
        if self._draw(config.pitch_probability):
            waveform = transpose(waveform, sampling_rate, float(rng.uniform(*config.pitch_semitones)))
        if self.rir_bank and self._draw(config.reverb_probability):
            waveform = reverberate(waveform, self.rir_bank[int(rng.integers(len(self.rir_bank)))])
        speech = slice(0, waveform.size)
        silence = batch["silence"] if batch else self._draw_silence()
        if silence is not None:
            lead, trail = silence
            waveform = pad_silence(waveform, sampling_rate, lead, trail,
                                   float(rng.uniform(*config.silence_noise_dbfs)), rng)
            speech = slice(round(lead * sampling_rate), round(lead * sampling_rate) + speech.stop)
        if self._draw(config.noise_probability):
            waveform = add_noise(waveform, self._noise(waveform.size, sampling_rate),
                                 float(rng.uniform(*config.noise_snr_db)), reference=speech)
        # Speech at -12 dBFS plus noise at 5 dB SNR can exceed full scale; keep samples where a recording keeps them.
        return np.clip(waveform, -1.0, 1.0).astype(np.float32, copy=False)

    def _draw_speed(self) -> float | None:
        return float(self.rng.choice(self.config.speed_factors)) if self._draw(self.config.speed_probability) else None

    def _draw_silence(self) -> tuple[float, float] | None:
        """(leading, trailing) seconds, or None."""
        if not self._draw(self.config.silence_probability):
            return None
        return float(self.rng.uniform(*self.config.silence_s)), float(self.rng.uniform(*self.config.silence_s))

    def _noise(self, num_samples: int, sampling_rate: int) -> np.ndarray:
        config, rng = self.config, self.rng
        from_files = self.noise_files is not None and (not config.noise_colors
                                                       or rng.random() < config.noise_file_share)
        if from_files:
            return self.noise_files.excerpt(num_samples, sampling_rate, rng)
        return colored_noise(num_samples, str(rng.choice(config.noise_colors)), rng)

    def join_batch(self, waveforms: Sequence[np.ndarray], transcripts: Sequence[str]
                   ) -> tuple[list[np.ndarray], list[str]]:
        """Long form: for a `long_form_probability` share of batches, join consecutive utterances into groups of
        up to `long_form_utterances`, with pauses of `long_form_pause_s` holding low-level noise.

        Args:
            waveforms: the batch's (num_samples_i,) mono clips at the instance's sampling rate.
            transcripts: their transcripts.

        Returns:
            ``(waveforms, transcripts)``: the batch unchanged, or fewer, longer utterances covering the same clips
            in the same order.
        """
        if len(waveforms) != len(transcripts):
            raise ValueError(f"{len(waveforms)} waveforms but {len(transcripts)} transcripts")
        self._follow_worker()
        config, rng = self.config, self.rng
        if config.length_draws == "batch":
            self._batch_lengths = {"speed": self._draw_speed(), "silence": self._draw_silence()}
        if len(waveforms) < 2 or not self._draw(config.long_form_probability):
            return list(waveforms), list(transcripts)
        joined_waveforms, joined_transcripts, start = [], [], 0
        while start < len(waveforms):
            size = int(rng.integers(2, config.long_form_utterances + 1))
            group = slice(start, start + size)
            pauses = [float(rng.uniform(*config.long_form_pause_s)) for _ in range(len(waveforms[group]) - 1)]
            waveform, transcript = concatenate_utterances(
                waveforms[group], transcripts[group], self.sampling_rate, pauses,
                float(rng.uniform(*config.silence_noise_dbfs)), rng)
            joined_waveforms.append(waveform)
            joined_transcripts.append(transcript)
            start += size
        return joined_waveforms, joined_transcripts


def benchmark(config: AugmentationConfig, seconds: float = 60.0, clip_s: float = 4.0, sampling_rate: int = 16000,
              seed: int = 0, repeats: int = 3) -> dict[str, float]:
    """CPU milliseconds per second of audio for each part alone (probability 1) and for `config`'s chain, on
    `seconds` of speech-like noise in clips of `clip_s`; the least of `repeats` runs, since other processes on the
    machine only ever add time.

    Returns:
        ``{part: ms per audio second}``.
    """
    import time

    rng = np.random.default_rng(seed)
    clips = [0.1 * colored_noise(round(clip_s * sampling_rate), "pink", rng)
             for _ in range(max(1, round(seconds / clip_s)))]
    base = dataclasses.replace(config, speed_probability=0.0, pitch_probability=0.0, reverb_probability=0.0,
                               noise_probability=0.0, silence_probability=0.0)
    parts = {"speed": dict(speed_probability=1.0, speed_factors=[0.9, 1.1]),
             "pitch": dict(pitch_probability=1.0), "reverb": dict(reverb_probability=1.0),
             "noise": dict(noise_probability=1.0), "silence": dict(silence_probability=1.0)}
    setups = {name: dataclasses.replace(base, **values) for name, values in parts.items()}
    setups["chain"] = config
    results = {}
    total_s = len(clips) * clip_s
    for name, setup in setups.items():
        augment = WaveformAugmentation(setup, sampling_rate)
        augment(clips[0], sampling_rate)  # warm up (imports, first noise file)
        # Process CPU time, not wall time: on a shared machine it is what the augmentation itself costs.
        costs = []
        for _ in range(repeats):
            augment.reseed(seed)
            start = time.process_time()
            for clip in clips:
                augment(clip, sampling_rate)
            costs.append(1000 * (time.process_time() - start) / total_s)
        results[name] = min(costs)
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Measure the augmentation's cost per audio second, per part and "
                                                 "for a whole chain.")
    parser.add_argument("--config", help="AugmentationConfig JSON of the chain (default: the probabilities of "
                                         "training/configs/augmentation/standard.json)")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    chain = AugmentationConfig.from_json(args.config) if args.config else AugmentationConfig(
        speed_probability=1.0, pitch_probability=0.5, reverb_probability=0.3, noise_probability=0.5,
        silence_probability=0.5)
    for part, cost in benchmark(chain, args.seconds).items():
        print(f"{part:<8} {cost:7.2f} CPU ms per audio second")
