"""make_feature_extractor (PrunableCTCFeatureExtractor), the stock Speech2TextFeatureExtractor without torchaudio,
the frame-count formula, and Auto* round trips."""

import importlib.util

import numpy as np
import pytest
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, Speech2TextFeatureExtractor

from hf_prunable_ctc import PrunableCTCFeatureExtractor
from hf_prunable_ctc.data.features import (
    HOP_LENGTH,
    WIN_LENGTH,
    extract_features,
    make_feature_extractor,
    num_feature_frames,
    save_processor,
)
from hf_prunable_ctc.data.vocabulary import make_tokenizer


def _noise(num_samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def test_extractor_settings():
    extractor = make_feature_extractor()
    assert isinstance(extractor, PrunableCTCFeatureExtractor)
    assert extractor.feature_size == 80 and extractor.num_mel_bins == 80 and extractor.sampling_rate == 16000
    assert extractor.return_attention_mask and extractor.padding_value == 0.0
    assert HOP_LENGTH == 160 and WIN_LENGTH == 400


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the raw extractor on 1-frame audio
def test_runs_without_torchaudio_and_matches_frame_formula():
    # The numpy fallback is what runs here; if torchaudio ever gets installed this test still checks the formula.
    if importlib.util.find_spec("torchaudio") is None:
        from transformers.utils import is_speech_available

        assert not is_speech_available()
    extractor = make_feature_extractor()
    for num_samples in (400, 559, 560, 719, 720, 16000, 16000 + 159):
        raw = extractor(_noise(num_samples), sampling_rate=16000)["input_features"][0]
        assert np.asarray(raw).shape == (num_feature_frames(num_samples), 80)
    assert num_feature_frames(16000) == 98 and num_feature_frames(399) == 0 and num_feature_frames(560) == 2
    assert num_feature_frames(559) == 1 and num_feature_frames(720) == 3
    for num_samples in (560, 16000 + 159):
        features = extract_features(extractor, _noise(num_samples))
        assert features.shape == (num_feature_frames(num_samples), 80)
        assert features.dtype == np.float32 and np.isfinite(features).all()
    # Utterance normalisation: each bin has zero mean and unit variance.
    features = extract_features(extractor, _noise(16000))
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0), 1.0, atol=1e-3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_extract_features_rejects_what_would_be_nan():
    extractor = Speech2TextFeatureExtractor()  # published checkpoints still load the stock class
    # The stock extractor returns NaN for one frame (zero variance) and for digital silence.
    assert not np.isfinite(extractor(_noise(559), sampling_rate=16000)["input_features"][0]).all()
    assert not np.isfinite(extractor(np.zeros(16000, np.float32), sampling_rate=16000)["input_features"][0]).all()
    for audio in (_noise(399), _noise(559), np.zeros(16000, np.float32)):
        with pytest.raises(ValueError):
            extract_features(extractor, audio)
    # Silence inside speech is fine: variance comes from the rest of the utterance.
    padded = np.concatenate([np.zeros(8000, np.float32), _noise(8000)])
    assert np.isfinite(extract_features(extractor, padded)).all()


def test_batch_padding_and_attention_mask():
    extractor = make_feature_extractor(num_mel_bins=40)
    batch = extractor([_noise(16000), _noise(8000, seed=1)], sampling_rate=16000, padding=True, return_tensors="np")
    assert batch["input_features"].shape == (2, 98, 40)
    assert batch["attention_mask"].sum(axis=1).tolist() == [98, num_feature_frames(8000)]
    assert (batch["input_features"][1, num_feature_frames(8000):] == 0.0).all()
    # Padding does not change the real frames (normalisation uses the unpadded part only).
    alone = extract_features(extractor, _noise(8000, seed=1))
    np.testing.assert_allclose(batch["input_features"][1, : alone.shape[0]], alone, atol=1e-5)


def test_auto_classes_load_saved_extractor_tokenizer_and_processor(tmp_path):
    extractor, tokenizer = make_feature_extractor(), make_tokenizer()
    save_processor(extractor, tokenizer, tmp_path)
    assert {"preprocessor_config.json", "processor_config.json", "vocab.json", "tokenizer_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded_extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded_extractor) is PrunableCTCFeatureExtractor
    assert loaded_extractor.to_dict() == extractor.to_dict()
    assert type(AutoTokenizer.from_pretrained(tmp_path)).__name__ == "Wav2Vec2CTCTokenizer"

    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor).__name__ == "Wav2Vec2Processor"
    assert type(processor.feature_extractor) is PrunableCTCFeatureExtractor
    out = processor(audio=_noise(16000), sampling_rate=16000, text="HELLO", return_tensors="np")
    assert out["input_features"].shape == (1, 98, 80)
    assert out["labels"].tolist() == [tokenizer("HELLO").input_ids]


def test_extractor_alone_round_trips(tmp_path):
    extractor = make_feature_extractor(num_mel_bins=64)
    extractor.save_pretrained(tmp_path)
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is PrunableCTCFeatureExtractor and loaded.num_mel_bins == 64
    audio = _noise(4000)
    np.testing.assert_array_equal(extract_features(loaded, audio), extract_features(extractor, audio))


def test_stock_folder_still_loads_the_stock_class(tmp_path):
    """Folders saved before the torch extractor (published checkpoints) keep their class and features."""
    Speech2TextFeatureExtractor().save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is Speech2TextFeatureExtractor
