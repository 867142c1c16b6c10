"""The runtime options in the CLI: `transcribe --rtf_budget / --early_exit_threshold` and `export`."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import save_model_folder
from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.runtime.budget import profile_path


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_PRUNABLE_CTC_CACHE", str(tmp_path / "user-cache"))


@pytest.fixture
def model_dir(tmp_path):
    save_model_folder(tmp_path / "model", interctc_layers=[2])
    return tmp_path / "model"


@pytest.fixture
def audio(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32), 16000)
    return path


def run_json(capsys, *argv):
    assert main(["transcribe", *map(str, argv), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def write_profile(model_dir, rtf):
    """A synthetic latency profile for the model in `model_dir`, where profile_latency looks it up by default (the
    user's cache folder, here one under the test's folder)."""
    path = profile_path(PrunableCTCForCTC.from_pretrained(model_dir))
    profile = {"device": "synthetic", "threads": torch.get_num_threads(), "torch": torch.__version__,
               "audio_seconds": 10.0, "batch_size": 1, "rounds": 1, "rtf": {str(k): v for k, v in rtf.items()},
               "measured_rtf": {str(k): v for k, v in rtf.items()}, "adjusted": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile))


def test_json_lines_carry_the_depth_used(model_dir, audio, capsys):
    assert run_json(capsys, model_dir, audio)[0]["depth"] == 4
    assert run_json(capsys, model_dir, audio, "--depth", "3")[0]["depth"] == 3


def test_early_exit_threshold_zero_and_above_one(model_dir, audio, capsys):
    zero = run_json(capsys, model_dir, audio, "--early_exit_threshold", "0")[0]
    never = run_json(capsys, model_dir, audio, "--early_exit_threshold", "1.5")[0]
    assert zero["depth"] == 2 and never["depth"] == 4
    assert zero["text"] == run_json(capsys, model_dir, audio, "--depth", "2")[0]["text"]
    assert never["text"] == run_json(capsys, model_dir, audio)[0]["text"]


def test_rtf_budget_runs_the_deepest_depth_within_it(model_dir, audio, capsys):
    write_profile(model_dir, {k: 0.001 * k for k in range(1, 5)})
    chosen = run_json(capsys, model_dir, audio, "--rtf_budget", "0.0025")[0]
    assert chosen["depth"] == 2
    assert chosen["text"] == run_json(capsys, model_dir, audio, "--depth", "2")[0]["text"]


def test_budget_below_the_cheapest_depth_is_a_clear_error(model_dir, audio, capsys):
    write_profile(model_dir, {k: 0.001 * k for k in range(1, 5)})
    assert main(["transcribe", str(model_dir), str(audio), "--rtf_budget", "0.0001"]) == 2
    assert "no depth meets RTF 0.0001" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--depth", "2", "--early_exit_threshold", "0.5"],
                                   ["--depth", "2", "--rtf_budget", "0.1"],
                                   ["--strategy", "uniform", "--early_exit_threshold", "0.5"]])
def test_conflicting_depth_options_are_refused(model_dir, audio, capsys, extra):
    assert main(["transcribe", str(model_dir), str(audio), *extra]) == 2
    assert "error: " in capsys.readouterr().err


def test_export_writes_a_checked_onnx_model(model_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "onnx"
    assert main(["export", str(model_dir), str(out), "--depth", "2"]) == 0
    printed = capsys.readouterr().out
    assert (out / "model.onnx").is_file() and (out / "vocab.json").is_file()
    assert "depth 2" in printed
    difference = float(printed.rsplit("PyTorch: ", 1)[1])
    assert difference < 1e-3


def test_export_refuses_an_unknown_quantisation(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(model_dir), str(tmp_path / "onnx"), "--quantize", "int4"])
