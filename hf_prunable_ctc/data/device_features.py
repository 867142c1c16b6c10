"""Log-mel features of a padded waveform batch, computed on the batch's device (the GPU that trains the model).

`PrunableCTCFeatureExtractor` computes one utterance at a time on CPU, tuned for that (reused FFT buffers, a banded
filterbank product): in dataloader workers it delivers about 170 audio seconds per second per core, while a GPU
trains the base model on some 7,000. `WaveformFeatures` computes the same Kaldi fbank and utterance CMVN for a
whole batch in a few tensor operations on any device, so the workers only decode, augment and pad waveforms.
It reads the window, the mel filters and every constant from the extractor, and is tested equal to it (float32
rounding, ~1e-5 after CMVN).

Imports only torch and the extractor's file, so a GPU machine without soundfile or datasets can run it.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from ..feature_extraction_prunable_ctc import (CONSTANT_BIN_STD, FFT_LENGTH, HOP_LENGTH, KALDI_SCALE, MEL_FLOOR,
                                                PREEMPHASIS, WIN_LENGTH, PrunableCTCFeatureExtractor)

# The batch keys of waveform batches (`DataCollatorCTCWithPadding(return_waveforms=True)`).
WAVEFORMS_KEY = "waveforms"
WAVEFORM_LENGTHS_KEY = "waveform_lengths"


class WaveformFeatures:
    """The features `extractor` computes, for a padded batch of waveforms on the batch's device.

    Args:
        extractor: a `PrunableCTCFeatureExtractor` with ``feature_type="kaldi_fbank"`` (its dither, padding value
            and normalisation settings apply).
    """

    def __init__(self, extractor: PrunableCTCFeatureExtractor):
        if not isinstance(extractor, PrunableCTCFeatureExtractor) or extractor.feature_type != "kaldi_fbank":
            kind = getattr(extractor, "feature_type", type(extractor).__name__)
            raise ValueError(f"features on the model's device are Kaldi fbank of PrunableCTCFeatureExtractor, not "
                             f"{kind}: compute this model's features in the dataloader (feature_device 'loader')")
        self.extractor = extractor
        self._constants: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """(batch,) frames for (batch,) sample counts, as `PrunableCTCFeatureExtractor.num_frames`."""
        frames = 1 + torch.div(lengths - WIN_LENGTH, HOP_LENGTH, rounding_mode="floor")
        return torch.where(lengths < WIN_LENGTH, torch.zeros_like(frames), frames)

    def __call__(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """`waveforms` ``(batch, samples)`` float in [-1, 1], zero after each utterance's ``lengths`` ``(batch,)``
        samples -> ``input_features`` ``(batch, num_frames(samples), num_mel_bins)`` float32 (padding frames hold
        the extractor's padding value) and ``attention_mask`` ``(batch, frames)`` int64, on the waveforms' device.
        Float32 under autocast too: the log and the normalisation need its range and precision."""
        device = waveforms.device
        with torch.autocast(device_type=device.type, enabled=False):
            return self._features(waveforms.to(torch.float32), lengths.to(device=device, dtype=torch.long))

    def batch_inputs(self, batch: dict) -> dict:
        """`batch` with its waveforms and their lengths replaced by ``input_features`` and ``attention_mask``."""
        batch = dict(batch)
        batch["input_features"], batch["attention_mask"] = self(batch.pop(WAVEFORMS_KEY),
                                                                batch.pop(WAVEFORM_LENGTHS_KEY))
        return batch

    def _features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        extractor = self.extractor
        window, mel_filters = self._device_constants(waveforms.device)
        batch, samples = waveforms.shape
        if samples < WIN_LENGTH:
            waveforms = torch.nn.functional.pad(waveforms, (0, WIN_LENGTH - samples))  # no frame is valid then
        frames = waveforms.unfold(1, WIN_LENGTH, HOP_LENGTH)  # (batch, frames, WIN_LENGTH)
        if samples < WIN_LENGTH:
            frames = frames[:, :0]
        if extractor.dither != 0.0:  # in 16-bit units, the samples in [-1, 1]
            frames = frames + (extractor.dither / KALDI_SCALE) * torch.randn_like(frames)
        # Kaldi's per-frame steps (DC removal, pre-emphasis, window, zero-padded FFT) in the extractor's float32
        # order: the mean comes out after pre-emphasis, as (1 - a) * mean. Quiet low-frequency bins are a
        # cancellation of nearly equal terms, so the other order moves their log energies by up to 0.04.
        mean = frames.mean(dim=-1, keepdim=True)
        emphasised = torch.cat((frames[..., :1] * (1 - PREEMPHASIS),
                                torch.sub(frames[..., 1:], frames[..., :-1], alpha=PREEMPHASIS)), dim=-1)
        emphasised = emphasised.sub_(mean, alpha=1 - PREEMPHASIS).mul_(window)
        spectrum = torch.view_as_real(torch.fft.rfft(emphasised, n=FFT_LENGTH))
        power = spectrum.square().sum(dim=-1)  # (batch, frames, FFT_LENGTH // 2 + 1)
        features = (power @ mel_filters).clamp_(min=MEL_FLOOR).log_()
        num_frames = self.num_frames(lengths)
        valid = torch.arange(features.shape[1], device=features.device)[None, :] < num_frames[:, None]
        if extractor.do_ceptral_normalize:
            features = self._normalize(features, valid[..., None], num_frames)
        features = features.masked_fill(~valid[..., None], float(extractor.padding_value))
        return features, valid.long()

    def _normalize(self, features: torch.Tensor, valid: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        """Utterance CMVN over each utterance's valid frames, as `PrunableCTCFeatureExtractor.normalize_utterance`
        (a bin whose std is below CONSTANT_BIN_STD becomes 0)."""
        extractor = self.extractor
        count = num_frames.clamp(min=1).to(features.dtype)[:, None, None]
        mean = features.masked_fill(~valid, 0.0).sum(dim=1, keepdim=True) / count
        centred = (features - mean).masked_fill(~valid, 0.0)
        if extractor.normalize_means:
            features = centred
        if extractor.normalize_vars:
            std = (centred.square().sum(dim=1, keepdim=True) / count).sqrt()
            constant = std < CONSTANT_BIN_STD
            features = torch.where(constant, torch.zeros_like(features), features / torch.where(constant, 1.0, std))
        return features

    def _device_constants(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = (self.extractor.window.to(device), self.extractor.mel_filters.to(device))
        return self._constants[device]
