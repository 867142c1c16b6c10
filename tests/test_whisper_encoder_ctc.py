"""Whisper's encoder as a prunable CTC model: the same numbers as Whisper where they must agree, depth on demand,
pruning, saving and the pipeline, on a small random Whisper."""

import json

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCTC, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                          WhisperModel)

from hf_prunable_ctc import PrunableCTCConfig, make_prunable
from hf_prunable_ctc.cli import main as cli_main
from hf_prunable_ctc.conversion import prunable_ctc_from_whisper
from hf_prunable_ctc.feature_extraction_prunable_ctc import PrunableCTCFeatureExtractor
from hf_prunable_ctc.runtime.asr_pipeline import prunable_asr_pipeline

POSITIONS = 160  # a 320-frame (3.2 s) window instead of Whisper's 3000 frames (30 s): same code, smaller test
REFERENCE_MODEL = "model_cards/prunable-ctc-small-synth"  # its character tokenizer


def random_whisper(seed=0) -> WhisperForConditionalGeneration:
    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=64, encoder_layers=3, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=POSITIONS, max_target_positions=16,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random biases and norms too: zero biases and unit norms would hide a tensor copied to the wrong place.
        for name, parameter in model.model.encoder.named_parameters():
            base = 1.0 if "layer_norm.weight" in name else 0.0
            parameter.copy_(base + 0.1 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def whisper():
    return random_whisper()


@pytest.fixture(scope="module")
def model(whisper):
    return prunable_ctc_from_whisper(whisper, vocab_size=30).eval()


def test_a_full_window_gives_whispers_encoder_output(whisper, model):
    features = torch.randn(2, 80, 2 * POSITIONS)  # Whisper's layout: (batch, mel, frames)
    expected = whisper.model.encoder(features).last_hidden_state
    got = model.model(features.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_encoder_of_any_whisper_class_is_read(whisper):
    whisper_model = WhisperModel(whisper.config)
    whisper_model.load_state_dict(whisper.model.state_dict())
    features = torch.randn(1, 2 * POSITIONS, 80)
    a = prunable_ctc_from_whisper(whisper, vocab_size=30).eval()
    b = prunable_ctc_from_whisper(whisper_model.encoder, vocab_size=30).eval()
    torch.testing.assert_close(a.model(features).last_hidden_state, b.model(features).last_hidden_state)


def test_short_audio_runs_at_its_own_length_with_whispers_front_end(whisper, model):
    """Unpadded: the front end (convolutions + positions sliced to the input) gives Whisper's 30 s-window values
    on every frame but the last, whose kernel reaches past the audio (silence features there, masked zeros here)."""
    window = torch.randn(1, 80, 2 * POSITIONS)
    encoder = whisper.model.encoder
    gelu = torch.nn.functional.gelu
    expected = gelu(encoder.conv2(gelu(encoder.conv1(window)))).transpose(1, 2) + encoder.embed_positions.weight
    frames = 40
    hidden, lengths = model.model.subsampling(window[:, :, :frames].transpose(1, 2), torch.tensor([frames]))
    assert hidden.shape[1] == frames // 2 and int(lengths[0]) == frames // 2
    torch.testing.assert_close(hidden[:, :-1], expected[:, :frames // 2 - 1], rtol=1e-5, atol=1e-5)
    assert model(window[:, :, :frames].transpose(1, 2)).logits.shape == (1, frames // 2, 30)


def test_a_padded_batch_gives_each_utterance_alone(model):
    torch.manual_seed(1)
    long, short = torch.randn(1, 60, 80), torch.randn(1, 33, 80)
    batch = torch.zeros(2, 60, 80)
    batch[0], batch[1, :33] = long[0], short[0]
    mask = torch.zeros(2, 60, dtype=torch.long)
    mask[0], mask[1, :33] = 1, 1
    for depth in (1, 3):
        together = model(batch, attention_mask=mask, num_layers=depth).logits
        alone = model(short, num_layers=depth).logits
        torch.testing.assert_close(together[1, :alone.shape[1]], alone[0], rtol=1e-4, atol=1e-4)


def test_audio_beyond_the_position_table_is_refused_with_the_way_out(model):
    with pytest.raises(ValueError, match="chunk_length_s"):
        model(torch.randn(1, 2 * POSITIONS + 2, 80))


def test_whisper_log_mel_equals_whispers_extractor_on_the_frames_the_audio_fills():
    ours = PrunableCTCFeatureExtractor(feature_type="whisper_log_mel", do_ceptral_normalize=False)
    reference = WhisperFeatureExtractor()  # pads to 30 s
    rng = np.random.default_rng(0)
    for samples in (48_077, 5_000, 300, 161):
        audio = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        got = ours(audio, sampling_rate=16000, return_tensors="pt").input_features[0]
        expected = reference(audio, sampling_rate=16000, return_tensors="np").input_features[0].T
        assert got.shape == (samples // 160, 80)
        np.testing.assert_allclose(got.numpy(), expected[: samples // 160], atol=1e-5)
    assert ours(np.zeros(100, np.float32), sampling_rate=16000, return_tensors="pt").input_features.shape == (1, 0, 80)


def test_the_feature_type_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="feature_type"):
        PrunableCTCFeatureExtractor(feature_type="mfcc")
    PrunableCTCFeatureExtractor(feature_type="whisper_log_mel").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["feature_type"] == "whisper_log_mel"
    assert PrunableCTCFeatureExtractor.from_pretrained(tmp_path).feature_type == "whisper_log_mel"


def test_config_fields_of_the_whisper_layout_are_validated():
    with pytest.raises(ValueError, match="subsampling_factor"):
        PrunableCTCConfig(subsampling_type="whisper", subsampling_factor=4)
    with pytest.raises(ValueError, match="position_embedding_type"):
        PrunableCTCConfig(position_embedding_type="learned")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        PrunableCTCConfig(position_embedding_type="absolute", max_position_embeddings=0)


def test_make_prunable_points_whisper_users_to_the_conversion(whisper):
    with pytest.raises(TypeError, match="prunable_ctc_from_whisper"):
        make_prunable(whisper)


def test_training_with_intermediate_ctc_and_stochastic_depth_reaches_every_layer(whisper):
    model = prunable_ctc_from_whisper(whisper, vocab_size=30, stochastic_depth_rate=0.5).train()
    torch.manual_seed(0)
    labels = torch.randint(3, 30, (2, 5))
    loss = model(torch.randn(2, 40, 80), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.subsampling.convs[0].weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_converted_folder_loads_prunes_and_transcribes_at_every_depth(whisper, tmp_path):
    whisper_dir = tmp_path / "whisper"
    whisper.save_pretrained(whisper_dir)
    out = tmp_path / "whisper-ctc"
    assert cli_main(["from-whisper", str(whisper_dir), REFERENCE_MODEL, str(out), "--interctc_layers", "1", "2"]) == 0
    model = AutoModelForCTC.from_pretrained(out, trust_remote_code=True).eval()
    assert model.config.interctc_layers == [1, 2] and model.config.position_embedding_type == "absolute"
    asr = prunable_asr_pipeline(str(out))
    audio = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)  # 0.5 s
    features = asr.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    for depth in (1, 2, 3):
        logits = model(**features, num_layers=depth).logits
        expected = asr.tokenizer.decode(logits.argmax(-1)[0])
        assert asr(audio, num_layers=depth)["text"] == expected
        pruned_dir = tmp_path / f"pruned-{depth}"
        pruned = AutoModelForCTC.from_pretrained(out, trust_remote_code=True).eval()
        pruned.prune_to(depth)
        pruned.save_pretrained(pruned_dir)
        reloaded = AutoModelForCTC.from_pretrained(pruned_dir, trust_remote_code=True).eval()
        assert reloaded.config.num_hidden_layers == depth
        torch.testing.assert_close(reloaded(**features).logits, logits)


def test_the_exported_folder_runs_whisper_features_and_every_depth_like_pytorch(whisper, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs onnx, onnxruntime, onnxscript")
    from hf_prunable_ctc.runtime import export_onnx
    from hf_prunable_ctc.runtime.onnx_runtime import OnnxPrunableCTC

    whisper_dir, model_dir, onnx_dir = tmp_path / "whisper", tmp_path / "whisper-ctc", tmp_path / "onnx"
    whisper.save_pretrained(whisper_dir)
    assert cli_main(["from-whisper", str(whisper_dir), REFERENCE_MODEL, str(model_dir)]) == 0
    export_onnx(model_dir, onnx_dir)
    device, asr = OnnxPrunableCTC(onnx_dir), prunable_asr_pipeline(str(model_dir))
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 5000)]
    features, mask = device.front_end(clips)
    expected = asr.feature_extractor(clips, sampling_rate=16000, padding="longest", return_tensors="np")
    np.testing.assert_allclose(features, expected["input_features"], atol=1e-4)
    for depth in (1, 2, 3):
        got = device.transcribe(clips, sampling_rate=16000, num_layers=depth)
        assert [r["text"] for r in got] == [asr(c, num_layers=depth)["text"] for c in clips]
