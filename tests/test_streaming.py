"""Chunked attention, causal convolution and the streaming recogniser: a stream gives the chunk-masked logits of the
whole utterance at every depth, and changes of depth behave as `hf_prunable_ctc.runtime.streaming` describes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCForCTC
from hf_prunable_ctc.data.audio import load_audio
from hf_prunable_ctc.data.features import make_feature_extractor, save_processor
from hf_prunable_ctc.data.global_cmvn import with_global_cmvn
from hf_prunable_ctc.data.vocabulary import make_tokenizer
from hf_prunable_ctc.modeling_prunable_ctc import (ConvolutionModule, ConvSubsampling, attention_key_mask,
                                                   chunk_attention_mask, sample_chunk_size)
from hf_prunable_ctc.runtime.streaming import StreamingFeatures, StreamingRecognizer

BINS = 16
DEMO_TEST = Path(__file__).resolve().parents[1] / "data" / "demo" / "test"
STREAMING_FIELDS = ("causal_conv", "chunk_size", "left_chunks", "dynamic_chunk_training", "dynamic_chunk_max_size",
                    "dynamic_chunk_full_context_probability")


@pytest.fixture(autouse=True, scope="module")
def _threads(one_thread):
    yield


def global_cmvn_extractor(bins=BINS):
    return with_global_cmvn(make_feature_extractor(num_mel_bins=bins), [-6.0 + 0.1 * i for i in range(bins)],
                            [2.0 + 0.05 * i for i in range(bins)])


def streaming_model(encoder_type="conformer", **overrides):
    tokenizer = make_tokenizer()
    settings = dict(encoder_type=encoder_type, causal_conv=True, vocab_size=len(tokenizer), interctc_layers=[1, 2])
    settings.update(overrides)
    return tiny_model(**settings), tokenizer


def random_audio(seconds=1.3, seed=0):
    return (0.1 * np.random.RandomState(seed).randn(int(16000 * seconds) + 77)).astype(np.float32)


def stream(recognizer, audio, seed=1, most=3000, **depth):
    """Feed `audio` in random pieces (1 .. `most` samples), then finalize; returns the partial transcripts."""
    rng, position, partials = np.random.RandomState(seed), 0, []
    while position < len(audio):
        size = int(rng.randint(1, most))
        partials.append(recognizer.accept(audio[position:position + size], **depth))
        position += size
    recognizer.finalize(**depth)
    return partials


def full_logits(model, extractor, audio, **kwargs):
    features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        return model(features, **kwargs).logits


# Configuration.

@pytest.mark.parametrize("field, value, message", [
    ("chunk_size", -1, "chunk_size: must be an integer >= 0"),
    ("chunk_size", 2.5, "chunk_size: must be an integer >= 0"),
    ("chunk_size", True, "chunk_size: must be an integer >= 0"),
    ("left_chunks", -2, "left_chunks: must be an integer >= -1"),
    ("causal_conv", 1, "causal_conv: must be True or False"),
    ("dynamic_chunk_training", "yes", "dynamic_chunk_training: must be True or False"),
    ("dynamic_chunk_max_size", 0, "dynamic_chunk_max_size: must be a positive integer"),
    ("dynamic_chunk_full_context_probability", 1.5, "dynamic_chunk_full_context_probability: must be in"),
])
def test_config_rejects_bad_streaming_fields(field, value, message):
    with pytest.raises(ValueError, match=f"PrunableCTCConfig.{message}"):
        tiny_config(**{field: value})


def test_config_overrides_at_loading_are_checked(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="chunk_size"):
        PrunableCTCForCTC.from_pretrained(tmp_path, chunk_size=-4)
    assert PrunableCTCForCTC.from_pretrained(tmp_path, chunk_size=8).config.chunk_size == 8


def test_streaming_fields_are_saved(tmp_path):
    model = tiny_model(causal_conv=True, chunk_size=4, left_chunks=2, dynamic_chunk_training=True,
                       dynamic_chunk_max_size=9, dynamic_chunk_full_context_probability=0.25)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {field: saved[field] for field in STREAMING_FIELDS} == {
        "causal_conv": True, "chunk_size": 4, "left_chunks": 2, "dynamic_chunk_training": True,
        "dynamic_chunk_max_size": 9, "dynamic_chunk_full_context_probability": 0.25}


def test_checkpoint_without_streaming_fields_loads_unchanged(tmp_path, batch):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k not in STREAMING_FIELDS}))
    loaded = PrunableCTCForCTC.from_pretrained(tmp_path).eval()
    assert (loaded.config.causal_conv, loaded.config.chunk_size, loaded.config.dynamic_chunk_training) == (
        False, 0, False)
    features, mask = batch
    with torch.no_grad():
        assert torch.equal(loaded(features, attention_mask=mask).logits, model(features, attention_mask=mask).logits)


# Masks and the chunked forward.

def test_chunk_attention_mask():
    mask = chunk_attention_mask(5, chunk_size=2, left_chunks=1).int()
    assert mask.tolist() == [[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 0],
                             [0, 0, 1, 1, 1]]
    every_chunk = chunk_attention_mask(5, chunk_size=2, left_chunks=-1).int()
    assert every_chunk[4].tolist() == [1, 1, 1, 1, 1] and every_chunk[1].tolist() == [1, 1, 0, 0, 0]


def test_attention_key_mask_with_padding():
    frame_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    assert attention_key_mask(frame_mask, 0, -1).shape == (2, 1, 1, 6)
    keys = attention_key_mask(frame_mask, 2, 0)[:, 0]
    assert keys.any(dim=-1).all()  # no query reads nothing (SDPA would give NaN)
    assert not keys[1, :3, 3:].any()  # valid frames never read padding
    assert keys[1, 3].tolist() == [False, False, True, True, False, False]  # a padded query reads its chunk


def test_chunked_forward_sees_no_future(batch):
    model = tiny_model(encoder_type="transformer")
    features, mask = batch[0][:1], batch[1][:1]
    changed = features.clone()
    changed[:, 40:] += 3.0  # output frames 10.. (and the front end's look-ahead into frame 9)
    with torch.no_grad():
        before = model(features, chunk_size=4, left_chunks=-1).logits
        after = model(changed, chunk_size=4, left_chunks=-1).logits
        full_before, full_after = model(features).logits, model(changed).logits
    assert torch.allclose(before[:, :8], after[:, :8], atol=1e-6)  # chunks 0 and 1 end before the change
    assert not torch.allclose(full_before[:, :8], full_after[:, :8], atol=1e-3)


def test_chunk_size_zero_and_whole_chunk_are_full_context(batch):
    model = tiny_model()
    features, mask = batch
    with torch.no_grad():
        full = model(features, attention_mask=mask).logits
        assert torch.equal(model(features, attention_mask=mask, chunk_size=0).logits, full)
        assert torch.allclose(model(features, attention_mask=mask, chunk_size=1000).logits, full, atol=1e-5)
        assert not torch.allclose(model(features, attention_mask=mask, chunk_size=2).logits, full, atol=1e-3)


def test_forward_rejects_bad_chunk(batch):
    with pytest.raises(ValueError, match="chunk_size"):
        tiny_model()(batch[0], chunk_size=-1)


def test_config_chunk_is_the_default(batch):
    features, mask = batch
    chunked = tiny_model(chunk_size=3, left_chunks=1)
    plain = tiny_model()
    with torch.no_grad():
        assert torch.equal(chunked(features, attention_mask=mask).logits,
                           plain(features, attention_mask=mask, chunk_size=3, left_chunks=1).logits)


def test_dynamic_chunk_sizes():
    torch.manual_seed(0)
    config = tiny_config(dynamic_chunk_training=True, dynamic_chunk_max_size=5,
                         dynamic_chunk_full_context_probability=0.3)
    draws = [sample_chunk_size(config) for _ in range(2000)]
    assert set(draws) == {0, 1, 2, 3, 4, 5}
    assert 0.25 < draws.count(0) / len(draws) < 0.35
    model = tiny_model(dynamic_chunk_training=True, dynamic_chunk_max_size=5, chunk_size=0)
    assert model.model.attention_chunk() == (0, -1)  # evaluation: the config's chunk
    model.train()
    assert {model.model.attention_chunk()[0] for _ in range(200)} == {0, 1, 2, 3, 4, 5}


def test_dynamic_chunk_training_step_runs():
    torch.manual_seed(0)
    model = tiny_model(causal_conv=True, dynamic_chunk_training=True, interctc_layers=[2], interctc_weight=0.3,
                       stochastic_depth_rate=0.2).train()
    features = torch.randn(2, 60, BINS)
    loss = model(features, labels=torch.tensor([[1, 2, 3], [4, 5, -100]])).loss
    loss.backward()
    assert torch.isfinite(loss) and model.lm_head.weight.grad.abs().sum() > 0


def test_causal_convolution_reads_no_future_frame():
    torch.manual_seed(0)
    module = ConvolutionModule(tiny_config(causal_conv=True)).eval()
    hidden = torch.randn(1, 20, 32)
    changed = hidden.clone()
    changed[:, 12] += 1.0
    mask = torch.ones(1, 20, dtype=torch.bool)
    before, after = module(hidden, mask), module(changed, mask)
    assert torch.equal(before[:, :12], after[:, :12]) and not torch.allclose(before[:, 12], after[:, 12])


# The streamed front end.

@pytest.mark.parametrize("subsampling", [dict(subsampling_type="conv1d", subsampling_factor=4),
                                         dict(subsampling_type="conv1d", subsampling_factor=8),
                                         dict(subsampling_type="conv2d", subsampling_factor=4),
                                         dict(subsampling_type="whisper", subsampling_factor=2,
                                              position_embedding_type="absolute")])
@pytest.mark.parametrize("frames", [1, 2, 7, 64, 101])
def test_subsampling_streams_exactly(subsampling, frames):
    torch.manual_seed(0)
    front_end = ConvSubsampling(tiny_config(**subsampling)).eval()
    features = torch.randn(1, frames, BINS)
    with torch.no_grad():
        whole, lengths = front_end(features, torch.tensor([frames]))
        rng, position, cache, pieces = np.random.RandomState(frames), 0, None, []
        while position < frames:
            size = int(rng.randint(0, 9))
            piece, cache = front_end.forward_chunk(features[:, position:position + size], cache,
                                                   start=sum(p.shape[1] for p in pieces))
            pieces.append(piece)
            position += size
        piece, cache = front_end.forward_chunk(features[:, :0], cache, final=True,
                                               start=sum(p.shape[1] for p in pieces))
        streamed = torch.cat(pieces + [piece], dim=1)
    assert streamed.shape[1] == int(lengths[0]) == whole.shape[1]
    assert torch.allclose(streamed, whole, atol=1e-5)


def accept_in_odd_pieces(features, audio):
    """What `features.accept` returns for `audio` fed in pieces of random sizes around the 10 ms hop and 25 ms
    window (seeded), one output per piece."""
    rng, position, pieces = np.random.RandomState(0), 0, []
    while position < len(audio):
        size = int(rng.choice([1, 7, 159, 160, 161, 399, 400, 1000]))
        pieces.append(features.accept(audio[position:position + size]))
        position += size
    return pieces


def test_features_stream_exactly():
    extractor = global_cmvn_extractor(80)
    audio = random_audio(2.0)
    whole = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
    features = StreamingFeatures(extractor)
    pieces = accept_in_odd_pieces(features, audio)
    streamed = torch.cat(pieces)
    assert streamed.shape == whole.shape == (extractor.num_frames(len(audio)), 80)
    assert torch.allclose(streamed, whole, atol=1e-4)


def test_features_refuse_what_cannot_stream():
    with pytest.raises(ValueError, match="global CMVN"):
        StreamingFeatures(make_feature_extractor())
    from hf_prunable_ctc.feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor

    with pytest.raises(ValueError, match="Kaldi fbank"):
        StreamingFeatures(PrunableCTCFeatureExtractor(feature_type="whisper_log_mel", do_ceptral_normalize=False))
    with pytest.raises(ValueError, match="NaN"):
        StreamingFeatures(global_cmvn_extractor()).accept(np.array([0.0, np.nan], dtype=np.float32))


# Streamed logits equal the chunk-masked forward.

@pytest.mark.parametrize("encoder_type, overrides", [
    ("transformer", {}),
    ("conformer", {}),
    ("conformer", {"subsampling_type": "conv2d"}),
    ("conformer", {"self_conditioning": True}),
    ("transformer", {"position_embedding_type": "absolute", "subsampling_type": "whisper", "subsampling_factor": 2}),
])
@pytest.mark.parametrize("left_chunks", [-1, 0, 2])
def test_stream_equals_chunk_masked_forward_at_every_depth(encoder_type, overrides, left_chunks):
    model, tokenizer = streaming_model(encoder_type, **overrides)
    extractor = global_cmvn_extractor()
    audio = random_audio()
    frame_ms = 10 * model.config.subsampling_factor
    for depth in range(1, model.config.num_hidden_layers + 1):
        recognizer = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=3 * frame_ms,
                                         left_chunks=left_chunks, num_layers=depth)
        stream(recognizer, audio, seed=depth)
        expected = full_logits(model, extractor, audio, num_layers=depth, chunk_size=3, left_chunks=left_chunks)
        assert recognizer.logits.shape == expected.shape
        assert torch.allclose(recognizer.logits, expected, atol=1e-4), depth
        assert recognizer.chunk_depths == [depth] * -(-expected.shape[1] // 3)


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_stream_equals_chunk_masked_forward_on_demo_utterances(encoder_type):
    model, tokenizer = streaming_model(encoder_type, num_mel_bins=80)
    extractor = global_cmvn_extractor(80)
    for index, path in enumerate(sorted(DEMO_TEST.glob("*.ogg"))[:3]):
        audio = load_audio(path, 16000)
        for depth in (2, 4):
            recognizer = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=320, left_chunks=2)
            stream(recognizer, audio, seed=index, most=4000, num_layers=depth)
            expected = full_logits(model, extractor, audio, num_layers=depth, chunk_size=8, left_chunks=2)
            assert torch.allclose(recognizer.logits, expected, atol=1e-4), (path.name, depth)


def test_partial_and_final_transcripts():
    model, tokenizer = streaming_model()
    extractor = global_cmvn_extractor()
    audio = random_audio(2.0)
    recognizer = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160)
    piece = 1600
    partials = [recognizer.accept(audio[i:i + piece]) for i in range(0, len(audio), piece)]
    decoded_frames = recognizer.logits.shape[1]
    final = recognizer.finalize()
    expected = full_logits(model, extractor, audio, chunk_size=4, left_chunks=-1)
    ids = expected[0].argmax(dim=-1)
    assert final == tokenizer.decode(ids.tolist())
    assert partials[-1] == tokenizer.decode(ids[:decoded_frames].tolist())
    assert decoded_frames < expected.shape[1]  # the last, unfinished chunk waited for finalize()
    with pytest.raises(RuntimeError, match="reset"):
        recognizer.accept(audio[:100])
    recognizer.reset()
    stream(recognizer, audio)
    assert recognizer.transcript == final


def test_partial_transcript_needs_a_whole_chunk():
    model, tokenizer = streaming_model()
    recognizer = StreamingRecognizer(model, (global_cmvn_extractor(), tokenizer), chunk_ms=640)
    recognizer.accept(random_audio(0.5))
    assert recognizer.logits.shape[1] == 0  # 0.5 s: not yet 16 output frames
    recognizer.accept(random_audio(0.3, seed=1))
    assert recognizer.logits.shape[1] == 16


# Depth changes mid-stream.

def test_lower_depth_mid_stream_equals_that_depth():
    """Layers 1-2 keep their caches whatever ran above them: after going from 4 to 2 layers, the chunks are those of
    a stream at depth 2 all along."""
    model, tokenizer = streaming_model()
    extractor = global_cmvn_extractor()
    audio = random_audio(1.6)
    recognizer = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160, left_chunks=-1)
    recognizer.accept(audio[:8000], num_layers=4)
    switch = recognizer.logits.shape[1]
    recognizer.accept(audio[8000:], num_layers=2)
    recognizer.finalize(num_layers=2)
    deep = full_logits(model, extractor, audio, num_layers=4, chunk_size=4)
    shallow = full_logits(model, extractor, audio, num_layers=2, chunk_size=4)
    assert switch > 0 and recognizer.chunk_depths[switch // 4] == 2 and recognizer.chunk_depths[0] == 4
    assert torch.allclose(recognizer.logits[:, :switch], deep[:, :switch], atol=1e-4)
    assert torch.allclose(recognizer.logits[:, switch:], shallow[:, switch:], atol=1e-4)


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_higher_depth_mid_stream_starts_empty_caches(encoder_type):
    """After going from 2 to 4 layers, layers 3-4 run as if the stream started at the switch: empty attention and
    convolution caches there, full caches for layers 1-2."""
    model, tokenizer = streaming_model(encoder_type)
    extractor = global_cmvn_extractor()
    audio = random_audio(1.6)
    recognizer = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160, left_chunks=-1)
    recognizer.accept(audio[:8000], num_layers=2)
    switch = recognizer.logits.shape[1]
    recognizer.accept(audio[8000:], num_layers=4)
    recognizer.finalize(num_layers=4)

    features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    encoder = model.model
    with torch.no_grad():
        shallow = model(features, num_layers=2, chunk_size=4).logits
        states = encoder(features, num_layers=4, chunk_size=4, output_hidden_states=True,
                         ctc_head=model.logits_from_hidden_state).hidden_states
        after_two = states[2][:, switch:]  # layers 1-2 streamed with their caches
        frames = after_two.shape[1]
        frame_mask = torch.ones(1, frames, dtype=torch.bool)
        key_mask = attention_key_mask(frame_mask, 4, -1)
        rotary = encoder.rotary(frames, after_two.dtype)
        hidden = encoder.run_layers(after_two, [3, 4], key_mask, frame_mask, rotary)[0]
        fresh = model.logits_from_hidden_state(hidden)
        deep = model(features, num_layers=4, chunk_size=4).logits
    assert torch.allclose(recognizer.logits[:, :switch], shallow[:, :switch], atol=1e-4)
    assert torch.allclose(recognizer.logits[:, switch:], fresh, atol=1e-4)
    assert not torch.allclose(fresh, deep[:, switch:], atol=1e-3)  # the left context layers 3-4 did not get


def test_a_layer_skipped_once_forgets_its_cache():
    """4, 2, 4 layers: layers 3-4 start empty again at the third part, not from the caches of the first."""
    model, tokenizer = streaming_model()
    extractor = global_cmvn_extractor()
    audio = random_audio(1.6)
    pieces = (audio[:5000], audio[5000:10000], audio[10000:])

    def run(depths):
        recognizer, third = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160), 0
        for piece, depth in zip(pieces, depths):
            third = recognizer.logits.shape[1]
            recognizer.accept(piece, num_layers=depth)
        recognizer.finalize(num_layers=depths[-1])
        return recognizer.logits, third

    (skipped, third), (cold, _), (kept, _) = run((4, 2, 4)), run((2, 2, 4)), run((4, 4, 4))
    assert 0 < third < skipped.shape[1]
    assert torch.allclose(skipped[:, third:], cold[:, third:], atol=1e-5)
    assert not torch.allclose(skipped[:, third:], kept[:, third:], atol=1e-3)


def test_early_exit_per_chunk():
    model, tokenizer = streaming_model(interctc_layers=[1, 2])
    extractor = global_cmvn_extractor()
    audio = random_audio()
    first = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160, early_exit_threshold=0.0)
    stream(first, audio)
    assert set(first.chunk_depths) == {1}
    assert torch.allclose(first.logits, full_logits(model, extractor, audio, num_layers=1, chunk_size=4), atol=1e-4)
    never = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=160)
    stream(never, audio, early_exit_threshold=2.0)
    assert set(never.chunk_depths) == {4}
    assert torch.allclose(never.logits, full_logits(model, extractor, audio, chunk_size=4), atol=1e-4)


def test_rtf_budget_picks_the_depth():
    model, tokenizer = streaming_model()
    profile = {"rtf": {1: 0.01, 2: 0.02, 3: 0.03, 4: 0.04}}
    recognizer = StreamingRecognizer(model, (global_cmvn_extractor(), tokenizer), chunk_ms=160,
                                     latency_profile=profile)
    stream(recognizer, random_audio(), rtf_budget=0.025)
    assert set(recognizer.chunk_depths) == {2}


# What the recogniser refuses, and loading a folder.

def test_recognizer_refuses_what_cannot_stream():
    model, tokenizer = streaming_model(causal_conv=False)
    with pytest.raises(ValueError, match="causal_conv"):
        StreamingRecognizer(model, (global_cmvn_extractor(), tokenizer))
    model, tokenizer = streaming_model()
    with pytest.raises(ValueError, match="multiple of one output frame"):
        StreamingRecognizer(model, (global_cmvn_extractor(), tokenizer), chunk_ms=50)
    with pytest.raises(ValueError, match="utterance"):
        StreamingRecognizer(model, (make_feature_extractor(num_mel_bins=BINS), tokenizer))
    recognizer = StreamingRecognizer(model, (global_cmvn_extractor(), tokenizer))
    with pytest.raises(ValueError, match="at most one"):
        recognizer.accept(random_audio(0.1), num_layers=2, early_exit_threshold=0.5)
    with pytest.raises(ValueError):
        recognizer.accept(random_audio(0.1), num_layers=9)


def test_recognizer_from_folder(tmp_path):
    model, tokenizer = streaming_model(num_mel_bins=80)
    extractor = global_cmvn_extractor(80)
    model.save_pretrained(tmp_path)
    save_processor(extractor, tokenizer, tmp_path)
    audio = random_audio()
    from_folder = StreamingRecognizer(str(tmp_path), chunk_ms=320, left_chunks=1)
    stream(from_folder, audio)
    in_memory = StreamingRecognizer(model, (extractor, tokenizer), chunk_ms=320, left_chunks=1)
    stream(in_memory, audio)
    assert torch.allclose(from_folder.logits, in_memory.logits, atol=1e-6)
    assert from_folder.transcript == in_memory.transcript
