"""Global CMVN statistics: one mean and standard deviation per mel bin over a training set's frames.

A streamed recogniser cannot normalise a frame by its utterance's statistics (they depend on audio not heard yet);
it normalises by statistics of the training data instead, stored in the feature extractor's
``preprocessor_config.json`` (`PrunableCTCFeatureExtractor.global_cmvn_mean` / `global_cmvn_std`). A model trained
with utterance CMVN expects utterance-normalised features: train (or fine-tune) with the global statistics before
streaming it.

    python -m hf_prunable_ctc.data.global_cmvn data/demo/train --output_dir extractor-with-cmvn
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor
from ..hub.output_folder import write_output_folder
from .audio import load_audio
from .features import make_feature_extractor

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")


def compute_global_cmvn(feature_extractor: PrunableCTCFeatureExtractor,
                        utterances: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-bin mean and population standard deviation of the (not normalised) log-mel energies of every frame of
    `utterances` (1-D float audio at the extractor's rate), accumulated in float64.

    Returns `(mean, std)`, lists of `num_mel_bins` floats; a bin whose std is below 1e-5 (constant energy) gets 1,
    so normalising only centres it. Raises `ValueError` when the audio gives no frames.
    """
    total = squares = None
    frames = 0
    for audio in utterances:
        energies = feature_extractor.fbank(torch.as_tensor(np.asarray(audio, dtype=np.float32))).double()
        if total is None:
            total, squares = energies.sum(dim=0), energies.square().sum(dim=0)
        else:
            total += energies.sum(dim=0)
            squares += energies.square().sum(dim=0)
        frames += energies.shape[0]
    if not frames:
        raise ValueError("no feature frames: the utterances are all shorter than one 25 ms window")
    mean = total / frames
    std = (squares / frames - mean.square()).clamp(min=0.0).sqrt()
    std = torch.where(std < 1e-5, torch.ones_like(std), std)
    return mean.tolist(), std.tolist()


def with_global_cmvn(feature_extractor: PrunableCTCFeatureExtractor, mean: list[float],
                     std: list[float]) -> PrunableCTCFeatureExtractor:
    """A copy of `feature_extractor` that normalises with these statistics (checked by the extractor)."""
    settings = {**feature_extractor.to_dict(), "global_cmvn_mean": mean, "global_cmvn_std": std}
    return PrunableCTCFeatureExtractor(**{k: v for k, v in settings.items() if k != "feature_extractor_type"})


def audio_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The audio files named, and those under named folders (recursively), sorted."""
    found = []
    for path in map(Path, paths):
        found += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if path.is_dir() else [path]
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", help="audio files or folders of them (training data)")
    parser.add_argument("--output_dir", required=True, help="new folder for the extractor's preprocessor_config.json")
    parser.add_argument("--feature_extractor", help="folder of the extractor to start from (default: the package's "
                                                    "80-bin Kaldi fbank)")
    args = parser.parse_args(argv)
    extractor = (PrunableCTCFeatureExtractor.from_pretrained(args.feature_extractor) if args.feature_extractor
                 else make_feature_extractor())
    files = audio_files(args.audio)
    mean, std = compute_global_cmvn(extractor, (load_audio(f, extractor.sampling_rate) for f in files))
    written = write_output_folder(args.output_dir, with_global_cmvn(extractor, mean, std).save_pretrained,
                                  sources=[str(f) for f in files])
    print(f"global CMVN over {len(files)} files -> {args.output_dir}: {', '.join(written)}")


if __name__ == "__main__":
    main()
