"""One recording, one transcript: the 80 bundled test utterances give the same text through every path that carries
them (the model called one utterance at a time, the stock ASR pipeline, the package's pipeline at several depths and
with early exit, the command line, the exported ONNX graph), whatever the batch size."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, pipeline

from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
FILES = sorted((ROOT / "data" / "reference_test_subset" / "test").glob("*.flac"))
DEPTHS = (1, 4, 8)
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def audio():
    assert len(FILES) == 80
    return [load_audio(path) for path in FILES]


@pytest.fixture(scope="module")
def parts():
    return (PrunableCTCForCTC.from_pretrained(MODEL).eval(), AutoFeatureExtractor.from_pretrained(MODEL),
            AutoTokenizer.from_pretrained(MODEL))


@pytest.fixture(scope="module")
def alone(audio, parts):
    """The reference: each utterance alone through the extractor and the model, greedy ids decoded by the
    tokenizer; per depth, and with early exit (text and exit depth)."""
    model, extractor, tokenizer = parts
    texts = {depth: [] for depth in DEPTHS}
    texts["early_exit"], exits = [], []
    with torch.no_grad():
        for samples in audio:
            inputs = extractor(samples, sampling_rate=16000, return_tensors="pt")
            for depth in DEPTHS:
                logits = model(**inputs, num_layers=depth).logits
                texts[depth].append(tokenizer.decode(logits[0].argmax(-1).tolist()))
            out = model(**inputs, early_exit_threshold=THRESHOLD)
            texts["early_exit"].append(tokenizer.decode(out.logits[0].argmax(-1).tolist()))
            exits.append(int(out.exit_depths[0]))
    # Early exit must really exit at more than one depth here, or the batched check below would prove little.
    assert len(set(exits)) > 1
    return texts, exits


def differences(expected, got):
    return [(i, a, b) for i, (a, b) in enumerate(zip(expected, got)) if a != b]


@pytest.mark.parametrize("batch_size", [1, 8])
def test_stock_pipeline(audio, alone, batch_size):
    asr = pipeline("automatic-speech-recognition", model=str(MODEL))
    texts = [result["text"] for result in asr(audio, batch_size=batch_size)]
    assert differences(alone[0][8], texts) == []


@pytest.mark.parametrize("batch_size", [1, 8])
def test_prunable_pipeline_at_every_depth_and_with_early_exit(audio, alone, batch_size):
    expected, exits = alone
    asr = prunable_asr_pipeline(model=str(MODEL))
    for depth in DEPTHS:
        texts = [result["text"] for result in asr(audio, batch_size=batch_size, num_layers=depth)]
        assert differences(expected[depth], texts) == [], depth
    layers = asr.model.pruning_schedule()[4]
    assert [r["text"] for r in asr(audio, batch_size=batch_size, layers=layers)] == expected[4]
    results = asr(audio, batch_size=batch_size, early_exit_threshold=THRESHOLD)
    assert differences(expected["early_exit"], [r["text"] for r in results]) == []
    assert [r["exit_depths"] for r in results] == [[depth] for depth in exits]


@pytest.mark.parametrize("options, reference", [([], 8), (["--depth", "4"], 4),
                                                ([f"--early_exit_threshold={THRESHOLD}"], "early_exit")])
def test_command_line_batched(alone, capsys, options, reference):
    expected = alone[0][reference]
    folder = FILES[0].parent
    assert main(["transcribe", str(MODEL), str(folder), "--json", "--batch_size", "8"] + options) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == [str(path) for path in FILES]
    assert differences(expected, [line["text"] for line in lines]) == []


def test_onnx_fed_with_the_extractors_own_output(audio, alone, parts, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from hf_prunable_ctc.runtime.export import export_onnx

    _, extractor, tokenizer = parts
    export_onnx(MODEL, tmp_path / "onnx", depth=8)
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    one = [tokenizer.decode(session.run(["logits"], dict(extractor(x, sampling_rate=16000, return_tensors="np")))[0]
                            [0].argmax(-1).tolist()) for x in audio]
    assert differences(alone[0][8], one) == []
    # Batched, every frame decoded as a device would without trimming: padding decodes to nothing; trimming to
    # output_lengths gives the same.
    batched, trimmed = [], []
    for start in range(0, len(audio), 8):
        inputs = dict(extractor(audio[start:start + 8], sampling_rate=16000, padding=True, return_tensors="np"))
        logits, lengths = session.run(["logits", "output_lengths"], inputs)
        batched += [tokenizer.decode(row.argmax(-1).tolist()) for row in logits]
        trimmed += [tokenizer.decode(row[:n].argmax(-1).tolist()) for row, n in zip(logits, lengths)]
    assert np.asarray(lengths).dtype == np.int64
    assert differences(alone[0][8], batched) == [] and trimmed == batched
