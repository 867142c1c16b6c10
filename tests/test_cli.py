import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from conftest import save_model_folder
from hf_prunable_ctc.cli import main


@pytest.fixture
def model_dir(tmp_path):
    save_model_folder(tmp_path / "model")
    return tmp_path / "model"


def test_summary_lists_every_depth(capsys):
    assert main(["summary", "--seconds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert [int(line.split()[0]) for line in lines] == list(range(1, 9))  # the default config has 8 layers
    params = [int(re.search(r"\]\s+([\d,]+)", line).group(1).replace(",", "")) for line in lines]
    assert params == sorted(params) and params[0] < params[-1]


def test_prune_writes_a_smaller_complete_folder(model_dir, tmp_path, capsys):
    assert main(["prune", str(model_dir), str(tmp_path / "pruned"), "--depth", "2"]) == 0
    files = set(os.listdir(tmp_path / "pruned"))
    assert {"model.safetensors", "vocab.json", "preprocessor_config.json"} <= files
    assert os.path.getsize(tmp_path / "pruned" / "model.safetensors") < os.path.getsize(model_dir / "model.safetensors")
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["kept_layers"] == [1, 2]


def test_transcribe_prints_one_line_per_file(model_dir, tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    assert main(["transcribe", str(model_dir), str(audio), str(audio), "--depth", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(audio) + "\t")


def test_bad_depth_is_a_clear_error_with_exit_code_2(model_dir, tmp_path, capsys):
    assert main(["prune", str(model_dir), str(tmp_path / "x"), "--depth", "9"]) == 2
    assert "depth must be in [1, 4]" in capsys.readouterr().err
