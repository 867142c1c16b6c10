"""ONNX export: the exported graph equals PyTorch with padding in the batch, at any batch size and length, at a pruned
depth, takes the feature extractor's output as it is, int8 quantisation keeps the transcripts, and the output folder
follows the same rules as `prune` and `publish`."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")
import onnxruntime  # noqa: E402

from conftest import save_model_folder  # noqa: E402
from hf_prunable_ctc import PrunableCTCForCTC  # noqa: E402
from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.hub.output_folder import OutputFolderError  # noqa: E402
from hf_prunable_ctc.runtime.export import _example_batch, export_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_model_folder(path, interctc_layers=[2], interctc_weight=0.3)
    return path


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(model_dir, out, depth=2)


def test_export_writes_model_tokenizer_and_extractor(exported):
    out, result = exported
    assert result["path"] == str(out / "model.onnx") and result["depth"] == 2
    assert {"model.onnx", "vocab.json", "tokenizer_config.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    assert result["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("lengths", [(400, 37, 250), (64,)])
def test_onnx_matches_pytorch_with_padding_at_other_batch_sizes_and_lengths(model_dir, exported, lengths):
    out, _ = exported
    model = PrunableCTCForCTC.from_pretrained(model_dir).eval().prune_to(2)
    features, mask = _example_batch(80, lengths, seed=1)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input_features": features.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        expected = model(features, attention_mask=mask)
    assert logits.shape == tuple(expected.logits.shape)
    for i, n in enumerate(expected.output_lengths.tolist()):
        torch.testing.assert_close(torch.from_numpy(logits[i, :n]), expected.logits[i, :n], atol=1e-4, rtol=1e-4)
        # Each padded item equals running it alone.
        with torch.no_grad():
            alone = model(features[i : i + 1, : lengths[i]]).logits[0]
        torch.testing.assert_close(torch.from_numpy(logits[i, :n]), alone, atol=1e-4, rtol=1e-4)


def test_graph_takes_the_extractors_int32_mask_and_returns_output_lengths(model_dir, exported):
    out, _ = exported
    extractor = AutoFeatureExtractor.from_pretrained(out)
    waves = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1 for i, n in enumerate((16000, 9000))]
    inputs = dict(extractor(waves, sampling_rate=16000, padding=True, return_tensors="np"))
    assert inputs["attention_mask"].dtype == np.int32
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, lengths = session.run(None, inputs)
    model = PrunableCTCForCTC.from_pretrained(model_dir).eval().prune_to(2)
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    assert lengths.tolist() == expected.output_lengths.tolist() and lengths.tolist()[0] > lengths.tolist()[1]
    # Beyond its length the shorter utterance's frames are blanks: decoding every frame reads nothing there.
    assert (logits[1, lengths[1]:].argmax(-1) == model.config.pad_token_id).all()


def test_int8_keeps_the_reference_models_transcripts(tmp_path):
    """Dynamic int8 quantisation against the float graph on the bundled test utterances: measured 69 of 80
    transcripts identical and 0.6% CER between them at full depth."""
    from hf_prunable_ctc.evaluation.metrics import character_error_rate

    reference = ROOT / "model_cards" / "prunable-ctc-small-synth"
    result = export_onnx(reference, tmp_path / "int8", depth=8, quantize="int8")
    assert result["quantize"] == "int8"
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "int8")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "int8")
    features = [dict(extractor(load_audio(path), sampling_rate=16000, return_tensors="np"))
                for path in sorted((ROOT / "data" / "reference_test_subset" / "test").glob("*.flac"))]
    texts = {}
    for name in ("model_fp32.onnx", "model.onnx"):
        session = onnxruntime.InferenceSession(str(tmp_path / "int8" / name), providers=["CPUExecutionProvider"])
        texts[name] = [tokenizer.decode(session.run(["logits"], x)[0][0].argmax(-1).tolist()) for x in features]
    float_texts, int8_texts = texts["model_fp32.onnx"], texts["model.onnx"]
    assert sum(a == b for a, b in zip(float_texts, int8_texts)) >= 60
    assert 100 * character_error_rate(float_texts, int8_texts) < 1.5


def test_export_never_overwrites_files_it_did_not_write(model_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"my own model")
    (mine / "vocab.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="not written by hf-prunable-ctc"):
        export_onnx(model_dir, mine, depth=2)
    assert sorted(p.name for p in mine.iterdir()) == ["model.onnx", "vocab.json"]
    assert (mine / "model.onnx").read_bytes() == b"my own model"
    with pytest.raises(OutputFolderError, match="source model folder"):
        export_onnx(model_dir, model_dir, depth=2)


def test_a_later_export_replaces_an_earlier_one_without_leaving_its_files(model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    export_onnx(model_dir, out, depth=2, quantize="int8")
    assert (out / "model_fp32.onnx").is_file()
    export_onnx(model_dir, out, depth=2)
    assert not (out / "model_fp32.onnx").exists() and (out / "model.onnx").is_file()
    assert not [name for name in os.listdir(tmp_path) if name != "out"]  # no staging folder left behind
    # ONNX Runtime's quantiser advises pre-processing on every call: not on the user's terminal.
    captured = capsys.readouterr()
    assert "pre-process" not in captured.out + captured.err + caplog.text


def test_bad_arguments_are_clear_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_onnx(model_dir, tmp_path, quantize="int4")
    with pytest.raises(ValueError):
        export_onnx(model_dir, tmp_path, depth=9)
