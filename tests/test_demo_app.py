"""demo/app.py without a browser: loading, transcribing at a depth, comparing depths, the chart's data, errors, the
command line and the Space layout. The page itself is driven in tests/test_demo_browser.py."""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_prunable_ctc.data.audio import AudioDecodingError, load_audio

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
CLIPS = ROOT / "demo" / "clips"
CLIP = CLIPS / "and-unto-him.flac"
CLIP_TEXT = "AND UNTO HIM HATH HE GIVEN ALL THAT HE HATH"


def load_app():
    spec = importlib.util.spec_from_file_location("demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_app"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


app = load_app()


@pytest.fixture(scope="module")
def demo():
    return app.load_demo_model(str(MODEL), warm_up=False)


def test_loads_the_model_card_folder_with_its_schedule_and_results(demo):
    assert demo.max_depth == 8
    assert demo.schedule == {k: list(range(1, k + 1)) for k in range(1, 9)}
    table = app.depth_results_table(demo)
    assert list(table["depth"]) == [str(k) for k in range(1, 9)]
    with open(MODEL / "depth_report.json") as f:
        top = [r for r in json.load(f)["records"] if r["strategy"] == "top"]
    assert list(table["WER %"]) == [r["wer"] for r in top]
    assert list(table["RTF"]) == [r["rtf_batch1"] for r in top]


def test_compare_all_depths_times_each_depth_after_an_untimed_warm_up(demo, monkeypatch):
    model, calls, now = demo.model, [], iter(range(0, 10_000, 1))

    def forward(*args, **kwargs):
        calls.append(kwargs.get("layers"))
        return model(*args, **kwargs)

    # A clock that advances one second per reading: each timed call lasts exactly 1000 ms, an untimed one 0.
    monkeypatch.setattr(demo, "model", forward)
    monkeypatch.setattr(app.time, "perf_counter", lambda: float(next(now)))
    results = app.compare_depths(demo, str(CLIP), depths=[2, 6], repeats=3)
    assert calls == [[1, 2]] * 4 + [list(range(1, 7))] * 4  # per depth: one warm-up, then three timed calls
    assert [result.model_ms for result in results] == [1000.0, 1000.0]


def test_transcribe_at_full_and_shallow_depth(demo):
    deep = app.transcribe(demo, str(CLIP), 8)
    shallow = app.transcribe(demo, str(CLIP), 1, repeats=1)
    assert deep.text == CLIP_TEXT
    assert shallow.text and shallow.text != deep.text
    assert (deep.depth, deep.layers, shallow.depth, shallow.layers) == (8, list(range(1, 9)), 1, [1])
    assert deep.audio_seconds == pytest.approx(2.572, abs=0.01)
    for result in (deep, shallow):
        assert result.model_ms > 0 and result.feature_ms > 0
        assert result.total_ms >= result.model_ms + result.feature_ms
        assert result.rtf == pytest.approx(result.total_ms / 1000 / result.audio_seconds)
        assert result.model_rtf == pytest.approx(result.model_ms / 1000 / result.audio_seconds)
    timing = app.format_timing(shallow, demo.max_depth)
    assert timing.startswith("depth 1 of 8 (layers 1) · model ") and "RTF" in timing


def test_samples_and_a_path_give_the_same_transcript(demo):
    samples = load_audio(str(CLIP), sampling_rate=16000)
    assert app.transcribe(demo, samples, 4, repeats=1).text == app.transcribe(demo, str(CLIP), 4, repeats=1).text


def test_compare_all_depths_matches_each_depth_alone(demo):
    results = app.compare_depths(demo, str(CLIP), repeats=1)
    assert [r.depth for r in results] == list(range(1, 9))
    for depth in (1, 5):
        assert results[depth - 1].text == app.transcribe(demo, str(CLIP), depth, repeats=1).text
    # Features are computed once and counted in every depth's end-to-end time.
    assert len({r.feature_ms for r in results}) == 1

    table = app.comparison_table(results, reference=CLIP_TEXT)
    assert list(table.columns) == ["depth", "layers", "transcript", "WER %", "model ms", "end-to-end ms", "RTF"]
    assert list(table["layers"]) == ["1"] + [f"1-{k}" for k in range(2, 9)]
    assert table["WER %"].iloc[-1] == 0.0 and table["WER %"].iloc[0] > 0
    assert "WER %" not in app.comparison_table(results).columns


def test_compare_selected_depths(demo):
    assert [r.depth for r in app.compare_depths(demo, str(CLIP), depths=[6, 2], repeats=1)] == [2, 6]


@pytest.mark.parametrize("depth", [0, 9, 2.5, "3", None])
def test_depth_outside_the_schedule_is_refused(demo, depth):
    with pytest.raises(ValueError, match="depth must be a whole number from 1 to 8"):
        app.transcribe(demo, str(CLIP), depth)


def test_slider_floats_are_accepted(demo):
    assert app.check_depth(demo, 3.0) == 3


def test_silent_or_undecodable_audio_is_a_clear_error(demo, tmp_path):
    # The model's feature extractor gives finite features for digital silence and zero frames for audio shorter
    # than one 25 ms window: both are transcribed (the latter as an empty text), never a crash.
    assert isinstance(app.transcribe(demo, np.zeros(16000, dtype=np.float32), 8).text, str)
    assert app.transcribe(demo, np.zeros(100, dtype=np.float32), 8).text == ""
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not a wav file")
    with pytest.raises(AudioDecodingError, match="not-audio.wav"):
        app.transcribe(demo, str(bad), 8)


def test_results_fall_back_to_per_depth_metrics_then_to_nothing(tmp_path):
    schedule = {1: [1], 2: [1, 2]}
    assert app.read_depth_results(str(tmp_path), schedule) is None
    metrics = {"split": "test", "depths": {"1": {"wer": 50.0, "cer": 20.0, "layers": [1], "parameters": 10},
                                           "2": {"wer": 30.0, "cer": 10.0, "layers": [1, 2], "parameters": 20}}}
    (tmp_path / "per_depth_metrics.json").write_text(json.dumps(metrics))
    results = app.read_depth_results(str(tmp_path), schedule)
    assert [row["wer"] for row in results["rows"]] == [50.0, 30.0]
    assert all("rtf" not in row for row in results["rows"])


def test_bad_model_argument_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; give the folder"):
        app.load_demo_model(str(a_file))
    with pytest.raises(ValueError, match="'no-such-user/no-such-model' is neither a folder nor a Hub model id"):
        app.load_demo_model("no-such-user/no-such-model")


def test_command_line_names_a_bad_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--check", "--model", "no-such-user/no-such-model"])
    assert exit_info.value.code == 2
    assert "'no-such-user/no-such-model' is neither a folder nor a Hub model id" in capsys.readouterr().err


def test_default_model_prefers_the_environment(monkeypatch):
    monkeypatch.setenv(app.MODEL_ENV, "someone/some-model")
    assert app.default_model() == "someone/some-model"
    monkeypatch.delenv(app.MODEL_ENV)
    assert Path(app.default_model()) == MODEL


def test_format_layers():
    assert app.format_layers([1]) == "1"
    assert app.format_layers([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"


def test_bundled_clips_exist_and_stay_small():
    clips = app.bundled_clips()
    assert len(clips) >= 3
    with open(CLIPS / "metadata.csv", newline="") as f:
        assert [row["file_name"] for row in csv.DictReader(f)] == list(clips)
    for clip in clips.values():
        assert load_audio(clip["path"]).shape[0] > 16000 // 2
    total = sum(f.stat().st_size for f in (ROOT / "demo").rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    assert total < 1_000_000


def test_command_line_check_prints_every_depth(capsys):
    assert app.main(["--check", "--model", str(MODEL)]) == 0
    out = capsys.readouterr().out
    assert "and-unto-him.flac" in out
    assert out.count("\n") >= 9 and CLIP_TEXT in out


def test_host_defaults_to_loopback(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.build_parser().parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, None)


def test_page_builds_with_every_control(demo):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'gradio>=6,<7')")
    page = app.build_ui(demo)
    ids = {block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert {"audio", "clip", "reference", "depth", "transcribe", "compare", "transcript", "timing", "comparison",
            "wer-chart", "rtf-chart"} <= ids


@pytest.mark.slow
def test_space_layout_runs_as_documented(tmp_path):
    """Build the Space folder as demo/README.md says and run its app.py with --check from inside it."""
    space = tmp_path / "space"
    shutil.copytree(ROOT / "demo", space, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "hf_prunable_ctc", space / "hf_prunable_ctc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(MODEL, space / "model")
    readme = (ROOT / "demo" / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio" in readme and "app_file: app.py" in readme
    requirements = (space / "requirements.txt").read_text()
    for package in ("torch", "transformers", "gradio", "soundfile", "soxr", "jiwer"):
        assert package in requirements
    env = {k: v for k, v in os.environ.items() if k != "PRUNABLE_CTC_MODEL"} | {"HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "app.py", "--check"], cwd=space, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert str(space / "model") in run.stdout and CLIP_TEXT in run.stdout


def test_early_exit_reports_the_depth_it_stopped_at(demo):
    """Early exit on the page: threshold 0 stops at the first intermediate-CTC layer, above 1 runs them all."""
    first = app.transcribe(demo, str(CLIP), 8, repeats=1, early_exit_threshold=0.0)
    never = app.transcribe(demo, str(CLIP), 1, repeats=1, early_exit_threshold=1.01)
    assert (first.depth, first.layers) == (2, [1, 2])
    assert first.text == app.transcribe(demo, str(CLIP), 2, repeats=1).text
    assert (never.depth, never.text) == (8, CLIP_TEXT)
    with pytest.raises(ValueError, match="early-exit threshold must be a number from 0 to 1"):
        app.transcribe(demo, str(CLIP), 8, early_exit_threshold=2.5)


def test_rtf_budget_picks_the_deepest_depth_within_it(demo):
    """The RTF budget on the page, with a synthetic profile (a measured one depends on the machine)."""
    saved = demo.latency_profile
    demo.latency_profile = {"device": "synthetic", "rtf": {k: 0.001 * k for k in range(1, 9)}}
    try:
        assert app.depth_for_rtf_budget(demo, 0.0055) == 5
        assert app.depth_for_rtf_budget(demo, 1.0) == 8
        with pytest.raises(ValueError, match="no depth meets RTF"):
            app.depth_for_rtf_budget(demo, 0.0001)
    finally:
        demo.latency_profile = saved


def test_page_has_budget_and_early_exit_controls(demo):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'gradio>=6,<7')")
    page = app.build_ui(demo)
    ids = {block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert {"rtf-budget", "early-exit", "early-exit-threshold"} <= ids
