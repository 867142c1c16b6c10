"""Synthesise an offline speech corpus with Debian's synthesisers, in the Hugging Face `audiofolder` layout.

    python training/make_corpus.py --output_dir corpora/synth-1h --hours 1
    python training/make_corpus.py --demo            # regenerates the bundled data/demo corpus

Voices: espeak-ng (8 English accents x variants, and the MBROLA voices mb-en1, mb-us1..mb-us3), flite (kal16, slt,
rms, awb) and festival (kal_diphone, ked_diphone, rab_diphone, don_diphone, cmu_us_slt_arctic_hts, en1_mbrola,
us1_mbrola..us3_mbrola), whichever are installed. A *speaker* is a voice identity: espeak-ng accent + variant, or a
recorded speaker; flite kal16 and festival kal_diphone are the same speaker ("cmu-kal"), as are flite slt and
festival's slt ("cmu-slt"), and each MBROLA voice through espeak-ng and through festival ("mbrola-us1"). Each
utterance gets its own random speaking rate and pitch.

Harder test splits (optional): `--unseen_engines` holds out whole engines or voice families (`VOICE_FAMILIES`, or
voice patterns) as a `test_unseen_engine` split, and `--unseen_text_sources` / `--unseen_text_file` hold out text as a
`test_unseen_text` split (sentences never used in training, words outside the training vocabulary included), read by
training speakers. A README.md in the output folder says which voices and texts went where.

Text: fortunes, the King James Bible and WordNet's example sentences, cut at . ! ? ; : and kept only when
`hf_prunable_ctc.data.text.clean_sentence` says that the reading is exactly the transcript (no digits, abbreviations,
acronyms or symbols).

Output: ``<output_dir>/{train,validation,test}/metadata.csv`` (columns `METADATA_COLUMNS`; the held-out splits'
folders too when asked for) next to 16 kHz mono FLAC (or, with `--audio_format opus`, Opus in Ogg) files, and a
README.md saying which voices and texts went to which split. Validation and test speakers never occur in train
(held out per espeak-ng accent and among the CMU and MBROLA speakers, so the test split covers several accents and
engines), and no transcript occurs in two splits. The MBROLA voices are in Debian's contrib and non-free sections
(`APT_INSTALL_ALL` installs every voice). The same settings and `--seed` give the same plan; a rerun only
synthesises the files that are missing, and writes the metadata last, listing the planned files that exist.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import glob
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from hf_prunable_ctc.data.text import clean_sentence  # noqa: E402

SPLITS = ("train", "validation", "test")
# Optional splits that isolate one kind of novelty each: engines/voice families never heard in training, and text
# never read in training (read by training speakers, so only the text is new).
HELD_OUT_SPLITS = ("test_unseen_engine", "test_unseen_text")
ALL_SPLITS = SPLITS + HELD_OUT_SPLITS
METADATA_COLUMNS = ("file_name", "transcription", "speaker", "engine", "voice", "rate", "pitch", "duration")
SAMPLING_RATE = 16000
# Bump when the audio post-processing changes: it is part of every file name, so a resumed run never mixes versions.
AUDIO_VERSION = 1
PEAK_LEVEL = 0.25  # -12 dBFS, a usual recording level; each halving of the level makes 16-bit FLAC ~10% smaller
SILENCE_THRESHOLD = 0.01  # relative to the peak (-40 dB): quieter samples at either end are trimmed
KEEP_SILENCE_S = (0.1, 0.15)  # silence kept before and after the speech

ENGINES = ("espeak-ng", "flite", "festival")
# File suffix -> libsndfile format and subtype. FLAC is lossless (~15 KiB per second of speech); Opus in Ogg is
# ~3.6 KiB/s with no measurable effect on a speech recognizer, which is what lets the bundled demo hold 4x more audio.
AUDIO_FORMATS = {"flac": ".flac", "opus": ".ogg"}
SOUNDFILE_FORMATS = {".flac": dict(format="FLAC", subtype="PCM_16", compression_level=1.0),
                     ".ogg": dict(format="OGG", subtype="OPUS")}
APT_PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}
# Install line for every voice this script knows (MBROLA voices are in Debian's contrib and non-free sections: add
# them to the Components line of the Debian source and apt-get update first).
APT_INSTALL_ALL = ("apt-get install -y --no-install-recommends espeak-ng flite festival festvox-kallpc16k "
                   "festvox-kdlpc16k festvox-us-slt-hts festvox-rablpc16k festvox-don mbrola mbrola-en1 mbrola-us1 "
                   "mbrola-us2 mbrola-us3 festvox-en1 festvox-us1 festvox-us2 festvox-us3")

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                  "en-us-nyc")
# espeak-ng 1.51 variants ("" = the accent's own voice). Left out as not human-like: whisper, whisperf, croak,
# robosoft..robosoft8, UniRobot, anikaRobot, Demonic, announcer; also "fast" (a test voice) and "Mr serious"
# (its file name has a space).
ESPEAK_VARIANTS = (
    "", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "grandma", "grandpa",
    "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda",
    "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Nguyen", "norbert", "pablo", "paul",
    "pedro", "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "sandro", "shelby", "steph",
    "steph2", "steph3", "Storm", "travis", "Tweaky", "victor", "zac",
)
# MBROLA voices espeak-ng drives (diphones cut from real speakers: the distinct vocal tracts the corpus lacks most)
# -> (speaker, apt package). espeak-ng's other mb-* English voices need non-English MBROLA databases: left out.
ESPEAK_MBROLA_VOICES = {"mb-en1": ("mbrola-en1", "mbrola-en1"), "mb-us1": ("mbrola-us1", "mbrola-us1"),
                        "mb-us2": ("mbrola-us2", "mbrola-us2"), "mb-us3": ("mbrola-us3", "mbrola-us3")}
MBROLA_VOICE_DIR = "/usr/share/mbrola"
ESPEAK_DEFAULT_WPM = 175
ESPEAK_DEFAULT_PITCH = 50

# flite voice -> (speaker, mean F0 in Hz that `int_f0_target_mean` scales, or None where flite ignores it)
FLITE_VOICES = {
    "kal16": ("cmu-kal", 95.0), "slt": ("cmu-slt", 170.0), "awb": ("cmu-awb", 130.0), "rms": ("cmu-rms", None),
}
# festival voice -> (speaker, apt package, (target F0 mean, std) of its `int_lr_params`, or None for HTS voices).
# The means and stds are the voices' own (their festvox/*.scm files); rab and don are CSTR (Edinburgh) British
# voices, the *_mbrola ones the MBROLA databases that espeak-ng's mb-* voices also use.
FESTIVAL_VOICES = {
    "kal_diphone": ("cmu-kal", "festvox-kallpc16k", (105.0, 14.0)),
    "ked_diphone": ("cmu-ked", "festvox-kdlpc16k", (105.0, 15.0)),
    "cmu_us_slt_arctic_hts": ("cmu-slt", "festvox-us-slt-hts", None),
    "rab_diphone": ("cstr-rab", "festvox-rablpc16k", (105.0, 14.0)),
    "don_diphone": ("cstr-don", "festvox-don", (135.0, 30.0)),
    "en1_mbrola": ("mbrola-en1", "festvox-en1", (110.0, 15.0)),
    "us1_mbrola": ("mbrola-us1", "festvox-us1", (160.0, 34.0)),
    "us2_mbrola": ("mbrola-us2", "festvox-us2", (90.0, 15.0)),
    "us3_mbrola": ("mbrola-us3", "festvox-us3", (105.0, 16.0)),
}
# Voice families for --unseen_engines: name -> patterns as for --voices. A speaker with any voice in the family is
# held out whole (flite kal16 takes festival's kal_diphone with it; "mbrola" takes espeak-ng's mb-* and festival's
# *_mbrola voices).
VOICE_FAMILIES = {
    "flite": ("flite:*",),
    "festival": ("festival:*",),
    "festival-diphone": ("festival:*_diphone",),
    "festival-hts": ("festival:*_hts",),
    "mbrola": ("mbrola-*",),
    "espeak-ng": ("espeak-ng:*",),
    "espeak-ng-klatt": ("espeak-ng:*+klatt*",),
}
FESTIVAL_VOICE_DIR = "/usr/share/festival/voices"
FESTIVAL_BATCH = 25  # utterances per festival process: one process per sentence would be ~10x slower

TEXT_SOURCES = ("fortunes", "bible", "wordnet")
FORTUNES_DIR = "/usr/share/games/fortunes"
# Pictures, TV listings, and the files most likely to hold jokes at someone's expense.
FORTUNES_EXCLUDED = ("ascii-art", "art", "ethnic", "men-women")
WORDNET_DIR = "/usr/share/wordnet"
TEXT_PACKAGES = {"fortunes": "fortunes", "bible": "bible-kjv bible-kjv-text", "wordnet": "wordnet-base"}
# Transcript characters per second of audio at rate 1.0, silence trimmed (measured 15-19 over the voices), for
# turning --hours into a number of utterances.
CHARACTERS_PER_SECOND = 17.0


class SynthesizerNotFound(RuntimeError):
    """No usable synthesiser (or text source) is installed; the message names the apt package to install."""


class CorpusSettingsError(ValueError):
    """Settings that cannot give a corpus (too few speakers or sentences, unknown names)."""


# ----------------------------------------------------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    """One engine voice. `speaker` is the identity shared across engines; `stratum` groups speakers when choosing
    held-out ones (the espeak-ng accent, or "cmu" for the recorded CMU speakers)."""

    speaker: str
    engine: str
    voice: str  # the engine's own name: "en-us+f3", "kal16", "kal_diphone"
    stratum: str
    pitch_adjustable: bool = True


def all_voices() -> list[Voice]:
    """Every voice this script knows, installed or not, in a fixed order."""
    voices = [
        Voice(f"espeak-ng:{accent}{'+' + variant if variant else ''}", "espeak-ng",
              f"{accent}{'+' + variant if variant else ''}", accent)
        for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS
    ]
    voices += [Voice(speaker, "espeak-ng", name, "mbrola") for name, (speaker, _) in ESPEAK_MBROLA_VOICES.items()]
    voices += [Voice(speaker, "flite", name, "cmu", base is not None) for name, (speaker, base) in FLITE_VOICES.items()]
    # Stratum = the speaker's family ("cmu", "cstr", "mbrola"), so each family gives held-out speakers on its own.
    voices += [Voice(speaker, "festival", name, speaker.split("-")[0], params is not None)
               for name, (speaker, _, params) in FESTIVAL_VOICES.items()]
    return voices


def available_voices(engines: Sequence[str] = ENGINES, patterns: Sequence[str] | None = None
                     ) -> tuple[list[Voice], list[str]]:
    """The installed voices of `engines` that match `patterns`, and notes on what is missing.

    Args:
        engines: engine names from `ENGINES`.
        patterns: shell-style patterns matched against the speaker ("cmu-*", "espeak-ng:en-gb*") or
            "engine:voice" ("flite:*", "festival:kal_diphone"); ``None`` keeps all.

    Returns:
        ``(voices, notes)``; each note says what is missing and which apt package installs it.

    Raises:
        SynthesizerNotFound: none of `engines` is installed (or no installed voice matches `patterns`).
    """
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise CorpusSettingsError(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    notes, missing_engines, missing_voices = [], [], set()
    for engine in engines:
        if shutil.which(engine) is None:
            missing_engines.append(engine)
            notes.append(f"{engine} not found: apt-get install {APT_PACKAGES[engine]}")
    if len(missing_engines) == len(engines):
        raise SynthesizerNotFound("; ".join(notes) + " (no synthesiser installed)")
    if "espeak-ng" in engines and "espeak-ng" not in missing_engines:
        installed = _espeak_variants()
        absent = [variant for variant in ESPEAK_VARIANTS if variant and variant not in installed]
        if absent:
            notes.append(f"espeak-ng lacks the variants {absent}; using the others")
        missing_voices.update(f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in absent)
        for name, (_, package) in ESPEAK_MBROLA_VOICES.items():
            if shutil.which("mbrola") is None or not os.path.isdir(os.path.join(MBROLA_VOICE_DIR, name[3:])):
                missing_voices.add(name)
                notes.append(f"espeak-ng voice {name} not found: apt-get install mbrola {package} (Debian contrib "
                             "and non-free)")
    if "festival" in engines and "festival" not in missing_engines:
        for name, (_, package, _) in FESTIVAL_VOICES.items():
            mbrola_missing = name.endswith("_mbrola") and not os.path.isdir(
                os.path.join(MBROLA_VOICE_DIR, name.split("_")[0]))
            if not glob.glob(os.path.join(FESTIVAL_VOICE_DIR, "*", name)) or mbrola_missing:
                missing_voices.add(name)
                notes.append(f"festival voice {name} not found: apt-get install {package}"
                             + (f" mbrola mbrola-{name.split('_')[0]}" if name.endswith("_mbrola") else ""))
    voices = [voice for voice in all_voices()
              if voice.engine in engines and voice.engine not in missing_engines and voice.voice not in missing_voices]
    if patterns:
        voices = [voice for voice in voices
                  if any(fnmatch.fnmatchcase(voice.speaker, pattern)
                         or fnmatch.fnmatchcase(f"{voice.engine}:{voice.voice}", pattern) for pattern in patterns)]
        if not voices:
            raise SynthesizerNotFound(f"no installed voice matches {list(patterns)}")
    return voices, notes


def _espeak_variants() -> set[str]:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    return {match.group(1) for match in re.finditer(r"!v/(\S+)", listing)}


# ------------------------------------------------------------------------------------------------------------- text


@dataclass(frozen=True)
class Sentence:
    """A sentence to read (`text`, original case and punctuation) and its exact `transcript`."""

    text: str
    transcript: str
    source: str


def read_fortunes(directory: str = FORTUNES_DIR) -> Iterator[str]:
    """Fortune cookies (minus `FORTUNES_EXCLUDED` and attribution lines), one passage each, in file order."""
    for path in sorted(glob.glob(os.path.join(directory, "*"))):
        name = os.path.basename(path)
        if "." in name or name in FORTUNES_EXCLUDED or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as file:
            for cookie in file.read().split("\n%\n"):
                lines = [line for line in cookie.splitlines() if not re.match(r"\s*(--|—)", line)]
                yield " ".join(lines)


def read_bible() -> Iterator[str]:
    """The King James Bible (`bible` from bible-kjv), one verse each; "LORD"/"GOD" (small capitals in print, read
    as ordinary words) are written "Lord"/"God" so the acronym filter keeps them."""
    output = subprocess.run(["bible", "-l0", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        match = re.match(r"\s+\d+ (.*)", line)
        if match:
            yield re.sub(r"\b(LORD|GOD)\b", lambda word: word.group(1).title(), match.group(1))


def read_wordnet(directory: str = WORDNET_DIR) -> Iterator[str]:
    """WordNet's example sentences (the quoted parts of the glosses), in file order."""
    for part in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(directory, f"data.{part}"), encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith(" ") or " | " not in line:  # licence header
                    continue
                yield from re.findall(r'"([^"]+)"', line.split(" | ", 1)[1])


TEXT_READERS = {"fortunes": read_fortunes, "bible": read_bible, "wordnet": read_wordnet}


def split_sentences(passage: str) -> list[str]:
    """Cut a passage at . ! ? ; : followed by white space: the pieces are what one utterance reads."""
    passage = " ".join(passage.split())
    return [piece.strip() for piece in re.split(r"(?<=[.!?;:])\s+", passage) if piece.strip()]


def text_for_synthesis(sentence: str) -> str:
    """What the synthesiser is given: the sentence without double quotes and leading dashes (options to a CLI)."""
    return " ".join(re.sub(r"[\"“”]", " ", sentence).split()).lstrip("-–— ")


def load_sentences(sources: Sequence[str] = TEXT_SOURCES, min_words: int = 3, max_words: int = 20
                   ) -> tuple[list[Sentence], list[str]]:
    """Clean sentences of `sources`, one per distinct transcript (the first occurrence), in a fixed order.

    Returns:
        ``(sentences, notes)``; notes name the apt package of a source that is not installed.

    Raises:
        SynthesizerNotFound: no source is installed.
    """
    unknown = set(sources) - set(TEXT_SOURCES)
    if unknown:
        raise CorpusSettingsError(f"unknown text sources {sorted(unknown)}; choose from {TEXT_SOURCES}")
    notes, sentences, seen = [], [], set()
    for source in sources:
        if not _text_source_installed(source):
            notes.append(f"text source {source} not found: apt-get install {TEXT_PACKAGES[source]}")
            continue
        sentences += clean_sentences(TEXT_READERS[source](), source, min_words, max_words, seen)
    if len(notes) == len(sources):
        raise SynthesizerNotFound("; ".join(notes))
    return sentences, notes


def clean_sentences(passages: Iterator[str], source: str, min_words: int = 3, max_words: int = 20,
                    seen: set[str] | None = None) -> list[Sentence]:
    """The sentences of `passages` whose transcript `clean_sentence` accepts, skipping transcripts in `seen` (which
    is updated), in order."""
    seen = set() if seen is None else seen
    sentences = []
    for passage in passages:
        for piece in split_sentences(passage):
            text = text_for_synthesis(piece)
            transcript = clean_sentence(text, min_words, max_words)
            if transcript is not None and transcript not in seen:
                seen.add(transcript)
                sentences.append(Sentence(text, transcript, source))
    return sentences


def read_text_file(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file (each a passage: cut into sentences at . ! ? ; : like the other sources)."""
    with open(path, encoding="utf-8", errors="replace") as file:
        yield from (line for line in file if line.strip())


def _text_source_installed(source: str) -> bool:
    if source == "fortunes":
        return os.path.isdir(FORTUNES_DIR)
    if source == "bible":
        return shutil.which("bible") is not None and bool(glob.glob("/usr/lib/bible.data*"))
    return os.path.isfile(os.path.join(WORDNET_DIR, "data.noun"))


def restrict_vocabulary(sentences: Sequence[Sentence], vocabulary_size: int) -> list[Sentence]:
    """Keep the sentences whose words are all among the `vocabulary_size` most frequent words of `sentences`.

    Frequencies count word tokens over all transcripts; ties go alphabetically. A small corpus whose words recur
    across sentences (and so across splits) is one a small model can learn from minutes of audio.
    """
    counts = Counter(word for sentence in sentences for word in sentence.transcript.split())
    ranked = sorted(counts, key=lambda word: (-counts[word], word))
    vocabulary = set(ranked[:vocabulary_size])
    return [sentence for sentence in sentences if set(sentence.transcript.split()) <= vocabulary]


# ------------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Utterance:
    """One planned file: who reads what, at which rate and pitch (factors: 1.0 is the voice's default, above 1.0
    faster / higher), and where it goes (``<output_dir>/<split>/<file_name>``)."""

    split: str
    file_name: str
    text: str
    transcript: str
    source: str
    voice: Voice
    rate: float
    pitch: float


def split_speakers(voices: Sequence[Voice], validation_speakers: float = 0.1, test_speakers: float = 0.1,
                   seed: int = 0) -> dict[str, list[Voice]]:
    """Assign whole speakers to splits: the fractions of each stratum's speakers go to validation and test.

    Every stratum (espeak-ng accent, "cmu") with at least 3 speakers gives at least one speaker to each held-out
    split, so the test split spans accents and engines. Voices sharing a speaker stay together.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}`` lists of voices.

    Raises:
        CorpusSettingsError: too few speakers for three speaker-disjoint splits.
    """
    by_speaker: dict[str, list[Voice]] = defaultdict(list)
    for voice in voices:
        by_speaker[voice.speaker].append(voice)
    strata: dict[str, list[str]] = defaultdict(list)
    for speaker, speaker_voices in by_speaker.items():
        strata[speaker_voices[0].stratum].append(speaker)
    rng = random.Random(f"{seed}:speakers")
    assignment: dict[str, list[Voice]] = {split: [] for split in SPLITS}
    for stratum in sorted(strata):
        speakers = sorted(strata[stratum])
        rng.shuffle(speakers)
        n_test = _held_out_count(len(speakers), test_speakers)
        n_validation = _held_out_count(len(speakers), validation_speakers)
        for index, speaker in enumerate(speakers):
            split = "test" if index < n_test else "validation" if index < n_test + n_validation else "train"
            assignment[split].extend(by_speaker[speaker])
    if not all(assignment.values()):
        raise CorpusSettingsError(f"{len(by_speaker)} speakers are too few for speaker-disjoint "
                                  "train/validation/test splits: use at least 3 voices of one engine")
    return assignment


def hold_out_voices(voices: Sequence[Voice], families: Sequence[str]) -> tuple[list[Voice], list[Voice]]:
    """Split `voices` into ``(seen, unseen)``: a speaker any of whose voices is in one of `families` goes to unseen
    with all its voices (so no vocal tract of a held-out engine is heard in training through another engine).

    Args:
        families: names from `VOICE_FAMILIES` ("flite", "festival-diphone", "mbrola", ...) or patterns as for
            `available_voices` ("festival:rab_diphone", "cmu-awb").

    Raises:
        CorpusSettingsError: a family or pattern matches no voice, or nothing would be left for training.
    """
    unseen_speakers = set()
    for family in families:
        patterns = VOICE_FAMILIES.get(family, (family,))
        matched = {voice.speaker for voice in voices if _matches(voice, patterns)}
        if not matched:
            raise CorpusSettingsError(f"--unseen_engines {family!r} matches none of the voices in use: give a family "
                                      f"from {sorted(VOICE_FAMILIES)} or a pattern such as 'festival:rab_diphone' "
                                      "(is its engine installed?)")
        unseen_speakers |= matched
    seen = [voice for voice in voices if voice.speaker not in unseen_speakers]
    unseen = [voice for voice in voices if voice.speaker in unseen_speakers]
    if families and not seen:
        raise CorpusSettingsError(f"--unseen_engines {list(families)} holds out every voice: nothing left to train on")
    return seen, unseen


def _matches(voice: Voice, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(voice.speaker, pattern) or fnmatch.fnmatchcase(f"{voice.engine}:{voice.voice}",
                                                                                  pattern) for pattern in patterns)


def _held_out_count(num_speakers: int, fraction: float) -> int:
    if num_speakers < 3:
        return 0
    return max(1, round(num_speakers * fraction))


def plan_corpus(sentences: Sequence[Sentence], voices: Sequence[Voice], hours: float | None = 1.0,
                max_utterances: int | None = None, validation_size: float = 0.1, test_size: float = 0.1,
                validation_speakers: float = 0.1, test_speakers: float = 0.1,
                rate_range: tuple[float, float] = (0.8, 1.25), pitch_range: tuple[float, float] = (0.7, 1.4),
                seed: int = 0, audio_format: str = "flac", unseen_engine_voices: Sequence[Voice] = (),
                unseen_engine_size: float = 0.1, unseen_text_sentences: Sequence[Sentence] = (),
                unseen_text_size: float = 0.1, balance: str = "speaker") -> list[Utterance]:
    """Plan the corpus: which sentence each split gets, who reads it, how fast and how high.

    Held-out splits (each only when its voices or sentences are given; sizes as `test_size`):
    `test_unseen_engine` is read by `unseen_engine_voices` (which must not be in `voices`) from sentences dealt
    after validation, so none is in another split; `test_unseen_text` reads `unseen_text_sentences` (minus any
    transcript of `sentences`) with training speakers, so only the text is new. Without them the plan is the same
    as without these options.

    Sizes: train gets about `hours` of audio (estimated at `CHARACTERS_PER_SECOND`), validation and test
    `validation_size` / `test_size` of the whole when below 1, or that many utterances when 1 or more; then all
    three shrink in proportion to fit `max_utterances`. Sentences are shuffled and dealt test first, then
    validation, then train, so no transcript is in two splits; if train needs more utterances than it has sentences,
    its sentences are read again by other speakers. Within a split, speakers are dealt in rounds (each speaker once
    per round, accents and the CMU speakers taking turns), so each speaker reads about as many utterances and even
    a small split covers every accent and engine. With `balance="stratum"` each stratum (espeak-ng accent, "mbrola",
    "cmu", "cstr") reads about as many utterances instead: a family of two speakers is then not drowned by the
    hundreds of espeak-ng accent+variant speakers.

    Returns:
        Utterances, train first; the same arguments always give the same list.
    """
    if hours is None and max_utterances is None:
        raise CorpusSettingsError("give hours or max_utterances")
    if audio_format not in AUDIO_FORMATS:
        raise CorpusSettingsError(f"audio_format {audio_format!r}: choose one of {sorted(AUDIO_FORMATS)}")
    if balance not in BALANCES:
        raise CorpusSettingsError(f"balance {balance!r}: choose one of {list(BALANCES)}")
    suffix = AUDIO_FORMATS[audio_format]
    if not sentences:
        raise CorpusSettingsError("no sentences to read: check the text sources and --min_words/--max_words")
    overlap = {v.speaker for v in voices} & {v.speaker for v in unseen_engine_voices}
    if overlap:
        raise CorpusSettingsError(f"speakers {sorted(overlap)[:5]} are both seen and unseen: use hold_out_voices")
    speakers = split_speakers(voices, validation_speakers, test_speakers, seed)
    speakers["test_unseen_engine"] = list(unseen_engine_voices)
    speakers["test_unseen_text"] = speakers["train"]
    known = {sentence.transcript for sentence in sentences}
    unseen_text = [sentence for sentence in unseen_text_sentences if sentence.transcript not in known]
    random.Random(f"{seed}:unseen_text").shuffle(unseen_text)
    if unseen_text_sentences and not unseen_text:
        raise CorpusSettingsError("every unseen-text sentence also occurs in the training text sources")
    order = list(sentences)
    random.Random(f"{seed}:sentences").shuffle(order)

    held_out_fraction = sum(size for size in (validation_size, test_size) if size < 1)
    if held_out_fraction >= 1:
        raise CorpusSettingsError("validation_size + test_size must leave a fraction for train")
    if hours is not None:
        mean_rate = sum(rate_range) / 2
        mean_seconds = sum(_estimated_seconds(s.transcript, mean_rate) for s in order) / len(order)
        n_train = math.ceil(hours * 3600 / mean_seconds)
        n_total = n_train / (1 - held_out_fraction)
    else:
        n_total = max_utterances
        n_train = None
    held_out = [("validation", validation_size), ("test", test_size)]
    if unseen_engine_voices:
        held_out.append(("test_unseen_engine", unseen_engine_size))
    if unseen_text:
        held_out.append(("test_unseen_text", unseen_text_size))
    sizes = {split: (round(n_total * size) if size < 1 else int(size)) for split, size in held_out}
    sizes["train"] = n_train if n_train is not None else n_total - sum(sizes.values())
    if max_utterances is not None and sum(sizes.values()) > max_utterances:
        scale = max_utterances / sum(sizes.values())
        sizes = {split: int(size * scale) for split, size in sizes.items()}
        sizes["train"] = max_utterances - sum(size for split, size in sizes.items() if split != "train")
    dealt = sizes["validation"] + sizes["test"] + sizes.get("test_unseen_engine", 0)
    if dealt >= len(order):
        raise CorpusSettingsError(f"{len(order)} sentences cannot fill the held-out splits ({sizes}); "
                                  "lower their sizes")
    if sizes.get("test_unseen_text", 0) > len(unseen_text):
        raise CorpusSettingsError(f"{len(unseen_text)} unseen-text sentences cannot fill test_unseen_text "
                                  f"({sizes['test_unseen_text']}); lower --unseen_text_size")

    pools = {"test": order[:sizes["test"]],
             "validation": order[sizes["test"]:sizes["test"] + sizes["validation"]],
             "test_unseen_engine": order[sizes["test"] + sizes["validation"]:dealt],
             "train": order[dealt:], "test_unseen_text": unseen_text}
    rng = random.Random(f"{seed}:utterances")
    plan = []
    # Base splits first, held-out ones after: enabling a held-out split leaves the base splits' draws unchanged.
    for split in (split for split in ALL_SPLITS if sizes.get(split)):
        split_voices = _dealt(speakers[split], sizes[split], rng, balance)
        for index in range(sizes[split]):
            sentence = pools[split][index % len(pools[split])]
            voice = split_voices[index]
            rate = round(rng.uniform(*rate_range), 3)
            pitch = round(rng.uniform(*pitch_range), 3) if voice.pitch_adjustable else 1.0
            plan.append(Utterance(split, _file_name(index, sentence.text, voice, rate, pitch, suffix), sentence.text,
                                  sentence.transcript, sentence.source, voice, rate, pitch))
    return plan


def _estimated_seconds(transcript: str, rate: float) -> float:
    return len(transcript) / CHARACTERS_PER_SECOND / rate + sum(KEEP_SILENCE_S)


def _dealt(voices: Sequence[Voice], count: int, rng: random.Random, balance: str = "speaker") -> list[Voice]:
    """`count` voices, dealt in rounds in which every speaker reads once. Within a round the strata (accents, CMU)
    take turns, so even a small split hears every stratum; a speaker with two engine voices alternates them.
    With `balance="stratum"`, a round is one speaker of each stratum instead (each stratum cycling through its
    speakers), so every stratum reads about as many utterances."""
    by_speaker: dict[str, list[Voice]] = defaultdict(list)
    for voice in voices:
        by_speaker[voice.speaker].append(voice)
    strata: dict[str, list[str]] = defaultdict(list)
    for speaker in sorted(by_speaker):
        strata[by_speaker[speaker][0].stratum].append(speaker)
    dealt, turns = [], Counter()
    if balance == "stratum":
        cycles: dict[str, list[str]] = {name: [] for name in strata}
        while len(dealt) < count:
            order = sorted(strata)
            rng.shuffle(order)
            for name in order[:count - len(dealt)]:
                if not cycles[name]:
                    cycles[name] = rng.sample(strata[name], len(strata[name]))
                speaker = cycles[name].pop()
                dealt.append(by_speaker[speaker][turns[speaker] % len(by_speaker[speaker])])
                turns[speaker] += 1
        return dealt
    while len(dealt) < count:
        queues = [rng.sample(speakers, len(speakers)) for _, speakers in sorted(strata.items())]
        rng.shuffle(queues)
        round_order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
        for speaker in round_order[:count - len(dealt)]:
            engine_voices = by_speaker[speaker]
            dealt.append(engine_voices[turns[speaker] % len(engine_voices)])
            turns[speaker] += 1
    return dealt


def _file_name(index: int, text: str, voice: Voice, rate: float, pitch: float, suffix: str = ".flac") -> str:
    # The digest of everything that shapes the audio: a changed plan never reuses a stale file of the same index.
    key = json.dumps([text, voice.engine, voice.voice, rate, pitch, SAMPLING_RATE, AUDIO_VERSION])
    return f"{index:06d}-{hashlib.sha1(key.encode()).hexdigest()[:10]}{suffix}"


# -------------------------------------------------------------------------------------------------------- synthesis


def synthesize_corpus(plan: Sequence[Utterance], output_dir: str | os.PathLike, num_workers: int = 2,
                      progress: bool = True) -> dict[str, object]:
    """Synthesise the planned files that do not exist yet under `output_dir`.

    Each file is written to a temporary name and renamed when complete, so an interrupted run leaves no truncated
    file behind and a rerun resumes where it stopped. Festival utterances go through festival in batches of
    `FESTIVAL_BATCH`; other engines run once per utterance. Failures are collected, not raised.

    Returns:
        ``{"written": int, "skipped": int, "failed": [(file path, error message), ...]}``.
    """
    output_dir = Path(output_dir)
    for split in SPLITS + tuple(sorted({u.split for u in plan} - set(SPLITS))):
        (output_dir / split).mkdir(parents=True, exist_ok=True)
    pending = [u for u in plan if not (output_dir / u.split / u.file_name).exists()]
    jobs: list[list[Utterance]] = [[u] for u in pending if u.voice.engine != "festival"]
    festival: dict[str, list[Utterance]] = defaultdict(list)
    for utterance in pending:
        if utterance.voice.engine == "festival":
            festival[utterance.voice.voice].append(utterance)
    for batch in festival.values():
        jobs += [batch[start:start + FESTIVAL_BATCH] for start in range(0, len(batch), FESTIVAL_BATCH)]

    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(pending), unit="utt", desc="synthesising", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        futures = {pool.submit(_run_job, job, output_dir): len(job) for job in jobs}
        for future in as_completed(futures):
            failed += future.result()
            bar.update(futures[future])
    return {"written": len(pending) - len(failed), "skipped": len(plan) - len(pending), "failed": failed}


def _run_job(job: list[Utterance], output_dir: Path) -> list[tuple[str, str]]:
    failed = []
    with tempfile.TemporaryDirectory(prefix="make_corpus-") as workdir:
        try:
            wavs = _synthesize_raw(job, Path(workdir))
        except (subprocess.CalledProcessError, OSError) as error:
            detail = getattr(error, "stderr", "") or ""
            return [(str(output_dir / u.split / u.file_name), f"{error} {detail}".strip()) for u in job]
        for utterance, wav in zip(job, wavs):
            target = output_dir / utterance.split / utterance.file_name
            try:
                samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
                write_audio(samples.mean(axis=1), rate, target)
            except (soundfile.SoundFileError, RuntimeError, ValueError, OSError) as error:
                failed.append((str(target), str(error)))
    return failed


def _synthesize_raw(job: list[Utterance], workdir: Path) -> list[Path]:
    """Run the engine on `job` (one utterance, or a festival batch of one voice); returns the WAV paths."""
    wavs = [workdir / f"{i}.wav" for i in range(len(job))]
    first = job[0]
    if first.voice.engine == "espeak-ng":
        subprocess.run(["espeak-ng", "-v", first.voice.voice, "-s", str(round(ESPEAK_DEFAULT_WPM * first.rate)),
                        "-p", str(min(99, round(ESPEAK_DEFAULT_PITCH * first.pitch))), "-w", str(wavs[0]), "--stdin"],
                       input=first.text, capture_output=True, text=True, check=True)
    elif first.voice.engine == "flite":
        text_file = workdir / "text.txt"
        text_file.write_text(first.text + "\n", encoding="utf-8")
        command = ["flite", "-voice", first.voice.voice, "--setf", f"duration_stretch={1 / first.rate:.4f}"]
        base_f0 = FLITE_VOICES[first.voice.voice][1]
        if base_f0 is not None:
            command += ["--setf", f"int_f0_target_mean={base_f0 * first.pitch:.1f}"]
        subprocess.run(command + ["-f", str(text_file), "-o", str(wavs[0])], capture_output=True, text=True,
                       check=True)
    else:
        script = workdir / "batch.scm"
        script.write_text(festival_script(job, wavs), encoding="utf-8")
        subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, check=True)
    missing = [str(wav) for wav in wavs if not wav.exists()]
    if missing:
        raise OSError(f"{first.voice.engine} wrote no audio for {len(missing)} of {len(wavs)} utterances")
    return wavs


def festival_script(job: Sequence[Utterance], wavs: Sequence[Path]) -> str:
    """A festival batch script that reads each utterance of `job` (one voice) into the matching WAV path."""
    name = job[0].voice.voice
    params = FESTIVAL_VOICES[name][2]
    lines = [f"(voice_{name})"]
    for utterance, wav in zip(job, wavs):
        if params is None:  # HTS: the engine's own speed option; its pitch option has no effect here
            lines.append(f"(set! hts_engine_params (append {name}::hts_engine_params "
                         f"(list (list \"-r\" {utterance.rate:.4f}))))")
        else:
            mean, std = params
            lines.append(f"(Parameter.set 'Duration_Stretch {1 / utterance.rate:.4f})")
            lines.append(f"(set! int_lr_params '((target_f0_mean {mean * utterance.pitch:.1f}) "
                         f"(target_f0_std {std * utterance.pitch:.1f}) (model_f0_mean 170) (model_f0_std 34)))")
        text = utterance.text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (SynthText "{text}") "{wav}" \'riff)')
    return "\n".join(lines) + "\n"


def write_audio(samples: np.ndarray, sampling_rate: int, path: str | os.PathLike) -> float:
    """Resample mono `samples` to 16 kHz (soxr "HQ", deterministic), trim silence at the ends, scale the peak to
    `PEAK_LEVEL`, and write it to `path` (16-bit FLAC or Opus, by its suffix) atomically (temporary name, then
    rename).

    Returns:
        The duration written, in seconds.

    Raises:
        ValueError: the audio is silent.
    """
    import soxr

    samples = np.asarray(samples, dtype=np.float64)
    if sampling_rate != SAMPLING_RATE:
        samples = soxr.resample(samples, sampling_rate, SAMPLING_RATE, quality="HQ")
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        raise ValueError("the synthesiser produced silence")
    loud = np.flatnonzero(np.abs(samples) >= SILENCE_THRESHOLD * peak)
    start = max(0, loud[0] - int(KEEP_SILENCE_S[0] * SAMPLING_RATE))
    stop = min(len(samples), loud[-1] + 1 + int(KEEP_SILENCE_S[1] * SAMPLING_RATE))
    samples = samples[start:stop] * (PEAK_LEVEL / peak)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    soundfile.write(partial, samples.astype(np.float32), SAMPLING_RATE, **SOUNDFILE_FORMATS[path.suffix])
    os.replace(partial, path)
    return len(samples) / SAMPLING_RATE


# --------------------------------------------------------------------------------------------------------- metadata


def write_metadata(plan: Sequence[Utterance], output_dir: str | os.PathLike) -> dict[str, int]:
    """Write ``<output_dir>/<split>/metadata.csv`` for the planned files that exist (in plan order).

    Columns `METADATA_COLUMNS`: `file_name` relative to the metadata file, `transcription` (exact, normalised),
    `speaker`, `engine`, `voice`, `rate` and `pitch` (factors of the voice's default), `duration` (seconds).

    The base splits always get a metadata file (empty when unplanned); the held-out splits only when planned.

    Returns:
        ``{split: rows written}``.
    """
    output_dir = Path(output_dir)
    counts = {}
    planned = {u.split for u in plan}
    for split in (split for split in ALL_SPLITS if split in SPLITS or split in planned):
        rows = []
        for utterance in (u for u in plan if u.split == split):
            path = output_dir / split / utterance.file_name
            if path.exists():
                rows.append([utterance.file_name, utterance.transcript, utterance.voice.speaker,
                             utterance.voice.engine, utterance.voice.voice, utterance.rate, utterance.pitch,
                             round(soundfile.info(str(path)).duration, 3)])
        (output_dir / split).mkdir(parents=True, exist_ok=True)
        partial = output_dir / split / "metadata.csv.partial"
        with open(partial, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(METADATA_COLUMNS)
            writer.writerows(rows)
        os.replace(partial, output_dir / split / "metadata.csv")
        counts[split] = len(rows)
    return counts


def read_metadata(output_dir: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """``{split: rows}`` of the corpus at `output_dir`; a split without metadata.csv is left out."""
    corpus = {}
    for split in ALL_SPLITS:
        path = Path(output_dir) / split / "metadata.csv"
        if path.exists():
            with open(path, newline="", encoding="utf-8") as file:
                corpus[split] = list(csv.DictReader(file))
    return corpus


def corpus_summary(output_dir: str | os.PathLike) -> str:
    """A table of utterances, minutes, speakers and engines per split, read from the metadata files."""
    width = max(len(split) for split in ALL_SPLITS)
    lines = [f"{'split':<{width}} {'utterances':>10} {'minutes':>8} {'hours':>6} {'speakers':>8}  engines"]
    for split, rows in read_metadata(output_dir).items():
        seconds = sum(float(row["duration"]) for row in rows)
        engines = Counter(row["engine"] for row in rows)
        lines.append(f"{split:<{width}} {len(rows):>10} {seconds / 60:>8.1f} {seconds / 3600:>6.2f} "
                     f"{len({row['speaker'] for row in rows}):>8}  "
                     + ", ".join(f"{engine} {count}" for engine, count in sorted(engines.items())))
    return "\n".join(lines)


README_MARKER = "<!-- written by training/make_corpus.py: a rerun rewrites this file -->"
SPLIT_DESCRIPTIONS = {
    "train": "training utterances",
    "validation": "unseen speakers of the training engines, unseen sentences (for model selection)",
    "test": "unseen speakers of the training engines, unseen sentences from the training text sources",
    "test_unseen_engine": "engines / voice families never heard in training (whole speakers held out), unseen "
                          "sentences from the training text sources",
    "test_unseen_text": "training speakers reading text from sources never used in training",
}


def corpus_readme(plan: Sequence[Utterance], output_dir: str | os.PathLike, settings: dict) -> str:
    """The corpus README (Markdown): the command's settings, a table per split, which voices and text sources went
    to which split, and how much of the unseen text is outside the training vocabulary."""
    by_split: dict[str, list[Utterance]] = defaultdict(list)
    for utterance in plan:
        by_split[utterance.split].append(utterance)
    lines = [README_MARKER, "# Synthetic speech corpus", "",
             "Every utterance is synthetic speech from Debian's synthesisers (espeak-ng, flite, festival, MBROLA), "
             "made by `training/make_corpus.py` with these settings:", "", "```json",
             json.dumps(settings, sort_keys=True), "```", "", "```", corpus_summary(output_dir), "```", "",
             "## Splits", ""]
    lines += [f"- `{split}`: {SPLIT_DESCRIPTIONS[split]}." for split in ALL_SPLITS if by_split.get(split)]
    lines += ["", "## Voices per split", "",
              "A speaker is a voice identity; a speaker's voices in several engines (flite `kal16` and festival "
              "`kal_diphone`; espeak-ng `mb-us1` and festival `us1_mbrola`) always share a split.", ""]
    for split in ALL_SPLITS:
        utterances = by_split.get(split)
        if not utterances:
            continue
        voices = sorted({u.voice for u in utterances}, key=lambda v: (v.engine, v.voice))
        accents = Counter(v.stratum for v in voices if v.engine == "espeak-ng" and v.stratum in ESPEAK_ACCENTS)
        named = [f"{v.engine} `{v.voice}` ({v.speaker})" for v in voices
                 if v.engine != "espeak-ng" or v.stratum not in ESPEAK_ACCENTS]
        parts = []
        if accents:
            parts.append("espeak-ng accent+variant voices: " + ", ".join(f"{accent} {count}"
                                                                          for accent, count in sorted(accents.items())))
        if named:
            parts.append(", ".join(named))
        lines.append(f"- `{split}` ({len({v.speaker for v in voices})} speakers): " + "; ".join(parts) + ".")
    train_words = {word for u in by_split.get("train", []) for word in u.transcript.split()}
    lines += ["", "## Text per split", ""]
    for split in ALL_SPLITS:
        utterances = by_split.get(split)
        if not utterances:
            continue
        sources = Counter(u.source for u in utterances)
        line = (f"- `{split}`: " + ", ".join(f"{source} {count}" for source, count in sorted(sources.items()))
                + f" utterances, {len({u.transcript for u in utterances})} distinct sentences")
        if split != "train" and train_words:
            words = [word for u in utterances for word in u.transcript.split()]
            oov = sum(word not in train_words for word in words)
            with_oov = sum(any(word not in train_words for word in u.transcript.split()) for u in utterances)
            line += (f"; {100 * oov / len(words):.1f}% of its words are not in the training transcripts, "
                     f"{100 * with_oov / len(utterances):.0f}% of its utterances have at least one such word")
        lines.append(line + ".")
    lines += ["", "No transcript occurs in two splits.", ""]
    return "\n".join(lines)


def write_corpus_readme(plan: Sequence[Utterance], output_dir: str | os.PathLike, settings: dict) -> Path:
    """Write `corpus_readme` to ``<output_dir>/README.md``, or to ``README.make_corpus.md`` when a README.md that
    this script did not write is there (a hand-written one is never overwritten).

    Returns:
        The path written.
    """
    path = Path(output_dir) / "README.md"
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith(README_MARKER):
        path = path.with_name("README.make_corpus.md")
    partial = path.with_name(path.name + ".partial")
    partial.write_text(corpus_readme(plan, output_dir, settings), encoding="utf-8")
    os.replace(partial, path)
    return path


# -------------------------------------------------------------------------------------------------------------- CLI

# How a split's utterances are shared among its voices: per speaker (each speaker reads about as much) or per stratum.
BALANCES = ("speaker", "stratum")
DEFAULTS = dict(output_dir=None, hours=1.0, max_utterances=None, validation_size=0.1, test_size=0.1,
                validation_speakers=0.1, test_speakers=0.1, voices=None, engines=list(ENGINES),
                text_sources=list(TEXT_SOURCES), min_words=3, max_words=20, vocabulary_size=None,
                rate_range=[0.8, 1.25], pitch_range=[0.7, 1.4], num_workers=2, seed=0, audio_format="flac",
                unseen_engines=[], unseen_engine_size=None, unseen_text_sources=[], unseen_text_file=None,
                unseen_text_size=None, balance="speaker")
# The bundled demo: short sentences over the 200 most frequent words, 42 held-out utterances per split, Opus to stay
# under 10 MB with ~33 minutes of training audio (each training sentence read by about two voices).
# Its voices are the ones it was made with (espeak-ng accents and the CMU speakers), so that installing the MBROLA
# and CSTR voices does not change its plan.
DEMO = dict(output_dir="data/demo", hours=0.6, validation_size=42, test_size=42, min_words=3, max_words=8,
            vocabulary_size=200, audio_format="opus", voices=["espeak-ng:en-*", "cmu-*"])


def make_corpus(output_dir: str | os.PathLike, hours: float | None = 1.0, max_utterances: int | None = None,
                validation_size: float = 0.1, test_size: float = 0.1, validation_speakers: float = 0.1,
                test_speakers: float = 0.1, voices: Sequence[str] | None = None, engines: Sequence[str] = ENGINES,
                text_sources: Sequence[str] = TEXT_SOURCES, min_words: int = 3, max_words: int = 20,
                vocabulary_size: int | None = None, rate_range: Sequence[float] = (0.8, 1.25),
                pitch_range: Sequence[float] = (0.7, 1.4), num_workers: int = 2, seed: int = 0,
                audio_format: str = "flac", unseen_engines: Sequence[str] = (),
                unseen_engine_size: float | None = None, unseen_text_sources: Sequence[str] = (),
                unseen_text_file: str | os.PathLike | None = None, unseen_text_size: float | None = None,
                balance: str = "speaker", sentences: Sequence[Sentence] | None = None, unseen_sentences: Sequence[Sentence] | None = None,
                progress: bool = True, log=print) -> dict[str, object]:
    """Plan, synthesise (what is missing) and write the metadata and README of a corpus; the CLI's whole job.

    `unseen_engines` (families of `VOICE_FAMILIES` or voice patterns) become the `test_unseen_engine` split;
    `unseen_text_sources` (taken out of the training sources) and/or the sentences of `unseen_text_file` become
    the `test_unseen_text` split. Their sizes default to `test_size`. `sentences` replaces the text sources and
    `unseen_sentences` the unseen text (tests pass a few). Returns ``{"plan", "synthesis", "counts", "notes",
    "readme"}``.
    """
    settings = {key: value for key, value in locals().items()
                if key not in ("sentences", "unseen_sentences", "progress", "log")}
    settings["output_dir"] = str(output_dir)
    available, notes = available_voices(engines, voices)
    seen_voices, unseen_voices = hold_out_voices(available, unseen_engines)
    unknown = set(unseen_text_sources) - set(TEXT_SOURCES)
    if unknown:
        raise CorpusSettingsError(f"unknown unseen text sources {sorted(unknown)}; choose from {TEXT_SOURCES}")
    if sentences is None:
        training_sources = [source for source in text_sources if source not in unseen_text_sources]
        if not training_sources:
            raise CorpusSettingsError(f"--unseen_text_sources {list(unseen_text_sources)} leaves no text source for "
                                      "training: keep at least one of --text_sources for training")
        sentences, text_notes = load_sentences(training_sources, min_words, max_words)
        notes += text_notes
    if unseen_sentences is None:
        unseen_sentences = []
        if unseen_text_sources:
            unseen_sentences, text_notes = load_sentences(unseen_text_sources, min_words, max_words)
            notes += text_notes
        if unseen_text_file is not None:
            if not os.path.isfile(unseen_text_file):
                raise CorpusSettingsError(f"--unseen_text_file {unseen_text_file} is not a file: give a UTF-8 text "
                                          "file with one passage or sentence per line")
            seen = {sentence.transcript for sentence in unseen_sentences}
            unseen_sentences += clean_sentences(read_text_file(unseen_text_file), Path(unseen_text_file).name,
                                                min_words, max_words, seen)
        if (unseen_text_sources or unseen_text_file is not None) and not unseen_sentences:
            raise CorpusSettingsError("the unseen text gave no usable sentence: check --unseen_text_file, "
                                      "--min_words and --max_words")
    if vocabulary_size:
        sentences = restrict_vocabulary(sentences, vocabulary_size)
    for note in notes:
        log(f"note: {note}")
    plan = plan_corpus(sentences, seen_voices, hours=hours, max_utterances=max_utterances,
                       validation_size=validation_size, test_size=test_size,
                       validation_speakers=validation_speakers, test_speakers=test_speakers,
                       rate_range=tuple(rate_range), pitch_range=tuple(pitch_range), seed=seed,
                       audio_format=audio_format, unseen_engine_voices=unseen_voices,
                       unseen_engine_size=test_size if unseen_engine_size is None else unseen_engine_size,
                       unseen_text_sentences=unseen_sentences,
                       unseen_text_size=test_size if unseen_text_size is None else unseen_text_size, balance=balance)
    log(f"{len(sentences)} sentences, {len({v.speaker for v in available})} speakers "
        f"({', '.join(f'{e} {n}' for e, n in sorted(Counter(v.engine for v in available).items()))} voices"
        + (f"; {len({v.speaker for v in unseen_voices})} held out as unseen engines" if unseen_voices else "")
        + f"); plan: {dict(Counter(u.split for u in plan))} utterances")
    synthesis = synthesize_corpus(plan, output_dir, num_workers=num_workers, progress=progress)
    counts = write_metadata(plan, output_dir)
    log(f"written {synthesis['written']}, already there {synthesis['skipped']}, failed {len(synthesis['failed'])}")
    for path, error in synthesis["failed"][:10]:
        log(f"  failed: {path}: {error}")
    # glob, not iterdir: a split with no utterances has no folder.
    stale = sum(1 for split in ALL_SPLITS for path in (Path(output_dir) / split).glob("*")
                if path.suffix in SOUNDFILE_FORMATS) - sum(counts.values())
    if stale:
        log(f"note: {stale} audio files under {output_dir} are not in this plan (from other settings); "
            "they are not in the metadata")
    log(corpus_summary(output_dir))
    readme = write_corpus_readme(plan, output_dir, settings)
    log(f"voices and texts per split: {readme}")
    return {"plan": plan, "synthesis": synthesis, "counts": counts, "notes": notes, "readme": readme}


def parse_args(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Parse the command line into `make_corpus` keyword arguments (defaults: `DEFAULTS`, or `DEMO` over them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arg = parser.add_argument
    arg("--demo", action="store_true", help=f"the bundled demo corpus: {DEMO} (other options still apply)")
    arg("--output_dir", help="corpus folder (required unless --demo)")
    arg("--hours", type=float, help=f"target hours of training audio (default {DEFAULTS['hours']})")
    arg("--max_utterances", type=int, help="cap on utterances in all splits together")
    arg("--validation_size", type=float, help="fraction of all utterances (< 1) or count (default 0.1)")
    arg("--test_size", type=float, help="fraction of all utterances (< 1) or count (default 0.1)")
    arg("--validation_speakers", type=float, help="fraction of each accent's speakers held out (default 0.1)")
    arg("--test_speakers", type=float, help="fraction of each accent's speakers held out (default 0.1)")
    arg("--voices", nargs="+", help="keep voices matching these patterns: 'espeak-ng:en-gb*', 'flite:*', 'cmu-*'")
    arg("--engines", nargs="+", choices=ENGINES, help=f"synthesisers to use (default: {' '.join(ENGINES)})")
    arg("--text_sources", nargs="+", choices=TEXT_SOURCES, help="default: all")
    arg("--min_words", type=int, help=f"default {DEFAULTS['min_words']}")
    arg("--max_words", type=int, help=f"default {DEFAULTS['max_words']}")
    arg("--vocabulary_size", type=int, help="keep sentences made of the N most frequent words only")
    arg("--rate_range", type=float, nargs=2, help="speaking-rate factors, uniform (default 0.8 1.25)")
    arg("--pitch_range", type=float, nargs=2, help="pitch factors, uniform (default 0.7 1.4)")
    arg("--num_workers", type=int, help="parallel synthesiser processes (default 2)")
    arg("--seed", type=int, help="same seed and settings, same corpus (default 0)")
    arg("--audio_format", choices=sorted(AUDIO_FORMATS),
        help="flac (lossless, default) or opus (.ogg, about 4x smaller)")
    arg("--unseen_engines", nargs="+", metavar="FAMILY_OR_PATTERN",
        help=f"hold these voice families ({', '.join(sorted(VOICE_FAMILIES))}) or voice patterns out of training, "
             "whole speakers, as a test_unseen_engine split")
    arg("--unseen_engine_size", type=float, help="fraction (< 1) or count of test_unseen_engine (default: --test_size)")
    arg("--unseen_text_sources", nargs="+", choices=TEXT_SOURCES,
        help="text sources used only for a test_unseen_text split (taken out of --text_sources)")
    arg("--unseen_text_file", help="UTF-8 text file (one passage per line) used only for test_unseen_text")
    arg("--unseen_text_size", type=float, help="fraction (< 1) or count of test_unseen_text (default: --test_size)")
    arg("--balance", choices=BALANCES,
        help="share each split's utterances equally per speaker (default) or per stratum: espeak-ng accent, MBROLA, "
             "CMU, CSTR (so the few MBROLA or festival speakers are not drowned by espeak-ng's hundreds of variants)")
    args = vars(parser.parse_args(argv))
    settings = dict(DEFAULTS)
    if args.pop("demo"):
        settings.update(DEMO)
    settings.update({key: value for key, value in args.items() if value is not None})
    if settings["output_dir"] is None:
        parser.error("--output_dir is required (or --demo)")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    print("settings: " + json.dumps(settings))
    try:
        result = make_corpus(**settings)
    except (SynthesizerNotFound, CorpusSettingsError) as error:  # a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if result["synthesis"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
