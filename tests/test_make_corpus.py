"""training/make_corpus.py: planning (pure), synthesis with espeak-ng/festival when installed, and the bundled demo."""

import csv
import importlib.util
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import soundfile

from hf_prunable_ctc.data.text import ALPHABET

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data" / "demo"


def _load_make_corpus():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "training" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mc = _load_make_corpus()

ESPEAK_US_GB = ["espeak-ng:en-us+*", "espeak-ng:en-gb+*"]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SENTENCES = [
    mc.Sentence(text, mc.clean_sentence(text), "test")
    for text in [
        "The cat sat on the mat.", "A dog ran in the park.", "We all had a good time.", "The sun went down.",
        "Give me the red book.", "She was his first love.", "They know his voice.", "Now hear this!",
        "It is not over yet.", "Go and see the sea.", "He said nothing at all.", "The bird can sing.",
        "Come back to me soon.", "I was here first.", "Bring the water home.", "Open the door slowly.",
    ]
]


def _voice(speaker, engine="espeak-ng", voice=None, stratum="en-us", pitch=True):
    return mc.Voice(speaker, engine, voice or speaker.split(":")[-1], stratum, pitch)


def _rows(corpus_dir):
    return mc.read_metadata(corpus_dir)


# ---------------------------------------------------------------------------------------------------------- planning


def test_split_speakers_is_speaker_disjoint_and_keeps_engine_twins_together():
    voices = [v for v in mc.all_voices() if v.engine != "espeak-ng" or v.voice.split("+")[0] in ("en-us", "en-gb")]
    splits = mc.split_speakers(voices, 0.1, 0.1, seed=3)
    speakers = {split: {v.speaker for v in vs} for split, vs in splits.items()}
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]
    assert sum(len(vs) for vs in splits.values()) == len(voices)
    for twin in ("cmu-kal", "cmu-slt"):  # flite and festival voices of one speaker share a split
        homes = [split for split, vs in splits.items() if any(v.speaker == twin for v in vs)]
        assert len(homes) == 1 and sum(v.speaker == twin for v in splits[homes[0]]) == 2
    # every stratum with at least 3 speakers (accent, CMU, MBROLA speakers) is represented in the held-out splits;
    # the two CSTR speakers (festival rab, don) are too few to give one away
    for split in ("validation", "test"):
        assert {v.stratum for v in splits[split]} == {"en-us", "en-gb", "cmu", "mbrola"}


def test_split_speakers_needs_three_speakers():
    with pytest.raises(mc.CorpusSettingsError, match="too few"):
        mc.split_speakers([_voice("espeak-ng:en-us"), _voice("espeak-ng:en-us+f1")])


def test_plan_is_reproducible_and_disjoint():
    voices = [_voice(f"espeak-ng:en-us+{v}") for v in ("f1", "f2", "f3", "m1", "m2", "m3", "m4")]
    plan = mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=12, seed=7)
    assert plan == mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=12, seed=7)
    assert plan != mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=12, seed=8)
    assert Counter(u.split for u in plan) == {"train": 10, "validation": 1, "test": 1}
    by_split = {split: [u for u in plan if u.split == split] for split in mc.SPLITS}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not {u.voice.speaker for u in by_split[a]} & {u.voice.speaker for u in by_split[b]}
        assert not {u.transcript for u in by_split[a]} & {u.transcript for u in by_split[b]}
    assert len({(u.split, u.file_name) for u in plan}) == len(plan)
    assert all(0.8 <= u.rate <= 1.25 and 0.7 <= u.pitch <= 1.4 for u in plan)


def test_plan_sizes_from_hours_and_reuse_of_sentences():
    voices = [_voice(f"espeak-ng:en-us+f{i}") for i in range(1, 6)]
    plan = mc.plan_corpus(SENTENCES, voices, hours=0.02, validation_size=2, test_size=2, seed=0)
    counts = Counter(u.split for u in plan)
    assert counts["validation"] == 2 and counts["test"] == 2
    train_seconds = sum(mc._estimated_seconds(u.transcript, 1.0) for u in plan if u.split == "train")
    assert train_seconds == pytest.approx(0.02 * 3600, rel=0.3)
    assert counts["train"] > len(SENTENCES) - 4  # more than the 12 train sentences: some are read twice
    with pytest.raises(mc.CorpusSettingsError):
        mc.plan_corpus(SENTENCES[:3], voices, hours=None, max_utterances=30, validation_size=2, test_size=2)


def test_opus_files_are_planned_written_and_decoded(tmp_path):
    import numpy as np

    from hf_prunable_ctc.data.audio import load_audio

    voices = [_voice(f"espeak-ng:en-us+f{i}") for i in range(1, 6)]
    plan = mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=6, audio_format="opus")
    assert {Path(u.file_name).suffix for u in plan} == {".ogg"}
    with pytest.raises(mc.CorpusSettingsError, match="audio_format"):
        mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=6, audio_format="mp3")

    t = np.arange(22050) / 22050  # 1 s of a 300 Hz tone at 22.05 kHz, written resampled to 16 kHz Opus
    seconds = mc.write_audio(np.sin(2 * np.pi * 300 * t), 22050, tmp_path / "tone.ogg")
    assert soundfile.info(str(tmp_path / "tone.ogg")).format == "OGG"
    decoded = load_audio(str(tmp_path / "tone.ogg"))
    assert len(decoded) == pytest.approx(seconds * 16000, abs=1)
    assert np.abs(decoded).max() == pytest.approx(mc.PEAK_LEVEL, rel=0.2)  # lossy, but the signal is there


def test_restrict_vocabulary_and_sentence_splitting():
    sentences = [mc.Sentence(t, mc.clean_sentence(t), "x") for t in ["the cat", "the dog", "the cat sat", "a bird"]]
    kept = mc.restrict_vocabulary(sentences, 2)  # THE (3), CAT (2)
    assert [s.transcript for s in kept] == ["THE CAT"]
    assert mc.split_sentences("And God said, Let there be light: and there was light.  Amen") == [
        "And God said, Let there be light:", "and there was light.", "Amen"]
    assert mc.text_for_synthesis('-- "Go home," he said') == "Go home, he said"


def test_read_fortunes_drops_attributions_and_excluded_files(tmp_path):
    (tmp_path / "wisdom").write_text("Be kind.\n\t\t-- Someone Famous\n%\nLook twice,\nthen leap.\n")
    (tmp_path / "wisdom.dat").write_bytes(b"\0\1")
    (tmp_path / "ethnic").write_text("Not used.\n")
    assert list(mc.read_fortunes(str(tmp_path))) == ["Be kind.", "Look twice, then leap."]


def test_festival_script_quotes_text(tmp_path):
    voice = mc.Voice("cmu-kal", "festival", "kal_diphone", "cmu")
    utterance = mc.Utterance("train", "x.flac", 'say "hi" \\ now', "SAY HI NOW", "t", voice, 1.25, 1.0)
    script = mc.festival_script([utterance], [tmp_path / "0.wav"])
    assert "(voice_kal_diphone)" in script and "Duration_Stretch 0.8000" in script
    assert '(SynthText "say \\"hi\\" \\\\ now")' in script


# ------------------------------------------------------------------------------------------- held-out splits

UNSEEN_TEXT = [
    mc.Sentence(text, mc.clean_sentence(text), "other")
    for text in ["Quantum lizards juggle purple violins.", "The cat sat on the mat.", "Seven zebras waltzed quietly.",
                 "Bring the water home.", "Our kettle whistles at dawn."]
]


def test_hold_out_voices_takes_whole_speakers_across_engines():
    voices = mc.all_voices()
    seen, unseen = mc.hold_out_voices(voices, ["flite"])
    held = {(v.engine, v.voice) for v in unseen}
    # flite's speakers leave with their festival twins, so their vocal tracts are not heard in training
    assert {("flite", "kal16"), ("festival", "kal_diphone"), ("festival", "cmu_us_slt_arctic_hts")} <= held
    assert not {v.speaker for v in seen} & {v.speaker for v in unseen}
    assert len(seen) + len(unseen) == len(voices)
    _, mbrola = mc.hold_out_voices(voices, ["mbrola"])
    assert {(v.engine, v.voice) for v in mbrola} == {
        ("espeak-ng", f"mb-{n}") for n in ("en1", "us1", "us2", "us3")} | {
        ("festival", f"{n}_mbrola") for n in ("en1", "us1", "us2", "us3")}
    _, diphones = mc.hold_out_voices(voices, ["festival-diphone", "cmu-awb"])
    assert {v.speaker for v in diphones} == {"cmu-kal", "cmu-ked", "cstr-rab", "cstr-don", "cmu-awb"}
    with pytest.raises(mc.CorpusSettingsError, match="'klingon' matches none"):
        mc.hold_out_voices(voices, ["klingon"])
    with pytest.raises(mc.CorpusSettingsError, match="holds out every voice"):
        mc.hold_out_voices(voices, ["espeak-ng", "flite", "festival"])
    assert mc.hold_out_voices(voices, []) == (voices, [])


def _mixed_voices():
    voices = [_voice(f"espeak-ng:en-us+{v}") for v in ("f1", "f2", "f3", "m1", "m2", "m3", "m4")]
    voices += [mc.Voice("cmu-kal", "flite", "kal16", "cmu"), mc.Voice("cmu-kal", "festival", "kal_diphone", "cmu"),
               mc.Voice("cmu-slt", "flite", "slt", "cmu"), mc.Voice("cstr-rab", "festival", "rab_diphone", "cstr")]
    return voices


def test_plan_with_unseen_engine_and_unseen_text_splits():
    seen, unseen = mc.hold_out_voices(_mixed_voices(), ["flite"])
    plan = mc.plan_corpus(SENTENCES, seen, hours=None, max_utterances=14, seed=2, unseen_engine_voices=unseen,
                          unseen_engine_size=2, unseen_text_sentences=UNSEEN_TEXT, unseen_text_size=3)
    by_split = {split: [u for u in plan if u.split == split] for split in mc.ALL_SPLITS}
    assert {split: len(us) for split, us in by_split.items()} == {
        "train": 7, "validation": 1, "test": 1, "test_unseen_engine": 2, "test_unseen_text": 3}
    assert {u.voice.speaker for u in by_split["test_unseen_engine"]} <= {"cmu-kal", "cmu-slt"}
    others = [u for u in plan if u.split != "test_unseen_engine"]
    assert not {u.voice.speaker for u in others} & {"cmu-kal", "cmu-slt"}
    # unseen text: training speakers, sentences that are in no training source (two of UNSEEN_TEXT are)
    assert {u.voice.speaker for u in by_split["test_unseen_text"]} <= {v.speaker for v in seen}
    assert {u.transcript for u in by_split["test_unseen_text"]} == {
        "QUANTUM LIZARDS JUGGLE PURPLE VIOLINS", "SEVEN ZEBRAS WALTZED QUIETLY", "OUR KETTLE WHISTLES AT DAWN"}
    transcripts = {split: {u.transcript for u in us} for split, us in by_split.items()}
    for a in mc.ALL_SPLITS:
        for b in mc.ALL_SPLITS:
            assert a == b or not transcripts[a] & transcripts[b], (a, b)


def test_unseen_text_leaves_the_base_plan_unchanged():
    voices = _mixed_voices()
    sizes = dict(hours=None, validation_size=1, test_size=1, seed=5)
    base = mc.plan_corpus(SENTENCES, voices, max_utterances=12, **sizes)
    with_text = mc.plan_corpus(SENTENCES, voices, max_utterances=15, unseen_text_sentences=UNSEEN_TEXT,
                               unseen_text_size=3, **sizes)
    assert [u for u in with_text if u.split in mc.SPLITS] == base
    assert not {u.split for u in base} & set(mc.HELD_OUT_SPLITS)
    with pytest.raises(mc.CorpusSettingsError, match="cannot fill test_unseen_text"):
        mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=20, unseen_text_sentences=UNSEEN_TEXT,
                       unseen_text_size=4)


def test_parse_args_held_out_options():
    settings = mc.parse_args(["--output_dir", "x", "--unseen_engines", "flite", "festival:rab_diphone",
                              "--unseen_text_sources", "wordnet", "--unseen_text_size", "50"])
    assert settings["unseen_engines"] == ["flite", "festival:rab_diphone"]
    assert settings["unseen_text_sources"] == ["wordnet"] and settings["unseen_text_size"] == 50
    assert mc.parse_args(["--output_dir", "x"])["unseen_engines"] == []


def test_readme_says_which_voices_and_texts_went_where_and_keeps_a_handwritten_readme(tmp_path):
    seen, unseen = mc.hold_out_voices(_mixed_voices(), ["flite"])
    plan = mc.plan_corpus(SENTENCES, seen, hours=None, max_utterances=14, seed=2, unseen_engine_voices=unseen,
                          unseen_engine_size=2, unseen_text_sentences=UNSEEN_TEXT, unseen_text_size=3)
    path = mc.write_corpus_readme(plan, tmp_path, {"seed": 2})
    assert path == tmp_path / "README.md"
    text = path.read_text()
    engine_line = next(line for line in text.splitlines() if line.startswith("- `test_unseen_engine` ("))
    assert "cmu-kal" in engine_line or "cmu-slt" in engine_line
    train_line = next(line for line in text.splitlines() if line.startswith("- `train` ("))
    assert "festival `rab_diphone` (cstr-rab)" in train_line and "en-us " in train_line and "flite" not in train_line
    text_line = next(line for line in text.splitlines() if line.startswith("- `test_unseen_text`: other 3"))
    assert "100% of its utterances have at least one such word" in text_line
    mc.write_corpus_readme(plan, tmp_path, {"seed": 3})  # its own README: rewritten
    assert '"seed": 3' in path.read_text()

    handwritten = tmp_path / "mine"
    handwritten.mkdir()
    (handwritten / "README.md").write_text("# My corpus\n")
    assert mc.write_corpus_readme(plan, handwritten, {}) == handwritten / "README.make_corpus.md"
    assert (handwritten / "README.md").read_text() == "# My corpus\n"


# ------------------------------------------------------------------------------------------- missing synthesisers


def test_missing_synthesizer_names_the_package(monkeypatch, capsys):
    monkeypatch.setattr(mc.shutil, "which", lambda name: None)
    with pytest.raises(mc.SynthesizerNotFound, match="espeak-ng not found: apt-get install espeak-ng"):
        mc.available_voices(["espeak-ng"])
    assert mc.main(["--output_dir", "unused", "--engines", "flite"]) == 2
    assert "flite not found: apt-get install flite" in capsys.readouterr().err


@needs_espeak
def test_some_synthesizers_missing_uses_the_rest(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(mc.shutil, "which", lambda name: None if name in ("flite", "festival") else real_which(name))
    voices, notes = mc.available_voices()
    assert voices and {v.engine for v in voices} == {"espeak-ng"}
    assert "flite not found: apt-get install flite" in notes
    assert "festival not found: apt-get install festival" in notes


# --------------------------------------------------------------------------------------------------- synthesis


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    output_dir = tmp_path_factory.mktemp("corpus")
    result = mc.make_corpus(output_dir, hours=None, max_utterances=10, voices=ESPEAK_US_GB, sentences=SENTENCES,
                            seed=1, progress=False, log=lambda line: None)
    return output_dir, result


def test_corpus_layout_and_audio(corpus):
    output_dir, result = corpus
    assert result["synthesis"]["failed"] == [] and result["synthesis"]["written"] == 10
    rows = _rows(output_dir)
    assert set(rows) == set(mc.SPLITS)
    assert sum(len(r) for r in rows.values()) == 10
    for split in mc.SPLITS:
        with open(output_dir / split / "metadata.csv", newline="") as file:
            assert tuple(next(csv.reader(file))) == mc.METADATA_COLUMNS
        for row in rows[split]:
            info = soundfile.info(str(output_dir / split / row["file_name"]))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            assert float(row["duration"]) == pytest.approx(info.duration, abs=1e-3) and info.duration > 0.3
            assert row["engine"] == "espeak-ng" and row["speaker"] == f"espeak-ng:{row['voice']}"
            assert set(row["transcription"]) <= set(ALPHABET)
    speakers = {split: {row["speaker"] for row in rows[split]} for split in mc.SPLITS}
    assert not speakers["train"] & (speakers["validation"] | speakers["test"])
    assert not speakers["validation"] & speakers["test"]
    assert not list(output_dir.rglob("*.partial"))


def test_rerun_resumes(corpus):
    output_dir, result = corpus
    first = result["plan"][0]
    removed = output_dir / first.split / first.file_name
    others = {u.file_name: (output_dir / u.split / u.file_name).stat().st_mtime_ns for u in result["plan"][1:]}
    removed.unlink()
    mc.write_metadata(result["plan"], output_dir)  # metadata lists the planned files that exist
    assert len(_rows(output_dir)[first.split]) == sum(u.split == first.split for u in result["plan"]) - 1

    again = mc.make_corpus(output_dir, hours=None, max_utterances=10, voices=ESPEAK_US_GB, sentences=SENTENCES,
                           seed=1, progress=False, log=lambda line: None)
    assert again["plan"] == result["plan"]
    assert (again["synthesis"]["written"], again["synthesis"]["skipped"]) == (1, 9)
    assert removed.exists()
    assert {u.file_name: (output_dir / u.split / u.file_name).stat().st_mtime_ns for u in result["plan"][1:]} == others
    assert sum(len(r) for r in _rows(output_dir).values()) == 10


@pytest.mark.skipif(shutil.which("festival") is None or shutil.which("flite") is None,
                    reason="festival and flite are not installed")
def test_cmu_voices_in_batches(tmp_path):
    voices, _ = mc.available_voices(["flite", "festival"])
    if len({v.speaker for v in voices}) < 3:
        pytest.skip("festival voice packages are not installed")
    result = mc.make_corpus(tmp_path, hours=None, max_utterances=8, engines=["flite", "festival"],
                            sentences=SENTENCES, seed=0, progress=False, log=lambda line: None)
    assert result["synthesis"]["failed"] == []
    rows = [row for split_rows in _rows(tmp_path).values() for row in split_rows]
    assert len(rows) == 8 and all(float(row["duration"]) > 0.3 for row in rows)


needs_all_engines = pytest.mark.skipif(
    any(shutil.which(name) is None for name in ("espeak-ng", "flite", "festival")),
    reason="espeak-ng, flite and festival are not all installed (" + mc.APT_INSTALL_ALL + ")")


@needs_all_engines
def test_corpus_with_held_out_splits(tmp_path):
    text_file = tmp_path / "unseen.txt"  # one passage per line, cut into sentences like the text sources
    text_file.write_text("Quantum lizards juggle purple violins. Seven zebras waltzed quietly.\n\n"
                         "The cat sat on the mat.\n")
    with pytest.raises(mc.CorpusSettingsError, match="--unseen_text_file .* is not a file"):
        mc.make_corpus(tmp_path, hours=None, max_utterances=9, sentences=SENTENCES, unseen_text_file="nope.txt",
                       log=lambda line: None)
    corpus_dir = tmp_path / "corpus"
    result = mc.make_corpus(corpus_dir, hours=None, max_utterances=9, voices=["espeak-ng:en-us+*", "flite:*"],
                            sentences=SENTENCES, unseen_text_file=str(text_file), unseen_engines=["flite"],
                            test_size=2, validation_size=1, unseen_engine_size=2, unseen_text_size=2, seed=0,
                            progress=False, log=lambda line: None)
    assert result["synthesis"]["failed"] == []
    rows = _rows(corpus_dir)
    assert {split: len(r) for split, r in rows.items()} == {
        "train": 2, "validation": 1, "test": 2, "test_unseen_engine": 2, "test_unseen_text": 2}
    assert {row["engine"] for row in rows["test_unseen_engine"]} == {"flite"}
    assert all(row["engine"] == "espeak-ng" for split in mc.SPLITS for row in rows[split])
    # the file's sentence that is also a training-source sentence is not used
    assert {row["transcription"] for row in rows["test_unseen_text"]} == {
        "QUANTUM LIZARDS JUGGLE PURPLE VIOLINS", "SEVEN ZEBRAS WALTZED QUIETLY"}
    for row in rows["test_unseen_engine"] + rows["test_unseen_text"]:
        assert float(row["duration"]) > 0.3
    readme = (corpus_dir / "README.md").read_text()
    assert "test_unseen_engine" in readme and "flite `" in readme and "- `test_unseen_text`: unseen.txt 2" in readme


@pytest.mark.skipif(shutil.which("mbrola") is None or not os.path.isdir("/usr/share/mbrola/us1")
                    or shutil.which("festival") is None or shutil.which("espeak-ng") is None,
                    reason="MBROLA voices are not installed (Debian contrib/non-free: " + mc.APT_INSTALL_ALL + ")")
def test_mbrola_and_cstr_voices_synthesise(tmp_path):
    voices, _ = mc.available_voices(patterns=["mbrola-*", "cstr-*"])
    assert {(v.engine, v.voice) for v in voices} >= {("espeak-ng", "mb-us1"), ("festival", "us1_mbrola")}
    result = mc.make_corpus(tmp_path, hours=None, max_utterances=8, voices=["mbrola-*", "cstr-*"],
                            sentences=SENTENCES, seed=0, progress=False, log=lambda line: None)
    assert result["synthesis"]["failed"] == []
    rows = [row for split_rows in _rows(tmp_path).values() for row in split_rows]
    assert len(rows) == 8 and all(float(row["duration"]) > 0.3 for row in rows)
    assert {row["engine"] for row in rows} == {"espeak-ng", "festival"}


# -------------------------------------------------------------------------------------------------- bundled demo


def test_bundled_demo_corpus_is_valid():
    rows = _rows(DEMO_DIR)
    assert set(rows) == set(mc.SPLITS), "data/demo lacks a split: regenerate with python training/make_corpus.py --demo"
    for split, split_rows in rows.items():
        assert split_rows, split
        assert tuple(split_rows[0]) == mc.METADATA_COLUMNS
        for row in split_rows:
            path = DEMO_DIR / split / row["file_name"]
            assert path.is_file(), path
            assert row["transcription"] and set(row["transcription"]) <= set(ALPHABET)
    speakers = {split: {row["speaker"] for row in split_rows} for split, split_rows in rows.items()}
    texts = {split: {row["transcription"] for row in split_rows} for split, split_rows in rows.items()}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not speakers[a] & speakers[b], f"{a} and {b} share speakers"
        assert not texts[a] & texts[b], f"{a} and {b} share sentences"
    assert len(rows["train"]) > 4 * len(rows["test"])
    sample = rows["test"][0]
    info = soundfile.info(str(DEMO_DIR / "test" / sample["file_name"]))
    assert (info.samplerate, info.channels) == (16000, 1)

    files = [path for path in DEMO_DIR.rglob("*") if path.is_file()]
    # What a clone downloads (du counts ~40% more: each of the ~1,600 small files rounds up to whole disk blocks).
    assert sum(path.stat().st_size for path in files) <= 10 * 1024 * 1024
    listed = {DEMO_DIR / split / row["file_name"] for split, split_rows in rows.items() for row in split_rows}
    assert {path for path in files if path.suffix in (".flac", ".ogg")} == listed, "unlisted audio files in data/demo"


def test_stratum_balance_gives_each_family_an_equal_share_of_every_split():
    voices = [_voice(f"espeak-ng:en-us+{v}") for v in ("f1", "f2", "f3", "f4", "m1", "m2", "m3", "m4", "m5", "m6")]
    voices += [mc.Voice(speaker, engine, name, "mbrola") for speaker, engine, name in (
        ("mbrola-us1", "espeak-ng", "mb-us1"), ("mbrola-us1", "festival", "us1_mbrola"),
        ("mbrola-us2", "espeak-ng", "mb-us2"), ("mbrola-us3", "espeak-ng", "mb-us3"))]
    by_speaker = mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=40, validation_size=2, test_size=2,
                                validation_speakers=0.1, test_speakers=0.1, seed=1)
    balanced = mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=40, validation_size=2, test_size=2,
                              validation_speakers=0.1, test_speakers=0.1, seed=1, balance="stratum")
    train = Counter(u.voice.stratum for u in balanced if u.split == "train")
    assert abs(train["mbrola"] - train["en-us"]) <= 1  # 1 of 2 strata: half of train
    assert Counter(u.voice.stratum for u in by_speaker if u.split == "train")["mbrola"] < train["mbrola"] / 2
    # a speaker with two engine voices still alternates them
    us1 = [u.voice.engine for u in balanced if u.voice.speaker == "mbrola-us1"]
    assert {"espeak-ng", "festival"} <= set(us1) or len(us1) < 2
    with pytest.raises(mc.CorpusSettingsError, match="balance"):
        mc.plan_corpus(SENTENCES, voices, hours=None, max_utterances=40, balance="engine")
