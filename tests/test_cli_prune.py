"""A pruned folder works on its own, describes itself (not its source) and names its source as the user gave it."""

import json
import os
import stat

import numpy as np
import pytest
from huggingface_hub import ModelCard
from transformers import AutoProcessor, pipeline

from conftest import tiny_model
from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.hub import save_pruned
from hf_prunable_ctc.hub.publish import publish

CARD = dict(model_name="toy-8", dataset_name="Toy", dataset_type="toy", training_command="python train.py",
            summary="A toy with 4 layers.", results_note="The full model has 4 layers.")


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A 4-layer model with processor, depth report, plots, all-strategy schedules and a card of its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = make_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer), interctc_layers=[2], interctc_weight=0.3)
    path = tmp_path / "full"
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    schedules = {s: model.pruning_schedule(s) for s in ("top", "uniform")}
    (path / "pruning_schedules.json").write_text(json.dumps(schedules))
    records = [{"strategy": s, "depth": d, "layers": layers, "wer": 10.0 * (5 - d), "cer": 4.0 * (5 - d),
                "parameters": model.count_parameters(layers=layers), "rtf_batch1": 0.001 * d, "rtf_batch8": 0.001}
               for s, schedule in schedules.items() for d, layers in schedule.items()]
    (path / "depth_report.json").write_text(json.dumps({"dataset": "toy", "split": "test", "hardware": "CPU",
                                                        "records": records}))
    for name in ("depth_report.md", "wer_vs_depth.png", "README.md"):
        (path / name).write_text("about the 4-layer model")
    return path


STALE = {"depth_report.json", "depth_report.md", "wer_vs_depth.png", "per_depth_metrics.json"}


def test_cli_prune_writes_a_folder_that_describes_the_pruned_model(measured, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", str(measured), str(out), "--depth", "2", "--strategy", "uniform"]) == 0
    files = set(os.listdir(out))
    assert not files & STALE
    schedules = json.loads((out / "pruning_schedules.json").read_text())
    # uniform kept original layers 2 and 4, numbered 1 and 2 in the pruned model; every "top" entry needs the
    # removed layer 1, so "top" has nothing left to state.
    assert schedules == {"uniform": {"1": [2], "2": [1, 2]}}
    card = (out / "README.md").read_text()
    assert "\n# pruned\n" in card and ".partial" not in card  # titled by its folder, not the staging one
    assert "about the 4-layer model" not in card
    assert "pruned from" in card and "at depth 2 with the `uniform` strategy" in card and "not fine-tuned" in card
    assert "keeping its layers 2, 4" in card
    assert "| 2 | 1,2 |" in card and "| 1 | 1 |" in card and "| 3 |" not in card  # its own depths only
    # The folder works on its own: the ASR pipeline finds tokenizer and feature extractor.
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    assert isinstance(asr(np.zeros(16000, dtype=np.float32))["text"], str)


def test_cli_prune_refuses_a_foreign_output_folder(measured, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    assert main(["prune", str(measured), str(tmp_path / "taken"), "--depth", "2"]) == 2
    assert (tmp_path / "taken" / "config.json").read_text() == "{}"
    assert "not written by hf-prunable-ctc" in capsys.readouterr().err


def test_save_pruned_with_a_processor_makes_the_documented_way_usable(measured, tmp_path):
    model = PrunableCTCForCTC.from_pretrained(measured)
    processor = AutoProcessor.from_pretrained(measured)
    model.prune_to(3)
    save_pruned(model, processor, str(tmp_path / "pruned"))
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path / "pruned"), device="cpu")
    assert isinstance(asr(np.zeros(16000, dtype=np.float32))["text"], str)
    assert PrunableCTCForCTC.from_pretrained(tmp_path / "pruned").config.num_hidden_layers == 3


def test_publish_depth_card_has_its_own_depths_and_no_source_report(measured, tmp_path):
    result = publish(str(measured), str(tmp_path / "d2"), "someone/toy-2-layers", CARD, depth=2)
    assert not set(result["files"]) & STALE
    card = ModelCard.load(tmp_path / "d2" / "README.md")
    assert sorted({r.metric_args["num_layers"] for r in card.data.eval_results}) == [1, 2]
    assert card.data.model_name == "toy-2-layers"
    text = card.text
    assert "The full model has 4 layers." not in text  # the source's results note does not describe this model
    assert "The model it was pruned from: A toy with 4 layers." in text
    assert "2 encoder layers, pruned from `toy-8` (4 layers) at depth 2" in text
    assert "![" not in text  # the source's plots are not shown
    assert "prune_to(1)" in text  # the usage example fits a 2-layer model
    assert json.loads((tmp_path / "d2" / "pruning_schedules.json").read_text())["top"] == {"1": [1], "2": [1, 2]}


def test_prune_then_transcribe_the_pruned_folder(measured, tmp_path, capsys):
    """From the shell: the pruned folder is transcribed like any model folder."""
    import soundfile as sf

    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    assert main(["prune", str(measured), str(tmp_path / "pruned-2"), "--depth", "2"]) == 0
    assert main(["transcribe", str(tmp_path / "pruned-2"), str(tmp_path / "a.wav")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{tmp_path / 'a.wav'}\t")


def test_pruned_folder_is_readable_by_others_and_its_card_names_the_source_as_given(measured, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = os.umask(0o022)
    try:
        assert main(["prune", "full", "pruned", "--depth", "2"]) == 0
    finally:
        os.umask(before)
    out = tmp_path / "pruned"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {p.name: 0o644 for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "pruned from `full` (4 layers)" in card
    assert str(tmp_path) not in card and ".partial" not in card  # no absolute or staging path
