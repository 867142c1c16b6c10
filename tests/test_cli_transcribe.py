"""`transcribe`: folders and bad files, depth errors, short audio, help, chunking of long recordings, batching and
timestamps."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import save_model_folder
from hf_prunable_ctc.cli import build_parser, main


@pytest.fixture
def model_dir(tmp_path):
    save_model_folder(tmp_path / "model")
    return tmp_path / "model"


def noise(path, samples=16000, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32), 16000)
    return path


def test_folder_is_searched_recursively_in_sorted_order_and_other_files_skipped(model_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for name in ("b.wav", "a.flac", "sub/c.wav"):
        noise(corpus / name)
    (corpus / "metadata.csv").write_text("file_name,text\n")
    assert main(["transcribe", str(model_dir), str(corpus), "--depth", "1"]) == 0
    paths = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert paths == [str(corpus / "a.flac"), str(corpus / "b.wav"), str(corpus / "sub" / "c.wav")]


def test_bad_file_gets_an_error_line_and_later_files_are_still_transcribed(model_dir, tmp_path, capsys):
    good = noise(tmp_path / "good.wav")
    bad = tmp_path / "metadata.csv"
    bad.write_text("not audio")
    assert main(["transcribe", str(model_dir), str(bad), str(good), "--json"]) == 2
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines[0]["path"] == str(bad) and "error" in lines[0]
    assert lines[1]["path"] == str(good) and isinstance(lines[1]["text"], str)
    assert f"error: {bad}" in captured.err and "1 of 2 files could not be transcribed" in captured.err


def test_audio_shorter_than_a_frame_gives_an_empty_transcript(model_dir, tmp_path, capsys):
    short = noise(tmp_path / "short.wav", samples=200)
    assert main(["transcribe", str(model_dir), str(short)]) == 0
    assert capsys.readouterr().out == f"{short}\t\n"


@pytest.mark.parametrize("depth", ["12", "0"])
def test_depth_outside_the_model_is_the_models_value_error(model_dir, tmp_path, capsys, depth):
    audio = noise(tmp_path / "a.wav")
    assert main(["transcribe", str(model_dir), str(audio), "--depth", depth]) == 2
    assert f"depth must be in [1, 4] (the model has 4 layers), got {depth}" in capsys.readouterr().err


def test_strategies_that_need_data_are_not_offered(capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "m", "a.wav", "--depth", "2", "--strategy", "greedy"])
    assert "invalid choice: 'greedy'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["transcribe", "prune", "publish"])
def test_missing_model_folder_is_reported_at_once(tmp_path, capsys, command):
    """A path that does not exist is not tried as a Hub id (no network retries)."""
    missing = str(tmp_path / "runs" / "nothing")
    extra = {"transcribe": [], "prune": ["--depth", "1"],
             "publish": ["--repo_id", "you/x", "--card_info", "card.json", "--dry_run"]}[command]
    assert main([command, missing, str(tmp_path / "x")] + extra) == 2
    assert f"no such model folder: {missing!r}" in capsys.readouterr().err


def test_relative_path_shaped_like_a_hub_id_is_a_missing_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # "runs/mymodel" names a folder in runs/, not the Hub user "runs"
    assert main(["transcribe", "runs/mymodel", "a.wav"]) == 2
    assert "no such model folder: 'runs/mymodel'" in capsys.readouterr().err


def test_help_lists_each_command_once_with_an_example_and_every_argument_has_help():
    parser = build_parser()
    text = parser.format_help()
    for command in ("summary", "transcribe", "prune", "export", "publish", "convert-ct2-whisper"):
        assert text.count(f"hf-prunable-ctc {command} ") >= 1  # an example per command
    assert "{summary,transcribe,prune,publish}" not in text  # listed once, with its help line
    subparsers = parser._subparsers._group_actions[0]
    for name, sub in subparsers.choices.items():
        assert "example:" in sub.description, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


def test_many_files_show_a_progress_bar_on_stderr_only(model_dir, tmp_path, capsys):
    for i in range(10):
        noise(tmp_path / "many" / f"{i:02d}.wav", samples=200, seed=i)
    assert main(["transcribe", str(model_dir), str(tmp_path / "many")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 10 and "transcribing" not in captured.out
    assert "transcribing" in captured.err and "10/10" in captured.err


REFERENCE = Path(__file__).resolve().parents[1] / "model_cards" / "prunable-ctc-small-synth"
SUBSET = REFERENCE.parent.parent / "data" / "reference_test_subset" / "test"


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """About a minute of speech: the bundled utterances one after another, with a quarter second between them."""
    from hf_prunable_ctc.data.audio import load_audio

    pieces = []
    for path in sorted(SUBSET.glob("*.flac"))[:30]:
        pieces += [load_audio(path), np.zeros(4000, dtype=np.float32)]
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.concatenate(pieces), 16000)
    return path


def frames_seen(monkeypatch):
    """Record the number of feature frames of every forward call of the model class."""
    from hf_prunable_ctc import PrunableCTCForCTC

    seen, forward = [], PrunableCTCForCTC.forward

    def recording(self, input_features, *args, **kwargs):
        seen.append(input_features.shape[1])
        return forward(self, input_features, *args, **kwargs)

    monkeypatch.setattr(PrunableCTCForCTC, "forward", recording)
    return seen


def test_long_recordings_are_chunked_by_default_like_the_pipeline(long_recording, capsys, monkeypatch):
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    duration = sf.info(long_recording).duration
    assert duration > 50
    expected = prunable_asr_pipeline(model=str(REFERENCE))(str(long_recording), chunk_length_s=10, num_layers=4)
    seen = frames_seen(monkeypatch)
    assert main(["transcribe", str(REFERENCE), str(long_recording), "--depth", "4", "--batch_size", "4"]) == 0
    assert capsys.readouterr().out == f"{long_recording}\t{expected['text']}\n"
    # 10-s chunks (100 frames per second, a little context on each side): the model never sees the whole minute.
    assert len(seen) > 1 and max(seen) <= 1001
    seen.clear()
    assert main(["transcribe", str(REFERENCE), str(long_recording), "--chunk_length_s", "0"]) == 0
    assert seen == [int(duration * 100) - 1]


def test_timestamps_come_with_the_json_lines(long_recording, capsys):
    assert main(["transcribe", str(REFERENCE), str(long_recording), "--json", "--timestamps", "word"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    words = record["chunks"]
    assert " ".join(word["text"] for word in words) == record["text"] and len(words) > 50
    starts = [word["timestamp"][0] for word in words]
    assert starts == sorted(starts) and 50 < words[-1]["timestamp"][1] <= sf.info(long_recording).duration + 0.1


@pytest.mark.parametrize("options, message", [
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--chunk_length_s", "-1"], "--chunk_length_s must be >= 0"),
    (["--timestamps", "word"], "add --json"),
])
def test_bad_batching_options_are_clear_errors(model_dir, tmp_path, capsys, options, message):
    audio = noise(tmp_path / "a.wav")
    assert main(["transcribe", str(model_dir), str(audio)] + options) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def pytorch_and_onnx_folders(tmp_path_factory):
    """A tiny model folder and the every-depth ONNX folder `export` writes of it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    folder = tmp_path_factory.mktemp("exported")
    save_model_folder(folder / "model", interctc_layers=[2])
    assert main(["export", str(folder / "model"), str(folder / "onnx")]) == 0
    return folder / "model", folder / "onnx"


SPEECH = [str(path) for path in sorted(SUBSET.glob("*.flac"))[:3]]


@pytest.mark.parametrize("options", [[], ["--depth", "2"], ["--depth", "3", "--batch_size", "2"],
                                     ["--early_exit_threshold", "0"], ["--early_exit_threshold", "1.5"]])
def test_an_onnx_folder_prints_the_pytorch_folders_lines(pytorch_and_onnx_folders, capsys, options):
    model_dir, onnx_dir = pytorch_and_onnx_folders
    for output in ([], ["--json"]):
        assert main(["transcribe", str(model_dir), *SPEECH, *options, *output]) == 0
        expected = capsys.readouterr().out
        assert main(["transcribe", str(onnx_dir), *SPEECH, *options, *output]) == 0
        assert capsys.readouterr().out == expected
        assert len(expected.splitlines()) == len(SPEECH)


def test_an_onnx_folder_takes_an_rtf_budget_measured_through_its_graphs(pytorch_and_onnx_folders, capsys):
    model_dir, onnx_dir = pytorch_and_onnx_folders
    assert main(["transcribe", str(model_dir), SPEECH[0], "--depth", "4", "--json"]) == 0
    expected = capsys.readouterr().out
    assert main(["transcribe", str(onnx_dir), SPEECH[0], "--rtf_budget", "1000", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == expected and "--rtf_budget 1000: depth 4" in captured.err
    assert main(["transcribe", str(onnx_dir), SPEECH[0], "--rtf_budget", "1e-9"]) == 2
    assert "no depth meets RTF 1e-09: the cheapest, 1 layer(s)" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--depth", "9"], "depth must be in [1, 4] (the model has 4 layers), got 9"),
    (["--depth", "2", "--rtf_budget", "0.1"], "give at most one of --depth, --rtf_budget"),
    (["--depth", "2", "--strategy", "uniform"], "drop --strategy"),
    (["--json", "--timestamps", "word"], "--timestamps need a PyTorch model folder"),
    (["--refresh_profile"], "add --rtf_budget"),
])
def test_options_an_onnx_folder_cannot_honour_are_clear_errors(pytorch_and_onnx_folders, capsys, options, message):
    assert main(["transcribe", str(pytorch_and_onnx_folders[1]), SPEECH[0], *options]) == 2
    assert message in capsys.readouterr().err


def test_an_onnx_folder_chunks_a_long_file_as_the_model_folder(pytorch_and_onnx_folders, tmp_path, capsys):
    model_dir, onnx_dir = pytorch_and_onnx_folders
    long, short = noise(tmp_path / "long.wav", samples=48000), noise(tmp_path / "short.wav", samples=16000, seed=1)
    for chunk_length_s in ("2", "0"):  # three chunks of the 3-s file, then one pass
        options = [str(long), str(short), "--chunk_length_s", chunk_length_s, "--json"]
        assert main(["transcribe", str(model_dir), *options]) == 0
        expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert main(["transcribe", str(onnx_dir), *options]) == 0
        assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == expected
        assert [line["path"] for line in expected] == [str(long), str(short)]
