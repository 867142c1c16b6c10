"""The Debian recordings list: transcripts parsed from pocketsphinx's listings, raw PCM and 48 kHz WAV decoded to
16 kHz, missing packages contributing nothing, none at all an error naming what to install."""

import numpy as np
import pytest
import soundfile

from hf_prunable_ctc.data.debian_recordings import ALSA_SOUNDS, POCKETSPHINX_DATA, debian_recordings


def _tone(seconds: float, rate: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture
def extracted(tmp_path):
    """A tree as `dpkg-deb -x` leaves it, with a few of each kind of recording."""
    data = tmp_path / POCKETSPHINX_DATA
    (data / "librivox").mkdir(parents=True)
    (data / "librivox" / "transcription").write_text(
        "<s> he was not an ill disposed young man </s> (book-0880)\n<s> he might even have been made amiable "
        "himself </s> (book-0930)\n")
    for name in ("book-0880", "book-0930"):
        soundfile.write(data / "librivox" / f"{name}.wav", _tone(1.0, 16000), 16000, subtype="PCM_16")
    (data / "cards").mkdir()
    (data / "cards" / "cards.transcription").write_text("ten of clubs (001)\n")
    soundfile.write(data / "cards" / "001.wav", _tone(0.5, 16000), 16000, subtype="PCM_16")
    (np.round(_tone(2.0, 16000) * 32767).astype("<i2")).tofile(data / "goforward.raw")
    (tmp_path / ALSA_SOUNDS).mkdir(parents=True)
    soundfile.write(tmp_path / ALSA_SOUNDS / "Front_Left.wav", _tone(1.5, 48000), 48000, subtype="PCM_16")
    soundfile.write(tmp_path / ALSA_SOUNDS / "Noise.wav", _tone(1.5, 48000), 48000, subtype="PCM_16")
    return tmp_path


def test_transcripts_and_sources(extracted):
    recordings = {r.name: r for r in debian_recordings(str(extracted))}
    assert sorted(recordings) == ["alsa/Front_Left", "cards/001", "librivox/book-0880", "librivox/book-0930",
                                  "pocketsphinx/goforward"]  # Noise.wav is not speech
    assert recordings["librivox/book-0880"].transcript == "he was not an ill disposed young man"
    assert recordings["cards/001"].transcript == "ten of clubs"
    assert recordings["pocketsphinx/goforward"].transcript == "go forward ten meters"
    assert recordings["alsa/Front_Left"].transcript == "Front Left"
    assert "GPL-2" in recordings["alsa/Front_Left"].source and "BSD-2" in recordings["cards/001"].source


def test_samples_are_16_khz_float(extracted):
    recordings = {r.name: r for r in debian_recordings(str(extracted))}
    raw = recordings["pocketsphinx/goforward"].samples()
    assert raw.dtype == np.float32 and raw.shape == (32000,)
    np.testing.assert_allclose(raw, _tone(2.0, 16000), atol=1e-4)  # int16 PCM scaled back to [-1, 1)
    resampled = recordings["alsa/Front_Left"].samples()
    assert resampled.shape == (24000,)  # 1.5 s at 48 kHz -> 16 kHz


def test_nothing_there_names_the_packages(tmp_path):
    with pytest.raises(FileNotFoundError, match="pocketsphinx-testdata or alsa-utils"):
        debian_recordings(str(tmp_path))
