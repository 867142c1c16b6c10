"""PrunableCTCFeatureExtractor: same features as the stock Speech2TextFeatureExtractor, odd audio answered, Auto
classes and remote code, and the ASR pipeline fed odd audio."""

import importlib.util
import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, Speech2TextFeatureExtractor, pipeline

from conftest import tiny_model
from hf_prunable_ctc import PrunableCTCFeatureExtractor
from hf_prunable_ctc.data.features import make_feature_extractor, num_feature_frames, save_processor
from hf_prunable_ctc.data.vocabulary import make_tokenizer


def _noise(num_samples: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Tones with a changing pitch plus noise: a spectrum that moves, as speech does."""
    t = np.arange(int(16000 * seconds)) / 16000
    pitch = 150 + 100 * np.sin(2 * np.pi * 0.7 * t)
    tone = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) + 0.1 * np.sin(2 * np.pi * 1200 * t)
    return (tone + _noise(t.size, seed, 0.02)).astype(np.float32)


@pytest.fixture(scope="module")
def extractors():
    return Speech2TextFeatureExtractor(), PrunableCTCFeatureExtractor()


def _features(extractor, audio, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(extractor(audio, sampling_rate=16000, **kwargs)["input_features"][0])


@pytest.mark.parametrize("num_samples", [560, 4000, 16000 + 159, 48000])
def test_features_match_the_stock_extractor(extractors, num_samples):
    stock, fast = extractors
    audio = _speechlike(num_samples / 16000, seed=num_samples)
    expected, got = _features(stock, audio), _features(fast, audio)
    assert got.shape == expected.shape == (num_feature_frames(num_samples), 80)
    assert got.dtype == np.float32
    # After CMVN the features are O(1); float32 vs the stock float64 path differ by rounding only.
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_batch_padding_matches_the_stock_extractor(extractors):
    stock, fast = extractors
    batch = [_speechlike(1.0), _speechlike(0.5, seed=1), _noise(3000, seed=2)]
    kwargs = dict(sampling_rate=16000, padding=True, return_tensors="np")
    expected, got = stock(batch, **kwargs), fast(batch, **kwargs)
    assert got["input_features"].shape == expected["input_features"].shape == (3, 98, 80)
    np.testing.assert_array_equal(got["attention_mask"], expected["attention_mask"])
    assert got["attention_mask"].dtype == np.int32
    np.testing.assert_allclose(got["input_features"], expected["input_features"], atol=2e-3)
    # pad_to_multiple_of and max_length + truncation, as the collator and pipelines use them.
    padded = fast(batch, sampling_rate=16000, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert padded["input_features"].shape == (3, 104, 80) and padded["attention_mask"].sum().item() == 98 + 48 + 17
    truncated = fast(batch, sampling_rate=16000, padding="max_length", max_length=20, truncation=True,
                     return_tensors="pt")
    assert truncated["input_features"].shape == (3, 20, 80)
    reference = stock(batch, sampling_rate=16000, padding="max_length", max_length=20, truncation=True,
                      return_tensors="np")
    np.testing.assert_allclose(truncated["input_features"].numpy(), reference["input_features"], atol=2e-3)


def test_unpadded_batch_returns_lists_like_the_stock_extractor(extractors):
    stock, fast = extractors
    batch = [_speechlike(1.0), _speechlike(0.5, seed=1)]
    expected, got = stock(batch, sampling_rate=16000), fast(batch, sampling_rate=16000)
    assert [np.asarray(f).shape for f in got["input_features"]] == [np.asarray(f).shape for f in
                                                                     expected["input_features"]]
    assert [m.tolist() for m in got["attention_mask"]] == [m.tolist() for m in expected["attention_mask"]]


def test_reused_buffers_give_the_features_of_fresh_ones_in_any_order_mode_and_thread(monkeypatch):
    # The FFT buffers are kept per thread (up to 30 s); lengths in any order, calls in and out of inference mode and
    # concurrent threads must all give what fresh buffers give, and no result may change with a later call.
    import concurrent.futures

    import hf_prunable_ctc.feature_extraction_prunable_ctc as module

    extractor = PrunableCTCFeatureExtractor()
    clips = [_speechlike(seconds, seed) for seed, seconds in enumerate([3.0, 0.5, 31.0, 1.0, 3.0, 0.03])]
    monkeypatch.setattr(module, "WORKSPACE_MAX_FRAMES", 0)  # fresh buffers for every call
    expected = [_features(extractor, clip) for clip in clips]
    monkeypatch.undo()

    results = []
    for i, clip in enumerate(clips):
        with torch.inference_mode(i % 2 == 0):
            results.append(_features(extractor, clip))
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for got, want in zip(pool.map(lambda clip: _features(extractor, clip), clips * 3), expected * 3):
            np.testing.assert_array_equal(got, want)


def test_integer_pcm_is_scaled_and_float64_accepted():
    extractor = PrunableCTCFeatureExtractor()
    audio = _speechlike(1.0)
    reference = _features(extractor, audio)
    int16 = np.round(audio * 32767).astype(np.int16)
    int32 = (int16.astype(np.int32) << 16)
    np.testing.assert_allclose(_features(extractor, int16), reference, atol=2e-2)
    np.testing.assert_allclose(_features(extractor, int32), _features(extractor, int16), atol=1e-5)
    np.testing.assert_allclose(_features(extractor, audio.astype(np.float64)), reference, atol=1e-6)
    np.testing.assert_allclose(_features(extractor, torch.from_numpy(audio)), reference, atol=1e-6)


def test_multichannel_is_downmixed_and_3d_refused():
    extractor = PrunableCTCFeatureExtractor()
    left, right = _speechlike(1.0), _speechlike(1.0, seed=3)
    stereo = np.stack([left, right])  # (channels, samples), the pipeline's layout
    got = extractor([stereo], sampling_rate=16000, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(got, _features(extractor, (left + right) / 2), atol=1e-5)
    # A bare 2-D array keeps the stock meaning: a batch of two utterances.
    assert extractor(stereo, sampling_rate=16000, return_tensors="np")["input_features"].shape == (2, 98, 80)
    with pytest.raises(ValueError, match="got shape \\(2, 2, 16000\\)"):
        extractor(np.zeros((2, 2, 16000), np.float32), sampling_rate=16000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples_are_refused(bad):
    audio = _speechlike(1.0)
    audio[100] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        PrunableCTCFeatureExtractor()(audio, sampling_rate=16000)
    # The stock extractor returns non-finite features without a word: what the check is for.
    assert not np.isfinite(_features(Speech2TextFeatureExtractor(), audio)).all()


@pytest.mark.parametrize("num_samples", [0, 1, 399])
def test_audio_shorter_than_a_window_gives_zero_frames(num_samples):
    batch = PrunableCTCFeatureExtractor()(np.zeros(num_samples, np.float32) + 0.1, sampling_rate=16000,
                                          return_tensors="pt")
    assert batch["input_features"].shape == (1, 0, 80) and batch["attention_mask"].shape == (1, 0)


def test_silence_single_frame_and_clipping_give_finite_features():
    extractor = PrunableCTCFeatureExtractor()
    assert (_features(extractor, np.zeros(16000, np.float32)) == 0).all()  # stock: NaN
    assert (_features(extractor, _noise(500)) == 0).all()  # one frame: zero variance, stock: NaN
    clipped = np.clip(_speechlike(1.0) * 10, -3, 3)  # |x| > 1 is kept, not an error: it is still audio
    assert np.isfinite(_features(extractor, clipped)).all()


def test_other_sampling_rate_is_resampled_with_soxr():
    pytest.importorskip("soxr")
    extractor = PrunableCTCFeatureExtractor()
    audio_16k = _speechlike(1.0)
    import soxr

    audio_8k = soxr.resample(audio_16k, 16000, 8000, quality="HQ").astype(np.float32)
    got = extractor(audio_8k, sampling_rate=8000, return_tensors="np")["input_features"][0]
    assert got.shape == (98, 80)
    # Band-limited to 4 kHz, so only the lower mel bins can match the 16 kHz original.
    assert np.corrcoef(got[:, :40].ravel(), _features(extractor, audio_16k)[:, :40].ravel())[0, 1] > 0.9


def test_other_sampling_rate_without_soxr_names_the_expected_rate(monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # import soxr -> ImportError
    with pytest.raises(ValueError, match="expects audio at 16000 Hz, got 8000 Hz"):
        PrunableCTCFeatureExtractor()(_speechlike(0.5), sampling_rate=8000)


def test_missing_sampling_rate_warns():
    with pytest.warns(UserWarning, match="sampling_rate"):
        PrunableCTCFeatureExtractor()(_speechlike(0.1))


def test_saved_folder_loads_with_auto_classes(tmp_path):
    extractor = make_feature_extractor()
    assert isinstance(extractor, PrunableCTCFeatureExtractor)
    save_processor(extractor, make_tokenizer(), tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_prunable_ctc.PrunableCTCFeatureExtractor"}
    assert (tmp_path / "feature_extraction_prunable_ctc.py").is_file()
    # Same keys as the stock class, so either class reads the other's folder.
    stock_keys = set(Speech2TextFeatureExtractor().to_dict())
    assert set(saved) - {"auto_map"} == stock_keys
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is PrunableCTCFeatureExtractor
    assert type(AutoProcessor.from_pretrained(tmp_path).feature_extractor) is PrunableCTCFeatureExtractor
    assert type(Speech2TextFeatureExtractor.from_pretrained(tmp_path)) is Speech2TextFeatureExtractor


def test_remote_code_loads_in_a_clean_process(tmp_path):
    """Without hf_prunable_ctc imported, trust_remote_code loads the copied file, which imports only torch and
    transformers, and computes the same features."""
    save_processor(make_feature_extractor(), make_tokenizer(), tmp_path)
    source = (tmp_path / "feature_extraction_prunable_ctc.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.startswith(("import ", "from ")) and not line.startswith("from __future__")}
    assert imports - set(sys.stdlib_module_names) <= {"torch", "transformers"}, imports
    audio = _speechlike(0.5)
    np.save(tmp_path / "audio.npy", audio)
    np.save(tmp_path / "expected.npy", _features(make_feature_extractor(), audio))
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from transformers import AutoFeatureExtractor
        extractor = AutoFeatureExtractor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert "hf_prunable_ctc" not in sys.modules, "the package was imported"
        assert type(extractor).__name__ == "PrunableCTCFeatureExtractor", type(extractor)
        got = extractor(np.load({str(tmp_path / "audio.npy")!r}), sampling_rate=16000)["input_features"][0]
        np.testing.assert_allclose(got, np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# --- through pipeline("automatic-speech-recognition") with a tiny saved model ---------------------------------


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_asr")
    tokenizer = make_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer))
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    return pipeline("automatic-speech-recognition", model=str(path))


def test_pipeline_uses_the_torch_extractor(asr):
    assert isinstance(asr.feature_extractor, PrunableCTCFeatureExtractor)


def _transcribed_directly(asr, audio: np.ndarray) -> str:
    """The transcript of `audio` (1-D float32) through the extractor, the model and the tokenizer, no pipeline."""
    inputs = asr.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    assert torch.isfinite(inputs["input_features"]).all()
    with torch.no_grad():
        logits = asr.model(**inputs).logits
    return asr.tokenizer.decode(logits[0].argmax(-1))


SPEECH, OTHER = _speechlike(1.0), _speechlike(1.0, seed=1)


@pytest.mark.parametrize(
    "name, audio, same_as",
    [
        # Integer PCM is scaled, float64 narrowed: the transcript of the float32 audio they came from.
        ("int16", np.round(SPEECH * 32767).astype(np.int16), np.round(SPEECH * 32767).astype(np.float32) / 32768),
        ("int32", np.round(SPEECH * 32767).astype(np.int32) << 16, np.round(SPEECH * 32767).astype(np.float32) / 32768),
        ("float64", SPEECH.astype(np.float64), SPEECH),
        ("stereo (channels, samples)", np.stack([SPEECH, OTHER]), (SPEECH + OTHER) / 2),
        ("all zeros", np.zeros(16000, np.float32), np.zeros(16000, np.float32)),
        ("clipped", np.clip(SPEECH * 10, -3, 3), np.clip(SPEECH * 10, -3, 3).astype(np.float32)),
    ],
)
def test_pipeline_transcribes_odd_audio(asr, name, audio, same_as):
    assert asr(audio)["text"] == _transcribed_directly(asr, same_as)


def test_the_tiny_model_transcribes_speech_into_characters(asr):
    """What makes the comparisons above meaningful: the random model's transcripts are not all empty."""
    assert len(asr(SPEECH)["text"]) > 5 and asr(SPEECH)["text"] != asr(OTHER)["text"]


def test_pipeline_refuses_nan_audio(asr):
    audio = _speechlike(1.0)
    audio[5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        asr(audio)


def test_pipeline_refuses_3d_audio(asr):
    with pytest.raises(ValueError, match="dimensions|shape"):
        asr(np.zeros((1, 2, 16000), np.float32))


@pytest.mark.parametrize("num_samples", [0, 1, 399])
def test_pipeline_on_audio_shorter_than_a_window(asr, num_samples):
    """Zero feature frames: the model returns zero-frame logits, so the transcript is empty."""
    assert asr(np.full(num_samples, 0.1, np.float32)) == {"text": ""}


def test_pipeline_at_another_rate_needs_torchaudio(asr):
    """Upstream behaviour, documented: the pipeline resamples {"raw", "sampling_rate"} input itself with
    torchaudio and raises ImportError without it, before our extractor is called."""
    if importlib.util.find_spec("torchaudio") is not None:
        pytest.skip("torchaudio installed: the pipeline resamples")
    with pytest.raises(ImportError, match="torchaudio"):
        asr({"raw": _speechlike(0.5), "sampling_rate": 8000})
