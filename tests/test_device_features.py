"""`WaveformFeatures` (features of padded waveform batches on any device) equals the collator's CPU path: the same
features, masks and lengths on the bundled utterances, under autocast too, for every normalisation setting."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hf_prunable_ctc.data.collator import DataCollatorCTCWithPadding
from hf_prunable_ctc.data.device_features import WAVEFORM_LENGTHS_KEY, WAVEFORMS_KEY, WaveformFeatures
from hf_prunable_ctc.data.features import make_feature_extractor, num_feature_frames
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor

DATA = Path(__file__).resolve().parents[1] / "data"
# The bound the CPU path is held to; measured here: ~2e-6 on CPU.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def bundled_waveforms():
    """Every bundled test utterance (the reference subset's FLAC and the demo corpus's Opus), 1 to 10 s."""
    files = sorted((DATA / "reference_test_subset" / "test").glob("*.flac")) + sorted(
        (DATA / "demo" / "test").glob("*.ogg"))
    assert len(files) >= 100
    return [sf.read(path, dtype="float32")[0] for path in files]


def both_paths(extractor, waveforms, pad_to_multiple_of=None):
    """(the collator's CPU batch, the waveform batch, the features and mask `WaveformFeatures` computes from it)."""
    examples = [{"audio": samples, "labels": [5, 6]} for samples in waveforms]
    settings = dict(feature_extractor=extractor, tokenizer=make_tokenizer(), pad_to_multiple_of=pad_to_multiple_of)
    cpu = DataCollatorCTCWithPadding(**settings)(examples)
    waveform_batch = DataCollatorCTCWithPadding(**settings, return_waveforms=True)(examples)
    features, mask = WaveformFeatures(extractor)(waveform_batch[WAVEFORMS_KEY], waveform_batch[WAVEFORM_LENGTHS_KEY])
    return cpu, waveform_batch, features, mask


@pytest.mark.parametrize("pad_to_multiple_of", [None, 4])
def test_features_masks_and_lengths_equal_the_cpu_path_on_the_bundled_utterances(bundled_waveforms,
                                                                                 pad_to_multiple_of):
    extractor = make_feature_extractor()
    worst = 0.0
    for start in range(0, len(bundled_waveforms), 16):  # batches of mixed lengths, padded to the longest
        chunk = bundled_waveforms[start:start + 16]
        cpu, waveform_batch, features, mask = both_paths(extractor, chunk, pad_to_multiple_of)
        assert waveform_batch[WAVEFORM_LENGTHS_KEY].tolist() == [len(w) for w in chunk]
        assert torch.equal(waveform_batch["labels"], cpu["labels"])
        assert features.dtype == torch.float32 and mask.dtype == torch.long
        assert features.shape == cpu["input_features"].shape
        assert torch.equal(mask, cpu["attention_mask"])
        assert mask.sum(-1).tolist() == [num_feature_frames(len(w)) for w in chunk]
        if pad_to_multiple_of:
            assert features.shape[1] % pad_to_multiple_of == 0
        assert bool((features[mask == 0] == 0).all())  # padding frames hold the padding value
        worst = max(worst, float((features - cpu["input_features"]).abs().max()))
    assert worst <= TOLERANCE


def test_features_stay_float32_and_equal_under_bf16_autocast(bundled_waveforms):
    extractor = make_feature_extractor()
    batch = DataCollatorCTCWithPadding(extractor, make_tokenizer(), return_waveforms=True)(
        [{"audio": w} for w in bundled_waveforms[:8]])
    compute = WaveformFeatures(extractor)
    plain, _ = compute(batch[WAVEFORMS_KEY], batch[WAVEFORM_LENGTHS_KEY])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = compute(batch[WAVEFORMS_KEY], batch[WAVEFORM_LENGTHS_KEY])
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, rtol=0, atol=0)


@pytest.mark.parametrize("settings", [dict(normalize_vars=False), dict(normalize_means=False),
                                      dict(do_ceptral_normalize=False), dict(num_mel_bins=16, feature_size=16,
                                                                            padding_value=-1.0)])
def test_every_normalisation_setting_matches_the_extractor(bundled_waveforms, settings):
    extractor = PrunableCTCFeatureExtractor(**{**make_feature_extractor().to_dict(), **settings})
    cpu, _, features, mask = both_paths(extractor, bundled_waveforms[:6])
    assert torch.equal(mask, cpu["attention_mask"])
    # Un-normalised log energies are ~20 in size, so float32 rounding is relative to that.
    torch.testing.assert_close(features, cpu["input_features"], rtol=1e-5, atol=TOLERANCE)


def test_silence_and_a_constant_bin_normalise_to_zero_as_on_cpu():
    """Digital silence beside speech: every bin of the silent utterance is constant, so 0, as the extractor does."""
    rng = np.random.default_rng(0)
    waveforms = [np.zeros(8000, dtype=np.float32), (0.1 * rng.standard_normal(16000)).astype(np.float32)]
    cpu, _, features, mask = both_paths(make_feature_extractor(), waveforms)
    assert bool((features[0] == 0).all())
    torch.testing.assert_close(features, cpu["input_features"], rtol=0, atol=TOLERANCE)
    assert torch.equal(mask, cpu["attention_mask"])


def test_waveform_batches_leave_out_what_the_cpu_path_leaves_out(bundled_waveforms):
    """Too short audio is skipped before either path computes features; cached examples still give features."""
    extractor = make_feature_extractor()
    collate = DataCollatorCTCWithPadding(extractor, make_tokenizer(), return_waveforms=True)
    batch = collate([{"audio": bundled_waveforms[0], "labels": [5]}, {"audio": np.zeros(300, np.float32),
                                                                       "labels": [6]}])
    assert batch[WAVEFORM_LENGTHS_KEY].tolist() == [len(bundled_waveforms[0])]
    assert collate.skipped == {"too short audio": 1}
    cached = collate([{"input_features": np.ones((7, 80), np.float32), "labels": [5]}])
    assert cached["input_features"].shape == (1, 7, 80) and WAVEFORMS_KEY not in cached
    assert collate.for_evaluation().return_waveforms


def test_other_front_ends_are_refused_with_the_alternative():
    from transformers import Speech2TextFeatureExtractor

    whisper = PrunableCTCFeatureExtractor(feature_type="whisper_log_mel")
    for extractor in (whisper, Speech2TextFeatureExtractor()):
        with pytest.raises(ValueError, match="feature_device 'loader'"):
            WaveformFeatures(extractor)
