"""Silence around speech and minute-long recordings as evaluation settings of the report."""

import csv
from pathlib import Path

import numpy as np
import pytest

from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.evaluation.conditions import (
    ConditionSettings,
    evaluate_conditions,
    format_conditions_table,
    long_form_recordings,
    with_silence,
)
from hf_prunable_ctc.evaluation.metrics import word_error_rate
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline
from hf_prunable_ctc.data.text import normalize_transcript

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
SUBSET = ROOT / "data" / "reference_test_subset" / "test"


def test_with_silence_adds_quiet_noise_of_the_given_length_and_level():
    speech = np.full(1000, 0.5, dtype=np.float32)
    out = with_silence(speech, 16000, before_s=1.0, after_s=0.5, noise_dbfs=-60.0, rng=np.random.default_rng(1))
    assert out.dtype == np.float32 and out.shape == (16000 + 1000 + 8000,)
    np.testing.assert_array_equal(out[16000:17000], speech)
    pause = np.concatenate([out[:16000], out[17000:]])
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pause.astype(np.float64) ** 2)))
    assert abs(rms_dbfs - -60.0) < 0.5
    assert np.count_nonzero(pause) == pause.size  # noise, not digital zeros


def test_long_form_recordings_cover_every_utterance_once_in_order():
    audios = [np.full(16000 * s, i + 1, dtype=np.float32) for i, s in enumerate([3, 4, 2, 5, 1])]
    references = ["A B", "C", "D E F", "G", "H"]
    settings = ConditionSettings(long_form_seconds=6.0, pause_seconds=(0.5, 0.5), noise_dbfs=-120.0)
    recordings = long_form_recordings(audios, references, 16000, settings)
    assert [text for _, text in recordings] == ["A B C", "D E F G", "H"]
    first = recordings[0][0]
    assert first.shape == (16000 * (3 + 4) + 8000,)  # two utterances and one 0.5 s pause
    assert np.all(first[:48000] == 1) and np.all(first[56000:] == 2)
    # The same seed builds the same audio.
    again = long_form_recordings(audios, references, 16000, settings)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(recordings, again))


@pytest.mark.parametrize("bad", [dict(silence_seconds=-1.0), dict(pause_seconds=(1.0, 0.5)),
                                 dict(long_form_seconds=0.0), dict(chunk_length_s=0.0)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ConditionSettings(**bad)


@pytest.fixture(scope="module")
def subset():
    rows = list(csv.DictReader(open(SUBSET / "metadata.csv")))[:4]
    return [load_audio(SUBSET / r["file_name"]) for r in rows], [normalize_transcript(r["transcription"]) for r in rows]


def test_conditions_through_the_pipeline_score_each_setting_at_each_depth(subset):
    audios, references = subset
    asr = prunable_asr_pipeline(model=str(MODEL), device="cpu")
    settings = ConditionSettings(long_form_seconds=5.0, chunk_length_s=4.0)
    result = evaluate_conditions(asr, audios, references, depths=[8, 2], settings=settings)

    assert {(r["condition"], r["depth"]) for r in result["records"]} == {
        (c, d) for c in ("clean", "silence", "long_form") for d in (8, 2)}
    # "clean" is the pipeline on the utterances as they are, scored like any other transcript.
    expected = [asr(audio, num_layers=2)["text"] for audio in audios]
    clean_2 = next(r for r in result["records"] if r["condition"] == "clean" and r["depth"] == 2)
    assert clean_2["wer"] == pytest.approx(100 * word_error_rate(references, expected))
    assert result["long_form_recordings"] == len(long_form_recordings(audios, references, 16000, settings)) >= 2
    for depth in ("8", "2"):
        row = {r["condition"]: r["wer"] for r in result["records"] if r["depth"] == int(depth)}
        assert result["cost"][depth] == pytest.approx({c: row[c] - row["clean"] for c in ("silence", "long_form")})
    table = format_conditions_table(result)
    assert table.splitlines()[2].startswith("| 8 |") and "silence cost" in table


def test_unknown_condition_and_empty_split_are_refused(subset):
    audios, references = subset
    with pytest.raises(ValueError, match="unknown conditions"):
        evaluate_conditions(object(), audios, references, depths=[1], conditions=["noisy"])
    with pytest.raises(ValueError, match="no test utterances"):
        evaluate_conditions(object(), [], [], depths=[1])
