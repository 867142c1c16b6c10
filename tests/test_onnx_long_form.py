"""Long recordings through the torch-free ONNX runtime: cut into overlapping chunks as Transformers' ASR pipeline
cuts them for CTC models, so the transcript is the PyTorch pipeline's for the same chunking, at every depth and with
early exit per chunk."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")

from transformers.pipelines.automatic_speech_recognition import chunk_iter, rescale_stride  # noqa: E402

from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.runtime.export import export_onnx  # noqa: E402
from hf_prunable_ctc.runtime.onnx_runtime import Chunking, OnnxPrunableCTC, chunk_pieces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model_cards" / "prunable-ctc-small-synth"
UTTERANCES = sorted((ROOT / "data" / "demo" / "test").glob("*.ogg"))
RATE = 16000


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every-depth") / "onnx"
    export_onnx(MODEL, folder, check=False)
    return OnnxPrunableCTC(folder, threads=1)


@pytest.fixture(scope="module")
def pipeline():
    from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

    return prunable_asr_pipeline(model=str(MODEL))


@pytest.fixture(scope="module")
def minute(tmp_path_factory):
    """The bundled demo utterances joined: a WAV file of about a minute."""
    samples = np.concatenate([load_audio(path) for path in UTTERANCES])
    assert 55 * RATE < len(samples) < 70 * RATE
    path = tmp_path_factory.mktemp("long") / "minute.wav"
    sf.write(path, samples, RATE, subtype="FLOAT")  # float, so both runtimes read the very samples joined
    return path


@pytest.mark.parametrize("options, stride_length_s", [({}, None), ({"num_layers": 4}, None),
                                                      ({"layers": [1, 2, 3, 5]}, (1.0, 3.0))])
def test_chunked_transcript_is_the_pipelines_for_the_same_chunking(asr, pipeline, minute, options, stride_length_s):
    chunked = asr.transcribe(str(minute), chunk_length_s=20, stride_length_s=stride_length_s, **options)
    expected = pipeline(str(minute), chunk_length_s=20, stride_length_s=stride_length_s, **options)
    assert chunked["text"] == expected["text"] and len(chunked["text"]) > 300
    assert chunked["depth"] == len(asr.layers_to_run(**options))


def test_a_long_recording_is_chunked_by_default_and_differs_from_one_pass(asr, minute):
    default = asr.transcribe(str(minute))
    assert default == asr.transcribe(str(minute), chunk_length_s=20, stride_length_s=20 / 6)
    # The joins and the per-chunk CMVN change some frames: chunking is not a no-op on this minute.
    assert default["text"] != asr.transcribe(str(minute), chunk_length_s=0)["text"]


def test_early_exit_stops_each_chunk_at_its_own_layer_as_in_the_pipeline(asr, pipeline, minute):
    chunked = asr.transcribe(str(minute), chunk_length_s=10, early_exit_threshold=0.8)
    expected = pipeline(str(minute), chunk_length_s=10, early_exit_threshold=0.8)
    assert chunked["text"] == expected["text"]
    assert chunked["exit_depths"] == expected["exit_depths"] and len(set(chunked["exit_depths"])) > 1
    assert chunked["depth"] == max(chunked["exit_depths"])


def test_one_chunk_covering_the_recording_is_the_one_pass_transcript(asr, pipeline, minute):
    one_pass = asr.transcribe(str(minute), chunk_length_s=0)
    assert asr.transcribe(str(minute), chunk_length_s=70) == one_pass
    assert asr.transcribe(str(minute), chunk_length_s=None) == one_pass
    assert one_pass["text"] == pipeline(str(minute))["text"]
    short = load_audio(UTTERANCES[1])
    assert asr.transcribe(short) == asr.transcribe(short, chunk_length_s=0)


def test_a_list_gives_each_recordings_own_transcript_with_the_chunks_batched(asr, minute):
    samples = load_audio(minute)
    recordings = [samples, load_audio(UTTERANCES[2]), samples[: 27 * RATE], np.zeros(0, np.float32)]
    batched = asr.transcribe(recordings, num_layers=6)
    assert batched == [asr.transcribe(r, num_layers=6) for r in recordings]
    assert batched[3] == {"text": "", "depth": 6}
    exits = asr.transcribe(recordings[:3], chunk_length_s=10, early_exit_threshold=0.8)
    assert exits == [asr.transcribe(r, chunk_length_s=10, early_exit_threshold=0.8) for r in recordings[:3]]
    assert [len(r["exit_depths"]) for r in exits] == [9, 1, 4]


class NoFeatures:
    """A stand-in feature extractor for `chunk_iter`: only the cutting is compared."""

    sampling_rate = RATE

    def __call__(self, *args, **kwargs):
        return {}


@pytest.mark.parametrize("num_samples", [0, 1, 399, 16000, 320000, 320001, 373333, 800000, 992137])
@pytest.mark.parametrize("chunk_s, left_s, right_s", [(20, 20 / 6, 20 / 6), (10, 1.0, 3.0), (2, 0, 0),
                                                      (1, 0.49, 0.49)])
def test_chunks_and_kept_frames_are_transformers_own(num_samples, chunk_s, left_s, right_s):
    chunking = Chunking.in_samples(chunk_s, left_s, right_s, RATE, 640)
    samples = np.zeros(num_samples, np.float32)
    expected = [item["stride"] for item in chunk_iter(samples, NoFeatures(), chunking.length, chunking.left,
                                                      chunking.right)]
    pieces = chunk_pieces(num_samples, chunking)
    if num_samples == 0:
        assert expected == [] and [(p.start, p.end) for p in pieces] == [(0, 0)]  # empty audio: one pass
        return
    assert [(p.end - p.start, p.left, p.right) for p in pieces] == expected
    assert pieces[0].start == 0 and pieces[-1].end == num_samples
    tokens = np.arange(num_samples // 160)  # more frames than any chunk has, so no slice is clipped
    for piece, (frames, left, right) in zip(pieces, rescale_stride(expected, 1 / 640)):
        assert piece.kept(tokens).tolist() == tokens[left:frames - right].tolist()


def test_bad_chunking_is_a_clear_error_before_any_audio_is_read(asr):
    missing = "no-such-file.wav"
    for options, message in (({"chunk_length_s": -1}, "chunk_length_s must be a number of seconds >= 0"),
                             ({"chunk_length_s": float("nan")}, "chunk_length_s must be"),
                             ({"chunk_length_s": "20"}, "chunk_length_s must be"),
                             ({"chunk_length_s": True}, "chunk_length_s must be"),
                             ({"stride_length_s": -0.5}, "stride_length_s must be a number of seconds >= 0"),
                             ({"chunk_length_s": 20, "stride_length_s": 10}, r"must be shorter than chunk_length_s"),
                             ({"chunk_length_s": 20, "stride_length_s": 12}, r"under half the chunk"),
                             ({"chunk_length_s": 20, "stride_length_s": (15, 5)}, "left 15 s"),
                             ({"chunk_length_s": 20, "stride_length_s": (1, 2, 3)}, r"one number or \(left, right\)"),
                             ({"chunk_length_s": 0.01}, "must be shorter than chunk_length_s")):
        with pytest.raises(ValueError, match=message):
            asr.transcribe(missing, **options)
    with pytest.raises(ValueError, match="at most one of"):
        asr.transcribe(missing, num_layers=2, early_exit_threshold=0.5, chunk_length_s=-1)
