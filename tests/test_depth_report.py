"""The per-depth report: JSON, Markdown and plots, from the package API and from training/evaluate_depths.py."""

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import padded_batch, tiny_model
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.evaluation.depth_report import build_depth_report, measure_rtf, svcca_of_layers, write_depth_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import evaluate_depths  # noqa: E402  (training/evaluate_depths.py)


def labelled_batches(vocab_size, count=2):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for b in range(count):
        features, mask = padded_batch([120, 90, 70], seed=b)
        labels = torch.randint(3, vocab_size, (3, 5), generator=generator)
        batches.append({"input_features": features, "attention_mask": mask, "labels": labels})
    return batches


def test_report_has_every_strategy_and_depth_and_writes_files(tmp_path):
    tokenizer = make_tokenizer()
    model = tiny_model(vocab_size=len(tokenizer))
    batches = labelled_batches(len(tokenizer))
    schedules = {name: model.pruning_schedule(name) for name in ("top", "uniform")}
    report = build_depth_report(model, batches, tokenizer, schedules, dataset="toy", split="test",
                                rtf_utterances=4, batched_size=2, repeats=2)
    records = report["records"]
    assert [(r["strategy"], r["depth"]) for r in records] == [(s, d) for s in ("top", "uniform") for d in range(1, 5)]
    assert all(r["rtf_batch1"] > 0 and r["rtf_batch2"] > 0 for r in records)
    assert all(0 <= r["wer"] and 0 <= r["cer"] for r in records)
    # Depth 4 keeps every layer under both strategies: same numbers.
    full = [r for r in records if r["depth"] == 4]
    assert full[0]["wer"] == full[1]["wer"] and full[0]["layers"] == full[1]["layers"] == [1, 2, 3, 4]
    assert records[0]["parameters"] < records[3]["parameters"]

    paths = write_depth_report(report, svcca_of_layers(model, batches), str(tmp_path))
    names = {Path(p).name for p in paths}
    assert names == {"depth_report.json", "depth_report.md", "wer_vs_depth.png", "rtf_vs_depth.png",
                     "svcca_heatmap.png"}
    for png in ("wer_vs_depth.png", "rtf_vs_depth.png", "svcca_heatmap.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "depth_report.json").read_text())
    assert len(saved["svcca_matrix"]) == 5 and saved["svcca_matrix"][0][0] == 1.0
    markdown = (tmp_path / "depth_report.md").read_text()
    assert "**uniform**" in markdown and "| 2 | 2,4 |" in markdown


def test_rtf_falls_with_depth():
    model = tiny_model(num_hidden_layers=8, hidden_size=64, intermediate_size=256)
    utterances = [torch.randn(400, 16) for _ in range(4)]
    shallow = measure_rtf(model, utterances, [1], repeats=3)
    deep = measure_rtf(model, utterances, list(range(1, 9)), repeats=3)
    assert 0 < shallow < deep


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tokenizer = make_tokenizer()
    model = tiny_model(num_mel_bins=80, vocab_size=len(tokenizer), num_hidden_layers=3, interctc_layers=[1, 2],
                       interctc_weight=0.5)
    model.save_pretrained(path)
    save_processor(make_feature_extractor(), tokenizer, path)
    return path


def test_evaluate_depths_script_on_the_demo_corpus(saved_model, tmp_path, capsys):
    out = tmp_path / "report"
    evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                          "--split", "test", "--search_split", "validation", "--max_eval_samples", "6",
                          "--max_search_samples", "6", "--strategies", "top,greedy,svcca", "--repeats", "2",
                          "--rtf_utterances", "3", "--output_dir", str(out), "--store_schedule", "greedy",
                          "--greedy_criterion", "wer"])
    report = json.loads((out / "depth_report.json").read_text())
    assert {r["strategy"] for r in report["records"]} == {"top", "greedy", "svcca"}
    assert report["utterances"] == 6 and report["split"] == "test"
    schedules = json.loads((out / "pruning_schedules.json").read_text())
    stored = json.loads((saved_model / "config.json").read_text())["pruning_schedule"]
    assert stored == schedules["greedy"]
    assert "| depth |" in capsys.readouterr().out


def test_evaluate_depths_reports_listening_conditions_at_every_depth(saved_model, tmp_path, capsys):
    out = tmp_path / "report"
    evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                          "--split", "test", "--max_eval_samples", "4", "--strategies", "top", "--repeats", "1",
                          "--rtf_utterances", "2", "--output_dir", str(out), "--conditions", "silence,long_form",
                          "--long_form_seconds", "4", "--chunk_length_s", "3"])
    result = json.loads((out / "conditions.json").read_text())
    assert result["utterances"] == 4 and result["split"] == "test" and result["long_form_recordings"] >= 2
    assert {(r["condition"], r["depth"]) for r in result["records"]} == {
        (c, d) for c in ("clean", "silence", "long_form") for d in (1, 2, 3)}
    assert result["settings"]["chunk_length_s"] == 3.0
    assert "silence cost" in (out / "conditions.md").read_text()
    assert "long_form WER" in capsys.readouterr().out


def test_listening_conditions_can_use_fewer_utterances_than_the_depth_report(saved_model, tmp_path):
    out = tmp_path / "report"
    evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                          "--split", "test", "--max_eval_samples", "5", "--max_condition_samples", "2",
                          "--strategies", "top", "--rtf_utterances", "0", "--output_dir", str(out),
                          "--conditions", "silence"])
    assert json.loads((out / "depth_report.json").read_text())["utterances"] == 5
    assert json.loads((out / "conditions.json").read_text())["utterances"] == 2
    with pytest.raises(SystemExit, match="--max_condition_samples must be >= 1"):
        evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                              "--strategies", "top", "--output_dir", str(tmp_path / "bad"), "--conditions", "silence",
                              "--max_condition_samples", "0"])
    assert not (tmp_path / "bad").exists()


def test_evaluate_depths_refuses_an_unknown_condition(saved_model, tmp_path):
    with pytest.raises(SystemExit, match="unknown --conditions"):
        evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                              "--strategies", "top", "--output_dir", str(tmp_path), "--conditions", "noisy_cafe"])
    assert not (tmp_path / "depth_report.json").exists()


def test_evaluate_depths_measures_extra_splits_with_the_same_schedules(saved_model, tmp_path):
    out = tmp_path / "report"
    evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                          "--split", "test", "--extra_splits", "train", "--max_eval_samples", "4",
                          "--strategies", "top,uniform", "--repeats", "1", "--rtf_utterances", "2",
                          "--output_dir", str(out)])
    main_report = json.loads((out / "depth_report.json").read_text())
    extra = json.loads((out / "depth_report_train.json").read_text())
    assert extra["split"] == "train" and extra["utterances"] == 4 and "rtf" not in extra
    assert [(r["strategy"], r["depth"], r["layers"]) for r in extra["records"]] == [
        (r["strategy"], r["depth"], r["layers"]) for r in main_report["records"]]
    assert all("rtf_batch1" not in r for r in extra["records"])
    assert "| depth | layers kept | WER % | CER % | parameters |" in (out / "depth_report_train.md").read_text()


@pytest.mark.parametrize("extra, message", [("test_unseen_engine", "not in the dataset"),
                                            ("validation", "the reported or the search split")])
def test_evaluate_depths_refuses_bad_extra_splits_before_loading(saved_model, tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                              "--strategies", "top,greedy", "--extra_splits", extra, "--output_dir", str(tmp_path)])
    assert not (tmp_path / "depth_report.json").exists()


def test_evaluate_depths_without_speed_measurement(saved_model, tmp_path):
    out = tmp_path / "report"
    evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                          "--split", "test", "--max_eval_samples", "3", "--strategies", "top",
                          "--rtf_utterances", "0", "--output_dir", str(out)])
    report = json.loads((out / "depth_report.json").read_text())
    assert "rtf" not in report and all("rtf_batch1" not in r for r in report["records"])
    assert [r["depth"] for r in report["records"]] == list(range(1, len(report["records"]) + 1))
    assert (out / "wer_vs_depth.png").exists() and (out / "svcca_heatmap.png").exists()
    assert not (out / "rtf_vs_depth.png").exists()


@pytest.mark.parametrize("flag, value", [("--rtf_utterances", "-1"), ("--repeats", "0")])
def test_evaluate_depths_refuses_bad_speed_settings_before_loading(saved_model, tmp_path, flag, value):
    with pytest.raises(SystemExit, match="--rtf_utterances must be >= 0"):
        evaluate_depths.main(["--model", str(saved_model), "--data_dir", str(ROOT / "data" / "demo"),
                              "--strategies", "top", flag, value, "--output_dir", str(tmp_path)])
    assert not (tmp_path / "depth_report.json").exists()


def test_measure_rtf_refuses_no_audio():
    with pytest.raises(ValueError, match="non-empty utterance"):
        measure_rtf(tiny_model(), [], [1, 2])
