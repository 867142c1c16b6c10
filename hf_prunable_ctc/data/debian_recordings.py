"""Real human speech with transcripts that Debian packages ship: a small check set that needs no dataset download.

- `pocketsphinx-testdata` (BSD-2, Carnegie Mellon University): five LibriVox sentences from *Sense and
  Sensibility* (read English, 3-7 s; LibriVox recordings are public domain), five spoken card names ("ten of
  clubs", 1-4 s), "go forward ten meters", and one TIDIGITS-style digit string (its transcript is spelt out from
  the file name, the corpus's convention: ``2934z`` is "two nine three four zero"). All 16 kHz mono.
- `alsa-utils` (GPL-2): eight speaker-test clips, each a voice saying its channel ("Front Center"), 48 kHz.

Neither package needs installing: ``apt-get download pocketsphinx-testdata alsa-utils`` and ``dpkg-deb -x`` each
into one folder gives the same tree under that folder as an installation gives under ``/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

POCKETSPHINX_DATA = "usr/share/pocketsphinx/test/data"
ALSA_SOUNDS = "usr/share/sounds/alsa"

# Transcripts of the recordings that pocketsphinx's test suite decodes without a transcript file beside them.
RAW_RECORDINGS = {"goforward.raw": "go forward ten meters", "tidigits/dhd.2934z.raw": "two nine three four zero"}
# speaker-test's clips; Noise.wav is noise, not speech.
ALSA_CHANNELS = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
                 "Side_Right")
SOURCES = {
    "librivox": "pocketsphinx-testdata (BSD-2; LibriVox reading of Sense and Sensibility, public domain)",
    "cards": "pocketsphinx-testdata (BSD-2)",
    "pocketsphinx": "pocketsphinx-testdata (BSD-2)",
    "alsa": "alsa-utils (GPL-2)",
}


@dataclass(frozen=True)
class Recording:
    """One recording: `name` unique in the set, `path` of the file, its `transcript` as published, `source` the
    package and licence. Raw files are 16-bit little-endian PCM, mono, 16 kHz."""

    name: str
    path: str
    transcript: str
    source: str

    def samples(self, sampling_rate: int = 16000) -> np.ndarray:
        """Mono float32 samples at `sampling_rate`."""
        from .audio import load_audio

        if self.path.endswith(".raw"):
            return load_audio({"array": np.fromfile(self.path, dtype="<i2"), "sampling_rate": 16000}, sampling_rate)
        return load_audio(self.path, sampling_rate)


def _sphinx_transcription(path: str) -> dict[str, str]:
    """``<s> words </s> (file id)`` lines -> {file id: words}."""
    entries = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^)]+)\)\s*$", line)
            if match:
                entries[match.group(2)] = match.group(1)
    return entries


def debian_recordings(root: str = "/") -> list[Recording]:
    """The recordings found under `root` (``/`` when the packages are installed, else the folder they were
    extracted into), sorted by name; a package that is not there contributes nothing.

    Raises:
        FileNotFoundError: neither package is under `root`.
    """
    found = []
    data = os.path.join(root, POCKETSPHINX_DATA)
    for folder in ("librivox", "cards"):
        listing = os.path.join(data, folder, "transcription" if folder == "librivox" else "cards.transcription")
        if os.path.isfile(listing):
            for file_id, words in _sphinx_transcription(listing).items():
                found.append(Recording(f"{folder}/{file_id}", os.path.join(data, folder, file_id + ".wav"), words,
                                       SOURCES[folder]))
    for relative, words in RAW_RECORDINGS.items():
        if os.path.isfile(os.path.join(data, relative)):
            found.append(Recording(f"pocketsphinx/{os.path.basename(relative)[:-4]}", os.path.join(data, relative),
                                   words, SOURCES["pocketsphinx"]))
    for channel in ALSA_CHANNELS:
        path = os.path.join(root, ALSA_SOUNDS, channel + ".wav")
        if os.path.isfile(path):
            found.append(Recording(f"alsa/{channel}", path, channel.replace("_", " "), SOURCES["alsa"]))
    if not found:
        raise FileNotFoundError(f"no pocketsphinx-testdata or alsa-utils recordings under {root!r}: install the "
                                f"packages, or `apt-get download` them and `dpkg-deb -x` each into that folder")
    return sorted(found, key=lambda recording: recording.name)
