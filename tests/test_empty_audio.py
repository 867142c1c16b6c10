"""Audio without samples is what any audio shorter than one 25 ms window is: zero feature frames, zero output
frames, an empty transcript, through every entry point (file, feature extractor, model, pipeline, command line)."""

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, pipeline

from conftest import save_model_folder
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.data.audio import load_audio


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_model_folder(path)
    return path


@pytest.fixture
def empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)
    return path


@pytest.mark.parametrize("num_samples", [0, 1, 100, 399])
def test_file_extractor_and_model_give_zero_frames(model_dir, tmp_path, num_samples):
    from hf_prunable_ctc import PrunableCTCForCTC

    path = tmp_path / "short.wav"
    soundfile.write(path, np.full(num_samples, 0.1, dtype=np.float32), 16000)
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    inputs = extractor(load_audio(path), sampling_rate=16000, return_tensors="pt")
    assert inputs["input_features"].shape == (1, 0, 80) and inputs["attention_mask"].shape == (1, 0)
    model = PrunableCTCForCTC.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, 0, model.config.vocab_size)
    assert AutoTokenizer.from_pretrained(model_dir).batch_decode(logits.argmax(-1)) == [""]


@pytest.mark.parametrize("num_samples", [0, 100])
def test_pipeline_gives_an_empty_transcript(model_dir, num_samples):
    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    assert asr(np.zeros(num_samples, dtype=np.float32)) == {"text": ""}


@pytest.mark.parametrize("chunking", [[], ["--chunk_length_s", "0"]])
def test_command_line_transcribes_an_empty_file_as_empty(model_dir, empty_file, capsys, chunking):
    assert main(["transcribe", str(model_dir), str(empty_file)] + chunking) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{empty_file}\t\n" and "error" not in captured.err


@pytest.mark.parametrize("options", [{}, {"chunk_length_s": 10}, {"chunk_length_s": 10, "num_layers": 2},
                                     {"early_exit_threshold": 0.5}])
def test_prunable_pipeline_gives_an_empty_transcript_chunked_or_not(model_dir, options):
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    asr = prunable_asr_pipeline(model=str(model_dir))
    assert asr(np.zeros(0, dtype=np.float32), **options)["text"] == ""
