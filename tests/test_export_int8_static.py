"""Static int8 export: activation scales calibrated on real audio, convolutions quantised, the every-depth folder
running in the torch-free runtime close to its float32 twin at every depth, and clear errors for missing or
misplaced calibration data."""

from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")

from conftest import save_model_folder  # noqa: E402
from hf_prunable_ctc.cli import main  # noqa: E402
from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.runtime.export import export_onnx  # noqa: E402
from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC  # noqa: E402
from hf_prunable_ctc.runtime.quantization import calibration_waveforms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "data" / "demo" / "validation"
TEST_AUDIO = sorted((ROOT / "data" / "demo" / "test").glob("*.ogg"))[:6]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_model_folder(path, encoder_type="conformer", interctc_layers=[2])
    return path


@pytest.fixture(scope="module")
def folders(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    export_onnx(model_dir, out / "float", check=False)
    result = export_onnx(model_dir, out / "static", quantize="int8-static", calibration_data=CALIBRATION,
                         calibration_utterances=12, check=False)
    return out / "float", out / "static", result


def quantised_ops(path) -> set:
    return {node.op_type for node in onnx.load(str(path)).graph.node} & {
        "QuantizeLinear", "DequantizeLinear", "QLinearConv", "DynamicQuantizeLinear", "MatMulInteger",
        "DynamicQuantizeMatMul"}


def test_static_folder_quantises_every_graph_with_its_convolutions(folders):
    float_folder, static_folder, result = folders
    assert result["quantize"] == "int8-static" and result["depth"] is None
    runtime = OnnxPrunableCTC(static_folder)
    assert runtime.config["quantize"] == "int8-static"
    for name in [runtime.config["front_end"], *runtime.config["layers"]]:
        # The convolutions (subsampling, Conformer module) carry fixed calibrated scales: QuantizeLinear nodes.
        assert "QuantizeLinear" in quantised_ops(static_folder / name), name
        assert (static_folder / name).stat().st_size < (float_folder / name).stat().st_size
    assert not list(static_folder.glob("*_fp32.onnx")) and not list(static_folder.glob("*_static.onnx"))


def test_static_folder_logits_stay_close_to_float32_at_every_depth(folders):
    float_folder, static_folder, _ = folders
    reference, quantised = OnnxPrunableCTC(float_folder, threads=1), OnnxPrunableCTC(static_folder, threads=1)
    features, mask = reference.front_end([load_audio(path) for path in TEST_AUDIO])
    runs = [{"layers": layers} for layers in reference.pruning_schedule.values()] + [{"early_exit_threshold": 0.0}]
    for options in runs:
        expected, lengths, depths = reference.logits(features, mask, **options)
        logits, quantised_lengths, quantised_depths = quantised.logits(features, mask, **options)
        assert quantised_lengths.tolist() == lengths.tolist()
        assert quantised_depths.tolist() == depths.tolist()
        valid = np.arange(expected.shape[1])[None, :] < lengths[:, None]
        scale = np.abs(expected[valid]).max()
        error = np.abs(logits - expected)[valid]
        # Measured on this tiny model: mean 0.7%, largest 5.5% of the largest logit at every depth.
        assert error.mean() < 0.015 * scale, options
        assert error.max() < 0.1 * scale, options
        assert (logits[~valid].argmax(-1) == reference.blank_id).all()  # padded frames still decode to nothing


def test_single_depth_static_file_keeps_the_float_model_beside_it(model_dir, tmp_path):
    result = export_onnx(model_dir, tmp_path / "one", depth=2, quantize="int8-static", calibration_data=CALIBRATION,
                         calibration_utterances=8)
    assert (tmp_path / "one" / "model_fp32.onnx").is_file()
    assert "QuantizeLinear" in quantised_ops(tmp_path / "one" / "model.onnx")
    assert result["max_abs_diff"] < 0.15


def test_calibration_takes_utterances_spread_over_the_split_or_a_folder_of_audio(tmp_path):
    waveforms = calibration_waveforms(CALIBRATION, 5, 16000)
    assert len(waveforms) == 5 and all(w.ndim == 1 and w.dtype == np.float32 and w.size > 0 for w in waveforms)
    # More than the split holds: all of it.
    assert len(calibration_waveforms(CALIBRATION, 10_000, 16000)) == len(list(CALIBRATION.glob("*.ogg")))
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in sorted(CALIBRATION.glob("*.ogg"))[:3]:
        (plain / path.name).write_bytes(path.read_bytes())
    (plain / "notes.txt").write_text("not audio")
    assert len(calibration_waveforms(plain, 10, 16000)) == 3


def test_bad_calibration_options_are_clear_errors_before_anything_is_written(model_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="calibration_data"):
        export_onnx(model_dir, out, quantize="int8-static")
    with pytest.raises(ValueError, match="int8-static"):
        export_onnx(model_dir, out, quantize="int8", calibration_data=CALIBRATION)
    with pytest.raises(ValueError, match="not a folder"):
        export_onnx(model_dir, out, quantize="int8-static", calibration_data=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no audio"):
        export_onnx(model_dir, out, quantize="int8-static", calibration_data=tmp_path / "empty")
    with pytest.raises(ValueError, match="calibration_utterances"):
        export_onnx(model_dir, out, quantize="int8-static", calibration_data=CALIBRATION, calibration_utterances=0)
    assert not out.exists()


def test_cli_names_the_missing_calibration_option(model_dir, tmp_path, capsys):
    assert main(["export", str(model_dir), str(tmp_path / "out"), "--quantize", "int8-static"]) == 2
    assert "--calibration_data" in capsys.readouterr().err
