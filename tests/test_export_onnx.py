"""ONNX export (issue 12 item 4): the exported graph equals PyTorch with padding in the batch, at any batch size and
length, at a pruned depth, and int8 quantisation gives a working model."""

import pytest
import torch

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")
import onnxruntime  # noqa: E402

from conftest import save_model_folder  # noqa: E402
from hf_prunable_ctc import PrunableCTCForCTC  # noqa: E402
from hf_prunable_ctc.runtime.export import _example_batch, export_onnx  # noqa: E402


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


def test_int8_export_runs_and_is_close(model_dir, tmp_path):
    result = export_onnx(model_dir, tmp_path, depth=4, quantize="int8")
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model_fp32.onnx").is_file()
    assert result["quantize"] == "int8" and result["max_abs_diff"] < 1.0


def test_bad_arguments_are_clear_errors(model_dir, tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of"):
        export_onnx(model_dir, tmp_path, quantize="int4")
    with pytest.raises(ValueError):
        export_onnx(model_dir, tmp_path, depth=9)
