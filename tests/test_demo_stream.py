"""The demo's microphone tab without a browser: a file fed to its stream handler in the pieces Gradio sends
(`(rate, int16 samples)`), the depth slider read on every piece, the final transcript, and the tab's explanation for
a model that cannot stream. The page in a browser is driven in tests/test_demo_browser.py."""

from pathlib import Path

import numpy as np
import pytest

from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.runtime.streaming import StreamingRecognizer
from test_cli_stream import save_streaming_folder
from test_demo_app import app

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
CLIP = ROOT / "demo" / "clips" / "and-unto-him.flac"
MODEL_CARD = ROOT / "model_cards" / "prunable-ctc-small-synth"




@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = save_streaming_folder(tmp_path_factory.mktemp("demo") / "model", chunk_size=4)
    return app.load_demo_model(str(folder), warm_up=False)


def microphone_pieces(rate, seconds=0.25, channels=1):
    """The clip as the browser sends it: int16 pieces of `seconds` at `rate`, (samples,) or (samples, channels)."""
    samples = np.round(load_audio(CLIP, rate) * 32767).astype(np.int16)
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1)
    size = int(rate * seconds)
    return [(rate, samples[start:start + size]) for start in range(0, len(samples), size)]


def test_each_piece_runs_at_the_sliders_depth_and_the_transcript_grows(demo):
    pieces = microphone_pieces(16000)
    depths = [4, 4, 2, 2, 1, 3, 3, 4, 2, 1, 4][:len(pieces)]
    depths += [4] * (len(pieces) - len(depths))
    session, texts = None, []
    for piece, depth in zip(pieces, depths):
        before = 0 if session is None else len(session.recognizer.chunk_depths)
        session, text, status = app.stream_piece(demo, session, piece, float(depth))  # sliders send floats
        new = session.recognizer.chunk_depths[before:]
        assert new == [depth] * len(new)
        if new:
            assert f"last chunk: depth {depth} of 4" in status and status.startswith("streaming")
        texts.append(text)
    assert all(later.startswith(earlier.rstrip()) for earlier, later in zip(texts, texts[1:]))
    assert len(set(texts)) >= 4  # a new partial for most chunks
    assert set(session.recognizer.chunk_depths) == {1, 2, 3, 4}

    session, final, status = app.finish_stream(demo, session, 2)
    assert final.startswith(texts[-1].rstrip()) and status.startswith("final")
    assert session.recognizer.chunk_depths[-1] == 2
    # A piece that arrives after the recording ended changes nothing.
    assert app.stream_piece(demo, session, pieces[0], 4)[1] == final


def test_a_stream_at_one_depth_gives_the_recognizers_transcript(demo):
    session = None
    for piece in microphone_pieces(16000):
        session, _, _ = app.stream_piece(demo, session, piece, 3)
    _, final, _ = app.finish_stream(demo, session, 3)
    samples = np.concatenate([p for _, p in microphone_pieces(16000)]).astype(np.float32) / 32768
    reference = StreamingRecognizer(demo.model, (demo.feature_extractor, demo.tokenizer), chunk_ms=160,
                                    num_layers=3)
    reference.accept(samples)
    assert final == reference.finalize()


def test_a_48_khz_stereo_microphone_is_resampled_as_it_streams(demo):
    session = None
    for piece in microphone_pieces(48000, seconds=0.5, channels=2):
        session, _, _ = app.stream_piece(demo, session, piece, 4)
    assert session.resampler is not None and session.sampling_rate == 48000
    _, _, status = app.finish_stream(demo, session, 4)
    # 2.57 s of audio: its output frames at 40 ms, none lost or doubled by resampling piece by piece.
    frames = session.recognizer.logits.shape[1]
    assert abs(frames - 2.572 / 0.04) <= 2
    assert f"{frames * 0.04:.2f} s decoded" in status


def test_a_new_recording_starts_a_new_stream(demo):
    first, _, _ = app.stream_piece(demo, None, microphone_pieces(16000)[0], 4)
    second, _, _ = app.stream_piece(demo, None, microphone_pieces(16000)[0], 4)
    assert first is not second and first.recognizer is not second.recognizer


def test_nothing_recorded_yet(demo):
    assert app.stream_piece(demo, None, None, 4) == (None, "", "waiting for the first chunk")
    assert app.finish_stream(demo, None, 4) == (None, "", "waiting for the first chunk")
    with pytest.raises(ValueError, match="depth must be a whole number from 1 to 4"):
        app.stream_piece(demo, None, microphone_pieces(16000)[0], 7)


def test_the_stream_tab_has_its_controls(demo):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'gradio>=6,<7')")
    page = app.build_ui(demo)
    ids = {block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert {"stream-tab", "microphone", "stream-depth", "stream-transcript", "stream-status"} <= ids
    assert "stream-unavailable" not in ids
    microphone = next(block for block in page.blocks.values() if getattr(block, "elem_id", None) == "microphone")
    assert microphone.streaming and microphone.sources == ["microphone"]


def test_a_model_that_cannot_stream_gets_the_reason_instead_of_a_microphone():
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'gradio>=6,<7')")
    demo = app.load_demo_model(str(MODEL_CARD), warm_up=False)
    assert any("chunked attention" in problem for problem in app.streaming_problems(demo))
    page = app.build_ui(demo)
    blocks = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert "microphone" not in blocks and "stream-tab" in blocks
    assert "cannot stream" in blocks["stream-unavailable"].value and "global CMVN" in blocks["stream-unavailable"].value
    with pytest.raises(ValueError, match="cannot stream"):
        app.stream_piece(demo, None, microphone_pieces(16000)[0], 8)
