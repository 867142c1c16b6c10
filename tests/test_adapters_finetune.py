"""training/finetune_prunable.py end to end on a few demo utterances: random stock model -> plain CTC -> prunable
fine-tune -> pruned stock checkpoint, with per_depth_metrics.json, card and report."""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCTC, pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
sys.path.insert(0, str(ROOT / "training"))

import finetune_prunable  # noqa: E402  (training/finetune_prunable.py)

TINY = {
    "wav2vec2": dict(model_type="wav2vec2", hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=48, conv_dim=[16, 16], conv_kernel=[10, 8], conv_stride=[5, 64],
                     num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                     do_stable_layer_norm=True, mask_time_prob=0.0, ctc_loss_reduction="mean"),
    "parakeet_ctc": dict(model_type="parakeet_ctc", encoder_config=dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48, num_mel_bins=16,
        subsampling_conv_channels=8, subsampling_factor=4)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def run(tmp_path, output_dir, *extra):
    return finetune_prunable.main([
        "--dataset_name", "audiofolder", "--data_dir", str(DEMO), "--output_dir", str(output_dir),
        "--max_train_samples", "8", "--max_eval_samples", "4", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
        "--learning_rate", "1e-3", "--seed", "0", *extra])


@pytest.mark.parametrize("model_type", ["wav2vec2", "parakeet_ctc"])
def test_plain_ctc_then_prunable_fine_tune_then_pruned_stock_checkpoint(tmp_path, model_type):
    config = tmp_path / "init.json"
    config.write_text(json.dumps(TINY[model_type]))
    base = tmp_path / "base"
    run(tmp_path, base, "--init_config", str(config), "--do_train", "--max_steps", "1", "--interctc_weight", "0",
        "--stochastic_depth_rate", "0")
    assert json.loads((base / "config.json").read_text())["prunable_ctc"]["interctc_weight"] == 0.0

    out = tmp_path / "prunable"
    trainer = run(tmp_path, out, "--model_name_or_path", str(base), "--do_train", "--max_steps", "2",
                  "--interctc_layers", "1", "2", "--interctc_weight", "0.5", "--stochastic_depth_rate", "0.2",
                  "--prune_to", "2", "--report_dir", str(tmp_path / "report"), "--report_name", "demo")
    assert trainer.eval_depths == [1, 2, 3]

    record = json.loads((out / "per_depth_metrics.json").read_text())
    assert set(record["depths"]) == {"1", "2", "3"} and record["split"] == "validation"
    assert record["base_model"] == str(base)
    assert set(record["before"]["validation"]) == {"1", "2", "3"}
    params = [record["depths"][d]["parameters"] for d in ("1", "2", "3")]
    assert params[0] < params[1] < params[2]

    # Full-depth checkpoint: the stock class with the settings recorded; the pruned one: 2 layers, same files.
    full = json.loads((out / "config.json").read_text())
    assert full["prunable_ctc"]["interctc_layers"] == [1, 2] and "auto_map" not in full
    pruned_dir = out / "pruned-2"
    pruned = AutoModelForCTC.from_pretrained(pruned_dir)
    assert type(pruned).__name__ == type(trainer.model.model).__name__
    assert getattr(pruned.config, "encoder_config", pruned.config).num_hidden_layers == 2
    assert sum(p.numel() for p in pruned.parameters()) == params[1]
    asr = pipeline("automatic-speech-recognition", model=str(pruned_dir))
    assert isinstance(asr({"raw": torch.zeros(16000).numpy(), "sampling_rate": 16000})["text"], str)

    card = (out / "README.md").read_text()
    assert str(base) in card and "WER before" in card and "finetune_prunable.py" in card
    assert "base_model:" not in card.split("---")[1]  # a local folder is not a Hub repo to link
    report = json.loads((tmp_path / "report" / "demo.json").read_text())
    assert report["prunable_ctc"]["interctc_layers"] == [1, 2]  # the settings trained with, not the pruned copy's
    assert report["pruned_and_reloaded"]["num_layers"] == 2
    assert report["pruned_and_reloaded"]["wer"] == record["depths"]["2"]["wer"]  # reloaded = depth 2 of the wrapper
    assert "| 2 |" in (tmp_path / "report" / "demo.md").read_text()


def test_needs_exactly_one_model_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --model_name_or_path"):
        run(tmp_path, tmp_path / "out")


def test_resume_from_checkpoint_continues_the_checkpointed_run(tmp_path):
    config = tmp_path / "init.json"
    config.write_text(json.dumps(TINY["wav2vec2"]))
    # The first run trains at another learning rate: only a resumed second run starts from its step-2 weights.
    first = run(tmp_path, tmp_path / "first", "--init_config", str(config), "--do_train", "--max_steps", "2",
                "--learning_rate", "1e-2", "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1")
    second = run(tmp_path, tmp_path / "second", "--init_config", str(config), "--do_train", "--max_steps", "3",
                 "--logging_steps", "1", "--resume_from_checkpoint", str(tmp_path / "first" / "checkpoint-2"))
    losses = lambda trainer: [e["loss"] for e in trainer.state.log_history if "loss" in e]  # noqa: E731
    assert second.state.global_step == 3
    assert len(losses(second)) == 3 and losses(second)[:2] == losses(first)
