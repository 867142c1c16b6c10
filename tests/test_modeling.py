import pytest
import torch
import torch.nn.functional as F

from conftest import padded_batch, tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCForCTC, PrunableCTCModel


def labels_for(batch_size, lengths, vocab_size=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.full((batch_size, max(lengths)), -100, dtype=torch.long)
    for i, length in enumerate(lengths):
        labels[i, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
    return labels


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
@pytest.mark.parametrize("subsampling_type", ["conv1d", "conv2d"])
def test_forward_backward_on_ragged_batch(encoder_type, subsampling_type, batch):
    model = tiny_model(encoder_type=encoder_type, subsampling_type=subsampling_type, interctc_layers=[1, 2],
                       interctc_weight=0.3, stochastic_depth_rate=0.2).train()
    features, mask = batch
    out = model(features, attention_mask=mask, labels=labels_for(3, [6, 5, 3]))
    assert out.logits.shape == (3, 15, 12)  # ceil(ceil(57 / 2) / 2) = 15 frames
    assert out.output_lengths.tolist() == [15, 10, 6]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
@pytest.mark.parametrize("subsampling_type", ["conv1d", "conv2d"])
def test_padding_does_not_change_valid_outputs(encoder_type, subsampling_type, batch):
    model = tiny_model(encoder_type=encoder_type, subsampling_type=subsampling_type)
    features, mask = batch
    with torch.no_grad():
        batched = model(features, attention_mask=mask)
        for i, length in enumerate(mask.sum(-1).tolist()):
            alone = model(features[i : i + 1, :length])
            frames = batched.output_lengths[i]
            assert alone.logits.shape[1] == frames
            torch.testing.assert_close(batched.logits[i, :frames], alone.logits[0], atol=1e-5, rtol=1e-4)


def test_loss_is_the_interctc_formula(batch):
    weight = 0.4
    model = tiny_model(interctc_layers=[1, 2, 3], interctc_weight=weight)
    features, mask = batch
    labels = labels_for(3, [6, 5, 3])
    out = model(features, attention_mask=mask, labels=labels, output_intermediate_logits=True)
    assert out.intermediate_layers.tolist() == [1, 2, 3]

    def ctc(logits):
        log_probs = F.log_softmax(logits.double(), dim=-1).transpose(0, 1)
        keep = labels >= 0
        return F.ctc_loss(log_probs, labels[keep], out.output_lengths, keep.sum(-1), blank=0, reduction="mean",
                          zero_infinity=True)

    final = ctc(out.logits)
    intermediate = torch.stack([ctc(x) for x in out.intermediate_logits])
    expected = (1 - weight) * final + weight * intermediate.mean()
    torch.testing.assert_close(out.loss.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.intermediate_losses.double(), intermediate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.ctc_loss.double(), final, atol=1e-5, rtol=1e-5)


def test_sum_reduction_scales_with_batch(batch):
    features, mask = batch
    labels = labels_for(3, [6, 5, 3])
    mean = tiny_model()(features, mask, labels=labels).loss
    total = tiny_model(ctc_loss_reduction="sum")(features, mask, labels=labels).loss
    assert total > mean * 3  # a sum over utterances of unnormalised losses


def test_labels_longer_than_frames_give_zero_loss_not_a_crash():
    model = tiny_model()
    features, mask = padded_batch([12])  # 3 output frames
    out = model(features, mask, labels=labels_for(1, [9]))
    assert out.loss.item() == 0.0  # ctc_zero_infinity
    strict = tiny_model(ctc_zero_infinity=False)
    assert torch.isinf(strict(features, mask, labels=labels_for(1, [9])).loss)


def test_out_of_vocabulary_label_is_an_error(batch):
    features, mask = batch
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_model()(features, mask, labels=torch.full((3, 2), 99))


def test_wrong_feature_size_is_an_error():
    with pytest.raises(ValueError, match="input_features must be"):
        tiny_model()(torch.randn(1, 20, 80))


def test_stochastic_depth_top_layer_gets_no_gradient(batch):
    # Linear schedule with p_max = 1: the top layer is always skipped in training.
    model = tiny_model(stochastic_depth_rate=1.0).train()
    features, mask = batch
    for _ in range(3):
        model.zero_grad()
        model(features, mask, labels=labels_for(3, [4, 4, 2])).loss.backward()
        top = list(model.model.layers[-1].parameters())
        assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in top)
        below = list(model.model.layers[0].parameters())
        assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in below)


def test_stochastic_depth_is_random_in_training_and_off_in_eval(batch):
    model = tiny_model(stochastic_depth_rate=0.6, stochastic_depth_schedule="uniform")
    features, mask = batch
    with torch.no_grad():
        model.eval()
        reference = model(features, mask).logits
        assert torch.equal(model(features, mask).logits, reference)
        model.train()  # all dropouts are 0: only stochastic depth makes outputs differ
        torch.manual_seed(0)
        outputs = [model(features, mask).logits for _ in range(8)]
    assert any(not torch.allclose(x, reference) for x in outputs)


def test_num_layers_logits_equal_head_on_hidden_state(batch):
    """One full pass gives every top-pruned depth: head(hidden_states[k]) == forward(num_layers=k).logits."""
    model = tiny_model(interctc_layers=[2])
    features, mask = batch
    with torch.no_grad():
        full = model(features, mask, output_hidden_states=True)
        assert len(full.hidden_states) == 5
        for k in range(1, 5):
            torch.testing.assert_close(model.logits_from_hidden_state(full.hidden_states[k]),
                                       model(features, mask, num_layers=k).logits)


def test_self_conditioning_changes_outputs_and_trains(batch):
    features, mask = batch
    plain = tiny_model(interctc_layers=[1, 2], interctc_weight=0.5)
    conditioned = tiny_model(interctc_layers=[1, 2], interctc_weight=0.5, self_conditioning=True)
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(plain(features, mask).logits, conditioned(features, mask).logits)
        # Layer 1's output is the same: conditioning only acts after it.
        torch.testing.assert_close(plain(features, mask, num_layers=1).logits,
                                   conditioned(features, mask, num_layers=1).logits)
    loss = conditioned.train()(features, mask, labels=labels_for(3, [4, 4, 2])).loss
    loss.backward()
    assert conditioned.model.conditioning_projection.weight.grad.abs().sum() > 0


def test_self_conditioned_encoder_alone_is_a_clear_error(batch):
    torch.manual_seed(0)
    encoder = PrunableCTCModel(tiny_config(interctc_layers=[1], self_conditioning=True))
    with pytest.raises(ValueError, match="PrunableCTCForCTC"):
        encoder(*batch)


def test_encoder_output_matches_ctc_model(batch):
    model = tiny_model()
    features, mask = batch
    with torch.no_grad():
        encoded = model.model(features, mask)
        torch.testing.assert_close(model.lm_head(encoded.last_hidden_state), model(features, mask).logits)
    assert isinstance(model, PrunableCTCForCTC)


def test_spec_augment_masks_only_in_training(batch):
    features, mask = batch
    model = tiny_model(spec_augment_freq_masks=2, spec_augment_freq_width=4, spec_augment_time_masks_per_second=5.0,
                       spec_augment_time_width=5)
    plain = tiny_model()
    with torch.no_grad():
        torch.testing.assert_close(model(features, mask).logits, plain(features, mask).logits)  # eval: no masking
        model.train()
        torch.manual_seed(0)
        assert not torch.allclose(model(features, mask).logits, plain.train()(features, mask).logits)
