"""The training recipe end to end on the bundled demo corpus, and data preparation's handling of bad rows."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hf_prunable_ctc.data.features import make_feature_extractor
from hf_prunable_ctc.data.speech_data import load_split, prepare_split
from hf_prunable_ctc.data.vocabulary import make_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import train  # noqa: E402  (training/train.py)

TINY_MODEL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  subsampling_conv_channels=32, interctc_layers=[1, 2], interctc_weight=0.5,
                  stochastic_depth_rate=0.1)


def train_args(tmp_path, output_dir, *extra):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MODEL))
    return ["--model_config", str(config), "--dataset_name", "audiofolder", "--data_dir", str(DEMO),
            "--output_dir", str(output_dir), "--do_train", "--max_train_samples", "24", "--max_eval_samples", "8",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--report_to", "none",
            "--learning_rate", "1e-3", "--seed", "1", "--use_cpu", *extra]


def test_two_step_training_writes_per_depth_metrics(tmp_path):
    """Also: duration limits cut the training split only; the test split is scored whole and the
    file says how many utterances were scored and left out."""
    out = tmp_path / "run"
    train.main(train_args(tmp_path, out, "--max_steps", "2", "--test_split_name", "test",
                          "--max_duration_in_seconds", "2.5"))
    record = json.loads((out / "per_depth_metrics.json").read_text())
    assert record["split"] == "test"
    assert record["utterances"] == 42  # the whole demo test split: --max_eval_samples 8 bounds validation only
    assert record["utterances_scored"] == 42 and record["utterances_left_out"] == 0 and record["left_out"] == {}
    assert record["scoring"]["validation"]["utterances_scored"] == 8
    assert set(record["depths"]) == {"1", "2", "3"}
    params = [record["depths"][d]["parameters"] for d in ("1", "2", "3")]
    assert params[0] < params[1] < params[2]
    for depth in record["depths"].values():
        assert 0.0 <= depth["cer"] <= 500.0 and 0.0 <= depth["wer"] <= 500.0
    assert set(record["all_splits"]) == {"validation", "test"}
    # A complete model folder: loads with the Auto classes and has its processor.
    assert {"model.safetensors", "config.json", "vocab.json", "preprocessor_config.json"} <= set(os.listdir(out))


def test_push_to_hub_offline_writes_the_repo_folder_with_a_per_depth_card(tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    train.main(train_args(tmp_path, out, "--max_steps", "2", "--push_to_hub", "--hub_model_id", "someone/tiny"))
    repo = out / "hub_repo"
    assert {"README.md", "model.safetensors", "config.json", "vocab.json", "modeling_prunable_ctc.py",
            "per_depth_metrics.json"} <= set(os.listdir(repo))
    card = ModelCard.load(repo / "README.md")
    assert sorted({r.metric_config for r in card.data.eval_results}) == ["depth-1", "depth-2", "depth-3"]
    assert "python training/train.py" in card.text and "someone/tiny" in card.text
    assert "not uploaded" in capsys.readouterr().out


def test_resume_from_checkpoint_continues_the_step_count(tmp_path):
    out = tmp_path / "run"
    train.main(train_args(tmp_path, out, "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1"))
    # A checkpoint is a complete model folder: weights, tokenizer and feature extractor.
    assert {"model.safetensors", "vocab.json", "processor_config.json"} <= set(os.listdir(out / "checkpoint-2"))
    trainer = train.main(train_args(tmp_path, out, "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
                                    "--resume_from_checkpoint", str(out / "checkpoint-2")))
    assert trainer.state.global_step == 4
    # Steps 1-2 come from the checkpoint's history, 3-4 from the resumed run: nothing was trained twice.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_cpu_processes_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(ROOT / "training" / "train.py"), *train_args(tmp_path, out, "--max_steps", "2",
                                                               "--ddp_backend", "gloo")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((out / "per_depth_metrics.json").read_text())["depths"]
    assert (out / "model.safetensors").exists()
    assert result.stdout.count("per-depth results on") == 1  # written and printed once, by rank 0


def write_corpus(root: Path, rows):
    split = root / "train"
    split.mkdir(parents=True)
    with open(split / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "transcription"])
        for name, text, audio in rows:
            if audio is not None:
                if isinstance(audio, bytes):
                    (split / name).write_bytes(audio)
                else:
                    sf.write(split / name, audio, 16000)
            writer.writerow([name, text])
    return root


def test_bad_rows_are_dropped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    speech = lambda: (0.1 * rng.standard_normal(16000)).astype(np.float32)  # noqa: E731
    root = write_corpus(tmp_path, [
        ("ok.wav", "HELLO WORLD", speech()),
        ("empty_text.wav", "  ", speech()),
        ("broken.wav", "BROKEN FILE", b"not audio at all"),
        ("missing.wav", "NO FILE", None),
        ("tiny.wav", "TOO SHORT", np.zeros(100, dtype=np.float32)),
        ("unk.wav", "CAFÉ # ZED", speech()),
    ])
    dataset = load_split("audiofolder", "train", data_dir=str(root))
    prepared, report = prepare_split(dataset, make_feature_extractor(), make_tokenizer())
    assert report.kept == 2 == len(prepared)
    assert report.dropped == {"empty transcripts": 1, "unreadable audio": 2, "too short or silent audio": 1}
    assert "dropped" in report.summary("train")
    assert prepared[0]["text"] == "HELLO WORLD"
    assert all(np.isfinite(np.asarray(x)).all() for x in prepared["input_features"])


def test_missing_column_and_layout_errors_are_clear(tmp_path):
    root = write_corpus(tmp_path, [("a.wav", "A", np.zeros(16000, dtype=np.float32))])
    dataset = load_split("audiofolder", "train", data_dir=str(root))
    with pytest.raises(ValueError, match="column 'sentence' not in the dataset"):
        prepare_split(dataset, make_feature_extractor(), make_tokenizer(), text_column="sentence")
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_split("audiofolder", "validation", data_dir=str(root))
    with pytest.raises(ValueError, match="needs --data_dir"):
        load_split("audiofolder", "train")


def test_saved_dataset_folder_is_a_source(tmp_path):
    from datasets import Dataset, DatasetDict

    rng = np.random.default_rng(1)
    audio = [{"array": (0.1 * rng.standard_normal(8000)).astype(np.float32), "sampling_rate": 8000}]
    DatasetDict({"train": Dataset.from_dict({"audio": audio, "transcription": ["HI"]})}).save_to_disk(tmp_path / "ds")
    dataset = load_split(str(tmp_path / "ds"), "train")
    prepared, report = prepare_split(dataset, make_feature_extractor(), make_tokenizer())
    assert report.kept == 1
    assert len(prepared[0]["input_features"]) == 98  # 8 kHz resampled to 16 kHz: one second
