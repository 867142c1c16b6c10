import json
import os
import re
import subprocess
import sys
import textwrap

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


def run_python(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


def test_help_and_argument_errors_import_neither_torch_nor_transformers():
    for argv in (["--help"], ["transcribe"], ["transcribe", "--help"]):
        result = run_python("-X", "importtime", "-m", "hf_prunable_ctc", *argv)
        assert result.returncode == (0 if "--help" in argv else 2), result.stderr[-2000:]
        # -X importtime writes one line per module imported, "... | torch" for the package itself.
        imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "transformers"}, argv
    check = ("import sys, hf_prunable_ctc.cli; hf_prunable_ctc.cli.build_parser(); "
             "heavy = {'torch', 'transformers'} & set(sys.modules); assert not heavy, heavy")
    result = run_python("-c", check)
    assert result.returncode == 0, result.stderr[-2000:]


def test_importing_the_package_first_still_registers_the_auto_classes(model_dir):
    """The README's order: `import hf_prunable_ctc`, then transformers' Auto classes, no remote code."""
    script = textwrap.dedent(f"""
        import sys
        import hf_prunable_ctc
        from transformers import AutoFeatureExtractor, AutoModelForCTC
        model = AutoModelForCTC.from_pretrained({str(model_dir)!r})
        extractor = AutoFeatureExtractor.from_pretrained({str(model_dir)!r})
        assert type(model) is hf_prunable_ctc.PrunableCTCForCTC, type(model)
        assert type(extractor) is hf_prunable_ctc.PrunableCTCFeatureExtractor, type(extractor)
        assert not any(name.startswith("transformers_modules") for name in sys.modules)  # no remote code ran
        assert {{"greedy", "svcca"}} <= set(hf_prunable_ctc.PRUNING_STRATEGIES)
        print("ok")
    """)
    result = run_python("-c", script, cwd=model_dir.parent)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_commands_are_quiet_unless_verbose(model_dir, tmp_path, capsys):
    audio = tmp_path / "a.wav"
    sf.write(audio, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    assert main(["transcribe", str(model_dir), str(audio)]) == 0
    assert "Loading weights" not in capsys.readouterr().err
    assert main(["--verbose", "transcribe", str(model_dir), str(audio)]) == 0
    assert "Loading weights" in capsys.readouterr().err
