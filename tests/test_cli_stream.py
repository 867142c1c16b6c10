"""`transcribe --stream`: partial transcripts as they change, then the final one, equal to `StreamingRecognizer`'s and
to the chunk-masked forward on the whole file; terminal and pipe output, JSON lines, real-time pacing, and the errors
for models and options that cannot stream."""

import io
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import save_model_folder, tiny_model
from hf_prunable_ctc import cli
from hf_prunable_ctc.cli import main
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.global_cmvn import with_global_cmvn
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.runtime.streaming import StreamingRecognizer

SECONDS = 2.0
PIECE = 16000 * cli.STREAM_PIECE_MS // 1000


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def global_cmvn_extractor():
    return with_global_cmvn(make_feature_extractor(), [-6.0 + 0.05 * i for i in range(80)], [2.0] * 80)


def save_streaming_folder(path, extractor=None, **overrides):
    """A tiny chunk-aware conformer (causal convolution, dynamic chunk training, global CMVN) saved to `path`. Seed 1
    gives a random model whose transcripts of noise change from chunk to chunk, so there are partials to see."""
    tokenizer = make_tokenizer()
    settings = dict(num_mel_bins=80, vocab_size=len(tokenizer), causal_conv=True, dynamic_chunk_training=True,
                    interctc_layers=[1, 2])
    model = tiny_model(seed=1, **{**settings, **overrides})
    model.save_pretrained(path)
    save_processor(extractor or global_cmvn_extractor(), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_streaming_folder(tmp_path_factory.mktemp("stream") / "model")


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "noise.wav"
    samples = 0.1 * np.random.default_rng(0).standard_normal(int(16000 * SECONDS) + 77)
    sf.write(path, samples.astype(np.float32), 16000)
    return path


def stream_lines(capsys, *args):
    assert main(["transcribe", *map(str, args), "--stream"]) == 0
    return capsys.readouterr().out.splitlines()


def recognizer_partials(recognizer, samples):
    """The changed partials and the final transcript of `samples` fed in the command's pieces."""
    partials = []
    for start in range(0, len(samples), PIECE):
        text = recognizer.accept(samples[start:start + PIECE])
        if text != (partials[-1] if partials else ""):
            partials.append(text)
    return partials, recognizer.finalize()


def offline_transcript(folder, samples, chunk_size, left_chunks=-1, num_layers=None):
    """Greedy transcript of the whole file through the chunk-masked forward."""
    from transformers import AutoProcessor

    from hf_prunable_ctc import PrunableCTCForCTC

    processor = AutoProcessor.from_pretrained(folder)
    model = PrunableCTCForCTC.from_pretrained(folder).eval()
    features = processor.feature_extractor(samples, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        logits = model(features, chunk_size=chunk_size, left_chunks=left_chunks, num_layers=num_layers).logits
    return processor.tokenizer.decode(logits[0].argmax(-1).tolist())


# What a stream prints.

def test_partials_then_the_recognizers_final_transcript(model_dir, audio, capsys):
    lines = stream_lines(capsys, model_dir, audio, "--chunk_ms", "160")
    assert all(line.startswith(f"{audio}\t") for line in lines)
    texts = [line.split("\t", 1)[1] for line in lines]
    partials, final = recognizer_partials(StreamingRecognizer(str(model_dir), chunk_ms=160),
                                          load_audio(audio, 16000))
    assert texts == partials + [final]
    assert len(partials) >= 3 and all(a != b for a, b in zip(partials, partials[1:]))
    assert all(final.startswith(partial.rstrip()) for partial in partials)  # a stream only adds to its text
    assert final == offline_transcript(model_dir, load_audio(audio, 16000), chunk_size=4)


def test_chunk_left_context_and_depth_reach_the_recognizer(model_dir, audio, capsys):
    lines = stream_lines(capsys, model_dir, audio, "--chunk_ms", "240", "--left_chunks", "1", "--depth", "2")
    final = lines[-1].split("\t", 1)[1]
    assert final == offline_transcript(model_dir, load_audio(audio, 16000), chunk_size=6, left_chunks=1,
                                       num_layers=2)
    assert final != offline_transcript(model_dir, load_audio(audio, 16000), chunk_size=6, left_chunks=1)


def test_the_configs_chunk_is_the_default(tmp_path, audio, capsys):
    folder = save_streaming_folder(tmp_path / "model", chunk_size=5, left_chunks=2, dynamic_chunk_training=False)
    final = stream_lines(capsys, folder, audio)[-1].split("\t", 1)[1]
    assert final == offline_transcript(folder, load_audio(audio, 16000), chunk_size=5, left_chunks=2)


def test_json_lines_mark_partials_and_the_final_with_its_chunk_depths(model_dir, audio, capsys):
    records = [json.loads(line) for line in stream_lines(capsys, model_dir, audio, "--chunk_ms", "320", "--json",
                                                         "--early_exit_threshold", "0")]
    *partials, final = records
    assert partials and all(set(r) == {"path", "partial", "seconds"} for r in partials)
    seconds = [r["seconds"] for r in partials]
    assert seconds == sorted(seconds) and 0 < seconds[-1] <= SECONDS + 0.01
    frames = StreamingRecognizer(str(model_dir), chunk_ms=40)
    frames.accept(load_audio(audio, 16000))
    frames.finalize()
    chunks = -(-len(frames.chunk_depths) // 8)  # the file's output frames in 320 ms chunks
    assert final == {"path": str(audio), "text": final["text"], "depth": 1, "chunk_depths": [1] * chunks}


def test_a_terminal_gets_one_line_overwritten(model_dir, audio, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setattr(cli.shutil, "get_terminal_size", lambda: os.terminal_size((30, 24)))
    assert main(["transcribe", str(model_dir), str(audio), "--stream", "--chunk_ms", "160"]) == 0
    written = terminal.getvalue()
    *shown, last = written.split("\r")
    final = offline_transcript(model_dir, load_audio(audio, 16000), chunk_size=4)
    assert written.count("\n") == 1 and last == f"{audio}\t{final}\n"
    partials = [piece for piece in shown if piece.strip()]
    assert len(partials) >= 3
    assert all(len(piece) <= 29 for piece in partials)  # each fits the terminal, padded over the one before
    assert any(piece.startswith("…") for piece in partials)  # a long line shows its newest words


def test_every_file_streams_from_the_start_and_a_bad_one_is_reported(model_dir, audio, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert main(["transcribe", str(model_dir), str(audio), str(bad), str(audio), "--stream"]) == 2
    captured = capsys.readouterr()
    finals = [line for line in captured.out.splitlines()]
    first = finals[:len(finals) // 2]
    assert first == finals[len(finals) // 2:]  # the second pass is not spoilt by the first's caches
    assert f"error: {bad}" in captured.err and "1 of 3 files could not be transcribed" in captured.err


# Real-time pacing, on a fake clock.

class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 100.0, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_realtime_feeds_each_piece_once_it_has_played(model_dir, audio, capsys, monkeypatch):
    fake, fed = FakeClock(), []
    monkeypatch.setattr(cli.Pacer, "clock", fake.clock)
    monkeypatch.setattr(cli.Pacer, "sleep", fake.sleep)
    accept = StreamingRecognizer.accept

    def timed_accept(self, samples, **depth):
        fed.append((fake.now - 100.0, len(samples)))
        fake.now += 0.03  # decoding takes time too, and counts as time the audio played
        return accept(self, samples, **depth)

    monkeypatch.setattr(StreamingRecognizer, "accept", timed_accept)
    assert main(["transcribe", str(model_dir), str(audio), "--stream", "--realtime"]) == 0
    ends = np.cumsum([size for _, size in fed]) / 16000
    assert len(fed) == -(-int(16000 * SECONDS + 77) // PIECE)
    for at, end in zip([at for at, _ in fed], ends):  # no piece before it has played, none a decode late
        assert end - 1e-9 <= at <= end + 0.03 + 1e-9
    full = sum(size == PIECE for _, size in fed)
    # The first piece waits for its 100 ms; the next ones for what is left of theirs after the 30 ms decode.
    assert fake.sleeps[:full] == pytest.approx([0.1] + [0.07] * (full - 1), abs=1e-9)


def test_without_realtime_nothing_sleeps(model_dir, audio, capsys, monkeypatch):
    def no_sleep(*seconds):
        raise AssertionError("paced without --realtime")

    monkeypatch.setattr(cli.Pacer, "sleep", no_sleep)
    monkeypatch.setattr(cli.Pacer, "clock", no_sleep)
    assert stream_lines(capsys, model_dir, audio)


# What cannot stream.

def test_a_model_that_cannot_stream_names_every_reason(tmp_path, audio, capsys):
    save_model_folder(tmp_path / "plain")
    assert main(["transcribe", str(tmp_path / "plain"), str(audio), "--stream"]) == 2
    error = capsys.readouterr().err
    assert f"error: {tmp_path / 'plain'} cannot stream: not trained for chunked attention" in error
    assert "causal_conv false" in error and "no global CMVN" in error and "docs/streaming.md" in error


def test_a_chunk_aware_model_with_utterance_cmvn_names_only_that(tmp_path, audio, capsys):
    folder = save_streaming_folder(tmp_path / "model", extractor=make_feature_extractor())
    assert main(["transcribe", str(folder), str(audio), "--stream"]) == 2
    error = capsys.readouterr().err
    assert "no global CMVN" in error and "chunked attention" not in error and "causal_conv" not in error


def test_a_stored_schedule_the_stream_cannot_run_is_refused(tmp_path, audio, capsys):
    folder = save_streaming_folder(tmp_path / "model", pruning_schedule={"2": [1, 4]})
    assert main(["transcribe", str(folder), str(audio), "--stream", "--depth", "2"]) == 2
    assert "runs layers [1, 4], and a stream runs the first 2" in capsys.readouterr().err


def test_an_exported_folder_streams_as_its_model(model_dir, audio, tmp_path, capsys):
    from hf_prunable_ctc.runtime.export import export_onnx

    export_onnx(model_dir, tmp_path / "onnx", check=False)
    for options in (["--chunk_ms", "160"], ["--chunk_ms", "240", "--left_chunks", "1", "--depth", "2"]):
        assert stream_lines(capsys, tmp_path / "onnx", audio, *options) == stream_lines(capsys, model_dir, audio,
                                                                                        *options)


def test_an_exported_folder_without_streaming_graphs_says_why(tmp_path, audio, capsys):
    from hf_prunable_ctc.runtime.export import export_onnx

    save_model_folder(tmp_path / "plain")
    export_onnx(tmp_path / "plain", tmp_path / "onnx", check=False)
    assert main(["transcribe", str(tmp_path / "onnx"), str(audio), "--stream"]) == 2
    assert "has no streaming graphs: not trained for chunked attention" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--chunk_ms", "320"], "--chunk_ms set how a stream runs: add --stream"),
    (["--realtime", "--left_chunks", "2"], "--left_chunks, --realtime set how a stream runs: add --stream"),
    (["--stream", "--lm", "none"], "--lm not available with --stream"),
    (["--stream", "--timestamps", "word", "--json"], "--timestamps not available with --stream"),
    (["--stream", "--batch_size", "4"], "--batch_size not available with --stream"),
    (["--stream", "--depth", "2", "--strategy", "top"], "drop --strategy"),
    (["--stream", "--depth", "2", "--early_exit_threshold", "0.5"], "give at most one of --depth"),
    (["--stream", "--chunk_ms", "50"], "chunk_ms must be a positive multiple of one output frame (40 ms)"),
    (["--stream", "--depth", "9"], "depth must be in [1, 4]"),
])
def test_bad_stream_options(model_dir, audio, capsys, options, message):
    assert main(["transcribe", str(model_dir), str(audio), *options]) == 2
    assert message in capsys.readouterr().err
