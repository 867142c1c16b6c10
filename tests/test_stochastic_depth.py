"""Stochastic depth keeps the expected training output of a layer equal to its inference output, in our own
Transformer and Conformer layers and in a stock layer wrapped by `make_prunable`."""

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from conftest import padded_batch, tiny_model
from hf_prunable_ctc.adapters import make_prunable

SKIP = 0.5


def expected_training_output(run, skip_probability, draws=64):
    """E[output of one layer] over its stochastic-depth draw, from `draws` training-mode forwards.

    `run()` returns `(layer input, layer output)` of one forward. With every dropout at 0 the output takes two
    values only, the input (layer skipped) and one kept output, so their average weighted by the probabilities of
    the draw is the exact expectation; a plain mean of a few thousand forwards would be off by about 1%, the size
    of the effect under test.
    """
    torch.manual_seed(0)
    skipped = kept = None
    for _ in range(draws):
        layer_input, output = run()
        if torch.equal(output, layer_input):
            skipped = output
        else:
            if kept is not None:
                torch.testing.assert_close(output, kept, rtol=0, atol=0)
            kept = output
    assert skipped is not None and kept is not None, "both outcomes of the draw should occur"
    return skip_probability * skipped + (1.0 - skip_probability) * kept


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_native_layer_expected_training_output_is_the_inference_output(encoder_type):
    # Two layers, so that layer 1 is not the last one; dropout 0 and SpecAugment off (tiny_model's defaults).
    model = tiny_model(encoder_type=encoder_type, num_hidden_layers=2, stochastic_depth_rate=SKIP,
                       stochastic_depth_schedule="uniform")
    features, mask = padded_batch([40, 31])

    def run():
        hidden = model(features, mask, output_hidden_states=True).hidden_states
        return hidden[0], hidden[1]

    with torch.no_grad():
        model.eval()
        layer_input, inference = run()
        model.train()
        expected = expected_training_output(run, SKIP)
    assert not torch.allclose(inference, layer_input)  # the layer does change its input
    torch.testing.assert_close(expected, inference, rtol=1e-5, atol=1e-5)


def test_wrapped_stock_layer_expected_training_output_is_the_inference_output():
    # A post-norm wav2vec2 layer ends in a LayerNorm (`final_layer_norm`), as our Conformer layer does. (Parakeet and
    # wav2vec2-conformer layers hold a BatchNorm, whose training mode changes the output by itself.)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, conv_dim=(16, 16),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=False, vocab_size=8, pad_token_id=0, hidden_dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0, mask_time_prob=0.0,
        layerdrop=0.0)
    wrapped = make_prunable(Wav2Vec2ForCTC(config), interctc_layers=[1], stochastic_depth_rate=SKIP,
                            stochastic_depth_schedule="uniform")
    audio = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[1, 3000:] = 0

    def run():
        hidden = wrapped(audio, attention_mask=mask, output_hidden_states=True).hidden_states
        return hidden[0], hidden[1]

    with torch.no_grad():
        wrapped.eval()
        layer_input, inference = run()
        wrapped.train()
        expected = expected_training_output(run, SKIP)
    assert not torch.allclose(inference, layer_input)
    torch.testing.assert_close(expected, inference, rtol=1e-5, atol=1e-5)

