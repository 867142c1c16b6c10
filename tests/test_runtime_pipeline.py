"""The package's ASR pipeline: depth, RTF budget or early exit per call, with no reload; the same outputs as the stock
pipeline; files, bytes and other sampling rates without ffmpeg or torchaudio."""

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, pipeline

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.runtime.asr_pipeline import PrunableASRPipeline, prunable_asr_pipeline

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
SUBSET = ROOT / "data" / "reference_test_subset" / "test"


@pytest.fixture(scope="module")
def setup():
    model = PrunableCTCForCTC.from_pretrained(MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    extractor = AutoFeatureExtractor.from_pretrained(MODEL)
    rows = list(csv.DictReader(open(SUBSET / "metadata.csv")))[:3]
    clips = [load_audio(SUBSET / r["file_name"]) for r in rows]
    asr = prunable_asr_pipeline(model=model, tokenizer=tokenizer, feature_extractor=extractor, device="cpu")
    return model, tokenizer, extractor, clips, asr


def direct(model, tokenizer, extractor, audio, **options):
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        out = model(inputs["input_features"], attention_mask=inputs["attention_mask"], **options)
    return tokenizer.decode(out.logits[0].argmax(-1).tolist()), out


def test_factory_builds_the_subclass(setup):
    assert isinstance(setup[-1], PrunableASRPipeline)


def test_per_call_depth_equals_the_model_at_that_depth_and_default_is_full_depth(setup):
    model, tokenizer, extractor, clips, asr = setup
    differs = False
    for audio in clips:
        full, _ = direct(model, tokenizer, extractor, audio)
        shallow, _ = direct(model, tokenizer, extractor, audio, num_layers=2)
        assert asr(audio, num_layers=2)["text"] == shallow
        assert asr(audio, layers=[1, 2])["text"] == shallow
        assert asr(audio)["text"] == full  # the previous call's depth does not stick
        differs |= shallow != full
    assert differs, "depth 2 and 8 transcribe these clips alike: the test would not notice an ignored depth"


def test_rtf_budget_picks_the_deepest_depth_within_it(setup):
    model, tokenizer, extractor, clips, asr = setup
    asr.latency_profile = {"device": "synthetic", "rtf": {k: 0.001 * k for k in range(1, 9)}}
    try:
        expected, _ = direct(model, tokenizer, extractor, clips[0], layers=model.pruning_schedule()[3])
        assert asr(clips[0], rtf_budget=0.0035)["text"] == expected
        with pytest.raises(ValueError, match="no depth meets RTF"):
            asr(clips[0], rtf_budget=0.0005)
    finally:
        asr.latency_profile = None


def test_early_exit_reports_the_depth_and_equals_that_depth(setup):
    model, tokenizer, extractor, clips, asr = setup
    for audio in clips:
        out = asr(audio, early_exit_threshold=0.9)
        _, direct_out = direct(model, tokenizer, extractor, audio, early_exit_threshold=0.9)
        depth = direct_out.exit_depths.tolist()
        assert out["exit_depths"] == depth
        assert out["text"] == direct(model, tokenizer, extractor, audio, num_layers=depth[0])[0]
    assert asr(clips[0], early_exit_threshold=0.0)["exit_depths"] == [2]
    assert asr(clips[0], early_exit_threshold=1.5)["exit_depths"] == [8]
    assert "exit_depths" not in asr(clips[0])


def test_chunked_long_audio_at_a_depth_equals_a_pruned_copy_in_the_stock_pipeline(setup):
    model, tokenizer, extractor, clips, asr = setup
    audio = np.concatenate(clips * 3)  # about 20 s
    pruned = copy.deepcopy(model).prune_to(4)
    stock = pipeline("automatic-speech-recognition", model=pruned, tokenizer=tokenizer, feature_extractor=extractor,
                     device="cpu")
    ours = asr(audio, num_layers=4, chunk_length_s=6, stride_length_s=1)
    assert ours["text"] == stock(audio, chunk_length_s=6, stride_length_s=1)["text"]
    exited = asr(audio, early_exit_threshold=0.9, chunk_length_s=6, stride_length_s=1)
    assert len(exited["exit_depths"]) > 1 and set(exited["exit_depths"]) <= {2, 4, 6, 8}


@pytest.mark.parametrize("options, message", [
    (dict(num_layers=2, early_exit_threshold=0.5), "at most one of"),
    (dict(num_layers=2, rtf_budget=0.1), "at most one of"),
    (dict(num_layers=9), "depth must be in"),
    (dict(early_exit_threshold="high"), "early_exit_threshold must be a number"),
])
def test_bad_options_fail_before_decoding(setup, options, message):
    asr = setup[-1]
    with pytest.raises(ValueError, match=message):
        asr(setup[3][0], **options)


def test_text_and_timestamps_equal_the_stock_pipeline_for_every_input_form(setup):
    # Ours decodes with CTCTextDecoder and runs one recording without Transformers' DataLoader: same outputs.
    model, tokenizer, extractor, clips, asr = setup
    stock = pipeline("automatic-speech-recognition", model=model, tokenizer=tokenizer, feature_extractor=extractor)
    audio = np.concatenate(clips)
    for options in ({}, {"chunk_length_s": 2}, {"return_timestamps": "char"}, {"return_timestamps": "word"}):
        expected = stock(audio, **options)
        assert expected["text"] and asr(audio, **options) == expected, options
    assert asr(torch.from_numpy(audio)) == stock(audio)
    assert asr({"raw": audio, "sampling_rate": 16000}) == stock({"raw": audio, "sampling_rate": 16000})
    assert asr(clips) == stock(clips) and len(clips) == 3  # a list: one result per recording
    assert list(asr(clip for clip in clips)) == stock(clips)


def test_files_bytes_and_other_sampling_rates_need_neither_ffmpeg_nor_torchaudio(setup, tmp_path, monkeypatch):
    import shutil
    import soundfile as sf
    import soxr

    model, tokenizer, extractor, clips, asr = setup
    # The stock pipeline reads files with the ffmpeg binary and resamples with torchaudio; neither is used here.
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setitem(__import__("sys").modules, "torchaudio", None)
    expected = asr(clips[0])
    path = tmp_path / "clip.flac"
    sf.write(path, clips[0], 16000)
    assert asr(str(path)) == expected and asr(path) == expected
    assert asr(path.read_bytes()) == expected
    assert asr({"bytes": None, "path": str(path)}) == expected
    assert asr([str(path), path.read_bytes()], batch_size=2) == [expected, expected]
    # Another rate: resampled to the extractor's rate by soxr, as load_audio does for files.
    at_8k = soxr.resample(clips[0], 16000, 8000, quality="HQ")
    resampled = load_audio({"array": at_8k, "sampling_rate": 8000})
    for form in ({"raw": at_8k, "sampling_rate": 8000}, {"array": at_8k, "sampling_rate": 8000},
                 {"raw": torch.from_numpy(at_8k), "sampling_rate": 8000}):
        assert asr(form) == asr(resampled), sorted(form)
        assert asr(form, num_layers=2) == asr(resampled, num_layers=2)
    sf.write(tmp_path / "clip_8k.wav", at_8k, 8000)
    decoded = load_audio(tmp_path / "clip_8k.wav")
    assert asr(str(tmp_path / "clip_8k.wav"), chunk_length_s=2) == asr(decoded, chunk_length_s=2)
