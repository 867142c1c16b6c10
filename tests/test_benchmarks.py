"""benchmarks/run.py --quick: every section runs and results.json / README.md have the keys the
report relies on."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (ROOT / "model_cards" / "prunable-ctc-small-synth" / "model.safetensors").is_file(),
                    reason="needs the reference model")
def test_quick_run_writes_json_and_markdown(tmp_path):
    run = _load_run()
    sections = ["depth_scaling", "peers", "memory", "training"]
    if importlib.util.find_spec("onnxruntime") is not None:
        sections.append("export")
    results = run.main(["--quick", "--output_dir", str(tmp_path), "--threads", "1", "--sections", *sections])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk) == {"environment", *sections}
    for name in sections:
        assert "error" not in on_disk[name], on_disk[name].get("error")
    env = on_disk["environment"]
    assert {"device", "threads", "torch", "transformers", "quick"} <= set(env) and env["quick"] is True

    batches = on_disk["depth_scaling"]["batches"]
    assert set(batches) == {"1", "2"}
    for rows in batches.values():
        assert set(rows) == {"1", "4", "8"}
        for row in rows.values():
            assert {"measured_speedup", "measured_speedup_pruned", "ideal_speedup", "seconds_num_layers",
                    "seconds_pruned"} <= set(row)
    assert rows["8"]["ideal_speedup"] == pytest.approx(1.0)
    assert rows["1"]["ideal_speedup"] > 3  # 8 layers vs 1: the layers dominate the FLOPs
    assert {"end_to_end_speedup", "end_to_end_over_model_speedup"} <= set(batches["1"]["1"])
    end_to_end = on_disk["depth_scaling"]["end_to_end"]
    assert set(end_to_end) == {"pipeline", "prunable_pipeline", "transcribe"}
    for rows in end_to_end.values():
        assert set(rows) == {"1", "4", "8"}
        for row in rows.values():  # the model clocked inside a call is part of that call
            assert 0 < row["seconds_model_in_pipeline"] < row["seconds_end_to_end"]
        assert rows["8"]["end_to_end_over_model_speedup"] == pytest.approx(1.0)

    for encoder_type in ("conformer", "transformer"):
        entry = on_disk["peers"]["results"][encoder_type]
        assert set(entry["inference_batch1"]["ratio_peer_over_ours"]) == {"ParakeetForCTC", "Wav2Vec2ConformerForCTC"}
        assert any(key.startswith("training_step") for key in entry)
    assert [r["minutes"] for r in on_disk["memory"]["runs"]] == [0.2, 0.4]
    assert all("peak_rss_mib" in r for r in on_disk["memory"]["runs"])
    assert set(on_disk["training"]["results"]) == {"demo", "reference"}
    if "export" in sections:
        row = on_disk["export"]["depths"]["1"]
        assert set(row["seconds"]) == {"eager", "onnx_fp32", "onnx_int8"}
        wer = row["wer_on_test_subset"]
        assert wer["utterances"] == 8
        # float32 ONNX reproduces PyTorch's transcripts; int8 is measured, not assumed equal.
        assert wer["onnx_fp32"] == wer["eager"] and 0 <= wer["onnx_int8"]["wer"] <= 200
    markdown = (tmp_path / "README.md").read_text()
    assert "## Depth scaling" in markdown and "## Peers" in markdown and "## Memory" in markdown


def test_time_interleaved_times_steady_calls_and_inner_parts():
    run = _load_run()
    calls = []

    def measured():
        calls.append("a")
        return 0.25  # seconds of an inner part, as the end-to-end calls return the model's forward

    times = run.time_interleaved({"a": measured, "b": lambda: calls.append("b")}, repeats=2, warmup=1,
                                 calls_per_turn=3)
    # warm-up once each, then per repeat three calls in a row of each (interleaved a, a, a, b, b, b)
    assert calls == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 2
    assert set(times) == {"a", "b", "a:inner"} and times["a:inner"] == 0.25
    spread = run.time_interleaved({"a": measured, "b": lambda: None}, repeats=5, warmup=0, spread=True)
    assert set(spread) == {"a", "b", "a:inner", "a:min", "a:max", "b:min", "b:max"}
    assert all(spread[f"{name}:min"] <= spread[name] <= spread[f"{name}:max"] for name in ("a", "b"))
