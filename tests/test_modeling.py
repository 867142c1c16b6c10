import pytest
import torch
import torch.nn.functional as F

from conftest import padded_batch, tiny_config, tiny_model
from hf_prunable_ctc import PrunableCTCForCTC, PrunableCTCModel
from hf_prunable_ctc.modeling_prunable_ctc import blank_padded_frames


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
    # The top layer always skipped in training (a rate of 1 is not a valid setting, so the probability is set here).
    model = tiny_model().train()
    model.model.skip_probability = lambda layer: float(layer == len(model.model.layers))
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
            head = model.logits_from_hidden_state(full.hidden_states[k])
            torch.testing.assert_close(blank_padded_frames(head, full.output_lengths, model.config.pad_token_id),
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
        head = model.lm_head(encoded.last_hidden_state)
        torch.testing.assert_close(blank_padded_frames(head, encoded.output_lengths, model.config.pad_token_id),
                                   model(features, mask).logits)
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


# --- SpecAugment, gradient checkpointing, return_dict, attentions --------------------------------------------------

def test_spec_augment_can_mask_the_last_bin_and_frame_and_stays_inside_each_utterance():
    from hf_prunable_ctc.modeling_prunable_ctc import spec_augment

    config = tiny_config(spec_augment_freq_masks=1, spec_augment_freq_width=4,
                         spec_augment_time_masks_per_second=20.0, spec_augment_time_width=10)
    lengths = torch.tensor([60, 25])
    features = torch.ones(2, 60, 16)
    torch.manual_seed(0)
    masked = torch.stack([spec_augment(features, lengths, config) == 0 for _ in range(300)])  # (draw, b, t, f)
    freq_masked = masked.all(dim=2)  # bins zeroed over all frames: (draw, batch, bins)
    assert freq_masked[:, :, -1].any(), "the last mel bin is never masked"
    assert freq_masked[:, :, 0].any()
    assert freq_masked.sum(-1).max() <= 4  # one band of at most 4 bins
    time_masked = masked.all(dim=3) & ~freq_masked.all(dim=2, keepdim=True)  # frames zeroed over all bins
    assert time_masked[:, 0, 59].any() and time_masked[:, 1, 24].any(), "the last valid frame is never masked"
    assert not time_masked[:, 1, 25:].any(), "time masks must stay inside the utterance's valid frames"
    # 20 masks per second: 12 masks of at most 10 frames for 60 frames, 5 of at most 5 frames for 25.
    assert time_masked[:, 1].sum(-1).max() <= 25 and time_masked[:, 1].sum(-1).float().mean() > 3
    # Masks differ between the utterances of one batch (drawn per utterance, not once per batch).
    assert not torch.equal(freq_masked[:, 0], freq_masked[:, 1])


def test_spec_augment_is_vectorised_over_the_batch(monkeypatch):
    """No Python loop over utterances: masking 512 utterances draws as many random tensors as masking 8 (a count,
    not a timing: this machine is shared and timings are noisy)."""
    from hf_prunable_ctc import modeling_prunable_ctc

    config = tiny_config(spec_augment_freq_masks=2, spec_augment_time_masks_per_second=5.0)
    draws = []
    real = modeling_prunable_ctc.random_integers
    monkeypatch.setattr(modeling_prunable_ctc, "random_integers", lambda high: draws.append(1) or real(high))

    def count(batch):
        draws.clear()
        features, lengths = torch.zeros(batch, 300, 16), torch.full((batch,), 300)
        masked = modeling_prunable_ctc.spec_augment(features, lengths, config)
        assert masked.shape == features.shape
        return len(draws)

    assert count(512) == count(8) > 0


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_gradient_checkpointing_gives_the_same_gradients(encoder_type, batch):
    features, mask = batch
    labels = labels_for(3, [6, 5, 3])

    def gradients(checkpointing):
        model = tiny_model(encoder_type=encoder_type, interctc_layers=[1, 2], interctc_weight=0.3,
                           self_conditioning=True).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        model(features, mask, labels=labels).loss.backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=lambda m: f"{name}: {m}")


def test_gradient_checkpointing_with_stochastic_depth_and_dropout_trains(batch):
    model = tiny_model(stochastic_depth_rate=0.5, hidden_dropout=0.1, attention_dropout=0.1).train()
    model.gradient_checkpointing_enable()
    model(*batch, labels=labels_for(3, [4, 4, 2])).loss.backward()
    assert model.model.layers[0].attention.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("where", ["argument", "config"])
def test_return_dict_false_gives_tuples(where, batch):
    features, mask = batch
    labels = labels_for(3, [6, 5, 3])
    model = tiny_model(interctc_layers=[2], interctc_weight=0.3)
    with torch.no_grad():
        expected = model(features, mask, labels=labels)
        if where == "config":
            model.config.return_dict = False
            out, encoded = model(features, mask, labels=labels), model.model(features, mask)
        else:
            out = model(features, mask, labels=labels, return_dict=False)
            encoded = model.model(features, mask, return_dict=False)
    assert isinstance(out, tuple) and isinstance(encoded, tuple)
    torch.testing.assert_close(out[0], expected.loss)
    torch.testing.assert_close(out[1], expected.logits)
    head = model.lm_head(encoded[0])
    torch.testing.assert_close(blank_padded_frames(head, encoded[1], model.config.pad_token_id), expected.logits)


@pytest.mark.parametrize("encoder_type", ["transformer", "conformer"])
def test_output_attentions_returns_probabilities_of_every_layer(encoder_type, batch):
    features, mask = batch
    model = tiny_model(encoder_type=encoder_type)
    with torch.no_grad():
        plain = model(features, mask)
        out = model(features, mask, output_attentions=True, layers=[1, 3])
    assert plain.attentions is None
    assert len(out.attentions) == 2
    for weights in out.attentions:
        assert weights.shape == (3, 4, 15, 15)  # (batch, heads, frames, frames)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 15))
        assert weights[1, :, :, 10:].abs().max() == 0  # utterance 2 has 10 frames: no weight on padding
    # The eager path that computes the weights gives the same logits as the default kernel.
    torch.testing.assert_close(out.logits, model(features, mask, layers=[1, 3]).logits, atol=1e-5, rtol=1e-4)


def test_attention_implementation_switch(batch):
    features, mask = batch
    sdpa = tiny_model()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = tiny_model()
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(eager(features, mask).logits, sdpa(features, mask).logits, atol=1e-5, rtol=1e-4)
