"""Decoding paths, bytes and dicts with soundfile; resampling with soxr; bad audio -> AudioDecodingError."""

import numpy as np
import pytest
import soundfile

from hf_prunable_ctc.data.audio import AudioDecodingError, load_audio, resample


def _sine(num_samples: int, sampling_rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(num_samples) / sampling_rate
    wave = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_path_str_and_pathlib(tmp_path, suffix):
    wave = _sine(8000, 16000)
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, wave, 16000)
    for source in (path, str(path)):
        audio = load_audio(source)
        assert audio.dtype == np.float32 and audio.shape == (8000,)
        np.testing.assert_allclose(audio, wave, atol=1e-3)  # 16-bit PCM quantisation


def test_bytes_and_datasets_dict(tmp_path):
    wave = _sine(4000, 16000)
    path = tmp_path / "tone.flac"
    soundfile.write(path, wave, 16000)
    data = path.read_bytes()
    from_bytes = load_audio(data)
    np.testing.assert_allclose(from_bytes, wave, atol=1e-3)
    # What datasets gives for Audio(decode=False): bytes win over the path; path alone is read from disk.
    np.testing.assert_array_equal(load_audio({"bytes": data, "path": "elsewhere.flac"}), from_bytes)
    np.testing.assert_array_equal(load_audio({"bytes": None, "path": str(path)}), from_bytes)


@pytest.mark.parametrize("rate", [8000, 22050])
def test_array_dict_is_resampled_to_16k(rate):
    seconds = 0.5
    wave = _sine(int(rate * seconds), rate, frequency=300.0)
    audio = load_audio({"array": wave, "sampling_rate": rate})
    assert audio.dtype == np.float32
    assert abs(audio.shape[0] - 16000 * seconds) <= 1
    # Still a 300 Hz tone: the spectrum peaks there (2 Hz bins for 0.5 s).
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.shape[0] - 300.0) <= 4.0


def test_file_at_other_rate_is_resampled(tmp_path):
    path = tmp_path / "tone8k.wav"
    soundfile.write(path, _sine(8000, 8000), 8000)
    assert load_audio(path).shape == (16000,)
    assert load_audio(path, sampling_rate=8000).shape == (8000,)


def test_stereo_file_and_arrays_downmix_to_mono(tmp_path):
    left = _sine(1600, 16000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # (samples, channels)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 16000)
    audio = load_audio(path)
    assert audio.shape == (1600,)
    np.testing.assert_allclose(audio, left / 2, atol=1e-3)
    # Arrays in either layout, and integer PCM scaled to [-1, 1).
    np.testing.assert_allclose(load_audio({"array": stereo.T, "sampling_rate": 16000}), left / 2, atol=1e-6)
    pcm = (stereo * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio({"raw": pcm, "sampling_rate": 16000}), left / 2, atol=1e-3)
    # 8-bit PCM is unsigned, centred on 128: the same signal, not a DC offset of +1.
    unsigned = np.round(left * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio({"raw": unsigned, "sampling_rate": 16000}), left, atol=1e-2)
    assert load_audio({"raw": np.full(400, 128, dtype=np.uint8), "sampling_rate": 16000}).max() == 0.0


def test_unreadable_audio_raises_audio_decoding_error(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    bad_sources = [
        garbage,
        tmp_path / "missing.flac",
        b"",
        b"RIFF....WAVE",
        {"bytes": b"", "path": "x.wav"},
        {"bytes": None, "path": None},
    ]
    for source in bad_sources:
        with pytest.raises(AudioDecodingError):
            load_audio(source)
    with pytest.raises(ValueError, match="garbage.wav"):  # a ValueError that names the file
        load_audio(garbage)


def test_each_error_names_the_file_once(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio" * 10)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(b"RIFF....WAVE")
    for path in (garbage, truncated, tmp_path / "missing.wav"):
        with pytest.raises(AudioDecodingError) as raised:
            load_audio(path)
        assert str(raised.value).count(path.name) == 1, str(raised.value)
        # `reason` is what a caller that names the file itself prints after it.
        assert path.name not in raised.value.reason and raised.value.reason
    with pytest.raises(AudioDecodingError, match="Format not recognised"):
        load_audio(garbage)


def test_audio_without_samples_decodes_to_an_empty_array(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    for source in (empty, str(empty), empty.read_bytes(), {"array": np.zeros(0), "sampling_rate": 16000},
                   {"array": np.zeros((2, 0), np.int16), "sampling_rate": 8000}):
        audio = load_audio(source)
        assert audio.shape == (0,) and audio.dtype == np.float32


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError):
        load_audio(np.zeros(16000))  # a bare array has no sampling rate
    with pytest.raises(TypeError):
        load_audio({"array": np.zeros(10)})


def test_resample_same_rate_is_identity():
    wave = _sine(100, 16000)
    assert resample(wave, 16000, 16000) is wave


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples_raise_audio_decoding_error(tmp_path, bad):
    audio = _sine(1600, 16000)
    audio[10] = bad
    with pytest.raises(AudioDecodingError, match="1 NaN or Inf samples"):
        load_audio({"array": audio, "sampling_rate": 16000})
    path = tmp_path / "float.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")  # a float WAV can store NaN/Inf
    with pytest.raises(AudioDecodingError, match="float.wav"):
        load_audio(path)


def test_int32_float64_and_clipped_arrays():
    wave = _sine(1600, 16000)
    int32 = (wave.astype(np.float64) * 2**31).clip(-(2**31), 2**31 - 1).astype(np.int32)
    np.testing.assert_allclose(load_audio({"array": int32, "sampling_rate": 16000}), wave, atol=1e-6)
    np.testing.assert_allclose(load_audio({"array": wave.astype(np.float64), "sampling_rate": 16000}), wave)
    clipped = load_audio({"array": wave * 4, "sampling_rate": 16000})  # |x| > 1 is kept: it is still audio
    assert clipped.max() == pytest.approx(2.0, abs=1e-3)


def test_three_dimensional_array_is_refused():
    with pytest.raises(TypeError, match="1-D or 2-D"):
        load_audio({"array": np.zeros((2, 2, 100)), "sampling_rate": 16000})
