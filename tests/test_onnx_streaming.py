"""The exported folder streams too: `OnnxStreamingRecognizer` runs the streaming graphs `export_onnx` writes for a
chunk-aware model and gives the logits, partials and transcripts of the PyTorch `StreamingRecognizer` at every
depth, with the same behaviour when the depth changes mid-stream, without importing torch or transformers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")

from hf_prunable_ctc.data.audio import load_audio  # noqa: E402
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor  # noqa: E402
from hf_prunable_ctc.runtime.export import SHARED_WEIGHTS, export_onnx  # noqa: E402
from hf_prunable_ctc.runtime.onnx_streaming import NumpyStreamingFeatures, OnnxStreamingRecognizer  # noqa: E402
from hf_prunable_ctc.runtime.streaming import StreamingRecognizer  # noqa: E402
from test_onnx_runtime import WITHOUT_TORCH  # noqa: E402
from test_streaming import (DEMO_TEST, accept_in_odd_pieces, global_cmvn_extractor, random_audio,  # noqa: E402
                            stream, streaming_model)

ROOT = Path(__file__).resolve().parent.parent
BINS = 80
TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def save_model(path, encoder_type="conformer", extractor=None, **overrides):
    """A tiny model (random weights, 80 mel bins) with its processor saved to `path`; chunk-aware unless
    `overrides` say otherwise. Returns (model, (extractor, tokenizer))."""
    settings = dict(num_mel_bins=BINS, dynamic_chunk_training=True)
    model, tokenizer = streaming_model(encoder_type, **{**settings, **overrides})
    extractor = extractor or global_cmvn_extractor(BINS)
    model.save_pretrained(path)
    save_processor(extractor, tokenizer, path)
    return model, (extractor, tokenizer)


class Exported:
    def __init__(self, root: Path, encoder_type: str, check: bool = True, **overrides):
        self.model, self.processor = save_model(root / "model", encoder_type, **overrides)
        self.folder = root / "onnx"
        self.result = export_onnx(root / "model", self.folder, check=check)

    def pair(self, **options):
        """The ONNX recogniser and the PyTorch one, with the same options."""
        return (OnnxStreamingRecognizer(self.folder, **options),
                StreamingRecognizer(self.model, self.processor, **options))


@pytest.fixture(scope="module", params=["transformer", "conformer"])
def exported(request, tmp_path_factory):
    return Exported(tmp_path_factory.mktemp(request.param), request.param)


def stream_both(pair, audio, seed=1, most=3000, **depth):
    """Stream `audio` through both recognisers in the same random pieces; returns both lists of partials."""
    return [stream(recognizer, audio, seed=seed, most=most, **depth) for recognizer in pair]


def assert_same_stream(pair, partials=None):
    onnx_recognizer, torch_recognizer = pair
    expected = torch_recognizer.logits.numpy()
    assert onnx_recognizer.logits.shape == expected.shape
    assert np.abs(onnx_recognizer.logits - expected).max() <= TOLERANCE
    assert onnx_recognizer.chunk_depths == torch_recognizer.chunk_depths
    assert onnx_recognizer.transcript == torch_recognizer.transcript
    if partials is not None:
        assert partials[0] == partials[1]


# The export.

def test_export_writes_streaming_graphs_that_share_the_weights(exported):
    result, folder = exported.result, exported.folder
    assert result["streaming"] and result["max_abs_diff"] < TOLERANCE and result["streaming_max_abs_diff"] < TOLERANCE
    runtime = json.loads((folder / "runtime.json").read_text())
    spec = runtime["streaming"]
    assert len(spec["layers"]) == exported.model.config.num_hidden_layers
    assert all((folder / name).is_file() for name in spec["graphs"])
    assert runtime["streaming_unavailable"] is None

    import onnx

    def stored(name):
        """(offset, length) of each tensor of graph `name` stored in the shared file; the largest inline one."""
        graph = onnx.load(str(folder / name), load_external_data=False).graph
        shared = {tuple(sorted((e.key, e.value) for e in t.external_data)) for t in graph.initializer if t.external_data}
        return shared, max((len(t.raw_data) for t in graph.initializer), default=0)

    for index in range(1, exported.model.config.num_hidden_layers + 1):
        full, _ = stored(f"layer_{index:02d}.onnx")
        chunk, largest_inline = stored(f"layer_{index:02d}_chunk.onnx")
        assert chunk == full and len(chunk) > 0  # the chunk graph reads the full graph's bytes
        assert largest_inline < 1024
    parameter_bytes = sum(p.numel() * 4 for p in exported.model.parameters())
    assert (folder / SHARED_WEIGHTS).stat().st_size <= parameter_bytes  # every weight once, at most
    assert result["size_bytes"] == sum(f.stat().st_size for f in folder.iterdir()
                                       if f.suffix == ".onnx" or f.name == SHARED_WEIGHTS)


# Streams equal the PyTorch recogniser's.

@pytest.mark.parametrize("left_chunks", [-1, 2])
def test_stream_equals_pytorch_at_every_depth(exported, left_chunks):
    audio = random_audio(1.3)
    for depth in range(1, exported.model.config.num_hidden_layers + 1):
        pair = exported.pair(chunk_ms=120, left_chunks=left_chunks, num_layers=depth)
        partials = stream_both(pair, audio, seed=depth)
        assert_same_stream(pair, partials)
        assert pair[0].chunk_depths == [depth] * -(-pair[0].logits.shape[1] // 3)


def test_stream_equals_pytorch_on_demo_utterances(exported):
    for index, path in enumerate(sorted(DEMO_TEST.glob("*.ogg"))[:3]):
        audio = load_audio(path, 16000)
        for depth in (2, 4):
            pair = exported.pair(chunk_ms=320, left_chunks=2)
            partials = stream_both(pair, audio, seed=index, most=4000, num_layers=depth)
            assert_same_stream(pair, partials)


@pytest.mark.parametrize("depths", [(4, 2, 4), (2, 4, 4), (1, 3, 2)])
def test_depth_change_mid_stream_equals_pytorch(exported, depths):
    """Going down keeps the caches of the layers still running, going up starts the added layers empty, and a
    layer skipped once forgets its caches: chunk by chunk what the PyTorch recogniser computes."""
    audio = random_audio(1.6)
    pieces = (audio[:5000], audio[5000:10000], audio[10000:])
    pair = exported.pair(chunk_ms=160, left_chunks=-1)
    for recognizer in pair:
        for piece, depth in zip(pieces, depths):
            recognizer.accept(piece, num_layers=depth)
        recognizer.finalize(num_layers=depths[-1])
    assert_same_stream(pair)
    assert len(set(pair[0].chunk_depths)) == len(set(depths))


@pytest.mark.parametrize("threshold", [0.0, 0.2, 2.0])
def test_early_exit_per_chunk_equals_pytorch(exported, threshold):
    pair = exported.pair(chunk_ms=160, early_exit_threshold=threshold)
    stream_both(pair, random_audio(1.6))
    assert_same_stream(pair)
    if threshold == 0.0:
        assert set(pair[0].chunk_depths) == {1}
    if threshold == 2.0:
        assert set(pair[0].chunk_depths) == {4}


def test_rtf_budget_picks_the_depth(exported):
    profile = {"rtf": {1: 0.01, 2: 0.02, 3: 0.03, 4: 0.04}}
    recognizer = OnnxStreamingRecognizer(exported.folder, chunk_ms=160, latency_profile=profile)
    stream(recognizer, random_audio(), rtf_budget=0.025)
    assert set(recognizer.chunk_depths) == {2}
    with pytest.raises(ValueError, match="no depth meets"):
        recognizer.reset()
        recognizer.accept(random_audio(0.1), rtf_budget=0.001)


@pytest.mark.parametrize("encoder_type, overrides", [
    ("conformer", {"subsampling_type": "conv2d", "self_conditioning": True}),
    ("conformer", {"subsampling_factor": 8}),
    ("transformer", {"position_embedding_type": "absolute", "subsampling_type": "whisper", "subsampling_factor": 2}),
])
def test_other_front_ends_and_self_conditioning_stream_exactly(tmp_path, encoder_type, overrides):
    model = Exported(tmp_path, encoder_type, check=False, **overrides)
    frame_ms = 10 * model.model.config.subsampling_factor
    for depth in (1, 4):
        pair = model.pair(chunk_ms=3 * frame_ms, left_chunks=1)
        stream_both(pair, random_audio(1.1), seed=depth, num_layers=depth)
        assert_same_stream(pair)
    pair = model.pair(chunk_ms=3 * frame_ms, early_exit_threshold=0.2)
    stream_both(pair, random_audio(1.1))
    assert_same_stream(pair)


# Features, state and what the recogniser refuses.

def test_numpy_features_stream_exactly(exported):
    extractor = exported.processor[0]
    audio = load_audio(sorted(DEMO_TEST.glob("*.ogg"))[0], 16000)
    features = NumpyStreamingFeatures(exported.folder)
    pieces = accept_in_odd_pieces(features, audio)
    streamed = np.concatenate(pieces)
    whole = (features.front_end.fbank(audio) - features.mean) / features.std
    assert streamed.shape == whole.shape and np.abs(streamed - whole).max() < 1e-5  # BLAS blocks differ by size
    # The torch extractor's features, up to the FFTs' rounding that onnx_runtime's front end documents.
    expected = extractor(audio, sampling_rate=16000, return_tensors="np")["input_features"][0]
    assert streamed.shape == expected.shape and np.abs(streamed - expected).max() < 2.5e-3


def test_finalize_reset_and_refusals(exported):
    recognizer = OnnxStreamingRecognizer(exported.folder, chunk_ms=160)
    audio = random_audio(1.0)
    stream(recognizer, audio)
    final = recognizer.transcript
    with pytest.raises(RuntimeError, match="reset"):
        recognizer.accept(audio[:100])
    recognizer.reset()
    assert recognizer.logits.shape[1] == 0 and recognizer.transcript == ""
    stream(recognizer, audio, seed=7)
    assert recognizer.transcript == final
    recognizer.reset()
    with pytest.raises(ValueError, match="at most one"):
        recognizer.accept(audio[:100], num_layers=2, early_exit_threshold=0.5)
    with pytest.raises(ValueError, match="depth must be in"):
        recognizer.accept(audio[:100], num_layers=9)
    with pytest.raises(ValueError, match="NaN"):
        recognizer.accept(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="multiple of one output frame"):
        OnnxStreamingRecognizer(exported.folder, chunk_ms=50)
    with pytest.raises(ValueError, match="left_chunks"):
        OnnxStreamingRecognizer(exported.folder, left_chunks=-2)


def test_partial_transcript_needs_a_whole_chunk(exported):
    recognizer = OnnxStreamingRecognizer(exported.folder, chunk_ms=640)
    recognizer.accept(random_audio(0.5))
    assert recognizer.logits.shape[1] == 0  # 0.5 s: not yet 16 output frames
    recognizer.accept(random_audio(0.3, seed=1))
    assert recognizer.logits.shape[1] == 16


def test_model_that_cannot_stream_is_refused(tmp_path):
    save_model(tmp_path / "full", dynamic_chunk_training=False)
    with pytest.raises(ValueError, match="not trained for chunked attention"):
        export_onnx(tmp_path / "full", tmp_path / "refused", streaming=True)
    assert not (tmp_path / "refused").exists()
    result = export_onnx(tmp_path / "full", tmp_path / "onnx", check=False)  # default: the folder, no streaming
    assert result["streaming"] is False and not (tmp_path / "onnx" / SHARED_WEIGHTS).exists()
    with pytest.raises(ValueError, match="no streaming graphs: not trained for chunked attention"):
        OnnxStreamingRecognizer(tmp_path / "onnx")

    save_model(tmp_path / "centred", causal_conv=False)
    with pytest.raises(ValueError, match="causal_conv"):
        export_onnx(tmp_path / "centred", tmp_path / "refused", streaming=True)
    save_model(tmp_path / "utterance-cmvn", extractor=make_feature_extractor(num_mel_bins=BINS))
    with pytest.raises(ValueError, match="global CMVN"):
        export_onnx(tmp_path / "utterance-cmvn", tmp_path / "refused", streaming=True)
    save_model(tmp_path / "streams")
    with pytest.raises(ValueError, match="float32"):
        export_onnx(tmp_path / "streams", tmp_path / "refused", streaming=True, quantize="int8")
    with pytest.raises(ValueError, match="every-depth folder"):
        export_onnx(tmp_path / "full", tmp_path / "refused", streaming=True, depth=2)


# Without torch.

RUN_WITHOUT_TORCH = WITHOUT_TORCH + textwrap.dedent("""
    import numpy as np
    from hf_prunable_ctc.runtime.onnx_streaming import OnnxStreamingRecognizer

    folder, audio_file = sys.argv[1], sys.argv[2]
    audio = np.load(audio_file)
    recognizer = OnnxStreamingRecognizer(folder, chunk_ms=160, left_chunks=1)
    out = {}
    for depth in (1, 2, 4):
        recognizer.reset()
        partials = [recognizer.accept(audio[i:i + 1234], num_layers=depth) for i in range(0, len(audio), 1234)]
        out[depth] = partials + [recognizer.finalize(num_layers=depth)]
    out["modules"] = sorted(name for name in ("torch", "transformers") if name in sys.modules)
    print(json.dumps(out))
""")


def test_streams_without_torch_with_pytorchs_partials(exported, tmp_path):
    audio = random_audio(1.4)
    np.save(tmp_path / "audio.npy", audio)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(exported.folder), str(tmp_path / "audio.npy")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got.pop("modules") == []
    recognizer = StreamingRecognizer(exported.model, exported.processor, chunk_ms=160, left_chunks=1)
    for depth, texts in got.items():
        recognizer.reset()
        partials = [recognizer.accept(audio[i:i + 1234], num_layers=int(depth)) for i in range(0, len(audio), 1234)]
        assert texts == partials + [recognizer.finalize(num_layers=int(depth))], depth


def test_importing_the_module_imports_neither_torch_nor_transformers():
    code = ("import sys, hf_prunable_ctc.runtime.onnx_streaming; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
