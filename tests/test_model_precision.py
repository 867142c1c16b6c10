"""bf16 models take the float32 features that feature extractors give."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from conftest import padded_batch, save_model_folder, tiny_model
from hf_prunable_ctc.modeling_prunable_ctc import RotaryEmbedding


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_bf16_model_takes_float32_features_and_agrees_with_float32(encoder_type):
    # A larger vocabulary and wider model than the tiny default, so argmax ties are rare.
    model = tiny_model(encoder_type=encoder_type, vocab_size=32, hidden_size=64, interctc_layers=[2],
                       interctc_weight=0.3)
    features, mask = padded_batch([300, 220], seed=1)
    features = 3.0 * features  # logits far enough apart that bf16 rounding rarely flips the best token
    with torch.no_grad():
        reference = model(features, mask).logits
        low = model.to(torch.bfloat16)(features, mask)  # float32 features, bfloat16 weights
    assert low.logits.dtype == torch.bfloat16
    valid = torch.arange(reference.shape[1])[None, :] < low.output_lengths[:, None]
    agreement = (low.logits.float().argmax(-1) == reference.argmax(-1))[valid].float().mean().item()
    assert agreement > 0.9, f"bf16 and float32 argmax agree on only {agreement:.0%} of frames"
    torch.testing.assert_close(low.logits.float().softmax(-1), reference.softmax(-1), atol=0.05, rtol=0.0)


def test_rotary_tables_are_float32_accurate_in_bf16():
    """Tables for a bf16 model are the float32 tables rounded once, not tables from a rounded frequency buffer."""
    model = tiny_model().to(torch.bfloat16)
    rotary = model.model.rotary
    assert isinstance(rotary, RotaryEmbedding)
    cos, sin = rotary(1000, torch.bfloat16)
    exact_cos, exact_sin = RotaryEmbedding(model.config).float()(1000, torch.float32)
    assert cos.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: values in [-1, 1] round by at most 2^-8. A rounded inv_freq would give errors
    # of order 1 at 1000 frames.
    assert (cos.float() - exact_cos).abs().max() <= 2 ** -8
    assert (sin.float() - exact_sin).abs().max() <= 2 ** -8


def test_pipeline_runs_in_bf16(tmp_path):
    save_model_folder(tmp_path)
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), dtype=torch.bfloat16, device="cpu")
    assert asr.model.dtype == torch.bfloat16
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    assert isinstance(asr(audio)["text"], str)
    assert isinstance(asr(audio, chunk_length_s=0.5, stride_length_s=0.1)["text"], str)
