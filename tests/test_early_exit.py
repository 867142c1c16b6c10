"""Early exit by confidence: `model(..., early_exit_threshold=t)`."""

import os

import pytest
import torch

from conftest import padded_batch, tiny_model
from hf_prunable_ctc.early_exit import exit_layers, max_posterior_confidence

LENGTHS = [57, 40, 23, 31]


def alone_at_depth(model, features, mask, row, depth):
    """Logits of utterance `row` run alone (its valid frames only) with `num_layers=depth`."""
    length = int(mask[row].sum())
    with torch.no_grad():
        out = model(features[row:row + 1, :length], attention_mask=mask[row:row + 1, :length], num_layers=depth)
    return out.logits[0, : int(out.output_lengths[0])]


def check_equals_alone(model, features, mask, out):
    for row, depth in enumerate(out.exit_depths.tolist()):
        expected = alone_at_depth(model, features, mask, row, depth)
        valid = int(out.output_lengths[row])
        assert valid == expected.shape[0]
        torch.testing.assert_close(out.logits[row, :valid], expected, atol=1e-5, rtol=1e-4)
        # Padding frames hold no stale values: certain blanks, as in the plain forward.
        padding = out.logits[row, valid:]
        assert (padding.argmax(-1) == model.config.pad_token_id).all()
        assert torch.equal(padding, padding[:1].expand_as(padding))
        assert torch.all(padding.log_softmax(-1)[:, model.config.pad_token_id] == 0)


@pytest.mark.parametrize("overrides", [
    dict(interctc_layers=[1, 2, 3]),
    dict(interctc_layers=[1, 3], self_conditioning=True, interctc_weight=0.3),
    dict(interctc_layers=[2], encoder_type="transformer"),
])
def test_each_utterance_equals_running_alone_at_its_exit_depth(overrides):
    model = tiny_model(**overrides)
    features, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        confidences = model(features, attention_mask=mask, early_exit_threshold=2.0)  # full depth
    # A threshold between the utterances' confidences at the first exit makes them exit at different depths.
    with torch.no_grad():
        first = model(features, attention_mask=mask, num_layers=exit_layers(model.config)[0])
    scores = max_posterior_confidence(first.logits, first.output_lengths, model.config.pad_token_id)
    threshold = float(scores.sort().values[len(LENGTHS) // 2])
    with torch.no_grad():
        out = model(features, attention_mask=mask, early_exit_threshold=threshold)
    assert out.exit_depths.dtype == torch.long and out.exit_depths.shape == (len(LENGTHS),)
    assert len(set(out.exit_depths.tolist())) > 1, out.exit_depths
    assert set(out.exit_depths.tolist()) <= set(exit_layers(model.config))
    check_equals_alone(model, features, mask, out)
    check_equals_alone(model, features, mask, confidences)


def test_threshold_zero_exits_at_the_first_intermediate_layer():
    model = tiny_model(interctc_layers=[2, 3])
    features, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        out = model(features, attention_mask=mask, early_exit_threshold=0)
    assert out.exit_depths.tolist() == [2] * len(LENGTHS)
    check_equals_alone(model, features, mask, out)


def test_threshold_above_one_runs_the_full_depth_and_matches_the_plain_forward():
    model = tiny_model(interctc_layers=[1, 2, 3])
    features, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        out = model(features, attention_mask=mask, early_exit_threshold=1.01)
        plain = model(features, attention_mask=mask)
    assert out.exit_depths.tolist() == [4] * len(LENGTHS)
    for row, valid in enumerate(out.output_lengths.tolist()):
        torch.testing.assert_close(out.logits[row, :valid], plain.logits[row, :valid], atol=1e-5, rtol=1e-4)
    assert torch.all((out.exit_confidences >= 0) & (out.exit_confidences <= 1))


def test_pruned_model_exits_at_its_remaining_intermediate_layers():
    model = tiny_model(interctc_layers=[1, 2, 3]).prune_layers([1, 3, 4])  # old layer 3 is new layer 2
    assert model.config.interctc_layers == [1, 2]
    features, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        zero = model(features, attention_mask=mask, early_exit_threshold=0.0)
        never = model(features, attention_mask=mask, early_exit_threshold=5.0)
    assert zero.exit_depths.tolist() == [1] * len(LENGTHS)
    assert never.exit_depths.tolist() == [3] * len(LENGTHS)
    check_equals_alone(model, features, mask, zero)
    check_equals_alone(model, features, mask, never)


def test_model_without_intermediate_layers_always_runs_full_depth():
    model = tiny_model(interctc_layers=[])
    features, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        out = model(features, attention_mask=mask, early_exit_threshold=0.0)
    assert out.exit_depths.tolist() == [4] * len(LENGTHS)


@pytest.mark.parametrize("extra, message", [
    (dict(num_layers=2), "num_layers or layers"),
    (dict(layers=[1, 2]), "num_layers or layers"),
    (dict(output_hidden_states=True), "hidden states"),
    (dict(labels=torch.ones(4, 3, dtype=torch.long)), "labels"),
])
def test_refuses_combinations(extra, message):
    model = tiny_model(interctc_layers=[2])
    features, mask = padded_batch(LENGTHS)
    with pytest.raises(ValueError, match=message):
        model(features, attention_mask=mask, early_exit_threshold=0.5, **extra)


@pytest.mark.parametrize("bad", ["0.5", float("nan"), True])
def test_refuses_a_threshold_that_is_not_a_number(bad):
    model = tiny_model(interctc_layers=[2])
    features, mask = padded_batch(LENGTHS)
    with pytest.raises(ValueError, match="early_exit_threshold must be a number"):
        model(features, attention_mask=mask, early_exit_threshold=bad)


def test_refuses_training_mode():
    model = tiny_model(interctc_layers=[2]).train()
    features, mask = padded_batch(LENGTHS)
    with pytest.raises(ValueError, match="model.eval"):
        model(features, attention_mask=mask, early_exit_threshold=0.5)


def test_tuple_output_and_empty_audio():
    model = tiny_model(interctc_layers=[2])
    features, mask = padded_batch([5])
    with torch.no_grad():
        empty = model(features[:, :0], attention_mask=mask[:, :0], early_exit_threshold=0.5)
        as_tuple = model(features, attention_mask=mask, early_exit_threshold=0.0, return_dict=False)
    assert empty.logits.shape[1] == 0 and empty.exit_depths.tolist() == [2]
    assert as_tuple[-2].tolist() == [2]  # (logits, output_lengths, exit_depths, exit_confidences)


def test_confidence_is_mean_max_posterior_over_non_blank_frames():
    # Frame 0: blank wins (ignored); frames 1-2: label 1 with posterior ~0.9 and ~0.6; frame 3 is padding.
    probs = torch.tensor([[[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.2, 0.6, 0.2], [0.0, 0.0, 1.0]]])
    score = max_posterior_confidence(probs.clamp(min=1e-9).log(), torch.tensor([3]), blank=0)
    assert score.item() == pytest.approx(0.75, abs=1e-4)
    all_blank = max_posterior_confidence(probs[:, :1].clamp(min=1e-9).log(), torch.tensor([1]), blank=0)
    assert all_blank.item() == pytest.approx(0.9, abs=1e-4)


def test_save_pretrained_writes_the_early_exit_module(tmp_path):
    tiny_model(interctc_layers=[2]).save_pretrained(tmp_path)
    assert "early_exit.py" in os.listdir(tmp_path)
