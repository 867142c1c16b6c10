"""Global CMVN: statistics over a training set, stored with the feature extractor, applied frame by frame."""

import json

import numpy as np
import pytest
import soundfile
import torch

from hf_prunable_ctc.data.features import make_feature_extractor
from hf_prunable_ctc.data.global_cmvn import compute_global_cmvn, main, with_global_cmvn
from hf_prunable_ctc.feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor


def utterances(count=3, seed=0):
    rng = np.random.RandomState(seed)
    return [(0.1 * rng.randn(int(16000 * (0.5 + 0.3 * i)))).astype(np.float32) for i in range(count)]


def test_statistics_are_those_of_every_frame():
    extractor = make_feature_extractor(num_mel_bins=20)
    audio = utterances()
    mean, std = compute_global_cmvn(extractor, audio)
    frames = np.concatenate([extractor.fbank(torch.from_numpy(a)).double().numpy() for a in audio])
    assert np.allclose(mean, frames.mean(axis=0), atol=1e-6)
    assert np.allclose(std, frames.std(axis=0), atol=1e-5)


def test_constant_bin_is_only_centred():
    extractor = make_feature_extractor(num_mel_bins=20)
    mean, std = compute_global_cmvn(extractor, [np.zeros(8000, dtype=np.float32)])
    assert std == [1.0] * 20 and np.allclose(mean, np.log(1.192092955078125e-07))


def test_no_frames_is_an_error():
    with pytest.raises(ValueError, match="no feature frames"):
        compute_global_cmvn(make_feature_extractor(), [np.zeros(100, dtype=np.float32)])


def test_features_use_the_global_statistics():
    extractor = make_feature_extractor(num_mel_bins=20)
    mean, std = compute_global_cmvn(extractor, utterances())
    normalised = with_global_cmvn(extractor, mean, std)
    audio = utterances(1, seed=5)[0]
    energies = extractor.fbank(torch.from_numpy(audio))
    features = normalised(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
    assert torch.allclose(features, (energies - torch.tensor(mean)) / torch.tensor(std), atol=1e-5)
    # Each frame on its own: the features of a prefix are the prefix of the features.
    prefix = normalised(audio[:4000], sampling_rate=16000, return_tensors="pt").input_features[0]
    assert torch.allclose(prefix, features[:prefix.shape[0]], atol=1e-5)
    utterance = extractor(audio[:4000], sampling_rate=16000, return_tensors="pt").input_features[0]
    assert not torch.allclose(utterance, prefix, atol=1e-2)


def test_round_trip_through_save_pretrained(tmp_path):
    extractor = make_feature_extractor(num_mel_bins=20)
    mean, std = compute_global_cmvn(extractor, utterances())
    with_global_cmvn(extractor, mean, std).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["global_cmvn_mean"] == pytest.approx(mean) and saved["global_cmvn_std"] == pytest.approx(std)
    loaded = PrunableCTCFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.global_cmvn_mean == pytest.approx(mean) and loaded.global_cmvn_std == pytest.approx(std)
    audio = utterances(1, seed=7)[0]
    assert torch.equal(loaded(audio, sampling_rate=16000, return_tensors="pt").input_features,
                       with_global_cmvn(extractor, mean, std)(audio, sampling_rate=16000,
                                                              return_tensors="pt").input_features)


def test_utterance_cmvn_extractor_keeps_the_stock_keys(tmp_path):
    make_feature_extractor().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "global_cmvn_mean" not in saved and "global_cmvn_std" not in saved
    assert PrunableCTCFeatureExtractor.from_pretrained(tmp_path).global_cmvn_mean is None


@pytest.mark.parametrize("settings, message", [
    (dict(global_cmvn_mean=[0.0] * 80), "give both or neither"),
    (dict(global_cmvn_mean=[0.0] * 79, global_cmvn_std=[1.0] * 80), "global_cmvn_mean: must be 80 finite"),
    (dict(global_cmvn_mean=[0.0] * 80, global_cmvn_std=[1.0] * 79 + [float("nan")]), "global_cmvn_std: must be"),
    (dict(global_cmvn_mean=[0.0] * 80, global_cmvn_std=[1.0] * 79 + [0.0]), "must be > 0"),
    (dict(global_cmvn_mean=[0.0] * 80, global_cmvn_std=[1.0] * 80, feature_type="whisper_log_mel"),
     "only for feature_type='kaldi_fbank'"),
])
def test_bad_statistics_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        PrunableCTCFeatureExtractor(**settings)


def test_command_line(tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    audio = utterances()
    for i, samples in enumerate(audio):
        soundfile.write(audio_dir / f"{i}.wav", samples, 16000, subtype="FLOAT")
    main([str(audio_dir), "--output_dir", str(tmp_path / "extractor")])
    loaded = PrunableCTCFeatureExtractor.from_pretrained(tmp_path / "extractor")
    mean, std = compute_global_cmvn(make_feature_extractor(), audio)
    assert loaded.global_cmvn_mean == pytest.approx(mean, abs=1e-5)
    assert loaded.global_cmvn_std == pytest.approx(std, abs=1e-5)
