"""Torch log-mel front end: the features of `Speech2TextFeatureExtractor`, about 10x faster, and safe on odd audio.

Remote code: this file travels next to the weights and is loaded by ``AutoFeatureExtractor.from_pretrained(folder,
trust_remote_code=True)``, so it imports only torch and transformers (soxr, for resampling, is optional).

Why not the stock class: without torchaudio (which stops at torch 2.11) `Speech2TextFeatureExtractor` computes its
Kaldi fbank frame by frame in numpy float64, ~40 ms for 10 s of audio on 2 CPU threads, about twice the cost of the
8-layer model, so pruning the model barely sped up what a user runs. Here the same computation is one batched
`torch.stft`-style pass (frames -> DC removal -> pre-emphasis -> Povey window -> 512-point power spectrum -> Kaldi
mel filters -> log with the same floor -> utterance CMVN), a few ms for 10 s. The configuration keys and the output
(``input_features`` ``(frames, num_mel_bins)`` float32, ``attention_mask`` int32) are those of the stock class, so a
checkpoint trained with either works with the other; features differ by float32 rounding (~1e-4 after CMVN).

What it adds over the stock class (every entry point that uses the extractor gets it):

- integer PCM (int8/int16/int32, unsigned 8-bit) is scaled to [-1, 1); float64 is accepted;
- an utterance given as a 2-D array inside a list is multi-channel audio shaped ``(channels, samples)`` (the ASR
  pipeline's and torchcodec's convention) and is averaged over channels; a bare 2-D array keeps the stock meaning,
  a batch ``(batch, samples)``; 3-D input is refused;
- NaN or Inf samples raise ``ValueError`` (the stock class returns NaN features and the model a garbage transcript);
- audio shorter than one window (400 samples at 16 kHz, including 0 and 1 samples) gives zero frames instead of a
  numpy error, so the model returns an empty transcript;
- a mel bin that is constant over the utterance (digital silence, a single frame) normalises to 0 instead of NaN;
- audio at another sampling rate is resampled with soxr when it is installed; otherwise a ``ValueError`` names the
  expected rate.
"""

from __future__ import annotations

import math
import threading
import warnings

import torch
from transformers.audio_utils import mel_filter_bank, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType

# Fixed in Speech2TextFeatureExtractor (and Kaldi's defaults): 25 ms window, 10 ms hop at 16 kHz.
WIN_LENGTH = 400
HOP_LENGTH = 160
FFT_LENGTH = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, Kaldi's log floor
KALDI_SCALE = 2**15  # Kaldi expects 16-bit integer amplitudes
MEL_BLOCK = 16  # mel filters per block of the banded filterbank product (see `_mel_blocks`)
CONSTANT_BIN_STD = 1e-4  # log-energy std below which a bin counts as constant over the utterance (normalised to 0)
FEATURE_TYPES = ("kaldi_fbank", "whisper_log_mel")
WHISPER_FFT_LENGTH = 400  # Whisper's n_fft: a 25 ms periodic Hann window, no zero padding
WHISPER_LOG_FLOOR = 1e-10
WHISPER_DYNAMIC_RANGE = 8.0  # log10 units kept below the utterance's loudest bin
WORKSPACE_MAX_FRAMES = 3000  # 30 s: the FFT buffers of inputs up to this long are kept per thread (see `_workspace`)

_WORKSPACES = threading.local()  # per thread, and at module level so that pickling an extractor never carries it


class PrunableCTCFeatureExtractor(SequenceFeatureExtractor):
    r"""Kaldi-style log-mel filter bank with utterance-level mean/variance normalisation, in torch.

    Same constructor, call signature and saved configuration keys as `Speech2TextFeatureExtractor`.

    Args:
        feature_size (`int`, defaults to 80): feature dimension (equal to `num_mel_bins`).
        sampling_rate (`int`, defaults to 16000): rate the model was trained at, in Hz.
        num_mel_bins (`int`, defaults to 80): number of mel bins (20 Hz to Nyquist, Kaldi mel scale).
        padding_value (`float`, defaults to 0.0): value of padded frames (0 is the normalised mean).
        dither (`float`, defaults to 0.0): standard deviation of Gaussian noise added to each frame, in 16-bit units.
        do_ceptral_normalize (`bool`, defaults to `True`): normalise each utterance (the stock key, spelling kept).
        normalize_means (`bool`, defaults to `True`): subtract each bin's mean over the utterance.
        normalize_vars (`bool`, defaults to `True`): divide by each bin's standard deviation over the utterance.
        feature_type (`str`, defaults to `"kaldi_fbank"`): `"kaldi_fbank"` (the above) or `"whisper_log_mel"`,
            the features of `WhisperFeatureExtractor` (periodic Hann window, 400-point power spectrum, Slaney mel
            filters from 0 Hz to Nyquist, log10, the top 8 log10 units of the utterance kept, ``(x + 4) / 4``;
            no CMVN, no dither) without padding to 30 s: ``num_samples // 160`` frames, each equal to the frame
            `WhisperFeatureExtractor` computes for the same audio padded to 30 s (the audio is followed by
            zeros there, so it is here too).
        global_cmvn_mean, global_cmvn_std (`list[float]`, *optional*): one mean and one standard deviation per mel
            bin of the log-mel energies, computed over a training set (`hf_prunable_ctc.data.global_cmvn`). When
            given, every frame is normalised with them (means and/or variances as `normalize_means` and
            `normalize_vars` say) instead of with its utterance's statistics, so a frame's features do not depend
            on the audio after it: what a streamed recogniser needs. Not given (the default): utterance CMVN.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        num_mel_bins: int = 80,
        padding_value: float = 0.0,
        dither: float = 0.0,
        do_ceptral_normalize: bool = True,
        normalize_means: bool = True,
        normalize_vars: bool = True,
        feature_type: str = "kaldi_fbank",
        global_cmvn_mean: list[float] | None = None,
        global_cmvn_std: list[float] | None = None,
        **kwargs,  # the base class's own keys (padding_side, return_attention_mask, ...) as saved in the config
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.num_mel_bins = num_mel_bins
        self.dither = dither
        self.do_ceptral_normalize = do_ceptral_normalize
        self.normalize_means = normalize_means
        self.normalize_vars = normalize_vars
        self.return_attention_mask = True
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}")
        self.feature_type = feature_type
        self.global_cmvn_mean, self.global_cmvn_std = _checked_cmvn(global_cmvn_mean, global_cmvn_std, num_mel_bins,
                                                                    feature_type)
        if feature_type == "whisper_log_mel":
            self.whisper_mel_filters = torch.from_numpy(mel_filter_bank(
                num_frequency_bins=WHISPER_FFT_LENGTH // 2 + 1, num_mel_filters=num_mel_bins, min_frequency=0.0,
                max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
            )).to(torch.float32)  # (201, num_mel_bins)
            self.whisper_window = torch.hann_window(WHISPER_FFT_LENGTH, periodic=True)
        # `mel_filters` and `window` are the names `FeatureExtractionMixin.to_dict` leaves out of the saved config.
        # The filters carry Kaldi's 16-bit amplitude scale (KALDI_SCALE**2 on power, a power of two, so exactly the
        # same energies as scaling the samples) to save a pass over the waveform.
        self.mel_filters = KALDI_SCALE**2 * torch.from_numpy(
            mel_filter_bank(
                num_frequency_bins=FFT_LENGTH // 2 + 1,
                num_mel_filters=num_mel_bins,
                min_frequency=20,
                max_frequency=sampling_rate // 2,
                sampling_rate=sampling_rate,
                norm=None,
                mel_scale="kaldi",
                triangularize_in_mel_space=True,
            )
        ).to(torch.float32)  # (FFT_LENGTH // 2 + 1, num_mel_bins)
        self.window = torch.from_numpy(window_function(WIN_LENGTH, "povey", periodic=False)).to(torch.float32)
        self._mel_blocks = _mel_blocks(self.mel_filters, MEL_BLOCK)

    def to_dict(self) -> dict:
        output = super().to_dict()
        for derived in ("_mel_blocks", "whisper_mel_filters", "whisper_window"):
            output.pop(derived, None)
        if output.get("feature_type") == "kaldi_fbank":
            # The default is left out, so a Kaldi-fbank folder keeps exactly the stock class's keys.
            output.pop("feature_type")  # derived from mel_filters, which the stock to_dict already leaves out
        for field in ("global_cmvn_mean", "global_cmvn_std"):
            if output.get(field) is None:
                output.pop(field, None)  # utterance CMVN: the stock class's keys only
        return output

    def num_frames(self, num_samples: int) -> int:
        """Frames for `num_samples` samples: Kaldi fbank gives 0 below one window, else ``1 + (num_samples - 400)
        // 160``; Whisper's log-mel gives ``num_samples // 160``."""
        if self.feature_type == "whisper_log_mel":
            return num_samples // HOP_LENGTH
        return 0 if num_samples < WIN_LENGTH else 1 + (num_samples - WIN_LENGTH) // HOP_LENGTH

    def whisper_log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Whisper's log-mel features of one utterance, ``(num_samples // 160, num_mel_bins)`` float32."""
        waveform = waveform.to(torch.float32)
        num_frames = waveform.shape[0] // HOP_LENGTH
        if num_frames == 0:
            return waveform.new_zeros((0, self.num_mel_bins))
        half = WHISPER_FFT_LENGTH // 2
        # Whisper's audio is followed by its 30 s padding (zeros), which `torch.stft(center=True)` then reflects
        # in front: samples 1..200 of the audio with zeros after it.
        tail = waveform.new_zeros(half)
        front = torch.cat((waveform[1:half + 1], tail))[:half].flip(0)
        padded = torch.cat((front, waveform, tail))
        frames = padded.unfold(0, WHISPER_FFT_LENGTH, HOP_LENGTH)[:num_frames] * self.whisper_window
        power = torch.fft.rfft(frames).abs().square()  # (frames, 201)
        log_mel = (power @ self.whisper_mel_filters).clamp_(min=WHISPER_LOG_FLOOR).log10_()
        log_mel = torch.maximum(log_mel, log_mel.max() - WHISPER_DYNAMIC_RANGE)
        return (log_mel + 4.0) / 4.0

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel energies of one utterance: `waveform` ``(num_samples,)`` float in [-1, 1] ->
        ``(num_frames(num_samples), num_mel_bins)`` float32, not normalised."""
        waveform = waveform.to(torch.float32)
        if waveform.shape[0] < WIN_LENGTH:
            return waveform.new_zeros((0, self.num_mel_bins))
        frames = waveform.unfold(0, WIN_LENGTH, HOP_LENGTH)  # (frames, WIN_LENGTH), a view
        if self.dither != 0.0:  # `dither` is in 16-bit units, the samples in [-1, 1]
            frames = frames + (self.dither / KALDI_SCALE) * torch.randn_like(frames)
        # Kaldi's per-frame steps, written into one zero-padded FFT buffer with as few intermediate tensors as
        # possible (allocating them cost as much as the FFT itself): remove the frame's mean m (remove_dc_offset),
        # pre-emphasise (x[0] *= 1 - a, x[n] -= a * x[n-1]), window. Both first steps are linear, so the mean is
        # taken out after pre-emphasis, where it is (1 - a) * m at every sample, with no centred copy of the frames.
        mean = frames.mean(dim=1, keepdim=True)
        padded, spectrum = _workspace(frames.shape[0])
        body = padded[:, :WIN_LENGTH]
        torch.sub(frames[:, 1:], frames[:, :-1], alpha=PREEMPHASIS, out=body[:, 1:])
        torch.mul(frames[:, :1], 1 - PREEMPHASIS, out=body[:, :1])
        body.sub_(mean, alpha=1 - PREEMPHASIS).mul_(self.window)
        # The power spectrum re^2 + im^2 is summed by the filterbank product itself: the spectrum is squared in place
        # as interleaved (re, im) pairs and each filter row is repeated for both (see `_mel_blocks`), which saves
        # two passes and a buffer.
        spectrum = torch.fft.rfft(padded, out=spectrum)
        squares = torch.view_as_real(spectrum).flatten(1).square_()  # (frames, 2 * (FFT_LENGTH // 2 + 1))
        mel = squares.new_empty((squares.shape[0], self.num_mel_bins))
        for start, stop, low, high, block in self._mel_blocks:
            torch.matmul(squares[:, low:high], block, out=mel[:, start:stop])
        return mel.clamp_(min=MEL_FLOOR).log_()

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """CMVN of ``(frames, bins)`` log-mel energies: with the global statistics when the extractor has them (each
        frame on its own, so streamed frames normalise as the whole utterance's do), else over the utterance."""
        if self.global_cmvn_mean is None:
            return self.normalize_utterance(features)
        if not self.do_ceptral_normalize:
            return features
        if self.normalize_means:
            features = features - torch.tensor(self.global_cmvn_mean, dtype=features.dtype)
        if self.normalize_vars:
            features = features / torch.tensor(self.global_cmvn_std, dtype=features.dtype)
        return features

    def normalize_utterance(self, features: torch.Tensor) -> torch.Tensor:
        """Utterance CMVN of ``(frames, bins)`` features over all their frames, as the stock `utterance_cmvn`;
        a bin with zero variance (silence, a single frame) becomes 0 instead of NaN."""
        if features.shape[0] == 0 or not self.do_ceptral_normalize:
            return features
        if self.normalize_means:
            features = features - features.mean(dim=0)
        if self.normalize_vars:
            # Population std, as numpy's default in the stock class, from means over frames: `Tensor.std(dim=0)`
            # takes 0.6 ms for 10 s of features on one thread, two `mean(dim=0)` passes a tenth of that.
            std = features.square().mean(dim=0).sqrt() if self.normalize_means else features.std(dim=0, unbiased=False)
            # A constant bin leaves float32 rounding residue (std ~1e-7) that dividing would blow up to +-1 noise;
            # a real log-mel bin varies by far more than CONSTANT_BIN_STD over an utterance.
            constant = std < CONSTANT_BIN_STD
            features = torch.where(constant, torch.zeros_like(features), features / torch.where(constant, 1.0, std))
        return features

    def __call__(
        self,
        raw_speech,
        padding: bool | str | PaddingStrategy = False,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | TensorType | None = None,
        sampling_rate: int | None = None,
        return_attention_mask: bool | None = None,
    ) -> BatchFeature:
        """Features of one utterance or a batch, with the stock `Speech2TextFeatureExtractor.__call__` interface.

        Args:
            raw_speech: one utterance (a 1-D numpy array, torch tensor or list of numbers) or a batch (a list of
                those, or a 2-D array ``(batch, samples)``). Float audio should be in [-1, 1]; integer PCM is
                scaled. Inside a list, a 2-D item is one multi-channel utterance ``(channels, samples)``, averaged.
            padding: ``False``/``"do_not_pad"`` (default), ``True``/``"longest"`` or ``"max_length"``.
            max_length, truncation, pad_to_multiple_of: as in `SequenceFeatureExtractor.pad`, in frames.
            return_tensors: ``None`` (lists of numpy arrays), ``"np"`` or ``"pt"``.
            sampling_rate: rate of `raw_speech` in Hz; another rate than the extractor's is resampled with soxr.
            return_attention_mask: defaults to True.

        Returns:
            `BatchFeature` with ``input_features`` ``(batch, frames, num_mel_bins)`` float32 and ``attention_mask``
            ``(batch, frames)`` int32 (1 on real frames).

        Raises:
            ValueError: NaN/Inf samples, 3-D input, or a sampling rate that cannot be resampled (soxr missing).
            TypeError: samples of a dtype that is not audio (complex, bool, strings).
        """
        utterances = self._to_utterances(raw_speech)
        if sampling_rate is None:
            warnings.warn(
                f"pass `sampling_rate` to {type(self).__name__}() (the model expects {self.sampling_rate} Hz): "
                "audio at another rate would be transcribed silently wrong",
                stacklevel=2,
            )
        elif int(sampling_rate) != self.sampling_rate:
            utterances = [self._resample(u, int(sampling_rate)) for u in utterances]

        features = []
        for utterance in utterances:
            whisper = self.feature_type == "whisper_log_mel"
            utterance_features = self.whisper_log_mel(utterance) if whisper else self.fbank(utterance)
            if truncation and max_length is not None:
                utterance_features = utterance_features[:max_length]
            if not whisper:
                utterance_features = self.normalize(utterance_features)  # over the frames kept
            features.append(utterance_features.to(torch.float32))
        return self._pad_features(features, padding, max_length, pad_to_multiple_of, return_tensors,
                                  return_attention_mask)

    def _to_utterances(self, raw_speech) -> list[torch.Tensor]:
        """Split the stock input forms into a list of mono float tensors ``(num_samples,)`` in [-1, 1]."""
        if isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0 and _is_array(raw_speech[0]):
            return [self._to_mono(_as_tensor(item), batch_item=True) for item in raw_speech]
        speech = _as_tensor(raw_speech)
        if speech.dim() == 2:  # the stock meaning of a 2-D array: a batch of equal-length utterances
            return [self._to_mono(row, batch_item=False) for row in speech]
        return [self._to_mono(speech, batch_item=False)]

    def _to_mono(self, samples: torch.Tensor, batch_item: bool) -> torch.Tensor:
        if samples.dim() == 2 and batch_item:
            # (channels, samples), the ASR pipeline's and torchcodec's layout; soundfile's (samples, channels) must
            # be transposed by the caller, as the shape alone cannot tell 2 channels from 2 samples.
            samples = _scale_pcm(samples).mean(dim=0)
        elif samples.dim() > 1:
            raise ValueError(
                f"audio must be 1-D (samples,), a batch (batch, samples) or a list of (channels, samples) arrays; "
                f"got shape {tuple(samples.shape)}"
            )
        samples = _scale_pcm(samples)
        # A sum is NaN or Inf exactly when a sample is (float32 cannot overflow on audio in [-1, 1]), and costs a
        # thirtieth of `isfinite(...).all()`, which allocates a mask as large as the audio.
        if not math.isfinite(float(samples.sum())):
            bad = int((~torch.isfinite(samples)).sum())
            raise ValueError(
                f"audio contains {bad} NaN or Inf samples: clean or drop the recording (the model would return a "
                "meaningless transcript)"
            )
        return samples

    def _resample(self, samples: torch.Tensor, orig_sampling_rate: int) -> torch.Tensor:
        try:
            import soxr  # optional: remote code may only rely on torch and transformers
        except ImportError:
            raise ValueError(
                f"this model expects audio at {self.sampling_rate} Hz, got {orig_sampling_rate} Hz: resample it "
                f"first, or `pip install soxr` to let the feature extractor do it"
            ) from None
        resampled = soxr.resample(samples.numpy(), orig_sampling_rate, self.sampling_rate, quality="HQ")
        return torch.from_numpy(resampled).to(torch.float32)

    def _pad_features(self, features, padding, max_length, pad_to_multiple_of, return_tensors, return_attention_mask):
        strategy = self._get_padding_strategies(padding, max_length=max_length)
        lengths = [f.shape[0] for f in features]
        if strategy is PaddingStrategy.DO_NOT_PAD:
            target = None
        else:
            target = max(lengths) if strategy is PaddingStrategy.LONGEST else max_length
            if pad_to_multiple_of is not None and target % pad_to_multiple_of:
                target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask

        if target is not None or len(set(lengths)) == 1:
            frames = max(lengths) if target is None else max(target, max(lengths))
            batch = features[0].new_full((len(features), frames, self.num_mel_bins), float(self.padding_value))
            mask = torch.zeros((len(features), frames), dtype=torch.int32)
            for i, f in enumerate(features):
                batch[i, : f.shape[0]] = f
                mask[i, : f.shape[0]] = 1
            if return_tensors in ("pt", TensorType.PYTORCH):
                data = {"input_features": batch}
                if return_attention_mask:
                    data["attention_mask"] = mask
                return BatchFeature(data)
            input_features, attention_mask = list(batch.numpy()), list(mask.numpy())
        else:
            input_features = [f.numpy() for f in features]
            attention_mask = [torch.ones(n, dtype=torch.int32).numpy() for n in lengths]
        data = {"input_features": input_features}
        if return_attention_mask:
            data["attention_mask"] = attention_mask
        return BatchFeature(data, tensor_type=return_tensors)


def _checked_cmvn(mean, std, num_mel_bins: int, feature_type: str):
    """The global CMVN statistics as lists of floats, or `(None, None)`; `ValueError` naming the field otherwise."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise ValueError("global_cmvn_mean and global_cmvn_std: give both or neither")
    if feature_type != "kaldi_fbank":
        raise ValueError(f"global_cmvn_mean/std: only for feature_type='kaldi_fbank' (got {feature_type!r})")
    checked = []
    for name, values in (("global_cmvn_mean", mean), ("global_cmvn_std", std)):
        values = [float(v) for v in values]
        if len(values) != num_mel_bins or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name}: must be {num_mel_bins} finite numbers, one per mel bin (got {len(values)})")
        checked.append(values)
    if min(checked[1]) <= 0:
        raise ValueError("global_cmvn_std: must be > 0 in every bin")
    return checked[0], checked[1]


def _workspace(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-padded frame buffer ``(num_frames, FFT_LENGTH)`` (columns from WIN_LENGTH on stay 0) and the
    spectrum buffer ``(num_frames, FFT_LENGTH // 2 + 1)`` complex for one utterance.

    Why kept: fresh 2 MB buffers for every 10 s were often new pages from the OS once a model had run in between
    (glibc hands large freed blocks back), ~1,000 page faults per call that took the features of 10 s from 2.5 to
    5-7 ms on one thread. Up to WORKSPACE_MAX_FRAMES (12 MB per thread that extracts features) they are kept per
    thread and reused, so concurrent threads never share one; longer inputs get fresh buffers. Nothing returned
    aliases them."""
    if num_frames > WORKSPACE_MAX_FRAMES:
        return _fft_buffers(num_frames)
    buffers = getattr(_WORKSPACES, "buffers", None)
    if buffers is None or buffers[0].shape[0] < num_frames:
        # Normal tensors even when first made under `torch.inference_mode()`: an inference tensor could not be
        # written to by a later call outside it.
        with torch.inference_mode(False):
            buffers = _WORKSPACES.buffers = _fft_buffers(num_frames)
    return buffers[0][:num_frames], buffers[1][:num_frames]


def _fft_buffers(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.zeros((num_frames, FFT_LENGTH)),
            torch.empty((num_frames, FFT_LENGTH // 2 + 1), dtype=torch.complex64))


def _mel_blocks(filters: torch.Tensor, size: int) -> list:
    """The filterbank product split into blocks of `size` filters, each over only the FFT bins its filters touch, as
    ``(first filter, last filter + 1, first column, last column + 1, block)``, for spectra laid out as interleaved
    squared (re, im) pairs: each bin's filter row appears twice, so the product also sums re^2 + im^2. The triangles
    cover 501 of the 20,560 entries of the dense (257, 80) matrix; blocks of 16 filters halve the product's time
    (0.62 -> 0.29 ms for 10 s on one thread) for the same sums of the same non-zero terms."""
    blocks = []
    for start in range(0, filters.shape[1], size):
        stop = min(start + size, filters.shape[1])
        rows = (filters[:, start:stop] != 0).any(dim=1).nonzero().flatten()
        low, high = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 1)
        block = filters[low:high, start:stop].repeat_interleave(2, dim=0).contiguous()
        blocks.append((start, stop, 2 * low, 2 * high, block))
    return blocks


def _is_array(item) -> bool:
    return hasattr(item, "shape") or isinstance(item, (list, tuple))


def _as_tensor(samples) -> torch.Tensor:
    """A torch view of numpy arrays/tensors/lists, keeping integer dtypes so PCM can be scaled."""
    if isinstance(samples, torch.Tensor):
        return samples.detach().cpu()
    if hasattr(samples, "dtype") and getattr(samples.dtype, "kind", None) in ("O", "U", "S", "b"):
        raise TypeError(f"audio samples must be numbers, got an array of dtype {samples.dtype}")
    tensor = torch.as_tensor(samples)
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"audio samples must be real numbers, got dtype {tensor.dtype}")
    return tensor


def _scale_pcm(samples: torch.Tensor) -> torch.Tensor:
    """Integer PCM -> float in [-1, 1) (int16 / 2**15, int32 / 2**31, uint8 offset binary); float -> float32."""
    if samples.dtype == torch.uint8:  # 8-bit WAV is unsigned, centred on 128
        return (samples.to(torch.float32) - 128.0) / 128.0
    if not samples.dtype.is_floating_point:
        return samples.to(torch.float64).div(float(torch.iinfo(samples.dtype).max) + 1.0).to(torch.float32)
    return samples.to(torch.float32)


__all__ = ["PrunableCTCFeatureExtractor"]

# save_pretrained then writes `auto_map: {"AutoFeatureExtractor": ...}` and copies this file next to the weights.
PrunableCTCFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
