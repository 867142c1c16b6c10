"""Log-mel features: `PrunableCTCFeatureExtractor`, and saving it with the tokenizer as one processor.

New models get `PrunableCTCFeatureExtractor` (`feature_extraction_prunable_ctc.py`): the features of the stock
`Speech2TextFeatureExtractor` computed in torch (~10x faster without torchaudio; equal within float32 rounding),
saved as remote code for `AutoFeatureExtractor` and registered in-process when this package is imported. Folders
saved with the stock class (published checkpoints) keep loading it, and both classes are interchangeable: same
configuration keys, same features. The stock class computes Kaldi-style fbank: 25 ms Povey window (400 samples at 16 kHz),
10 ms hop (160 samples), 512-point FFT, pre-emphasis 0.97, DC removal, natural-log mel energies, no edge padding
("snip edges"), followed by utterance-level mean/variance normalisation over the unpadded frames. It uses
torchaudio's Kaldi fbank when torchaudio is installed and an equivalent numpy implementation otherwise, so torchaudio
is not needed (this module is tested without it).

Frame count for N samples at 16 kHz: ``0`` if N < 400, else ``1 + (N - 400) // 160`` (one second -> 98 frames);
see `num_feature_frames`. The model's `inputs_to_logits_ratio` is ``HOP_LENGTH`` times its time subsampling.

The normalisation divides by each bin's standard deviation over the utterance, so the stock extractor silently
returns NaN/inf for a single frame or for a bin that is constant (digital silence). `extract_features` checks
for that; data preparation should go through it and skip what it rejects.
"""

from __future__ import annotations

import os

import numpy as np
from transformers import SequenceFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2Processor

from ..feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor

SAMPLING_RATE = 16000
HOP_LENGTH = 160  # samples between frames (10 ms at 16 kHz); hard-coded in Speech2TextFeatureExtractor
WIN_LENGTH = 400  # samples per frame (25 ms at 16 kHz); hard-coded in Speech2TextFeatureExtractor


def make_feature_extractor(num_mel_bins: int = 80, sampling_rate: int = SAMPLING_RATE) -> PrunableCTCFeatureExtractor:
    """Build the log-mel extractor: `num_mel_bins` Kaldi fbank bins, normalised per utterance, attention mask on.

    Call it as ``extractor(audio, sampling_rate=sampling_rate)`` on float audio in [-1, 1]; it returns
    ``input_features`` ``(num_frames, num_mel_bins)`` per utterance and pads with 0 (the normalised mean).
    The 400/160-sample window and hop are fixed in the class, i.e. 25/10 ms only at 16 kHz.
    """
    return PrunableCTCFeatureExtractor(
        feature_size=num_mel_bins,
        num_mel_bins=num_mel_bins,
        sampling_rate=sampling_rate,
        padding_value=0.0,
        do_ceptral_normalize=True,
        normalize_means=True,
        normalize_vars=True,
        return_attention_mask=True,
    )


def num_feature_frames(num_samples: int) -> int:
    """Frames the extractor (either class) yields for `num_samples` samples: 0 below one window, else
    ``1 + (num_samples - WIN_LENGTH) // HOP_LENGTH``."""
    if num_samples < WIN_LENGTH:
        return 0
    return 1 + (num_samples - WIN_LENGTH) // HOP_LENGTH


def extract_features(feature_extractor: SequenceFeatureExtractor, audio: np.ndarray) -> np.ndarray:
    """Features of one utterance: `audio` ``(num_samples,)`` float at the extractor's rate ->
    ``(num_feature_frames(num_samples), feature_size)`` float32, normalised per utterance.

    Raises:
        ValueError: the features would not be finite, which the stock extractor returns silently: audio shorter
            than two frames (560 samples; one frame has zero variance and normalising divides by zero), or audio
            whose spectrum is constant in some mel bin over the whole utterance (e.g. digital silence) with the stock
            class (`PrunableCTCFeatureExtractor` normalises such a bin to 0 instead).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (num_samples,), got {audio.shape}")
    if num_feature_frames(audio.shape[0]) < 2:
        raise ValueError(f"audio of {audio.shape[0]} samples is shorter than two frames ({WIN_LENGTH + HOP_LENGTH})")
    with np.errstate(divide="ignore", invalid="ignore"):  # reported below as one ValueError, not as warnings
        features = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate)["input_features"][0]
    features = np.asarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise ValueError("features are not finite: some mel bin is constant over the utterance (silent audio?)")
    return features


def save_processor(
    feature_extractor: SequenceFeatureExtractor,
    tokenizer: Wav2Vec2CTCTokenizer,
    save_dir: str | os.PathLike,
) -> Wav2Vec2Processor:
    """Save the extractor and tokenizer to `save_dir` so that every Auto class loads them.

    The stock `Wav2Vec2Processor` accepts any feature extractor (transformers 5.x processors check no
    feature-extractor class), and ``AutoProcessor.from_pretrained(save_dir)`` returns it. In 5.x the processor
    writes the extractor's settings only inside ``processor_config.json`` (where 5.x `AutoFeatureExtractor` looks
    first); the extractor is also saved on its own as ``preprocessor_config.json`` (same settings), the file that
    transformers 4.x and other readers of the folder expect. For `PrunableCTCFeatureExtractor` that file carries
    ``auto_map`` and the class's file is copied beside it, so the folder loads with ``trust_remote_code=True`` where
    this package is not installed.

    Writes ``processor_config.json``, ``preprocessor_config.json``, ``tokenizer_config.json``, ``vocab.json``.
    Returns the processor.
    """
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    processor.save_pretrained(str(save_dir))
    feature_extractor.save_pretrained(str(save_dir))
    return processor
